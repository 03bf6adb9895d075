//! Rule tuning: thresholds, windows and deadbands, with the defaults of docs/EVENTS.md.
//! A station profile may override any of them (station-wide, or per tag in [`TagRules`]).

use std::time::Duration;

use linesentry_event::Timestamp;

/// Station-wide rule settings.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleSettings {
    /// `device.unreachable` after this many consecutive failed polls (K).
    pub unreachable_after: u32,
    /// A still-unreachable device is raised to error after this long (T).
    pub unreachable_escalate_after: Duration,
    /// `equipment.status` repeats the current state this often when nothing changes.
    pub status_heartbeat: Duration,
    /// A measurement is reported at least this often (report by exception's heartbeat).
    pub measurement_heartbeat: Duration,
    /// Measurements are reported when they move more than this percentage of their limits'
    /// span (or of their last reported value when they have no limits).
    pub deadband_percent: f64,
    /// `quality.anomaly` when `quality_failures` of the last `quality_window` checks fail.
    pub quality_window: usize,
    pub quality_failures: usize,
    /// `security.violation` when `auth_burst` `auth.failed` for one user or source fall
    /// within `auth_window`.
    pub auth_burst: usize,
    pub auth_window: Duration,
    /// `security.violation` when `exception_burst` Modbus exceptions 01/02/06 (function or
    /// address scan) fall within `exception_window`.
    pub exception_burst: usize,
    pub exception_window: Duration,
    /// `security.violation` (`modbus_scan`) when the device's own exception counter (FC 08
    /// / 0x0D) rises faster than this, per minute, beyond the exceptions the agent itself
    /// received: someone else is probing functions or addresses.
    pub diag_scan_exceptions_per_min: u64,
    /// `security.violation` (`modbus_flood`) when the device's message counter (FC 08 /
    /// 0x0E, else 0x0B) rises faster than this, per second, beyond the agent's own requests.
    pub diag_flood_messages_per_s: u64,
    /// `value.stale` when a measurement has not changed, or a source timestamp has not
    /// advanced, for this long.
    pub stale_after: Duration,
    /// `agent.clock_skew` when a device clock differs from the gateway's by more.
    pub clock_skew: Duration,
    /// `session.anomaly` when the session count exceeds its baseline by more than this.
    pub session_margin: u64,
    /// `quality.anomaly` (trend) when this many values of a measurement with limits in a row
    /// each move the same way (repeats ignored, Nelson rule 3) and the last one is beyond a
    /// limit or within `trend_margin_percent` of the limits' span of it, moving towards it.
    pub trend_points: usize,
    pub trend_margin_percent: f64,
    /// `alarm.suppressed` when a measurement has been beyond its alarm limit this long with
    /// its alarm indication off.
    pub alarm_grace: Duration,
    /// Authorised change windows (management-of-change tickets): inside one,
    /// `setpoint.changed` and `mode.changed` are info and tagged authorised.
    pub change_windows: Vec<ChangeWindow>,
}

// Each field's default, one constant each so that `config` can use them in its table of
// ranges (a `const` `RuleSettings` could not be taken apart there: it holds a `Vec`).
impl RuleSettings {
    pub const DEFAULT_UNREACHABLE_AFTER: u32 = 3;
    pub const DEFAULT_UNREACHABLE_ESCALATE_AFTER: Duration = Duration::from_secs(5 * 60);
    pub const DEFAULT_STATUS_HEARTBEAT: Duration = Duration::from_secs(10 * 60);
    pub const DEFAULT_MEASUREMENT_HEARTBEAT: Duration = Duration::from_secs(5 * 60);
    pub const DEFAULT_DEADBAND_PERCENT: f64 = 1.0;
    pub const DEFAULT_QUALITY_WINDOW: usize = 20;
    pub const DEFAULT_QUALITY_FAILURES: usize = 5;
    pub const DEFAULT_AUTH_BURST: usize = 5;
    pub const DEFAULT_AUTH_WINDOW: Duration = Duration::from_secs(5 * 60);
    pub const DEFAULT_EXCEPTION_BURST: usize = 10;
    pub const DEFAULT_EXCEPTION_WINDOW: Duration = Duration::from_secs(60);
    pub const DEFAULT_DIAG_SCAN_EXCEPTIONS_PER_MIN: u64 = 10;
    pub const DEFAULT_DIAG_FLOOD_MESSAGES_PER_S: u64 = 100;
    pub const DEFAULT_STALE_AFTER: Duration = Duration::from_secs(60);
    pub const DEFAULT_CLOCK_SKEW: Duration = Duration::from_secs(5);
    pub const DEFAULT_SESSION_MARGIN: u64 = 2;
    pub const DEFAULT_TREND_POINTS: usize = 6;
    pub const DEFAULT_TREND_MARGIN_PERCENT: f64 = 5.0;
    pub const DEFAULT_ALARM_GRACE: Duration = Duration::from_secs(10);
}

impl Default for RuleSettings {
    fn default() -> Self {
        Self {
            unreachable_after: Self::DEFAULT_UNREACHABLE_AFTER,
            unreachable_escalate_after: Self::DEFAULT_UNREACHABLE_ESCALATE_AFTER,
            status_heartbeat: Self::DEFAULT_STATUS_HEARTBEAT,
            measurement_heartbeat: Self::DEFAULT_MEASUREMENT_HEARTBEAT,
            deadband_percent: Self::DEFAULT_DEADBAND_PERCENT,
            quality_window: Self::DEFAULT_QUALITY_WINDOW,
            quality_failures: Self::DEFAULT_QUALITY_FAILURES,
            auth_burst: Self::DEFAULT_AUTH_BURST,
            auth_window: Self::DEFAULT_AUTH_WINDOW,
            exception_burst: Self::DEFAULT_EXCEPTION_BURST,
            exception_window: Self::DEFAULT_EXCEPTION_WINDOW,
            diag_scan_exceptions_per_min: Self::DEFAULT_DIAG_SCAN_EXCEPTIONS_PER_MIN,
            diag_flood_messages_per_s: Self::DEFAULT_DIAG_FLOOD_MESSAGES_PER_S,
            stale_after: Self::DEFAULT_STALE_AFTER,
            clock_skew: Self::DEFAULT_CLOCK_SKEW,
            session_margin: Self::DEFAULT_SESSION_MARGIN,
            trend_points: Self::DEFAULT_TREND_POINTS,
            trend_margin_percent: Self::DEFAULT_TREND_MARGIN_PERCENT,
            alarm_grace: Self::DEFAULT_ALARM_GRACE,
            change_windows: Vec::new(),
        }
    }
}

/// An authorised change window, start inclusive, end exclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChangeWindow {
    pub start: Timestamp,
    pub end: Timestamp,
}

impl ChangeWindow {
    pub fn contains(&self, t: Timestamp) -> bool {
        self.start <= t && t < self.end
    }
}

/// Per-tag tuning; `None` falls back to the station's setting.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TagRules {
    /// Report a measurement when it moves by more than this (engineering units).
    pub deadband_abs: Option<f64>,
    pub deadband_percent: Option<f64>,
    pub heartbeat: Option<Duration>,
    /// A boolean or state must hold this long before its change counts (flapping inputs).
    pub debounce: Duration,
    pub stale_after: Option<Duration>,
    /// Trend rule overrides for this measurement (see [`RuleSettings::trend_points`]).
    pub trend_points: Option<usize>,
    pub trend_margin_percent: Option<f64>,
    /// Alarm-limit tags whose values are this measurement's high and low alarm limits.
    pub alarm_high: Option<String>,
    pub alarm_low: Option<String>,
    /// The alarm-active tag that shows this measurement's alarm; `None` with a limit linked
    /// means the station's only alarm-active tag.
    pub alarm_active: Option<String>,
}

pub(super) fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}
