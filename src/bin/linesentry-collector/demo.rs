//! `linesentry-collector demo`: the whole chain on one machine, in one command.
//!
//! simulated stations -> agent (`linesentry demo`) -> Mosquitto -> collector -> PostgreSQL
//! -> web page. PostgreSQL and Mosquitto are private instances on free loopback ports (the
//! Debian packages only need to be installed, not running). The agent's demo configuration
//! is copied with absolute paths, a fresh data directory and a `[forward.mqtt]` section for
//! the private broker; its gateway is registered with the key `linesentry identity` prints.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context as _};
use linesentry_collector::config;
use linesentry_collector::{auth, registry, Collector};
use linesentry_common::local::{LocalMosquitto, LocalPostgres, MosquittoOptions, PostgresOptions};
use serde_json::Value;

#[derive(Debug, clap::Args)]
pub(crate) struct DemoArgs {
    /// Agent configuration to run; its stations get simulators.
    #[arg(long, default_value = "config/demo.toml")]
    agent_config: PathBuf,
    /// The agent binary (default: `linesentry` next to this one).
    #[arg(long)]
    agent_bin: Option<PathBuf>,
    /// Seconds the agent runs (0: until Ctrl-C).
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// Address of the web page and the API (plain HTTP: loopback only).
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Stop when the agent is done and print a summary, instead of serving the page until
    /// Ctrl-C.
    #[arg(long)]
    exit: bool,
}

fn absolute(base: &Path, p: &str) -> String {
    let path = Path::new(p);
    let full = if path.is_absolute() {
        path.to_owned()
    } else {
        base.join(path)
    };
    std::fs::canonicalize(&full)
        .unwrap_or(full)
        .display()
        .to_string()
}

/// The agent's config with absolute paths, its own data directory and MQTT forwarding to
/// the private broker.
fn agent_config(src: &Path, data_dir: &Path, broker_port: u16) -> anyhow::Result<(String, String)> {
    let text = std::fs::read_to_string(src).with_context(|| src.display().to_string())?;
    let base = std::fs::canonicalize(src.parent().unwrap_or(Path::new(".")))?;
    let mut doc: toml_edit::DocumentMut =
        text.parse().with_context(|| src.display().to_string())?;
    let agent = doc["agent"]
        .as_table_mut()
        .context("the agent config has no [agent] table")?;
    let gateway_id = agent
        .get("gateway_id")
        .and_then(|v| v.as_str())
        .context("agent.gateway_id")?
        .to_owned();
    let profiles = agent
        .get("profiles_dir")
        .and_then(|v| v.as_str())
        .unwrap_or("../devices")
        .to_owned();
    agent["profiles_dir"] = toml_edit::value(absolute(&base, &profiles));
    agent["data_dir"] = toml_edit::value(data_dir.display().to_string());
    if let Some(stations) = doc["stations"].as_array_of_tables_mut() {
        for st in stations.iter_mut() {
            let file = st
                .get("identity")
                .and_then(|i| i.get("password"))
                .and_then(|p| p.get("file"))
                .and_then(|f| f.as_str())
                .map(str::to_owned);
            if let Some(file) = file {
                if let Some(pw) = st
                    .get_mut("identity")
                    .and_then(|i| i.as_inline_table_mut())
                    .and_then(|i| i.get_mut("password"))
                    .and_then(|p| p.as_inline_table_mut())
                {
                    pw.insert("file", absolute(&base, &file).into());
                }
            }
        }
    }
    if doc.get("forward").is_none() {
        doc["forward"] = toml_edit::table();
    }
    doc["forward"]["console"] = toml_edit::value(false);
    let mut mqtt = toml_edit::Table::new();
    mqtt["host"] = toml_edit::value("127.0.0.1");
    mqtt["port"] = toml_edit::value(i64::from(broker_port));
    doc["forward"]["mqtt"] = toml_edit::Item::Table(mqtt);
    Ok((doc.to_string(), gateway_id))
}

/// Lets the agent stop as it does on Ctrl-C (it drains and records agent.stopped), then
/// insists after 15 s.
async fn stop_agent(agent: &mut tokio::process::Child) -> anyhow::Result<std::process::ExitStatus> {
    if let Some(pid) = agent.id() {
        let _ = tokio::process::Command::new("kill")
            .args(["-INT", &pid.to_string()])
            .status()
            .await;
    }
    if let Ok(status) = tokio::time::timeout(Duration::from_secs(15), agent.wait()).await {
        return Ok(status?);
    }
    let _ = agent.start_kill();
    Ok(agent.wait().await?)
}

/// One line: what the collector holds of the demo gateway.
async fn summary(
    pool: &linesentry_collector::db::Pool,
    gateway_id: &str,
) -> anyhow::Result<String> {
    let conn = pool.get().await?;
    let row = conn
        .client
        .query_one(
            "SELECT count(*), count(*) FILTER (WHERE verification = 'verified'), \
                    count(*) FILTER (WHERE verification = 'broken'), \
                    (SELECT gaps_unexplained FROM gateways WHERE gateway_id = $1), \
                    (SELECT count(*) FROM security_events WHERE event_type = 'security.violation'), \
                    (SELECT count(*) FROM alerts) \
             FROM security_events WHERE gateway_id = $1 AND seq IS NOT NULL",
            &[&gateway_id],
        )
        .await?;
    Ok(format!(
        "demo: {} events from {gateway_id} stored, {} verified, {} broken, {} unexplained gaps, {} security violations, {} alerts",
        row.get::<_, i64>(0),
        row.get::<_, i64>(1),
        row.get::<_, i64>(2),
        row.get::<_, Option<i64>>(3).unwrap_or(0),
        row.get::<_, i64>(4),
        row.get::<_, i64>(5),
    ))
}

pub(crate) async fn run(args: DemoArgs) -> anyhow::Result<()> {
    if !args.listen.ip().is_loopback() {
        bail!("--listen: the demo serves plain HTTP, so only on a loopback address");
    }
    let agent_bin = match &args.agent_bin {
        Some(p) => p.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("binary directory")?
            .join("linesentry"),
    };
    if !agent_bin.is_file() {
        bail!(
            "agent binary {} not found: build it (cargo build --release) or pass --agent-bin",
            agent_bin.display()
        );
    }
    eprintln!("demo: starting a private PostgreSQL and Mosquitto");
    let pg = LocalPostgres::start(&PostgresOptions::default())?;
    let broker = LocalMosquitto::start(&MosquittoOptions::default())?;
    linesentry_collector::db::create_database(&pg.url("postgres"), "linesentry_demo").await?;
    let text = format!(
        "[collector]\nid = \"demo-collector\"\n[database]\nurl = \"{}\"\n[http]\nlisten = \"{}\"\nplain = true\n\
         [mqtt]\nhost = \"127.0.0.1\"\nport = {}\nclient_id = \"demo-collector\"\nplain = true\n[ingest]\ngap_after_s = 30\n",
        pg.url("linesentry_demo"),
        args.listen,
        broker.port()
    );
    let settings = config::parse(&text, Path::new("demo"), Path::new("."))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let collector = Collector::start(settings).await?;
    let pool = collector.pool().clone();

    let work = tempfile::tempdir()?;
    let (agent_text, gateway_id) = agent_config(
        &args.agent_config,
        &work.path().join("agent-data"),
        broker.port(),
    )?;
    let agent_cfg = work.path().join("agent.toml");
    std::fs::write(&agent_cfg, agent_text)?;
    let identity = tokio::process::Command::new(&agent_bin)
        .args(["identity", "--json", "--config"])
        .arg(&agent_cfg)
        .output()
        .await?;
    if !identity.status.success() {
        bail!(
            "linesentry identity: {}",
            String::from_utf8_lossy(&identity.stderr)
        );
    }
    let id: Value = serde_json::from_slice(&identity.stdout)?;
    let key = registry::parse_public_key(id["public_key"].as_str().context("public_key")?)?;
    let key_id =
        registry::add_gateway(&pool, &gateway_id, &key, Some("demo gateway"), None).await?;
    let (_, token) = auth::create_token(&pool, "demo-operator", auth::Role::Operator, None).await?;
    eprintln!("demo: gateway {gateway_id} registered (key {key_id})");
    println!("demo: open http://{}/#token={token}", collector.http_addr());

    eprintln!(
        "demo: running the agent against simulated stations for {} s",
        args.seconds
    );
    let mut agent = tokio::process::Command::new(&agent_bin)
        .args(["--log-level", "warn", "demo", "--seconds"])
        .arg(args.seconds.to_string())
        .arg("--config")
        .arg(&agent_cfg)
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    let status = tokio::select! {
        s = agent.wait() => s?,
        _ = tokio::signal::ctrl_c() => stop_agent(&mut agent).await?,
    };
    if !status.success() {
        eprintln!("demo: the agent exited with {status}");
    }
    // Let the last messages through the broker and the workers.
    tokio::time::sleep(Duration::from_secs(2)).await;
    println!("{}", summary(&pool, &gateway_id).await?);
    if !args.exit {
        println!(
            "demo: the page stays at http://{}/#token={token}; Ctrl-C to stop",
            collector.http_addr()
        );
        let _ = tokio::signal::ctrl_c().await;
    }
    collector.shutdown().await;
    drop(broker);
    drop(pg);
    Ok(())
}
