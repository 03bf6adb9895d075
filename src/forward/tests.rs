use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::*;
use crate::buffer::{Queue, QueueOptions};
use crate::event::Severity;
use tokio_util::sync::CancellationToken;

/// Records what it received; fails the first `fail_first` sends; rejects events whose
/// `event_data.poison` is true (without saying which, like an HTTP 400).
#[derive(Debug, Clone, Default)]
struct Recorder {
    got: Arc<Mutex<Vec<u64>>>,
    fail_first: Arc<Mutex<u32>>,
}

impl Sink for Recorder {
    fn name(&self) -> &'static str {
        "recorder"
    }

    fn send<'a>(&'a mut self, batch: &'a [SecurityEvent]) -> SendFuture<'a> {
        Box::pin(async move {
            {
                let mut left = self.fail_first.lock().unwrap();
                if *left > 0 {
                    *left -= 1;
                    return Err(SinkError::transient("recorder", "down"));
                }
            }
            if batch.iter().any(|e| e.event_data.get("poison").is_some()) {
                return Err(SinkError::rejected("recorder", "HTTP 400: poison"));
            }
            self.got.lock().unwrap().extend(batch.iter().map(|e| e.seq));
            Ok(())
        })
    }
}

fn options() -> ForwardOptions {
    ForwardOptions {
        batch_events: 10,
        replay_jitter: Duration::ZERO,
        backoff_base: Duration::from_millis(10),
        ..ForwardOptions::new("gw")
    }
}

async fn wait_until(what: impl Fn() -> bool) {
    for _ in 0..200 {
        if what() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test]
async fn events_are_acked_only_after_the_sink_took_them_and_failures_are_retried() {
    let dir = tempfile::tempdir().unwrap();
    let (q, _) = Queue::open(QueueOptions::new(dir.path(), "gw")).unwrap();
    let events: Vec<_> = (0..25)
        .map(|n| SecurityEvent::new("gw", "a.b").data("n", n))
        .collect();
    q.append(&events).await.unwrap();
    let sink = Recorder {
        fail_first: Arc::new(Mutex::new(2)),
        ..Recorder::default()
    };
    let got = sink.got.clone();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(
        Forwarder::new(q.clone(), sink, options()).run(shutdown.clone(), Duration::from_secs(1)),
    );
    wait_until(|| got.lock().unwrap().len() == 25 && q.stats().depth == 0).await;
    assert_eq!(*got.lock().unwrap(), (1..=25).collect::<Vec<u64>>());
    assert_eq!(q.stats().depth, 0);
    shutdown.cancel();
    let counters = task.await.unwrap().unwrap();
    assert_eq!(counters.events, 25);
    assert_eq!(counters.failures, 2);
    q.close().await;
}

#[tokio::test]
async fn a_sink_that_never_accepts_leaves_everything_buffered() {
    let dir = tempfile::tempdir().unwrap();
    let (q, _) = Queue::open(QueueOptions::new(dir.path(), "gw")).unwrap();
    q.append(&[SecurityEvent::new("gw", "a.b")]).await.unwrap();
    let sink = Recorder {
        fail_first: Arc::new(Mutex::new(u32::MAX)),
        ..Recorder::default()
    };
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(
        Forwarder::new(q.clone(), sink, options())
            .run(shutdown.clone(), Duration::from_millis(100)),
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    shutdown.cancel();
    task.await.unwrap().unwrap();
    assert_eq!(q.stats().depth, 1);
    q.close().await;
}

#[tokio::test]
async fn one_poison_event_is_dead_lettered_and_the_rest_of_its_batch_is_delivered() {
    let dir = tempfile::tempdir().unwrap();
    let (q, _) = Queue::open(QueueOptions::new(dir.path(), "gw")).unwrap();
    let events: Vec<_> = (0..10)
        .map(|n| {
            let e = SecurityEvent::new("gw", "a.b").data("n", n);
            if n == 6 {
                e.data("poison", true)
            } else {
                e
            }
        })
        .collect();
    q.append(&events).await.unwrap();
    let sink = Recorder::default();
    let got = sink.got.clone();
    let shutdown = CancellationToken::new();
    let forwarder = Forwarder::new(q.clone(), sink, options());
    let stats = forwarder.stats();
    let task = tokio::spawn(forwarder.run(shutdown.clone(), Duration::from_secs(1)));
    // The nine good ones, then the forward.dead_lettered report (seq 11).
    wait_until(|| got.lock().unwrap().len() == 10).await;
    shutdown.cancel();
    task.await.unwrap().unwrap();
    let mut seqs = got.lock().unwrap().clone();
    seqs.sort_unstable();
    assert_eq!(seqs, vec![1, 2, 3, 4, 5, 6, 8, 9, 10, 11]);
    let dead = q.dead_letters(10).unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].seq, 7);
    assert_eq!(dead[0].reason, "HTTP 400: poison");
    assert_eq!(stats.snapshot().dead_lettered, 1);
    assert_eq!(q.stats().depth, 0);
    q.close().await;
}

#[tokio::test]
async fn alerts_overtake_a_telemetry_backlog_that_is_paced_by_the_replay_rate() {
    let dir = tempfile::tempdir().unwrap();
    let (q, _) = Queue::open(QueueOptions::new(dir.path(), "gw")).unwrap();
    let backlog: Vec<_> = (0..200)
        .map(|n| SecurityEvent::new("gw", "a.b").data("n", n))
        .collect();
    q.append(&backlog).await.unwrap();
    let sink = Recorder::default();
    let got = sink.got.clone();
    let shutdown = CancellationToken::new();
    let opts = ForwardOptions {
        replay_events_per_second: 100,
        ..options()
    };
    let started = std::time::Instant::now();
    let task =
        tokio::spawn(Forwarder::new(q.clone(), sink, opts).run(shutdown.clone(), Duration::ZERO));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let alert = q
        .append(&[SecurityEvent::new("gw", "setpoint.changed").severity(Severity::Warn)])
        .await
        .unwrap()[0];
    wait_until(|| got.lock().unwrap().contains(&alert)).await;
    let sent_before_alert = got
        .lock()
        .unwrap()
        .iter()
        .position(|s| *s == alert)
        .unwrap();
    assert!(
        sent_before_alert < 100,
        "the alert waited behind {sent_before_alert} telemetry events"
    );
    wait_until(|| got.lock().unwrap().len() == 201).await;
    let elapsed = started.elapsed();
    shutdown.cancel();
    task.await.unwrap().unwrap();
    // 200 at 100/s with a burst of 10: about 1.9 s; a free run would take milliseconds.
    assert!(elapsed >= Duration::from_millis(1500), "{elapsed:?}");
    q.close().await;
}

#[test]
fn backoff_grows_to_its_cap_with_jitter() {
    let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
    let delays: Vec<Duration> = (0..10).map(|_| b.next_delay()).collect();
    assert!(delays[0] >= Duration::from_millis(50) && delays[0] <= Duration::from_millis(100));
    assert!(delays.iter().all(|d| *d <= Duration::from_secs(2)));
    assert!(delays[9] >= Duration::from_secs(1));
    b.reset();
    assert!(b.next_delay() <= Duration::from_millis(100));
}

#[tokio::test(start_paused = true)]
async fn the_token_bucket_paces_to_its_rate_after_its_burst() {
    let start = tokio::time::Instant::now();
    let mut bucket = TokenBucket::new(1000, 100, start);
    assert_eq!(bucket.available(start), 100);
    bucket.take(100, start);
    assert_eq!(bucket.available(start), 0);
    assert_eq!(bucket.wait_for(50, start), Duration::from_millis(50));
    tokio::time::advance(Duration::from_millis(30)).await;
    assert_eq!(bucket.available(tokio::time::Instant::now()), 30);
    tokio::time::advance(Duration::from_secs(10)).await;
    assert_eq!(
        bucket.available(tokio::time::Instant::now()),
        100,
        "capped at the burst"
    );
}

/// Rejects every batch without naming anything, like a proxy answering 400 to all.
#[derive(Debug, Default)]
struct RejectAll;

impl Sink for RejectAll {
    fn name(&self) -> &'static str {
        "reject-all"
    }

    fn send<'a>(&'a mut self, _batch: &'a [SecurityEvent]) -> SendFuture<'a> {
        Box::pin(async { Err(SinkError::rejected("reject-all", "HTTP 400: bad request")) })
    }
}

#[tokio::test]
async fn a_receiver_rejecting_every_event_of_a_batch_empties_nothing_into_dead_letters() {
    let dir = tempfile::tempdir().unwrap();
    let (q, _) = Queue::open(QueueOptions::new(dir.path(), "gw")).unwrap();
    let events: Vec<_> = (0..10)
        .map(|n| SecurityEvent::new("gw", "a.b").data("n", n))
        .collect();
    q.append(&events).await.unwrap();
    let shutdown = CancellationToken::new();
    let forwarder = Forwarder::new(q.clone(), RejectAll, options());
    let stats = forwarder.stats();
    let task = tokio::spawn(forwarder.run(shutdown.clone(), Duration::ZERO));
    wait_until(|| stats.snapshot().failures >= 2).await;
    shutdown.cancel();
    task.await.unwrap().unwrap();
    assert!(q.dead_letters(100).unwrap().is_empty());
    assert_eq!(q.stats().depth, 10, "everything stays buffered");
    q.close().await;
}

#[tokio::test(start_paused = true)]
async fn the_fallback_takes_over_after_the_primary_failed_long_enough_and_hands_back() {
    let primary = Recorder {
        fail_first: Arc::new(Mutex::new(u32::MAX)),
        ..Recorder::default()
    };
    let down = primary.fail_first.clone();
    let secondary = Recorder::default();
    let (p_got, s_got) = (primary.got.clone(), secondary.got.clone());
    let mut route = route::Fallback::new(primary, secondary, Duration::from_secs(10));
    let batch = |seq: u64| {
        let mut e = SecurityEvent::new("gw", "a.b");
        e.seq = seq;
        vec![e]
    };
    assert!(
        route.send(&batch(1)).await.is_err(),
        "primary down, not yet long enough"
    );
    tokio::time::advance(Duration::from_secs(11)).await;
    route.send(&batch(2)).await.unwrap();
    route.send(&batch(3)).await.unwrap();
    assert_eq!(*s_got.lock().unwrap(), vec![2, 3], "the fallback took over");
    *down.lock().unwrap() = 0;
    tokio::time::advance(Duration::from_secs(31)).await;
    route.send(&batch(4)).await.unwrap();
    assert_eq!(
        *p_got.lock().unwrap(),
        vec![4],
        "the primary is tried again and used"
    );
}
