//! All user-facing text formatting for plans, tables and summaries.

use crate::plan::Action;
use crate::spec::ProjectSpec;

/// `web` for one instance, `web:2` for one of many, `web:0..3` for a range.
pub fn instances(app: &str, from: u32, to: u32) -> String {
    match to.saturating_sub(from) {
        0 => app.to_owned(),
        1 if from == 0 => app.to_owned(),
        1 => format!("{app}:{from}"),
        _ => format!("{app}:{from}..{}", to - 1),
    }
}

/// One line per action, as `eco diff` and `eco up` print them.
pub fn plan_lines(actions: &[Action]) -> Vec<String> {
    actions
        .iter()
        .map(|action| match action {
            Action::Start { app, instances: n } => format!("+ start {}", instances(app, 0, *n)),
            Action::Stop { app, .. } => format!("- stop {app}"),
            Action::Replace {
                app,
                from,
                to,
                changes,
            } => {
                let scale = if from == to {
                    String::new()
                } else {
                    format!(", instances {from} -> {to}")
                };
                format!("~ replace {app} ({} changed{scale})", changes.join(", "))
            }
            Action::Scale { app, from, to } if to > from => {
                format!(
                    "^ scale {app} {from} -> {to} (+ {})",
                    instances(app, *from, *to)
                )
            }
            Action::Scale { app, from, to } => {
                format!(
                    "v scale {app} {from} -> {to} (- {})",
                    instances(app, *to, *from)
                )
            }
            Action::Update { app, changes } => {
                format!("* update {app} in place ({} changed)", changes.join(", "))
            }
            Action::KeepStopped { app } => format!("= {app} stays stopped (eco start {app})"),
            Action::Unchanged { app } => format!("= {app} unchanged"),
        })
        .collect()
}

/// `project shop: 3 apps, 5 instances`.
pub fn summary(spec: &ProjectSpec) -> String {
    let apps = spec.apps.len();
    let instances: u32 = spec.apps.values().map(|a| a.instances).sum();
    format!(
        "project {}: {apps} app{}, {instances} instance{}",
        spec.name,
        if apps == 1 { "" } else { "s" },
        if instances == 1 { "" } else { "s" }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_ranges() {
        assert_eq!(instances("web", 0, 1), "web");
        assert_eq!(instances("web", 0, 4), "web:0..3");
        assert_eq!(instances("web", 2, 3), "web:2");
        assert_eq!(instances("web", 2, 4), "web:2..3");
    }

    #[test]
    fn plan_text() {
        let lines = plan_lines(&[
            Action::Start {
                app: "web".into(),
                instances: 4,
            },
            Action::Replace {
                app: "api".into(),
                from: 1,
                to: 1,
                changes: vec!["env.PORT".into()],
            },
            Action::Stop {
                app: "old".into(),
                instances: 1,
            },
            Action::Unchanged { app: "db".into() },
        ]);
        assert_eq!(
            lines,
            vec![
                "+ start web:0..3",
                "~ replace api (env.PORT changed)",
                "- stop old",
                "= db unchanged"
            ]
        );
    }
}
