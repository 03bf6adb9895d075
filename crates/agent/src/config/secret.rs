//! Secret references: `{ env = "VAR" }` or `{ file = "/path" }`, never the value itself in
//! the TOML, resolved at load time into a [`Secret`].

use std::path::Path;

use super::report::{type_name, Report};
use linesentry_common::config::spans;
use linesentry_common::Secret;

const EXPECTED: &str = "`{ env = \"VAR\" }` or `{ file = \"/path/to/secret\" }`";

/// Resolves the secret reference at `at`. Messages never quote a value given there.
pub(super) fn resolve(
    report: &mut Report<'_>,
    at: &str,
    value: &toml::Value,
    base_dir: &Path,
) -> Option<Secret> {
    let table = match value {
        toml::Value::Table(t) => t,
        toml::Value::String(_) => {
            report.error(
                at,
                format!("plain-text secrets are refused; expected a reference to where the secret is kept: {EXPECTED}"),
            );
            return None;
        }
        other => {
            report.error(
                at,
                format!("expected {EXPECTED}, found {}", type_name(other)),
            );
            return None;
        }
    };
    report.unknown_keys(at, table, &["env", "file"]);
    let env = table.get("env");
    let file = table.get("file");
    match (env, file) {
        (Some(_), Some(_)) => {
            report.error(
                at,
                format!("give either `env` or `file`, not both; expected {EXPECTED}"),
            );
            None
        }
        (Some(var), None) => {
            let at = spans::child(at, "env");
            let var = non_empty_str(report, &at, var, "an environment variable name")?;
            from_env(report, &at, var)
        }
        (None, Some(path)) => {
            let at = spans::child(at, "file");
            let path = non_empty_str(report, &at, path, "a file path")?;
            from_file(report, &at, &base_dir.join(path))
        }
        (None, None) => {
            if table.keys().all(|k| k == "env" || k == "file") {
                report.error(at, format!("expected {EXPECTED}, found an empty table"));
            }
            None
        }
    }
}

fn non_empty_str<'v>(
    report: &mut Report<'_>,
    at: &str,
    value: &'v toml::Value,
    what: &str,
) -> Option<&'v str> {
    match value {
        toml::Value::String(s) if !s.is_empty() => Some(s),
        other => {
            let found = if other.as_str().is_some() {
                "an empty string"
            } else {
                type_name(other)
            };
            report.error(at, format!("expected {what}, found {found}"));
            None
        }
    }
}

fn from_env(report: &mut Report<'_>, at: &str, var: &str) -> Option<Secret> {
    match std::env::var(var) {
        Ok(value) if !value.is_empty() => Some(Secret::new(value)),
        Ok(_) => {
            report.error(
                at,
                format!("environment variable `{var}` is empty; expected it to hold the secret"),
            );
            None
        }
        Err(std::env::VarError::NotPresent) => {
            report.error(
                at,
                format!("environment variable `{var}` is not set; expected it to hold the secret"),
            );
            None
        }
        Err(std::env::VarError::NotUnicode(_)) => {
            report.error(
                at,
                format!(
                    "environment variable `{var}` is not valid UTF-8; expected the secret as text"
                ),
            );
            None
        }
    }
}

fn from_file(report: &mut Report<'_>, at: &str, path: &Path) -> Option<Secret> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) => {
            report.error(
                at,
                format!("cannot read secret file `{}`: {e}; expected a readable file holding the secret", path.display()),
            );
            return None;
        }
    };
    let value = text.strip_suffix('\n').unwrap_or(&text);
    let value = value.strip_suffix('\r').unwrap_or(value);
    if value.is_empty() {
        report.error(
            at,
            format!(
                "secret file `{}` is empty; expected it to hold the secret",
                path.display()
            ),
        );
        return None;
    }
    Some(Secret::new(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve_text(text: &str) -> (Option<Secret>, Vec<String>) {
        let table: toml::Table = toml::from_str(text).unwrap();
        let mut report = Report::new(Path::new("t.toml"), text);
        let secret = resolve(&mut report, "password", &table["password"], Path::new("/"));
        let errors = report
            .into_errors()
            .iter()
            .map(ToString::to_string)
            .collect();
        (secret, errors)
    }

    #[test]
    fn a_plain_text_secret_is_refused_without_echoing_it() {
        let (secret, errors) = resolve_text("password = \"hunter2\"\n");
        assert!(secret.is_none());
        assert_eq!(errors.len(), 1);
        assert!(
            errors[0].contains("plain-text secrets are refused"),
            "{errors:?}"
        );
        assert!(errors[0].contains("env"), "{errors:?}");
        assert!(!errors[0].contains("hunter2"), "{errors:?}");
    }

    #[test]
    fn a_secret_file_is_read_and_its_trailing_newline_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pw");
        std::fs::write(&path, "s3cret\r\n").unwrap();
        let text = format!("password = {{ file = {:?} }}\n", path.display().to_string());
        let (secret, errors) = resolve_text(&text);
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(secret.unwrap().expose(), "s3cret");
    }

    #[test]
    fn a_missing_env_var_names_the_variable_and_the_key() {
        let (secret, errors) =
            resolve_text("password = { env = \"LINESENTRY_TEST_SURELY_UNSET_42\" }\n");
        assert!(secret.is_none());
        assert!(errors[0].contains("`password.env`"), "{errors:?}");
        assert!(errors[0].contains("LINESENTRY_TEST_SURELY_UNSET_42` is not set"));
    }

    #[test]
    fn both_or_neither_or_other_keys_are_errors() {
        assert_eq!(
            resolve_text("password = { env = \"A\", file = \"b\" }\n")
                .1
                .len(),
            1
        );
        assert_eq!(resolve_text("password = {}\n").1.len(), 1);
        let (_, errors) = resolve_text("password = { value = \"x\" }\n");
        assert_eq!(errors.len(), 1);
        assert!(errors[0].contains("unknown key `value`"), "{errors:?}");
    }
}
