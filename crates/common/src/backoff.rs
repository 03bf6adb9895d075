//! Capped exponential backoff with jitter, pure and deterministic for a seed: reconnects of
//! stations, brokers and databases, retried commits, the breaker's open time.
//!
//! The delay before attempt `n` (0-based) grows as `initial * multiplier^n` up to `max`,
//! then [`Jitter`] spreads it so that peers that failed together do not retry together.

use std::time::Duration;

/// How each delay is spread around its (capped) exponential value `d`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Jitter {
    /// Uniform in `[d/2, d]` ("equal jitter"): never longer than `d`, never under half.
    Half,
    /// Uniform in `d * [1 - f, 1 + f]` with `f` in 0..=1, never longer than `max`.
    Spread(f64),
}

/// The shape of a backoff sequence.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BackoffPolicy {
    /// First delay.
    pub initial: Duration,
    /// Longest delay, jitter included.
    pub max: Duration,
    /// Growth per attempt; below 1 counts as 1.
    pub multiplier: f64,
    pub jitter: Jitter,
}

impl BackoffPolicy {
    /// Doubling from `initial` to `max`, each delay in its upper half.
    pub const fn doubling(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max,
            multiplier: 2.0,
            jitter: Jitter::Half,
        }
    }
}

/// A running backoff sequence. Deterministic for a given seed ([`Backoff::seeded`]).
#[derive(Debug, Clone)]
pub struct Backoff {
    policy: BackoffPolicy,
    attempt: u32,
    rng: fastrand::Rng,
}

impl Backoff {
    /// Doubling from `initial` to `max`, each delay uniform in its upper half, seeded from
    /// the process's random source.
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self::seeded(BackoffPolicy::doubling(initial, max), fastrand::u64(..))
    }

    /// The sequence of `policy`, its jitter drawn from a generator seeded with `seed`.
    pub fn seeded(policy: BackoffPolicy, seed: u64) -> Self {
        Self {
            policy,
            attempt: 0,
            rng: fastrand::Rng::with_seed(seed),
        }
    }

    /// The delay before the next attempt; each call advances the sequence.
    pub fn next_delay(&mut self) -> Duration {
        let p = self.policy;
        let max = p.max.as_secs_f64();
        let exponent = i32::try_from(self.attempt).unwrap_or(i32::MAX);
        let ceiling = (p.initial.as_secs_f64() * p.multiplier.max(1.0).powi(exponent)).min(max);
        self.attempt = self.attempt.saturating_add(1);
        let delay = match p.jitter {
            Jitter::Half => ceiling * (0.5 + 0.5 * self.rng.f64()),
            Jitter::Spread(f) => ceiling * (1.0 + f.clamp(0.0, 1.0) * (2.0 * self.rng.f64() - 1.0)),
        };
        // `min` also maps NaN (never produced from finite inputs) to `max`.
        Duration::from_secs_f64(delay.clamp(0.0, max).min(max))
    }

    /// Delays handed out since the last reset: failures in a row.
    pub fn attempts(&self) -> u32 {
        self.attempt
    }

    /// Starts the sequence over (after a success).
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn half_jitter_delays_stay_in_the_upper_half_grow_to_the_cap_and_reset() {
        let mut b = Backoff::new(100 * MS, 1000 * MS);
        let first = b.next_delay();
        assert!((50 * MS..=100 * MS).contains(&first), "{first:?}");
        for _ in 0..20 {
            assert!(b.next_delay() <= 1000 * MS);
        }
        assert!(b.next_delay() >= 500 * MS);
        assert_eq!(b.attempts(), 22);
        b.reset();
        assert!(b.next_delay() <= 100 * MS);
    }

    #[test]
    fn without_jitter_the_sequence_is_exact_and_capped() {
        let policy = BackoffPolicy {
            initial: 200 * MS,
            max: 1000 * MS,
            multiplier: 2.0,
            jitter: Jitter::Spread(0.0),
        };
        let mut b = Backoff::seeded(policy, 1);
        let got: Vec<u128> = (0..5).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(got, [200, 400, 800, 1000, 1000]);
    }

    #[test]
    fn an_overflowing_exponent_still_gives_the_cap() {
        let mut b = Backoff::seeded(
            BackoffPolicy {
                jitter: Jitter::Spread(0.0),
                ..BackoffPolicy::doubling(200 * MS, 30_000 * MS)
            },
            1,
        );
        b.attempt = u32::MAX - 1;
        assert_eq!(b.next_delay(), 30_000 * MS);
        assert_eq!(b.next_delay(), 30_000 * MS);
    }

    #[test]
    fn spread_jitter_stays_within_its_fraction_and_never_exceeds_max() {
        let policy = BackoffPolicy {
            initial: 1000 * MS,
            max: 1100 * MS,
            multiplier: 1.0,
            jitter: Jitter::Spread(0.2),
        };
        let mut b = Backoff::seeded(policy, 42);
        for _ in 0..200 {
            let d = b.next_delay();
            assert!((800 * MS..=1100 * MS).contains(&d), "{d:?}");
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_delays() {
        let policy = BackoffPolicy::doubling(100 * MS, 10_000 * MS);
        let run = |seed| {
            let mut b = Backoff::seeded(policy, seed);
            (0..8).map(|_| b.next_delay()).collect::<Vec<_>>()
        };
        assert_eq!(run(7), run(7));
        assert_ne!(run(7), run(8));
    }
}
