//! [`Report`], the error collector for one file: every error gets the file and the line of
//! its key, and a loader goes on after one so that the user sees every problem at once.
//! Besides, the checks every product's sections share (unknown keys, serde errors at their
//! exact key, fixed vocabularies).

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde_path_to_error::Segment;

use super::error::{humanize, no_hint, ConfigError, RequiredHint};
use super::spans::{self, Spans};

/// Collects the errors of one file; every error gets the file and the line of its key.
#[derive(Debug)]
pub struct Report<'a> {
    file: PathBuf,
    text: &'a str,
    spans: Spans<'a>,
    errors: Vec<ConfigError>,
    required_hint: RequiredHint,
}

impl<'a> Report<'a> {
    pub fn new(file: &Path, text: &'a str) -> Self {
        Self {
            file: file.to_owned(),
            text,
            spans: Spans::new(text),
            errors: Vec::new(),
            required_hint: no_hint,
        }
    }

    /// What "missing required key" messages add after "; expected" (see [`humanize`]).
    #[must_use]
    pub fn with_required_hint(mut self, required_hint: RequiredHint) -> Self {
        self.required_hint = required_hint;
        self
    }

    /// The file the errors name.
    pub fn file(&self) -> &Path {
        &self.file
    }

    /// 1-based line of `key_path` in this file, or of the deepest existing part of it.
    pub fn line(&self, key_path: &str) -> Option<usize> {
        self.spans.line(key_path)
    }

    pub fn error_count(&self) -> usize {
        self.errors.len()
    }

    pub fn into_errors(self) -> Vec<ConfigError> {
        self.errors
    }

    pub fn error(&mut self, key_path: &str, message: impl Into<String>) {
        let line = self.spans.line(key_path);
        self.errors.push(ConfigError {
            file: self.file.clone(),
            key_path: key_path.to_owned(),
            line,
            message: message.into(),
        });
    }

    /// The document as a table, or one error with the line of the syntax error.
    pub fn parse(&mut self) -> Option<toml::Table> {
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
    pub fn deserialize<T: DeserializeOwned>(&mut self, at: &str, value: toml::Value) -> Option<T> {
        match serde_path_to_error::deserialize::<_, T>(value) {
            Ok(v) => Some(v),
            Err(e) => {
                self.serde_error(at, &e);
                None
            }
        }
    }

    /// Deserialises a table as [`Report::deserialize`] does, except that a key serde stops
    /// at (unknown, or holding a value of the wrong type) is reported, left out, and the
    /// rest deserialised again: one bad key does not hide the table's other bad keys, nor
    /// the checks that run on what did deserialise. Returns the value without the bad keys
    /// (`None` when a required key is missing or was one of them) and the keys reported and
    /// left out; a caller must not accept a value that came with any.
    pub fn deserialize_keys<T: DeserializeOwned>(
        &mut self,
        at: &str,
        value: toml::Value,
    ) -> (Option<T>, Vec<String>) {
        let toml::Value::Table(mut table) = value else {
            return (self.deserialize(at, value), Vec::new());
        };
        let mut left_out: Vec<String> = Vec::new();
        loop {
            let e =
                match serde_path_to_error::deserialize::<_, T>(toml::Value::Table(table.clone())) {
                    Ok(v) => return (Some(v), left_out),
                    Err(e) => e,
                };
            let missing = e
                .inner()
                .message()
                .strip_prefix("missing field `")
                .and_then(|rest| rest.strip_suffix('`'));
            if missing.is_some_and(|field| left_out.iter().any(|k| k == field)) {
                // A required key already reported as wrong: no second error for it.
                return (None, left_out);
            }
            self.serde_error(at, &e);
            match e.path().iter().next() {
                Some(Segment::Map { key }) if table.contains_key(key) => {
                    table.remove(key);
                    left_out.push(key.clone());
                }
                _ => return (None, left_out),
            }
        }
    }

    /// Records one serde error at the exact key it names, below `at`.
    fn serde_error(&mut self, at: &str, e: &serde_path_to_error::Error<toml::de::Error>) {
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
        self.error(&path, humanize(message, self.required_hint));
    }

    /// A name from a fixed vocabulary (a serde enum of unit variants).
    pub fn choice<T: DeserializeOwned>(&mut self, at: &str, given: &str) -> Option<T> {
        let de = serde::de::value::StrDeserializer::<serde::de::value::Error>::new(given);
        match T::deserialize(de) {
            Ok(v) => Some(v),
            Err(e) => {
                self.error(at, humanize(&e.to_string(), self.required_hint));
                None
            }
        }
    }

    /// Reports `key` as an error when it is given although `why` says it does not apply.
    pub fn forbid(&mut self, at: &str, given: bool, why: &str) {
        if given {
            self.error(at, why.to_owned());
        }
    }

    /// Reports every key of `table` that is not in `allowed`.
    pub fn unknown_keys(&mut self, at: &str, table: &toml::Table, allowed: &[&str]) {
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
pub fn is_ident(value: &str, max_len: usize, extra: &[u8]) -> bool {
    !value.is_empty()
        && value.len() <= max_len
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || extra.contains(&b))
}

/// The TOML type name of `value`, for "found ..." messages.
pub fn type_name(value: &toml::Value) -> &'static str {
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
