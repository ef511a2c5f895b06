//! The dashboard in a real browser: Debian's headless chromium, driven by
//! npm's playwright-core (tests/dashboard/drive.mjs), against a live
//! `eco serve` in front of a running project.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::tools::{require, tool};
use crate::support::{Home, all_online, eco_bin, eventually, free_port, root};

/// How long a browser scenario may take, start of chromium included, on a
/// busy host. The scenarios' own waits are shorter.
const DRIVE_LIMIT: Duration = Duration::from_secs(90);

/// Prints the content of `trigger` as one line whenever the test writes it.
const TALKER: &str = "while :; do\n  if [ -f trigger ]; then cat trigger; echo; rm -f trigger; fi\n  sleep 0.1\ndone\n";

/// A project of two apps: `web` (two instances) and `talker`.
fn project(home: &Home) -> String {
    home.write("talk.sh", TALKER);
    home.write(
        "ecosystem.yaml",
        "apps:\n  web:\n    cmd: [sleep, '1000']\n    instances: 2\n  talker:\n    cmd: [sh, ./talk.sh]\n",
    );
    home.ok(&["up"]);
    let rows = home.wait_rows("every instance online", all_online);
    rows[0]["project"]
        .as_str()
        .expect("a project name")
        .to_owned()
}

/// A running `eco serve`, stopped on drop.
struct Serve {
    child: Child,
    url: String,
    log: PathBuf,
}

impl Serve {
    /// Starts `eco serve` on a free port (with `--token-file` when `token`
    /// is given) and waits until the API answers.
    fn start(home: &Home, token: Option<&str>) -> Serve {
        let port = free_port();
        let listen = format!("127.0.0.1:{port}");
        let mut args = vec!["serve".to_owned(), "--listen".to_owned(), listen.clone()];
        if let Some(token) = token {
            let file = home.write("token", &format!("{token}\n"));
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600))
                .expect("chmod 600 the token file");
            args.extend(["--token-file".to_owned(), file.display().to_string()]);
        }
        let log = home.path().join("serve.log");
        let out = std::fs::File::create(&log).expect("serve.log");
        let child = Command::new(eco_bin())
            .args(&args)
            .current_dir(home.path())
            .env("ECO_HOME", home.path())
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("serve.log"))
            .stderr(out)
            .spawn()
            .expect("eco serve starts");
        let mut serve = Serve {
            child,
            url: format!("http://{listen}/"),
            log,
        };
        serve.wait_ready(&listen);
        serve
    }

    fn wait_ready(&mut self, listen: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !answers_200(listen, "/api/v1/apps") {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("eco serve exited ({status}):\n{}", self.output());
            }
            assert!(
                Instant::now() < deadline,
                "eco serve never answered GET /api/v1/apps on {listen}:\n{}",
                self.output()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// GET `path` answers 200 (a plain HTTP/1.1 request: no client crate needed).
fn answers_200(listen: &str, path: &str) -> bool {
    let Ok(mut stream) = TcpStream::connect(listen) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let request = format!("GET {path} HTTP/1.1\r\nHost: {listen}\r\nConnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.1 200")
}

/// The folder of the node driver, with playwright-core installed.
fn driver_dir() -> PathBuf {
    require(&["node", "chromium"]);
    let dir = root().join("tests/dashboard");
    assert!(
        dir.join("node_modules/playwright-core/package.json")
            .exists(),
        "playwright-core is not installed in tests/dashboard/node_modules: run the tests \
         with `scripts/test` (it installs it), or `(cd tests/dashboard && npm ci)`"
    );
    dir
}

/// Runs `node drive.mjs SCENARIO URL ARGS` and returns what it saw.
fn drive(serve: &Serve, scenario: &str, args: &[&str]) -> Value {
    let dir = driver_dir();
    let mut child = Command::new(tool("node"))
        .arg("drive.mjs")
        .arg(scenario)
        .arg(&serve.url)
        .args(args)
        .current_dir(&dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("node runs");
    let deadline = Instant::now() + DRIVE_LIMIT;
    while child.try_wait().expect("wait for node").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().expect("node's output");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "drive.mjs {scenario} failed ({}):\n{}\n{stdout}\neco serve:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        serve.output()
    );
    let seen: Value = serde_json::from_str(stdout.trim()).expect("drive.mjs prints JSON");
    assert_eq!(
        seen["errors"],
        serde_json::json!([]),
        "script errors in the page: {seen}"
    );
    seen
}

/// The pid of `app` instance 0, from `eco ls --json`.
fn pid(home: &Home, app: &str) -> i64 {
    home.row(app, 0)["pid"].as_i64().expect("a pid")
}

/// The page lists the project's apps with their instances' pids, and reads
/// at a desktop's and a phone's width.
#[test]
fn the_dashboard_lists_the_apps_of_a_running_project() {
    let home = Home::new();
    let project = project(&home);
    let serve = Serve::start(&home, None);
    let web = format!("{project}/web");
    let talker = format!("{project}/talker");
    let seen = drive(&serve, "list", &[&web, &talker]);
    let apps = seen["apps"].as_array().expect("apps");
    let find = |name: &str| {
        apps.iter()
            .find(|a| a["project"] == project.as_str() && a["app"] == name)
            .unwrap_or_else(|| panic!("the page does not list {name}: {seen}"))
    };
    let pids: Vec<String> = home
        .rows()
        .iter()
        .filter(|r| r["app"] == "web")
        .map(|r| r["pid"].to_string())
        .collect();
    assert_eq!(find("web")["instances"], 2, "{seen}");
    assert_eq!(find("web")["status"], "online", "{seen}");
    assert_eq!(find("web")["pids"], serde_json::json!(pids), "{seen}");
    assert_eq!(find("talker")["status"], "online", "{seen}");
    // Readable at 1280×800 and at a phone's 390 px: no cell of an app's line
    // is cut, nothing runs off to the side.
    for width in ["desktop", "phone"] {
        assert_eq!(seen[width]["cut"], serde_json::json!([]), "{width}: {seen}");
        assert_eq!(seen[width]["overflow"], false, "{width}: {seen}");
    }
}

#[test]
fn a_log_line_printed_by_an_app_appears_within_two_seconds() {
    let home = Home::new();
    let project = project(&home);
    let serve = Serve::start(&home, None);
    let marker = format!("dashboard-marker-{}", std::process::id());
    let trigger = home.path().join("trigger");
    let talker = format!("{project}/talker");
    let seen = drive(
        &serve,
        "log",
        &[&talker, &trigger.display().to_string(), &marker],
    );
    let ms = seen["ms"].as_u64().expect("ms");
    assert!(ms < 2000, "the line took {ms} ms to appear: {seen}");
    assert!(
        home.ok(&["logs", "talker", "--out"]).contains(&marker),
        "the app never printed the marker"
    );
}

#[test]
fn with_the_token_the_restart_button_restarts_the_app() {
    let home = Home::new();
    let project = project(&home);
    let token = "dashboard-test-token-0123456789";
    let serve = Serve::start(&home, Some(token));
    let before = pid(&home, "talker");
    let seen = drive(&serve, "restart", &[&format!("{project}/talker"), token]);
    assert_eq!(
        seen["buttonsBefore"], 0,
        "controls before the token: {seen}"
    );
    assert_eq!(
        seen["buttons"],
        serde_json::json!(["restart", "reload", "stop"]),
        "{seen}"
    );
    assert_eq!(seen["tokenInUrl"], false, "{seen}");
    assert_eq!(seen["before"], before.to_string(), "{seen}");
    let after = seen["after"].as_str().expect("a new pid");
    assert_ne!(after, before.to_string(), "{seen}");
    eventually("eco ls shows the new pid", Duration::from_secs(10), || {
        pid(&home, "talker").to_string() == after
    });
    assert_eq!(home.row("talker", 0)["restarts"], 1);
}

#[test]
fn without_the_token_no_control_shows_and_a_forged_post_gets_401() {
    let home = Home::new();
    let project = project(&home);
    let serve = Serve::start(&home, Some("the-real-token-0123456789"));
    let before = pid(&home, "talker");
    let seen = drive(
        &serve,
        "readonly",
        &[&format!("{project}/talker"), "a-forged-token"],
    );
    assert_eq!(seen["controls"], 0, "controls without a token: {seen}");
    assert_eq!(seen["forged"]["none"], 401, "{seen}");
    assert_eq!(seen["forged"]["wrong"], 401, "{seen}");
    assert_eq!(
        pid(&home, "talker"),
        before,
        "a forged POST restarted the app"
    );
    assert_eq!(home.row("talker", 0)["restarts"], 0);
}
