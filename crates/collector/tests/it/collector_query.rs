//! The query API over HTTPS against real PostgreSQL: filters, keyset pages, stats from the
//! rollups, roles, audit of every access, and hostile input.

use linesentry_testkit::collector as env;

use std::collections::HashSet;

use env::{Chain, Env, EnvOptions};
use linesentry_collector::auth::Role;
use linesentry_event::{EventType, SecurityEvent, Severity};
use reqwest::Method;
use serde_json::{json, Value};
use uuid::Uuid;

/// Two gateways, assorted types, severities, users, stations and data: 14 events.
async fn seed(env: &Env) -> (Uuid, Vec<SecurityEvent>) {
    let correlation = Uuid::now_v7();
    let mut all = Vec::new();
    for gw in ["gw-a", "gw-b"] {
        let signer = env.gateway(gw).await;
        let token = env.token(Role::Gateway, Some(gw)).await;
        let mut chain = Chain::new(gw);
        let mut events = Vec::new();
        for i in 0..4 {
            let mut e = SecurityEvent::new(gw, EventType::AuthFailed)
                .severity(Severity::Warn)
                .station("hmi-1")
                .data("attempt", i);
            e.user_id = Some("mallory".into());
            e.source_ip = Some("10.1.2.3".parse().unwrap());
            events.push(chain.link(e));
        }
        events.push(
            chain.link(
                SecurityEvent::new(gw, EventType::SetpointChanged)
                    .station("press-01")
                    .data("tag", "die_temp_sp")
                    .data("value", 250.0)
                    .correlation(correlation),
            ),
        );
        events.push(
            chain.link(
                SecurityEvent::new(gw, EventType::ProgramChanged)
                    .station("press-01")
                    .severity(Severity::Error)
                    .data("tag", "program_crc"),
            ),
        );
        events.push(
            chain.link(
                SecurityEvent::new(gw, EventType::EquipmentMeasurement)
                    .station("oven-2")
                    .severity(Severity::Debug)
                    .data("tag", "zone1_temp"),
            ),
        );
        let (status, reply) = env.post(Some(&token), signer.seal(&events), true).await;
        assert_eq!(status, 200, "{reply}");
        all.extend(events);
    }
    (correlation, all)
}

fn ids(body: &Value) -> Vec<String> {
    body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect()
}

fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_filter_of_get_events_narrows_the_rows_and_keyset_pages_cover_them_once() {
    let env = Env::start(EnvOptions::default()).await;
    let (correlation, all) = seed(&env).await;
    let viewer = env.token(Role::Viewer, None).await;
    let q = |query: String| {
        let viewer = viewer.clone();
        let env = &env;
        async move {
            let (status, body) = env.get(&viewer, &format!("/api/v1/events?{query}")).await;
            assert_eq!(status, 200, "{query}: {body}");
            body
        }
    };
    let n = |body: &Value| body["count"].as_u64().unwrap();
    assert_eq!(n(&q("gateway_id=gw-a&limit=1000".into()).await), 7);
    assert_eq!(n(&q("event_type=auth.failed".into()).await), 8);
    assert_eq!(n(&q("event_type_prefix=equipment.".into()).await), 2);
    assert_eq!(n(&q("user_id=mallory&gateway_id=gw-b".into()).await), 4);
    assert_eq!(
        n(&q("severity=error&verification=verified".into()).await),
        2
    );
    assert_eq!(n(&q("min_severity=warn&gateway_id=gw-a".into()).await), 6);
    assert_eq!(n(&q("station_id=press-01".into()).await), 4);
    assert_eq!(n(&q(format!("correlation_id={correlation}")).await), 2);
    assert_eq!(
        n(&q(format!("data={}", enc(r#"{"tag":"program_crc"}"#))).await),
        2
    );
    assert_eq!(
        n(&q("verification=verified&gateway_id=gw-b".into()).await),
        7
    );
    let first = all[0].timestamp.to_string();
    let last = all[6].timestamp.to_string();
    assert_eq!(
        n(&q(format!(
            "gateway_id=gw-a&start={}&end={}",
            enc(&first),
            enc(&last)
        ))
        .await),
        6,
        "start inclusive, end exclusive"
    );
    // One event in full.
    let body = q("event_type=program.changed&gateway_id=gw-a".into()).await;
    let e = &body["events"][0];
    assert_eq!(e["id"], all[5].id.to_string());
    assert_eq!(e["seq"], 6);
    assert_eq!(e["verification"], "verified");
    assert_eq!(e["event_data"]["tag"], "program_crc");
    assert!(e["received_at"].is_string());

    // Keyset pages of 3, newest first, over the 14 gateway events.
    let mut seen: Vec<String> = Vec::new();
    let mut url = "verification=verified&limit=3".to_owned();
    loop {
        let body = q(url.clone()).await;
        seen.extend(ids(&body));
        match body["next"].as_str() {
            Some(c) => url = format!("verification=verified&limit=3&after={c}"),
            None => break,
        }
    }
    assert_eq!(seen.len(), 14);
    assert_eq!(
        seen.iter().collect::<HashSet<_>>().len(),
        14,
        "no row twice"
    );
    let by_offset = ids(&q("verification=verified&limit=3&offset=3".into()).await);
    assert_eq!(by_offset, seen[3..6]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_looking_strings_in_every_filter_find_nothing_or_are_refused_and_harm_nothing() {
    let env = Env::start(EnvOptions::default()).await;
    seed(&env).await;
    let viewer = env.token(Role::Viewer, None).await;
    let nasty = "x' OR '1'='1'; DROP TABLE security_events; --";
    for key in [
        "event_type",
        "event_type_prefix",
        "user_id",
        "gateway_id",
        "station_id",
    ] {
        let (status, body) = env
            .get(&viewer, &format!("/api/v1/events?{key}={}", enc(nasty)))
            .await;
        assert_eq!(
            (status, body["count"].as_u64()),
            (200, Some(0)),
            "{key}: {body}"
        );
    }
    for (key, value) in [
        ("severity", nasty),
        ("min_severity", nasty),
        ("start", nasty),
        ("end", nasty),
        ("correlation_id", nasty),
        ("verification", nasty),
        ("after", nasty),
        ("limit", "1; DROP TABLE security_events"),
        ("offset", "0 OR 1=1"),
        ("data", nasty),
        ("order_by", "id; DROP TABLE security_events"),
    ] {
        let (status, body) = env
            .get(&viewer, &format!("/api/v1/events?{key}={}", enc(value)))
            .await;
        assert_eq!(status, 400, "{key}: {body}");
        assert_eq!(body["error"], "bad_request");
        assert!(
            body["reason"].as_str().unwrap().contains(key),
            "{key}: {body}"
        );
    }
    let (status, body) = env
        .get(
            &viewer,
            &format!(
                "/api/v1/events?data={}",
                enc(&json!({"tag": nasty}).to_string())
            ),
        )
        .await;
    assert_eq!((status, body["count"].as_u64()), (200, Some(0)), "{body}");
    let (status, body) = env
        .get(
            &viewer,
            &format!(
                "/api/v1/stats?period={}",
                enc("24 hours'; DROP TABLE event_metrics; --")
            ),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(body["reason"]
        .as_str()
        .unwrap()
        .contains("1h, 24h, 7d, 30d"));
    let (status, body) = env.get(&viewer, "/api/v1/events?limit=100000000").await;
    assert_eq!(status, 400);
    assert!(body["reason"].as_str().unwrap().contains("limit"), "{body}");
    let (status, _) = env
        .get(&viewer, &format!("/api/v1/events/{}", enc(nasty)))
        .await;
    assert_eq!(status, 400);
    let (status, body) = env.get(&viewer, "/api/v1/events?gateway_id=gw-a").await;
    assert_eq!(
        (status, body["count"].as_u64()),
        (200, Some(7)),
        "the table is still there"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_per_type_and_severity_come_from_the_rollups() {
    let env = Env::start(EnvOptions::default()).await;
    seed(&env).await;
    let viewer = env.token(Role::Viewer, None).await;
    for period in ["1h", "24h", "7d", "30d"] {
        let (status, body) = env
            .get(
                &viewer,
                &format!("/api/v1/stats?period={period}&gateway_id=gw-a"),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["total"], 7, "{period}: {body}");
        assert_eq!(body["by_type"]["auth.failed"], 4);
        assert_eq!(body["by_severity"]["warn"], 5);
        assert_eq!(body["by_severity"]["debug"], 1);
    }
    let (_, body) = env.get(&viewer, "/api/v1/stats?period=24h").await;
    let rows = body["rows"].as_array().unwrap();
    assert!(
        rows.contains(&json!({"event_type": "program.changed", "severity": "error", "count": 2})),
        "{body}"
    );
    // The rollup is what answers: change it and the answer follows.
    env.db()
        .await
        .execute("UPDATE event_metrics SET count = count + 100 WHERE event_type = 'program.changed' AND gateway_id = 'gw-a'", &[])
        .await
        .unwrap();
    let (_, body) = env
        .get(&viewer, "/api/v1/stats?period=24h&gateway_id=gw-a")
        .await;
    assert_eq!(body["by_type"]["program.changed"], 101);
}

// One walk through every role against every kind of route.
#[allow(clippy::too_many_lines)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_are_enforced_viewer_reads_operator_acknowledges_admin_manages() {
    let env = Env::start(EnvOptions::default()).await;
    seed(&env).await;
    let viewer = env.token(Role::Viewer, None).await;
    let operator = env.token(Role::Operator, None).await;
    let admin = env.token(Role::Admin, None).await;
    let gateway = env.token(Role::Gateway, Some("gw-a")).await;
    let alert = Uuid::now_v7();
    env.db()
        .await
        .execute(
            "INSERT INTO alerts (id, event_ts, rule, group_key, severity, source_count) VALUES ($1, now(), 'failed-logins-user', 'mallory', 'error', 5)",
            &[&alert],
        )
        .await
        .unwrap();
    let call = |method: reqwest::Method, path: &str, token: &str, body: Option<Value>| {
        let mut req = env
            .http
            .request(method, format!("{}{path}", env.base))
            .bearer_auth(token);
        if let Some(b) = body {
            req = req
                .header("content-type", "application/json")
                .body(b.to_string());
        }
        async move {
            let resp = req.send().await.unwrap();
            let status = resp.status().as_u16();
            (
                status,
                serde_json::from_slice::<Value>(&resp.bytes().await.unwrap())
                    .unwrap_or(Value::Null),
            )
        }
    };
    // Reading: viewer and up; a gateway token reads nothing.
    for path in [
        "/api/v1/events",
        "/api/v1/stats",
        "/api/v1/gateways",
        "/api/v1/alerts",
        "/api/v1/status",
    ] {
        assert_eq!(
            call(Method::GET, path, &viewer, None).await.0,
            200,
            "{path}"
        );
        assert_eq!(
            call(Method::GET, path, &gateway, None).await.0,
            403,
            "{path}"
        );
    }
    let ack = format!("/api/v1/alerts/{alert}/ack");
    let (status, body) = call(Method::POST, &ack, &viewer, Some(json!({}))).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (403, Some("forbidden")),
        "{body}"
    );
    let (status, body) = call(
        Method::POST,
        &ack,
        &operator,
        Some(json!({"note": "known test"})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        call(Method::POST, &ack, &operator, None).await.0,
        409,
        "only open alerts"
    );
    let (_, body) = call(Method::GET, "/api/v1/alerts?status=all", &viewer, None).await;
    assert_eq!(body["alerts"][0]["acknowledged_by"], "operator-test");
    assert_eq!(body["alerts"][0]["note"], "known test");
    // Managing: admin only.
    let new_token = json!({"name": "dashboard", "role": "viewer"});
    assert_eq!(
        call(
            Method::POST,
            "/api/v1/tokens",
            &operator,
            Some(new_token.clone())
        )
        .await
        .0,
        403
    );
    assert_eq!(
        call(Method::GET, "/api/v1/tokens", &operator, None).await.0,
        403
    );
    let (status, body) = call(Method::POST, "/api/v1/tokens", &admin, Some(new_token)).await;
    assert_eq!(status, 201, "{body}");
    let made = body["token"].as_str().unwrap().to_owned();
    let id = body["id"].as_str().unwrap().to_owned();
    assert_eq!(
        call(Method::GET, "/api/v1/events", &made, None).await.0,
        200
    );
    let (status, body) = call(Method::GET, "/api/v1/tokens", &admin, None).await;
    assert_eq!(status, 200);
    assert!(
        !body.to_string().contains(&made),
        "tokens are never shown again"
    );
    assert_eq!(
        call(
            Method::DELETE,
            &format!("/api/v1/tokens/{id}"),
            &admin,
            None
        )
        .await
        .0,
        200
    );
    assert_eq!(
        call(Method::GET, "/api/v1/events", &made, None).await.0,
        401,
        "revoked at once"
    );
    let key = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        ed25519_dalek::SigningKey::from_bytes(&[8; 32])
            .verifying_key()
            .as_bytes(),
    );
    let gw = json!({"gateway_id": "gw-new", "public_key": key});
    assert_eq!(
        call(
            Method::POST,
            "/api/v1/gateways",
            &operator,
            Some(gw.clone())
        )
        .await
        .0,
        403
    );
    let (status, body) = call(Method::POST, "/api/v1/gateways", &admin, Some(gw)).await;
    assert_eq!(status, 201, "{body}");
    let bad = json!({"gateway_id": "gw-x", "public_key": "c2hvcnQ="});
    let (status, body) = call(Method::POST, "/api/v1/gateways", &admin, Some(bad)).await;
    assert_eq!(status, 400);
    assert!(body["reason"].as_str().unwrap().contains("32"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_readable_without_a_token_and_every_api_access_is_recorded() {
    let env = Env::start(EnvOptions::default()).await;
    seed(&env).await;
    for path in [
        "/api/v1/events",
        "/api/v1/stats",
        "/api/v1/gateways",
        "/api/v1/stream",
        "/api/v1/nope",
    ] {
        let resp = env
            .http
            .get(format!("{}{path}", env.base))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 401, "{path}");
    }
    let viewer = env.token(Role::Viewer, None).await;
    let (status, _) = env
        .get(&viewer, "/api/v1/events?event_type=auth.failed&limit=5")
        .await;
    assert_eq!(status, 200);
    let (status, _) = env.get("lsc_guessed", "/api/v1/events").await;
    assert_eq!(status, 401);
    let db = env.db().await;
    let count = env
        .wait_count(
            "SELECT count(*) FROM security_events WHERE event_type = 'api.access' AND event_data->>'path' = '/api/v1/events'",
            3,
        )
        .await;
    assert_eq!(count, 3, "anonymous, viewer, guessed token");
    let row = db
        .query_one(
            "SELECT user_id, host(source_ip), severity, event_data FROM security_events \
             WHERE event_type = 'api.access' AND event_data->>'query' = 'event_type=auth.failed&limit=5'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        row.get::<_, Option<String>>(0).as_deref(),
        Some("viewer-test")
    );
    assert_eq!(
        row.get::<_, Option<String>>(1).as_deref(),
        Some("127.0.0.1")
    );
    assert_eq!(row.get::<_, String>(2), "debug");
    let data: Value = row.get(3);
    assert_eq!(
        (
            data["method"].as_str(),
            data["status"].as_u64(),
            data["role"].as_str()
        ),
        (Some("GET"), Some(200), Some("viewer"))
    );
    assert!(data["duration_ms"].as_f64().is_some());
    let denied: i64 = db
        .query_one(
            "SELECT count(*) FROM security_events WHERE event_type = 'api.access' AND severity = 'warn' AND (event_data->>'status')::int = 401",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(denied, 6);
    // The page itself holds no data and needs no token.
    let resp = env.http.get(format!("{}/", env.base)).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
}
