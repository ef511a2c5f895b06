//! `time`, `log_date_format`, `out_file`, `error_file` and `log_file`:
//! where output goes and whether lines are stamped.

use super::app::Entry;
use super::{Node, Translator, Value, node};

impl Translator<'_> {
    /// Reads a log key; `false` for any other key.
    pub(super) fn logs_key(&mut self, out: &mut Vec<(Node, Node)>, e: &Entry<'_, '_>) -> bool {
        let v = e.value;
        match e.name {
            "time" => {
                if matches!(v.value, Value::Bool(true)) {
                    e.put(out, "log_time", v.clone());
                }
            }
            "log_date_format" => {
                e.put(out, "log_time", node(v.pos, Value::Bool(true)));
                self.note(
                    Some(e.app),
                    e.path,
                    e.pos,
                    "approximated: eco prefixes each line with an RFC 3339 timestamp (log_time: true), whatever the format",
                );
            }
            "out_file" | "output" => e.put(out, "out_file", v.clone()),
            "error_file" | "error" | "err_file" => e.put(out, "err_file", v.clone()),
            "log_file" | "log" => self.note(
                Some(e.app),
                e.path,
                e.pos,
                "dropped: eco writes out_file and err_file, no third combined file (eco logs shows both)",
            ),
            _ => return false,
        }
        true
    }
}
