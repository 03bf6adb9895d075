//! Liveness: is every part of the agent still making progress?
//!
//! Each long-running component (a station task, a forwarder) registers a [`Heartbeat`] with
//! the longest silence it may keep, and beats whenever it goes round its loop. [`Liveness::check`]
//! is not ok when:
//! - a component has not beaten for longer than its maximum silence: it is hung (a device
//!   call without a timeout, a deadlock), which is what the systemd watchdog is for;
//! - the queue's failed-commit counter went up within the last `stall_after`
//!   ([`Liveness::default_silence`]): events may not be durable.
//!
//! A component can also say it is *degraded* (broker unreachable, device refusing): that
//! is listed among the reasons but leaves `ok` alone, because a restart would not fix it
//! and the buffer exists to ride such outages out.
//!
//! A [`Heartbeat`] that is dropped stays registered and so goes silent: a task that panicked
//! or returned early shows up as stalled. A component that ends on purpose calls
//! [`Heartbeat::retire`].

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use super::exposition::{Exposition, Kind};
use crate::buffer::Queue;

/// The verdict of one check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    /// `false` when a component stalled or store commits failed recently.
    pub ok: bool,
    /// One line per problem: stalls and commit failures first, then degraded components.
    /// Not empty when `ok` is false; may hold degraded notes when it is true.
    pub reasons: Vec<String>,
}

/// The registry of heartbeats; cheap to clone.
#[derive(Clone)]
pub struct Liveness {
    inner: Arc<Inner>,
}

struct Inner {
    epoch: Instant,
    default_silence: Duration,
    components: Mutex<Vec<Arc<Component>>>,
    queue: OnceLock<Queue>,
    commits: Mutex<CommitWatch>,
}

/// What the last checks saw of the queue's failed-commit counter.
#[derive(Debug, Default)]
struct CommitWatch {
    seen: u64,
    /// When the counter was last seen going up.
    last_increase: Option<Instant>,
}

struct Component {
    name: String,
    max_silence: Duration,
    /// Nanoseconds from the registry's epoch to the last beat (or the registration).
    last_beat: AtomicU64,
    degraded: Mutex<Option<String>>,
}

impl fmt::Debug for Liveness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Liveness")
            .field("default_silence", &self.inner.default_silence)
            .field("components", &lock(&self.inner.components).len())
            .field("queue", &self.inner.queue.get())
            .finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Liveness {
    /// `default_silence` is `health.stall_after_ms`: the maximum silence components are
    /// usually given, and how long a failed commit keeps health not ok.
    pub fn new(default_silence: Duration) -> Self {
        Self {
            inner: Arc::new(Inner {
                epoch: Instant::now(),
                default_silence,
                components: Mutex::new(Vec::new()),
                queue: OnceLock::new(),
                commits: Mutex::new(CommitWatch::default()),
            }),
        }
    }

    pub fn default_silence(&self) -> Duration {
        self.inner.default_silence
    }

    /// Registers `name` (such as `station/press-1`, `forward/mqtt`), which counts as a
    /// beat. A component registered again under the same name replaces the earlier one.
    pub fn register(&self, name: &str, max_silence: Duration) -> Heartbeat {
        let component = Arc::new(Component {
            name: name.to_owned(),
            max_silence,
            last_beat: AtomicU64::new(self.nanos(Instant::now())),
            degraded: Mutex::new(None),
        });
        let mut components = lock(&self.inner.components);
        components.retain(|c| c.name != name);
        components.push(component.clone());
        Heartbeat {
            component,
            liveness: self.clone(),
        }
    }

    /// Watches `queue`'s failed commits. The first queue given stays; later calls are
    /// ignored and return `false`.
    pub fn observe_queue(&self, queue: &Queue) -> bool {
        self.inner.queue.set(queue.clone()).is_ok()
    }

    /// The verdict at `now` (normally `Instant::now()`).
    pub fn check(&self, now: Instant) -> Health {
        let failed = self.inner.queue.get().map(|q| q.stats().failed_commits);
        self.check_with(now, failed)
    }

    /// [`Self::check`] with the queue's failed-commit counter given.
    fn check_with(&self, now: Instant, failed_commits: Option<u64>) -> Health {
        let mut reasons = Vec::new();
        let components = lock(&self.inner.components).clone();
        for c in &components {
            let silence = self.silence(c, now);
            if silence > c.max_silence {
                reasons.push(format!(
                    "{}: no heartbeat for {:.1} s (at most {:.1} s allowed)",
                    c.name,
                    silence.as_secs_f64(),
                    c.max_silence.as_secs_f64()
                ));
            }
        }
        if let Some(total) = failed_commits {
            let mut watch = lock(&self.inner.commits);
            if total > watch.seen {
                watch.seen = total;
                watch.last_increase = Some(now);
            }
            if let Some(at) = watch.last_increase {
                let ago = now.saturating_duration_since(at);
                if ago < self.inner.default_silence {
                    reasons.push(format!(
                        "buffer: store commits are failing ({total} since start, the last seen \
                         {:.1} s ago); new events may not be durable",
                        ago.as_secs_f64()
                    ));
                }
            }
        }
        let ok = reasons.is_empty();
        for c in &components {
            if let Some(why) = lock(&c.degraded).as_deref() {
                reasons.push(format!("{}: degraded: {why}", c.name));
            }
        }
        Health { ok, reasons }
    }

    fn nanos(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.inner.epoch).as_nanos()).unwrap_or(u64::MAX)
    }

    fn silence(&self, c: &Component, now: Instant) -> Duration {
        let last = self.inner.epoch + Duration::from_nanos(c.last_beat.load(Relaxed));
        now.saturating_duration_since(last)
    }

    /// `linesentry_health_ok` and, per component, its silence, its allowance and whether
    /// it is degraded.
    pub(super) fn write(&self, exp: &mut Exposition, now: Instant) {
        let health = self.check(now);
        exp.family(
            "linesentry_health_ok",
            Kind::Gauge,
            "1 when every component beats in time and store commits succeed, else 0.",
        );
        exp.sample("linesentry_health_ok", &[], u64::from(health.ok));
        let components = lock(&self.inner.components).clone();
        let name = "linesentry_component_silence_seconds";
        exp.family(
            name,
            Kind::Gauge,
            "Time since the component's last heartbeat.",
        );
        for c in &components {
            exp.sample(
                name,
                &[("component", &c.name)],
                self.silence(c, now).as_secs_f64(),
            );
        }
        let name = "linesentry_component_max_silence_seconds";
        exp.family(
            name,
            Kind::Gauge,
            "Longest silence the component may keep before health turns not ok.",
        );
        for c in &components {
            exp.sample(name, &[("component", &c.name)], c.max_silence.as_secs_f64());
        }
        let name = "linesentry_component_degraded";
        exp.family(
            name,
            Kind::Gauge,
            "1 while the component reports itself degraded.",
        );
        for c in &components {
            exp.sample(
                name,
                &[("component", &c.name)],
                u64::from(lock(&c.degraded).is_some()),
            );
        }
    }
}

/// One component's heartbeat; beating is a relaxed atomic store.
pub struct Heartbeat {
    component: Arc<Component>,
    liveness: Liveness,
}

impl fmt::Debug for Heartbeat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Heartbeat")
            .field("name", &self.component.name)
            .field("max_silence", &self.component.max_silence)
            .finish_non_exhaustive()
    }
}

impl Heartbeat {
    /// The component is making progress.
    pub fn beat(&self) {
        self.beat_at(Instant::now());
    }

    /// A beat at `at`, for callers that already hold the time. A beat earlier than the last
    /// one changes nothing.
    pub fn beat_at(&self, at: Instant) {
        self.component
            .last_beat
            .fetch_max(self.liveness.nanos(at), Relaxed);
    }

    /// The component works but not well; `reason` is shown until [`Self::recovered`].
    pub fn degraded(&self, reason: impl Into<String>) {
        let reason: String = reason.into().replace('\n', " ");
        *lock(&self.component.degraded) = Some(reason);
    }

    pub fn recovered(&self) {
        *lock(&self.component.degraded) = None;
    }

    pub fn name(&self) -> &str {
        &self.component.name
    }

    /// Unregisters the component: it ended on purpose and is no longer expected to beat.
    pub fn retire(self) {
        lock(&self.liveness.inner.components).retain(|c| !Arc::ptr_eq(c, &self.component));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn a_component_beating_within_its_silence_is_ok_and_one_past_it_is_named_with_its_silence() {
        let live = Liveness::new(30 * S);
        let t0 = Instant::now();
        let press = live.register("station/press-1", 5 * S);
        let mqtt = live.register("forward/mqtt", 60 * S);
        press.beat_at(t0 + 4 * S);
        mqtt.beat_at(t0 + 4 * S);
        assert_eq!(
            live.check_with(t0 + 9 * S, None),
            Health {
                ok: true,
                reasons: vec![]
            }
        );
        let health = live.check_with(t0 + 9 * S + Duration::from_millis(500), None);
        assert!(!health.ok);
        assert_eq!(
            health.reasons,
            ["station/press-1: no heartbeat for 5.5 s (at most 5.0 s allowed)"]
        );
        press.beat_at(t0 + 10 * S);
        assert!(live.check_with(t0 + 10 * S, None).ok);
    }

    #[test]
    fn registering_counts_as_a_beat() {
        let live = Liveness::new(30 * S);
        let _beat = live.register("forward/console", 2 * S);
        let now = Instant::now();
        assert!(live.check_with(now + S, None).ok);
        assert!(!live.check_with(now + 3 * S, None).ok);
    }

    #[test]
    fn a_dropped_heartbeat_goes_silent_and_a_retired_one_is_forgotten() {
        let live = Liveness::new(30 * S);
        let now = Instant::now();
        drop(live.register("station/crashed", S));
        live.register("station/stopped", S).retire();
        let health = live.check_with(now + 2 * S, None);
        assert!(!health.ok);
        assert_eq!(health.reasons.len(), 1);
        assert!(
            health.reasons[0].starts_with("station/crashed: "),
            "{health:?}"
        );
    }

    #[test]
    fn registering_a_name_again_replaces_the_earlier_component() {
        let live = Liveness::new(30 * S);
        let now = Instant::now();
        let old = live.register("forward/mqtt", S);
        let new = live.register("forward/mqtt", 10 * S);
        drop(old);
        assert!(live.check_with(now + 5 * S, None).ok);
        assert_eq!(new.name(), "forward/mqtt");
    }

    #[test]
    fn a_degraded_component_is_listed_but_leaves_health_ok() {
        let live = Liveness::new(30 * S);
        let now = Instant::now();
        let mqtt = live.register("forward/mqtt", 60 * S);
        mqtt.degraded("broker unreachable:\nconnection refused");
        let health = live.check_with(now, None);
        assert!(health.ok);
        assert_eq!(
            health.reasons,
            ["forward/mqtt: degraded: broker unreachable: connection refused"]
        );
        mqtt.recovered();
        assert!(live.check_with(now, None).reasons.is_empty());
    }

    #[test]
    fn failed_commits_make_health_not_ok_for_the_default_silence_after_they_are_seen() {
        let live = Liveness::new(30 * S);
        let t0 = Instant::now();
        assert!(live.check_with(t0, Some(0)).ok);
        let health = live.check_with(t0 + S, Some(2));
        assert!(!health.ok);
        assert_eq!(
            health.reasons,
            [
                "buffer: store commits are failing (2 since start, the last seen 0.0 s ago); \
              new events may not be durable"
            ]
        );
        // Still within the window, the counter unchanged: still not ok.
        assert!(!live.check_with(t0 + 30 * S, Some(2)).ok);
        assert!(live.check_with(t0 + 31 * S, Some(2)).ok);
        // Another failure opens the window again.
        assert!(!live.check_with(t0 + 40 * S, Some(3)).ok);
    }

    #[test]
    fn a_beat_earlier_than_the_last_one_does_not_move_it_back() {
        let live = Liveness::new(30 * S);
        let t0 = Instant::now();
        let beat = live.register("station/a", 5 * S);
        beat.beat_at(t0 + 10 * S);
        beat.beat_at(t0 + S);
        assert!(live.check_with(t0 + 14 * S, None).ok);
    }
}
