//! Errors in an ecosystem file: each names the file, line:column, key path,
//! what was expected and what was found, and how to fix it.

use std::fmt;
use std::path::PathBuf;

use super::node::Pos;

/// One mistake in the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    pub pos: Pos,
    /// The key path, e.g. `apps.web.instances`; empty for the whole file.
    pub path: String,
    pub message: String,
    /// A suggestion (did-you-mean, the accepted forms).
    pub hint: Option<String>,
    /// The source line, for the caret snippet; at most 200 characters and an
    /// ellipsis, so a huge line does not bury the message.
    pub source_line: Option<String>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if self.pos.line > 0 {
            write!(f, ":{}:{}", self.pos.line, self.pos.column)?;
        }
        f.write_str(": ")?;
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)?;
        if let Some(line) = &self.source_line {
            let number = self.pos.line.to_string();
            let pad = " ".repeat(number.len());
            // A clipped line ends in `…`; a column past it points at the `…`.
            let mut caret_at = usize::try_from(self.pos.column.saturating_sub(1)).unwrap_or(0);
            if line.ends_with('…') {
                caret_at = caret_at.min(line.chars().count().saturating_sub(1));
            }
            let indent: String = line
                .chars()
                .take(caret_at)
                .map(|c| if c == '\t' { '\t' } else { ' ' })
                .collect();
            write!(f, "\n {pad} |\n {number} | {line}\n {pad} | {indent}^")?;
        }
        if let Some(hint) = &self.hint {
            write!(f, "\n  help: {hint}")?;
        }
        Ok(())
    }
}

/// Every error found in one file, in file order.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, err) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "error: {err}")?;
        }
        let n = self.0.len();
        write!(
            f,
            "\n{n} error{} in {}",
            if n == 1 { "" } else { "s" },
            self.0
                .first()
                .map_or(String::new(), |e| e.file.display().to_string())
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(column: u64, line: &str) -> String {
        ConfigError {
            file: "/e.yaml".into(),
            pos: Pos { line: 7, column },
            path: "apps.a".into(),
            message: "bad".into(),
            hint: None,
            source_line: Some(line.into()),
        }
        .to_string()
    }

    #[test]
    fn the_caret_stays_on_a_clipped_line() {
        assert_eq!(
            error(9000, "abc…"),
            "/e.yaml:7:9000: apps.a: bad\n   |\n 7 | abc…\n   |    ^"
        );
        // An unclipped line keeps the caret where the column says, even
        // past its end (an error at the end of a line).
        assert_eq!(
            error(4, "abc"),
            "/e.yaml:7:4: apps.a: bad\n   |\n 7 | abc\n   |    ^"
        );
    }
}
