//! The agent's error collector: `linesentry_common::config::Report` with the agent's
//! "missing required key" hints, plus the range and identifier checks its sections share
//! (ranges from `defaults`).

use std::ops::{Deref, DerefMut};
use std::path::Path;

use linesentry_common::config::Report as FileReport;

use super::defaults::{Float, Int};

pub(super) use linesentry_common::config::{is_ident, type_name};

/// Collects the errors of one file; every error gets the file and the line of its key.
#[derive(Debug)]
pub(super) struct Report<'a>(FileReport<'a>);

impl<'a> Deref for Report<'a> {
    type Target = FileReport<'a>;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl DerefMut for Report<'_> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl<'a> Report<'a> {
    pub(super) fn new(file: &Path, text: &'a str) -> Self {
        Self(FileReport::new(file, text).with_required_hint(required_hint))
    }

    pub(super) fn into_errors(self) -> Vec<linesentry_common::config::ConfigError> {
        self.0.into_errors()
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
}

/// What a required key must hold, for "missing required key" messages.
fn required_hint(key: &str) -> Option<&'static str> {
    Some(match key {
        "gateway_id" | "site" | "id" => "1-64 characters of [A-Za-z0-9._-]",
        "data_dir" => {
            "a directory path (relative paths resolve against the config file's directory)"
        }
        "profile" => "the name of a profile file in profiles_dir, without `.toml`",
        "source" => "one of `simulated`, `modbus_tcp`, `modbus_rtu`, `opcua`",
        "name" => "a name of [a-z0-9_] characters",
        "role" => "a tag role such as `status`, `setpoint` or `measurement`",
        "type" => "a data type such as `bool`, `u16`, `f32` or `string`",
        "protocol" => "`modbus` or `opcua`",
        "host" => "a host name or IP address",
        "url" => "an https:// URL",
        "kind" => "`anonymous`, `username` or `certificate`",
        "min" | "max" => "a finite number",
        "start" | "end" => "an RFC 3339 date-time such as `2026-11-28T06:00:00Z`",
        _ => return None,
    })
}
