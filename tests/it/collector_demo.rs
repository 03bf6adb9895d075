//! The whole chain on one machine, as `linesentry-collector demo` runs it: simulated
//! stations -> agent -> Mosquitto -> collector -> PostgreSQL, every event verified.

use std::process::Command;

#[test]
fn the_demo_chain_stores_every_agent_event_with_a_verified_chain() {
    let port = linesentry_common::local::free_port().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_linesentry-collector"))
        .args(["--log-level", "error", "demo", "--exit", "--seconds", "12"])
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--agent-bin")
        .arg(env!("CARGO_BIN_EXE_linesentry"))
        .arg("--agent-config")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/config/demo.toml"))
        .output()
        .expect("run the demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let line = stdout
        .lines()
        .find(|l| l.contains("events from gw-demo-01 stored"))
        .unwrap_or_else(|| panic!("no summary:\n{stdout}\n{stderr}"));
    // "demo: N events from gw-demo-01 stored, N verified, 0 broken, 0 unexplained gaps, 0 security violations, K alerts"
    let numbers: Vec<u64> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|w| w.parse().ok())
        .collect();
    let (stored, verified, broken, gaps, violations) =
        (numbers[0], numbers[2], numbers[3], numbers[4], numbers[5]);
    assert!(stored > 20, "{line}");
    assert_eq!(
        (verified, broken, gaps, violations),
        (stored, 0, 0, 0),
        "{line}"
    );
    assert!(
        stdout.contains(&format!("open http://127.0.0.1:{port}/#token=lsc_")),
        "{stdout}"
    );
}
