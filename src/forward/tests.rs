use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::*;
use crate::buffer::QueueOptions;

/// Records what it received; fails the first `fail_first` sends.
#[derive(Debug, Clone, Default)]
struct Recorder {
    got: Arc<Mutex<Vec<u64>>>,
    fail_first: Arc<Mutex<u32>>,
}

impl Sink for Recorder {
    fn name(&self) -> &'static str {
        "recorder"
    }

    async fn send(&mut self, batch: &[SecurityEvent]) -> Result<(), SinkError> {
        {
            let mut left = self.fail_first.lock().unwrap();
            if *left > 0 {
                *left -= 1;
                return Err(SinkError::Transient {
                    sink: "recorder",
                    reason: "down".into(),
                });
            }
        }
        self.got.lock().unwrap().extend(batch.iter().map(|e| e.seq));
        Ok(())
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
        Forwarder::new(q.clone(), sink, 10).run(shutdown.clone(), Duration::from_secs(1)),
    );
    for _ in 0..100 {
        if got.lock().unwrap().len() == 25 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(*got.lock().unwrap(), (1..=25).collect::<Vec<u64>>());
    // Acks follow delivery.
    for _ in 0..50 {
        if q.stats().depth == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
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
        Forwarder::new(q.clone(), sink, 10).run(shutdown.clone(), Duration::from_millis(100)),
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    shutdown.cancel();
    task.await.unwrap().unwrap();
    assert_eq!(q.stats().depth, 1);
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
