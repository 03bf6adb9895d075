//! What the agent does at start when the machine is not as the unit expects, over the real
//! binary: started without systemd's notify socket (by hand, or a unit that is not
//! `Type=notify`), with its state directory missing or impossible to create, and with a
//! station's serial device missing.
//!
//! stderr goes to a file, never a pipe, so the running agent's log can be read while it runs.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use linesentry_testkit::wait_until;

use tempfile::TempDir;

const BIN: &str = env!("CARGO_BIN_EXE_linesentry");

/// A config with `stations` (TOML `[[stations]]` tables) and the store in `data_dir`.
fn config(dir: &Path, data_dir: &Path, stations: &str) -> PathBuf {
    let devices = concat!(env!("CARGO_MANIFEST_DIR"), "/devices");
    let text = format!(
        "[agent]\ngateway_id = \"gw-start\"\nsite = \"plant-t\"\ndata_dir = \"{}\"\n\
         profiles_dir = \"{devices}\"\n\n[health]\nenabled = false\n\n{stations}",
        data_dir.display()
    );
    let path = dir.join("agent.toml");
    std::fs::write(&path, text).unwrap();
    path
}

const SIMULATED_PRESS: &str = "[[stations]]\nid = \"press-a\"\nprofile = \"stamping_press\"\n\
                               source = \"simulated\"\npoll_interval_ms = 100\n";

/// `linesentry run --config <config>` with stderr in `log` and no notify socket.
fn start(config: &Path, log: &Path) -> Child {
    start_with_env(config, log, &[])
}

/// `linesentry run` without a notify socket, with `env` added, its log in `log`.
fn start_with_env(config: &Path, log: &Path, env: &[(&str, &str)]) -> Child {
    Command::new(BIN)
        .args(["run", "--config"])
        .arg(config)
        .env_remove("NOTIFY_SOCKET")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap()
}

fn read(log: &Path) -> String {
    std::fs::read_to_string(log).unwrap_or_default()
}

/// Waits until the log contains `needle`; panics if the agent exits or `within` passes.
fn wait_for(agent: &mut Child, log: &Path, needle: &str, within: Duration) {
    let logged = wait_until(within, || {
        if read(log).contains(needle) {
            return Some(());
        }
        if let Some(status) = agent.try_wait().unwrap() {
            panic!(
                "the agent exited ({status}) before logging {needle:?}:\n{}",
                read(log)
            );
        }
        None
    });
    if logged.is_none() {
        let _ = agent.kill();
        let _ = agent.wait();
        panic!("no {needle:?} within {within:?}:\n{}", read(log));
    }
}

/// SIGTERM, then the exit status; kills the agent if it does not stop within 10 s.
fn stop(mut agent: Child) -> std::process::ExitStatus {
    Command::new("kill")
        .args(["-TERM", &agent.id().to_string()])
        .status()
        .unwrap();
    wait_until(Duration::from_secs(10), || agent.try_wait().unwrap()).unwrap_or_else(|| {
        let _ = agent.kill();
        panic!("the agent did not stop within 10 s of SIGTERM")
    })
}

fn run_to_end(config: &Path) -> Output {
    Command::new(BIN)
        .args(["run", "--config"])
        .arg(config)
        .env_remove("NOTIFY_SOCKET")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[test]
fn without_a_notify_socket_the_agent_runs_polls_and_stops_cleanly_even_with_a_watchdog_set() {
    let dir = TempDir::new().unwrap();
    let data = dir.path().join("data");
    let config = config(dir.path(), &data, SIMULATED_PRESS);
    let log = dir.path().join("agent.log");
    // WATCHDOG_USEC without NOTIFY_SOCKET: what a unit with WatchdogSec= but another Type=
    // would give, or a copied environment. There is nobody to ping: the agent must run on.
    let mut agent = start_with_env(&config, &log, &[("WATCHDOG_USEC", "200000")]);
    wait_for(&mut agent, &log, "agent running", Duration::from_secs(10));
    // Several watchdog periods (200 ms each) must pass without a ping going anywhere.
    std::thread::sleep(Duration::from_secs(1));
    assert!(agent.try_wait().unwrap().is_none(), "{}", read(&log));
    let status = stop(agent);
    let log = read(&log);
    assert!(status.success(), "{status}:\n{log}");
    assert!(!log.contains("cannot notify systemd"), "{log}");
    assert!(data.join("queue.redb").is_file(), "{log}");
}

#[test]
fn a_missing_state_directory_is_created_at_start_with_its_parents() {
    let dir = TempDir::new().unwrap();
    let data = dir.path().join("var/lib/linesentry");
    let config = config(dir.path(), &data, SIMULATED_PRESS);
    let log = dir.path().join("agent.log");
    let mut agent = start(&config, &log);
    wait_for(&mut agent, &log, "agent running", Duration::from_secs(10));
    let status = stop(agent);
    assert!(status.success(), "{status}:\n{}", read(&log));
    assert!(data.join("queue.redb").is_file());
}

#[test]
fn a_state_directory_that_cannot_be_created_stops_the_start_naming_it_and_the_os_error() {
    let dir = TempDir::new().unwrap();
    // Below a regular file: no user, root included, can create it (as with StateDirectory=
    // missing under ProtectSystem=strict, where /var/lib is read-only).
    let blocker = dir.path().join("lib");
    std::fs::write(&blocker, b"not a directory").unwrap();
    let data = blocker.join("linesentry");
    let config = config(dir.path(), &data, SIMULATED_PRESS);
    let out = run_to_end(&config);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains(data.to_str().unwrap()), "{stderr}");
    assert!(stderr.contains("Not a directory"), "{stderr}");
}

#[test]
fn a_missing_serial_device_is_logged_at_start_naming_the_device_and_the_agent_keeps_running() {
    let dir = TempDir::new().unwrap();
    let data = dir.path().join("data");
    let device = dir.path().join("ttyUSB9");
    let station = format!(
        "[[stations]]\nid = \"press-rtu\"\nprofile = \"stamping_press\"\n\
         source = \"modbus_rtu\"\ndevice = \"{}\"\nunit_id = 7\npoll_interval_ms = 200\n",
        device.display()
    );
    let config = config(dir.path(), &data, &format!("{SIMULATED_PRESS}\n{station}"));
    let log = dir.path().join("agent.log");
    let mut agent = start(&config, &log);
    wait_for(&mut agent, &log, "agent running", Duration::from_secs(10));
    wait_for(
        &mut agent,
        &log,
        &device.display().to_string(),
        Duration::from_secs(10),
    );
    let status = stop(agent);
    let log = read(&log);
    assert!(status.success(), "{status}:\n{log}");
    let line = log
        .lines()
        .find(|l| l.contains(device.to_str().unwrap()))
        .unwrap();
    assert!(line.contains("No such file or directory"), "{line}");
}
