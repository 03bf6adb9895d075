use std::time::Duration;

use super::*;
use linesentry_event::{EventType, Severity};

fn event(kind: EventType, severity: Severity, n: u64) -> SecurityEvent {
    SecurityEvent::new("gw-test", kind)
        .severity(severity)
        .station("press-01")
        .data("n", n)
        .data("tag", "die_temp")
}

fn options(dir: &Path) -> QueueOptions {
    QueueOptions::new(dir, "gw-test")
}

/// A queue small enough to fill: about 80 sample events.
fn small(dir: &Path) -> QueueOptions {
    QueueOptions {
        quota_bytes: 16 * 1024,
        max_event_bytes: 1024,
        drop_report_interval: Duration::ZERO,
        ..options(dir)
    }
}

fn all(q: &Queue) -> Vec<SecurityEvent> {
    q.peek(None, usize::MAX).unwrap()
}

#[tokio::test]
async fn appended_events_come_back_in_seq_order_with_their_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let (q, report) = Queue::open(options(dir.path())).unwrap();
    assert!(report.reset.is_none());
    let a = q
        .append(&[event(EventType::EquipmentStatus, Severity::Info, 1)])
        .await
        .unwrap();
    let b = q
        .append(&[
            event(EventType::SetpointChanged, Severity::Warn, 2),
            event(EventType::EquipmentStatus, Severity::Info, 3),
        ])
        .await
        .unwrap();
    assert_eq!(a, vec![1]);
    assert_eq!(b, vec![2, 3]);
    let got = all(&q);
    assert_eq!(got.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![1, 2, 3]);
    assert_eq!(got[1].event_type, "setpoint.changed");
    assert_eq!(got[2].event_data["n"], 3);
    assert_eq!(q.peek(Some(1), 1).unwrap()[0].seq, 2);
    q.close().await;
}

#[tokio::test]
async fn ack_deletes_only_what_it_names() {
    let dir = tempfile::tempdir().unwrap();
    let (q, _) = Queue::open(options(dir.path())).unwrap();
    let batch: Vec<_> = (0..10)
        .map(|n| event(EventType::QualityCheck, Severity::Info, n))
        .collect();
    q.append(&batch).await.unwrap();
    assert_eq!(q.ack(Ack::UpTo(3)).await.unwrap().removed, 3);
    assert_eq!(q.ack(Ack::Seqs(vec![5, 7, 99])).await.unwrap().removed, 2);
    let left: Vec<u64> = all(&q).iter().map(|e| e.seq).collect();
    assert_eq!(left, vec![4, 6, 8, 9, 10]);
    assert_eq!(q.stats().depth, 5);
    q.close().await;
}

#[tokio::test]
async fn acks_alone_skip_the_fsync_and_closing_makes_them_durable() {
    let dir = tempfile::tempdir().unwrap();
    let (q, _) = Queue::open(options(dir.path())).unwrap();
    let batch: Vec<_> = (0..3)
        .map(|n| event(EventType::QualityCheck, Severity::Info, n))
        .collect();
    q.append(&batch).await.unwrap();
    assert_eq!(q.stats().unsynced_commits, 0, "an append is always synced");
    q.ack(Ack::UpTo(2)).await.unwrap();
    q.ack(Ack::Seqs(vec![3])).await.unwrap();
    let stats = q.stats();
    assert_eq!((stats.commits, stats.unsynced_commits), (3, 2));
    assert_eq!(stats.depth, 0);
    q.close().await;
    let (q, report) = Queue::open(options(dir.path())).unwrap();
    assert_eq!((q.stats().depth, report.next_seq), (0, 4));
    q.close().await;
}

/// A queue in `dir` whose one event was appended and acknowledged, the ack not yet synced;
/// with its stats at that moment.
async fn one_unsynced_ack(dir: &Path) -> (Queue, QueueStats) {
    let (q, _) = Queue::open(options(dir)).unwrap();
    q.append(&[event(EventType::EquipmentStatus, Severity::Info, 0)])
        .await
        .unwrap();
    q.ack(Ack::UpTo(1)).await.unwrap();
    let stats = q.stats();
    assert_eq!(stats.unsynced_commits, 1);
    (q, stats)
}

#[tokio::test]
async fn a_flush_after_acks_makes_them_durable_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let (q, before) = one_unsynced_ack(dir.path()).await;
    q.flush().await.unwrap();
    let after = q.stats();
    assert_eq!(after.commits, before.commits + 1, "the flush committed");
    assert_eq!(after.unsynced_commits, 1, "and that commit was synced");
    q.close().await;
}

#[tokio::test]
async fn unsynced_acks_are_synced_by_the_idle_tick() {
    let dir = tempfile::tempdir().unwrap();
    let (q, before) = one_unsynced_ack(dir.path()).await;
    // ACK_SYNC_WITHIN after the ack, at the next idle tick (500 ms).
    let limit = writer::ACK_SYNC_WITHIN + Duration::from_millis(1500);
    let start = std::time::Instant::now();
    while q.stats().commits == before.commits && start.elapsed() < limit {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let after = q.stats();
    assert_eq!(
        after.commits,
        before.commits + 1,
        "no sync within {limit:?}"
    );
    assert_eq!(after.unsynced_commits, 1, "the sync commit is a synced one");
    q.close().await;
}

#[tokio::test]
async fn seq_keeps_increasing_across_reopen_even_when_everything_was_acked() {
    let dir = tempfile::tempdir().unwrap();
    let (q, _) = Queue::open(options(dir.path())).unwrap();
    q.append(&[
        event(EventType::EquipmentStatus, Severity::Info, 0),
        event(EventType::EquipmentStatus, Severity::Info, 1),
    ])
    .await
    .unwrap();
    q.ack(Ack::UpTo(2)).await.unwrap();
    q.close().await;
    let (q, report) = Queue::open(options(dir.path())).unwrap();
    assert_eq!(report.next_seq, 3);
    assert_eq!(
        q.append(&[event(EventType::EquipmentStatus, Severity::Info, 2)])
            .await
            .unwrap(),
        vec![3]
    );
    q.close().await;
}

#[tokio::test]
async fn a_full_buffer_evicts_telemetry_oldest_first_and_keeps_warnings() {
    let dir = tempfile::tempdir().unwrap();
    let (q, _) = Queue::open(QueueOptions {
        drop_report_interval: Duration::from_secs(3600),
        ..small(dir.path())
    })
    .unwrap();
    let warns: Vec<_> = (0..20)
        .map(|n| event(EventType::SetpointChanged, Severity::Warn, n))
        .collect();
    q.append(&warns).await.unwrap();
    for n in 0..200 {
        q.append(&[event(EventType::EquipmentStatus, Severity::Info, 100 + n)])
            .await
            .unwrap();
    }
    let kept = all(&q);
    let kept_warns = kept
        .iter()
        .filter(|e| e.event_type == "setpoint.changed")
        .count();
    assert_eq!(
        kept_warns, 20,
        "every warn event survives while telemetry is left"
    );
    let infos: Vec<u64> = kept
        .iter()
        .filter(|e| e.event_type == "equipment.status")
        .map(|e| e.event_data["n"].as_u64().unwrap())
        .collect();
    assert!(!infos.is_empty());
    assert_eq!(*infos.last().unwrap(), 299, "the newest telemetry is kept");
    assert!(infos.windows(2).all(|w| w[0] < w[1]), "oldest went first");

    let reports: Vec<_> = kept
        .iter()
        .filter(|e| e.event_type == "agent.buffer_dropped")
        .collect();
    assert_eq!(
        reports.len(),
        1,
        "the first eviction is reported at once, then by interval"
    );
    assert_eq!(reports[0].severity, Severity::Error);
    // It also counts what was evicted to make room for the report itself.
    assert!(
        reports[0].event_data["by_severity"]["info"]
            .as_u64()
            .unwrap()
            >= 1
    );
    let stats = q.stats();
    assert_eq!(
        stats.dropped_total,
        200 - infos.len() as u64,
        "every eviction is counted"
    );
    assert!(stats.bytes <= stats.quota_bytes);
    q.close().await;
}

#[tokio::test]
async fn every_eviction_ends_up_in_a_drop_report() {
    let dir = tempfile::tempdir().unwrap();
    let (q, _) = Queue::open(QueueOptions {
        drop_report_interval: Duration::from_millis(50),
        ..small(dir.path())
    })
    .unwrap();
    for n in 0..300 {
        q.append(&[event(EventType::EquipmentStatus, Severity::Info, n)])
            .await
            .unwrap();
    }
    // The writer's idle tick writes the last report once the interval has passed.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let reported: u64 = all(&q)
        .iter()
        .filter(|e| e.event_type == "agent.buffer_dropped")
        .map(|e| e.event_data["dropped"].as_u64().unwrap())
        .sum();
    let kept_info = all(&q)
        .iter()
        .filter(|e| e.event_type == "equipment.status")
        .count() as u64;
    assert_eq!(reported, 300 - kept_info);
    assert_eq!(q.stats().dropped_total, reported);
    q.close().await;
}

#[tokio::test]
async fn with_no_telemetry_left_the_oldest_warning_goes_and_is_counted() {
    let dir = tempfile::tempdir().unwrap();
    let (q, _) = Queue::open(QueueOptions {
        drop_report_interval: Duration::from_secs(3600),
        ..small(dir.path())
    })
    .unwrap();
    for n in 0..200 {
        q.append(&[event(EventType::ModeChanged, Severity::Error, n)])
            .await
            .unwrap();
    }
    let kept = all(&q);
    let first_kept = kept
        .iter()
        .find(|e| e.event_type == "mode.changed")
        .map(|e| e.event_data["n"].as_u64().unwrap())
        .unwrap();
    assert!(first_kept > 0);
    let stats = q.stats();
    // The first eviction is reported at once (no earlier report); later ones wait for the
    // report interval but stay counted, persistently.
    let report = kept
        .iter()
        .find(|e| e.event_type == "agent.buffer_dropped")
        .expect("first drop reported immediately");
    assert!(report.event_data["by_severity"]["error"].as_u64().unwrap() >= 1);
    assert_eq!(stats.dropped_total, 200 + 2 - kept.len() as u64);
    q.close().await;
}

#[tokio::test]
async fn crossing_the_high_watermark_raises_one_buffer_high_event() {
    let dir = tempfile::tempdir().unwrap();
    let (q, _) = Queue::open(small(dir.path())).unwrap();
    let mut n = 0;
    while q.stats().bytes * 100 / q.stats().quota_bytes < 90 {
        q.append(&[event(EventType::SetpointChanged, Severity::Warn, n)])
            .await
            .unwrap();
        n += 1;
    }
    let highs: Vec<_> = all(&q)
        .into_iter()
        .filter(|e| e.event_type == "agent.buffer_high")
        .collect();
    assert_eq!(highs.len(), 1);
    assert_eq!(highs[0].severity, Severity::Warn);
    assert!(highs[0].event_data["used_percent"].as_u64().unwrap() >= 80);
    // Draining below 70 % re-arms; filling again raises a second one.
    let last = all(&q).last().unwrap().seq;
    q.ack(Ack::UpTo(last)).await.unwrap();
    q.append(&[event(EventType::EquipmentStatus, Severity::Info, 0)])
        .await
        .unwrap();
    while q.stats().bytes * 100 / q.stats().quota_bytes < 85 {
        q.append(&[event(EventType::SetpointChanged, Severity::Warn, n)])
            .await
            .unwrap();
        n += 1;
    }
    let highs = all(&q)
        .into_iter()
        .filter(|e| e.event_type == "agent.buffer_high")
        .count();
    assert_eq!(
        highs, 1,
        "the first one was acked with the rest; exactly one new"
    );
    q.close().await;
}

#[tokio::test]
async fn a_corrupt_store_is_moved_aside_and_a_reset_event_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let (q, _) = Queue::open(options(dir.path())).unwrap();
    let seqs = q
        .append(&[event(EventType::EquipmentStatus, Severity::Info, 0)])
        .await
        .unwrap();
    q.close().await;
    let path = dir.path().join(STORE_FILE);
    let mut bytes = std::fs::read(&path).unwrap();
    for b in bytes.iter_mut().take(4096) {
        *b ^= 0x5a;
    }
    std::fs::write(&path, &bytes).unwrap();

    let (q, report) = Queue::open(options(dir.path())).unwrap();
    let reset = report.reset.expect("reset reported");
    assert!(reset.moved_to.exists());
    assert!(reset
        .moved_to
        .file_name()
        .unwrap()
        .to_string_lossy()
        .starts_with("queue.redb.corrupt-"));
    let got = all(&q);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].event_type, "agent.buffer_reset");
    assert_eq!(got[0].severity, Severity::Error);
    assert!(got[0].seq > seqs[0], "sequence numbers are never reused");
    q.close().await;
}

#[tokio::test]
async fn garbage_instead_of_a_store_is_moved_aside_too() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(STORE_FILE), b"this is not a database").unwrap();
    let (q, report) = Queue::open(options(dir.path())).unwrap();
    assert!(report.reset.is_some());
    assert_eq!(all(&q)[0].event_type, "agent.buffer_reset");
    q.close().await;
}

#[tokio::test]
async fn a_second_open_of_the_same_store_is_refused_not_reset() {
    let dir = tempfile::tempdir().unwrap();
    let (q, _) = Queue::open(options(dir.path())).unwrap();
    let err = Queue::open(options(dir.path())).unwrap_err();
    assert!(matches!(err, OpenError::Locked { .. }), "{err}");
    assert!(err.to_string().contains("in use"), "{err}");
    q.close().await;
}

#[test]
fn an_unusable_data_dir_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("plain-file");
    std::fs::write(&file, b"x").unwrap();
    let err = Queue::open(options(&file.join("data"))).unwrap_err();
    assert!(matches!(err, OpenError::Dir { .. }), "{err}");
    assert!(err.to_string().contains("plain-file"), "{err}");
}

#[tokio::test]
async fn an_oversized_event_is_refused_and_nothing_of_its_call_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let (q, _) = Queue::open(small(dir.path())).unwrap();
    let big = event(EventType::EquipmentStatus, Severity::Info, 0).data("blob", "x".repeat(4096));
    let err = q
        .append(&[event(EventType::EquipmentStatus, Severity::Info, 1), big])
        .await
        .unwrap_err();
    assert!(matches!(err, QueueError::TooLarge { .. }), "{err}");
    assert!(all(&q).is_empty());
    q.close().await;
}

#[tokio::test]
async fn a_closed_queue_refuses_work() {
    let dir = tempfile::tempdir().unwrap();
    let (q, _) = Queue::open(options(dir.path())).unwrap();
    q.close().await;
    q.close().await;
    assert!(matches!(
        q.append(&[event(EventType::EquipmentStatus, Severity::Info, 0)])
            .await,
        Err(QueueError::Closed)
    ));
    assert!(matches!(q.ack(Ack::UpTo(1)).await, Err(QueueError::Closed)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appenders_get_distinct_contiguous_seqs() {
    let dir = tempfile::tempdir().unwrap();
    let (q, _) = Queue::open(options(dir.path())).unwrap();
    let mut tasks = Vec::new();
    for t in 0..8 {
        let q = q.clone();
        tasks.push(tokio::spawn(async move {
            let mut seqs = Vec::new();
            for n in 0..50 {
                seqs.extend(
                    q.append(&[event(
                        EventType::EquipmentStatus,
                        Severity::Info,
                        t * 100 + n,
                    )])
                    .await
                    .unwrap(),
                );
            }
            seqs
        }));
    }
    let mut seqs = Vec::new();
    for t in tasks {
        seqs.extend(t.await.unwrap());
    }
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=400).collect::<Vec<u64>>());
    assert!(
        q.stats().commits < 400,
        "appends were grouped into fewer commits"
    );
    q.close().await;
}

#[tokio::test]
async fn steady_append_and_ack_does_not_grow_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let (q, _) = Queue::open(QueueOptions {
        commit_linger: Duration::ZERO,
        ..options(dir.path())
    })
    .unwrap();
    let batch: Vec<_> = (0..500)
        .map(|n| event(EventType::QualityCheck, Severity::Info, n))
        .collect();
    let mut sizes = Vec::new();
    for round in 0..120 {
        let seqs = q.append(&batch).await.unwrap();
        q.ack(Ack::UpTo(seqs[0] - 1)).await.unwrap();
        if round % 20 == 19 {
            sizes.push(q.stats().file_bytes);
        }
    }
    // 60,000 events passed through with a backlog of at most 1,000.
    let first = sizes[0];
    let last = *sizes.last().unwrap();
    assert!(
        last <= first.max(1 << 20) * 2,
        "file grew from {first} to {last} bytes: {sizes:?}"
    );
    q.close().await;
}

#[tokio::test]
async fn the_alerts_lane_skips_telemetry_and_keeps_seq_order() {
    let dir = tempfile::tempdir().unwrap();
    let (q, _) = Queue::open(options(dir.path())).unwrap();
    let events: Vec<_> = (0..10)
        .map(|n| {
            let sev = if n % 3 == 0 {
                Severity::Error
            } else {
                Severity::Info
            };
            event(EventType::EquipmentStatus, sev, n)
        })
        .collect();
    q.append(&events).await.unwrap();
    let alerts: Vec<u64> = q
        .peek_lane(Lane::Alerts, None, 10)
        .unwrap()
        .iter()
        .map(|e| e.seq)
        .collect();
    assert_eq!(alerts, vec![1, 4, 7, 10]);
    let merged: Vec<u64> = q.peek(Some(3), 4).unwrap().iter().map(|e| e.seq).collect();
    assert_eq!(merged, vec![4, 5, 6, 7]);
    q.close().await;
}

#[tokio::test]
async fn station_state_is_stored_with_its_events_and_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let (q, _) = Queue::open(options(dir.path())).unwrap();
    assert_eq!(q.load_state("press-01").unwrap(), None);
    q.append_with_state(
        &[event(EventType::SetpointChanged, Severity::Warn, 1)],
        Some(("press-01".into(), b"baseline-v1".to_vec())),
    )
    .await
    .unwrap();
    q.append_with_state(&[], Some(("press-01".into(), b"baseline-v2".to_vec())))
        .await
        .unwrap();
    q.close().await;
    let (q, _) = Queue::open(options(dir.path())).unwrap();
    assert_eq!(
        q.load_state("press-01").unwrap().as_deref(),
        Some(&b"baseline-v2"[..])
    );
    assert_eq!(all(&q).len(), 1);
    q.close().await;
}

#[tokio::test]
async fn every_stored_event_links_to_the_hash_of_its_predecessor_across_restarts() {
    use linesentry_event::integrity::{event_hash, hex};
    let dir = tempfile::tempdir().unwrap();
    let (q, _) = Queue::open(options(dir.path())).unwrap();
    q.append(&[
        event(EventType::EquipmentStatus, Severity::Info, 1),
        event(EventType::SetpointChanged, Severity::Warn, 2),
    ])
    .await
    .unwrap();
    q.ack(Ack::UpTo(1)).await.unwrap();
    q.close().await;
    let (q, _) = Queue::open(options(dir.path())).unwrap();
    q.append(&[event(EventType::EquipmentStatus, Severity::Info, 3)])
        .await
        .unwrap();
    let got = all(&q);
    assert_eq!(got.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![2, 3]);
    assert!(got[0].prev_hash.is_some(), "seq 2 links to the acked seq 1");
    assert_eq!(got[1].prev_hash, Some(hex(&event_hash(&got[0]))));
    q.close().await;
}

#[tokio::test]
async fn the_first_event_of_a_store_has_no_predecessor() {
    let dir = tempfile::tempdir().unwrap();
    let (q, _) = Queue::open(options(dir.path())).unwrap();
    q.append(&[event(EventType::EquipmentStatus, Severity::Info, 1)])
        .await
        .unwrap();
    assert_eq!(all(&q)[0].prev_hash, None);
    q.close().await;
}

#[tokio::test]
async fn dead_letters_leave_the_queue_with_their_reason_and_can_be_requeued() {
    let dir = tempfile::tempdir().unwrap();
    let (q, _) = Queue::open(options(dir.path())).unwrap();
    q.append(&[
        event(EventType::EquipmentStatus, Severity::Info, 1),
        event(EventType::SetpointChanged, Severity::Warn, 2),
        event(EventType::EquipmentStatus, Severity::Info, 3),
    ])
    .await
    .unwrap();
    let before = all(&q);
    let report =
        SecurityEvent::new("gw-test", EventType::ForwardDeadLettered).data("seqs", vec![2]);
    let moved = q
        .dead_letter(
            vec![(2, "HTTP 400: bad event".into()), (99, "gone".into())],
            Some(&report),
        )
        .await
        .unwrap();
    assert_eq!(moved, 1);
    let left = all(&q);
    assert_eq!(
        left.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![1, 3, 4]
    );
    assert_eq!(left[2].event_type, "forward.dead_lettered");
    let dead = q.dead_letters(10).unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].seq, 2);
    assert_eq!(dead[0].reason, "HTTP 400: bad event");
    assert_eq!(
        dead[0].event, before[1],
        "stored unchanged, chain link included"
    );
    assert_eq!(q.stats().dead_letters, 1);

    assert_eq!(q.requeue(None).await.unwrap(), 1);
    assert!(q.dead_letters(10).unwrap().is_empty());
    let back = all(&q);
    assert_eq!(
        back.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![1, 2, 3, 4]
    );
    assert_eq!(back[1], before[1]);
    assert_eq!(q.stats().requeues, 1);
    q.close().await;
    let inspector = Inspector::open(dir.path()).unwrap();
    assert!(inspector.dead_letters(10).unwrap().is_empty());
}

#[tokio::test]
async fn lanes_split_alerts_from_telemetry() {
    let dir = tempfile::tempdir().unwrap();
    let (q, _) = Queue::open(options(dir.path())).unwrap();
    q.append(&[
        event(EventType::EquipmentStatus, Severity::Info, 1),
        event(EventType::SetpointChanged, Severity::Warn, 2),
        event(EventType::EquipmentStatus, Severity::Debug, 3),
    ])
    .await
    .unwrap();
    let seqs = |lane| {
        q.peek_lane(lane, None, 10)
            .unwrap()
            .iter()
            .map(|e| e.seq)
            .collect::<Vec<_>>()
    };
    assert_eq!(seqs(Lane::Alerts), vec![2]);
    assert_eq!(seqs(Lane::Telemetry), vec![1, 3]);
    assert_eq!(seqs(Lane::All), vec![1, 2, 3]);
    q.close().await;
}

/// Routine appends wait this long for their shared commit: longer than any test runs, so
/// only something else can commit them.
fn lingering(dir: &Path) -> QueueOptions {
    QueueOptions {
        routine_commit: Duration::from_secs(600),
        ..options(dir)
    }
}

fn info(n: u64) -> SecurityEvent {
    event(EventType::EquipmentMeasurement, Severity::Info, n)
}

#[test]
fn appends_with_a_warning_or_worse_commit_now_the_rest_are_routine() {
    assert_eq!(Commit::for_events(&[]), Commit::Routine);
    assert_eq!(
        Commit::for_events(&[
            info(1),
            event(EventType::EquipmentStatus, Severity::Debug, 2)
        ]),
        Commit::Routine
    );
    for severity in [Severity::Warn, Severity::Error, Severity::Critical] {
        assert_eq!(
            Commit::for_events(&[info(1), event(EventType::EquipmentStatus, severity, 2)]),
            Commit::Now
        );
    }
}

#[tokio::test]
async fn routine_appends_are_not_committed_until_something_commits_them_together() {
    let dir = tempfile::tempdir().unwrap();
    let (q, _) = Queue::open(lingering(dir.path())).unwrap();
    let before = q.stats().commits;
    let mut waiting = Vec::new();
    for n in 0..3 {
        waiting.push(q.submit(&[info(n)], None, Commit::Routine).await.unwrap());
    }
    assert!(all(&q).is_empty(), "nothing is durable before its commit");
    q.flush().await.unwrap();
    let mut seqs = Vec::new();
    for c in waiting {
        seqs.extend(c.await.unwrap());
    }
    assert_eq!(seqs, [1, 2, 3]);
    assert_eq!(all(&q).len(), 3);
    assert_eq!(q.stats().commits - before, 1, "one shared commit");
    q.close().await;
}

#[tokio::test]
async fn a_warning_commits_at_once_and_takes_the_waiting_routine_appends_along_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let (q, _) = Queue::open(lingering(dir.path())).unwrap();
    let before = q.stats().commits;
    let routine = q.submit(&[info(1)], None, Commit::Routine).await.unwrap();
    let warning = [event(EventType::SetpointChanged, Severity::Warn, 2)];
    let urgent = q
        .submit(&warning, None, Commit::for_events(&warning))
        .await
        .unwrap();
    assert_eq!(urgent.await.unwrap(), [2]);
    assert_eq!(routine.await.unwrap(), [1]);
    assert_eq!(q.stats().commits - before, 1);
    q.close().await;
}

#[tokio::test]
async fn acks_and_plain_appends_commit_at_once_with_the_waiting_routine_appends() {
    let dir = tempfile::tempdir().unwrap();
    let (q, _) = Queue::open(lingering(dir.path())).unwrap();
    let routine = q.submit(&[info(1)], None, Commit::Routine).await.unwrap();
    q.ack(Ack::UpTo(0)).await.unwrap();
    assert_eq!(routine.await.unwrap(), [1]);
    let routine = q.submit(&[info(2)], None, Commit::Routine).await.unwrap();
    q.append(&[info(3)]).await.unwrap();
    assert_eq!(routine.await.unwrap(), [2]);
    q.close().await;
}

#[tokio::test]
async fn closing_commits_the_waiting_routine_appends_and_their_state() {
    let dir = tempfile::tempdir().unwrap();
    let (q, _) = Queue::open(lingering(dir.path())).unwrap();
    let routine = q
        .submit(
            &[info(1)],
            Some(("press-01".into(), b"v1".to_vec())),
            Commit::Routine,
        )
        .await
        .unwrap();
    q.close().await;
    assert_eq!(routine.await.unwrap(), [1]);
    let (q, _) = Queue::open(options(dir.path())).unwrap();
    assert_eq!(all(&q).len(), 1);
    assert_eq!(
        q.load_state("press-01").unwrap().as_deref(),
        Some(&b"v1"[..])
    );
    q.close().await;
}

#[tokio::test]
async fn a_routine_append_is_committed_by_its_deadline_alone() {
    let dir = tempfile::tempdir().unwrap();
    let (q, _) = Queue::open(QueueOptions {
        routine_commit: Duration::from_millis(20),
        ..options(dir.path())
    })
    .unwrap();
    let routine = q.submit(&[info(1)], None, Commit::Routine).await.unwrap();
    assert_eq!(routine.await.unwrap(), [1]);
    q.close().await;
}

#[tokio::test]
async fn with_no_routine_commit_a_routine_append_commits_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let (q, _) = Queue::open(options(dir.path())).unwrap();
    let routine = q.submit(&[info(1)], None, Commit::Routine).await.unwrap();
    assert_eq!(routine.await.unwrap(), [1]);
    q.close().await;
}

#[tokio::test]
async fn a_flush_with_nothing_waiting_costs_no_commit() {
    let dir = tempfile::tempdir().unwrap();
    let (q, _) = Queue::open(options(dir.path())).unwrap();
    q.append(&[info(1)]).await.unwrap();
    let before = q.stats().commits;
    q.flush().await.unwrap();
    assert_eq!(q.stats().commits, before);
    q.close().await;
}

#[tokio::test]
async fn routine_appends_that_fill_a_commit_do_not_wait_for_their_window() {
    let dir = tempfile::tempdir().unwrap();
    let (q, _) = Queue::open(QueueOptions {
        commit_max_events: 2,
        ..lingering(dir.path())
    })
    .unwrap();
    let first = q.submit(&[info(1)], None, Commit::Routine).await.unwrap();
    let second = q.submit(&[info(2)], None, Commit::Routine).await.unwrap();
    let full = async { (first.await.unwrap(), second.await.unwrap()) };
    let seqs = tokio::time::timeout(Duration::from_secs(10), full).await;
    assert_eq!(
        seqs.expect("a full commit does not wait out the 600 s window"),
        (vec![1], vec![2])
    );
    let third = q.submit(&[info(3)], None, Commit::Routine).await.unwrap();
    assert_eq!(all(&q).len(), 2, "the next one waits for its window again");
    q.flush().await.unwrap();
    assert_eq!(third.await.unwrap(), [3]);
    q.close().await;
}

#[test]
fn a_record_holds_the_event_s_own_postcard_form_after_its_link_header() {
    // The record embeds the chain's canonical text of the maps; it must be what postcard
    // writes for the event itself, so older and newer builds read each other's records.
    let e = event(EventType::SetpointChanged, Severity::Warn, 7)
        .data(
            "nested",
            serde_json::json!({"z": [1, {"b": null, "a": "\u{1}"}], "a": 2.5}),
        )
        .context("zone", "b");
    let encoded = store::Encoded::new(&e).unwrap();
    assert_eq!(
        encoded.record[store::V2_HEADER..],
        postcard::to_stdvec(&e).unwrap()[..]
    );
    let back = store::decode(9, &encoded.record).unwrap();
    assert_eq!(back, SecurityEvent { seq: 9, ..e });
}
