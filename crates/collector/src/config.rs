//! The collector's TOML configuration: raw tables in, validated [`Settings`] out.
//!
//! Tables and keys are strict (`deny_unknown_fields`). Errors are
//! `linesentry_common::config`'s, like the agent's: `collector.toml:LINE: \`key.path\`:
//! message`, every problem at once. A file that does not parse is one error at the line of
//! the syntax error; each top-level table is deserialised on its own (an error at the exact
//! key serde stopped at), so a bad table does not hide another; when every table
//! deserialised, validation adds each semantic problem at the line of its key. Defaults live in [`defaults`]. Secrets are references
//! (`{ env = "VAR" }` or `{ file = "/path" }`), resolved at load and never printed.
//! `config/collector.toml` documents every key.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use super::db::{tls as db_tls, DbOptions, DbTls, SslMode};
use super::decode::Limits;
use linesentry_common::config::Report;
use linesentry_common::Secret;
use linesentry_event::Severity;
use linesentry_siem::syslog::SyslogOptions;
use linesentry_siem::transport::{Framing, Protocol, TlsSettings, TransportSettings};
use linesentry_siem::Format;

/// Every default in one place.
pub mod defaults {
    pub const COLLECTOR_ID: &str = "collector";
    pub const POOL_SIZE: usize = 12;
    pub const CONNECT_TIMEOUT_S: u64 = 10;
    pub const STATEMENT_TIMEOUT_S: u64 = 60;
    pub const RETENTION_MONTHS: u32 = 13;
    pub const PARTITIONS_AHEAD: u32 = 2;
    pub const WORKERS: usize = 4;
    pub const TRANSACTION_EVENTS: usize = 2_000;
    pub const WORKER_QUEUE: usize = 256;
    pub const MAX_BODY_BYTES: usize = 8 * 1024 * 1024;
    pub const MAX_BATCH_EVENTS: usize = 10_000;
    pub const GAP_AFTER_S: u64 = 300;
    pub const MAX_FUTURE_S: u64 = 86_400;
    pub const REQUEST_TIMEOUT_S: u64 = 30;
    pub const MQTT_PORT_TLS: u16 = 8883;
    pub const MQTT_PORT_PLAIN: u16 = 1883;
    pub const TOPIC_PREFIX: &str = "linesentry/v1";
    pub const KEEP_ALIVE_S: u64 = 30;
    pub const STREAM_CLIENT_QUEUE: usize = 1_024;
    pub const STREAM_MAX_CLIENTS: usize = 200;
    pub const WEBHOOK_TIMEOUT_MS: u64 = 5_000;
    pub const WEBHOOK_MAX_ATTEMPTS: u32 = 10;
    pub const SIEM_TIMEOUT_MS: u64 = 10_000;
    pub const SIEM_BATCH: usize = 500;
    pub const SIEM_RELP_WINDOW: usize = 128;
    /// Failed attempts in a row before `siem.delivery_failed` is recorded.
    pub const SIEM_FAILED_AFTER: u32 = 3;
}

pub use linesentry_common::config::{ConfigError, ConfigErrors};

/// Validated settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Name of this collector in the events it makes itself (their `gateway_id`).
    pub collector_id: String,
    pub database: DbOptions,
    pub retention: Retention,
    pub ingest: IngestSettings,
    pub http: HttpSettings,
    pub mqtt: Option<MqttSettings>,
    pub stream: StreamSettings,
    pub alerts: AlertSettings,
    /// `[[siem]]`: where events are exported to, in configuration order.
    pub siem: Vec<SiemDestination>,
}

#[derive(Debug, Clone, Copy)]
pub struct Retention {
    /// Month partitions kept besides the current one.
    pub months: u32,
    pub partitions_ahead: u32,
}

#[derive(Debug, Clone)]
pub struct IngestSettings {
    pub workers: usize,
    /// Most events committed in one database transaction (batches are never split).
    pub transaction_events: usize,
    /// Jobs waiting per worker before senders wait (MQTT stops reading, HTTPS waits).
    pub worker_queue: usize,
    pub limits: Limits,
    /// How long an event waits for its predecessor before the seq gap is declared.
    pub gap_after: Duration,
}

#[derive(Debug, Clone)]
pub struct HttpSettings {
    pub listen: SocketAddr,
    /// None: plain HTTP (loopback only).
    pub tls: Option<TlsFiles>,
    pub request_timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// CA of gateway client certificates; enables mTLS ingest.
    pub client_ca: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct MqttSettings {
    pub host: String,
    pub port: u16,
    pub client_id: String,
    /// `$share/{group}/...` so several collectors split the load; None: plain subscription.
    pub share_group: Option<String>,
    pub topic_prefix: String,
    pub tls: Option<MqttTls>,
    pub username: Option<String>,
    pub password: Option<Secret>,
    pub keep_alive: Duration,
    pub protocol: MqttProtocol,
}

/// `mqtt.protocol`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MqttProtocol {
    /// MQTT 3.1.1: a persistent session with `clean_session = false`.
    V311,
    /// MQTT 5: `clean_start = false` and a session that never expires.
    V5,
}

#[derive(Debug, Clone)]
pub struct MqttTls {
    pub ca_file: PathBuf,
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy)]
pub struct StreamSettings {
    pub client_queue: usize,
    pub max_clients: usize,
}

#[derive(Debug, Clone)]
pub struct AlertSettings {
    pub rules: Vec<AlertRule>,
    pub webhooks: Vec<Webhook>,
}

/// A burst rule: `threshold` matching events within `window` for one group raise an alert.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertRule {
    pub name: String,
    pub event_type: String,
    /// JSON containment on event_data (`{"result": "fail"}`).
    pub matches: Option<serde_json::Map<String, Value>>,
    pub group_by: GroupBy,
    pub threshold: u32,
    pub window: Duration,
    pub severity: Severity,
    pub description: String,
}

/// What a rule counts per.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupBy {
    User,
    SourceIp,
    /// The station an event is about, per gateway (`gw/station`): see `Gateway`.
    Station,
    /// The gateway an event is about: its sender, or for the collector's own reports
    /// `event_data.source_gateway` (they are filed under the collector's id).
    Gateway,
    /// All gateways together.
    Everything,
}

impl GroupBy {
    pub const NAMES: &'static str = "user_id, source_ip, station_id, gateway_id, all";

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "user_id" => GroupBy::User,
            "source_ip" => GroupBy::SourceIp,
            "station_id" => GroupBy::Station,
            "gateway_id" => GroupBy::Gateway,
            "all" => GroupBy::Everything,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            GroupBy::User => "user_id",
            GroupBy::SourceIp => "source_ip",
            GroupBy::Station => "station_id",
            GroupBy::Gateway => "gateway_id",
            GroupBy::Everything => "all",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Webhook {
    pub name: String,
    pub url: String,
    pub min_severity: Severity,
    /// Only these rules; empty: every rule.
    pub rules: Vec<String>,
    pub timeout: Duration,
    pub max_attempts: u32,
    /// Key of the `X-Linesentry-Signature` HMAC-SHA256 header.
    pub secret: Option<Secret>,
    /// Extra CA for an internal HTTPS endpoint.
    pub ca_file: Option<PathBuf>,
}

/// One `[[siem]]` destination.
#[derive(Debug, Clone)]
pub struct SiemDestination {
    pub name: String,
    pub transport: TransportSettings,
    pub format: Format,
    /// RFC 5424 framing around the body (every transport but `https`).
    pub syslog: SyslogOptions,
    pub filter: SiemFilter,
    /// Events per send.
    pub batch: usize,
}

/// Which committed events a destination exports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiemFilter {
    pub min_severity: Severity,
    /// Event type prefixes (`security.`, `auth.failed`); empty: every type.
    pub type_prefixes: Vec<String>,
    /// Gateways the event is about (the sender, or `event_data.source_gateway` of the
    /// collector's own events); empty: every gateway and the collector's own events.
    pub gateways: Vec<String>,
}

impl SiemFilter {
    /// Whether an event of `event_type` and `severity` about `gateway` is exported.
    pub fn matches(&self, event_type: &str, severity: Severity, gateway: Option<&str>) -> bool {
        severity >= self.min_severity
            && (self.type_prefixes.is_empty()
                || self
                    .type_prefixes
                    .iter()
                    .any(|p| event_type.starts_with(p.as_str())))
            && (self.gateways.is_empty()
                || gateway.is_some_and(|g| self.gateways.iter().any(|x| x == g)))
    }
}

// ---- raw TOML ----

/// The top-level tables, each deserialised on its own.
#[derive(Debug)]
struct Raw {
    collector: RawCollector,
    database: RawDatabase,
    retention: RawRetention,
    ingest: RawIngest,
    http: RawHttp,
    mqtt: Option<RawMqtt>,
    stream: RawStream,
    alerts: RawAlerts,
    siem: Vec<RawSiem>,
}

/// Top-level tables of a collector configuration.
const SECTIONS: &[&str] = &[
    "collector",
    "database",
    "retention",
    "ingest",
    "http",
    "mqtt",
    "stream",
    "alerts",
    "siem",
];

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCollector {
    id: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDatabase {
    url: String,
    password: Option<toml::Value>,
    pool_size: Option<usize>,
    connect_timeout_s: Option<u64>,
    statement_timeout_s: Option<u64>,
    sslmode: Option<String>,
    ca_file: Option<PathBuf>,
    client_cert: Option<PathBuf>,
    client_key: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRetention {
    months: Option<u32>,
    partitions_ahead: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIngest {
    workers: Option<usize>,
    transaction_events: Option<usize>,
    worker_queue: Option<usize>,
    max_body_bytes: Option<usize>,
    max_batch_events: Option<usize>,
    gap_after_s: Option<u64>,
    max_future_s: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttp {
    listen: String,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    client_ca: Option<PathBuf>,
    #[serde(default)]
    plain: bool,
    request_timeout_s: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMqtt {
    host: String,
    port: Option<u16>,
    client_id: String,
    share_group: Option<String>,
    topic_prefix: Option<String>,
    ca_file: Option<PathBuf>,
    client_cert: Option<PathBuf>,
    client_key: Option<PathBuf>,
    #[serde(default)]
    plain: bool,
    username: Option<String>,
    password: Option<toml::Value>,
    keep_alive_s: Option<u64>,
    protocol: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStream {
    client_queue: Option<usize>,
    max_clients: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAlerts {
    /// Keep the built-in rules besides the configured ones (default true).
    default_rules: Option<bool>,
    #[serde(default)]
    rules: Vec<RawRule>,
    #[serde(default)]
    webhooks: Vec<RawWebhook>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    name: String,
    event_type: String,
    #[serde(rename = "match")]
    matches: Option<toml::Table>,
    group_by: String,
    threshold: u32,
    window_s: u64,
    severity: Option<String>,
    description: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWebhook {
    name: String,
    url: String,
    min_severity: Option<String>,
    #[serde(default)]
    rules: Vec<String>,
    timeout_ms: Option<u64>,
    max_attempts: Option<u32>,
    secret: Option<toml::Value>,
    ca_file: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSiem {
    name: String,
    transport: String,
    address: String,
    format: Option<String>,
    framing: Option<String>,
    min_severity: Option<String>,
    #[serde(default)]
    types: Vec<String>,
    #[serde(default)]
    gateways: Vec<String>,
    ca_file: Option<PathBuf>,
    client_cert: Option<PathBuf>,
    client_key: Option<PathBuf>,
    server_name: Option<String>,
    /// RELP only: `false` sends in the clear (loopback or `insecure`).
    tls: Option<bool>,
    insecure: Option<bool>,
    timeout_ms: Option<u64>,
    batch: Option<usize>,
    relp_window: Option<usize>,
    max_message: Option<usize>,
    facility: Option<u8>,
    app_name: Option<String>,
    enterprise: Option<u32>,
    /// HTTPS: sent as `Authorization: Bearer <token>`.
    token: Option<toml::Value>,
}

/// Loads and validates `path`.
pub fn load(path: &Path) -> Result<Settings, ConfigErrors> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors(vec![ConfigError {
            file: path.to_owned(),
            key_path: String::new(),
            line: None,
            message: format!("cannot read: {e}"),
        }])
    })?;
    let base = path.parent().unwrap_or(Path::new("."));
    parse(&text, path, base)
}

/// Parses and validates TOML text; relative paths are taken from `base_dir`.
pub fn parse(text: &str, file: &Path, base_dir: &Path) -> Result<Settings, ConfigErrors> {
    let mut report = Report::new(file, text);
    let raw = report.parse().and_then(|table| raw(&mut report, table));
    let Some(raw) = raw.filter(|_| report.error_count() == 0) else {
        return Err(in_line_order(report.into_errors()));
    };
    let mut v = Validator {
        report,
        base: base_dir.to_owned(),
    };
    let settings = v.settings(raw);
    let errors = v.report.into_errors();
    if errors.is_empty() {
        Ok(settings)
    } else {
        Err(in_line_order(errors))
    }
}

/// The errors in the order of their lines (file-level ones first), as the agent's.
fn in_line_order(mut errors: Vec<ConfigError>) -> ConfigErrors {
    errors.sort_by_key(|e| e.line.unwrap_or(0));
    ConfigErrors(errors)
}

/// Every top-level table deserialised on its own, so that each bad one is reported.
fn raw(report: &mut Report<'_>, mut table: toml::Table) -> Option<Raw> {
    report.unknown_keys("", &table, SECTIONS);
    let mut section = |key: &str, required: bool| match table.remove(key) {
        Some(value) => Some(value),
        None if required => {
            report.error(key, format!("missing required key `{key}`"));
            None
        }
        None => None,
    };
    let collector = section("collector", false);
    let database = section("database", true);
    let retention = section("retention", false);
    let ingest = section("ingest", false);
    let http = section("http", true);
    let mqtt = section("mqtt", false);
    let stream = section("stream", false);
    let alerts = section("alerts", false);
    let siem = section("siem", false);
    let collector = or_default(report, "collector", collector);
    let database = database.and_then(|v| report.deserialize("database", v));
    let retention = or_default(report, "retention", retention);
    let ingest = or_default(report, "ingest", ingest);
    let http = http.and_then(|v| report.deserialize("http", v));
    let mqtt = mqtt.map(|v| report.deserialize("mqtt", v));
    let stream = or_default(report, "stream", stream);
    let alerts = or_default(report, "alerts", alerts);
    let siem: Option<Vec<RawSiem>> = or_default(report, "siem", siem);
    Some(Raw {
        collector: collector?,
        database: database?,
        retention: retention?,
        ingest: ingest?,
        http: http?,
        mqtt: match mqtt {
            Some(m) => Some(m?),
            None => None,
        },
        stream: stream?,
        alerts: alerts?,
        siem: siem?,
    })
}

/// An optional table: its default when absent.
fn or_default<T: serde::de::DeserializeOwned + Default>(
    report: &mut Report<'_>,
    key: &str,
    value: Option<toml::Value>,
) -> Option<T> {
    match value {
        Some(v) => report.deserialize(key, v),
        None => Some(T::default()),
    }
}

struct Validator<'a> {
    report: Report<'a>,
    base: PathBuf,
}

impl Validator<'_> {
    fn error(&mut self, key: impl AsRef<str>, message: impl Into<String>) {
        self.report.error(key.as_ref(), message);
    }

    fn path(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_owned()
        } else {
            self.base.join(p)
        }
    }

    fn existing_file(&mut self, key: &str, p: &Path) -> PathBuf {
        let full = self.path(p);
        if !full.is_file() {
            self.error(key, format!("file {} does not exist", full.display()));
        }
        full
    }

    fn range<T: PartialOrd + fmt::Display + Copy>(
        &mut self,
        key: &str,
        value: Option<T>,
        default: T,
        min: T,
        max: T,
    ) -> T {
        let v = value.unwrap_or(default);
        if v < min || v > max {
            self.error(key, format!("{v} is out of range; expected {min} to {max}"));
            return default;
        }
        v
    }

    /// `{ env = "VAR" }` or `{ file = "/path" }`. Messages never quote a value given here.
    fn secret(&mut self, key: &str, raw: Option<toml::Value>) -> Option<Secret> {
        const EXPECTED: &str = "expected `{ env = \"VAR\" }` or `{ file = \"/path\" }`";
        let table = match raw? {
            toml::Value::Table(t) => t,
            toml::Value::String(_) => {
                self.error(key, format!("plain-text secrets are refused; {EXPECTED}"));
                return None;
            }
            other => {
                self.error(key, format!("{EXPECTED}, found a {}", other.type_str()));
                return None;
            }
        };
        let env = table.get("env").and_then(toml::Value::as_str);
        let file = table.get("file").and_then(toml::Value::as_str);
        if table.len() != 1 || env.is_none() == file.is_none() {
            self.error(key, EXPECTED);
            return None;
        }
        if let Some(var) = env {
            match std::env::var(var) {
                Ok(v) if !v.is_empty() => Some(Secret::new(v)),
                _ => {
                    self.error(
                        format!("{key}.env"),
                        format!("environment variable `{var}` is not set; expected it to hold the secret"),
                    );
                    None
                }
            }
        } else {
            let full = self.path(Path::new(file.unwrap_or_default()));
            match std::fs::read_to_string(&full) {
                Ok(v) => Some(Secret::new(v.trim_end_matches(['\n', '\r']))),
                Err(e) => {
                    self.error(
                        format!("{key}.file"),
                        format!("cannot read {}: {e}", full.display()),
                    );
                    None
                }
            }
        }
    }

    fn severity(&mut self, key: &str, raw: Option<&str>, default: Severity) -> Severity {
        match raw.map(str::parse::<Severity>) {
            None => default,
            Some(Ok(s)) => s,
            Some(Err(e)) => {
                self.error(key, e.to_string());
                default
            }
        }
    }

    fn name(&mut self, key: &str, value: &str) {
        let ok = !value.is_empty()
            && value.len() <= linesentry_event::MAX_NAME_LEN
            && value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b':'));
        if !ok {
            self.error(
                key,
                format!("`{value}`: expected 1 to 128 letters, digits, `.`, `_`, `-` or `:`"),
            );
        }
    }

    fn settings(&mut self, raw: Raw) -> Settings {
        let collector_id = raw
            .collector
            .id
            .unwrap_or_else(|| defaults::COLLECTOR_ID.to_owned());
        self.name("collector.id", &collector_id);
        let tls = self.database_tls(&raw.database);
        let database = DbOptions {
            tls,
            url: raw.database.url,
            password: self
                .secret("database.password", raw.database.password)
                .map(|s| s.expose().to_owned()),
            pool_size: self.range(
                "database.pool_size",
                raw.database.pool_size,
                defaults::POOL_SIZE,
                2,
                500,
            ),
            connect_timeout: Duration::from_secs(self.range(
                "database.connect_timeout_s",
                raw.database.connect_timeout_s,
                defaults::CONNECT_TIMEOUT_S,
                1,
                600,
            )),
            statement_timeout: Duration::from_secs(self.range(
                "database.statement_timeout_s",
                raw.database.statement_timeout_s,
                defaults::STATEMENT_TIMEOUT_S,
                1,
                3600,
            )),
        };
        let retention = Retention {
            months: self.range(
                "retention.months",
                raw.retention.months,
                defaults::RETENTION_MONTHS,
                1,
                1200,
            ),
            partitions_ahead: self.range(
                "retention.partitions_ahead",
                raw.retention.partitions_ahead,
                defaults::PARTITIONS_AHEAD,
                1,
                24,
            ),
        };
        let ingest = self.ingest(&raw.ingest, retention);
        if ingest.workers + 3 > database.pool_size {
            self.error(
                "database.pool_size",
                format!(
                    "{} is too small for {} ingest workers; expected at least workers + 3 (queries, maintenance, own events)",
                    database.pool_size, ingest.workers
                ),
            );
        }
        let http = self.http(raw.http);
        let mqtt = raw.mqtt.map(|m| self.mqtt(m));
        let stream = StreamSettings {
            client_queue: self.range(
                "stream.client_queue",
                raw.stream.client_queue,
                defaults::STREAM_CLIENT_QUEUE,
                16,
                1_000_000,
            ),
            max_clients: self.range(
                "stream.max_clients",
                raw.stream.max_clients,
                defaults::STREAM_MAX_CLIENTS,
                1,
                100_000,
            ),
        };
        let alerts = self.alerts(raw.alerts);
        let siem = self.siem(raw.siem);
        Settings {
            collector_id,
            database,
            retention,
            ingest,
            http,
            mqtt,
            stream,
            alerts,
            siem,
        }
    }

    /// A destination's TLS settings: the CA (required where TLS is used), a client
    /// certificate, the server name.
    fn siem_tls(
        &mut self,
        at: &str,
        protocol: Protocol,
        wants_tls: bool,
        d: &RawSiem,
    ) -> Option<TlsSettings> {
        let key = |k: &str| format!("{at}.{k}");
        let client_cert = match (&d.client_cert, &d.client_key) {
            (Some(c), Some(k)) => Some((
                self.existing_file(&key("client_cert"), c),
                self.existing_file(&key("client_key"), k),
            )),
            (None, None) => None,
            (Some(_), None) => {
                self.error(key("client_key"), "client_cert needs client_key");
                None
            }
            (None, Some(_)) => {
                self.error(key("client_cert"), "client_key needs client_cert");
                None
            }
        };
        if !wants_tls {
            for (k, given) in [
                ("ca_file", d.ca_file.is_some()),
                ("client_cert", d.client_cert.is_some()),
                ("server_name", d.server_name.is_some()),
            ] {
                if given {
                    self.error(key(k), format!("{protocol} without TLS has no {k}"));
                }
            }
            return None;
        }
        let Some(ca) = &d.ca_file else {
            self.error(
                key("ca_file"),
                format!("{protocol} verifies the receiver's certificate: expected the CA file that signed it"),
            );
            return None;
        };
        Some(TlsSettings {
            ca_file: self.existing_file(&key("ca_file"), ca),
            client_cert,
            server_name: d.server_name.clone(),
        })
    }

    /// A destination's RFC 5424 settings.
    fn siem_syslog(&mut self, at: &str, d: &RawSiem) -> SyslogOptions {
        let mut syslog = SyslogOptions::default();
        if let Some(f) = d.facility {
            syslog.facility = f;
        }
        if let Some(a) = d.app_name.clone() {
            syslog.app_name = a;
        }
        if let Some(e) = d.enterprise {
            syslog.enterprise = e;
        }
        if let Some(m) = d.max_message {
            syslog.max_message = m;
        }
        if let Err(linesentry_siem::EncodeError::SyslogSetting { field, reason }) =
            syslog.validate()
        {
            self.error(format!("{at}.{field}"), reason);
        }
        syslog
    }

    /// A destination's transport settings, checked by the transport itself too.
    fn siem_transport(
        &mut self,
        at: &str,
        protocol: Protocol,
        framing: Framing,
        tls: Option<TlsSettings>,
        d: &RawSiem,
    ) -> TransportSettings {
        let key = |k: &str| format!("{at}.{k}");
        let token = self.secret(&key("token"), d.token.clone());
        if token.is_some() && protocol != Protocol::Https {
            self.error(key("token"), "only https sends a token");
        }
        let mut transport = TransportSettings::new(protocol, d.address.clone());
        transport.framing = framing;
        transport.tls = tls;
        transport.insecure = d.insecure.unwrap_or(false);
        transport.timeout = Duration::from_millis(self.range(
            &key("timeout_ms"),
            d.timeout_ms,
            defaults::SIEM_TIMEOUT_MS,
            100,
            300_000,
        ));
        transport.relp_window = self.range(
            &key("relp_window"),
            d.relp_window,
            defaults::SIEM_RELP_WINDOW,
            1,
            10_000,
        );
        if let Some(t) = token {
            transport.headers.push((
                "authorization".into(),
                Secret::new(format!("Bearer {}", t.expose())),
            ));
        }
        for (k, problem) in transport.problems() {
            // A missing CA was reported above with its own words.
            if k != "ca_file" {
                self.error(key(k), problem);
            }
        }
        transport
    }

    /// `[[siem]]`: each destination's transport, format, framing and filters.
    fn siem(&mut self, raw: Vec<RawSiem>) -> Vec<SiemDestination> {
        let mut out: Vec<SiemDestination> = Vec::new();
        for (i, d) in raw.into_iter().enumerate() {
            let at = format!("siem[{i}]");
            let key = |k: &str| format!("{at}.{k}");
            self.name(&key("name"), &d.name);
            if out.iter().any(|o| o.name == d.name) {
                self.error(key("name"), format!("`{}` names two destinations", d.name));
            }
            let protocol = Protocol::from_name(&d.transport).unwrap_or_else(|| {
                self.error(
                    key("transport"),
                    format!(
                        "unknown transport `{}`; expected one of tls, relp, https, tcp, udp",
                        d.transport.escape_debug()
                    ),
                );
                Protocol::Tls
            });
            let default_format = if protocol == Protocol::Https {
                Format::Ocsf
            } else {
                Format::Cef
            };
            let format = match d.format.as_deref().map(str::parse::<Format>) {
                None => default_format,
                Some(Ok(f)) => f,
                Some(Err(e)) => {
                    self.error(key("format"), e.to_string());
                    default_format
                }
            };
            if protocol == Protocol::Https && !matches!(format, Format::Ocsf | Format::Ecs) {
                self.error(
                    key("format"),
                    "https sends JSON batches: expected ocsf or ecs",
                );
            }
            let framing = match d.framing.as_deref() {
                None | Some("octet-counting") => Framing::OctetCounting,
                Some("lf") => Framing::Lf,
                Some(other) => {
                    self.error(
                        key("framing"),
                        format!(
                            "unknown framing `{}`; expected octet-counting or lf",
                            other.escape_debug()
                        ),
                    );
                    Framing::OctetCounting
                }
            };
            if d.framing.is_some() && !matches!(protocol, Protocol::Tls | Protocol::Tcp) {
                self.error(
                    key("framing"),
                    "only the tls and tcp transports have a framing",
                );
            }
            let wants_tls = match protocol {
                Protocol::Tls | Protocol::Https => true,
                Protocol::Relp => d.tls.unwrap_or(true),
                Protocol::Tcp | Protocol::Udp => false,
            };
            if d.tls.is_some() && protocol != Protocol::Relp {
                self.error(key("tls"), "only relp has a `tls` switch (tls and https always use TLS, tcp and udp never)");
            }
            let tls = self.siem_tls(&at, protocol, wants_tls, &d);
            let transport = self.siem_transport(&at, protocol, framing, tls, &d);
            let syslog = self.siem_syslog(&at, &d);
            let min_severity = self.severity(
                &key("min_severity"),
                d.min_severity.as_deref(),
                Severity::Debug,
            );
            for (j, t) in d.types.iter().enumerate() {
                if t.is_empty() {
                    self.error(
                        format!("{at}.types[{j}]"),
                        "an empty prefix; leave `types` out to export every type",
                    );
                }
            }
            for (j, g) in d.gateways.iter().enumerate() {
                self.name(&format!("{at}.gateways[{j}]"), g);
            }
            let batch = self.range(&key("batch"), d.batch, defaults::SIEM_BATCH, 1, 10_000);
            out.push(SiemDestination {
                name: d.name,
                transport,
                format,
                syslog,
                filter: SiemFilter {
                    min_severity,
                    type_prefixes: d.types,
                    gateways: d.gateways,
                },
                batch,
            });
        }
        out
    }

    /// `sslmode` and its files. Plain text (`disable`) and an unauthenticated server
    /// (`require` without `ca_file`) only where the database is on this machine.
    fn database_tls(&mut self, raw: &RawDatabase) -> DbTls {
        let config = match raw.url.parse::<tokio_postgres::Config>() {
            Ok(c) => c,
            Err(e) => {
                self.error(
                    "database.url",
                    format!("not a PostgreSQL connection string: {e}"),
                );
                return DbTls::disabled();
            }
        };
        if config.get_hosts().is_empty() {
            self.error(
                "database.url",
                "names no host; expected postgresql://USER@HOST:PORT/DB or host=... (a directory for a Unix socket)",
            );
            return DbTls::disabled();
        }
        if config.get_ssl_mode() != tokio_postgres::config::SslMode::Prefer {
            self.error(
                "database.url",
                "sslmode in the URL is not used; set database.sslmode (disable, require or verify-full)",
            );
        }
        let local = db_tls::all_local(&config);
        let unix = config
            .get_hosts()
            .iter()
            .any(|h| !matches!(h, tokio_postgres::config::Host::Tcp(_)));
        let hosts = db_tls::describe_hosts(&config);
        let mode = match raw.sslmode.as_deref() {
            None if local => SslMode::Disable,
            None => SslMode::VerifyFull,
            Some(m) => SslMode::parse(m).unwrap_or_else(|| {
                self.error(
                    "database.sslmode",
                    format!("`{m}`: expected {}", SslMode::NAMES),
                );
                SslMode::VerifyFull
            }),
        };
        let files = raw.ca_file.is_some() || raw.client_cert.is_some() || raw.client_key.is_some();
        match mode {
            SslMode::Disable if !local => self.error(
                "database.sslmode",
                format!("disable (no TLS) is allowed for a loopback host or a Unix socket only, not {hosts}; expected verify-full with ca_file"),
            ),
            SslMode::Disable if files => self.error(
                "database.sslmode",
                "disable with ca_file, client_cert or client_key; choose one",
            ),
            SslMode::Disable => {}
            _ if unix => self.error(
                "database.sslmode",
                format!("{mode}: PostgreSQL has no TLS on a Unix socket ({hosts}); expected disable"),
            ),
            SslMode::Require if raw.ca_file.is_none() && !local => self.error(
                "database.ca_file",
                format!("require without ca_file does not authenticate the server, allowed for a loopback host only, not {hosts}; set ca_file (or sslmode verify-full)"),
            ),
            SslMode::VerifyFull if raw.ca_file.is_none() => self.error(
                "database.ca_file",
                "verify-full needs the CA (PEM) that signed the server's certificate",
            ),
            _ => {}
        }
        if raw.client_cert.is_some() != raw.client_key.is_some() {
            self.error(
                "database.client_cert",
                "client_cert and client_key go together",
            );
        }
        DbTls {
            mode,
            ca_file: raw
                .ca_file
                .as_ref()
                .map(|p| self.existing_file("database.ca_file", p)),
            client_cert: raw
                .client_cert
                .as_ref()
                .map(|p| self.existing_file("database.client_cert", p)),
            client_key: raw
                .client_key
                .as_ref()
                .map(|p| self.existing_file("database.client_key", p)),
        }
    }

    fn ingest(&mut self, raw: &RawIngest, retention: Retention) -> IngestSettings {
        let max_bytes = self.range(
            "ingest.max_body_bytes",
            raw.max_body_bytes,
            defaults::MAX_BODY_BYTES,
            1024,
            256 * 1024 * 1024,
        );
        let max_events = self.range(
            "ingest.max_batch_events",
            raw.max_batch_events,
            defaults::MAX_BATCH_EVENTS,
            1,
            1_000_000,
        );
        let max_future_s = self.range(
            "ingest.max_future_s",
            raw.max_future_s,
            defaults::MAX_FUTURE_S,
            0,
            366 * 86_400,
        );
        // Older than the retained months: retention would drop it at once.
        let max_age_days = i64::from(retention.months) * 31;
        IngestSettings {
            workers: self.range("ingest.workers", raw.workers, defaults::WORKERS, 1, 64),
            transaction_events: self.range(
                "ingest.transaction_events",
                raw.transaction_events,
                defaults::TRANSACTION_EVENTS,
                1,
                100_000,
            ),
            worker_queue: self.range(
                "ingest.worker_queue",
                raw.worker_queue,
                defaults::WORKER_QUEUE,
                1,
                100_000,
            ),
            limits: Limits {
                max_bytes,
                max_events,
                max_future_micros: i64::try_from(max_future_s).unwrap_or(0) * 1_000_000,
                max_age_micros: max_age_days * 86_400_000_000,
            },
            gap_after: Duration::from_secs(self.range(
                "ingest.gap_after_s",
                raw.gap_after_s,
                defaults::GAP_AFTER_S,
                1,
                30 * 86_400,
            )),
        }
    }

    fn http(&mut self, raw: RawHttp) -> HttpSettings {
        let listen = if let Ok(a) = raw.listen.parse::<SocketAddr>() {
            a
        } else {
            self.error(
                "http.listen",
                format!("`{}`: expected IP:PORT such as 0.0.0.0:8443", raw.listen),
            );
            SocketAddr::from(([127, 0, 0, 1], 0))
        };
        let tls = if raw.plain {
            if !listen.ip().is_loopback() {
                self.error(
                    "http.plain",
                    format!("plain HTTP is allowed on a loopback address only, not {}; set tls_cert and tls_key", listen.ip()),
                );
            }
            if raw.tls_cert.is_some() || raw.tls_key.is_some() || raw.client_ca.is_some() {
                self.error(
                    "http.plain",
                    "plain = true and TLS files together; choose one",
                );
            }
            None
        } else if let (Some(c), Some(k)) = (raw.tls_cert, raw.tls_key) {
            Some(TlsFiles {
                cert: self.existing_file("http.tls_cert", &c),
                key: self.existing_file("http.tls_key", &k),
                client_ca: raw
                    .client_ca
                    .map(|ca| self.existing_file("http.client_ca", &ca)),
            })
        } else {
            self.error(
                "http",
                "TLS is required: set tls_cert and tls_key (PEM), or plain = true on a loopback address",
            );
            None
        };
        HttpSettings {
            listen,
            tls,
            request_timeout: Duration::from_secs(self.range(
                "http.request_timeout_s",
                raw.request_timeout_s,
                defaults::REQUEST_TIMEOUT_S,
                1,
                3600,
            )),
        }
    }

    fn mqtt(&mut self, raw: RawMqtt) -> MqttSettings {
        if raw.host.is_empty() {
            self.error("mqtt.host", "must not be empty");
        }
        self.name("mqtt.client_id", &raw.client_id);
        let share_group = raw.share_group.filter(|g| !g.is_empty());
        if let Some(g) = &share_group {
            if g.contains(['/', '+', '#']) {
                self.error("mqtt.share_group", "must not contain `/`, `+` or `#`");
            }
        }
        let topic_prefix = raw
            .topic_prefix
            .unwrap_or_else(|| defaults::TOPIC_PREFIX.to_owned());
        if topic_prefix.is_empty()
            || topic_prefix.contains(['+', '#'])
            || topic_prefix.ends_with('/')
        {
            self.error(
                "mqtt.topic_prefix",
                "expected topic levels without wildcards or a trailing `/`",
            );
        }
        let tls = if raw.plain {
            if raw.ca_file.is_some() {
                self.error(
                    "mqtt.plain",
                    "plain = true and ca_file together; choose one",
                );
            }
            None
        } else if let Some(ca) = raw.ca_file {
            let ca_file = self.existing_file("mqtt.ca_file", &ca);
            if raw.client_cert.is_some() != raw.client_key.is_some() {
                self.error("mqtt.client_cert", "client_cert and client_key go together");
            }
            Some(MqttTls {
                ca_file,
                client_cert: raw
                    .client_cert
                    .map(|p| self.existing_file("mqtt.client_cert", &p)),
                client_key: raw
                    .client_key
                    .map(|p| self.existing_file("mqtt.client_key", &p)),
            })
        } else {
            self.error(
                "mqtt",
                "TLS is required: set ca_file (PEM), or plain = true for a broker on a trusted network",
            );
            None
        };
        let port = raw.port.unwrap_or(if tls.is_some() {
            defaults::MQTT_PORT_TLS
        } else {
            defaults::MQTT_PORT_PLAIN
        });
        let password = self.secret("mqtt.password", raw.password);
        let protocol = match raw.protocol.as_deref() {
            None | Some("3.1.1") => MqttProtocol::V311,
            Some("5") => MqttProtocol::V5,
            Some(other) => {
                self.error(
                    "mqtt.protocol",
                    format!("`{other}`: expected \"3.1.1\" or \"5\""),
                );
                MqttProtocol::V311
            }
        };
        MqttSettings {
            protocol,
            host: raw.host,
            port,
            client_id: raw.client_id,
            share_group,
            topic_prefix,
            tls,
            username: raw.username,
            password,
            keep_alive: Duration::from_secs(self.range(
                "mqtt.keep_alive_s",
                raw.keep_alive_s,
                defaults::KEEP_ALIVE_S,
                5,
                3600,
            )),
        }
    }

    fn alerts(&mut self, raw: RawAlerts) -> AlertSettings {
        let mut rules = if raw.default_rules.unwrap_or(true) {
            default_rules()
        } else {
            Vec::new()
        };
        for (i, r) in raw.rules.into_iter().enumerate() {
            let at = format!("alerts.rules[{i}]");
            self.name(&format!("{at}.name"), &r.name);
            if rules.iter().any(|x| x.name == r.name) {
                self.error(
                    format!("{at}.name"),
                    format!("rule `{}` is defined twice (built-in rules count; set alerts.default_rules = false to replace them)", r.name),
                );
            }
            let group_by = GroupBy::parse(&r.group_by).unwrap_or_else(|| {
                self.error(
                    format!("{at}.group_by"),
                    format!("`{}`: expected one of {}", r.group_by, GroupBy::NAMES),
                );
                GroupBy::Everything
            });
            if r.threshold == 0 || r.threshold > 100_000 {
                self.error(format!("{at}.threshold"), "expected 1 to 100000");
            }
            if r.window_s == 0 || r.window_s > 7 * 86_400 {
                self.error(format!("{at}.window_s"), "expected 1 to 604800 (7 days)");
            }
            let matches = r.matches.map(|t| match serde_json::to_value(t) {
                Ok(Value::Object(m)) => m,
                _ => serde_json::Map::new(),
            });
            rules.push(AlertRule {
                severity: self.severity(
                    &format!("{at}.severity"),
                    r.severity.as_deref(),
                    Severity::Error,
                ),
                name: r.name,
                event_type: r.event_type,
                matches,
                group_by,
                threshold: r.threshold,
                window: Duration::from_secs(r.window_s),
                description: r.description.unwrap_or_default(),
            });
        }
        let mut webhooks = Vec::new();
        for (i, w) in raw.webhooks.into_iter().enumerate() {
            let at = format!("alerts.webhooks[{i}]");
            self.name(&format!("{at}.name"), &w.name);
            let https = w.url.starts_with("https://");
            let loopback_http = w.url.starts_with("http://127.0.0.1")
                || w.url.starts_with("http://localhost")
                || w.url.starts_with("http://[::1]");
            if !https && !loopback_http {
                self.error(
                    format!("{at}.url"),
                    "expected an https:// URL (http:// only to a loopback address)",
                );
            }
            for r in &w.rules {
                if !rules.iter().any(|x| &x.name == r) {
                    self.error(format!("{at}.rules"), format!("no alert rule named `{r}`"));
                }
            }
            webhooks.push(Webhook {
                min_severity: self.severity(
                    &format!("{at}.min_severity"),
                    w.min_severity.as_deref(),
                    Severity::Warn,
                ),
                timeout: Duration::from_millis(self.range(
                    &format!("{at}.timeout_ms"),
                    w.timeout_ms,
                    defaults::WEBHOOK_TIMEOUT_MS,
                    100,
                    120_000,
                )),
                max_attempts: self.range(
                    &format!("{at}.max_attempts"),
                    w.max_attempts,
                    defaults::WEBHOOK_MAX_ATTEMPTS,
                    1,
                    1000,
                ),
                secret: self.secret(&format!("{at}.secret"), w.secret),
                ca_file: w
                    .ca_file
                    .map(|p| self.existing_file(&format!("{at}.ca_file"), &p)),
                name: w.name,
                url: w.url,
                rules: w.rules,
            });
        }
        AlertSettings { rules, webhooks }
    }
}

/// The original design's handlers as burst rules: failed logins per user and per source
/// (5 in 5 minutes, across gateways), repeated quality failures per station, equipment
/// faults, integrity violations and refused API tokens.
pub fn default_rules() -> Vec<AlertRule> {
    let rule = |name: &str,
                event_type: &str,
                group_by,
                threshold,
                window_s,
                severity,
                description: &str| AlertRule {
        name: name.into(),
        event_type: event_type.into(),
        matches: None,
        group_by,
        threshold,
        window: Duration::from_secs(window_s),
        severity,
        description: description.into(),
    };
    let mut quality = rule(
        "quality-failures",
        "quality.check",
        GroupBy::Station,
        3,
        600,
        Severity::Warn,
        "3 failed quality checks at one station within 10 minutes",
    );
    quality.matches = Some(
        serde_json::json!({ "result": "fail" })
            .as_object()
            .cloned()
            .unwrap_or_default(),
    );
    let mut api = rule(
        "api-token-failures",
        "api.access",
        GroupBy::SourceIp,
        10,
        300,
        Severity::Warn,
        "10 refused API tokens from one address within 5 minutes",
    );
    api.matches = Some(
        serde_json::json!({ "status": 401 })
            .as_object()
            .cloned()
            .unwrap_or_default(),
    );
    vec![
        rule(
            "failed-logins-user",
            "auth.failed",
            GroupBy::User,
            5,
            300,
            Severity::Error,
            "5 failed logins for one user within 5 minutes, across gateways",
        ),
        rule(
            "failed-logins-source",
            "auth.failed",
            GroupBy::SourceIp,
            5,
            300,
            Severity::Error,
            "5 failed logins from one source address within 5 minutes, across gateways",
        ),
        quality,
        rule(
            "equipment-fault",
            "equipment.fault",
            GroupBy::Station,
            1,
            300,
            Severity::Warn,
            "an equipment fault or e-stop (once per station per 5 minutes)",
        ),
        rule(
            "integrity-violation",
            "security.violation",
            GroupBy::Gateway,
            1,
            300,
            Severity::Critical,
            "a security violation: tampered, forged or missing events, or a login/scan burst",
        ),
        api,
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(text: &str) -> Result<Settings, ConfigErrors> {
        parse(text, Path::new("collector.toml"), Path::new("/nonexistent"))
    }

    const MINIMAL: &str = r#"
        [database]
        url = "postgresql://linesentry@127.0.0.1/linesentry"
        [http]
        listen = "127.0.0.1:8080"
        plain = true
    "#;

    #[test]
    fn a_minimal_loopback_config_takes_every_default() {
        let s = parse_str(MINIMAL).unwrap();
        assert_eq!(s.collector_id, "collector");
        assert_eq!(s.ingest.workers, defaults::WORKERS);
        assert!(s.http.tls.is_none() && s.mqtt.is_none());
        assert_eq!(s.alerts.rules.len(), default_rules().len());
    }

    #[test]
    fn every_problem_is_reported_at_once_with_its_key() {
        let text = r#"
            [database]
            url = "postgresql://x@h/db"
            pool_size = 0
            [http]
            listen = "0.0.0.0:8080"
            plain = true
            [ingest]
            workers = 1000
            [[alerts.rules]]
            name = "r"
            event_type = "auth.failed"
            group_by = "shoe_size"
            threshold = 0
            window_s = 60
        "#;
        let errs = parse_str(text).unwrap_err();
        let keys: Vec<&str> = errs.0.iter().map(|e| e.key_path.as_str()).collect();
        for k in [
            "database.pool_size",
            "http.plain",
            "ingest.workers",
            "alerts.rules[0].group_by",
            "alerts.rules[0].threshold",
        ] {
            assert!(keys.contains(&k), "{k} missing from {errs}");
        }
    }

    #[test]
    fn unknown_keys_are_errors_that_name_their_path() {
        let errs = parse_str(&format!("{MINIMAL}\n[ingest]\nworkerz = 3\n")).unwrap_err();
        assert_eq!(errs.0.len(), 1);
        assert!(errs.to_string().contains("workerz"), "{errs}");
    }

    #[test]
    fn the_example_config_is_valid_apart_from_its_certificate_paths() {
        let text = include_str!("../../../config/collector.toml");
        let Err(errs) = parse_str(text) else {
            return;
        };
        let other: Vec<&ConfigError> = errs
            .0
            .iter()
            .filter(|e| !e.message.contains("does not exist"))
            .collect();
        assert!(other.is_empty(), "{other:?}");
    }

    fn database(keys: &str) -> Result<Settings, ConfigErrors> {
        parse_str(&format!(
            "[database]\n{keys}\n[http]\nlisten = \"127.0.0.1:8080\"\nplain = true\n"
        ))
    }

    fn errors_of(keys: &str) -> String {
        database(keys).unwrap_err().to_string()
    }

    #[test]
    fn the_database_defaults_to_plain_on_loopback_and_verify_full_elsewhere() {
        let s = database("url = \"postgresql://ls@127.0.0.1/ls\"").unwrap();
        assert_eq!(s.database.tls.mode, SslMode::Disable);
        let s = database("url = \"host=/var/run/postgresql dbname=ls\"").unwrap();
        assert_eq!(s.database.tls.mode, SslMode::Disable);
        let e = errors_of("url = \"postgresql://ls@db.plant.local/ls\"");
        assert!(
            e.contains("database.ca_file") && e.contains("verify-full"),
            "{e}"
        );
    }

    #[test]
    fn plain_text_or_an_unauthenticated_database_is_refused_off_loopback() {
        let e = errors_of("url = \"postgresql://ls@10.1.2.3:5432/ls\"\nsslmode = \"disable\"");
        assert!(
            e.contains("database.sslmode") && e.contains("10.1.2.3:5432"),
            "{e}"
        );
        let e = errors_of("url = \"postgresql://ls@10.1.2.3/ls\"\nsslmode = \"require\"");
        assert!(e.contains("does not authenticate the server"), "{e}");
        let e = errors_of("url = \"postgresql://ls@db/ls?sslmode=disable\"\nsslmode = \"disable\"");
        assert!(e.contains("sslmode in the URL"), "{e}");
        let e = errors_of("url = \"host=/run/postgresql dbname=ls\"\nsslmode = \"verify-full\"");
        assert!(e.contains("Unix socket"), "{e}");
        let e = errors_of("url = \"postgresql://ls@127.0.0.1/ls\"\nsslmode = \"prefer\"");
        assert!(e.contains("`prefer`: expected"), "{e}");
        let e = errors_of(
            "url = \"postgresql://ls@db/ls\"\nca_file = \"/nonexistent/ca.pem\"\nclient_key = \"k.pem\"",
        );
        assert!(e.contains("client_cert and client_key go together"), "{e}");
        assert!(e.contains("/nonexistent/ca.pem does not exist"), "{e}");
    }

    #[test]
    fn the_mqtt_protocol_is_3_1_1_or_5() {
        let mqtt = |v: &str| {
            parse_str(&format!(
                "{MINIMAL}\n[mqtt]\nhost = \"b\"\nclient_id = \"c\"\nplain = true\n{v}"
            ))
        };
        let s = mqtt("").unwrap();
        assert_eq!(s.mqtt.unwrap().protocol, MqttProtocol::V311);
        let s = mqtt("protocol = \"5\"").unwrap();
        assert_eq!(s.mqtt.unwrap().protocol, MqttProtocol::V5);
        let e = mqtt("protocol = \"4\"").unwrap_err().to_string();
        assert!(
            e.contains("mqtt.protocol") && e.contains("\"3.1.1\" or \"5\""),
            "{e}"
        );
    }

    #[test]
    fn the_database_password_is_never_printed() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("pw"), "hunter2\n").unwrap();
        let text = "[database]\nurl = \"postgresql://ls:urlsecret@127.0.0.1/ls\"\npassword = { file = \"pw\" }\n[http]\nlisten = \"127.0.0.1:8080\"\nplain = true\n";
        let s = parse(text, Path::new("c.toml"), dir.path()).unwrap();
        assert_eq!(s.database.password.as_deref(), Some("hunter2"));
        let printed = format!("{s:?}");
        assert!(
            !printed.contains("hunter2") && !printed.contains("urlsecret"),
            "{printed}"
        );
    }

    #[test]
    fn tls_is_required_off_loopback_and_secrets_must_be_references() {
        let text = r#"
            [database]
            url = "postgresql://x@h/db"
            password = "hunter2"
            [http]
            listen = "0.0.0.0:8443"
        "#;
        let errs = parse_str(text).unwrap_err();
        assert!(!errs.to_string().contains("hunter2"));
        let text = r#"
            [database]
            url = "postgresql://x@h/db"
            [http]
            listen = "0.0.0.0:8443"
        "#;
        let errs = parse_str(text).unwrap_err();
        assert!(errs.to_string().contains("TLS is required"), "{errs}");
    }

    /// Each bad file in `tests/fixtures/config_errors/NAME.toml` gives exactly the errors in
    /// `NAME.expected`, read as `collector.toml` with relative paths under `/nonexistent`.
    #[test]
    fn bad_files_report_every_error_with_its_line_and_key() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/config_errors");
        let mut names: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect();
        names.sort();
        assert!(names.len() >= 3, "{names:?}");
        for toml in names {
            let text = std::fs::read_to_string(&toml).unwrap();
            let expected = std::fs::read_to_string(toml.with_extension("expected")).unwrap();
            let got = match parse_str(&text) {
                Ok(_) => String::from("(no errors)"),
                Err(errs) => errs.to_string(),
            };
            assert_eq!(got, expected.trim_end(), "{}:\n{got}", toml.display());
        }
    }

    #[test]
    fn siem_destinations_parse_with_their_filters_and_defaults() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.pem"), "").unwrap();
        let text = format!(
            "{MINIMAL}\n[[siem]]\nname = \"soc\"\ntransport = \"relp\"\naddress = \"siem.plant.local:2514\"\nca_file = \"ca.pem\"\nmin_severity = \"warn\"\ntypes = [\"security.\", \"auth.\"]\ngateways = [\"gw-1\"]\n\n[[siem]]\nname = \"local\"\ntransport = \"udp\"\naddress = \"127.0.0.1:514\"\nformat = \"leef\"\n"
        );
        let s = parse(&text, Path::new("collector.toml"), dir.path()).unwrap();
        let soc = &s.siem[0];
        assert_eq!(soc.transport.protocol, Protocol::Relp);
        assert_eq!(soc.format, Format::Cef);
        assert!(soc.transport.tls.is_some());
        assert!(soc
            .filter
            .matches("security.violation", Severity::Error, Some("gw-1")));
        assert!(!soc
            .filter
            .matches("security.violation", Severity::Info, Some("gw-1")));
        assert!(!soc
            .filter
            .matches("setpoint.changed", Severity::Error, Some("gw-1")));
        assert!(!soc
            .filter
            .matches("auth.failed", Severity::Error, Some("gw-2")));
        assert!(!soc.filter.matches("auth.failed", Severity::Error, None));
        assert_eq!(s.siem[1].format, Format::Leef);
        assert!(s.siem[1]
            .filter
            .matches("api.access", Severity::Debug, None));
    }

    #[test]
    fn siem_mistakes_are_each_named_at_their_key_and_line() {
        let text = format!(
            "{MINIMAL}\n[[siem]]\nname = \"a\"\ntransport = \"tcp\"\naddress = \"10.1.2.3:514\"\n\n[[siem]]\nname = \"b\"\ntransport = \"tls\"\naddress = \"siem:6514\"\nframing = \"nul\"\n\n[[siem]]\nname = \"c\"\ntransport = \"https\"\naddress = \"https://siem/x\"\nformat = \"cef\"\ntoken = \"plain\"\nca_file = \"/nonexistent/ca.pem\"\n\n[[siem]]\nname = \"d\"\ntransport = \"kafka\"\naddress = \"x:1\"\nmax_message = 100\n"
        );
        let e = parse_str(&text).unwrap_err().to_string();
        for needle in [
            "siem[0].address`: tcp sends in the clear: only to a loopback address unless `insecure = true`",
            "siem[1].ca_file`: tls verifies the receiver's certificate",
            "siem[1].framing`: unknown framing `nul`",
            "siem[2].format`: https sends JSON batches",
            "siem[2].token`: plain-text secrets are refused",
            "siem[2].ca_file`: file /nonexistent/ca.pem does not exist",
            "siem[3].transport`: unknown transport `kafka`",
            "siem[3].max_message`: 100 is below the 480 bytes",
        ] {
            assert!(e.contains(needle), "missing {needle:?} in:\n{e}");
        }
        assert!(
            e.contains("collector.toml:11: `siem[0].address`"),
            "line of siem[0].address:\n{e}"
        );
    }
}
