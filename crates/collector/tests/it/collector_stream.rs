//! The live stream over a real WebSocket (TLS): welcome, subscribe with filters, events as
//! they are committed, bounded queues for slow clients.

use linesentry_testkit::collector as env;

use std::time::{Duration, Instant};

use env::{events_topic, ws_next, ws_send, Chain, Env, EnvOptions, Publisher};
use linesentry_collector::auth::Role;
use linesentry_event::{EventType, SecurityEvent, Severity};
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscribed_client_receives_the_matching_events_as_they_are_committed() {
    let env = Env::start(EnvOptions::default()).await;
    let signer = env.gateway("gw-1").await;
    let token = env.token(Role::Gateway, Some("gw-1")).await;
    let viewer = env.token(Role::Viewer, None).await;
    let mut ws = env.ws(Some(&viewer), false).await.expect("connect");
    let welcome = ws_next(&mut ws, WAIT).await.expect("welcome");
    assert_eq!(welcome["type"], "welcome");
    assert_eq!(welcome["role"], "viewer");
    ws_send(
        &mut ws,
        &json!({"type": "subscribe", "filters": {"event_types": ["setpoint.", "program.changed"], "min_severity": "warn", "gateway_id": "gw-1"}}),
    )
    .await;
    let ack = ws_next(&mut ws, WAIT).await.expect("subscribed");
    assert_eq!(ack["type"], "subscribed", "{ack}");
    assert_eq!(ack["filters"]["min_severity"], "warn");

    let mut chain = Chain::new("gw-1");
    let events: Vec<SecurityEvent> = [
        (EventType::SetpointChanged, Severity::Warn),
        (EventType::SetpointChanged, Severity::Info),
        (EventType::EquipmentStatus, Severity::Warn),
        (EventType::ProgramChanged, Severity::Error),
        (EventType::SetpointOutOfRange, Severity::Error),
    ]
    .into_iter()
    .map(|(t, s)| chain.link(SecurityEvent::new("gw-1", t).severity(s)))
    .collect();
    let (status, _) = env.post(Some(&token), signer.seal(&events), true).await;
    assert_eq!(status, 200);
    let mut got = Vec::new();
    while let Some(m) = ws_next(&mut ws, Duration::from_millis(700)).await {
        assert_eq!(m["type"], "event", "{m}");
        got.push(m["event"]["id"].as_str().unwrap().to_owned());
        assert_eq!(m["event"]["verification"], "verified");
    }
    let want: Vec<String> = [0, 3, 4]
        .iter()
        .map(|i| events[*i].id.to_string())
        .collect();
    assert_eq!(got, want);

    ws_send(&mut ws, &json!({"type": "ping"})).await;
    assert_eq!(ws_next(&mut ws, WAIT).await.unwrap()["type"], "pong");
    ws_send(
        &mut ws,
        &json!({"type": "subscribe", "filters": {"min_severity": "fatal"}}),
    )
    .await;
    let err = ws_next(&mut ws, WAIT).await.unwrap();
    assert_eq!(err["type"], "error");
    assert!(err["reason"].as_str().unwrap().contains("fatal"), "{err}");
    ws_send(
        &mut ws,
        &json!({"type": "subscribe", "filters": {"sql": "1; DROP TABLE x"}}),
    )
    .await;
    assert_eq!(ws_next(&mut ws, WAIT).await.unwrap()["type"], "error");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_needs_a_viewer_token_in_a_header_or_as_a_browser_subprotocol() {
    let env = Env::start(EnvOptions::default()).await;
    env.gateway("gw-1").await;
    let status = |e: tokio_tungstenite::tungstenite::Error| match e {
        tokio_tungstenite::tungstenite::Error::Http(resp) => resp.status().as_u16(),
        other => panic!("{other}"),
    };
    assert_eq!(status(env.ws(None, false).await.unwrap_err()), 401);
    assert_eq!(
        status(env.ws(Some("lsc_nope"), true).await.unwrap_err()),
        401
    );
    let gateway = env.token(Role::Gateway, Some("gw-1")).await;
    assert_eq!(
        status(env.ws(Some(&gateway), false).await.unwrap_err()),
        403
    );
    let viewer = env.token(Role::Viewer, None).await;
    let mut ws = env
        .ws(Some(&viewer), true)
        .await
        .expect("subprotocol token accepted");
    assert_eq!(ws_next(&mut ws, WAIT).await.unwrap()["type"], "welcome");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_client_never_slows_ingest_and_is_told_how_many_events_it_missed() {
    let env = Env::start(EnvOptions {
        extra: "\n[stream]\nclient_queue = 256\n".into(),
        ..EnvOptions::default()
    })
    .await;
    let signer = env.gateway("gw-1").await;
    let token = env.token(Role::Gateway, Some("gw-1")).await;
    let viewer = env.token(Role::Viewer, None).await;
    // A small fixed receive buffer: with the kernel's autotuning (up to 32 MiB here) the
    // stalled client's socket alone would hold all 24 MB.
    let mut slow = env.ws_small_buffer(Some(&viewer), 64 * 1024).await.unwrap();
    let mut fast = env.ws(Some(&viewer), false).await.unwrap();
    for ws in [&mut slow, &mut fast] {
        ws_next(ws, WAIT).await.unwrap();
        ws_send(
            ws,
            &json!({"type": "subscribe", "filters": {"gateway_id": "gw-1"}}),
        )
        .await;
        assert_eq!(ws_next(ws, WAIT).await.unwrap()["type"], "subscribed");
    }
    // The fast client reads as events come; the slow one reads nothing until ingest is done.
    let reader = tokio::spawn(async move {
        let (mut n, mut missed) = (0u64, 0u64);
        while let Some(m) = ws_next(&mut fast, Duration::from_secs(3)).await {
            match m["type"].as_str() {
                Some("event") => n += 1,
                Some("missed") => missed += m["count"].as_u64().unwrap(),
                _ => {}
            }
        }
        (n, missed)
    });
    let mut chain = Chain::new("gw-1");
    let total = 3000u64;
    // 8 KiB per event: 24 MB, more than the stalled client's socket buffers hold.
    let blob = "0123456789abcdef".repeat(512);
    let started = Instant::now();
    for _ in 0..(total / 20) {
        let events: Vec<SecurityEvent> = (0..20)
            .map(|_| {
                chain.link(
                    SecurityEvent::new("gw-1", EventType::EquipmentMeasurement)
                        .data("blob", blob.clone()),
                )
            })
            .collect();
        let (status, reply) = env.post(Some(&token), signer.seal(&events), true).await;
        assert_eq!(status, 200, "{reply}");
    }
    let ingest_time = started.elapsed();
    let mut events = 0u64;
    let mut missed = 0u64;
    while let Some(m) = ws_next(&mut slow, Duration::from_secs(3)).await {
        match m["type"].as_str() {
            Some("event") => events += 1,
            Some("missed") => missed += m["count"].as_u64().unwrap(),
            other => panic!("{other:?}: {m}"),
        }
    }
    assert!(missed > 0, "the slow client's queue overflowed");
    assert_eq!(
        events + missed,
        total,
        "every event is either delivered or counted as missed"
    );
    let (fast_events, fast_missed) = reader.await.unwrap();
    assert_eq!(fast_events + fast_missed, total);
    assert!(
        fast_missed < missed,
        "the fast client kept up better: {fast_missed} vs {missed}"
    );
    let (_, status) = env.get(&viewer, "/api/v1/status").await;
    assert_eq!(
        status["stream"]["dropped"],
        missed + fast_missed,
        "{status}"
    );
    eprintln!("ingest of {total} events took {ingest_time:?} with one stalled client");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_published_at_the_broker_reaches_a_stream_client() {
    let broker = env::mosquitto();
    let env = Env::start(EnvOptions {
        mqtt_port: Some(broker.port()),
        ..EnvOptions::default()
    })
    .await;
    let signer = env.gateway("gw-1").await;
    let viewer = env.token(Role::Viewer, None).await;
    let mut ws = env.ws(Some(&viewer), true).await.unwrap();
    ws_next(&mut ws, WAIT).await.unwrap();
    ws_send(
        &mut ws,
        &json!({"type": "subscribe", "filters": {"event_types": ["identity.changed"]}}),
    )
    .await;
    ws_next(&mut ws, WAIT).await.unwrap();
    let publisher = Publisher::connect(broker.port(), "gw-1").await;
    let e = Chain::new("gw-1")
        .link(SecurityEvent::new("gw-1", EventType::IdentityChanged).station("plc-7"));
    publisher
        .publish(
            &events_topic("gw-1", &e),
            signer.seal(std::slice::from_ref(&e)),
            false,
        )
        .await;
    let m: Value = ws_next(&mut ws, WAIT).await.expect("event");
    assert_eq!(m["event"]["id"], e.id.to_string());
    assert_eq!(m["event"]["severity"], "critical");
    assert_eq!(m["event"]["station_id"], "plc-7");
}
