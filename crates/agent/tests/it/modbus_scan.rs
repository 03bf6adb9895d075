//! A scan or flood by another client, seen in the device's own diagnostic counters: the
//! device is an independent pymodbus server that counts what it serves from every client
//! (`"count": true` in `crates/testkit/peers/pymodbus_server.py`), the intruder is a second
//! Modbus client written here (`linesentry_testkit::intruder`), and the agent's Modbus
//! source and rules run as the station task runs them. The agent's own reads keep getting
//! normal answers throughout, so only the counters can show the intruder.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::modbus_common::{free_port, load_stations};
use linesentry_agent::source::{Source, SourceContext};
use linesentry_event::{SecurityEvent, Timestamp};
use linesentry_testkit::{intruder, PythonPeer};

const PROFILE: &str = r#"
[profile]
name = "counted_plc"
protocol = "modbus"

[rules]
diag_scan_exceptions_per_min = 10
diag_flood_messages_per_s = 100

[diagnostics]
every_s = 1
counters = ["server_message_count", "bus_exception_error_count", "comm_event_count"]

[[tags]]
name = "speed"
role = "measurement"
type = "u16"
area = "holding_register"
address = 0
limits = { min = 0.0, max = 5000.0 }

[[tags]]
name = "speed_setpoint"
role = "setpoint"
type = "u16"
area = "holding_register"
address = 1
"#;

/// A counting pymodbus device with a 100-register map.
fn device(dir: &std::path::Path) -> (PythonPeer, SocketAddr) {
    let spec = json!({
        "size": 100,
        "count": true,
        "identity": {"vendor": "linesentry tests", "product_code": "CNT-1", "revision": "1.0"},
        "points": [
            {"table": "holding_register", "address": 0, "type": "u16", "value": 1200},
            {"table": "holding_register", "address": 1, "type": "u16", "value": 1250}
        ],
    });
    let spec_path = dir.join("spec.json");
    std::fs::write(&spec_path, spec.to_string()).expect("spec");
    let port = free_port();
    let guard = PythonPeer::start(
        "pymodbus_server.py",
        [port.to_string().as_ref(), spec_path.as_os_str()],
        &format!("READY {port}"),
        Duration::from_secs(30),
    );
    (guard, SocketAddr::from(([127, 0, 0, 1], port)))
}

/// Polls the device every 200 ms for `seconds` through the rules; `intrude` runs beside
/// the polls from the second second on. Returns the events and what the intruder got.
async fn watch<F, Fut>(seconds: u64, intrude: F) -> (Vec<SecurityEvent>, intruder::Tally)
where
    F: FnOnce(SocketAddr) -> Fut,
    Fut: std::future::Future<Output = intruder::Tally> + Send + 'static,
{
    let dir = tempfile::tempdir().expect("tempdir");
    let (_device, address) = device(dir.path());
    let (_config, stations) = load_stations(
        &[("counted_plc", PROFILE)],
        &format!(
            "[[stations]]\nid = \"plc-1\"\nprofile = \"counted_plc\"\nsource = \"modbus_tcp\"\n\
             address = \"{address}\"\nunit_id = 1\npoll_interval_ms = 200\ntimeout_ms = 2000\n"
        ),
    );
    let station = &stations[0];
    let context = SourceContext {
        data_dir: dir.path().to_owned(),
        gateway_id: "gw-scan".into(),
        seed: 7,
    };
    let mut source = Source::for_station(station, &context).expect("source");
    let mut rules = crate::support::rules_for("gw-scan", station);
    let mut events = Vec::new();
    let mut intruder_task = None;
    let mut intrude = Some(intrude);
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    while started.elapsed() < Duration::from_secs(seconds) {
        tick.tick().await;
        if started.elapsed() >= Duration::from_secs(2) {
            if let Some(f) = intrude.take() {
                intruder_task = Some(tokio::spawn(f(address)));
            }
        }
        let poll = source.poll().await;
        assert!(poll.reachable, "{:?}", poll.errors);
        events.extend(rules.observe(&poll, Timestamp::now()));
    }
    let tally = match intruder_task {
        Some(t) => t.await.expect("intruder task"),
        None => intruder::Tally::default(),
    };
    (events, tally)
}

fn violations(events: &[SecurityEvent]) -> Vec<&SecurityEvent> {
    events
        .iter()
        .filter(|e| e.event_type == "security.violation")
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agents_own_polling_of_a_counting_device_is_no_scan_and_no_flood() {
    let (events, _) = watch(6, |_| async { intruder::Tally::default() }).await;
    assert!(violations(&events).is_empty(), "{events:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_address_scan_by_another_client_is_one_security_violation_from_the_counters() {
    let (events, tally) = watch(7, |device| {
        intruder::scan(device, 1, 60, Duration::from_millis(20))
    })
    .await;
    assert_eq!(
        tally.exceptions, 60,
        "the device refused every probe: {tally:?}"
    );
    let found = violations(&events);
    assert_eq!(found.len(), 1, "one per burst: {found:#?}");
    let d = &found[0].event_data;
    assert_eq!(d["kind"], "modbus_scan", "{d:?}");
    assert_eq!(d["source"], "device_diagnostics");
    assert!(
        d["foreign_exceptions_last_min"].as_u64().unwrap_or(0) >= 10,
        "{d:?}"
    );
    assert!(d["own_requests"].as_u64().unwrap_or(0) > 0, "{d:?}");
    assert_eq!(
        d["own_exceptions"], 0,
        "the agent's own reads were answered: {d:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_reads_by_another_client_is_a_flood() {
    let (events, tally) = watch(7, |device| intruder::flood(device, 1, 0, 1500)).await;
    assert!(tally.answered >= 1000 && tally.exceptions == 0, "{tally:?}");
    let found = violations(&events);
    assert_eq!(found.len(), 1, "one per burst: {found:#?}");
    let d = &found[0].event_data;
    assert_eq!(d["kind"], "modbus_flood", "{d:?}");
    assert!(
        d["messages_per_s"].as_f64().unwrap_or(0.0) >= 100.0,
        "{d:?}"
    );
}
