//! Metrics, memory limits, scheduled restarts and `eco monit` in a pty.

use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::{Home, all_online, eco_bin, eventually};

/// Writes `hog.sh`: a shell that holds about `mb` MiB in a variable.
fn hog(home: &Home, mb: u32) {
    home.write(
        "hog.sh",
        &format!(
            "x=$(head -c {} /dev/zero | tr \"\\0\" x); echo holding; sleep 1000\n",
            mb * 1024 * 1024
        ),
    );
}

#[test]
fn memory_counts_the_whole_tree() {
    let home = Home::new();
    hog(&home, 50);
    // The app's own process is tiny; its child holds 50 MiB.
    home.write(
        "ecosystem.yaml",
        "apps:\n  parent:\n    cmd: [sh, -c, 'sh ./hog.sh & wait']\n",
    );
    home.ok(&["up"]);
    eventually("child holds 50 MiB", Duration::from_secs(10), || {
        home.rows()[0]["memory_bytes"]
            .as_u64()
            .is_some_and(|m| m >= 50 * 1024 * 1024)
    });
    let row = home.row("parent", 0);
    assert!(row["cpu_percent"].is_number(), "{row}");
}

#[test]
fn an_app_over_max_memory_restarts_and_one_under_does_not() {
    let home = Home::new();
    hog(&home, 60);
    home.write(
        "ecosystem.yaml",
        "apps:\n  hog:\n    cmd: [sh, ./hog.sh]\n    max_memory: 30M\n  lean:\n    cmd: [sleep, '1000']\n    max_memory: 30M\n",
    );
    home.ok(&["up"]);
    home.wait_rows("online", all_online);
    // Restarted within 3 s of holding the memory.
    eventually("hog holding", Duration::from_secs(10), || {
        home.ok(&["logs", "hog", "--out"]).contains("holding")
    });
    let start = Instant::now();
    let rows = home.wait_rows("hog restarted for memory", |rows| {
        rows.iter()
            .any(|r| r["app"] == "hog" && r["last_restart_reason"] == "memory")
    });
    // Two samples a second apart over the limit; the bound is generous
    // for a loaded host.
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "took {:?}",
        start.elapsed()
    );
    let lean = rows.iter().find(|r| r["app"] == "lean").expect("lean");
    assert_eq!(lean["restarts"], 0);
    let described = home.ok(&["describe", "hog"]);
    assert!(described.contains("restart: memory"), "{described}");
}

#[test]
fn cron_restart_restarts_on_schedule() {
    let home = Home::new();
    // Six fields: every 2 seconds (the optional seconds field).
    home.write(
        "ecosystem.yaml",
        "apps:\n  nightly:\n    cmd: [sleep, '1000']\n    cron_restart: '*/2 * * * * *'\n  steady:\n    cmd: [sleep, '1000']\n",
    );
    home.ok(&["up"]);
    let rows = home.wait_rows("a cron restart", |rows| {
        rows.iter().any(|r| {
            r["app"] == "nightly" && r["last_restart_reason"] == "cron" && r["status"] == "online"
        })
    });
    let steady = rows.iter().find(|r| r["app"] == "steady").expect("steady");
    assert_eq!(steady["restarts"], 0);
}

/// `eco monit` on a pseudo-terminal of 80×24.
struct Pty {
    child: std::process::Child,
    master: std::fs::File,
    screen: Arc<Mutex<Vec<u8>>>,
}

impl Pty {
    fn monit(home: &Home) -> Pty {
        let size = nix::pty::Winsize {
            ws_row: 24,
            ws_col: 80,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        let pty = nix::pty::openpty(Some(&size), None).expect("openpty");
        let slave: OwnedFd = pty.slave;
        let child = Command::new(eco_bin())
            .arg("monit")
            .env("ECO_HOME", home.path())
            .env("TERM", "xterm-256color")
            .stdin(Stdio::from(slave.try_clone().expect("dup")))
            .stdout(Stdio::from(slave.try_clone().expect("dup")))
            .stderr(Stdio::from(slave))
            .spawn()
            .expect("monit");
        let master = std::fs::File::from(pty.master);
        let screen = Arc::new(Mutex::new(Vec::new()));
        let mut reader = master.try_clone().expect("master");
        let sink = Arc::clone(&screen);
        std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().expect("screen").extend_from_slice(&buf[..n]);
            }
        });
        Pty {
            child,
            master,
            screen,
        }
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.screen.lock().expect("screen")).into_owned()
    }

    fn key(&mut self, keys: &str) {
        self.master.write_all(keys.as_bytes()).expect("key");
    }
}

impl Drop for Pty {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn monit_shows_apps_restarts_on_a_key_and_restores_the_terminal() {
    let home = Home::new();
    home.write(
        "ecosystem.yaml",
        "name: mon\napps:\n  alpha:\n    cmd: [sh, -c, 'echo alpha says hi; exec sleep 1000']\n  beta:\n    cmd: [sleep, '1000']\n",
    );
    home.ok(&["up"]);
    home.wait_rows("online", all_online);
    let mut pty = Pty::monit(&home);
    eventually("the table", Duration::from_secs(10), || {
        let t = pty.text();
        t.contains("alpha") && t.contains("beta") && t.contains("online")
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    // ratatui moves the cursor over blanks, so look for one word.
    while !pty.text().contains("says") {
        assert!(
            Instant::now() < deadline,
            "alpha's log is not shown:\n{}",
            pty.text()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // The first row (alpha) is selected: `r` restarts it.
    pty.key("r");
    home.wait_rows("alpha restarted", |rows| {
        rows.iter()
            .any(|r| r["app"] == "alpha" && r["restarts"] == 1 && r["status"] == "online")
    });
    assert_eq!(home.row("beta", 0)["restarts"], 0);
    pty.key("q");
    let deadline = Instant::now() + Duration::from_secs(5);
    let status = loop {
        if let Some(status) = pty.child.try_wait().expect("wait") {
            break status;
        }
        assert!(Instant::now() < deadline, "monit did not quit on q");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success());
    std::thread::sleep(Duration::from_millis(100));
    let text = pty.text();
    assert!(text.contains("\x1b[?1049h"), "entered the alternate screen");
    assert!(
        text.contains("\x1b[?1049l"),
        "left the alternate screen on exit"
    );
}

#[test]
fn monit_restores_the_terminal_on_sigterm() {
    let home = Home::new();
    home.write(
        "ecosystem.yaml",
        "apps:\n  one:\n    cmd: [sleep, '1000']\n",
    );
    home.ok(&["up"]);
    let pty = Pty::monit(&home);
    eventually("the table", Duration::from_secs(10), || {
        pty.text().contains("one")
    });
    let pid = nix::unistd::Pid::from_raw(i32::try_from(pty.child.id()).expect("pid"));
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("term");
    eventually("left the alternate screen", Duration::from_secs(5), || {
        pty.text().contains("\x1b[?1049l")
    });
}
