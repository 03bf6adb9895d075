//! `linesentry-collector bench`: the collector measured against raw PostgreSQL, in one run,
//! on private servers (a durable PostgreSQL cluster, a Mosquitto broker) on loopback ports.
//!
//! 1. **Raw insert limit**: 1,000-row `unnest` inserts into `security_events` with all its
//!    indexes, on one connection and on `--workers` connections at once (the best is the
//!    reference).
//! 2. **Collector ingest**: signed, chained batches of `--batch` events from `--gateways`
//!    gateways published with QoS 1 at the broker as fast as it takes them; the time from the
//!    first publish to the last event committed (the collector's own counter), with every
//!    check the collector makes: signatures, chains, rollups, alert rules, PUBACK after commit.
//! 3. **Queries on `--query-rows` rows**: filtered `GET /api/v1/events` and
//!    `GET /api/v1/stats` through the collector's HTTP API; p50/p95 per request shape.
//! 4. **Live stream latency**: one event per message published at `--ws-rate` events/s;
//!    each event carries its publish time; a WebSocket client records the time of receipt.
//!    Measured once the server has finished the maintenance the bulk loads left it
//!    (`settle`), or with `--ws-after-burst` right after them. Runs of late events (stalls)
//!    and what PostgreSQL logged meanwhile (slow statements, autovacuum, checkpoints) are
//!    printed, so a stall can be placed in the collector or in the server.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use chrono::{DateTime, Utc};
use ed25519_dalek::SigningKey;
use futures_util::{SinkExt as _, StreamExt as _};
use linesentry_collector::config;
use linesentry_collector::db::{DbOptions, Pool};
use linesentry_collector::maintenance::add_months;
use linesentry_collector::{auth, migrate, registry, Collector};
use linesentry_common::local::{LocalMosquitto, LocalPostgres, MosquittoOptions, PostgresOptions};
use linesentry_event::integrity::{event_hash, hex, BatchSigner, EventHash};
use linesentry_event::{EventType, SecurityEvent, Severity, Timestamp};
use serde_json::{json, Value};
use uuid::Uuid;

#[derive(Debug, clap::Args)]
pub(crate) struct BenchArgs {
    /// Events for the raw and the collector ingest measurements.
    #[arg(long, default_value_t = 200_000)]
    events: usize,
    /// Events per MQTT message (one signed batch).
    #[arg(long, default_value_t = 100)]
    batch: usize,
    #[arg(long, default_value_t = 8)]
    gateways: usize,
    /// Collector ingest workers, and connections of the raw measurement.
    #[arg(long, default_value_t = 4)]
    workers: usize,
    /// Rows in the table the queries run on (0: skip the query measurements).
    #[arg(long, default_value_t = 1_000_000)]
    query_rows: usize,
    /// Requests per query shape.
    #[arg(long, default_value_t = 200)]
    queries: usize,
    #[arg(long, default_value_t = 1000)]
    ws_rate: u64,
    /// Seconds of the stream latency measurement (0: skip it).
    #[arg(long, default_value_t = 20)]
    ws_seconds: u64,
    /// Measure the stream right after the ingest burst, while PostgreSQL still vacuums and
    /// writes back what the earlier steps loaded (by default the bench lets the server
    /// settle first: VACUUM ANALYZE and CHECKPOINT).
    #[arg(long)]
    ws_after_burst: bool,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

const RAW_INSERT: &str = "INSERT INTO security_events (id, event_type, event_data, context, \"timestamp\", \
     correlation_id, user_id, source_ip, severity, processed, gateway_id, station_id, seq, prev_hash, verification) \
     SELECT * FROM unnest($1::uuid[], $2::text[], $3::jsonb[], $4::jsonb[], $5::timestamptz[], $6::uuid[], \
     $7::text[], $8::inet[], $9::text[], $10::bool[], $11::text[], $12::text[], $13::int8[], $14::text[], $15::text[]) \
     ON CONFLICT DO NOTHING";

/// The first six are the ingest mix (telemetry and changes, no alert rule fires on them);
/// the query table has all ten.
const TYPES: &[(EventType, Severity)] = &[
    (EventType::EquipmentStatus, Severity::Info),
    (EventType::EquipmentMeasurement, Severity::Debug),
    (EventType::QualityCheck, Severity::Info),
    (EventType::SetpointChanged, Severity::Warn),
    (EventType::ModeChanged, Severity::Warn),
    (EventType::DeviceUnreachable, Severity::Warn),
    (EventType::AuthFailed, Severity::Warn),
    (EventType::ProgramChanged, Severity::Error),
    (EventType::AlarmSuppressed, Severity::Error),
    (EventType::IdentityChanged, Severity::Critical),
];

/// splitmix64: spreads timestamps evenly whatever the row numbers.
fn mix(i: u64) -> u64 {
    let mut z = i.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Synthetic rows: varied types, gateways, stations, users and data, timestamps spread
/// over `span` before now. `types` rows of [`TYPES`] are used in turn.
fn synthetic(n: usize, offset: usize, span: chrono::Duration, types: usize) -> Vec<SecurityEvent> {
    let now = Utc::now();
    let span_us = span.num_microseconds().unwrap_or(1).max(1);
    (0..n)
        .map(|k| {
            let i = offset + k;
            let (t, sev) = TYPES[i % types];
            let back = i64::try_from(mix(i as u64) % span_us.unsigned_abs()).unwrap_or(0);
            let ts = Timestamp::from_micros(now.timestamp_micros() - back);
            let mut e = SecurityEvent::new(format!("gw-{:02}", i % 20), t)
                .severity(sev)
                .at(ts)
                .station(format!("st-{}", (i / 20) % 10))
                .data("tag", format!("tag-{}", i % 50))
                .data("value", (i % 1000) as f64 / 10.0)
                .context("source", "bench");
            if t == EventType::AuthFailed {
                e.user_id = Some(format!("user-{}", i % 30));
                e.source_ip = Some(
                    format!("10.0.{}.{}", i % 4, i % 200)
                        .parse()
                        .unwrap_or(std::net::IpAddr::from([10, 0, 0, 1])),
                );
            }
            e.seq = i as u64 + 1;
            e
        })
        .collect()
}

async fn raw_insert(pool: &Pool, events: &[SecurityEvent]) -> anyhow::Result<()> {
    let mut conn = pool.get().await?;
    let stmt = conn.prepared(RAW_INSERT).await?;
    let col = |f: &dyn Fn(&SecurityEvent) -> Value| events.iter().map(f).collect::<Vec<_>>();
    let ids: Vec<Uuid> = events.iter().map(|e| e.id).collect();
    let types: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
    let data = col(&|e| Value::Object(e.event_data.clone()));
    let ctx = col(&|e| Value::Object(e.context.clone()));
    let ts: Vec<DateTime<Utc>> = events.iter().map(|e| e.timestamp.to_datetime()).collect();
    let corr: Vec<Option<Uuid>> = events.iter().map(|e| e.correlation_id).collect();
    let users: Vec<Option<&str>> = events.iter().map(|e| e.user_id.as_deref()).collect();
    let ips: Vec<Option<std::net::IpAddr>> = events.iter().map(|e| e.source_ip).collect();
    let sev: Vec<&str> = events.iter().map(|e| e.severity.as_str()).collect();
    let processed: Vec<bool> = vec![true; events.len()];
    let gws: Vec<&str> = events.iter().map(|e| e.gateway_id.as_str()).collect();
    let stations: Vec<Option<&str>> = events.iter().map(|e| e.station_id.as_deref()).collect();
    let seqs: Vec<i64> = events
        .iter()
        .map(|e| i64::try_from(e.seq).unwrap_or(0))
        .collect();
    let prev: Vec<Option<&str>> = events.iter().map(|e| e.prev_hash.as_deref()).collect();
    let ver: Vec<&str> = vec!["verified"; events.len()];
    conn.client
        .execute(
            &stmt,
            &[
                &ids, &types, &data, &ctx, &ts, &corr, &users, &ips, &sev, &processed, &gws,
                &stations, &seqs, &prev, &ver,
            ],
        )
        .await?;
    Ok(())
}

/// Inserts `events` in 1,000-row statements on `connections` connections; events/s.
async fn raw_rate(
    pool: &Pool,
    events: Arc<Vec<SecurityEvent>>,
    connections: usize,
) -> anyhow::Result<f64> {
    let next = Arc::new(AtomicU64::new(0));
    let chunks = events.len().div_ceil(1000);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let (pool, events, next) = (pool.clone(), Arc::clone(&events), Arc::clone(&next));
        tasks.push(tokio::spawn(async move {
            loop {
                let c = usize::try_from(next.fetch_add(1, Ordering::Relaxed)).unwrap_or(usize::MAX);
                if c >= chunks {
                    return Ok::<_, anyhow::Error>(());
                }
                let end = ((c + 1) * 1000).min(events.len());
                raw_insert(&pool, &events[c * 1000..end]).await?;
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(events.len() as f64 / started.elapsed().as_secs_f64())
}

async fn fresh_db(
    pg: &LocalPostgres,
    name: &str,
    pool_size: usize,
) -> anyhow::Result<(String, Pool)> {
    linesentry_collector::db::create_database(&pg.url("postgres"), name).await?;
    let url = pg.url(name);
    let pool = Pool::new(&DbOptions {
        url: url.clone(),
        password: None,
        pool_size,
        connect_timeout: Duration::from_secs(10),
        statement_timeout: Duration::from_secs(600),
        tls: linesentry_collector::db::DbTls::disabled(),
    })?;
    migrate::migrate(&pool).await?;
    let today = Utc::now().date_naive();
    let month = chrono::NaiveDate::from_ymd_opt(
        chrono::Datelike::year(&today),
        chrono::Datelike::month(&today),
        1,
    )
    .context("date")?;
    let conn = pool.get().await?;
    for back in -1..=2 {
        conn.client
            .execute(
                "SELECT linesentry_ensure_month($1)",
                &[&add_months(month, -back)],
            )
            .await?;
    }
    Ok((url, pool))
}

fn collector_settings(
    db_url: &str,
    mqtt_port: u16,
    workers: usize,
) -> anyhow::Result<config::Settings> {
    let text = format!(
        "[collector]\nid = \"bench-collector\"\n[database]\nurl = \"{db_url}\"\npool_size = {}\n\
         [ingest]\nworkers = {workers}\n[http]\nlisten = \"127.0.0.1:0\"\nplain = true\n\
         [mqtt]\nhost = \"127.0.0.1\"\nport = {mqtt_port}\nclient_id = \"bench-collector\"\nplain = true\n\
         [stream]\nclient_queue = 100000\n",
        workers + 8
    );
    config::parse(
        &text,
        std::path::Path::new("bench.toml"),
        std::path::Path::new("."),
    )
    .map_err(|e| anyhow::anyhow!("{e}"))
}

/// A QoS 1 publisher with up to 1,000 messages in flight.
struct Publisher {
    client: rumqttc::AsyncClient,
    task: tokio::task::JoinHandle<()>,
}

impl Publisher {
    async fn connect(port: u16, id: &str) -> anyhow::Result<Self> {
        let mut opts = rumqttc::MqttOptions::new(id, "127.0.0.1", port);
        opts.set_keep_alive(Duration::from_secs(30))
            .set_inflight(1000)
            .set_max_packet_size(16 << 20, 16 << 20);
        let (client, mut eventloop) = rumqttc::AsyncClient::new(opts, 10_000);
        let (tx, rx) = tokio::sync::oneshot::channel();
        let mut ready = Some(tx);
        let task = tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_))) => {
                        if let Some(tx) = ready.take() {
                            let _ = tx.send(());
                        }
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(10), rx).await??;
        Ok(Self { client, task })
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A gateway's chain for the generator.
struct Gen {
    signer: BatchSigner,
    seq: u64,
    last: Option<EventHash>,
}

impl Gen {
    fn link(&mut self, mut e: SecurityEvent) -> SecurityEvent {
        self.seq += 1;
        self.signer.gateway_id().clone_into(&mut e.gateway_id);
        e.seq = self.seq;
        e.prev_hash = self.last.map(|h| hex(&h));
        self.last = Some(event_hash(&e));
        e
    }
}

async fn gateways(pool: &Pool, n: usize, tag: &str) -> anyhow::Result<Vec<Gen>> {
    let mut out = Vec::new();
    for g in 0..n {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|e| anyhow::anyhow!("{e}"))?;
        let key = SigningKey::from_bytes(&seed);
        let id = format!("{tag}-{g:02}");
        registry::add_gateway(pool, &id, &key.verifying_key(), None, None).await?;
        out.push(Gen {
            signer: BatchSigner::new(id, key),
            seq: 0,
            last: None,
        });
    }
    Ok(out)
}

async fn wait_inserted(
    collector: &Collector,
    want: u64,
    limit: Duration,
) -> anyhow::Result<Instant> {
    let counters = collector.counters();
    let deadline = Instant::now() + limit;
    loop {
        if counters.events_inserted.load(Ordering::Relaxed) >= want {
            return Ok(Instant::now());
        }
        if Instant::now() > deadline {
            bail!(
                "only {} of {want} events committed after {limit:?}",
                counters.events_inserted.load(Ordering::Relaxed)
            );
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[allow(clippy::too_many_lines)]
pub(crate) async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    eprintln!("bench: starting a durable PostgreSQL and a Mosquitto on loopback ports");
    let pg = LocalPostgres::start(&PostgresOptions {
        durable: true,
        settings: vec![
            ("shared_buffers".into(), "512MB".into()),
            ("max_wal_size".into(), "8GB".into()),
            ("checkpoint_timeout".into(), "30min".into()),
            // What the server did while the stream was measured (printed after it).
            ("log_min_duration_statement".into(), "100".into()),
            ("log_autovacuum_min_duration".into(), "0".into()),
            ("log_checkpoints".into(), "on".into()),
            ("log_lock_waits".into(), "on".into()),
            ("log_line_prefix".into(), "%m [%p] ".into()),
        ],
        tls: None,
    })?;
    let broker = LocalMosquitto::start(&MosquittoOptions {
        max_inflight_messages: 1000,
        max_queued_messages: 1_000_000,
        ..MosquittoOptions::default()
    })?;
    let mut report: Vec<(String, String)> = Vec::new();

    // 1. Raw insert limit.
    let (_, raw_pool) = fresh_db(&pg, "bench_raw", args.workers + 2).await?;
    let one = Arc::new(synthetic(args.events, 0, chrono::Duration::hours(1), 6));
    let rate_one = raw_rate(&raw_pool, Arc::clone(&one), 1).await?;
    let many = Arc::new(synthetic(
        args.events,
        args.events,
        chrono::Duration::hours(1),
        6,
    ));
    let rate_many = raw_rate(&raw_pool, many, args.workers).await?;
    let raw = rate_one.max(rate_many);
    eprintln!("bench: raw unnest 1,000-row inserts: {rate_one:.0}/s on 1 connection, {rate_many:.0}/s on {}", args.workers);
    report.push((
        "raw insert, 1,000-row unnest, 1 connection".into(),
        format!("{rate_one:.0} events/s"),
    ));
    report.push((
        format!("raw insert, 1,000-row unnest, {} connections", args.workers),
        format!("{rate_many:.0} events/s"),
    ));
    if !args.ws_after_burst {
        settle(&raw_pool).await?;
    }
    drop(raw_pool);

    // 2. Collector ingest, MQTT in -> committed rows.
    let (ingest_url, ingest_pool) = fresh_db(&pg, "bench_ingest", 4).await?;
    let mut gens = gateways(&ingest_pool, args.gateways, "gw").await?;
    let collector = Collector::start(collector_settings(
        &ingest_url,
        broker.port(),
        args.workers,
    )?)
    .await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let messages = args.events / args.batch;
    let mut payloads: Vec<(String, Vec<u8>)> = Vec::with_capacity(messages);
    let mut bytes = 0usize;
    for m in 0..messages {
        let g = m % gens.len();
        let events: Vec<SecurityEvent> =
            synthetic(args.batch, m * args.batch, chrono::Duration::minutes(10), 6)
                .into_iter()
                .map(|e| gens[g].link(e))
                .collect();
        let payload = gens[g].signer.seal(&events);
        bytes += payload.len();
        let topic = format!(
            "linesentry/v1/bench/{}/events/info/equipment.status",
            gens[g].signer.gateway_id()
        );
        payloads.push((topic, payload));
    }
    let total = (messages * args.batch) as u64;
    eprintln!(
        "bench: publishing {total} events in {messages} messages ({} bytes each on average)",
        bytes / messages.max(1)
    );
    let publisher = Publisher::connect(broker.port(), "bench-publisher").await?;
    let started = Instant::now();
    for (topic, payload) in payloads {
        publisher
            .client
            .publish(topic, rumqttc::QoS::AtLeastOnce, false, payload)
            .await?;
    }
    let done = wait_inserted(&collector, total, Duration::from_secs(600)).await?;
    let elapsed = done - started;
    let rate = total as f64 / elapsed.as_secs_f64();
    let counters = collector.counters();
    let verified: i64 = ingest_pool
        .get()
        .await?
        .client
        .query_one(
            "SELECT count(*) FROM security_events WHERE verification = 'verified'",
            &[],
        )
        .await?
        .get(0);
    eprintln!(
        "bench: collector ingest {rate:.0} events/s ({:.0} % of raw), {} transactions, {verified} verified rows",
        rate / raw * 100.0,
        counters.transactions.load(Ordering::Relaxed)
    );
    report.push((
        format!(
            "collector ingest, MQTT QoS 1 -> committed, {} events/message, {} gateways, {} workers",
            args.batch, args.gateways, args.workers
        ),
        format!(
            "{rate:.0} events/s ({:.0} % of the best raw figure)",
            rate / raw * 100.0
        ),
    ));
    if verified != i64::try_from(total).unwrap_or(0) {
        bail!("expected {total} verified rows, found {verified}");
    }
    drop(publisher);

    // 4. Live stream latency (on the ingest collector, now idle).
    if args.ws_seconds > 0 {
        if !args.ws_after_burst {
            settle(&ingest_pool).await?;
        }
        let log = pg.dir().join("postgres.log");
        let log_from = std::fs::metadata(&log).map_or(0, |m| m.len());
        let latency = ws_latency(&collector, &broker, &ingest_pool, &args).await?;
        print_server_log(&log, log_from);
        report.push((
            format!(
                "stream latency, broker publish -> WebSocket receipt, {} events/s for {} s, {}",
                args.ws_rate,
                args.ws_seconds,
                if args.ws_after_burst {
                    "right after the ingest burst"
                } else {
                    "server settled after the loads"
                }
            ),
            latency,
        ));
    }
    collector.shutdown().await;
    if args.query_rows == 0 {
        print_report(&report);
        return Ok(());
    }

    // 3. Queries on a large table.
    let (query_url, query_pool) = fresh_db(&pg, "bench_query", args.workers + 2).await?;
    eprintln!("bench: loading {} rows", args.query_rows);
    let load_started = Instant::now();
    let mut loaded = 0;
    while loaded < args.query_rows {
        let n = (args.query_rows - loaded).min(100_000);
        let rows = Arc::new(synthetic(
            n,
            10_000_000 + loaded,
            chrono::Duration::days(30),
            TYPES.len(),
        ));
        raw_rate(&query_pool, rows, args.workers).await?;
        loaded += n;
    }
    {
        let conn = query_pool.get().await?;
        conn.client
            .batch_execute(
                "INSERT INTO event_metrics (granularity, bucket, event_type, severity, gateway_id, count)
                 SELECT g.unit, date_trunc(g.unit, e.\"timestamp\", 'UTC'), e.event_type, e.severity, e.gateway_id, count(*)
                 FROM security_events e CROSS JOIN (VALUES ('hour'), ('day')) AS g(unit) GROUP BY 1, 2, 3, 4, 5;
                 ANALYZE;",
            )
            .await?;
    }
    eprintln!(
        "bench: loaded in {:.0} s",
        load_started.elapsed().as_secs_f64()
    );
    let collector =
        Collector::start(collector_settings(&query_url, broker.port(), args.workers)?).await?;
    let (_, viewer) = auth::create_token(&query_pool, "bench", auth::Role::Viewer, None).await?;
    let base = format!("http://{}", collector.http_addr());
    let http = reqwest::Client::new();
    let hour_ago = (Utc::now() - chrono::Duration::hours(1))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let day_ago = (Utc::now() - chrono::Duration::hours(24))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let shapes: Vec<(&str, String)> = vec![
        (
            "events: type, last hour, limit 100",
            format!("/api/v1/events?event_type=setpoint.changed&start={hour_ago}&limit=100"),
        ),
        (
            "events: gateway, min severity warn, last 24 h, limit 100",
            format!("/api/v1/events?gateway_id=gw-07&min_severity=warn&start={day_ago}&limit=100"),
        ),
        (
            "events: user, limit 100",
            "/api/v1/events?user_id=user-6&limit=100".to_owned(),
        ),
        (
            "events: event_data contains {\"tag\":\"tag-7\"}, limit 100",
            "/api/v1/events?data=%7B%22tag%22%3A%22tag-7%22%7D&limit=100".to_owned(),
        ),
        (
            "events: station, type prefix, limit 100",
            "/api/v1/events?station_id=st-3&event_type_prefix=equipment.&limit=100".to_owned(),
        ),
        (
            "stats: 24 h per type and severity",
            "/api/v1/stats?period=24h".to_owned(),
        ),
        (
            "stats: 7 d per type and severity",
            "/api/v1/stats?period=7d".to_owned(),
        ),
        (
            "stats: 30 d, one gateway",
            "/api/v1/stats?period=30d&gateway_id=gw-03".to_owned(),
        ),
    ];
    let mut all_events = Vec::new();
    let mut all_stats = Vec::new();
    for (name, path) in &shapes {
        let mut times = Vec::with_capacity(args.queries);
        let mut rows = 0;
        for _ in 0..args.queries {
            let t = Instant::now();
            let resp = http
                .get(format!("{base}{path}"))
                .bearer_auth(&viewer)
                .send()
                .await?;
            let status = resp.status();
            let body = resp.bytes().await?;
            times.push(t.elapsed());
            if !status.is_success() {
                bail!("{path}: {status}: {}", String::from_utf8_lossy(&body));
            }
            let v: Value = serde_json::from_slice(&body)?;
            rows = v["count"]
                .as_u64()
                .or_else(|| v["total"].as_u64())
                .unwrap_or(0);
        }
        times.sort();
        eprintln!(
            "bench: {name}: p50 {} p95 {} ({rows} rows/total)",
            ms(percentile(&times, 0.5)),
            ms(percentile(&times, 0.95))
        );
        report.push((
            format!("{name} on {} rows", args.query_rows),
            format!(
                "p50 {}, p95 {}",
                ms(percentile(&times, 0.5)),
                ms(percentile(&times, 0.95))
            ),
        ));
        if name.starts_with("stats") {
            all_stats.extend(times);
        } else {
            all_events.extend(times);
        }
    }
    all_events.sort();
    all_stats.sort();
    report.push((
        "all filtered event queries".into(),
        format!("p95 {}", ms(percentile(&all_events, 0.95))),
    ));
    report.push((
        "all stats queries".into(),
        format!("p95 {}", ms(percentile(&all_stats, 0.95))),
    ));
    collector.shutdown().await;

    print_report(&report);
    Ok(())
}

fn print_report(report: &[(String, String)]) {
    println!("| measurement | result |\n|---|---|");
    for (k, v) in report {
        println!("| {k} | {v} |");
    }
}

/// Runs now, and waits for, the maintenance a bulk load leaves PostgreSQL to do: autovacuum
/// of the loaded tables (their visibility maps, statistics) and the write-back of their pages.
/// Left to happen on their own, they run during the next measurement; a WAL flush queued
/// behind them took 0.96 s (COMMIT in the server's log) and stalled the live stream by as
/// much.
async fn settle(pool: &Pool) -> anyhow::Result<()> {
    let started = Instant::now();
    let conn = pool.get().await?;
    conn.client.batch_execute("VACUUM (ANALYZE)").await?;
    conn.client.batch_execute("CHECKPOINT").await?;
    eprintln!(
        "bench: VACUUM ANALYZE and CHECKPOINT in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// What PostgreSQL logged from byte `from` on: slow statements, autovacuum, checkpoints,
/// lock waits (the settings above), to tell a stall of the server from one of the collector.
fn print_server_log(path: &std::path::Path, from: u64) {
    let text = std::fs::read(path).unwrap_or_default();
    let start = usize::try_from(from).unwrap_or(0).min(text.len());
    // The first line of each entry (statements and their parameters are long).
    let entries: Vec<String> = String::from_utf8_lossy(&text[start..])
        .lines()
        .filter(|l| l.starts_with("20") && !l.contains("DETAIL:"))
        .map(|l| l.chars().take(160).collect())
        .collect();
    eprintln!(
        "bench: PostgreSQL logged {} entries during the stream",
        entries.len()
    );
    for line in entries.iter().take(200) {
        eprintln!("  {line}");
    }
}

/// Latency samples in publish order: `(publish time, latency)`. A stall is a run of
/// samples over `limit`; returns `(publish time of its first sample, samples, worst)` of each.
fn stalls<T: Copy>(samples: &[(T, Duration)], limit: Duration) -> Vec<(T, usize, Duration)> {
    let mut out: Vec<(T, usize, Duration)> = Vec::new();
    let mut inside = false;
    for &(at, lat) in samples {
        if lat <= limit {
            inside = false;
            continue;
        }
        match out.last_mut() {
            Some(s) if inside => {
                s.1 += 1;
                s.2 = s.2.max(lat);
            }
            _ => out.push((at, 1, lat)),
        }
        inside = true;
    }
    out
}

/// Publishes one event per message at `ws_rate` for `ws_seconds`; a WebSocket client
/// measures publish-to-receipt.
async fn ws_latency(
    collector: &Collector,
    broker: &LocalMosquitto,
    pool: &Pool,
    args: &BenchArgs,
) -> anyhow::Result<String> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
    let (_, token) = auth::create_token(pool, "bench-ws", auth::Role::Viewer, None).await?;
    let mut source = gateways(pool, 1, "ws").await?.remove(0);
    let addr = collector.http_addr();
    let mut req = format!("ws://{addr}/api/v1/stream").into_client_request()?;
    req.headers_mut()
        .insert("authorization", format!("Bearer {token}").parse()?);
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let (ws, _) = tokio_tungstenite::client_async(req, tcp).await?;
    let (mut tx, mut rx) = ws.split();
    rx.next().await.context("welcome")??;
    tx.send(tokio_tungstenite::tungstenite::Message::Text(
        json!({"type": "subscribe", "filters": {"event_types": ["equipment.measurement"]}})
            .to_string()
            .into(),
    ))
    .await?;
    rx.next().await.context("subscribed")??;
    let want = args.ws_rate * args.ws_seconds;
    let receiver = tokio::spawn(async move {
        let mut lat = Vec::with_capacity(usize::try_from(want).unwrap_or(0));
        let mut missed = 0u64;
        while (lat.len() as u64) + missed < want {
            let Ok(Some(Ok(msg))) = tokio::time::timeout(Duration::from_secs(30), rx.next()).await
            else {
                break;
            };
            let now = Timestamp::now().as_micros();
            let Ok(v) = serde_json::from_str::<Value>(msg.to_text().unwrap_or("")) else {
                continue;
            };
            if v["type"] == "missed" {
                missed += v["count"].as_u64().unwrap_or(0);
            } else if let Some(sent) = v["event"]["event_data"]["sent_us"].as_i64() {
                lat.push((
                    sent,
                    Duration::from_micros(u64::try_from(now - sent).unwrap_or(0)),
                ));
            }
        }
        (lat, missed)
    });
    let publisher = Publisher::connect(broker.port(), "bench-ws-publisher").await?;
    let topic = format!(
        "linesentry/v1/bench/{}/events/debug/equipment.measurement",
        source.signer.gateway_id()
    );
    let interval = Duration::from_secs_f64(1.0 / args.ws_rate as f64);
    let started = tokio::time::Instant::now();
    for i in 0..want {
        tokio::time::sleep_until(started + interval.mul_f64(i as f64)).await;
        let e = source.link(
            SecurityEvent::new("x", EventType::EquipmentMeasurement)
                .data("sent_us", Timestamp::now().as_micros())
                .data("n", i),
        );
        let payload = source.signer.seal(&[e]);
        publisher
            .client
            .publish(topic.clone(), rumqttc::QoS::AtLeastOnce, false, payload)
            .await?;
    }
    let achieved = want as f64 / started.elapsed().as_secs_f64();
    let (mut samples, missed) = receiver.await?;
    samples.sort_unstable();
    print_stalls(&samples);
    let mut lat: Vec<Duration> = samples.into_iter().map(|s| s.1).collect();
    lat.sort();
    let counts: BTreeMap<&str, String> = [
        ("p50", ms(percentile(&lat, 0.5))),
        ("p95", ms(percentile(&lat, 0.95))),
        ("p99", ms(percentile(&lat, 0.99))),
        ("max", ms(lat.last().copied().unwrap_or_default())),
    ]
    .into_iter()
    .collect();
    eprintln!(
        "bench: stream latency at {achieved:.0}/s: {counts:?}, {} received, {missed} missed",
        lat.len()
    );
    Ok(format!(
        "p50 {}, p95 {}, p99 {}, max {} ({} received, {missed} missed, achieved {achieved:.0}/s)",
        counts["p50"],
        counts["p95"],
        counts["p99"],
        counts["max"],
        lat.len()
    ))
}

/// Prints each run of events later than 100 ms, with its wall-clock time (to find it in
/// the server's log). `samples`: (publish time in µs since the epoch, latency), in order.
fn print_stalls(samples: &[(i64, Duration)]) {
    let first = samples.first().map_or(0, |s| s.0);
    for (sent, n, worst) in stalls(samples, Duration::from_millis(100)) {
        let wall = DateTime::<Utc>::from_timestamp_micros(sent)
            .map(|t| t.format("%H:%M:%S%.3f").to_string())
            .unwrap_or_default();
        eprintln!(
            "bench: stall at {:.3} s into the stream ({wall} UTC): {n} events over 100 ms, worst {}",
            (sent - first) as f64 / 1e6,
            ms(worst)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stall_is_a_run_of_late_samples_with_its_start_size_and_worst() {
        let ms = Duration::from_millis;
        let samples = [
            (ms(0), ms(5)),
            (ms(1), ms(300)),
            (ms(2), ms(299)),
            (ms(3), ms(4)),
            (ms(4), ms(101)),
        ];
        assert_eq!(
            stalls(&samples, ms(100)),
            vec![(ms(1), 2, ms(300)), (ms(4), 1, ms(101))]
        );
        assert!(stalls(&samples[..1], ms(100)).is_empty());
    }
}
