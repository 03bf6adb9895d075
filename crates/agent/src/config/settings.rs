//! The agent-wide sections: `[agent]`, `[buffer]`, `[log]`, `[severity]`, `[forward]`.
//! `[agent]` and `[log]` are the agent's own ([`AgentSettings`], [`LogSettings`]); the others
//! build the types of the components that use them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::defaults;
use super::raw;
use super::report::{type_name, Report};
use super::secret;
use crate::buffer::QueueOptions;
use crate::forward::https::HttpsSettings;
use crate::forward::mqtt::{MqttProtocol, MqttSettings};
use crate::forward::tls::TlsSettings;
use crate::forward::{ForwardSettings, Pacing, Strategy};
use linesentry_common::config::spans::child;
use linesentry_event::{EventType, Severity, SeverityMap, CATALOG};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentSettings {
    pub gateway_id: String,
    pub site: String,
    /// Absolute, or relative to the working directory when the config path was.
    pub data_dir: PathBuf,
    pub shutdown_grace: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogSettings {
    pub format: LogFormat,
    /// A `tracing_subscriber::EnvFilter` directive such as `info,linesentry=debug`.
    pub level: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// `[agent]` minus `profiles_dir`, which the loader reads on its own.
pub(super) fn agent(
    report: &mut Report<'_>,
    value: Option<toml::Value>,
    base_dir: &Path,
) -> Option<AgentSettings> {
    let Some(value) = value else {
        report.error(
            "agent",
            "missing required table `[agent]`; expected gateway_id, site and data_dir",
        );
        return None;
    };
    let raw = report.deserialize::<raw::Agent>("agent", value)?;
    let gateway_id = report.ident("agent.gateway_id", &raw.gateway_id);
    let site = report.ident("agent.site", &raw.site);
    let data_dir = if raw.data_dir.is_empty() {
        report.error(
            "agent.data_dir",
            "expected a directory path, found an empty string",
        );
        None
    } else {
        Some(base_dir.join(&raw.data_dir))
    };
    if raw.profiles_dir.as_deref() == Some("") {
        report.error(
            "agent.profiles_dir",
            "expected a directory path, found an empty string",
        );
    }
    let grace = report.int(
        "agent.shutdown_grace_ms",
        raw.shutdown_grace_ms,
        defaults::SHUTDOWN_GRACE_MS,
    );
    Some(AgentSettings {
        gateway_id: gateway_id?,
        site: site?,
        data_dir: data_dir?,
        shutdown_grace: Duration::from_millis(grace? as u64),
    })
}

/// `profiles_dir` from the raw `[agent]` table, so that stations can be checked even when
/// the rest of `[agent]` is wrong (which `agent` reports).
pub(super) fn profiles_dir(agent: Option<&toml::Value>, base_dir: &Path) -> PathBuf {
    match agent
        .and_then(|a| a.get("profiles_dir"))
        .and_then(toml::Value::as_str)
    {
        Some(dir) if !dir.is_empty() => base_dir.join(dir),
        _ => default_profiles_dir(base_dir, Path::is_dir),
    }
}

/// `profiles_dir` when the file has none: `devices/` beside the configuration's directory if
/// it is a directory (a source checkout: `config/demo.toml` uses `devices/`), otherwise the
/// packaged profiles. A hand-written `/etc/linesentry/agent.toml` thus finds
/// `/usr/share/linesentry/devices`, never a stray `/etc/devices` that does not exist.
fn default_profiles_dir(base_dir: &Path, is_dir: impl Fn(&Path) -> bool) -> PathBuf {
    let beside = base_dir.join(defaults::PROFILES_DIR);
    if is_dir(&beside) {
        beside
    } else {
        PathBuf::from(defaults::PACKAGED_PROFILES_DIR)
    }
}

/// `[buffer]`; `dir` and `gateway_id` are left empty for `load_str` to fill in from `[agent]`.
pub(super) fn buffer(report: &mut Report<'_>, value: Option<toml::Value>) -> Option<QueueOptions> {
    let raw = match value {
        Some(value) => report.deserialize::<raw::Buffer>("buffer", value)?,
        None => raw::Buffer::default(),
    };
    let quota = report.int("buffer.quota_mib", raw.quota_mib, defaults::QUOTA_MIB);
    let commit = report.int(
        "buffer.commit_max_events",
        raw.commit_max_events,
        defaults::COMMIT_MAX_EVENTS,
    );
    let linger = report.int(
        "buffer.commit_linger_ms",
        raw.commit_linger_ms,
        defaults::COMMIT_LINGER_MS,
    );
    let routine = report.int(
        "buffer.routine_commit_ms",
        raw.routine_commit_ms,
        defaults::ROUTINE_COMMIT_MS,
    );
    let watermark = report.int(
        "buffer.high_watermark_percent",
        raw.high_watermark_percent,
        defaults::HIGH_WATERMARK_PERCENT,
    );
    let drop_report = report.int(
        "buffer.drop_report_interval_s",
        raw.drop_report_interval_s,
        defaults::DROP_REPORT_INTERVAL_S,
    );
    let max_event = report.int(
        "buffer.max_event_kib",
        raw.max_event_kib,
        defaults::MAX_EVENT_KIB,
    );
    let cache = report.int("buffer.cache_mib", raw.cache_mib, defaults::CACHE_MIB);
    Some(QueueOptions {
        quota_bytes: quota? as u64 * 1024 * 1024,
        commit_max_events: commit? as usize,
        commit_linger: Duration::from_millis(linger? as u64),
        routine_commit: Duration::from_millis(routine? as u64),
        high_watermark_percent: watermark? as u8,
        drop_report_interval: Duration::from_secs(drop_report? as u64),
        max_event_bytes: max_event? as usize * 1024,
        cache_bytes: cache? as usize * 1024 * 1024,
        ..QueueOptions::new(PathBuf::new(), String::new())
    })
}

pub(super) fn log(report: &mut Report<'_>, value: Option<toml::Value>) -> Option<LogSettings> {
    let raw = match value {
        Some(value) => report.deserialize::<raw::Log>("log", value)?,
        None => raw::Log::default(),
    };
    let format = report.choice::<LogFormat>(
        "log.format",
        raw.format.as_deref().unwrap_or(defaults::LOG_FORMAT),
    );
    let level = raw.level.unwrap_or_else(|| defaults::LOG_LEVEL.to_owned());
    if let Err(why) = check_filter(&level) {
        report.error(
            "log.level",
            format!("{why}; expected a tracing filter such as `info` or `warn,linesentry=debug`, found `{}`", level.escape_debug()),
        );
        return None;
    }
    Some(LogSettings {
        format: format?,
        level,
    })
}

const LEVELS: &[&str] = &["off", "error", "warn", "info", "debug", "trace"];

/// A light check of an `EnvFilter` directive list: `level`, `target`, `target=level`,
/// separated by commas. Span filters (`[...]`) are passed through unchecked.
fn check_filter(filter: &str) -> Result<(), String> {
    if filter.trim().is_empty() {
        return Err("the filter is empty".to_owned());
    }
    for directive in filter.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        if directive.contains('[') {
            continue;
        }
        let (target, level) = match directive.rsplit_once('=') {
            Some((target, level)) => (target, Some(level)),
            None => (directive, None),
        };
        if let Some(level) = level {
            if !LEVELS.contains(&level.to_ascii_lowercase().as_str()) {
                return Err(format!(
                    "unknown level `{level}` (levels are {})",
                    LEVELS.join(", ")
                ));
            }
        }
        let target_ok = !target.is_empty()
            && target
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b':' | b'-' | b'.'));
        if !target_ok {
            return Err(format!(
                "`{}` is not a level or a module target",
                target.escape_debug()
            ));
        }
    }
    Ok(())
}

/// `[severity]`: `"event.type" = "level"` overrides of the catalogue defaults.
pub(super) fn severity(report: &mut Report<'_>, value: Option<toml::Value>) -> Option<SeverityMap> {
    let table = match value {
        None => return Some(SeverityMap::default()),
        Some(toml::Value::Table(table)) => table,
        Some(other) => {
            report.error(
                "severity",
                format!(
                    "expected a table of event type = severity, found {}",
                    type_name(&other)
                ),
            );
            return None;
        }
    };
    let before = report.error_count();
    let mut overrides = BTreeMap::new();
    for (event_type, level) in table {
        let at = child("severity", &event_type);
        let level = match level {
            toml::Value::String(level) => level,
            toml::Value::Table(nested) => {
                let example = nested
                    .keys()
                    .next()
                    .map_or(event_type.clone(), |k| format!("{event_type}.{k}"));
                report.error(
                    &at,
                    format!("expected a severity name, found a table; quote dotted event types: \"{example}\" = \"warn\""),
                );
                continue;
            }
            other => {
                report.error(
                    &at,
                    format!(
                        "expected one of debug, info, warn, error, critical, found {}",
                        type_name(&other)
                    ),
                );
                continue;
            }
        };
        let Some(event_type) = EventType::from_name(&event_type).filter(|t| t.entry().is_some())
        else {
            let known = CATALOG
                .iter()
                .map(|e| format!("`{}`", e.event_type))
                .collect::<Vec<_>>()
                .join(", ");
            report.error(
                &at,
                format!(
                    "unknown event type `{}`; expected one of {known}",
                    event_type.escape_debug()
                ),
            );
            continue;
        };
        match level.parse::<Severity>() {
            Ok(level) => {
                overrides.insert(event_type, level);
            }
            Err(e) => report.error(&at, e.to_string()),
        }
    }
    (report.error_count() == before).then(|| SeverityMap::with_overrides(overrides))
}

pub(super) fn forward(
    report: &mut Report<'_>,
    value: Option<toml::Value>,
    gateway_id: Option<&str>,
    base_dir: &Path,
) -> Option<ForwardSettings> {
    // Taken apart by hand rather than as one struct so that an error in one part does not
    // hide the errors of the others.
    let mut table = match value {
        None => toml::Table::new(),
        Some(toml::Value::Table(table)) => table,
        Some(other) => {
            report.error(
                "forward",
                format!("expected a table, found {}", type_name(&other)),
            );
            return None;
        }
    };
    report.unknown_keys(
        "forward",
        &table,
        &[
            "console",
            "mqtt",
            "https",
            "strategy",
            "fallback_after_ms",
            "batch_events",
            "replay_events_per_second",
            "replay_jitter_ms",
            "upstream_down_after_ms",
        ],
    );
    let mut int_key = |report: &mut Report<'_>, key: &str, setting| match table.remove(key) {
        None => report.int(&format!("forward.{key}"), None, setting),
        Some(toml::Value::Integer(i)) => report.int(&format!("forward.{key}"), Some(i), setting),
        Some(other) => {
            report.error(
                &format!("forward.{key}"),
                format!("expected an integer, found {}", type_name(&other)),
            );
            None
        }
    };
    let fallback_after = int_key(report, "fallback_after_ms", defaults::FALLBACK_AFTER_MS);
    let batch_events = int_key(report, "batch_events", defaults::FORWARD_BATCH_EVENTS);
    let replay_rate = int_key(
        report,
        "replay_events_per_second",
        defaults::REPLAY_EVENTS_PER_SECOND,
    );
    let replay_jitter = int_key(report, "replay_jitter_ms", defaults::REPLAY_JITTER_MS);
    let down_after = int_key(
        report,
        "upstream_down_after_ms",
        defaults::UPSTREAM_DOWN_AFTER_MS,
    );
    let strategy = match table.remove("strategy") {
        None => Some(None),
        Some(toml::Value::String(s)) => report
            .choice::<Strategy>("forward.strategy", &s)
            .map(Some)
            .ok_or(())
            .ok(),
        Some(other) => {
            report.error(
                "forward.strategy",
                format!(
                    "expected one of mqtt, https, mqtt_then_https, https_then_mqtt, both; found {}",
                    type_name(&other)
                ),
            );
            None
        }
    };
    let console = match table.remove("console") {
        None => Some(defaults::CONSOLE),
        Some(toml::Value::Boolean(b)) => Some(b),
        Some(other) => {
            report.error(
                "forward.console",
                format!("expected a boolean, found {}", type_name(&other)),
            );
            None
        }
    };
    let mqtt = table
        .remove("mqtt")
        .map(|value| mqtt(report, value, gateway_id, base_dir));
    let https = table
        .remove("https")
        .map(|value| https(report, value, base_dir));
    let strategy = resolve_strategy(report, strategy?, mqtt.is_some(), https.is_some());
    Some(ForwardSettings {
        console: console?,
        mqtt: mqtt.map_or(Some(None), |m| m.map(Some))?,
        https: https.map_or(Some(None), |h| h.map(Some))?,
        strategy,
        fallback_after: Duration::from_millis(fallback_after? as u64),
        pacing: Pacing {
            batch_events: batch_events? as usize,
            replay_events_per_second: replay_rate? as u32,
            replay_jitter: Duration::from_millis(replay_jitter? as u64),
            upstream_down_after: Duration::from_millis(down_after? as u64),
        },
    })
}

/// The configured strategy, checked against the sinks present, or the default for them.
fn resolve_strategy(
    report: &mut Report<'_>,
    given: Option<Strategy>,
    has_mqtt: bool,
    has_https: bool,
) -> Strategy {
    match given {
        Some(s) => {
            let needs: &[(&str, bool)] = match s {
                Strategy::Mqtt => &[("mqtt", has_mqtt)],
                Strategy::Https => &[("https", has_https)],
                _ => &[("mqtt", has_mqtt), ("https", has_https)],
            };
            for (name, present) in needs {
                if !present {
                    report.error(
                        "forward.strategy",
                        format!("strategy needs a [forward.{name}] section, which is missing"),
                    );
                }
            }
            s
        }
        None if has_https && !has_mqtt => Strategy::Https,
        None if has_https => Strategy::MqttThenHttps,
        None => Strategy::Mqtt,
    }
}

fn mqtt(
    report: &mut Report<'_>,
    value: toml::Value,
    gateway_id: Option<&str>,
    base_dir: &Path,
) -> Option<MqttSettings> {
    const AT: &str = "forward.mqtt";
    let raw = report.deserialize::<raw::Mqtt>(AT, value)?;
    let before = report.error_count();
    if raw.host.is_empty() || raw.host.contains("://") || raw.host.contains(char::is_whitespace) {
        report.error(
            "forward.mqtt.host",
            format!(
                "expected a host name or IP address without scheme or port, found `{}`",
                raw.host.escape_debug()
            ),
        );
    }
    let tls = raw
        .tls
        .as_ref()
        .map(|t| tls(report, "forward.mqtt.tls", t, base_dir));
    let default_port = if tls.is_some() {
        defaults::MQTT_PORT_TLS
    } else {
        defaults::MQTT_PORT_PLAIN
    };
    let port = report.range(
        "forward.mqtt.port",
        raw.port.unwrap_or(default_port),
        defaults::PORT,
    );
    let session = mqtt_session(report, &raw);
    let client_id = raw.client_id.or_else(|| gateway_id.map(str::to_owned));
    if client_id.as_deref() == Some("") {
        report.error(
            "forward.mqtt.client_id",
            "expected a non-empty MQTT client id, found an empty string",
        );
    }
    let password = raw
        .password
        .as_ref()
        .and_then(|p| secret::resolve(report, "forward.mqtt.password", p, base_dir));
    if raw.password.is_some() && raw.username.is_none() {
        report.error(
            "forward.mqtt.password",
            "a password needs a user name; expected `username` alongside `password`",
        );
    }
    let topic_prefix = raw
        .topic_prefix
        .unwrap_or_else(|| defaults::TOPIC_PREFIX.to_owned());
    if topic_prefix.is_empty()
        || topic_prefix.starts_with('/')
        || topic_prefix.ends_with('/')
        || topic_prefix.contains(['+', '#'])
    {
        report.error(
            "forward.mqtt.topic_prefix",
            format!("expected topic levels without wildcards or leading/trailing `/`, such as `linesentry/v1`, found `{}`", topic_prefix.escape_debug()),
        );
    }
    let per_message = report.int(
        "forward.mqtt.events_per_message",
        raw.events_per_message,
        defaults::EVENTS_PER_MESSAGE,
    );
    let max_packet = report.int(
        "forward.mqtt.max_packet_kib",
        raw.max_packet_kib,
        defaults::MAX_PACKET_KIB,
    );
    if tls.is_none() && !is_loopback_host(&raw.host) {
        report.error(
            "forward.mqtt.tls",
            format!(
                "broker `{}` is not a loopback address: expected a [forward.mqtt.tls] table (plain MQTT is refused off this host)",
                raw.host.escape_debug()
            ),
        );
    }
    if report.error_count() > before {
        return None;
    }
    Some(MqttSettings {
        host: raw.host,
        port: port? as u16,
        client_id: client_id?,
        tls: tls.flatten(),
        username: raw.username,
        password,
        topic_prefix,
        events_per_message: per_message? as usize,
        max_packet_bytes: max_packet? as usize * 1024,
        protocol: session.0?,
        keep_alive: session.1?,
        ack_timeout: session.2?,
        inflight: session.3?,
    })
}

type Session = (
    Option<MqttProtocol>,
    Option<Duration>,
    Option<Duration>,
    Option<u16>,
);

/// Protocol version, keep-alive, ack timeout and in-flight window of `[forward.mqtt]`.
fn mqtt_session(report: &mut Report<'_>, raw: &raw::Mqtt) -> Session {
    let protocol = report.choice::<MqttProtocol>(
        "forward.mqtt.protocol",
        raw.protocol.as_deref().unwrap_or(defaults::MQTT_PROTOCOL),
    );
    let keep_alive = report.int(
        "forward.mqtt.keep_alive_s",
        raw.keep_alive_s,
        defaults::MQTT_KEEP_ALIVE_S,
    );
    let ack_timeout = report.int(
        "forward.mqtt.ack_timeout_ms",
        raw.ack_timeout_ms,
        defaults::MQTT_ACK_TIMEOUT_MS,
    );
    let inflight = report.int(
        "forward.mqtt.inflight",
        raw.inflight,
        defaults::MQTT_INFLIGHT,
    );
    (
        protocol,
        keep_alive.map(|s| Duration::from_secs(s as u64)),
        ack_timeout.map(|ms| Duration::from_millis(ms as u64)),
        inflight.map(|n| n as u16),
    )
}

fn https(report: &mut Report<'_>, value: toml::Value, base_dir: &Path) -> Option<HttpsSettings> {
    let raw = report.deserialize::<raw::Https>("forward.https", value)?;
    let before = report.error_count();
    if let Err(why) = check_https_url(&raw.url) {
        report.error(
            "forward.https.url",
            format!(
                "{why}; expected an https:// URL (http:// only to a loopback host), found `{}`",
                raw.url.escape_debug()
            ),
        );
    }
    let tls = raw
        .tls
        .as_ref()
        .map(|t| tls(report, "forward.https.tls", t, base_dir));
    let token = raw
        .bearer_token
        .as_ref()
        .and_then(|t| secret::resolve(report, "forward.https.bearer_token", t, base_dir));
    let batch = report.int(
        "forward.https.batch_events",
        raw.batch_events,
        defaults::HTTPS_BATCH_EVENTS,
    );
    let timeout = report.int(
        "forward.https.timeout_ms",
        raw.timeout_ms,
        defaults::HTTPS_TIMEOUT_MS,
    );
    if report.error_count() > before {
        return None;
    }
    Some(HttpsSettings {
        url: raw.url,
        tls: tls.flatten(),
        bearer_token: token,
        batch_events: batch? as usize,
        timeout: Duration::from_millis(timeout? as u64),
    })
}

/// `https://host...`, or `http://` to `localhost`, `127.0.0.0/8` or `[::1]`.
fn check_https_url(url: &str) -> Result<(), &'static str> {
    let (plain, rest) = if let Some(rest) = url.strip_prefix("https://") {
        (false, rest)
    } else if let Some(rest) = url.strip_prefix("http://") {
        (true, rest)
    } else {
        return Err("not an https:// URL");
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = if let Some(v6) = host_port.strip_prefix('[') {
        v6.split_once(']').map_or(v6, |(h, _)| h)
    } else {
        host_port.split(':').next().unwrap_or_default()
    };
    if host.is_empty() {
        return Err("the URL has no host");
    }
    if plain && !is_loopback_host(host) {
        return Err("plain http is refused for a non-loopback host");
    }
    Ok(())
}

/// `localhost`, `127.0.0.0/8` or `::1`.
fn is_loopback_host(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// `None` inside when a path is wrong (already reported).
fn tls(report: &mut Report<'_>, at: &str, raw: &raw::Tls, base_dir: &Path) -> Option<TlsSettings> {
    let path = |report: &mut Report<'_>,
                key: &str,
                given: Option<&String>|
     -> Result<Option<PathBuf>, ()> {
        match given {
            None => Ok(None),
            Some(p) if p.is_empty() => {
                report.error(
                    &child(at, key),
                    "expected a file path, found an empty string",
                );
                Err(())
            }
            Some(p) => Ok(Some(base_dir.join(p))),
        }
    };
    let ca_file = path(report, "ca_file", raw.ca_file.as_ref());
    let client_cert = path(report, "client_cert", raw.client_cert.as_ref());
    let client_key = path(report, "client_key", raw.client_key.as_ref());
    match (&raw.client_cert, &raw.client_key) {
        (Some(_), None) => report.error(
            &child(at, "client_key"),
            "missing required key `client_key`; expected it alongside `client_cert`",
        ),
        (None, Some(_)) => report.error(
            &child(at, "client_cert"),
            "missing required key `client_cert`; expected it alongside `client_key`",
        ),
        _ => {}
    }
    Some(TlsSettings {
        ca_file: ca_file.ok()?,
        client_cert: client_cert.ok()?,
        client_key: client_key.ok()?,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn without_profiles_dir_a_checkout_uses_devices_beside_config_and_an_install_the_packaged_ones()
    {
        let checkout = Path::new("/home/me/linesentry/config");
        let devices = Path::new("/home/me/linesentry/config/../devices");
        assert_eq!(
            default_profiles_dir(checkout, |p| p == devices),
            devices,
            "a source checkout keeps its own devices/"
        );
        assert_eq!(
            default_profiles_dir(Path::new("/etc/linesentry"), |_| false),
            Path::new("/usr/share/linesentry/devices")
        );
        // What a station of a hand-written /etc/linesentry/agent.toml is looked up in.
        let text = "[agent]\ngateway_id = \"gw\"\nsite = \"s\"\ndata_dir = \"/var/lib/linesentry\"\n\
                    [[stations]]\nid = \"p\"\nprofile = \"no_such_profile_here\"\nsource = \"simulated\"\n";
        let errors =
            crate::config::load_str(Path::new("/etc/linesentry/agent.toml"), text).unwrap_err();
        let text = errors.to_string();
        assert!(
            text.contains("/usr/share/linesentry/devices/no_such_profile_here.toml"),
            "{text}"
        );
        assert!(!text.contains("/etc/linesentry/../devices"), "{text}");
        // An explicit key still wins, relative to the file.
        assert_eq!(
            profiles_dir(
                Some(&toml::toml! { profiles_dir = "p" }.into()),
                Path::new("/etc/linesentry")
            ),
            Path::new("/etc/linesentry/p")
        );
    }

    #[test]
    fn routine_commit_defaults_to_100_ms_and_an_out_of_range_value_names_file_line_and_key() {
        let base = "[agent]\ngateway_id = \"gw\"\nsite = \"s\"\ndata_dir = \"d\"\n[buffer]\n";
        let path = std::path::Path::new("/etc/ls/agent.toml");
        let config = crate::config::load_str(path, base).unwrap();
        assert_eq!(config.buffer.routine_commit, Duration::from_millis(100));
        let config =
            crate::config::load_str(path, &format!("{base}routine_commit_ms = 0\n")).unwrap();
        assert_eq!(config.buffer.routine_commit, Duration::ZERO);
        let errors = crate::config::load_str(path, &format!("{base}routine_commit_ms = 1001\n"))
            .unwrap_err();
        let e = &errors.0[0];
        assert_eq!(errors.0.len(), 1);
        assert_eq!(e.file, path);
        assert_eq!(e.line, Some(6));
        assert_eq!(e.key_path, "buffer.routine_commit_ms");
        assert!(
            e.message.contains("between 0 and 1000 (ms)"),
            "{}",
            e.message
        );
    }

    use super::*;

    #[test]
    fn filters_accept_levels_targets_and_target_levels() {
        for ok in [
            "info",
            "warn,linesentry=debug",
            "linesentry::buffer=trace",
            "off",
            "h2",
            "INFO",
        ] {
            assert_eq!(check_filter(ok), Ok(()), "{ok}");
        }
        for bad in ["", "linesentry=loud", "a b"] {
            assert!(check_filter(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn plain_http_is_only_allowed_to_loopback_hosts() {
        for ok in [
            "https://collector.example.com/v1/events",
            "http://127.0.0.1:8080/ingest",
            "http://localhost/ingest",
            "http://[::1]:9000/",
            "https://user@host:443/x",
        ] {
            assert_eq!(check_https_url(ok), Ok(()), "{ok}");
        }
        for bad in [
            "http://10.0.0.5/ingest",
            "ftp://x",
            "https://",
            "http://127.0.0.1.evil.com/",
        ] {
            assert!(check_https_url(bad).is_err(), "{bad}");
        }
    }
}
