//! `listen`: the sockets eco binds once and hands to cluster instances,
//! and the checks on them (cluster mode only, one app per address).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;

use super::app::{Draft, Key};
use super::primitives::join;
use super::{Parsed, Walker, normalize};
use crate::config::node::{Node, Pos, Value};
use crate::spec::{ListenAddr, Mode};

impl Walker<'_> {
    /// Reads `listen` into `d`; `false` for any other key.
    pub(super) fn listen_key(&mut self, d: &mut Draft, key: &Key<'_>) -> bool {
        if key.name != "listen" {
            return false;
        }
        d.listen_key_pos = key.pos;
        d.listen = self.listen(key.value, key.path);
        true
    }

    /// `listen` needs `mode: cluster`: a fork app binds its own port.
    pub(super) fn listen_needs_cluster(&mut self, d: &Draft, base: &str) {
        if d.mode == Mode::Fork && !d.listen.is_empty() {
            self.error(
                d.listen_key_pos,
                &join(base, "listen"),
                "`listen` needs `mode: cluster` (eco hands the sockets to cluster instances)"
                    .into(),
                Some(
                    "add `mode: cluster`, or remove `listen` and let the app bind its own port"
                        .into(),
                ),
            );
        }
    }

    /// No two apps bind the same address (instances of one app share it).
    pub(super) fn listen_conflicts(&mut self, parsed: &[Parsed]) {
        let mut bound: Vec<(&ListenAddr, &str)> = Vec::new();
        for p in parsed {
            for (addr, pos) in &p.listen_pos {
                if let Some((_, other)) = bound.iter().find(|(a, _)| listen_conflict(a, addr)) {
                    let path = join(&join("apps", &p.spec.name), "listen");
                    self.error(
                        *pos,
                        &path,
                        format!("address {addr} is already used by app `{other}`"),
                        Some("give each app its own address; instances of one app share it".into()),
                    );
                } else {
                    bound.push((addr, &p.spec.name));
                }
            }
        }
    }

    fn listen(&mut self, node: &Node, path: &str) -> Vec<(ListenAddr, Pos)> {
        let items: Vec<&Node> = match &node.value {
            Value::Seq(items) => items.iter().collect(),
            _ => vec![node],
        };
        let mut out = Vec::new();
        for (i, item) in items.into_iter().enumerate() {
            let item_path = format!("{path}[{i}]");
            let addr = match &item.value {
                Value::Int(port) => u16::try_from(*port).ok().filter(|p| *p > 0).map(|p| {
                    ListenAddr::Tcp(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), p))
                }),
                Value::Str(s) => parse_listen(s, &self.folder()),
                _ => None,
            };
            match addr {
                Some(addr) => out.push((addr, item.pos)),
                None => self.expected(
                    item,
                    &item_path,
                    "a port (1-65535), \"127.0.0.1:8080\", \"[::1]:8080\" or \"unix:/path\"",
                ),
            }
        }
        out
    }
}

fn parse_listen(text: &str, folder: &Path) -> Option<ListenAddr> {
    if let Some(path) = text.strip_prefix("unix:") {
        return (!path.is_empty()).then(|| ListenAddr::Unix(normalize(&folder.join(path))));
    }
    if let Ok(port) = text.parse::<u16>() {
        return (port > 0)
            .then(|| ListenAddr::Tcp(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port)));
    }
    text.parse::<SocketAddr>()
        .ok()
        .filter(|a| a.port() > 0)
        .map(ListenAddr::Tcp)
}

/// Two addresses collide when equal, or on one port when either is a wildcard.
fn listen_conflict(a: &ListenAddr, b: &ListenAddr) -> bool {
    match (a, b) {
        (ListenAddr::Tcp(x), ListenAddr::Tcp(y)) => {
            x.port() == y.port()
                && (x.ip() == y.ip() || x.ip().is_unspecified() || y.ip().is_unspecified())
        }
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::errors;

    #[test]
    fn listen_needs_cluster_mode() {
        assert_eq!(
            errors("apps:\n  a: {cmd: x, listen: [8080]}\n"),
            [
                "2:15 apps.a.listen: `listen` needs `mode: cluster` (eco hands the sockets to cluster instances)"
            ]
        );
    }

    #[test]
    fn two_apps_cannot_bind_one_address() {
        let found = errors(
            "apps:\n  a: {cmd: x, mode: cluster, listen: [8080]}\n  b: {cmd: x, mode: cluster, listen: [\"127.0.0.1:8080\"]}\n",
        );
        assert_eq!(
            found,
            ["3:39 apps.b.listen: address 127.0.0.1:8080 is already used by app `a`"]
        );
    }

    #[test]
    fn a_cluster_app_listens_on_port_or_says_what_is_missing() {
        assert!(errors("apps:\n  a: {cmd: x, mode: cluster, env: {PORT: 3000}}\n").is_empty());
        let found = errors("apps:\n  a: {cmd: x, mode: cluster}\n");
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            found[0].starts_with("2:3 apps.a.listen: `mode: cluster` needs `listen`"),
            "{found:?}"
        );
    }
}
