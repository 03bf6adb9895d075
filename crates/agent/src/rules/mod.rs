//! Rules: where a reading becomes an event. Pure and synchronous: no I/O, no clock reads;
//! time comes with the readings (or is passed in), so every rule is tested with plain values.
//!
//! One [`StationRules`] per station owns that station's state: per tag the last accepted
//! value, what was last reported and since when it has not changed; per station the
//! reachability state, the burst and SPC windows, and the [`Baseline`] learned on first
//! contact. Memory is bounded: fixed state per profile tag, windows capped in length. What
//! the rules know of the tags themselves ([`RuleTags`]) is read-only and shared by every
//! station of the same profile.
//!
//! The first value of a watched tag is its baseline and raises nothing; later changes are
//! compared with it and the baseline follows each reported change. The baseline survives
//! restarts through the buffer ([`StationRules::take_state`]), so a reconnect or a restart
//! never causes a storm of false `setpoint.changed`.
//!
//! Every event carries the reading that triggered it in `event_data` (tag, value, previous,
//! unit, limit) and the ATT&CK technique ids of its catalogue row under `attack`.
//!
//! Two rules look at more than one reading of a tag:
//! - the trend rule (`StationRules::trend`): Nelson rule 3 on a measurement with limits.
//!   Its state is one `Trend` per tag (the current run's direction, length, first and last
//!   value), so it is bounded whatever the poll rate. Repeated values neither extend nor end
//!   a run, since a poll faster than the process repeats values.
//! - the silent-alarm rule (`StationRules::check_alarms`): a measurement linked to alarm
//!   limit tags and an alarm-active tag. It runs after every reachable poll, on the values
//!   then current, so the order of readings within a poll does not matter. One
//!   `AlarmWatch` per linked measurement.

mod baseline;
mod diag;
mod settings;
mod window;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde_json::{json, Value as Json};
use uuid::Uuid;

use crate::reading::{
    reserved, DeviceIdentity, PollResult, Quality, Reading, SourceError, TagRole, Value,
};
use linesentry_event::{EventType, SecurityEvent, Severity, SeverityMap, Timestamp};

pub use baseline::{Baseline, Stored};
use settings::micros;
pub use settings::{ChangeWindow, RuleSettings, TagRules};
use window::{Burst, NofM};

/// What the rules need to know about one tag.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleTag {
    pub name: String,
    pub role: TagRole,
    pub unit: Option<String>,
    /// Raw value -> state name, for status and mode tags.
    pub states: BTreeMap<i64, String>,
    /// Engineering limits (min, max).
    pub limits: Option<(f64, f64)>,
    pub rules: TagRules,
}

/// A profile's tags as the rules see them, with their name index: built once per profile
/// and shared by every station of it ([`StationRules::shared`]), so fifty stations of one
/// 100-tag profile keep one copy of the tags instead of fifty (about 35 KB each).
#[derive(Debug, PartialEq)]
pub struct RuleTags {
    tags: Vec<RuleTag>,
    index: HashMap<Arc<str>, usize>,
}

impl RuleTags {
    pub fn new(tags: Vec<RuleTag>) -> Self {
        let index = tags
            .iter()
            .enumerate()
            .map(|(i, t)| (Arc::from(t.name.as_str()), i))
            .collect();
        Self { tags, index }
    }

    /// The position of the tag called `name`.
    pub fn position(&self, name: &str) -> Option<usize> {
        self.index.get(name).copied()
    }
}

impl std::ops::Deref for RuleTags {
    type Target = [RuleTag];

    fn deref(&self) -> &[RuleTag] {
        &self.tags
    }
}

/// Names of states that mean the equipment is in fault.
const FAULT_STATES: &[&str] = &[
    "fault",
    "error",
    "estop",
    "e-stop",
    "emergency_stop",
    "alarm",
    "safe_stop",
];
/// Modes whose selection is an error rather than a warning (T0858).
const SEVERE_MODES: &[&str] = &["program", "stop", "download", "teach"];
/// OPC UA ServerState names by value (Part 5).
const SERVER_STATES: &[&str] = &[
    "Running",
    "Failed",
    "NoConfiguration",
    "Suspended",
    "Shutdown",
    "Test",
    "CommunicationFault",
    "Unknown",
];
/// Modbus exception codes that indicate probing: illegal function, illegal address, busy.
const SCAN_EXCEPTIONS: &[u8] = &[0x01, 0x02, 0x06];

/// Conditions the rules saw and did not turn into a value.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RuleCounters {
    pub readings: u64,
    pub unknown_tag: u64,
    pub not_finite: u64,
    pub bad_quality: u64,
    pub debounced: u64,
    /// Firmware changes that another source had already shown (one update, one event).
    pub firmware_merged: u64,
}

/// Fixed per-station context shared by every rule.
#[derive(Debug)]
struct Ctx {
    gateway_id: Arc<str>,
    station_id: Arc<str>,
    severities: Arc<SeverityMap>,
    settings: RuleSettings,
}

impl Ctx {
    fn severity(&self, event_type: EventType) -> Severity {
        self.severities.severity_of(event_type)
    }

    /// An event of this station, stamped `at`, with its catalogue severity and ATT&CK ids.
    fn event(&self, event_type: EventType, at: Timestamp) -> SecurityEvent {
        let mut e = SecurityEvent::stamped(self.gateway_id.as_ref(), event_type, at)
            .station(self.station_id.as_ref())
            .severity(self.severity(event_type))
            .context("source", "rules");
        if let Some(entry) = event_type.entry() {
            if !entry.attack.is_empty() {
                e = e.data("attack", entry.attack.to_vec());
            }
        }
        e
    }

    /// An event about a tag, with the reading that triggered it.
    fn tag_event(
        &self,
        event_type: EventType,
        tag: &RuleTag,
        value: &Value,
        prev: Option<&Value>,
        at: Timestamp,
    ) -> SecurityEvent {
        let mut e = self
            .event(event_type, at)
            .data("tag", tag.name.clone())
            .data("value", json_of(value));
        if let Some(p) = prev {
            e = e.data("previous", json_of(p));
        }
        if let Some(unit) = &tag.unit {
            e = e.data("unit", unit.clone());
        }
        e
    }
}

/// Per-tag state.
#[derive(Debug, Clone, Default)]
struct TagState {
    /// Last accepted value (after debounce).
    last: Option<Value>,
    /// Since when `last` has not changed.
    since: Option<Timestamp>,
    /// A change waiting out its debounce time.
    pending: Option<(Value, Timestamp)>,
    /// Last reported value and time (report by exception, heartbeats).
    reported: Option<(f64, Timestamp)>,
    last_report: Option<Timestamp>,
    /// Source timestamp of the last accepted value.
    source_time: Option<Timestamp>,
    /// An open `value.stale` episode (frozen value).
    stale: bool,
    /// An open `value.stale` episode of a source timestamp standing still; ends when the
    /// timestamp advances.
    stamp_stuck: bool,
    /// An open bad-quality episode.
    bad: bool,
    /// Quality results: the part id this tag's last check was for (one check per part and
    /// result tag, whether or not the result changed).
    checked_part: Option<Value>,
    trend: Trend,
}

/// The current run of one measurement's values (trend rule).
#[derive(Debug, Clone, Copy, Default)]
struct Trend {
    last: Option<f64>,
    /// 1 rising, -1 falling, 0 before the second distinct value.
    direction: i8,
    /// Values in the run, its first included (saturating).
    points: u32,
    first: f64,
    /// A reported trend whose value has not yet returned to the normal band.
    episode: bool,
}

/// A measurement watched for being beyond its alarm limit with no alarm showing.
#[derive(Debug)]
struct AlarmWatch {
    measurement: usize,
    high: Option<usize>,
    low: Option<usize>,
    active: usize,
    /// The open excursion beyond a limit.
    excursion: Option<Excursion>,
}

#[derive(Debug, Clone, Copy)]
struct Excursion {
    id: Uuid,
    /// Since when the value is beyond the limit with the alarm off; `None` while it shows.
    unalarmed_since: Option<Timestamp>,
    reported: bool,
}

/// An open outage.
#[derive(Debug, Clone, Copy)]
struct Outage {
    id: Uuid,
    since: Timestamp,
    escalated: bool,
}

#[derive(Debug)]
#[allow(clippy::struct_excessive_bools)] // each flag is one open episode of one rule
pub struct StationRules {
    ctx: Ctx,
    tags: Arc<RuleTags>,
    state: Vec<TagState>,
    baseline: Baseline,
    baseline_dirty: bool,
    /// Consecutive failed polls, and since when.
    failures: u32,
    failing_since: Option<Timestamp>,
    outage: Option<Outage>,
    /// Correlation id of the open fault, shared by the fault and its recovery.
    fault: Option<Uuid>,
    part_id: Option<Value>,
    quality: NofM,
    quality_anomaly: bool,
    auth: HashMap<String, Burst>,
    exceptions: Burst,
    alarms: Vec<AlarmWatch>,
    cert_invalid: bool,
    session_anomaly: bool,
    clock_skewed: bool,
    counters: RuleCounters,
    /// Modbus diagnostic counters (`diag.rs`).
    diag: diag::DiagState,
    /// What this poll's readings said that is judged once all of them are seen.
    pending: Pending,
    /// The firmware update being collected from its sources.
    firmware: Option<Firmware>,
}

/// How long after a firmware update's first sighting another source's change is the same
/// update.
const FIRMWARE_EPISODE: std::time::Duration = std::time::Duration::from_secs(300);

/// The last firmware update raised, and the sources that showed it (`settle_firmware`).
#[derive(Debug)]
struct Firmware {
    first_at: Timestamp,
    /// Source name -> `{value, previous}`.
    sources: serde_json::Map<String, Json>,
}

/// Observations of one poll that several readings contribute to; judged at its end
/// ([`StationRules::settle`]), so one real change is one event whatever the order and
/// number of readings that show it.
#[derive(Debug, Default)]
struct Pending {
    /// Firmware changes: (source, new value, previous value).
    firmware: Vec<(&'static str, Json, Json)>,
    /// The event of a profile `firmware` tag that changed (it names the tag and unit).
    firmware_tag: Option<SecurityEvent>,
    /// Increments of RejectedSessionCount and SecurityRejectedSessionCount.
    rejected: Option<u64>,
    security_rejected: Option<u64>,
    /// CurrentSessionCount, and how many of those sessions are the agent's own.
    sessions: Option<u64>,
    own_sessions: Option<u64>,
}

/// True when a poll brought data from the device itself: a tag, a diagnostic counter, the
/// server status; not only what endpoint discovery learned without a session.
fn delivers_data(poll: &PollResult) -> bool {
    poll.readings
        .iter()
        .any(|r| !r.tag.starts_with(reserved::SECURITY_PREFIX))
}

fn json_of(v: &Value) -> Json {
    serde_json::to_value(v).unwrap_or(Json::Null)
}

/// Equality that ignores how a number was decoded (5u64 == 5i64 == 5.0).
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Text(x), Value::Text(y)) => x == y,
        (Value::Text(_), _) | (_, Value::Text(_)) => false,
        (Value::Int(x), Value::UInt(y)) | (Value::UInt(y), Value::Int(x)) => {
            i128::from(*x) == i128::from(*y)
        }
        _ => match (a.as_f64(), b.as_f64()) {
            // Exact on purpose: a change is any change the device reports.
            #[allow(clippy::float_cmp)]
            (Some(x), Some(y)) => x.to_bits() == y.to_bits() || x == y,
            _ => a == b,
        },
    }
}

fn truthy(v: &Value) -> bool {
    v.as_f64().is_some_and(|x| x != 0.0)
}

fn state_name(tag: &RuleTag, v: &Value) -> String {
    let raw = match v {
        Value::Int(i) => Some(*i),
        Value::UInt(u) => i64::try_from(*u).ok(),
        Value::Bool(b) => Some(i64::from(*b)),
        _ => None,
    };
    raw.and_then(|r| tag.states.get(&r).cloned())
        .unwrap_or_else(|| v.to_string())
}

/// Pass when the verdict is true / a "pass"-like state, or a measurement within limits.
fn quality_pass(tag: &RuleTag, v: &Value) -> bool {
    if let (Some((min, max)), Some(x)) = (tag.limits, v.as_f64()) {
        if !matches!(v, Value::Bool(_)) && tag.states.is_empty() {
            return (min..=max).contains(&x);
        }
    }
    match v {
        Value::Bool(b) => *b,
        Value::Text(t) => matches!(t.to_ascii_lowercase().as_str(), "pass" | "ok" | "good"),
        other => {
            let name = state_name(tag, other).to_ascii_lowercase();
            matches!(name.as_str(), "pass" | "ok" | "good" | "operator_pass")
        }
    }
}

fn elapsed(from: Timestamp, to: Timestamp) -> i64 {
    to.as_micros() - from.as_micros()
}

/// The measurements linked to alarm limits, with the tags resolved to indices. A link to a
/// missing tag or a tag of another role is left out (the profile loader refuses both); a
/// measurement without its own `alarm_active` uses the station's only alarm-active tag.
fn alarm_watches(tags: &[RuleTag]) -> Vec<AlarmWatch> {
    let find = |name: Option<&String>, role: TagRole| {
        name.and_then(|n| tags.iter().position(|t| t.name == *n && t.role == role))
    };
    let mut actives = tags
        .iter()
        .enumerate()
        .filter(|(_, t)| t.role == TagRole::AlarmActive);
    let only_active = match (actives.next(), actives.next()) {
        (Some((i, _)), None) => Some(i),
        _ => None,
    };
    tags.iter()
        .enumerate()
        .filter(|(_, t)| t.role == TagRole::Measurement)
        .filter_map(|(i, t)| {
            let high = find(t.rules.alarm_high.as_ref(), TagRole::AlarmLimit);
            let low = find(t.rules.alarm_low.as_ref(), TagRole::AlarmLimit);
            let active = match &t.rules.alarm_active {
                Some(_) => find(t.rules.alarm_active.as_ref(), TagRole::AlarmActive),
                None => only_active,
            };
            match (high.is_some() || low.is_some(), active) {
                (true, Some(active)) => Some(AlarmWatch {
                    measurement: i,
                    high,
                    low,
                    active,
                    excursion: None,
                }),
                _ => None,
            }
        })
        .collect()
}

impl StationRules {
    pub fn new(
        gateway_id: Arc<str>,
        station_id: Arc<str>,
        severities: Arc<SeverityMap>,
        tags: Vec<RuleTag>,
    ) -> Self {
        Self::shared(
            gateway_id,
            station_id,
            severities,
            Arc::new(RuleTags::new(tags)),
        )
    }

    /// A station's rules over tags shared with the other stations of its profile.
    pub fn shared(
        gateway_id: Arc<str>,
        station_id: Arc<str>,
        severities: Arc<SeverityMap>,
        tags: Arc<RuleTags>,
    ) -> Self {
        let settings = RuleSettings::default();
        let alarms = alarm_watches(&tags);
        Self {
            alarms,
            quality: NofM::new(settings.quality_window),
            exceptions: Burst::default(),
            ctx: Ctx {
                gateway_id,
                station_id,
                severities,
                settings,
            },
            state: vec![TagState::default(); tags.len()],
            tags,
            baseline: Baseline::new(),
            baseline_dirty: false,
            failures: 0,
            failing_since: None,
            outage: None,
            fault: None,
            part_id: None,
            quality_anomaly: false,
            auth: HashMap::new(),
            cert_invalid: false,
            session_anomaly: false,
            clock_skewed: false,
            counters: RuleCounters::default(),
            diag: diag::DiagState::default(),
            pending: Pending::default(),
            firmware: None,
        }
    }

    #[must_use]
    pub fn with_settings(mut self, settings: RuleSettings) -> Self {
        self.quality = NofM::new(settings.quality_window);
        self.ctx.settings = settings;
        self
    }

    /// Starts from a stored baseline instead of learning one.
    #[must_use]
    pub fn with_baseline(mut self, baseline: Baseline) -> Self {
        for (i, tag) in self.tags.iter().enumerate() {
            if let Some(v) = baseline.value(&tag.name) {
                self.state[i].last = Some(v);
            }
        }
        self.baseline = baseline;
        self
    }

    pub fn counters(&self) -> RuleCounters {
        self.counters
    }

    pub fn baseline(&self) -> &Baseline {
        &self.baseline
    }

    /// The baseline, serialised, when it changed since the last call: store it with the
    /// events of the same poll.
    pub fn take_state(&mut self) -> Option<Vec<u8>> {
        std::mem::take(&mut self.baseline_dirty).then(|| self.baseline.to_bytes())
    }

    /// Evaluates readings alone (no reachability information), at their receive time.
    pub fn process(&mut self, readings: &[Reading]) -> Vec<SecurityEvent> {
        let now = readings
            .iter()
            .map(|r| r.received)
            .max()
            .unwrap_or_else(|| Timestamp::from_micros(0));
        let poll = PollResult {
            readings: readings.to_vec(),
            reachable: true,
            ..PollResult::default()
        };
        self.observe(&poll, now)
    }

    /// Evaluates one poll: reachability, errors, identity, then readings.
    pub fn observe(&mut self, poll: &PollResult, now: Timestamp) -> Vec<SecurityEvent> {
        let mut out = Vec::new();
        self.health(poll, now, &mut out);
        self.errors(&poll.errors, now, &mut out);
        if let Some(identity) = &poll.identity {
            self.identity(identity, now, &mut out);
        }
        // Part ids first, so a quality result of the same poll refers to its own part;
        // device-level readings before tags, so a restart explains counters going back.
        // One tag lookup per reading, then a stable sort on the class alone (a poll is
        // usually one class already, which the sort sees in one pass).
        // Readings usually come in the order of the profile's tags, so the tag after the
        // last one found is tried before the name index.
        let mut next = 0;
        let mut order: Vec<(u8, &Reading, Option<usize>)> = poll
            .readings
            .iter()
            .map(|r| {
                if reserved::is_reserved(&r.tag) {
                    return (0, r, None);
                }
                let i = match self.tags.get(next) {
                    Some(t) if *t.name == *r.tag => Some(next),
                    _ => self.tags.position(&r.tag),
                };
                next = i.map_or(0, |i| i + 1);
                let part_id = i.is_some_and(|i| self.tags[i].role == TagRole::PartId);
                (if part_id { 1 } else { 2 }, r, i)
            })
            .collect();
        order.sort_by_key(|&(class, ..)| class);
        let mut restarted = self.modbus_diagnostics(poll, now, &mut out);
        for (class, r, i) in order {
            self.counters.readings += 1;
            if class == 0 {
                restarted |= self.reserved(r, &mut out);
                continue;
            }
            let Some(i) = i else {
                self.counters.unknown_tag += 1;
                continue;
            };
            self.reading(i, r, restarted, &mut out);
        }
        self.settle(now, &mut out);
        self.check_stale(now, &mut out);
        if poll.reachable {
            self.check_alarms(now, &mut out);
        }
        out
    }

    /// Judges what several readings of this poll contributed to ([`Pending`]).
    fn settle(&mut self, now: Timestamp, out: &mut Vec<SecurityEvent>) {
        let pending = std::mem::take(&mut self.pending);
        self.settle_firmware(pending.firmware, pending.firmware_tag, now, out);
        self.settle_rejected(pending.rejected, pending.security_rejected, now, out);
        if let Some(count) = pending.sessions {
            self.settle_sessions(count, pending.own_sessions.unwrap_or(0), now, out);
        }
    }

    /// One `firmware.changed` per firmware update, whichever sources show it: the device
    /// identification, BuildInfo, a `firmware` tag. The event is raised at once, naming every
    /// source that showed the update in that poll under `sources`. The sources are read at
    /// different times (a tag every poll, the identity and BuildInfo at every status read or
    /// reconnect), so another source showing a change within [`FIRMWARE_EPISODE`] of the
    /// first is the same update: counted in `firmware_merged`, not raised again. The same
    /// source changing again is a new update.
    fn settle_firmware(
        &mut self,
        seen: Vec<(&'static str, Json, Json)>,
        tag_event: Option<SecurityEvent>,
        now: Timestamp,
        out: &mut Vec<SecurityEvent>,
    ) {
        if seen.is_empty() {
            return;
        }
        let open = self.firmware.as_ref().is_some_and(|f| {
            elapsed(f.first_at, now) <= micros(FIRMWARE_EPISODE)
                && seen
                    .iter()
                    .all(|(source, ..)| !f.sources.contains_key(*source))
        });
        if open {
            if let Some(f) = self.firmware.as_mut() {
                for (source, value, previous) in seen {
                    self.counters.firmware_merged += 1;
                    f.sources.insert(
                        source.to_owned(),
                        json!({ "value": value, "previous": previous }),
                    );
                }
            }
            return;
        }
        let mut sources = serde_json::Map::new();
        for (source, value, previous) in &seen {
            sources.insert(
                (*source).to_owned(),
                json!({ "value": value, "previous": previous }),
            );
        }
        let (first, value, previous) = seen.into_iter().next().unwrap_or_default();
        let e = match tag_event {
            Some(e) => e.data("source", "firmware_tag"),
            None => self
                .ctx
                .event(EventType::FirmwareChanged, now)
                .data("source", first)
                .data("value", value)
                .data("previous", previous),
        };
        out.push(e.data("sources", Json::Object(sources.clone())));
        self.firmware = Some(Firmware {
            first_at: now,
            sources,
        });
    }

    /// Rejected sessions counted by the server: one `auth.failed` per increment of the
    /// total. Per OPC UA Part 5, RejectedSessionCount already includes
    /// SecurityRejectedSessionCount, so the larger of the two increments is the number of
    /// rejections (a server that counts them apart is under-counted, never double-counted).
    fn settle_rejected(
        &mut self,
        rejected: Option<u64>,
        security_rejected: Option<u64>,
        now: Timestamp,
        out: &mut Vec<SecurityEvent>,
    ) {
        let n = rejected.unwrap_or(0).max(security_rejected.unwrap_or(0));
        if n == 0 {
            return;
        }
        let mut e = self
            .ctx
            .event(EventType::AuthFailed, now)
            .data("tag", reserved::REJECTED_SESSIONS)
            .data("rejected_sessions", n);
        if let Some(security) = security_rejected {
            e = e.data("security_rejected_sessions", security);
        }
        self.auth_failure("server:rejected_sessions", n, e, now, out);
    }

    /// `session.anomaly`: more sessions on the server than at first contact plus the
    /// margin, not counting the sessions of the agent's own stations.
    fn settle_sessions(
        &mut self,
        count: u64,
        own: u64,
        now: Timestamp,
        out: &mut Vec<SecurityEvent>,
    ) {
        let others = count.saturating_sub(own);
        let base = *self.baseline.sessions.get_or_insert_with(|| {
            self.baseline_dirty = true;
            others
        });
        let margin = self.ctx.settings.session_margin;
        if others > base + margin && !self.session_anomaly {
            self.session_anomaly = true;
            out.push(
                self.ctx
                    .event(EventType::SessionAnomaly, now)
                    .data("sessions", count)
                    .data("own_sessions", own)
                    .data("other_sessions", others)
                    .data("baseline", base)
                    .data("margin", margin),
            );
        } else if others <= base + margin {
            self.session_anomaly = false;
        }
    }

    fn health(&mut self, poll: &PollResult, now: Timestamp, out: &mut Vec<SecurityEvent>) {
        let s = &self.ctx.settings;
        if poll.reachable {
            // A server that answered only to refuse the session (its certificate is not
            // trusted, the credentials are wrong) is not back: `cert.invalid` or
            // `auth.failed` says what is wrong, and the outage, if any, stays open until the
            // station delivers data again.
            if self.outage.is_some() && !delivers_data(poll) {
                return;
            }
            if let Some(outage) = self.outage.take() {
                let down_s = elapsed(outage.since, now) as f64 / 1e6;
                out.push(
                    self.ctx
                        .event(EventType::DeviceRecovered, now)
                        .correlation(outage.id)
                        .data("down_for_s", (down_s * 10.0).round() / 10.0)
                        .data("failed_polls", self.failures),
                );
            }
            self.failures = 0;
            self.failing_since = None;
            return;
        }
        self.failures = self.failures.saturating_add(1);
        let since = *self.failing_since.get_or_insert(now);
        let reason = poll
            .errors
            .first()
            .map_or_else(|| "no answer".to_owned(), ToString::to_string);
        match &mut self.outage {
            None if self.failures >= s.unreachable_after => {
                let id = Uuid::now_v7();
                self.outage = Some(Outage {
                    id,
                    since,
                    escalated: false,
                });
                out.push(
                    self.ctx
                        .event(EventType::DeviceUnreachable, now)
                        .correlation(id)
                        .data("failed_polls", self.failures)
                        .data("reason", reason),
                );
            }
            Some(outage)
                if !outage.escalated
                    && elapsed(outage.since, now) >= micros(s.unreachable_escalate_after) =>
            {
                outage.escalated = true;
                let (id, since) = (outage.id, outage.since);
                out.push(
                    self.ctx
                        .event(EventType::DeviceUnreachable, now)
                        .severity(
                            Severity::Error.max(self.ctx.severity(EventType::DeviceUnreachable)),
                        )
                        .correlation(id)
                        .data("escalated", true)
                        .data("down_for_s", elapsed(since, now) / 1_000_000)
                        .data("failed_polls", self.failures)
                        .data("reason", reason),
                );
            }
            _ => {}
        }
    }

    fn errors(&mut self, errors: &[SourceError], now: Timestamp, out: &mut Vec<SecurityEvent>) {
        let mut cert_error = false;
        for error in errors {
            match error {
                SourceError::Auth(reason) => {
                    let e = self
                        .ctx
                        .event(EventType::AuthFailed, now)
                        .data("reason", reason.clone());
                    self.auth_failure("agent-session", 1, e, now, out);
                }
                SourceError::Certificate(reason) => {
                    cert_error = true;
                    if !self.cert_invalid {
                        self.cert_invalid = true;
                        out.push(
                            self.ctx
                                .event(EventType::CertInvalid, now)
                                .data("reason", reason.clone()),
                        );
                    }
                }
                SourceError::Exception { code, .. } if SCAN_EXCEPTIONS.contains(code) => {
                    let s = &self.ctx.settings;
                    let (window, burst) = (micros(s.exception_window), s.exception_burst);
                    if let Some(count) = self.exceptions.add(now, window, burst, *code) {
                        let codes: Vec<Json> = self
                            .exceptions
                            .members()
                            .iter()
                            .map(|c| json!(format!("{c:#04x}")))
                            .collect();
                        out.push(
                            self.ctx
                                .event(EventType::SecurityViolation, now)
                                .correlation(self.exceptions.id())
                                .data("kind", "modbus_scan")
                                .data("exceptions", count)
                                .data("window_s", s.exception_window.as_secs())
                                .data("codes", codes),
                        );
                    }
                }
                _ => {}
            }
        }
        if !cert_error
            && !errors
                .iter()
                .any(|e| matches!(e, SourceError::Timeout(_) | SourceError::Connect(_)))
        {
            self.cert_invalid = false;
        }
    }

    /// Records `n` authentication failures for `key` (a user or a source): emits `event`
    /// (an `auth.failed`) in the key's burst episode and a `security.violation` when the
    /// burst threshold is reached within the window.
    fn auth_failure(
        &mut self,
        key: &str,
        n: u64,
        event: SecurityEvent,
        now: Timestamp,
        out: &mut Vec<SecurityEvent>,
    ) {
        let s = &self.ctx.settings;
        let (window, burst) = (micros(s.auth_window), s.auth_burst);
        // One window per key; keys are few (the agent's own session, server counters).
        let entry = self.auth.entry(key.to_owned()).or_default();
        let mut violation = None;
        for _ in 0..n.min(1024) {
            if let Some(count) = entry.add(now, window, burst, 0) {
                violation = Some(count);
            }
        }
        out.push(
            event
                .correlation(entry.id())
                .data("failures_in_window", entry.len()),
        );
        if let Some(count) = violation {
            out.push(
                self.ctx
                    .event(EventType::SecurityViolation, now)
                    .correlation(entry.id())
                    .data("kind", "auth_burst")
                    .data("key", key.to_owned())
                    .data("failures", count)
                    .data("window_s", s.auth_window.as_secs()),
            );
        }
    }

    fn identity(&mut self, id: &DeviceIdentity, now: Timestamp, out: &mut Vec<SecurityEvent>) {
        let Some(base) = self.baseline.identity.clone() else {
            self.baseline.identity = Some(id.clone());
            self.baseline_dirty = true;
            return;
        };
        let mut merged = base.clone();
        let mut identity_changes = serde_json::Map::new();
        let fields: [(&str, &Option<String>, &mut Option<String>); 4] = [
            ("vendor", &id.vendor, &mut merged.vendor),
            ("product_code", &id.product_code, &mut merged.product_code),
            (
                "application_uri",
                &id.application_uri,
                &mut merged.application_uri,
            ),
            (
                "certificate_thumbprint",
                &id.certificate_thumbprint,
                &mut merged.certificate_thumbprint,
            ),
        ];
        for (name, new, old) in fields {
            if let Some(new) = new {
                if old.as_ref() != Some(new) {
                    if let Some(prev) = old.as_ref() {
                        identity_changes
                            .insert(name.to_owned(), json!({ "value": new, "previous": prev }));
                    }
                    *old = Some(new.clone());
                }
            }
        }
        if let Some(rev) = &id.revision {
            if merged.revision.as_ref() != Some(rev) {
                if let Some(prev) = &merged.revision {
                    self.pending
                        .firmware
                        .push(("device_identification", json!(rev), json!(prev)));
                }
                merged.revision = Some(rev.clone());
            }
        }
        if id.product_name.is_some() {
            merged.product_name.clone_from(&id.product_name);
        }
        if !identity_changes.is_empty() {
            let mut e = self.ctx.event(EventType::IdentityChanged, now);
            e.event_data
                .insert("changes".into(), Json::Object(identity_changes));
            out.push(e);
        }
        if merged != base {
            self.baseline.identity = Some(merged);
            self.baseline_dirty = true;
        }
    }

    /// Device-level readings; returns true when they show the device restarted.
    #[allow(clippy::too_many_lines)] // one match over the reserved names reads best in one place
    fn reserved(&mut self, r: &Reading, out: &mut Vec<SecurityEvent>) -> bool {
        let now = r.received;
        if r.quality != Quality::Good {
            self.counters.bad_quality += 1;
            return false;
        }
        let mut restarted = false;
        match r.tag.as_ref() {
            reserved::SERVER_STATE => {
                let code = r.value.as_f64().unwrap_or(7.0) as usize;
                let name = SERVER_STATES.get(code).copied().unwrap_or("Unknown");
                let prev = self.baseline.value(reserved::SERVER_STATE);
                let changed = prev.as_ref().is_none_or(|p| !same(p, &r.value));
                if changed && (prev.is_some() || code != 0) {
                    let severity = if matches!(name, "Shutdown" | "Failed" | "Suspended") {
                        Severity::Error
                    } else {
                        self.ctx.severity(EventType::ModeChanged)
                    };
                    let prev_name = prev
                        .as_ref()
                        .and_then(Value::as_f64)
                        .and_then(|p| SERVER_STATES.get(p as usize).copied());
                    out.push(
                        self.ctx
                            .event(EventType::ModeChanged, now)
                            .severity(severity)
                            .data("tag", reserved::SERVER_STATE)
                            .data("state", name)
                            .data("previous_state", prev_name),
                    );
                }
                self.remember(reserved::SERVER_STATE, &r.value);
            }
            reserved::SERVER_START_TIME => {
                let text = r.value.to_string();
                match &self.baseline.server_start {
                    Some(prev) if *prev != text => {
                        restarted = true;
                        out.push(
                            self.ctx
                                .event(EventType::DeviceRestarted, now)
                                .data("start_time", text.clone())
                                .data("previous", prev.clone()),
                        );
                    }
                    Some(_) => return false,
                    None => {}
                }
                self.baseline.server_start = Some(text);
                self.baseline_dirty = true;
            }
            reserved::SERVER_CURRENT_TIME => {
                let text = r.value.to_string();
                if let Ok(device) = chrono::DateTime::parse_from_rfc3339(&text) {
                    let skew = (now.as_micros() - device.timestamp_micros()).abs();
                    let limit = micros(self.ctx.settings.clock_skew);
                    if skew > limit && !self.clock_skewed {
                        self.clock_skewed = true;
                        out.push(
                            self.ctx
                                .event(EventType::AgentClockSkew, now)
                                .data("device_time", text)
                                .data("skew_ms", skew / 1000)
                                .data("limit_ms", limit / 1000),
                        );
                    } else if skew <= limit / 2 {
                        self.clock_skewed = false;
                    }
                }
            }
            reserved::SOFTWARE_VERSION => {
                if let Some(prev) = self.baseline.value(reserved::SOFTWARE_VERSION) {
                    if !same(&prev, &r.value) {
                        self.pending.firmware.push((
                            "build_info",
                            json_of(&r.value),
                            json_of(&prev),
                        ));
                    }
                }
                self.remember(reserved::SOFTWARE_VERSION, &r.value);
            }
            reserved::CURRENT_SESSIONS => {
                self.pending.sessions = r.value.as_f64().map(|c| c.max(0.0) as u64);
            }
            reserved::OWN_SESSIONS => {
                self.pending.own_sessions = r.value.as_f64().map(|c| c.max(0.0) as u64);
            }
            reserved::SECURITY_REJECTED_SESSIONS | reserved::REJECTED_SESSIONS => {
                let Some(count) = r.value.as_f64().map(|c| c.max(0.0) as u64) else {
                    return false;
                };
                let key = r.tag.to_string();
                let prev = self.baseline.rejected.insert(key.clone(), count);
                if prev != Some(count) {
                    self.baseline_dirty = true;
                }
                match prev {
                    Some(p) if count > p => {
                        let slot = if key == reserved::REJECTED_SESSIONS {
                            &mut self.pending.rejected
                        } else {
                            &mut self.pending.security_rejected
                        };
                        *slot = Some(count - p);
                    }
                    Some(p) if count < p => {
                        restarted = true;
                        out.push(
                            self.ctx
                                .event(EventType::DeviceRestarted, now)
                                .data("reason", "diagnostic counter went backwards")
                                .data("tag", key)
                                .data("value", count)
                                .data("previous", p),
                        );
                    }
                    _ => {}
                }
            }
            reserved::BEST_POLICY | reserved::OFFERS_NONE => self.policy(r, out),
            t if diag::is_diag(t) => {} // modbus_diagnostics, before the readings
            _ => self.counters.unknown_tag += 1,
        }
        restarted
    }

    fn policy(&mut self, r: &Reading, out: &mut Vec<SecurityEvent>) {
        let now = r.received;
        if r.tag.as_ref() == reserved::OFFERS_NONE {
            let offers = truthy(&r.value);
            match self.baseline.offers_none {
                Some(false) if offers => out.push(
                    self.ctx
                        .event(EventType::SecurityPolicyDowngraded, now)
                        .data("reason", "an endpoint now offers security mode None"),
                ),
                Some(b) if b == offers => return,
                _ => {}
            }
            self.baseline.offers_none = Some(offers);
            self.baseline_dirty = true;
            return;
        }
        let name = r.value.to_string();
        let strength = |p: &str| reserved::POLICY_STRENGTH.iter().position(|x| *x == p);
        match self.baseline.best_policy.as_deref() {
            Some(base) if base == name => return,
            Some(base) => {
                if let (Some(new), Some(old)) = (strength(&name), strength(base)) {
                    if new < old {
                        out.push(
                            self.ctx
                                .event(EventType::SecurityPolicyDowngraded, now)
                                .data("value", name.clone())
                                .data("previous", base.to_owned()),
                        );
                    } else {
                        // Stronger: the new baseline.
                    }
                }
            }
            None => {}
        }
        self.baseline.best_policy = Some(name);
        self.baseline_dirty = true;
    }

    fn remember(&mut self, tag: &str, v: &Value) {
        let stored = Stored::from(v);
        if self.baseline.values.get(tag) != Some(&stored) {
            self.baseline.values.insert(tag.to_owned(), stored);
            self.baseline_dirty = true;
        }
    }

    fn in_change_window(&self, now: Timestamp) -> bool {
        self.ctx
            .settings
            .change_windows
            .iter()
            .any(|w| w.contains(now))
            || self.tags.iter().zip(&self.state).any(|(t, s)| {
                t.role == TagRole::ChangeWindow && s.last.as_ref().is_some_and(truthy)
            })
    }

    /// One profile tag's reading.
    fn reading(&mut self, i: usize, r: &Reading, restarted: bool, out: &mut Vec<SecurityEvent>) {
        let now = r.received;
        if r.quality != Quality::Good {
            self.counters.bad_quality += 1;
            if !self.state[i].bad {
                self.state[i].bad = true;
                let tag = &self.tags[i];
                out.push(
                    self.ctx
                        .tag_event(EventType::ValueStale, tag, &r.value, None, now)
                        .data("reason", "bad_quality")
                        .data(
                            "quality",
                            serde_json::to_value(r.quality).unwrap_or(Json::Null),
                        ),
                );
            }
            return;
        }
        if let Value::Float(f) = r.value {
            if !f.is_finite() {
                self.counters.not_finite += 1;
                return;
            }
        }
        self.state[i].bad = false;
        // Debounce: a change counts once it has held for the tag's debounce time.
        let debounce = micros(self.tags[i].rules.debounce);
        let st = &mut self.state[i];
        let differs = st.last.as_ref().is_some_and(|l| !same(l, &r.value));
        if debounce > 0 && differs {
            match &st.pending {
                Some((v, since)) if same(v, &r.value) && elapsed(*since, now) >= debounce => {
                    st.pending = None;
                }
                Some((v, _)) if same(v, &r.value) => {
                    self.counters.debounced += 1;
                    return;
                }
                _ => {
                    st.pending = Some((r.value.clone(), now));
                    self.counters.debounced += 1;
                    return;
                }
            }
        } else {
            st.pending = None;
        }
        // Timestamps that do not advance while the value changes: replayed or spoofed data.
        if let (Some(src), Some(prev_src)) = (r.source_time, st.source_time) {
            if src != prev_src {
                st.stamp_stuck = false;
            } else if differs && !st.stamp_stuck {
                st.stamp_stuck = true;
                let tag = &self.tags[i];
                out.push(
                    self.ctx
                        .tag_event(EventType::ValueStale, tag, &r.value, st.last.as_ref(), now)
                        .data("reason", "source_timestamp_not_advancing")
                        .data("source_time", src.to_string()),
                );
            }
        }
        st.source_time = r.source_time.or(st.source_time);
        let prev = st.last.replace(r.value.clone());
        if prev.is_none() || differs {
            st.since = Some(now);
            if differs && st.stale {
                st.stale = false;
            }
        }
        self.evaluate(i, r, prev.as_ref(), differs, restarted, out);
    }

    #[allow(clippy::too_many_lines, clippy::many_single_char_names)] // one match over the roles
    fn evaluate(
        &mut self,
        i: usize,
        r: &Reading,
        prev: Option<&Value>,
        changed: bool,
        restarted: bool,
        out: &mut Vec<SecurityEvent>,
    ) {
        let now = r.received;
        let tag = &self.tags[i];
        // Only modes and setpoints use it, and it scans every tag: not per measurement.
        let authorised = changed
            && matches!(tag.role, TagRole::Mode | TagRole::Setpoint)
            && self.in_change_window(now);
        match tag.role {
            TagRole::Status => self.status(i, r, prev, changed, out),
            TagRole::Mode if changed => {
                let to = state_name(tag, &r.value);
                let severity = if authorised {
                    Severity::Info
                } else if SEVERE_MODES.contains(&to.to_ascii_lowercase().as_str()) {
                    Severity::Error
                } else {
                    self.ctx.severity(EventType::ModeChanged)
                };
                let mut e = self
                    .ctx
                    .tag_event(EventType::ModeChanged, tag, &r.value, prev, now)
                    .severity(severity)
                    .data("state", to)
                    .data("previous_state", prev.map(|p| state_name(tag, p)));
                if authorised {
                    e = e.data("authorised", true);
                }
                out.push(e);
            }
            TagRole::Setpoint => {
                if changed {
                    let mut e =
                        self.ctx
                            .tag_event(EventType::SetpointChanged, tag, &r.value, prev, now);
                    if authorised {
                        e = e.severity(Severity::Info).data("authorised", true);
                    }
                    out.push(e);
                }
                // Outside the limits: once on first contact and once per new value.
                if let (Some((min, max)), Some(v)) = (tag.limits, r.value.as_f64()) {
                    if (v < min || v > max) && (prev.is_none() || changed) {
                        out.push(
                            self.ctx
                                .tag_event(EventType::SetpointOutOfRange, tag, &r.value, prev, now)
                                .data("limit", json!({ "min": min, "max": max })),
                        );
                    }
                }
            }
            TagRole::AlarmLimit | TagRole::AlarmEnable if changed => {
                out.push(self.ctx.tag_event(
                    EventType::AlarmLimitChanged,
                    tag,
                    &r.value,
                    prev,
                    now,
                ));
                if tag.role == TagRole::AlarmEnable && !truthy(&r.value) {
                    out.push(self.ctx.tag_event(
                        EventType::AlarmSuppressed,
                        tag,
                        &r.value,
                        prev,
                        now,
                    ));
                }
            }
            TagRole::ProgramChecksum if changed => {
                out.push(
                    self.ctx
                        .tag_event(EventType::ProgramChanged, tag, &r.value, prev, now),
                );
            }
            TagRole::Firmware if changed => {
                let e = self
                    .ctx
                    .tag_event(EventType::FirmwareChanged, tag, &r.value, prev, now);
                self.pending.firmware.push((
                    "firmware_tag",
                    json_of(&r.value),
                    prev.map_or(Json::Null, json_of),
                ));
                self.pending.firmware_tag.get_or_insert(e);
            }
            TagRole::Counter if changed => {
                let back = match (prev.and_then(Value::as_f64), r.value.as_f64()) {
                    (Some(p), Some(v)) => v < p,
                    _ => false,
                };
                if back && !restarted {
                    out.push(
                        self.ctx
                            .tag_event(EventType::DiagCountersReset, tag, &r.value, prev, now)
                            .data("reason", "counter went backwards without a restart"),
                    );
                }
            }
            TagRole::PartId => self.part_id = Some(r.value.clone()),
            TagRole::QualityResult
                if prev.is_none() || changed || self.part_id != self.state[i].checked_part =>
            {
                self.quality_check(i, r, prev, out);
            }
            TagRole::Measurement => self.measurement(i, r, prev, out),
            _ => {}
        }
        if matches!(
            self.tags[i].role,
            TagRole::Setpoint
                | TagRole::AlarmLimit
                | TagRole::AlarmEnable
                | TagRole::Mode
                | TagRole::ProgramChecksum
                | TagRole::Firmware
        ) {
            let name = self.tags[i].name.clone();
            self.remember(&name, &r.value);
        }
    }

    fn status(
        &mut self,
        i: usize,
        r: &Reading,
        prev: Option<&Value>,
        changed: bool,
        out: &mut Vec<SecurityEvent>,
    ) {
        let now = r.received;
        let tag = &self.tags[i];
        let heartbeat_due = self.state[i].last_report.is_some_and(|t| {
            elapsed(t, now)
                >= micros(
                    tag.rules
                        .heartbeat
                        .unwrap_or(self.ctx.settings.status_heartbeat),
                )
        });
        if !(prev.is_none() || changed || heartbeat_due) {
            return;
        }
        self.state[i].last_report = Some(now);
        let name = state_name(tag, &r.value);
        let mut status = self
            .ctx
            .tag_event(EventType::EquipmentStatus, tag, &r.value, prev, now)
            .data("state", name.clone());
        if let Some(p) = prev {
            status = status.data("previous_state", state_name(tag, p));
        }
        if !changed && prev.is_some() {
            out.push(status.data("heartbeat", true));
            return;
        }
        let is_fault = FAULT_STATES.contains(&name.to_ascii_lowercase().as_str());
        match (is_fault, self.fault) {
            (true, None) => {
                let id = Uuid::now_v7();
                self.fault = Some(id);
                // The status sample that shows the fault carries the fault's severity.
                let severity = self.ctx.severity(EventType::EquipmentFault);
                out.push(status.severity(severity).correlation(id));
                out.push(
                    self.ctx
                        .tag_event(EventType::EquipmentFault, tag, &r.value, prev, now)
                        .data("state", name)
                        .correlation(id),
                );
            }
            (false, Some(id)) => {
                self.fault = None;
                out.push(status.correlation(id).data("recovered", true));
            }
            (true, Some(id)) => out.push(
                status
                    .severity(self.ctx.severity(EventType::EquipmentFault))
                    .correlation(id),
            ),
            (false, None) => out.push(status),
        }
    }

    fn quality_check(
        &mut self,
        i: usize,
        r: &Reading,
        prev: Option<&Value>,
        out: &mut Vec<SecurityEvent>,
    ) {
        let now = r.received;
        let tag = &self.tags[i];
        self.state[i].checked_part.clone_from(&self.part_id);
        let pass = quality_pass(tag, &r.value);
        let mut e = self
            .ctx
            .tag_event(EventType::QualityCheck, tag, &r.value, prev, now)
            .data("result", if pass { "pass" } else { "fail" });
        if !pass {
            e = e.severity(Severity::Warn.max(self.ctx.severity(EventType::QualityCheck)));
        }
        if let Some((min, max)) = tag.limits {
            e = e.data("limit", json!({ "min": min, "max": max }));
        }
        if let Some(part) = &self.part_id {
            e = e.data("part_id", json_of(part));
        }
        out.push(e);
        let failures = self.quality.push(!pass);
        let s = &self.ctx.settings;
        if failures >= s.quality_failures && !self.quality_anomaly {
            self.quality_anomaly = true;
            out.push(
                self.ctx
                    .tag_event(EventType::QualityAnomaly, tag, &r.value, prev, now)
                    .correlation(Uuid::now_v7())
                    .data("failures", failures)
                    .data("of_last", self.quality.len())
                    .data(
                        "rule",
                        format!(
                            "{} of the last {} checks failed",
                            s.quality_failures, s.quality_window
                        ),
                    ),
            );
        } else if failures < s.quality_failures {
            self.quality_anomaly = false;
        }
    }

    /// Report by exception: a measurement is reported when it leaves its deadband around
    /// the last reported value, or when its heartbeat is due.
    #[allow(clippy::many_single_char_names)]
    fn measurement(
        &mut self,
        i: usize,
        r: &Reading,
        prev: Option<&Value>,
        out: &mut Vec<SecurityEvent>,
    ) {
        let now = r.received;
        let Some(v) = r.value.as_f64() else {
            return;
        };
        self.trend(i, r, v, out);
        let tag = &self.tags[i];
        let s = &self.ctx.settings;
        let heartbeat = micros(tag.rules.heartbeat.unwrap_or(s.measurement_heartbeat));
        let report = match self.state[i].reported {
            None => true,
            Some((last, at)) => {
                let band = match (tag.rules.deadband_abs, tag.limits) {
                    (Some(abs), _) => abs,
                    (None, Some((min, max))) => {
                        (max - min).abs() * tag.rules.deadband_percent.unwrap_or(s.deadband_percent)
                            / 100.0
                    }
                    (None, None) => {
                        last.abs() * tag.rules.deadband_percent.unwrap_or(s.deadband_percent)
                            / 100.0
                    }
                };
                (v - last).abs() > band || elapsed(at, now) >= heartbeat
            }
        };
        if report {
            let heartbeat_only = self.state[i]
                .reported
                .is_some_and(|(last, _)| (v - last).abs() == 0.0);
            self.state[i].reported = Some((v, now));
            let mut e =
                self.ctx
                    .tag_event(EventType::EquipmentMeasurement, tag, &r.value, prev, now);
            if heartbeat_only {
                e = e.data("heartbeat", true);
            }
            out.push(e);
        }
    }

    /// Nelson rule 3 towards a limit: `trend_points` values in a row each moving the same way,
    /// the last beyond the limit it moves towards or within `trend_margin_percent` of the
    /// limits' span of it. Once per episode; the episode ends when the value is back in the
    /// normal band (further than the margin from both limits).
    fn trend(&mut self, i: usize, reading: &Reading, v: f64, out: &mut Vec<SecurityEvent>) {
        let tag = &self.tags[i];
        let Some((min, max)) = tag.limits else {
            return;
        };
        let settings = &self.ctx.settings;
        let points = tag
            .rules
            .trend_points
            .unwrap_or(settings.trend_points)
            .max(2);
        let percent = tag
            .rules
            .trend_margin_percent
            .unwrap_or(settings.trend_margin_percent);
        let margin = (max - min).abs() * percent / 100.0;
        let run = &mut self.state[i].trend;
        let Some(last) = run.last else {
            *run = Trend {
                last: Some(v),
                points: 1,
                first: v,
                ..Trend::default()
            };
            return;
        };
        #[allow(clippy::float_cmp)] // a repeat is the same reading again, exactly
        if v == last {
            return;
        }
        let direction = if v > last { 1 } else { -1 };
        if direction == run.direction {
            run.points = run.points.saturating_add(1);
        } else {
            run.direction = direction;
            run.points = 2;
            run.first = last;
        }
        run.last = Some(v);
        let (high, low) = (v > max - margin, v < min + margin);
        if run.episode && !high && !low {
            run.episode = false;
        }
        let towards = match direction {
            1 if high => ("max", max),
            -1 if low => ("min", min),
            _ => return,
        };
        if run.episode || (run.points as usize) < points {
            return;
        }
        run.episode = true;
        let (length, first) = (run.points, run.first);
        let (side, limit) = towards;
        let beyond = if direction > 0 { v > max } else { v < min };
        let moving = if direction > 0 { "rising" } else { "falling" };
        out.push(
            self.ctx
                .tag_event(EventType::QualityAnomaly, tag, &reading.value, None, reading.received)
                .correlation(Uuid::now_v7())
                .data("kind", "trend")
                .data("direction", moving)
                .data("run", json!({ "points": length, "first": first, "last": v }))
                .data("limit", json!({ "min": min, "max": max }))
                .data("towards", side)
                .data("beyond_limit", beyond)
                .data("margin", margin)
                .data(
                    "rule",
                    format!(
                        "{points} values in a row {moving}, the last within {percent} % of the limits' span of {side} ({limit}) or beyond"
                    ),
                ),
        );
    }

    /// A measurement beyond its alarm limit while its alarm indication stays off for
    /// `alarm_grace`: `alarm.suppressed`, once per excursion beyond the limit. The grace
    /// restarts whenever the alarm shows, so an alarm cleared while the value is still
    /// beyond the limit counts too. Values of tags with bad quality, or not read yet, decide
    /// nothing.
    fn check_alarms(&mut self, now: Timestamp, out: &mut Vec<SecurityEvent>) {
        let grace = micros(self.ctx.settings.alarm_grace);
        let (state, tags, ctx) = (&self.state, &self.tags, &self.ctx);
        let good = |i: usize| {
            let st = &state[i];
            st.last.as_ref().filter(|_| !st.bad)
        };
        let number = |i: Option<usize>| i.and_then(good).and_then(Value::as_f64);
        for w in &mut self.alarms {
            let Some(value) = good(w.measurement) else {
                continue;
            };
            let Some(v) = value.as_f64() else {
                continue;
            };
            let beyond = match (number(w.high), number(w.low)) {
                (Some(h), _) if v > h => w.high.map(|i| ("high", i, h)),
                (_, Some(l)) if v < l => w.low.map(|i| ("low", i, l)),
                _ => None,
            };
            let Some((side, limit_tag, limit)) = beyond else {
                w.excursion = None;
                continue;
            };
            let Some(alarm) = good(w.active) else {
                continue;
            };
            let ex = w.excursion.get_or_insert_with(|| Excursion {
                id: Uuid::now_v7(),
                unalarmed_since: None,
                reported: false,
            });
            if truthy(alarm) {
                ex.unalarmed_since = None;
                continue;
            }
            let since = *ex.unalarmed_since.get_or_insert(now);
            if ex.reported || elapsed(since, now) < grace {
                continue;
            }
            ex.reported = true;
            let tag = &tags[w.measurement];
            let unalarmed_s = elapsed(since, now) as f64 / 1e6;
            out.push(
                ctx.tag_event(EventType::AlarmSuppressed, tag, value, None, now)
                    .correlation(ex.id)
                    .data("reason", "no_alarm_beyond_limit")
                    .data("limit", limit)
                    .data("limit_side", side)
                    .data("limit_tag", tags[limit_tag].name.clone())
                    .data("alarm_tag", tags[w.active].name.clone())
                    .data("alarm_value", json_of(alarm))
                    .data("unalarmed_for_s", (unalarmed_s * 10.0).round() / 10.0)
                    .data("grace_s", ctx.settings.alarm_grace.as_secs_f64()),
            );
        }
    }

    /// Frozen measurements: unchanged for longer than their stale time.
    fn check_stale(&mut self, now: Timestamp, out: &mut Vec<SecurityEvent>) {
        let default = self.ctx.settings.stale_after;
        for (tag, st) in self.tags.iter().zip(self.state.iter_mut()) {
            if tag.role != TagRole::Measurement || st.stale {
                continue;
            }
            let (Some(since), Some(value)) = (st.since, st.last.as_ref()) else {
                continue;
            };
            let limit = tag.rules.stale_after.unwrap_or(default);
            if elapsed(since, now) >= micros(limit) {
                st.stale = true;
                out.push(
                    self.ctx
                        .tag_event(EventType::ValueStale, tag, value, None, now)
                        .data("reason", "frozen")
                        .data("unchanged_for_s", elapsed(since, now) / 1_000_000),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests;
