//! `eco export systemd|kubernetes` end to end: every example's export
//! passes the target engine's own checker (`systemd-analyze verify`,
//! `kubernetes-validate --strict`), and the exported units and manifests
//! keep instances, sockets, limits, probes and dependencies.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

use crate::support::tools::tool;
use crate::support::{eco_bin, root, stderr, stdout};

/// Every `examples/**/*.yaml`.
fn examples() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in fs::read_dir(dir).expect("read examples").flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
                out.push(path);
            }
        }
    }
    let mut files = Vec::new();
    walk(&root().join("examples"), &mut files);
    files.sort();
    assert!(!files.is_empty(), "no examples found");
    files
}

/// A folder with stand-ins for the interpreters the examples run, so that
/// `ExecStart` resolves to files that exist whatever this machine has.
fn stub_path(dir: &Path) -> String {
    let bin = dir.join("bin");
    fs::create_dir_all(&bin).expect("mkdir bin");
    for name in ["node", "python3"] {
        let path = bin.join(name);
        fs::write(&path, "#!/bin/sh\nexit 0\n").expect("write stub");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).expect("chmod stub");
    }
    format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

fn export(args: &[&str], path_var: &str) -> Output {
    Command::new(eco_bin())
        .arg("export")
        .args(args)
        .env("PATH", path_var)
        .env("NO_COLOR", "1")
        .output()
        .expect("eco export runs")
}

/// Runs `systemd-analyze verify` on the target and every unit it wants,
/// loading units from `dir` only; returns its combined output.
fn verify(dir: &Path, user: bool) -> (bool, String) {
    let analyze = tool("systemd-analyze");
    let targets: Vec<String> = fs::read_dir(dir)
        .expect("read units")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".target"))
        .collect();
    assert_eq!(targets.len(), 1, "one target per project: {targets:?}");
    let target = fs::read_to_string(dir.join(&targets[0])).expect("read target");
    let mut units = targets.clone();
    units.extend(
        target
            .lines()
            .filter_map(|l| l.strip_prefix("Wants="))
            .map(str::to_owned),
    );
    // The timers' restart services are wanted by nothing: check them too.
    for entry in fs::read_dir(dir).expect("read units").flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with("-restart.service") {
            units.push(name);
        }
    }
    let runtime = tempfile::tempdir().expect("tempdir");
    let mut cmd = Command::new(analyze);
    cmd.arg("verify").arg("--man=no");
    if user {
        cmd.arg("--user");
    }
    let out = cmd
        .args(&units)
        .current_dir(dir)
        .env("SYSTEMD_UNIT_PATH", format!("{}:", dir.display()))
        .env("XDG_RUNTIME_DIR", runtime.path())
        .env("SYSTEMD_LOG_LEVEL", "notice")
        .output()
        .expect("systemd-analyze runs");
    let text = format!("{}{}", stdout(&out), stderr(&out));
    (out.status.success(), text)
}

#[test]
fn systemd_export_of_every_example_passes_systemd_analyze_verify() {
    for example in examples() {
        for user in [false, true] {
            let tmp = tempfile::tempdir().expect("tempdir");
            let path_var = stub_path(tmp.path());
            let units = tmp.path().join("units");
            let file = example.to_string_lossy();
            let units_arg = units.to_string_lossy();
            let mut args = vec!["systemd", "-f", &file, "-o", &units_arg];
            if user {
                args.push("--user");
            }
            let out = export(&args, &path_var);
            assert!(
                out.status.success(),
                "export of {file} failed: {}",
                stderr(&out)
            );
            let (ok, text) = verify(&units, user);
            assert!(
                ok && text.trim().is_empty(),
                "systemd-analyze verify{} on the export of {file}:\n{text}",
                if user { " --user" } else { "" }
            );
        }
    }
}

#[test]
fn systemd_export_keeps_instances_shared_socket_memory_and_dependencies() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let file = tmp.path().join("ecosystem.yaml");
    fs::write(
        &file,
        "name: site\n\
         apps:\n\
         \x20 db:\n\
         \x20   cmd: sh -c 'exec sleep 1000'\n\
         \x20   instances: 2\n\
         \x20 api:\n\
         \x20   cmd: [sh, -c, 'echo \"100% $HOME\"']\n\
         \x20   mode: cluster\n\
         \x20   instances: 3\n\
         \x20   listen: [\"127.0.0.1:8080\"]\n\
         \x20   ready: notify\n\
         \x20   max_memory: 300M\n\
         \x20   depends_on: [db]\n\
         \x20   watch: true\n\
         \x20   env: { GREETING: 'say \"hi\" 50%' }\n",
    )
    .expect("write file");
    let units = tmp.path().join("units");
    let out = export(
        &[
            "systemd",
            "-f",
            &file.to_string_lossy(),
            "-o",
            &units.to_string_lossy(),
        ],
        &stub_path(tmp.path()),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stderr(&out),
        "eco: warning: apps.api.watch: systemd does not restart on file changes; dropped\n"
    );
    let read = |name: &str| fs::read_to_string(units.join(name)).expect(name);

    let target = read("site.target");
    let wants: Vec<&str> = target
        .lines()
        .filter_map(|l| l.strip_prefix("Wants="))
        .collect();
    assert_eq!(
        wants,
        [
            "site-api@0.service",
            "site-api@1.service",
            "site-api@2.service",
            "site-api.socket",
            "site-db@0.service",
            "site-db@1.service",
        ]
    );

    let socket = read("site-api.socket");
    assert!(socket.contains("ListenStream=127.0.0.1:8080\n"), "{socket}");
    assert!(socket.contains("FileDescriptorName=tcp-127.0.0.1-8080\n"));
    assert!(socket.contains("Service=site-api@0.service\n"));

    let api = read("site-api@.service");
    for needle in [
        "Requires=site-db@0.service\nAfter=site-db@0.service\n",
        "Requires=site-db@1.service\nAfter=site-db@1.service\n",
        "Sockets=site-api.socket\n",
        "Type=notify\nNotifyAccess=all\n",
        "MemoryMax=314572800\n",
        "ExecStart=/usr/bin/sh -c \"echo \\\"100%% $$HOME\\\"\"\n",
        "Environment=\"GREETING=say \\\"hi\\\" 50%%\"\n",
        "# - watch is not kept",
    ] {
        let needle = needle.replace("/usr/bin/sh", &which_sh());
        assert!(api.contains(&needle), "{needle:?} not in\n{api}");
    }
    let (ok, text) = verify(&units, false);
    assert!(ok && text.trim().is_empty(), "{text}");
}

/// Where the export finds `sh` on this machine.
fn which_sh() -> String {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join("sh"))
        .find(|c| c.is_file())
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| panic!("no sh on PATH"))
}

fn kubernetes_validate(manifests: &Path) -> Output {
    let validate = tool("kubernetes-validate");
    Command::new(validate)
        .arg("--strict")
        .arg(manifests)
        .output()
        .expect("kubernetes-validate runs")
}

#[test]
fn kubernetes_export_of_every_example_passes_kubernetes_validate_strict() {
    for example in examples() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let file = example.to_string_lossy();
        let out = export(
            &[
                "kubernetes",
                "-f",
                &file,
                "--image",
                "registry.example/app:1",
            ],
            &stub_path(tmp.path()),
        );
        assert!(out.status.success(), "export of {file}: {}", stderr(&out));
        let manifests = tmp.path().join("all.yaml");
        fs::write(&manifests, &out.stdout).expect("write manifests");
        let check = kubernetes_validate(&manifests);
        assert!(
            check.status.success() && !stdout(&check).contains("WARN"),
            "kubernetes-validate --strict on the export of {file}:\n{}{}\n{}",
            stdout(&check),
            stderr(&check),
            stdout(&out)
        );

        // The same resources, one file each, with -o.
        let dir = tmp.path().join("out");
        let out = export(
            &[
                "kubernetes",
                "-f",
                &file,
                "--image",
                "registry.example/app:1",
                "-o",
                &dir.to_string_lossy(),
            ],
            &stub_path(tmp.path()),
        );
        assert!(out.status.success(), "{}", stderr(&out));
        for entry in fs::read_dir(&dir).expect("read out").flatten() {
            let check = kubernetes_validate(&entry.path());
            assert!(check.status.success(), "{}", stdout(&check));
        }
    }
}

#[test]
fn kubernetes_export_keeps_replicas_probes_limits_and_services() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let file = tmp.path().join("ecosystem.yaml");
    fs::write(
        &file,
        "name: Site\n\
         apps:\n\
         \x20 db:\n\
         \x20   cmd: postgres -D /data\n\
         \x20   listen: [5432]\n\
         \x20   mode: cluster\n\
         \x20   ready: { tcp: \"127.0.0.1:5432\" }\n\
         \x20 web_app:\n\
         \x20   cmd: node server.js\n\
         \x20   instances: 4\n\
         \x20   mode: cluster\n\
         \x20   listen: [\"0.0.0.0:8080\"]\n\
         \x20   ready: { http: \"http://127.0.0.1:8080/health\" }\n\
         \x20   max_memory: 512M\n\
         \x20   stop_timeout: 20s\n\
         \x20   depends_on: [db]\n\
         \x20   cron_restart: \"0 3 * * *\"\n",
    )
    .expect("write file");
    let out = export(
        &[
            "kubernetes",
            "-f",
            &file.to_string_lossy(),
            "--image",
            "site:1",
            "--app-image",
            "db=postgres:17",
        ],
        &stub_path(tmp.path()),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let warnings = stderr(&out);
    for needle in [
        "eco: warning: apps.db: Kubernetes names are DNS-1123 labels, so \"Site-db\" becomes \"site-db\"",
        "eco: warning: apps.web_app.cron_restart: not exported",
    ] {
        assert!(warnings.contains(needle), "{needle:?} not in\n{warnings}");
    }
    let docs: Vec<Value> =
        serde_saphyr::from_str_multiple(&stdout(&out)).expect("multi-document YAML");
    let find = |kind: &str, name: &str| -> &Value {
        docs.iter()
            .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("no {kind} {name} in {docs:#?}"))
    };
    let web = find("Deployment", "site-web-app");
    assert_eq!(web["spec"]["replicas"], 4);
    let pod = &web["spec"]["template"]["spec"];
    assert_eq!(pod["terminationGracePeriodSeconds"], 20);
    let c = &pod["containers"][0];
    assert_eq!(c["image"], "site:1");
    assert_eq!(c["command"], serde_json::json!(["node", "server.js"]));
    assert_eq!(c["resources"]["limits"]["memory"], "512Mi");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/health");
    assert_eq!(c["readinessProbe"]["httpGet"]["port"], 8080);
    let wait = pod["initContainers"][0]["command"][2]
        .as_str()
        .expect("wait command");
    assert!(wait.contains("nc -z site-db 5432"), "{wait}");

    let db = find("Deployment", "site-db");
    let dbc = &db["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(dbc["image"], "postgres:17");
    assert_eq!(dbc["readinessProbe"]["tcpSocket"]["port"], 5432);

    for (name, port) in [("site-web-app", 8080), ("site-db", 5432)] {
        let svc = find("Service", name);
        assert_eq!(svc["spec"]["ports"][0]["port"], port);
        assert_eq!(
            svc["spec"]["selector"],
            find("Deployment", name)["spec"]["selector"]["matchLabels"]
        );
    }
}

#[test]
fn kubernetes_export_rejects_bad_images_with_exit_2() {
    let file = root().join("examples/shop/ecosystem.yaml");
    let file = file.to_string_lossy();
    for (args, message) in [
        (
            vec!["kubernetes", "-f", &file],
            "error: app \"db\" has no image: pass --image IMAGE, or --app-image db=IMAGE\n",
        ),
        (
            vec!["kubernetes", "-f", &file, "--app-image", "cache=c:1"],
            "error: --app-image cache=…: the project has no app \"cache\"\n",
        ),
    ] {
        let out = export(&args, &std::env::var("PATH").unwrap_or_default());
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
        assert_eq!(stderr(&out), message);
        assert!(out.stdout.is_empty());
    }
}

/// Values systemd or the kubelet would rewrite if written as they are, but
/// that both can express: `%`, `$`, `$$`, `$(HOME)`, quotes, backslashes,
/// spaces, `;`, `#`, unicode (the same file as the library's round trips
/// in src/export/read_back.rs, which read the output back by each engine's
/// rules).
const HOSTILE_YAML: &str = r#"name: hostile
apps:
  web:
    cmd: ['/bin/sh', '-c', 'echo "$HOME" ''$(HOME)'' $$ %i 100% \ ; x', 'a b', '$(HOME)', '$$', '$$(HOME)', '${HOME}', '$HOME', ';', '\;', 'é ü 日本', '''single''', "tab\there", '', '%%', '#x']
    cwd: 'dir é 100% $x;'
    instances: 2
    env:
      HOME: '/home/app'
      A: '$(HOME)'
      B: '$$(HOME)'
      C: '100% %i %%'
      D: 'quote " back \ end\'
      E: 'a;b c #d'
      F: '$HOME ${HOME} $$'
      G: '日本 é'
      H: "line1\nline2"
    out_file: 'logs/out 100% $(HOME).log'
    err_file: 'logs/err "q" ''x'' \.log'
    mode: cluster
    listen: ['unix:/tmp/eco hostile 100% $x.sock']
    ready: { exec: 'test "$(HOME)" = ''$$'' || exit 0' }
  tool:
    cmd: ['./bin/a $b %c/run', '$(HOME)']
"#;

/// The hostile project in `dir`, with the folders and program it names.
fn hostile_project(dir: &Path) -> PathBuf {
    fs::create_dir_all(dir.join("dir é 100% $x;")).expect("mkdir cwd");
    let program = dir.join("bin/a $b %c/run");
    fs::create_dir_all(program.parent().expect("parent")).expect("mkdir bin");
    fs::write(&program, "#!/bin/sh\nexit 0\n").expect("write program");
    fs::set_permissions(&program, fs::Permissions::from_mode(0o755)).expect("chmod");
    let file = dir.join("ecosystem.yaml");
    fs::write(&file, HOSTILE_YAML).expect("write file");
    file
}

#[test]
fn hostile_but_expressible_values_pass_systemd_analyze_and_kubernetes_validate() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let file = hostile_project(tmp.path());
    let file = file.to_string_lossy();
    for user in [false, true] {
        let units = tmp.path().join(if user { "user-units" } else { "units" });
        let units_arg = units.to_string_lossy();
        let mut args = vec!["systemd", "-f", &file, "-o", &units_arg];
        if user {
            args.push("--user");
        }
        let out = export(&args, &stub_path(tmp.path()));
        assert!(out.status.success(), "{}", stderr(&out));
        let (ok, text) = verify(&units, user);
        assert!(
            ok && text.trim().is_empty(),
            "systemd-analyze verify:\n{text}"
        );
        // Spot checks of the escaping; the library reads it all back.
        let web = fs::read_to_string(units.join("hostile-web@.service")).expect("unit");
        for needle in [
            "Environment=\"A=$(HOME)\"\n",
            "Environment=\"C=100%% %%i %%%%\"\n",
            "Environment=\"D=quote \\\" back \\\\ end\\\\\"\n",
            "Environment=\"H=line1\\nline2\"\n",
            " \"$$(HOME)\" \"$$$$\" \"$$$$(HOME)\" \"$${HOME}\" \"$$HOME\" \";\" \"\\\\;\" ",
        ] {
            assert!(web.contains(needle), "{needle:?} not in\n{web}");
        }
        let tool = fs::read_to_string(units.join("hostile-tool@.service")).expect("unit");
        assert!(tool.contains(" \"$$(HOME)\"\n"), "{tool}");
    }

    let out = export(
        &[
            "kubernetes",
            "-f",
            &file,
            "--image",
            "registry.example/app:1",
        ],
        &stub_path(tmp.path()),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let manifests = tmp.path().join("all.yaml");
    fs::write(&manifests, &out.stdout).expect("write manifests");
    let check = kubernetes_validate(&manifests);
    assert!(
        check.status.success() && !stdout(&check).contains("WARN"),
        "kubernetes-validate --strict:\n{}{}\n{}",
        stdout(&check),
        stderr(&check),
        stdout(&out)
    );
    let docs: Vec<Value> =
        serde_saphyr::from_str_multiple(&stdout(&out)).expect("multi-document YAML");
    let web = docs
        .iter()
        .find(|d| d["metadata"]["name"] == "hostile-web")
        .expect("web");
    let c = &web["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(c["command"][4], "$$(HOME)");
    assert_eq!(c["command"][6], "$$$$(HOME)");
    let env = c["env"].as_array().expect("env");
    let a = env.iter().find(|e| e["name"] == "A").expect("A");
    assert_eq!(a["value"], "$$(HOME)");
}

/// `eco export systemd` on `yaml` (written in `dir`, the program stubs in
/// `stubs`): must fail with exit 2, naming `key`, writing no unit.
fn refused(dir: &Path, stubs: &Path, yaml: &str, key: &str) {
    let file = dir.join("ecosystem.yaml");
    fs::write(&file, yaml).expect("write file");
    let units = dir.join("units");
    let out = export(
        &[
            "systemd",
            "-f",
            &file.to_string_lossy(),
            "-o",
            &units.to_string_lossy(),
        ],
        &stub_path(stubs),
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.starts_with(&format!("error: {key}: ")),
        "names {key}: {err}"
    );
    assert!(
        err.contains("cannot be written into a systemd unit"),
        "{err}"
    );
    assert!(!units.exists(), "no unit is written");
}

#[test]
fn a_newline_in_out_file_err_file_or_a_unix_listen_path_is_exit_2_naming_the_key() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let evil = "x\nExecStartPre=/bin/touch /tmp/eco-pwned";
    for (key, app) in [
        ("apps.web.out_file", format!("    out_file: {evil:?}\n")),
        ("apps.web.err_file", format!("    err_file: {evil:?}\n")),
        (
            "apps.web.listen",
            format!(
                "    mode: cluster\n    listen: [{:?}]\n",
                format!("unix:/tmp/{evil}")
            ),
        ),
    ] {
        let yaml = format!("name: evil\napps:\n  web:\n    cmd: node server.js\n{app}");
        refused(tmp.path(), tmp.path(), &yaml, key);
    }
}

#[test]
fn a_newline_in_the_project_folder_is_exit_2_naming_the_key() {
    let tmp = tempfile::tempdir().expect("tempdir");
    // A folder name holds no `/`: a bare program systemd finds on its PATH.
    let folder = tmp.path().join("p\nExecStartPre=touch eco-pwned");
    fs::create_dir(&folder).expect("mkdir");
    refused(
        &folder,
        tmp.path(),
        "name: evil\napps:\n  web:\n    cmd: node server.js\n",
        "apps.web.cwd",
    );
}

#[test]
fn a_newline_in_eco_home_is_exit_2_for_eco_startup_print() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let home = tmp.path().join("h\nExecStartPre=/bin/touch /tmp/eco-pwned");
    let out = Command::new(eco_bin())
        .args(["startup", "--print"])
        .env("ECO_HOME", &home)
        .env("NO_COLOR", "1")
        .output()
        .expect("eco runs");
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}\n{}", stdout(&out));
    assert!(err.starts_with("error: ECO_HOME: "), "{err}");
    assert!(out.stdout.is_empty(), "no unit printed: {}", stdout(&out));

    // A hostile-but-expressible ECO_HOME prints a unit systemd accepts.
    let home = tmp.path().join("h 100% $HOME 'q' é");
    let out = Command::new(eco_bin())
        .args(["startup", "--print"])
        .env("ECO_HOME", &home)
        .env("NO_COLOR", "1")
        .output()
        .expect("eco runs");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let unit = stdout(&out);
    let expected = format!(
        "Environment=\"ECO_HOME={}\"\n",
        home.display().to_string().replace('%', "%%")
    );
    assert!(unit.contains(&expected), "{expected:?} not in\n{unit}");
}
