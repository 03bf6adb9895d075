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

use std::collections::BTreeMap;

use super::StationRules;
use crate::reading::reserved::MODBUS_DIAG_PREFIX as TAG_PREFIX;
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

/// True for a reading of a Modbus diagnostic counter.
pub(super) fn is_diag(tag: &str) -> bool {
    tag.starts_with(TAG_PREFIX)
}

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
        for r in poll.readings.iter().filter(|r| is_diag(&r.tag)) {
            let Some(value) = r.value.as_f64().filter(|v| *v >= 0.0) else {
                self.counters.not_finite += 1;
                continue;
            };
            if r.quality != Quality::Good {
                self.counters.bad_quality += 1;
                continue;
            }
            read = true;
            let value = value as u64;
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
                        Movement::Up(step) => c.max_step = c.max_step.max(step),
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
