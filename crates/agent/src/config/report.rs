//! The error collector for one file, and the checks every section shares.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde_path_to_error::Segment;

use super::defaults::{Float, Int};
use super::error::{humanize, ConfigError};
use super::spans::{self, Spans};

/// Collects the errors of one file; every error gets the file and the line of its key.
#[derive(Debug)]
pub(super) struct Report<'a> {
    file: PathBuf,
    text: &'a str,
    spans: Spans<'a>,
    errors: Vec<ConfigError>,
}

impl<'a> Report<'a> {
    pub(super) fn new(file: &Path, text: &'a str) -> Self {
        Self {
            file: file.to_owned(),
            text,
            spans: Spans::new(text),
            errors: Vec::new(),
        }
    }

    pub(super) fn error_count(&self) -> usize {
        self.errors.len()
    }

    pub(super) fn into_errors(self) -> Vec<ConfigError> {
        self.errors
    }

    pub(super) fn error(&mut self, key_path: &str, message: impl Into<String>) {
        let line = self.spans.line(key_path);
        self.errors.push(ConfigError {
            file: self.file.clone(),
            key_path: key_path.to_owned(),
            line,
            message: message.into(),
        });
    }

    /// The document as a table, or one error with the line of the syntax error.
    pub(super) fn parse(&mut self) -> Option<toml::Table> {
        match toml::from_str::<toml::Table>(self.text) {
            Ok(table) => Some(table),
            Err(e) => {
                let line = e.span().map(|s| spans::line_at(self.text, s.start));
                self.errors.push(ConfigError {
                    file: self.file.clone(),
                    key_path: String::new(),
                    line,
                    message: format!("invalid TOML: {}", e.message().trim_end()),
                });
                None
            }
        }
    }

    /// Deserialises one section; on failure records one error at the exact key serde
    /// stopped at.
    pub(super) fn deserialize<T: DeserializeOwned>(
        &mut self,
        at: &str,
        value: toml::Value,
    ) -> Option<T> {
        match serde_path_to_error::deserialize::<_, T>(value) {
            Ok(v) => Some(v),
            Err(e) => {
                let mut path = at.to_owned();
                for segment in e.path() {
                    path = match segment {
                        Segment::Seq { index } => spans::item(&path, *index),
                        Segment::Map { key } => spans::child(&path, key),
                        Segment::Enum { variant } => spans::child(&path, variant),
                        Segment::Unknown => path,
                    };
                }
                let message = e.inner().message();
                if let Some(field) = message
                    .strip_prefix("missing field `")
                    .and_then(|rest| rest.strip_suffix('`'))
                {
                    path = spans::child(&path, field);
                }
                self.error(&path, humanize(message));
                None
            }
        }
    }

    /// `given` (or the default) when inside the setting's range.
    pub(super) fn int(&mut self, at: &str, given: Option<i64>, setting: Int) -> Option<i64> {
        self.range(at, given.unwrap_or(setting.default), setting)
    }

    /// `value` when inside the setting's range (its default is ignored).
    pub(super) fn range(&mut self, at: &str, value: i64, setting: Int) -> Option<i64> {
        if (setting.min..=setting.max).contains(&value) {
            return Some(value);
        }
        let unit = if setting.unit.is_empty() {
            String::new()
        } else {
            format!(" ({})", setting.unit)
        };
        self.error(
            at,
            format!(
                "expected an integer between {} and {}{unit}, found {value}",
                setting.min, setting.max
            ),
        );
        None
    }

    /// `given` (or the default) when finite and inside the setting's range.
    pub(super) fn float(&mut self, at: &str, given: Option<f64>, setting: Float) -> Option<f64> {
        self.float_range(at, given.unwrap_or(setting.default), setting)
    }

    /// `value` when finite and inside the setting's range (its default is ignored).
    pub(super) fn float_range(&mut self, at: &str, value: f64, setting: Float) -> Option<f64> {
        if value.is_finite() && (setting.min..=setting.max).contains(&value) {
            return Some(value);
        }
        let unit = if setting.unit.is_empty() {
            String::new()
        } else {
            format!(" ({})", setting.unit)
        };
        self.error(
            at,
            format!(
                "expected a finite number between {} and {}{unit}, found {value}",
                setting.min, setting.max
            ),
        );
        None
    }

    /// A name from a fixed vocabulary (a serde enum of unit variants).
    pub(super) fn choice<T: DeserializeOwned>(&mut self, at: &str, given: &str) -> Option<T> {
        let de = serde::de::value::StrDeserializer::<serde::de::value::Error>::new(given);
        match T::deserialize(de) {
            Ok(v) => Some(v),
            Err(e) => {
                self.error(at, humanize(&e.to_string()));
                None
            }
        }
    }

    /// An identifier of 1-64 characters of `[A-Za-z0-9._-]`.
    pub(super) fn ident(&mut self, at: &str, value: &str) -> Option<String> {
        if is_ident(value, super::defaults::MAX_ID_LEN, b"._-") {
            Some(value.to_owned())
        } else {
            self.error(
                at,
                format!(
                    "expected 1-{} characters of [A-Za-z0-9._-], found `{}`",
                    super::defaults::MAX_ID_LEN,
                    value.escape_debug()
                ),
            );
            None
        }
    }

    /// Reports `key` as an error when it is given although `why` says it does not apply.
    pub(super) fn forbid(&mut self, at: &str, given: bool, why: &str) {
        if given {
            self.error(at, why.to_owned());
        }
    }

    /// Reports every key of `table` that is not in `allowed`.
    pub(super) fn unknown_keys(&mut self, at: &str, table: &toml::Table, allowed: &[&str]) {
        for key in table.keys() {
            if !allowed.contains(&key.as_str()) {
                let expected = allowed
                    .iter()
                    .map(|k| format!("`{k}`"))
                    .collect::<Vec<_>>()
                    .join(", ");
                self.error(
                    &spans::child(at, key),
                    format!("unknown key `{key}`; expected one of {expected}"),
                );
            }
        }
    }
}

/// 1..=`max_len` ASCII letters, digits and `extra` bytes.
pub(super) fn is_ident(value: &str, max_len: usize, extra: &[u8]) -> bool {
    !value.is_empty()
        && value.len() <= max_len
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || extra.contains(&b))
}

/// The TOML type name of `value`, for "found ..." messages.
pub(super) fn type_name(value: &toml::Value) -> &'static str {
    match value {
        toml::Value::String(_) => "a string",
        toml::Value::Integer(_) => "an integer",
        toml::Value::Float(_) => "a float",
        toml::Value::Boolean(_) => "a boolean",
        toml::Value::Datetime(_) => "a datetime",
        toml::Value::Array(_) => "an array",
        toml::Value::Table(_) => "a table",
    }
}
