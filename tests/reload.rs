//! Hot reconcile: saving the ecosystem file converges the daemon with the
//! minimal change, whatever way the editor saves; watched sources restart
//! their app once per burst.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::{Home, all_online, eventually};

#[derive(Clone, Copy)]
enum Save {
    InPlace,
    Rename,
    Recreate,
}

fn save(path: &Path, text: &str, how: Save) {
    match how {
        Save::InPlace => std::fs::write(path, text).expect("write"),
        Save::Rename => {
            let tmp = path.with_extension("yaml.swp");
            std::fs::write(&tmp, text).expect("write tmp");
            std::fs::rename(&tmp, path).expect("rename");
        }
        Save::Recreate => {
            std::fs::remove_file(path).expect("remove");
            std::fs::write(path, text).expect("recreate");
        }
    }
}

#[derive(Clone)]
struct Shape {
    a_env: &'static str,
    c_arg: &'static str,
    b_instances: u32,
    with_d: bool,
    a_max_restarts: u32,
}

impl Shape {
    fn yaml(&self) -> String {
        let mut text = format!(
            "name: live\napps:\n  a:\n    cmd: [sleep, '1001']\n    env: {{ V: '{}' }}\n    max_restarts: {}\n  \
             b:\n    cmd: [sleep, '1002']\n    instances: {}\n  c:\n    cmd: [sleep, '{}']\n",
            self.a_env, self.a_max_restarts, self.b_instances, self.c_arg
        );
        if self.with_d {
            text.push_str("  d:\n    cmd: [sleep, '1005']\n");
        }
        text
    }
}

/// `app:instance` → pid, once every row is online.
fn pids(rows: &[Value]) -> BTreeMap<String, i64> {
    rows.iter()
        .map(|r| {
            (
                format!(
                    "{}:{}",
                    r["app"].as_str().unwrap_or_default(),
                    r["instance"]
                ),
                r["pid"].as_i64().unwrap_or_default(),
            )
        })
        .collect()
}

/// Saves `shape`, then waits (bounded generously: a loaded host is slow to
/// notice a save) for the instances in `changed` to have new pids, `gone`
/// to be absent, and every other one to keep its pid.
fn edit(home: &Home, how: Save, shape: &Shape, changed: &[&str], gone: &[&str]) {
    let before = pids(&home.rows());
    let file = home.path().join("ecosystem.yaml");
    let start = Instant::now();
    save(&file, &shape.yaml(), how);
    let deadline = start + Duration::from_secs(15);
    loop {
        let rows = home.rows();
        let now = pids(&rows);
        let settled = all_online(&rows)
            && changed
                .iter()
                .all(|k| now.get(*k).is_some_and(|p| before.get(*k) != Some(p)))
            && gone.iter().all(|k| !now.contains_key(*k));
        if settled {
            for (key, pid) in &now {
                if !changed.contains(&key.as_str()) {
                    assert_eq!(
                        before.get(key),
                        Some(pid),
                        "{key} should not have been touched"
                    );
                }
            }
            // Nothing else changes afterwards either.
            std::thread::sleep(Duration::from_millis(150));
            assert_eq!(pids(&home.rows()), now, "the state moved after converging");
            return;
        }
        assert!(
            Instant::now() < deadline,
            "not converged within 15 s: before {before:?}, now {now:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn edits(how: Save) {
    let home = Home::new();
    let mut shape = Shape {
        a_env: "1",
        c_arg: "1003",
        b_instances: 2,
        with_d: false,
        a_max_restarts: 15,
    };
    home.write("ecosystem.yaml", &shape.yaml());
    home.ok(&["up"]);
    home.wait_rows("online", |r| r.len() == 4 && all_online(r));

    shape.a_env = "2";
    edit(&home, how, &shape, &["a:0"], &[]);
    shape.c_arg = "1004";
    edit(&home, how, &shape, &["c:0"], &[]);
    shape.b_instances = 4;
    edit(&home, how, &shape, &["b:2", "b:3"], &[]);
    shape.b_instances = 1;
    edit(&home, how, &shape, &[], &["b:1", "b:2", "b:3"]);
    shape.with_d = true;
    edit(&home, how, &shape, &["d:0"], &[]);
    shape.with_d = false;
    edit(&home, how, &shape, &[], &["d:0"]);
    shape.a_max_restarts = 3;
    let before = pids(&home.rows());
    save(&home.path().join("ecosystem.yaml"), &shape.yaml(), how);
    let spec_updated = || {
        let out = home.ok(&["describe", "a", "--json"]);
        let details: Value = serde_json::from_str(&out).expect("json");
        details[0]["spec"]["settings"]["max_restarts"] == 3
    };
    eventually(
        "max_restarts applied in place",
        Duration::from_secs(10),
        spec_updated,
    );
    assert_eq!(
        pids(&home.rows()),
        before,
        "an in-place change restarts nothing"
    );
}

#[test]
fn edits_saved_in_place() {
    edits(Save::InPlace);
}

#[test]
fn edits_saved_by_rename() {
    edits(Save::Rename);
}

#[test]
fn edits_saved_by_delete_and_recreate() {
    edits(Save::Recreate);
}

#[test]
fn a_hundred_saves_in_a_second_end_at_the_last() {
    let home = Home::new();
    let text = |n: u32| {
        format!("name: burst\napps:\n  w:\n    cmd: [sleep, '1000']\n    instances: {n}\n")
    };
    home.write("ecosystem.yaml", &text(1));
    home.ok(&["up"]);
    home.wait_rows("online", all_online);
    let file = home.path().join("ecosystem.yaml");
    for i in 0..100 {
        save(
            &file,
            &text(1 + i % 5),
            if i % 2 == 0 {
                Save::InPlace
            } else {
                Save::Rename
            },
        );
        std::thread::sleep(Duration::from_millis(8));
    }
    save(&file, &text(3), Save::InPlace);
    home.wait_rows("3 instances", |r| r.len() == 3 && all_online(r));
    std::thread::sleep(Duration::from_millis(300));
    let rows = home.rows();
    assert_eq!(rows.len(), 3, "{rows:#?}");
    assert!(all_online(&rows));
}

#[test]
fn an_invalid_save_changes_nothing_and_is_shown_until_fixed() {
    let home = Home::new();
    let good =
        "name: careful\napps:\n  a:\n    cmd: [sleep, '1000']\n  b:\n    cmd: [sleep, '1001']\n";
    home.write("ecosystem.yaml", good);
    home.ok(&["up"]);
    let before = pids(&home.wait_rows("online", |r| r.len() == 2 && all_online(r)));
    home.write(
        "ecosystem.yaml",
        "name: careful\napps:\n  a:\n    cmd: [sleep, '1000']\n    instances: two\n",
    );
    eventually("error shown", Duration::from_secs(10), || {
        home.ok(&["ls"]).contains("apps.a.instances")
    });
    let table = home.ok(&["ls"]);
    assert!(
        table.contains("ecosystem.yaml:5:16: apps.a.instances"),
        "{table}"
    );
    assert_eq!(pids(&home.rows()), before);
    let described = home.ok(&["describe", "a", "--json"]);
    assert!(described.contains("apps.a.instances"), "{described}");
    // `eco reload` on the invalid file: exit 2 with the errors.
    let out = home.eco(&["reload"]);
    assert_eq!(out.status.code(), Some(2));
    home.write("ecosystem.yaml", good);
    eventually("error cleared", Duration::from_secs(10), || {
        !home.ok(&["ls"]).contains("not applied")
    });
    assert_eq!(pids(&home.rows()), before);
}

#[test]
fn a_burst_of_source_changes_restarts_once_and_ignored_paths_none() {
    let home = Home::new();
    // Sources on tmpfs when there is one: fewer disk stalls in the burst.
    let sources = tempfile::Builder::new()
        .tempdir_in("/dev/shm")
        .or_else(|_| tempfile::tempdir())
        .expect("sources dir");
    let app = sources.path();
    std::fs::create_dir_all(app.join("src")).expect("src");
    std::fs::create_dir_all(app.join("node_modules/dep")).expect("node_modules");
    home.write(
        "ecosystem.yaml",
        &format!(
            "name: dev\napps:\n  web:\n    cmd: [sleep, '1000']\n    cwd: {}\n    watch: ['src/**']\n    watch_delay: 1s\n",
            app.display()
        ),
    );
    home.ok(&["up"]);
    home.wait_rows("online", all_online);
    let pid0 = home.row("web", 0)["pid"].clone();
    // Ignored paths restart nothing.
    for i in 0..20 {
        std::fs::write(app.join(format!("node_modules/dep/f{i}.js")), "x").expect("write");
        std::fs::write(app.join(format!("src/.f{i}.js.swp")), "x").expect("write");
        std::fs::write(app.join(format!("other{i}.txt")), "x").expect("write");
    }
    // Longer than `watch_delay`: a restart would have begun.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        home.row("web", 0)["pid"],
        pid0,
        "ignored changes restarted the app"
    );
    assert_eq!(home.row("web", 0)["restarts"], 0);
    // 1,000 files, none a `watch_delay` after the one before (the
    // debounce is trailing, so a slow host only makes the burst longer):
    // one restart.
    std::fs::create_dir_all(app.join("src/gen")).expect("gen");
    for i in 0..1000 {
        std::fs::write(app.join(format!("src/gen/f{i}.js")), "x").expect("write");
    }
    home.wait_rows("restarted", |r| {
        r[0]["restarts"] == 1 && r[0]["status"] == "online"
    });
    std::thread::sleep(Duration::from_millis(1500));
    let row = home.row("web", 0);
    assert_eq!(row["restarts"], 1, "{row}");
    assert_eq!(row["last_restart_reason"], "watch", "{row}");
    let described = home.ok(&["describe", "web", "--json"]);
    assert!(
        described.contains("\"last_restart_detail\": \"src/"),
        "the changed path is in describe: {described}"
    );
}
