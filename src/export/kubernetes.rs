//! `eco export kubernetes`: per app a Deployment (a StatefulSet when the
//! app needs its instance number), and a Service per app with `listen`.
//! Pure: returns one YAML document per resource.
//!
//! The kubelet expands `$(VAR)` in a container's `command`, `args`, `env`
//! values and exec probes (`$$` is a `$`). Every such string is written
//! through [`literal`], so the pod runs exactly what the file says.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::{Export, ExportError, ceil_secs};
use crate::spec::{AppSpec, ListenAddr, ProjectSpec, Ready, RestartPolicy, Watch};

/// A string the kubelet reads back as itself: `$` doubled, so `$(VAR)` and
/// `$$` in the file stay as written (kubernetes third_party/forked/golang/
/// expansion: `$$` gives `$`, `$(NAME)` a defined variable's value).
pub(crate) fn literal(text: &str) -> String {
    text.replace('$', "$$")
}

/// [`literal`] for each word of a command.
fn literal_words<S: AsRef<str>>(words: &[S]) -> Vec<String> {
    words.iter().map(|w| literal(w.as_ref())).collect()
}

/// The image that runs the waits of `depends_on` initContainers.
const WAIT_IMAGE: &str = "busybox:1.36";

/// Export options from the command line.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// The image of every app without its own.
    pub image: Option<String>,
    /// `APP=IMAGE` overrides.
    pub app_images: Vec<String>,
}

/// Renders the project's manifests: `(NAME.KIND.yaml, document)` pairs.
pub fn export(spec: &ProjectSpec, options: &Options) -> Result<Export, ExportError> {
    let images = images(spec, options)?;
    let mut out = Export::default();
    let names = resource_names(spec, &mut out.warnings)?;
    for app in spec.apps.values() {
        let name = &names[&app.name];
        let image = &images[&app.name];
        let service = service(spec, app, name, &mut out.warnings);
        let workload = workload(spec, app, name, image, &names, &mut out.warnings)?;
        if let Some(service) = service {
            out.files
                .push((format!("{name}.service.yaml"), yaml(&service)?));
        }
        let kind = workload["kind"].as_str().unwrap_or("deployment");
        out.files.push((
            format!("{name}.{}.yaml", kind.to_ascii_lowercase()),
            yaml(&workload)?,
        ));
    }
    Ok(out)
}

fn yaml(doc: &Value) -> Result<String, ExportError> {
    serde_saphyr::to_string(doc).map_err(|err| ExportError::Yaml(err.to_string()))
}

fn images(spec: &ProjectSpec, options: &Options) -> Result<BTreeMap<String, String>, ExportError> {
    let mut per_app = BTreeMap::new();
    for pair in &options.app_images {
        let Some((app, image)) = pair
            .split_once('=')
            .filter(|(a, i)| !a.is_empty() && !i.is_empty())
        else {
            return Err(ExportError::BadAppImage(pair.clone()));
        };
        if !spec.apps.contains_key(app) {
            return Err(ExportError::UnknownApp { app: app.into() });
        }
        per_app.insert(app.to_owned(), image.to_owned());
    }
    spec.apps
        .keys()
        .map(|app| {
            let image = per_app
                .get(app)
                .or(options.image.as_ref())
                .ok_or_else(|| ExportError::NoImage { app: app.clone() })?;
            Ok((app.clone(), image.clone()))
        })
        .collect()
}

/// `PROJECT-APP` as a DNS-1123 label (lowercase, digits, `-`, at most 63).
pub(crate) fn dns_label(text: &str) -> String {
    let mut label: String = text
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    label.truncate(63);
    let label = label.trim_matches('-').to_owned();
    if label.is_empty() {
        "app".into()
    } else {
        label
    }
}

fn resource_names(
    spec: &ProjectSpec,
    warnings: &mut Vec<String>,
) -> Result<BTreeMap<String, String>, ExportError> {
    let mut names = BTreeMap::new();
    let mut taken: BTreeMap<String, String> = BTreeMap::new();
    for app in spec.apps.keys() {
        let wanted = format!("{}-{app}", spec.name);
        let name = dns_label(&wanted);
        if name != wanted {
            warnings.push(format!(
                "apps.{app}: Kubernetes names are DNS-1123 labels, so {wanted:?} becomes {name:?}"
            ));
        }
        if let Some(first) = taken.insert(name.clone(), app.clone()) {
            return Err(ExportError::NameClash {
                first,
                second: app.clone(),
                name,
            });
        }
        names.insert(app.clone(), name);
    }
    Ok(names)
}

fn labels(spec: &ProjectSpec, name: &str) -> Value {
    json!({
        "app.kubernetes.io/name": name,
        "app.kubernetes.io/part-of": dns_label(&spec.name),
        "app.kubernetes.io/managed-by": "eco-export",
    })
}

fn selector(spec: &ProjectSpec, name: &str) -> Value {
    json!({
        "app.kubernetes.io/name": name,
        "app.kubernetes.io/part-of": dns_label(&spec.name),
    })
}

fn tcp_ports(app: &AppSpec) -> Vec<u16> {
    app.process
        .listen
        .iter()
        .filter_map(|addr| match addr {
            ListenAddr::Tcp(a) => Some(a.port()),
            ListenAddr::Unix(_) => None,
        })
        .collect()
}

/// A ClusterIP Service for an app with TCP `listen` addresses. Kubernetes
/// spreads connections over the pods; each pod binds the port itself.
fn service(
    spec: &ProjectSpec,
    app: &AppSpec,
    name: &str,
    warnings: &mut Vec<String>,
) -> Option<Value> {
    for addr in &app.process.listen {
        if let ListenAddr::Unix(path) = addr {
            warnings.push(format!(
                "apps.{}.listen: unix socket {} cannot be a Kubernetes Service; dropped",
                app.name,
                path.display()
            ));
        }
    }
    if app
        .process
        .listen
        .iter()
        .any(|a| matches!(a, ListenAddr::Tcp(t) if t.ip().is_loopback()))
    {
        warnings.push(format!(
            "apps.{}.listen: a loopback address is unreachable from other pods; \
             the Service needs the app to listen on 0.0.0.0 in the pod",
            app.name
        ));
    }
    let ports: Vec<Value> = tcp_ports(app)
        .into_iter()
        .map(|port| {
            json!({
                "name": format!("tcp-{port}"),
                "port": port,
                "targetPort": port,
                "protocol": "TCP",
            })
        })
        .collect();
    if ports.is_empty() {
        return None;
    }
    Some(json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": { "name": name, "labels": labels(spec, name) },
        "spec": {
            "selector": selector(spec, name),
            "ports": ports,
        },
    }))
}

/// Whether the app needs to know which instance it is: `increment_var`, or
/// its command names ECO_INSTANCE / NODE_APP_INSTANCE.
fn needs_ordinal(app: &AppSpec) -> bool {
    app.process.increment_var.is_some()
        || app
            .process
            .argv
            .iter()
            .any(|w| w.contains("ECO_INSTANCE") || w.contains("NODE_APP_INSTANCE"))
}

fn workload(
    spec: &ProjectSpec,
    app: &AppSpec,
    name: &str,
    image: &str,
    names: &BTreeMap<String, String>,
    warnings: &mut Vec<String>,
) -> Result<Value, ExportError> {
    let set = &app.settings;
    let stateful = needs_ordinal(app);
    let (env, command) = env_and_command(spec, app, stateful, warnings)?;
    let container = container(app, image, env, &command, warnings);
    let init = init_containers(spec, app, names, warnings);
    unexported(app, stateful, warnings);
    let mut pod = json!({
        "terminationGracePeriodSeconds": ceil_secs(set.stop_timeout),
        "containers": [container],
    });
    if !init.is_empty() {
        pod["initContainers"] = Value::Array(init);
    }
    let mut workload_spec = json!({
        "replicas": app.instances,
        "selector": { "matchLabels": selector(spec, name) },
        "template": {
            "metadata": { "labels": labels(spec, name) },
            "spec": pod,
        },
    });
    let kind = if stateful {
        workload_spec["serviceName"] = json!(name);
        // eco starts instances side by side, not one after the other.
        workload_spec["podManagementPolicy"] = json!("Parallel");
        "StatefulSet"
    } else {
        "Deployment"
    };
    Ok(json!({
        "apiVersion": "apps/v1",
        "kind": kind,
        "metadata": { "name": name, "labels": labels(spec, name) },
        "spec": workload_spec,
    }))
}

/// The container's env and command: eco's variables, and for a
/// StatefulSet the instance number from the pod's ordinal (with a shell
/// computing `increment_var`, which Kubernetes cannot).
fn env_and_command(
    spec: &ProjectSpec,
    app: &AppSpec,
    stateful: bool,
    warnings: &mut Vec<String>,
) -> Result<(Vec<Value>, Vec<String>), ExportError> {
    let mut env: Vec<Value> = app
        .process
        .env
        .iter()
        .map(|(k, v)| json!({ "name": k, "value": literal(v) }))
        .collect();
    env.push(json!({ "name": "ECO_PROJECT", "value": literal(&spec.name) }));
    env.push(json!({ "name": "ECO_APP", "value": literal(&app.name) }));
    let mut command = app.process.argv.clone();
    if stateful {
        // The StatefulSet ordinal is the instance number (pod-index label).
        let index = json!({ "fieldRef": {
            "fieldPath": "metadata.labels['apps.kubernetes.io/pod-index']"
        }});
        env.push(json!({ "name": "ECO_INSTANCE", "valueFrom": index }));
        env.push(json!({ "name": "NODE_APP_INSTANCE", "valueFrom": index }));
        if let Some(var) = &app.process.increment_var {
            // The name goes into shell code: only a shell name can.
            if !is_shell_name(var) {
                return Err(ExportError::ShellName {
                    app: app.name.clone(),
                    var: var.clone(),
                });
            }
            // Kubernetes cannot add to an env value: a shell does it at start.
            let mut wrapped = vec![
                "/bin/sh".to_owned(),
                "-c".to_owned(),
                format!("export {var}=$(( ${{{var}}} + ECO_INSTANCE )); exec \"$@\""),
                "eco-instance".to_owned(),
            ];
            wrapped.extend(command);
            command = wrapped;
            warnings.push(format!(
                "apps.{}.increment_var: {var} is computed by /bin/sh from the StatefulSet \
                 ordinal; the image needs /bin/sh",
                app.name
            ));
        }
    } else if app.instances > 1 {
        warnings.push(format!(
            "apps.{}: a Deployment's replicas do not know their instance number; \
             ECO_INSTANCE and NODE_APP_INSTANCE are not set",
            app.name
        ));
    }

    Ok((env, command))
}

/// The app's container: command, ports, readiness and memory limit.
fn container(
    app: &AppSpec,
    image: &str,
    env: Vec<Value>,
    command: &[String],
    warnings: &mut Vec<String>,
) -> Value {
    let mut container = json!({
        "name": dns_label(&app.name),
        "image": image,
        "command": literal_words(command),
        "workingDir": app.process.cwd.display().to_string(),
        "env": env,
    });
    let ports: Vec<Value> = tcp_ports(app)
        .into_iter()
        .map(|port| json!({ "containerPort": port, "protocol": "TCP" }))
        .collect();
    if !ports.is_empty() {
        container["ports"] = Value::Array(ports);
    }
    if let Some(probe) = readiness(app, warnings) {
        container["readinessProbe"] = probe;
    }
    if let Some(bytes) = app.settings.max_memory {
        container["resources"] = json!({ "limits": { "memory": quantity(bytes) } });
    }

    container
}

/// One init container per dependency with a port, waiting until it listens.
fn init_containers(
    spec: &ProjectSpec,
    app: &AppSpec,
    names: &BTreeMap<String, String>,
    warnings: &mut Vec<String>,
) -> Vec<Value> {
    let mut init = Vec::new();
    for dep in &app.settings.depends_on {
        let Some(dep_app) = spec.apps.get(dep) else {
            continue;
        };
        match tcp_ports(dep_app).first() {
            Some(port) => {
                let svc = &names[dep];
                init.push(json!({
                    "name": dns_label(&format!("wait-for-{dep}")),
                    "image": WAIT_IMAGE,
                    "command": literal_words(&[
                        "sh", "-c",
                        &format!("until nc -z {svc} {port}; do echo waiting for {svc}; sleep 1; done"),
                    ]),
                }));
            }
            None => warnings.push(format!(
                "apps.{}.depends_on: {dep} has no `listen`, so no Service to wait for; \
                 Kubernetes starts both at once",
                app.name
            )),
        }
    }

    init
}

/// Warns about what eco does that the workload does not.
fn unexported(app: &AppSpec, stateful: bool, warnings: &mut Vec<String>) {
    let set = &app.settings;
    if set.restart != RestartPolicy::Always {
        warnings.push(format!(
            "apps.{}.restart: a {} always restarts its pods (restartPolicy Always)",
            app.name,
            if stateful {
                "StatefulSet"
            } else {
                "Deployment"
            }
        ));
    }
    if set.stop_signal.0 != libc::SIGTERM {
        warnings.push(format!(
            "apps.{}.stop_signal: Kubernetes sends SIGTERM (or the image's STOPSIGNAL), not {}",
            app.name, set.stop_signal
        ));
    }
    if set.cron_restart.is_some() {
        warnings.push(format!(
            "apps.{}.cron_restart: not exported; a CronJob running `kubectl rollout restart` can do it",
            app.name
        ));
    }
    if set.watch != Watch::Off {
        warnings.push(format!(
            "apps.{}.watch: not exported; rebuild the image and roll out instead",
            app.name
        ));
    }
    if set.out_file.is_some() || set.err_file.is_some() {
        warnings.push(format!(
            "apps.{}: out_file/err_file are not exported; the container's output goes to the pod log",
            app.name
        ));
    }
}

/// A POSIX shell variable name: `[A-Za-z_][A-Za-z0-9_]*`.
fn is_shell_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn readiness(app: &AppSpec, warnings: &mut Vec<String>) -> Option<Value> {
    let ready = app.settings.ready.as_ref()?;
    let probe = match ready {
        Ready::Tcp(addr) => {
            let (host, port) = addr.rsplit_once(':')?;
            let port = port.parse::<u16>().ok()?;
            loopback_probe(app, host, warnings);
            json!({ "tcpSocket": { "port": port } })
        }
        Ready::Http(url) => {
            let (scheme, rest) = url.split_once("://")?;
            let (authority, path) = match rest.find('/') {
                Some(i) => (&rest[..i], &rest[i..]),
                None => (rest, "/"),
            };
            let default_port = if scheme.eq_ignore_ascii_case("https") {
                443
            } else {
                80
            };
            let host = authority.rsplit_once(':').map_or(authority, |(h, _)| h);
            loopback_probe(app, host, warnings);
            let port = authority
                .rsplit_once(':')
                .and_then(|(_, p)| p.parse::<u16>().ok())
                .unwrap_or(default_port);
            json!({ "httpGet": {
                "path": path,
                "port": port,
                "scheme": scheme.to_ascii_uppercase(),
            }})
        }
        Ready::Exec(cmd) => {
            json!({ "exec": { "command": literal_words(&["/bin/sh", "-c", cmd]) } })
        }
        Ready::Notify | Ready::Log(_) => {
            let kind = if matches!(ready, Ready::Notify) {
                "notify"
            } else {
                "log"
            };
            warnings.push(format!(
                "apps.{}.ready: {kind} readiness has no Kubernetes probe; the pod counts \
                 as ready once started",
                app.name
            ));
            return None;
        }
    };
    let mut probe = probe;
    // eco polls readiness often; the probe's default (10 s) is slow to start.
    probe["periodSeconds"] = json!(2);
    Some(probe)
}

/// The kubelet probes the pod's IP, which an app bound to loopback does not answer.
fn loopback_probe(app: &AppSpec, host: &str, warnings: &mut Vec<String>) {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
    {
        warnings.push(format!(
            "apps.{}.ready: the kubelet probes the pod IP, not {host}; \
             the app must listen on 0.0.0.0 for the readinessProbe to pass",
            app.name
        ));
    }
}

/// A memory size as a Kubernetes quantity: `300Mi` when whole MiB.
fn quantity(bytes: u64) -> String {
    const MIB: u64 = 1024 * 1024;
    if bytes.is_multiple_of(MIB) {
        format!("{}Mi", bytes / MIB)
    } else if bytes.is_multiple_of(1024) {
        format!("{}Ki", bytes / 1024)
    } else {
        bytes.to_string()
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::spec::{Mode, ProcessSpec, Settings};

    fn app(name: &str, instances: u32) -> AppSpec {
        AppSpec {
            name: name.into(),
            process: ProcessSpec {
                argv: vec!["node".into(), "server.js".into()],
                cwd: PathBuf::from("/srv/shop"),
                env: BTreeMap::from([("PORT".into(), "3000".into())]),
                mode: Mode::Fork,
                increment_var: None,
                listen: Vec::new(),
                pid_file: None,
                watchdog: None,
            },
            instances,
            settings: Settings::default(),
        }
    }

    fn project(name: &str, apps: Vec<AppSpec>) -> ProjectSpec {
        ProjectSpec {
            name: name.into(),
            file: "/srv/shop/ecosystem.yaml".into(),
            profile: None,
            env_files: Vec::new(),
            apps: apps.into_iter().map(|a| (a.name.clone(), a)).collect(),
        }
    }

    fn image(image: &str) -> Options {
        Options {
            image: Some(image.into()),
            app_images: Vec::new(),
        }
    }

    fn doc(out: &Export, name: &str) -> Value {
        let text = out
            .files
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, c)| c.as_str())
            .unwrap_or_else(|| panic!("no {name} in {:?}", out.files));
        serde_saphyr::from_str(text).expect("valid YAML")
    }

    #[test]
    fn deployment_with_probe_limits_and_service() {
        let mut api = app("api", 3);
        api.process.mode = Mode::Cluster;
        api.process.listen = vec![ListenAddr::Tcp("0.0.0.0:8080".parse().expect("addr"))];
        api.settings.ready = Some(Ready::Http("http://127.0.0.1:8080/health".into()));
        api.settings.max_memory = Some(300 * 1024 * 1024);
        api.settings.stop_timeout = std::time::Duration::from_millis(4500);
        let mut web = app("web", 1);
        web.settings.depends_on = vec!["api".into()];
        web.settings.ready = Some(Ready::Tcp("127.0.0.1:3000".into()));
        let out = export(&project("shop", vec![api, web]), &image("shop:1")).expect("export");
        let names: Vec<&str> = out.files.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "shop-api.service.yaml",
                "shop-api.deployment.yaml",
                "shop-web.deployment.yaml"
            ]
        );
        let d = doc(&out, "shop-api.deployment.yaml");
        assert_eq!(d["spec"]["replicas"], 3);
        let pod = &d["spec"]["template"]["spec"];
        assert_eq!(pod["terminationGracePeriodSeconds"], 5);
        let c = &pod["containers"][0];
        assert_eq!(c["command"], json!(["node", "server.js"]));
        assert_eq!(c["image"], "shop:1");
        assert_eq!(c["resources"]["limits"]["memory"], "300Mi");
        assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/health");
        assert_eq!(c["readinessProbe"]["httpGet"]["port"], 8080);
        assert_eq!(c["env"][0], json!({"name": "PORT", "value": "3000"}));
        let s = doc(&out, "shop-api.service.yaml");
        assert_eq!(s["spec"]["ports"][0]["port"], 8080);
        assert_eq!(s["spec"]["selector"], d["spec"]["selector"]["matchLabels"]);
        let w = doc(&out, "shop-web.deployment.yaml");
        let wc = &w["spec"]["template"]["spec"];
        assert_eq!(
            wc["containers"][0]["readinessProbe"]["tcpSocket"]["port"],
            3000
        );
        let wait = wc["initContainers"][0]["command"][2].as_str().expect("cmd");
        assert!(wait.contains("nc -z shop-api 8080"), "{wait}");
    }

    #[test]
    fn increment_var_makes_a_statefulset() {
        let mut web = app("web", 2);
        web.process.increment_var = Some("PORT".into());
        let out = export(&project("shop", vec![web]), &image("shop:1")).expect("export");
        let d = doc(&out, "shop-web.statefulset.yaml");
        assert_eq!(d["kind"], "StatefulSet");
        assert_eq!(d["spec"]["serviceName"], "shop-web");
        let c = &d["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(c["command"][0], "/bin/sh");
        assert_eq!(c["command"][4], "node");
        assert!(out.warnings.iter().any(|w| w.contains("increment_var")));
    }

    #[test]
    fn names_become_dns_labels_with_a_warning() {
        let out =
            export(&project("My_Shop", vec![app("Web.API", 1)]), &image("x")).expect("export");
        assert_eq!(out.files[0].0, "my-shop-web-api.deployment.yaml");
        assert!(out.warnings[0].contains("\"my-shop-web-api\""));
        assert_eq!(dns_label("--A__b--"), "a--b");
    }

    #[test]
    fn images_come_from_the_options() {
        let spec = project("shop", vec![app("web", 1), app("db", 1)]);
        let opts = Options {
            image: None,
            app_images: vec!["web=w:1".into()],
        };
        assert_eq!(
            export(&spec, &opts),
            Err(ExportError::NoImage { app: "db".into() })
        );
        let opts = Options {
            image: Some("all:1".into()),
            app_images: vec!["web=w:1".into()],
        };
        let out = export(&spec, &opts).expect("export");
        assert_eq!(
            doc(&out, "shop-web.deployment.yaml")["spec"]["template"]["spec"]["containers"][0]["image"],
            "w:1"
        );
        let bad = Options {
            image: None,
            app_images: vec!["nope".into()],
        };
        assert_eq!(
            export(&spec, &bad),
            Err(ExportError::BadAppImage("nope".into()))
        );
        let unknown = Options {
            image: None,
            app_images: vec!["cache=c:1".into()],
        };
        assert_eq!(
            export(&spec, &unknown),
            Err(ExportError::UnknownApp {
                app: "cache".into()
            })
        );
    }

    #[test]
    fn env_values_stay_strings_in_yaml() {
        let mut web = app("web", 1);
        web.process.env = BTreeMap::from([
            ("A".into(), "true".into()),
            ("B".into(), "0123".into()),
            ("C".into(), "a: b # c".into()),
            ("D".into(), "".into()),
            ("E".into(), "line1\nline2".into()),
        ]);
        let out = export(&project("shop", vec![web]), &image("x")).expect("export");
        let d = doc(&out, "shop-web.deployment.yaml");
        let env = &d["spec"]["template"]["spec"]["containers"][0]["env"];
        assert_eq!(env[0]["value"], "true");
        assert_eq!(env[1]["value"], "0123");
        assert_eq!(env[2]["value"], "a: b # c");
        assert_eq!(env[3]["value"], "");
        assert_eq!(env[4]["value"], "line1\nline2");
    }

    /// What the kubelet runs for one container: its env expanded in order
    /// (each value sees the ones before it), then its command and exec
    /// probe expanded with the whole env, as kubelet_pods.go and prober.go do.
    fn as_the_kubelet_runs(
        container: &Value,
    ) -> (Vec<String>, BTreeMap<String, String>, Vec<String>) {
        use crate::export::read_back::kubelet_expand;
        let mut env = BTreeMap::new();
        for var in container["env"].as_array().expect("env") {
            let Some(value) = var["value"].as_str() else {
                continue; // valueFrom
            };
            let value = kubelet_expand(value, &env);
            env.insert(var["name"].as_str().expect("name").to_owned(), value);
        }
        let expand = |words: &Value| -> Vec<String> {
            words
                .as_array()
                .map(|w| {
                    w.iter()
                        .map(|w| kubelet_expand(w.as_str().expect("word"), &env))
                        .collect()
                })
                .unwrap_or_default()
        };
        let command = expand(&container["command"]);
        let probe = expand(&container["readinessProbe"]["exec"]["command"]);
        (command, env, probe)
    }

    /// The manifests of a file full of `$(VAR)`, `$$`, `%`, quotes and
    /// unicode, expanded as the kubelet does, run exactly the file's argv
    /// with exactly its env and readiness command.
    #[test]
    fn hostile_values_round_trip_through_the_kubelets_expansion() {
        use crate::export::read_back::{self, HOSTILE_ARGV, HOSTILE_ENV};
        let (_dir, spec) = read_back::hostile_project();
        let out = export(&spec, &image("x")).expect("export");
        let d = doc(&out, "hostile-web.deployment.yaml");
        let (command, env, probe) =
            as_the_kubelet_runs(&d["spec"]["template"]["spec"]["containers"][0]);
        assert_eq!(command, HOSTILE_ARGV);
        for (key, value) in HOSTILE_ENV {
            assert_eq!(env.get(*key).map(String::as_str), Some(*value), "{key}");
        }
        assert_eq!(
            probe,
            ["/bin/sh", "-c", "test \"$(HOME)\" = '$$' || exit 0"]
        );
        let tool = doc(&out, "hostile-tool.deployment.yaml");
        let (command, _, _) =
            as_the_kubelet_runs(&tool["spec"]["template"]["spec"]["containers"][0]);
        assert_eq!(command, ["./bin/a $b %c/run", "$(HOME)"]);
    }

    #[test]
    fn increment_var_wrapper_survives_expansion_and_refuses_non_shell_names() {
        let mut web = app("web", 2);
        web.process.increment_var = Some("PORT".into());
        web.process.argv = vec!["node".into(), "$(PORT)".into()];
        let out = export(&project("shop", vec![web]), &image("x")).expect("export");
        let d = doc(&out, "shop-web.statefulset.yaml");
        let (command, _, _) = as_the_kubelet_runs(&d["spec"]["template"]["spec"]["containers"][0]);
        assert_eq!(
            command,
            [
                "/bin/sh",
                "-c",
                "export PORT=$(( ${PORT} + ECO_INSTANCE )); exec \"$@\"",
                "eco-instance",
                "node",
                "$(PORT)"
            ]
        );
        let mut bad = app("web", 2);
        bad.process.increment_var = Some("P;rm -rf /".into());
        bad.process.env.insert("P;rm -rf /".into(), "1".into());
        assert_eq!(
            export(&project("shop", vec![bad]), &image("x")),
            Err(ExportError::ShellName {
                app: "web".into(),
                var: "P;rm -rf /".into()
            })
        );
    }

    proptest::proptest! {
        /// The kubelet gives back any string written through `literal`.
        #[test]
        fn literal_round_trips(text in "\\PC{0,40}", dollars in "[$()A-Z]{0,12}") {
            let vars = BTreeMap::from([("A".to_owned(), "x".to_owned()), ("HOME".to_owned(), "/h".to_owned())]);
            for text in [text.clone(), dollars.clone(), format!("{dollars}{text}{dollars}")] {
                proptest::prop_assert_eq!(crate::export::read_back::kubelet_expand(&literal(&text), &vars), text);
            }
        }
    }

    #[test]
    fn quantities() {
        assert_eq!(quantity(300 * 1024 * 1024), "300Mi");
        assert_eq!(quantity(1536), "1536");
        assert_eq!(quantity(512 * 1024), "512Ki");
        assert_eq!(quantity(1000), "1000");
    }
}
