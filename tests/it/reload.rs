//! SIGHUP reloads the configuration: changed stations restart, the others keep polling, a
//! bad file keeps the running configuration, and nothing buffered is lost.

use std::fmt::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use linesentry_agent::buffer::Inspector;
use linesentry_event::SecurityEvent;

fn config(stations: &[(&str, u64)]) -> String {
    let devices = concat!(env!("CARGO_MANIFEST_DIR"), "/devices");
    let mut text = format!(
        "[agent]\ngateway_id = \"gw-reload\"\nsite = \"plant-t\"\ndata_dir = \"data\"\nprofiles_dir = \"{devices}\"\n\n[health]\nenabled = false\n"
    );
    for (id, interval) in stations {
        let _ = write!(
            text,
            "\n[[stations]]\nid = \"{id}\"\nprofile = \"stamping_press\"\nsource = \"simulated\"\npoll_interval_ms = {interval}\n"
        );
    }
    text
}

/// Waits until the agent's log holds `needle`, at most 20 s.
fn logged(log: &Path, needle: &str) {
    linesentry_testkit::wait_until(Duration::from_secs(20), || {
        std::fs::read_to_string(log)
            .unwrap_or_default()
            .contains(needle)
            .then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "no {needle:?} in the agent's log within 20 s:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        )
    });
}

fn events(data: &Path) -> Vec<SecurityEvent> {
    let mut out = Vec::new();
    Inspector::open(data)
        .unwrap()
        .for_each(None, None, |e| out.push(e.unwrap()))
        .unwrap();
    out
}

fn signal(pid: u32, sig: &str) {
    Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .unwrap();
}

#[test]
fn sighup_restarts_changed_stations_starts_new_ones_and_keeps_the_config_when_the_new_one_is_bad() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent.toml");
    std::fs::write(&path, config(&[("press-a", 200), ("press-b", 200)])).unwrap();
    let log = dir.path().join("agent.log");
    let mut agent = Command::new(env!("CARGO_BIN_EXE_linesentry"))
        .args(["--log-format", "json", "run", "--config"])
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    logged(&log, "agent running");
    std::fs::write(
        &path,
        config(&[("press-a", 200), ("press-b", 300), ("press-c", 200)]),
    )
    .unwrap();
    signal(agent.id(), "-HUP");
    logged(&log, "configuration reloaded");
    // The added station polls at 200 ms for a while: its events only become visible after
    // the stop (the queue is locked while the agent runs), so no condition can be awaited.
    std::thread::sleep(Duration::from_millis(1500));
    std::fs::write(&path, "[agent]\ngateway_id = \n").unwrap();
    signal(agent.id(), "-HUP");
    logged(&log, "configuration reload refused");
    // Staying up can only be observed over a while: the agent must outlive the refusal.
    std::thread::sleep(Duration::from_millis(800));
    let alive = agent.try_wait().unwrap().is_none();
    signal(agent.id(), "-TERM");
    let status = agent.wait().unwrap();
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(alive, "a bad file must not stop the agent: {log}");
    assert!(status.success(), "{status:?}: {log}");
    assert!(log.contains("configuration reload refused"), "{log}");

    let all = events(&dir.path().join("data"));
    let changed: Vec<&SecurityEvent> = all
        .iter()
        .filter(|e| e.event_type == "agent.config_changed")
        .collect();
    assert_eq!(changed.len(), 1, "one applied reload, one refused");
    let data = &changed[0].event_data;
    assert_eq!(data["restarted"], serde_json::json!(["press-b"]));
    assert_eq!(data["added"], serde_json::json!(["press-c"]));
    assert_eq!(data["removed"], serde_json::json!([]));
    assert_eq!(data["unchanged"], 1);
    assert_ne!(data["previous_digest"], data["config_digest"]);
    assert!(
        all.iter()
            .any(|e| e.station_id.as_deref() == Some("press-c")),
        "the added station polls"
    );
    assert!(all.iter().any(|e| e.event_type == "agent.stopped"));
}
