//! A YAML document as a tree of values that each remember where they were
//! written. Validation walks this tree instead of deserializing straight into
//! typed structs, so that it can report *every* mistake in one run, each with
//! its line and column, instead of stopping at serde's first error.

use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::budget::BudgetBreach;
use serde_saphyr::{Budget, DuplicateKeyPolicy, Spanned};

/// Where a value was written: 1-based line and column (0 when unknown).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pos {
    pub line: u64,
    pub column: u64,
}

/// One YAML value with its position.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    pub pos: Pos,
    pub value: Value,
}

/// The shapes a YAML value can take once scalars are resolved.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    /// Keys keep their own positions, in file order.
    Map(Vec<(Node, Node)>),
}

impl Value {
    /// How the value is named in "expected X, found Y" messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Null => "nothing (null)",
            Value::Bool(_) => "a boolean",
            Value::Int(_) => "an integer",
            Value::Float(_) => "a number",
            Value::Str(_) => "a string",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Null => f.write_str("null"),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Int(i) => write!(f, "{i}"),
            Value::Float(x) => write!(f, "{x}"),
            Value::Str(s) => write!(f, "{s:?}"),
            Value::Seq(_) => f.write_str("a list"),
            Value::Map(_) => f.write_str("a mapping"),
        }
    }
}

impl Node {
    /// The scalar rendered as a string, as `env` values are: `3000` → "3000".
    pub fn scalar_string(&self) -> Option<String> {
        match &self.value {
            Value::Str(s) => Some(s.clone()),
            Value::Int(i) => Some(i.to_string()),
            Value::Float(x) => Some(x.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            Value::Null => Some(String::new()),
            Value::Seq(_) | Value::Map(_) => None,
        }
    }
}

/// A bare value; positions are attached by [`SpannedNode`].
struct Bare(Value);

impl<'de> Deserialize<'de> for Bare {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(BareVisitor).map(Bare)
    }
}

/// `Spanned<Bare>` turned into a [`Node`].
struct SpannedNode(Node);

impl<'de> Deserialize<'de> for SpannedNode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let spanned = Spanned::<Bare>::deserialize(d)?;
        let pos = Pos {
            line: spanned.referenced.line(),
            column: spanned.referenced.column(),
        };
        Ok(SpannedNode(Node {
            pos,
            value: spanned.value.0,
        }))
    }
}

struct BareVisitor;

impl<'de> Visitor<'de> for BareVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Int(v.into()))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Int(v.into()))
    }
    fn visit_i128<E: de::Error>(self, v: i128) -> Result<Value, E> {
        Ok(Value::Int(v))
    }
    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Value, E> {
        Ok(i128::try_from(v).map_or(Value::Float(v as f64), Value::Int))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        Ok(Value::Float(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        Ok(Value::Str(v.to_owned()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        Ok(Value::Str(v))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(BareVisitor)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(SpannedNode(node)) = seq.next_element()? {
            items.push(node);
        }
        Ok(Value::Seq(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut entries = Vec::new();
        while let Some(SpannedNode(key)) = map.next_key()? {
            let SpannedNode(value) = map.next_value()?;
            entries.push((key, value));
        }
        Ok(Value::Map(entries))
    }
}

/// The deepest nesting eco reads. A real ecosystem file nests about 5
/// levels (`apps.web.ready.http`); the parser's own default (64) can
/// overflow a thread's stack in a debug build.
pub const MAX_DEPTH: usize = 24;

/// A YAML syntax error: where, and what the parser said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    pub pos: Pos,
    pub message: String,
}

/// Parses one YAML document into a [`Node`] tree.
pub fn parse(text: &str) -> Result<Node, SyntaxError> {
    if text.trim().is_empty() {
        return Ok(Node {
            pos: Pos { line: 1, column: 1 },
            value: Value::Null,
        });
    }
    // YAML 1.2 booleans only: an app named `off` or `no` stays a name.
    let mut options = serde_saphyr::Options::default();
    options.strict_booleans = true;
    // Repeated keys reach the tree, so validation reports each one with the
    // line of the first (see [`duplicate_keys`]) instead of the parser's
    // advice about its own options.
    options.duplicate_keys = DuplicateKeyPolicy::PassThrough;
    // The tree is built by recursion, one level per nesting level: a tight
    // cap keeps a hostile file from overflowing a 2 MiB thread stack.
    let mut budget = Budget::default();
    budget.max_depth = MAX_DEPTH;
    options.budget = Some(budget);
    match serde_saphyr::from_str_with_options::<SpannedNode>(text, options) {
        Ok(SpannedNode(node)) => Ok(node),
        Err(err) => {
            let pos = err
                .location()
                .map(|l| Pos {
                    line: l.line(),
                    column: l.column(),
                })
                .unwrap_or_default();
            let message = describe(&err).unwrap_or_else(|| {
                let mut message = err.without_snippet().to_string();
                // The position is reported separately; drop the parser's copy of it.
                if let Some(cut) = message.find(" at line ") {
                    message.truncate(cut);
                }
                // The scanner's own nesting cap on `[[[…`, before the budget's.
                if message == "recursion limit exceeded" {
                    return too_deep();
                }
                message
            });
            Err(SyntaxError { pos, message })
        }
    }
}

/// The parser errors whose own wording names its internals (budgets,
/// options, alias counters), said in eco's words. `None`: the parser's
/// message is fine as it is.
fn describe(err: &serde_saphyr::Error) -> Option<String> {
    use serde_saphyr::Error as E;
    let mut err = err;
    while let E::AliasError { error, .. } | E::WithSnippet { error, .. } = err {
        err = error;
    }
    Some(match err {
        E::Budget { breach, .. } => match breach {
            BudgetBreach::Depth { .. } => too_deep(),
            BudgetBreach::Aliases { .. }
            | BudgetBreach::Anchors { .. }
            | BudgetBreach::AliasAnchorRatio { .. }
            | BudgetBreach::RecordedAnchorEvents { .. }
            | BudgetBreach::RecordedAnchorBytes { .. } => {
                "file too large: too many anchors or aliases (`&name`, `*name`) for eco to read"
                    .into()
            }
            BudgetBreach::Documents { .. } => {
                "file too large: too many YAML documents (`---`) for eco to read".into()
            }
            _ => "file too large: too many values for eco to read".into(),
        },
        E::AliasReplayLimitExceeded { .. }
        | E::AliasExpansionLimitExceeded { .. }
        | E::AliasReplayStackDepthExceeded { .. }
        | E::AliasReplayCounterOverflow { .. } => {
            "file too large: aliases (`*name`) expand to too many values for eco to read".into()
        }
        E::DuplicateMappingKey { key, .. } => match key {
            Some(key) => format!("duplicate key `{key}`"),
            None => "duplicate key".into(),
        },
        E::BinaryNotUtf8 { .. } => "a `!!binary` value is not valid UTF-8 text".into(),
        _ => return None,
    })
}

fn too_deep() -> String {
    format!("file too large: values nested more than {MAX_DEPTH} levels deep")
}

/// A key written twice in one mapping: the key, where it is first written,
/// and where it is repeated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DuplicateKey {
    pub key: String,
    pub first: Pos,
    pub again: Pos,
    /// The key path of the repeated key, e.g. `apps.web.env.PORT`.
    pub path: String,
}

/// Every key repeated within one mapping, anywhere in the tree, in file order.
pub fn duplicate_keys(root: &Node) -> Vec<DuplicateKey> {
    let mut out = Vec::new();
    walk_duplicates(root, "", &mut out);
    out
}

fn walk_duplicates(node: &Node, path: &str, out: &mut Vec<DuplicateKey>) {
    match &node.value {
        Value::Map(entries) => {
            let mut seen: Vec<(String, Pos)> = Vec::new();
            for (key, value) in entries {
                let Some(name) = key.scalar_string() else {
                    continue;
                };
                let full = if path.is_empty() {
                    name.clone()
                } else {
                    format!("{path}.{name}")
                };
                if let Some((_, first)) = seen.iter().find(|(k, _)| *k == name) {
                    out.push(DuplicateKey {
                        key: name,
                        first: *first,
                        again: key.pos,
                        path: full,
                    });
                    continue;
                }
                walk_duplicates(value, &full, out);
                seen.push((name, key.pos));
            }
        }
        Value::Seq(items) => {
            for (i, item) in items.iter().enumerate() {
                walk_duplicates(item, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

/// Every string value (not key) holding a NUL byte, with its key path: an
/// exec argument or environment value cannot carry one, so the app would
/// only crash-loop at spawn.
pub fn nul_strings(root: &Node) -> Vec<(String, Pos)> {
    let mut out = Vec::new();
    walk_nul(root, "", &mut out);
    out
}

fn walk_nul(node: &Node, path: &str, out: &mut Vec<(String, Pos)>) {
    match &node.value {
        Value::Str(s) if s.contains('\0') => out.push((path.to_owned(), node.pos)),
        Value::Map(entries) => {
            for (key, value) in entries {
                let name = key.scalar_string().unwrap_or_default();
                let full = if path.is_empty() {
                    name
                } else {
                    format!("{path}.{name}")
                };
                walk_nul(value, &full, out);
            }
        }
        Value::Seq(items) => {
            for (i, item) in items.iter().enumerate() {
                walk_nul(item, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_reach_nested_values() {
        let doc = parse("apps:\n  web:\n    cmd: node x.js\n    instances: 4\n").expect("parses");
        let Value::Map(top) = &doc.value else {
            panic!("top is a map")
        };
        let (key, apps) = &top[0];
        assert_eq!(key.pos, Pos { line: 1, column: 1 });
        let Value::Map(apps) = &apps.value else {
            panic!("apps is a map")
        };
        let Value::Map(web) = &apps[0].1.value else {
            panic!("web is a map")
        };
        assert_eq!(web[1].0.pos, Pos { line: 4, column: 5 });
        assert_eq!(web[1].1.value, Value::Int(4));
        assert_eq!(
            web[1].1.pos,
            Pos {
                line: 4,
                column: 16
            }
        );
    }

    #[test]
    fn yaml_1_1_booleans_are_strings() {
        let doc = parse("off: yes\non: true\n").expect("parses");
        let Value::Map(top) = &doc.value else {
            panic!("top is a map")
        };
        assert_eq!(top[0].0.value, Value::Str("off".into()));
        assert_eq!(top[0].1.value, Value::Str("yes".into()));
        assert_eq!(top[1].1.value, Value::Bool(true));
    }

    #[test]
    fn repeated_keys_reach_the_tree_and_are_found() {
        let doc = parse("apps:\n  a:\n    env: {X: 1, X: 2}\n  a: {}\n").expect("parses");
        let dups = duplicate_keys(&doc);
        assert_eq!(
            dups,
            vec![
                DuplicateKey {
                    key: "X".into(),
                    first: Pos {
                        line: 3,
                        column: 11
                    },
                    again: Pos {
                        line: 3,
                        column: 17
                    },
                    path: "apps.a.env.X".into(),
                },
                DuplicateKey {
                    key: "a".into(),
                    first: Pos { line: 2, column: 3 },
                    again: Pos { line: 4, column: 3 },
                    path: "apps.a".into(),
                },
            ]
        );
    }

    #[test]
    fn nul_strings_are_found_with_their_path() {
        let doc = parse("a: [x, \"y\\0\"]\nb: {c: \"\\x00\", d: ok}\n").expect("parses");
        assert_eq!(
            nul_strings(&doc),
            vec![
                ("a[1]".to_owned(), Pos { line: 1, column: 8 }),
                ("b.c".to_owned(), Pos { line: 2, column: 8 }),
            ]
        );
    }

    #[test]
    fn budget_breaches_are_said_in_eco_words() {
        let text = format!("x: [{}1]\n", "1,".repeat(300_000));
        let err = parse(&text).expect_err("too many nodes");
        assert_eq!(
            err.message,
            "file too large: too many values for eco to read"
        );
        // Runs on a test thread's 2 MiB stack: deep input must be refused
        // before the recursive visitor overflows it.
        let deep = format!("x: {}1{}\n", "[".repeat(1000), "]".repeat(1000));
        let err = parse(&deep).expect_err("too deep");
        assert_eq!(
            err.message,
            "file too large: values nested more than 24 levels deep"
        );
        let deep = format!("x: {}1{}\n", "[".repeat(30), "]".repeat(30));
        let err = parse(&deep).expect_err("too deep");
        assert_eq!(
            err.message,
            "file too large: values nested more than 24 levels deep"
        );
        let ok = format!(
            "x: {}1{}\n",
            "[".repeat(MAX_DEPTH - 1),
            "]".repeat(MAX_DEPTH - 1)
        );
        assert!(parse(&ok).is_ok());
    }

    #[test]
    fn syntax_errors_have_a_position() {
        let err = parse("apps:\n  web: [1, 2\n").expect_err("unclosed list");
        assert!(err.pos.line >= 2, "{err:?}");
    }
}
