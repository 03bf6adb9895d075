//! Handlers and alerts against real PostgreSQL, with a real HTTP webhook receiver.

use linesentry_testkit::collector as env;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use env::{ws_next, ws_send, Chain, Env, EnvOptions};
use linesentry_collector::auth::Role;
use linesentry_collector::webhook::hmac_sha256;
use linesentry_event::integrity::hex;
use linesentry_event::{EventType, SecurityEvent, Severity};
use serde_json::{json, Value};

/// A webhook receiver on a loopback port: records every call, fails the first `fail_first`.
struct Receiver {
    url: String,
    calls: Arc<Mutex<Vec<(HeaderMap, Value, u16)>>>,
}

async fn receiver(fail_first: usize) -> Receiver {
    let calls: Arc<Mutex<Vec<(HeaderMap, Value, u16)>>> = Arc::default();
    let seen = Arc::clone(&calls);
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: Bytes| {
            let seen = Arc::clone(&seen);
            async move {
                let mut calls = seen.lock().unwrap();
                let status = if calls.len() < fail_first { 500 } else { 204 };
                let raw = String::from_utf8(body.to_vec()).unwrap();
                let mut headers = headers;
                headers.insert("x-test-raw-body", raw.parse().unwrap());
                calls.push((headers, serde_json::from_str(&raw).unwrap(), status));
                StatusCode::from_u16(status).unwrap()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    Receiver { url, calls }
}

fn webhook_config(url: &str, secret_file: &std::path::Path, max_attempts: u32) -> String {
    format!(
        "\n[[alerts.webhooks]]\nname = \"soc\"\nurl = \"{url}\"\nmin_severity = \"warn\"\nmax_attempts = {max_attempts}\ntimeout_ms = 2000\nsecret = {{ file = \"{}\" }}\n",
        secret_file.display()
    )
}

async fn count(env: &Env, sql: &str) -> i64 {
    env.db().await.query_one(sql, &[]).await.unwrap().get(0)
}

fn failed_login(gw: &str, user: &str, source: &str) -> SecurityEvent {
    let mut e = SecurityEvent::new(gw, EventType::AuthFailed).station("hmi-1");
    e.user_id = Some(user.into());
    e.source_ip = Some(source.parse().unwrap());
    e
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_failed_logins_for_one_user_across_gateways_raise_one_alert_that_is_stored_and_streamed(
) {
    let env = Env::start(EnvOptions::default()).await;
    let viewer = env.token(Role::Viewer, None).await;
    let mut ws = env.ws(Some(&viewer), false).await.unwrap();
    ws_next(&mut ws, Duration::from_secs(5)).await.unwrap();
    ws_send(
        &mut ws,
        &json!({"type": "subscribe", "filters": {"event_types": ["alert."]}}),
    )
    .await;
    ws_next(&mut ws, Duration::from_secs(5)).await.unwrap();
    let mut sent = Vec::new();
    for (gw, n) in [("gw-a", 3), ("gw-b", 3)] {
        let signer = env.gateway(gw).await;
        let token = env.token(Role::Gateway, Some(gw)).await;
        let mut chain = Chain::new(gw);
        for i in 0..n {
            // A different source each time: only the per-user rule can fire.
            let e = chain.link(failed_login(
                gw,
                "mallory",
                &format!("10.0.{}.{i}", sent.len()),
            ));
            sent.push(e.clone());
            let (status, reply) = env.post(Some(&token), signer.seal(&[e]), true).await;
            assert_eq!(status, 200, "{reply}");
        }
    }
    let m = ws_next(&mut ws, Duration::from_secs(5))
        .await
        .expect("alert streamed");
    assert_eq!(m["event"]["event_type"], "alert.raised");
    let data = &m["event"]["event_data"];
    assert_eq!(data["rule"], "failed-logins-user");
    assert_eq!(data["group_key"], "mallory");
    assert_eq!(data["count"], 5, "raised by the fifth");
    assert_eq!(m["event"]["user_id"], "mallory");
    assert_eq!(m["event"]["severity"], "error");
    let sources: Vec<&str> = data["source_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let first_five: Vec<String> = sent[..5].iter().rev().map(|e| e.id.to_string()).collect();
    assert_eq!(
        sources, first_five,
        "correlated to its sources, newest first"
    );
    assert_eq!(data["gateways"], json!(["gw-a", "gw-b"]));
    assert!(
        ws_next(&mut ws, Duration::from_millis(700)).await.is_none(),
        "the sixth does not raise again within the window"
    );
    assert_eq!(
        count(
            &env,
            "SELECT count(*) FROM alerts WHERE rule = 'failed-logins-user' AND status = 'open'"
        )
        .await,
        1
    );
    assert_eq!(
        count(
            &env,
            "SELECT count(*) FROM security_events WHERE event_type = 'alert.raised'"
        )
        .await,
        1
    );
    let (status, body) = env.get(&viewer, "/api/v1/alerts").await;
    assert_eq!(status, 200);
    assert_eq!(body["alerts"][0]["rule"], "failed-logins-user");
    assert_eq!(body["alerts"][0]["source_count"], 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_quality_failures_and_equipment_faults_raise_alerts_per_station() {
    let env = Env::start(EnvOptions::default()).await;
    let signer = env.gateway("gw-1").await;
    let token = env.token(Role::Gateway, Some("gw-1")).await;
    let mut chain = Chain::new("gw-1");
    let mut events = Vec::new();
    for (station, result) in [
        ("aoi-1", "fail"),
        ("aoi-2", "fail"),
        ("aoi-1", "fail"),
        ("aoi-2", "pass"),
        ("aoi-1", "fail"),
        ("aoi-2", "fail"),
    ] {
        events.push(
            chain.link(
                SecurityEvent::new("gw-1", EventType::QualityCheck)
                    .station(station)
                    .severity(if result == "fail" {
                        Severity::Warn
                    } else {
                        Severity::Info
                    })
                    .data("result", result),
            ),
        );
    }
    events.push(
        chain.link(SecurityEvent::new("gw-1", EventType::EquipmentFault).station("press-01")),
    );
    let (status, reply) = env.post(Some(&token), signer.seal(&events), true).await;
    assert_eq!(status, 200, "{reply}");
    let rows = env
        .db()
        .await
        .query(
            "SELECT rule, group_key, source_count FROM alerts ORDER BY rule, group_key",
            &[],
        )
        .await
        .unwrap();
    let got: Vec<(String, String, i32)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(
        got,
        [
            ("equipment-fault".into(), "gw-1/press-01".into(), 1),
            ("quality-failures".into(), "gw-1/aoi-1".into(), 3),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_batch_raises_a_critical_integrity_alert() {
    let env = Env::start(EnvOptions::default()).await;
    let signer = env.gateway("gw-1").await;
    let token = env.token(Role::Gateway, Some("gw-1")).await;
    let mut v: Value = serde_json::from_slice(
        &signer.seal(&Chain::new("gw-1").events(EventType::SetpointChanged, 1)),
    )
    .unwrap();
    v["events"][0]["severity"] = "info".into();
    let (status, _) = env
        .post(Some(&token), serde_json::to_vec(&v).unwrap(), true)
        .await;
    assert_eq!(status, 400);
    let row = env
        .db()
        .await
        .query_one("SELECT a.rule, a.severity, e.gateway_id, a.group_key FROM alerts a JOIN security_events e ON e.id = a.id", &[])
        .await
        .unwrap();
    assert_eq!(
        (
            row.get::<_, String>(0),
            row.get::<_, String>(1),
            row.get::<_, String>(2),
            row.get::<_, String>(3)
        ),
        (
            "integrity-violation".into(),
            "critical".into(),
            "collector-test".into(),
            "gw-1".into()
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alert_is_sent_to_its_webhook_with_retry_and_a_verifiable_signature() {
    let hook = receiver(2).await;
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "s3cret\n").unwrap();
    let env = Env::start(EnvOptions {
        extra: webhook_config(&hook.url, &secret, 5),
        ..EnvOptions::default()
    })
    .await;
    let signer = env.gateway("gw-1").await;
    let token = env.token(Role::Gateway, Some("gw-1")).await;
    let fault = Chain::new("gw-1")
        .link(SecurityEvent::new("gw-1", EventType::EquipmentFault).station("press-01"));
    let (status, _) = env.post(Some(&token), signer.seal(&[fault]), true).await;
    assert_eq!(status, 200);
    // Fails twice (500), then delivered: after about 1 s + 2 s of backoff.
    let delivered = env
        .wait_count(
            "SELECT count(*) FROM webhook_outbox WHERE delivered_at IS NOT NULL",
            1,
        )
        .await;
    assert_eq!(delivered, 1);
    let calls = hook.calls.lock().unwrap().clone();
    assert_eq!(
        calls.iter().map(|c| c.2).collect::<Vec<_>>(),
        [500, 500, 204]
    );
    let (headers, body, _) = &calls[2];
    assert_eq!(body["alert"]["rule"], "equipment-fault");
    assert_eq!(body["event"]["event_type"], "alert.raised");
    let raw = headers["x-test-raw-body"].to_str().unwrap();
    let want = format!("sha256={}", hex(&hmac_sha256(b"s3cret", raw.as_bytes())));
    assert_eq!(headers["x-linesentry-signature"].to_str().unwrap(), want);
    let ids: std::collections::HashSet<&str> = calls
        .iter()
        .map(|c| c.0["x-linesentry-delivery"].to_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 1, "one delivery id across retries");
    assert_eq!(
        count(&env, "SELECT attempts::int8 FROM webhook_outbox").await,
        3
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_that_keeps_failing_is_given_up_after_its_attempts_and_that_is_an_event() {
    let hook = receiver(usize::MAX).await;
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "x").unwrap();
    let env = Env::start(EnvOptions {
        extra: webhook_config(&hook.url, &secret, 2),
        ..EnvOptions::default()
    })
    .await;
    let signer = env.gateway("gw-1").await;
    let token = env.token(Role::Gateway, Some("gw-1")).await;
    let fault = Chain::new("gw-1")
        .link(SecurityEvent::new("gw-1", EventType::EquipmentFault).station("press-01"));
    env.post(Some(&token), signer.seal(&[fault]), true).await;
    assert_eq!(
        env.wait_count(
            "SELECT count(*) FROM security_events WHERE event_type = 'webhook.failed'",
            1
        )
        .await,
        1
    );
    assert_eq!(hook.calls.lock().unwrap().len(), 2);
    assert_eq!(count(&env, "SELECT count(*) FROM webhook_outbox WHERE failed_at IS NOT NULL AND last_error = 'HTTP 500'").await, 1);
}

#[allow(clippy::too_many_lines)] // one scenario, read top to bottom
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_about_a_gateway_are_filed_under_the_collector_and_leave_that_gateways_rows_counts_and_chain_alone(
) {
    let env = Env::start(EnvOptions::default()).await;
    let viewer = env.token(Role::Viewer, None).await;
    let signer = env.gateway("gw-a").await;
    let token = env.token(Role::Gateway, Some("gw-a")).await;
    let mut chain = Chain::new("gw-a");
    // seq 1 raises equipment-fault (per station); seq 5 restarts the chain unannounced: a
    // gap of 3..4, an integrity violation (the collector's report) and its alert.
    let fault =
        chain.link(SecurityEvent::new("gw-a", EventType::EquipmentFault).station("press-01"));
    let setpoint =
        chain.link(SecurityEvent::new("gw-a", EventType::SetpointChanged).station("press-01"));
    let (status, reply) = env
        .post(
            Some(&token),
            signer.seal(&[fault.clone(), setpoint.clone()]),
            true,
        )
        .await;
    assert_eq!(status, 200, "{reply}");
    chain.next_seq = 5;
    chain.last_hash = None;
    let restart =
        chain.link(SecurityEvent::new("gw-a", EventType::SetpointChanged).station("press-01"));
    let (status, reply) = env
        .post(
            Some(&token),
            signer.seal(std::slice::from_ref(&restart)),
            true,
        )
        .await;
    assert_eq!(status, 200, "{reply}");
    let sent: std::collections::BTreeSet<String> = [&fault, &setpoint, &restart]
        .iter()
        .map(|e| e.id.to_string())
        .collect();

    // The collector's events: under its id, linked to gw-a by event_data.
    let db = env.db().await;
    let local = db
        .query(
            "SELECT event_type, gateway_id, station_id, event_data FROM security_events \
             WHERE verification = 'local' AND event_type IN ('alert.raised', 'security.violation') \
             ORDER BY event_type, event_data->>'rule'",
            &[],
        )
        .await
        .unwrap();
    let rows: Vec<(String, String, Option<String>, Value)> = local
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    assert_eq!(rows.len(), 3, "{rows:?}");
    for (event_type, gateway_id, station_id, data) in &rows {
        assert_eq!(
            gateway_id, "collector-test",
            "{event_type} filed under the collector"
        );
        assert_eq!(*station_id, None, "{event_type}");
        assert_eq!(
            data["source_gateway"], "gw-a",
            "{event_type} names its gateway"
        );
    }
    let (fault_alert, integrity_alert, violation) = (&rows[0].3, &rows[1].3, &rows[2].3);
    assert_eq!(fault_alert["rule"], "equipment-fault");
    assert_eq!(fault_alert["group_key"], "gw-a/press-01");
    assert_eq!(fault_alert["source_station"], "press-01");
    assert_eq!(fault_alert["source_ids"], json!([fault.id.to_string()]));
    assert_eq!(fault_alert["gateways"], json!(["gw-a"]));
    assert_eq!(integrity_alert["rule"], "integrity-violation");
    assert_eq!(
        integrity_alert["group_key"], "gw-a",
        "grouped by the gateway it is about"
    );
    assert_eq!(integrity_alert["gateways"], json!(["gw-a"]));
    assert_eq!(violation["kind"], "chain_restart");
    let violation_id: uuid::Uuid = db
        .query_one(
            "SELECT id FROM security_events WHERE event_type = 'security.violation'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        integrity_alert["source_ids"],
        json!([violation_id.to_string()])
    );
    let groups: Vec<(String, String)> = db
        .query("SELECT rule, group_key FROM alerts ORDER BY rule", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(
        groups,
        [
            ("equipment-fault".into(), "gw-a/press-01".into()),
            ("integrity-violation".into(), "gw-a".into())
        ]
    );

    // gw-a's own rows, counts, seq and gaps are what it sent and nothing else.
    let (status, body) = env.get(&viewer, "/api/v1/events?gateway_id=gw-a").await;
    assert_eq!(status, 200, "{body}");
    let got: std::collections::BTreeSet<String> = body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(got, sent, "only gw-a's own events: {body}");
    let (_, rollup) = env
        .get(&viewer, "/api/v1/stats?period=24h&gateway_id=gw-a")
        .await;
    assert_eq!(rollup["total"], 3, "{rollup}");
    assert_eq!(rollup["by_type"].get("alert.raised"), None, "{rollup}");
    assert_eq!(
        rollup["by_type"].get("security.violation"),
        None,
        "{rollup}"
    );
    let (_, list) = env.get(&viewer, "/api/v1/gateways").await;
    let gw = &list["gateways"][0];
    assert_eq!(gw["gateway_id"], "gw-a");
    assert_eq!(
        (
            &gw["events_total"],
            &gw["last_seq"],
            &gw["gaps"],
            &gw["missing_events"],
            &gw["broken"]
        ),
        (&json!(3), &json!(5), &json!(1), &json!(2), &json!(0)),
        "{gw}"
    );
    assert_eq!(
        count(
            &env,
            "SELECT count(*) FROM chain_links WHERE gateway_id = 'gw-a'"
        )
        .await,
        3
    );

    // The collector's reports on gw-a are found by what they are about.
    let (status, about) = env
        .get(
            &viewer,
            "/api/v1/events?gateway_id=collector-test&data=%7B%22source_gateway%22%3A%22gw-a%22%7D",
        )
        .await;
    assert_eq!(status, 200, "{about}");
    assert_eq!(about["count"], 3, "{about}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_cannot_be_registered_under_the_collectors_own_id() {
    let env = Env::start(EnvOptions::default()).await;
    let admin = env.token(Role::Admin, None).await;
    let key = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
    let body = json!({
        "gateway_id": "collector-test",
        "public_key": base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            key.verifying_key().as_bytes()
        ),
    });
    let resp = env
        .http
        .post(format!("{}/api/v1/gateways", env.base))
        .bearer_auth(&admin)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    let reply: Value = serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap();
    assert!(reply.to_string().contains("collector's id"), "{reply}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_migration_moves_collector_events_an_earlier_version_filed_under_a_gateway() {
    use linesentry_collector::{db, migrate};
    let url = env::database().await;
    let pool = db::Pool::new(&db::DbOptions {
        url: url.clone(),
        password: None,
        pool_size: 2,
        connect_timeout: Duration::from_secs(5),
        statement_timeout: Duration::from_secs(30),
        tls: db::DbTls::disabled(),
    })
    .unwrap();
    migrate::migrate(&pool).await.unwrap();
    let sql = env::sql(&url).await;
    // What an earlier collector stored: an alert under gw-a (with its station), counted in
    // gw-a's rollups beside gw-a's own two events.
    sql.batch_execute(
        r#"
        SELECT linesentry_ensure_month(date_trunc('month', now(), 'UTC')::date);
        INSERT INTO security_events (id, event_type, event_data, context, "timestamp", severity,
            gateway_id, station_id, verification)
        VALUES (gen_random_uuid(), 'alert.raised', '{"rule": "equipment-fault"}',
                '{"source": "collector", "collector_id": "c-1"}', now(), 'warn', 'gw-a',
                'press-01', 'local'),
               (gen_random_uuid(), 'api.access', '{}',
                '{"source": "collector", "collector_id": "c-1"}', now(), 'debug', 'c-1',
                NULL, 'local');
        INSERT INTO event_metrics (granularity, bucket, event_type, severity, gateway_id, count)
        SELECT u, date_trunc(u, now(), 'UTC'), t, s, g, n
        FROM (VALUES ('hour'), ('day')) AS a(u),
             (VALUES ('alert.raised', 'warn', 'gw-a', 1), ('equipment.fault', 'warn', 'gw-a', 2),
                     ('api.access', 'debug', 'c-1', 1)) AS b(t, s, g, n);
        DELETE FROM schema_migrations WHERE version = 3;
        "#,
    )
    .await
    .unwrap();
    assert_eq!(migrate::migrate(&pool).await.unwrap(), [3]);

    let rows: Vec<(String, String, Option<String>, Value)> = sql
        .query(
            "SELECT event_type, gateway_id, station_id, event_data FROM security_events ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    assert_eq!(
        rows,
        [
            (
                "alert.raised".into(),
                "c-1".into(),
                None,
                json!({"rule": "equipment-fault", "source_gateway": "gw-a", "source_station": "press-01"})
            ),
            ("api.access".into(), "c-1".into(), None, json!({})),
        ]
    );
    let metrics: Vec<(String, String, String, i64)> = sql
        .query(
            "SELECT granularity, event_type, gateway_id, count FROM event_metrics ORDER BY 1, 2",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    let want = |g: &str| {
        [
            (g.to_owned(), "alert.raised".to_owned(), "c-1".to_owned(), 1),
            (g.to_owned(), "api.access".to_owned(), "c-1".to_owned(), 1),
            (
                g.to_owned(),
                "equipment.fault".to_owned(),
                "gw-a".to_owned(),
                2,
            ),
        ]
    };
    assert_eq!(metrics, [want("day"), want("hour")].concat());
}
