//! The `linesentry-collector` command line over real processes and signals: validate,
//! gateway and token administration, run under a systemd-style notify socket, SIGHUP and
//! SIGTERM.

use linesentry_testkit::collector as env;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_linesentry-collector");

fn write_config(dir: &std::path::Path, db_url: &str, port: u16) -> std::path::PathBuf {
    let path = dir.join("collector.toml");
    std::fs::write(
        &path,
        format!(
            "[collector]\nid = \"cli-test\"\n[database]\nurl = \"{db_url}\"\n\
             [http]\nlisten = \"127.0.0.1:{port}\"\nplain = true\n"
        ),
    )
    .unwrap();
    path
}

fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill {sig} {pid}");
}

#[test]
fn validate_reports_every_error_with_its_key_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[database]\nurl = \"postgresql://x@h/db\"\npool_size = 0\n[http]\nlisten = \"0.0.0.0:80\"\nplain = true\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .arg("validate")
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("`database.pool_size`") && err.contains("`http.plain`"),
        "{err}"
    );
    let good = Command::new(BIN)
        .arg("validate")
        .arg("--config")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/config/collector.toml"
        ))
        .output()
        .unwrap();
    // The example names certificate files this machine does not have, and nothing else.
    let err = String::from_utf8_lossy(&good.stderr);
    assert!(
        err.lines()
            .filter(|l| l.contains('`'))
            .all(|l| l.contains("does not exist")),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_notifies_systemd_serves_survives_sighup_and_stops_cleanly_on_sigterm() {
    let db = env::database().await;
    let dir = tempfile::tempdir().unwrap();
    let port = linesentry_common::local::free_port().unwrap();
    let config = write_config(dir.path(), &db, port);

    // Administration through the CLI, before the collector runs.
    let key = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        ed25519_dalek::SigningKey::from_bytes(&[7; 32])
            .verifying_key()
            .as_bytes(),
    );
    let out = Command::new(BIN)
        .args(["gateway", "add", "gw-cli", "--public-key", &key, "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new(BIN)
        .args([
            "token", "create", "--name", "ops", "--role", "viewer", "--config",
        ])
        .arg(&config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert!(token.starts_with("lsc_"), "{token}");
    let out = Command::new(BIN)
        .args(["gateway", "list", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"gateway_id\":\"gw-cli\""));

    let notify_path = dir.path().join("notify.sock");
    let notify = tokio::net::UnixDatagram::bind(&notify_path).unwrap();
    let mut child = Command::new(BIN)
        .args(["--log-level", "warn", "run", "--config"])
        .arg(&config)
        .env("NOTIFY_SOCKET", &notify_path)
        .env("WATCHDOG_USEC", "400000")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut buf = [0u8; 512];
    let mut got = String::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !(got.contains("READY=1") && got.contains("WATCHDOG=1")) {
        assert!(Instant::now() < deadline, "notifications so far: {got}");
        if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_secs(1), notify.recv(&mut buf)).await
        {
            got.push_str(&String::from_utf8_lossy(&buf[..n]));
            got.push('\n');
        }
    }
    env::install_crypto();
    let http = reqwest::Client::new();
    let events = format!("http://127.0.0.1:{port}/api/v1/gateways");
    let resp = http.get(&events).bearer_auth(&token).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);

    signal(child.id(), "-HUP");
    // Not exiting can only be observed over a while: give a wrong SIGHUP handler 500 ms.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        child.try_wait().unwrap().is_none(),
        "SIGHUP must not stop the collector"
    );
    let resp = http.get(&events).bearer_auth(&token).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);

    signal(child.id(), "-TERM");
    let status = linesentry_testkit::wait_until_async(Duration::from_secs(20), async || {
        child.try_wait().unwrap()
    })
    .await
    .unwrap_or_else(|| panic!("the collector did not stop within 20 s of SIGTERM"));
    assert!(status.success(), "{status}");
    let mut stopping = String::new();
    while let Ok(Ok(n)) =
        tokio::time::timeout(Duration::from_millis(200), notify.recv(&mut buf)).await
    {
        stopping.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    assert!(stopping.contains("STOPPING=1"), "{stopping}");
}
