//! How an app is replaced: `rollout` (surge and unavailability during a
//! reload) and `fd_store` (descriptors kept across restarts).

use super::Walker;
use super::app::Key;
use super::primitives::{join, set};
use crate::config::keys::ROLLOUT_KEYS;
use crate::config::node::{Node, Value};
use crate::spec::{Rollout, Settings};

impl Walker<'_> {
    /// Reads `rollout` or `fd_store` into `s`; `false` for any other key.
    pub(super) fn rollout_key(&mut self, s: &mut Settings, key: &Key<'_>) -> bool {
        let (value, path) = (key.value, key.path);
        match key.name {
            "rollout" => set(&mut s.rollout, self.rollout(value, path)),
            "fd_store" => set(&mut s.fd_store, self.count(value, path)),
            _ => return false,
        }
        true
    }

    /// `rollout: { max_surge, max_unavailable }`, not both 0.
    fn rollout(&mut self, node: &Node, path: &str) -> Option<Rollout> {
        let Value::Map(entries) = &node.value else {
            self.error(
                node.pos,
                path,
                format!("expected a mapping, found {}", node.value),
                Some("e.g. `rollout: { max_surge: 2, max_unavailable: 0 }`".into()),
            );
            return None;
        };
        let mut rollout = Rollout::default();
        for (key, value, _) in self.keyed(entries, path, ROLLOUT_KEYS, false) {
            let path = join(path, &key);
            match key.as_str() {
                "max_surge" => set(&mut rollout.max_surge, self.count(value, &path)),
                _ => set(&mut rollout.max_unavailable, self.count(value, &path)),
            }
        }
        if rollout.max_surge == 0 && rollout.max_unavailable == 0 {
            self.error(
                node.pos,
                path,
                "`max_surge` and `max_unavailable` are both 0: nothing could be replaced".into(),
                Some("allow one new instance beside the old ones (`max_surge: 1`), or one old instance stopped first (`max_unavailable: 1`)".into()),
            );
            return None;
        }
        Some(rollout)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{errors, spec};

    #[test]
    fn rollout_reads_surge_and_refuses_a_standstill() {
        let project = spec("apps:\n  a: {cmd: x, rollout: {max_surge: 2}, fd_store: 4}\n");
        let settings = &project.apps["a"].settings;
        assert_eq!(settings.rollout.max_surge, 2);
        assert_eq!(settings.fd_store, 4);
        assert_eq!(
            errors("apps:\n  a: {cmd: x, rollout: {max_surge: 0, max_unavailable: 0}}\n"),
            [
                "2:24 apps.a.rollout: `max_surge` and `max_unavailable` are both 0: nothing could be replaced"
            ]
        );
    }
}
