//! End to end, one scenario per event type: a station simulator (Modbus TCP or OPC UA on
//! loopback) plays the scenario, the agent polls it and runs the rules, and the test reads
//! the events from the durable queue afterwards, as a forwarder would.

use std::path::Path;
use std::time::Duration;

use linesentry_agent::buffer::{Queue, QueueOptions};
use linesentry_agent::runtime::{self as agent, RunOptions};
use linesentry_agent::source::opcua::{Acquisition, OpcUaSettings, Pki};
use linesentry_event::{SecurityEvent, Severity};
use linesentry_sim::opcua::OpcUaSimOptions;
use linesentry_sim::{self as sim, Schedule, SimOptions};
use linesentry_testkit::intruder;
use tokio_util::sync::CancellationToken;

const GATEWAY: &str = "gw-scenario";

/// How the station talks to its simulator.
enum Link {
    Modbus,
    /// OPC UA with SignAndEncrypt / Basic256Sha256 and this password for `operator`, the
    /// values acquired in `mode`.
    OpcUa {
        password: &'static str,
        mode: Acquisition,
    },
}

/// An OPC UA scenario runs once per acquisition mode: the same device behaviour must give
/// the same events whether the station is subscribed (the default) or polled. `name!(f)`
/// makes the tests `f::subscription` and `f::polling` of `async fn f(mode: Acquisition)`.
macro_rules! in_both_modes {
    ($name:ident) => {
        mod $name {
            use linesentry_agent::source::opcua::Acquisition;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn subscription() {
                super::$name(Acquisition::Subscription).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn polling() {
                super::$name(Acquisition::Polling).await;
            }
        }
    };
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
    let rules = rules.to_owned();
    let edit = move |text: String| {
        if rules.is_empty() {
            text
        } else {
            format!("{text}\n[rules]\n{rules}\n")
        }
    };
    scenario_with(profile, link, edit, schedule, seconds).await
}

/// [`scenario`] with the shipped profile's text passed through `edit` instead.
async fn scenario_with(
    profile: &str,
    link: Link,
    edit: impl FnOnce(String) -> String,
    schedule: &str,
    seconds: f64,
) -> Vec<SecurityEvent> {
    scenario_intruded(profile, link, edit, schedule, seconds, None).await
}

/// Another Modbus client, given the simulated device's address.
type Intruder = Box<
    dyn FnOnce(
            std::net::SocketAddr,
        )
            -> std::pin::Pin<Box<dyn std::future::Future<Output = intruder::Tally> + Send>>
        + Send,
>;

/// [`scenario_with`], with `intruder` talking to the Modbus simulator from the second
/// second on, beside the agent.
async fn scenario_intruded(
    profile: &str,
    link: Link,
    edit: impl FnOnce(String) -> String,
    schedule: &str,
    seconds: f64,
    intruder: Option<Intruder>,
) -> Vec<SecurityEvent> {
    let dir = tempfile::tempdir().unwrap();
    let devices = dir.path().join("devices");
    std::fs::create_dir_all(&devices).unwrap();
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("devices")
        .join(format!("{profile}.toml"));
    let text = edit(std::fs::read_to_string(&shipped).unwrap());
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
        Link::OpcUa { password, mode } => {
            let polled = mode == Acquisition::Polling;
            // The agent's application certificate exists before the simulator's timeline
            // starts, as on a gateway after its first start: its RSA key generation takes
            // seconds under qemu, and the scheduled actions would play before the first
            // session otherwise.
            let agent = OpcUaSettings::new(&data, GATEWAY);
            agent
                .pki
                .ensure_own(&agent.application_uri, &agent.application_name)
                .unwrap();
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
                 identity = {{ kind = \"username\", user = \"operator\", password = {{ file = \"{}\" }} }}{}",
                secret.display(),
                if polled {
                    "\nacquisition = \"polling\""
                } else {
                    ""
                }
            )
        }
    };
    // Another client on the device, beside the agent, from the second second on.
    let intrusion = match (intruder, &modbus_sim) {
        (Some(intrude), Some(sim)) => {
            let device = sim.local_addr();
            Some(tokio::spawn(async move {
                tokio::time::sleep(Duration::from_secs(2)).await;
                intrude(device).await
            }))
        }
        _ => None,
    };
    let events = run_agent(dir.path(), profile, &source, seconds).await;
    if let Some(task) = intrusion {
        let tally = task.await.expect("the intruder's task");
        assert!(
            tally.answered + tally.exceptions > 0,
            "the intruder reached the device: {tally:?}"
        );
    }
    if let Some(h) = modbus_sim {
        h.shutdown().await;
    }
    if let Some(s) = opcua_sim {
        s.shutdown().await;
    }
    events
}

/// Runs the agent for `seconds` with one station `st-1` of `profile` (in `<dir>/devices`)
/// reached through `source` (its `source = ...` lines), data in `<dir>/data`; returns what
/// the durable queue holds afterwards.
async fn run_agent(dir: &Path, profile: &str, source: &str, seconds: f64) -> Vec<SecurityEvent> {
    let data = dir.join("data");
    let devices = dir.join("devices");
    let config_text = format!(
        "[agent]\ngateway_id = \"{GATEWAY}\"\nsite = \"test\"\ndata_dir = \"{}\"\nprofiles_dir = \"{}\"\n\
         shutdown_grace_ms = 500\n\n[[stations]]\nid = \"st-1\"\nprofile = \"{profile}\"\n{source}\n\
         poll_interval_ms = 100\n",
        data.display(),
        devices.display()
    );
    let config = linesentry_agent::config::load_str(&dir.join("agent.toml"), &config_text)
        .unwrap_or_else(|e| panic!("{e}\n{config_text}"));

    let shutdown = CancellationToken::new();
    let agent = tokio::spawn(agent::run(config, RunOptions::default(), shutdown.clone()));
    // The scenario plays in real time on the simulator: the agent polls it for its length.
    tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
    shutdown.cancel();
    agent.await.unwrap().unwrap();
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

async fn a_burst_of_failed_inspections_is_a_quality_anomaly(mode: Acquisition) {
    let events = scenario(
        "aoi_station",
        Link::OpcUa {
            password: "operator",
            mode,
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
    assert!(failed.iter().all(|e| e.severity == Severity::Warn));
    // The verdict tag stays `fail` for the whole burst while the panel id moves on: one
    // failed check per panel, each panel once. The simulator and the agent both run at
    // 10 Hz, so a poll may fall between two panels and miss one; outside the burst about
    // 2 % of panels fail on their own, so there may be a few more.
    let mut panels: Vec<String> = failed
        .iter()
        .filter(|e| e.event_data["tag"] == "inspection_result")
        .map(|e| e.event_data["part_id"].to_string())
        .collect();
    let checks = panels.len();
    panels.sort_unstable();
    panels.dedup();
    assert_eq!(panels.len(), checks, "a panel checked twice: {panels:?}");
    let burst = linesentry_sim::scenario::QUALITY_BURST_CHECKS as usize;
    assert!(
        checks >= burst - 2,
        "{checks} failed verdicts for a burst of {burst} panels"
    );
    one(&events, "quality.anomaly", Severity::Warn);
}

/// Values that do not change still get their heartbeats: a subscription delivers nothing
/// while the cell state stays the same, the agent still reports it every `status_heartbeat_s`.
async fn a_steady_status_gets_its_heartbeats(mode: Acquisition) {
    let events = scenario(
        "cell_controller",
        Link::OpcUa {
            password: "operator",
            mode,
        },
        "status_heartbeat_s = 1",
        "",
        7.0,
    )
    .await;
    let beats = of(&events, "equipment.status")
        .into_iter()
        .filter(|e| e.event_data.get("heartbeat") == Some(&serde_json::json!(true)))
        .count();
    assert!(
        beats >= 3,
        "{beats} status heartbeats in about 5 s of steady run"
    );
    quiet_apart_from(&events, &[]);
}

in_both_modes!(a_steady_status_gets_its_heartbeats);

in_both_modes!(a_burst_of_failed_inspections_is_a_quality_anomaly);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_measurement_drifting_steadily_past_its_limit_is_one_trend_anomaly() {
    // die_temp ramps 4.6 degC per 100 ms tick from about 135 degC to 261.5 degC (limit 250):
    // the rule fires within 11.5 degC (5 % of the span) of the limit, about 2.3 s in. On the
    // way it passes its alarm limit, and the press alarms: no suppression.
    let events = scenario("stamping_press", Link::Modbus, "", "drift@1", 5.0).await;
    let e = one(&events, "quality.anomaly", Severity::Warn);
    assert_eq!(e.event_data["kind"], "trend");
    assert_eq!(e.event_data["tag"], "die_temp");
    assert_eq!(e.event_data["unit"], "°C");
    assert_eq!(e.event_data["direction"], "rising");
    assert_eq!(e.event_data["towards"], "max");
    assert_eq!(e.event_data["limit"]["max"], 250.0);
    assert_eq!(e.event_data["attack"], serde_json::json!(["T0831"]));
    let value = e.event_data["value"].as_f64().unwrap();
    assert!(value > 238.5, "{value}");
    let run = &e.event_data["run"];
    assert!(run["points"].as_u64().unwrap() >= 6, "{run}");
    assert!(run["first"].as_f64().unwrap() < run["last"].as_f64().unwrap());
    assert!(e.correlation_id.is_some());
    quiet_apart_from(&events, &["quality.anomaly"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_beyond_its_alarm_limit_while_the_alarm_stays_off_is_alarm_suppression() {
    let events = scenario(
        "stamping_press",
        Link::Modbus,
        "alarm_grace_s = 1",
        "alarm_silenced@1",
        3.5,
    )
    .await;
    let e = one(&events, "alarm.suppressed", Severity::Error);
    assert_eq!(e.event_data["reason"], "no_alarm_beyond_limit");
    assert_eq!(e.event_data["tag"], "die_temp");
    assert_eq!(e.event_data["limit_tag"], "die_temp_high_limit");
    assert_eq!(e.event_data["limit_side"], "high");
    assert_eq!(e.event_data["alarm_tag"], "press_alarm");
    assert_eq!(e.event_data["alarm_value"], false);
    assert_eq!(e.event_data["attack"], serde_json::json!(["T0878"]));
    let (value, limit) = (
        e.event_data["value"].as_f64().unwrap(),
        e.event_data["limit"].as_f64().unwrap(),
    );
    assert!(value > limit, "{value} beyond {limit}");
    assert!(e.event_data["unalarmed_for_s"].as_f64().unwrap() >= 1.0);
    assert!(e.correlation_id.is_some());
    quiet_apart_from(&events, &["alarm.suppressed"]);
}

async fn repeated_rejected_logins_are_a_security_violation(mode: Acquisition) {
    let events = scenario(
        "cell_controller",
        Link::OpcUa {
            password: "wrong-password",
            mode,
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

in_both_modes!(repeated_rejected_logins_are_a_security_violation);

async fn a_switch_to_program_mode_over_opc_ua_is_an_error(mode: Acquisition) {
    let events = scenario(
        "cell_controller",
        Link::OpcUa {
            password: "operator",
            mode,
        },
        "",
        "mode_program@4",
        7.0,
    )
    .await;
    let e = one(&events, "mode.changed", Severity::Error);
    assert_eq!(e.event_data["state"], "PROGRAM");
}

in_both_modes!(a_switch_to_program_mode_over_opc_ua_is_an_error);

async fn an_opc_ua_firmware_update_is_firmware_changed_and_a_restart(mode: Acquisition) {
    let events = scenario(
        "cell_controller",
        Link::OpcUa {
            password: "operator",
            mode,
        },
        "",
        "firmware_change@4",
        12.0,
    )
    .await;
    // The firmware tag and BuildInfo (re-read after the restart) show one update: one event.
    let fw = one(&events, "firmware.changed", Severity::Error);
    assert!(
        fw.event_data["sources"]
            .as_object()
            .is_some_and(|s| !s.is_empty()),
        "{:?}",
        fw.event_data
    );
    assert!(
        !of(&events, "device.restarted").is_empty(),
        "no device.restarted"
    );
}

in_both_modes!(an_opc_ua_firmware_update_is_firmware_changed_and_a_restart);

async fn a_new_server_identity_at_the_same_address_is_raised(mode: Acquisition) {
    let events = scenario(
        "cell_controller",
        Link::OpcUa {
            password: "operator",
            mode,
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

in_both_modes!(a_new_server_identity_at_the_same_address_is_raised);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn normal_production_reports_measurements_by_exception_and_raises_nothing() {
    let events = scenario("stamping_press", Link::Modbus, "", "", 3.0).await;
    let measurements = of(&events, "equipment.measurement");
    assert!(!measurements.is_empty(), "no equipment.measurement");
    for e in &measurements {
        assert_eq!(e.severity, Severity::Debug);
        assert!(e.event_data["tag"].is_string(), "{:?}", e.event_data);
        assert!(e.event_data["value"].is_number(), "{:?}", e.event_data);
    }
    let status = of(&events, "equipment.status");
    assert!(
        status.iter().any(|e| e.event_data["state"] == "run"),
        "no run status"
    );
    quiet_apart_from(&events, &[]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_setpoint_beyond_its_engineering_limits_is_out_of_range() {
    let events = scenario(
        "stamping_press",
        Link::Modbus,
        "",
        "setpoint_out_of_range@1.5",
        3.0,
    )
    .await;
    let e = one(&events, "setpoint.out_of_range", Severity::Error);
    assert_eq!(e.event_data["tag"], "tonnage_setpoint");
    assert_eq!(
        e.event_data["limit"],
        serde_json::json!({ "min": 50.0, "max": 400.0 })
    );
    assert!(
        e.event_data["value"].as_f64().unwrap() > 400.0,
        "{:?}",
        e.event_data
    );
    assert_eq!(
        e.event_data["attack"],
        serde_json::json!(["T0836", "T0880"])
    );
    one(&events, "setpoint.changed", Severity::Warn);
    quiet_apart_from(&events, &["setpoint.out_of_range", "setpoint.changed"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_that_start_again_from_zero_without_a_restart_are_a_reset() {
    let events = scenario(
        "stamping_press",
        Link::Modbus,
        "",
        "counters_reset@1.5",
        3.0,
    )
    .await;
    let e = one(&events, "diag.counters_reset", Severity::Warn);
    assert_eq!(e.event_data["tag"], "stroke_counter");
    assert!(
        e.event_data["value"].as_f64().unwrap() < e.event_data["previous"].as_f64().unwrap(),
        "{:?}",
        e.event_data
    );
    assert_eq!(e.event_data["attack"], serde_json::json!(["T0872"]));
    quiet_apart_from(&events, &["diag.counters_reset"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn diagnostic_counters_cleared_on_the_device_are_a_counters_reset() {
    // The shipped press reads its FC 08 / FC 11 counters every minute; every second here.
    let events = scenario_with(
        "stamping_press",
        Link::Modbus,
        |text| {
            assert!(
                text.contains("\n[diagnostics]\n"),
                "the press ships diagnostics"
            );
            text.replace("every_s = 60", "every_s = 1")
        },
        "diag_clear@2.5",
        4.5,
    )
    .await;
    let e = one(&events, "diag.counters_reset", Severity::Warn);
    assert_eq!(e.event_data["source"], "modbus_diagnostics");
    let counters = e.event_data["counters"].as_object().unwrap();
    for name in [
        "bus_message_count",
        "server_message_count",
        "comm_event_count",
    ] {
        let c = &counters[name];
        assert!(
            c["value"].as_u64().unwrap() < c["previous"].as_u64().unwrap(),
            "{name}: {c:?}"
        );
    }
    assert_eq!(e.event_data["attack"], serde_json::json!(["T0872"]));
    quiet_apart_from(&events, &["diag.counters_reset"]);
}

/// The press with its diagnostic counters read every second and the scan and flood
/// thresholds of the catalogue.
#[allow(clippy::needless_pass_by_value)] // the shape `scenario_with` takes an edit in
fn press_reading_its_counters_every_second(text: String) -> String {
    assert!(text.contains("every_s = 60"), "the press ships diagnostics");
    text.replace("every_s = 60", "every_s = 1")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_address_scan_by_another_client_shows_in_the_device_counters() {
    let events = scenario_intruded(
        "stamping_press",
        Link::Modbus,
        press_reading_its_counters_every_second,
        "",
        6.0,
        Some(Box::new(|device| {
            Box::pin(intruder::scan(device, 1, 60, Duration::from_millis(20)))
        })),
    )
    .await;
    let e = one(&events, "security.violation", Severity::Error);
    assert_eq!(e.event_data["kind"], "modbus_scan", "{:?}", e.event_data);
    assert_eq!(e.event_data["source"], "device_diagnostics");
    assert_eq!(e.event_data["own_exceptions"], 0, "{:?}", e.event_data);
    quiet_apart_from(&events, &["security.violation"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_reads_by_another_client_shows_in_the_device_counters() {
    let events = scenario_intruded(
        "stamping_press",
        Link::Modbus,
        press_reading_its_counters_every_second,
        "",
        6.0,
        // Holding register 101 is the press's stroke setpoint: every read is answered.
        Some(Box::new(|device| {
            Box::pin(intruder::flood(device, 1, 101, 1500))
        })),
    )
    .await;
    let e = one(&events, "security.violation", Severity::Error);
    assert_eq!(e.event_data["kind"], "modbus_flood", "{:?}", e.event_data);
    quiet_apart_from(&events, &["security.violation"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_illegal_address_exceptions_is_a_scan() {
    let events = scenario(
        "stamping_press",
        Link::Modbus,
        "exception_burst = 5",
        "exceptions@1.5",
        4.0,
    )
    .await;
    let e = one(&events, "security.violation", Severity::Error);
    assert_eq!(e.event_data["kind"], "modbus_scan");
    assert!(
        e.event_data["exceptions"].as_u64().unwrap() >= 5,
        "{:?}",
        e.event_data
    );
    assert_eq!(e.event_data["codes"][0], "0x02");
    quiet_apart_from(&events, &["security.violation"]);
}

async fn values_served_with_a_bad_status_are_stale(mode: Acquisition) {
    let events = scenario(
        "cell_controller",
        Link::OpcUa {
            password: "operator",
            mode,
        },
        "",
        "garbage@4",
        8.0,
    )
    .await;
    let stale = of(&events, "value.stale");
    assert!(!stale.is_empty(), "no value.stale");
    for e in &stale {
        assert_eq!(e.severity, Severity::Warn);
        assert_eq!(e.event_data["reason"], "bad_quality", "{:?}", e.event_data);
        assert_eq!(e.event_data["quality"], "bad");
        assert_eq!(e.event_data["attack"], serde_json::json!(["T0856"]));
    }
    // One episode per tag, not one event per poll.
    let mut tags: Vec<&str> = stale
        .iter()
        .map(|e| e.event_data["tag"].as_str().unwrap())
        .collect();
    let all = tags.len();
    tags.sort_unstable();
    tags.dedup();
    assert_eq!(tags.len(), all, "{tags:?}");
    quiet_apart_from(&events, &["value.stale"]);
}

in_both_modes!(values_served_with_a_bad_status_are_stale);

async fn a_server_that_drops_its_strongest_security_policy_is_a_downgrade(mode: Acquisition) {
    let events = scenario(
        "cell_controller",
        Link::OpcUa {
            password: "operator",
            mode,
        },
        "",
        "policy_downgrade@4",
        12.0,
    )
    .await;
    let e = one(&events, "security_policy.downgraded", Severity::Warn);
    assert_eq!(e.event_data["previous"], "Aes256_Sha256_RsaPss");
    assert_eq!(e.event_data["value"], "Basic256Sha256");
    // The server restarted to change its endpoints; nothing else is loud.
    quiet_apart_from(&events, &["security_policy.downgraded", "device.restarted"]);
}

in_both_modes!(a_server_that_drops_its_strongest_security_policy_is_a_downgrade);

async fn a_server_that_drops_the_configured_security_policy_is_a_downgrade_and_no_fallback(
    mode: Acquisition,
) {
    // The agent asks for Basic256Sha256 / SignAndEncrypt; after the restart the server offers
    // only None and Aes128_Sha256_RsaOaep.
    let events = scenario(
        "cell_controller",
        Link::OpcUa {
            password: "operator",
            mode,
        },
        "",
        "policy_downgrade_all@4",
        12.0,
    )
    .await;
    let e = one(&events, "security_policy.downgraded", Severity::Warn);
    assert_eq!(e.event_data["previous"], "Aes256_Sha256_RsaPss");
    assert_eq!(e.event_data["value"], "Aes128_Sha256_RsaOaep");
    // No session on a weaker endpoint: the station stays unreachable (no data, T0815) and
    // never recovers, nothing is read after the restart, and the server status is never
    // re-read (no device.restarted, which needs a session to see StartTime).
    one(&events, "device.unreachable", Severity::Warn);
    assert!(of(&events, "device.recovered").is_empty(), "{events:?}");
    assert!(of(&events, "device.restarted").is_empty(), "{events:?}");
    let after = e.timestamp;
    assert!(
        of(&events, "equipment.measurement")
            .iter()
            .all(|m| m.timestamp < after),
        "no readings once the configured endpoint is gone"
    );
    quiet_apart_from(
        &events,
        &["security_policy.downgraded", "device.unreachable"],
    );
}

in_both_modes!(a_server_that_drops_the_configured_security_policy_is_a_downgrade_and_no_fallback);

/// Server diagnostics are re-read every 30 s (and on a new session): these run past that.
const STATUS_REREAD_S: f64 = 40.0;

async fn extra_sessions_on_the_server_are_a_session_anomaly(mode: Acquisition) {
    let events = scenario(
        "cell_controller",
        Link::OpcUa {
            password: "operator",
            mode,
        },
        "",
        "session_flood@3",
        STATUS_REREAD_S,
    )
    .await;
    let e = one(&events, "session.anomaly", Severity::Warn);
    let sessions = e.event_data["sessions"].as_u64().unwrap();
    let baseline = e.event_data["baseline"].as_u64().unwrap();
    assert!(sessions >= baseline + 3, "{:?}", e.event_data);
    assert_eq!(e.event_data["attack"], serde_json::json!(["T0886"]));
    quiet_apart_from(&events, &["session.anomaly"]);
}

in_both_modes!(extra_sessions_on_the_server_are_a_session_anomaly);

async fn wrong_passwords_counted_by_the_server_are_auth_failures_and_a_violation(
    mode: Acquisition,
) {
    let events = scenario(
        "cell_controller",
        Link::OpcUa {
            password: "operator",
            mode,
        },
        "",
        "password_guess@3",
        STATUS_REREAD_S,
    )
    .await;
    // The agent's own session is fine: these come from the server's diagnostics.
    // RejectedSessionCount includes SecurityRejectedSessionCount: counted once.
    let failed = one(&events, "auth.failed", Severity::Warn);
    assert_eq!(failed.event_data["tag"], "_diag.rejected_session_count");
    assert!(
        failed.event_data["rejected_sessions"].as_u64().unwrap() >= 5,
        "{:?}",
        failed.event_data
    );
    let violation = one(&events, "security.violation", Severity::Error);
    assert_eq!(violation.event_data["kind"], "auth_burst");
    assert_eq!(violation.event_data["key"], "server:rejected_sessions");
    assert_eq!(violation.correlation_id, failed.correlation_id);
    // Each guess created a session whose activation failed; the server keeps it until it
    // times out, so the session count rises too, as on a real server.
    quiet_apart_from(
        &events,
        &["auth.failed", "security.violation", "session.anomaly"],
    );
}

/// A child in a process group of its own, killed with its whole group on drop (also when
/// an assertion fails first).
struct Group(std::process::Child);

#[allow(unsafe_code)] // libc::kill on the group this test started, only
impl Drop for Group {
    fn drop(&mut self) {
        if let Ok(pgid) = i32::try_from(self.0.id()) {
            // SAFETY: kill(2) on a process group this test created; no memory involved.
            unsafe { libc::kill(-pgid, libc::SIGKILL) };
        }
        let _ = self.0.wait();
    }
}

in_both_modes!(wrong_passwords_counted_by_the_server_are_auth_failures_and_a_violation);

/// A device whose clock is ten minutes ahead: the OPC UA simulator runs as its own process
/// (`linesentry sim`) under libfaketime, so its `ServerStatus.CurrentTime` is really off.
/// Security None and anonymous: the point is the clock, not the certificates (which a
/// server clock this far off would otherwise make not yet valid).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_clock_ten_minutes_ahead_is_clock_skew() {
    use std::io::{BufRead, BufReader};
    use std::os::unix::process::CommandExt;
    use std::process::{Command, Stdio};

    let dir = tempfile::tempdir().unwrap();
    let devices = dir.path().join("devices");
    std::fs::create_dir_all(&devices).unwrap();
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("devices/cell_controller.toml");
    std::fs::copy(&shipped, devices.join("cell_controller.toml")).unwrap();
    // `faketime` forks the simulator and waits for it, so killing `faketime` alone would
    // orphan the simulator: both run in a process group of their own (see `Group`).
    let mut child = Command::new("faketime")
        .process_group(0)
        .args(["-f", "+10m"])
        .arg(env!("CARGO_BIN_EXE_linesentry"))
        .arg("sim")
        .arg("--profile")
        .arg(&shipped)
        .args(["--listen", "127.0.0.1:0", "--pki"])
        .arg(dir.path().join("sim-pki"))
        .env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot run `faketime` (Debian package faketime; scripts/test installs it): {e}")
        });
    let stdout = child.stdout.take().unwrap();
    let child = Group(child);
    let line = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).map(|_| line)
    })
    .await
    .unwrap()
    .unwrap();
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("opc.tcp://"))
        .unwrap_or_else(|| panic!("no endpoint in the simulator's first line: {line:?}"))
        .trim_end_matches([';', ','])
        .to_owned();
    let source = format!(
        "source = \"opcua\"\nendpoint_url = \"{url}\"\nsecurity_mode = \"None\"\nsecurity_policy = \"None\""
    );
    let events = run_agent(dir.path(), "cell_controller", &source, 6.0).await;
    drop(child);
    let e = one(&events, "agent.clock_skew", Severity::Warn);
    let skew = e.event_data["skew_ms"].as_i64().unwrap();
    assert!((540_000..660_000).contains(&skew), "{:?}", e.event_data);
    assert_eq!(e.event_data["limit_ms"], 5000);
    quiet_apart_from(&events, &["agent.clock_skew"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_that_change_under_one_source_timestamp_are_stale_once_per_tag() {
    // Polled: async-opcua's subscriptions hold back a change whose source timestamp is not
    // a sampling interval past the last one, so only a Read shows the replayed stamp.
    let events = scenario(
        "cell_controller",
        Link::OpcUa {
            password: "operator",
            mode: Acquisition::Polling,
        },
        "",
        "timestamps_freeze@4",
        8.0,
    )
    .await;
    let stale = of(&events, "value.stale");
    assert!(!stale.is_empty(), "no value.stale");
    let mut tags = Vec::new();
    for e in &stale {
        assert_eq!(e.severity, Severity::Warn);
        assert_eq!(
            e.event_data["reason"], "source_timestamp_not_advancing",
            "{:?}",
            e.event_data
        );
        tags.push(e.event_data["tag"].as_str().unwrap());
    }
    let all = tags.len();
    tags.sort_unstable();
    tags.dedup();
    assert_eq!(tags.len(), all, "one episode per tag: {tags:?}");
    quiet_apart_from(&events, &["value.stale"]);
}

async fn a_server_that_stops_running_is_a_mode_change(mode: Acquisition) {
    let events = scenario(
        "cell_controller",
        Link::OpcUa {
            password: "operator",
            mode,
        },
        "",
        "server_suspend@3",
        STATUS_REREAD_S,
    )
    .await;
    let e = one(&events, "mode.changed", Severity::Error);
    assert_eq!(e.event_data["tag"], "_server.state");
    assert_eq!(e.event_data["state"], "Suspended");
    assert_eq!(e.event_data["previous_state"], "Running");
    quiet_apart_from(&events, &["mode.changed"]);
}

in_both_modes!(a_server_that_stops_running_is_a_mode_change);

/// An agent config with `n` stations of `cell_controller` on the OPC UA server at `url`,
/// as `operator` with the password in `<dir>/password`.
fn stations_on_one_server(n: usize, data: &Path, devices: &Path, url: &str, dir: &Path) -> String {
    let head = format!(
        "[agent]\ngateway_id = \"{GATEWAY}\"\nsite = \"test\"\ndata_dir = \"{}\"\nprofiles_dir = \"{}\"\n",
        data.display(),
        devices.display()
    );
    let stations = (1..=n).map(|i| {
        format!(
            "\n[[stations]]\nid = \"st-{i}\"\nprofile = \"cell_controller\"\nsource = \"opcua\"\n\
             endpoint_url = \"{url}\"\nsecurity_mode = \"SignAndEncrypt\"\n\
             security_policy = \"Basic256Sha256\"\npoll_interval_ms = 200\n\
             identity = {{ kind = \"username\", user = \"operator\", password = {{ file = \"{}\" }} }}\n",
            dir.join("password").display()
        )
    });
    head + &stations.collect::<String>()
}

/// Five stations of one gateway on one OPC UA server: the server counts their sessions, and
/// they are the gateway's own, so no `session.anomaly`. The first station learns its
/// baseline alone; the other four connect afterwards, as on a gateway whose config grows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateways_own_stations_on_one_server_are_no_session_anomaly() {
    use linesentry_agent::rules::StationRules;
    use linesentry_agent::runtime::rule_tags;
    use linesentry_agent::source::opcua::OpcUaSource;
    use linesentry_event::{SeverityMap, Timestamp};

    let dir = tempfile::tempdir().unwrap();
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("devices/cell_controller.toml");
    let devices = dir.path().join("devices");
    std::fs::create_dir_all(&devices).unwrap();
    std::fs::copy(&shipped, devices.join("cell_controller.toml")).unwrap();
    let data = dir.path().join("data");
    let agent = OpcUaSettings::new(&data, GATEWAY);
    agent
        .pki
        .ensure_own(&agent.application_uri, &agent.application_name)
        .unwrap();
    let loaded = sim::load_profile(&shipped).unwrap();
    let sim = sim::opcua::start(
        loaded,
        &SimOptions::default(),
        &OpcUaSimOptions::new(dir.path().join("sim-pki")),
    )
    .await
    .unwrap();
    Pki::in_data_dir(&data)
        .trust(&sim.pki_dir().join("own/cert.der").to_string_lossy())
        .unwrap();
    std::fs::write(dir.path().join("password"), "operator").unwrap();
    let config = stations_on_one_server(5, &data, &devices, &sim.endpoint_url(), dir.path());
    let config = linesentry_agent::config::load_str(&dir.path().join("agent.toml"), &config)
        .unwrap_or_else(|e| panic!("{e}"));
    let start = |station: &linesentry_agent::source::StationConfig| {
        let mut settings = OpcUaSettings::new(&data, GATEWAY);
        settings.status_interval = Duration::from_secs(1);
        let source = OpcUaSource::start(station, settings).unwrap();
        let rules = StationRules::new(
            GATEWAY.into(),
            station.id.as_str().into(),
            std::sync::Arc::new(SeverityMap::default()),
            rule_tags(&station.profile),
        )
        .with_settings(station.rule_settings());
        (source, rules)
    };
    let mut stations = vec![start(&config.stations[0])];
    let mut events = Vec::new();
    // The first station reads the server's session count alone: its baseline.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        assert!(
            std::time::Instant::now() < deadline,
            "no session count read"
        );
        let (source, rules) = &mut stations[0];
        let poll = source.poll().await;
        events.extend(rules.observe(&poll, Timestamp::now()));
        if poll
            .readings
            .iter()
            .any(|r| &*r.tag == "_diag.current_session_count")
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stations.extend(config.stations[1..].iter().map(start));
    let until = std::time::Instant::now() + Duration::from_secs(6);
    let mut sessions_seen = 0;
    while std::time::Instant::now() < until {
        for (source, rules) in &mut stations {
            let poll = source.poll().await;
            for r in &poll.readings {
                if &*r.tag == "_diag.current_session_count" {
                    sessions_seen = sessions_seen.max(r.value.as_f64().unwrap_or(0.0) as u64);
                }
            }
            events.extend(rules.observe(&poll, Timestamp::now()));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for (source, _) in stations {
        source.close().await;
    }
    sim.shutdown().await;
    assert!(
        sessions_seen >= 5,
        "the server counted {sessions_seen} sessions"
    );
    assert!(
        of(&events, "session.anomaly").is_empty(),
        "{:#?}",
        of(&events, "session.anomaly")
    );
}
