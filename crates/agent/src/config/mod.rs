//! Configuration: TOML files in, validated settings out.
//!
//! An agent configuration (`config/*.toml`) names its stations; each station names a profile
//! (`devices/<name>.toml`, under `agent.profiles_dir`) that lists the tags of that kind of
//! station. [`load`] reads both and returns either a [`Config`] whose every field has been
//! checked, or [`ConfigErrors`] holding every problem found, never just the first.
//! [`load_profile`] does the same for one profile file on its own (`linesentry validate
//! --profile`).
//!
//! The settings types belong to the components that run on them (`source::StationConfig`,
//! `source::Profile`, `buffer::QueueOptions`, `forward::ForwardSettings`,
//! `health::HealthSettings`...): this module depends on them and builds them, they never
//! depend on it. Only `[agent]` and `[log]`, which are the whole agent's, are typed here.
//!
//! How the errors are all found in one pass:
//! 1. A file that does not parse is one error, with the line of the syntax error.
//! 2. Each top-level table, each `[[stations]]` element and each `[[tags]]` element is
//!    deserialised on its own (through `serde_path_to_error`) into a `raw` struct that denies
//!    unknown keys, so an error in one section does not hide errors in another.
//! 3. Semantic checks (ranges, cross-field rules, duplicate ids, profile look-up, protocol
//!    match) run on whatever deserialised and each add an error.
//!
//! Every [`ConfigError`] carries the file, the key path (`stations[2].poll_interval_ms`) and
//! the line, found afterwards by walking the key path through a `toml_edit` document of the
//! same text (`linesentry_common::config`, shared with the collector: the error types, the
//! line look-up and the per-file `Report` that `report` wraps). Ranges live in `defaults`
//! only, defaults there too or, where the component's own type has one, in the component
//! (see `defaults`). Secrets are references
//! (`{ env = "VAR" }`, `{ file = "/path" }`) resolved at load time; a plain-text secret in a
//! file is refused, and [`Secret`](linesentry_common::Secret) never prints its value.
//!
//! [`Config::digest`] is SHA-256 over the configuration bytes and, in profile-name order, each
//! referenced profile's name and bytes (all length-prefixed), so that `agent.config_changed`
//! can tell any edit that changes behaviour.

mod defaults;
mod health;
mod profile;
mod raw;
mod report;
mod rules;
mod secret;
mod settings;
mod station;

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

pub use linesentry_common::config::{ConfigError, ConfigErrors};
pub use settings::{AgentSettings, LogFormat, LogSettings};

use crate::buffer::QueueOptions;
use crate::forward::ForwardSettings;
use crate::health::HealthSettings;
use crate::source::{Profile, StationConfig};
use linesentry_event::SeverityMap;
use report::Report;

/// A validated agent configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it was loaded from (as given).
    pub path: PathBuf,
    /// Hex SHA-256 of the configuration and every referenced profile (see the module doc).
    pub digest: String,
    pub agent: AgentSettings,
    /// `[buffer]`, opening the queue in `agent.data_dir` for `agent.gateway_id`.
    pub buffer: QueueOptions,
    pub log: LogSettings,
    pub severity: SeverityMap,
    pub stations: Vec<StationConfig>,
    pub forward: ForwardSettings,
    pub health: HealthSettings,
}

/// Top-level tables of an agent configuration.
const SECTIONS: &[&str] = &[
    "agent", "buffer", "log", "severity", "stations", "forward", "health",
];

/// Reads and validates the configuration at `path` and the profiles it references.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    load_str(path, &read(path)?)
}

/// Reads and validates only `[agent]` of the configuration at `path`: what a command that
/// touches nothing but the data directory needs (`linesentry identity`). The other sections
/// are neither checked nor resolved, so a secret they reference need not exist yet: the
/// gateway token of `[forward.https]`, say, which the collector issues only once the key
/// `identity` prints is registered. `load` (run, validate) still checks everything.
pub fn load_agent(path: &Path) -> Result<AgentSettings, ConfigErrors> {
    let text = read(path)?;
    let base_dir = base_dir(path);
    let mut report = Report::new(path, &text);
    let Some(mut table) = report.parse() else {
        return Err(ConfigErrors(report.into_errors()));
    };
    let agent = settings::agent(&mut report, table.remove("agent"), &base_dir);
    let mut errors = report.into_errors();
    match agent {
        Some(agent) if errors.is_empty() => Ok(agent),
        _ => {
            if errors.is_empty() {
                errors.push(ConfigError {
                    file: path.to_owned(),
                    key_path: "agent".to_owned(),
                    line: None,
                    message: "the `[agent]` table is invalid".to_owned(),
                });
            }
            Err(ConfigErrors(sorted(errors)))
        }
    }
}

/// The text of the file at `path`, or the one error saying why it cannot be had.
fn read(path: &Path) -> Result<String, ConfigErrors> {
    let bytes = std::fs::read(path).map_err(|e| {
        ConfigErrors(vec![ConfigError {
            file: path.to_owned(),
            key_path: String::new(),
            line: None,
            message: format!("cannot read the configuration file: {e}"),
        }])
    })?;
    String::from_utf8(bytes).map_err(|e| {
        let bytes = e.as_bytes();
        ConfigErrors(vec![not_utf8(path, bytes, &e.utf8_error())])
    })
}

/// The directory relative paths of the file at `path` resolve against.
fn base_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
        _ => PathBuf::from("."),
    }
}

/// Reads and validates one station profile (`devices/<name>.toml`) on its own, as `load`
/// validates the profiles a configuration names: every error at once, each with the file,
/// the line and the key path. The profile's `name` must match the file name.
pub fn load_profile(path: &Path) -> Result<Profile, ConfigErrors> {
    let file_error = |message: String| {
        ConfigErrors(vec![ConfigError {
            file: path.to_owned(),
            key_path: String::new(),
            line: None,
            message,
        }])
    };
    if path.file_stem().and_then(|s| s.to_str()).is_none()
        || path.extension().is_none_or(|e| e != "toml")
    {
        return Err(file_error(
            "expected a profile file named `<name>.toml`".to_owned(),
        ));
    }
    let bytes = std::fs::read(path)
        .map_err(|e| file_error(format!("cannot read the profile file: {e}")))?;
    let text = match std::str::from_utf8(&bytes) {
        Ok(text) => text,
        Err(e) => return Err(ConfigErrors(vec![not_utf8(path, &bytes, &e)])),
    };
    parse_profile(path, text)
}

/// Validates profile `text` as if read from `path` (whose stem is the profile name), with
/// the checks and messages of [`load_profile`]: what the onboarding tools run on a profile
/// they generated before writing it.
pub fn parse_profile(path: &Path, text: &str) -> Result<Profile, ConfigErrors> {
    let stem = path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or_default();
    match profile::parse(path, stem, text) {
        (Some(profile), errors) if errors.is_empty() => Ok(profile),
        (_, mut errors) => {
            if errors.is_empty() {
                errors.push(ConfigError {
                    file: path.to_owned(),
                    key_path: String::new(),
                    line: None,
                    message: "the profile is invalid".to_owned(),
                });
            }
            Err(ConfigErrors(sorted(errors)))
        }
    }
}

/// Validates configuration `text` as if read from `path_for_messages`: errors name that path,
/// and relative paths (profiles, data_dir, secret files) resolve against its directory.
pub fn load_str(path_for_messages: &Path, text: &str) -> Result<Config, ConfigErrors> {
    let path = path_for_messages;
    let base_dir = base_dir(path);
    let mut report = Report::new(path, text);
    let Some(mut table) = report.parse() else {
        return Err(ConfigErrors(report.into_errors()));
    };
    report.unknown_keys("", &table, SECTIONS);

    let mut library = profile::Library::new(settings::profiles_dir(table.get("agent"), &base_dir));
    let gateway_id = table
        .get("agent")
        .and_then(|a| a.get("gateway_id"))
        .and_then(toml::Value::as_str)
        .map(str::to_owned);
    let agent = settings::agent(&mut report, table.remove("agent"), &base_dir);
    let buffer = settings::buffer(&mut report, table.remove("buffer"));
    let log = settings::log(&mut report, table.remove("log"));
    let severity = settings::severity(&mut report, table.remove("severity"));
    let stations = station::stations(
        &mut report,
        table.remove("stations"),
        &base_dir,
        &mut library,
    );
    let forward = settings::forward(
        &mut report,
        table.remove("forward"),
        gateway_id.as_deref(),
        &base_dir,
    );
    let health = health::health(&mut report, table.remove("health"), &base_dir);

    let mut errors = report.into_errors();
    let (profiles, profile_errors) = library.into_parts();
    errors.extend(profile_errors);
    let digest = digest(text.as_bytes(), &profiles);
    match (agent, buffer, log, severity, stations, forward, health) {
        (
            Some(agent),
            Some(buffer),
            Some(log),
            Some(severity),
            Some(stations),
            Some(forward),
            Some(health),
        ) if errors.is_empty() => Ok(Config {
            path: path.to_owned(),
            digest,
            buffer: QueueOptions {
                dir: agent.data_dir.clone(),
                gateway_id: agent.gateway_id.clone(),
                ..buffer
            },
            agent,
            log,
            severity,
            stations,
            forward,
            health,
        }),
        _ => {
            if errors.is_empty() {
                // Every `None` above comes with an error; this keeps the promise regardless.
                errors.push(ConfigError {
                    file: path.to_owned(),
                    key_path: String::new(),
                    line: None,
                    message: "the configuration is invalid".to_owned(),
                });
            }
            Err(ConfigErrors(sorted(errors)))
        }
    }
}

/// File order of first appearance, then line order; stable otherwise.
fn sorted(mut errors: Vec<ConfigError>) -> Vec<ConfigError> {
    let mut files: Vec<PathBuf> = Vec::new();
    for e in &errors {
        if !files.contains(&e.file) {
            files.push(e.file.clone());
        }
    }
    errors.sort_by_key(|e| (files.iter().position(|f| *f == e.file), e.line.unwrap_or(0)));
    errors
}

fn digest(config: &[u8], profiles: &[(String, Vec<u8>)]) -> String {
    let mut hasher = Sha256::new();
    hasher.update((config.len() as u64).to_be_bytes());
    hasher.update(config);
    for (name, bytes) in profiles {
        hasher.update((name.len() as u64).to_be_bytes());
        hasher.update(name.as_bytes());
        hasher.update((bytes.len() as u64).to_be_bytes());
        hasher.update(bytes);
    }
    format!("{:x}", hasher.finalize())
}

fn not_utf8(path: &Path, bytes: &[u8], e: &std::str::Utf8Error) -> ConfigError {
    let valid = &bytes[..e.valid_up_to()];
    let line = valid.split(|&b| b == b'\n').count();
    ConfigError {
        file: path.to_owned(),
        key_path: String::new(),
        line: Some(line),
        message: format!(
            "the file is not valid UTF-8 (invalid byte at offset {}); expected UTF-8 TOML text",
            e.valid_up_to()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_digest_changes_with_any_profile_byte_and_is_stable() {
        let a = digest(b"x", &[("p".into(), b"1".to_vec())]);
        assert_eq!(a, digest(b"x", &[("p".into(), b"1".to_vec())]));
        assert_ne!(a, digest(b"x", &[("p".into(), b"2".to_vec())]));
        assert_ne!(a, digest(b"x1", &[("p".into(), Vec::new())]));
        assert_eq!(a.len(), 64);
    }

    #[test]
    fn a_minimal_config_gets_every_default() {
        let text = "[agent]\ngateway_id = \"gw\"\nsite = \"s\"\ndata_dir = \"data\"\n";
        let config = load_str(Path::new("/etc/ls/agent.toml"), text).unwrap();
        assert_eq!(config.agent.data_dir, Path::new("/etc/ls/data"));
        assert_eq!(config.agent.shutdown_grace.as_millis(), 5000);
        assert_eq!(config.buffer.quota_bytes, 256 * 1024 * 1024);
        assert_eq!(config.buffer.max_event_bytes, 64 * 1024);
        assert_eq!(config.buffer.commit_max_events, 4096);
        assert_eq!(config.buffer.cache_bytes, 2 * 1024 * 1024);
        assert_eq!(config.log.format, LogFormat::Text);
        assert_eq!(config.log.level, "info");
        assert!(config.stations.is_empty());
        assert!(!config.forward.console && config.forward.mqtt.is_none());
    }

    #[test]
    fn the_agent_table_alone_loads_while_another_sections_secret_file_does_not_exist_yet() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.toml");
        let text = "[agent]\ngateway_id = \"gw\"\nsite = \"s\"\ndata_dir = \"data\"\n\n\
                    [forward.https]\nurl = \"https://collector.example/api/v1/ingest\"\n\
                    bearer_token = { file = \"secrets/gateway-token\" }\n";
        std::fs::write(&path, text).unwrap();
        let agent = load_agent(&path).unwrap();
        assert_eq!(agent.data_dir, dir.path().join("data"));
        assert_eq!(agent.gateway_id, "gw");
        let all = load(&path).unwrap_err();
        assert!(all.to_string().contains("bearer_token"), "{all}");
    }

    #[test]
    fn the_agent_table_alone_still_names_a_missing_or_empty_data_dir() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.toml");
        std::fs::write(&path, "[agent]\ngateway_id = \"gw\"\nsite = \"s\"\n").unwrap();
        let e = load_agent(&path).unwrap_err().to_string();
        assert!(e.contains("data_dir"), "{e}");
        std::fs::write(
            &path,
            "[agent]\ngateway_id = \"gw\"\nsite = \"s\"\ndata_dir = \"\"\n",
        )
        .unwrap();
        let e = load_agent(&path).unwrap_err().to_string();
        assert!(e.contains("agent.data_dir") && e.contains("empty"), "{e}");
        let e = load_agent(&dir.path().join("missing.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("cannot read the configuration file"), "{e}");
    }

    #[test]
    fn a_file_that_is_not_utf8_is_one_error_naming_its_line_for_load_and_load_agent() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.toml");
        std::fs::write(&path, b"[agent]\ngateway_id = \"gw\xff\"\n").unwrap();
        for e in [load(&path).unwrap_err(), load_agent(&path).unwrap_err()] {
            assert_eq!(e.0.len(), 1, "{e}");
            assert_eq!(e.0[0].line, Some(2), "{e}");
            assert!(e.0[0].message.contains("not valid UTF-8"), "{e}");
        }
    }

    #[test]
    fn errors_from_different_sections_are_all_reported_in_line_order() {
        let text = "[agent]\ngateway_id = \"gw 1\"\nsite = \"s\"\ndata_dir = \"d\"\n\
                    [buffer]\nquota_mib = 0\n[log]\nformat = \"xml\"\n[surprise]\n";
        let errors = load_str(Path::new("a.toml"), text).unwrap_err();
        let lines: Vec<_> = errors.iter().map(|e| e.line).collect();
        assert_eq!(lines, vec![Some(2), Some(6), Some(8), Some(9)], "{errors}");
    }
}
