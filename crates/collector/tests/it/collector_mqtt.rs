//! MQTT ingest end to end: test publisher -> Mosquitto -> collector -> PostgreSQL.

use linesentry_testkit::collector as env;

use std::sync::atomic::Ordering;
use std::time::Duration;

use env::{events_topic, Chain, Env, EnvOptions, Publisher};
use linesentry_event::EventType;
use serde_json::{json, Value};

fn mqtt_options(port: u16, client_id: &str) -> EnvOptions {
    EnvOptions {
        mqtt_port: Some(port),
        mqtt_client_id: client_id.into(),
        ..EnvOptions::default()
    }
}

fn mqtt5_options(port: u16, client_id: &str) -> EnvOptions {
    EnvOptions {
        mqtt_protocol: Some("5"),
        ..mqtt_options(port, client_id)
    }
}

async fn count(env: &Env, sql: &str) -> i64 {
    env.db().await.query_one(sql, &[]).await.unwrap().get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_published_batch_is_committed_and_a_second_delivery_changes_nothing() {
    published_batch_committed_once(mqtt_options).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_mqtt_5_a_published_batch_is_committed_and_a_second_delivery_changes_nothing() {
    published_batch_committed_once(mqtt5_options).await;
}

async fn published_batch_committed_once(options: fn(u16, &str) -> EnvOptions) {
    let broker = env::mosquitto();
    let env = Env::start(options(broker.port(), "collector-1")).await;
    let signer = env.gateway("gw-1").await;
    let events = Chain::new("gw-1").events(EventType::SetpointChanged, 5);
    let topic = events_topic("gw-1", &events[0]);
    let publisher = Publisher::connect(broker.port(), "gw-1").await;
    let body = signer.seal(&events);
    publisher.publish(&topic, body.clone(), false).await;
    assert_eq!(
        env.wait_count(
            "SELECT count(*) FROM security_events WHERE gateway_id = 'gw-1' AND seq IS NOT NULL",
            5
        )
        .await,
        5
    );
    publisher.publish(&topic, body, false).await;
    publisher.wait_acked(2).await;
    let counters = env.collector().counters();
    linesentry_testkit::wait_until_async(Duration::from_secs(5), async || {
        (counters.duplicates.load(Ordering::Relaxed) == 5).then_some(())
    })
    .await;
    assert_eq!(
        counters.duplicates.load(Ordering::Relaxed),
        5,
        "5 duplicates counted within 5 s"
    );
    assert_eq!(
        count(&env, "SELECT count(*) FROM security_events WHERE gateway_id = 'gw-1' AND verification = 'verified'").await,
        5
    );
    assert_eq!(
        count(&env, "SELECT sum(count)::int8 FROM event_metrics WHERE granularity = 'hour' AND gateway_id = 'gw-1'").await,
        5
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_is_acknowledged_only_after_commit_so_a_crash_before_commit_loses_nothing() {
    crash_before_commit_loses_nothing(mqtt_options).await;
}

/// MQTT 5 keeps a session past a disconnect only with a session expiry interval.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_mqtt_5_the_session_outlives_a_crash_before_commit_and_nothing_is_lost() {
    crash_before_commit_loses_nothing(mqtt5_options).await;
}

async fn crash_before_commit_loses_nothing(options: fn(u16, &str) -> EnvOptions) {
    let broker = env::mosquitto();
    let mut first = Env::start(options(broker.port(), "collector-crash")).await;
    let signer = first.gateway("gw-1").await;
    let events = Chain::new("gw-1").events(EventType::ModeChanged, 3);
    // Hold the events table so the collector cannot commit.
    let mut blocker = first.db().await;
    let lock = blocker.transaction().await.unwrap();
    lock.batch_execute("LOCK TABLE security_events IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let publisher = Publisher::connect(broker.port(), "gw-1").await;
    publisher
        .publish(
            &events_topic("gw-1", &events[0]),
            signer.seal(&events),
            false,
        )
        .await;
    publisher.wait_acked(1).await;
    // The collector has the message and is stuck in its transaction: not committing can
    // only be observed over a while.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        first.collector().counters().batches.load(Ordering::Relaxed),
        0
    );
    first.crash();
    lock.rollback().await.unwrap();
    drop(blocker);
    // A new collector with the same client id resumes the session; the broker delivers the
    // unacknowledged message again.
    let second = Env::start(EnvOptions {
        database: Some(first.db_url.clone()),
        ..options(broker.port(), "collector-crash")
    })
    .await;
    assert_eq!(
        second
            .wait_count("SELECT count(*) FROM security_events WHERE gateway_id = 'gw-1' AND seq IS NOT NULL", 3)
            .await,
        3
    );
    // No duplicate may follow: an absence, observed over a while.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        count(
            &second,
            "SELECT count(*) FROM security_events WHERE gateway_id = 'gw-1' AND seq IS NOT NULL"
        )
        .await,
        3
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collectors_in_a_share_group_split_the_messages_and_store_each_event_once() {
    let broker = env::mosquitto();
    let a = Env::start(EnvOptions {
        share_group: Some("collectors".into()),
        ..mqtt_options(broker.port(), "collector-a")
    })
    .await;
    let b = Env::start(EnvOptions {
        share_group: Some("collectors".into()),
        database: Some(a.db_url.clone()),
        ..mqtt_options(broker.port(), "collector-b")
    })
    .await;
    let mut signers = Vec::new();
    for g in 0..4 {
        signers.push(a.gateway(&format!("gw-{g}")).await);
    }
    let publisher = Publisher::connect(broker.port(), "fleet").await;
    let mut chains: Vec<Chain> = (0..4).map(|g| Chain::new(&format!("gw-{g}"))).collect();
    for _round in 0..10 {
        for (g, chain) in chains.iter_mut().enumerate() {
            let events = chain.events(EventType::EquipmentStatus, 5);
            publisher
                .publish(
                    &events_topic(&format!("gw-{g}"), &events[0]),
                    signers[g].seal(&events),
                    false,
                )
                .await;
        }
    }
    assert_eq!(
        a.wait_count(
            "SELECT count(*) FROM security_events WHERE seq IS NOT NULL",
            200
        )
        .await,
        200
    );
    let (ta, tb) = (
        a.collector().counters().batches.load(Ordering::Relaxed),
        b.collector().counters().batches.load(Ordering::Relaxed),
    );
    assert_eq!(ta + tb, 40, "each message to one collector");
    assert!(ta > 0 && tb > 0, "split {ta} / {tb}");
    // Interleaved delivery to two collectors still leaves every chain verified.
    assert_eq!(
        a.wait_count("SELECT count(*) FROM security_events WHERE seq IS NOT NULL AND verification = 'verified'", 200)
            .await,
        200
    );
}

// One scenario, told in order: four bad messages, one good, then a new session.
#[allow(clippy::too_many_lines)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_malformed_and_misrouted_messages_are_recorded_acknowledged_and_do_not_block_the_queue(
) {
    let broker = env::mosquitto();
    let mut env = Env::start(mqtt_options(broker.port(), "collector-bad")).await;
    let signer = env.gateway("gw-1").await;
    env.gateway("gw-2").await;
    let publisher = Publisher::connect(broker.port(), "attacker").await;
    let mut chain = Chain::new("gw-1");

    let mut forged: Value =
        serde_json::from_slice(&signer.seal(&chain.events(EventType::SetpointChanged, 1))).unwrap();
    forged["events"][0]["event_data"]["value"] = json!(-1);
    publisher
        .publish(
            "linesentry/v1/site-a/gw-1/events/warn/setpoint.changed",
            serde_json::to_vec(&forged).unwrap(),
            false,
        )
        .await;
    publisher
        .publish(
            "linesentry/v1/site-a/gw-1/events/warn/setpoint.changed",
            b"not json at all".to_vec(),
            false,
        )
        .await;
    let stray = ed25519_dalek::SigningKey::from_bytes(&[5; 32]);
    let unknown = linesentry_event::integrity::BatchSigner::new("gw-9", stray);
    publisher
        .publish(
            "linesentry/v1/site-a/gw-9/events/info/equipment.status",
            unknown.seal(&Chain::new("gw-9").events(EventType::EquipmentStatus, 1)),
            false,
        )
        .await;
    // gw-1's genuine batch published on gw-2's topic.
    let misrouted = chain.events(EventType::SetpointChanged, 1);
    publisher
        .publish(
            "linesentry/v1/site-a/gw-2/events/warn/setpoint.changed",
            signer.seal(&misrouted),
            false,
        )
        .await;
    // And a genuine one behind them all.
    let mut fresh = Chain::new("gw-1");
    let good = fresh.events(EventType::SetpointChanged, 2);
    publisher
        .publish(&events_topic("gw-1", &good[0]), signer.seal(&good), false)
        .await;

    assert_eq!(
        env.wait_count(
            "SELECT count(*) FROM security_events WHERE seq IS NOT NULL",
            2
        )
        .await,
        2
    );
    assert_eq!(
        env.wait_count("SELECT count(*) FROM quarantine", 4).await,
        4
    );
    let db = env.db().await;
    let kinds: Vec<(String, String, String)> = db
        .query(
            "SELECT event_type, event_data->>'source_gateway', event_data->>'kind' FROM security_events \
             WHERE event_type IN ('security.violation', 'ingest.rejected') \
             AND gateway_id = 'collector-test' ORDER BY 3",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(
        kinds,
        [
            (
                "security.violation".into(),
                "gw-1".into(),
                "bad_signature".into()
            ),
            (
                "security.violation".into(),
                "gw-1".into(),
                "gateway_mismatch".into()
            ),
            ("ingest.rejected".into(), "gw-1".into(), "malformed".into()),
            (
                "security.violation".into(),
                "gw-9".into(),
                "unknown_gateway".into()
            ),
        ]
    );
    // Every message was acknowledged: a new session of the same client gets nothing again.
    env.stop().await;
    let again = Env::start(EnvOptions {
        database: Some(env.db_url.clone()),
        ..mqtt_options(broker.port(), "collector-bad")
    })
    .await;
    let one_more = fresh.events(EventType::SetpointChanged, 1);
    publisher
        .publish(
            &events_topic("gw-1", &one_more[0]),
            signer.seal(&one_more),
            false,
        )
        .await;
    assert_eq!(
        again
            .wait_count(
                "SELECT count(*) FROM security_events WHERE seq IS NOT NULL",
                3
            )
            .await,
        3
    );
    let c = again.collector().counters();
    assert_eq!(
        c.batches.load(Ordering::Relaxed),
        1,
        "only the new message was delivered"
    );
    assert_eq!(c.snapshot()["refused"], json!({}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateways_retained_status_is_kept_and_each_change_of_state_is_an_event() {
    let broker = env::mosquitto();
    let env = Env::start(mqtt_options(broker.port(), "collector-status")).await;
    env.gateway("gw-1").await;
    let publisher = Publisher::connect(broker.port(), "gw-1").await;
    let topic = "linesentry/v1/site-a/gw-1/status";
    let online = json!({"state": "online", "version": "0.1.0", "config_digest": "abc"});
    publisher
        .publish(topic, serde_json::to_vec(&online).unwrap(), true)
        .await;
    assert_eq!(
        env.wait_count("SELECT count(*) FROM gateways WHERE status = 'online'", 1)
            .await,
        1
    );
    publisher
        .publish(topic, serde_json::to_vec(&online).unwrap(), true)
        .await;
    publisher
        .publish(
            topic,
            serde_json::to_vec(&json!({"state": "offline"})).unwrap(),
            true,
        )
        .await;
    assert_eq!(
        env.wait_count("SELECT count(*) FROM security_events WHERE event_type = 'gateway.offline' AND severity = 'warn'", 1)
            .await,
        1
    );
    assert_eq!(
        count(
            &env,
            "SELECT count(*) FROM security_events WHERE event_type = 'gateway.online'"
        )
        .await,
        1,
        "the repeated online status is not a change"
    );
    let detail: Value = env
        .db()
        .await
        .query_one(
            "SELECT status_detail FROM gateways WHERE gateway_id = 'gw-1'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(detail["state"], "offline");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_collector_reconnects_after_the_broker_restarts() {
    let mut broker = env::mosquitto();
    let env = Env::start(mqtt_options(broker.port(), "collector-reconnect")).await;
    let signer = env.gateway("gw-1").await;
    let mut chain = Chain::new("gw-1");
    {
        let publisher = Publisher::connect(broker.port(), "gw-1").await;
        let events = chain.events(EventType::EquipmentStatus, 2);
        publisher
            .publish(
                &events_topic("gw-1", &events[0]),
                signer.seal(&events),
                false,
            )
            .await;
        assert_eq!(
            env.wait_count(
                "SELECT count(*) FROM security_events WHERE seq IS NOT NULL",
                2
            )
            .await,
            2
        );
    }
    let log_before = broker.log();
    broker.restart().expect("broker restarts");
    // The broker lost every session (no persistence): the collector connects again (a new
    // line in the broker's log, which may start afresh; the flag alone may still be the old
    // one) and subscribes.
    linesentry_testkit::wait_until(Duration::from_secs(33), || {
        let log = broker.log();
        let since_restart = log.strip_prefix(log_before.as_str()).unwrap_or(&log);
        since_restart
            .contains("as collector-reconnect")
            .then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "the collector did not connect to the restarted broker within 33 s: {}",
            broker.log()
        )
    });
    linesentry_testkit::wait_until_async(Duration::from_secs(30), async || {
        env.collector().mqtt_subscribed().then_some(())
    })
    .await;
    assert!(env.collector().mqtt_subscribed(), "subscribed again");
    let publisher = Publisher::connect(broker.port(), "gw-1").await;
    let events = chain.events(EventType::EquipmentStatus, 2);
    publisher
        .publish(
            &events_topic("gw-1", &events[0]),
            signer.seal(&events),
            false,
        )
        .await;
    assert_eq!(
        env.wait_count(
            "SELECT count(*) FROM security_events WHERE seq IS NOT NULL",
            4
        )
        .await,
        4
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_collector_subscribes_over_tls_trusting_only_the_configured_ca() {
    let pki = env::Pki::new();
    let broker = env::mosquitto_tls(&pki);
    let tls_port = broker.tls_port().expect("a TLS listener");
    let env = Env::start(EnvOptions {
        mqtt_port: Some(tls_port),
        mqtt_ca: Some(pki.path("ca.pem")),
        ..mqtt_options(0, "collector-tls")
    })
    .await;
    let signer = env.gateway("gw-1").await;
    // The gateway publishes on the plain listener; the collector reads over TLS.
    let publisher = Publisher::connect(broker.port(), "gw-1").await;
    let mut chain = Chain::new("gw-1");
    let events = chain.events(EventType::SetpointChanged, 3);
    publisher
        .publish(
            &events_topic("gw-1", &events[0]),
            signer.seal(&events),
            false,
        )
        .await;
    assert_eq!(
        env.wait_count(
            "SELECT count(*) FROM security_events WHERE seq IS NOT NULL",
            3
        )
        .await,
        3
    );
    // A collector trusting another CA does not get the broker's messages.
    let other = env::Pki::new();
    let stranger = Env::start(EnvOptions {
        mqtt_port: Some(tls_port),
        mqtt_ca: Some(other.path("ca.pem")),
        database: Some(env.db_url.clone()),
        wait_subscribed: false,
        ..mqtt_options(0, "collector-stranger")
    })
    .await;
    let more = chain.events(EventType::SetpointChanged, 1);
    publisher
        .publish(&events_topic("gw-1", &more[0]), signer.seal(&more), false)
        .await;
    // The trusted collector gets it; the one trusting another CA never has a session.
    assert_eq!(
        env.wait_count(
            "SELECT count(*) FROM security_events WHERE seq IS NOT NULL",
            4
        )
        .await,
        4
    );
    // Never having a session can only be observed over a while.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        stranger.collector().counters().snapshot()["batches"],
        0,
        "no TLS session with an untrusted broker"
    );
    assert!(!broker.log().contains("as collector-stranger"));
}
