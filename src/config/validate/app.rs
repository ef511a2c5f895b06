//! One app: its keys are read into a [`Draft`] by the section that owns
//! them, then the checks that span keys run (a `cmd` at all, `listen`
//! with `mode: cluster`, `increment_var` with its variable) and the
//! [`AppSpec`] is built.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use super::primitives::join;
use super::{Parsed, Shared, Walker, normalize};
use crate::config::keys::APP_KEYS;
use crate::config::node::{Node, Pos};
use crate::spec::{AppSpec, ListenAddr, Mode, ProcessSpec, Settings};

/// One key of an app, as the section reading it sees it.
pub(super) struct Key<'k> {
    /// The app's name (notes name it).
    pub(super) app: &'k str,
    pub(super) name: &'k str,
    pub(super) value: &'k Node,
    /// Where the key itself is.
    pub(super) pos: Pos,
    /// `apps.<app>.<key>`.
    pub(super) path: &'k str,
}

/// An app's values as read so far, before the checks that span keys.
pub(super) struct Draft {
    pub(super) settings: Settings,
    pub(super) cmd: Option<Node>,
    pub(super) shell: bool,
    pub(super) cwd: PathBuf,
    pub(super) env: BTreeMap<String, String>,
    /// The `env_<profile>` chosen with `--env`, over `env`.
    pub(super) profile_env: BTreeMap<String, String>,
    /// What `env_file` read, under `env`.
    pub(super) file_env: BTreeMap<String, String>,
    pub(super) mode: Mode,
    /// Where `listen` is (else the app's key), for cluster errors.
    pub(super) listen_key_pos: Pos,
    pub(super) listen: Vec<(ListenAddr, Pos)>,
    pub(super) instances: u32,
    pub(super) increment_var: Option<String>,
    pub(super) pid_file: Option<String>,
    pub(super) watchdog: Option<Duration>,
    pub(super) depends_pos: Vec<(String, Pos)>,
}

impl Draft {
    fn new(cwd: PathBuf, key_pos: Pos) -> Draft {
        Draft {
            settings: Settings::default(),
            cmd: None,
            shell: false,
            cwd,
            env: BTreeMap::new(),
            profile_env: BTreeMap::new(),
            file_env: BTreeMap::new(),
            mode: Mode::Fork,
            listen_key_pos: key_pos,
            listen: Vec::new(),
            instances: 1,
            increment_var: None,
            pid_file: None,
            watchdog: None,
            depends_pos: Vec::new(),
        }
    }
}

impl Walker<'_> {
    /// One app; `None` when it has errors (they are recorded), though its
    /// dependencies still join the graph.
    pub(super) fn app(
        &mut self,
        app: &str,
        key_pos: Pos,
        node: &Node,
        shared: &Shared,
        profiles_seen: &mut BTreeSet<String>,
    ) -> Option<Parsed> {
        let base = join("apps", app);
        let entries = self.map(node, &base)?;
        let keys = self.keyed(entries, &base, APP_KEYS, true);
        let errors_before = self.errors.len();
        let mut d = Draft::new(self.folder(), key_pos);
        for (name, value, pos) in &keys {
            let path = join(&base, name);
            let key = Key {
                app,
                name,
                value,
                pos: *pos,
                path: &path,
            };
            self.app_key(&mut d, &key, profiles_seen);
        }
        let argv = self.argv(&mut d, app, key_pos, &base);
        self.listen_needs_cluster(&d, &base);
        let mut env = shared.env.clone();
        env.extend(std::mem::take(&mut d.file_env));
        env.extend(std::mem::take(&mut d.env));
        env.extend(std::mem::take(&mut d.profile_env));
        self.cluster_port(&mut d, &env, argv.as_deref(), key_pos, &base);
        self.increment_var_set(&d, &env, key_pos, &base);
        d.settings.depends_on = d.depends_pos.iter().map(|(n, _)| n.clone()).collect();
        self.graph
            .push((app.to_owned(), key_pos, std::mem::take(&mut d.depends_pos)));
        if self.errors.len() > errors_before {
            return None;
        }
        Some(build(app, d, argv?, env))
    }

    /// Hands a key to the section that reads it; what none claims is an
    /// `env_<profile>` (unknown keys were refused by `keyed`).
    fn app_key(&mut self, d: &mut Draft, key: &Key<'_>, profiles_seen: &mut BTreeSet<String>) {
        let claimed = self.process_key(d, key)
            || self.env_key(d, key)
            || self.lifecycle_key(&mut d.settings, key)
            || self.logs_key(&mut d.settings, key)
            || self.probe_key(&mut d.settings, key)
            || self.rollout_key(&mut d.settings, key)
            || self.listen_key(d, key);
        if !claimed {
            self.profile_key(d, key, profiles_seen);
        }
    }

    /// The argv from `cmd` (and `shell`), or an error when there is none.
    fn argv(&mut self, d: &mut Draft, app: &str, key_pos: Pos, base: &str) -> Option<Vec<String>> {
        if let Some(node) = d.cmd.take() {
            return self.cmd(&node, &join(base, "cmd"), d.shell);
        }
        self.error(
            key_pos,
            &join(base, "cmd"),
            "missing required key `cmd`".into(),
            Some(format!("add e.g. `cmd: node server.js` under `{app}:`")),
        );
        None
    }

    /// `increment_var` counts from its variable's value, which must be set.
    fn increment_var_set(
        &mut self,
        d: &Draft,
        env: &BTreeMap<String, String>,
        key_pos: Pos,
        base: &str,
    ) {
        let Some(var) = &d.increment_var else {
            return;
        };
        let ok = env
            .get(var)
            .is_some_and(|v| v.trim().parse::<i64>().is_ok());
        if !ok {
            self.error(
                key_pos,
                &join(base, "increment_var"),
                format!("increment_var `{var}` needs `{var}` set to an integer in env (the first instance's value)"),
                Some(format!("add e.g. `env: {{ {var}: 3000 }}`")),
            );
        }
    }

    /// A cluster app without `listen` listens on `PORT` (as under PM2),
    /// or is a Node app that tells eco its port; anything else is an error.
    fn cluster_port(
        &mut self,
        d: &mut Draft,
        env: &BTreeMap<String, String>,
        argv: Option<&[String]>,
        key_pos: Pos,
        base: &str,
    ) {
        if d.mode != Mode::Cluster || !d.listen.is_empty() {
            return;
        }
        // Without a PORT, a Node app (eco's shim) asks eco for whatever
        // port it listens on, as Node's cluster module shares it.
        let node = argv.is_some_and(crate::config::shim::is_node);
        match env.get("PORT").and_then(|p| p.trim().parse::<u16>().ok()).filter(|p| *p > 0) {
            Some(port) => d.listen.push((
                ListenAddr::Tcp(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port)),
                key_pos,
            )),
            None if node => {}
            None => self.error(
                key_pos,
                &join(base, "listen"),
                "`mode: cluster` needs `listen` (the sockets eco binds once and shares between instances), or a PORT in env to listen on: only a Node app (`cmd: node …`) gets the port it listens on from eco by itself".into(),
                Some("add e.g. `listen: [8080]`, or `env: { PORT: 8080 }` for an app that calls listen(PORT)".into()),
            ),
        }
    }
}

/// The app as eco runs it, from a draft without errors.
fn build(app: &str, d: Draft, argv: Vec<String>, env: BTreeMap<String, String>) -> Parsed {
    let pid_file = d.pid_file.map(|p| normalize(&d.cwd.join(p)));
    Parsed {
        spec: AppSpec {
            name: app.to_owned(),
            process: ProcessSpec {
                argv,
                cwd: d.cwd,
                env,
                mode: d.mode,
                increment_var: d.increment_var,
                listen: d.listen.iter().map(|(a, _)| a.clone()).collect(),
                pid_file,
                watchdog: d.watchdog,
            },
            instances: d.instances,
            settings: d.settings,
        },
        listen_pos: d.listen,
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::errors;

    #[test]
    fn checks_that_span_keys() {
        assert_eq!(
            errors("apps:\n  a: {shell: true}\n"),
            ["2:3 apps.a.cmd: missing required key `cmd`"]
        );
        assert_eq!(
            errors("apps:\n  a: {cmd: x, increment_var: PORT}\n"),
            [
                "2:3 apps.a.increment_var: increment_var `PORT` needs `PORT` set to an integer in env (the first instance's value)"
            ]
        );
        assert!(
            errors("apps:\n  a: {cmd: x, increment_var: PORT, env: {PORT: 3000}}\n").is_empty()
        );
    }
}
