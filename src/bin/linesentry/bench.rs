//! `linesentry bench queue`: the durable queue measured against raw redb in the same run.
//!
//! 1. raw redb: fixed-size records, `--group` per durable transaction, one thread;
//! 2. queue append, confirmed: many tasks appending single events, and a few appending
//!    batches, as the station tasks do;
//! 3. queue ack: acknowledging the backlog in chunks, as forwarders do;
//! 4. append confirmation latency at a paced `--rate` (events/s), p50 / p99 / max.
//!
//! Every figure is printed with its ratio to the raw baseline, which is what to compare
//! across machines: this one is shared and noisy.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Subcommand;

#[path = "bench_forward.rs"]
mod forward;
#[path = "bench_poll.rs"]
mod poll;
use linesentry_agent::buffer::{
    bench::raw_redb_append, record_len, Ack, Commit, Queue, QueueOptions, DEFAULT_CACHE_BYTES,
    DEFAULT_ROUTINE_COMMIT,
};
use linesentry_event::{EventType, SecurityEvent, Severity};

#[derive(Debug, Subcommand)]
pub(crate) enum BenchCommand {
    /// Queue append/ack throughput and latency vs raw redb.
    Queue {
        /// Events per throughput measurement.
        #[arg(long, default_value_t = 300_000)]
        events: u64,
        /// Records per durable transaction for the raw baseline.
        #[arg(long, default_value_t = 1000)]
        group: u64,
        /// Paced rate for the latency measurement, events/s.
        #[arg(long, default_value_t = 10_000)]
        rate: u64,
        /// Seconds of paced appends.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Directory for the bench files (default: a temporary directory).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// The agent's `buffer.cache_mib`: redb's page cache of the queue (not of the raw
        /// baseline, which is redb's default).
        #[arg(long, default_value_t = (DEFAULT_CACHE_BYTES >> 20) as u64)]
        cache_mib: u64,
        /// The agent's `buffer.routine_commit_ms`. The throughput phases submit each call as
        /// station tasks do (routine when nothing in it is warn or above); 0 commits every
        /// call at once. The latency phase always commits at once (`Queue::append`).
        #[arg(long, default_value_t = DEFAULT_ROUTINE_COMMIT.as_millis() as u64)]
        routine_commit_ms: u64,
    },
    /// The agent polling simulated Modbus TCP stations (served by a child process):
    /// achieved reads vs requested, CPU and memory of the agent process.
    Poll {
        #[arg(long, default_value_t = 10)]
        stations: u16,
        /// Registers per station (u16 measurements, contiguous).
        #[arg(long, default_value_t = 100)]
        registers: u16,
        #[arg(long, default_value_t = 100)]
        interval_ms: u64,
        #[arg(long, default_value_t = 60)]
        seconds: u64,
        /// Tag role of the registers: `measurement` (reported by exception, 1 % deadband)
        /// or `counter` (checked every poll, reported only when it goes backwards).
        #[arg(long, default_value = "measurement")]
        role: String,
        /// The agent's `buffer.commit_linger_ms`.
        #[arg(long, default_value_t = 0)]
        commit_linger_ms: u64,
        /// The agent's `buffer.routine_commit_ms` (default: the config default).
        #[arg(long)]
        routine_commit_ms: Option<u64>,
        /// The agent's `buffer.cache_mib`.
        #[arg(long, default_value_t = 2)]
        cache_mib: u64,
        /// Tokio worker threads of the agent's runtime (`linesentry run` uses 2).
        #[arg(long, default_value_t = 2)]
        worker_threads: usize,
    },
    /// The MQTT forwarder against a local Mosquitto (spawned unless `--broker` is given):
    /// throughput at 1 and 100 events per message vs the sink alone, backlog drain with live
    /// events, and append -> PUBACK latency.
    Forward {
        /// host:port of a running broker (default: spawn `mosquitto` on a free port).
        #[arg(long)]
        broker: Option<String>,
        /// Events per throughput run.
        #[arg(long, default_value_t = 200_000)]
        events: u64,
        /// Backlog drained while live events arrive.
        #[arg(long, default_value_t = 1_000_000)]
        backlog: u64,
        /// The forwarder's replay rate for the backlog (the config default).
        #[arg(long, default_value_t = 25_000)]
        replay_rate: u32,
        /// Run only these parts (a: throughput, b: backlog drain, c: latency); all by default.
        #[arg(long, value_delimiter = ',', default_values_t = ['a', 'b', 'c'])]
        only: Vec<char>,
        /// Events per message for part (a).
        #[arg(long, value_delimiter = ',', default_values_t = [1usize, 100])]
        per_message: Vec<usize>,
    },
    /// Child of `bench poll`: serves the stations, prints their addresses, stops when stdin
    /// closes.
    #[command(hide = true)]
    PollServe {
        #[arg(long)]
        profile: PathBuf,
        #[arg(long)]
        stations: u16,
    },
    /// Readings per second the rules evaluate on one core, all rules on, for the shipped
    /// profile mix (see docs/BENCHMARKS.md).
    Rules {
        /// Agent config whose stations give the profile mix.
        #[arg(long, default_value = "config/demo.toml")]
        config: PathBuf,
        /// Polls per station.
        #[arg(long, default_value_t = 20_000)]
        polls: u64,
    },
}

/// What `bench queue` measures.
#[derive(Debug, Clone, Copy)]
struct QueueRun {
    events: u64,
    group: u64,
    rate: u64,
    seconds: u64,
    cache_bytes: usize,
    routine_commit: Duration,
}

pub(crate) fn run(command: BenchCommand) -> ExitCode {
    let (run, dir) = match command {
        BenchCommand::Queue {
            events,
            group,
            rate,
            seconds,
            dir,
            cache_mib,
            routine_commit_ms,
        } => (
            QueueRun {
                events,
                group,
                rate,
                seconds,
                cache_bytes: usize::try_from(cache_mib << 20).unwrap_or(usize::MAX),
                routine_commit: Duration::from_millis(routine_commit_ms),
            },
            dir,
        ),
        BenchCommand::Rules { config, polls } => return rules_bench(&config, polls),
        BenchCommand::Poll {
            stations,
            registers,
            interval_ms,
            seconds,
            role,
            commit_linger_ms,
            routine_commit_ms,
            cache_mib,
            worker_threads,
        } => {
            return poll::run(&poll::Options {
                stations,
                registers,
                interval_ms,
                seconds,
                role,
                linger_ms: commit_linger_ms,
                routine_commit_ms,
                cache_mib,
                worker_threads,
            })
        }
        BenchCommand::PollServe { profile, stations } => return poll::serve(&profile, stations),
        BenchCommand::Forward {
            broker,
            events,
            backlog,
            replay_rate,
            only,
            per_message,
        } => {
            let parts = forward::Parts { only, per_message };
            return forward::run(broker, events, backlog, replay_rate, &parts);
        }
    };
    let tmp = match dir {
        Some(d) => {
            if let Err(e) = std::fs::create_dir_all(&d) {
                eprintln!("bench: cannot create {}: {e}", d.display());
                return ExitCode::FAILURE;
            }
            tempfile::TempDir::new_in(d)
        }
        None => tempfile::TempDir::new(),
    };
    let tmp = match tmp {
        Ok(t) => t,
        Err(e) => {
            eprintln!("bench: no temporary directory: {e}");
            return ExitCode::FAILURE;
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("bench: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(queue_bench(tmp.path().to_path_buf(), run)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench: {e}");
            ExitCode::FAILURE
        }
    }
}

/// An event whose stored record is about 300 bytes, like a typical rules event.
fn sample_event(n: u64) -> SecurityEvent {
    SecurityEvent::new("gw-bench-01", EventType::SetpointChanged)
        .severity(if n % 10 == 0 {
            Severity::Warn
        } else {
            Severity::Info
        })
        .station("reflow-oven-01")
        .data("tag", "zone3_setpoint")
        .data("value", 245.5)
        .data("previous", 235.0)
        .data("unit", "degC")
        .data("attack", vec!["T0836"])
        .data("n", n)
        .data("pad", "x".repeat(96))
        .context("source", "rules")
}

fn per_sec(n: u64, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64().max(1e-9)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// A new queue with the agent's options as `run` sets them.
fn fresh_queue(dir: &std::path::Path, name: &str, run: QueueRun) -> Result<Queue, String> {
    let opts = QueueOptions {
        quota_bytes: 4 << 30,
        cache_bytes: run.cache_bytes,
        routine_commit: run.routine_commit,
        ..QueueOptions::new(dir.join(name), "gw-bench-01")
    };
    Queue::open(opts).map(|(q, _)| q).map_err(|e| e.to_string())
}

/// Appends `total` events from `tasks` concurrent tasks, `per_call` per call, each call
/// submitted as a station task submits it (routine unless it holds a warning) and counted
/// once confirmed. Events come from a pre-built pool, so the figure is the queue's cost, not
/// the cost of making events.
async fn append_concurrently(
    q: &Queue,
    pool: &Arc<Vec<SecurityEvent>>,
    total: u64,
    tasks: u64,
    per_call: u64,
) -> Result<Duration, String> {
    let started = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    let calls_per_task = total / tasks / per_call;
    for t in 0..tasks {
        let q = q.clone();
        let pool = pool.clone();
        set.spawn(async move {
            for c in 0..calls_per_task {
                let start = ((t * calls_per_task + c) * per_call) as usize
                    % (pool.len() - per_call as usize);
                let events = &pool[start..start + per_call as usize];
                q.submit(events, None, Commit::for_events(events))
                    .await
                    .map_err(|e| e.to_string())?
                    .await
                    .map_err(|e| e.to_string())?;
            }
            Ok::<(), String>(())
        });
    }
    while let Some(r) = set.join_next().await {
        r.map_err(|e| e.to_string())??;
    }
    Ok(started.elapsed())
}

async fn raw_rate(dir: &std::path::Path, events: u64, group: u64) -> Result<f64, String> {
    let d = dir.to_path_buf();
    let elapsed = tokio::task::spawn_blocking(move || raw_redb_append(&d, events, 300, group))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    Ok(per_sec(events, elapsed))
}

async fn queue_bench(dir: PathBuf, run: QueueRun) -> Result<(), String> {
    let QueueRun { events, group, .. } = run;
    let record = record_len(&sample_event(0)).map_err(|e| e.to_string())?;
    let json = sample_event(0).to_json().len();
    println!(
        "linesentry bench queue: {events} events; stored record {record} bytes (JSON form {json}); raw baseline 300-byte records"
    );
    println!(
        "queue options: cache {} MiB, routine commit {} ms (raw redb: its defaults)",
        run.cache_bytes >> 20,
        run.routine_commit.as_millis()
    );

    let pool: Arc<Vec<SecurityEvent>> = Arc::new((0..4096).map(sample_event).collect());
    // CPU cost of turning an event into a record (done by the caller, on the runtime).
    let started = Instant::now();
    let mut bytes = 0usize;
    for i in 0..events as usize {
        bytes += record_len(&pool[i % pool.len()]).map_err(|e| e.to_string())?;
    }
    let encode = per_sec(events, started.elapsed());
    println!(
        "record encoding alone, one core:          {encode:>10.0} events/s ({} MB)",
        bytes >> 20
    );
    // The raw baseline runs before and after the queue runs; its mean is the reference.
    let raw_first = raw_rate(&dir, events, group).await?;
    println!("raw redb, {group} records per durable commit (run 1): {raw_first:>10.0} events/s");

    let q = fresh_queue(&dir, "single", run)?;
    let t = append_concurrently(&q, &pool, events, 1024, 1).await?;
    let single = per_sec(events, t);
    let single_commits = q.stats().commits;

    let started = Instant::now();
    let depth = q.stats().depth;
    let mut acked = 0;
    while acked < depth {
        let up_to = (acked + 1000).min(depth);
        q.ack(Ack::UpTo(up_to)).await.map_err(|e| e.to_string())?;
        acked = up_to;
    }
    let ack_rate = per_sec(depth, started.elapsed());
    q.close().await;

    let q = fresh_queue(&dir, "batched", run)?;
    let t = append_concurrently(&q, &pool, events, 16, 64).await?;
    let batched = per_sec(events, t);
    let batched_commits = q.stats().commits;
    q.close().await;

    let raw_second = raw_rate(&dir, events, group).await?;
    println!("raw redb, {group} records per durable commit (run 2): {raw_second:>10.0} events/s");
    let raw = f64::midpoint(raw_first, raw_second);
    println!(
        "queue append, 1024 tasks x 1 event/call:  {single:>10.0} events/s  {:>4.0} % of raw  ({:.0} events/commit)",
        single / raw * 100.0,
        events as f64 / single_commits.max(1) as f64
    );
    println!(
        "queue append, 16 tasks x 64 events/call:  {batched:>10.0} events/s  {:>4.0} % of raw  ({:.0} events/commit)",
        batched / raw * 100.0,
        events as f64 / batched_commits.max(1) as f64
    );
    println!(
        "queue ack, 1,000 per call:                {ack_rate:>10.0} events/s  {:>4.0} % of raw",
        ack_rate / raw * 100.0
    );

    paced_latency(&dir, run).await
}

/// Paced latency: one append per event, issued on schedule whatever the previous one does,
/// each committed at once (`Queue::append`), timed from call to confirmation.
async fn paced_latency(dir: &std::path::Path, run: QueueRun) -> Result<(), String> {
    let QueueRun { rate, seconds, .. } = run;
    let q = fresh_queue(dir, "latency", run)?;
    let total = rate * seconds;
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let latencies = Arc::new(std::sync::Mutex::new(Vec::with_capacity(total as usize)));
    let mut set = tokio::task::JoinSet::new();
    let start = tokio::time::Instant::now();
    for n in 0..total {
        // Issue in ticks of 1 ms to stay on schedule without a timer per event.
        let due = start + interval.mul_f64(n as f64);
        if due > tokio::time::Instant::now() + Duration::from_millis(1) {
            tokio::time::sleep_until(due).await;
        }
        let q = q.clone();
        let latencies = latencies.clone();
        set.spawn(async move {
            let t0 = Instant::now();
            let r = q.append(std::slice::from_ref(&sample_event(n))).await;
            if r.is_ok() {
                if let Ok(mut l) = latencies.lock() {
                    l.push(t0.elapsed());
                }
            }
            r.map(|_| ()).map_err(|e| e.to_string())
        });
        while set.try_join_next().is_some() {}
    }
    while let Some(r) = set.join_next().await {
        r.map_err(|e| e.to_string())??;
    }
    let achieved = per_sec(total, start.elapsed());
    let mut l = latencies.lock().map_err(|e| e.to_string())?.clone();
    l.sort_unstable();
    println!(
        "append latency at {rate} events/s (achieved {achieved:.0}): p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms, {} commits",
        percentile(&l, 0.50).as_secs_f64() * 1e3,
        percentile(&l, 0.99).as_secs_f64() * 1e3,
        l.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
        q.stats().commits
    );
    q.close().await;
    Ok(())
}

/// Rules throughput: every station of the config gets its profile's rules and a generator
/// producing normal production with the demo scenario; readings are generated outside the
/// timed section, poll by poll, and only `observe` is timed.
fn rules_bench(config: &std::path::Path, polls: u64) -> ExitCode {
    use linesentry_agent::rules::StationRules;
    use linesentry_agent::runtime::rule_tags;
    use linesentry_agent::source::generator::Generator;
    use linesentry_agent::source::PollResult;
    use linesentry_event::Timestamp;

    let config = match linesentry_agent::config::load(config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let severities = Arc::new(config.severity.clone());
    let mut stations: Vec<(StationRules, Generator)> = config
        .stations
        .iter()
        .enumerate()
        .map(|(i, st)| {
            let rules = StationRules::new(
                Arc::from("gw-bench-01"),
                Arc::from(st.id.as_str()),
                severities.clone(),
                rule_tags(&st.profile),
            )
            .with_settings(st.rule_settings());
            (rules, Generator::new(&st.id, &st.profile, i as u64 + 1))
        })
        .collect();
    let mut readings = 0u64;
    let mut events = 0u64;
    let mut timed = Duration::ZERO;
    let start = Timestamp::now().as_micros();
    for n in 0..polls {
        // 100 ms of simulated time per poll: hours of production in a few seconds.
        let now = Timestamp::from_micros(start + i64::try_from(n).unwrap_or(0) * 100_000);
        for (rules, generator) in &mut stations {
            let poll = PollResult {
                readings: generator.sample(now),
                reachable: true,
                ..PollResult::default()
            };
            let t0 = Instant::now();
            let out = rules.observe(&poll, now);
            timed += t0.elapsed();
            readings += poll.readings.len() as u64;
            events += out.len() as u64;
        }
    }
    println!(
        "rules: {} stations, {readings} readings, {events} events, {:.0} readings/s on one core ({:.0} ns/reading)",
        stations.len(),
        per_sec(readings, timed),
        timed.as_nanos() as f64 / readings.max(1) as f64
    );
    ExitCode::SUCCESS
}
