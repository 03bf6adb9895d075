//! `linesentry`: the edge agent's command line.

#[cfg(feature = "bench")]
mod bench;
mod buffer_cmd;
#[cfg(feature = "sim")]
mod demo;
mod onboard;
mod pki;
#[cfg(feature = "sim")]
mod sim;

#[cfg(not(all(feature = "sim", feature = "bench")))]
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use linesentry_agent::config;
use linesentry_agent::runtime::{self, RunOptions};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

#[derive(Debug, Parser)]
#[command(
    name = "linesentry",
    version,
    about = "Security events from factory-floor stations, stored and forwarded"
)]
struct Cli {
    /// Log line format (logs go to stderr).
    #[arg(long, value_enum, global = true)]
    log_format: Option<LogFormat>,
    /// Log filter, e.g. `info` or `linesentry=debug` (overrides the config's log.level).
    #[arg(long, global = true)]
    log_level: Option<String>,
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
    /// Run the agent.
    Run {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Check a configuration and its station profiles, or station profiles on their own;
    /// every error with its file, line and key path; exit 1 on any error.
    #[command(
        after_help = "Examples:\n  linesentry validate --config /etc/linesentry/agent.toml\n  \
                      linesentry validate --profile devices/reflow_oven.toml"
    )]
    Validate {
        /// An agent configuration; the profiles its stations name are checked too.
        #[arg(long, short, required_unless_present = "profile")]
        config: Option<PathBuf>,
        /// A station profile (`devices/<name>.toml`) to check on its own; repeatable.
        #[arg(long, short)]
        profile: Vec<PathBuf>,
    },
    /// Turn a vendor's tag list into a station profile (`import modbus FILE.csv`).
    Import {
        #[command(subcommand)]
        command: onboard::ImportCommand,
    },
    /// Browse a device and write a station profile skeleton (`discover opcua ENDPOINT`).
    Discover {
        #[command(subcommand)]
        command: onboard::DiscoverCommand,
    },
    /// Read every tag of a profile from the live device, once or N times, and flag the tags
    /// that fail (exception, bad node id, type mismatch, NaN, outside limits); exit 1 on any.
    #[command(
        after_help = "Examples:\n  linesentry probe --config /etc/linesentry/agent.toml --station oven-2\n  \
                      linesentry probe --profile devices/reflow_oven.toml --address 10.0.4.21:502 -n 3"
    )]
    Probe {
        #[command(flatten)]
        args: onboard::ProbeArgs,
    },
    /// Inspect a stopped agent's buffer.
    Buffer {
        #[command(subcommand)]
        command: buffer_cmd::BufferCommand,
    },
    /// Run the agent against built-in simulated stations and print the events it forwards.
    #[cfg(feature = "sim")]
    Demo {
        #[arg(long, short, default_value = "config/demo.toml")]
        config: PathBuf,
        /// Stop after this many seconds (0: run until Ctrl-C).
        #[arg(long, default_value_t = 40)]
        seconds: u64,
    },
    /// Measure the durable queue against raw redb on this machine.
    #[cfg(feature = "bench")]
    Bench {
        #[command(subcommand)]
        command: bench::BenchCommand,
    },
    /// OPC UA certificates: list them, trust or reject a server certificate.
    Pki {
        #[command(subcommand)]
        command: pki::PkiCommand,
    },
    /// Print the gateway's public key (creating the key on first use), to register it with
    /// the collector: `linesentry-collector gateway add ID --public-key KEY`.
    Identity {
        #[arg(long, short)]
        config: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Serve a simulated station over its protocol (Modbus TCP or OPC UA), with scenario actions.
    #[cfg(feature = "sim")]
    Sim {
        #[command(flatten)]
        args: sim::SimArgs,
    },
    /// A subcommand this build does not have: `demo`, `sim` and `bench` are left out of the
    /// gateway build (`--no-default-features`), and get a message saying so.
    #[cfg(not(all(feature = "sim", feature = "bench")))]
    #[command(external_subcommand)]
    NotBuilt(Vec<OsString>),
}

/// A subcommand missing from this build: says which feature it needs, or that it does not
/// exist. Exit code 2, as clap's own usage errors.
#[cfg(not(all(feature = "sim", feature = "bench")))]
fn not_built(args: &[OsString]) -> ExitCode {
    let name = args
        .first()
        .map(|a| a.to_string_lossy())
        .unwrap_or_default();
    let feature = match &*name {
        "demo" | "sim" => Some("sim"),
        "bench" => Some("bench"),
        _ => None,
    };
    match feature {
        Some(feature) => eprintln!(
            "linesentry {name}: not in this build; this binary was built without the cargo \
             feature `{feature}` (gateway builds leave out the simulators and benchmarks). \
             Build with `cargo build --release` (default features) to use it."
        ),
        None => eprintln!(
            "error: unrecognized subcommand '{name}'\n\nFor more information, try '--help'."
        ),
    }
    ExitCode::from(2)
}

/// `linesentry identity`: the key the collector verifies batch signatures with. Reads only
/// `[agent]` (the gateway id and the data directory): it is the first step of an install,
/// before the collector has issued the token that `[forward.https]` may already name.
fn identity(path: &Path, json: bool) -> ExitCode {
    let agent = match linesentry_agent::config::load_agent(path) {
        Ok(a) => a,
        Err(errors) => {
            eprintln!("{errors}");
            return ExitCode::FAILURE;
        }
    };
    match linesentry_agent::forward::identity::Identity::load_or_create(&agent.data_dir) {
        Ok(id) => {
            if json {
                println!(
                    "{}",
                    serde_json::json!({
                        "gateway_id": agent.gateway_id,
                        "key_id": id.key_id(),
                        "public_key": id.public_key_base64(),
                        "key_file": id.path.display().to_string(),
                        "created": id.created,
                    })
                );
            } else {
                println!("gateway_id: {}", agent.gateway_id);
                println!("key_id:     {}", id.key_id());
                println!("public_key: {}", id.public_key_base64());
                println!("key_file:   {}", id.path.display());
                println!(
                    "register:   linesentry-collector gateway add {} --public-key {}",
                    agent.gateway_id,
                    id.public_key_base64()
                );
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("linesentry identity: {e}");
            ExitCode::FAILURE
        }
    }
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Validate { config, profile } => {
            // Every file is checked, also after one that failed.
            let mut ok = true;
            if let Some(path) = &config {
                ok &= validate(path);
            }
            for path in &profile {
                ok &= validate_profile(path);
            }
            if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Command::Identity { config, json } => identity(&config, json),
        Command::Import { command } => onboard::import(command),
        Command::Discover { command } => {
            init_logs(
                cli.log_format.unwrap_or(LogFormat::Text),
                cli.log_level.as_deref().unwrap_or("error"),
            );
            onboard::discover(command)
        }
        Command::Probe { args } => {
            init_logs(
                cli.log_format.unwrap_or(LogFormat::Text),
                cli.log_level.as_deref().unwrap_or("error"),
            );
            onboard::probe(&args)
        }
        Command::Run { config } => run_agent(
            &config,
            cli.log_format,
            cli.log_level.as_deref(),
            RunOptions::default(),
            None,
            false,
        ),
        #[cfg(feature = "sim")]
        Command::Demo { config, seconds } => {
            let options = RunOptions {
                console: Some(linesentry_agent::forward::ConsoleFormat::Text),
                ..RunOptions::default()
            };
            let stop = (seconds > 0).then(|| Duration::from_secs(seconds));
            run_agent(
                &config,
                cli.log_format,
                cli.log_level.as_deref(),
                options,
                stop,
                true,
            )
        }
        Command::Buffer { command } => {
            init_logs(
                cli.log_format.unwrap_or(LogFormat::Text),
                cli.log_level.as_deref().unwrap_or("warn"),
            );
            buffer_cmd::run(command)
        }
        #[cfg(feature = "bench")]
        Command::Bench { command } => {
            init_logs(
                cli.log_format.unwrap_or(LogFormat::Text),
                cli.log_level.as_deref().unwrap_or("warn"),
            );
            bench::run(command)
        }
        Command::Pki { command } => {
            init_logs(
                cli.log_format.unwrap_or(LogFormat::Text),
                cli.log_level.as_deref().unwrap_or("warn"),
            );
            pki::run(command)
        }
        #[cfg(feature = "sim")]
        Command::Sim { args } => {
            init_logs(
                cli.log_format.unwrap_or(LogFormat::Text),
                cli.log_level.as_deref().unwrap_or("info"),
            );
            sim::run(args)
        }
        #[cfg(not(all(feature = "sim", feature = "bench")))]
        Command::NotBuilt(args) => not_built(&args),
    }
}

/// `linesentry validate --config`: prints `ok` or every error; true when valid.
fn validate(path: &std::path::Path) -> bool {
    match config::load(path) {
        Ok(c) => {
            println!(
                "{}: ok (gateway {}, {} stations, digest {})",
                path.display(),
                c.agent.gateway_id,
                c.stations.len(),
                &c.digest[..12.min(c.digest.len())]
            );
            true
        }
        Err(errors) => {
            eprintln!("{errors}");
            eprintln!("{}: {} error(s)", path.display(), errors.0.len());
            false
        }
    }
}

/// `linesentry validate --profile`: one station profile on its own; true when valid.
fn validate_profile(path: &Path) -> bool {
    match config::load_profile(path) {
        Ok(p) => {
            println!(
                "{}: ok (profile {}, {}, {} tags)",
                path.display(),
                p.name,
                p.protocol,
                p.tags.len()
            );
            true
        }
        Err(errors) => {
            eprintln!("{errors}");
            eprintln!("{}: {} error(s)", path.display(), errors.0.len());
            false
        }
    }
}

fn run_agent(
    path: &std::path::Path,
    log_format: Option<LogFormat>,
    log_level: Option<&str>,
    options: RunOptions,
    stop_after: Option<Duration>,
    demo: bool,
) -> ExitCode {
    let config = match config::load(path) {
        Ok(c) => c,
        Err(errors) => {
            eprintln!("{errors}");
            eprintln!(
                "{}: {} error(s); not starting",
                path.display(),
                errors.0.len()
            );
            return ExitCode::FAILURE;
        }
    };
    let format = log_format.unwrap_or(match config.log.format {
        config::LogFormat::Json => LogFormat::Json,
        config::LogFormat::Text => LogFormat::Text,
    });
    init_logs(format, log_level.unwrap_or(&config.log.level));
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the runtime");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        // Handlers first: a signal during start-up (opening a large store) must not kill us.
        let mut signals = match Signals::install() {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "cannot install signal handlers");
                return ExitCode::FAILURE;
            }
        };
        let shutdown = CancellationToken::new();
        // Past the forwarders' grace, a drain that still has not finished is stuck.
        let hard_limit = config.agent.shutdown_grace + Duration::from_secs(10);
        let mut options = options;
        options.reload = Some(signals.reloads());
        // `--seconds` counts the agent's own run time: the timer starts once the demo's
        // simulators are up, so a slow start (certificates on a loaded machine) does not
        // eat the run.
        let start_timer = std::sync::Arc::new(tokio::sync::Notify::new());
        tokio::spawn(signals.watch(
            shutdown.clone(),
            stop_after.map(|d| (d, start_timer.clone())),
            hard_limit,
        ));
        #[cfg(feature = "sim")]
        let mut config = config;
        #[cfg(feature = "sim")]
        let sims = if demo {
            match demo::Simulators::start(&mut config).await {
                Ok(sims) => Some(sims),
                Err(e) => {
                    eprintln!("linesentry demo: {e}");
                    return ExitCode::FAILURE;
                }
            }
        } else {
            None
        };
        start_timer.notify_one();
        let result = runtime::run(config, options, shutdown).await;
        #[cfg(feature = "sim")]
        if let Some(sims) = sims {
            sims.shutdown().await;
        }
        match result {
            Ok(summary) => {
                if demo {
                    eprintln!(
                        "demo: {} stations, {} readings -> {} events, {} forwarded, {} still buffered",
                        summary.stations,
                        summary.readings,
                        summary.events,
                        summary.forwarded.events,
                        summary.buffered
                    );
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                tracing::error!(error = %e, "agent failed");
                eprintln!("linesentry: {e}");
                ExitCode::FAILURE
            }
        }
    })
}

/// SIGTERM, SIGINT and SIGHUP streams, installed before anything else starts.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    fn install() -> std::io::Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Self {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: Some(signal(SignalKind::hangup())?),
        })
    }

    /// A notification per SIGHUP: the agent reloads its configuration.
    fn reloads(&mut self) -> std::sync::Arc<tokio::sync::Notify> {
        let notify = std::sync::Arc::new(tokio::sync::Notify::new());
        if let Some(mut hup) = self.hup.take() {
            let n = notify.clone();
            tokio::spawn(async move {
                while hup.recv().await.is_some() {
                    tracing::info!("SIGHUP: reloading the configuration");
                    n.notify_one();
                }
            });
        }
        notify
    }

    /// SIGTERM / SIGINT (and the `--seconds` timer, counted from when its `Notify` is
    /// notified) cancel the token. A second signal, or a drain that outlives `hard_limit`,
    /// exits at once: confirmed events are already durable.
    async fn watch(
        self,
        shutdown: CancellationToken,
        stop_after: Option<(Duration, std::sync::Arc<tokio::sync::Notify>)>,
        hard_limit: Duration,
    ) {
        let Self {
            mut term, mut int, ..
        } = self;
        let timer = async {
            match stop_after {
                Some((d, start)) => {
                    start.notified().await;
                    tokio::time::sleep(d).await;
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM"),
            _ = int.recv() => tracing::info!("SIGINT"),
            () = timer => {}
        }
        shutdown.cancel();
        tokio::select! {
            _ = term.recv() => tracing::warn!("second signal: exiting without draining"),
            _ = int.recv() => tracing::warn!("second signal: exiting without draining"),
            () = tokio::time::sleep(hard_limit) => {
                tracing::error!(limit_s = hard_limit.as_secs(), "shutdown did not finish in time; exiting");
            }
        }
        std::process::exit(130);
    }
}
