//! HTTPS ingest into a real PostgreSQL: integrity, idempotence, bad input, the chain.

use linesentry_testkit::collector as env;

use std::time::Duration;

use env::{Chain, Env, EnvOptions};
use linesentry_collector::auth::Role;
use linesentry_collector::config::Retention;
use linesentry_collector::maintenance::{add_months, Housekeeping, Partitions};
use linesentry_collector::migrate;
use linesentry_event::integrity::{event_hash, hex};
use linesentry_event::{EventType, SecurityEvent};
use serde_json::{json, Value};

async fn count(env: &Env, sql: &str) -> i64 {
    env.db().await.query_one(sql, &[]).await.unwrap().get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_batch_over_https_is_stored_once_with_every_field_and_a_verified_chain() {
    let env = Env::start(EnvOptions::default()).await;
    let signer = env.gateway("gw-1").await;
    let token = env.token(Role::Gateway, Some("gw-1")).await;
    let mut chain = Chain::new("gw-1");
    let mut events = chain.events(EventType::SetpointChanged, 3);
    events[1].user_id = Some("operator7".into());
    events[1].source_ip = Some("10.0.0.5".parse().unwrap());
    events[1].correlation_id = Some(uuid::Uuid::now_v7());
    // Re-link after editing event 1 (the agent fills these in the store's commit).
    let mut chain = Chain::new("gw-1");
    let events: Vec<SecurityEvent> = events.into_iter().map(|e| chain.link(e)).collect();
    let body = signer.seal(&events);

    let (status, reply) = env.post(Some(&token), body.clone(), true).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["accepted"], 3);
    assert_eq!(reply["verification"]["verified"], 3);

    let db = env.db().await;
    let row = db
        .query_one(
            "SELECT event_type, event_data, context, user_id, host(source_ip), severity, gateway_id,
                    station_id, seq, prev_hash, verification, correlation_id, processed, \"timestamp\"
             FROM security_events WHERE id = $1",
            &[&events[1].id],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "setpoint.changed");
    assert_eq!(row.get::<_, Value>(1)["value"], 181.0);
    assert_eq!(row.get::<_, Value>(2)["source"], "modbus");
    assert_eq!(
        row.get::<_, Option<String>>(3).as_deref(),
        Some("operator7")
    );
    assert_eq!(row.get::<_, Option<String>>(4).as_deref(), Some("10.0.0.5"));
    assert_eq!(row.get::<_, String>(5), "warn");
    assert_eq!(row.get::<_, String>(6), "gw-1");
    assert_eq!(row.get::<_, Option<String>>(7).as_deref(), Some("press-01"));
    assert_eq!(row.get::<_, Option<i64>>(8), Some(2));
    assert_eq!(row.get::<_, Option<String>>(9), events[1].prev_hash);
    assert_eq!(row.get::<_, String>(10), "verified");
    assert_eq!(
        row.get::<_, Option<uuid::Uuid>>(11),
        events[1].correlation_id
    );
    assert!(row.get::<_, bool>(12));
    assert_eq!(
        row.get::<_, chrono::DateTime<chrono::Utc>>(13)
            .timestamp_micros(),
        events[1].timestamp.as_micros()
    );

    // The same batch again, identity encoding this time: nothing changes.
    let (status, reply) = env.post(Some(&token), body, false).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["accepted"], 0);
    assert_eq!(reply["duplicates"], 3);
    assert_eq!(
        count(
            &env,
            "SELECT count(*) FROM security_events WHERE gateway_id = 'gw-1'"
        )
        .await,
        3
    );
    assert_eq!(
        count(&env, "SELECT sum(count)::int8 FROM event_metrics WHERE granularity = 'hour' AND gateway_id = 'gw-1'").await,
        3
    );
    assert_eq!(
        count(&env, "SELECT sum(count)::int8 FROM event_metrics WHERE granularity = 'day' AND gateway_id = 'gw-1'").await,
        3
    );
    let gw = db
        .query_one("SELECT events_total, last_seq, last_seen IS NOT NULL FROM gateways WHERE gateway_id = 'gw-1'", &[])
        .await
        .unwrap();
    assert_eq!(gw.get::<_, i64>(0), 3);
    assert_eq!(gw.get::<_, Option<i64>>(1), Some(3));
    assert!(gw.get::<_, bool>(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_with_a_bad_signature_is_quarantined_and_reported_once_and_never_stored() {
    let env = Env::start(EnvOptions::default()).await;
    let signer = env.gateway("gw-1").await;
    let token = env.token(Role::Gateway, Some("gw-1")).await;
    let events = Chain::new("gw-1").events(EventType::SetpointChanged, 2);
    let mut forged: Value = serde_json::from_slice(&signer.seal(&events)).unwrap();
    // A value changed after signing.
    forged["events"][1]["event_data"]["value"] = json!(999.0);
    let body = serde_json::to_vec(&forged).unwrap();

    for _ in 0..2 {
        let (status, reply) = env.post(Some(&token), body.clone(), true).await;
        assert_eq!(status, 400, "{reply}");
        assert_eq!(reply["error"], "bad_signature");
        assert!(reply["quarantine_id"].is_string());
    }
    assert_eq!(
        count(
            &env,
            "SELECT count(*) FROM security_events WHERE seq IS NOT NULL"
        )
        .await,
        0
    );
    assert_eq!(
        count(
            &env,
            "SELECT count(*) FROM quarantine WHERE kind = 'bad_signature'"
        )
        .await,
        1
    );
    let db = env.db().await;
    let v = db
        .query(
            "SELECT event_data, gateway_id, severity FROM security_events WHERE event_type = 'security.violation'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(v.len(), 1, "reported once, not once per delivery");
    let data: Value = v[0].get(0);
    assert_eq!(data["category"], "integrity");
    assert_eq!(data["kind"], "bad_signature");
    assert_eq!(data["seqs"], json!([1, 2]));
    assert_eq!(
        data["source_gateway"], "gw-1",
        "about the gateway it claims to be"
    );
    assert_eq!(
        v[0].get::<_, String>(1),
        "collector-test",
        "the collector's report, filed under its id"
    );
    assert_eq!(v[0].get::<_, String>(2), "error");
    assert_eq!(
        count(
            &env,
            "SELECT rejected_batches FROM gateways WHERE gateway_id = 'gw-1'"
        )
        .await,
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_events_are_named_by_index_and_nothing_of_their_batch_is_written() {
    let env = Env::start(EnvOptions::default()).await;
    let signer = env.gateway("gw-1").await;
    let token = env.token(Role::Gateway, Some("gw-1")).await;
    let mut chain = Chain::new("gw-1");
    let mut events = chain.events(EventType::SetpointChanged, 4);
    events[2].event_data.insert("tag".into(), "a\u{0}b".into());
    let mut v: Value = serde_json::from_slice(&signer.seal(&events)).unwrap();
    v["events"][3]["severity"] = "fatal".into();
    let (status, reply) = env
        .post(Some(&token), serde_json::to_vec(&v).unwrap(), true)
        .await;
    assert_eq!(status, 400, "{reply}");
    assert_eq!(reply["error"], "invalid_events");
    let bad: Vec<(u64, u64)> = reply["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| (b["index"].as_u64().unwrap(), b["seq"].as_u64().unwrap()))
        .collect();
    assert_eq!(
        bad,
        [(3, 4)],
        "serde refuses the unknown severity first: {reply}"
    );
    // Fix the severity: now the NUL character is the only fault, at index 2.
    let (status, reply) = env.post(Some(&token), signer.seal(&events), true).await;
    assert_eq!(status, 400, "{reply}");
    assert_eq!(reply["events"][0]["index"], 2);
    assert_eq!(reply["events"][0]["id"], events[2].id.to_string());
    assert!(reply["events"][0]["reason"]
        .as_str()
        .unwrap()
        .contains("NUL"));
    assert_eq!(
        count(
            &env,
            "SELECT count(*) FROM security_events WHERE seq IS NOT NULL"
        )
        .await,
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_malformed_wrong_version_and_oddly_encoded_batches_get_a_clear_4xx() {
    let env = Env::start(EnvOptions {
        max_body_bytes: 64 * 1024,
        ..EnvOptions::default()
    })
    .await;
    let signer = env.gateway("gw-1").await;
    let token = env.token(Role::Gateway, Some("gw-1")).await;

    let big: Vec<SecurityEvent> = Chain::new("gw-1")
        .events(EventType::SetpointChanged, 1)
        .into_iter()
        .map(|e| e.data("blob", "x".repeat(100 * 1024)))
        .collect();
    let (status, reply) = env.post(Some(&token), signer.seal(&big), false).await;
    assert_eq!(status, 413, "{reply}");
    assert_eq!(reply["error"], "too_large");
    // Small on the wire, too large unpacked: refused after decompression, not before.
    let (status, _) = env.post(Some(&token), signer.seal(&big), true).await;
    assert_eq!(status, 413);

    let (status, reply) = env
        .post(Some(&token), b"{\"batch_version\":1,".to_vec(), true)
        .await;
    assert_eq!(
        (status, reply["error"].as_str()),
        (400, Some("malformed")),
        "{reply}"
    );

    let mut v: Value = serde_json::from_slice(
        &signer.seal(&Chain::new("gw-1").events(EventType::EquipmentStatus, 1)),
    )
    .unwrap();
    v["batch_version"] = 7.into();
    let (status, reply) = env
        .post(Some(&token), serde_json::to_vec(&v).unwrap(), true)
        .await;
    assert_eq!(
        (status, reply["error"].as_str()),
        (400, Some("batch_version")),
        "{reply}"
    );
    v["batch_version"] = 1.into();
    v["events"][0].as_object_mut().unwrap().remove("timestamp");
    let (status, reply) = env
        .post(Some(&token), serde_json::to_vec(&v).unwrap(), true)
        .await;
    assert_eq!(
        (status, reply["error"].as_str()),
        (400, Some("invalid_events")),
        "{reply}"
    );
    assert!(reply["events"][0]["reason"]
        .as_str()
        .unwrap()
        .contains("timestamp"));

    let resp = env
        .http
        .post(format!("{}/api/v1/ingest", env.base))
        .bearer_auth(&token)
        .header("content-encoding", "br")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 415);

    let (status, body) = env
        .get(&env.token(Role::Viewer, None).await, "/api/v1/status")
        .await;
    assert_eq!(status, 200);
    let refused = &body["ingest"]["refused"];
    assert_eq!(refused["https:too_large"], 2, "{body}");
    assert_eq!(refused["https:malformed"], 1);
    assert_eq!(refused["https:batch_version"], 1);
    assert_eq!(refused["https:invalid_events"], 1);
    assert_eq!(refused["https:encoding"], 1);
    assert_eq!(
        count(
            &env,
            "SELECT count(*) FROM security_events WHERE seq IS NOT NULL"
        )
        .await,
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_needs_a_gateway_token_of_the_batchs_own_registered_gateway() {
    let env = Env::start(EnvOptions::default()).await;
    let a = env.gateway("gw-a").await;
    env.gateway("gw-b").await;
    let token_a = env.token(Role::Gateway, Some("gw-a")).await;
    let token_b = env.token(Role::Gateway, Some("gw-b")).await;
    let body = a.seal(&Chain::new("gw-a").events(EventType::SetpointChanged, 1));

    let (status, reply) = env.post(None, body.clone(), true).await;
    assert_eq!(status, 401, "{reply}");
    let (status, _) = env
        .post(Some("lsc_not-a-real-token"), body.clone(), true)
        .await;
    assert_eq!(status, 401);
    let (status, _) = env.post(Some("Basic abc"), body.clone(), true).await;
    assert_eq!(status, 401);
    let (status, reply) = env
        .post(
            Some(&env.token(Role::Admin, None).await),
            body.clone(),
            true,
        )
        .await;
    assert_eq!(status, 403, "an admin token is not a gateway: {reply}");
    let (status, reply) = env.post(Some(&token_b), body.clone(), true).await;
    assert_eq!(status, 403, "{reply}");
    assert_eq!(reply["error"], "gateway_mismatch");

    linesentry_collector::registry::set_enabled(env.collector().pool(), "gw-a", false)
        .await
        .unwrap();
    // The registry caches a gateway for 1 s: past that the change applies. Polling with
    // posts instead would deliver the batch before the gateway is disabled.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (status, reply) = env.post(Some(&token_a), body.clone(), true).await;
    assert_eq!(
        (status, reply["error"].as_str()),
        (403, Some("gateway_disabled")),
        "{reply}"
    );
    linesentry_collector::registry::set_enabled(env.collector().pool(), "gw-a", true)
        .await
        .unwrap();
    // The registry's 1 s cache again (see above).
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (status, reply) = env.post(Some(&token_a), body, true).await;
    assert_eq!(status, 200, "{reply}");

    let denied = count(
        &env,
        "SELECT count(*) FROM security_events WHERE event_type = 'api.access' AND (event_data->>'status')::int IN (401, 403)",
    )
    .await;
    assert!(denied >= 5, "every refused call is recorded: {denied}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_may_identify_by_its_registered_client_certificate_instead_of_a_token() {
    let env = Env::start(EnvOptions::default()).await;
    let (cert, key) = env.pki.issue(&["gw-tls"], true);
    let fingerprint = linesentry_collector::registry::cert_fingerprint(cert.as_bytes()).unwrap();
    let seed = [9u8; 32];
    let signing = ed25519_dalek::SigningKey::from_bytes(&seed);
    linesentry_collector::registry::add_gateway(
        env.collector().pool(),
        "gw-tls",
        &signing.verifying_key(),
        None,
        Some(fingerprint),
    )
    .await
    .unwrap();
    let signer = linesentry_event::integrity::BatchSigner::new("gw-tls", signing);
    let body = signer.seal(&Chain::new("gw-tls").events(EventType::ModeChanged, 2));
    let client = Env::client(&env.pki, Some((&cert, &key)));
    let (status, reply) = env::post_with(&client, &env.base, None, body.clone(), true).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["accepted"], 2);
    // Another certificate of the same CA is not registered for any gateway.
    let (other_cert, other_key) = env.pki.issue(&["gw-other"], true);
    let other = Env::client(&env.pki, Some((&other_cert, &other_key)));
    let (status, _) = env::post_with(&other, &env.base, None, body, true).await;
    assert_eq!(status, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_ahead_of_their_predecessor_wait_as_pending_and_verify_when_it_arrives() {
    let env = Env::start(EnvOptions::default()).await;
    let signer = env.gateway("gw-1").await;
    let token = env.token(Role::Gateway, Some("gw-1")).await;
    let events = Chain::new("gw-1").events(EventType::EquipmentStatus, 5);
    // Alerts go first: 4 and 5 before 3. 5 links to 4 in the same batch; 4 must wait.
    let (status, reply) = env
        .post(Some(&token), signer.seal(&events[0..2]), true)
        .await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["verification"], json!({"verified": 2}));
    let (status, reply) = env
        .post(Some(&token), signer.seal(&events[3..5]), true)
        .await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["verification"], json!({"pending": 1, "verified": 1}));
    let (status, reply) = env
        .post(Some(&token), signer.seal(&events[2..3]), true)
        .await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["verification"]["verified"], 1);
    assert_eq!(
        count(&env, "SELECT count(*) FROM security_events WHERE verification = 'verified' AND gateway_id = 'gw-1'").await,
        5
    );
    assert_eq!(
        count(
            &env,
            "SELECT count(*) FROM chain_links WHERE status <> 'verified'"
        )
        .await,
        0
    );
    assert_eq!(
        count(
            &env,
            "SELECT count(*) FROM security_events WHERE event_type = 'security.violation'"
        )
        .await,
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prev_hash_that_does_not_match_the_held_predecessor_is_flagged_broken_and_reported() {
    let env = Env::start(EnvOptions::default()).await;
    let signer = env.gateway("gw-1").await;
    let token = env.token(Role::Gateway, Some("gw-1")).await;
    let mut chain = Chain::new("gw-1");
    let first = chain.events(EventType::SetpointChanged, 3);
    let (status, _) = env.post(Some(&token), signer.seal(&first), true).await;
    assert_eq!(status, 200);
    // Event 4 links to something other than event 3 (an event removed or altered upstream).
    let mut fourth = chain.events(EventType::SetpointChanged, 1);
    fourth[0].prev_hash = Some(hex(&event_hash(&first[0])));
    let (status, reply) = env.post(Some(&token), signer.seal(&fourth), true).await;
    assert_eq!(
        status, 200,
        "the batch is genuine, its chain is not: {reply}"
    );
    assert_eq!(reply["verification"]["broken"], 1);
    let db = env.db().await;
    let v = db
        .query_one(
            "SELECT event_data FROM security_events WHERE event_type = 'security.violation'",
            &[],
        )
        .await
        .unwrap();
    let data: Value = v.get(0);
    assert_eq!(data["kind"], "broken_chain");
    assert_eq!(data["seq"], 4);
    assert_eq!(data["event_id"], fourth[0].id.to_string());
    assert_eq!(data["expected_prev_hash"], hex(&event_hash(&first[2])));
    assert_eq!(
        count(
            &env,
            "SELECT broken FROM gateways WHERE gateway_id = 'gw-1'"
        )
        .await,
        1
    );
    // Delivered again: still one report.
    let (status, _) = env.post(Some(&token), signer.seal(&fourth), true).await;
    assert_eq!(status, 200);
    assert_eq!(
        count(
            &env,
            "SELECT count(*) FROM security_events WHERE event_type = 'security.violation'"
        )
        .await,
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_seq_becomes_a_gap_reported_unless_the_gateway_said_it_dropped_those_events() {
    let env = Env::start(EnvOptions {
        gap_after_s: 1,
        ..EnvOptions::default()
    })
    .await;
    let signer = env.gateway("gw-1").await;
    let token = env.token(Role::Gateway, Some("gw-1")).await;
    let mut chain = Chain::new("gw-1");
    let events = chain.events(EventType::EquipmentStatus, 12);
    // 3 and 4 vanish without a word; 8 and 9 were evicted by the agent's full buffer, which
    // says so with an agent.buffer_dropped event (seq 13).
    let dropped = chain.link(
        SecurityEvent::new("gw-1", EventType::AgentBufferDropped)
            .data("dropped", 2)
            .data("first_seq", 8)
            .data("last_seq", 9),
    );
    let mut sent: Vec<SecurityEvent> = events
        .iter()
        .filter(|e| ![3, 4, 8, 9].contains(&e.seq))
        .cloned()
        .collect();
    sent.push(dropped);
    let (status, reply) = env.post(Some(&token), signer.seal(&sent), true).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["verification"]["pending"], 2, "{reply}");

    let gaps = env
        .wait_count(
            "SELECT count(*) FROM chain_gaps WHERE gateway_id = 'gw-1'",
            2,
        )
        .await;
    assert_eq!(gaps, 2);
    let db = env.db().await;
    let rows = db
        .query(
            "SELECT first_seq, last_seq, next_seq, explanation, violation_id IS NOT NULL FROM chain_gaps ORDER BY first_seq",
            &[],
        )
        .await
        .unwrap();
    let got: Vec<(i64, i64, i64, Option<String>, bool)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
        .collect();
    assert_eq!(
        got,
        [
            (3, 4, 5, None, true),
            (8, 9, 10, Some("agent.buffer_dropped".into()), false)
        ]
    );
    let v = db
        .query(
            "SELECT event_data FROM security_events WHERE event_type = 'security.violation'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(v.len(), 1);
    let data: Value = v[0].get(0);
    assert_eq!(
        (
            data["kind"].as_str(),
            data["first_seq"].as_i64(),
            data["missing"].as_i64()
        ),
        (Some("seq_gap"), Some(3), Some(2))
    );
    assert_eq!(
        count(
            &env,
            "SELECT count(*) FROM security_events WHERE seq IN (5, 10) AND verification = 'gap'"
        )
        .await,
        2
    );
    let g = db
        .query_one(
            "SELECT gaps, gaps_unexplained, missing_events FROM gateways WHERE gateway_id = 'gw-1'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        (g.get::<_, i64>(0), g.get::<_, i64>(1), g.get::<_, i64>(2)),
        (2, 1, 4)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_looking_text_in_events_is_stored_as_data() {
    let env = Env::start(EnvOptions::default()).await;
    let signer = env.gateway("gw-1").await;
    let token = env.token(Role::Gateway, Some("gw-1")).await;
    let nasty = "x'); DROP TABLE security_events; --";
    let mut chain = Chain::new("gw-1");
    let mut e = SecurityEvent::new("gw-1", EventType::AuthFailed).data("tag", nasty);
    e.user_id = Some(nasty.into());
    let e = chain.link(e);
    let (status, reply) = env
        .post(Some(&token), signer.seal(std::slice::from_ref(&e)), true)
        .await;
    assert_eq!(status, 200, "{reply}");
    let db = env.db().await;
    let row = db
        .query_one(
            "SELECT user_id, event_data->>'tag' FROM security_events WHERE id = $1",
            &[&e.id],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), nasty);
    assert_eq!(row.get::<_, String>(1), nasty);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_apply_once_and_a_schema_changed_behind_their_back_is_refused() {
    let url = env::database().await;
    let pool = linesentry_collector::db::Pool::new(&linesentry_collector::db::DbOptions {
        url: url.clone(),
        password: None,
        pool_size: 2,
        connect_timeout: Duration::from_secs(5),
        statement_timeout: Duration::from_secs(30),
        tls: linesentry_collector::db::DbTls::disabled(),
    })
    .unwrap();
    assert_eq!(migrate::migrate(&pool).await.unwrap(), [1, 2, 3, 4, 5]);
    assert!(migrate::migrate(&pool).await.unwrap().is_empty());
    let db = env::sql(&url).await;
    db.execute(
        "UPDATE schema_migrations SET checksum = 'edited' WHERE version = 2",
        &[],
    )
    .await
    .unwrap();
    let err = migrate::migrate(&pool).await.unwrap_err();
    assert!(err.to_string().contains("migration 2"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_drops_whole_months_older_than_the_setting_and_keeps_the_rest() {
    // No collector on this database: its own housekeeping would race this test's.
    let url = env::database().await;
    let pool = linesentry_collector::db::Pool::new(&linesentry_collector::db::DbOptions {
        url: url.clone(),
        password: None,
        pool_size: 2,
        connect_timeout: Duration::from_secs(5),
        statement_timeout: Duration::from_secs(30),
        tls: linesentry_collector::db::DbTls::disabled(),
    })
    .unwrap();
    migrate::migrate(&pool).await.unwrap();
    let alerts = std::sync::Arc::new(linesentry_collector::alerts::AlertContext {
        collector_id: "c".into(),
        rules: Vec::new(),
        webhooks: Vec::new(),
        siem: Vec::new(),
    });
    let hk = Housekeeping {
        pool: pool.clone(),
        partitions: Partitions::default(),
        retention: Retention {
            months: 3,
            partitions_ahead: 1,
        },
        gap_after: Duration::from_secs(60),
        collector_id: "c".into(),
        alerts,
        hub: linesentry_collector::stream::Hub::new(4, 4),
        webhooks: std::sync::Arc::new(tokio::sync::Notify::new()),
    };
    hk.prepare_partitions().await.unwrap();
    let today = chrono::Utc::now().date_naive();
    let this_month = chrono::NaiveDate::from_ymd_opt(
        chrono::Datelike::year(&today),
        chrono::Datelike::month(&today),
        1,
    )
    .unwrap();
    let mut conn = pool.get().await.unwrap();
    for back in [2, 3, 4, 20] {
        hk.partitions
            .ensure_month(&mut conn, add_months(this_month, -back))
            .await
            .unwrap();
    }
    drop(conn);
    let dropped = hk.apply_retention().await.unwrap();
    let name = |back: i32| {
        let m = add_months(this_month, -back);
        format!(
            "security_events_y{}m{:02}",
            chrono::Datelike::year(&m),
            chrono::Datelike::month(&m)
        )
    };
    assert_eq!(dropped, [name(20), name(4)]);
    let left: Vec<String> = env::sql(&url)
        .await
        .query(
            "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
             WHERE i.inhparent = 'security_events'::regclass ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(
        left.contains(&name(3)) && left.contains(&name(2)) && left.contains(&name(0)),
        "{left:?}"
    );
}
