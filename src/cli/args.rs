//! The command line's shape (clap derive types only).

use std::path::PathBuf;

use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::{Args, CommandFactory, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "eco",
    version,
    about = "A declarative process supervisor: describe your apps in ecosystem.yaml, `eco up`.",
    propagate_version = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// Parses the command line as `Parser::parse` does, except that
/// did-you-mean never suggests an internal command (`__listen`, …): clap
/// offers hidden subcommands too.
pub fn parse() -> Cli {
    Cli::try_parse().unwrap_or_else(|err| without_hidden(err).exit())
}

/// The error with every hidden subcommand dropped from its suggestions.
fn without_hidden(mut err: clap::Error) -> clap::Error {
    if err.kind() != ErrorKind::InvalidSubcommand {
        return err;
    }
    let command = Cli::command();
    let hidden: Vec<&str> = command
        .get_subcommands()
        .filter(|c| c.is_hide_set())
        .map(|c| c.get_name())
        .collect();
    if let Some(ContextValue::Strings(names)) = err.remove(ContextKind::SuggestedSubcommand) {
        let shown: Vec<String> = names
            .into_iter()
            .filter(|n| !hidden.contains(&n.as_str()))
            .collect();
        if !shown.is_empty() {
            err.insert(
                ContextKind::SuggestedSubcommand,
                ContextValue::Strings(shown),
            );
        }
    }
    err
}

#[derive(Debug, Args, Clone)]
pub struct FileArgs {
    /// The ecosystem file [default: ./ecosystem.yaml, then ./ecosystem.yml]
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub file: Option<PathBuf>,
}

#[derive(Debug, Args, Clone)]
pub struct ProfileArgs {
    /// Profile: merges `env_NAME` over `env` [default: the profile the
    /// project was last applied with; `--env ""` for none]
    #[arg(long = "env", value_name = "NAME")]
    pub profile: Option<String>,
}

/// `-s`: what PM2's `--silent` does after an action.
#[derive(Debug, Args, Clone, Copy)]
pub struct SilentArgs {
    /// Print nothing on success (no table of the project afterwards)
    #[arg(short = 's', long = "silent")]
    pub silent: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Apply the file: start, restart, scale and stop apps to match it
    Up {
        #[command(flatten)]
        file: FileArgs,
        #[command(flatten)]
        profile: ProfileArgs,
        /// Run the supervisor in this terminal instead of the daemon
        #[arg(short = 'F', long)]
        foreground: bool,
        /// Return only once every instance is online (ready); exit 1 if one errors
        #[arg(long)]
        wait: bool,
        /// With --wait: give up after this long (e.g. 30s)
        #[arg(long, value_name = "DUR", requires = "wait")]
        timeout: Option<String>,
        /// Print the plan, change nothing
        #[arg(long)]
        dry_run: bool,
        /// With -F: once an app is errored, stop the others and exit 1
        /// (a container's entrypoint, so the orchestrator restarts it)
        #[arg(long, requires = "foreground")]
        exit_on_error: bool,
    },
    /// Stop and forget a project's apps
    Down {
        #[command(flatten)]
        file: FileArgs,
        /// The project to take down (instead of -f)
        project: Option<String>,
    },
    /// Re-read the file and converge; with TARGETs: zero-downtime rolling
    /// restart; with no file here: every applied project
    Reload {
        #[command(flatten)]
        file: FileArgs,
        #[command(flatten)]
        profile: ProfileArgs,
        #[command(flatten)]
        silent: SilentArgs,
        /// Apps, or an ecosystem file (apply it, then reload the apps it
        /// left as they were)
        targets: Vec<String>,
    },
    /// Print the plan `up` would carry out (exit 1 when there are changes)
    Diff {
        #[command(flatten)]
        file: FileArgs,
        #[command(flatten)]
        profile: ProfileArgs,
    },
    /// Check the file and report every error in it
    Validate {
        #[command(flatten)]
        file: FileArgs,
        #[command(flatten)]
        profile: ProfileArgs,
    },
    /// List every instance
    #[command(visible_alias = "list", alias = "status")]
    Ls {
        /// One JSON array, an object per instance
        #[arg(long)]
        json: bool,
    },
    /// = ls --json (PM2 habit)
    Jlist,
    /// Everything about an app: spec, env, files, restart history
    #[command(visible_alias = "show")]
    Describe {
        target: String,
        #[arg(long)]
        json: bool,
    },
    /// Start a stopped app, an ecosystem file's apps (= up -f FILE), or an
    /// ad-hoc script (`eco start app.js --name api -- 8080`)
    Start {
        /// An app name, project/app, app:INSTANCE, all, an ecosystem file, or
        /// a script path [default: the ecosystem file in this folder]
        target: Option<String>,
        /// Name of the ad-hoc app [default: the script's file stem]
        #[arg(long)]
        name: Option<String>,
        /// Instances of the ad-hoc app
        #[arg(short = 'i', long = "instances")]
        instances: Option<String>,
        /// Restart the ad-hoc app when files in its folder change
        #[arg(long)]
        watch: bool,
        #[command(flatten)]
        profile: ProfileArgs,
        #[command(flatten)]
        silent: SilentArgs,
        /// Arguments for the script
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Stop apps (or an ecosystem file's apps); they stay stopped across
    /// reloads until `eco start`
    Stop {
        target: String,
        #[command(flatten)]
        silent: SilentArgs,
    },
    /// Stop then start; an ecosystem file: apply it, then restart the apps it
    /// left as they were [default: the file in this folder, else every project]
    Restart {
        target: Option<String>,
        #[command(flatten)]
        profile: ProfileArgs,
        #[command(flatten)]
        silent: SilentArgs,
    },
    /// Stop and remove an app; an ecosystem file: its whole project (= down -f FILE)
    Delete {
        target: String,
        #[command(flatten)]
        silent: SilentArgs,
    },
    /// Set an app's number of instances
    Scale {
        app: String,
        instances: u32,
        #[command(flatten)]
        silent: SilentArgs,
    },
    /// Show captured output
    Logs {
        target: Option<String>,
        /// Lines to show
        #[arg(short = 'n', long = "lines", default_value_t = 15)]
        lines: usize,
        /// Keep printing new lines
        #[arg(short = 'f', long)]
        follow: bool,
        /// Only stdout
        #[arg(long, conflicts_with = "err")]
        out: bool,
        /// Only stderr
        #[arg(long)]
        err: bool,
    },
    /// Empty the captured logs of a target (or of every app)
    Flush { target: Option<String> },
    /// Live dashboard of every instance
    Monit,
    /// Stop every app of every project, then the daemon
    Kill,
    /// Replace the daemon with the eco binary on disk; every app keeps running
    Update,
    /// The CLI's version and the daemon's
    Version,
    /// Run the daemon in the foreground
    Daemon,
    /// Serve Prometheus metrics, a JSON API and a dashboard over HTTP
    Serve {
        /// Address and port to listen on; a non-loopback address needs --token-file
        #[arg(long, value_name = "ADDR", default_value = crate::serve::DEFAULT_LISTEN)]
        listen: String,
        /// File holding the token control requests need (mode 600);
        /// without it everything is read-only
        #[arg(long = "token-file", value_name = "PATH")]
        token_file: Option<PathBuf>,
        /// Refuse every control request, even with the token
        #[arg(long = "read-only")]
        read_only: bool,
    },
    /// Write a systemd unit that starts eco's daemon at boot
    Startup {
        /// A unit for `systemctl --user` (WantedBy=default.target)
        #[arg(long, conflicts_with = "user_name")]
        user: bool,
        /// Print the unit on stdout; install nothing
        #[arg(long)]
        print: bool,
        /// Run the daemon as this user (root writing the unit for someone else)
        #[arg(short = 'u', long = "user-name", value_name = "NAME")]
        user_name: Option<String>,
    },
    /// Disable and remove the unit `eco startup` wrote
    Unstartup {
        /// The `systemctl --user` unit
        #[arg(long, conflicts_with = "user_name")]
        user: bool,
        /// The unit written with --user-name NAME
        #[arg(short = 'u', long = "user-name", value_name = "NAME")]
        user_name: Option<String>,
    },
    /// Nothing to do: eco saves its state continuously (PM2 habit)
    Save,
    /// Start the daemon, which restores every applied project (PM2 habit)
    Resurrect,
    /// Send an sd_notify message (e.g. READY=1) to $NOTIFY_SOCKET, like systemd-notify
    Notify {
        /// Send this open descriptor along (with FDSTORE=1); repeatable
        #[arg(long = "fd", value_name = "N")]
        fd: Vec<i32>,
        #[arg(default_value = "READY=1")]
        messages: Vec<String>,
    },
    /// Print the JSON Schema of the ecosystem file
    Schema,
    /// Print a PM2 ecosystem file (.js/.cjs/.mjs/.json/.json5/.yaml) as ecosystem.yaml
    Import {
        /// The PM2 file, e.g. ecosystem.config.js
        file: PathBuf,
        /// Merge this profile (`env_NAME`) into each app's env, as `pm2 start FILE --env NAME`
        #[arg(long = "env", value_name = "NAME")]
        env: Option<String>,
    },
    /// Write the project as systemd units or Kubernetes manifests
    Export {
        #[command(subcommand)]
        target: ExportTarget,
    },
    /// (internal) Put cluster sockets on fds 3, 4, … and exec the app
    #[command(name = "__listen", hide = true)]
    Listen {
        #[arg(long, value_delimiter = ',')]
        fds: Vec<i32>,
        #[arg(long, default_value = "")]
        names: String,
        #[arg(last = true, required = true)]
        argv: Vec<String>,
    },
    /// (internal) Kill what is left of `up -F`'s apps once stdin closes
    #[command(name = "__guard", hide = true)]
    Guard {
        #[arg(long)]
        mark: String,
        #[arg(long)]
        cgroup: Option<PathBuf>,
    },
    /// (internal) Behave like a server that daemonizes itself, for tests
    #[command(name = "__fixture-daemonize", hide = true)]
    FixtureDaemonize {
        /// Write the daemon's pid here
        #[arg(long)]
        pid_file: Option<PathBuf>,
        /// Overwrite the daemon's title over its environment, as servers do
        #[arg(long)]
        retitle: bool,
    },
    /// (internal) A tiny HTTP server on the inherited socket, for tests and benchmarks
    #[command(name = "__fixture-http", hide = true)]
    FixtureHttp,
    /// (internal) Check that this build can take over a daemon's state
    #[command(name = "__check-state", hide = true)]
    CheckState { path: PathBuf },
    /// (internal) The daemon after `eco update` exec'd it
    #[command(name = "__handover", hide = true)]
    Handover { fd: i32 },
    /// (internal) The descriptor holder a daemon starts: keeps the apps'
    /// pipes and sockets while no daemon runs
    #[command(name = "__holder", hide = true)]
    Holder { socket: PathBuf },
}

#[derive(Debug, Subcommand)]
pub enum ExportTarget {
    /// One unit set per project: PROJECT.target, PROJECT-APP@.service, sockets, timers
    Systemd {
        #[command(flatten)]
        file: FileArgs,
        #[command(flatten)]
        profile: ProfileArgs,
        /// The folder to write the units into
        #[arg(short = 'o', long = "output", value_name = "DIR")]
        output: PathBuf,
        /// Units for `systemctl --user` (WantedBy=default.target)
        #[arg(long)]
        user: bool,
    },
    /// Per app a Deployment (or StatefulSet) and a Service, as multi-document YAML
    Kubernetes {
        #[command(flatten)]
        file: FileArgs,
        #[command(flatten)]
        profile: ProfileArgs,
        /// The image of every app without its own --app-image
        #[arg(long, value_name = "IMAGE")]
        image: Option<String>,
        /// The image of one app
        #[arg(long = "app-image", value_name = "APP=IMAGE")]
        app_image: Vec<String>,
        /// Write one file per resource into DIR instead of stdout
        #[arg(short = 'o', long = "output", value_name = "DIR")]
        output: Option<PathBuf>,
    },
}
