//! What spans apps: every `depends_on` names another app of the file, the
//! dependencies have no cycle, and no two apps bind one address.

use std::collections::BTreeMap;

use super::primitives::join;
use super::{DependencyGraph, Parsed, Walker};
use crate::config::keys::suggest;
use crate::config::node::Pos;

impl Walker<'_> {
    /// The checks that need every app read (apps with errors included in
    /// the dependency graph).
    pub(super) fn cross_checks(&mut self, parsed: &[Parsed]) {
        let graph = std::mem::take(&mut self.graph);
        let names: Vec<&str> = graph.iter().map(|(n, _, _)| n.as_str()).collect();
        for (name, _, deps) in &graph {
            for (dep, pos) in deps {
                let path = join(&join("apps", name), "depends_on");
                if dep == name {
                    self.error(*pos, &path, format!("app `{dep}` depends on itself"), None);
                } else if !names.contains(&dep.as_str()) {
                    let hint = suggest(dep, &names).map(|s| format!("did you mean `{s}`?"));
                    self.error(
                        *pos,
                        &path,
                        format!("no app named `{dep}` in this file"),
                        hint,
                    );
                }
            }
        }
        if let Some(cycle) = find_cycle(&graph) {
            let first = &cycle[0];
            let pos = graph
                .iter()
                .find(|(n, _, _)| n == first)
                .map_or_else(Pos::default, |(_, p, _)| *p);
            self.error(
                pos,
                &join(&join("apps", first), "depends_on"),
                format!("dependency cycle: {}", cycle.join(" -> ")),
                Some("remove one of these depends_on entries".into()),
            );
        }
        self.listen_conflicts(parsed);
    }
}

/// Finds one dependency cycle, returned as `[a, b, a]`.
fn find_cycle(graph: &DependencyGraph) -> Option<Vec<String>> {
    let deps: BTreeMap<&str, Vec<&str>> = graph
        .iter()
        .map(|(name, _, deps)| {
            (
                name.as_str(),
                deps.iter().map(|(d, _)| d.as_str()).collect(),
            )
        })
        .collect();
    // 0 = unvisited, 1 = on the current path, 2 = done.
    let mut state: BTreeMap<&str, u8> = BTreeMap::new();
    let mut stack: Vec<&str> = Vec::new();
    fn visit<'a>(
        node: &'a str,
        deps: &BTreeMap<&'a str, Vec<&'a str>>,
        state: &mut BTreeMap<&'a str, u8>,
        stack: &mut Vec<&'a str>,
    ) -> Option<Vec<String>> {
        match state.get(node) {
            Some(2) => return None,
            Some(1) => {
                let start = stack.iter().position(|n| *n == node)?;
                let mut cycle: Vec<String> =
                    stack[start..].iter().map(|s| (*s).to_owned()).collect();
                cycle.push(node.to_owned());
                return Some(cycle);
            }
            _ => {}
        }
        state.insert(node, 1);
        stack.push(node);
        for dep in deps.get(node).into_iter().flatten() {
            if *dep != node
                && deps.contains_key(dep)
                && let Some(cycle) = visit(dep, deps, state, stack)
            {
                return Some(cycle);
            }
        }
        stack.pop();
        state.insert(node, 2);
        None
    }
    for name in deps.keys() {
        if let Some(cycle) = visit(name, &deps, &mut state, &mut stack) {
            return Some(cycle);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::super::testing::errors;

    #[test]
    fn dependencies_name_other_apps_of_the_file() {
        assert_eq!(
            errors("apps:\n  a: {cmd: x, depends_on: a}\n"),
            ["2:27 apps.a.depends_on: app `a` depends on itself"]
        );
        assert_eq!(
            errors("apps:\n  a: {cmd: x, depends_on: [c]}\n"),
            ["2:28 apps.a.depends_on: no app named `c` in this file"]
        );
    }

    #[test]
    fn a_cycle_is_named_from_its_first_app() {
        assert_eq!(
            errors("apps:\n  a: {cmd: x, depends_on: [b]}\n  b: {cmd: x, depends_on: a}\n"),
            ["2:3 apps.a.depends_on: dependency cycle: a -> b -> a"]
        );
    }
}
