//! Numeric ids, as PM2's `id` column: every instance has a small id,
//! unique within the daemon, that stays with it across `eco restart`, a
//! crash restart, `eco reload` and a daemon killed with -9, is freed when
//! the instance goes (and taken again by the next one), and names the
//! instance as a TARGET (`eco stop 0`, `eco describe 1`, `eco logs 1`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::support::{Home, all_online, eco, eventually, stderr, stdout};

const LIMIT: Duration = Duration::from_secs(15);

/// Says its app and instance, then sleeps.
const APP: &str = "cmd: [sh, -c, 'echo hello from $ECO_APP:$ECO_INSTANCE; exec sleep 1000']";

/// (project, app, instance) -> id, from `ls --json`.
type Ids = BTreeMap<(String, String, u64), u64>;

fn ids_of(rows: &[serde_json::Value]) -> Ids {
    rows.iter()
        .map(|r| {
            let text = |k: &str| r[k].as_str().expect(k).to_owned();
            (
                (
                    text("project"),
                    text("app"),
                    r["instance"].as_u64().expect("instance"),
                ),
                r["id"].as_u64().unwrap_or_else(|| panic!("no id in {r}")),
            )
        })
        .collect()
}

fn pids_of(rows: &[serde_json::Value]) -> BTreeSet<i64> {
    rows.iter().filter_map(|r| r["pid"].as_i64()).collect()
}

/// The row whose id is `id`.
fn by_id(rows: &[serde_json::Value], id: u64) -> serde_json::Value {
    rows.iter()
        .find(|r| r["id"] == id)
        .cloned()
        .unwrap_or_else(|| panic!("no row with id {id}: {rows:#?}"))
}

/// A project folder `name` in the home, with `ecosystem.yaml` = `yaml`.
fn project(home: &Home, name: &str, yaml: &str) -> PathBuf {
    let dir = home.path().join(name);
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::write(dir.join("ecosystem.yaml"), yaml).expect("write");
    dir
}

fn up(home: &Home, dir: &Path) {
    let out = eco(home.path(), dir, &["up"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

fn online(home: &Home, count: usize) -> Vec<serde_json::Value> {
    home.wait_rows(&format!("{count} online"), |r| {
        r.len() == count && all_online(r)
    })
}

/// Two projects: `shop` (web ×3, worker) applied first, `other` (lone)
/// second, so a daemon that numbered again in its restore order (projects
/// by name) would give other different ids.
fn two_projects(home: &Home) -> Ids {
    let shop = project(
        home,
        "shop",
        &format!("name: shop\napps:\n  web:\n    {APP}\n    instances: 3\n  worker:\n    {APP}\n"),
    );
    let other = project(
        home,
        "other",
        &format!("name: other\napps:\n  lone:\n    {APP}\n"),
    );
    up(home, &shop);
    up(home, &other);
    ids_of(&online(home, 5))
}

#[test]
fn ids_are_unique_small_and_kept_across_restarts_reloads_and_a_dead_daemon() {
    let home = Home::new();
    let ids = two_projects(&home);
    let numbers: BTreeSet<u64> = ids.values().copied().collect();
    assert_eq!(
        numbers,
        (0..5).collect(),
        "unique within the daemon: {ids:?}"
    );
    assert_eq!(
        ids[&("other".into(), "lone".into(), 0)],
        4,
        "numbered in start order: {ids:?}"
    );
    let table = home.ok(&["ls"]);
    let header = table.lines().next().expect("header");
    assert!(header.starts_with("project  app     id  pid"), "{table}");
    assert!(
        table.lines().any(|l| {
            let cells: Vec<&str> = l.split_whitespace().collect();
            cells.get(..3) == Some(&["other", "lone", "4"][..])
        }),
        "{table}"
    );

    // eco restart: new processes, the same ids.
    let before = pids_of(&home.rows());
    home.ok(&["restart", "shop/"]);
    let rows = home.wait_rows("shop restarted", |r| {
        r.len() == 5
            && all_online(r)
            && r.iter()
                .filter(|r| r["project"] == "shop")
                .all(|r| !before.contains(&r["pid"].as_i64().unwrap_or(0)))
    });
    assert_eq!(ids_of(&rows), ids, "after eco restart");

    // A crash restart.
    let worker = home
        .rows()
        .into_iter()
        .find(|r| r["app"] == "worker")
        .expect("worker");
    let pid = worker["pid"].as_i64().expect("pid");
    let restarts = worker["restarts"].as_u64().expect("restarts");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(pid).expect("pid")),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill worker");
    let rows = home.wait_rows("worker back after its crash", |r| {
        r.len() == 5
            && all_online(r)
            && r.iter()
                .any(|r| r["app"] == "worker" && r["pid"] != pid && r["restarts"] == restarts + 1)
    });
    assert_eq!(ids_of(&rows), ids, "after a crash restart");

    // eco reload (the rolling path).
    let before = pids_of(&rows);
    home.ok(&["reload", "web"]);
    let rows = home.wait_rows("web reloaded", |r| {
        r.len() == 5
            && all_online(r)
            && r.iter()
                .filter(|r| r["app"] == "web")
                .all(|r| !before.contains(&r["pid"].as_i64().unwrap_or(0)))
    });
    assert_eq!(ids_of(&rows), ids, "after eco reload");

    // The daemon dies (kill -9); the next command starts a new one.
    home.kill_daemon_hard();
    let rows = online(&home, 5);
    assert_eq!(ids_of(&rows), ids, "after the daemon was killed");
    let state = std::fs::read_to_string(home.path().join("state.json")).expect("state");
    assert!(state.contains("\"ids\""), "{state}");
}

#[test]
fn an_id_names_one_instance_for_stop_start_restart_describe_and_logs() {
    let home = Home::new();
    let ids = two_projects(&home);
    let id_of = |app: &str, i: u64| {
        let project = if app == "lone" { "other" } else { "shop" };
        ids[&(project.into(), app.into(), i)]
    };

    // eco stop ID: that instance only.
    let web1 = id_of("web", 1).to_string();
    let out = home.ok(&["stop", &web1]);
    assert!(out.starts_with("stopped web:1\n"), "{out}");
    let rows = home.rows();
    for row in &rows {
        let want = if row["app"] == "web" && row["instance"] == 1 {
            "stopped"
        } else {
            "online"
        };
        assert_eq!(row["status"], want, "{row}");
    }
    // eco start ID.
    home.ok(&["start", &web1]);
    let rows = online(&home, 5);

    // eco restart ID: a new process for it, the others as they were.
    let worker = id_of("worker", 0);
    let before = rows.clone();
    home.ok(&["restart", &worker.to_string()]);
    let rows = home.wait_rows("worker restarted", |r| {
        all_online(r) && by_id(r, worker)["pid"] != by_id(&before, worker)["pid"]
    });
    for row in rows.iter().filter(|r| r["id"] != worker) {
        assert_eq!(
            row["pid"],
            by_id(&before, row["id"].as_u64().expect("id"))["pid"]
        );
    }

    // eco describe ID: the app, with that instance only.
    let lone = id_of("lone", 0);
    let described: serde_json::Value =
        serde_json::from_str(&home.ok(&["describe", &id_of("web", 2).to_string(), "--json"]))
            .expect("json");
    let app = &described[0];
    assert_eq!(
        (app["project"].as_str(), app["app"].as_str()),
        (Some("shop"), Some("web"))
    );
    let instances = app["instances"].as_array().expect("instances");
    assert_eq!(instances.len(), 1, "{described}");
    assert_eq!(instances[0]["instance"], 2);
    assert_eq!(instances[0]["id"], id_of("web", 2));
    assert_eq!(instances[0]["pid"], by_id(&rows, id_of("web", 2))["pid"]);
    let text = home.ok(&["show", &lone.to_string()]);
    assert!(text.contains(&format!("instance 0 (id {lone})")), "{text}");

    // eco logs ID: its app's log (logs are kept per app).
    eventually("lone's log", LIMIT, || {
        let out = home.ok(&["logs", &lone.to_string()]);
        out.contains("hello from lone:0") && !out.contains("hello from web")
    });

    // An id that names nothing: exit 2, with the ids in use.
    let out = home.eco(&["stop", "42"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("no instance has id 42"), "{err}");
    assert!(err.contains("in use: 0-4"), "{err}");
    for command in ["describe", "logs", "restart", "start"] {
        let out = home.eco(&[command, "42"]);
        assert_eq!(out.status.code(), Some(2), "{command}: {}", stderr(&out));
    }
    // delete takes whole apps: an id is refused, nothing is deleted.
    let out = home.eco(&["delete", &lone.to_string()]);
    assert_eq!(out.status.code(), Some(2), "{}", stdout(&out));
    assert!(stderr(&out).contains("eco scale"), "{}", stderr(&out));
    assert_eq!(home.rows().len(), 5);
}

#[test]
fn freed_ids_are_taken_again_by_the_next_instances() {
    let home = Home::new();
    let ids = two_projects(&home);
    let id = |project: &str, app: &str, i: u64| ids[&(project.into(), app.into(), i)];
    assert_eq!(
        (id("shop", "web", 1), id("shop", "web", 2)),
        (1, 2),
        "{ids:?}"
    );

    home.ok(&["scale", "shop/web", "1"]);
    let rows = online(&home, 3);
    let now: BTreeSet<u64> = ids_of(&rows).values().copied().collect();
    assert_eq!(now, BTreeSet::from([0, 3, 4]), "1 and 2 freed: {rows:#?}");

    // A new project takes the lowest free number.
    let more = project(
        &home,
        "more",
        &format!("name: more\napps:\n  one:\n    {APP}\n"),
    );
    up(&home, &more);
    let rows = online(&home, 4);
    assert_eq!(ids_of(&rows)[&("more".into(), "one".into(), 0)], 1);

    // Scaling up again: 2, then the next free one.
    home.ok(&["scale", "shop/web", "3"]);
    let rows = online(&home, 6);
    let got = ids_of(&rows);
    assert_eq!(got[&("shop".into(), "web".into(), 1)], 2, "{got:?}");
    assert_eq!(got[&("shop".into(), "web".into(), 2)], 5, "{got:?}");

    // down frees a project's ids; delete an app's.
    let out = eco(home.path(), &more, &["down"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    home.ok(&["delete", "lone"]);
    online(&home, 4);
    let again = project(
        &home,
        "again",
        &format!("name: again\napps:\n  two:\n    {APP}\n    instances: 2\n"),
    );
    up(&home, &again);
    let got = ids_of(&online(&home, 6));
    assert_eq!(got[&("again".into(), "two".into(), 0)], 1, "{got:?}");
    assert_eq!(got[&("again".into(), "two".into(), 1)], 4, "{got:?}");
}

#[test]
fn digits_naming_both_an_app_and_an_id_are_refused_with_both_spellings() {
    let home = Home::new();
    home.write(
        "ecosystem.yaml",
        &format!(
            "name: nums\napps:\n  '0':\n    {APP}\n  web:\n    {APP}\n    depends_on: ['0']\n"
        ),
    );
    home.ok(&["up"]);
    let rows = online(&home, 2);
    let ids = ids_of(&rows);
    assert_eq!(ids[&("nums".into(), "0".into(), 0)], 0, "{ids:?}");
    let web = ids[&("nums".into(), "web".into(), 0)];
    assert_eq!(web, 1);

    let out = home.eco(&["stop", "0"]);
    assert_eq!(out.status.code(), Some(2), "{}", stdout(&out));
    let err = stderr(&out);
    assert!(
        err.contains("`0` is both the id of nums/0:0 and the name of nums/0"),
        "{err}"
    );
    assert!(err.contains("`nums/0` for the app"), "{err}");
    assert!(all_online(&home.rows()), "nothing was stopped");

    // Digits that are only an id, and the app by its full name.
    home.ok(&["stop", "1"]);
    assert_eq!(home.row("web", 0)["status"], "stopped");
    home.ok(&["stop", "nums/0"]);
    assert_eq!(home.row("0", 0)["status"], "stopped");
}
