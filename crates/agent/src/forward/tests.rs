use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::*;
use crate::buffer::{Queue, QueueOptions};
use linesentry_event::{EventType, Severity};
use tokio_util::sync::CancellationToken;

/// Records what it received; fails the first `fail_first` sends; rejects events whose
/// `event_data.poison` is true (without saying which, like an HTTP 400).
#[derive(Debug, Clone, Default)]
struct Recorder {
    got: Arc<Mutex<Vec<u64>>>,
    fail_first: Arc<Mutex<u32>>,
    /// Also rejects every event of this type.
    reject_type: Option<&'static str>,
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
            if batch.iter().any(|e| {
                e.event_data.get("poison").is_some()
                    || Some(e.event_type.as_str()) == self.reject_type
            }) {
                return Err(SinkError::rejected("recorder", "HTTP 400: poison"));
            }
            self.got.lock().unwrap().extend(batch.iter().map(|e| e.seq));
            Ok(())
        })
    }
}

/// `n` events numbered in `event_data.n`; the one numbered `poison` carries `poison`.
fn numbered(n: usize, poison: Option<usize>) -> Vec<SecurityEvent> {
    (0..n)
        .map(|i| {
            let e = SecurityEvent::new("gw", EventType::EquipmentStatus).data("n", i);
            if Some(i) == poison {
                e.data("poison", true)
            } else {
                e
            }
        })
        .collect()
}

fn options() -> ForwardOptions {
    ForwardOptions {
        pacing: Pacing {
            batch_events: 10,
            replay_jitter: Duration::ZERO,
            ..Pacing::default()
        },
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
        .map(|n| SecurityEvent::new("gw", EventType::EquipmentStatus).data("n", n))
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
    q.append(&[SecurityEvent::new("gw", EventType::EquipmentStatus)])
        .await
        .unwrap();
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
    let events = numbered(10, Some(6));
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
        .map(|n| SecurityEvent::new("gw", EventType::EquipmentStatus).data("n", n))
        .collect();
    q.append(&backlog).await.unwrap();
    let sink = Recorder::default();
    let got = sink.got.clone();
    let shutdown = CancellationToken::new();
    let mut opts = options();
    opts.pacing.replay_events_per_second = 100;
    let started = std::time::Instant::now();
    let task =
        tokio::spawn(Forwarder::new(q.clone(), sink, opts).run(shutdown.clone(), Duration::ZERO));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let alert = q
        .append(&[SecurityEvent::new("gw", EventType::SetpointChanged).severity(Severity::Warn)])
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
        .map(|n| SecurityEvent::new("gw", EventType::EquipmentStatus).data("n", n))
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
        let mut e = SecurityEvent::new("gw", EventType::EquipmentStatus);
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

/// A pipelined receiver: a push confirms everything pushed before it and keeps its own
/// batch in flight until the next push or flush. It can fail once at a given push
/// (losing what is in flight, as a dropped connection does), and refuses events whose
/// `event_data.poison` is set after accepting them, naming them, as an MQTT 5 broker's
/// PUBACK does.
#[derive(Debug, Clone)]
struct Pipe {
    queue: Queue,
    state: Arc<Mutex<PipeState>>,
}

#[derive(Debug, Default)]
struct PipeState {
    in_flight: Vec<SecurityEvent>,
    confirmed: Vec<u64>,
    pushes: u32,
    fail_at_push: Option<u32>,
    /// Every time events were in flight: were they all still in the queue?
    in_flight_still_buffered: Vec<bool>,
}

impl Pipe {
    fn new(queue: &Queue) -> Self {
        Self {
            queue: queue.clone(),
            state: Arc::new(Mutex::new(PipeState::default())),
        }
    }

    /// Confirms what is in flight, or names the poisoned events.
    fn settle(&self, st: &mut PipeState) -> Result<Pushed, SinkError> {
        let depth = self.queue.stats().depth as usize;
        st.in_flight_still_buffered
            .push(depth >= st.in_flight.len());
        let (bad, good): (Vec<_>, Vec<_>) = std::mem::take(&mut st.in_flight)
            .into_iter()
            .partition(|e| e.event_data.get("poison").is_some());
        let good: Vec<u64> = good.iter().map(|e| e.seq).collect();
        st.confirmed.extend(&good);
        if bad.is_empty() {
            return Ok(Pushed {
                confirmed: good,
                lost: false,
            });
        }
        Err(SinkError::Rejected {
            sink: "pipe",
            reason: "PUBACK NotAuthorized".into(),
            culprits: bad.iter().map(|e| e.seq).collect(),
            delivered: good,
        })
    }
}

impl Sink for Pipe {
    fn name(&self) -> &'static str {
        "pipe"
    }

    fn send<'a>(&'a mut self, batch: &'a [SecurityEvent]) -> SendFuture<'a> {
        Box::pin(async move {
            let mut st = self.state.lock().unwrap();
            assert!(st.in_flight.is_empty(), "send with pushes in flight");
            st.in_flight = batch.to_vec();
            self.settle(&mut st).map(|_| ())
        })
    }

    fn push<'a>(&'a mut self, batch: &'a [SecurityEvent]) -> PushFuture<'a> {
        Box::pin(async move {
            let mut st = self.state.lock().unwrap();
            st.pushes += 1;
            if st.fail_at_push == Some(st.pushes) {
                st.in_flight.clear();
                return Err(SinkError::transient("pipe", "connection reset"));
            }
            let earlier = self.settle(&mut st);
            st.in_flight = batch.to_vec();
            earlier
        })
    }

    fn flush(&mut self) -> PushFuture<'_> {
        Box::pin(async move {
            let mut st = self.state.lock().unwrap();
            self.settle(&mut st)
        })
    }
}

async fn run_pipe(
    events: usize,
    poison: Option<usize>,
    fail_at_push: Option<u32>,
) -> (Queue, Pipe, ForwardCounters, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let (q, _) = Queue::open(QueueOptions::new(dir.path(), "gw")).unwrap();
    let batch = numbered(events, poison);
    q.append(&batch).await.unwrap();
    let sink = Pipe::new(&q);
    sink.state.lock().unwrap().fail_at_push = fail_at_push;
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(
        Forwarder::new(q.clone(), sink.clone(), options())
            .run(shutdown.clone(), Duration::from_secs(1)),
    );
    wait_until(|| q.stats().depth == 0 && sink.state.lock().unwrap().in_flight.is_empty()).await;
    shutdown.cancel();
    let counters = task.await.unwrap().unwrap();
    (q, sink, counters, dir)
}

#[tokio::test]
async fn pushed_events_leave_the_queue_only_once_confirmed_and_each_arrives_once() {
    let (q, sink, counters, _dir) = run_pipe(95, None, None).await;
    let st = sink.state.lock().unwrap();
    assert_eq!(st.confirmed, (1..=95).collect::<Vec<u64>>());
    assert!(
        st.pushes >= 10,
        "pipelined in batches of 10: {} pushes",
        st.pushes
    );
    assert!(
        st.in_flight_still_buffered.iter().all(|b| *b),
        "an event left the queue before it was confirmed"
    );
    assert_eq!(counters.events, 95);
    assert_eq!(q.stats().depth, 0);
}

#[tokio::test]
async fn a_connection_lost_with_pushes_in_flight_sends_the_unconfirmed_events_again() {
    let (q, sink, counters, _dir) = run_pipe(50, None, Some(3)).await;
    let st = sink.state.lock().unwrap();
    let mut confirmed = st.confirmed.clone();
    confirmed.sort_unstable();
    assert_eq!(
        confirmed,
        (1..=50).collect::<Vec<u64>>(),
        "every event once"
    );
    assert_eq!(counters.failures, 1);
    assert_eq!(q.stats().depth, 0);
}

#[tokio::test]
async fn a_refusal_reported_after_a_push_dead_letters_only_the_refused_event() {
    let (q, sink, counters, _dir) = run_pipe(30, Some(14), None).await;
    let dead = q.dead_letters(10).unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].seq, 15);
    assert_eq!(dead[0].reason, "PUBACK NotAuthorized");
    let st = sink.state.lock().unwrap();
    let mut confirmed = st.confirmed.clone();
    confirmed.sort_unstable();
    confirmed.dedup();
    // The 29 good ones and the forward.dead_lettered report (seq 31).
    let mut want: Vec<u64> = (1..=31).filter(|s| *s != 15).collect();
    want.sort_unstable();
    assert_eq!(confirmed, want);
    assert_eq!(counters.dead_lettered, 1);
    assert_eq!(counters.failures, 0, "a rejection is no outage");
}

#[tokio::test(start_paused = true)]
async fn a_fallback_taking_over_mid_push_has_the_primarys_unconfirmed_pushes_sent_again() {
    let dir = tempfile::tempdir().unwrap();
    let (q, _) = Queue::open(QueueOptions::new(dir.path(), "gw")).unwrap();
    let primary = Pipe::new(&q);
    let p_state = primary.state.clone();
    let secondary = Recorder::default();
    let s_got = secondary.got.clone();
    let mut route = route::Fallback::new(primary, secondary, Duration::ZERO);
    let batch = |seqs: std::ops::RangeInclusive<u64>| -> Vec<SecurityEvent> {
        seqs.map(|s| {
            let mut e = SecurityEvent::new("gw", EventType::EquipmentStatus);
            e.seq = s;
            e
        })
        .collect()
    };
    let first = route.push(&batch(1..=3)).await.unwrap();
    assert!(first.confirmed.is_empty(), "in flight");
    p_state.lock().unwrap().fail_at_push = Some(2);
    let second = route.push(&batch(4..=6)).await.unwrap();
    assert!(second.lost, "1..=3 were in flight on the primary");
    assert_eq!(second.confirmed, vec![4, 5, 6]);
    assert_eq!(*s_got.lock().unwrap(), vec![4, 5, 6]);
    assert!(route.flush().await.unwrap().confirmed.is_empty());
}

#[tokio::test]
async fn a_receiver_refusing_the_dead_letter_report_does_not_get_a_report_of_the_report() {
    let dir = tempfile::tempdir().unwrap();
    let (q, _) = Queue::open(QueueOptions::new(dir.path(), "gw")).unwrap();
    let events = numbered(5, Some(2));
    q.append(&events).await.unwrap();
    let sink = Recorder {
        reject_type: Some("forward.dead_lettered"),
        ..Recorder::default()
    };
    let got = sink.got.clone();
    let shutdown = CancellationToken::new();
    let forwarder = Forwarder::new(q.clone(), sink, options());
    let stats = forwarder.stats();
    let task = tokio::spawn(forwarder.run(shutdown.clone(), Duration::from_secs(1)));
    wait_until(|| stats.snapshot().dead_lettered == 2 && q.stats().depth == 0).await;
    // Time for a runaway chain of reports to show.
    tokio::time::sleep(Duration::from_millis(300)).await;
    shutdown.cancel();
    task.await.unwrap().unwrap();
    let dead = q.dead_letters(10).unwrap();
    let types: Vec<&str> = dead.iter().map(|d| d.event.event_type.as_str()).collect();
    assert_eq!(
        types,
        vec!["equipment.status", "forward.dead_lettered"],
        "{dead:?}"
    );
    assert_eq!(q.stats().depth, 0);
    assert_eq!(*got.lock().unwrap(), vec![1, 2, 4, 5]);
}

#[tokio::test]
async fn an_outage_longer_than_upstream_down_after_is_reported_once() {
    let dir = tempfile::tempdir().unwrap();
    let (q, _) = Queue::open(QueueOptions::new(dir.path(), "gw")).unwrap();
    q.append(&numbered(3, None)).await.unwrap();
    let sink = Recorder {
        fail_first: Arc::new(Mutex::new(u32::MAX)),
        ..Recorder::default()
    };
    let mut opts = ForwardOptions {
        backoff_cap: Duration::from_millis(40),
        ..options()
    };
    opts.pacing.upstream_down_after = Duration::from_millis(150);
    let shutdown = CancellationToken::new();
    let forwarder = Forwarder::new(q.clone(), sink, opts);
    let stats = forwarder.stats();
    let task = tokio::spawn(forwarder.run(shutdown.clone(), Duration::ZERO));
    // Many failed attempts, well past the threshold.
    wait_until(|| stats.snapshot().failures >= 15).await;
    shutdown.cancel();
    task.await.unwrap().unwrap();
    let reports: Vec<SecurityEvent> = q
        .peek(None, 100)
        .unwrap()
        .into_iter()
        .filter(|e| e.event_type == "forward.upstream_down")
        .collect();
    assert_eq!(reports.len(), 1, "one report per outage");
    let r = &reports[0];
    assert_eq!(r.event_data["sink"], "recorder");
    assert!(r.event_data["last_error"]
        .as_str()
        .unwrap()
        .contains("down"));
    assert!(r.event_data["down_for_ms"].as_u64().unwrap() >= 150);
    assert_eq!(r.event_data["buffered"], 3);
    assert_eq!(
        q.stats().depth,
        4,
        "the three events and the report stay buffered"
    );
}
