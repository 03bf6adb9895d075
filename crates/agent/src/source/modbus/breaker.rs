//! Retry timing with no I/O: capped exponential backoff with jitter, and the circuit breaker
//! that isolates a device after repeated failed polls.
//!
//! Both are plain state machines driven by the caller's clock (`Instant`s passed in), so they
//! are tested without sockets, sleeping or a runtime.
//!
//! # Backoff
//!
//! Delay `n` (from 0) is `initial × multiplier^n`, capped at `max`, then spread by ±`jitter`
//! (a fraction) and capped again, so stations that failed together do not retry together and
//! no delay ever exceeds `max`. [`Backoff::reset`] starts over after a success.
//!
//! # Circuit breaker
//!
//! ```text
//!            failure (< threshold in a row)
//!              ┌───┐
//!              │   ▼           threshold failed polls in a row
//!           Closed ───────────────────────────────────────────► Open { until }
//!              ▲                                                 │   ▲
//!      success │                                   now >= until  │   │ failure: the next,
//!              │                                                 ▼   │ longer delay
//!              └───────────────────────────────────────────── HalfOpen
//! ```
//!
//! While `Open`, [`Breaker::admit`] answers [`Admission::Reject`] with the time left, and the
//! station returns at once without touching the device or the bus. When the time is up the
//! next poll is a probe ([`Admission::Probe`]): its success closes the breaker and resets the
//! backoff, its failure opens it again for the next (longer, jittered, capped) delay. A probe
//! that could not run (for example because the connection is still backing off) leaves the
//! breaker half-open, so the next poll probes again.

use std::time::Duration;

use linesentry_common::{Backoff, BackoffPolicy, Jitter};
use tokio::time::Instant;

/// Reconnect timing of a TCP device or a serial port: 200 ms doubling to 30 s, ±20 %.
pub const RECONNECT: BackoffPolicy = BackoffPolicy {
    initial: Duration::from_millis(200),
    max: Duration::from_secs(30),
    multiplier: 2.0,
    jitter: Jitter::Spread(0.2),
};

/// How long an isolated device is left alone: 1 s doubling to 30 s, ±20 %.
pub const ISOLATION: BackoffPolicy = BackoffPolicy {
    initial: Duration::from_secs(1),
    max: Duration::from_secs(30),
    multiplier: 2.0,
    jitter: Jitter::Spread(0.2),
};

/// When a device is isolated and for how long.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BreakerPolicy {
    /// Failed polls in a row that open the breaker; at least 1. Default 3.
    pub failure_threshold: u32,
    /// Open time: default 1 s doubling to 30 s, ±20 %.
    pub open: BackoffPolicy,
}

/// Failed polls in a row that isolate a device, by default.
pub const DEFAULT_FAILURE_THRESHOLD: u32 = 3;

impl Default for BreakerPolicy {
    fn default() -> Self {
        BreakerPolicy {
            failure_threshold: DEFAULT_FAILURE_THRESHOLD,
            open: ISOLATION,
        }
    }
}

/// Where a breaker stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Polls run; `failures` failed polls in a row so far.
    Closed { failures: u32 },
    /// The device is isolated until `until`.
    Open { until: Instant },
    /// The isolation time is over; the next poll is a probe.
    HalfOpen,
}

/// What a breaker allows for the poll about to start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// A normal poll.
    Allow,
    /// One trial poll after isolation; its outcome closes or reopens the breaker.
    Probe,
    /// Isolated: return at once, touching nothing.
    Reject { retry_in: Duration },
}

/// What recording an outcome did to the breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// No change of state worth reporting.
    None,
    /// The breaker opened (or reopened after a failed probe) for `retry_in`.
    Opened { retry_in: Duration },
    /// A probe succeeded: the device is back.
    Closed,
}

/// Isolates a device after repeated failed polls. Pure: the caller passes the time.
#[derive(Debug, Clone)]
pub struct Breaker {
    threshold: u32,
    state: BreakerState,
    backoff: Backoff,
}

impl Breaker {
    pub fn new(policy: BreakerPolicy, seed: u64) -> Self {
        Breaker {
            threshold: policy.failure_threshold.max(1),
            state: BreakerState::Closed { failures: 0 },
            backoff: Backoff::seeded(policy.open, seed),
        }
    }

    pub fn state(&self) -> BreakerState {
        self.state
    }

    /// Whether the device is currently isolated (open, or waiting for its probe).
    pub fn is_open(&self) -> bool {
        !matches!(self.state, BreakerState::Closed { .. })
    }

    /// Whether the poll starting at `now` may touch the device.
    pub fn admit(&mut self, now: Instant) -> Admission {
        match self.state {
            BreakerState::Closed { .. } => Admission::Allow,
            BreakerState::HalfOpen => Admission::Probe,
            BreakerState::Open { until } if now >= until => {
                self.state = BreakerState::HalfOpen;
                Admission::Probe
            }
            BreakerState::Open { until } => Admission::Reject {
                retry_in: until - now,
            },
        }
    }

    /// A poll that the device answered properly.
    pub fn record_success(&mut self) -> Transition {
        let was_open = self.is_open();
        self.state = BreakerState::Closed { failures: 0 };
        self.backoff.reset();
        if was_open {
            Transition::Closed
        } else {
            Transition::None
        }
    }

    /// A poll that failed (no connection, timeout, garbage) at `now`.
    pub fn record_failure(&mut self, now: Instant) -> Transition {
        match self.state {
            BreakerState::Closed { failures } if failures + 1 < self.threshold => {
                self.state = BreakerState::Closed {
                    failures: failures + 1,
                };
                Transition::None
            }
            BreakerState::Closed { .. } | BreakerState::HalfOpen => {
                let retry_in = self.backoff.next_delay();
                self.state = BreakerState::Open {
                    until: now + retry_in,
                };
                Transition::Opened { retry_in }
            }
            // Nothing ran while open; keep the current deadline.
            BreakerState::Open { .. } => Transition::None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn no_jitter(initial_ms: u32, max_ms: u32) -> BackoffPolicy {
        BackoffPolicy {
            initial: initial_ms * MS,
            max: max_ms * MS,
            multiplier: 2.0,
            jitter: Jitter::Spread(0.0),
        }
    }

    #[test]
    fn backoff_doubles_from_the_initial_delay_up_to_the_cap() {
        let mut b = Backoff::seeded(no_jitter(200, 30_000), 1);
        let delays: Vec<u128> = (0..10).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(
            delays,
            [200, 400, 800, 1600, 3200, 6400, 12_800, 25_600, 30_000, 30_000]
        );
    }

    #[test]
    fn backoff_starts_over_after_a_reset() {
        let mut b = Backoff::seeded(no_jitter(200, 30_000), 1);
        for _ in 0..5 {
            b.next_delay();
        }
        b.reset();
        assert_eq!(b.attempts(), 0);
        assert_eq!(b.next_delay(), 200 * MS);
    }

    #[test]
    fn jittered_delays_stay_within_the_spread_and_never_exceed_the_cap() {
        let mut b = Backoff::seeded(RECONNECT, 42);
        let mut distinct = std::collections::BTreeSet::new();
        for n in 0..200u32 {
            let d = b.next_delay();
            let base = (200.0 * 2f64.powi(n.min(30).cast_signed())).min(30_000.0);
            let ms = d.as_secs_f64() * 1000.0;
            assert!(
                ms >= base * 0.8 - 1e-6,
                "delay {n}: {ms} ms below {base} ms - 20 %"
            );
            assert!(
                ms <= (base * 1.2).min(30_000.0) + 1e-6,
                "delay {n}: {ms} ms"
            );
            distinct.insert(d);
        }
        assert!(
            distinct.len() > 50,
            "jitter spreads the delays, capped ones too"
        );
    }

    #[test]
    fn jitter_differs_between_seeds_so_stations_do_not_retry_in_step() {
        let a: Vec<Duration> = {
            let mut b = Backoff::seeded(RECONNECT, 1);
            (0..5).map(|_| b.next_delay()).collect()
        };
        let b: Vec<Duration> = {
            let mut b = Backoff::seeded(RECONNECT, 2);
            (0..5).map(|_| b.next_delay()).collect()
        };
        assert_ne!(a, b);
    }

    fn breaker(threshold: u32) -> Breaker {
        Breaker::new(
            BreakerPolicy {
                failure_threshold: threshold,
                open: no_jitter(1000, 30_000),
            },
            7,
        )
    }

    #[test]
    fn breaker_opens_after_the_threshold_of_failed_polls_in_a_row() {
        let t0 = Instant::now();
        let mut b = breaker(3);
        assert_eq!(b.admit(t0), Admission::Allow);
        assert_eq!(b.record_failure(t0), Transition::None);
        assert_eq!(b.record_failure(t0), Transition::None);
        assert!(!b.is_open());
        assert_eq!(
            b.record_failure(t0),
            Transition::Opened {
                retry_in: 1000 * MS
            }
        );
        assert!(b.is_open());
        assert_eq!(
            b.admit(t0 + 400 * MS),
            Admission::Reject { retry_in: 600 * MS }
        );
    }

    #[test]
    fn a_success_between_failures_resets_the_count() {
        let t0 = Instant::now();
        let mut b = breaker(3);
        b.record_failure(t0);
        b.record_failure(t0);
        assert_eq!(b.record_success(), Transition::None);
        b.record_failure(t0);
        b.record_failure(t0);
        assert_eq!(b.state(), BreakerState::Closed { failures: 2 });
    }

    #[test]
    fn after_the_open_time_one_probe_is_admitted_and_its_success_closes_the_breaker() {
        let t0 = Instant::now();
        let mut b = breaker(1);
        b.record_failure(t0);
        assert_eq!(b.admit(t0 + 1000 * MS), Admission::Probe);
        assert_eq!(b.state(), BreakerState::HalfOpen);
        assert_eq!(b.record_success(), Transition::Closed);
        assert_eq!(b.admit(t0 + 1001 * MS), Admission::Allow);
        // The backoff starts over: the next isolation is short again.
        assert_eq!(
            b.record_failure(t0 + 2000 * MS),
            Transition::Opened {
                retry_in: 1000 * MS
            }
        );
    }

    #[test]
    fn a_failed_probe_reopens_the_breaker_for_longer_each_time_up_to_the_cap() {
        let t0 = Instant::now();
        let mut b = breaker(1);
        let mut now = t0;
        let mut opens = Vec::new();
        for _ in 0..8 {
            match b.record_failure(now) {
                Transition::Opened { retry_in } => {
                    opens.push(retry_in.as_millis());
                    now += retry_in;
                    assert_eq!(b.admit(now - MS), Admission::Reject { retry_in: MS });
                    assert_eq!(b.admit(now), Admission::Probe);
                }
                other => panic!("expected the breaker to open, got {other:?}"),
            }
        }
        assert_eq!(
            opens,
            [1000, 2000, 4000, 8000, 16_000, 30_000, 30_000, 30_000]
        );
    }

    #[test]
    fn a_probe_that_could_not_run_is_offered_again() {
        let t0 = Instant::now();
        let mut b = breaker(1);
        b.record_failure(t0);
        assert_eq!(b.admit(t0 + 1000 * MS), Admission::Probe);
        // Nothing recorded: the probe did not reach the device.
        assert_eq!(b.admit(t0 + 1050 * MS), Admission::Probe);
    }

    #[test]
    fn a_threshold_of_zero_behaves_as_one() {
        let t0 = Instant::now();
        let mut b = breaker(0);
        assert!(matches!(b.record_failure(t0), Transition::Opened { .. }));
    }

    #[test]
    fn failures_recorded_while_open_keep_the_deadline() {
        let t0 = Instant::now();
        let mut b = breaker(1);
        b.record_failure(t0);
        assert_eq!(b.record_failure(t0 + 10 * MS), Transition::None);
        assert_eq!(
            b.state(),
            BreakerState::Open {
                until: t0 + 1000 * MS
            }
        );
    }
}
