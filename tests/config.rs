//! The ecosystem file end to end: examples validate, every broken file is
//! rejected with the right position and key path, the schema is current,
//! and no input makes the parser panic.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use proptest::prelude::*;

use crate::support::{self, eco, root, stderr, stdout};

fn validate_text(text: &str) -> Result<eco::spec::ProjectSpec, eco::config::ConfigErrors> {
    eco::config::validate(&eco::config::Input {
        file: root().join("tests/broken/fuzz.yaml"),
        text,
        profile: None,
        cpus: 2,
        fs: &eco::config::RealFs,
    })
}

fn examples() -> Vec<std::path::PathBuf> {
    let mut files = vec![
        root().join("examples/minimal.yaml"),
        root().join("examples/shop/ecosystem.yaml"),
        root().join("examples/cluster/ecosystem.yaml"),
        root().join("examples/container/ecosystem.yaml"),
    ];
    files.sort();
    files
}

#[test]
fn every_example_validates() {
    let home = tempfile::tempdir().expect("tempdir");
    for file in examples() {
        let out = eco(
            home.path(),
            &root(),
            &["validate", "-f", file.to_str().expect("utf-8")],
        );
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}: {}",
            file.display(),
            stderr(&out)
        );
        assert!(stdout(&out).starts_with("ok: "), "{}", stdout(&out));
    }
}

#[test]
fn profiles_merge_over_env() {
    let spec = eco::config::load(
        &root().join("examples/shop/ecosystem.yaml"),
        Some("production"),
    )
    .expect("valid");
    let web = &spec.apps["web"];
    assert_eq!(web.process.env["NODE_ENV"], "production");
    assert_eq!(web.process.env["PORT"], "80");
    assert_eq!(web.process.env["API_KEY"], "dev-key", "env_file is merged");
    let second = web.instance("shop", 1);
    assert_eq!(second.env["PORT"], "81", "increment_var");
    assert_eq!(second.env["ECO_INSTANCE"], "1");
    assert_eq!(second.env["NODE_APP_INSTANCE"], "1");
    assert_eq!(second.env["ECO_APP"], "web");
    assert_eq!(second.env["ECO_PROJECT"], "shop");
}

#[test]
fn diff_against_nothing_lists_starts_and_exits_1() {
    let home = tempfile::tempdir().expect("tempdir");
    let out = eco(
        home.path(),
        &root(),
        &["diff", "-f", "examples/shop/ecosystem.yaml"],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "+ start db\n+ start web:0..1\n+ start worker\n"
    );
}

/// Each `tests/broken/*.yaml` starts with `# expect: L:C PATH :: MESSAGE`
/// (or `# expect-all: L:C PATH | ...` for files with several errors).
#[test]
fn broken_files_are_rejected_precisely() {
    let home = tempfile::tempdir().expect("tempdir");
    let mut files: Vec<_> = std::fs::read_dir(root().join("tests/broken"))
        .expect("corpus")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 30, "the corpus has {} files", files.len());
    for file in files {
        let text = std::fs::read_to_string(&file).expect("read");
        let header = text.lines().next().expect("header");
        let name = file
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        let out = eco(
            home.path(),
            &root(),
            &["validate", "-f", file.to_str().expect("utf-8")],
        );
        assert_eq!(out.status.code(), Some(2), "{name}: {}", stdout(&out));
        let err = stderr(&out);
        let shown = file.display().to_string();
        if let Some(all) = header.strip_prefix("# expect-all: ") {
            for expected in all.split(" | ") {
                let (pos, path) = expected.split_once(' ').expect("L:C PATH");
                let needle = format!("{shown}:{pos}: {path}: ");
                assert!(
                    err.contains(&needle),
                    "{name}: missing {needle:?} in\n{err}"
                );
            }
            continue;
        }
        let spec = header.strip_prefix("# expect: ").expect("header form");
        let (place, message) = spec.split_once(" :: ").expect("' :: '");
        let (pos, path) = place.split_once(' ').unwrap_or((place, ""));
        let needle = if path.is_empty() {
            format!("{shown}:{pos}: ")
        } else {
            format!("{shown}:{pos}: {path}: ")
        };
        let found = err
            .lines()
            .any(|l| l.starts_with(&format!("error: {needle}")));
        assert!(found, "{name}: no error starting {needle:?} in\n{err}");
        assert!(err.contains(message), "{name}: no {message:?} in\n{err}");
    }
}

#[test]
fn committed_schema_is_current() {
    let committed = std::fs::read_to_string(root().join("schema/ecosystem.schema.json"))
        .expect("schema/ecosystem.schema.json");
    assert_eq!(
        committed,
        eco::config::raw::schema_json(),
        "the schema drifted: run `cargo run -- schema > schema/ecosystem.schema.json`"
    );
}

/// The committed schema, compiled by a real JSON Schema validator.
fn schema_validator() -> jsonschema::Validator {
    let text = std::fs::read_to_string(root().join("schema/ecosystem.schema.json"))
        .expect("schema/ecosystem.schema.json");
    let schema: serde_json::Value = serde_json::from_str(&text).expect("schema is JSON");
    jsonschema::validator_for(&schema).expect("the schema compiles")
}

fn schema_errors(validator: &jsonschema::Validator, yaml: &str) -> Vec<String> {
    let value: serde_json::Value = serde_saphyr::from_str(yaml).expect("YAML");
    validator
        .iter_errors(&value)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect()
}

/// Editors validate with the schema: every example, every file `eco
/// import` writes and the valid files of the tests pass it; a typo does
/// not. Every property has a description and its default says so.
#[test]
fn valid_files_pass_the_committed_schema() {
    crate::support::tools::require(&["node"]);
    let validator = schema_validator();
    let mut files: Vec<(String, String)> = examples()
        .into_iter()
        .map(|f| {
            let text = std::fs::read_to_string(&f).expect("example");
            (f.display().to_string(), text)
        })
        .collect();
    let home = tempfile::tempdir().expect("tempdir");
    for entry in std::fs::read_dir(root().join("tests/pm2")).expect("tests/pm2") {
        let path = entry.expect("entry").path();
        if path.to_string_lossy().ends_with(".config.js") {
            let out = eco(
                home.path(),
                home.path(),
                &["import", path.to_str().expect("utf-8")],
            );
            assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
            files.push((path.display().to_string(), stdout(&out)));
        }
    }
    files.push((
        "inline".into(),
        "name: x\nenv: { A: 1 }\nenv_production: { A: 2 }\napps:\n  a:\n    cmd: [node, a.js]\n    \
         env_file: [.env]\n    env_staging: { B: true }\n    mode: cluster\n    listen: [8080, \"unix:/tmp/s\"]\n    \
         ready: { tcp: \"127.0.0.1:8080\" }\n    instances: max\n    watch: true\n    stop_signal: 15\n    \
         restart_delay: 3000\n    max_memory: 300M\n"
            .into(),
    ));
    for (name, text) in &files {
        let errors = schema_errors(&validator, text);
        assert!(errors.is_empty(), "{name}: {errors:#?}\n{text}");
    }
    assert!(!schema_errors(&validator, "apps:\n  a:\n    cmd: x\n    instance: 2\n").is_empty());
    let schema: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("schema/ecosystem.schema.json")).expect("schema"),
    )
    .expect("json");
    for def in [&schema, &schema["$defs"]["RawApp"]] {
        for (key, property) in def["properties"].as_object().expect("properties") {
            let description = property["description"].as_str().unwrap_or_default();
            assert!(
                description.contains("Default") || description.starts_with("Required"),
                "{key}: {description:?}"
            );
        }
    }
}

#[test]
fn missing_file_is_exit_2() {
    let home = tempfile::tempdir().expect("tempdir");
    let out = eco(
        home.path(),
        Path::new("/"),
        &["validate", "-f", "/no/such/eco.yaml"],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("/no/such/eco.yaml: no such file"),
        "{}",
        stderr(&out)
    );
}

/// Runs `eco validate -f FILE` in `dir`, failing (not hanging) the test if
/// it takes more than 10 s: a FIFO that blocks the reader must be a failure.
fn validate_within(home: &Path, dir: &Path, file: &str) -> Output {
    let mut child = Command::new(support::eco_bin())
        .args(["validate", "-f", file])
        .current_dir(dir)
        .env("ECO_HOME", home)
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("eco runs");
    // A hang (a FIFO read blocking) never ends; a loaded host only slows
    // the 300,000-value parse down, so the bound is far from both.
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            child.kill().expect("kill");
            let out = child.wait_with_output().expect("output");
            panic!("eco validate -f {file} hung:\n{}", stderr(&out));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("output")
}

/// A FIFO, a character device, a folder and a file over 1 MiB named by
/// `env_file` are each refused at the `env_file` entry, without blocking on
/// the FIFO or reading `/dev/zero` forever.
#[test]
fn env_file_must_be_a_small_regular_file() {
    let home = tempfile::tempdir().expect("tempdir");
    let dir = tempfile::tempdir().expect("tempdir");
    nix::unistd::mkfifo(&dir.path().join("fifo.env"), nix::sys::stat::Mode::S_IRWXU)
        .expect("mkfifo");
    std::fs::create_dir(dir.path().join("folder.env")).expect("mkdir");
    std::fs::write(dir.path().join("big.env"), "A=1\n".repeat(300_000)).expect("big");
    std::fs::write(dir.path().join("ok.env"), "A=1\n").expect("ok");
    let file = dir.path().join("eco.yaml");
    std::fs::write(
        &file,
        "apps:\n  a:\n    cmd: x\n    env_file: fifo.env\n  b:\n    cmd: x\n    env_file: /dev/zero\n  c:\n    cmd: x\n    env_file: [ok.env, folder.env]\n  d:\n    cmd: x\n    env_file: big.env\n",
    )
    .expect("write");
    let out = validate_within(home.path(), dir.path(), "eco.yaml");
    assert_eq!(out.status.code(), Some(2), "{}", stdout(&out));
    let err = stderr(&out);
    let shown = file.display();
    let folder = dir.path().display();
    for needle in [
        format!(
            "error: {shown}:4:15: apps.a.env_file: cannot read env file {folder}/fifo.env: not a regular file (it is a named pipe)"
        ),
        format!(
            "error: {shown}:7:15: apps.b.env_file: cannot read env file /dev/zero: not a regular file (it is a character device)"
        ),
        format!(
            "error: {shown}:10:24: apps.c.env_file[1]: cannot read env file {folder}/folder.env: not a regular file (it is a folder)"
        ),
        format!(
            "error: {shown}:13:15: apps.d.env_file: cannot read env file {folder}/big.env: file too large (1200000 bytes; the limit is 1 MiB)"
        ),
    ] {
        assert!(err.contains(&needle), "missing {needle:?} in\n{err}");
    }
    assert!(err.contains("4 errors in"), "{err}");
}

/// The ecosystem file itself: a FIFO, a device, a folder or more than
/// 1 MiB is refused in eco's words, and never blocks.
#[test]
fn ecosystem_file_must_be_a_small_regular_file() {
    let home = tempfile::tempdir().expect("tempdir");
    let dir = tempfile::tempdir().expect("tempdir");
    nix::unistd::mkfifo(&dir.path().join("fifo.yaml"), nix::sys::stat::Mode::S_IRWXU)
        .expect("mkfifo");
    std::fs::create_dir(dir.path().join("folder.yaml")).expect("mkdir");
    let big = format!("apps:\n  a:\n    cmd: x\n{}", "#\n".repeat(2_621_440));
    std::fs::write(dir.path().join("big.yaml"), big).expect("big");
    let cases = [
        ("fifo.yaml", "not a regular file (it is a named pipe)"),
        ("/dev/zero", "not a regular file (it is a character device)"),
        ("folder.yaml", "not a regular file (it is a folder)"),
        (
            "big.yaml",
            "file too large (5242902 bytes; the limit is 1 MiB)",
        ),
    ];
    for (file, message) in cases {
        let out = validate_within(home.path(), dir.path(), file);
        assert_eq!(out.status.code(), Some(2), "{file}: {}", stdout(&out));
        let shown = if file.starts_with('/') {
            file.to_owned()
        } else {
            dir.path().join(file).display().to_string()
        };
        let needle = format!("error: {shown}: {message}\n");
        assert!(
            stderr(&out).starts_with(&needle),
            "{file}: want {needle:?}, got\n{}",
            stderr(&out)
        );
    }
}

/// A file under 1 MiB with more values than the parser's node budget says
/// "file too large" with a position, not the parser's budget internals.
#[test]
fn too_many_values_is_file_too_large() {
    let home = tempfile::tempdir().expect("tempdir");
    let dir = tempfile::tempdir().expect("tempdir");
    let text = format!(
        "apps: {{ a: {{ cmd: x }} }}\nx: [{}1]\n",
        "1,".repeat(300_000)
    );
    assert!(text.len() < 1024 * 1024);
    std::fs::write(dir.path().join("eco.yaml"), text).expect("write");
    let out = validate_within(home.path(), dir.path(), "eco.yaml");
    assert_eq!(out.status.code(), Some(2), "{}", stdout(&out));
    let err = stderr(&out);
    let first = err.lines().next().unwrap_or_default();
    assert!(
        first.starts_with(&format!(
            "error: {}:2:",
            dir.path().join("eco.yaml").display()
        )) && first.ends_with(": file too large: too many values for eco to read"),
        "{err}"
    );
    for internal in ["budget", "Nodes", "Options", "Policy"] {
        assert!(!err.contains(internal), "{internal:?} leaked:\n{err}");
    }
}

/// No message about any broken file names serde-saphyr's options or budgets.
#[test]
fn messages_never_name_parser_internals() {
    let home = tempfile::tempdir().expect("tempdir");
    for file in std::fs::read_dir(root().join("tests/broken")).expect("corpus") {
        let file = file.expect("entry").path();
        let out = eco(
            home.path(),
            &root(),
            &["validate", "-f", file.to_str().expect("utf-8")],
        );
        let err = stderr(&out);
        for internal in ["DuplicateKeyPolicy", "Options", "budget", "serde"] {
            assert!(
                !err.contains(internal),
                "{}: {internal:?} in\n{err}",
                file.display()
            );
        }
    }
}

/// A 200 KB line is shown cut to 200 characters and an ellipsis, in the
/// snippet and in the quoted value; an error further right puts the caret
/// on the ellipsis.
#[test]
fn long_lines_are_cut_in_messages() {
    let home = tempfile::tempdir().expect("tempdir");
    let dir = tempfile::tempdir().expect("tempdir");
    let long = "z".repeat(200_000);
    std::fs::write(
        dir.path().join("eco.yaml"),
        format!("apps:\n  a: {{ cmd: x, mode: {long} }}\n  b: {{ cmd: x, env: {{ K: {long} }}, mode: bad }}\n"),
    )
    .expect("write");
    let out = validate_within(home.path(), dir.path(), "eco.yaml");
    assert_eq!(out.status.code(), Some(2), "{}", stdout(&out));
    let err = stderr(&out);
    assert!(err.len() < 3_000, "{} bytes of messages", err.len());
    let cut = format!("{}…", "z".repeat(200));
    assert!(
        err.contains(&format!("expected `fork` or `cluster`, found \"{cut}\"")),
        "{err}"
    );
    let snippet = format!(" 2 |   a: {{ cmd: x, mode: {}…\n", "z".repeat(179));
    assert!(err.contains(&snippet), "{err}");
    let snippet = format!(" 3 |   b: {{ cmd: x, env: {{ K: {}…\n", "z".repeat(175));
    assert!(err.contains(&snippet), "{err}");
    let caret = format!("   | {}^\n", " ".repeat(200));
    assert!(err.contains(&caret), "{err}");
}

fn example_text() -> String {
    std::fs::read_to_string(root().join("examples/shop/ecosystem.yaml")).expect("example")
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    /// Random bytes never panic the parser or validator.
    #[test]
    fn random_input_never_panics(text in "\\PC{0,300}") {
        let _ = validate_text(&text);
    }

    /// The example with bytes deleted, replaced or inserted never panics.
    #[test]
    fn mutated_examples_never_panic(
        edits in proptest::collection::vec((0usize..4000, 0u8..3, any::<char>()), 1..8)
    ) {
        let mut chars: Vec<char> = example_text().chars().collect();
        for (at, kind, c) in edits {
            let at = at % (chars.len() + 1);
            match kind {
                0 if at < chars.len() => { chars.remove(at); }
                1 if at < chars.len() => chars[at] = c,
                _ => chars.insert(at, c),
            }
        }
        let text: String = chars.into_iter().collect();
        let _ = validate_text(&text);
    }

    /// Structured YAML with random keys and scalars never panics.
    #[test]
    fn random_structures_never_panic(
        keys in proptest::collection::vec("[a-z_]{1,14}", 1..6),
        values in proptest::collection::vec(prop_oneof![
            Just("-1".to_owned()), Just("max".to_owned()), Just("[]".to_owned()),
            Just("{}".to_owned()), Just("~".to_owned()), Just("1e400".to_owned()),
            Just("99999999999999999999999".to_owned()), "[a-z0-9 :*]{0,10}",
        ], 6)
    ) {
        let mut text = String::from("apps:\n  a:\n    cmd: x\n");
        for (i, key) in keys.iter().enumerate() {
            text.push_str(&format!("    {key}: {}\n", values[i % values.len()]));
        }
        let _ = validate_text(&text);
    }
}
