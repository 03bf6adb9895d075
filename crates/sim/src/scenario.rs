//! Scenario actions and schedules: what an operator, an attacker or a failing device does to
//! a station, by name. Pure: an [`Action`] changes a [`StationModel`]; a [`Schedule`] says
//! when; a [`SchedulePlayer`] says which actions are due at a given elapsed time.
//!
//! Actions pick their target by role, the first tag of the role in profile order (the
//! station's main setpoint, its first alarm-enable bit), the way the agent's rules are
//! exercised by a single clear change:
//!
//! | action | effect on the model | event it should raise |
//! |---|---|---|
//! | `fault` / `recover` | status tags with a `fault` state show it / back to production | `equipment.fault` |
//! | `mode_program` / `mode_run` | mode tags to `program` (else `teach`, `maintenance`) / production mode | `mode.changed` |
//! | `setpoint_change` | first setpoint moves by 8 % of nominal, staying in its limits | `setpoint.changed` |
//! | `setpoint_out_of_range` | first setpoint with limits goes 10 % of its span beyond them | `setpoint.out_of_range` |
//! | `alarm_limit_change` | first alarm limit moves likewise | `alarm_limit.changed` |
//! | `alarm_disable` / `alarm_enable` | first alarm-enable bit cleared / every one restored | `alarm.suppressed` |
//! | `firmware_change` | next firmware revision (tags and identity) | `firmware.changed` |
//! | `identity_change` | another vendor and product code at the same address | `identity.changed` |
//! | `program_change` | program checksum tags change | `program.changed` |
//! | `quality_burst` | the next [`QUALITY_BURST_CHECKS`] quality checks fail | `quality.anomaly` |
//! | `freeze` / `unfreeze` | measurements stop / resume changing | `value.stale` |
//! | `drift` | first measurement with limits ramps steadily up past its upper limit and stays there (its alarm, if linked, shows) | `quality.anomaly` (trend) |
//! | `alarm_silenced` | first measurement linked to an alarm limit is pinned beyond it and every alarm-active tag stays off, both until the simulator stops | `alarm.suppressed` |
//! | `timestamps_freeze` | OPC UA: values keep changing under one source timestamp | `value.stale` |
//! | `server_suspend` | OPC UA: `ServerStatus.State` becomes Suspended | `mode.changed` |
//! | `counters_reset` | counter tags start again from zero, without a restart | `diag.counters_reset` |
//! | `diag_clear` | Modbus: the diagnostic counters (FC 08 / FC 11) are cleared, as by FC 08 sub-function 0x0A | `diag.counters_reset` |
//! | `policy_downgrade` | OPC UA: the server restarts offering only None and Basic256Sha256 | `security_policy.downgraded` |
//! | `policy_downgrade_all` | OPC UA: the server restarts offering only None and Aes128_Sha256_RsaOaep, weaker than the agent's Basic256Sha256 | `security_policy.downgraded` |
//! | `session_flood` | OPC UA: an intruder holds [`INTRUDER_SESSIONS`] extra sessions open | `session.anomaly` |
//! | `password_guess` | OPC UA: an intruder tries [`LOGIN_GUESSES`] wrong passwords | `auth.failed`, `security.violation` |
//! | `silent`, `garbage`, `exceptions`, `normal` | the link behaviour | `device.unreachable`, `security.violation` |
//!
//! An action whose target the profile lacks (no mode tag, no alarm limit) changes nothing
//! and says so in its [`Outcome`]; that is not an error, since schedules are meant to run
//! unchanged against any profile.
//!
//! A schedule is written `ACTION@SECONDS[,ACTION@SECONDS...]`, seconds after the start
//! (decimals allowed, an `s` suffix too): `fault@10,recover@15,mode_program@30`. Parsing
//! reports every bad item at once, each by position and text, with the valid actions.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;

use super::model::{LinkBehaviour, SecurityOffer, StationModel};
use linesentry_agent::source::generator;
use linesentry_agent::source::{DataType, TagRole, Value};
use linesentry_agent::source::{Profile, Protocol, TagSpec};

/// Quality checks a `quality_burst` fails.
pub const QUALITY_BURST_CHECKS: u32 = 8;

/// Extra sessions a `session_flood` holds open.
pub const INTRUDER_SESSIONS: u32 = 4;
/// Wrong passwords a `password_guess` tries.
pub const LOGIN_GUESSES: u32 = 6;

/// Mode states `mode_program` tries, in order.
const PROGRAM_MODES: &[&str] = &["program", "teach", "maintenance"];

/// A named change to a station. See the [module documentation](self) for each one's effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    Fault,
    Recover,
    ModeProgram,
    ModeRun,
    SetpointChange,
    SetpointOutOfRange,
    AlarmLimitChange,
    AlarmDisable,
    AlarmEnable,
    FirmwareChange,
    IdentityChange,
    ProgramChange,
    QualityBurst,
    Freeze,
    Unfreeze,
    Drift,
    AlarmSilenced,
    CountersReset,
    DiagClear,
    TimestampsFreeze,
    ServerSuspend,
    PolicyDowngrade,
    PolicyDowngradeAll,
    SessionFlood,
    PasswordGuess,
    Silent,
    Garbage,
    Exceptions,
    Normal,
}

/// What applying an action did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The model changed; the text says how (`press_state -> fault`).
    Applied(String),
    /// The profile has nothing the action could change; the text says why.
    NoEffect(String),
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Applied(what) => f.write_str(what),
            Outcome::NoEffect(why) => write!(f, "no effect: {why}"),
        }
    }
}

impl Action {
    /// Every action, in documentation order.
    pub const ALL: [Action; 29] = [
        Action::Fault,
        Action::Recover,
        Action::ModeProgram,
        Action::ModeRun,
        Action::SetpointChange,
        Action::SetpointOutOfRange,
        Action::AlarmLimitChange,
        Action::AlarmDisable,
        Action::AlarmEnable,
        Action::FirmwareChange,
        Action::IdentityChange,
        Action::ProgramChange,
        Action::QualityBurst,
        Action::Freeze,
        Action::Unfreeze,
        Action::Drift,
        Action::AlarmSilenced,
        Action::CountersReset,
        Action::DiagClear,
        Action::TimestampsFreeze,
        Action::ServerSuspend,
        Action::PolicyDowngrade,
        Action::PolicyDowngradeAll,
        Action::SessionFlood,
        Action::PasswordGuess,
        Action::Silent,
        Action::Garbage,
        Action::Exceptions,
        Action::Normal,
    ];

    /// The name used in schedules and on the control port.
    pub fn name(self) -> &'static str {
        match self {
            Action::Fault => "fault",
            Action::Recover => "recover",
            Action::ModeProgram => "mode_program",
            Action::ModeRun => "mode_run",
            Action::SetpointChange => "setpoint_change",
            Action::SetpointOutOfRange => "setpoint_out_of_range",
            Action::AlarmLimitChange => "alarm_limit_change",
            Action::AlarmDisable => "alarm_disable",
            Action::AlarmEnable => "alarm_enable",
            Action::FirmwareChange => "firmware_change",
            Action::IdentityChange => "identity_change",
            Action::ProgramChange => "program_change",
            Action::QualityBurst => "quality_burst",
            Action::Freeze => "freeze",
            Action::Unfreeze => "unfreeze",
            Action::Drift => "drift",
            Action::AlarmSilenced => "alarm_silenced",
            Action::CountersReset => "counters_reset",
            Action::DiagClear => "diag_clear",
            Action::TimestampsFreeze => "timestamps_freeze",
            Action::ServerSuspend => "server_suspend",
            Action::PolicyDowngrade => "policy_downgrade",
            Action::PolicyDowngradeAll => "policy_downgrade_all",
            Action::SessionFlood => "session_flood",
            Action::PasswordGuess => "password_guess",
            Action::Silent => "silent",
            Action::Garbage => "garbage",
            Action::Exceptions => "exceptions",
            Action::Normal => "normal",
        }
    }

    /// All action names, comma-separated, for error messages.
    pub fn valid_names() -> String {
        Action::ALL.map(Action::name).join(", ")
    }

    /// Applies the action to `model`. Never fails: an action the profile gives no target
    /// to is [`Outcome::NoEffect`].
    pub fn apply(self, model: &mut StationModel) -> Outcome {
        let profile = Arc::clone(model.profile());
        match self {
            Action::Fault => forced(model.force_status(Some("fault")), "fault"),
            Action::Recover => forced(model.force_status(None), "production"),
            Action::ModeProgram => PROGRAM_MODES
                .iter()
                .find_map(|mode| model.force_mode(Some(mode)).ok().map(|t| (t, mode)))
                .map_or_else(
                    || {
                        Outcome::NoEffect(format!(
                            "no mode tag has a state {}",
                            PROGRAM_MODES.join(" / ")
                        ))
                    },
                    |(tags, mode)| applied_to(&tags, mode),
                ),
            Action::ModeRun => forced(model.force_mode(None), "production mode"),
            Action::SetpointChange => bump(model, &profile, TagRole::Setpoint),
            Action::SetpointOutOfRange => out_of_range(model, &profile),
            Action::AlarmLimitChange => bump(model, &profile, TagRole::AlarmLimit),
            Action::AlarmDisable => match first(&profile, TagRole::AlarmEnable) {
                Some(spec) => pin(model, spec, Value::Bool(false)),
                None => no_tag(TagRole::AlarmEnable),
            },
            Action::AlarmEnable => {
                let tags: Vec<&TagSpec> = profile
                    .tags
                    .iter()
                    .filter(|t| t.role == TagRole::AlarmEnable)
                    .collect();
                if tags.is_empty() {
                    return no_tag(TagRole::AlarmEnable);
                }
                for spec in &tags {
                    // The tag is in the profile, so this cannot fail.
                    let _ = model.unpin(&spec.name);
                }
                let names: Vec<String> = tags.iter().map(|t| t.name.clone()).collect();
                applied_to(&names, "enabled")
            }
            Action::FirmwareChange => {
                Outcome::Applied(format!("firmware -> {}", model.bump_firmware()))
            }
            Action::IdentityChange => {
                let identity = model.change_identity();
                Outcome::Applied(format!(
                    "identity -> {} {}",
                    identity.vendor.as_deref().unwrap_or("?"),
                    identity.product_code.as_deref().unwrap_or("?")
                ))
            }
            Action::ProgramChange => {
                if first(&profile, TagRole::ProgramChecksum).is_none() {
                    return no_tag(TagRole::ProgramChecksum);
                }
                Outcome::Applied(format!("program revision {}", model.change_program()))
            }
            Action::QualityBurst => {
                model.fail_next_checks(QUALITY_BURST_CHECKS);
                let what = format!("next {QUALITY_BURST_CHECKS} quality checks fail");
                if first(&profile, TagRole::QualityResult).is_some() {
                    Outcome::Applied(what)
                } else {
                    Outcome::NoEffect(format!("{what}, but the profile has no quality_result tag"))
                }
            }
            Action::Freeze => {
                model.set_frozen(true);
                Outcome::Applied("measurements frozen".to_owned())
            }
            Action::Unfreeze => {
                model.set_frozen(false);
                Outcome::Applied("measurements moving".to_owned())
            }
            Action::Drift => match model.start_drift() {
                Some((tag, target)) => Outcome::Applied(format!("{tag} drifting to {target}")),
                None => Outcome::NoEffect("no numeric measurement tag has limits".to_owned()),
            },
            Action::AlarmSilenced => alarm_silenced(model, &profile),
            Action::CountersReset => {
                let tags = model.reset_counters();
                if tags.is_empty() {
                    return no_tag(TagRole::Counter);
                }
                applied_to(&tags, "0")
            }
            Action::DiagClear => diag_clear(model, &profile),
            Action::TimestampsFreeze
            | Action::ServerSuspend
            | Action::PolicyDowngrade
            | Action::PolicyDowngradeAll
            | Action::SessionFlood
            | Action::PasswordGuess => opcua_action(self, model, &profile),
            Action::Silent => link(model, LinkBehaviour::Silent),
            Action::Garbage => link(model, LinkBehaviour::Garbage),
            Action::Exceptions => link(model, LinkBehaviour::Exceptions),
            Action::Normal => link(model, LinkBehaviour::Normal),
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Action {
    type Err = UnknownAction;

    /// An action by its exact [`Action::name`], surrounding whitespace ignored.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let name = s.trim();
        Action::ALL
            .into_iter()
            .find(|a| a.name() == name)
            .ok_or_else(|| UnknownAction {
                name: name.to_owned(),
            })
    }
}

/// A name that is no [`Action`].
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("unknown action `{name}`; valid actions: {}", Action::valid_names())]
pub struct UnknownAction {
    pub name: String,
}

fn first(profile: &Profile, role: TagRole) -> Option<&TagSpec> {
    profile.tags.iter().find(|t| t.role == role)
}

fn no_tag(role: TagRole) -> Outcome {
    Outcome::NoEffect(format!("the profile has no {role} tag"))
}

/// The actions only an OPC UA front end acts on.
fn opcua_action(action: Action, model: &mut StationModel, profile: &Profile) -> Outcome {
    if profile.protocol != Protocol::OpcUa {
        return opcua_only(action);
    }
    match action {
        Action::TimestampsFreeze => {
            model.hold_source_time(true);
            Outcome::Applied("source timestamps held".to_owned())
        }
        Action::ServerSuspend => {
            model.set_suspended(true);
            Outcome::Applied("server state -> Suspended".to_owned())
        }
        Action::PolicyDowngrade => {
            model.set_security(SecurityOffer::WithoutStrongest);
            Outcome::Applied("security policies -> None, Basic256Sha256".to_owned())
        }
        Action::PolicyDowngradeAll => {
            model.set_security(SecurityOffer::OnlyWeaker);
            Outcome::Applied("security policies -> None, Aes128_Sha256_RsaOaep".to_owned())
        }
        Action::SessionFlood => {
            model.set_intruder_sessions(INTRUDER_SESSIONS);
            Outcome::Applied(format!("{INTRUDER_SESSIONS} intruder sessions"))
        }
        Action::PasswordGuess => {
            model.add_login_guesses(LOGIN_GUESSES);
            Outcome::Applied(format!("{LOGIN_GUESSES} wrong passwords tried"))
        }
        other => Outcome::NoEffect(format!("{other} is not an OPC UA action")),
    }
}

/// `diag_clear`: what FC 08 sub-function 0x0A does to a Modbus device's counters.
fn diag_clear(model: &mut StationModel, profile: &Profile) -> Outcome {
    if profile.protocol != Protocol::Modbus {
        return Outcome::NoEffect(format!("{} needs a Modbus station", Action::DiagClear));
    }
    model.diag_mut().clear();
    Outcome::Applied("diagnostic counters (FC 08 / FC 11) -> 0".to_owned())
}

fn opcua_only(action: Action) -> Outcome {
    Outcome::NoEffect(format!("{action} needs an OPC UA station"))
}

fn applied_to(tags: &[String], what: &str) -> Outcome {
    if tags.is_empty() {
        Outcome::NoEffect(format!("no tag to set to {what}"))
    } else {
        Outcome::Applied(format!("{} -> {what}", tags.join(", ")))
    }
}

fn forced(result: Result<Vec<String>, crate::model::ModelError>, what: &str) -> Outcome {
    match result {
        Ok(tags) => applied_to(&tags, what),
        Err(e) => Outcome::NoEffect(e.to_string()),
    }
}

fn link(model: &mut StationModel, behaviour: LinkBehaviour) -> Outcome {
    model.set_link(behaviour);
    Outcome::Applied(format!("link -> {behaviour}"))
}

fn pin(model: &mut StationModel, spec: &TagSpec, value: Value) -> Outcome {
    match model.pin(&spec.name, value) {
        Ok(()) => {
            let now = model.value(&spec.name).map(ToString::to_string);
            Outcome::Applied(format!("{} -> {}", spec.name, now.unwrap_or_default()))
        }
        Err(e) => Outcome::NoEffect(e.to_string()),
    }
}

/// Moves the first tag of `role` by 8 % of its nominal value (at least one raw step of an
/// integer type), upwards unless that leaves its limits.
fn bump(model: &mut StationModel, profile: &Profile, role: TagRole) -> Outcome {
    let Some(spec) = first(profile, role) else {
        return no_tag(role);
    };
    if !spec.data_type.is_numeric() {
        return Outcome::NoEffect(format!("{} is not numeric", spec.name));
    }
    let current = model
        .value(&spec.name)
        .and_then(Value::as_f64)
        .unwrap_or_else(|| generator::nominal(spec));
    let mut step = generator::nominal(spec).abs().max(1.0) * 0.08;
    if !matches!(spec.data_type, DataType::F32 | DataType::F64) {
        step = step.max(spec.scale.abs());
    }
    let up = current + step;
    let target = match spec.limits {
        Some(l) if up > l.max => (current - step).max(l.min),
        _ => up,
    };
    pin(model, spec, Value::Float(target))
}

/// Puts the first setpoint that has limits 10 % of their span above its maximum, or below
/// its minimum where the tag's type cannot hold more.
fn out_of_range(model: &mut StationModel, profile: &Profile) -> Outcome {
    let Some(spec) = profile
        .tags
        .iter()
        .find(|t| t.role == TagRole::Setpoint && t.limits.is_some() && t.data_type.is_numeric())
    else {
        return Outcome::NoEffect("no numeric setpoint tag has limits".to_owned());
    };
    let Some(l) = spec.limits else {
        return no_tag(TagRole::Setpoint);
    };
    let margin = ((l.max - l.min).abs() * 0.1).max(spec.scale.abs()).max(1.0);
    let outcome = pin(model, spec, Value::Float(l.max + margin));
    let now = model.value(&spec.name).and_then(Value::as_f64);
    if now.is_some_and(|v| v > l.max) {
        return outcome;
    }
    pin(model, spec, Value::Float(l.min - margin))
}

/// Silences the alarms and puts the first measurement linked to an alarm limit beyond it:
/// 5 % of its limits' span (at least one raw step, at least 1) above its high limit, or below
/// its low one.
fn alarm_silenced(model: &mut StationModel, profile: &Profile) -> Outcome {
    let Some(spec) = profile.tags.iter().find(|t| {
        t.role == TagRole::Measurement
            && (t.rules.alarm_high.is_some() || t.rules.alarm_low.is_some())
    }) else {
        return Outcome::NoEffect("no measurement tag is linked to an alarm limit".to_owned());
    };
    let limit = |tag: Option<&String>| tag.and_then(|t| model.value(t)).and_then(Value::as_f64);
    let span = spec.limits.map_or(10.0, |l| (l.max - l.min).abs());
    let margin = (span * 0.05).max(spec.scale.abs()).max(1.0);
    let target = match (
        limit(spec.rules.alarm_high.as_ref()),
        limit(spec.rules.alarm_low.as_ref()),
    ) {
        (Some(high), _) => high + margin,
        (None, Some(low)) => low - margin,
        (None, None) => {
            return Outcome::NoEffect(format!("{} has no alarm limit value", spec.name))
        }
    };
    match pin(model, spec, Value::Float(target)) {
        Outcome::Applied(what) => {
            model.silence_alarms(true);
            Outcome::Applied(format!("alarms silenced, {what}"))
        }
        other @ Outcome::NoEffect(_) => other,
    }
}

/// One action at a time after the start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScheduledAction {
    pub at: Duration,
    pub action: Action,
}

impl fmt::Display for ScheduledAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.action, self.at.as_secs_f64())
    }
}

/// Actions at times after the start, in time order (equal times in written order).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Schedule {
    items: Vec<ScheduledAction>,
}

impl Schedule {
    /// A schedule of `items`, sorted by time (stable).
    pub fn new(mut items: Vec<ScheduledAction>) -> Self {
        items.sort_by_key(|i| i.at);
        Schedule { items }
    }

    /// Parses `ACTION@SECONDS[,ACTION@SECONDS...]`; blank text is an empty schedule.
    pub fn parse(text: &str) -> Result<Self, ScheduleError> {
        let mut items = Vec::new();
        let mut problems = Vec::new();
        if text.trim().is_empty() {
            return Ok(Schedule::default());
        }
        for (i, raw) in text.split(',').enumerate() {
            match parse_item(raw.trim()) {
                Ok(item) => items.push(item),
                Err(reason) => problems.push(ItemError {
                    position: i + 1,
                    item: raw.trim().to_owned(),
                    reason,
                }),
            }
        }
        if problems.is_empty() {
            Ok(Schedule::new(items))
        } else {
            Err(ScheduleError { problems })
        }
    }

    pub fn items(&self) -> &[ScheduledAction] {
        &self.items
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// A player that starts before the first item.
    pub fn player(&self) -> SchedulePlayer {
        SchedulePlayer {
            items: self.items.clone(),
            next: 0,
        }
    }
}

impl FromStr for Schedule {
    type Err = ScheduleError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Schedule::parse(s)
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, item) in self.items.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{item}")?;
        }
        Ok(())
    }
}

fn parse_item(item: &str) -> Result<ScheduledAction, String> {
    let Some((name, time)) = item.split_once('@') else {
        return Err(format!(
            "expected ACTION@SECONDS (e.g. fault@10); valid actions: {}",
            Action::valid_names()
        ));
    };
    let action = name.parse::<Action>().map_err(|e| e.to_string())?;
    let seconds = time.trim();
    let seconds = seconds.strip_suffix('s').unwrap_or(seconds);
    let at = seconds
        .parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s >= 0.0)
        .and_then(|s| Duration::try_from_secs_f64(s).ok())
        .ok_or_else(|| {
            format!(
                "time `{}` is not a number of seconds, expected e.g. 10 or 0.5",
                time.trim()
            )
        })?;
    Ok(ScheduledAction { at, action })
}

/// Every bad item of a schedule.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{}", self.problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
pub struct ScheduleError {
    pub problems: Vec<ItemError>,
}

/// One bad schedule item: 1-based position, its text and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("schedule item {position} `{item}`: {reason}")]
pub struct ItemError {
    pub position: usize,
    pub item: String,
    pub reason: String,
}

/// Plays a schedule against elapsed time: each item is due once, in order.
#[derive(Debug, Clone)]
pub struct SchedulePlayer {
    items: Vec<ScheduledAction>,
    next: usize,
}

impl SchedulePlayer {
    /// Items whose time is at or before `elapsed` and that were not yet returned.
    pub fn due(&mut self, elapsed: Duration) -> Vec<ScheduledAction> {
        let start = self.next;
        while self.next < self.items.len() && self.items[self.next].at <= elapsed {
            self.next += 1;
        }
        self.items[start..self.next].to_vec()
    }

    /// Time of the next item not yet due.
    pub fn next_at(&self) -> Option<Duration> {
        self.items.get(self.next).map(|i| i.at)
    }

    pub fn is_finished(&self) -> bool {
        self.next >= self.items.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::test_support;

    /// An AOI-like station: no `program` mode, two setpoints, two alarm enables, nothing else.
    fn aoi_like() -> StationModel {
        let tags = r#"
[[tags]]
name = "state"
role = "status"
type = "u16"
node_id = "ns=2;s=State"
states = { 0 = "idle", 1 = "inspecting", 4 = "fault" }

[[tags]]
name = "mode"
role = "mode"
type = "u16"
node_id = "ns=2;s=Mode"
states = { 0 = "auto", 1 = "manual", 2 = "teach" }

[[tags]]
name = "rate"
role = "setpoint"
type = "u16"
node_id = "ns=2;s=Rate"
limits = { min = 1.0, max = 60.0 }

[[tags]]
name = "threshold"
role = "setpoint"
type = "f32"
node_id = "ns=2;s=Threshold"
limits = { min = 50.0, max = 99.0 }

[[tags]]
name = "a1"
role = "alarm_enable"
type = "bool"
node_id = "ns=2;s=A1"

[[tags]]
name = "a2"
role = "alarm_enable"
type = "bool"
node_id = "ns=2;s=A2"
"#;
        StationModel::new(test_support::profile("aoi_like", "opcua", tags), 1)
    }

    #[test]
    fn every_action_parses_from_its_name_and_back() {
        for action in Action::ALL {
            assert_eq!(action.name().parse::<Action>(), Ok(action));
            assert_eq!(format!(" {action}\n").parse::<Action>(), Ok(action));
        }
    }

    #[test]
    fn an_unknown_action_names_itself_and_every_valid_action() {
        let err = "explode".parse::<Action>().unwrap_err().to_string();
        assert!(err.starts_with("unknown action `explode`; valid actions: fault, recover,"));
        for action in Action::ALL {
            assert!(err.contains(action.name()), "{err}");
        }
    }

    #[test]
    fn a_schedule_parses_in_time_order_with_decimal_seconds() {
        let s = Schedule::parse(" recover@15, fault@10 ,mode_program@0.25s,fault@10").unwrap();
        let items: Vec<(f64, Action)> = s
            .items()
            .iter()
            .map(|i| (i.at.as_secs_f64(), i.action))
            .collect();
        assert_eq!(
            items,
            vec![
                (0.25, Action::ModeProgram),
                (10.0, Action::Fault),
                (10.0, Action::Fault),
                (15.0, Action::Recover)
            ]
        );
        assert_eq!(
            s.to_string(),
            "mode_program@0.25,fault@10,fault@10,recover@15"
        );
        assert!(Schedule::parse("  ").unwrap().is_empty());
    }

    #[test]
    fn schedule_errors_name_every_bad_item_and_list_valid_actions() {
        let err = Schedule::parse("fault@10,boom@3,recover,silent@-1,normal@x").unwrap_err();
        let positions: Vec<usize> = err.problems.iter().map(|p| p.position).collect();
        assert_eq!(positions, vec![2, 3, 4, 5]);
        let text = err.to_string();
        assert!(
            text.contains("schedule item 2 `boom@3`: unknown action `boom`; valid actions: fault,"),
            "{text}"
        );
        assert!(
            text.contains("schedule item 3 `recover`: expected ACTION@SECONDS"),
            "{text}"
        );
        assert!(
            text.contains("schedule item 4 `silent@-1`: time `-1` is not a number of seconds"),
            "{text}"
        );
    }

    #[test]
    fn a_player_returns_each_item_once_when_its_time_has_come() {
        let s = Schedule::parse("fault@1,recover@2,silent@2,normal@5").unwrap();
        let mut p = s.player();
        assert_eq!(p.next_at(), Some(Duration::from_secs(1)));
        assert!(p.due(Duration::from_millis(999)).is_empty());
        let names = |v: Vec<ScheduledAction>| v.into_iter().map(|i| i.action).collect::<Vec<_>>();
        assert_eq!(names(p.due(Duration::from_secs(1))), vec![Action::Fault]);
        assert!(p.due(Duration::from_secs(1)).is_empty());
        assert_eq!(
            names(p.due(Duration::from_secs(4))),
            vec![Action::Recover, Action::Silent]
        );
        assert!(!p.is_finished());
        assert_eq!(names(p.due(Duration::from_secs(60))), vec![Action::Normal]);
        assert!(p.is_finished());
        assert_eq!(p.next_at(), None);
    }

    fn press() -> StationModel {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../devices/stamping_press.toml");
        StationModel::new(crate::profile::load_profile(&path).unwrap(), 3)
    }

    fn tick(m: &mut StationModel, n: i64) {
        for i in 0..n {
            m.tick(linesentry_event::Timestamp::from_micros(i * 100_000));
        }
    }

    fn number(m: &StationModel, tag: &str) -> f64 {
        m.value(tag).and_then(Value::as_f64).unwrap()
    }

    #[test]
    fn drift_ramps_the_first_limited_measurement_steadily_past_its_limit_and_holds_it() {
        let mut m = press();
        assert_eq!(
            Action::Drift.apply(&mut m),
            Outcome::Applied("die_temp drifting to 261.5".into())
        );
        assert_eq!(m.drifting(), Some("die_temp"));
        let mut values = vec![number(&m, "die_temp")];
        for _ in 0..80 {
            tick(&mut m, 1);
            values.push(number(&m, "die_temp"));
        }
        // 2 % of the 230 degC span per tick, never back, ending 5 % beyond 250 degC.
        let steps: Vec<f64> = values.windows(2).map(|w| w[1] - w[0]).collect();
        assert!(steps.iter().all(|d| *d >= 0.0), "{values:?}");
        assert!((steps[0] - 4.6).abs() < 0.11, "{steps:?}");
        assert!((values[80] - 261.5).abs() < 0.05, "{values:?}");
        // The press alarms above its die temperature alarm limit, as its controller would.
        assert_eq!(m.value("press_alarm"), Some(&Value::Bool(true)));
        assert!(number(&m, "die_temp") > number(&m, "die_temp_high_limit"));
    }

    #[test]
    fn alarm_silenced_puts_a_value_beyond_its_alarm_limit_with_the_alarm_off() {
        let mut m = press();
        assert_eq!(
            m.value("press_alarm"),
            Some(&Value::Bool(false)),
            "production"
        );
        let limit = number(&m, "die_temp_high_limit");
        assert!(matches!(
            Action::AlarmSilenced.apply(&mut m),
            Outcome::Applied(ref what) if what.starts_with("alarms silenced, die_temp -> ")
        ));
        tick(&mut m, 10);
        // 5 % of the 230 degC span above the limit, and no alarm showing.
        assert!((number(&m, "die_temp") - (limit + 11.5)).abs() < 0.05);
        assert!(m.alarms_silenced());
        assert_eq!(m.value("press_alarm"), Some(&Value::Bool(false)));
        // Unsilenced, the same value alarms.
        m.silence_alarms(false);
        assert_eq!(m.value("press_alarm"), Some(&Value::Bool(true)));
    }

    #[test]
    fn drift_and_alarm_silenced_have_no_effect_without_their_tags() {
        let mut m = aoi_like();
        assert!(matches!(Action::Drift.apply(&mut m), Outcome::NoEffect(_)));
        assert!(matches!(
            Action::AlarmSilenced.apply(&mut m),
            Outcome::NoEffect(_)
        ));
        assert!(!m.alarms_silenced());
    }

    #[test]
    fn mode_program_falls_back_to_teach_and_mode_run_restores_production() {
        let mut m = aoi_like();
        assert_eq!(
            Action::ModeProgram.apply(&mut m),
            Outcome::Applied("mode -> teach".into())
        );
        assert_eq!(m.value("mode"), Some(&Value::UInt(2)));
        Action::ModeRun.apply(&mut m);
        assert_eq!(m.value("mode"), Some(&Value::UInt(0)));
    }

    #[test]
    fn fault_and_recover_switch_the_status() {
        let mut m = aoi_like();
        assert_eq!(m.value("state"), Some(&Value::UInt(1)));
        assert_eq!(
            Action::Fault.apply(&mut m),
            Outcome::Applied("state -> fault".into())
        );
        assert_eq!(m.value("state"), Some(&Value::UInt(4)));
        Action::Recover.apply(&mut m);
        assert_eq!(m.value("state"), Some(&Value::UInt(1)));
    }

    #[test]
    fn setpoint_change_moves_the_first_setpoint_and_stays_within_its_limits() {
        let mut m = aoi_like();
        let before = m.value("rate").and_then(Value::as_f64).unwrap();
        for _ in 0..40 {
            assert!(matches!(
                Action::SetpointChange.apply(&mut m),
                Outcome::Applied(_)
            ));
            let now = m.value("rate").and_then(Value::as_f64).unwrap();
            assert!((1.0..=60.0).contains(&now), "{now}");
        }
        assert_ne!(m.value("rate").and_then(Value::as_f64), Some(before));
        assert_eq!(m.pinned("threshold"), None, "only the first setpoint moves");
    }

    #[test]
    fn setpoint_change_always_changes_an_integer_setpoint() {
        let mut m = aoi_like();
        for _ in 0..20 {
            let before = m.value("rate").cloned();
            Action::SetpointChange.apply(&mut m);
            assert_ne!(m.value("rate").cloned(), before);
        }
    }

    #[test]
    fn alarm_disable_clears_the_first_enable_and_alarm_enable_restores_all() {
        let mut m = aoi_like();
        Action::AlarmDisable.apply(&mut m);
        assert_eq!(m.value("a1"), Some(&Value::Bool(false)));
        assert_eq!(m.value("a2"), Some(&Value::Bool(true)));
        Action::AlarmEnable.apply(&mut m);
        assert_eq!(m.value("a1"), Some(&Value::Bool(true)));
    }

    #[test]
    fn actions_without_a_target_in_the_profile_have_no_effect() {
        let mut m = aoi_like();
        for action in [
            Action::AlarmLimitChange,
            Action::ProgramChange,
            Action::QualityBurst,
        ] {
            assert!(
                matches!(action.apply(&mut m), Outcome::NoEffect(_)),
                "{action}"
            );
        }
    }

    #[test]
    fn setpoint_out_of_range_puts_the_first_limited_setpoint_beyond_its_limits() {
        let mut m = aoi_like();
        assert!(matches!(
            Action::SetpointOutOfRange.apply(&mut m),
            Outcome::Applied(_)
        ));
        let rate = m.value("rate").and_then(Value::as_f64).unwrap();
        assert!(rate > 60.0, "{rate}");
        assert_eq!(m.pinned("threshold"), None);
    }

    #[test]
    fn counters_reset_starts_counters_from_zero_and_they_count_on() {
        let profile = test_support::profile(
            "counting",
            "modbus",
            "[[tags]]\nname = \"parts\"\nrole = \"counter\"\ntype = \"u32\"\narea = \"input_register\"\naddress = 0\n",
        );
        let mut m = StationModel::new(profile, 1);
        for i in 0..20 {
            m.tick(linesentry_event::Timestamp::from_micros(i));
        }
        let before = m.value("parts").and_then(Value::as_f64).unwrap();
        assert!(before > 5.0, "{before}");
        assert_eq!(
            Action::CountersReset.apply(&mut m),
            Outcome::Applied("parts -> 0".into())
        );
        assert_eq!(m.value("parts"), Some(&Value::UInt(0)));
        m.tick(linesentry_event::Timestamp::from_micros(21));
        let after = m.value("parts").and_then(Value::as_f64).unwrap();
        assert!(after > 0.0 && after < before, "{after}");
        assert!(matches!(
            Action::CountersReset.apply(&mut aoi_like()),
            Outcome::NoEffect(_)
        ));
    }

    #[test]
    fn opc_ua_security_actions_set_the_model_and_do_nothing_on_modbus() {
        let mut m = aoi_like();
        Action::PolicyDowngrade.apply(&mut m);
        Action::SessionFlood.apply(&mut m);
        Action::PasswordGuess.apply(&mut m);
        assert_eq!(m.security(), SecurityOffer::WithoutStrongest);
        Action::PolicyDowngradeAll.apply(&mut m);
        assert_eq!(m.security(), SecurityOffer::OnlyWeaker);
        assert_eq!(m.intruder_sessions(), INTRUDER_SESSIONS);
        assert_eq!(m.take_login_guesses(), LOGIN_GUESSES);
        assert_eq!(m.take_login_guesses(), 0);
        let modbus = test_support::profile(
            "plc",
            "modbus",
            "[[tags]]\nname = \"x\"\nrole = \"counter\"\ntype = \"u16\"\narea = \"input_register\"\naddress = 0\n",
        );
        let mut plc = StationModel::new(modbus, 1);
        for action in [
            Action::TimestampsFreeze,
            Action::ServerSuspend,
            Action::PolicyDowngrade,
            Action::PolicyDowngradeAll,
            Action::SessionFlood,
            Action::PasswordGuess,
            Action::DiagClear,
        ] {
            // diag_clear is the Modbus action: no effect on the OPC UA station.
            let target = if action == Action::DiagClear {
                &mut m
            } else {
                &mut plc
            };
            assert!(
                matches!(action.apply(target), Outcome::NoEffect(_)),
                "{action}"
            );
        }
        assert!(!plc.weak_security());
        assert!(!plc.is_suspended());
        plc.diag_mut().arrived();
        assert!(matches!(
            Action::DiagClear.apply(&mut plc),
            Outcome::Applied(_)
        ));
        assert_eq!(*plc.diag(), crate::diag::DiagCounters::default());
        m.tick(linesentry_event::Timestamp::from_micros(7));
        Action::TimestampsFreeze.apply(&mut m);
        m.tick(linesentry_event::Timestamp::from_micros(8));
        assert_eq!(
            m.source_time(),
            Some(linesentry_event::Timestamp::from_micros(7))
        );
        Action::ServerSuspend.apply(&mut m);
        assert!(m.is_suspended());
    }

    #[test]
    fn link_actions_set_the_link_behaviour() {
        let mut m = aoi_like();
        for (action, link) in [
            (Action::Silent, LinkBehaviour::Silent),
            (Action::Garbage, LinkBehaviour::Garbage),
            (Action::Exceptions, LinkBehaviour::Exceptions),
            (Action::Normal, LinkBehaviour::Normal),
        ] {
            action.apply(&mut m);
            assert_eq!(m.link(), link);
        }
    }
}
