//! PM2's own files, run by eco as PM2 7.0.4 runs them: each file in
//! tests/pm2/corpus/ has beside it (`NAME.pm2.json`, made by record.sh from
//! `pm2 jlist`) the apps, instance counts, modes, argv, cwd, env and pid
//! files PM2 gave it. Here each runs under `eco up`, and the same values
//! are read back from /proc and `eco ls --json` / `describe --json`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::{Home, root};

fn corpus() -> PathBuf {
    root().join("tests/pm2/corpus")
}

/// Copies the corpus folder (files, stand-in scripts) to `to`.
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read corpus").flatten() {
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

/// PM2's instance count for `instances: n` (God.prepare), for files whose
/// recording was made on a machine with another number of CPUs.
fn pm2_count(n: i64, cpus: i64) -> u64 {
    let count = match n {
        0 => cpus,
        n if n < 0 => n + cpus,
        n => n,
    };
    u64::try_from(count.max(1)).unwrap_or(1)
}

/// The files whose count depends on the CPUs, with their `instances`.
const PER_CPU: &[(&str, i64)] = &[
    ("02-instances-minus-one.config.js", -1),
    ("03-instances-zero-string.config.js", 0),
    ("04-instances-max.config.js", 0),
];

/// A path as the recording writes it: `{dir}/...` inside the corpus copy.
fn relative(path: &str, dir: &Path) -> String {
    let canonical = std::fs::canonicalize(path).unwrap_or_else(|_| PathBuf::from(path));
    match canonical.strip_prefix(dir) {
        Ok(rest) if rest.as_os_str().is_empty() => "{dir}".into(),
        Ok(rest) => format!("{{dir}}/{}", rest.display()),
        Err(_) => path.to_owned(),
    }
}

/// An argv as the recording writes it: the program by its base name, and
/// paths of files in the corpus (relative to `cwd` under eco) as `{dir}/...`.
fn normalize(argv: &[String], cwd: &Path, dir: &Path) -> Vec<String> {
    argv.iter()
        .enumerate()
        .map(|(i, word)| {
            if i == 0 {
                return word.rsplit('/').next().unwrap_or(word).to_owned();
            }
            let path = cwd.join(word);
            if !word.starts_with('-') && !word.contains(' ') && path.exists() {
                relative(&path.display().to_string(), dir)
            } else {
                word.clone()
            }
        })
        .collect()
}

fn proc_argv(pid: i64) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .expect("cmdline")
        .split(|b| *b == 0)
        .filter(|w| !w.is_empty())
        .map(|w| String::from_utf8_lossy(w).into_owned())
        .collect()
}

fn proc_env(pid: i64) -> BTreeMap<String, String> {
    std::fs::read(format!("/proc/{pid}/environ"))
        .expect("environ")
        .split(|b| *b == 0)
        .filter_map(|kv| {
            let kv = String::from_utf8_lossy(kv);
            kv.split_once('=')
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
        })
        .collect()
}

/// Whether `actual` (from /proc, normalized) is PM2's `expected`: the
/// same words; or, where PM2 runs `bash -c LINE`, LINE's own words (bash
/// execs a single command, so /proc shows that); or, where PM2 runs
/// `node /usr/bin/npm ARGS` (a Node program found in PATH, which eco runs
/// by name: its `#!` line runs node), node running a process that named
/// itself by a prefix of `npm ARGS` (npm sets its process title).
fn matches(actual: &[String], expected: &[String], pid: i64, cwd: &Path, dir: &Path) -> bool {
    if actual == expected {
        return true;
    }
    if expected.len() == 3 && expected[0] == "bash" && expected[1] == "-c" {
        let words = shlex::split(&expected[2]).unwrap_or_default();
        return matches(actual, &normalize(&words, cwd, dir), pid, cwd, dir);
    }
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap_or_default();
    if exe.file_name().is_none_or(|n| n != "node") || actual.is_empty() {
        return false;
    }
    let named: Vec<&str> =
        if expected.len() >= 2 && expected[0] == "node" && expected[1].starts_with("/usr/") {
            std::iter::once(expected[1].rsplit('/').next().unwrap_or_default())
                .chain(expected[2..].iter().map(String::as_str))
                .collect()
        } else {
            expected.iter().map(String::as_str).collect()
        };
    named[0] != "node" && named.join(" ").starts_with(&actual.join(" "))
}

/// Runs one corpus file under eco and compares it with PM2's recording;
/// the differences, as text.
#[allow(clippy::too_many_lines)]
fn check(recording: &Path) -> Vec<String> {
    let rec: Value = serde_json::from_str(&std::fs::read_to_string(recording).expect("recording"))
        .expect("recording is JSON");
    let config = rec["config"].as_str().expect("config");
    let home = Home::new();
    let dir = home.path().join("p");
    copy_tree(&corpus(), &dir);
    let dir = std::fs::canonicalize(&dir).expect("canonical");
    let file = dir.join(config);
    let mut args = vec![
        "up",
        "-f",
        file.to_str().expect("utf-8"),
        "--wait",
        "--timeout",
        "30s",
    ];
    if let Some(env) = rec["env"].as_str() {
        args.extend(["--env", env]);
    }
    home.ok(&args);
    let cpus =
        i64::try_from(std::thread::available_parallelism().map_or(1, std::num::NonZero::get))
            .unwrap_or(1);
    let mut problems = Vec::new();
    let rows = home.rows();
    let apps = rec["apps"].as_object().expect("apps");
    let running: std::collections::BTreeSet<&str> =
        rows.iter().filter_map(|r| r["app"].as_str()).collect();
    let wanted: std::collections::BTreeSet<&str> = apps.keys().map(String::as_str).collect();
    if running != wanted {
        problems.push(format!("apps: eco runs {running:?}, PM2 ran {wanted:?}"));
    }
    for (name, app) in apps {
        let mut count = app["instances"].as_u64().expect("instances");
        if rec["cpus"].as_i64() != Some(cpus)
            && let Some((_, n)) = PER_CPU.iter().find(|(f, _)| *f == config)
        {
            count = pm2_count(*n, cpus);
        }
        let mut mine: Vec<&Value> = rows.iter().filter(|r| r["app"] == name.as_str()).collect();
        mine.sort_by_key(|r| r["instance"].as_u64());
        if mine.len() as u64 != count {
            problems.push(format!("{name}: {} instances, PM2 ran {count}", mine.len()));
        }
        let described: Value =
            serde_json::from_str(&home.ok(&["describe", name, "--json"])).expect("describe");
        let mode = &described[0]["spec"]["process"]["mode"];
        if *mode != app["mode"] {
            problems.push(format!("{name}: mode {mode}, PM2 ran {}", app["mode"]));
        }
        let processes = app["processes"].as_array().expect("processes");
        for (row, pm2) in mine.iter().zip(processes) {
            let index = row["instance"].as_u64().unwrap_or(0);
            let at = format!("{name}:{index}");
            if row["status"] != "online" {
                problems.push(format!(
                    "{at}: {}, PM2's was {}",
                    row["status"], pm2["status"]
                ));
                continue;
            }
            let pid = row["pid"].as_i64().expect("pid");
            let cwd = std::fs::read_link(format!("/proc/{pid}/cwd")).expect("cwd");
            let cwd_text = relative(&cwd.display().to_string(), &dir);
            if cwd_text != pm2["cwd"].as_str().unwrap_or_default() {
                problems.push(format!("{at}: cwd {cwd_text}, PM2's {}", pm2["cwd"]));
            }
            let expected: Vec<String> = pm2["argv"]
                .as_array()
                .expect("argv")
                .iter()
                .map(|w| w.as_str().unwrap_or_default().to_owned())
                .collect();
            // A launcher (pyenv's python3, a shell) execs the program soon.
            let deadline = Instant::now() + Duration::from_secs(5);
            let argv = loop {
                let argv = normalize(&proc_argv(pid), &cwd, &dir);
                if matches(&argv, &expected, pid, &cwd, &dir) || Instant::now() >= deadline {
                    break argv;
                }
                std::thread::sleep(Duration::from_millis(50));
            };
            if !matches(&argv, &expected, pid, &cwd, &dir) {
                problems.push(format!("{at}: argv {argv:?}, PM2's {expected:?}"));
            }
            let env = proc_env(pid);
            for (key, value) in pm2["env"].as_object().expect("env") {
                if env.get(key).map(String::as_str) != value.as_str() {
                    problems.push(format!("{at}: env {key}={:?}, PM2's {value}", env.get(key)));
                }
            }
            if let Some(file) = pm2["pid_file"].as_str() {
                let path = file.replace("{dir}", &dir.display().to_string());
                let written = std::fs::read_to_string(&path).unwrap_or_default();
                if written.trim() != pid.to_string() {
                    problems.push(format!(
                        "{at}: pid file {file} holds {written:?}, not {pid}"
                    ));
                }
            }
        }
    }
    // PM2 removes its pid files when the process exits; so does eco.
    home.ok(&["down", "-f", file.to_str().expect("utf-8")]);
    for app in apps.values() {
        for pm2 in app["processes"].as_array().into_iter().flatten() {
            if let Some(file) = pm2["pid_file"].as_str() {
                let path = file.replace("{dir}", &dir.display().to_string());
                if Path::new(&path).exists() {
                    problems.push(format!("{file} is left after eco down"));
                }
            }
        }
    }
    problems
}

/// Every corpus file runs under eco with what PM2 7.0.4 gave it.
#[test]
fn pm2_corpus_runs_as_pm2_ran_it() {
    let mut recordings: Vec<PathBuf> = std::fs::read_dir(corpus())
        .expect("corpus")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().ends_with(".pm2.json"))
        .collect();
    recordings.sort();
    assert!(recordings.len() >= 15, "{} recordings", recordings.len());
    let mut failed = Vec::new();
    for recording in &recordings {
        for problem in check(recording) {
            failed.push(format!(
                "{}: {problem}",
                recording.file_name().unwrap_or_default().to_string_lossy()
            ));
        }
    }
    assert!(
        failed.is_empty(),
        "not as PM2 ran them:\n{}",
        failed.join("\n")
    );
}

/// PM2 shows what a config prints and starts it: eco warns with each line
/// (stdout and stderr) and goes on.
#[test]
fn what_a_config_prints_is_a_warning_not_an_error() {
    let home = Home::new();
    let dir = home.path().join("p");
    copy_tree(&corpus(), &dir);
    let out = home.eco(&["validate", "-f", "p/12-console-log.config.js"]);
    let err = crate::support::stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    for line in ["loading ecosystem for", "a warning on stderr"] {
        assert!(
            err.contains(&format!(
                "12-console-log.config.js: node printed while evaluating the file: {line}"
            )),
            "{err}"
        );
    }
}

/// `module.exports` in an ES module is node's own error (as under PM2),
/// not a config with no apps.
#[test]
fn module_exports_in_an_mjs_file_is_nodes_error() {
    let home = Home::new();
    home.write(
        "ecosystem.config.mjs",
        "module.exports = { apps: [{ name: 'a', script: 'a.js' }] };\n",
    );
    let out = home.eco(&["validate", "-f", "ecosystem.config.mjs"]);
    let err = crate::support::stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("node could not evaluate the file:\n    ReferenceError: module is not defined in ES module scope"),
        "{err}"
    );
    assert!(!err.contains("missing required key"), "{err}");
}

/// Node's error comes first (the exception, then where: the file, line,
/// code and caret), however much was printed before it, and what was
/// printed is shown after it.
#[test]
fn nodes_error_comes_first_and_what_was_printed_after() {
    let home = Home::new();
    home.write(
        "broken.js",
        "module.exports = {\n  apps: [ { name 'web' } ],\n};\n",
    );
    home.write(
        "ecosystem.config.js",
        "for (let i = 0; i < 8; i++) process.stderr.write(`(node:1) Warning: noise ${i}\\n`);\n\
         console.log('booting config');\n\
         module.exports = require('./broken.js');\n",
    );
    let out = home.eco(&["validate"]);
    let err = crate::support::stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    let broken = home.path().join("broken.js");
    let expected = format!(
        "node could not evaluate the file:\n    SyntaxError: Unexpected string\n    at {}:2\n",
        broken.display()
    );
    assert!(err.contains(&expected), "{err}");
    assert!(
        err.contains("node also printed:\n    booting config\n"),
        "{err}"
    );
    assert!(err.contains("Warning: noise 7"), "{err}");
}

/// `eco import --env production` is `pm2 start FILE --env production`
/// written down: env_production merged over env, no profiles left, and a
/// file eco validates.
#[test]
fn import_with_env_bakes_the_profile_in() {
    let home = Home::new();
    let dir = home.path().join("p");
    copy_tree(&corpus(), &dir);
    let yaml = home.ok(&[
        "import",
        "p/13-env-production.config.js",
        "--env",
        "production",
    ]);
    for line in [
        "NODE_ENV: production",
        "API_URL: \"https://api.example.com\"",
        "SHARED: base",
    ] {
        assert!(yaml.contains(line), "{line}:\n{yaml}");
    }
    assert!(!yaml.contains("env_production:"), "{yaml}");
    std::fs::write(dir.join("ecosystem.yaml"), &yaml).expect("write");
    home.ok(&["validate", "-f", "p/ecosystem.yaml"]);
    let out = home.eco(&[
        "import",
        "p/13-env-production.config.js",
        "--env",
        "staging",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        crate::support::stderr(&out).contains("profile `staging` (--env staging) is not defined"),
        "{}",
        crate::support::stderr(&out)
    );
    // `pid_file` is imported as the key that keeps its PM2 meaning.
    let yaml = home.ok(&["import", "p/06-pid-alias.config.js"]);
    assert!(
        yaml.contains("write_pid_file: \"./run/pair.pid\""),
        "{yaml}"
    );
}
