//! Test-only readers that read exported text back the way the target engine
//! does, written from the engines' sources rather than from eco's escaping:
//! systemd's unit file reader (conf-parser.c, extract-word.c, escape.c
//! cunescape_one, specifier.c, env-util.c replace_env/replace_env_argv,
//! load-fragment.c config_parse_exec/config_parse_environ) and the
//! kubelet's `$(VAR)` expansion (third_party/forked/golang/expansion).
//! A round trip through these proves a value comes back as itself.

use std::collections::BTreeMap;

/// One `KEY=value` line of a unit: section, key, raw value.
pub(crate) type Assignment = (String, String, String);

/// A unit file's assignments as systemd's reader sees them: lines end at
/// `\n`, `\r` or NUL; comment lines are skipped; a line with an unpaired
/// trailing backslash is joined to the next (the backslash becomes a
/// space); whitespace around the key and the value is stripped.
pub(crate) fn assignments(text: &str) -> Result<Vec<Assignment>, String> {
    let mut out = Vec::new();
    let mut section = String::new();
    let mut continuation: Option<String> = None;
    for raw in text.split(['\n', '\r', '\0']) {
        let trimmed = raw.trim_start_matches(WHITESPACE);
        if trimmed.starts_with(['#', ';']) {
            // Older systemd joined comments too: one must never continue.
            if ends_escaped(raw) {
                return Err(format!("comment line continues: {raw:?}"));
            }
            continue;
        }
        let mut line = match continuation.take() {
            Some(mut c) => {
                c.push_str(raw);
                c
            }
            None => raw.to_owned(),
        };
        if ends_escaped(&line) {
            line.pop();
            line.push(' ');
            continuation = Some(line);
            continue;
        }
        let line = line.trim_matches(WHITESPACE);
        if line.is_empty() {
            continue;
        }
        if let Some(name) = line.strip_prefix('[') {
            section = name
                .strip_suffix(']')
                .ok_or_else(|| format!("bad section header {line:?}"))?
                .to_owned();
            continue;
        }
        let (key, value) = line
            .split_once('=')
            .ok_or_else(|| format!("line without '=': {line:?}"))?;
        out.push((
            section.clone(),
            key.trim_matches(WHITESPACE).to_owned(),
            value.trim_matches(WHITESPACE).to_owned(),
        ));
    }
    if let Some(c) = continuation {
        out.push((section, String::new(), c));
    }
    Ok(out)
}

const WHITESPACE: &[char] = &[' ', '\t', '\n', '\r'];

fn ends_escaped(text: &str) -> bool {
    let mut escaped = false;
    for c in text.chars() {
        escaped = !escaped && c == '\\';
    }
    escaped
}

/// Every value of `key` in `section`.
pub(crate) fn values<'a>(all: &'a [Assignment], section: &str, key: &str) -> Vec<&'a str> {
    all.iter()
        .filter(|(s, k, _)| s == section && k == key)
        .map(|(_, _, v)| v.as_str())
        .collect()
}

/// Specifier expansion (`%%` → `%`, `%i` → the instance); any other
/// specifier would change the value, so it is an error here.
pub(crate) fn specifiers(text: &str, instance: &str) -> Result<String, String> {
    let mut out = String::new();
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('%') => out.push('%'),
            Some('i') => out.push_str(instance),
            other => return Err(format!("specifier %{other:?} in {text:?}")),
        }
    }
    Ok(out)
}

/// extract_first_word(EXTRACT_UNQUOTE|EXTRACT_CUNESCAPE) until the input
/// ends: words split at unquoted whitespace, quotes removed, C escapes
/// decoded inside and outside quotes.
pub(crate) fn words(text: &str) -> Result<Vec<String>, String> {
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    let mut out = Vec::new();
    while let Some(word) = next_word(&chars, &mut i)? {
        out.push(word);
    }
    Ok(out)
}

fn skip_whitespace(chars: &[char], i: &mut usize) {
    while *i < chars.len() && WHITESPACE.contains(&chars[*i]) {
        *i += 1;
    }
}

/// One extract_first_word step from `i`; None at the end.
fn next_word(chars: &[char], i: &mut usize) -> Result<Option<String>, String> {
    skip_whitespace(chars, i);
    if *i >= chars.len() {
        return Ok(None);
    }
    let mut word = String::new();
    let mut quote: Option<char> = None;
    while *i < chars.len() {
        let c = chars[*i];
        if c == '\\' {
            let (decoded, used) =
                cunescape_one(&chars[*i + 1..]).ok_or_else(|| format!("bad escape at {i}"))?;
            word.push(decoded);
            *i += 1 + used;
            continue;
        }
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => word.push(c),
            None if c == '"' || c == '\'' => quote = Some(c),
            None if WHITESPACE.contains(&c) => break,
            None => word.push(c),
        }
        *i += 1;
    }
    if quote.is_some() {
        return Err("unbalanced quote".into());
    }
    Ok(Some(word))
}

/// escape.c cunescape_one: one C escape after a backslash; the decoded
/// character and how many characters it used. NUL is refused.
fn cunescape_one(rest: &[char]) -> Option<(char, usize)> {
    let hex = |s: &[char]| -> Option<u32> {
        let text: String = s.iter().collect();
        (text.len() == s.len() && s.iter().all(char::is_ascii_hexdigit))
            .then(|| u32::from_str_radix(&text, 16).ok())
            .flatten()
    };
    let first = *rest.first()?;
    let simple = match first {
        'a' => Some('\u{7}'),
        'b' => Some('\u{8}'),
        'f' => Some('\u{c}'),
        'n' => Some('\n'),
        'r' => Some('\r'),
        't' => Some('\t'),
        'v' => Some('\u{b}'),
        '\\' => Some('\\'),
        '"' => Some('"'),
        '\'' => Some('\''),
        's' => Some(' '),
        _ => None,
    };
    if let Some(c) = simple {
        return Some((c, 1));
    }
    let (digits, len) = match first {
        'x' => (2, 3),
        'u' => (4, 5),
        'U' => (8, 9),
        _ => return None,
    };
    let code = hex(rest.get(1..=digits)?)?;
    if code == 0 {
        return None;
    }
    // \xNN is a byte: a lone byte >= 0x80 would not be UTF-8.
    if first == 'x' && code >= 0x80 {
        return None;
    }
    Some((char::from_u32(code)?, len))
}

/// An `ExecStart=` line as systemd runs it: `(path, argv)`. Command
/// separators and prefixes other than `@` are errors (eco writes neither);
/// `env` is the environment `$VAR` expands from.
pub(crate) fn exec(
    value: &str,
    instance: &str,
    env: &BTreeMap<String, String>,
) -> Result<(String, Vec<String>), String> {
    let chars: Vec<char> = value.chars().collect();
    let mut i = 0;
    let first = next_word(&chars, &mut i)?.ok_or("empty ExecStart=")?;
    let mut rest = Vec::new();
    loop {
        // config_parse_exec: an unquoted `;` or `\;` word is special.
        skip_whitespace(&chars, &mut i);
        let ends_at = |n: usize| chars.get(i + n).is_none_or(|c| WHITESPACE.contains(c));
        if (chars.get(i) == Some(&';') && ends_at(1))
            || (chars.get(i) == Some(&'\\') && chars.get(i + 1) == Some(&';') && ends_at(2))
        {
            return Err(format!("command separator in {value:?}"));
        }
        match next_word(&chars, &mut i)? {
            Some(word) => rest.push(word),
            None => break,
        }
    }
    let mut program = first.as_str();
    let mut separate_argv0 = false;
    while let Some(c) = program.chars().next().filter(|c| "-@:+!".contains(*c)) {
        if c != '@' {
            return Err(format!("prefix {c:?} in {value:?}"));
        }
        separate_argv0 = true;
        program = &program[1..];
    }
    let path = specifiers(program, instance)?;
    if path
        .chars()
        .any(|c| c.is_ascii_control() || "\"'\\".contains(c))
    {
        return Err(format!("unsafe executable {path:?}"));
    }
    let mut argv = Vec::new();
    if !separate_argv0 {
        argv.push(path.clone());
    }
    for word in rest {
        argv.push(specifiers(&word, instance)?);
    }
    // replace_env_argv, at start.
    let mut expanded = Vec::new();
    for word in argv {
        let mut chars = word.chars();
        if chars.next() == Some('$') && !matches!(chars.next(), Some('{' | '$')) {
            return Err(format!("whole-word variable {word:?}"));
        }
        expanded.push(replace_env(&word, env));
    }
    Ok((path, expanded))
}

/// env-util.c replace_env with braceless names allowed: `$$` is `$`,
/// `${NAME}` and `$NAME` the variable's value (empty when unset).
fn replace_env(word: &str, env: &BTreeMap<String, String>) -> String {
    let name_char = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let chars: Vec<char> = word.chars().collect();
    let mut out = String::new();
    let mut i = 0;
    while i < chars.len() {
        if chars[i] != '$' || i + 1 >= chars.len() {
            out.push(chars[i]);
            i += 1;
            continue;
        }
        match chars[i + 1] {
            '$' => {
                out.push('$');
                i += 2;
            }
            '{' => match chars[i + 2..].iter().position(|c| *c == '}') {
                Some(end) => {
                    let name: String = chars[i + 2..i + 2 + end].iter().collect();
                    out.push_str(env.get(&name).map_or("", String::as_str));
                    i += 3 + end;
                }
                None => {
                    out.extend(&chars[i..]);
                    i = chars.len();
                }
            },
            c if name_char(c) => {
                let end = chars[i + 1..]
                    .iter()
                    .position(|c| !name_char(*c))
                    .map_or(chars.len(), |p| i + 1 + p);
                let name: String = chars[i + 1..end].iter().collect();
                out.push_str(env.get(&name).map_or("", String::as_str));
                i = end;
            }
            _ => {
                out.push('$');
                i += 1;
            }
        }
    }
    out
}

/// An `Environment=` line as systemd reads it: `(name, value)` pairs.
pub(crate) fn environment(value: &str, instance: &str) -> Result<Vec<(String, String)>, String> {
    words(value)?
        .into_iter()
        .map(|word| {
            let word = specifiers(&word, instance)?;
            let (name, value) = word
                .split_once('=')
                .ok_or_else(|| format!("assignment without '=': {word:?}"))?;
            let mut chars = name.chars();
            let valid = chars
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid {
                return Err(format!("invalid variable name {name:?}"));
            }
            Ok((name.to_owned(), value.to_owned()))
        })
        .collect()
}

/// A path setting (`WorkingDirectory=`, `StandardOutput=append:…`,
/// `ListenStream=`): literal but for specifiers; systemd then refuses a
/// relative or `..` path.
pub(crate) fn path(value: &str) -> Result<String, String> {
    let path = specifiers(value, "0")?;
    if !path.starts_with('/') || path.split('/').any(|c| c == "..") {
        return Err(format!("systemd refuses the path {path:?}"));
    }
    Ok(path)
}

/// The kubelet's expansion of `$(NAME)` (expansion.Expand with
/// MappingFuncFor): `$$` is `$`, `$(NAME)` a defined variable's value (an
/// undefined one stays as written), any other `$` stays.
pub(crate) fn kubelet_expand(input: &str, vars: &BTreeMap<String, String>) -> String {
    let bytes = input.as_bytes();
    let mut out = String::new();
    let mut checkpoint = 0;
    let mut cursor = 0;
    while cursor < bytes.len() {
        if bytes[cursor] == b'$' && cursor + 1 < bytes.len() {
            out.push_str(&input[checkpoint..cursor]);
            let advance = match read_variable(&input[cursor + 1..]) {
                Read::Var(name, advance) => {
                    match vars.get(name) {
                        Some(value) => out.push_str(value),
                        None => {
                            out.push_str("$(");
                            out.push_str(name);
                            out.push(')');
                        }
                    }
                    advance
                }
                Read::Text(text, advance) => {
                    out.push_str(&text);
                    advance
                }
            };
            cursor += advance;
            checkpoint = cursor + 1;
        }
        cursor += 1;
    }
    out.push_str(&input[checkpoint..]);
    out
}

/// What tryReadVariableName found after a `$`, and the bytes it used.
enum Read<'a> {
    Var(&'a str, usize),
    Text(String, usize),
}

fn read_variable(input: &str) -> Read<'_> {
    let Some(first) = input.chars().next() else {
        return Read::Text(String::new(), 0);
    };
    match first {
        '$' => Read::Text("$".into(), 1),
        '(' => match input[1..].find(')') {
            Some(end) => Read::Var(&input[1..=end], end + 2),
            None => Read::Text("$(".into(), 1),
        },
        c => Read::Text(format!("${c}"), c.len_utf8()),
    }
}

/// An ecosystem file full of values that systemd or the kubelet would
/// rewrite if written as they are, but that both can express.
pub(crate) const HOSTILE_YAML: &str = r#"name: hostile
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

/// The web app's argv as the file writes it.
pub(crate) const HOSTILE_ARGV: &[&str] = &[
    "/bin/sh",
    "-c",
    r#"echo "$HOME" '$(HOME)' $$ %i 100% \ ; x"#,
    "a b",
    "$(HOME)",
    "$$",
    "$$(HOME)",
    "${HOME}",
    "$HOME",
    ";",
    "\\;",
    "é ü 日本",
    "'single'",
    "tab\there",
    "",
    "%%",
    "#x",
];

/// The web app's env as the file writes it.
pub(crate) const HOSTILE_ENV: &[(&str, &str)] = &[
    ("HOME", "/home/app"),
    ("A", "$(HOME)"),
    ("B", "$$(HOME)"),
    ("C", "100% %i %%"),
    ("D", r#"quote " back \ end\"#),
    ("E", "a;b c #d"),
    ("F", "$HOME ${HOME} $$"),
    ("G", "日本 é"),
    ("H", "line1\nline2"),
];

/// The hostile file, loaded from a folder of its own (kept alive by the
/// returned guard): `(folder, spec)`.
pub(crate) fn hostile_project() -> (tempfile::TempDir, crate::spec::ProjectSpec) {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(dir.path().join("dir é 100% $x;")).expect("mkdir cwd");
    let file = dir.path().join("ecosystem.yaml");
    std::fs::write(&file, HOSTILE_YAML).expect("write file");
    let spec = crate::config::load(&file, None).expect("the hostile file is valid");
    (dir, spec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubelet_expansion_matches_its_spec() {
        let vars = BTreeMap::from([("VAR".to_owned(), "value".to_owned())]);
        for (input, want) in [
            ("$(VAR)", "value"),
            ("$$(VAR)", "$(VAR)"),
            ("$$$(VAR)", "$value"),
            ("$(UNSET)", "$(UNSET)"),
            ("a$", "a$"),
            ("$$", "$"),
            ("$(VAR", "$(VAR"),
            ("$x", "$x"),
            ("$é", "$é"),
        ] {
            assert_eq!(kubelet_expand(input, &vars), want, "{input}");
        }
    }

    #[test]
    fn systemd_reader_follows_its_rules() {
        let env = BTreeMap::from([("HOME".to_owned(), "/root".to_owned())]);
        let (path, argv) = exec(
            r#"/bin/echo "a b" $$HOME ${HOME} x$HOME "\x41\u00e9" 100%%"#,
            "0",
            &env,
        )
        .expect("exec");
        assert_eq!(path, "/bin/echo");
        assert_eq!(
            argv,
            ["/bin/echo", "a b", "$HOME", "/root", "x/root", "Aé", "100%"]
        );
        assert!(exec("/bin/echo a ; /bin/rm", "0", &env).is_err());
        assert!(exec("-/bin/echo", "0", &env).is_err());
        assert_eq!(
            environment(r#""A=1 2" B=x\ny "C=%%i""#, "0").expect("env"),
            [
                ("A".into(), "1 2".into()),
                ("B".into(), "x\ny".into()),
                ("C".into(), "%i".into())
            ]
        );
        let unit = "[Service]\nA=1\\\n# skipped\n  2\nB= x \n";
        assert_eq!(
            assignments(unit).expect("unit"),
            [
                ("Service".into(), "A".into(), "1   2".into()),
                ("Service".into(), "B".into(), "x".into())
            ]
        );
    }
}
