//! `linesentry sim`: serve a simulated station over its protocol until Ctrl-C / SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use linesentry_agent::source::Protocol;
use linesentry_sim as sim;
use linesentry_sim::{Schedule, SimOptions};

#[derive(Debug, Args)]
pub(crate) struct SimArgs {
    /// Station profile to simulate, e.g. devices/stamping_press.toml.
    #[arg(long)]
    profile: PathBuf,
    /// Address to serve the station's protocol on (port 0: any free port).
    #[arg(long)]
    listen: SocketAddr,
    /// Scenario actions at seconds after the start, e.g. "fault@10,recover@15".
    #[arg(long, value_parser = parse_schedule)]
    schedule: Option<Schedule>,
    /// Line-based control port: one action name per line, answered `ok` or `error: ...`.
    #[arg(long)]
    control: Option<SocketAddr>,
    /// Milliseconds between two samples of the station's values.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=60_000))]
    tick_ms: u64,
    /// Seed of the random dynamics (the same seed gives the same values).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// OPC UA only: the server's PKI directory, its certificate created there once
    /// (default: `sim-pki/<profile>` in the working directory).
    #[arg(long)]
    pki: Option<PathBuf>,
}

fn parse_schedule(text: &str) -> Result<Schedule, String> {
    Schedule::parse(text).map_err(|e| e.to_string())
}

pub(crate) fn run(args: SimArgs) -> ExitCode {
    let profile = match sim::load_profile(&args.profile) {
        Ok(p) => p,
        Err(errors) => {
            eprintln!("{errors}");
            eprintln!(
                "{}: {} error(s); not starting",
                args.profile.display(),
                errors.len()
            );
            return ExitCode::FAILURE;
        }
    };
    let pki = args
        .pki
        .clone()
        .unwrap_or_else(|| PathBuf::from("sim-pki").join(&profile.name));
    let options = SimOptions {
        listen: args.listen,
        control: args.control,
        tick: Duration::from_millis(args.tick_ms),
        schedule: args.schedule.unwrap_or_default(),
        seed: args.seed,
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("linesentry sim: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        if profile.protocol == Protocol::OpcUa {
            return serve_opcua(profile, &options, pki).await;
        }
        let handle = match sim::modbus::start(profile.clone(), &options).await {
            Ok(h) => h,
            Err(e) => {
                eprintln!("linesentry sim: {e}");
                return ExitCode::FAILURE;
            }
        };
        let control = handle
            .control_addr()
            .map_or(String::new(), |a| format!(", control port {a}"));
        let schedule = if options.schedule.is_empty() {
            String::new()
        } else {
            format!(", schedule {}", options.schedule)
        };
        println!(
            "linesentry sim: {} over Modbus TCP on {}{control}{schedule}",
            profile.name,
            handle.local_addr()
        );
        wait_for_signal().await;
        handle.shutdown().await;
        ExitCode::SUCCESS
    })
}

/// The OPC UA branch: serves until a signal, printing what a client needs to connect.
async fn serve_opcua(
    profile: std::sync::Arc<linesentry_agent::source::Profile>,
    options: &SimOptions,
    pki: PathBuf,
) -> ExitCode {
    use linesentry_sim::opcua::{self, OpcUaSimOptions};
    let sim = match opcua::start(profile.clone(), options, &OpcUaSimOptions::new(pki)).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("linesentry sim: {e}");
            return ExitCode::FAILURE;
        }
    };
    let control = sim
        .handle()
        .control_addr()
        .map_or(String::new(), |a| format!(", control port {a}"));
    let thumbprint = linesentry_agent::source::opcua::Pki::new(sim.pki_dir())
        .list()
        .ok()
        .and_then(|certs| certs.into_iter().next())
        .map_or_else(|| "?".to_owned(), |c| c.thumbprint);
    println!(
        "linesentry sim: {} over OPC UA at {}{control}; user `{}` / password `{}`; server certificate {} ({})",
        profile.name,
        sim.endpoint_url(),
        opcua::DEFAULT_USER,
        opcua::DEFAULT_PASSWORD,
        thumbprint,
        sim.pki_dir().join("own/cert.der").display()
    );
    wait_for_signal().await;
    sim.shutdown().await;
    ExitCode::SUCCESS
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; stopping");
        return;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM"),
        _ = int.recv() => tracing::info!("SIGINT"),
    }
}
