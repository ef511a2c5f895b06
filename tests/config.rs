//! The ecosystem file end to end: examples validate, every broken file is
//! rejected with the right position and key path, the schema is current,
//! and no input makes the parser panic.

use std::path::Path;

use proptest::prelude::*;

use crate::support::{eco, root, stderr, stdout};

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
