//! The translator end to end, on a fake machine.

use super::*;
use crate::config::node::parse;

/// A machine with 4 CPUs, bash, python3 (no `python`), and these files
/// under /srv.
struct Fake(Vec<(&'static str, ScriptKind)>);

impl Machine for Fake {
    fn cpus(&self) -> u32 {
        4
    }
    fn script(&self, path: &Path) -> ScriptKind {
        self.0
            .iter()
            .find(|(p, _)| Path::new(p) == path)
            .map_or(ScriptKind::Missing, |(_, k)| k.clone())
    }
    fn has(&self, program: &str) -> bool {
        matches!(program, "bash" | "python3" | "node")
    }
}

fn eco(yaml: &str) -> (serde_json::Value, Vec<String>) {
    eco_on(&Fake(Vec::new()), yaml)
}

fn eco_on(machine: &Fake, yaml: &str) -> (serde_json::Value, Vec<String>) {
    let root = parse(yaml).expect("yaml");
    assert!(is_pm2(&root));
    let t = translate(&root, machine, Path::new("/srv"));
    assert!(t.errors.is_empty(), "{:?}", t.errors);
    (
        to_json(&t.root),
        t.notes
            .iter()
            .map(|n| format!("{}: {}", n.path, n.text))
            .collect(),
    )
}

#[test]
fn shapes() {
    for doc in [
        "apps:\n  - {name: web, script: app.js}\n",
        "- {name: web, script: app.js}\n",
        "name: web\nscript: app.js\n",
        "pm2:\n  - {name: web, script: app.js}\n",
    ] {
        let (json, _) = eco(doc);
        assert_eq!(
            json["apps"]["web"]["cmd"],
            serde_json::json!(["node", "app.js"]),
            "{doc}"
        );
    }
    assert!(!is_pm2(&parse("apps:\n  web: {cmd: x}\n").expect("yaml")));
}

#[test]
fn keys_map_to_eco() {
    let (json, notes) = eco(
        "apps:\n  - name: api\n    script: ./server.py\n    args: --port 80 -v\n    instances: -1\n    exec_mode: cluster_mode\n    \
         max_memory_restart: 300M\n    kill_timeout: 3000\n    autorestart: false\n    port: 8080\n    \
         wait_ready: true\n    listen_timeout: 5000\n    vizion: false\n    merge_logs: true\n    time: true\n    error_file: e.log\n",
    );
    let app = &json["apps"]["api"];
    assert_eq!(
        app["cmd"],
        serde_json::json!(["python3", "./server.py", "--port", "80", "-v"])
    );
    assert_eq!(app["instances"], 3);
    assert_eq!(app["mode"], "cluster");
    assert_eq!(app["max_memory"], "300M");
    assert_eq!(app["stop_timeout"], 3000);
    assert_eq!(app["restart"], "never");
    assert_eq!(app["env"]["PORT"], 8080);
    assert_eq!(app["ready"], "notify");
    assert_eq!(app["ready_timeout"], 5000);
    assert_eq!(app["log_time"], true);
    assert_eq!(app["err_file"], "e.log");
    assert_eq!(app["stop_signal"], "SIGINT");
    assert_eq!(notes.len(), 3, "{notes:?}");
}

#[test]
fn deploy_is_reported_and_names_default_to_the_script() {
    let (json, notes) = eco("apps:\n  - script: bin/www.js\ndeploy:\n  production: {}\n");
    assert!(json["apps"]["www"].is_object());
    assert!(notes[0].starts_with("deploy: not supported"), "{notes:?}");
}

fn app(yaml: &str) -> serde_json::Value {
    let (json, _) = eco(yaml);
    json["apps"]["a"].clone()
}

/// PM2 Common.determineExecMode: `instances` (>= 1, 0 or -1 once
/// parsed) with no `exec_mode` on a Node script is cluster mode; no
/// `instances`, or a script that is not Node, is fork mode.
#[test]
fn instances_without_exec_mode_is_cluster_for_node() {
    let mode =
        |extra: &str| app(&format!("- {{name: a, script: s.js, {extra}}}\n"))["mode"].clone();
    for cluster in [
        "instances: 2",
        "instances: 1",
        "instances: 0",
        "instances: -1",
        "instances: '0'",
        "instances: max",
        "instances: '4'",
    ] {
        assert_eq!(mode(cluster), "cluster", "{cluster}");
    }
    assert_eq!(mode("instances: -2"), serde_json::Value::Null, "-2 is fork");
    assert_eq!(
        mode("port: 80"),
        serde_json::Value::Null,
        "no instances: fork"
    );
    assert_eq!(mode("instances: 2, exec_mode: fork"), "fork");
    assert_eq!(
        mode("instances: 2, interpreter: none"),
        serde_json::Value::Null
    );
    let py = app("- {name: a, script: w.py, instances: 2}\n");
    assert_eq!(py["mode"], serde_json::Value::Null, "not Node: fork");
    // Cluster by default waits for listen, as an explicit cluster app.
    let web = app("- {name: a, script: s.js, instances: 2, env: {PORT: 3000}}\n");
    assert_eq!(web["ready"], "notify");
    assert_eq!(web["env"]["ECO_READY_ON_LISTEN"], "1");
}

/// PM2 God.prepare: parseInt(instances); 0 is all CPUs, a negative
/// number that many fewer, never fewer than 1; 'max' and '0' are 0.
#[test]
fn instance_counts_as_pm2_computes_them() {
    let count = |v: &str| {
        app(&format!(
            "- {{name: a, script: s.js, exec_mode: fork, instances: {v}}}\n"
        ))["instances"]
            .clone()
    };
    assert_eq!(count("-1"), 3);
    assert_eq!(count("'-1'"), 3);
    assert_eq!(count("-3"), 1);
    assert_eq!(count("-9"), 1);
    assert_eq!(count("0"), "max");
    assert_eq!(count("'0'"), "max");
    assert_eq!(count("max"), "max");
    assert_eq!(count("'3'"), 3);
    assert_eq!(count("'3 workers'"), 3);
    assert_eq!(count("2.7"), 2);
    assert_eq!(count("lots"), "max", "parseInt('lots') || 0");
    assert_eq!(pm2_instance_count(0, 2), 2);
    assert_eq!(pm2_instance_count(-1, 1), 1);
}

/// PM2 Common.prepareAppConf + God.js: `pid_file` (alias `pid`) is
/// the file PM2 writes, relative to the app's cwd; never eco's
/// `pid_file` (which the app writes).
#[test]
fn pid_file_and_pid_are_the_file_pm2_writes() {
    let a = app("- {name: a, script: s.js, pid_file: ./run/a.pid}\n");
    assert_eq!(a["write_pid_file"], "./run/a.pid");
    assert_eq!(a["pid_file"], serde_json::Value::Null);
    let (json, notes) = eco("- {name: a, script: s.js, pid: /run/a.pid, cwd: sub}\n");
    assert_eq!(json["apps"]["a"]["write_pid_file"], "/run/a.pid");
    assert!(notes.is_empty(), "`pid` is a PM2 key: {notes:?}");
    let a = app("- {name: a, script: s.js, pid: run/a.pid, cwd: ./sub/}\n");
    assert_eq!(a["write_pid_file"], "./sub/run/a.pid");
}

/// PM2 Common.verifyConfs: a script with a space is run as
/// `bash -c SCRIPT` (sh without bash), and `args` are replaced.
#[test]
fn a_script_with_spaces_is_a_bash_command_line() {
    let a = app("- {name: a, script: node server.js, exec_interpreter: none}\n");
    assert_eq!(
        a["cmd"],
        serde_json::json!(["bash", "-c", "node server.js"])
    );
    assert_eq!(a["shell"], serde_json::Value::Null);
    let (json, notes) = eco("- {name: a, script: npm run start, args: --port 3000}\n");
    assert_eq!(
        json["apps"]["a"]["cmd"],
        serde_json::json!(["bash", "-c", "npm run start"])
    );
    assert!(
        notes.iter().any(|n| n.starts_with("apps[0].args: dropped")),
        "{notes:?}"
    );
}

/// PM2 Common.sink.resolveInterpreter: by extension (interpreter.json),
/// else node unless the file is a binary (a folder too: node resolves
/// it); `none` runs the script itself; Python gets PYTHONUNBUFFERED=1.
#[test]
fn interpreters_as_pm2_picks_them() {
    let machine = Fake(vec![
        ("/srv/bin/www", ScriptKind::Text { shebang: None }),
        (
            "/srv/bin/node-cli",
            ScriptKind::Text {
                shebang: Some("/usr/bin/env node".into()),
            },
        ),
        (
            "/srv/bin/run",
            ScriptKind::Text {
                shebang: Some("/bin/sh".into()),
            },
        ),
        ("/srv/dist", ScriptKind::Folder),
        ("/srv/sub/dist", ScriptKind::Folder),
        ("/srv/server", ScriptKind::Binary),
        ("/srv/app.cjs", ScriptKind::Text { shebang: None }),
        ("/srv/app.mjs", ScriptKind::Text { shebang: None }),
    ]);
    let cmd = |doc: &str| {
        let (json, _) = eco_on(&machine, doc);
        json["apps"]["a"]["cmd"].clone()
    };
    let j = |v: &[&str]| serde_json::json!(v);
    assert_eq!(
        cmd("- {name: a, script: ./bin/www}\n"),
        j(&["node", "./bin/www"])
    );
    assert_eq!(
        cmd("- {name: a, script: bin/node-cli}\n"),
        j(&["node", "bin/node-cli"])
    );
    assert_eq!(cmd("- {name: a, script: ./dist}\n"), j(&["node", "./dist"]));
    assert_eq!(
        cmd("- {name: a, script: dist, cwd: sub}\n"),
        j(&["node", "dist"])
    );
    assert_eq!(cmd("- {name: a, script: server}\n"), j(&["./server"]));
    assert_eq!(
        cmd("- {name: a, script: npm, args: run start}\n"),
        j(&["npm", "run", "start"])
    );
    assert_eq!(
        cmd("- {name: a, script: app.cjs}\n"),
        j(&["node", "app.cjs"])
    );
    assert_eq!(
        cmd("- {name: a, script: app.mjs, node_args: --inspect}\n"),
        j(&["node", "--inspect", "app.mjs"])
    );
    assert_eq!(cmd("- {name: a, script: w.py}\n"), j(&["python3", "w.py"]));
    assert_eq!(cmd("- {name: a, script: w.sh}\n"), j(&["bash", "w.sh"]));
    assert_eq!(cmd("- {name: a, script: a.ts}\n"), j(&["node", "a.ts"]));
    assert_eq!(
        cmd("- {name: a, script: app.js, interpreter: none}\n"),
        j(&["./app.js"])
    );
    assert_eq!(
        cmd(
            "- {name: a, script: w.py, interpreter: python3, interpreter_args: -u, args: [--queue, mail]}\n"
        ),
        j(&["python3", "-u", "w.py", "--queue", "mail"])
    );
    let (json, notes) = eco_on(&machine, "- {name: a, script: bin/run}\n");
    assert_eq!(json["apps"]["a"]["cmd"], j(&["bin/run"]));
    assert!(notes[0].contains("`#!` line"), "{notes:?}");
    let (json, _) = eco("- {name: a, script: w.py, env: {PYTHONUNBUFFERED: '0'}}\n");
    assert_eq!(json["apps"]["a"]["env"]["PYTHONUNBUFFERED"], "1");
}

/// PM2 (shell-quote): `args` as a string is split like a shell; a list
/// is kept word for word.
#[test]
fn args_as_a_string_and_as_a_list() {
    let a = app("- {name: a, script: s.js, args: '--mode fast \"two words\"'}\n");
    assert_eq!(
        a["cmd"],
        serde_json::json!(["node", "s.js", "--mode", "fast", "two words"])
    );
    let a = app("- {name: a, script: s.js, args: [--mode, 'two words']}\n");
    assert_eq!(
        a["cmd"],
        serde_json::json!(["node", "s.js", "--mode", "two words"])
    );
}
