//! `linesentry pki` and `linesentry sim` for an OPC UA profile, run as processes.

use std::process::{Command, Output};

use linesentry_agent::source::opcua::Pki;

const BIN: &str = env!("CARGO_BIN_EXE_linesentry");

fn linesentry(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .output()
        .expect("run linesentry")
}

fn text(out: &[u8]) -> String {
    String::from_utf8_lossy(out).into_owned()
}

#[test]
fn pki_list_trust_and_reject_move_a_server_certificate_and_show_its_thumbprint_and_validity() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Pki::new(dir.path().join("server"))
        .ensure_own("urn:test:server", "test server")
        .unwrap();
    let pki = Pki::in_data_dir(&data);
    pki.ensure_dirs().unwrap();
    std::fs::copy(&server.path, pki.rejected_dir().join("incoming.der")).unwrap();
    let data_arg = data.to_str().unwrap();

    let out = linesentry(&["pki", "list", "--data", data_arg]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let listing = text(&out.stdout);
    let line = listing
        .lines()
        .find(|l| l.contains(&server.thumbprint))
        .unwrap_or_else(|| panic!("{listing}"));
    assert!(line.starts_with("rejected"), "{line}");
    assert!(line.contains("CN=test server"), "{line}");
    let year = chrono::Utc::now().format("%Y").to_string();
    assert!(line.contains(&format!("valid {year}-")), "{line}");

    let upper = server.thumbprint.to_uppercase();
    let out = linesentry(&["pki", "trust", "--data", data_arg, &upper]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).starts_with("trusted"),
        "{}",
        text(&out.stdout)
    );
    assert!(pki.rejected_path(&server.thumbprint).is_none());
    let listing = text(&linesentry(&["pki", "list", "--data", data_arg]).stdout);
    assert!(
        listing
            .lines()
            .any(|l| l.starts_with("trusted") && l.contains(&server.thumbprint)),
        "{listing}"
    );

    let out = linesentry(&["pki", "reject", "--data", data_arg, &server.thumbprint]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(pki.rejected_path(&server.thumbprint).is_some());

    let out = linesentry(&["pki", "trust", "--data", data_arg, "not-a-thumbprint"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("neither a certificate file nor a SHA-1 thumbprint"),
        "{}",
        text(&out.stderr)
    );

    // A certificate file from anywhere can be trusted directly.
    let out = linesentry(&[
        "pki",
        "trust",
        "--data",
        data_arg,
        server.path.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(pki.rejected_path(&server.thumbprint).is_none());
}

/// `linesentry sim` exists in builds with the `sim` feature only (not the field build).
#[cfg(feature = "sim")]
mod sim {
    use std::io::{BufRead, BufReader};
    use std::path::Path;
    use std::process::{Child, Command, Stdio};
    use std::time::Duration;

    use linesentry_agent::source::opcua::{Acquisition, OpcUaSettings, OpcUaSource};
    use linesentry_agent::source::Value;

    use super::BIN;

    /// `linesentry sim` on an OPC UA profile, killed on drop.
    struct SimProcess(Child);

    impl Drop for SimProcess {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sim_serves_an_opcua_profile_that_the_client_reads_and_stops_on_sigterm() {
        let dir = tempfile::tempdir().unwrap();
        let profile = Path::new(env!("CARGO_MANIFEST_DIR")).join("devices/cell_controller.toml");
        let mut child = Command::new(BIN)
            .args(["--log-level", "warn", "sim", "--profile"])
            .arg(&profile)
            .args(["--listen", "127.0.0.1:0", "--pki"])
            .arg(dir.path().join("sim-pki"))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut sim = SimProcess(child);
        let mut first = String::new();
        BufReader::new(stdout).read_line(&mut first).unwrap();
        assert!(
            first.contains("over OPC UA at opc.tcp://127.0.0.1:"),
            "{first}"
        );
        let url = first
            .split_whitespace()
            .find(|w| w.starts_with("opc.tcp://"))
            .unwrap()
            .trim_end_matches([',', ';'])
            .to_owned();

        let root = dir.path().join("agent");
        std::fs::create_dir_all(&root).unwrap();
        let config = format!(
            "[agent]\ngateway_id = \"gw-cli\"\nsite = \"lab\"\ndata_dir = \"data\"\nprofiles_dir = {:?}\n\n\
             [[stations]]\nid = \"cell-1\"\nprofile = \"cell_controller\"\nsource = \"opcua\"\n\
             endpoint_url = \"{url}\"\npoll_interval_ms = 200\ntimeout_ms = 3000\n",
            profile.parent().unwrap().display().to_string()
        );
        std::fs::write(root.join("agent.toml"), config).unwrap();
        let station = linesentry_agent::config::load(&root.join("agent.toml"))
            .unwrap_or_else(|e| panic!("{e}"))
            .stations
            .remove(0);
        let mut settings = OpcUaSettings::new(dir.path(), "gw-cli");
        settings.acquisition = Acquisition::Polling;
        let mut source = OpcUaSource::start(&station, settings).unwrap();
        let cycles = linesentry_testkit::wait_until_async(Duration::from_secs(20), async || {
            let poll = source.poll().await;
            poll.readings
                .iter()
                .find(|r| r.tag.as_ref() == "cycle_counter")
                .map(|r| r.value.clone())
        })
        .await;
        assert!(
            matches!(cycles, Some(Value::UInt(_))),
            "a `cycle_counter` reading within 20 s: {cycles:?}"
        );
        source.close().await;

        let pid = sim.0.id().to_string();
        assert!(Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success());
        let status =
            linesentry_testkit::wait_until(Duration::from_secs(10), || sim.0.try_wait().unwrap())
                .unwrap_or_else(|| panic!("sim did not stop within 10 s of SIGTERM"));
        assert!(status.success(), "{status:?}");
    }
}
