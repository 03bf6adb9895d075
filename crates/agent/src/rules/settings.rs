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

impl Default for RuleSettings {
    fn default() -> Self {
        Self {
            unreachable_after: 3,
            unreachable_escalate_after: Duration::from_secs(5 * 60),
            status_heartbeat: Duration::from_secs(10 * 60),
            measurement_heartbeat: Duration::from_secs(5 * 60),
            deadband_percent: 1.0,
            quality_window: 20,
            quality_failures: 5,
            auth_burst: 5,
            auth_window: Duration::from_secs(5 * 60),
            exception_burst: 10,
            exception_window: Duration::from_secs(60),
            stale_after: Duration::from_secs(60),
            clock_skew: Duration::from_secs(5),
            session_margin: 2,
            trend_points: 6,
            trend_margin_percent: 5.0,
            alarm_grace: Duration::from_secs(10),
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
