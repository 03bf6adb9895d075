//! One simulated station: the tags of a profile with normal production dynamics, plus the
//! state a scenario can change. Pure: no I/O and no clock; the caller ticks it.
//!
//! # Values
//!
//! Normal production comes from the built-in generator run without its own scenario
//! ([`Generator::steady`]): measurements on a bounded random walk within their limits,
//! counters and part ids advancing by one per tick, about 2 % of quality checks failing,
//! setpoints and alarm limits at nominal. On top of it the model keeps the scenario state
//! and resolves each tag's value from both, in this order:
//!
//! 1. a *pinned* value ([`StationModel::pin`]) wins over everything (setpoint and alarm-limit
//!    tampering, a cleared alarm-enable bit, a write from a protocol front end);
//! 2. the role's scenario state: a forced status or mode (by state name), the failing
//!    quality checks of a burst, the program checksum and firmware revision;
//! 3. otherwise the generated value. Frozen measurements keep the last generated value.
//!
//! A drifting measurement ([`StationModel::start_drift`]) follows a steady ramp instead of its
//! generated value: [`DRIFT_STEP_PERCENT`] of its limits' span per tick, up to
//! [`DRIFT_BEYOND_PERCENT`] beyond its upper limit, where it stays.
//!
//! An alarm-active tag (not pinned) behaves like the controller's alarm output: on while a
//! measurement linked to it (`alarm_active`, `alarm_high`, `alarm_low` in the profile) is
//! beyond the current value of its alarm-limit tag, unless the alarms are silenced
//! ([`StationModel::silence_alarms`]), when it stays off whatever the values.
//!
//! Status and mode in normal production are the tag's production state, found by name
//! (`run`, `running`, `inspecting`, `producing`; `run`, `auto`, `automatic`, `continuous`,
//! `remote`), so every shipped profile reads as a running machine; a two-state bool status
//! without such a name (a hood closed, a door locked) is healthy at 1.
//!
//! Every value is *conformed* to its tag: it has the [`Value`] variant the codec decodes the
//! tag's type to, and it is representable: integers are clamped to the type's range, f32
//! values are rounded to f32, scaled integers are rounded to a whole raw value, text is
//! printable ASCII and cut to a Modbus string's capacity. So what a client decodes equals
//! [`StationModel::value`], and a front end can always encode it.
//!
//! Scenario changes act at once (the next read sees them); a quality burst fails the checks
//! of the next ticks, since a tick is one part inspected.
//!
//! # Protocol-neutral state for front ends
//!
//! Beside the tag values the model holds what a protocol server reports about itself: the
//! [`DeviceIdentity`] (Modbus FC 43/14 objects; OPC UA `BuildInfo` and `ApplicationUri`),
//! whose `revision` always equals the firmware revision, and the [`LinkBehaviour`], which
//! each front end maps onto its protocol (see the variants).

use std::fmt;
use std::sync::Arc;

use thiserror::Error;

use linesentry_agent::source::generator::{self, Generator};
use linesentry_agent::source::{DataType, DeviceIdentity, TagRole, Value};
use linesentry_agent::source::{Profile, TagSpec};
use linesentry_event::Timestamp;

use super::diag::DiagCounters;

/// Firmware revision of a fresh model (the generator's too).
const BASE_FIRMWARE: Revision = Revision {
    major: 2,
    minor: 4,
    patch: 1,
};

/// Program checksum before any program change, and after the first one (the generator's).
const BASE_CHECKSUM: u32 = 0x1A2B_3C4D;
const CHANGED_CHECKSUM: u32 = 0x5A17_C0DE;

/// A drifting measurement moves this share of its limits' span per tick.
pub const DRIFT_STEP_PERCENT: f64 = 2.0;
/// ... until it is this share of the span beyond its upper limit.
pub const DRIFT_BEYOND_PERCENT: f64 = 5.0;

/// State names that mean "producing" for a status tag, in order of preference.
const PRODUCTION_STATUS: &[&str] = &["run", "running", "inspecting", "producing"];
/// State names of the normal operating mode, in order of preference.
const PRODUCTION_MODE: &[&str] = &["run", "auto", "automatic", "continuous", "remote"];

/// Which security policies an OPC UA server offers; every variant offers None as well.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum SecurityOffer {
    /// Basic256Sha256, Aes128_Sha256_RsaOaep and Aes256_Sha256_RsaPss.
    #[default]
    Full,
    /// Basic256Sha256 only: the strongest policy is gone, the usual one stays.
    WithoutStrongest,
    /// Aes128_Sha256_RsaOaep only: weaker than Basic256Sha256, so a client that insists on
    /// Basic256Sha256 finds no endpoint.
    OnlyWeaker,
}

/// How the station's link answers requests. Each protocol front end maps the variants onto
/// its protocol; the Modbus mapping is given with each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum LinkBehaviour {
    /// Every request is answered.
    #[default]
    Normal,
    /// Connections are accepted and requests read, but nothing is ever answered: the client
    /// must time out (a hung controller, a half-open link).
    Silent,
    /// Answers are malformed frames (Modbus: wrong transaction id, protocol id or length,
    /// or a random PDU under the wrong function code).
    Garbage,
    /// Every read is refused (Modbus: exception 02, illegal data address).
    Exceptions,
}

impl LinkBehaviour {
    pub fn name(self) -> &'static str {
        match self {
            LinkBehaviour::Normal => "normal",
            LinkBehaviour::Silent => "silent",
            LinkBehaviour::Garbage => "garbage",
            LinkBehaviour::Exceptions => "exceptions",
        }
    }
}

impl fmt::Display for LinkBehaviour {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a model operation was refused. The model is unchanged when one is returned.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ModelError {
    #[error("unknown tag `{tag}`; expected one of: {valid}")]
    UnknownTag { tag: String, valid: String },
    #[error("no {role} tag has a state `{state}`; expected one of: {valid}")]
    UnknownState {
        role: TagRole,
        state: String,
        valid: String,
    },
    #[error("cannot set tag `{tag}` to {found}; expected {expected}")]
    TypeMismatch {
        tag: String,
        found: String,
        expected: &'static str,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Revision {
    major: u16,
    minor: u16,
    patch: u16,
}

impl fmt::Display for Revision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// A measurement on a steady ramp towards `target`.
#[derive(Debug, Clone, Copy)]
struct Drift {
    tag: usize,
    level: f64,
    step: f64,
    target: f64,
}

#[derive(Debug)]
struct SimTag {
    /// The generator's last value (held while the tag is a frozen measurement).
    generated: Value,
    pinned: Option<Value>,
    /// Subtracted from a counter's generated value: where it stood at its last reset.
    offset: f64,
    /// What readers see; recomputed on every tick and every state change.
    value: Value,
}

/// A simulated station of one profile. See the [module documentation](self).
#[derive(Debug)]
#[allow(clippy::struct_excessive_bools)] // independent scenario switches, each on or off
pub struct StationModel {
    profile: Arc<Profile>,
    generator: Generator,
    /// One per profile tag, in profile order.
    tags: Vec<SimTag>,
    /// Forced status state name; `None` is normal production.
    status: Option<String>,
    /// Forced mode state name; `None` is the production mode.
    mode: Option<String>,
    frozen: bool,
    /// Checks still to fail after the current one.
    failures_pending: u32,
    /// Whether the checks of the current tick fail.
    failing: bool,
    program_revision: u32,
    firmware: Revision,
    identity: DeviceIdentity,
    identity_generation: u32,
    link: LinkBehaviour,
    /// The security policies the server offers (OPC UA).
    security: SecurityOffer,
    /// Extra client sessions an intruder holds open on the server (OPC UA).
    intruder_sessions: u32,
    /// Failed logins an intruder still has to try (OPC UA).
    login_guesses: u32,
    /// The server reports a state other than Running (OPC UA).
    suspended: bool,
    /// Source timestamp every value keeps while set (replayed data).
    stamp_held: Option<Timestamp>,
    drift: Option<Drift>,
    /// Alarm-active tags stay off whatever the values.
    alarms_silenced: bool,
    /// Modbus diagnostic counters (FC 08 / FC 11) of what the front end served.
    diag: DiagCounters,
    ticks: u64,
    updated: Option<Timestamp>,
}

impl StationModel {
    /// A station of `profile` in normal production, with values already in place (as after
    /// one tick, whose time is unknown: [`StationModel::updated`] is `None`). The same seed
    /// gives the same sequence of values.
    pub fn new(profile: Arc<Profile>, seed: u64) -> Self {
        let mut generator = Generator::steady(&profile.name, &profile, seed);
        let tags = generator
            .sample(Timestamp::from_micros(0))
            .into_iter()
            .map(|reading| SimTag {
                value: reading.value.clone(),
                generated: reading.value,
                pinned: None,
                offset: 0.0,
            })
            .collect();
        let identity = DeviceIdentity {
            vendor: Some("LineSentry Simulation".to_owned()),
            product_code: Some(format!("LS-{}", profile.name.to_ascii_uppercase())),
            revision: Some(BASE_FIRMWARE.to_string()),
            product_name: Some(if profile.description.is_empty() {
                profile.name.clone()
            } else {
                profile.description.clone()
            }),
            application_uri: Some(format!("urn:linesentry:sim:{}", profile.name)),
            certificate_thumbprint: None,
        };
        let mut model = StationModel {
            profile,
            generator,
            tags,
            status: None,
            mode: None,
            frozen: false,
            failures_pending: 0,
            failing: false,
            program_revision: 0,
            firmware: BASE_FIRMWARE,
            identity,
            identity_generation: 0,
            link: LinkBehaviour::Normal,
            security: SecurityOffer::Full,
            intruder_sessions: 0,
            login_guesses: 0,
            suspended: false,
            stamp_held: None,
            drift: None,
            alarms_silenced: false,
            diag: DiagCounters::default(),
            ticks: 0,
            updated: None,
        };
        model.settle();
        model
    }

    /// Advances one sample: measurements move (unless frozen), counters and part ids
    /// advance, one quality check is made.
    pub fn tick(&mut self, now: Timestamp) {
        let sample = self.generator.sample(now);
        for ((tag, spec), reading) in self.tags.iter_mut().zip(&self.profile.tags).zip(sample) {
            if !(self.frozen && spec.role == TagRole::Measurement) {
                tag.generated = reading.value;
            }
        }
        if let (Some(d), false) = (&mut self.drift, self.frozen) {
            d.level = (d.level + d.step).min(d.target);
        }
        self.failing = self.failures_pending > 0;
        self.failures_pending = self.failures_pending.saturating_sub(1);
        self.ticks += 1;
        self.updated = Some(now);
        self.settle();
    }

    pub fn profile(&self) -> &Arc<Profile> {
        &self.profile
    }

    /// The current engineering value of `tag`; `None` for a name not in the profile.
    pub fn value(&self, tag: &str) -> Option<&Value> {
        self.index_of(tag).map(|i| &self.tags[i].value)
    }

    /// The current value of the profile's tag number `index` (profile order).
    ///
    /// # Panics
    /// When `index` is not below the profile's tag count.
    pub fn value_at(&self, index: usize) -> &Value {
        &self.tags[index].value
    }

    /// Every tag with its current value, in profile order.
    pub fn values(&self) -> impl Iterator<Item = (&TagSpec, &Value)> {
        self.profile
            .tags
            .iter()
            .zip(self.tags.iter().map(|t| &t.value))
    }

    /// Ticks so far.
    pub fn ticks(&self) -> u64 {
        self.ticks
    }

    /// Time of the last tick (a source timestamp for every value); `None` before the first.
    pub fn updated(&self) -> Option<Timestamp> {
        self.updated
    }

    /// Forces every status tag that has the state `name` (case-insensitive) into it; `None`
    /// returns to normal production. Returns the names of the tags the force applies to.
    pub fn force_status(&mut self, name: Option<&str>) -> Result<Vec<String>, ModelError> {
        let affected = self.force(TagRole::Status, name)?;
        self.status = name.map(str::to_owned);
        self.settle();
        Ok(affected)
    }

    /// The forced status, if any.
    pub fn forced_status(&self) -> Option<&str> {
        self.status.as_deref()
    }

    /// Sets every mode tag that has the state `name` (case-insensitive) to it; `None`
    /// returns to the production mode. Returns the names of the tags it applies to.
    pub fn force_mode(&mut self, name: Option<&str>) -> Result<Vec<String>, ModelError> {
        let affected = self.force(TagRole::Mode, name)?;
        self.mode = name.map(str::to_owned);
        self.settle();
        Ok(affected)
    }

    /// The forced mode, if any.
    pub fn forced_mode(&self) -> Option<&str> {
        self.mode.as_deref()
    }

    /// Names of the states the tags of `role` know, in profile order, without repeats.
    pub fn state_names(&self, role: TagRole) -> Vec<&str> {
        let mut names: Vec<&str> = Vec::new();
        for spec in self.profile.tags.iter().filter(|t| t.role == role) {
            for name in spec.states.values() {
                if !names.iter().any(|n| n.eq_ignore_ascii_case(name)) {
                    names.push(name);
                }
            }
        }
        names
    }

    /// Pins `tag` to `value` until [`StationModel::unpin`]: the value no longer follows
    /// production or scenario state. Numbers are clamped to what the tag's type holds.
    /// Bool tags take a bool, string tags text, numeric tags a finite number.
    pub fn pin(&mut self, tag: &str, value: Value) -> Result<(), ModelError> {
        let i = self.find(tag)?;
        let spec = &self.profile.tags[i];
        let expected = match spec.data_type {
            DataType::Bool => (!matches!(value, Value::Bool(_))).then_some("a bool"),
            DataType::String => (!matches!(value, Value::Text(_))).then_some("text"),
            _ => (!matches!(value, Value::Int(_) | Value::UInt(_) | Value::Float(_))
                || !value.as_f64().is_some_and(f64::is_finite))
            .then_some("a finite number"),
        };
        if let Some(expected) = expected {
            return Err(ModelError::TypeMismatch {
                tag: tag.to_owned(),
                found: format!("{value:?}"),
                expected,
            });
        }
        self.tags[i].pinned = Some(conform(spec, value));
        self.settle();
        Ok(())
    }

    /// Lets `tag` follow production and scenario state again.
    pub fn unpin(&mut self, tag: &str) -> Result<(), ModelError> {
        let i = self.find(tag)?;
        self.tags[i].pinned = None;
        self.settle();
        Ok(())
    }

    /// The value `tag` is pinned to, if it is.
    pub fn pinned(&self, tag: &str) -> Option<&Value> {
        self.index_of(tag)
            .and_then(|i| self.tags[i].pinned.as_ref())
    }

    /// Fails the quality checks of the next `checks` ticks (added to a burst under way).
    pub fn fail_next_checks(&mut self, checks: u32) {
        self.failures_pending = self.failures_pending.saturating_add(checks);
    }

    /// Quality checks of the coming ticks that will fail.
    pub fn failing_checks(&self) -> u32 {
        self.failures_pending
    }

    /// Whether the quality checks of the current tick fail.
    pub fn is_failing(&self) -> bool {
        self.failing
    }

    /// While frozen, measurements keep their value; counters and the rest still move.
    pub fn set_frozen(&mut self, frozen: bool) {
        self.frozen = frozen;
    }

    pub fn is_frozen(&self) -> bool {
        self.frozen
    }

    /// Starts the first numeric measurement with limits drifting upwards (see the module
    /// documentation); a drift under way restarts from where it is. Returns the tag's name
    /// and the value the drift ends at, `None` when the profile has no such measurement.
    pub fn start_drift(&mut self) -> Option<(String, f64)> {
        let (i, spec) = self.profile.tags.iter().enumerate().find(|(_, t)| {
            t.role == TagRole::Measurement && t.data_type.is_numeric() && t.limits.is_some()
        })?;
        let limits = spec.limits?;
        let span = (limits.max - limits.min).abs();
        let level = self.tags[i]
            .value
            .as_f64()
            .unwrap_or_else(|| generator::nominal(spec));
        let target = limits.max + span * DRIFT_BEYOND_PERCENT / 100.0;
        self.drift = Some(Drift {
            tag: i,
            level,
            step: span * DRIFT_STEP_PERCENT / 100.0,
            target,
        });
        let name = spec.name.clone();
        self.settle();
        Some((name, target))
    }

    /// The drifting measurement, if any.
    pub fn drifting(&self) -> Option<&str> {
        self.drift.map(|d| self.profile.tags[d.tag].name.as_str())
    }

    /// While silenced, alarm-active tags stay off even with a value beyond its alarm limit.
    pub fn silence_alarms(&mut self, silenced: bool) {
        self.alarms_silenced = silenced;
        self.settle();
    }

    pub fn alarms_silenced(&self) -> bool {
        self.alarms_silenced
    }

    /// Loads a new program: program checksum tags change (and stay changed).
    /// Returns the new revision number (1 after the first change).
    pub fn change_program(&mut self) -> u32 {
        self.program_revision += 1;
        self.settle();
        self.program_revision
    }

    /// Flashes the next firmware (minor revision + 1): firmware tags and the identity's
    /// revision change together. Returns the new revision text.
    pub fn bump_firmware(&mut self) -> String {
        self.firmware = Revision {
            minor: self.firmware.minor + 1,
            patch: 0,
            ..self.firmware
        };
        let text = self.firmware.to_string();
        self.identity.revision = Some(text.clone());
        self.settle();
        text
    }

    /// The firmware revision, e.g. `2.4.1`.
    pub fn firmware(&self) -> String {
        self.firmware.to_string()
    }

    /// Another device answers at this address: vendor, product code and application URI
    /// change (each call gives a new impostor); product name and firmware stay.
    pub fn change_identity(&mut self) -> &DeviceIdentity {
        self.identity_generation += 1;
        let n = self.identity_generation;
        self.identity.vendor = Some("Substitute Automation".to_owned());
        self.identity.product_code = Some(format!("SA-{:04}", 4000 + n));
        self.identity.application_uri = Some(self.impostor_uri(n));
        &self.identity
    }

    /// The application URI of the `n`th impostor [`StationModel::change_identity`] brings
    /// (counting from 1), so a server can make its certificate ahead of time.
    pub fn impostor_uri(&self, n: u32) -> String {
        format!("urn:substitute-automation:{}:{n}", self.profile.name)
    }

    /// Replaces the identity; its `revision` is ignored, since it follows the firmware.
    pub fn set_identity(&mut self, identity: DeviceIdentity) {
        let revision = self.identity.revision.take();
        self.identity = DeviceIdentity {
            revision,
            ..identity
        };
    }

    /// What the device reports about itself (FC 43/14 objects, OPC UA BuildInfo).
    pub fn identity(&self) -> &DeviceIdentity {
        &self.identity
    }

    /// Counters start again from zero (a diagnostic counter reset, not a restart): each
    /// counter tag reads what it counted since now. Returns the counter tags.
    pub fn reset_counters(&mut self) -> Vec<String> {
        let mut reset = Vec::new();
        for (tag, spec) in self.tags.iter_mut().zip(&self.profile.tags) {
            if spec.role == TagRole::Counter {
                tag.offset = tag.generated.as_f64().unwrap_or(0.0);
                reset.push(spec.name.clone());
            }
        }
        self.settle();
        reset
    }

    /// The Modbus diagnostic counters.
    pub fn diag(&self) -> &DiagCounters {
        &self.diag
    }

    /// The Modbus diagnostic counters, for the front end to count and a clear to reset.
    pub fn diag_mut(&mut self) -> &mut DiagCounters {
        &mut self.diag
    }

    /// Which security policies the server offers.
    pub fn set_security(&mut self, offer: SecurityOffer) {
        self.security = offer;
    }

    pub fn security(&self) -> SecurityOffer {
        self.security
    }

    /// Whether the server offers less than its full set of security policies.
    pub fn weak_security(&self) -> bool {
        self.security != SecurityOffer::Full
    }

    /// Extra sessions an intruder should hold open on the server.
    pub fn set_intruder_sessions(&mut self, sessions: u32) {
        self.intruder_sessions = sessions;
    }

    pub fn intruder_sessions(&self) -> u32 {
        self.intruder_sessions
    }

    /// Adds failed logins an intruder is to try.
    pub fn add_login_guesses(&mut self, guesses: u32) {
        self.login_guesses = self.login_guesses.saturating_add(guesses);
    }

    /// Takes the failed logins still to try (the caller tries them).
    pub fn take_login_guesses(&mut self) -> u32 {
        std::mem::take(&mut self.login_guesses)
    }

    /// Whether the server reports itself Suspended rather than Running (OPC UA).
    pub fn set_suspended(&mut self, suspended: bool) {
        self.suspended = suspended;
    }

    pub fn is_suspended(&self) -> bool {
        self.suspended
    }

    /// Holds the source timestamp of every value at the last tick's time while values keep
    /// changing (replayed or spoofed data); `false` lets it follow the ticks again.
    pub fn hold_source_time(&mut self, hold: bool) {
        self.stamp_held = if hold { self.updated } else { None };
    }

    /// The source timestamp of the current values: the held one, else the last tick's.
    pub fn source_time(&self) -> Option<Timestamp> {
        self.stamp_held.or(self.updated)
    }

    pub fn set_link(&mut self, link: LinkBehaviour) {
        self.link = link;
    }

    pub fn link(&self) -> LinkBehaviour {
        self.link
    }

    fn index_of(&self, tag: &str) -> Option<usize> {
        self.profile.tags.iter().position(|t| t.name == tag)
    }

    fn find(&self, tag: &str) -> Result<usize, ModelError> {
        self.index_of(tag).ok_or_else(|| ModelError::UnknownTag {
            tag: tag.to_owned(),
            valid: self
                .profile
                .tags
                .iter()
                .map(|t| t.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        })
    }

    /// The tags of `role` a forced state `name` applies to; an error when there is none.
    fn force(&self, role: TagRole, name: Option<&str>) -> Result<Vec<String>, ModelError> {
        let Some(name) = name else {
            return Ok(self
                .profile
                .tags
                .iter()
                .filter(|t| t.role == role)
                .map(|t| t.name.clone())
                .collect());
        };
        let affected: Vec<String> = self
            .profile
            .tags
            .iter()
            .filter(|t| t.role == role && state_of(t, name).is_some())
            .map(|t| t.name.clone())
            .collect();
        if affected.is_empty() {
            return Err(ModelError::UnknownState {
                role,
                state: name.to_owned(),
                valid: self.state_names(role).join(", "),
            });
        }
        Ok(affected)
    }

    /// Recomputes every value from the generated ones and the scenario state; alarm-active
    /// tags last, since they follow the others.
    fn settle(&mut self) {
        for i in 0..self.tags.len() {
            let value = self.resolve(i);
            self.tags[i].value = value;
        }
        for i in 0..self.tags.len() {
            let spec = &self.profile.tags[i];
            if spec.role == TagRole::AlarmActive && self.tags[i].pinned.is_none() {
                let on = !self.alarms_silenced && self.alarm_due(&spec.name);
                self.tags[i].value = conform(spec, generator::typed(spec, f64::from(u8::from(on))));
            }
        }
    }

    /// Whether a measurement whose alarm shows on the alarm-active tag `name` is beyond the
    /// current value of its alarm-limit tag.
    fn alarm_due(&self, name: &str) -> bool {
        let number = |tag: Option<&String>| tag.and_then(|t| self.value(t)).and_then(Value::as_f64);
        self.values().any(|(spec, value)| {
            let rules = &spec.rules;
            if spec.role != TagRole::Measurement || rules.alarm_active.as_deref() != Some(name) {
                return false;
            }
            let Some(v) = value.as_f64() else {
                return false;
            };
            number(rules.alarm_high.as_ref()).is_some_and(|h| v > h)
                || number(rules.alarm_low.as_ref()).is_some_and(|l| v < l)
        })
    }

    fn resolve(&self, i: usize) -> Value {
        let spec = &self.profile.tags[i];
        let tag = &self.tags[i];
        if let Some(pinned) = &tag.pinned {
            return pinned.clone();
        }
        let value = match spec.role {
            TagRole::Status => self
                .status
                .as_deref()
                .and_then(|name| state_of(spec, name))
                .or_else(|| production_state(spec, PRODUCTION_STATUS))
                .unwrap_or_else(|| healthy(spec, &tag.generated)),
            TagRole::Mode => self
                .mode
                .as_deref()
                .and_then(|name| state_of(spec, name))
                .or_else(|| production_state(spec, PRODUCTION_MODE))
                .unwrap_or_else(|| tag.generated.clone()),
            TagRole::Measurement if self.drift.is_some_and(|d| d.tag == i) => {
                let level = self.drift.map_or(0.0, |d| d.level);
                generator::typed(spec, level)
            }
            TagRole::QualityResult if self.failing => generator::quality_value(spec, true, 0.5),
            TagRole::Counter if tag.offset > 0.0 => generator::typed(
                spec,
                (tag.generated.as_f64().unwrap_or(0.0) - tag.offset).max(0.0),
            ),
            TagRole::ProgramChecksum => program_value(spec, self.program_revision),
            TagRole::Firmware if spec.data_type == DataType::String => {
                Value::Text(self.firmware.to_string())
            }
            TagRole::Firmware => {
                let Revision {
                    major,
                    minor,
                    patch,
                } = self.firmware;
                generator::typed(
                    spec,
                    f64::from(major) * 100.0 + f64::from(minor) * 10.0 + f64::from(patch),
                )
            }
            _ => tag.generated.clone(),
        };
        conform(spec, value)
    }
}

/// The value of the state called `name` (case-insensitive) of a status or mode tag; text
/// tags hold any name.
fn state_of(spec: &TagSpec, name: &str) -> Option<Value> {
    if spec.data_type == DataType::String {
        return Some(Value::Text(name.to_owned()));
    }
    let (&raw, _) = spec
        .states
        .iter()
        .find(|(_, state)| state.eq_ignore_ascii_case(name))?;
    Some(match spec.data_type {
        DataType::Bool => Value::Bool(raw != 0),
        DataType::I16 | DataType::I32 | DataType::I64 => Value::Int(raw),
        _ => Value::UInt(u64::try_from(raw).unwrap_or(0)),
    })
}

fn production_state(spec: &TagSpec, names: &[&str]) -> Option<Value> {
    if spec.data_type == DataType::String {
        return None;
    }
    names.iter().find_map(|name| state_of(spec, name))
}

/// A status tag with no production state: a bool is healthy at 1, others as generated.
fn healthy(spec: &TagSpec, generated: &Value) -> Value {
    if spec.data_type == DataType::Bool {
        Value::Bool(true)
    } else {
        generated.clone()
    }
}

/// The program checksum of `revision`, cut to what the tag's type holds; text tags show it
/// in hex.
fn program_value(spec: &TagSpec, revision: u32) -> Value {
    let checksum = match revision {
        0 => BASE_CHECKSUM,
        1 => CHANGED_CHECKSUM,
        n => CHANGED_CHECKSUM ^ n.wrapping_mul(0x9E37_79B9),
    };
    let raw = match spec.data_type {
        DataType::String => return Value::Text(format!("{checksum:08X}")),
        DataType::Bool => return Value::Bool(revision % 2 == 1),
        DataType::U16 => checksum & 0xFFFF,
        DataType::I16 => checksum & 0x7FFF,
        DataType::I32 => checksum & 0x7FFF_FFFF,
        _ => checksum,
    };
    generator::typed(spec, f64::from(raw))
}

/// `value` in the shape and resolution of `spec` (see the module documentation).
fn conform(spec: &TagSpec, value: Value) -> Value {
    match spec.data_type {
        DataType::Bool => Value::Bool(match value {
            Value::Bool(b) => b,
            Value::Text(_) => false,
            other => other.as_f64().is_some_and(|x| x != 0.0),
        }),
        DataType::String => {
            let text = match value {
                Value::Text(t) => t,
                other => other.to_string(),
            };
            let mut text: String = text.chars().filter(|c| (' '..='~').contains(c)).collect();
            if spec.length > 0 {
                text.truncate(usize::from(spec.length) * 2);
            }
            Value::Text(text)
        }
        data_type => conform_number(spec, data_type, value),
    }
}

fn conform_number(spec: &TagSpec, data_type: DataType, value: Value) -> Value {
    #[allow(clippy::float_cmp)] // exact on purpose: only the literal identity keeps integers
    let identity = spec.scale == 1.0 && spec.offset == 0.0;
    let range = int_range(data_type);
    let signed = matches!(data_type, DataType::I16 | DataType::I32 | DataType::I64);
    let int = |raw: i128| {
        if signed {
            Value::Int(raw as i64)
        } else {
            Value::UInt(raw as u64)
        }
    };
    if let (true, Some((lo, hi))) = (identity, range) {
        match value {
            Value::Int(i) => return int(i128::from(i).clamp(lo, hi)),
            Value::UInt(u) => return int(i128::from(u).clamp(lo, hi)),
            _ => {}
        }
    }
    let eng = match value {
        Value::Text(_) => generator::nominal(spec),
        other => other
            .as_f64()
            .filter(|x| x.is_finite())
            .unwrap_or_else(|| generator::nominal(spec)),
    };
    let raw = if identity {
        eng
    } else {
        (eng - spec.offset) / spec.scale
    };
    let raw = match (data_type, range) {
        (_, Some((lo, hi))) => raw.round().clamp(lo as f64, hi as f64),
        (DataType::F32, None) => {
            let max = f64::from(f32::MAX);
            f64::from(raw.clamp(-max, max) as f32)
        }
        _ => raw,
    };
    match (identity, range) {
        (true, Some(_)) => int(raw as i128),
        (true, None) => Value::Float(raw),
        (false, _) => Value::Float(raw * spec.scale + spec.offset),
    }
}

/// Inclusive range of an integer type; `None` for floats (and non-numeric types).
fn int_range(data_type: DataType) -> Option<(i128, i128)> {
    let bits = match data_type {
        DataType::U16 | DataType::I16 => 16,
        DataType::U32 | DataType::I32 => 32,
        DataType::U64 | DataType::I64 => 64,
        _ => return None,
    };
    Some(
        if matches!(data_type, DataType::I16 | DataType::I32 | DataType::I64) {
            (-(1i128 << (bits - 1)), (1i128 << (bits - 1)) - 1)
        } else {
            (0, (1i128 << bits) - 1)
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::test_support;

    const TAGS: &str = r#"
[[tags]]
name = "state"
role = "status"
type = "u16"
area = "input_register"
address = 0
states = { 0 = "idle", 1 = "run", 2 = "setup", 3 = "fault" }

[[tags]]
name = "hood"
role = "status"
type = "bool"
area = "discrete_input"
address = 0
states = { 0 = "open", 1 = "closed" }

[[tags]]
name = "mode"
role = "mode"
type = "u16"
area = "holding_register"
address = 0
states = { 0 = "off", 3 = "continuous", 4 = "program" }

[[tags]]
name = "die_temp"
role = "measurement"
type = "i16"
area = "input_register"
address = 1
scale = 0.1
limits = { min = 20.0, max = 250.0 }

[[tags]]
name = "tonnage_sp"
role = "setpoint"
type = "f32"
area = "holding_register"
address = 1
limits = { min = 50.0, max = 400.0 }

[[tags]]
name = "enable"
role = "alarm_enable"
type = "bool"
area = "coil"
address = 0

[[tags]]
name = "strokes"
role = "counter"
type = "u32"
area = "input_register"
address = 2

[[tags]]
name = "height"
role = "quality_result"
type = "f32"
area = "input_register"
address = 4
limits = { min = 90.0, max = 160.0 }

[[tags]]
name = "verdict"
role = "quality_result"
type = "bool"
area = "discrete_input"
address = 1

[[tags]]
name = "checksum"
role = "program_checksum"
type = "u32"
area = "input_register"
address = 6

[[tags]]
name = "recipe_no"
role = "program_checksum"
type = "u16"
area = "input_register"
address = 8

[[tags]]
name = "firmware"
role = "firmware"
type = "string"
area = "input_register"
address = 10
length = 3

[[tags]]
name = "firmware_no"
role = "firmware"
type = "u16"
area = "input_register"
address = 13
"#;

    fn profile() -> Arc<Profile> {
        test_support::profile("press", "modbus", TAGS)
    }

    fn model() -> StationModel {
        StationModel::new(profile(), 3)
    }

    fn ticks(m: &mut StationModel, n: u64) {
        for i in 0..n {
            m.tick(Timestamp::from_micros(i64::try_from(i).unwrap() * 100_000));
        }
    }

    #[test]
    fn a_fresh_station_runs_in_its_production_mode_with_alarms_enabled() {
        let m = model();
        assert_eq!(m.value("state"), Some(&Value::UInt(1)));
        assert_eq!(m.value("hood"), Some(&Value::Bool(true)));
        assert_eq!(m.value("mode"), Some(&Value::UInt(3)));
        assert_eq!(m.value("enable"), Some(&Value::Bool(true)));
        assert_eq!(m.value("firmware"), Some(&Value::Text("2.4.1".into())));
        assert_eq!(m.value("firmware_no"), Some(&Value::UInt(241)));
        assert_eq!(m.value("checksum"), Some(&Value::UInt(0x1A2B_3C4D)));
        assert_eq!(m.value("recipe_no"), Some(&Value::UInt(0x3C4D)));
        assert_eq!(m.identity().revision.as_deref(), Some("2.4.1"));
        assert_eq!(m.link(), LinkBehaviour::Normal);
        assert_eq!(m.updated(), None);
    }

    #[test]
    fn measurements_stay_within_limits_and_counters_advance_every_tick() {
        let mut m = model();
        let mut last = 0;
        for i in 0..1000 {
            m.tick(Timestamp::from_micros(i));
            let Some(Value::Float(t)) = m.value("die_temp") else {
                panic!("{:?}", m.value("die_temp"));
            };
            assert!((20.0..=250.0).contains(t), "{t}");
            let Some(Value::UInt(n)) = m.value("strokes") else {
                panic!()
            };
            assert!(*n > last);
            last = *n;
        }
        assert_eq!(m.ticks(), 1000);
        assert_eq!(m.updated(), Some(Timestamp::from_micros(999)));
    }

    #[test]
    fn values_have_the_resolution_of_their_tag_type() {
        let mut m = model();
        ticks(&mut m, 50);
        let Some(Value::Float(t)) = m.value("die_temp") else {
            panic!()
        };
        // Scaled i16: a whole number of tenths, exactly as a decoder computes it.
        assert_eq!(Value::Float(*t), Value::Float((t / 0.1).round() * 0.1));
        m.pin("tonnage_sp", Value::Float(123.456_78)).unwrap();
        assert_eq!(
            m.value("tonnage_sp"),
            Some(&Value::Float(f64::from(123.456_78_f32)))
        );
    }

    #[test]
    fn fault_forces_only_status_tags_that_know_the_state_and_recover_ends_it() {
        let mut m = model();
        assert_eq!(m.force_status(Some("FAULT")).unwrap(), vec!["state"]);
        assert_eq!(m.value("state"), Some(&Value::UInt(3)));
        assert_eq!(m.value("hood"), Some(&Value::Bool(true)));
        ticks(&mut m, 5);
        assert_eq!(m.value("state"), Some(&Value::UInt(3)), "held across ticks");
        m.force_status(None).unwrap();
        assert_eq!(m.value("state"), Some(&Value::UInt(1)));
        assert_eq!(m.forced_status(), None);
    }

    #[test]
    fn an_unknown_state_is_refused_with_the_known_ones() {
        let mut m = model();
        let err = m.force_mode(Some("teach")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "no mode tag has a state `teach`; expected one of: off, continuous, program"
        );
        assert_eq!(m.forced_mode(), None);
        assert_eq!(m.value("mode"), Some(&Value::UInt(3)));
    }

    #[test]
    fn a_pinned_value_wins_until_unpinned() {
        let mut m = model();
        m.pin("enable", Value::Bool(false)).unwrap();
        ticks(&mut m, 3);
        assert_eq!(m.value("enable"), Some(&Value::Bool(false)));
        assert_eq!(m.pinned("enable"), Some(&Value::Bool(false)));
        m.unpin("enable").unwrap();
        assert_eq!(m.value("enable"), Some(&Value::Bool(true)));
    }

    #[test]
    fn pins_are_checked_against_the_tag_type_and_clamped_to_its_range() {
        let mut m = model();
        assert!(matches!(
            m.pin("enable", Value::UInt(1)),
            Err(ModelError::TypeMismatch { .. })
        ));
        assert!(matches!(
            m.pin("strokes", Value::Float(f64::NAN)),
            Err(ModelError::TypeMismatch { .. })
        ));
        assert!(matches!(
            m.pin("nope", Value::Bool(true)),
            Err(ModelError::UnknownTag { .. })
        ));
        m.pin("recipe_no", Value::Int(-5)).unwrap();
        assert_eq!(m.value("recipe_no"), Some(&Value::UInt(0)));
        m.pin("die_temp", Value::Float(1.0e9)).unwrap();
        assert_eq!(m.value("die_temp"), Some(&Value::Float(32767.0 * 0.1)));
        m.pin("firmware", Value::Text("9.9.9-beta\u{e9}".into()))
            .unwrap();
        assert_eq!(m.value("firmware"), Some(&Value::Text("9.9.9-".into())));
    }

    #[test]
    fn frozen_measurements_hold_while_counters_keep_counting() {
        let mut m = model();
        ticks(&mut m, 5);
        m.set_frozen(true);
        let temp = m.value("die_temp").cloned();
        let strokes = m.value("strokes").cloned();
        ticks(&mut m, 50);
        assert_eq!(m.value("die_temp").cloned(), temp);
        assert_ne!(m.value("strokes").cloned(), strokes);
        m.set_frozen(false);
        let moved = (0..50).any(|_| {
            ticks(&mut m, 1);
            m.value("die_temp").cloned() != temp
        });
        assert!(moved);
    }

    #[test]
    fn a_quality_burst_fails_exactly_the_next_n_checks() {
        let mut m = model();
        m.fail_next_checks(3);
        assert_eq!(m.failing_checks(), 3);
        for _ in 0..3 {
            ticks(&mut m, 1);
            assert_eq!(m.value("verdict"), Some(&Value::Bool(false)));
            let Some(Value::Float(h)) = m.value("height") else {
                panic!()
            };
            assert!(*h > 160.0, "{h}");
            assert!(m.is_failing());
        }
        assert_eq!(m.failing_checks(), 0);
        ticks(&mut m, 1);
        assert!(!m.is_failing());
    }

    #[test]
    fn program_and_firmware_changes_show_in_tags_and_identity() {
        let mut m = model();
        assert_eq!(m.change_program(), 1);
        assert_eq!(m.value("checksum"), Some(&Value::UInt(0x5A17_C0DE)));
        assert_eq!(m.value("recipe_no"), Some(&Value::UInt(0xC0DE)));
        m.change_program();
        assert_ne!(m.value("checksum"), Some(&Value::UInt(0x5A17_C0DE)));
        assert_eq!(m.bump_firmware(), "2.5.0");
        assert_eq!(m.value("firmware"), Some(&Value::Text("2.5.0".into())));
        assert_eq!(m.value("firmware_no"), Some(&Value::UInt(250)));
        assert_eq!(m.identity().revision.as_deref(), Some("2.5.0"));
    }

    #[test]
    fn an_identity_change_replaces_vendor_and_product_but_not_the_revision() {
        let mut m = model();
        let before = m.identity().clone();
        let after = m.change_identity().clone();
        assert_ne!(after.vendor, before.vendor);
        assert_ne!(after.product_code, before.product_code);
        assert_ne!(after.application_uri, before.application_uri);
        assert_eq!(after.revision, before.revision);
        assert_ne!(m.change_identity().product_code, after.product_code);
        m.set_identity(DeviceIdentity {
            vendor: Some("V".into()),
            revision: Some("0.0.0".into()),
            ..DeviceIdentity::default()
        });
        assert_eq!(m.identity().vendor.as_deref(), Some("V"));
        assert_eq!(m.identity().revision.as_deref(), Some("2.4.1"));
    }

    #[test]
    fn the_same_seed_gives_the_same_values() {
        let (mut a, mut b) = (model(), model());
        ticks(&mut a, 20);
        ticks(&mut b, 20);
        assert!(a.values().zip(b.values()).all(|(x, y)| x == y));
    }
}
