//! Protocol state of one OPC UA station, pure and clock-free (callers pass `Instant`s): the
//! bounded inbox subscriptions fill and polls drain, the current value of every subscribed
//! tag, the book of bad nodes, the subscription watchdog and the reconnect backoff.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use opcua::types::DataValue;

use crate::reading::Reading;
use linesentry_event::Timestamp;

/// One data change delivered by a subscription, waiting for the next poll.
#[derive(Debug, Clone)]
pub(crate) struct Notified {
    /// Index of the tag in the station's plan.
    pub(crate) tag: usize,
    pub(crate) value: DataValue,
    pub(crate) received: Timestamp,
}

/// Data changes between two polls. Bounded: when full, the oldest change is dropped and
/// counted (a newer value of the same tag usually follows it); the count is reported with the
/// next poll, so nothing is lost silently. Blocking is not an option: the notification
/// callback runs inside the session's event loop.
#[derive(Debug)]
pub(crate) struct Inbox {
    queue: VecDeque<Notified>,
    capacity: usize,
    dropped: u64,
}

impl Inbox {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            queue: VecDeque::with_capacity(capacity.min(1024)),
            capacity: capacity.max(1),
            dropped: 0,
        }
    }

    pub(crate) fn push(&mut self, item: Notified) {
        if self.queue.len() == self.capacity {
            self.queue.pop_front();
            self.dropped += 1;
        }
        self.queue.push_back(item);
    }

    /// Everything queued, oldest first, and how many changes were dropped since the last drain.
    pub(crate) fn drain(&mut self) -> (Vec<Notified>, u64) {
        let dropped = std::mem::take(&mut self.dropped);
        (self.queue.drain(..).collect(), dropped)
    }

    pub(crate) fn len(&self) -> usize {
        self.queue.len()
    }
}

/// The last value a subscription delivered for each tag: what the server holds now, since
/// a subscription reports changes only. Every poll hands the rules the value of every tag it
/// holds, delivered in this poll or not, as a Read in polling mode would; so heartbeats,
/// debounce, one quality check per part and the other rules that look at values that do not
/// change behave the same in both acquisition modes. Bounded: one reading per tag.
#[derive(Debug)]
pub(crate) struct Current {
    held: Vec<Option<Reading>>,
}

impl Current {
    pub(crate) fn new(tags: usize) -> Self {
        Self {
            held: vec![None; tags],
        }
    }

    /// The value tag `index` now has (a new delivery, or `None` when it has none that can
    /// be used: a refused node, a value that does not decode).
    pub(crate) fn set(&mut self, index: usize, reading: Option<&Reading>) {
        if let Some(slot) = self.held.get_mut(index) {
            *slot = reading.cloned();
        }
    }

    /// The held readings of the tags for which `skip(index)` is false, stamped as received
    /// at `now` (the source time stays the server's).
    pub(crate) fn held_except(&self, skip: impl Fn(usize) -> bool, now: Timestamp) -> Vec<Reading> {
        self.held
            .iter()
            .enumerate()
            .filter(|(i, _)| !skip(*i))
            .filter_map(|(_, r)| r.as_ref())
            .map(|r| Reading {
                received: now,
                ..r.clone()
            })
            .collect()
    }

    /// Forgets every value: the session is gone, so nothing is known about the server now.
    pub(crate) fn clear(&mut self) {
        self.held.iter_mut().for_each(|slot| *slot = None);
    }
}

/// Tags whose node turned out to be wrong. Each is reported once, then skipped: asking again
/// every poll would flood the log and the event stream with the same configuration error.
#[derive(Debug, Clone)]
pub(crate) struct NodeBook {
    skipped: Vec<bool>,
}

impl NodeBook {
    pub(crate) fn new(tags: usize) -> Self {
        Self {
            skipped: vec![false; tags],
        }
    }

    /// Marks the tag bad; true only the first time, when it must be reported.
    pub(crate) fn mark_bad(&mut self, tag: usize) -> bool {
        match self.skipped.get_mut(tag) {
            Some(s) if !*s => {
                *s = true;
                true
            }
            _ => false,
        }
    }

    pub(crate) fn is_skipped(&self, tag: usize) -> bool {
        self.skipped.get(tag).copied().unwrap_or(true)
    }

    /// Tags still worth asking for.
    pub(crate) fn active(&self) -> impl Iterator<Item = usize> + '_ {
        self.skipped
            .iter()
            .enumerate()
            .filter(|(_, s)| !**s)
            .map(|(i, _)| i)
    }
}

/// Watches that a subscription delivers something — data or keep-alive — at least once every
/// `limit`. A server that lost the subscription (restart, lifetime expiry, a bug) while the
/// connection stayed up would otherwise leave the station silent forever.
#[derive(Debug, Clone)]
pub(crate) struct Watchdog {
    limit: Duration,
    last: Instant,
}

impl Watchdog {
    /// `limit` is the publishing interval times the number of intervals tolerated; it must
    /// exceed the keep-alive period (publishing interval × max keep-alive count).
    pub(crate) fn new(publishing_interval: Duration, intervals: u32, now: Instant) -> Self {
        Self {
            limit: publishing_interval.saturating_mul(intervals.max(1)),
            last: now,
        }
    }

    /// Something arrived (data change, keep-alive, status change) or the subscription was
    /// (re)created.
    pub(crate) fn feed(&mut self, now: Instant) {
        if now > self.last {
            self.last = now;
        }
    }

    pub(crate) fn expired(&self, now: Instant) -> bool {
        self.silent_for(now) > self.limit
    }

    /// Time since it was last fed.
    pub(crate) fn silent_for(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.last)
    }

    pub(crate) fn limit(&self) -> Duration {
        self.limit
    }
}

/// Whether the server's clock (`ServerStatus.CurrentTime`) runs: a running server updates it
/// continuously; one stopped in its process (whose connection is still open) does not.
#[derive(Debug, Default)]
pub(crate) struct ServerClock {
    /// The value read, when, and on which connection.
    last: Option<(String, Instant, u64)>,
}

impl ServerClock {
    /// Reads closer together than this may see the same value from a running server.
    pub(crate) const MIN_GAP: Duration = Duration::from_millis(1500);

    /// Takes a CurrentTime read at `now` on `connection`; returns how long it has stood
    /// still when it has the value of a read at least [`Self::MIN_GAP`] earlier on the same
    /// connection.
    pub(crate) fn observe(
        &mut self,
        value: &str,
        now: Instant,
        connection: u64,
    ) -> Option<Duration> {
        match &self.last {
            Some((last, at, on)) if *on == connection && last == value => {
                let still = now.saturating_duration_since(*at);
                (still >= Self::MIN_GAP).then_some(still)
            }
            _ => {
                self.last = Some((value.to_owned(), now, connection));
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(tag: usize) -> Notified {
        Notified {
            tag,
            value: DataValue::default(),
            received: Timestamp::from_micros(0),
        }
    }

    #[test]
    fn a_full_inbox_drops_the_oldest_change_and_counts_it_once() {
        let mut inbox = Inbox::new(3);
        for tag in 0..5 {
            inbox.push(item(tag));
        }
        let (items, dropped) = inbox.drain();
        assert_eq!(items.iter().map(|i| i.tag).collect::<Vec<_>>(), [2, 3, 4]);
        assert_eq!(dropped, 2);
        let (items, dropped) = inbox.drain();
        assert!(items.is_empty());
        assert_eq!(dropped, 0);
    }

    fn reading(tag: &str, value: i64, received: i64) -> Reading {
        Reading {
            station_id: "st-1".into(),
            tag: tag.into(),
            value: crate::reading::Value::Int(value),
            quality: crate::reading::Quality::Good,
            source_time: Some(Timestamp::from_micros(5)),
            received: Timestamp::from_micros(received),
        }
    }

    #[test]
    fn held_values_are_handed_again_for_every_tag_not_delivered_now() {
        let mut current = Current::new(3);
        current.set(0, Some(&reading("a", 1, 10)));
        current.set(2, Some(&reading("c", 3, 10)));
        let held = current.held_except(|i| i == 2, Timestamp::from_micros(99));
        assert_eq!(held.len(), 1, "c was delivered now, b never was");
        assert_eq!(&*held[0].tag, "a");
        assert_eq!(held[0].received, Timestamp::from_micros(99));
        assert_eq!(held[0].source_time, Some(Timestamp::from_micros(5)));
        current.set(0, None);
        assert_eq!(
            current
                .held_except(|_| false, Timestamp::from_micros(100))
                .len(),
            1
        );
        current.clear();
        assert!(current
            .held_except(|_| false, Timestamp::from_micros(101))
            .is_empty());
    }

    #[test]
    fn a_bad_node_is_reported_once_and_skipped_afterwards() {
        let mut book = NodeBook::new(3);
        assert!(book.mark_bad(1));
        assert!(!book.mark_bad(1));
        assert!(book.is_skipped(1));
        assert_eq!(book.active().collect::<Vec<_>>(), [0, 2]);
    }

    #[test]
    fn the_watchdog_fires_only_after_the_whole_silence_limit() {
        let t0 = Instant::now();
        let mut dog = Watchdog::new(Duration::from_millis(100), 15, t0);
        assert_eq!(dog.limit(), Duration::from_millis(1500));
        assert!(!dog.expired(t0 + Duration::from_millis(1500)));
        assert!(dog.expired(t0 + Duration::from_millis(1501)));
        dog.feed(t0 + Duration::from_millis(1400));
        assert!(!dog.expired(t0 + Duration::from_millis(2800)));
        assert!(dog.expired(t0 + Duration::from_millis(2901)));
    }

    #[test]
    fn a_server_clock_that_stands_still_on_one_connection_is_noticed_after_the_gap() {
        let t0 = Instant::now();
        let mut clock = ServerClock::default();
        assert_eq!(clock.observe("10:00:00", t0, 1), None);
        // Too soon to tell.
        assert_eq!(
            clock.observe("10:00:00", t0 + Duration::from_millis(500), 1),
            None
        );
        assert_eq!(
            clock.observe("10:00:00", t0 + Duration::from_secs(2), 1),
            Some(Duration::from_secs(2))
        );
        // A running clock, and a new connection, start over.
        assert_eq!(
            clock.observe("10:00:05", t0 + Duration::from_secs(5), 1),
            None
        );
        assert_eq!(
            clock.observe("10:00:05", t0 + Duration::from_secs(9), 2),
            None
        );
        assert_eq!(
            clock.observe("10:00:05", t0 + Duration::from_secs(10), 2),
            None
        );
    }
}
