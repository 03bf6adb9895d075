//! OPC UA restart stress: a server is stopped and started again many times at random
//! intervals, sometimes with a new application certificate, while two threads keep both
//! cores busy. Two agent sources watch it through the rules, as station tasks do (one
//! subscribed, one polling, a poll every 200 ms, the default reconnect settings).
//!
//! After every restart each source must deliver fresh data (a value the restarted server
//! stamped after it started) or raise an event that says why not, and read the server's
//! status again (`device.restarted`). While the server is down, no poll may say the station
//! is reachable. Every new certificate must be reported as an `identity.changed` naming its
//! thumbprint; over a secure channel the source also refuses it (`cert.invalid`) until an
//! operator trusts it.
//!
//! Two servers: the independent python-asyncua peer (`asyncua_server.py`, SignAndEncrypt with
//! a password) and this crate's simulator (async-opcua, security None, where only endpoint
//! discovery can see a swapped certificate). The python server is restarted either as a new
//! process or inside its process, as python-asyncua does it: its shutdown closes the open
//! connections first and the listener last, so an agent that reconnects at once can land on
//! the stopping instance and keep a connection to it, served by a server that no longer
//! runs (or, while Python waits for that connection, by the old instance with values nobody
//! writes), while the new instance serves the address. That is how a reconnect could report
//! a session before the server was back and then deliver nothing.
//!
//! `LINESENTRY_STRESS_RESTARTS` sets the restarts per server (default 6; seed 42's first six
//! include in-process restarts with and without a new certificate), `LINESENTRY_STRESS_SEED` the timeline (default 42, a number,
//! or `random`; printed with every failure).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use linesentry_agent::runtime::rules_for;
use linesentry_agent::source::opcua::{Acquisition, OpcUaSettings, OpcUaSource, Pki};
use linesentry_agent::source::StationConfig;
use linesentry_event::{SecurityEvent, Timestamp};
use linesentry_sim::opcua::{self as sim_opcua, OpcUaSim, OpcUaSimOptions};
use linesentry_sim::SimOptions;
use linesentry_testkit::PythonPeer;

const GATEWAY: &str = "gw-stress";
const POLL: Duration = Duration::from_millis(200);
/// How long a restarted server has to show up in a source's data (or in an event saying why
/// not): the agent's reconnect backoff after the longest outage here, plus a loaded machine.
const RECOVERY: Duration = Duration::from_secs(45);
/// After a stop, the time a source may still call the station reachable: a subscription
/// is heard for its watchdog limit (15 publishing intervals of 200 ms) after its last
/// notification, plus a poll under way.
const NOTICE: Duration = Duration::from_millis(3500);

/// A small deterministic generator (SplitMix64): the timeline of a seed is reproducible.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn millis(&mut self, from: u64, to: u64) -> Duration {
        Duration::from_millis(from + self.next() % (to - from))
    }

    fn one_in(&mut self, n: u64) -> bool {
        self.next() % n == 0
    }
}

/// The timeline's seed: `LINESENTRY_STRESS_SEED` (a number, or `random`), else 42, a
/// timeline that reproduced the finding (a reconnect onto a server stopping in its process).
fn seed() -> u64 {
    match std::env::var("LINESENTRY_STRESS_SEED").ok().as_deref() {
        Some("random") => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64),
        Some(n) => n
            .parse()
            .unwrap_or_else(|_| panic!("LINESENTRY_STRESS_SEED={n}: not a number")),
        None => 42,
    }
}

/// Logs to the test output when `RUST_LOG` is set (`RUST_LOG=linesentry_agent=info`).
fn init_logs() {
    if let Ok(filter) = std::env::var("RUST_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_test_writer()
            .try_init();
    }
}

/// Restarts per server: `LINESENTRY_STRESS_RESTARTS`, else `default`.
fn restarts(default: usize) -> usize {
    std::env::var("LINESENTRY_STRESS_RESTARTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// Two threads that keep both cores busy until dropped.
struct Load(Arc<AtomicBool>, Vec<std::thread::JoinHandle<()>>);

impl Load {
    fn start() -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..2)
            .map(|_| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::hint::spin_loop();
                    }
                })
            })
            .collect();
        Self(stop, threads)
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
        for t in self.1.drain(..) {
            let _ = t.join();
        }
    }
}

/// The server under test.
enum Server {
    /// The python peer: restarted in its process (its `stop` / `start` commands, as
    /// python-asyncua restarts a server), or as a new process after a kill.
    Python {
        peer: Option<PythonPeer>,
        port: u16,
        pki: PathBuf,
    },
    Sim(OpcUaSim),
}

/// How a server goes down and comes back.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Restart {
    /// The server stops and starts again inside its process, its shutdown taking this long
    /// between closing the connections and closing the listener (a client that reconnects
    /// at once in between keeps a connection to the stopped server).
    InProcess(Duration),
    /// The process is killed and a new one started.
    Process,
}

impl Server {
    fn python(dir: &Path) -> Self {
        let mut server = Self::Python {
            peer: None,
            port: linesentry_testkit::free_port(),
            pki: dir.join("server-pki"),
        };
        server.spawn_python();
        server
    }

    fn spawn_python(&mut self) {
        let Self::Python { peer, port, pki } = self else {
            return;
        };
        *peer = Some(PythonPeer::start(
            "asyncua_server.py",
            [port.to_string().as_ref(), pki.as_os_str()],
            "READY",
            Duration::from_secs(60),
        ));
    }

    /// Sends a command to the python peer and waits for its answer; true when the peer
    /// said meanwhile that it holds a connection accepted while stopping.
    fn python_command(&mut self, command: &str, answer: &str) -> bool {
        let Self::Python {
            peer: Some(peer), ..
        } = self
        else {
            panic!("no python peer to send {command:?} to");
        };
        peer.command(command);
        let mut holding = false;
        let answered = peer.wait_for_line(Duration::from_secs(60), |l| {
            holding |= l.starts_with("HOLDING");
            l == answer
        });
        assert!(
            answered.is_some(),
            "the python peer did not answer {command:?} with {answer:?}"
        );
        holding
    }

    async fn sim(dir: &Path) -> Self {
        let profile =
            linesentry_sim::load_profile(&Path::new(repo!()).join("devices/cell_controller.toml"))
                .unwrap_or_else(|e| panic!("{e}"));
        let options = SimOptions {
            tick: Duration::from_millis(100),
            ..SimOptions::default()
        };
        let sim = sim_opcua::start(
            profile,
            &options,
            &OpcUaSimOptions::new(dir.join("sim-pki")),
        )
        .await
        .expect("start the simulator");
        Self::Sim(sim)
    }

    fn url(&self) -> String {
        match self {
            Self::Python { port, .. } => format!("opc.tcp://127.0.0.1:{port}/linesentry/"),
            Self::Sim(sim) => sim.endpoint_url(),
        }
    }

    /// The server's certificate (DER) and private key files.
    fn certificate_files(&self) -> [PathBuf; 2] {
        match self {
            Self::Python { pki, .. } => [pki.join("server_cert.der"), pki.join("server_key.pem")],
            Self::Sim(sim) => {
                let pki = Pki::new(sim.pki_dir());
                [pki.own_certificate_path(), pki.own_private_key_path()]
            }
        }
    }

    /// Stops the server; true when a connection accepted while stopping is still served
    /// by the stopped instance.
    async fn stop(&mut self, how: Restart) -> bool {
        match self {
            Self::Python { peer, .. } => match how {
                Restart::InProcess(linger) => {
                    self.python_command(&format!("stop {}", linger.as_secs_f64()), "STOPPED")
                }
                Restart::Process => {
                    if let Some(peer) = peer.take() {
                        peer.stop();
                    }
                    false
                }
            },
            Self::Sim(sim) => {
                sim.stop_server().await;
                false
            }
        }
    }

    /// Starts the server again on its port; with `new_certificate` it makes itself a new key
    /// and certificate first, as a replaced or re-imaged device would.
    async fn start(&mut self, how: Restart, new_certificate: bool) {
        let in_process = matches!(self, Self::Python { peer: Some(_), .. })
            && matches!(how, Restart::InProcess(_));
        if new_certificate && !in_process {
            for file in self.certificate_files() {
                std::fs::remove_file(&file)
                    .unwrap_or_else(|e| panic!("remove {}: {e}", file.display()));
            }
        }
        match self {
            Self::Python { .. } if in_process => {
                let command = if new_certificate {
                    "start new-certificate"
                } else {
                    "start"
                };
                self.python_command(command, "STARTED");
            }
            Self::Python { .. } => self.spawn_python(),
            Self::Sim(sim) => sim.start_server().await.expect("restart the simulator"),
        }
    }

    /// The SHA-1 thumbprint of the server's certificate now.
    fn thumbprint(&self, scratch: &Path) -> String {
        let [cert, _] = self.certificate_files();
        let pki = Pki::new(scratch.join(format!("scratch-{}", rand_suffix())));
        pki.trust(&cert.to_string_lossy())
            .expect("read the server certificate")
            .thumbprint
    }
}

fn rand_suffix() -> u64 {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// What one poll said, as far as these checks need it.
#[derive(Debug, Clone)]
struct Polled {
    started: Instant,
    reachable: bool,
    /// The newest source timestamp of the watched tag in this poll.
    newest: Option<Timestamp>,
    errors: Vec<String>,
    events: Vec<SecurityEvent>,
}

/// A source and its rules polled every 200 ms on a task of its own; what each poll said is
/// kept for the checks.
struct Watcher {
    mode: &'static str,
    log: Arc<Mutex<Vec<Polled>>>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Watcher {
    fn start(station: &StationConfig, data: &Path, acquisition: Acquisition, tag: &str) -> Self {
        let mode = match acquisition {
            Acquisition::Subscription => "subscription",
            Acquisition::Polling => "polling",
        };
        let mut settings = OpcUaSettings::new(data, GATEWAY);
        settings.acquisition = acquisition;
        // Status and endpoints are checked every 5 s rather than 30: the rounds stay short.
        settings.status_interval = Duration::from_secs(5);
        let mut source = OpcUaSource::start(station, settings).expect("start the OPC UA source");
        let mut rules = rules_for(GATEWAY, station);
        let log = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (task_log, task_stop, tag) = (log.clone(), stop.clone(), tag.to_owned());
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(POLL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            while !task_stop.load(Ordering::Relaxed) {
                tick.tick().await;
                let started = Instant::now();
                let poll = source.poll().await;
                let events = rules.observe(&poll, Timestamp::now());
                let newest = poll
                    .readings
                    .iter()
                    .filter(|r| r.tag.as_ref() == tag)
                    .filter_map(|r| r.source_time)
                    .max();
                task_log.lock().unwrap().push(Polled {
                    started,
                    reachable: poll.reachable,
                    newest,
                    errors: poll.errors.iter().map(ToString::to_string).collect(),
                    events,
                });
            }
            source.close().await;
        });
        Self {
            mode,
            log,
            stop,
            task,
        }
    }

    fn since(&self, from: Instant) -> Vec<Polled> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|p| p.started >= from)
            .cloned()
            .collect()
    }

    fn events_since(&self, from: Instant) -> Vec<SecurityEvent> {
        self.since(from)
            .into_iter()
            .flat_map(|p| p.events)
            .collect()
    }

    /// Whether a poll since `from` carried a value the server stamped after `after`.
    fn fresh_since(&self, from: Instant, after: Timestamp) -> bool {
        self.since(from)
            .iter()
            .any(|p| p.reachable && p.newest.is_some_and(|t| t > after))
    }

    /// When the data last moved on: the start of the last poll that carried a value stamped
    /// later than every value before it.
    fn last_progress(&self) -> Option<Instant> {
        let log = self.log.lock().unwrap();
        let mut newest = None;
        let mut at = None;
        for p in log.iter().filter(|p| p.reachable) {
            if p.newest.is_some() && p.newest > newest {
                newest = p.newest;
                at = Some(p.started);
            }
        }
        at
    }

    async fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = tokio::time::timeout(Duration::from_secs(30), self.task).await;
    }
}

fn of<'a>(events: &'a [SecurityEvent], kind: &str) -> impl Iterator<Item = &'a SecurityEvent> {
    let kind = kind.to_owned();
    events.iter().filter(move |e| e.event_type == kind)
}

fn names_thumbprint(e: &SecurityEvent, thumbprint: &str) -> bool {
    e.event_data
        .get("changes")
        .and_then(|c| c.get("certificate_thumbprint"))
        .and_then(|c| c.get("value"))
        .and_then(|v| v.as_str())
        .is_some_and(|v| v.eq_ignore_ascii_case(thumbprint))
}

/// A station of `profile` at `url` with `extra` keys, loaded like the agent's config.
fn station(
    dir: &Path,
    profile: &str,
    profiles_dir: &Path,
    url: &str,
    extra: &str,
) -> StationConfig {
    std::fs::write(dir.join("password"), "s3cret-op").expect("password file");
    let config = format!(
        "[agent]\ngateway_id = \"{GATEWAY}\"\nsite = \"lab\"\ndata_dir = \"data\"\nprofiles_dir = {:?}\n\n\
         [[stations]]\nid = \"st-1\"\nprofile = \"{profile}\"\nsource = \"opcua\"\n\
         endpoint_url = \"{url}\"\npoll_interval_ms = 200\ntimeout_ms = 3000\n{extra}",
        profiles_dir.display().to_string()
    );
    let path = dir.join("agent.toml");
    std::fs::write(&path, config).expect("config");
    linesentry_agent::config::load(&path)
        .unwrap_or_else(|e| panic!("{e}"))
        .stations
        .remove(0)
}

/// The python server's profile: its ticking counter and one of its alternating values.
const PYTHON_PROFILE: &str = r#"
[profile]
name = "asyncua_stress"
protocol = "opcua"

[[tags]]
name = "tick"
role = "measurement"
type = "u32"
node_id = "ns=2;s=Demo.Tick"
stale_after_s = 3

[[tags]]
name = "int32"
role = "measurement"
type = "i32"
node_id = "ns=2;s=Demo.Int32"
"#;

/// No poll that began once the stop could have been noticed says the station is reachable.
fn check_down(watchers: &[Watcher], round: usize, stopped: Instant, findings: &mut Findings) {
    for w in watchers {
        for p in w.since(stopped + NOTICE) {
            findings.check(!p.reachable, || {
                format!(
                    "round {round} ({}): a poll {:?} after the stop says reachable; errors {:?}",
                    w.mode,
                    p.started - stopped,
                    p.errors
                )
            });
        }
    }
}

/// Waits up to [`RECOVERY`] until every source delivered a value stamped after `after` in
/// a poll since `from` (or `excused` says it need not); true when they all did.
async fn all_fresh(
    watchers: &[Watcher],
    (from, after): (Instant, Timestamp),
    excused: impl Fn(&Watcher) -> bool,
) -> bool {
    linesentry_testkit::wait_until_async(RECOVERY, async || {
        watchers
            .iter()
            .all(|w| w.fresh_since(from, after) || excused(w))
            .then_some(())
    })
    .await
    .is_some()
}

/// A new certificate over a secure channel: every source refuses it (`cert.invalid`), then
/// the operator trusts it.
async fn refused_then_trusted(
    watchers: &[Watcher],
    server: &Server,
    pki: &Pki,
    (round, stopped, thumbprint): (usize, Instant, &str),
    findings: &mut Findings,
) {
    let refused = linesentry_testkit::wait_until_async(RECOVERY, async || {
        watchers
            .iter()
            .all(|w| {
                of(&w.events_since(stopped), "cert.invalid")
                    .next()
                    .is_some()
            })
            .then_some(())
    })
    .await;
    findings.check(refused.is_some(), || {
        format!("round {round}: the new certificate {thumbprint} was not refused by every source")
    });
    let [cert, _] = server.certificate_files();
    pki.trust(&cert.to_string_lossy())
        .expect("trust the new certificate");
}

/// What one restart was, for the checks after it.
struct Round<'a> {
    number: usize,
    stopped: Instant,
    restarted: Instant,
    started_at: Timestamp,
    new_certificate: bool,
    thumbprint: &'a str,
}

/// After a restart: fresh data (or frozen values reported so, where `frozen_and_said`), the
/// status read again (`device.restarted`), and a new certificate reported by its thumbprint.
async fn check_recovered(
    w: &Watcher,
    r: &Round<'_>,
    frozen_and_said: bool,
    findings: &mut Findings,
) {
    let round = r.number;
    let events = w.events_since(r.stopped);
    let fresh = w.fresh_since(r.restarted, r.started_at);
    let explained: Vec<&str> = events
        .iter()
        .filter(|e| {
            matches!(
                e.event_type.as_str(),
                "device.unreachable" | "cert.invalid" | "auth.failed" | "value.stale"
            )
        })
        .map(|e| e.event_type.as_str())
        .collect();
    findings.check(fresh || frozen_and_said, || {
        format!(
            "round {round} ({}): no fresh data within {RECOVERY:?} of the restart; events since the stop explain: {explained:?}; last errors: {:?}",
            w.mode,
            w.since(r.restarted).last().map(|p| p.errors.clone())
        )
    });
    if !fresh {
        return;
    }
    // The status was read again: the new start time is a restart.
    let status = linesentry_testkit::wait_until_async(Duration::from_secs(10), async || {
        of(&w.events_since(r.stopped), "device.restarted")
            .next()
            .map(|_| ())
    })
    .await;
    findings.check(status.is_some(), || {
        format!(
            "round {round} ({}): data resumed but no device.restarted",
            w.mode
        )
    });
    if r.new_certificate {
        let reported = linesentry_testkit::wait_until_async(Duration::from_secs(10), async || {
            of(&w.events_since(r.stopped), "identity.changed")
                .any(|e| names_thumbprint(e, r.thumbprint))
                .then_some(())
        })
        .await;
        findings.check(reported.is_some(), || {
            format!(
                "round {round} ({}): certificate {} in use and never reported; events since the stop: {:?}",
                w.mode,
                r.thumbprint,
                w.events_since(r.stopped).iter().map(|e| e.event_type.clone()).collect::<Vec<_>>()
            )
        });
    }
}

/// What went wrong in one run, every finding at once.
#[derive(Default)]
struct Findings(Vec<String>);

impl Findings {
    fn check(&mut self, ok: bool, what: impl FnOnce() -> String) {
        if !ok {
            self.0.push(what());
        }
    }
}

/// Runs `restarts` restarts of `server` under load, with one subscribed and one polling
/// source; `secure` sources refuse a new certificate until it is trusted.
async fn stress(
    dir: &Path,
    mut server: Server,
    station: StationConfig,
    (tag, secure, rounds): (&str, bool, usize),
) {
    init_logs();
    let seed = seed();
    let mut rng = Rng(seed);
    let data = dir.join("data");
    let pki = Pki::in_data_dir(&data);
    if secure {
        let [cert, _] = server.certificate_files();
        pki.trust(&cert.to_string_lossy())
            .expect("trust the server certificate");
    }
    let watchers = [
        Watcher::start(&station, &data, Acquisition::Subscription, tag),
        Watcher::start(&station, &data, Acquisition::Polling, tag),
    ];
    let _load = Load::start();
    let mut findings = Findings::default();
    let mut timeline = Vec::new();

    // Data first: both sources see the server's values.
    let begin = Timestamp::now();
    let t0 = Instant::now();
    let up = all_fresh(&watchers, (t0, begin), |_| false).await;
    assert!(up, "no data from {} before the first restart", server.url());

    for round in 1..=rounds {
        tokio::time::sleep(rng.millis(1000, 5000)).await;
        let down_for = rng.millis(200, 8000);
        let new_certificate = rng.one_in(3);
        let how = if rng.one_in(3) {
            Restart::Process
        } else {
            Restart::InProcess(rng.millis(0, 2000))
        };
        let held = server.stop(how).await;
        let stopped = Instant::now();
        tokio::time::sleep(down_for).await;
        // While nothing serves, no poll that began after the stop was noticed is reachable.
        // (A server stopped in its process may keep serving a connection, frozen: the agent
        // must find that out and reach the new instance, which the checks after the restart
        // see.)
        if !matches!(how, Restart::InProcess(_)) || matches!(server, Server::Sim(_)) {
            check_down(&watchers, round, stopped, &mut findings);
        }
        server.start(how, new_certificate).await;
        let started_at = Timestamp::now();
        let restarted = Instant::now();
        let thumbprint = server.thumbprint(dir);

        if new_certificate && secure {
            refused_then_trusted(
                &watchers,
                &server,
                &pki,
                (round, stopped, &thumbprint),
                &mut findings,
            )
            .await;
        }

        // Fresh data from the restarted server, in both modes; or, where the stopped
        // instance keeps serving this connection with the same certificate (the agent cannot
        // tell it from a device whose values stand still), those values reported frozen:
        // a `value.stale` since the data last moved on (the episode may have begun in an
        // earlier round and still be open).
        let frozen_and_said = |w: &Watcher| {
            matches!(how, Restart::InProcess(_))
                && !new_certificate
                && w.last_progress()
                    .is_some_and(|since| of(&w.events_since(since), "value.stale").next().is_some())
        };
        // Waits for both; the checks below say which did not make it.
        all_fresh(&watchers, (restarted, started_at), frozen_and_said).await;
        let line = format!(
            "round {round}: {how:?}, down {down_for:?}, new certificate {new_certificate}, connection held {held}: data again after {:?}",
            restarted.elapsed()
        );
        eprintln!("{line}");
        timeline.push(line);
        let facts = Round {
            number: round,
            stopped,
            restarted,
            started_at,
            new_certificate,
            thumbprint: &thumbprint,
        };
        for w in &watchers {
            check_recovered(w, &facts, frozen_and_said(w), &mut findings).await;
        }
    }
    for w in watchers {
        w.stop().await;
    }
    server.stop(Restart::Process).await;
    assert!(
        findings.0.is_empty(),
        "seed {seed} (LINESENTRY_STRESS_SEED={seed} reproduces the timeline):\n{}\n\ntimeline:\n{}",
        findings.0.join("\n"),
        timeline.join("\n")
    );
    eprintln!("seed {seed}: {rounds} restarts, all checks passed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_server_restarting_at_random_with_new_certificates_is_always_explained() {
    let dir = tempfile::tempdir().expect("tempdir");
    let profiles = dir.path().join("profiles");
    std::fs::create_dir_all(&profiles).expect("profiles dir");
    std::fs::write(profiles.join("asyncua_stress.toml"), PYTHON_PROFILE).expect("profile");
    let server = Server::python(dir.path());
    let station = station(
        dir.path(),
        "asyncua_stress",
        &profiles,
        &server.url(),
        "security_mode = \"SignAndEncrypt\"\nsecurity_policy = \"Basic256Sha256\"\n\
         identity = { kind = \"username\", user = \"operator\", password = { file = \"password\" } }\n",
    );
    stress(dir.path(), server, station, ("tick", true, restarts(6))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_simulator_restarting_at_random_with_new_certificates_is_always_explained() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::sim(dir.path()).await;
    let station = station(
        dir.path(),
        "cell_controller",
        &Path::new(repo!()).join("devices"),
        &server.url(),
        "",
    );
    stress(
        dir.path(),
        server,
        station,
        ("screw_torque", false, restarts(6)),
    )
    .await;
}
