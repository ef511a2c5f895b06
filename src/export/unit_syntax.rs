//! How a value is written into a systemd unit file, one function per
//! syntax systemd reads (systemd.syntax(7), systemd.service(5)). Every value
//! that comes from an ecosystem file, a path or the environment goes through
//! exactly one of these, so none can end a line, start a directive, expand a
//! specifier or a variable, or be read back as anything but itself. A value
//! a setting cannot hold is refused (the caller names the key), never
//! written approximately.
//!
//! What systemd does to a line, which every function here guards against:
//! - lines end at `\n`, `\r` or NUL; a line whose last backslash is
//!   unpaired (`\\` pairs) is joined with the next one;
//! - the value after `=` loses its leading and trailing whitespace;
//! - `%x` is a specifier in nearly every setting (`%%` is a `%`).
//!
//! Then per setting:
//! - `ExecStart=`: words split at whitespace, `"…"` unquoted with C escapes;
//!   the program word's leading `-@:+!` are prefixes and it may not hold
//!   quotes, backslashes or control characters; in argv, `$VAR`/`${VAR}`
//!   expand at start (`$$` is a `$`), and a bare `;` separates commands.
//! - `Environment=`: the same quoting, no `$` expansion; the name must be
//!   `[A-Za-z_][A-Za-z0-9_]*`.
//! - paths (`WorkingDirectory=`, `StandardOutput=append:`, `ListenStream=`):
//!   taken literally, no quoting or escapes at all; must be absolute and
//!   without `..`.
//! - text (`Description=`, `User=`): literal too.

use std::fmt::{self, Write as _};
use std::path::{Component, Path};

use super::ExportError;

/// Why a value cannot be written into a setting, and what to do instead.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Refusal {
    pub reason: String,
    pub fix: &'static str,
}

impl Refusal {
    fn new(reason: impl Into<String>, fix: &'static str) -> Self {
        Self {
            reason: reason.into(),
            fix,
        }
    }

    /// The export error naming the ecosystem key (or variable) the value came from.
    pub(crate) fn at(
        self,
        key: &str,
        value: &dyn fmt::Debug,
        setting: &'static str,
    ) -> ExportError {
        ExportError::Unrepresentable {
            key: key.to_owned(),
            value: format!("{value:?}"),
            setting,
            reason: self.reason,
            fix: self.fix,
        }
    }
}

/// A control character, named for the error message.
fn describe(c: char) -> String {
    match c {
        '\n' => "a newline".into(),
        '\r' => "a carriage return".into(),
        '\0' => "a NUL byte".into(),
        '\t' => "a tab".into(),
        c => format!("the control character U+{:04X}", u32::from(c)),
    }
}

/// Characters that end a line when systemd reads a unit.
fn breaks_line(c: char) -> bool {
    matches!(c, '\n' | '\r' | '\0')
}

/// Whether a line ending with `text` would be joined with the next one:
/// systemd pairs backslashes from the start of the line.
fn ends_escaped(text: &str) -> bool {
    let mut escaped = false;
    for c in text.chars() {
        escaped = !escaped && c == '\\';
    }
    escaped
}

/// `%` → `%%`: specifiers are expanded in every setting written here.
fn specifiers(text: &str) -> String {
    text.replace('%', "%%")
}

/// Checks shared by the settings that take their value literally.
fn literal(text: &str) -> Result<(), Refusal> {
    if let Some(c) = text.chars().find(|c| breaks_line(*c)) {
        return Err(Refusal::new(
            format!(
                "it contains {}, which ends a line in a unit file",
                describe(c)
            ),
            "remove it",
        ));
    }
    if ends_escaped(text) {
        return Err(Refusal::new(
            "it ends with a backslash, which joins the next line of the unit to it",
            "remove the trailing backslash",
        ));
    }
    Ok(())
}

/// Free text (`Description=`, `User=`): literal, `%` doubled. Control
/// characters are refused; surrounding whitespace is trimmed by systemd,
/// which only a description carries.
pub(crate) fn text(value: &str) -> Result<String, Refusal> {
    literal(value)?;
    if let Some(c) = value.chars().find(|c| c.is_control()) {
        return Err(Refusal::new(
            format!(
                "it contains {}, which systemd does not keep here",
                describe(c)
            ),
            "remove it",
        ));
    }
    Ok(specifiers(value))
}

/// A path as text: unit files are UTF-8.
pub(crate) fn utf8(path: &Path) -> Result<&str, Refusal> {
    path.to_str().ok_or_else(|| {
        Refusal::new(
            "it is not valid UTF-8, which unit files must be",
            "rename it with UTF-8 characters only",
        )
    })
}

/// A path in a setting that takes it literally (`WorkingDirectory=`,
/// `StandardOutput=append:`, `ListenStream=`): systemd has no quoting or
/// escapes there, so what cannot be written as is is refused.
pub(crate) fn path(path: &Path) -> Result<String, Refusal> {
    let text = utf8(path)?;
    literal(text)?;
    if !path.is_absolute() {
        return Err(Refusal::new(
            "systemd wants an absolute path here",
            "write it as an absolute path",
        ));
    }
    if text.ends_with([' ', '\t']) {
        return Err(Refusal::new(
            "it ends with whitespace, which systemd strips from the value",
            "remove the trailing whitespace",
        ));
    }
    if path.components().any(|c| c == Component::ParentDir) {
        return Err(Refusal::new(
            "systemd refuses paths with a `..` component here",
            "write the path without `..`",
        ));
    }
    Ok(specifiers(text))
}

/// A socket's `FileDescriptorName=`: systemd accepts printable ASCII
/// without `:`, up to 255 characters (fdname_is_valid).
pub(crate) fn fd_name(name: &str) -> Result<String, Refusal> {
    if let Some(c) = name.chars().find(|c| !c.is_ascii() || c.is_ascii_control()) {
        let what = if c.is_ascii_control() {
            describe(c)
        } else {
            format!("{c:?}")
        };
        return Err(Refusal::new(
            format!(
                "its socket name contains {what}; systemd names sockets (FileDescriptorName=) \
                 with printable ASCII only"
            ),
            "use a socket path of printable ASCII characters",
        ));
    }
    if name.contains(':') || name.len() > 255 {
        return Err(Refusal::new(
            "its socket name is not a valid FileDescriptorName= (no `:`, at most 255 characters)",
            "use a shorter socket path",
        ));
    }
    Ok(specifiers(name))
}

/// One `Environment=` assignment, quoted as a whole with C escapes; systemd
/// expands `%` specifiers there but not `$`.
pub(crate) fn env_assignment(key: &str, value: &str) -> Result<String, Refusal> {
    let mut chars = key.chars();
    let name_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !name_ok {
        return Err(Refusal::new(
            "systemd only accepts variable names of letters, digits and `_`, not starting with a digit",
            "rename the variable",
        ));
    }
    if value.contains('\0') {
        return Err(Refusal::new(
            "it contains a NUL byte, which no environment variable can hold",
            "remove it",
        ));
    }
    let mut out = String::from("\"");
    for c in key.chars().chain(std::iter::once('=')).chain(value.chars()) {
        push_quoted(&mut out, c);
    }
    out.push('"');
    Ok(out)
}

/// One argument of an `ExecStart=` line (not the program): left bare when
/// plain, else quoted with C escapes, `%` and `$` doubled (systemd expands
/// `$VAR` in arguments when it starts the command).
pub(crate) fn exec_arg(word: &str) -> Result<String, Refusal> {
    if word.contains('\0') {
        return Err(Refusal::new(
            "it contains a NUL byte, which no argument can hold",
            "remove it",
        ));
    }
    if is_plain(word) {
        return Ok(word.to_owned());
    }
    let mut out = String::from("\"");
    for c in word.chars() {
        match c {
            '$' => out.push_str("$$"),
            c => push_quoted(&mut out, c),
        }
    }
    out.push('"');
    Ok(out)
}

/// The whole `ExecStart=` value: `program` (absolute, or a bare name systemd
/// looks up) then `args`. systemd runs `program` as written and passes it
/// as argv[0] too, where `$` would expand: a program with a `$` is written
/// in the `@PATH ARGV0` form, the path literal and argv[0] escaped.
pub(crate) fn exec_command(program: &str, args: &[&str]) -> Result<String, Refusal> {
    check_program(program)?;
    let mut words = Vec::with_capacity(args.len() + 2);
    if program.contains('$') {
        words.push(program_word(&format!("@{program}")));
        words.push(exec_arg(program)?);
    } else {
        words.push(program_word(program));
    }
    for arg in args {
        words.push(exec_arg(arg)?);
    }
    Ok(words.join(" "))
}

/// What systemd accepts as the program of `ExecStart=`: no quotes,
/// backslashes or control characters (string_is_safe), not a folder, and
/// no leading `-@:+!`, which it reads as prefixes (even when quoted).
fn check_program(program: &str) -> Result<(), Refusal> {
    if program.is_empty() {
        return Err(Refusal::new(
            "the program is empty",
            "name the program to run",
        ));
    }
    if let Some(c) = program
        .chars()
        .find(|c| c.is_ascii_control() || matches!(c, '"' | '\'' | '\\'))
    {
        let what = if c.is_ascii_control() {
            describe(c)
        } else {
            format!("{c:?}")
        };
        return Err(Refusal::new(
            format!(
                "the program's path contains {what}; systemd refuses quotes, backslashes and \
                 control characters in the executable path"
            ),
            "move or link the program to a path without them",
        ));
    }
    if program.ends_with('/') {
        return Err(Refusal::new(
            "the program's path ends with `/` (a folder)",
            "name the executable file",
        ));
    }
    if let Some(c) = program.chars().next().filter(|c| "-@:+!".contains(*c)) {
        return Err(Refusal::new(
            format!("systemd reads a leading {c:?} of the program as an ExecStart= prefix"),
            "give the program's absolute path",
        ));
    }
    Ok(())
}

/// The program word, checked by [`check_program`]: it holds no `"` or `\`,
/// so quoting it needs only the `%` escape, and `$` stays literal there.
fn program_word(program: &str) -> String {
    let word = specifiers(program);
    if is_plain(program) {
        word
    } else {
        format!("\"{word}\"")
    }
}

/// A word that needs no quoting in any position.
fn is_plain(word: &str) -> bool {
    !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+=:,@".contains(c))
}

/// A character inside a double-quoted systemd word (C escapes, `%` doubled).
/// NUL is refused by the callers: systemd rejects `\x00`.
fn push_quoted(out: &mut String, c: char) {
    match c {
        '\\' => out.push_str("\\\\"),
        '"' => out.push_str("\\\""),
        '%' => out.push_str("%%"),
        '\n' => out.push_str("\\n"),
        '\t' => out.push_str("\\t"),
        '\r' => out.push_str("\\r"),
        c if c.is_ascii_control() => {
            let _ = write!(out, "\\x{:02x}", u32::from(c));
        }
        // C1 controls: systemd's \u escape writes them back as UTF-8.
        c if c.is_control() => {
            let _ = write!(out, "\\u{:04x}", u32::from(c));
        }
        c => out.push(c),
    }
}

/// A comment's text: anything, shown escaped so that it stays one comment
/// line (no line break, no unpaired trailing backslash).
pub(crate) fn comment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.extend(c.escape_debug()),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;
    use crate::export::read_back;

    /// Strings rich in what unit files treat specially, and anything else.
    fn hostile() -> impl Strategy<Value = String> {
        let special = prop::sample::select(vec![
            '%', '$', '"', '\'', '\\', ' ', ';', '\t', '\n', '\r', '(', ')', '{', '}', '#', '=',
            '@', '-', ':', '+', '!', 'é', '日', '\u{85}', '\u{1}', '\u{7f}', 'i', 'H',
        ]);
        prop::collection::vec(prop_oneof![3 => special, 1 => any::<char>()], 0..24)
            .prop_map(String::from_iter)
    }

    /// Variables `$NAME` would expand from, so an escape that fails shows.
    fn env() -> BTreeMap<String, String> {
        BTreeMap::from([
            ("HOME".to_owned(), "/root".to_owned()),
            ("H".to_owned(), "h".to_owned()),
            ("i".to_owned(), "I".to_owned()),
        ])
    }

    /// `KEY=value` in a `[Service]` section, read back as systemd would.
    fn read_line(key: &str, value: &str) -> String {
        let unit = format!("[Service]\n{key}={value}\nAfter=x\n");
        let all = read_back::assignments(&unit).expect("unit reads");
        assert_eq!(all.len(), 2, "one line became {all:?}");
        assert_eq!((all[1].1.as_str(), all[1].2.as_str()), ("After", "x"));
        all[0].2.clone()
    }

    #[test]
    fn examples() {
        assert_eq!(
            env_assignment("A", r#"50% "off" \ $HOME"#).expect("fits"),
            r#""A=50%% \"off\" \\ $HOME""#
        );
        assert_eq!(env_assignment("B", "x\ny").expect("fits"), r#""B=x\ny""#);
        assert_eq!(exec_arg("plain-word").expect("fits"), "plain-word");
        assert_eq!(
            exec_arg("echo $HOME 100%").expect("fits"),
            r#""echo $$HOME 100%%""#
        );
        assert_eq!(exec_arg("").expect("fits"), r#""""#);
        assert_eq!(exec_arg(";").expect("fits"), r#"";""#);
        assert_eq!(
            exec_command("/opt/a$b/x", &["$x"]).expect("fits"),
            r#""@/opt/a$b/x" "/opt/a$$b/x" "$$x""#
        );
        assert_eq!(
            path(Path::new("/srv/100% x")).expect("fits"),
            "/srv/100%% x"
        );
        assert_eq!(comment("a\nb\\"), "a\\nb\\\\");
    }

    #[test]
    fn what_systemd_cannot_hold_is_refused() {
        for bad in [
            "/a\nExecStartPre=/bin/evil",
            "/a\rb",
            "/a\0b",
            "/a\\",
            "/a ",
            "/a/../b",
            "a",
        ] {
            assert!(path(Path::new(bad)).is_err(), "{bad:?}");
        }
        assert!(
            path(Path::new("/a\\\\")).is_ok(),
            "a paired backslash stays"
        );
        for bad in ["x\ny", "x\\", "a\u{1}"] {
            assert!(text(bad).is_err(), "{bad:?}");
        }
        for bad in ["1A", "A B", "A-B", "", "É"] {
            assert!(env_assignment(bad, "v").is_err(), "{bad:?}");
        }
        assert!(env_assignment("A", "a\0").is_err());
        assert!(exec_arg("a\0").is_err());
        for bad in ["/a\"b", "/a\\b", "/a\nb", "-x", "@x", "!x", "/a/", ""] {
            assert!(exec_command(bad, &[]).is_err(), "{bad:?}");
        }
        assert!(fd_name("unix-/run/é.sock").is_err());
        assert!(fd_name("unix-/run/a\nb").is_err());
        assert_eq!(
            fd_name("unix-/run/a 100%").expect("fits"),
            "unix-/run/a 100%%"
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

        /// Every argument comes back from ExecStart= as itself, `$` unexpanded.
        #[test]
        fn exec_args_round_trip(args in prop::collection::vec(hostile(), 0..4)) {
            let args: Vec<String> = args.into_iter().map(|a| a.replace('\0', "")).collect();
            let words: Vec<&str> = args.iter().map(String::as_str).collect();
            let line = exec_command("/usr/bin/app", &words).expect("fits");
            let (program, argv) = read_back::exec(&read_line("ExecStart", &line), "0", &env())
                .expect("systemd reads it");
            prop_assert_eq!(program, "/usr/bin/app");
            prop_assert_eq!(&argv[0], "/usr/bin/app");
            prop_assert_eq!(&argv[1..], &args[..]);
        }

        /// A program path is run as written and passed as argv[0] as written,
        /// or refused.
        #[test]
        fn exec_programs_round_trip(name in hostile()) {
            let program = format!("/opt/{name}");
            match exec_command(&program, &["x"]) {
                Ok(line) => {
                    let (path, argv) = read_back::exec(&read_line("ExecStart", &line), "0", &env())
                        .expect("systemd reads it");
                    prop_assert_eq!(&path, &program);
                    prop_assert_eq!(argv, vec![program.clone(), "x".to_owned()]);
                }
                Err(_) => prop_assert!(program.chars().any(|c| c.is_ascii_control()
                    || "\"'\\".contains(c)) || program.ends_with('/')),
            }
        }

        /// Every value comes back from Environment= as itself.
        #[test]
        fn env_assignments_round_trip(value in hostile(), name in "[A-Za-z_][A-Za-z0-9_]{0,8}") {
            let value = value.replace('\0', "");
            let line = env_assignment(&name, &value).expect("fits");
            let read = read_back::environment(&read_line("Environment", &line), "0")
                .expect("systemd reads it");
            prop_assert_eq!(read, vec![(name, value)]);
        }

        /// A path comes back as itself, or is refused for a reason systemd has.
        #[test]
        fn paths_round_trip_or_are_refused(name in hostile()) {
            let text = format!("/srv/{name}");
            match path(Path::new(&text)) {
                Ok(value) => {
                    let read = read_back::path(&read_line("WorkingDirectory", &value))
                        .expect("systemd reads it");
                    prop_assert_eq!(read, text);
                }
                Err(_) => prop_assert!(
                    text.contains(['\n', '\r', '\0'])
                        || text.ends_with([' ', '\t', '\\'])
                        || text.split('/').any(|c| c == "..")
                ),
            }
        }

        /// Text comes back as itself, or holds a control character.
        #[test]
        fn text_round_trips_or_is_refused(value in hostile()) {
            let value = format!("x{value}x");
            match text(&value) {
                Ok(written) => {
                    let read = read_back::specifiers(&read_line("Description", &written), "0")
                        .expect("no specifier");
                    prop_assert_eq!(read, value);
                }
                Err(_) => prop_assert!(value.chars().any(char::is_control) || value.ends_with('\\')),
            }
        }

        /// A comment never ends its line early or joins the next one.
        #[test]
        fn comments_stay_comments(value in hostile()) {
            let unit = format!("[Service]\n# {}\nAfter=x\n", comment(&value));
            let all = read_back::assignments(&unit).expect("unit reads");
            prop_assert_eq!(all, vec![("Service".into(), "After".into(), "x".into())]);
        }
    }
}
