//! Trees and JSON: env values PM2 would stringify, and JavaScript or
//! JSON5 files' exports as a tree.

use super::{Node, Pos, Value, node};

/// A tree as JSON (for env values PM2 would stringify).
pub fn to_json(v: &Node) -> serde_json::Value {
    use serde_json::Value as J;
    match &v.value {
        Value::Null => J::Null,
        Value::Bool(b) => J::Bool(*b),
        Value::Int(i) => i64::try_from(*i).map_or_else(|_| J::String(i.to_string()), J::from),
        Value::Float(x) => serde_json::Number::from_f64(*x).map_or(J::Null, J::Number),
        Value::Str(s) => J::String(s.clone()),
        Value::Seq(items) => J::Array(items.iter().map(to_json).collect()),
        Value::Map(entries) => J::Object(
            entries
                .iter()
                .map(|(k, v)| (k.scalar_string().unwrap_or_default(), to_json(v)))
                .collect(),
        ),
    }
}

/// A JSON value as a tree with no positions (JavaScript files, JSON5).
pub fn from_json(v: &serde_json::Value) -> Node {
    use serde_json::Value as J;
    let value = match v {
        J::Null => Value::Null,
        J::Bool(b) => Value::Bool(*b),
        J::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => Value::Int(i.into()),
            (_, Some(u), _) => Value::Int(u.into()),
            (_, _, Some(x)) if x.fract() == 0.0 && x.abs() < 1e15 =>
            {
                #[allow(clippy::cast_possible_truncation)]
                Value::Int(x as i128)
            }
            (_, _, x) => Value::Float(x.unwrap_or_default()),
        },
        J::String(s) => Value::Str(s.clone()),
        J::Array(items) => Value::Seq(items.iter().map(from_json).collect()),
        J::Object(map) => Value::Map(
            map.iter()
                .map(|(k, v)| (node(Pos::default(), Value::Str(k.clone())), from_json(v)))
                .collect(),
        ),
    };
    node(Pos::default(), value)
}
