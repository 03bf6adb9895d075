//! The HTTPS sink over real sockets: a real [`Forwarder`] over a real [`Queue`] sends to a
//! small HTTPS ingest endpoint (crates/agent/tests/it/support/https_server.rs) that verifies every batch's
//! signature on its own and can be told to fail, reject, cut or refuse.

use crate::support::https_server;

use std::time::Duration;

use ed25519_dalek::SigningKey;
use https_server::{client_tls, Collector, Mode, Pki};
use linesentry_agent::buffer::{Queue, QueueOptions};
use linesentry_agent::forward::https::HttpsSettings;
use linesentry_agent::forward::https::{HttpsError, HttpsSink};
use linesentry_agent::forward::tls::TlsSettings;
use linesentry_agent::forward::{
    ForwardCounters, ForwardOptions, Forwarder, Pacing, Sink, SinkError,
};
use linesentry_common::Secret;
use linesentry_event::integrity::{event_hash, hex, BatchSigner};
use linesentry_event::{EventType, SecurityEvent};
use tokio_util::sync::CancellationToken;

const GATEWAY: &str = "gw-https-1";
/// Long enough for everything a test waits for on this shared 2-core machine.
const WITHIN: Duration = Duration::from_secs(20);

fn signer() -> BatchSigner {
    BatchSigner::new(GATEWAY, SigningKey::from_bytes(&[7u8; 32]))
}

fn settings(url: &str, tls: Option<TlsSettings>) -> HttpsSettings {
    HttpsSettings {
        url: url.to_owned(),
        tls,
        bearer_token: None,
        batch_events: 40,
        timeout: Duration::from_secs(5),
    }
}

fn sink(settings: HttpsSettings) -> HttpsSink {
    HttpsSink::new(settings, signer()).expect("the sink builds")
}

async fn trusted(pki: &Pki, mtls: bool) -> (Collector, HttpsSink) {
    let server = Collector::start(pki, signer().public_key(), mtls).await;
    let sink = sink(settings(&server.url, Some(client_tls(pki, mtls))));
    (server, sink)
}

fn events(n: usize) -> Vec<SecurityEvent> {
    (0..n)
        .map(|i| SecurityEvent::new(GATEWAY, EventType::SetpointChanged).data("n", i))
        .collect()
}

/// A queue in a temporary directory holding `batch`.
async fn queue_with(batch: &[SecurityEvent]) -> (tempfile::TempDir, Queue) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let (queue, _) = Queue::open(QueueOptions::new(dir.path(), GATEWAY)).expect("open the queue");
    queue.append(batch).await.expect("append");
    (dir, queue)
}

/// Events as the queue numbered them (seq and prev_hash set).
fn queued(queue: &Queue) -> Vec<SecurityEvent> {
    queue.peek(None, 100_000).expect("peek")
}

struct Running {
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<Result<ForwardCounters, linesentry_agent::buffer::QueueError>>,
}

impl Running {
    async fn stop(self) -> ForwardCounters {
        self.shutdown.cancel();
        self.task.await.expect("forwarder task").expect("forwarder")
    }
}

fn forward(queue: &Queue, sink: HttpsSink) -> Running {
    let opts = ForwardOptions {
        pacing: Pacing {
            batch_events: 100,
            replay_events_per_second: 1_000_000,
            replay_jitter: Duration::ZERO,
            ..Pacing::default()
        },
        backoff_base: Duration::from_millis(20),
        backoff_cap: Duration::from_millis(200),
        ..ForwardOptions::new(GATEWAY)
    };
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(
        Forwarder::new(queue.clone(), sink, opts).run(shutdown.clone(), Duration::from_secs(2)),
    );
    Running { shutdown, task }
}

async fn wait_for_empty(queue: &Queue) {
    linesentry_testkit::wait_until_async(WITHIN, async || (queue.stats().depth == 0).then_some(()))
        .await
        .unwrap_or_else(|| {
            panic!(
                "the queue did not drain within {WITHIN:?}: it still holds {} events",
                queue.stats().depth
            )
        });
}

fn ids(events: &[SecurityEvent]) -> Vec<String> {
    let mut ids: Vec<String> = events.iter().map(|e| e.id.to_string()).collect();
    ids.sort();
    ids
}

#[tokio::test]
async fn every_event_is_delivered_gzipped_and_signed_and_then_acknowledged() {
    let pki = Pki::named("deliver");
    let (server, sink) = trusted(&pki, false).await;
    let stats = sink.stats();
    let (_dir, queue) = queue_with(&events(250)).await;
    let sent = queued(&queue);
    let run = forward(&queue, sink);
    wait_for_empty(&queue).await;
    let counters = run.stop().await;

    server.assert_clean();
    assert_eq!(ids(&server.events()), ids(&sent));
    assert_eq!(counters.events, 250);
    assert_eq!(counters.dead_lettered, 0);
    // 100-event forwarder batches in requests of at most 40 events.
    let sizes = server.log(|l| l.requests.iter().map(|r| r.events).collect::<Vec<_>>());
    assert!(sizes.iter().all(|&n| n <= 40), "{sizes:?}");
    assert_eq!(sizes.iter().sum::<usize>(), 250);
    assert_eq!(
        stats
            .delivered_events
            .load(std::sync::atomic::Ordering::Relaxed),
        250
    );
    assert_eq!(
        stats.last_status.load(std::sync::atomic::Ordering::Relaxed),
        200
    );
}

#[tokio::test]
async fn delivered_events_form_an_unbroken_hash_chain_in_seq_order() {
    let pki = Pki::named("chain");
    let (server, sink) = trusted(&pki, false).await;
    let (_dir, queue) = queue_with(&events(120)).await;
    let run = forward(&queue, sink);
    wait_for_empty(&queue).await;
    run.stop().await;

    let got = server.events();
    assert_eq!(got.len(), 120);
    assert_eq!(
        got[0].prev_hash, None,
        "the store's first event starts the chain"
    );
    for pair in got.windows(2) {
        assert_eq!(pair[1].seq, pair[0].seq + 1, "seqs are consecutive");
        assert_eq!(
            pair[1].prev_hash.as_deref(),
            Some(hex(&event_hash(&pair[0])).as_str()),
            "prev_hash of seq {} links to seq {}",
            pair[1].seq,
            pair[0].seq
        );
    }
}

#[tokio::test]
async fn a_collector_answering_500_loses_nothing_once_it_recovers() {
    let pki = Pki::named("recover");
    let (server, sink) = trusted(&pki, false).await;
    server.set(|c| c.mode = Mode::Status(500, None));
    let (_dir, queue) = queue_with(&events(100)).await;
    let sent = queued(&queue);
    let run = forward(&queue, sink);
    server
        .wait_until("three failed requests", WITHIN, |l| l.requests.len() >= 3)
        .await;
    assert_eq!(
        queue.stats().depth,
        100,
        "nothing acknowledged while failing"
    );
    server.set(|c| c.mode = Mode::Normal);
    wait_for_empty(&queue).await;
    let counters = run.stop().await;

    server.assert_clean();
    assert_eq!(ids(&server.events()), ids(&sent));
    assert!(counters.failures >= 3, "{counters:?}");
    assert_eq!(counters.dead_lettered, 0);
    assert!(queue.dead_letters(100).expect("dead letters").is_empty());
}

#[tokio::test]
async fn a_poison_event_named_by_the_collector_is_dead_lettered_alone_at_once() {
    let pki = Pki::named("named");
    let (server, sink) = trusted(&pki, false).await;
    let mut batch = events(60);
    batch[17] = batch[17].clone().data("poison", true);
    let (_dir, queue) = queue_with(&batch).await;
    let sent = queued(&queue);
    let poison = sent[17].clone();
    let run = forward(&queue, sink);
    wait_for_empty(&queue).await;
    let counters = run.stop().await;

    assert_poison_handled(&server, &queue, &sent, &poison);
    assert_eq!(counters.dead_lettered, 1);
    let rejected = server.statuses().iter().filter(|&&s| s == 400).count();
    assert_eq!(rejected, 1, "the named culprit needs no splitting");
}

#[tokio::test]
async fn a_poison_event_the_collector_does_not_name_is_found_by_splitting_the_batch() {
    let pki = Pki::named("unnamed");
    let (server, sink) = trusted(&pki, false).await;
    server.set(|c| c.name_culprits = false);
    let mut batch = events(60);
    batch[41] = batch[41].clone().data("poison", true);
    let (_dir, queue) = queue_with(&batch).await;
    let sent = queued(&queue);
    let poison = sent[41].clone();
    let run = forward(&queue, sink);
    wait_for_empty(&queue).await;
    let counters = run.stop().await;

    assert_poison_handled(&server, &queue, &sent, &poison);
    assert_eq!(counters.dead_lettered, 1);
}

/// Exactly `poison` is in the dead-letter table with the collector's reason, every other
/// event was delivered, and so was the `forward.dead_lettered` event naming it.
fn assert_poison_handled(
    server: &Collector,
    queue: &Queue,
    sent: &[SecurityEvent],
    poison: &SecurityEvent,
) {
    server.assert_clean();
    let dead = queue.dead_letters(100).expect("dead letters");
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].seq, poison.seq);
    assert_eq!(dead[0].event.id, poison.id);
    assert!(
        dead[0].reason.contains("HTTP 400") && dead[0].reason.contains("invalid_events"),
        "{}",
        dead[0].reason
    );
    let got = server.events();
    let healthy: Vec<SecurityEvent> = sent.iter().filter(|e| e.id != poison.id).cloned().collect();
    let delivered: Vec<SecurityEvent> = got
        .iter()
        .filter(|e| e.event_type != "forward.dead_lettered")
        .cloned()
        .collect();
    assert_eq!(ids(&delivered), ids(&healthy));
    let reports: Vec<&SecurityEvent> = got
        .iter()
        .filter(|e| e.event_type == "forward.dead_lettered")
        .collect();
    assert_eq!(reports.len(), 1, "one forward.dead_lettered event");
    assert_eq!(
        reports[0].event_data["ids"],
        serde_json::json!([poison.id.to_string()])
    );
    assert_eq!(reports[0].event_data["sink"], "https");
}

#[tokio::test]
async fn an_event_larger_than_the_collector_accepts_is_dead_lettered_and_the_rest_delivered() {
    let pki = Pki::named("large");
    let (server, sink) = trusted(&pki, false).await;
    let mut batch = events(30);
    batch[12] = batch[12].clone().data("blob", "x".repeat(20_000));
    server.set(|c| c.max_bytes = Some(16_000));
    let (_dir, queue) = queue_with(&batch).await;
    let sent = queued(&queue);
    let run = forward(&queue, sink);
    wait_for_empty(&queue).await;
    run.stop().await;

    server.assert_clean();
    let dead = queue.dead_letters(100).expect("dead letters");
    assert_eq!(
        dead.iter().map(|d| d.seq).collect::<Vec<_>>(),
        vec![sent[12].seq]
    );
    assert!(dead[0].reason.contains("HTTP 413"), "{}", dead[0].reason);
    let delivered = server
        .events()
        .into_iter()
        .filter(|e| e.event_type != "forward.dead_lettered")
        .count();
    assert_eq!(delivered, 29);
}

#[tokio::test]
async fn batches_above_the_collectors_event_limit_are_split_and_nothing_is_dead_lettered() {
    let pki = Pki::named("limit");
    let (server, sink) = trusted(&pki, false).await;
    server.set(|c| c.max_events = Some(7));
    let (_dir, queue) = queue_with(&events(90)).await;
    let sent = queued(&queue);
    let run = forward(&queue, sink);
    wait_for_empty(&queue).await;
    let counters = run.stop().await;

    server.assert_clean();
    assert_eq!(ids(&server.events()), ids(&sent));
    assert_eq!(counters.dead_lettered, 0);
    assert!(server.statuses().contains(&413));
}

#[tokio::test]
async fn a_refused_token_dead_letters_nothing_and_everything_goes_once_it_is_accepted() {
    let pki = Pki::named("token");
    let server = Collector::start(&pki, signer().public_key(), false).await;
    server.set(|c| c.token = Some("the-right-token".into()));
    let mut s = settings(&server.url, Some(client_tls(&pki, false)));
    s.bearer_token = Some(Secret::new("an-old-token"));
    let sink = sink(s);
    let stats = sink.stats();
    let (_dir, queue) = queue_with(&events(50)).await;
    let sent = queued(&queue);
    let run = forward(&queue, sink);
    server
        .wait_until("three refused requests", WITHIN, |l| l.requests.len() >= 3)
        .await;
    // The server counts a request when it answers; the sink counts the failure once the
    // answer has come back, a moment later.
    let refused = || {
        stats
            .auth_failures
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    linesentry_testkit::wait_until_async(Duration::from_secs(10), async || {
        (refused() >= 3).then_some(())
    })
    .await
    .unwrap_or_else(|| panic!("the sink counted {} refusals within 10 s", refused()));
    assert!(server.statuses().iter().all(|&s| s == 401));
    assert_eq!(queue.stats().depth, 50);
    assert!(queue.dead_letters(10).expect("dead letters").is_empty());

    // The collector is told about the gateway's token.
    server.set(|c| c.token = Some("an-old-token".into()));
    wait_for_empty(&queue).await;
    let counters = run.stop().await;
    server.assert_clean();
    assert_eq!(ids(&server.events()), ids(&sent));
    assert_eq!(counters.dead_lettered, 0);
    assert_eq!(counters.rejected, 0);
}

#[tokio::test]
async fn mutual_tls_required_by_the_collector_works_with_the_gateways_client_certificate() {
    let pki = Pki::named("mtls");
    let (server, sink) = trusted(&pki, true).await;
    let (_dir, queue) = queue_with(&events(30)).await;
    let sent = queued(&queue);
    let run = forward(&queue, sink);
    wait_for_empty(&queue).await;
    run.stop().await;
    server.assert_clean();
    assert_eq!(ids(&server.events()), ids(&sent));
    assert_eq!(server.log(|l| l.handshake_failures), 0);
}

#[tokio::test]
async fn a_gateway_without_a_client_certificate_is_refused_transiently() {
    let pki = Pki::named("no-cert");
    let server = Collector::start(&pki, signer().public_key(), true).await;
    let mut sink = sink(settings(&server.url, Some(client_tls(&pki, false))));
    let batch = numbered(5);
    let err = sink.send(&batch).await.expect_err("refused");
    assert!(
        matches!(&err, SinkError::Transient { delivered, .. } if delivered.is_empty()),
        "{err}"
    );
    assert!(server.events().is_empty());
}

#[tokio::test]
async fn an_untrusted_server_certificate_fails_transiently_with_a_clear_reason() {
    let pki = Pki::named("real");
    let other = Pki::named("other");
    let server = Collector::start(&pki, signer().public_key(), false).await;
    let mut sink = sink(settings(&server.url, Some(client_tls(&other, false))));
    let err = sink.send(&numbered(3)).await.expect_err("untrusted");
    let SinkError::Transient { reason, .. } = &err else {
        panic!("not transient: {err}");
    };
    assert!(
        reason.contains("certificate") && reason.contains("127.0.0.1"),
        "the reason names the certificate problem and the host: {reason}"
    );
    assert!(server.events().is_empty());
    server
        .wait_until("the server saw the handshake fail", WITHIN, |l| {
            l.handshake_failures == 1
        })
        .await;
}

/// Events with seqs, as the sink gets them from a forwarder (no queue needed).
fn numbered(n: usize) -> Vec<SecurityEvent> {
    events(n)
        .into_iter()
        .zip(1u64..)
        .map(|(mut e, seq)| {
            e.seq = seq;
            e
        })
        .collect()
}

#[tokio::test]
async fn garbage_cut_connections_and_cut_answers_are_transient_and_then_delivered() {
    let pki = Pki::named("garbage");
    let (server, mut sink) = trusted(&pki, false).await;
    let batch = numbered(10);
    for mode in [Mode::Garbage, Mode::Cut, Mode::CutMidAnswer] {
        server.set(|c| c.mode = mode.clone());
        let err = sink.send(&batch).await.expect_err("not delivered");
        let SinkError::Transient {
            delivered, reason, ..
        } = &err
        else {
            panic!("{mode:?}: not transient: {err}");
        };
        assert!(delivered.is_empty(), "{mode:?}");
        assert!(reason.starts_with("127.0.0.1:"), "{mode:?}: {reason}");
    }
    assert_eq!(server.log(|l| l.misbehaved), 3);
    server.set(|c| c.mode = Mode::Normal);
    sink.send(&batch).await.expect("delivered after recovery");
    server.assert_clean();
    assert_eq!(ids(&server.events()), ids(&batch));
}

#[tokio::test]
async fn a_collector_slower_than_the_timeout_is_a_transient_failure() {
    let pki = Pki::named("slow");
    let server = Collector::start(&pki, signer().public_key(), false).await;
    server.set(|c| c.mode = Mode::Stall(Duration::from_secs(3)));
    let mut s = settings(&server.url, Some(client_tls(&pki, false)));
    s.timeout = Duration::from_millis(300);
    let mut sink = sink(s);
    let started = std::time::Instant::now();
    let err = sink.send(&numbered(2)).await.expect_err("timed out");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    let SinkError::Transient { reason, .. } = &err else {
        panic!("not transient: {err}");
    };
    assert!(reason.contains("no answer within 300 ms"), "{reason}");
}

#[tokio::test]
async fn a_batch_larger_than_one_request_reports_what_earlier_requests_delivered() {
    let pki = Pki::named("partial");
    let server = Collector::start(&pki, signer().public_key(), false).await;
    let mut s = settings(&server.url, Some(client_tls(&pki, false)));
    s.batch_events = 10;
    let mut sink = sink(s);
    let mut batch = numbered(35);
    batch[25] = batch[25].clone().data("poison", true);
    let err = sink.send(&batch).await.expect_err("rejected");
    let SinkError::Rejected {
        culprits,
        delivered,
        ..
    } = &err
    else {
        panic!("not a rejection: {err}");
    };
    assert_eq!(delivered, &(1..=20).collect::<Vec<u64>>());
    assert_eq!(culprits, &vec![26]);

    // Two requests accepted, then the collector fails: the first 20 are reported delivered.
    server.set(|c| c.fail_after = Some((2, 503)));
    let err = sink.send(&numbered(35)).await.expect_err("failed");
    let SinkError::Transient { delivered, .. } = &err else {
        panic!("not transient: {err}");
    };
    assert_eq!(delivered, &(1..=20).collect::<Vec<u64>>());
}

#[tokio::test]
async fn retry_after_from_a_throttling_collector_delays_the_next_request() {
    let pki = Pki::named("throttle");
    let (server, mut sink) = trusted(&pki, false).await;
    server.set(|c| c.mode = Mode::Status(429, Some("1".into())));
    let batch = numbered(2);
    let err = sink.send(&batch).await.expect_err("throttled");
    assert!(matches!(err, SinkError::Transient { .. }), "{err}");
    server.set(|c| c.mode = Mode::Normal);
    sink.send(&batch).await.expect("delivered");
    let gap = server.log(|l| l.requests[1].at - l.requests[0].at);
    assert!(
        gap >= Duration::from_millis(900),
        "next request after {gap:?}"
    );
}

#[tokio::test]
async fn plain_http_to_a_loopback_collector_works() {
    let server = Collector::start_plain(signer().public_key()).await;
    let mut sink = sink(settings(&server.url, None));
    let batch = numbered(5);
    sink.send(&batch).await.expect("delivered");
    server.assert_clean();
    assert_eq!(ids(&server.events()), ids(&batch));
}

#[test]
fn unreadable_tls_files_and_plain_http_to_a_remote_host_fail_at_construction() {
    let missing = TlsSettings {
        ca_file: Some("/nonexistent/ca.pem".into()),
        client_cert: None,
        client_key: None,
    };
    let err = HttpsSink::new(
        settings("https://collector.example/ingest", Some(missing)),
        signer(),
    )
    .expect_err("missing CA file");
    assert!(matches!(err, HttpsError::Tls(_)), "{err}");
    assert!(err.to_string().contains("/nonexistent/ca.pem"), "{err}");

    let err = HttpsSink::new(settings("http://collector.example/ingest", None), signer())
        .expect_err("plain http to a remote host");
    assert!(matches!(err, HttpsError::Url { .. }), "{err}");
}
