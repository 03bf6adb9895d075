//! The running agent's health endpoint, over a real socket: stations and the forwarder
//! report into it, and a broker outage shows as a degraded, still healthy forwarder.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use linesentry_testkit::{free_port, wait_until};

/// `GET path` over plain HTTP; (status, body), or None while nothing listens.
fn get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let status = text.split(' ').nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned())?;
    Some((status, body))
}

fn start(dir: &Path, health: u16, broker: u16) -> Child {
    let devices = concat!(env!("CARGO_MANIFEST_DIR"), "/devices");
    let config = dir.join("agent.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[agent]
gateway_id = "gw-health"
site = "plant-t"
data_dir = "data"
profiles_dir = "{devices}"

[[stations]]
id = "press-01"
profile = "stamping_press"
source = "simulated"
poll_interval_ms = 100

[forward.mqtt]
host = "127.0.0.1"
port = {broker}

[health]
listen = "127.0.0.1:{health}"
"#
        ),
    )
    .unwrap();
    Command::new(env!("CARGO_BIN_EXE_linesentry"))
        .args(["run", "--config"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

#[test]
fn the_agent_serves_healthz_and_metrics_with_its_stations_queue_and_forwarder() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    // No broker listens here: the forwarder fails, events stay buffered.
    let broker = free_port();
    let mut agent = start(dir.path(), port, broker);
    // On a timeout the assertions below say which metric is missing.
    let metrics = wait_until(Duration::from_secs(20), || match get(port, "/metrics") {
        Some((200, body))
            if body.contains("linesentry_forward_failures_total")
                && body.contains("linesentry_station_polls_total{station=\"press-01\"}") =>
        {
            Some(body)
        }
        _ => None,
    })
    .unwrap_or_default();
    let health = get(port, "/healthz");
    let _ = Command::new("kill")
        .args(["-TERM", &agent.id().to_string()])
        .status();
    let status = agent.wait().unwrap();
    assert!(status.success(), "{status:?}");

    assert!(
        metrics.contains("linesentry_station_polls_total{station=\"press-01\"}"),
        "{metrics}"
    );
    assert!(metrics.contains("linesentry_station_poll_duration_seconds_bucket"));
    assert!(metrics.contains("linesentry_queue_events "), "{metrics}");
    assert!(metrics.contains("linesentry_queue_oldest_age_seconds"));
    assert!(
        metrics.contains("linesentry_forward_failures_total{sink=\"mqtt\""),
        "{metrics}"
    );
    // A broker outage degrades the forwarder but is no reason to restart the agent.
    let (code, body) = health.expect("healthz answers");
    assert_eq!(code, 200, "{body}");
}
