//! The OPC UA client against an independent peer: a python-asyncua server
//! (`crates/testkit/peers/asyncua_server.py`) on a free loopback port, over real sockets.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use linesentry_agent::source::opcua::{Acquisition, CertState, OpcUaSettings, OpcUaSource, Pki};
use linesentry_agent::source::StationConfig;
use linesentry_agent::source::{PollResult, Quality, SourceError, Value};
use linesentry_testkit::PythonPeer;

const USER: &str = "operator";
const PASSWORD: &str = "s3cret-op";
const SERVER_URI: &str = "urn:linesentry:test:asyncua";

/// The python server (asyncua_server.py), killed on drop.
struct PyServer {
    peer: PythonPeer,
    port: u16,
    pki: PathBuf,
}

impl PyServer {
    fn start(port: u16, pki: &Path) -> Self {
        let peer = PythonPeer::start(
            "asyncua_server.py",
            [port.to_string().as_ref(), pki.as_os_str()],
            "READY",
            Duration::from_secs(30),
        );
        Self {
            peer,
            port,
            pki: pki.to_owned(),
        }
    }

    fn url(&self) -> String {
        format!("opc.tcp://127.0.0.1:{}/linesentry/", self.port)
    }

    fn command(&mut self, line: &str) {
        self.peer.command(line);
    }

    fn certificate_thumbprint(&self) -> String {
        use sha1_of_der::sha1_hex;
        sha1_hex(&std::fs::read(self.pki.join("server_cert.der")).unwrap())
    }

    fn stop(self) {
        self.peer.stop();
    }
}

/// SHA-1 through the crate's own PKI code path: trust a copy in a scratch PKI and read the
/// thumbprint back (keeps the test free of a SHA-1 dependency).
mod sha1_of_der {
    pub(super) fn sha1_hex(der: &[u8]) -> String {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.der");
        std::fs::write(&file, der).unwrap();
        let pki = linesentry_agent::source::opcua::Pki::new(dir.path().join("pki"));
        pki.trust(file.to_str().unwrap()).unwrap().thumbprint
    }
}

/// Logs to the test output when `RUST_LOG` is set (`RUST_LOG=linesentry=debug,opcua=info`).
fn init_logs() {
    if let Ok(filter) = std::env::var("RUST_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_test_writer()
            .try_init();
    }
}

fn free_port() -> u16 {
    init_logs();
    linesentry_testkit::free_port()
}

/// One `[[tags]]` entry of the test profile.
fn tag(name: &str, data_type: &str, node: &str) -> String {
    format!(
        "[[tags]]\nname = \"{name}\"\nrole = \"measurement\"\ntype = \"{data_type}\"\nnode_id = \"{node}\"\n"
    )
}

/// Tag name, type, node, value A, value B (the server alternates between them).
fn typed_tags() -> Vec<(&'static str, &'static str, Value, Value)> {
    vec![
        ("bool", "bool", Value::Bool(true), Value::Bool(false)),
        ("int16", "i16", Value::Int(-32768), Value::Int(32767)),
        (
            "int32",
            "i32",
            Value::Int(-2_147_483_648),
            Value::Int(2_147_483_647),
        ),
        ("int64", "i64", Value::Int(i64::MIN), Value::Int(i64::MAX)),
        ("uint16", "u16", Value::UInt(65535), Value::UInt(0)),
        ("uint32", "u32", Value::UInt(4_294_967_295), Value::UInt(7)),
        ("uint64", "u64", Value::UInt(u64::MAX), Value::UInt(42)),
        ("float", "f32", Value::Float(1.5), Value::Float(-0.125)),
        (
            "double",
            "f64",
            Value::Float(-2.25e300),
            Value::Float(std::f64::consts::PI),
        ),
        (
            "string",
            "string",
            Value::Text("Grüße ✓".into()),
            Value::Text("PCB-0042".into()),
        ),
    ]
}

fn node_of(name: &str) -> String {
    let mut chars = name.chars();
    let first = chars.next().unwrap().to_ascii_uppercase();
    let rest: String = chars.collect();
    let pretty = format!("{first}{rest}").replace("Uint", "UInt");
    format!("ns=2;s=Demo.{pretty}")
}

struct Options {
    /// `security_policy`, `security_mode` keys (both default to None).
    security: &'static str,
    /// `None`: anonymous; `Some((user, password))`.
    user: Option<(&'static str, &'static str)>,
    extra_tags: Vec<String>,
    poll_ms: u64,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            security: "",
            user: None,
            extra_tags: Vec::new(),
            poll_ms: 200,
        }
    }
}

const SIGN_AND_ENCRYPT: &str =
    "security_mode = \"SignAndEncrypt\"\nsecurity_policy = \"Basic256Sha256\"\n";

/// A station loaded the way the agent loads it: a profile file and a config file in a fresh
/// directory under `dir`, through `config::load`.
fn station(dir: &Path, url: &str, options: &Options) -> StationConfig {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let root = dir.join(format!(
        "cfg-{}",
        N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    std::fs::create_dir_all(root.join("profiles")).unwrap();
    let mut profile = "[profile]\nname = \"asyncua_demo\"\nprotocol = \"opcua\"\n".to_owned();
    for (name, ty, _, _) in typed_tags() {
        profile.push_str(&tag(name, ty, &node_of(name)));
    }
    profile.push_str(&tag("tick", "u32", "ns=2;s=Demo.Tick"));
    for extra in &options.extra_tags {
        profile.push_str(extra);
    }
    std::fs::write(root.join("profiles/asyncua_demo.toml"), profile).unwrap();
    let identity = match options.user {
        None => String::new(),
        Some((user, password)) => {
            std::fs::write(root.join("password"), password).unwrap();
            format!("identity = {{ kind = \"username\", user = \"{user}\", password = {{ file = \"password\" }} }}\n")
        }
    };
    let config = format!(
        "[agent]\ngateway_id = \"gw-test\"\nsite = \"lab\"\ndata_dir = \"data\"\nprofiles_dir = \"profiles\"\n\n\
         [[stations]]\nid = \"py-1\"\nprofile = \"asyncua_demo\"\nsource = \"opcua\"\n\
         endpoint_url = \"{url}\"\npoll_interval_ms = {}\ntimeout_ms = 3000\n{}{identity}",
        options.poll_ms, options.security
    );
    let path = root.join("agent.toml");
    std::fs::write(&path, config).unwrap();
    let config = linesentry_agent::config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    config.stations.into_iter().next().unwrap()
}

fn settings(data: &Path, acquisition: Acquisition) -> OpcUaSettings {
    let mut s = OpcUaSettings::new(data, "gw-test");
    s.acquisition = acquisition;
    s.reconnect_initial = Duration::from_millis(200);
    s.reconnect_max = Duration::from_secs(1);
    s.status_interval = Duration::from_secs(60);
    s
}

/// Polls every poll interval until `done` holds for everything collected, or panics after
/// `limit`.
async fn poll_until(
    source: &mut OpcUaSource,
    every: Duration,
    limit: Duration,
    mut done: impl FnMut(&[PollResult]) -> bool,
) -> Vec<PollResult> {
    let deadline = Instant::now() + limit;
    let mut polls = Vec::new();
    loop {
        polls.push(source.poll().await);
        if done(&polls) {
            return polls;
        }
        assert!(
            Instant::now() < deadline,
            "condition not met within {limit:?}; last poll: {:?}",
            polls.last()
        );
        // Paced at the station's poll interval, as the runtime polls: `done` may count polls.
        tokio::time::sleep(every).await;
    }
}

fn values_of<'a>(polls: &'a [PollResult], tag: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
    polls
        .iter()
        .flat_map(|p| &p.readings)
        .filter(move |r| r.tag.as_ref() == tag)
        .map(|r| &r.value)
}

fn errors_mentioning<'a>(polls: &'a [PollResult], what: &'a str) -> Vec<&'a SourceError> {
    polls
        .iter()
        .flat_map(|p| &p.errors)
        .filter(|e| e.to_string().contains(what))
        .collect()
}

/// Every typed tag showed both of its values, each exactly as the server wrote it.
fn saw_both_values_of_every_type(polls: &[PollResult]) -> bool {
    typed_tags().iter().all(|(name, _, a, b)| {
        let seen: Vec<&Value> = values_of(polls, name).collect();
        seen.contains(&a) && seen.contains(&b)
    })
}

fn assert_values_exact(polls: &[PollResult]) {
    for (name, _, a, b) in typed_tags() {
        for v in values_of(polls, name) {
            assert!(
                *v == a || *v == b,
                "{name}: decoded {v:?}, expected {a:?} or {b:?}"
            );
        }
    }
    for r in polls.iter().flat_map(|p| &p.readings) {
        if !r.tag.starts_with('_') {
            assert_eq!(r.quality, Quality::Good, "{r:?}");
            assert!(r.source_time.is_some(), "no source time: {r:?}");
            assert_eq!(r.station_id.as_ref(), "py-1");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polling_reads_decode_every_type_exactly_and_see_the_values_change() {
    let dir = tempfile::tempdir().unwrap();
    let server = PyServer::start(free_port(), &dir.path().join("server-pki"));
    let nan = tag("nan", "f64", "ns=2;s=Demo.NaN");
    let station = station(
        dir.path(),
        &server.url(),
        &Options {
            extra_tags: vec![nan],
            ..Options::default()
        },
    );
    let mut source =
        OpcUaSource::start(&station, settings(dir.path(), Acquisition::Polling)).unwrap();
    let polls = poll_until(
        &mut source,
        Duration::from_millis(150),
        Duration::from_secs(20),
        saw_both_values_of_every_type,
    )
    .await;
    assert_values_exact(&polls);
    let ticks: BTreeSet<u64> = values_of(&polls, "tick")
        .filter_map(|v| match v {
            Value::UInt(u) => Some(*u),
            _ => None,
        })
        .collect();
    assert!(ticks.len() >= 2, "tick did not advance: {ticks:?}");
    // NaN is never a reading; every poll reports it as a decode error.
    assert_eq!(values_of(&polls, "nan").count(), 0);
    let nan_errors = errors_mentioning(&polls, "tag `nan`");
    assert!(!nan_errors.is_empty());
    assert!(nan_errors
        .iter()
        .all(|e| matches!(e, SourceError::Decode { reason, .. } if reason.contains("non-finite"))));
    assert!(polls.iter().any(|p| p.reachable));
    source.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_deliver_every_type_exactly_and_every_change() {
    let dir = tempfile::tempdir().unwrap();
    let server = PyServer::start(free_port(), &dir.path().join("server-pki"));
    let station = station(dir.path(), &server.url(), &Options::default());
    let mut source =
        OpcUaSource::start(&station, settings(dir.path(), Acquisition::Subscription)).unwrap();
    let polls = poll_until(
        &mut source,
        Duration::from_millis(200),
        Duration::from_secs(20),
        |polls| {
            saw_both_values_of_every_type(polls)
                && values_of(polls, "tick")
                    .filter(|v| matches!(v, Value::UInt(_)))
                    .count()
                    >= 4
        },
    )
    .await;
    assert_values_exact(&polls);
    // Every change arrives (the tick counts on by one, none skipped), and between changes
    // each poll still hands over the value the server holds: the subscription delivers
    // changes only, the source keeps the current value, as a Read would return it.
    let ticks: Vec<u64> = values_of(&polls, "tick")
        .filter_map(|v| match v {
            Value::UInt(n) => Some(*n),
            _ => None,
        })
        .collect();
    let mut changes = ticks.clone();
    changes.dedup();
    assert!(changes.windows(2).all(|w| w[1] == w[0] + 1), "{ticks:?}");
    assert!(
        ticks.len() > changes.len(),
        "held values between changes: {ticks:?}"
    );
    let stats = source.stats();
    assert_eq!(stats.subscriptions_created, 1, "{stats:?}");
    assert!(stats.notifications > 0);
    source.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_status_build_info_and_endpoint_security_arrive_as_reserved_readings_and_identity() {
    let dir = tempfile::tempdir().unwrap();
    let server = PyServer::start(free_port(), &dir.path().join("server-pki"));
    let station = station(dir.path(), &server.url(), &Options::default());
    let mut source =
        OpcUaSource::start(&station, settings(dir.path(), Acquisition::Subscription)).unwrap();
    let polls = poll_until(
        &mut source,
        Duration::from_millis(200),
        Duration::from_secs(20),
        |polls| polls.iter().any(|p| p.identity.is_some()),
    )
    .await;
    let with_status = polls.iter().find(|p| p.identity.is_some()).unwrap();
    let identity = with_status.identity.clone().unwrap();
    assert_eq!(identity.vendor.as_deref(), Some("linesentry tests"));
    assert_eq!(identity.revision.as_deref(), Some("9.8.7"));
    assert_eq!(
        identity.product_name.as_deref(),
        Some("asyncua interop server")
    );
    assert_eq!(
        identity.product_code.as_deref(),
        Some("urn:linesentry:test:asyncua:product")
    );
    assert_eq!(identity.application_uri.as_deref(), Some(SERVER_URI));
    assert_eq!(
        identity.certificate_thumbprint.as_deref(),
        Some(server.certificate_thumbprint().as_str())
    );
    let reading = |tag: &str| {
        with_status
            .readings
            .iter()
            .find(|r| r.tag.as_ref() == tag)
            .map(|r| r.value.clone())
    };
    assert_eq!(reading("_server.state"), Some(Value::Int(0)));
    assert_eq!(
        reading("_server.build.software_version"),
        Some(Value::Text("9.8.7".into()))
    );
    assert_eq!(
        reading("_security.best_policy"),
        Some(Value::Text("Basic256Sha256".into()))
    );
    assert_eq!(reading("_security.offers_none"), Some(Value::Bool(true)));
    let Some(Value::Text(start)) = reading("_server.start_time") else {
        panic!("no start time");
    };
    assert!(
        chrono::DateTime::parse_from_rfc3339(&start).is_ok(),
        "{start}"
    );
    // python-asyncua leaves ServerDiagnosticsSummary empty (null values): no reading, no
    // error. The simulator's test checks the counters.
    assert_eq!(reading("_diag.current_session_count"), None);
    source.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_node_is_reported_once_and_skipped_in_both_modes() {
    let dir = tempfile::tempdir().unwrap();
    let server = PyServer::start(free_port(), &dir.path().join("server-pki"));
    for acquisition in [Acquisition::Polling, Acquisition::Subscription] {
        let missing = tag("missing", "u16", "ns=2;s=Demo.DoesNotExist");
        let station = station(
            dir.path(),
            &server.url(),
            &Options {
                extra_tags: vec![missing],
                ..Options::default()
            },
        );
        let mut source = OpcUaSource::start(&station, settings(dir.path(), acquisition)).unwrap();
        let polls = poll_until(
            &mut source,
            Duration::from_millis(150),
            Duration::from_secs(20),
            |polls| polls.len() >= 8 && saw_both_values_of_every_type(polls),
        )
        .await;
        let reports = errors_mentioning(&polls, "tag `missing`");
        assert_eq!(reports.len(), 1, "{acquisition:?}: {reports:?}");
        assert!(
            reports[0].to_string().contains("BadNodeIdUnknown"),
            "{}",
            reports[0]
        );
        assert_eq!(values_of(&polls, "missing").count(), 0);
        assert_values_exact(&polls);
        source.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_is_an_auth_error_and_the_right_one_connects() {
    let dir = tempfile::tempdir().unwrap();
    let server = PyServer::start(free_port(), &dir.path().join("server-pki"));
    let wrong = station(
        dir.path(),
        &server.url(),
        &Options {
            user: Some((USER, "not-the-password")),
            ..Options::default()
        },
    );
    let mut source =
        OpcUaSource::start(&wrong, settings(dir.path(), Acquisition::Polling)).unwrap();
    let polls = poll_until(
        &mut source,
        Duration::from_millis(200),
        Duration::from_secs(30),
        |polls| {
            polls
                .iter()
                .any(|p| p.errors.iter().any(|e| matches!(e, SourceError::Auth(_))))
        },
    )
    .await;
    let poll = polls
        .iter()
        .find(|p| p.errors.iter().any(|e| matches!(e, SourceError::Auth(_))))
        .unwrap();
    assert!(poll.readings.is_empty());
    assert!(poll.reachable, "the server answered: {poll:?}");
    let auth = poll
        .errors
        .iter()
        .find(|e| matches!(e, SourceError::Auth(_)))
        .unwrap();
    assert!(auth.to_string().contains("BadUserAccessDenied"), "{auth}");
    assert!(!auth.to_string().contains("not-the-password"));
    source.close().await;

    let right = station(
        dir.path(),
        &server.url(),
        &Options {
            user: Some((USER, PASSWORD)),
            ..Options::default()
        },
    );
    let mut source =
        OpcUaSource::start(&right, settings(dir.path(), Acquisition::Polling)).unwrap();
    poll_until(
        &mut source,
        Duration::from_millis(200),
        Duration::from_secs(20),
        |polls| values_of(polls, "tick").count() > 0,
    )
    .await;
    source.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_server_certificate_waits_in_rejected_until_trusted_then_the_same_source_connects(
) {
    let dir = tempfile::tempdir().unwrap();
    let server = PyServer::start(free_port(), &dir.path().join("server-pki"));
    let station = station(
        dir.path(),
        &server.url(),
        &Options {
            security: SIGN_AND_ENCRYPT,
            user: Some((USER, PASSWORD)),
            ..Options::default()
        },
    );
    let mut source =
        OpcUaSource::start(&station, settings(dir.path(), Acquisition::Subscription)).unwrap();
    let thumbprint = server.certificate_thumbprint();
    let polls = poll_until(
        &mut source,
        Duration::from_millis(200),
        Duration::from_secs(30),
        |polls| {
            polls.iter().any(|p| {
                p.errors
                    .iter()
                    .any(|e| matches!(e, SourceError::Certificate(_)))
            })
        },
    )
    .await;
    let error = polls
        .iter()
        .flat_map(|p| &p.errors)
        .find(|e| matches!(e, SourceError::Certificate(_)))
        .unwrap()
        .to_string();
    assert!(error.contains(&thumbprint), "{error}");
    assert!(error.contains("rejected"), "{error}");
    assert!(values_of(&polls, "tick").next().is_none());

    let pki = Pki::in_data_dir(dir.path());
    assert!(pki.rejected_path(&thumbprint).is_some());
    let listed = pki.list().unwrap();
    assert!(listed
        .iter()
        .any(|c| c.thumbprint == thumbprint && c.state == CertState::Rejected));

    let trusted = pki.trust(&thumbprint).unwrap();
    assert_eq!(trusted.thumbprint, thumbprint);
    assert!(pki.rejected_path(&thumbprint).is_none());

    let polls = poll_until(
        &mut source,
        Duration::from_millis(200),
        Duration::from_secs(40),
        |polls| values_of(polls, "tick").count() >= 2,
    )
    .await;
    assert_values_exact(&polls);
    assert!(source.is_connected().await);
    source.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_certificate_is_created_once_and_reused_by_every_later_connect() {
    let dir = tempfile::tempdir().unwrap();
    let server = PyServer::start(free_port(), &dir.path().join("server-pki"));
    let pki = Pki::in_data_dir(dir.path());
    let secure = || {
        station(
            dir.path(),
            &server.url(),
            &Options {
                security: SIGN_AND_ENCRYPT,
                ..Options::default()
            },
        )
    };
    let mut own = Vec::new();
    for round in 0..2 {
        let mut s = settings(dir.path(), Acquisition::Polling);
        // The server certificate is accepted on first use here; trust is the other test's.
        s.auto_accept_server_certificates = true;
        let mut source = OpcUaSource::start(&secure(), s).unwrap();
        poll_until(
            &mut source,
            Duration::from_millis(200),
            Duration::from_secs(30),
            |polls| values_of(polls, "tick").count() > 0,
        )
        .await;
        source.close().await;
        own.push((
            std::fs::read(pki.own_certificate_path()).unwrap(),
            std::fs::read(pki.own_private_key_path()).unwrap(),
        ));
        assert_eq!(round + 1, own.len());
    }
    assert_eq!(
        own[0], own[1],
        "the client certificate or key was regenerated"
    );
    let listed = pki.list().unwrap();
    let mine = listed.iter().find(|c| c.state == CertState::Own).unwrap();
    assert!(mine.subject.contains("linesentry gw-test"), "{mine:?}");
    // Auto-accept put the server's certificate in trusted/.
    assert!(listed
        .iter()
        .any(|c| c.thumbprint == server.certificate_thumbprint() && c.state == CertState::Trusted));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_the_server_dropped_silently_is_re_created_by_the_watchdog() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = PyServer::start(free_port(), &dir.path().join("server-pki"));
    let station = station(dir.path(), &server.url(), &Options::default());
    let mut s = settings(dir.path(), Acquisition::Subscription);
    s.keep_alive_count = 2;
    s.watchdog_intervals = 8;
    let mut source = OpcUaSource::start(&station, s).unwrap();
    poll_until(
        &mut source,
        Duration::from_millis(200),
        Duration::from_secs(20),
        |polls| values_of(polls, "tick").count() >= 2,
    )
    .await;
    server.command("drop-subscriptions");
    let polls = poll_until(
        &mut source,
        Duration::from_millis(200),
        Duration::from_secs(30),
        |polls| {
            errors_mentioning(polls, "watchdog").len() == 1
                && polls
                    .iter()
                    .skip_while(|p| !p.errors.iter().any(|e| e.to_string().contains("watchdog")))
                    .skip(1)
                    .flat_map(|p| &p.readings)
                    .filter(|r| r.tag.as_ref() == "tick")
                    .count()
                    >= 2
        },
    )
    .await;
    let stats = source.stats();
    assert_eq!(stats.watchdog_recreations, 1, "{stats:?}");
    assert_eq!(stats.subscriptions_created, 2, "{stats:?}");
    assert_values_exact(&polls);
    source.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_resumes_through_the_same_source_after_the_python_server_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let server_pki = dir.path().join("server-pki");
    let server = PyServer::start(port, &server_pki);
    let station = station(dir.path(), &server.url(), &Options::default());
    let mut source =
        OpcUaSource::start(&station, settings(dir.path(), Acquisition::Subscription)).unwrap();
    poll_until(
        &mut source,
        Duration::from_millis(200),
        Duration::from_secs(20),
        |polls| values_of(polls, "tick").count() >= 2,
    )
    .await;
    server.stop();
    // Outage polls: unreachable, no readings.
    let during = poll_until(
        &mut source,
        Duration::from_millis(200),
        Duration::from_secs(20),
        |polls| polls.iter().any(|p| !p.reachable),
    )
    .await;
    assert!(during.last().unwrap().readings.is_empty());
    let server = PyServer::start(port, &server_pki);
    // The restarted server counts ticks from 1 again: small ticks mean fresh data.
    let polls = poll_until(
        &mut source,
        Duration::from_millis(200),
        Duration::from_secs(60),
        |polls| {
            values_of(polls, "tick")
                .filter(|v| matches!(v, Value::UInt(t) if *t <= 30))
                .count()
                >= 2
                && polls.last().is_some_and(|p| p.reachable)
        },
    )
    .await;
    assert_values_exact(&polls);
    let stats = source.stats();
    // async-opcua's own reconnect brought the session back and re-created the subscription;
    // the watchdog was not needed.
    assert!(
        stats.reconnects >= 1 || stats.sessions_built >= 2,
        "{stats:?}"
    );
    assert_eq!(stats.watchdog_recreations, 0, "{stats:?}");
    assert!(
        polls.iter().any(|p| p.identity.is_some()),
        "status re-read after the restart"
    );
    source.close().await;
    drop(server);
}

/// Log lines written through a `tracing` subscriber, kept for assertions.
#[derive(Clone, Default)]
struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starting_an_opc_ua_station_logs_no_endpoint_config_warning() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("opc.tcp://127.0.0.1:{}/linesentry/", free_port());
    let captured = Captured::default();
    let subscriber = || {
        let writer = captured.clone();
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish()
    };
    for security in ["", SIGN_AND_ENCRYPT] {
        let station = station(
            dir.path(),
            &url,
            &Options {
                security,
                ..Options::default()
            },
        );
        let source = tracing::subscriber::with_default(subscriber(), || {
            tracing::warn!("capture works");
            OpcUaSource::start(&station, settings(dir.path(), Acquisition::Subscription))
        })
        .unwrap();
        source.close().await;
    }
    let text = captured.text();
    assert!(text.contains("capture works"), "{text}");
    assert!(!text.contains("contains no endpoints"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tag_whose_type_does_not_fit_its_nodes_data_type_is_reported_once_and_skipped_in_both_modes(
) {
    let dir = tempfile::tempdir().unwrap();
    let server = PyServer::start(free_port(), &dir.path().join("server-pki"));
    let wrong = [
        ("double_as_bool", "bool", "Demo.Double", "Double"),
        ("string_as_u16", "u16", "Demo.String", "String"),
        ("int32_as_u16", "u16", "Demo.Int32", "Int32"),
    ];
    // Widenings that keep every value: accepted.
    let fitting = [
        ("double_as_f32", "f32", "Demo.Double"),
        ("uint16_as_u32", "u32", "Demo.UInt16"),
        ("int16_as_f64", "f64", "Demo.Int16"),
    ];
    let mut extra_tags: Vec<String> = wrong
        .iter()
        .map(|(name, ty, node, _)| tag(name, ty, &format!("ns=2;s={node}")))
        .collect();
    extra_tags.extend(
        fitting
            .iter()
            .map(|(name, ty, node)| tag(name, ty, &format!("ns=2;s={node}"))),
    );
    for acquisition in [Acquisition::Polling, Acquisition::Subscription] {
        let station = station(
            dir.path(),
            &server.url(),
            &Options {
                extra_tags: extra_tags.clone(),
                ..Options::default()
            },
        );
        let mut source = OpcUaSource::start(&station, settings(dir.path(), acquisition)).unwrap();
        let polls = poll_until(
            &mut source,
            Duration::from_millis(150),
            Duration::from_secs(20),
            |polls| {
                polls.len() >= 8
                    && saw_both_values_of_every_type(polls)
                    && fitting
                        .iter()
                        .all(|(name, _, _)| values_of(polls, name).count() >= 2)
            },
        )
        .await;
        for (name, declared, _, node_type) in wrong {
            let what = format!("tag `{name}`");
            let reports = errors_mentioning(&polls, &what);
            assert_eq!(reports.len(), 1, "{acquisition:?} {name}: {reports:?}");
            let text = reports[0].to_string();
            for part in [
                "station `py-1`".to_owned(),
                format!("DataType is {node_type}"),
                format!("declares type `{declared}`"),
                "skipped".to_owned(),
            ] {
                assert!(
                    text.contains(&part),
                    "{acquisition:?}: `{part}` not in {text}"
                );
            }
            assert_eq!(
                values_of(&polls, name).count(),
                0,
                "{acquisition:?}: {name} read despite its type"
            );
        }
        assert!(
            values_of(&polls, "double_as_f32").all(|v| matches!(v, Value::Float(_))),
            "{acquisition:?}"
        );
        assert_values_exact(&polls);
        source.close().await;
    }
}
