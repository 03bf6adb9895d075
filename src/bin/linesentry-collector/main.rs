//! `linesentry-collector`: the central collector's command line.

mod bench;
mod demo;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context as _};
use clap::{Parser, Subcommand, ValueEnum};
use linesentry_collector::auth::{self, Role};
use linesentry_collector::config::{self, Settings};
use linesentry_collector::db::Pool;
use linesentry_collector::{migrate, registry, Collector};
use tracing_subscriber::EnvFilter;
use uuid::Uuid;

#[derive(Debug, Parser)]
#[command(
    name = "linesentry-collector",
    version,
    about = "Central collector: ingest gateway events into PostgreSQL, query, stream, alert"
)]
struct Cli {
    /// Log line format (logs go to stderr).
    #[arg(long, value_enum, global = true, default_value = "text")]
    log_format: LogFormat,
    /// Log filter, e.g. `info` or `linesentry=debug`.
    #[arg(long, global = true, default_value = "info")]
    log_level: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the collector (migrates the schema first).
    Run {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Check a configuration; every error at once, exit 1 on any.
    Validate {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Bring the database schema up to date and exit.
    Migrate {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Register gateways and manage their keys.
    Gateway {
        #[arg(long, short, global = true)]
        config: Option<PathBuf>,
        #[command(subcommand)]
        command: GatewayCommand,
    },
    /// The whole chain on one machine: simulated stations -> agent -> Mosquitto ->
    /// collector -> PostgreSQL -> web page (private servers on loopback ports).
    Demo(demo::DemoArgs),
    /// Measure ingest against raw PostgreSQL, query and stats latency on a large table,
    /// and live stream latency, on private servers (see docs/BENCHMARKS.md).
    Bench(bench::BenchArgs),
    /// SIEM destinations (`[[siem]]`).
    Siem {
        #[arg(long, short, global = true)]
        config: Option<PathBuf>,
        #[command(subcommand)]
        command: SiemCommand,
    },
    /// Create, list and revoke API tokens.
    Token {
        #[arg(long, short, global = true)]
        config: Option<PathBuf>,
        #[command(subcommand)]
        command: TokenCommand,
    },
}

#[derive(Debug, Subcommand)]
enum GatewayCommand {
    /// Register a gateway (or add a key to it): its Ed25519 public key, base64.
    Add {
        id: String,
        #[arg(long)]
        public_key: String,
        #[arg(long)]
        description: Option<String>,
        /// PEM client certificate the gateway may present instead of a token (mTLS).
        #[arg(long)]
        client_cert: Option<PathBuf>,
    },
    /// Every gateway with its last contact and chain counters (JSON lines).
    List,
    /// Refuse a gateway's batches from now on (its events stay).
    Disable {
        id: String,
    },
    Enable {
        id: String,
    },
    /// Refuse batches signed with this key from now on.
    RevokeKey {
        id: String,
        key_id: String,
    },
}

#[derive(Debug, Subcommand)]
enum SiemCommand {
    /// Send one `siem.test` message to the destination NAME, as it sends events, and print
    /// what the receiver answered (RELP `200 OK`, the HTTP status; syslog over TLS has no
    /// answer: written and flushed). Exit 1 if it could not be delivered.
    Test { name: String },
    /// The configured destinations, one per line.
    List,
}

async fn siem(config: &Path, command: SiemCommand) -> anyhow::Result<()> {
    let settings = load(config)?;
    match command {
        SiemCommand::List => {
            for d in &settings.siem {
                println!(
                    "{}\t{}\t{}\t{}",
                    d.name, d.transport.protocol, d.transport.address, d.format
                );
            }
            Ok(())
        }
        SiemCommand::Test { name } => {
            let Some(d) = settings.siem.iter().find(|d| d.name == name) else {
                let known: Vec<&str> = settings.siem.iter().map(|d| d.name.as_str()).collect();
                bail!(
                    "no [[siem]] destination named `{name}` in {}; configured: {}",
                    config.display(),
                    if known.is_empty() {
                        "none".to_owned()
                    } else {
                        known.join(", ")
                    }
                );
            };
            println!(
                "sending a siem.test message to `{}` ({} {}, {})",
                d.name, d.transport.protocol, d.transport.address, d.format
            );
            match linesentry_collector::siem::send_test(d, &settings.collector_id).await {
                Ok((message, answer)) => {
                    println!("sent: {message}");
                    println!("receiver answered: {}", answer.text);
                    Ok(())
                }
                Err(e) => bail!("not delivered: {e}"),
            }
        }
    }
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Create a token; it is printed once and only its hash is stored.
    Create {
        #[arg(long)]
        name: String,
        #[arg(long)]
        role: String,
        /// The gateway a `gateway` token ingests for.
        #[arg(long)]
        gateway: Option<String>,
    },
    List,
    Revoke {
        id: Uuid,
    },
}

fn init_logs(format: LogFormat, level: &str) {
    let filter = EnvFilter::try_new(level).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

fn load(path: &Path) -> anyhow::Result<Settings> {
    match config::load(path) {
        Ok(s) => Ok(s),
        Err(errors) => {
            for e in &errors.0 {
                eprintln!("{e}");
            }
            bail!("{} configuration error(s)", errors.0.len())
        }
    }
}

fn config_path(given: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    given
        .or_else(|| std::env::var_os("LINESENTRY_COLLECTOR_CONFIG").map(PathBuf::from))
        .context("--config FILE (or LINESENTRY_COLLECTOR_CONFIG) is required")
}

async fn pool_for(path: &Path) -> anyhow::Result<Pool> {
    let settings = load(path)?;
    let pool = Pool::new(&settings.database)?;
    migrate::migrate(&pool).await?;
    Ok(pool)
}

/// Runs until SIGTERM or SIGINT. Under systemd (`Type=notify`): READY=1 once listening,
/// WATCHDOG=1 at half the watchdog interval while every worker and the HTTP server run.
/// SIGHUP does not reload (gateways and tokens live in the database and need none; other
/// settings need a restart) and does not stop the collector either.
async fn run(config: &Path) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let settings = load(config)?;
    let collector = Collector::start(settings).await?;
    let status = format!("listening on {}", collector.http_addr());
    let _ = sd_notify::notify(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status(&status),
    ]);
    let watchdog = sd_notify::watchdog_enabled();
    let mut tick =
        tokio::time::interval(watchdog.map_or(std::time::Duration::from_secs(3600), |d| d / 2));
    let mut term = signal(SignalKind::terminate())?;
    let mut hup = signal(SignalKind::hangup())?;
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
            _ = hup.recv() => tracing::warn!("SIGHUP: configuration reload is not supported; restart the collector to apply changes"),
            _ = tick.tick() => {
                if watchdog.is_some() && collector.is_alive() {
                    let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
                }
            }
        }
    }
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    tracing::info!("stopping: intake closed, committing what is held");
    tokio::select! {
        () = collector.shutdown() => {}
        _ = tokio::signal::ctrl_c() => bail!("second signal: stopped at once"),
    }
    Ok(())
}

async fn gateway(config: &Path, command: GatewayCommand) -> anyhow::Result<()> {
    let pool = pool_for(config).await?;
    match command {
        GatewayCommand::Add {
            id,
            public_key,
            description,
            client_cert,
        } => {
            // The collector files its own events under its id: no gateway may share it.
            let collector_id = load(config)?.collector_id;
            anyhow::ensure!(
                id != collector_id,
                "`{id}` is this collector's id ([collector] id), under which it files its own events; choose another gateway id"
            );
            let key = registry::parse_public_key(&public_key)?;
            let cert = match client_cert {
                Some(p) => Some(registry::cert_fingerprint(
                    &std::fs::read(&p).with_context(|| p.display().to_string())?,
                )?),
                None => None,
            };
            let kid = registry::add_gateway(&pool, &id, &key, description.as_deref(), cert).await?;
            println!("gateway {id} registered with key {kid}");
        }
        GatewayCommand::List => {
            for g in registry::list_gateways(&pool).await? {
                println!("{g}");
            }
        }
        GatewayCommand::Disable { id } => registry::set_enabled(&pool, &id, false).await?,
        GatewayCommand::Enable { id } => registry::set_enabled(&pool, &id, true).await?,
        GatewayCommand::RevokeKey { id, key_id } => {
            registry::revoke_key(&pool, &id, &key_id).await?;
        }
    }
    Ok(())
}

async fn token(config: &Path, command: TokenCommand) -> anyhow::Result<()> {
    let pool = pool_for(config).await?;
    match command {
        TokenCommand::Create {
            name,
            role,
            gateway,
        } => {
            let role: Role = role.parse().map_err(anyhow::Error::msg)?;
            let (id, token) = auth::create_token(&pool, &name, role, gateway.as_deref()).await?;
            eprintln!("token {id} ({role}) created; it is shown once:");
            println!("{token}");
        }
        TokenCommand::List => {
            for t in auth::list_tokens(&pool).await? {
                println!("{t}");
            }
        }
        TokenCommand::Revoke { id } => auth::revoke_token(&pool, id).await?,
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logs(cli.log_format, &cli.log_level);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("linesentry-collector: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Run { config } => run(&config).await,
            Command::Validate { config } => {
                load(&config).map(|_| println!("{}: ok", config.display()))
            }
            Command::Migrate { config } => {
                let settings = load(&config)?;
                let pool = Pool::new(&settings.database)?;
                let applied = migrate::migrate(&pool).await?;
                println!("schema up to date; applied now: {applied:?}");
                Ok(())
            }
            Command::Gateway { config, command } => gateway(&config_path(config)?, command).await,
            Command::Token { config, command } => token(&config_path(config)?, command).await,
            Command::Siem { config, command } => siem(&config_path(config)?, command).await,
            Command::Bench(args) => bench::run(args).await,
            Command::Demo(args) => demo::run(args).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("linesentry-collector: {e:#}");
            ExitCode::FAILURE
        }
    }
}
