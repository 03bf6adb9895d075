//! End to end, one scenario per event type: a station simulator (Modbus TCP or OPC UA on
//! loopback) plays the scenario, the agent polls it and runs the rules, and the test reads
//! the events from the durable queue afterwards, as a forwarder would.

use std::path::Path;
use std::time::Duration;

use linesentry::agent::{self, RunOptions};
use linesentry::buffer::{Queue, QueueOptions};
use linesentry::event::{SecurityEvent, Severity};
use linesentry::sim::opcua::OpcUaSimOptions;
use linesentry::sim::{self, Schedule, SimOptions};
use linesentry::source::opcua::Pki;
use tokio_util::sync::CancellationToken;

const GATEWAY: &str = "gw-scenario";

/// How the station talks to its simulator.
enum Link {
    Modbus,
    /// OPC UA with SignAndEncrypt / Basic256Sha256 and this password for `operator`.
    OpcUa {
        password: &'static str,
    },
}

/// Runs `profile` simulated with `schedule` (seconds after start), the agent polling it every
/// 100 ms for `seconds`, with `rules` appended to the profile as its `[rules]` table.
async fn scenario(
    profile: &str,
    link: Link,
    rules: &str,
    schedule: &str,
    seconds: f64,
) -> Vec<SecurityEvent> {
    let dir = tempfile::tempdir().unwrap();
    let devices = dir.path().join("devices");
    std::fs::create_dir_all(&devices).unwrap();
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("devices")
        .join(format!("{profile}.toml"));
    let mut text = std::fs::read_to_string(&shipped).unwrap();
    if !rules.is_empty() {
        text = format!("{text}\n[rules]\n{rules}\n");
    }
    let profile_path = devices.join(format!("{profile}.toml"));
    std::fs::write(&profile_path, text).unwrap();
    let data = dir.path().join("data");

    let loaded = sim::load_profile(&profile_path).unwrap();
    let options = SimOptions {
        schedule: Schedule::parse(schedule).unwrap(),
        seed: 3,
        ..SimOptions::default()
    };
    let mut modbus_sim = None;
    let mut opcua_sim = None;
    let source = match link {
        Link::Modbus => {
            let handle = sim::modbus::start(loaded, &options).await.unwrap();
            let address = handle.local_addr();
            modbus_sim = Some(handle);
            format!("source = \"modbus_tcp\"\naddress = \"{address}\"\ntimeout_ms = 300")
        }
        Link::OpcUa { password } => {
            let sim = sim::opcua::start(
                loaded,
                &options,
                &OpcUaSimOptions::new(dir.path().join("sim-pki")),
            )
            .await
            .unwrap();
            Pki::in_data_dir(&data)
                .trust(&sim.pki_dir().join("own/cert.der").to_string_lossy())
                .unwrap();
            let secret = dir.path().join("password");
            std::fs::write(&secret, password).unwrap();
            let url = sim.endpoint_url();
            opcua_sim = Some(sim);
            format!(
                "source = \"opcua\"\nendpoint_url = \"{url}\"\nsecurity_mode = \"SignAndEncrypt\"\n\
                 security_policy = \"Basic256Sha256\"\n\
                 identity = {{ kind = \"username\", user = \"operator\", password = {{ file = \"{}\" }} }}",
                secret.display()
            )
        }
    };
    let config_text = format!(
        "[agent]\ngateway_id = \"{GATEWAY}\"\nsite = \"test\"\ndata_dir = \"{}\"\nprofiles_dir = \"{}\"\n\
         shutdown_grace_ms = 500\n\n[[stations]]\nid = \"st-1\"\nprofile = \"{profile}\"\n{source}\n\
         poll_interval_ms = 100\n",
        data.display(),
        devices.display()
    );
    let config = linesentry::config::load_str(&dir.path().join("agent.toml"), &config_text)
        .unwrap_or_else(|e| panic!("{e}\n{config_text}"));

    let shutdown = CancellationToken::new();
    let agent = tokio::spawn(agent::run(config, RunOptions::default(), shutdown.clone()));
    tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
    shutdown.cancel();
    agent.await.unwrap().unwrap();
    if let Some(h) = modbus_sim {
        h.shutdown().await;
    }
    if let Some(s) = opcua_sim {
        s.shutdown().await;
    }
    let (queue, _) = Queue::open(QueueOptions::new(&data, GATEWAY)).unwrap();
    let events = queue.peek(None, usize::MAX).unwrap();
    queue.close().await;
    events
}

fn of<'a>(events: &'a [SecurityEvent], kind: &str) -> Vec<&'a SecurityEvent> {
    events.iter().filter(|e| e.event_type == kind).collect()
}

fn one<'a>(events: &'a [SecurityEvent], kind: &str, severity: Severity) -> &'a SecurityEvent {
    let found = of(events, kind);
    let summary: Vec<String> = events
        .iter()
        .map(|e| format!("{} {}", e.event_type, e.severity))
        .collect();
    assert_eq!(found.len(), 1, "expected one {kind}; got {summary:?}");
    assert_eq!(found[0].severity, severity, "{kind}");
    assert_eq!(found[0].station_id.as_deref(), Some("st-1"));
    found[0]
}

/// Nothing but the scenario's own events is warn or louder.
fn quiet_apart_from(events: &[SecurityEvent], expected: &[&str]) {
    let loud: Vec<String> = events
        .iter()
        .filter(|e| e.severity >= Severity::Warn && !expected.contains(&e.event_type.as_str()))
        .map(|e| format!("{} {} {:?}", e.event_type, e.severity, e.event_data))
        .collect();
    assert!(loud.is_empty(), "unexpected alarms: {loud:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_setpoint_raises_setpoint_changed_with_the_old_and_new_value() {
    let events = scenario(
        "stamping_press",
        Link::Modbus,
        "",
        "setpoint_change@1.5",
        3.0,
    )
    .await;
    let e = one(&events, "setpoint.changed", Severity::Warn);
    assert_ne!(e.event_data["value"], e.event_data["previous"]);
    assert_eq!(e.event_data["attack"], serde_json::json!(["T0836"]));
    quiet_apart_from(&events, &["setpoint.changed", "setpoint.out_of_range"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_switch_to_program_mode_is_an_error() {
    let events = scenario("stamping_press", Link::Modbus, "", "mode_program@1.5", 3.0).await;
    let e = one(&events, "mode.changed", Severity::Error);
    assert_eq!(e.event_data["state"], "program");
    quiet_apart_from(&events, &["mode.changed"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fault_and_its_recovery_share_a_correlation_id() {
    let events = scenario(
        "stamping_press",
        Link::Modbus,
        "",
        "fault@1.5,recover@2.5",
        3.5,
    )
    .await;
    let fault = one(&events, "equipment.fault", Severity::Warn);
    let id = fault.correlation_id.unwrap();
    let recovered = of(&events, "equipment.status")
        .into_iter()
        .find(|e| e.event_data.get("recovered").is_some())
        .expect("a recovery status");
    assert_eq!(recovered.correlation_id, Some(id));
    quiet_apart_from(&events, &["equipment.fault", "equipment.status"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_program_download_is_program_changed() {
    let events = scenario(
        "stamping_press",
        Link::Modbus,
        "",
        "program_change@1.5",
        3.0,
    )
    .await;
    one(&events, "program.changed", Severity::Error);
    quiet_apart_from(&events, &["program.changed"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clearing_the_alarm_enable_bit_is_alarm_suppression() {
    let events = scenario("stamping_press", Link::Modbus, "", "alarm_disable@1.5", 3.0).await;
    one(&events, "alarm.suppressed", Severity::Error);
    quiet_apart_from(&events, &["alarm.suppressed", "alarm_limit.changed"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_alarm_limit_is_alarm_limit_changed() {
    let events = scenario(
        "stamping_press",
        Link::Modbus,
        "",
        "alarm_limit_change@1.5",
        3.0,
    )
    .await;
    one(&events, "alarm_limit.changed", Severity::Warn);
    quiet_apart_from(&events, &["alarm_limit.changed"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_that_goes_silent_is_unreachable_then_recovered_under_one_id() {
    let events = scenario("stamping_press", Link::Modbus, "", "silent@1,normal@3", 9.0).await;
    let down = one(&events, "device.unreachable", Severity::Warn);
    let up = one(&events, "device.recovered", Severity::Info);
    assert_eq!(down.correlation_id, up.correlation_id);
    assert!(down.correlation_id.is_some());
    quiet_apart_from(&events, &["device.unreachable"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_measurement_is_stale() {
    let events = scenario(
        "stamping_press",
        Link::Modbus,
        "stale_after_s = 1",
        "freeze@1",
        3.5,
    )
    .await;
    let stale = of(&events, "value.stale");
    assert!(!stale.is_empty(), "no value.stale");
    assert!(stale.iter().all(|e| e.event_data["reason"] == "frozen"));
    quiet_apart_from(&events, &["value.stale"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_firmware_and_a_new_identity_at_the_same_address_are_raised() {
    // The Modbus identity (FC 43/14) is read on connect and every 60 polls (6 s here).
    let events = scenario(
        "stamping_press",
        Link::Modbus,
        "",
        "firmware_change@1,identity_change@7",
        13.5,
    )
    .await;
    let firmware = of(&events, "firmware.changed");
    assert!(!firmware.is_empty(), "no firmware.changed");
    assert!(firmware.iter().all(|e| e.severity == Severity::Error));
    let identity = one(&events, "identity.changed", Severity::Critical);
    assert!(identity.event_data["changes"].is_object());
    quiet_apart_from(&events, &["firmware.changed", "identity.changed"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_failed_inspections_is_a_quality_anomaly() {
    let events = scenario(
        "aoi_station",
        Link::OpcUa {
            password: "operator",
        },
        "quality_failures = 3\nquality_window = 10",
        "quality_burst@3",
        7.0,
    )
    .await;
    let failed: Vec<_> = of(&events, "quality.check")
        .into_iter()
        .filter(|e| e.event_data["result"] == "fail")
        .collect();
    assert!(failed.len() >= 3, "failed checks: {}", failed.len());
    assert!(failed.iter().all(|e| e.severity == Severity::Warn));
    one(&events, "quality.anomaly", Severity::Warn);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_rejected_logins_are_a_security_violation() {
    let events = scenario(
        "cell_controller",
        Link::OpcUa {
            password: "wrong-password",
        },
        "auth_burst = 2",
        "",
        14.0,
    )
    .await;
    let failed = of(&events, "auth.failed");
    assert!(failed.len() >= 2, "auth.failed: {}", failed.len());
    let violation = one(&events, "security.violation", Severity::Error);
    assert_eq!(violation.event_data["kind"], "auth_burst");
    assert!(failed
        .iter()
        .all(|e| e.correlation_id == violation.correlation_id));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_switch_to_program_mode_over_opc_ua_is_an_error() {
    let events = scenario(
        "cell_controller",
        Link::OpcUa {
            password: "operator",
        },
        "",
        "mode_program@4",
        7.0,
    )
    .await;
    let e = one(&events, "mode.changed", Severity::Error);
    assert_eq!(e.event_data["state"], "PROGRAM");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_opc_ua_firmware_update_is_firmware_changed_and_a_restart() {
    let events = scenario(
        "cell_controller",
        Link::OpcUa {
            password: "operator",
        },
        "",
        "firmware_change@4",
        12.0,
    )
    .await;
    let firmware = of(&events, "firmware.changed");
    assert!(!firmware.is_empty(), "no firmware.changed");
    assert!(firmware.iter().all(|e| e.severity == Severity::Error));
    assert!(
        !of(&events, "device.restarted").is_empty(),
        "no device.restarted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_server_identity_at_the_same_address_is_raised() {
    let events = scenario(
        "cell_controller",
        Link::OpcUa {
            password: "operator",
        },
        "",
        "identity_change@4",
        12.0,
    )
    .await;
    // The new server presents a new, untrusted certificate: the agent refuses the session
    // (cert.invalid) and reports the changed identity it saw during endpoint discovery.
    one(&events, "cert.invalid", Severity::Error);
    let identity = one(&events, "identity.changed", Severity::Critical);
    assert!(identity.event_data["changes"].is_object());
    for e in of(&events, "identity.changed") {
        assert_eq!(e.severity, Severity::Critical);
    }
}
