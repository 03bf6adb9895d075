//! End to end for the events the agent makes about itself rather than from station
//! readings, where no other integration test shows them: the agent runs with a simulated
//! station and a real forwarding target, and the test reads the durable queue afterwards.

use std::fmt::Write as _;
use std::time::Duration;

use linesentry_agent::buffer::{Queue, QueueOptions};
use linesentry_agent::runtime::{self as agent, RunOptions};
use linesentry_event::Severity;
use tokio_util::sync::CancellationToken;

const GATEWAY: &str = "gw-agent-scenario";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_that_refuses_every_connection_is_reported_once_as_upstream_down() {
    let dir = tempfile::tempdir().unwrap();
    // A loopback port with nothing listening: every POST is refused at once.
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let data = dir.path().join("data");
    let profiles = concat!(repo!(), "/devices");
    let text = format!(
        "[agent]\ngateway_id = \"{GATEWAY}\"\nsite = \"test\"\ndata_dir = \"{}\"\n\
         profiles_dir = \"{profiles}\"\nshutdown_grace_ms = 500\n\n\
         [forward]\nupstream_down_after_ms = 1000\nreplay_jitter_ms = 0\n\n\
         [forward.https]\nurl = \"http://127.0.0.1:{port}/api/v1/ingest\"\ntimeout_ms = 500\n\n\
         [[stations]]\nid = \"st-1\"\nprofile = \"stamping_press\"\nsource = \"simulated\"\n\
         poll_interval_ms = 100\n",
        data.display()
    );
    let config = linesentry_agent::config::load_str(&dir.path().join("agent.toml"), &text)
        .unwrap_or_else(|e| panic!("{e}\n{text}"));
    let shutdown = CancellationToken::new();
    let agent = tokio::spawn(agent::run(config, RunOptions::default(), shutdown.clone()));
    // The outage under test lasts 6 s, several `upstream_down_after_ms`: one event, not one
    // per second (the queue can only be read after the stop).
    tokio::time::sleep(Duration::from_secs(6)).await;
    shutdown.cancel();
    agent.await.unwrap().unwrap();

    let (queue, _) = Queue::open(QueueOptions::new(&data, GATEWAY)).unwrap();
    let events = queue.peek(None, usize::MAX).unwrap();
    queue.close().await;
    let down: Vec<_> = events
        .iter()
        .filter(|e| e.event_type == "forward.upstream_down")
        .collect();
    let types: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(down.len(), 1, "one per outage: {types:?}");
    assert_eq!(down[0].severity, Severity::Warn);
    let data_text = serde_json::to_string(&down[0].event_data).unwrap();
    assert!(data_text.contains(&port.to_string()), "{data_text}");
    // Nothing was acknowledged, so the station's events are all still buffered.
    assert!(types.contains(&"agent.started"), "{types:?}");
    assert!(types.contains(&"equipment.status"), "{types:?}");
}

/// A store filled past its quota by busy stations while nothing forwards: one
/// `agent.buffer_high` on crossing 80 %, then evictions reported by `agent.buffer_dropped`.
/// The agent runs in rounds of a few seconds (the store can only be read while it is
/// stopped) until both are there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_filled_past_its_quota_raises_buffer_high_once_then_reports_what_it_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let profiles = concat!(repo!(), "/devices");
    let mut text = format!(
        "[agent]\ngateway_id = \"{GATEWAY}\"\nsite = \"test\"\ndata_dir = \"{}\"\n\
         profiles_dir = \"{profiles}\"\nshutdown_grace_ms = 500\n\n[buffer]\nquota_mib = 1\n",
        data.display()
    );
    for (i, profile) in [
        "stamping_press",
        "reflow_oven",
        "aoi_station",
        "cell_controller",
    ]
    .iter()
    .enumerate()
    {
        let _ = write!(
            text,
            "\n[[stations]]\nid = \"st-{i}\"\nprofile = \"{profile}\"\nsource = \"simulated\"\n\
             poll_interval_ms = 10\n"
        );
    }
    let mut events = Vec::new();
    for _round in 0..30 {
        let config = linesentry_agent::config::load_str(&dir.path().join("agent.toml"), &text)
            .unwrap_or_else(|e| panic!("{e}\n{text}"));
        let shutdown = CancellationToken::new();
        let agent = tokio::spawn(agent::run(config, RunOptions::default(), shutdown.clone()));
        // One round of filling; the store can only be read while the agent is stopped.
        tokio::time::sleep(Duration::from_secs(3)).await;
        shutdown.cancel();
        agent.await.unwrap().unwrap();
        let (queue, _) = Queue::open(QueueOptions::new(&data, GATEWAY)).unwrap();
        events = queue.peek(None, usize::MAX).unwrap();
        queue.close().await;
        if events
            .iter()
            .any(|e| e.event_type == "agent.buffer_dropped")
        {
            break;
        }
    }
    let of = |kind: &str| {
        events
            .iter()
            .filter(|e| e.event_type == kind)
            .collect::<Vec<_>>()
    };
    let high = of("agent.buffer_high");
    assert_eq!(high.len(), 1, "one crossing, no repeats while above");
    assert_eq!(high[0].severity, Severity::Warn);
    assert!(high[0].event_data["used_percent"].as_u64().unwrap() >= 80);
    let dropped = of("agent.buffer_dropped");
    assert!(
        !dropped.is_empty(),
        "nothing evicted in 90 s of busy stations"
    );
    assert!(dropped.iter().all(|e| e.severity == Severity::Error));
    // The watermark is crossed before anything is evicted.
    assert!(high[0].seq < dropped[0].seq);
}
