//! Every accepted range and unit, in one place, with each key's default. A default that a
//! component's own type also uses (`QueueOptions::new`, `ForwardOptions::new`,
//! `HealthSettings::default`, `RuleSettings::default`, `SourceTuning::defaults_for`) is that
//! component's constant, referenced here; the others (keys only the configuration has, such
//! as the MQTT and HTTPS ones) are written here. `config/example.toml` documents the
//! same numbers; change both together.

// A component's default goes into this table's `i64` by `as` because `i64::try_from` is not
// `const`; every one of them is far below `i64::MAX`.
#![allow(clippy::cast_possible_wrap)]

use std::time::Duration;

use crate::rules::RuleSettings as R;
use crate::source::modbus::{self, breaker};
use crate::source::opcua;
use crate::{buffer, forward, health};

/// A component's default duration in the milliseconds of its key.
const fn ms(duration: Duration) -> i64 {
    duration.as_millis() as i64
}

/// A component's default duration in the seconds of its key.
const fn s(duration: Duration) -> i64 {
    duration.as_secs() as i64
}

/// An integer setting: its default, its accepted range and the unit shown in messages.
#[derive(Debug, Clone, Copy)]
pub(super) struct Int {
    pub(super) default: i64,
    pub(super) min: i64,
    pub(super) max: i64,
    pub(super) unit: &'static str,
}

const fn int(default: i64, min: i64, max: i64, unit: &'static str) -> Int {
    Int {
        default,
        min,
        max,
        unit,
    }
}

/// A number setting: its default, its accepted (inclusive, finite) range and its unit.
#[derive(Debug, Clone, Copy)]
pub(super) struct Float {
    pub(super) default: f64,
    pub(super) min: f64,
    pub(super) max: f64,
    pub(super) unit: &'static str,
}

const fn float(default: f64, min: f64, max: f64, unit: &'static str) -> Float {
    Float {
        default,
        min,
        max,
        unit,
    }
}

// [agent]
pub(super) const SHUTDOWN_GRACE_MS: Int = int(5000, 100, 60_000, "ms");
/// Without `profiles_dir`: `devices/` beside the configuration's directory when that exists
/// (a source checkout, `config/x.toml` next to `devices/`), else the packaged profiles.
pub(super) const PROFILES_DIR: &str = "../devices";
/// Where `packaging/build-deb` installs `devices/*.toml`.
pub(super) const PACKAGED_PROFILES_DIR: &str = "/usr/share/linesentry/devices";
/// gateway_id, site and station ids.
pub(super) const MAX_ID_LEN: usize = 64;

// [buffer]
pub(super) const QUOTA_MIB: Int = int((buffer::DEFAULT_QUOTA_BYTES >> 20) as i64, 1, 65_536, "MiB");
pub(super) const COMMIT_MAX_EVENTS: Int = int(
    buffer::DEFAULT_COMMIT_MAX_EVENTS as i64,
    1,
    65_536,
    "events",
);
pub(super) const COMMIT_LINGER_MS: Int = int(ms(buffer::DEFAULT_COMMIT_LINGER), 0, 50, "ms");
pub(super) const ROUTINE_COMMIT_MS: Int = int(ms(buffer::DEFAULT_ROUTINE_COMMIT), 0, 1000, "ms");
pub(super) const CACHE_MIB: Int = int((buffer::DEFAULT_CACHE_BYTES >> 20) as i64, 1, 1024, "MiB");
pub(super) const HIGH_WATERMARK_PERCENT: Int =
    int(buffer::DEFAULT_HIGH_WATERMARK_PERCENT as i64, 50, 99, "%");
pub(super) const DROP_REPORT_INTERVAL_S: Int = int(
    buffer::DEFAULT_DROP_REPORT_INTERVAL.as_secs() as i64,
    1,
    3600,
    "s",
);
pub(super) const MAX_EVENT_KIB: Int = int(
    (buffer::DEFAULT_MAX_EVENT_BYTES >> 10) as i64,
    1,
    1024,
    "KiB",
);

// [log]
pub(super) const LOG_FORMAT: &str = "text";
pub(super) const LOG_LEVEL: &str = "info";

// [[stations]]
pub(super) const UNIT_ID: Int = int(1, 0, 247, "");
pub(super) const BAUD: Int = int(19_200, 300, 921_600, "baud");
pub(super) const PARITY: &str = "even";
pub(super) const DATA_BITS: Int = int(8, 7, 8, "bits");
pub(super) const STOP_BITS: Int = int(1, 1, 2, "bits");
pub(super) const SECURITY_MODE: &str = "None";
pub(super) const SECURITY_POLICY: &str = "None";
pub(super) const POLL_INTERVAL_MS: Int = int(1000, 10, 3_600_000, "ms");
pub(super) const TIMEOUT_MS: Int = int(1000, 10, 60_000, "ms");
pub(super) const ENABLED: bool = true;
// [[stations]], acquisition tuning: the defaults are the source modules' own
// (`source::SourceTuning::defaults_for`); a test in `station.rs` checks the two agree.
/// Unused registers (bits) read between two tags to join them into one request.
pub(super) const MAX_GAP: Int = int(modbus::DEFAULT_MAX_GAP as i64, 0, 2000, "registers or bits");
pub(super) const MAX_READ_REGISTERS: Int =
    int(modbus::MAX_READ_REGISTERS as i64, 1, 125, "registers");
pub(super) const MAX_READ_BITS: Int = int(modbus::MAX_READ_BITS as i64, 1, 2000, "bits");
/// Failed polls in a row that isolate a Modbus device (circuit breaker).
pub(super) const BREAKER_FAILURES: Int =
    int(breaker::DEFAULT_FAILURE_THRESHOLD as i64, 1, 1000, "polls");
/// First and longest isolation, doubling with ±20 % jitter.
pub(super) const BREAKER_OPEN_MS: Int = int(ms(breaker::ISOLATION.initial), 10, 3_600_000, "ms");
pub(super) const BREAKER_OPEN_MAX_MS: Int = int(ms(breaker::ISOLATION.max), 10, 3_600_000, "ms");
/// Seconds between two reads of a profile's Modbus diagnostic counters (`[diagnostics]`).
pub(super) const DIAGNOSTICS_EVERY_S: Int = int(60, 1, 86_400, "s");
/// Polls between two FC 43/14 reads; 0 = only on each new connection.
pub(super) const IDENTITY_EVERY_POLLS: Int =
    int(modbus::DEFAULT_IDENTITY_EVERY as i64, 0, 1_000_000, "polls");
/// First reconnect delay, doubling with ±20 % jitter: Modbus TCP and OPC UA defaults.
pub(super) const RECONNECT_INITIAL_MS_MODBUS: Int =
    int(ms(breaker::RECONNECT.initial), 10, 600_000, "ms");
pub(super) const RECONNECT_INITIAL_MS_OPCUA: Int =
    int(ms(opcua::DEFAULT_RECONNECT_INITIAL), 10, 600_000, "ms");
/// Both sources' (they agree; `station.rs` tests it).
pub(super) const RECONNECT_MAX_MS: Int = int(ms(breaker::RECONNECT.max), 10, 3_600_000, "ms");
/// Values the server queues per OPC UA monitored item between publishes.
pub(super) const QUEUE_SIZE: Int = int(opcua::DEFAULT_QUEUE_SIZE as i64, 1, 10_000, "values");
/// Publishing intervals without a notification before the subscription is re-created.
pub(super) const WATCHDOG_INTERVALS: Int = int(
    opcua::DEFAULT_WATCHDOG_INTERVALS as i64,
    6,
    10_000,
    "publishing intervals",
);

// [forward]
pub(super) const CONSOLE: bool = false;
pub(super) const MQTT_PORT_TLS: i64 = 8883;
pub(super) const MQTT_PORT_PLAIN: i64 = 1883;
pub(super) const PORT: Int = int(MQTT_PORT_PLAIN, 1, 65_535, "");
pub(super) const TOPIC_PREFIX: &str = "linesentry/v1";
pub(super) const EVENTS_PER_MESSAGE: Int = int(100, 1, 10_000, "events");
pub(super) const MAX_PACKET_KIB: Int = int(256, 1, 16_384, "KiB");
pub(super) const HTTPS_BATCH_EVENTS: Int = int(500, 1, 10_000, "events");
pub(super) const HTTPS_TIMEOUT_MS: Int = int(10_000, 100, 300_000, "ms");
pub(super) const MQTT_PROTOCOL: &str = "3.1.1";
pub(super) const MQTT_KEEP_ALIVE_S: Int = int(30, 5, 3600, "s");
pub(super) const MQTT_ACK_TIMEOUT_MS: Int = int(10_000, 100, 300_000, "ms");
pub(super) const MQTT_INFLIGHT: Int = int(256, 1, 65_535, "messages");
/// Events read from the queue per forwarding round (split into messages / requests).
pub(super) const FORWARD_BATCH_EVENTS: Int =
    int(forward::DEFAULT_BATCH_EVENTS as i64, 1, 100_000, "events");
/// Backlog telemetry replay rate; alerts are never held back by it.
pub(super) const REPLAY_EVENTS_PER_SECOND: Int = int(
    forward::DEFAULT_REPLAY_EVENTS_PER_SECOND as i64,
    1,
    10_000_000,
    "events/s",
);
/// After an outage, the telemetry backlog starts after a random delay up to this.
pub(super) const REPLAY_JITTER_MS: Int = int(ms(forward::DEFAULT_REPLAY_JITTER), 0, 600_000, "ms");
/// The primary sink failing this long switches to the fallback.
pub(super) const FALLBACK_AFTER_MS: Int = int(30_000, 0, 3_600_000, "ms");
/// Nothing accepted for this long while events wait raises `forward.upstream_down`.
pub(super) const UPSTREAM_DOWN_AFTER_MS: Int = int(
    ms(forward::DEFAULT_UPSTREAM_DOWN_AFTER),
    1000,
    86_400_000,
    "ms",
);

// [health]: `enabled` and `listen` default to `health::DEFAULT_ENABLED` / `DEFAULT_LISTEN`.
pub(super) const STALL_AFTER_MS: Int = int(ms(health::DEFAULT_STALL_AFTER), 1000, 3_600_000, "ms");

// Station profiles (`devices/*.toml`)
pub(super) const ADDRESSING: &str = "zero_based";
pub(super) const SCALE: f64 = 1.0;
pub(super) const OFFSET: f64 = 0.0;
/// Registers of a string tag (125 is the most one Modbus read returns).
pub(super) const STRING_REGISTERS: Int = int(0, 1, 125, "registers");
pub(super) const BIT: Int = int(0, 0, 15, "");
/// Highest zero-based Modbus address.
pub(super) const MAX_MODBUS_INDEX: i64 = 65_535;

// Station profiles: `[rules]`. The defaults are `RuleSettings`' (the catalogue's,
// docs/EVENTS.md), in the units of the keys.
pub(super) const UNREACHABLE_AFTER: Int =
    int(R::DEFAULT_UNREACHABLE_AFTER as i64, 1, 1000, "polls");
pub(super) const UNREACHABLE_ESCALATE_AFTER_S: Int =
    int(s(R::DEFAULT_UNREACHABLE_ESCALATE_AFTER), 1, 86_400, "s");
pub(super) const STATUS_HEARTBEAT_S: Int = int(s(R::DEFAULT_STATUS_HEARTBEAT), 1, 86_400, "s");
pub(super) const MEASUREMENT_HEARTBEAT_S: Int =
    int(s(R::DEFAULT_MEASUREMENT_HEARTBEAT), 1, 86_400, "s");
pub(super) const DEADBAND_PERCENT: Float = float(
    R::DEFAULT_DEADBAND_PERCENT,
    0.0,
    100.0,
    "% of the limits' span",
);
pub(super) const QUALITY_WINDOW: Int = int(R::DEFAULT_QUALITY_WINDOW as i64, 1, 1000, "checks");
/// Also at most `quality_window`.
pub(super) const QUALITY_FAILURES: Int = int(R::DEFAULT_QUALITY_FAILURES as i64, 1, 1000, "checks");
pub(super) const AUTH_BURST: Int = int(R::DEFAULT_AUTH_BURST as i64, 1, 1000, "failures");
pub(super) const AUTH_WINDOW_S: Int = int(s(R::DEFAULT_AUTH_WINDOW), 1, 86_400, "s");
pub(super) const EXCEPTION_BURST: Int =
    int(R::DEFAULT_EXCEPTION_BURST as i64, 1, 1000, "exceptions");
pub(super) const EXCEPTION_WINDOW_S: Int = int(s(R::DEFAULT_EXCEPTION_WINDOW), 1, 86_400, "s");
pub(super) const DIAG_SCAN_EXCEPTIONS_PER_MIN: Int = int(
    R::DEFAULT_DIAG_SCAN_EXCEPTIONS_PER_MIN as i64,
    1,
    100_000,
    "exceptions per minute",
);
pub(super) const DIAG_FLOOD_MESSAGES_PER_S: Int = int(
    R::DEFAULT_DIAG_FLOOD_MESSAGES_PER_S as i64,
    1,
    100_000,
    "messages per second",
);
pub(super) const STALE_AFTER_S: Int = int(s(R::DEFAULT_STALE_AFTER), 1, 86_400, "s");
pub(super) const CLOCK_SKEW_MS: Int = int(ms(R::DEFAULT_CLOCK_SKEW), 1, 3_600_000, "ms");
pub(super) const SESSION_MARGIN: Int = int(R::DEFAULT_SESSION_MARGIN as i64, 0, 10_000, "sessions");
/// Nelson rule 3 uses 6 values; fewer than 3 is no trend.
pub(super) const TREND_POINTS: Int = int(R::DEFAULT_TREND_POINTS as i64, 3, 100, "values");
pub(super) const TREND_MARGIN_PERCENT: Float = float(
    R::DEFAULT_TREND_MARGIN_PERCENT,
    0.0,
    50.0,
    "% of the limits' span",
);
/// 0: the first poll that shows the value beyond its limit without the alarm.
pub(super) const ALARM_GRACE_S: Int = int(s(R::DEFAULT_ALARM_GRACE), 0, 3600, "s");

// Station profiles: per-tag rule keys in `[[tags]]`. `deadband_percent`, `heartbeat_s`,
// `stale_after_s`, `trend_points` and `trend_margin_percent` take the ranges of their `[rules]` counterparts and default to them.
/// `deadband`: finite and at least this (engineering units); no default (percentage applies).
pub(super) const DEADBAND_MIN: f64 = 0.0;
pub(super) const DEBOUNCE_MS: Int = int(0, 0, 600_000, "ms");

/// Change windows are RFC 3339 date-times with an offset, like this one.
pub(super) const DATETIME_EXAMPLE: &str = "2026-11-28T06:00:00Z";
