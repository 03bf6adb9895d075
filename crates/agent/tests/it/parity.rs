//! Detection parity: the same device behaviour gives the same events whether an OPC UA
//! station is polled (`acquisition = "polling"`, one Read per poll) or subscribed (changes
//! only). The device is an independent python-asyncua server
//! (`crates/testkit/peers/asyncua_scenario.py`) playing a timeline; the agent's OPC UA
//! source and rules run as the station task runs them, one poll every 100 ms.
//!
//! The timeline holds what subscriptions do not deliver: values that never change
//! (heartbeats, a frozen measurement), a quality result that stays `fail` while the part id
//! changes, and a firmware change that shows in both the device identity and BuildInfo.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::json;

use linesentry_agent::source::opcua::{Acquisition, OpcUaSettings, OpcUaSource, Pki};
use linesentry_agent::source::StationConfig;
use linesentry_event::{SecurityEvent, Severity, Timestamp};
use linesentry_testkit::PythonPeer;

const GATEWAY: &str = "gw-parity";

/// The python scenario server (asyncua_scenario.py), killed on drop.
struct Scenario {
    peer: PythonPeer,
    port: u16,
}

impl Scenario {
    fn start(dir: &Path, spec: &serde_json::Value) -> Self {
        let spec_path = dir.join("spec.json");
        std::fs::write(&spec_path, spec.to_string()).expect("write the scenario");
        let port = linesentry_testkit::free_port();
        // It prints a line per step after READY: PythonPeer keeps reading them.
        let peer = PythonPeer::start(
            "asyncua_scenario.py",
            [
                port.to_string().as_ref(),
                dir.join("server-pki").as_os_str(),
                spec_path.as_os_str(),
            ],
            "READY",
            Duration::from_secs(60),
        );
        Self { peer, port }
    }

    fn url(&self) -> String {
        format!("opc.tcp://127.0.0.1:{}/scenario/", self.port)
    }

    /// Starts the timeline.
    fn go(&mut self) {
        self.peer.command("go");
    }
}

/// The line the parity scenario plays, as the python server's spec.
fn line_spec() -> serde_json::Value {
    json!({
        "software_version": "1.0.0",
        "variables": [
            { "name": "State", "type": "Int32", "value": 1 },
            { "name": "Mode", "type": "Int32", "value": 1 },
            { "name": "Setpoint", "type": "Double", "value": 100.0 },
            { "name": "Temp", "type": "Double", "value": 150.0 },
            { "name": "Pressure", "type": "Double", "value": 5.0 },
            { "name": "PartId", "type": "String", "value": "P-1" },
            { "name": "Result", "type": "Int32", "value": 1 }
        ],
        "timeline": [
            { "at": 1.0, "set": { "Setpoint": 120.0 } },
            { "at": 2.0, "set": { "Mode": 3 } },
            { "at": 3.0, "set": { "PartId": "P-2", "Result": 2 } },
            { "at": 4.0, "set": { "PartId": "P-3" } },
            { "at": 5.0, "set": { "PartId": "P-4" } },
            { "at": 6.0, "set": { "PartId": "P-5" } },
            { "at": 7.0, "software_version": "2.0.0" }
        ]
    })
}

/// The profile of that line: every role the timeline exercises.
const LINE_PROFILE: &str = r#"
[profile]
name = "parity_line"
protocol = "opcua"

[rules]
status_heartbeat_s = 1
measurement_heartbeat_s = 1
quality_failures = 3
quality_window = 10

[[tags]]
name = "state"
role = "status"
type = "i32"
node_id = "ns=2;s=Line.State"
states = { 1 = "run", 3 = "fault" }

[[tags]]
name = "mode"
role = "mode"
type = "i32"
node_id = "ns=2;s=Line.Mode"
states = { 1 = "auto", 3 = "program" }

[[tags]]
name = "setpoint"
role = "setpoint"
type = "f64"
node_id = "ns=2;s=Line.Setpoint"
limits = { min = 0.0, max = 500.0 }

[[tags]]
name = "temp"
role = "measurement"
type = "f64"
node_id = "ns=2;s=Line.Temp"
limits = { min = 0.0, max = 300.0 }

[[tags]]
name = "pressure"
role = "measurement"
type = "f64"
node_id = "ns=2;s=Line.Pressure"
stale_after_s = 4
heartbeat_s = 60

[[tags]]
name = "part_id"
role = "part_id"
type = "string"
node_id = "ns=2;s=Line.PartId"

[[tags]]
name = "result"
role = "quality_result"
type = "i32"
node_id = "ns=2;s=Line.Result"
states = { 1 = "pass", 2 = "fail" }
"#;

fn station(dir: &Path, url: &str, acquisition: &str) -> StationConfig {
    std::fs::create_dir_all(dir.join("profiles")).expect("profiles dir");
    std::fs::write(dir.join("profiles/parity_line.toml"), LINE_PROFILE).expect("profile");
    std::fs::write(dir.join("password"), "s3cret-op").expect("password");
    let config = format!(
        "[agent]\ngateway_id = \"{GATEWAY}\"\nsite = \"lab\"\ndata_dir = \"data\"\nprofiles_dir = \"profiles\"\n\n\
         [[stations]]\nid = \"line-1\"\nprofile = \"parity_line\"\nsource = \"opcua\"\n\
         endpoint_url = \"{url}\"\npoll_interval_ms = 100\ntimeout_ms = 3000\n\
         security_mode = \"SignAndEncrypt\"\nsecurity_policy = \"Basic256Sha256\"\n\
         acquisition = \"{acquisition}\"\n\
         identity = {{ kind = \"username\", user = \"operator\", password = {{ file = \"password\" }} }}\n"
    );
    let path = dir.join("agent.toml");
    std::fs::write(&path, config).expect("config");
    let config = linesentry_agent::config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    config.stations.into_iter().next().expect("one station")
}

/// Plays [`line_spec`] on a fresh python server with the station in `acquisition` mode and
/// returns every event the rules raised once the timeline started, `seconds` long.
async fn play(acquisition: Acquisition, seconds: f64) -> Vec<SecurityEvent> {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = Scenario::start(dir.path(), &line_spec());
    let mode = match acquisition {
        Acquisition::Polling => "polling",
        Acquisition::Subscription => "subscription",
    };
    let station = station(dir.path(), &server.url(), mode);
    let data = dir.path().join("data");
    Pki::in_data_dir(&data)
        .trust(
            &dir.path()
                .join("server-pki/server_cert.der")
                .to_string_lossy(),
        )
        .expect("trust the server certificate");
    let mut settings = OpcUaSettings::new(&data, GATEWAY);
    settings.acquisition = acquisition;
    settings.status_interval = Duration::from_secs(1);
    let mut source = OpcUaSource::start(&station, settings).expect("start the OPC UA source");
    let mut rules = crate::support::rules_for(GATEWAY, &station);

    // Learn the baseline: every tag seen once, before the timeline starts.
    let mut seen = std::collections::BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while seen.len() < station.profile.tags.len() {
        assert!(Instant::now() < deadline, "{mode}: only {seen:?} arrived");
        let poll = source.poll().await;
        seen.extend(
            poll.readings
                .iter()
                .filter(|r| !r.tag.starts_with('_'))
                .map(|r| r.tag.to_string()),
        );
        let events = rules.observe(&poll, Timestamp::now());
        let loud: Vec<_> = events
            .iter()
            .filter(|e| e.severity >= Severity::Warn && e.event_type != "quality.check")
            .collect();
        assert!(loud.is_empty(), "{mode}: while learning: {loud:#?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    server.go();
    let mut events = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let end = Instant::now() + Duration::from_secs_f64(seconds);
    while Instant::now() < end {
        tick.tick().await;
        let poll = source.poll().await;
        events.extend(rules.observe(&poll, Timestamp::now()));
    }
    source.close().await;
    events
}

fn of<'a>(events: &'a [SecurityEvent], kind: &str) -> Vec<&'a SecurityEvent> {
    events.iter().filter(|e| e.event_type == kind).collect()
}

fn heartbeat(e: &SecurityEvent) -> bool {
    e.event_data.get("heartbeat") == Some(&json!(true))
}

/// What an event says, without its times and ids: type, severity and the data that names
/// the change.
fn meaning(e: &SecurityEvent) -> String {
    let d = |key: &str| e.event_data.get(key).cloned().unwrap_or_default();
    format!(
        "{} {} tag={} value={} previous={} state={} result={} part={} reason={}",
        e.event_type,
        e.severity,
        d("tag"),
        d("value"),
        d("previous"),
        d("state"),
        d("result"),
        d("part_id"),
        d("reason")
    )
}

/// The checks every mode must pass on its own.
fn assert_detected(mode: &str, events: &[SecurityEvent]) {
    let summary: Vec<String> = events.iter().map(meaning).collect();
    let one = |kind: &str| {
        let found = of(events, kind);
        assert_eq!(found.len(), 1, "{mode}: one {kind}; got {summary:#?}");
        found[0]
    };
    let sp = one("setpoint.changed");
    assert_eq!(
        (
            sp.event_data["value"].clone(),
            sp.event_data["previous"].clone()
        ),
        (json!(120.0), json!(100.0))
    );
    let m = one("mode.changed");
    assert_eq!(m.event_data["state"], "program", "{mode}");
    assert_eq!(m.severity, Severity::Error, "{mode}");

    let failed: Vec<_> = of(events, "quality.check")
        .into_iter()
        .filter(|e| e.event_data["result"] == "fail")
        .map(|e| e.event_data["part_id"].as_str().unwrap_or("?").to_owned())
        .collect();
    assert_eq!(
        failed,
        ["P-2", "P-3", "P-4", "P-5"],
        "{mode}: one failed check per part"
    );
    one("quality.anomaly");

    let fw = one("firmware.changed");
    assert_eq!(fw.event_data["value"], "2.0.0", "{mode}");
    assert_eq!(fw.event_data["previous"], "1.0.0", "{mode}");
    let sources = fw.event_data["sources"].as_object().expect("sources");
    assert!(
        sources.contains_key("device_identification") && sources.contains_key("build_info"),
        "{mode}: {sources:?}"
    );

    let frozen: Vec<_> = of(events, "value.stale")
        .into_iter()
        .filter(|e| e.event_data["reason"] == "frozen")
        .map(|e| e.event_data["tag"].as_str().unwrap_or("?").to_owned())
        .collect();
    assert_eq!(
        frozen,
        ["pressure"],
        "{mode}: the value that never changes is frozen once"
    );

    // Values that never change still get their heartbeats (1 s over about 10 s).
    let beats = |kind: &str, tag: &str| {
        of(events, kind)
            .into_iter()
            .filter(|e| heartbeat(e) && e.event_data["tag"] == tag)
            .count()
    };
    assert!(
        beats("equipment.status", "state") >= 7,
        "{mode}: status heartbeats {summary:#?}"
    );
    assert!(
        beats("equipment.measurement", "temp") >= 7,
        "{mode}: measurement heartbeats"
    );

    for kind in [
        "session.anomaly",
        "auth.failed",
        "device.unreachable",
        "security.violation",
    ] {
        assert!(
            of(events, kind).is_empty(),
            "{mode}: no {kind}: {summary:#?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polled_and_subscribed_stations_raise_the_same_events_for_the_same_device() {
    let polled = play(Acquisition::Polling, 10.0).await;
    let subscribed = play(Acquisition::Subscription, 10.0).await;
    assert_detected("polling", &polled);
    assert_detected("subscription", &subscribed);
    // Beyond the checks: the same events, apart from how many heartbeats fit in the time.
    let changes = |events: &[SecurityEvent]| -> BTreeMap<String, usize> {
        let mut m = BTreeMap::new();
        for e in events.iter().filter(|e| !heartbeat(e)) {
            *m.entry(meaning(e)).or_insert(0) += 1;
        }
        m
    };
    assert_eq!(changes(&polled), changes(&subscribed));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_server_certificate_is_cert_invalid_at_once_and_no_outage_or_recovery() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Scenario::start(dir.path(), &line_spec());
    let station = station(dir.path(), &server.url(), "subscription");
    let data = dir.path().join("data");
    let mut settings = OpcUaSettings::new(&data, GATEWAY);
    settings.reconnect_initial = Duration::from_millis(200);
    settings.reconnect_max = Duration::from_secs(1);
    let mut source = OpcUaSource::start(&station, settings).expect("start the OPC UA source");
    let mut rules = crate::support::rules_for(GATEWAY, &station);
    let mut events = Vec::new();
    for _ in 0..25 {
        let poll = source.poll().await;
        events.extend(rules.observe(&poll, Timestamp::now()));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let summary: Vec<String> = events.iter().map(meaning).collect();
    let first = events
        .iter()
        .find(|e| e.severity >= Severity::Warn)
        .unwrap_or_else(|| panic!("nothing raised: {summary:#?}"));
    assert_eq!(first.event_type, "cert.invalid", "{summary:#?}");
    assert_eq!(first.severity, Severity::Error);
    let reason = first.event_data["reason"].as_str().unwrap_or_default();
    let thumbprint = Pki::in_data_dir(&data)
        .list()
        .expect("list the PKI")
        .into_iter()
        .find(|c| c.state == linesentry_agent::source::opcua::CertState::Rejected)
        .expect("the server certificate waits in rejected")
        .thumbprint;
    assert!(reason.contains(&thumbprint), "{reason}");
    assert!(reason.contains("linesentry pki trust"), "{reason}");
    assert_eq!(of(&events, "cert.invalid").len(), 1, "{summary:#?}");
    for kind in ["device.unreachable", "device.recovered"] {
        assert!(of(&events, kind).is_empty(), "no {kind}: {summary:#?}");
    }

    // Trusted: data flows, and since there was no outage there is nothing to recover from.
    Pki::in_data_dir(&data).trust(&thumbprint).expect("trust");
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut delivered = false;
    while !delivered && Instant::now() < deadline {
        let poll = source.poll().await;
        delivered = poll.readings.iter().any(|r| &*r.tag == "temp");
        events.extend(rules.observe(&poll, Timestamp::now()));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(delivered, "no data once trusted");
    assert!(of(&events, "device.recovered").is_empty());
    source.close().await;
}
