//! Whether an instance is up: `ready` (when a start or reload counts as
//! done), `ready_timeout`, and `health` (the periodic probe).

use super::Walker;
use super::app::Key;
use super::primitives::{clip, join, set};
use crate::config::keys::{HEALTH_KEYS, READY_KEYS};
use crate::config::node::{Node, Value};
use crate::spec::{Health, Probe, Ready, Settings};

impl Walker<'_> {
    /// Reads `health`, `ready` or `ready_timeout` into `s`; `false` for any other key.
    pub(super) fn probe_key(&mut self, s: &mut Settings, key: &Key<'_>) -> bool {
        let (value, path) = (key.value, key.path);
        match key.name {
            "health" => s.health = self.health(value, path),
            "ready" => s.ready = self.ready(value, path),
            "ready_timeout" => set(&mut s.ready_timeout, self.duration(value, path)),
            _ => return false,
        }
        true
    }

    /// `health: { http|tcp|exec: …, interval, timeout, failures }`.
    fn health(&mut self, node: &Node, path: &str) -> Option<Health> {
        let Value::Map(entries) = &node.value else {
            self.error(
                node.pos,
                path,
                format!("expected a mapping, found {}", node.value),
                Some(
                    "e.g. `health: { http: \"http://127.0.0.1:8080/health\", interval: 10s }`"
                        .into(),
                ),
            );
            return None;
        };
        let mut probe = None;
        let mut health = Health {
            probe: Probe::Tcp(String::new()),
            interval: std::time::Duration::from_secs(10),
            timeout: std::time::Duration::from_secs(2),
            failures: 3,
        };
        for (key, value, _) in self.keyed(entries, path, HEALTH_KEYS, false) {
            let path = join(path, &key);
            match key.as_str() {
                "interval" => set(&mut health.interval, self.duration(value, &path)),
                "timeout" => set(&mut health.timeout, self.duration(value, &path)),
                "failures" => set(&mut health.failures, self.count(value, &path)),
                kind => {
                    let Some(text) = self.string(value, &path) else {
                        continue;
                    };
                    if probe.is_some() {
                        self.error(
                            value.pos,
                            &path,
                            "give one probe: `http`, `tcp` or `exec`".into(),
                            None,
                        );
                    }
                    probe = match kind {
                        "http" if text.starts_with("http://") => Some(Probe::Http(text)),
                        "tcp" if valid_host_port(&text) => Some(Probe::Tcp(text)),
                        "exec" if !text.trim().is_empty() => Some(Probe::Exec(text)),
                        _ => {
                            self.error(
                                value.pos,
                                &path,
                                format!("invalid {kind} probe {:?}", clip(&text)),
                                Some(
                                    "http needs an http:// URL, tcp host:port, exec a command"
                                        .into(),
                                ),
                            );
                            None
                        }
                    };
                }
            }
        }
        if health.failures == 0 {
            self.error(node.pos, path, "`failures` must be at least 1".into(), None);
        }
        match probe {
            Some(probe) => Some(Health { probe, ..health }),
            None => {
                self.error(
                    node.pos,
                    path,
                    "a health check needs a probe: `http`, `tcp` or `exec`".into(),
                    None,
                );
                None
            }
        }
    }

    fn ready(&mut self, node: &Node, path: &str) -> Option<Ready> {
        const FORMS: &str = "use `notify`, `{tcp: \"127.0.0.1:8080\"}`, `{http: \"http://127.0.0.1:8080/health\"}`, `{exec: \"cmd\"}` or `{log: \"regex\"}`";
        match &node.value {
            Value::Str(s) if s == "notify" => Some(Ready::Notify),
            Value::Map(entries) if entries.len() == 1 => {
                let keys = self.keyed(entries, path, READY_KEYS, false);
                let (kind, value, _) = keys.into_iter().next()?;
                let path = join(path, &kind);
                let text = self.string(value, &path)?;
                match kind.as_str() {
                    "tcp" => {
                        if valid_host_port(&text) {
                            Some(Ready::Tcp(text))
                        } else {
                            self.error(
                                value.pos,
                                &path,
                                format!("expected host:port, found {:?}", clip(&text)),
                                None,
                            );
                            None
                        }
                    }
                    "http" => {
                        let rest = text.strip_prefix("http://");
                        let host = rest.map(|r| r.split('/').next().unwrap_or_default());
                        if host.is_some_and(|h| !h.is_empty()) {
                            Some(Ready::Http(text))
                        } else {
                            self.error(
                                value.pos,
                                &path,
                                format!("expected an http:// URL, found {:?}", clip(&text)),
                                Some("e.g. http://127.0.0.1:8080/health (https is not supported for readiness)".into()),
                            );
                            None
                        }
                    }
                    "exec" => {
                        if text.trim().is_empty() {
                            self.error(
                                value.pos,
                                &path,
                                "the readiness command is empty".into(),
                                None,
                            );
                            None
                        } else {
                            Some(Ready::Exec(text))
                        }
                    }
                    _ => match regex::Regex::new(&text) {
                        Ok(_) => Some(Ready::Log(text)),
                        Err(err) => {
                            let text = err.to_string();
                            let last = text.lines().last().unwrap_or_default();
                            let first = last.trim().trim_start_matches("error: ").to_owned();
                            self.error(
                                value.pos,
                                &path,
                                format!("invalid regex {text:?}: {first}"),
                                None,
                            );
                            None
                        }
                    },
                }
            }
            _ => {
                self.error(
                    node.pos,
                    path,
                    format!("expected a readiness check, found {}", node.value),
                    Some(FORMS.into()),
                );
                None
            }
        }
    }
}

fn valid_host_port(text: &str) -> bool {
    match text.rsplit_once(':') {
        Some((host, port)) => !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{errors, spec};
    use crate::spec::{Probe, Ready};

    #[test]
    fn a_health_check_needs_one_probe() {
        assert_eq!(
            errors("apps:\n  a: {cmd: x, health: {interval: 5s}}\n"),
            ["2:23 apps.a.health: a health check needs a probe: `http`, `tcp` or `exec`"]
        );
        let project = spec("apps:\n  a: {cmd: x, health: {tcp: \"127.0.0.1:80\", failures: 2}}\n");
        let health = project.apps["a"].settings.health.clone().expect("health");
        assert_eq!(health.probe, Probe::Tcp("127.0.0.1:80".into()));
        assert_eq!(health.failures, 2);
    }

    #[test]
    fn readiness_forms() {
        assert_eq!(
            errors("apps:\n  a: {cmd: x, ready: {tcp: nope}}\n"),
            ["2:28 apps.a.ready.tcp: expected host:port, found \"nope\""]
        );
        let project = spec("apps:\n  a: {cmd: x, ready: notify}\n");
        assert_eq!(project.apps["a"].settings.ready, Some(Ready::Notify));
    }
}
