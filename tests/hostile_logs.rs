//! Logs as a hostile app or client would attack them: a log path turned
//! into a FIFO, a link or a device; a writer that cannot keep up with an
//! app writing flat out; a flood of bad requests; the daemon at its
//! descriptor limit. Through each, the daemon answers `eco ls` within a
//! second, stays under 30 MB, and its own log stays small.

use std::io::{Read, Write};
use std::os::unix::fs::FileTypeExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::{Home, eco_bin, eventually, stderr};

const LIMIT: Duration = Duration::from_secs(20);

/// Daemon RSS acceptance bound.
const RSS_LIMIT_KB: u64 = 30 * 1024;

/// VmRSS of `pid`, in KiB.
fn rss_kb(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS")
}

/// utime + stime of `pid`, in clock ticks.
fn cpu_ticks(pid: i32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .expect("comm")
        .1
        .split_whitespace()
        .collect();
    // Fields 14 and 15 of stat(5); `fields` starts at field 3.
    fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime")
}

/// `eco ls` answers, and long before the client's 10 s wait for a daemon
/// that does not answer (generous for a loaded host).
fn ls_answers_promptly(home: &Home) {
    let start = Instant::now();
    let out = home.eco(&["ls"]);
    let took = start.elapsed();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(took < Duration::from_secs(5), "eco ls took {took:?}");
}

fn lines_in(path: &Path, what: &str) -> usize {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|l| *l == what)
        .count()
}

fn describe(home: &Home, app: &str) -> String {
    home.ok(&["describe", app])
}

/// An app that turns its own log file into a FIFO blocks no one: under
/// ECO_HOME/logs the FIFO is replaced by a fresh file, an `out_file`
/// elsewhere is refused and reported, and the other app's lines keep
/// arriving.
#[test]
fn a_log_turned_into_a_fifo_blocks_no_other_app() {
    let home = Home::new();
    let own = home.path().join("logs/p/own.out.log");
    let custom = home.path().join("custom/chosen.log");
    home.write(
        "ecosystem.yaml",
        &format!(
            "name: p\napps:\n  \
             own:\n    cmd: [sh, -c, 'echo before; sleep 0.5; rm -f {own}; mkfifo {own}; while :; do echo after; sleep 0.05; done']\n  \
             chosen:\n    cmd: [sh, -c, 'echo before; sleep 0.5; rm -f {custom}; mkfifo {custom}; while :; do echo after; sleep 0.05; done']\n    \
             out_file: {custom}\n  \
             steady:\n    cmd: [sh, -c, 'while :; do echo tick; sleep 0.02; done']\n",
            own = own.display(),
            custom = custom.display(),
        ),
    );
    home.ok(&["up"]);
    let is_fifo = |p: &Path| std::fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_fifo());
    eventually("the app made its FIFO", LIMIT, || is_fifo(&custom));
    let steady = home.path().join("logs/p/steady.out.log");
    // The writer has met both FIFOs (it looks at a path at least every
    // second): the steady app's lines still arrive, well after that.
    let seen = lines_in(&steady, "tick");
    eventually("the steady app's lines keep arriving", LIMIT, || {
        lines_in(&steady, "tick") >= seen + 150
    });
    ls_answers_promptly(&home);
    // Under ECO_HOME/logs eco owns the file: the FIFO is gone, a fresh
    // regular file holds the app's lines.
    eventually("own log is a regular file again", LIMIT, || {
        std::fs::symlink_metadata(&own).is_ok_and(|m| m.is_file()) && lines_in(&own, "after") > 0
    });
    // Elsewhere the path is the user's: refused, left alone, reported.
    eventually("the refusal is shown", LIMIT, || {
        describe(&home, "chosen").contains("is a named pipe, not a regular file")
    });
    assert!(is_fifo(&custom), "a user's path is not replaced");
    ls_answers_promptly(&home);
    let daemon = home.daemon_pid().expect("pid");
    assert!(rss_kb(daemon) < RSS_LIMIT_KB);
}

/// A log path made a symbolic link (to a file the attacker wants written,
/// like /etc/passwd) is never followed, and a device is never written.
#[test]
fn a_log_made_a_link_or_a_device_is_not_followed() {
    let home = Home::new();
    let target = tempfile::tempdir().expect("tempdir");
    let passwd = target.path().join("passwd");
    std::fs::write(&passwd, "root:x:0:0:root:/root:/bin/sh\n").expect("write");
    let own = home.path().join("logs/p/own.out.log");
    let chosen = home.path().join("custom/chosen.log");
    std::fs::create_dir_all(chosen.parent().expect("parent")).expect("mkdir");
    std::os::unix::fs::symlink(&passwd, &chosen).expect("symlink");
    home.write(
        "ecosystem.yaml",
        &format!(
            "name: p\napps:\n  \
             own:\n    cmd: [sh, -c, 'echo before; sleep 0.5; rm -f {own}; ln -s {passwd} {own}; while :; do echo pwned; sleep 0.05; done']\n  \
             chosen:\n    cmd: [sh, -c, 'while :; do echo pwned; sleep 0.05; done']\n    \
             out_file: {chosen}\n  \
             device:\n    cmd: [sh, -c, 'while :; do echo hello; sleep 0.05; done']\n    \
             out_file: /dev/full\n",
            own = own.display(),
            passwd = passwd.display(),
            chosen = chosen.display(),
        ),
    );
    home.ok(&["up"]);
    eventually("own log is a regular file again", LIMIT, || {
        std::fs::symlink_metadata(&own).is_ok_and(|m| m.is_file()) && lines_in(&own, "pwned") > 0
    });
    eventually("both refusals are shown", LIMIT, || {
        describe(&home, "chosen").contains("is a symbolic link, not a regular file")
            && describe(&home, "device").contains("is a character device, not a regular file")
    });
    assert_eq!(
        std::fs::read_to_string(&passwd).expect("read"),
        "root:x:0:0:root:/root:/bin/sh\n",
        "the link's target is untouched"
    );
    assert!(
        std::fs::symlink_metadata(&chosen).is_ok_and(|m| m.file_type().is_symlink()),
        "a user's path is not replaced"
    );
    ls_answers_promptly(&home);
}

/// Stops one thread of another process (ptrace, root) until dropped: here
/// the daemon's log writer, as a disk that stopped answering would.
struct StoppedThread {
    tid: nix::unistd::Pid,
}

impl StoppedThread {
    fn stop(tid: i32) -> StoppedThread {
        use nix::sys::ptrace;
        use nix::sys::wait::{WaitPidFlag, waitpid};
        let tid = nix::unistd::Pid::from_raw(tid);
        ptrace::seize(tid, ptrace::Options::empty()).expect("ptrace seize (needs root)");
        ptrace::interrupt(tid).expect("ptrace interrupt");
        waitpid(tid, Some(WaitPidFlag::__WALL)).expect("the thread stops");
        StoppedThread { tid }
    }
}

impl Drop for StoppedThread {
    fn drop(&mut self) {
        let _ = nix::sys::ptrace::detach(self.tid, None);
    }
}

/// The thread of `pid` named `name`.
fn thread_named(pid: i32, name: &str) -> i32 {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .expect("tasks")
        .flatten()
        .find(|t| std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim() == name))
        .and_then(|t| t.file_name().to_string_lossy().parse().ok())
        .unwrap_or_else(|| panic!("no thread {name} in {pid}"))
}

/// Newlines in a file, counted in chunks (it is 100 MB).
fn count_lines(path: &Path) -> usize {
    let mut file = std::fs::File::open(path).expect("open");
    let mut buf = vec![0u8; 1 << 20];
    let mut lines = 0;
    loop {
        let n = file.read(&mut buf).expect("read");
        if n == 0 {
            return lines;
        }
        lines += buf[..n].iter().filter(|b| **b == b'\n').count();
    }
}

/// An app writing 100 MB flat out while the log writer is stalled is held
/// back at its own pipe: the daemon buffers at most its budget (RSS stays
/// under 30 MB), answers at once, and once the writer resumes every line
/// is in the file.
#[test]
fn a_stalled_log_writer_holds_back_the_app_not_the_daemons_memory() {
    const LINES: usize = 1_000_000;
    let home = Home::new();
    home.write(
        "ecosystem.yaml",
        &format!(
            "name: p\napps:\n  flood:\n    \
             cmd: [sh, -c, 'while [ ! -e go ]; do sleep 0.02; done; yes $(printf %099d 0) | head -n {LINES}; echo done']\n    \
             restart: never\n    log_max_size: 1G\n"
        ),
    );
    home.ok(&["up"]);
    let daemon = home.daemon_pid().expect("pid");
    let before = rss_kb(daemon);
    let writer = StoppedThread::stop(thread_named(daemon, "eco-logs"));
    std::fs::write(home.path().join("go"), "").expect("go");
    // The app fills its pipe and blocks in write(2): `yes` sleeps in
    // pipe_write with the daemon reading no more.
    let app = home.row("flood", 0)["pid"].as_i64().expect("pid") as i32;
    let blocked = || {
        crate::support::children_of(app).into_iter().any(|child| {
            let wchan = std::fs::read_to_string(format!("/proc/{child}/wchan")).unwrap_or_default();
            std::fs::read_to_string(format!("/proc/{child}/comm")).is_ok_and(|c| c.trim() == "yes")
                && crate::support::state_of(child) == Some('S')
                // Where the kernel does not say (wchan "0"), asleep is enough.
                && (wchan.contains("pipe") || wchan.trim() == "0" || wchan.is_empty())
        })
    };
    let mut peak = 0;
    let deadline = Instant::now() + LIMIT;
    let mut blocked_since: Option<Instant> = None;
    loop {
        peak = peak.max(rss_kb(daemon));
        assert!(
            peak < RSS_LIMIT_KB,
            "daemon RSS {peak} KiB (was {before} KiB) with its log writer stalled"
        );
        match (blocked(), blocked_since) {
            (true, None) => blocked_since = Some(Instant::now()),
            (true, Some(since)) if since.elapsed() > Duration::from_millis(500) => break,
            (false, _) => blocked_since = None,
            _ => {}
        }
        assert!(
            Instant::now() < deadline,
            "the app was never held back (daemon RSS {peak} KiB)"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    ls_answers_promptly(&home);
    assert!(rss_kb(daemon) < RSS_LIMIT_KB);
    drop(writer);
    let log = home.path().join("logs/p/flood.out.log");
    let whole = (LINES * 100 + "done\n".len()) as u64;
    eventually("every line in the file", Duration::from_secs(60), || {
        std::fs::metadata(&log).is_ok_and(|m| m.len() >= whole)
    });
    assert_eq!(count_lines(&log), LINES + 1, "no line lost or torn");
    let text = std::fs::read(&log).expect("read");
    assert!(text.ends_with(b"\ndone\n"));
    assert!(
        text.split(|b| *b == b'\n')
            .take(LINES)
            .all(|l| l.len() == 99 && l.iter().all(|b| *b == b'0')),
        "every line whole"
    );
    assert!(peak < RSS_LIMIT_KB, "peak {peak} KiB");
}

/// Sends `count` malformed requests, one connection each.
fn bad_requests(socket: &Path, count: usize) {
    for _ in 0..count {
        let Ok(mut stream) = std::os::unix::net::UnixStream::connect(socket) else {
            continue;
        };
        let _ = stream.write_all(b"this is not a request\n");
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer);
    }
}

/// A flood of warnings (malformed requests) costs daemon.log a summary
/// line per interval, not a line each, and the daemon stays responsive.
#[test]
fn a_flood_of_warnings_keeps_the_daemon_log_small() {
    let home = Home::new();
    home.write("ecosystem.yaml", "apps:\n  a:\n    cmd: [sleep, '1000']\n");
    home.ok(&["up"]);
    let daemon = home.daemon_pid().expect("pid");
    let log = home.path().join("daemon.log");
    let size = || std::fs::metadata(&log).map_or(0, |m| m.len());
    let before = size();
    let socket = home.path().join("eco.sock");
    let began = Instant::now();
    let flood = std::thread::spawn(move || bad_requests(&socket, 5_000));
    while !flood.is_finished() {
        ls_answers_promptly(&home);
        assert!(rss_kb(daemon) < RSS_LIMIT_KB);
        std::thread::sleep(Duration::from_millis(100));
    }
    flood.join().expect("flood");
    // A loaded host stretches the flood over more of eco's 10 s intervals,
    // each allowed 20 lines and a summary: the bound follows the intervals
    // the flood spanned (5,000 lines unlimited).
    let intervals = usize::try_from(began.elapsed().as_secs() / 10).unwrap_or(usize::MAX) + 2;
    let text = std::fs::read_to_string(&log).expect("log");
    let bad = text.matches("bad request").count();
    assert!(
        (1..=intervals * 21).contains(&bad),
        "{bad} lines of bad requests in daemon.log over {intervals} intervals"
    );
    let grown = usize::try_from(size() - before).expect("size");
    assert!(
        grown < intervals * 8 * 1024,
        "daemon.log grew by {grown} bytes over {intervals} intervals"
    );
    // The count is written once the interval (10 s) is over, with the
    // next line the daemon logs.
    let socket = home.path().join("eco.sock");
    let deadline = Instant::now() + LIMIT;
    loop {
        let text = std::fs::read_to_string(&log).expect("log");
        if text.contains("bad request") && text.contains("repeated") {
            break;
        }
        assert!(Instant::now() < deadline, "no summary line:\n{text}");
        bad_requests(&socket, 1);
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(size() - before < 16 * 1024);
}

/// Runs `eco ARGS` under `limit` descriptors, soft and hard, and no
/// CAP_SYS_RESOURCE to raise them (as tests/faults.rs does).
fn eco_under_descriptors(home: &Home, limit: u32, args: &str) -> std::process::Output {
    Command::new("setpriv")
        .args(["--bounding-set=-sys_resource", "sh", "-c"])
        .arg(format!(
            "ulimit -Sn {limit} && ulimit -Hn {limit} && exec '{}' {args}",
            eco_bin().display()
        ))
        .current_dir(home.path())
        .env("ECO_HOME", home.path())
        .output()
        .expect("setpriv runs")
}

/// A connection that never sends anything (held open by the test).
fn idle_connection(path: &Path) -> Option<std::os::fd::OwnedFd> {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, UnixAddr, connect, socket};
    let fd = socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        None,
    )
    .ok()?;
    let addr = UnixAddr::new(path).ok()?;
    connect(std::os::fd::AsRawFd::as_raw_fd(&fd), &addr).ok()?;
    Some(fd)
}

/// At its descriptor limit the daemon cannot accept: it waits and retries
/// (low CPU, one log line for the episode) instead of spinning, and serves
/// again once descriptors free up.
#[test]
fn at_the_descriptor_limit_the_accept_loop_backs_off() {
    let home = Home::new();
    let out = eco_under_descriptors(&home, 128, "ls");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let daemon = home.daemon_pid().expect("pid");
    let socket = home.path().join("eco.sock");
    let open_fds = || std::fs::read_dir(format!("/proc/{daemon}/fd")).map_or(0, |d| d.count());
    let mut held = Vec::new();
    for _ in 0..200 {
        held.extend(idle_connection(&socket));
    }
    eventually("the daemon at its limit", LIMIT, || open_fds() >= 127);
    let log = home.path().join("daemon.log");
    let size = || std::fs::metadata(&log).map_or(0, |m| m.len());
    // Settle, then measure a window.
    std::thread::sleep(Duration::from_millis(500));
    let (ticks, bytes, start) = (cpu_ticks(daemon), size(), Instant::now());
    std::thread::sleep(Duration::from_secs(3));
    let used = cpu_ticks(daemon) - ticks;
    let elapsed_ticks = start.elapsed().as_millis() as u64 / 10;
    assert!(
        used * 10 <= elapsed_ticks,
        "the daemon used {used} of {elapsed_ticks} ticks at its descriptor limit"
    );
    let grown = size() - bytes;
    assert!(grown < 4096, "daemon.log grew by {grown} bytes in 3 s");
    assert!(rss_kb(daemon) < RSS_LIMIT_KB);
    let text = std::fs::read_to_string(&log).expect("log");
    assert!(text.contains("cannot accept connections"), "{text}");
    // Descriptors free up: it serves again.
    drop(held);
    eventually("served again", LIMIT, || {
        home.eco(&["ls"]).status.code() == Some(0)
    });
    ls_answers_promptly(&home);
}

/// A crash loop as fast as it goes (no backoff to speak of) costs
/// daemon.log a few lines per interval, not three per restart.
#[test]
fn a_crash_loop_keeps_the_daemon_log_small() {
    let home = Home::new();
    home.write(
        "ecosystem.yaml",
        "apps:\n  crashy:\n    cmd: [sh, -c, 'exit 1']\n    restart_delay: 1ms\n    \
         max_restart_delay: 1ms\n    max_restarts: 1000000\n",
    );
    home.ok(&["up"]);
    let daemon = home.daemon_pid().expect("pid");
    let restarts = || home.row("crashy", 0)["restarts"].as_u64().unwrap_or(0);
    let log = home.path().join("daemon.log");
    let size = || std::fs::metadata(&log).map_or(0, |m| m.len());
    let (before, restarts_before) = (size(), restarts());
    eventually("hundreds of restarts", LIMIT, || {
        ls_answers_promptly(&home);
        restarts() >= restarts_before + 300
    });
    assert!(rss_kb(daemon) < RSS_LIMIT_KB);
    let grown = size() - before;
    assert!(grown < 32 * 1024, "daemon.log grew by {grown} bytes");
}
