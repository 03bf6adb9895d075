//! The TOML shapes as written, before validation. Every table denies unknown keys. Integers
//! are read as `i64` and optional values as `Option` so that validation can tell "not given"
//! from "given" and report ranges in the user's units; defaults live in [`super::defaults`].
//! Secrets stay `toml::Value` so that no serde message can ever quote one.

use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Agent {
    pub(super) gateway_id: String,
    pub(super) site: String,
    pub(super) data_dir: String,
    pub(super) shutdown_grace_ms: Option<i64>,
    pub(super) profiles_dir: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Buffer {
    pub(super) quota_mib: Option<i64>,
    pub(super) commit_max_events: Option<i64>,
    pub(super) commit_linger_ms: Option<i64>,
    pub(super) routine_commit_ms: Option<i64>,
    pub(super) high_watermark_percent: Option<i64>,
    pub(super) drop_report_interval_s: Option<i64>,
    pub(super) max_event_kib: Option<i64>,
    pub(super) cache_mib: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Log {
    pub(super) format: Option<String>,
    pub(super) level: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Station {
    pub(super) id: String,
    pub(super) profile: String,
    pub(super) source: String,
    // modbus_tcp
    pub(super) address: Option<String>,
    // modbus_tcp, modbus_rtu
    pub(super) unit_id: Option<i64>,
    // modbus_rtu
    pub(super) device: Option<String>,
    pub(super) baud: Option<i64>,
    pub(super) parity: Option<String>,
    pub(super) data_bits: Option<i64>,
    pub(super) stop_bits: Option<i64>,
    // opcua
    pub(super) endpoint_url: Option<String>,
    pub(super) security_mode: Option<String>,
    pub(super) security_policy: Option<String>,
    pub(super) identity: Option<Identity>,
    pub(super) acquisition: Option<String>,
    pub(super) queue_size: Option<i64>,
    pub(super) watchdog_intervals: Option<i64>,
    // modbus_tcp, modbus_rtu: coalescing, circuit breaker, device identification
    pub(super) max_gap: Option<i64>,
    pub(super) max_read_registers: Option<i64>,
    pub(super) max_read_bits: Option<i64>,
    pub(super) breaker_failures: Option<i64>,
    pub(super) breaker_open_ms: Option<i64>,
    pub(super) breaker_open_max_ms: Option<i64>,
    pub(super) identity_every_polls: Option<i64>,
    // modbus_tcp, opcua
    pub(super) reconnect_initial_ms: Option<i64>,
    pub(super) reconnect_max_ms: Option<i64>,
    // every kind
    pub(super) poll_interval_ms: Option<i64>,
    pub(super) timeout_ms: Option<i64>,
    pub(super) enabled: Option<bool>,
    pub(super) change_windows: Option<Vec<ChangeWindow>>,
}

/// One element of a station's `change_windows`. The times stay `toml::Value` so that both a
/// quoted RFC 3339 string and a TOML date-time literal are accepted (and checked) later.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ChangeWindow {
    pub(super) start: toml::Value,
    pub(super) end: toml::Value,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Identity {
    pub(super) kind: String,
    pub(super) user: Option<String>,
    pub(super) password: Option<toml::Value>,
    pub(super) cert: Option<String>,
    pub(super) key: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Mqtt {
    pub(super) host: String,
    pub(super) port: Option<i64>,
    pub(super) client_id: Option<String>,
    pub(super) tls: Option<Tls>,
    pub(super) username: Option<String>,
    pub(super) password: Option<toml::Value>,
    pub(super) topic_prefix: Option<String>,
    pub(super) events_per_message: Option<i64>,
    pub(super) max_packet_kib: Option<i64>,
    pub(super) protocol: Option<String>,
    pub(super) keep_alive_s: Option<i64>,
    pub(super) ack_timeout_ms: Option<i64>,
    pub(super) inflight: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Https {
    pub(super) url: String,
    pub(super) tls: Option<Tls>,
    pub(super) bearer_token: Option<toml::Value>,
    pub(super) batch_events: Option<i64>,
    pub(super) timeout_ms: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Tls {
    pub(super) ca_file: Option<String>,
    pub(super) client_cert: Option<String>,
    pub(super) client_key: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Health {
    pub(super) enabled: Option<bool>,
    pub(super) listen: Option<String>,
    pub(super) tls: Option<HealthTls>,
    pub(super) token: Option<toml::Value>,
    pub(super) stall_after_ms: Option<i64>,
}

/// Both keys are required; they are `Option` so that validation names the missing one with
/// what it must hold.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct HealthTls {
    pub(super) cert_file: Option<String>,
    pub(super) key_file: Option<String>,
}

/// `[profile]` of a station profile.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ProfileHeader {
    pub(super) name: String,
    pub(super) description: Option<String>,
    pub(super) protocol: String,
    pub(super) addressing: Option<String>,
}

/// One `[[tags]]` element of a station profile.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Tag {
    pub(super) name: String,
    pub(super) role: String,
    /// Required; optional here so that a `type` of the wrong TOML kind, reported and left
    /// out by `deserialize_keys`, does not stop the tag's other checks.
    #[serde(rename = "type")]
    pub(super) data_type: Option<String>,
    pub(super) order: Option<String>,
    pub(super) area: Option<String>,
    pub(super) address: Option<i64>,
    pub(super) bit: Option<i64>,
    pub(super) length: Option<i64>,
    pub(super) node_id: Option<String>,
    pub(super) scale: Option<f64>,
    pub(super) offset: Option<f64>,
    pub(super) unit: Option<String>,
    /// Raw value -> name; TOML keys are strings, parsed as integers by validation.
    pub(super) states: Option<std::collections::BTreeMap<String, String>>,
    pub(super) limits: Option<Limits>,
    // rule tuning of this tag; `None` falls back to the profile's `[rules]`
    pub(super) deadband: Option<f64>,
    pub(super) deadband_percent: Option<f64>,
    pub(super) heartbeat_s: Option<i64>,
    pub(super) debounce_ms: Option<i64>,
    pub(super) stale_after_s: Option<i64>,
    pub(super) trend_points: Option<i64>,
    pub(super) trend_margin_percent: Option<f64>,
    /// Names of the alarm-limit tags holding this measurement's alarm limits, and of the
    /// alarm-active tag that shows its alarm.
    pub(super) alarm_high: Option<String>,
    pub(super) alarm_low: Option<String>,
    pub(super) alarm_active: Option<String>,
    /// OPC UA monitored-item deadband, applied by the server.
    pub(super) server_deadband: Option<ServerDeadband>,
}

/// `server_deadband = { absolute = 0.5 }` or `{ percent = 1.0 }` (of the node's EURange).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ServerDeadband {
    pub(super) absolute: Option<f64>,
    pub(super) percent: Option<f64>,
}

/// `[diagnostics]` of a Modbus station profile: the device's diagnostic counters
/// (FC 08 / FC 11) the poller reads; every key optional.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Diagnostics {
    pub(super) counters: Option<Vec<String>>,
    pub(super) every_s: Option<i64>,
}

/// `[rules]` of a station profile: station-wide rule tuning, every key optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Rules {
    pub(super) unreachable_after: Option<i64>,
    pub(super) unreachable_escalate_after_s: Option<i64>,
    pub(super) status_heartbeat_s: Option<i64>,
    pub(super) measurement_heartbeat_s: Option<i64>,
    pub(super) deadband_percent: Option<f64>,
    pub(super) quality_window: Option<i64>,
    pub(super) quality_failures: Option<i64>,
    pub(super) auth_burst: Option<i64>,
    pub(super) auth_window_s: Option<i64>,
    pub(super) exception_burst: Option<i64>,
    pub(super) exception_window_s: Option<i64>,
    pub(super) diag_scan_exceptions_per_min: Option<i64>,
    pub(super) diag_flood_messages_per_s: Option<i64>,
    pub(super) stale_after_s: Option<i64>,
    pub(super) clock_skew_ms: Option<i64>,
    pub(super) session_margin: Option<i64>,
    pub(super) trend_points: Option<i64>,
    pub(super) trend_margin_percent: Option<f64>,
    pub(super) alarm_grace_s: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Limits {
    pub(super) min: f64,
    pub(super) max: f64,
}
