//! Test harnesses shared by linesentry's test binaries (`tests/it` of each crate and of the
//! root package), so each is written and compiled once:
//!
//! - [`free_port`], [`repo_root`], [`peer_script`], [`wait_until`] and
//!   [`wait_until_async`]: loopback ports, the repository's files, the independent Python
//!   peers under `crates/testkit/peers/` (pymodbus, asyncua, the JSON Schema and batch
//!   verifiers), and polling instead of fixed sleeps;
//! - [`pki`]: the test PKI (a CA, server and client certificates) of every TLS test;
//! - [`mosquitto`]: a real Mosquitto broker with its own PKI, and `mosquitto_sub` subscribers,
//!   over the one launcher of private servers, `linesentry_common::local`;
//! - [`syslog`]: real syslog receivers (rsyslog with TLS, TCP, UDP and RELP listeners;
//!   syslog-ng with an RFC 5425 listener) writing what they receive to files;
//! - [`intruder`]: another Modbus client scanning or flooding a device the agent watches;
//! - [`PythonPeer`]: the one launcher of the Python peers (ready line, stdin commands, stdout
//!   drained to the end);
//! - feature `collector`: [`collector`], a running collector on a private PostgreSQL over
//!   real sockets, and [`chromium`], headless Chromium over WebDriver for the collector's page.
//!
//! Every server is started on a free loopback port and stopped when its handle is dropped.

#![allow(dead_code, unreachable_pub, missing_debug_implementations)]

#[cfg(feature = "collector")]
pub mod chromium;
#[cfg(feature = "collector")]
pub mod collector;
pub mod intruder;
pub mod mosquitto;
pub mod pki;
pub mod python;
pub mod syslog;

pub use python::{peer_script, PythonPeer};

use std::net::TcpListener;
use std::path::Path;
use std::time::{Duration, Instant};

/// A loopback TCP port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind a loopback port")
        .port()
}

/// The repository's top directory (where `config/`, `devices/` and `packaging/` are).
pub fn repo_root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

/// Runs `python3 SCRIPT ARGS... FILE`, FILE holding `lines` one per line (the independent
/// validators and parsers take their input that way); returns whether the script succeeded
/// and what it printed, stdout then stderr. A missing Python package fails the test with the
/// command that installs it.
pub fn python_on_lines<L: std::fmt::Display>(
    script: &Path,
    args: &[&Path],
    lines: impl IntoIterator<Item = L>,
) -> (bool, String) {
    use std::io::Write as _;
    let mut file = tempfile::NamedTempFile::new().expect("a temporary file");
    for line in lines {
        writeln!(file, "{line}").expect("write the input lines");
    }
    file.flush().expect("flush the input lines");
    let out = std::process::Command::new("python3")
        .arg(script)
        .args(args)
        .arg(file.path())
        .output()
        .expect("python3 is needed (scripts/test installs it)");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        !text.contains("No module named"),
        "a Python package is missing: run scripts/test or pip install -r tests/requirements.txt\n{text}"
    );
    (out.status.success(), text)
}

/// Polls `check` every 20 ms until it returns `Some` or `timeout` passes; `None` then.
pub fn wait_until<T>(timeout: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Polls `check` every 20 ms until it returns `Some` or `timeout` passes; `None` then. The
/// async twin of [`wait_until`], for checks that await (a query, a request) and for waits
/// inside a tokio runtime, which it does not block.
pub async fn wait_until_async<T>(
    timeout: Duration,
    mut check: impl AsyncFnMut() -> Option<T>,
) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
