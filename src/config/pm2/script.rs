//! What runs: `script` (or `exec`, `cmd`, `command`), `args`,
//! `interpreter` and `interpreter_args`, turned into eco's argv the way
//! PM2 would run them.

use super::app::{Entry, Gathered};
use super::{Node, ScriptKind, Translator, Value, str_node};

impl Translator<'_> {
    /// Gathers a script, argument or interpreter key; `false` for any other key.
    pub(super) fn script_key<'a>(&mut self, g: &mut Gathered<'a>, e: &Entry<'_, 'a>) -> bool {
        let v = e.value;
        match e.name {
            "script" | "exec" | "cmd" | "command" => g.script = Some(v),
            "args" => g.args = Some(v),
            "interpreter" | "exec_interpreter" => g.interpreter = Some(v),
            "interpreter_args" | "node_args" => g.interpreter_args.push(v),
            _ => return false,
        }
        true
    }

    /// The app's argv and interpreter (see [`Self::command`]), and its
    /// script node; `None` (with an error) without a script string.
    pub(super) fn argv<'a>(
        &mut self,
        g: &Gathered<'a>,
        item: &Node,
        app: &str,
        base: &str,
    ) -> Option<(Vec<Node>, Option<String>, &'a Node)> {
        let Some(script) = g.script else {
            self.error(
                item.pos,
                &format!("{base}.script"),
                format!("app `{app}` has no `script`"),
                Some("add `script: 'server.js'` (the file or program to run)".into()),
            );
            return None;
        };
        let Some(script_text) = script.scalar_string() else {
            self.error(
                script.pos,
                &format!("{base}.script"),
                "expected a string".into(),
                None,
            );
            return None;
        };
        let (argv, interpreter) = self.command(g, script, &script_text, app, base);
        Some((argv, interpreter, script))
    }

    /// The argv PM2 runs for `script` (its interpreter, the interpreter's
    /// arguments, the script, `args`), and the interpreter (`None`: the
    /// script runs directly).
    fn command(
        &mut self,
        g: &Gathered<'_>,
        script: &Node,
        script_text: &str,
        app: &str,
        base: &str,
    ) -> (Vec<Node>, Option<String>) {
        let pos = script.pos;
        let explicit = g.interpreter.and_then(Node::scalar_string);
        if script_text.contains(' ') {
            // PM2 (Common.verifyConfs): a script with a space is a command
            // line, run as `bash -c SCRIPT` (`sh` without bash); it sets
            // `args` to `-c SCRIPT`, so the file's args are dropped.
            let shell = if self.machine.has("bash") {
                "bash"
            } else {
                "sh"
            };
            if g.args.is_some() {
                self.note(
                    Some(app),
                    &format!("{base}.args"),
                    pos,
                    "dropped: PM2 runs a script with spaces as `bash -c SCRIPT` and ignores args; put them in the script",
                );
            }
            if explicit.as_deref().is_some_and(|i| i != "none") {
                self.note(
                    Some(app),
                    &format!("{base}.interpreter"),
                    pos,
                    "ignored: a script with spaces is a command line run by bash",
                );
            }
            let argv = [shell, "-c", script_text]
                .iter()
                .map(|w| str_node(pos, w))
                .collect();
            return (argv, None);
        }
        let cwd = g.cwd.and_then(Node::scalar_string).unwrap_or_default();
        let path = self.folder.join(cwd).join(script_text);
        let interpreter = match explicit {
            Some(i) if i == "none" => None,
            Some(i) => Some(i),
            None => {
                let kind = || self.machine.script(&path);
                let (interpreter, how) =
                    pm2_interpreter(script_text, kind, |p| self.machine.has(p));
                if let Some(text) = how {
                    self.note(Some(app), &format!("{base}.script"), pos, text);
                }
                interpreter
            }
        };
        let mut argv = Vec::new();
        if let Some(i) = &interpreter {
            argv.push(str_node(g.interpreter.map_or(pos, |n| n.pos), i));
        }
        for args in &g.interpreter_args {
            argv.extend(words(args));
        }
        // Run directly, `app.bin` would be looked up in PATH; PM2 resolves
        // a script against cwd first (PATH only when nothing is there).
        let local = !script_text.contains('/')
            && (script_text.contains('.') || self.machine.script(&path) != ScriptKind::Missing);
        let script_text = if interpreter.is_none() && local {
            format!("./{script_text}")
        } else {
            script_text.to_owned()
        };
        argv.push(str_node(pos, &script_text));
        if let Some(args) = g.args {
            argv.extend(words(args));
        }
        (argv, interpreter)
    }
}

/// How PM2 runs a script without an explicit interpreter
/// (Common.sink.resolveInterpreter): by extension, else node unless it is
/// a binary. `kind` looks at the file only when the extension does not
/// decide; `has` asks PATH. Also a note when eco departs from PM2.
pub fn pm2_interpreter(
    script: &str,
    kind: impl FnOnce() -> ScriptKind,
    has: impl Fn(&str) -> bool,
) -> (Option<String>, Option<&'static str>) {
    let name = script.rsplit('/').next().unwrap_or(script);
    let ext = match name.rfind('.') {
        Some(i) if i > 0 => &name[i..],
        _ => "",
    };
    let by_ext = match ext {
        ".sh" => Some(if has("bash") { "bash" } else { "sh" }),
        // PM2 picks `python`, and `python3` when there is no `python`.
        ".py" => Some(if has("python") || !has("python3") {
            "python"
        } else {
            "python3"
        }),
        ".rb" => Some("ruby"),
        ".php" => Some("php"),
        ".pl" => Some("perl"),
        ".js" => Some("node"),
        ".coffee" => Some("coffee"),
        ".ls" => Some("lsc"),
        // bun, else node's own type stripping (Node >= 22.18), as PM2.
        ".ts" | ".tsx" => Some(if has("bun") { "bun" } else { "node" }),
        _ => None,
    };
    if let Some(i) = by_ext {
        return (Some(i.to_owned()), None);
    }
    match kind() {
        // A program in PATH (`npm`), or a missing file: run directly (a
        // Node program's `#!` line runs node, as PM2 would).
        ScriptKind::Missing | ScriptKind::Binary => (None, None),
        // Node resolves a folder to its index.js or package.json main.
        ScriptKind::Folder => (Some("node".into()), None),
        ScriptKind::Text {
            shebang: Some(line),
        } if !line.contains("node") => (
            None,
            Some(
                "approximated: run by its `#!` line (PM2 would run a script with no extension with node)",
            ),
        ),
        ScriptKind::Text { .. } => (Some("node".into()), None),
    }
}

/// PM2's interpreter for a script, by extension (`None`: run it directly).
pub fn default_interpreter(script: &str) -> Option<&'static str> {
    let ext = script.rsplit_once('.').map(|(_, e)| e)?;
    if ext.contains('/') {
        return None;
    }
    match ext {
        "js" | "cjs" | "mjs" => Some("node"),
        "py" => Some("python3"),
        "sh" => Some(if bash_exists() { "bash" } else { "sh" }),
        "rb" => Some("ruby"),
        "php" => Some("php"),
        "pl" => Some("perl"),
        "coffee" => Some("coffee"),
        _ => None,
    }
}

/// Whether `bash` is on this machine (PM2 runs .sh with bash; eco falls
/// back to sh where there is none, as in small containers).
fn bash_exists() -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join("bash").is_file()))
}

/// `args`/`interpreter_args` as words: a string is split like a shell.
fn words(args: &Node) -> Vec<Node> {
    match &args.value {
        Value::Seq(items) => items
            .iter()
            .map(|n| str_node(n.pos, &n.scalar_string().unwrap_or_default()))
            .collect(),
        _ => {
            let text = args.scalar_string().unwrap_or_default();
            shlex::split(&text)
                .unwrap_or_else(|| text.split_whitespace().map(str::to_owned).collect())
                .into_iter()
                .map(|w| str_node(args.pos, &w))
                .collect()
        }
    }
}
