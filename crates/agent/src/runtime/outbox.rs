//! A station's events on their way into the buffer: what to append next, what is waiting
//! for its commit, what to retry. Pure: the station task does the I/O.
//!
//! Polling never waits for a commit. After a poll the station hands its events to the
//! queue and polls on; the [`Commit::Routine`] appends (info level) may wait in the buffer
//! to share a commit with other stations'. Rules:
//! - At most one append carrying the station's state (its rule baselines) is in flight, and
//!   the state goes only when nothing is in flight: the stored baseline never gets ahead of
//!   events that are not durable yet (a commit that fails cannot leave a baseline that
//!   already "knows" a change whose event was lost).
//! - Events polled while an append is in flight wait for its confirmation, unless one of
//!   them is of severity warn or above: then everything pending goes at once as a
//!   [`Commit::Now`] append (without the state), whose commit takes the waiting routine
//!   append with it. A warning never waits behind a routine append's shared commit.
//! - A failed append's events go back ahead of anything polled later and are retried after
//!   the next poll; beyond `limit` events, the oldest are dropped and counted.

use std::collections::VecDeque;

use crate::buffer::Commit;
use linesentry_event::SecurityEvent;

/// Appends in flight at most (the second and later ones carry warnings).
const MAX_IN_FLIGHT: usize = 4;

/// One append to submit.
#[derive(Debug)]
pub(super) struct Send {
    pub(super) events: Vec<SecurityEvent>,
    pub(super) state: Option<Vec<u8>>,
    pub(super) commit: Commit,
}

#[derive(Debug)]
pub(super) struct Outbox {
    /// Not yet submitted, oldest first; the first `retry_len` came back from failures.
    pending: Vec<SecurityEvent>,
    retry_len: usize,
    /// The newest state not yet submitted.
    pending_state: Option<Vec<u8>>,
    /// Submitted and not yet confirmed, in submission order (kept to retry them).
    in_flight: VecDeque<Send>,
    /// Set by a failure, cleared by the next poll: a refused append waits for it.
    hold: bool,
    limit: usize,
}

impl Outbox {
    /// `limit`: events kept while the queue refuses appends, at most.
    pub(super) fn new(limit: usize) -> Self {
        Self {
            pending: Vec::new(),
            retry_len: 0,
            pending_state: None,
            in_flight: VecDeque::new(),
            hold: false,
            limit,
        }
    }

    /// A poll's events and, when the baselines changed, the state to store.
    pub(super) fn add(&mut self, events: Vec<SecurityEvent>, state: Option<Vec<u8>>) {
        if self.pending.is_empty() {
            self.pending = events;
        } else {
            self.pending.extend(events);
        }
        if state.is_some() {
            self.pending_state = state;
        }
        self.hold = false;
    }

    /// What to submit now, if anything; hand it back with [`Outbox::sent`] or
    /// [`Outbox::refused`].
    pub(super) fn next(&mut self) -> Option<Send> {
        if self.hold || (self.pending.is_empty() && self.pending_state.is_none()) {
            return None;
        }
        let commit = Commit::for_events(&self.pending);
        let state = if self.in_flight.is_empty() {
            self.pending_state.take()
        } else if commit == Commit::Now && self.in_flight.len() < MAX_IN_FLIGHT {
            None
        } else {
            return None;
        };
        self.retry_len = 0;
        Some(Send {
            events: std::mem::take(&mut self.pending),
            state,
            commit,
        })
    }

    /// Everything left, in one append to commit at once: the last one, at shutdown, once
    /// nothing is in flight any more.
    pub(super) fn last(&mut self) -> Option<Send> {
        if self.pending.is_empty() && self.pending_state.is_none() {
            return None;
        }
        self.retry_len = 0;
        Some(Send {
            events: std::mem::take(&mut self.pending),
            state: self.pending_state.take(),
            commit: Commit::Now,
        })
    }

    /// The queue took `send`; it is kept until its confirmation.
    pub(super) fn sent(&mut self, send: Send) {
        self.in_flight.push_back(send);
    }

    /// Appends submitted and not yet confirmed.
    #[cfg(test)]
    pub(super) fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Events not yet submitted.
    pub(super) fn pending(&self) -> usize {
        self.pending.len()
    }

    /// The oldest append in flight was confirmed (`ok`) or failed. Returns how many events
    /// were dropped to stay within the limit.
    pub(super) fn confirmed(&mut self, ok: bool) -> usize {
        match self.in_flight.pop_front() {
            Some(send) if !ok => self.retry(send),
            _ => 0,
        }
    }

    /// The queue refused `send` at once. Returns how many events were dropped.
    pub(super) fn refused(&mut self, send: Send) -> usize {
        self.retry(send)
    }

    fn retry(&mut self, send: Send) -> usize {
        let n = send.events.len();
        // After earlier failures, before what was polled since.
        self.pending
            .splice(self.retry_len..self.retry_len, send.events);
        self.retry_len += n;
        if self.pending_state.is_none() {
            self.pending_state = send.state;
        }
        self.hold = true;
        let excess = self.pending.len().saturating_sub(self.limit);
        if excess > 0 {
            self.pending.drain(..excess);
            self.retry_len = self.retry_len.saturating_sub(excess);
        }
        excess
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use linesentry_event::{EventType, Severity};

    fn ev(n: u64, severity: Severity) -> SecurityEvent {
        SecurityEvent::new("gw", EventType::EquipmentMeasurement)
            .severity(severity)
            .data("n", n)
    }

    fn info(n: u64) -> SecurityEvent {
        ev(n, Severity::Info)
    }

    fn ns(events: &[SecurityEvent]) -> Vec<u64> {
        events
            .iter()
            .map(|e| e.event_data["n"].as_u64().unwrap())
            .collect()
    }

    #[test]
    fn info_events_go_as_a_routine_append_with_the_state() {
        let mut o = Outbox::new(100);
        o.add(vec![info(1), info(2)], Some(vec![7]));
        let send = o.next().unwrap();
        assert_eq!(send.commit, Commit::Routine);
        assert_eq!(ns(&send.events), [1, 2]);
        assert_eq!(send.state, Some(vec![7]));
        o.sent(send);
        assert!(o.next().is_none(), "nothing left to send");
    }

    #[test]
    fn a_warning_makes_its_append_commit_at_once() {
        let mut o = Outbox::new(100);
        o.add(vec![info(1), ev(2, Severity::Warn)], None);
        assert_eq!(o.next().unwrap().commit, Commit::Now);
    }

    #[test]
    fn routine_events_polled_while_an_append_is_in_flight_wait_for_its_confirmation() {
        let mut o = Outbox::new(100);
        o.add(vec![info(1)], Some(vec![1]));
        let first = o.next().unwrap();
        o.sent(first);
        o.add(vec![info(2)], Some(vec![2]));
        assert!(o.next().is_none(), "waits for the append in flight");
        assert_eq!(o.confirmed(true), 0);
        let second = o.next().unwrap();
        assert_eq!(ns(&second.events), [2]);
        assert_eq!(second.state, Some(vec![2]));
    }

    #[test]
    fn a_warning_does_not_wait_behind_a_routine_append_but_the_state_does() {
        let mut o = Outbox::new(100);
        o.add(vec![info(1)], None);
        let first = o.next().unwrap();
        o.sent(first);
        o.add(vec![info(2), ev(3, Severity::Critical)], Some(vec![9]));
        let urgent = o.next().unwrap();
        assert_eq!(urgent.commit, Commit::Now);
        assert_eq!(ns(&urgent.events), [2, 3]);
        assert_eq!(
            urgent.state, None,
            "the state waits until nothing is in flight"
        );
        o.sent(urgent);
        assert!(o.next().is_none());
        o.confirmed(true);
        assert!(o.next().is_none(), "one append still in flight");
        o.confirmed(true);
        let state = o.next().unwrap();
        assert!(state.events.is_empty());
        assert_eq!(state.state, Some(vec![9]));
    }

    #[test]
    fn failed_appends_are_retried_in_order_ahead_of_later_events_after_the_next_poll() {
        let mut o = Outbox::new(100);
        o.add(vec![info(1)], Some(vec![1]));
        let a = o.next().unwrap();
        o.sent(a);
        o.add(vec![ev(2, Severity::Warn)], None);
        let b = o.next().unwrap();
        o.sent(b);
        o.add(vec![info(3)], Some(vec![3]));
        // The shared commit failed: both appends in it get the error.
        o.confirmed(false);
        o.confirmed(false);
        assert_eq!(o.in_flight(), 0);
        assert!(o.next().is_none(), "a failure waits for the next poll");
        o.add(vec![info(4)], None);
        let retry = o.next().unwrap();
        assert_eq!(ns(&retry.events), [1, 2, 3, 4]);
        assert_eq!(retry.commit, Commit::Now, "it holds a warning");
        assert_eq!(
            retry.state,
            Some(vec![3]),
            "the newest state, not the failed one"
        );
    }

    #[test]
    fn a_failed_state_is_kept_when_no_newer_one_came() {
        let mut o = Outbox::new(100);
        o.add(Vec::new(), Some(vec![5]));
        let a = o.next().unwrap();
        assert_eq!(o.refused(a), 0);
        o.add(Vec::new(), None);
        assert_eq!(o.next().unwrap().state, Some(vec![5]));
    }

    #[test]
    fn beyond_the_limit_the_oldest_events_are_dropped_and_counted() {
        let mut o = Outbox::new(3);
        o.add(vec![info(1), info(2)], None);
        let a = o.next().unwrap();
        o.sent(a);
        o.add(vec![info(3), info(4)], None);
        assert_eq!(o.confirmed(false), 1);
        assert_eq!(o.pending(), 3);
        o.add(Vec::new(), None);
        assert_eq!(ns(&o.next().unwrap().events), [2, 3, 4]);
    }

    #[test]
    fn the_last_append_takes_everything_and_commits_at_once() {
        let mut o = Outbox::new(100);
        o.add(vec![info(1)], Some(vec![1]));
        let a = o.next().unwrap();
        o.refused(a);
        let last = o.last().unwrap();
        assert_eq!(last.commit, Commit::Now);
        assert_eq!(ns(&last.events), [1]);
        assert_eq!(last.state, Some(vec![1]));
        assert!(o.last().is_none());
    }
}
