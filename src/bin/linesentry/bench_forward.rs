//! `linesentry bench forward`: the MQTT forwarder against a local Mosquitto, in one run.
//!
//! Baseline: the same MQTT sink publishing the same signed messages straight from memory
//! (no queue reads, no acks in redb): what this broker and client take on this machine.
//! Then, through the real path queue -> forwarder -> broker -> PUBACK -> ack:
//! (a) sustained throughput of a prefilled backlog, at 1 and at 100 events per message;
//! (b) a 1,000,000-event telemetry backlog drained while 1,000 warn events/s keep arriving,
//!     with the time each live event waited from its append to its PUBACK;
//! (c) append -> PUBACK latency at a paced 1,000 events/s, p50 / p99 / max.
//!
//! The broker is spawned by the bench (`mosquitto` on a free loopback port, its own config
//! in a temp dir, no persistence), unless `--broker host:port` names one. (a) runs twice when
//! the bench spawns the broker: against Mosquitto's defaults and with `set_tcp_nodelay true`.

use std::net::TcpListener;
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use linesentry_agent::buffer::{Queue, QueueOptions};
use linesentry_agent::forward::mqtt::{GatewayInfo, MqttSink};
use linesentry_agent::forward::mqtt::{MqttProtocol, MqttSettings};
use linesentry_agent::forward::{
    ForwardOptions, Forwarder, Pacing, PushFuture, Pushed, SendFuture, Sink, SinkError,
};
use linesentry_event::integrity::BatchSigner;
use linesentry_event::{EventType, SecurityEvent, Severity};
use tokio_util::sync::CancellationToken;

const GATEWAY: &str = "gw-bench";

struct Broker {
    child: Option<Child>,
    _dir: tempfile::TempDir,
    port: u16,
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// `nodelay`: the broker's `set_tcp_nodelay` (Mosquitto's default is off, so its small
/// PUBACK segments wait behind Nagle's algorithm for the client's delayed ACK).
fn spawn_broker(nodelay: bool) -> Result<Broker, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| e.to_string())?
        .port();
    let user = Command::new("id")
        .arg("-un")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    let conf = dir.path().join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!(
            "user {user}\nlistener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n\
             max_inflight_messages 0\nmax_queued_messages 0\nlog_dest stderr\nlog_type error\n\
             set_tcp_nodelay {nodelay}\n"
        ),
    )
    .map_err(|e| e.to_string())?;
    let child = Command::new(mosquitto_binary())
        .arg("-c")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start mosquitto (Debian package mosquitto): {e}"))?;
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            return Err("mosquitto did not start listening".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(Broker {
        child: Some(child),
        _dir: dir,
        port,
    })
}

fn settings(host: &str, port: u16, per_message: usize) -> MqttSettings {
    MqttSettings {
        host: host.into(),
        port,
        client_id: format!("{GATEWAY}-{}", fastrand::u32(..)),
        tls: None,
        username: None,
        password: None,
        topic_prefix: "linesentry/v1".into(),
        events_per_message: per_message,
        max_packet_bytes: 1 << 20,
        protocol: MqttProtocol::V311,
        keep_alive: Duration::from_secs(30),
        ack_timeout: Duration::from_secs(30),
        inflight: 1000,
    }
}

fn sink(host: &str, port: u16, per_message: usize) -> MqttSink {
    let signer = BatchSigner::new(GATEWAY, ed25519_dalek::SigningKey::from_bytes(&[7u8; 32]));
    let info = GatewayInfo {
        site: "bench".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        config_digest: String::new(),
    };
    // Without TLS files nothing can fail here.
    MqttSink::new(settings(host, port, per_message), signer, info).expect("plain MQTT sink")
}

fn event(n: u64, severity: Severity) -> SecurityEvent {
    SecurityEvent::new(GATEWAY, EventType::EquipmentStatus)
        .severity(severity)
        .station("press-01")
        .data("tag", "status")
        .data("value", "RUNNING")
        .data("n", n)
        .context("source", "bench")
}

/// Wraps the real sink and notes when each seq was confirmed.
struct Timed<S> {
    inner: S,
    confirmed: Arc<Mutex<Vec<(u64, Instant)>>>,
}

impl<S: Sink> Sink for Timed<S> {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    fn send<'a>(&'a mut self, batch: &'a [SecurityEvent]) -> SendFuture<'a> {
        Box::pin(async move {
            let r = self.inner.send(batch).await;
            let now = Instant::now();
            if r.is_ok() {
                let mut c = self.confirmed.lock().expect("bench lock");
                c.extend(batch.iter().map(|e| (e.seq, now)));
            }
            r
        })
    }

    fn push<'a>(&'a mut self, batch: &'a [SecurityEvent]) -> PushFuture<'a> {
        Box::pin(async move {
            let r = self.inner.push(batch).await;
            self.note(&r);
            r
        })
    }

    fn flush(&mut self) -> PushFuture<'_> {
        Box::pin(async move {
            let r = self.inner.flush().await;
            self.note(&r);
            r
        })
    }
}

impl<S> Timed<S> {
    fn note(&self, r: &Result<Pushed, SinkError>) {
        let now = Instant::now();
        let seqs = match r {
            Ok(p) => &p.confirmed[..],
            Err(e) => e.delivered(),
        };
        let mut c = self.confirmed.lock().expect("bench lock");
        c.extend(seqs.iter().map(|&s| (s, now)));
    }
}

fn options(rate: u32) -> ForwardOptions {
    ForwardOptions {
        pacing: Pacing {
            batch_events: 2000,
            replay_events_per_second: rate,
            replay_jitter: Duration::ZERO,
            ..Pacing::default()
        },
        ..ForwardOptions::new(GATEWAY)
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

async fn fill(q: &Queue, n: u64, severity: Severity) -> Result<(), String> {
    let mut i = 0;
    while i < n {
        let chunk: Vec<_> = (i..(i + 4000).min(n)).map(|k| event(k, severity)).collect();
        q.append(&chunk).await.map_err(|e| e.to_string())?;
        i += chunk.len() as u64;
    }
    Ok(())
}

/// Baseline: the sink alone, from memory, `n` events in batches of 2000.
async fn baseline(host: &str, port: u16, per_message: usize, n: u64) -> Result<f64, String> {
    let mut s = sink(host, port, per_message);
    let batch: Vec<SecurityEvent> = (0..2000u64)
        .map(|k| {
            let mut e = event(k, Severity::Info);
            e.seq = k + 1;
            e
        })
        .collect();
    s.send(&batch[..1]).await.map_err(|e| e.to_string())?; // connect
    let start = Instant::now();
    let mut sent = 0;
    // Pipelined, as the forwarder sends: the next batch goes out while the last one's
    // PUBACKs are on their way.
    while sent < n {
        s.push(&batch).await.map_err(|e| e.to_string())?;
        sent += batch.len() as u64;
    }
    s.flush().await.map_err(|e| e.to_string())?;
    let rate = sent as f64 / start.elapsed().as_secs_f64();
    s.close().await;
    Ok(rate)
}

/// (a): a prefilled backlog of `n` drained through queue, forwarder and broker.
async fn sustained(
    dir: &std::path::Path,
    host: &str,
    port: u16,
    per_message: usize,
    n: u64,
) -> Result<f64, String> {
    let (q, _) = Queue::open(QueueOptions::new(dir, GATEWAY)).map_err(|e| e.to_string())?;
    fill(&q, n, Severity::Info).await?;
    let shutdown = CancellationToken::new();
    let start = Instant::now();
    let task = tokio::spawn(
        Forwarder::new(
            q.clone(),
            sink(host, port, per_message),
            options(10_000_000),
        )
        .run(shutdown.clone(), Duration::from_secs(1)),
    );
    while q.stats().depth > 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let rate = n as f64 / start.elapsed().as_secs_f64();
    shutdown.cancel();
    let _ = task.await;
    q.close().await;
    Ok(rate)
}

/// (b): `backlog` telemetry drained while `live_rate` warn events/s arrive.
async fn drain_with_live(
    dir: &std::path::Path,
    host: &str,
    port: u16,
    backlog: u64,
    live_rate: u64,
    replay_rate: u32,
) -> Result<(Duration, Vec<Duration>), String> {
    let opts = QueueOptions {
        quota_bytes: 2 << 30,
        ..QueueOptions::new(dir, GATEWAY)
    };
    let (q, _) = Queue::open(opts).map_err(|e| e.to_string())?;
    fill(&q, backlog, Severity::Info).await?;
    let confirmed = Arc::new(Mutex::new(Vec::new()));
    let timed = Timed {
        inner: sink(host, port, 100),
        confirmed: confirmed.clone(),
    };
    let shutdown = CancellationToken::new();
    let start = Instant::now();
    let task = tokio::spawn(
        Forwarder::new(q.clone(), timed, options(replay_rate))
            .run(shutdown.clone(), Duration::from_secs(1)),
    );
    let mut appended: Vec<(u64, Instant)> = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / live_rate.max(1)));
    let mut n = 0;
    let mut drained = None;
    loop {
        tick.tick().await;
        let at = Instant::now();
        let seqs = q
            .append(&[event(n, Severity::Warn)])
            .await
            .map_err(|e| e.to_string())?;
        appended.push((seqs[0], at));
        n += 1;
        if drained.is_none() && n % 100 == 0 {
            let left = q.stats().depth;
            if left < 50 {
                drained = Some(start.elapsed());
            }
        }
        if drained.is_some() || start.elapsed() > Duration::from_secs(600) {
            break;
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    shutdown.cancel();
    let _ = task.await;
    q.close().await;
    let confirmed: std::collections::HashMap<u64, Instant> = confirmed
        .lock()
        .map_err(|e| e.to_string())?
        .iter()
        .copied()
        .collect();
    let mut waits: Vec<Duration> = appended
        .iter()
        .filter_map(|(seq, at)| confirmed.get(seq).map(|c| c.duration_since(*at)))
        .collect();
    waits.sort_unstable();
    Ok((drained.unwrap_or_else(|| start.elapsed()), waits))
}

/// (c): append -> PUBACK at a paced `rate`.
async fn paced_latency(
    dir: &std::path::Path,
    host: &str,
    port: u16,
    rate: u64,
    seconds: u64,
) -> Result<Vec<Duration>, String> {
    let (q, _) = Queue::open(QueueOptions::new(dir, GATEWAY)).map_err(|e| e.to_string())?;
    let confirmed = Arc::new(Mutex::new(Vec::new()));
    let timed = Timed {
        inner: sink(host, port, 100),
        confirmed: confirmed.clone(),
    };
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(
        Forwarder::new(q.clone(), timed, options(10_000_000))
            .run(shutdown.clone(), Duration::from_secs(1)),
    );
    let mut appended = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / rate.max(1)));
    for n in 0..rate * seconds {
        tick.tick().await;
        let at = Instant::now();
        let seqs = q
            .append(&[event(n, Severity::Info)])
            .await
            .map_err(|e| e.to_string())?;
        appended.push((seqs[0], at));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    shutdown.cancel();
    let _ = task.await;
    q.close().await;
    let confirmed: std::collections::HashMap<u64, Instant> = confirmed
        .lock()
        .map_err(|e| e.to_string())?
        .iter()
        .copied()
        .collect();
    let mut lat: Vec<Duration> = appended
        .iter()
        .filter_map(|(seq, at)| confirmed.get(seq).map(|c| c.duration_since(*at)))
        .collect();
    lat.sort_unstable();
    Ok(lat)
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

/// Which parts of the bench run.
pub(super) struct Parts {
    pub(super) only: Vec<char>,
    pub(super) per_message: Vec<usize>,
}

pub(super) fn run(
    broker: Option<String>,
    events: u64,
    backlog: u64,
    replay_rate: u32,
    parts: &Parts,
) -> ExitCode {
    if let Some(bad) = parts.only.iter().find(|p| !matches!(p, 'a' | 'b' | 'c')) {
        eprintln!("bench forward: --only takes a, b and c, got `{bad}`");
        return ExitCode::FAILURE;
    }
    if parts.per_message.contains(&0) {
        eprintln!("bench forward: --per-message must be at least 1");
        return ExitCode::FAILURE;
    }
    let mut spawned: Vec<Broker> = Vec::new();
    // With a spawned broker, (a) also runs against a second one with `set_tcp_nodelay true`.
    let mut tuned: Option<u16> = None;
    let (host, port) = match broker {
        Some(addr) => {
            let parsed = addr
                .rsplit_once(':')
                .and_then(|(h, p)| Some((h.to_owned(), p.parse().ok()?)));
            let Some(hp) = parsed else {
                eprintln!("bench forward: --broker must be host:port, got `{addr}`");
                return ExitCode::FAILURE;
            };
            hp
        }
        None => match spawn_broker(false).and_then(|b| Ok((b, spawn_broker(true)?))) {
            Ok((b, t)) => {
                let port = b.port;
                if parts.only.contains(&'a') {
                    tuned = Some(t.port);
                }
                spawned.extend([b, t]);
                ("127.0.0.1".to_owned(), port)
            }
            Err(e) => {
                eprintln!("bench forward: {e}");
                return ExitCode::FAILURE;
            }
        },
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("bench forward: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result: Result<(), String> = rt.block_on(async {
        println!("broker: {host}:{port}; events per throughput run: {events}");
        let runs = if parts.only.contains(&'a') { parts.per_message.as_slice() } else { &[] };
        let brokers = std::iter::once((port, "broker defaults"))
            .chain(tuned.map(|p| (p, "broker set_tcp_nodelay true")));
        for (port, label) in brokers {
            for &per_message in runs {
                let base = baseline(&host, port, per_message, events).await?;
                let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
                let full = sustained(dir.path(), &host, port, per_message, events).await?;
                println!(
                    "(a) {per_message:>3} events/message, {label}: sink alone {base:>9.0} events/s; queue -> broker -> PUBACK -> ack {full:>9.0} events/s ({:.0} % of the sink alone)",
                    full / base * 100.0
                );
            }
        }
        if parts.only.contains(&'b') {
            let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
            let (took, waits) = drain_with_live(dir.path(), &host, port, backlog, 1000, replay_rate).await?;
            println!(
                "(b) backlog {backlog} at replay rate {replay_rate}/s with 1000 live warn events/s: drained in {:.1} s; live events append -> PUBACK p50 {} p99 {} max {} ({} live events)",
                took.as_secs_f64(),
                ms(percentile(&waits, 0.5)),
                ms(percentile(&waits, 0.99)),
                ms(waits.last().copied().unwrap_or_default()),
                waits.len()
            );
        }
        if parts.only.contains(&'c') {
            let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
            let lat = paced_latency(dir.path(), &host, port, 1000, 10).await?;
            println!(
                "(c) append -> PUBACK at 1000 events/s: p50 {} p99 {} max {} ({} events)",
                ms(percentile(&lat, 0.5)),
                ms(percentile(&lat, 0.99)),
                ms(lat.last().copied().unwrap_or_default()),
                lat.len()
            );
        }
        Ok(())
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench forward: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Debian installs the broker in /usr/sbin, which is not on every user's PATH.
fn mosquitto_binary() -> &'static str {
    if std::path::Path::new("/usr/sbin/mosquitto").exists() {
        "/usr/sbin/mosquitto"
    } else {
        "mosquitto"
    }
}
