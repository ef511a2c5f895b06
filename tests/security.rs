//! Issue 13, security: an ECO_HOME eco cannot trust is refused, nothing in
//! it is followed through a link, and a client of another user gets an
//! honest refusal for every command. Multi-user cases run the client as
//! `nobody` (uid 65534) and need root; they are skipped otherwise.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use crate::support::{Home, eco_bin, eventually, stderr, stdout};

const NOBODY: u32 = 65534;

fn is_root() -> bool {
    nix::unistd::getuid().is_root()
}

/// A folder everyone may enter (for files `nobody` must reach).
fn open_tempdir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    dir
}

/// `eco ARGS` as `nobody`, with `ECO_HOME=home`.
fn eco_as_nobody(home: &Path, args: &[&str]) -> Output {
    Command::new(eco_bin())
        .args(args)
        .current_dir("/")
        .env("ECO_HOME", home)
        .env("NO_COLOR", "1")
        .uid(NOBODY)
        .gid(NOBODY)
        .output()
        .expect("eco as nobody")
}

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path).expect("stat").mode() & 0o7777
}

#[test]
fn a_home_of_another_user_is_refused_and_left_as_it_is() {
    if !is_root() {
        eprintln!("skipped: needs root to make a folder of another user's");
        return;
    }
    let dir = open_tempdir();
    let home = dir.path().join("x");
    std::fs::create_dir(&home).expect("mkdir");
    std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    std::os::unix::fs::chown(&home, Some(NOBODY), Some(NOBODY)).expect("chown");
    // nobody plants a state whose app would run as root.
    let planted = home.join("state.json");
    std::fs::write(&planted, "{\"version\":1,\"projects\":[]}").expect("plant");
    std::os::unix::fs::chown(&planted, Some(NOBODY), Some(NOBODY)).expect("chown");
    std::fs::write(
        dir.path().join("ecosystem.yaml"),
        "apps:\n  a:\n    cmd: [sleep, '1000']\n",
    )
    .expect("write");
    for args in [&["ls"][..], &["up"][..], &["kill"][..]] {
        let out = crate::support::eco(&home, dir.path(), args);
        assert_eq!(out.status.code(), Some(1), "eco {args:?}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(
            err.contains("belongs to another user (nobody, uid 65534)"),
            "eco {args:?}: {err}"
        );
    }
    assert_eq!(mode(&home), 0o777, "eco changed a folder it did not create");
    assert!(!home.join("eco.sock").exists() && !home.join("daemon.pid").exists());
}

#[test]
fn a_symlinked_home_is_refused_and_its_target_keeps_its_mode() {
    let dir = tempfile::tempdir().expect("tempdir");
    let real = dir.path().join("real");
    std::fs::create_dir(&real).expect("mkdir");
    std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let link = dir.path().join("link");
    std::os::unix::fs::symlink(&real, &link).expect("symlink");
    let out = crate::support::eco(&link, dir.path(), &["ls"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("is a symbolic link"),
        "{}",
        stderr(&out)
    );
    assert_eq!(mode(&real), 0o755);
    assert_eq!(std::fs::read_dir(&real).expect("ls").count(), 0);
    // A folder others may write to is refused too.
    let open = dir.path().join("open");
    std::fs::create_dir(&open).expect("mkdir");
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let out = crate::support::eco(&open, dir.path(), &["ls"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("can be written by other users"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn links_planted_in_the_home_are_not_followed() {
    let home = Home::new();
    let victim = tempfile::tempdir().expect("tempdir");
    let victim_file = victim.path().join("file");
    std::fs::write(&victim_file, "keep").expect("write");
    // logs -> another folder; state.json.tmp -> another file.
    std::os::unix::fs::symlink(victim.path(), home.path().join("logs")).expect("symlink");
    std::os::unix::fs::symlink(&victim_file, home.path().join("state.json.tmp")).expect("symlink");
    home.write(
        "ecosystem.yaml",
        "name: p\napps:\n  talk:\n    cmd: [sh, -c, 'while :; do echo hi; sleep 0.05; done']\n",
    );
    home.ok(&["up"]);
    eventually("the refusal in describe", Duration::from_secs(5), || {
        home.ok(&["describe", "talk"])
            .contains("is not what eco made there")
    });
    assert_eq!(std::fs::read_to_string(&victim_file).expect("read"), "keep");
    assert_eq!(
        std::fs::read_dir(victim.path()).expect("ls").count(),
        1,
        "nothing was written into the linked folder"
    );
    assert!(home.path().join("state.json").is_file());
}

#[test]
fn a_state_file_of_another_user_is_refused() {
    if !is_root() {
        eprintln!("skipped: needs root to make a file of another user's");
        return;
    }
    let home = Home::new();
    let marker = tempfile::tempdir().expect("tempdir");
    let pwned = marker.path().join("pwned");
    let state = format!(
        "{{\"version\":1,\"projects\":[{{\"spec\":{{\"name\":\"evil\",\"file\":\"\",\"profile\":null,\"env_files\":[],\"apps\":{{}}}},\"user_stopped\":[]}}]}}\n{}",
        pwned.display()
    );
    let path = home.path().join("state.json");
    std::fs::write(&path, state).expect("plant");
    std::os::unix::fs::chown(&path, Some(NOBODY), Some(NOBODY)).expect("chown");
    let out = home.eco(&["ls"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("belongs to another user (nobody, uid 65534)"),
        "{}",
        stderr(&out)
    );
    assert!(!pwned.exists());
}

#[test]
fn a_refused_client_gets_an_honest_answer_for_every_command() {
    if !is_root() {
        eprintln!("skipped: needs root to run a client as another user");
        return;
    }
    let home = Home::new();
    home.write("ecosystem.yaml", "apps:\n  a:\n    cmd: [sleep, '1000']\n");
    home.ok(&["up"]);
    // nobody aims at root's home: refused before anything is sent.
    for args in [&["ls"][..], &["kill"][..], &["stop", "a"][..]] {
        let out = eco_as_nobody(home.path(), args);
        assert_eq!(out.status.code(), Some(1), "eco {args:?}: {}", stdout(&out));
        assert!(stderr(&out).contains("another user"), "{}", stderr(&out));
    }
    // nobody's own home, with a link to root's socket (opened up): the
    // daemon refuses by peer credentials, and the client says so.
    std::fs::set_permissions(home.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let socket = home.path().join("eco.sock");
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666)).expect("chmod");
    let dir = open_tempdir();
    let own = dir.path().join("nobody-home");
    std::fs::create_dir(&own).expect("mkdir");
    std::fs::set_permissions(&own, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    std::os::unix::fs::chown(&own, Some(NOBODY), Some(NOBODY)).expect("chown");
    std::os::unix::fs::symlink(&socket, own.join("eco.sock")).expect("symlink");
    for args in [
        &["ls"][..],
        &["kill"][..],
        &["stop", "a"][..],
        &["describe", "a"][..],
        &["logs", "a"][..],
        &["flush"][..],
    ] {
        let out = eco_as_nobody(&own, args);
        assert_eq!(
            out.status.code(),
            Some(1),
            "eco {args:?}: {}{}",
            stdout(&out),
            stderr(&out)
        );
        assert!(
            stderr(&out).contains("belongs to another user"),
            "eco {args:?}: {}",
            stderr(&out)
        );
        assert!(!stdout(&out).contains("daemon stopped"));
    }
    // The owner is still served, and the app still runs.
    std::fs::set_permissions(home.path(), std::fs::Permissions::from_mode(0o700)).expect("chmod");
    assert_eq!(home.row("a", 0)["status"], "online");
}
