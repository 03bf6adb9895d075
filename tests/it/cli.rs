//! The `linesentry` binary over real processes and files: `validate`, `run` stopped by
//! SIGTERM and SIGINT, `buffer stats|list|export` on the store it leaves behind, recovery
//! from a corrupt store, `demo`, and `--log-format json`.
//!
//! Every child runs under a deadline and is killed if a test fails (the guard's `Drop`).
//! stdout and stderr go to files, never pipes, so a chatty child cannot block on a full pipe
//! and a running agent's logs can be read while it runs.
#![allow(unsafe_code)] // libc::kill, on children this test started, only

use std::path::{Path, PathBuf};
use std::time::Duration;

use harness::{cli, utf8, Agent, Output, Scenario, QUICK};
use linesentry_event::SecurityEvent;

/// How long a signalled agent may take to drain and exit.
const STOP_WITHIN: Duration = Duration::from_secs(10);
/// How long an agent may take to open its store and start polling.
const START_WITHIN: Duration = Duration::from_secs(10);

mod harness {
    use std::fmt;
    use std::path::{Path, PathBuf};
    use std::process::{Child, Command, ExitStatus, Stdio};
    use std::time::Duration;

    use linesentry_testkit::wait_until;

    use tempfile::{NamedTempFile, TempDir};
    use toml_edit::{value, DocumentMut};

    const BIN: &str = env!("CARGO_BIN_EXE_linesentry");

    /// Deadline for a command that should end by itself (validate, buffer ...).
    pub(crate) const QUICK: Duration = Duration::from_secs(10);

    /// The station poll interval of test configs: events come within a few hundred ms.
    const POLL_MS: i64 = 50;

    pub(crate) fn utf8(path: &Path) -> &str {
        path.to_str().expect("temporary paths are UTF-8")
    }

    /// What a finished command left behind.
    pub(crate) struct Output {
        pub(crate) status: ExitStatus,
        pub(crate) stdout: String,
        pub(crate) stderr: String,
    }

    impl Output {
        pub(crate) fn code(&self) -> Option<i32> {
            self.status.code()
        }

        /// Non-empty stdout lines.
        pub(crate) fn lines(&self) -> Vec<&str> {
            self.stdout
                .lines()
                .filter(|l| !l.trim().is_empty())
                .collect()
        }
    }

    /// Shown in assertion messages: the status and both streams (stdout shortened).
    impl fmt::Debug for Output {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            let mut stdout = self.stdout.as_str();
            if stdout.len() > 4000 {
                let mut cut = 4000;
                while !stdout.is_char_boundary(cut) {
                    cut -= 1;
                }
                stdout = &stdout[..cut];
            }
            write!(
                f,
                "\n--- status: {}\n--- stdout:\n{stdout}\n--- stderr:\n{}",
                self.status, self.stderr
            )
        }
    }

    /// A temporary directory holding a test config and the agent's data directory.
    pub(crate) struct Scenario {
        dir: TempDir,
    }

    impl Scenario {
        pub(crate) fn new() -> Self {
            Self {
                dir: tempfile::tempdir().expect("temporary directory"),
            }
        }

        pub(crate) fn path(&self) -> &Path {
            self.dir.path()
        }

        pub(crate) fn data_dir(&self) -> PathBuf {
            self.path().join("data")
        }

        /// `config/demo.toml` with the data directory in this scenario, the repository's
        /// `devices/` as profiles, fast polls and `forward.console` set to `console`; `edit`
        /// may change anything else. With `console` (the demo) the protocol stations stay,
        /// for `demo` to simulate; without, every station uses the built-in generator, as
        /// `run` has no simulators. Returns the written file's path.
        pub(crate) fn config(&self, console: bool, edit: impl FnOnce(&mut DocumentMut)) -> PathBuf {
            let demo = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/demo.toml");
            let text = std::fs::read_to_string(&demo).expect("config/demo.toml is readable");
            let mut doc: DocumentMut = text.parse().expect("config/demo.toml is TOML");
            let devices = Path::new(env!("CARGO_MANIFEST_DIR")).join("devices");
            doc["agent"]["data_dir"] = value(utf8(&self.data_dir()));
            doc["agent"]["profiles_dir"] = value(utf8(&devices));
            let config_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
            for station in doc["stations"]
                .as_array_of_tables_mut()
                .expect("demo.toml has [[stations]]")
                .iter_mut()
            {
                station["poll_interval_ms"] = value(POLL_MS);
                if console {
                    // `demo` starts simulators for the protocol stations; the secret file
                    // is relative to the shipped config's directory.
                    if let Some(file) = station
                        .get_mut("identity")
                        .and_then(|i| i.get_mut("password"))
                        .and_then(|p| p.get_mut("file"))
                    {
                        let absolute = config_dir.join(file.as_str().unwrap_or_default());
                        *file = value(utf8(&absolute));
                    }
                } else {
                    // `run` has no simulators: the stations use the built-in generator.
                    for key in [
                        "address",
                        "endpoint_url",
                        "security_mode",
                        "security_policy",
                        "identity",
                        "timeout_ms",
                    ] {
                        station.remove(key);
                    }
                    station["source"] = value("simulated");
                }
            }
            doc["forward"]["console"] = value(console);
            edit(&mut doc);
            let path = self.path().join("agent.toml");
            std::fs::write(&path, doc.to_string()).expect("write the test config");
            path
        }
    }

    fn capture() -> NamedTempFile {
        NamedTempFile::new().expect("temporary file for a child's output")
    }

    fn read(file: &NamedTempFile) -> String {
        String::from_utf8_lossy(&std::fs::read(file.path()).unwrap_or_default()).into_owned()
    }

    fn spawn(args: &[&str], stdout: &NamedTempFile, stderr: &NamedTempFile) -> Child {
        let sink = |f: &NamedTempFile| Stdio::from(f.as_file().try_clone().expect("dup"));
        Command::new(BIN)
            .args(args)
            .stdin(Stdio::null())
            .stdout(sink(stdout))
            .stderr(sink(stderr))
            .spawn()
            .expect("start the linesentry binary")
    }

    /// Runs the binary to its end; kills it and panics if that takes longer than `within`.
    pub(crate) fn cli(args: &[&str], within: Duration) -> Output {
        Agent::start(args).wait(within)
    }

    /// A running `linesentry` process; killed and reaped on drop unless waited for.
    pub(crate) struct Agent {
        child: std::process::Child,
        stdout: NamedTempFile,
        stderr: NamedTempFile,
        reaped: bool,
    }

    impl Agent {
        pub(crate) fn start(args: &[&str]) -> Self {
            let (stdout, stderr) = (capture(), capture());
            let child = spawn(args, &stdout, &stderr);
            Self {
                child,
                stdout,
                stderr,
                reaped: false,
            }
        }

        /// `linesentry run --config <config>`, waited for until it polls its stations.
        pub(crate) fn run(config: &Path, data_dir: &Path, within: Duration) -> Self {
            let mut agent = Self::start(&["run", "--config", utf8(config)]);
            agent.wait_until_running(data_dir, within);
            agent
        }

        fn stderr(&self) -> String {
            read(&self.stderr)
        }

        /// Until the store exists and the agent has logged that its stations are running.
        pub(crate) fn wait_until_running(&mut self, data_dir: &Path, within: Duration) {
            let store = data_dir.join("queue.redb");
            let running = wait_until(within, || {
                if store.exists() && self.stderr().contains("agent running") {
                    return Some(());
                }
                if let Ok(Some(status)) = self.child.try_wait() {
                    self.reaped = true;
                    panic!("the agent exited before running: {:?}", self.output(status));
                }
                None
            });
            assert!(
                running.is_some(),
                "the agent did not log `agent running` and create its store within {within:?}; stderr:\n{}",
                self.stderr()
            );
        }

        /// Sends `signal` (e.g. `libc::SIGTERM`); the agent must still be running.
        pub(crate) fn signal(&mut self, signal: libc::c_int) {
            if let Ok(Some(status)) = self.child.try_wait() {
                self.reaped = true;
                panic!(
                    "the agent exited before the signal: {:?}",
                    self.output(status)
                );
            }
            let pid = libc::pid_t::try_from(self.child.id()).expect("pid fits pid_t");
            // SAFETY: kill(2) on our own child, which has not been reaped (checked above), so
            // the pid cannot have been reused.
            let rc = unsafe { libc::kill(pid, signal) };
            assert_eq!(rc, 0, "kill({pid}, {signal}) failed");
        }

        /// Waits for the exit; kills the process and panics if it takes longer than `within`.
        pub(crate) fn wait(&mut self, within: Duration) -> Output {
            let exited = wait_until(within, || match self.child.try_wait() {
                Ok(status) => status,
                Err(e) => panic!("waiting for the child failed: {e}"),
            });
            if let Some(status) = exited {
                self.reaped = true;
                return self.output(status);
            }
            let _ = self.child.kill();
            let status = self.child.wait().expect("reap the killed child");
            self.reaped = true;
            panic!(
                "still running after {within:?}; killed: {:?}",
                self.output(status)
            );
        }

        fn output(&self, status: ExitStatus) -> Output {
            Output {
                status,
                stdout: read(&self.stdout),
                stderr: read(&self.stderr),
            }
        }
    }

    impl Drop for Agent {
        fn drop(&mut self) {
            if !self.reaped {
                let _ = self.child.kill();
                let _ = self.child.wait();
            }
        }
    }
}

/// `buffer export --data <dir>`, each line parsed as a wire event.
fn export(data_dir: &Path) -> Vec<SecurityEvent> {
    let out = cli(&["buffer", "export", "--data", utf8(data_dir)], QUICK);
    assert_eq!(out.code(), Some(0), "buffer export failed: {out:?}");
    out.lines()
        .into_iter()
        .map(|line| {
            SecurityEvent::from_json(line)
                .unwrap_or_else(|e| panic!("export line is not a valid event ({e}): {line}"))
        })
        .collect()
}

fn assert_seq_strictly_increasing(events: &[SecurityEvent]) {
    for pair in events.windows(2) {
        assert!(
            pair[0].seq < pair[1].seq,
            "seq not strictly increasing: {} ({}) then {} ({})",
            pair[0].seq,
            pair[0].event_type,
            pair[1].seq,
            pair[1].event_type
        );
    }
}

fn types(events: &[SecurityEvent]) -> Vec<&str> {
    events.iter().map(|e| e.event_type.as_str()).collect()
}

/// Station events the simulated demo stations produce within a second of polling.
fn is_station_event(e: &SecurityEvent) -> bool {
    e.station_id.is_some() && !e.event_type.starts_with("agent.")
}

/// Starts an agent on `config`, lets it poll for `polling`, stops it with `signal` and
/// checks that it exited 0.
fn run_until_signal(s: &Scenario, config: &Path, polling: Duration, signal: libc::c_int) -> Output {
    let mut agent = Agent::run(config, &s.data_dir(), START_WITHIN);
    // The run under test: the agent polls for a given time (its queue is locked meanwhile,
    // so what it buffered is only readable after the stop).
    std::thread::sleep(polling);
    agent.signal(signal);
    let out = agent.wait(STOP_WITHIN);
    assert_eq!(
        out.code(),
        Some(0),
        "the agent must exit 0 after signal {signal}: {out:?}"
    );
    out
}

#[test]
fn validate_accepts_the_shipped_demo_config_and_says_ok() {
    let demo = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/demo.toml");
    let out = cli(&["validate", "--config", utf8(&demo)], QUICK);
    assert_eq!(out.code(), Some(0), "{out:?}");
    let first = out.lines().first().copied().unwrap_or_default().to_owned();
    assert!(
        first.starts_with(&format!("{}: ok", demo.display())),
        "expected `<path>: ok ...`: {out:?}"
    );
}

#[test]
fn validate_profile_checks_a_profile_on_its_own_every_error_with_file_line_and_key_path() {
    let s = Scenario::new();
    let path = s.path().join("oven.toml");
    std::fs::write(
        &path,
        r#"[profile]
name = "oven"
protocol = "modbus"

[[tags]]
name = "zone1_temp"
role = "measurement"
type = "float"
area = "holding_registr"
adress = 3

[[tags]]
name = "door"
role = "statuss"
type = "bool"
area = "coil"
address = 1
"#,
    )
    .unwrap();
    let out = cli(&["validate", "--profile", utf8(&path)], QUICK);
    assert_eq!(out.code(), Some(1), "{out:?}");
    let file = path.display().to_string();
    let lines: Vec<&str> = out.stderr.lines().collect();
    for (line, key, detail) in [
        (5, "tags[0].address", "missing required key `address`"),
        (8, "tags[0].type", "float"),
        (9, "tags[0].area", "holding_registr"),
        (10, "tags[0].adress", "adress"),
        (14, "tags[1].role", "statuss"),
    ] {
        let prefix = format!("{file}:{line}: `{key}`: ");
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with(&prefix) && l.contains(detail)),
            "no error line starting with {prefix:?} mentioning {detail:?}: {out:?}"
        );
    }
    assert!(
        lines.contains(&format!("{file}: 5 error(s)").as_str()),
        "the count line is missing or wrong: {out:?}"
    );

    // Every shipped profile passes, several in one call.
    let devices = Path::new(env!("CARGO_MANIFEST_DIR")).join("devices");
    let oven = devices.join("reflow_oven.toml");
    let aoi = devices.join("aoi_station.toml");
    let out = cli(
        &[
            "validate",
            "--profile",
            utf8(&oven),
            "--profile",
            utf8(&aoi),
        ],
        QUICK,
    );
    assert_eq!(out.code(), Some(0), "{out:?}");
    let lines = out.lines();
    assert_eq!(lines.len(), 2, "{out:?}");
    assert!(
        lines[0].starts_with(&format!(
            "{}: ok (profile reflow_oven, modbus, ",
            oven.display()
        )) && lines[1].starts_with(&format!(
            "{}: ok (profile aoi_station, opcua, ",
            aoi.display()
        )),
        "{out:?}"
    );

    let help = cli(&["validate", "--help"], QUICK);
    assert!(
        help.stdout.contains("--profile") && help.stdout.contains("validate --profile devices/"),
        "{help:?}"
    );
}

#[test]
fn identity_prints_the_key_before_the_https_token_file_exists_and_validate_waits_for_the_token() {
    // The field build's half of the README's first install (tests/it/first_install.rs runs
    // all of it against a collector): the token file [forward.https] names can only be
    // written once the key identity prints is registered.
    let s = Scenario::new();
    let token = s.path().join("secrets/gateway-token");
    let path = s.path().join("agent.toml");
    std::fs::write(
        &path,
        format!(
            "[agent]\ngateway_id = \"gw-first\"\nsite = \"plant\"\ndata_dir = \"data\"\n\n\
             [forward.https]\nurl = \"https://collector.plant.local:8443/api/v1/ingest\"\n\
             bearer_token = {{ file = \"{}\" }}\n",
            utf8(&token)
        ),
    )
    .unwrap();
    let out = cli(&["identity", "--config", utf8(&path)], QUICK);
    assert_eq!(out.code(), Some(0), "{out:?}");
    assert!(out.stdout.contains("gateway_id: gw-first"), "{out:?}");
    assert!(out.stdout.contains("public_key: "), "{out:?}");
    assert!(s.data_dir().join("identity.key").is_file(), "{out:?}");
    let again = cli(&["identity", "--config", utf8(&path), "--json"], QUICK);
    let v: serde_json::Value = serde_json::from_str(&again.stdout).expect("JSON");
    assert_eq!(
        v["created"], false,
        "the same key the second time: {again:?}"
    );

    let out = cli(&["validate", "--config", utf8(&path)], QUICK);
    assert_eq!(out.code(), Some(1), "{out:?}");
    assert!(out.stderr.contains("bearer_token"), "{out:?}");
    std::fs::create_dir_all(token.parent().unwrap()).unwrap();
    std::fs::write(&token, "lsc_issued-by-the-collector\n").unwrap();
    let out = cli(&["validate", "--config", utf8(&path)], QUICK);
    assert_eq!(out.code(), Some(0), "{out:?}");
}

#[test]
fn identity_without_a_data_dir_says_which_key_is_missing() {
    let s = Scenario::new();
    let path = s.path().join("agent.toml");
    std::fs::write(&path, "[agent]\ngateway_id = \"gw\"\nsite = \"plant\"\n").unwrap();
    let out = cli(&["identity", "--config", utf8(&path)], QUICK);
    assert_eq!(out.code(), Some(1), "{out:?}");
    assert!(out.stderr.contains("data_dir"), "{out:?}");
}

#[test]
fn validate_reports_every_error_with_the_file_key_path_and_line_and_exits_non_zero() {
    let s = Scenario::new();
    let devices = Path::new(env!("CARGO_MANIFEST_DIR")).join("devices");
    let text = format!(
        r#"[agent]
gateway_id = "gw-test"
site = "test-site"
data_dir = "data"
profiles_dir = "{devices}"
colour = "blue"

[buffer]
quota_mib = 0

[[stations]]
id = "press-01"
profile = "no_such_profile"
source = "simulated"
poll_interval_ms = 100
"#,
        devices = utf8(&devices)
    );
    let path = s.path().join("broken.toml");
    std::fs::write(&path, text).unwrap();
    let out = cli(&["validate", "--config", utf8(&path)], QUICK);
    assert_ne!(out.code(), Some(0), "{out:?}");
    assert!(out.status.code().is_some(), "exited by a signal: {out:?}");
    let file = path.display().to_string();
    let expected = [
        (6, "agent.colour", "colour"),
        (9, "buffer.quota_mib", "65536"),
        (13, "stations[0].profile", "no_such_profile"),
    ];
    let lines: Vec<&str> = out.stderr.lines().collect();
    for (line, key, detail) in expected {
        let prefix = format!("{file}:{line}: `{key}`: ");
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with(&prefix) && l.contains(detail)),
            "no error line starting with {prefix:?} mentioning {detail:?}: {out:?}"
        );
    }
    assert!(
        lines.contains(&format!("{file}: 3 error(s)").as_str()),
        "the count line is missing or wrong: {out:?}"
    );
}

#[test]
fn run_exits_0_on_sigterm_and_leaves_a_buffer_that_stats_list_and_export_read() {
    let s = Scenario::new();
    let config = s.config(false, |_| {});
    run_until_signal(&s, &config, Duration::from_secs(2), libc::SIGTERM);
    let data = s.data_dir();

    let out = cli(&["buffer", "stats", "--data", utf8(&data)], QUICK);
    assert_eq!(out.code(), Some(0), "{out:?}");
    let stats: serde_json::Value = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("stats is not JSON ({e}): {out:?}"));
    let depth = stats["depth"].as_u64().expect("stats.depth");
    assert!(depth > 0, "nothing buffered without a forwarder: {out:?}");

    let events = export(&data);
    assert_eq!(events.len() as u64, depth, "export and stats disagree");
    assert_seq_strictly_increasing(&events);
    assert_eq!(events.first().unwrap().event_type, "agent.started");
    assert_eq!(events.last().unwrap().event_type, "agent.stopped");
    let station = events
        .iter()
        .find(|e| is_station_event(e))
        .unwrap_or_else(|| panic!("no station event in {:?}", types(&events)));
    assert!(
        ["press-01", "oven-01", "aoi-01", "cell-01"]
            .contains(&station.station_id.as_deref().unwrap()),
        "unknown station in {station:?}"
    );
    let last_seq = events.last().unwrap().seq;
    assert_eq!(stats["newest_seq"].as_u64(), Some(last_seq), "{stats}");
    assert!(stats["next_seq"].as_u64().unwrap() > last_seq, "{stats}");

    let out = cli(
        &["buffer", "list", "--data", utf8(&data), "--limit", "5"],
        QUICK,
    );
    assert_eq!(out.code(), Some(0), "{out:?}");
    let lines = out.lines();
    assert_eq!(lines.len(), 5, "{out:?}");
    for (line, event) in lines.iter().zip(&events) {
        let fields: Vec<&str> = line.split('\t').collect();
        assert_eq!(fields[0], event.seq.to_string(), "{line}");
        assert_eq!(fields[3], event.event_type, "{line}");
    }
}

#[test]
fn a_second_run_on_the_same_data_dir_continues_seq_and_keeps_the_buffered_events() {
    let s = Scenario::new();
    let config = s.config(false, |_| {});
    run_until_signal(&s, &config, Duration::from_secs(1), libc::SIGTERM);
    let first = export(&s.data_dir());
    let first_max = first
        .iter()
        .map(|e| e.seq)
        .max()
        .expect("first run buffered events");

    run_until_signal(&s, &config, Duration::from_secs(1), libc::SIGTERM);
    let both = export(&s.data_dir());
    assert_seq_strictly_increasing(&both);
    assert!(both.len() > first.len(), "the second run added nothing");
    for (before, after) in first.iter().zip(&both) {
        assert_eq!(
            (before.seq, before.id),
            (after.seq, after.id),
            "an event of the first run was lost or renumbered"
        );
    }
    let added = &both[first.len()..];
    assert!(
        added.iter().all(|e| e.seq > first_max),
        "the second run reused a seq at or below {first_max}"
    );
    assert_eq!(added[0].event_type, "agent.started");
    assert_eq!(
        added[0]
            .event_data
            .get("buffered_at_start")
            .and_then(serde_json::Value::as_u64),
        Some(first.len() as u64),
        "{:?}",
        added[0]
    );
    assert_eq!(added.last().unwrap().event_type, "agent.stopped");
    assert!(added.iter().any(is_station_event), "{:?}", types(added));
}

#[test]
fn buffer_stats_refuses_a_store_held_by_a_running_agent_without_disturbing_it() {
    let s = Scenario::new();
    let config = s.config(false, |_| {});
    let mut agent = Agent::run(&config, &s.data_dir(), START_WITHIN);
    let store = s.data_dir().join("queue.redb");
    let out = cli(&["buffer", "stats", "--data", utf8(&s.data_dir())], QUICK);
    assert!(
        matches!(out.code(), Some(c) if c != 0),
        "stats on a live store must fail: {out:?}"
    );
    assert!(
        out.stderr.contains("in use") && out.stderr.contains(utf8(&store)),
        "the message must say the store is in use and name it: {out:?}"
    );
    assert!(out.stdout.trim().is_empty(), "{out:?}");

    agent.signal(libc::SIGTERM);
    let out = agent.wait(STOP_WITHIN);
    assert_eq!(out.code(), Some(0), "{out:?}");
    assert_eq!(types(&export(&s.data_dir())).last(), Some(&"agent.stopped"));
}

#[test]
fn buffer_stats_on_a_directory_without_a_store_fails_naming_the_missing_path() {
    let s = Scenario::new();
    let empty = s.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let out = cli(&["buffer", "stats", "--data", utf8(&empty)], QUICK);
    assert!(matches!(out.code(), Some(c) if c != 0), "{out:?}");
    let missing = empty.join("queue.redb");
    assert!(
        out.stderr.contains(utf8(&missing)),
        "stderr must name {}: {out:?}",
        missing.display()
    );
    assert!(!missing.exists(), "inspecting must not create a store");
}

#[test]
fn sigint_stops_the_agent_like_sigterm() {
    let s = Scenario::new();
    let config = s.config(false, |_| {});
    let out = run_until_signal(&s, &config, Duration::from_millis(500), libc::SIGINT);
    assert!(out.stderr.contains("SIGINT"), "{out:?}");
    let events = export(&s.data_dir());
    assert_eq!(events.first().unwrap().event_type, "agent.started");
    assert_eq!(events.last().unwrap().event_type, "agent.stopped");
    assert_seq_strictly_increasing(&events);
}

#[test]
fn run_fails_fast_naming_a_data_dir_that_lies_below_a_regular_file() {
    let s = Scenario::new();
    let file = s.path().join("plain-file");
    std::fs::write(&file, b"not a directory").unwrap();
    let data = file.join("data");
    let data_str = utf8(&data).to_owned();
    let config = s.config(false, |doc| {
        doc["agent"]["data_dir"] = toml_edit::value(data_str);
    });
    let out = cli(&["run", "--config", utf8(&config)], Duration::from_secs(5));
    assert!(matches!(out.code(), Some(c) if c != 0), "{out:?}");
    assert!(
        out.stderr.contains(utf8(&data)),
        "stderr must name {}: {out:?}",
        data.display()
    );
}

#[test]
fn a_corrupt_store_is_moved_aside_and_the_agent_starts_with_a_buffer_reset_event() {
    let s = Scenario::new();
    let data = s.data_dir();
    std::fs::create_dir(&data).unwrap();
    let garbage: Vec<u8> = b"this is not a redb file\n".repeat(2000);
    std::fs::write(data.join("queue.redb"), &garbage).unwrap();
    let config = s.config(false, |_| {});
    run_until_signal(&s, &config, Duration::from_millis(500), libc::SIGTERM);

    let corrupt: Vec<PathBuf> = std::fs::read_dir(&data)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("queue.redb.corrupt-"))
        })
        .collect();
    assert_eq!(
        corrupt.len(),
        1,
        "expected one moved-aside store: {corrupt:?}"
    );
    assert_eq!(
        std::fs::read(&corrupt[0]).unwrap(),
        garbage,
        "the old file must be kept as it was"
    );

    let events = export(&data);
    let reset = events
        .iter()
        .find(|e| e.event_type == "agent.buffer_reset")
        .unwrap_or_else(|| panic!("no agent.buffer_reset in {:?}", types(&events)));
    assert_eq!(
        reset
            .event_data
            .get("moved_to")
            .and_then(serde_json::Value::as_str),
        Some(utf8(&corrupt[0])),
        "{reset:?}"
    );
    assert!(types(&events).contains(&"agent.started"));
    assert_eq!(events.last().unwrap().event_type, "agent.stopped");
    assert!(events.iter().any(is_station_event), "{:?}", types(&events));
}

#[test]
#[cfg(feature = "sim")] // `demo` is not in the field build
fn demo_prints_lifecycle_and_station_events_and_a_summary_then_exits_0() {
    let s = Scenario::new();
    let config = s.config(true, |_| {});
    let out = cli(
        &["demo", "--config", utf8(&config), "--seconds", "3"],
        Duration::from_secs(20),
    );
    assert_eq!(out.code(), Some(0), "{out:?}");

    // `{ts} #{seq} {severity} {event_type} {station|-} {data}`
    let rows: Vec<(u64, &str, &str)> = out
        .lines()
        .iter()
        .map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            assert!(f.len() >= 6, "not an event line: {line}");
            let seq = f[1]
                .strip_prefix('#')
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("no #seq in: {line}"));
            (seq, f[3], f[4])
        })
        .collect();
    let kinds: Vec<&str> = rows.iter().map(|r| r.1).collect();
    assert!(kinds.contains(&"agent.started"), "{out:?}");
    assert!(kinds.contains(&"agent.stopped"), "{out:?}");
    assert!(
        rows.iter()
            .any(|r| r.2 != "-" && !r.1.starts_with("agent.")),
        "no station event printed: {out:?}"
    );
    assert!(
        rows.windows(2).all(|w| w[0].0 < w[1].0),
        "printed seqs are not increasing: {out:?}"
    );

    let summary = out
        .stderr
        .lines()
        .find(|l| l.starts_with("demo:"))
        .unwrap_or_else(|| panic!("no `demo:` summary line: {out:?}"));
    let forwarded: u64 = summary
        .split(", ")
        .find_map(|part| part.strip_suffix(" forwarded"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no forwarded count in {summary:?}"));
    assert_eq!(
        forwarded,
        rows.len() as u64,
        "the summary's forwarded count must match the printed lines: {summary}"
    );
}

#[test]
fn log_format_json_makes_every_stderr_log_line_a_json_object() {
    let s = Scenario::new();
    let config = s.config(false, |_| {});
    let mut agent = Agent::start(&["--log-format", "json", "run", "--config", utf8(&config)]);
    agent.wait_until_running(&s.data_dir(), START_WITHIN);
    agent.signal(libc::SIGTERM);
    let out = agent.wait(STOP_WITHIN);
    assert_eq!(out.code(), Some(0), "{out:?}");

    let mut messages = Vec::new();
    for line in out.stderr.lines().filter(|l| !l.trim().is_empty()) {
        let value: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("stderr line is not JSON ({e}): {line}"));
        assert!(value.is_object(), "not a JSON object: {line}");
        assert!(value["level"].is_string(), "no level: {line}");
        if let Some(m) = value["fields"]["message"].as_str() {
            messages.push(m.to_owned());
        }
    }
    for expected in ["agent running", "agent stopped"] {
        assert!(
            messages.iter().any(|m| m == expected),
            "no {expected:?} log line in {messages:?}"
        );
    }
}
