//! PM2's hands on the keyboard: `eco start|stop|restart|reload|delete FILE`
//! act on an ecosystem file's apps, `show`, `jlist` and `list` are there,
//! did-you-mean never offers an internal command, actions print the
//! project's table (`-s`: not), `watching` is shown, `eco logs` says when
//! nothing runs and labels followed lines by stream, and `eco reload` with
//! no file here reloads every applied project.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::support::{Home, all_online, eco, eco_bin, eventually, stderr, stdout};

const LIMIT: Duration = Duration::from_secs(15);

/// A project folder `name` inside the home, holding `files`.
fn project(home: &Home, name: &str, files: &[(&str, &str)]) -> PathBuf {
    let dir = home.path().join(name);
    std::fs::create_dir_all(&dir).expect("mkdir");
    for (file, text) in files {
        std::fs::write(dir.join(file), text).expect("write");
    }
    dir
}

/// `eco ARGS` in `dir`, asserting exit 0; stdout.
fn ok_in(home: &Home, dir: &Path, args: &[&str]) -> String {
    let out = eco(home.path(), dir, args);
    assert_eq!(
        out.status.code(),
        Some(0),
        "eco {args:?} failed:\nstdout: {}\nstderr: {}",
        stdout(&out),
        stderr(&out)
    );
    stdout(&out)
}

/// The pid of every row, by (app, instance).
fn pids(home: &Home) -> Vec<(String, u64, i64)> {
    home.rows()
        .iter()
        .map(|r| {
            (
                r["app"].as_str().unwrap_or_default().to_owned(),
                r["instance"].as_u64().unwrap_or_default(),
                r["pid"].as_i64().unwrap_or_default(),
            )
        })
        .collect()
}

fn cmdline(pid: i64) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .unwrap_or_default()
}

const CONFIG_JS: &str = "module.exports = {\n  apps: [\n    { name: 'web', script: 'server.js', watch: ['server.js'], max_memory_restart: '300M' },\n    { name: 'worker', script: 'server.js' },\n  ],\n};\n";
const SERVER_JS: &str = "setInterval(() => {}, 1000);\n";

#[test]
fn start_stop_restart_reload_delete_an_ecosystem_config_js() {
    let home = Home::new();
    let shop = project(
        &home,
        "shop",
        &[("ecosystem.config.js", CONFIG_JS), ("server.js", SERVER_JS)],
    );
    // PM2's most common command runs the file's apps, not the file.
    let out = ok_in(&home, &shop, &["start", "ecosystem.config.js"]);
    assert!(out.contains("+ start web"), "{out}");
    assert!(out.contains("project  app"), "the table follows: {out}");
    let rows = home.wait_rows("web and worker online", |r| r.len() == 2 && all_online(r));
    let apps: BTreeSet<&str> = rows.iter().filter_map(|r| r["app"].as_str()).collect();
    assert_eq!(apps, BTreeSet::from(["web", "worker"]), "{rows:#?}");
    for row in &rows {
        assert_eq!(row["project"], "shop");
        let cmd = cmdline(row["pid"].as_i64().expect("pid"));
        assert!(cmd.contains("server.js"), "{cmd}");
        assert!(!cmd.contains("ecosystem.config.js"), "{cmd}");
    }

    // stop FILE: every app of the file's project.
    let out = ok_in(&home, &shop, &["stop", "ecosystem.config.js"]);
    assert!(out.starts_with("stopped web, worker\n"), "{out}");
    assert!(out.contains("stopped"), "{out}");
    home.wait_rows("both stopped", |r| {
        r.len() == 2 && r.iter().all(|r| r["status"] == "stopped")
    });

    // restart FILE starts them again (PM2's restart starts stopped apps).
    ok_in(&home, &shop, &["restart", "ecosystem.config.js"]);
    home.wait_rows("online again", |r| r.len() == 2 && all_online(r));

    // reload FILE: the unchanged apps are reloaded too, as PM2 does, so
    // new code on disk runs: every pid changes.
    let before = pids(&home);
    let out = ok_in(&home, &shop, &["reload", "ecosystem.config.js"]);
    assert!(out.contains("reloaded web"), "{out}");
    let after = home.wait_rows("reloaded", |r| r.len() == 2 && all_online(r));
    for (app, _, pid) in &before {
        let now = after
            .iter()
            .find(|r| r["app"] == app.as_str())
            .and_then(|r| r["pid"].as_i64());
        assert_ne!(now, Some(*pid), "{app} was not reloaded");
    }

    // delete FILE = down -f FILE, from another folder too.
    let out = ok_in(
        &home,
        home.path(),
        &["delete", "shop/ecosystem.config.js", "-s"],
    );
    assert_eq!(out, "", "-s prints nothing");
    assert!(home.rows().is_empty());
}

#[test]
fn start_file_refuses_script_options_and_a_missing_file() {
    let home = Home::new();
    let shop = project(
        &home,
        "shop",
        &[("ecosystem.config.js", CONFIG_JS), ("server.js", SERVER_JS)],
    );
    let out = eco(
        home.path(),
        &shop,
        &["start", "ecosystem.config.js", "--name", "x"],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("--name is for a script"),
        "{}",
        stderr(&out)
    );
    let out = eco(home.path(), &shop, &["start", "ecosystem.prod.config.js"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("no such file"), "{}", stderr(&out));
    assert!(home.rows().is_empty(), "nothing was started");
}

#[test]
fn show_jlist_list_and_watching() {
    let home = Home::new();
    let shop = project(
        &home,
        "shop",
        &[("ecosystem.config.js", CONFIG_JS), ("server.js", SERVER_JS)],
    );
    ok_in(&home, &shop, &["start", "ecosystem.config.js", "-s"]);
    home.wait_rows("online", |r| r.len() == 2 && all_online(r));

    let show = home.ok(&["show", "web"]);
    assert!(show.starts_with("shop/web\n"), "{show}");
    assert!(show.contains("  watch:     server.js"), "{show}");
    assert!(show.contains("  max mem:   300.0 MiB"), "{show}");
    assert!(show.contains("  depends:   nothing"), "{show}");
    assert!(show.contains("  restart:   always"), "{show}");
    assert_eq!(show, home.ok(&["describe", "web"]));

    let jlist: Vec<serde_json::Value> =
        serde_json::from_str(&home.ok(&["jlist"])).expect("jlist is JSON");
    assert_eq!(jlist.len(), 2);
    let watching = |app: &str| {
        jlist
            .iter()
            .find(|r| r["app"] == app)
            .map(|r| r["watching"].clone())
    };
    assert_eq!(watching("web"), Some(serde_json::Value::Bool(true)));
    assert_eq!(watching("worker"), Some(serde_json::Value::Bool(false)));

    let list = home.ok(&["list"]);
    let header = list.lines().next().expect("header");
    assert_eq!(Some(header), home.ok(&["ls"]).lines().next(), "list = ls");
    assert!(header.contains("watching"), "{list}");
    let column = header.find("watching").expect("column");
    let web = list
        .lines()
        .find(|l| l.starts_with("shop     web "))
        .expect("web row");
    assert_eq!(web.get(column..column + 3), Some("yes"), "{list}");
    let worker = list
        .lines()
        .find(|l| l.starts_with("shop     worker "))
        .expect("worker row");
    assert_eq!(worker.get(column..column + 1), Some("-"), "{list}");

    // A stopped app is not watched: a change would not restart it.
    home.ok(&["stop", "web", "-s"]);
    assert_eq!(home.row("web", 0)["watching"], false);
}

#[test]
fn did_you_mean_never_suggests_an_internal_command() {
    let home = Home::new();
    for typo in ["lsit", "__lis", "lisen"] {
        let out = home.eco(&[typo]);
        assert_eq!(out.status.code(), Some(2));
        let err = stderr(&out);
        let tips: Vec<&str> = err.lines().filter(|l| l.contains("tip:")).collect();
        assert!(tips.iter().all(|t| !t.contains("'__")), "{typo}: {err}");
    }
    assert!(stderr(&home.eco(&["shw"])).contains("'show'"));
    let help = home.ok(&["--help"]);
    assert!(help.contains("jlist") && help.contains("show") && !help.contains("__"));
}

#[test]
fn reload_and_restart_with_no_file_here_act_on_every_project() {
    let home = Home::new();
    let empty = project(&home, "empty", &[]);
    // Nothing applied, no file: the missing file is the error.
    let out = eco(home.path(), &empty, &["reload"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("no ecosystem.yaml"),
        "{}",
        stderr(&out)
    );

    let sleeper = "apps:\n  web:\n    cmd: [sleep, '1000']\n";
    project(&home, "a", &[("ecosystem.yaml", sleeper)]);
    project(
        &home,
        "b",
        &[(
            "ecosystem.yaml",
            "apps:\n  api:\n    cmd: [sleep, '1000']\n    instances: 2\n",
        )],
    );
    // The README's sequence: up -f, then reload from a folder with no file.
    ok_in(&home, &empty, &["up", "-f", "../a/ecosystem.yaml"]);
    ok_in(&home, &empty, &["up", "-f", "../b/ecosystem.yaml"]);
    home.wait_rows("3 online", |r| r.len() == 3 && all_online(r));
    let before = pids(&home);

    let out = eco(home.path(), &empty, &["reload"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("reloading every applied project: a, b"),
        "{}",
        stderr(&out)
    );
    assert!(stdout(&out).contains("project  app"), "{}", stdout(&out));
    let moved = |before: &[(String, u64, i64)]| {
        let now = pids(&home);
        now.len() == 3
            && before.iter().all(|b| {
                now.iter()
                    .any(|n| n.0 == b.0 && n.1 == b.1 && n.2 != b.2 && n.2 > 0)
            })
    };
    eventually("every instance reloaded", LIMIT, || moved(&before));

    let before = pids(&home);
    let out = eco(home.path(), &empty, &["restart"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("restarting every applied project: a, b"),
        "{}",
        stderr(&out)
    );
    eventually("every instance restarted", LIMIT, || moved(&before));
    home.wait_rows("3 online", |r| r.len() == 3 && all_online(r));
}

#[test]
fn actions_print_the_projects_table_and_silent_does_not() {
    let home = Home::new();
    home.write(
        "ecosystem.yaml",
        "name: shop\napps:\n  web:\n    cmd: [sleep, '1000']\n  db:\n    cmd: [sleep, '1000']\n",
    );
    project(
        &home,
        "other",
        &[(
            "ecosystem.yaml",
            "apps:\n  lone:\n    cmd: [sleep, '1000']\n",
        )],
    );
    home.ok(&["up"]);
    home.ok(&["up", "-f", "other/ecosystem.yaml"]);
    home.wait_rows("3 online", |r| r.len() == 3 && all_online(r));

    let table_of = |out: &str| -> Vec<String> {
        out.lines()
            .skip_while(|l| !l.starts_with("project "))
            .skip(1)
            .map(|l| l.split_whitespace().take(2).collect::<Vec<_>>().join("/"))
            .collect()
    };
    let web = "shop/web".to_owned();
    let db = "shop/db".to_owned();

    let out = home.ok(&["stop", "web"]);
    assert!(out.starts_with("stopped web\n"), "{out}");
    // The affected project only: not `other`.
    assert_eq!(table_of(&out), vec![db.clone(), web.clone()], "{out}");
    assert!(out.contains(" stopped "), "{out}");

    assert_eq!(home.ok(&["start", "web", "-s"]), "");
    let out = home.ok(&["restart", "web"]);
    assert_eq!(table_of(&out), vec![db.clone(), web.clone()], "{out}");
    let out = home.ok(&["scale", "web", "2"]);
    assert_eq!(
        table_of(&out),
        vec![db.clone(), web.clone(), web.clone()],
        "{out}"
    );
    let out = home.ok(&["reload", "web"]);
    assert!(out.starts_with("reloaded web\n"), "{out}");
    assert_eq!(table_of(&out).len(), 3, "{out}");
    assert_eq!(home.ok(&["scale", "web", "1", "--silent"]), "");
    assert_eq!(home.ok(&["reload", "web", "-s"]), "");
    assert_eq!(home.ok(&["restart", "web", "-s"]), "");
    assert_eq!(home.ok(&["stop", "web", "-s"]), "");
    let out = home.ok(&["delete", "web"]);
    assert_eq!(table_of(&out), vec![db.clone()], "{out}");
    assert_eq!(home.ok(&["delete", "db", "-s"]), "");
}

/// Runs `eco ARGS` to its end, failing if it takes longer than `limit`.
fn finish_within(home: &Home, args: &[&str], limit: Duration) -> Output {
    let mut child = Command::new(eco_bin())
        .args(args)
        .current_dir(home.path())
        .env("ECO_HOME", home.path())
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("eco");
    let deadline = Instant::now() + limit;
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("eco {args:?} still runs after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("output")
}

#[test]
fn logs_with_nothing_running_says_so() {
    let home = Home::new();
    for args in [&["logs"][..], &["logs", "-f"][..]] {
        let out = finish_within(&home, args, LIMIT);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        assert_eq!(stdout(&out), "");
        assert!(stderr(&out).contains("no app runs"), "{}", stderr(&out));
    }
}

#[test]
fn logs_follow_labels_each_line_by_its_stream() {
    let home = Home::new();
    home.write(
        "ecosystem.yaml",
        "apps:\n  talk:\n    cmd: [sh, -c, 'while :; do echo to-out; echo to-err >&2; sleep 0.2; done']\n",
    );
    home.ok(&["up"]);
    eventually("talk wrote both streams", LIMIT, || {
        home.ok(&["logs", "talk", "--err"]).contains("to-err")
    });
    let mut follow = Command::new(eco_bin())
        .args(["logs", "-f", "-n", "1"])
        .current_dir(home.path())
        .env("ECO_HOME", home.path())
        .stdout(Stdio::piped())
        .spawn()
        .expect("logs -f");
    let reader = BufReader::new(follow.stdout.take().expect("stdout"));
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in reader.lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    // The tail: a header and a line per file; then followed lines, each
    // labelled (they used to come unlabelled under the stderr header).
    let deadline = Instant::now() + LIMIT;
    let mut lines: Vec<String> = Vec::new();
    let enough = |lines: &[String]| {
        let followed = followed(lines);
        followed.len() >= 6
            && followed.iter().any(|l| l == "talk out | to-out")
            && followed.iter().any(|l| l == "talk err | to-err")
    };
    while Instant::now() < deadline && !enough(&lines) {
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(100)) {
            lines.push(line);
        }
    }
    let _ = follow.kill();
    let _ = follow.wait();
    assert!(enough(&lines), "{lines:?}");
    let labelled = |l: &String| l == "talk out | to-out" || l == "talk err | to-err";
    assert!(followed(&lines).iter().all(labelled), "{lines:?}");
}

/// The lines after the tail: past the second header and its one line.
fn followed(lines: &[String]) -> &[String] {
    let second = lines
        .iter()
        .enumerate()
        .filter(|(_, l)| l.starts_with("==> "))
        .nth(1)
        .map(|(i, _)| i);
    match second {
        Some(i) if lines.len() > i + 2 => &lines[i + 2..],
        _ => &[],
    }
}
