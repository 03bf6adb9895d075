//! `diag.counters_reset` from a Modbus device's own diagnostic counters (FC 08 / FC 11,
//! readings `_modbus.diag.*`, see `source::modbus::diag`).
//!
//! The counters only go up while the device runs: the agent's own polls are counted on
//! every read. Going back means they were cleared (FC 08 sub-function 0x0A, T0872 Indicator
//! Removal) or the device restarted. Modbus has no start time to tell the two apart, but a
//! restart takes the link down: a TCP connection does not survive it and a serial unit
//! stops answering for a while. So:
//!
//! - counters back while every poll since the last read reached the device:
//!   `diag.counters_reset`, one event for all the counters of that read;
//! - counters back after a poll that did not reach the device or lost the link
//!   (timeout, transport error, connection refused): `device.restarted`, and the profile's
//!   `counter` tags of the same poll going back are then no reset either.
//!
//! The counters are 16 bits and wrap. A value lower than the last one is a wrap, not a
//! reset, when counting on from the last value to the new one through 65535 is a step no
//! larger than twice the largest step seen so far (at least [`MIN_WRAP_STEP`]). A clear
//! just after a wrap looks like one more wrap and is missed; that is the price of not
//! raising a false reset on every wrap of a busy bus.
//!
//! State is in memory only: after an agent restart the first read sets the reference again.
//!
//! # Someone else on the device: scans and floods
//!
//! A device scanned by another client keeps answering the agent normally; what changes is
//! its own counters. With each read of the counters the source also hands over the agent's
//! own share so far (`_modbus.own.requests`, `_modbus.own.exceptions`). Between two reads
//! that both reached the device, with no counter going back:
//!
//! - foreign exceptions = the rise of `bus_exception_error_count` (FC 08 / 0x0D) minus the
//!   exception responses the agent received; at `diag_scan_exceptions_per_min` or faster it
//!   is a function or address scan (T0846 Remote System Discovery, T0888);
//! - foreign messages = the rise of `server_message_count` (FC 08 / 0x0E; else
//!   `bus_message_count`, which on a shared serial bus also counts the other units' traffic)
//!   minus the agent's own requests; at `diag_flood_messages_per_s` or faster it is a flood
//!   (T0814 Denial of Service);
//! - the rise of `server_no_response_count` (0x0F) goes with either as data.
//!
//! One `security.violation` per burst (`kind` `modbus_scan`, or `modbus_flood` when only the
//! message rate is over), with the counts and rates in `event_data`; the burst lasts while
//! consecutive reads stay over a threshold and shares one correlation id. A read that lost
//! the link in between, or counters going back, starts the comparison again. Each counter
//! is compared only when the profile's `[diagnostics]` reads it.

use std::collections::BTreeMap;

use super::StationRules;
use crate::reading::reserved::{self, MODBUS_DIAG_PREFIX as TAG_PREFIX};
use crate::reading::{PollResult, Quality, SourceError};
use linesentry_event::{EventType, SecurityEvent, Timestamp};

/// Smallest step through 65535 that counts as a wrap.
const MIN_WRAP_STEP: u64 = 64;
/// Values of a 16-bit counter.
const RANGE: u64 = 1 << 16;

/// What the rules remember of the diagnostic counters.
#[derive(Debug, Clone, Default)]
pub(super) struct DiagState {
    /// Last value and largest step seen, by reading name.
    counters: BTreeMap<String, Counter>,
    /// A poll since the last read did not reach the device or lost the link.
    interrupted: bool,
    /// The agent's own share at the last read, and when it was: the reference for the next
    /// read's scan and flood comparison (`None` after an interruption).
    own: Option<Own>,
    /// The open scan or flood burst, by its correlation id.
    burst: Option<uuid::Uuid>,
    /// Foreign exceptions per read over the last minute (bounded: reads are at least a
    /// second apart, and older entries are dropped).
    recent_exceptions: std::collections::VecDeque<(Timestamp, u64)>,
}

/// The agent's own requests and exceptions (cumulative) at a read of the counters.
#[derive(Debug, Clone, Copy)]
pub(super) struct Own {
    at: Timestamp,
    requests: u64,
    exceptions: u64,
}

/// What two consecutive reads of the counters show beyond the agent's own traffic.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(super) struct Foreign {
    pub(super) seconds: f64,
    /// Exceptions the device sent to others (`None`: its exception counter is not read).
    pub(super) exceptions: Option<u64>,
    /// Messages the device received from others (`None`: no message counter is read).
    pub(super) messages: Option<u64>,
    pub(super) no_responses: Option<u64>,
    pub(super) own_requests: u64,
    pub(super) own_exceptions: u64,
}

impl Foreign {
    fn exceptions_per_min(&self) -> f64 {
        self.exceptions.unwrap_or(0) as f64 * 60.0 / self.seconds
    }

    fn messages_per_s(&self) -> f64 {
        self.messages.unwrap_or(0) as f64 / self.seconds
    }
}

#[derive(Debug, Clone, Copy)]
struct Counter {
    last: u64,
    max_step: u64,
}

/// How a counter moved from one read to the next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Movement {
    /// Up by this much, through 65535 or not.
    Up(u64),
    /// Lower, and too far from the last value to be a wrap.
    Back,
}

/// How a 16-bit counter moved from `last` to `now`, given the largest step seen so far.
pub(super) fn movement(last: u64, now: u64, max_step: u64) -> Movement {
    if now >= last {
        return Movement::Up(now - last);
    }
    let through = (now + RANGE).saturating_sub(last);
    if last < RANGE && through <= (2 * max_step).max(MIN_WRAP_STEP) {
        Movement::Up(through)
    } else {
        Movement::Back
    }
}

/// True for a reading of a Modbus diagnostic counter, or of the agent's own share of them.
pub(super) fn is_diag(tag: &str) -> bool {
    tag.starts_with(TAG_PREFIX)
        || tag == reserved::MODBUS_OWN_REQUESTS
        || tag == reserved::MODBUS_OWN_EXCEPTIONS
}

/// The window over which foreign exceptions are summed against
/// `diag_scan_exceptions_per_min`.
const SCAN_WINDOW_US: i64 = 60_000_000;
/// Most entries kept in that window, whatever the read interval.
const SCAN_WINDOW_MAX: usize = 128;

/// A poll error that means the link went down (so the device may have restarted meanwhile).
fn link_lost(error: &SourceError) -> bool {
    matches!(
        error,
        SourceError::Timeout(_) | SourceError::Connect(_) | SourceError::Transport(_)
    )
}

impl StationRules {
    /// The diagnostic counters of `poll`; returns true when they show the device restarted.
    pub(super) fn modbus_diagnostics(
        &mut self,
        poll: &PollResult,
        now: Timestamp,
        out: &mut Vec<SecurityEvent>,
    ) -> bool {
        // A link lost in this poll came after its readings (a failure ends a Modbus poll),
        // so it speaks about the next read, not this one.
        let lost_now = !poll.reachable || poll.errors.iter().any(link_lost);
        let mut back = Vec::new();
        let mut read = false;
        let mut steps: BTreeMap<&str, u64> = BTreeMap::new();
        let (mut own_requests, mut own_exceptions) = (None, None);
        for r in poll.readings.iter().filter(|r| is_diag(&r.tag)) {
            let Some(value) = r.value.as_f64().filter(|v| *v >= 0.0) else {
                self.counters.not_finite += 1;
                continue;
            };
            if r.quality != Quality::Good {
                self.counters.bad_quality += 1;
                continue;
            }
            let value = value as u64;
            match r.tag.as_ref() {
                reserved::MODBUS_OWN_REQUESTS => {
                    own_requests = Some(value);
                    continue;
                }
                reserved::MODBUS_OWN_EXCEPTIONS => {
                    own_exceptions = Some(value);
                    continue;
                }
                _ => {}
            }
            read = true;
            let name = r.tag.strip_prefix(TAG_PREFIX).unwrap_or(&r.tag);
            match self.diag.counters.get_mut(name) {
                None => {
                    self.diag.counters.insert(
                        name.to_owned(),
                        Counter {
                            last: value,
                            max_step: 0,
                        },
                    );
                }
                Some(c) => {
                    match movement(c.last, value, c.max_step) {
                        Movement::Up(step) => {
                            c.max_step = c.max_step.max(step);
                            steps.insert(name, step);
                        }
                        Movement::Back => {
                            back.push((name.to_owned(), value, c.last));
                            c.max_step = 0;
                        }
                    }
                    c.last = value;
                }
            }
        }
        let interrupted = self.diag.interrupted;
        self.diag.interrupted = lost_now || (interrupted && !read);
        if let (true, Some(requests), Some(exceptions)) = (read, own_requests, own_exceptions) {
            let own = Own {
                at: now,
                requests,
                exceptions,
            };
            match self.diag.own.replace(own) {
                Some(prev) if back.is_empty() && !interrupted => {
                    let foreign = foreign(&steps, prev, own);
                    self.scan_or_flood(&foreign, now, out);
                }
                _ => {}
            }
        }
        if back.is_empty() {
            return false;
        }
        let counters: serde_json::Map<String, serde_json::Value> = back
            .iter()
            .map(|(name, value, previous)| {
                (
                    name.clone(),
                    serde_json::json!({ "value": value, "previous": previous }),
                )
            })
            .collect();
        let e = if interrupted {
            self.ctx.event(EventType::DeviceRestarted, now).data(
                "reason",
                "Modbus diagnostic counters went backwards after the link was down",
            )
        } else {
            self.ctx.event(EventType::DiagCountersReset, now).data(
                "reason",
                "Modbus diagnostic counters went backwards while the link stayed up",
            )
        };
        out.push(
            e.data("source", "modbus_diagnostics")
                .data("counters", counters),
        );
        interrupted
    }
}

/// What the counters rose by between two reads beyond the agent's own share.
pub(super) fn foreign(steps: &BTreeMap<&str, u64>, prev: Own, now: Own) -> Foreign {
    let own_requests = now.requests.saturating_sub(prev.requests);
    let own_exceptions = now.exceptions.saturating_sub(prev.exceptions);
    let messages = steps
        .get("server_message_count")
        .or_else(|| steps.get("bus_message_count"));
    Foreign {
        seconds: (elapsed_us(prev.at, now.at) as f64 / 1e6).max(1e-3),
        exceptions: steps
            .get("bus_exception_error_count")
            .map(|s| s.saturating_sub(own_exceptions)),
        messages: messages.map(|s| s.saturating_sub(own_requests)),
        no_responses: steps.get("server_no_response_count").copied(),
        own_requests,
        own_exceptions,
    }
}

fn elapsed_us(from: Timestamp, to: Timestamp) -> i64 {
    (to.as_micros() - from.as_micros()).max(0)
}

impl StationRules {
    /// The scan and flood rule on one comparison of two reads (see the module's docs).
    fn scan_or_flood(&mut self, f: &Foreign, now: Timestamp, out: &mut Vec<SecurityEvent>) {
        let recent = &mut self.diag.recent_exceptions;
        recent.push_back((now, f.exceptions.unwrap_or(0)));
        while recent
            .front()
            .is_some_and(|(at, _)| elapsed_us(*at, now) > SCAN_WINDOW_US)
            || recent.len() > SCAN_WINDOW_MAX
        {
            recent.pop_front();
        }
        let last_minute: u64 = recent.iter().map(|(_, n)| n).sum();
        let s = &self.ctx.settings;
        let scan = f.exceptions.unwrap_or(0) > 0 && last_minute >= s.diag_scan_exceptions_per_min;
        let flood = f.messages_per_s() >= s.diag_flood_messages_per_s as f64;
        if !(scan || flood) {
            self.diag.burst = None;
            return;
        }
        if self.diag.burst.is_some() {
            return;
        }
        let id = uuid::Uuid::now_v7();
        self.diag.burst = Some(id);
        let round = |x: f64| (x * 10.0).round() / 10.0;
        out.push(
            self.ctx
                .event(EventType::SecurityViolation, now)
                .correlation(id)
                .data("kind", if scan { "modbus_scan" } else { "modbus_flood" })
                .data("source", "device_diagnostics")
                .data("interval_s", round(f.seconds))
                .data("foreign_exceptions", f.exceptions)
                .data("foreign_exceptions_last_min", last_minute)
                .data("exceptions_per_min", round(f.exceptions_per_min()))
                .data("foreign_messages", f.messages)
                .data("messages_per_s", round(f.messages_per_s()))
                .data("no_responses", f.no_responses)
                .data("own_requests", f.own_requests)
                .data("own_exceptions", f.own_exceptions)
                .data(
                    "thresholds",
                    serde_json::json!({
                        "diag_scan_exceptions_per_min": s.diag_scan_exceptions_per_min,
                        "diag_flood_messages_per_s": s.diag_flood_messages_per_s,
                    }),
                ),
        );
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use super::*;
    use crate::reading::{Reading, TagRole, Value};
    use crate::rules::tests::kinds;
    use crate::rules::{RuleTag, TagRules};
    use linesentry_event::{Severity, SeverityMap};

    fn rules() -> StationRules {
        let strokes = RuleTag {
            name: "strokes".into(),
            role: TagRole::Counter,
            unit: None,
            states: BTreeMap::new(),
            limits: None,
            rules: TagRules::default(),
        };
        StationRules::new(
            Arc::from("gw-1"),
            Arc::from("press-1"),
            Arc::new(SeverityMap::default()),
            vec![strokes],
        )
    }

    fn at(second: i64) -> Timestamp {
        Timestamp::from_micros(1_700_000_000_000_000 + second * 1_000_000)
    }

    fn reading(tag: &str, value: u64, second: i64) -> Reading {
        Reading {
            station_id: Arc::from("press-1"),
            tag: Arc::from(tag),
            value: Value::UInt(value),
            quality: Quality::Good,
            source_time: None,
            received: at(second),
        }
    }

    /// A poll that reached the device with these diagnostic counters (bus messages, comm
    /// events) and profile counter.
    fn poll(bus: u64, events: u64, strokes: Option<u64>, second: i64) -> PollResult {
        let mut readings = vec![
            reading("_modbus.diag.bus_message_count", bus, second),
            reading("_modbus.diag.comm_event_count", events, second),
        ];
        readings.extend(strokes.map(|s| reading("strokes", s, second)));
        PollResult {
            readings,
            reachable: true,
            ..PollResult::default()
        }
    }

    /// A read of the message and exception counters with the agent's own share so far.
    fn counted(second: i64, messages: u64, exceptions: u64, own: (u64, u64)) -> PollResult {
        PollResult {
            readings: vec![
                reading("_modbus.diag.server_message_count", messages, second),
                reading("_modbus.diag.bus_exception_error_count", exceptions, second),
                reading("_modbus.own.requests", own.0, second),
                reading("_modbus.own.exceptions", own.1, second),
            ],
            reachable: true,
            ..PollResult::default()
        }
    }

    fn settings(scan: u64, flood: u64) -> crate::rules::RuleSettings {
        crate::rules::RuleSettings {
            diag_scan_exceptions_per_min: scan,
            diag_flood_messages_per_s: flood,
            ..crate::rules::RuleSettings::default()
        }
    }

    #[test]
    fn exceptions_the_device_sent_to_someone_else_are_one_scan_per_burst() {
        let mut s = rules().with_settings(settings(10, 100));
        // The agent's own polls: 100 messages per 10 s, its own two exceptions.
        assert!(s.observe(&counted(0, 100, 0, (100, 0)), at(0)).is_empty());
        assert!(s.observe(&counted(10, 200, 2, (200, 2)), at(10)).is_empty());
        assert_eq!(s.counters().unknown_tag, 0, "own-share readings are known");
        // Someone probes addresses: 30 exceptions and 40 messages that are not the agent's.
        let out = s.observe(&counted(20, 340, 32, (300, 2)), at(20));
        assert_eq!(kinds(&out), [("security.violation", Severity::Error)]);
        let d = &out[0].event_data;
        assert_eq!(d["kind"], "modbus_scan");
        assert_eq!(d["source"], "device_diagnostics");
        assert_eq!(d["foreign_exceptions"], 30);
        assert_eq!(d["foreign_messages"], 40);
        assert_eq!(d["own_requests"], 100);
        assert_eq!(d["exceptions_per_min"], 180.0);
        let id = out[0].correlation_id;
        // Still going: the same burst, no second event.
        assert!(s
            .observe(&counted(30, 480, 60, (400, 2)), at(30))
            .is_empty());
        // Quiet for a minute: the burst ends; a new scan is a new event.
        for t in [40, 50, 60, 70, 80, 90, 100] {
            let n = t as u64 * 10 + 80;
            assert!(
                s.observe(&counted(t, n, 60, (n - 80, 2)), at(t)).is_empty(),
                "at {t}"
            );
        }
        let out = s.observe(&counted(110, 1200, 80, (1100, 2)), at(110));
        assert_eq!(kinds(&out), [("security.violation", Severity::Error)]);
        assert_ne!(out[0].correlation_id, id);
    }

    #[test]
    fn messages_beyond_the_agents_own_at_the_flood_rate_are_a_flood_and_its_own_are_not() {
        let mut s = rules().with_settings(settings(10, 50));
        assert!(s.observe(&counted(0, 100, 0, (100, 0)), at(0)).is_empty());
        // The agent itself sent 2000 requests in 10 s: not a flood.
        assert!(s
            .observe(&counted(10, 2100, 0, (2100, 0)), at(10))
            .is_empty());
        // 1000 more than its own in 10 s: 100 per second.
        let out = s.observe(&counted(20, 3200, 0, (2200, 0)), at(20));
        assert_eq!(kinds(&out), [("security.violation", Severity::Error)]);
        assert_eq!(out[0].event_data["kind"], "modbus_flood");
        assert_eq!(out[0].event_data["messages_per_s"], 100.0);
    }

    #[test]
    fn no_comparison_across_a_lost_link_or_a_clear() {
        let mut s = rules().with_settings(settings(10, 50));
        s.observe(&counted(0, 100, 0, (100, 0)), at(0));
        let down = PollResult {
            errors: vec![SourceError::Timeout(1000)],
            ..PollResult::default()
        };
        s.observe(&down, at(5));
        // The device restarted meanwhile and others talked to it: nothing to compare with.
        let out = s.observe(&counted(10, 5000, 300, (150, 0)), at(10));
        assert!(
            out.iter().all(|e| e.event_type != "security.violation"),
            "{:?}",
            kinds(&out)
        );
        assert!(s
            .observe(&counted(20, 5050, 300, (200, 0)), at(20))
            .is_empty());
    }

    #[test]
    fn diagnostic_counters_cleared_while_the_link_stays_up_are_one_counters_reset() {
        let mut s = rules();
        assert!(s.observe(&poll(100, 90, None, 0), at(0)).is_empty());
        assert!(s.observe(&poll(160, 150, None, 60), at(60)).is_empty());
        let out = s.observe(&poll(4, 3, None, 120), at(120));
        assert_eq!(kinds(&out), [("diag.counters_reset", Severity::Warn)]);
        let data = &out[0].event_data;
        assert_eq!(data["counters"]["bus_message_count"]["previous"], 160);
        assert_eq!(data["counters"]["bus_message_count"]["value"], 4);
        assert_eq!(data["counters"]["comm_event_count"]["previous"], 150);
        assert_eq!(data["attack"], serde_json::json!(["T0872"]));
        assert_eq!(s.counters().unknown_tag, 0, "diagnostic readings are known");
        // Counting on from the cleared values is normal again.
        assert!(s.observe(&poll(60, 58, None, 180), at(180)).is_empty());
    }

    #[test]
    fn diagnostic_counters_back_after_the_link_was_down_are_a_restart_that_explains_counters() {
        let mut s = rules();
        s.observe(&poll(100, 90, Some(1000), 0), at(0));
        let down = PollResult {
            errors: vec![SourceError::Timeout(1000)],
            ..PollResult::default()
        };
        assert!(s
            .observe(&down, at(30))
            .iter()
            .all(|e| e.event_type != "diag.counters_reset"));
        let out = s.observe(&poll(2, 1, Some(0), 60), at(60));
        assert_eq!(kinds(&out), [("device.restarted", Severity::Warn)]);
        assert_eq!(out[0].event_data["source"], "modbus_diagnostics");
    }

    #[test]
    fn a_lost_link_is_forgotten_once_the_counters_were_read_again() {
        let mut s = rules();
        s.observe(&poll(100, 90, None, 0), at(0));
        let lost = PollResult {
            reachable: true,
            errors: vec![SourceError::Transport("reset by peer".into())],
            ..PollResult::default()
        };
        s.observe(&lost, at(10));
        assert!(s.observe(&poll(150, 140, None, 60), at(60)).is_empty());
        let out = s.observe(&poll(1, 1, None, 120), at(120));
        assert_eq!(kinds(&out), [("diag.counters_reset", Severity::Warn)]);
    }

    #[test]
    fn a_link_lost_right_after_a_read_counts_for_the_next_read() {
        let mut s = rules();
        s.observe(&poll(100, 90, None, 0), at(0));
        let mut cut = poll(160, 150, None, 60);
        cut.errors.push(SourceError::Timeout(300));
        assert!(s.observe(&cut, at(60)).is_empty());
        let out = s.observe(&poll(3, 2, None, 120), at(120));
        assert_eq!(kinds(&out), [("device.restarted", Severity::Warn)]);
    }

    #[test]
    fn counters_wrapping_through_65535_at_their_usual_pace_raise_nothing() {
        let mut s = rules();
        s.observe(&poll(65_400, 100, None, 0), at(0));
        s.observe(&poll(65_460, 160, None, 60), at(60));
        assert!(s.observe(&poll(4, 220, None, 120), at(120)).is_empty());
        assert!(s.observe(&poll(64, 280, None, 180), at(180)).is_empty());
    }

    #[test]
    fn a_counter_going_up_moves_by_its_step_and_going_to_zero_is_back() {
        assert_eq!(movement(100, 130, 0), Movement::Up(30));
        assert_eq!(movement(100, 100, 30), Movement::Up(0));
        assert_eq!(movement(100, 0, 30), Movement::Back);
        assert_eq!(movement(40_000, 12, 500), Movement::Back);
    }

    #[test]
    fn a_counter_passing_65535_by_a_usual_step_is_a_wrap() {
        assert_eq!(movement(65_500, 20, 40), Movement::Up(56));
        assert_eq!(movement(65_000, 400, 500), Movement::Up(936));
        assert_eq!(
            movement(65_000, 400, 100),
            Movement::Back,
            "936 is more than twice the largest step"
        );
        assert_eq!(
            movement(65_530, 10, 0),
            Movement::Up(16),
            "small wraps always"
        );
    }
}
