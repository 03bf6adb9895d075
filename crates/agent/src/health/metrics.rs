//! The metrics registry: per-station and per-sink counters behind cheap handles, and the
//! queue's figures read from the [`Queue`] at render time.
//!
//! Registration (`station`, `sink`) takes a lock once; every later update through a handle
//! is a relaxed atomic add, so a poll or a delivery never waits for a scrape. Memory is
//! bounded: at most [`MAX_STATIONS`] stations and [`MAX_SINKS`] sinks are registered, and
//! the forward rate keeps [`RATE_SLOTS`] one-second slots per sink. A registration past a
//! bound gets a working handle whose figures are not exported, and is counted in
//! `linesentry_metrics_registrations_refused_total`.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use super::exposition::{Exposition, Kind, Num};
use crate::buffer::Queue;

/// Stations exported at most.
pub const MAX_STATIONS: usize = 4096;
/// Sinks exported at most.
pub const MAX_SINKS: usize = 64;

/// Upper bounds of the poll latency histogram, in microseconds, and as `le` labels (seconds).
const BUCKETS_US: [u64; 10] = [
    1_000, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000,
];
const BUCKET_LABELS: [&str; 10] = [
    "0.001", "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5",
];

/// The forward rate is averaged over this many whole seconds before the scrape.
const RATE_WINDOW_S: u64 = 10;
/// One-second slots kept per sink: more than the window, so a slot being filled now is never
/// one the window reads.
const RATE_SLOTS: usize = 16;

/// The agent's metrics: cheap to clone, shared by every task.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Registry>,
}

struct Registry {
    /// Zero of the forward rate's one-second slots.
    epoch: Instant,
    stations: Mutex<BTreeMap<String, Arc<StationCells>>>,
    sinks: Mutex<BTreeMap<String, Arc<SinkCells>>>,
    refused: AtomicU64,
    queue: OnceLock<Queue>,
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics")
            .field("stations", &lock(&self.inner.stations).len())
            .field("sinks", &lock(&self.inner.sinks).len())
            .field("queue", &self.inner.queue.get())
            .finish()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Metrics {
    pub fn new() -> Self {
        Self {
            inner: Arc::new(Registry {
                epoch: Instant::now(),
                stations: Mutex::new(BTreeMap::new()),
                sinks: Mutex::new(BTreeMap::new()),
                refused: AtomicU64::new(0),
                queue: OnceLock::new(),
            }),
        }
    }

    /// The handle of station `id`, registering it on first use; the same id always gets the
    /// same counters.
    pub fn station(&self, id: &str) -> StationMetrics {
        let cells = self.register(&self.inner.stations, id, MAX_STATIONS, "station");
        StationMetrics { cells }
    }

    /// The handle of the sink named `name` (`"mqtt"`, `"https"`, `"console"`), registering it
    /// on first use.
    pub fn sink(&self, name: &str) -> SinkMetrics {
        let cells = self.register(&self.inner.sinks, name, MAX_SINKS, "sink");
        SinkMetrics {
            cells,
            epoch: self.inner.epoch,
        }
    }

    fn register<T: Default>(
        &self,
        map: &Mutex<BTreeMap<String, Arc<T>>>,
        key: &str,
        max: usize,
        what: &str,
    ) -> Arc<T> {
        let mut map = lock(map);
        if let Some(cells) = map.get(key) {
            return cells.clone();
        }
        let cells = Arc::new(T::default());
        if map.len() < max {
            map.insert(key.to_owned(), cells.clone());
        } else {
            self.inner.refused.fetch_add(1, Relaxed);
            tracing::warn!(
                what,
                key,
                max,
                "metrics: too many registrations; this one is not exported"
            );
        }
        cells
    }

    /// Exports the queue's figures, read from `queue` at every render. The first queue
    /// given stays; later calls are ignored and return `false`.
    pub fn observe_queue(&self, queue: &Queue) -> bool {
        self.inner.queue.set(queue.clone()).is_ok()
    }

    /// The Prometheus text exposition (format 0.0.4) of everything registered.
    pub fn render(&self) -> String {
        let mut exp = Exposition::new();
        self.write(&mut exp, Instant::now());
        exp.finish()
    }

    pub(super) fn write(&self, exp: &mut Exposition, now: Instant) {
        exp.family(
            "linesentry_build_info",
            Kind::Gauge,
            "The running agent's version; always 1.",
        );
        exp.sample(
            "linesentry_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))],
            1u64,
        );
        let stations: Vec<(String, Arc<StationCells>)> = lock(&self.inner.stations)
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        write_stations(exp, &stations);
        let sinks: Vec<(String, Arc<SinkCells>)> = lock(&self.inner.sinks)
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        write_sinks(exp, &sinks, self.inner.epoch, now);
        if let Some(queue) = self.inner.queue.get() {
            write_queue(exp, queue);
        }
        exp.family(
            "linesentry_metrics_registrations_refused_total",
            Kind::Counter,
            "Station or sink registrations beyond the registry's bounds, not exported.",
        );
        exp.sample(
            "linesentry_metrics_registrations_refused_total",
            &[],
            self.inner.refused.load(Relaxed),
        );
    }
}

/// Counters of one station.
#[derive(Debug, Default)]
struct StationCells {
    polls: AtomicU64,
    poll_errors: AtomicU64,
    readings: AtomicU64,
    events: AtomicU64,
    dropped_unconfirmed: AtomicU64,
    last_latency_us: AtomicU64,
    latency: Histogram,
}

/// Per-bucket (not cumulative) counts; the last slot is above every bound.
#[derive(Debug, Default)]
struct Histogram {
    buckets: [AtomicU64; BUCKETS_US.len() + 1],
    sum_us: AtomicU64,
}

impl Histogram {
    fn observe(&self, us: u64) {
        let i = BUCKETS_US
            .iter()
            .position(|&bound| us <= bound)
            .unwrap_or(BUCKETS_US.len());
        self.buckets[i].fetch_add(1, Relaxed);
        self.sum_us.fetch_add(us, Relaxed);
    }
}

/// What a station task records; cheap to clone.
#[derive(Debug, Clone)]
pub struct StationMetrics {
    cells: Arc<StationCells>,
}

impl StationMetrics {
    /// One poll: how long it took, and the errors, readings and events it produced.
    pub fn record_poll(&self, latency: Duration, errors: usize, readings: usize, events: usize) {
        let c = &self.cells;
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        c.polls.fetch_add(1, Relaxed);
        c.poll_errors.fetch_add(errors as u64, Relaxed);
        c.readings.fetch_add(readings as u64, Relaxed);
        c.events.fetch_add(events as u64, Relaxed);
        c.last_latency_us.store(us, Relaxed);
        c.latency.observe(us);
    }

    /// Events this station produced that the buffer never confirmed (and that are lost).
    pub fn dropped_unconfirmed(&self, events: usize) {
        self.cells
            .dropped_unconfirmed
            .fetch_add(events as u64, Relaxed);
    }
}

/// Why a sink did not deliver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureKind {
    /// Worth retrying: connection down, timeout, 5xx. The events stay buffered.
    Transient,
    /// The receiver refused the batch itself (4xx, a refused publish).
    Rejected,
}

impl FailureKind {
    fn label(self) -> &'static str {
        match self {
            FailureKind::Transient => "transient",
            FailureKind::Rejected => "rejected",
        }
    }
}

/// Counters of one sink.
#[derive(Debug, Default)]
struct SinkCells {
    events: AtomicU64,
    batches: AtomicU64,
    transient: AtomicU64,
    rejected: AtomicU64,
    reconnects: AtomicU64,
    dead_lettered: AtomicU64,
    /// Events forwarded per second, by second since the registry's epoch:
    /// `second << 32 | count` in slot `second % RATE_SLOTS`.
    recent: [AtomicU64; RATE_SLOTS],
}

impl SinkCells {
    fn add_recent(&self, second: u64, events: u64) {
        let second = second & 0xFFFF_FFFF;
        let slot = &self.recent[(second % RATE_SLOTS as u64) as usize];
        let _ = slot.fetch_update(Relaxed, Relaxed, |packed| {
            let count = if packed >> 32 == second {
                packed & 0xFFFF_FFFF
            } else {
                0
            };
            Some(second << 32 | (count + events).min(0xFFFF_FFFF))
        });
    }

    /// Events per second over the whole seconds of the window before `second` (fewer at
    /// start-up).
    fn rate(&self, second: u64) -> f64 {
        let span = second.min(RATE_WINDOW_S);
        if span == 0 {
            return 0.0;
        }
        let from = (second - span) & 0xFFFF_FFFF;
        let to = (second - 1) & 0xFFFF_FFFF;
        let events: u64 = self
            .recent
            .iter()
            .map(|slot| slot.load(Relaxed))
            .filter(|packed| (from..=to).contains(&(packed >> 32)))
            .map(|packed| packed & 0xFFFF_FFFF)
            .sum();
        events as f64 / span as f64
    }
}

/// What a forwarder records; cheap to clone.
#[derive(Debug, Clone)]
pub struct SinkMetrics {
    cells: Arc<SinkCells>,
    epoch: Instant,
}

impl SinkMetrics {
    /// One batch (or message) the receiver took, holding `events` events.
    pub fn forwarded(&self, events: usize) {
        self.forwarded_at(events, Instant::now());
    }

    fn forwarded_at(&self, events: usize, now: Instant) {
        let c = &self.cells;
        c.events.fetch_add(events as u64, Relaxed);
        c.batches.fetch_add(1, Relaxed);
        c.add_recent(
            now.saturating_duration_since(self.epoch).as_secs(),
            events as u64,
        );
    }

    /// One delivery attempt that failed.
    pub fn failure(&self, kind: FailureKind) {
        let cell = match kind {
            FailureKind::Transient => &self.cells.transient,
            FailureKind::Rejected => &self.cells.rejected,
        };
        cell.fetch_add(1, Relaxed);
    }

    /// The sink opened a new connection after losing one.
    pub fn reconnect(&self) {
        self.cells.reconnects.fetch_add(1, Relaxed);
    }

    /// Events moved to the dead-letter table after the receiver rejected them.
    pub fn dead_lettered(&self, events: usize) {
        self.cells.dead_lettered.fetch_add(events as u64, Relaxed);
    }
}

type Station = (String, Arc<StationCells>);
/// A counter family: name, help and the cell it reads.
type Counter<T> = (&'static str, &'static str, fn(&T) -> &AtomicU64);

fn write_stations(exp: &mut Exposition, stations: &[Station]) {
    let counters: [Counter<StationCells>; 5] = [
        (
            "linesentry_station_polls_total",
            "Polls of the station's source.",
            |c| &c.polls,
        ),
        (
            "linesentry_station_poll_errors_total",
            "Errors the station's polls reported (a poll may report several).",
            |c| &c.poll_errors,
        ),
        (
            "linesentry_station_readings_total",
            "Readings the station's polls returned.",
            |c| &c.readings,
        ),
        (
            "linesentry_station_events_total",
            "Events the station's rules produced.",
            |c| &c.events,
        ),
        (
            "linesentry_station_events_dropped_unconfirmed_total",
            "Events of the station the buffer never confirmed; they are lost.",
            |c| &c.dropped_unconfirmed,
        ),
    ];
    for (name, help, cell) in counters {
        exp.family(name, Kind::Counter, help);
        for (id, cells) in stations {
            exp.sample(name, &[("station", id)], cell(cells).load(Relaxed));
        }
    }
    let name = "linesentry_station_last_poll_duration_seconds";
    exp.family(name, Kind::Gauge, "How long the station's last poll took.");
    for (id, cells) in stations {
        exp.sample(
            name,
            &[("station", id)],
            seconds_from_us(cells.last_latency_us.load(Relaxed)),
        );
    }
    let name = "linesentry_station_poll_duration_seconds";
    exp.family(name, Kind::Histogram, "How long the station's polls take.");
    let bucket = format!("{name}_bucket");
    for (id, cells) in stations {
        let mut cumulative = 0u64;
        for (i, le) in BUCKET_LABELS.iter().enumerate() {
            cumulative += cells.latency.buckets[i].load(Relaxed);
            exp.sample(&bucket, &[("station", id), ("le", le)], cumulative);
        }
        cumulative += cells.latency.buckets[BUCKETS_US.len()].load(Relaxed);
        exp.sample(&bucket, &[("station", id), ("le", "+Inf")], cumulative);
        exp.sample(
            &format!("{name}_sum"),
            &[("station", id)],
            seconds_from_us(cells.latency.sum_us.load(Relaxed)),
        );
        exp.sample(&format!("{name}_count"), &[("station", id)], cumulative);
    }
}

fn seconds_from_us(us: u64) -> f64 {
    us as f64 / 1e6
}

type Sink = (String, Arc<SinkCells>);

fn write_sinks(exp: &mut Exposition, sinks: &[Sink], epoch: Instant, now: Instant) {
    let counters: [Counter<SinkCells>; 4] = [
        (
            "linesentry_forward_events_total",
            "Events the sink's receiver took.",
            |c| &c.events,
        ),
        (
            "linesentry_forward_batches_total",
            "Batches (or messages) the sink's receiver took.",
            |c| &c.batches,
        ),
        (
            "linesentry_forward_reconnects_total",
            "New connections the sink opened after losing one.",
            |c| &c.reconnects,
        ),
        (
            "linesentry_forward_dead_lettered_total",
            "Events moved to the dead-letter table after the receiver rejected them.",
            |c| &c.dead_lettered,
        ),
    ];
    for (name, help, cell) in counters {
        exp.family(name, Kind::Counter, help);
        for (sink, cells) in sinks {
            exp.sample(name, &[("sink", sink)], cell(cells).load(Relaxed));
        }
    }
    let name = "linesentry_forward_failures_total";
    exp.family(
        name,
        Kind::Counter,
        "Failed deliveries by reason: transient (retried) or rejected by the receiver.",
    );
    for (sink, cells) in sinks {
        for kind in [FailureKind::Transient, FailureKind::Rejected] {
            let cell = match kind {
                FailureKind::Transient => &cells.transient,
                FailureKind::Rejected => &cells.rejected,
            };
            exp.sample(
                name,
                &[("sink", sink), ("reason", kind.label())],
                cell.load(Relaxed),
            );
        }
    }
    let name = "linesentry_forward_events_per_second";
    exp.family(
        name,
        Kind::Gauge,
        "Events forwarded per second over the last 10 whole seconds.",
    );
    let second = now.saturating_duration_since(epoch).as_secs();
    for (sink, cells) in sinks {
        exp.sample(name, &[("sink", sink)], cells.rate(second));
    }
}

fn write_queue(exp: &mut Exposition, queue: &Queue) {
    let stats = queue.stats();
    let age = queue.oldest_age().unwrap_or_default().as_secs_f64();
    let gauges: [(&str, &'static str, Num); 6] = [
        (
            "linesentry_queue_events",
            "Events in the buffer not yet acknowledged by a forwarder.",
            stats.depth.into(),
        ),
        (
            "linesentry_queue_bytes",
            "Bytes of the buffered events, as counted against the quota.",
            stats.bytes.into(),
        ),
        (
            "linesentry_queue_quota_bytes",
            "The buffer's byte quota (buffer.quota_mib).",
            stats.quota_bytes.into(),
        ),
        (
            "linesentry_queue_file_bytes",
            "Size of the buffer's store file.",
            stats.file_bytes.into(),
        ),
        (
            "linesentry_queue_dead_letters",
            "Events held in the dead-letter table after a receiver rejected them.",
            stats.dead_letters.into(),
        ),
        (
            "linesentry_queue_oldest_age_seconds",
            "Age of the oldest buffered event; 0 when the buffer is empty.",
            age.into(),
        ),
    ];
    for (name, help, value) in gauges {
        exp.family(name, Kind::Gauge, help);
        exp.sample(name, &[], value);
    }
    let counters: [(&str, &'static str, u64); 4] = [
        (
            "linesentry_queue_dropped_events_total",
            "Events evicted because the buffer was full, over the store's life.",
            stats.dropped_total,
        ),
        (
            "linesentry_queue_commits_total",
            "Store commits since the agent started.",
            stats.commits,
        ),
        (
            "linesentry_queue_unsynced_commits_total",
            "Store commits of acks alone that skipped their fsync; the next synced commit, at most 1 s later, makes them durable.",
            stats.unsynced_commits,
        ),
        (
            "linesentry_queue_failed_commits_total",
            "Store commits that failed since the agent started.",
            stats.failed_commits,
        ),
    ];
    for (name, help, value) in counters {
        exp.family(name, Kind::Counter, help);
        exp.sample(name, &[], value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_small_registry_renders_exactly_these_lines() {
        let metrics = Metrics::new();
        let press = metrics.station("press-1");
        press.record_poll(Duration::from_millis(3), 1, 20, 2);
        press.record_poll(Duration::from_millis(2500), 0, 20, 0);
        press.record_poll(Duration::from_secs(4), 0, 0, 0);
        press.dropped_unconfirmed(5);
        let mqtt = metrics.sink("mqtt");
        let epoch = metrics.inner.epoch;
        mqtt.forwarded_at(30, epoch + Duration::from_millis(12_500));
        mqtt.forwarded_at(20, epoch + Duration::from_millis(14_100));
        mqtt.failure(FailureKind::Transient);
        mqtt.failure(FailureKind::Transient);
        mqtt.failure(FailureKind::Rejected);
        mqtt.reconnect();
        mqtt.dead_lettered(7);

        let mut exp = Exposition::new();
        metrics.write(&mut exp, epoch + Duration::from_secs(15));
        let expected = concat!(
            "# HELP linesentry_build_info The running agent's version; always 1.\n",
            "# TYPE linesentry_build_info gauge\n",
            "linesentry_build_info{version=\"VERSION\"} 1\n",
            "# HELP linesentry_station_polls_total Polls of the station's source.\n",
            "# TYPE linesentry_station_polls_total counter\n",
            "linesentry_station_polls_total{station=\"press-1\"} 3\n",
            "# HELP linesentry_station_poll_errors_total Errors the station's polls reported (a poll may report several).\n",
            "# TYPE linesentry_station_poll_errors_total counter\n",
            "linesentry_station_poll_errors_total{station=\"press-1\"} 1\n",
            "# HELP linesentry_station_readings_total Readings the station's polls returned.\n",
            "# TYPE linesentry_station_readings_total counter\n",
            "linesentry_station_readings_total{station=\"press-1\"} 40\n",
            "# HELP linesentry_station_events_total Events the station's rules produced.\n",
            "# TYPE linesentry_station_events_total counter\n",
            "linesentry_station_events_total{station=\"press-1\"} 2\n",
            "# HELP linesentry_station_events_dropped_unconfirmed_total Events of the station the buffer never confirmed; they are lost.\n",
            "# TYPE linesentry_station_events_dropped_unconfirmed_total counter\n",
            "linesentry_station_events_dropped_unconfirmed_total{station=\"press-1\"} 5\n",
            "# HELP linesentry_station_last_poll_duration_seconds How long the station's last poll took.\n",
            "# TYPE linesentry_station_last_poll_duration_seconds gauge\n",
            "linesentry_station_last_poll_duration_seconds{station=\"press-1\"} 4\n",
            "# HELP linesentry_station_poll_duration_seconds How long the station's polls take.\n",
            "# TYPE linesentry_station_poll_duration_seconds histogram\n",
            "linesentry_station_poll_duration_seconds_bucket{station=\"press-1\",le=\"0.001\"} 0\n",
            "linesentry_station_poll_duration_seconds_bucket{station=\"press-1\",le=\"0.005\"} 1\n",
            "linesentry_station_poll_duration_seconds_bucket{station=\"press-1\",le=\"0.01\"} 1\n",
            "linesentry_station_poll_duration_seconds_bucket{station=\"press-1\",le=\"0.025\"} 1\n",
            "linesentry_station_poll_duration_seconds_bucket{station=\"press-1\",le=\"0.05\"} 1\n",
            "linesentry_station_poll_duration_seconds_bucket{station=\"press-1\",le=\"0.1\"} 1\n",
            "linesentry_station_poll_duration_seconds_bucket{station=\"press-1\",le=\"0.25\"} 1\n",
            "linesentry_station_poll_duration_seconds_bucket{station=\"press-1\",le=\"0.5\"} 1\n",
            "linesentry_station_poll_duration_seconds_bucket{station=\"press-1\",le=\"1\"} 1\n",
            "linesentry_station_poll_duration_seconds_bucket{station=\"press-1\",le=\"2.5\"} 2\n",
            "linesentry_station_poll_duration_seconds_bucket{station=\"press-1\",le=\"+Inf\"} 3\n",
            "linesentry_station_poll_duration_seconds_sum{station=\"press-1\"} 6.503\n",
            "linesentry_station_poll_duration_seconds_count{station=\"press-1\"} 3\n",
            "# HELP linesentry_forward_events_total Events the sink's receiver took.\n",
            "# TYPE linesentry_forward_events_total counter\n",
            "linesentry_forward_events_total{sink=\"mqtt\"} 50\n",
            "# HELP linesentry_forward_batches_total Batches (or messages) the sink's receiver took.\n",
            "# TYPE linesentry_forward_batches_total counter\n",
            "linesentry_forward_batches_total{sink=\"mqtt\"} 2\n",
            "# HELP linesentry_forward_reconnects_total New connections the sink opened after losing one.\n",
            "# TYPE linesentry_forward_reconnects_total counter\n",
            "linesentry_forward_reconnects_total{sink=\"mqtt\"} 1\n",
            "# HELP linesentry_forward_dead_lettered_total Events moved to the dead-letter table after the receiver rejected them.\n",
            "# TYPE linesentry_forward_dead_lettered_total counter\n",
            "linesentry_forward_dead_lettered_total{sink=\"mqtt\"} 7\n",
            "# HELP linesentry_forward_failures_total Failed deliveries by reason: transient (retried) or rejected by the receiver.\n",
            "# TYPE linesentry_forward_failures_total counter\n",
            "linesentry_forward_failures_total{sink=\"mqtt\",reason=\"transient\"} 2\n",
            "linesentry_forward_failures_total{sink=\"mqtt\",reason=\"rejected\"} 1\n",
            "# HELP linesentry_forward_events_per_second Events forwarded per second over the last 10 whole seconds.\n",
            "# TYPE linesentry_forward_events_per_second gauge\n",
            "linesentry_forward_events_per_second{sink=\"mqtt\"} 5\n",
            "# HELP linesentry_metrics_registrations_refused_total Station or sink registrations beyond the registry's bounds, not exported.\n",
            "# TYPE linesentry_metrics_registrations_refused_total counter\n",
            "linesentry_metrics_registrations_refused_total 0\n",
        )
        .replace("VERSION", env!("CARGO_PKG_VERSION"));
        assert_eq!(exp.finish(), expected);
    }

    #[test]
    fn station_ids_are_escaped_in_labels_and_sorted() {
        let metrics = Metrics::new();
        metrics
            .station("z\"quote\\d\nline")
            .record_poll(Duration::ZERO, 0, 1, 0);
        metrics.station("a").record_poll(Duration::ZERO, 0, 1, 0);
        let text = metrics.render();
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("linesentry_station_readings_total"))
            .collect();
        assert_eq!(
            lines,
            [
                "linesentry_station_readings_total{station=\"a\"} 1",
                "linesentry_station_readings_total{station=\"z\\\"quote\\\\d\\nline\"} 1",
            ]
        );
    }

    #[test]
    fn the_same_id_gets_the_same_counters() {
        let metrics = Metrics::new();
        metrics
            .station("press-1")
            .record_poll(Duration::ZERO, 0, 1, 0);
        metrics
            .station("press-1")
            .record_poll(Duration::ZERO, 0, 1, 0);
        assert!(metrics
            .render()
            .contains("linesentry_station_polls_total{station=\"press-1\"} 2\n"));
    }

    #[test]
    fn registrations_past_the_bound_work_but_are_counted_and_not_exported() {
        let metrics = Metrics::new();
        for i in 0..MAX_SINKS {
            metrics.sink(&format!("s{i}"));
        }
        let extra = metrics.sink("one-too-many");
        extra.forwarded(3);
        let text = metrics.render();
        assert!(!text.contains("one-too-many"), "{text}");
        assert!(
            text.contains("linesentry_metrics_registrations_refused_total 1\n"),
            "{text}"
        );
    }

    #[test]
    fn the_forward_rate_counts_only_the_last_ten_whole_seconds() {
        let metrics = Metrics::new();
        let sink = metrics.sink("https");
        let epoch = metrics.inner.epoch;
        let at = |ms| epoch + Duration::from_millis(ms);
        sink.forwarded_at(1000, at(1_000)); // second 1: outside the window at 20 s
        sink.forwarded_at(40, at(10_000)); // second 10
        sink.forwarded_at(60, at(19_999)); // second 19
        sink.forwarded_at(500, at(20_001)); // second 20: not whole yet
        let rate = sink.cells.rate(20);
        assert!((rate - 10.0).abs() < 1e-9, "{rate}");
        // Slots are reused 16 seconds later: what was there is not counted again.
        sink.forwarded_at(1, at(26_000)); // second 26 reuses the slot of second 10
        let rate = sink.cells.rate(27);
        assert!((rate - 56.1).abs() < 1e-9, "{rate}");
        // Nothing in the window.
        assert!(sink.cells.rate(100).abs() < 1e-12);
        // At start-up the window is what has passed.
        assert!(sink.cells.rate(0).abs() < 1e-12);
    }
}
