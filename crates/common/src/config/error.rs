//! What a bad configuration looks like to the user: one [`ConfigError`] per problem, each
//! naming the file, the key path, the line and what was expected; [`humanize`] rewords
//! serde's messages into that vocabulary.

use std::fmt;
use std::path::PathBuf;

/// One problem in one configuration or profile file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    /// Dotted key path such as `stations[2].poll_interval_ms`; empty for file-level problems
    /// (unreadable file, TOML syntax error).
    pub key_path: String,
    /// 1-based line of the key (or of the nearest enclosing table when the key is missing).
    pub line: Option<usize>,
    /// What was wrong and what was expected.
    pub message: String,
}

impl fmt::Display for ConfigError {
    /// `{file}:{line}: `{key_path}`: {message}`; the line and the key path are left out when
    /// unknown.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if !self.key_path.is_empty() {
            write!(f, ": `{}`", self.key_path)?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ConfigError {}

/// Every problem found in one load, in file order then line order. Never empty when a
/// loader returns it as its error.
#[derive(Debug)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl ConfigErrors {
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> std::slice::Iter<'_, ConfigError> {
        self.0.iter()
    }
}

impl<'a> IntoIterator for &'a ConfigErrors {
    type Item = &'a ConfigError;
    type IntoIter = std::slice::Iter<'a, ConfigError>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

/// One error per line.
impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// What a required key must hold, for "missing required key" messages: the product's own
/// vocabulary (`None` for keys it has no hint for).
pub type RequiredHint = fn(&str) -> Option<&'static str>;

/// Rewrites a serde message into this module's wording: "unknown key `x`; expected one of
/// ...", "expected an integer, found string \"x\"", "missing required key `x`" (followed by
/// "; expected {hint}" when `required_hint` has one for the key).
pub fn humanize(message: &str, required_hint: RequiredHint) -> String {
    if let Some(rest) = message.strip_prefix("unknown field ") {
        if let Some((key, expected)) = rest.split_once(", expected ") {
            return format!("unknown key {key}; expected {expected}");
        }
        if let Some((key, _)) = rest.split_once(", there are no fields") {
            return format!("unknown key {key}; this table takes no keys");
        }
        return format!("unknown key {rest}");
    }
    if let Some(rest) = message.strip_prefix("missing field ") {
        let key = rest.trim_matches('`');
        return match required_hint(key) {
            Some(hint) => format!("missing required key {rest}; expected {hint}"),
            None => format!("missing required key {rest}"),
        };
    }
    for prefix in ["invalid type: ", "invalid value: "] {
        if let Some(rest) = message.strip_prefix(prefix) {
            if let Some((found, expected)) = rest.rsplit_once(", expected ") {
                return format!("expected {}, found {}", plain(expected), plain(found));
            }
        }
    }
    if let Some(rest) = message.strip_prefix("unknown variant ") {
        if let Some((found, expected)) = rest.split_once(", expected ") {
            return format!("expected {expected}, found {found}");
        }
    }
    message.to_owned()
}

/// No hints: "missing required key `x`" alone.
pub fn no_hint(_key: &str) -> Option<&'static str> {
    None
}

/// serde's type words in TOML's vocabulary.
fn plain(what: &str) -> &str {
    match what {
        "i8" | "i16" | "i32" | "i64" | "u8" | "u16" | "u32" | "u64" | "usize" => "an integer",
        "f32" | "f64" => "a number",
        "map" | "a map" => "a table",
        "sequence" | "a sequence" => "an array",
        "unit variant" => "a non-string value",
        "string only" => "a string",
        s if s.starts_with("struct ") => "a table",
        s => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_puts_file_line_key_and_message_in_that_order() {
        let e = ConfigError {
            file: PathBuf::from("/etc/ls/agent.toml"),
            key_path: "buffer.quota_mib".into(),
            line: Some(7),
            message: "expected an integer between 1 and 65536 (MiB), found 0".into(),
        };
        assert_eq!(
            e.to_string(),
            "/etc/ls/agent.toml:7: `buffer.quota_mib`: expected an integer between 1 and 65536 (MiB), found 0"
        );
        let e = ConfigError {
            line: None,
            key_path: String::new(),
            ..e
        };
        assert!(e.to_string().starts_with("/etc/ls/agent.toml: expected"));
    }

    #[test]
    fn serde_messages_are_reworded_into_expected_and_found() {
        assert_eq!(
            humanize(
                "unknown field `foo`, expected one of `a`, `b`, `c`",
                no_hint
            ),
            "unknown key `foo`; expected one of `a`, `b`, `c`"
        );
        assert_eq!(
            humanize("invalid type: string \"x\", expected i64", no_hint),
            "expected an integer, found string \"x\""
        );
        assert_eq!(
            humanize("invalid type: map, expected a string", no_hint),
            "expected a string, found a table"
        );
        assert!(
            humanize("missing field `site`", |k| (k == "site")
                .then_some("a site name"))
                == "missing required key `site`; expected a site name"
        );
        assert_eq!(
            humanize("unknown variant `xml`, expected `text` or `json`", no_hint),
            "expected `text` or `json`, found `xml`"
        );
    }
}
