//! Bounded windows for burst and SPC rules.

use std::collections::VecDeque;

use uuid::Uuid;

use linesentry_event::Timestamp;

/// Occurrences within a sliding time window, forming episodes: an episode starts with the
/// first occurrence in an empty window and ends when the window empties again. Every
/// occurrence of an episode shares its correlation id; the burst is reported once per episode.
#[derive(Debug, Default)]
pub(super) struct Burst {
    /// (time in µs, a small label such as an exception code)
    times: VecDeque<(i64, u8)>,
    id: Option<Uuid>,
    reported: bool,
}

/// Occurrences kept per window at most, so a flood cannot grow memory.
const MAX_KEPT: usize = 4096;

impl Burst {
    /// Records one occurrence at `now`. Returns the count in the window when this occurrence
    /// reaches `threshold` for the first time in the episode.
    pub(super) fn add(
        &mut self,
        now: Timestamp,
        window_us: i64,
        threshold: usize,
        label: u8,
    ) -> Option<usize> {
        let now = now.as_micros();
        while self.times.front().is_some_and(|(t, _)| now - t > window_us) {
            self.times.pop_front();
        }
        if self.times.is_empty() {
            self.id = Some(Uuid::now_v7());
            self.reported = false;
        }
        if self.times.len() == MAX_KEPT {
            self.times.pop_front();
        }
        self.times.push_back((now, label));
        if self.times.len() >= threshold.max(1) && !self.reported {
            self.reported = true;
            return Some(self.times.len());
        }
        None
    }

    /// Correlation id of the current episode.
    pub(super) fn id(&self) -> Uuid {
        self.id.unwrap_or_default()
    }

    pub(super) fn len(&self) -> usize {
        self.times.len()
    }

    /// Distinct labels in the window, ascending.
    pub(super) fn members(&self) -> Vec<u8> {
        let mut labels: Vec<u8> = self.times.iter().map(|(_, l)| *l).collect();
        labels.sort_unstable();
        labels.dedup();
        labels
    }
}

/// The last `m` outcomes; counts the failures among them.
#[derive(Debug)]
pub(super) struct NofM {
    last: VecDeque<bool>,
    m: usize,
}

impl NofM {
    pub(super) fn new(m: usize) -> Self {
        Self {
            last: VecDeque::with_capacity(m.max(1)),
            m: m.max(1),
        }
    }

    /// Adds an outcome (`true` = failed); returns the failures in the window.
    pub(super) fn push(&mut self, failed: bool) -> usize {
        if self.last.len() == self.m {
            self.last.pop_front();
        }
        self.last.push_back(failed);
        self.last.iter().filter(|f| **f).count()
    }

    pub(super) fn len(&self) -> usize {
        self.last.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: i64) -> Timestamp {
        Timestamp::from_micros(s * 1_000_000)
    }

    #[test]
    fn a_burst_is_reported_once_per_episode_and_a_quiet_window_starts_a_new_one() {
        let mut b = Burst::default();
        let w = 300 * 1_000_000;
        assert_eq!(b.add(at(0), w, 3, 0), None);
        let first = b.id();
        assert_eq!(b.add(at(10), w, 3, 0), None);
        assert_eq!(b.add(at(20), w, 3, 0), Some(3));
        assert_eq!(b.add(at(30), w, 3, 0), None, "once per episode");
        assert_eq!(b.id(), first);
        // 10 minutes later the window is empty: a new episode.
        assert_eq!(b.add(at(700), w, 3, 0), None);
        assert_ne!(b.id(), first);
    }

    #[test]
    fn occurrences_outside_the_window_do_not_count() {
        let mut b = Burst::default();
        let w = 60 * 1_000_000;
        for s in [0, 100, 200, 300] {
            assert_eq!(b.add(at(s), w, 2, 0), None);
        }
        assert_eq!(b.len(), 1);
    }

    #[test]
    fn n_of_m_counts_failures_in_the_last_m_only() {
        let mut w = NofM::new(5);
        for f in [true, true, false, false, false] {
            w.push(f);
        }
        assert_eq!(w.push(false), 1, "the first failure left the window");
        assert_eq!(w.len(), 5);
    }
}
