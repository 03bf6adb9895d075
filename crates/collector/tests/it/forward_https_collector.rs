//! The HTTPS sink against the real collector (HTTPS ingest, PostgreSQL behind it, started by
//! crates/testkit/src/collector.rs): what the agent sends is what the collector accepts, and
//! the collector's own rejection body names the poison events the sink dead-letters.

use linesentry_testkit::collector as env;

use std::time::Duration;

use env::{Env, EnvOptions};
use linesentry_agent::buffer::{Queue, QueueOptions};
use linesentry_agent::forward::https::HttpsSettings;
use linesentry_agent::forward::https::HttpsSink;
use linesentry_agent::forward::tls::TlsSettings;
use linesentry_agent::forward::{ForwardOptions, Forwarder, Pacing};
use linesentry_collector::auth::Role;
use linesentry_common::Secret;
use linesentry_event::{EventType, SecurityEvent};
use tokio_util::sync::CancellationToken;

/// A gateway registered with the collector, its sink, and a queue holding `events`.
async fn gateway(
    env: &Env,
    id: &str,
    events: &[SecurityEvent],
) -> (tempfile::TempDir, Queue, HttpsSink) {
    let signer = env.gateway(id).await;
    let token = env.token(Role::Gateway, Some(id)).await;
    let settings = HttpsSettings {
        url: format!("{}/api/v1/ingest", env.base),
        tls: Some(TlsSettings {
            ca_file: Some(env.pki.path("ca.pem")),
            client_cert: None,
            client_key: None,
        }),
        bearer_token: Some(Secret::new(token)),
        batch_events: 40,
        timeout: Duration::from_secs(10),
    };
    let sink = HttpsSink::new(settings, signer).expect("the sink builds");
    let dir = tempfile::tempdir().expect("temporary directory");
    let (queue, _) = Queue::open(QueueOptions::new(dir.path(), id)).expect("open the queue");
    queue.append(events).await.expect("append");
    (dir, queue, sink)
}

/// Forwards until the queue is empty (20 s at most), then stops.
async fn forward_all(queue: &Queue, sink: HttpsSink, gateway_id: &str) {
    let opts = ForwardOptions {
        pacing: Pacing {
            batch_events: 100,
            replay_events_per_second: 1_000_000,
            replay_jitter: Duration::ZERO,
            ..Pacing::default()
        },
        backoff_base: Duration::from_millis(20),
        backoff_cap: Duration::from_millis(200),
        ..ForwardOptions::new(gateway_id)
    };
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(
        Forwarder::new(queue.clone(), sink, opts).run(shutdown.clone(), Duration::from_secs(2)),
    );
    // On a timeout the assertion below reports it.
    linesentry_testkit::wait_until_async(Duration::from_secs(20), async || {
        (queue.stats().depth == 0).then_some(())
    })
    .await;
    shutdown.cancel();
    task.await.expect("forwarder task").expect("forwarder");
    assert_eq!(queue.stats().depth, 0, "the queue did not drain");
}

fn events(gateway_id: &str, n: usize) -> Vec<SecurityEvent> {
    (0..n)
        .map(|i| SecurityEvent::new(gateway_id, EventType::SetpointChanged).data("n", i))
        .collect()
}

async fn count(env: &Env, sql: &str) -> i64 {
    env.db()
        .await
        .query_one(sql, &[])
        .await
        .expect("query")
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_collector_stores_every_event_the_sink_sends_with_a_verified_chain() {
    let env = Env::start(EnvOptions::default()).await;
    let (_dir, queue, sink) = gateway(&env, "gw-https-a", &events("gw-https-a", 150)).await;
    forward_all(&queue, sink, "gw-https-a").await;

    assert!(queue.dead_letters(10).expect("dead letters").is_empty());
    let stored = count(
        &env,
        "SELECT count(*) FROM security_events WHERE gateway_id = 'gw-https-a'",
    )
    .await;
    assert_eq!(stored, 150);
    let verified = count(
        &env,
        "SELECT count(*) FROM security_events WHERE gateway_id = 'gw-https-a' \
         AND verification = 'verified'",
    )
    .await;
    assert_eq!(
        verified, 150,
        "every batch signature and chain link verifies"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_the_collector_cannot_store_is_dead_lettered_by_name_and_the_rest_stored() {
    let env = Env::start(EnvOptions::default()).await;
    let mut batch = events("gw-https-b", 60);
    // PostgreSQL cannot store a NUL character: the collector names this event.
    batch[23] = batch[23].clone().data("note", "a\u{0}b");
    let (_dir, queue, sink) = gateway(&env, "gw-https-b", &batch).await;
    let poison_id = batch[23].id;
    forward_all(&queue, sink, "gw-https-b").await;

    let dead = queue.dead_letters(10).expect("dead letters");
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].event.id, poison_id);
    assert!(
        dead[0]
            .reason
            .starts_with("HTTP 400 Bad Request: invalid_events")
            && dead[0].reason.contains("NUL"),
        "{}",
        dead[0].reason
    );
    let stored = count(
        &env,
        "SELECT count(*) FROM security_events WHERE gateway_id = 'gw-https-b' \
         AND event_type = 'setpoint.changed'",
    )
    .await;
    assert_eq!(stored, 59);
    let reports = count(
        &env,
        "SELECT count(*) FROM security_events WHERE gateway_id = 'gw-https-b' \
         AND event_type = 'forward.dead_lettered'",
    )
    .await;
    assert_eq!(reports, 1);
}
