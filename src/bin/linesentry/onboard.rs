//! `linesentry import`, `discover` and `probe`: bringing up a new station. The logic is in
//! `linesentry_agent::onboard`; this file turns arguments into its inputs and its results
//! into text and an exit status.

use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use linesentry_agent::config;
use linesentry_agent::onboard::discover::{self, DiscoverOptions};
use linesentry_agent::onboard::import::{self, ImportOptions};
use linesentry_agent::onboard::probe::{self, ProbeOptions, ProbeTarget};
use linesentry_agent::onboard::{snake_name, write_profile, OpcUaTarget, WriteError};
use linesentry_agent::source::{
    OpcUaIdentity, OpcUaSecurityMode, OpcUaSecurityPolicy, Profile, SourceConfig,
};
use linesentry_common::Secret;

#[derive(Debug, Subcommand)]
pub(crate) enum ImportCommand {
    /// A Modbus register map in CSV (columns: name, area, address, type, order, bit,
    /// length, scale, offset, unit, role, min, max, states, description, or the vendor
    /// names for them) to a station profile. Every bad row is reported, each with its line
    /// and column; nothing is written unless the whole profile is valid.
    #[command(
        after_help = "Example:\n  linesentry import modbus oven-registers.csv --one-based -o devices/reflow_oven_b.toml"
    )]
    Modbus {
        /// The register map (UTF-8, with or without BOM; `,`, `;` or tab between columns).
        file: PathBuf,
        /// The map counts registers from 1 (register 1 is protocol address 0).
        #[arg(long)]
        one_based: bool,
        /// The profile to write (`<name>.toml`; the name is the file stem). Default: the
        /// CSV's name as `<name>.toml` in the current directory.
        #[arg(long, short)]
        out: Option<PathBuf>,
        /// Replace an existing profile file.
        #[arg(long)]
        force: bool,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum DiscoverCommand {
    /// Browse an OPC UA server and write a profile skeleton: every scalar variable with
    /// its node id, type, unit, EURange as limits and a suggested role.
    #[command(
        after_help = "Example:\n  linesentry discover opcua opc.tcp://10.0.4.20:4840 --config /etc/linesentry/agent.toml \\\n    --security-mode SignAndEncrypt --security-policy Basic256Sha256 --user linesentry --password-env OPCUA_PW \\\n    -o devices/cell_controller_b.toml"
    )]
    Opcua {
        /// The server's endpoint URL (`opc.tcp://host:port/path`).
        endpoint: String,
        #[command(flatten)]
        security: OpcUaArgs,
        /// The node to browse from.
        #[arg(long, default_value = "i=85")]
        start: String,
        /// Levels below the start node.
        #[arg(long, default_value_t = 10)]
        depth: u32,
        /// Stop after visiting this many nodes (the profile then says it is incomplete).
        #[arg(long, default_value_t = 50_000)]
        max_nodes: usize,
        /// Keep only variables whose browse path (`Cell/Process/Torque`) matches; `*` is
        /// any text; repeatable.
        #[arg(long)]
        include: Vec<String>,
        /// Leave out variables whose browse path matches; repeatable.
        #[arg(long)]
        exclude: Vec<String>,
        /// Node classes to browse into: `object` (folders and objects only) or `all`
        /// (variables' components too).
        #[arg(long, default_value = "all", value_parser = ["object", "all"])]
        node_class: String,
        /// Browse the Server object as well (the agent reads its status on its own).
        #[arg(long)]
        include_server: bool,
        /// The profile to write (`<name>.toml`).
        #[arg(long, short)]
        out: PathBuf,
        /// Replace an existing profile file.
        #[arg(long)]
        force: bool,
    },
}

/// The security of an OPC UA connection, as a station's keys.
#[derive(Debug, Args)]
pub(crate) struct OpcUaArgs {
    /// The agent configuration whose `[agent]` gives the data directory (the PKI) and the
    /// gateway id (the application URI); or give --data and --gateway-id.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// The agent's data directory (its PKI is `<data>/pki`).
    #[arg(long, conflicts_with = "config")]
    data: Option<PathBuf>,
    /// The gateway id, for the application URI `urn:linesentry:<id>`.
    #[arg(long, conflicts_with = "config")]
    gateway_id: Option<String>,
    /// None, Sign or SignAndEncrypt.
    #[arg(long, default_value = "None")]
    security_mode: String,
    /// None, Basic256Sha256, Aes128_Sha256_RsaOaep or Aes256_Sha256_RsaPss.
    #[arg(long, default_value = "None")]
    security_policy: String,
    /// User name identity (with --password-env or --password-file).
    #[arg(long)]
    user: Option<String>,
    /// The environment variable holding the password.
    #[arg(long, requires = "user", conflicts_with = "password_file")]
    password_env: Option<String>,
    /// The file holding the password.
    #[arg(long, requires = "user")]
    password_file: Option<PathBuf>,
    /// X.509 user identity: certificate and key (PEM or DER).
    #[arg(long, requires = "user_key", conflicts_with = "user")]
    user_cert: Option<PathBuf>,
    #[arg(long, requires = "user_cert")]
    user_key: Option<PathBuf>,
    /// Bound of every request and of connecting, in milliseconds.
    #[arg(long, default_value_t = 5000)]
    timeout_ms: u64,
}

#[derive(Debug, Args)]
pub(crate) struct ProbeArgs {
    /// An agent configuration: probe the station --station names, as configured.
    #[arg(long, short, requires = "station")]
    config: Option<PathBuf>,
    /// The station id in --config.
    #[arg(long)]
    station: Option<String>,
    /// A profile to probe against --address (Modbus TCP) or --endpoint (OPC UA).
    #[arg(
        long,
        short,
        conflicts_with = "config",
        required_unless_present = "config"
    )]
    profile: Option<PathBuf>,
    /// Modbus TCP `host:port`.
    #[arg(long, conflicts_with = "endpoint")]
    address: Option<String>,
    /// Modbus unit id.
    #[arg(long, default_value_t = 1)]
    unit_id: u8,
    /// OPC UA endpoint URL, with the security options below.
    #[arg(long)]
    endpoint: Option<String>,
    #[command(flatten)]
    security: ProbeSecurity,
    /// Polls (each prints a table).
    #[arg(long, short = 'n', default_value_t = 1)]
    polls: u32,
    /// Between the start of two polls, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    interval_ms: u64,
}

/// OPC UA security for `probe --endpoint`, as `discover opcua` takes it (without --config,
/// which names the agent configuration for probe).
#[derive(Debug, Args)]
pub(crate) struct ProbeSecurity {
    #[arg(long)]
    data: Option<PathBuf>,
    #[arg(long)]
    gateway_id: Option<String>,
    #[arg(long, default_value = "None")]
    security_mode: String,
    #[arg(long, default_value = "None")]
    security_policy: String,
    #[arg(long)]
    user: Option<String>,
    #[arg(long, requires = "user", conflicts_with = "password_file")]
    password_env: Option<String>,
    #[arg(long, requires = "user")]
    password_file: Option<PathBuf>,
    #[arg(long, requires = "user_key", conflicts_with = "user")]
    user_cert: Option<PathBuf>,
    #[arg(long, requires = "user_cert")]
    user_key: Option<PathBuf>,
    /// Bound of every request and of connecting, in milliseconds (default: the station's
    /// timeout with --config, else 3000).
    #[arg(long)]
    timeout_ms: Option<u64>,
}

pub(crate) fn import(command: ImportCommand) -> ExitCode {
    let ImportCommand::Modbus {
        file,
        one_based,
        out,
        force,
    } = command;
    let bytes = match std::fs::read(&file) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("linesentry import: cannot read {}: {e}", file.display());
            return ExitCode::FAILURE;
        }
    };
    let stem = file
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let out = if let Some(out) = out {
        out
    } else {
        let Some(name) = snake_name(&stem) else {
            eprintln!(
                "linesentry import: cannot make a profile name of `{stem}`; give -o <name>.toml"
            );
            return ExitCode::FAILURE;
        };
        PathBuf::from(format!("{name}.toml"))
    };
    let Some(name) = profile_name(&out) else {
        return ExitCode::FAILURE;
    };
    if out.exists() && !force {
        eprintln!(
            "linesentry import: {} exists; pass --force to replace it",
            out.display()
        );
        return ExitCode::FAILURE;
    }
    let options = ImportOptions {
        profile_name: name,
        source_name: file.display().to_string(),
        one_based,
    };
    let imported = match import::import(&bytes, &options) {
        Ok(i) => i,
        Err(errors) => {
            eprintln!("{errors}");
            eprintln!(
                "{}: {} error(s); nothing written",
                file.display(),
                errors.errors.len()
            );
            return ExitCode::FAILURE;
        }
    };
    for note in &imported.notes {
        eprintln!("note: {note}");
    }
    match write_profile(&out, &imported.text) {
        Ok(profile) => {
            println!(
                "{}: {} tags from {} (check the suggested roles, then `linesentry validate --profile {0}`)",
                out.display(),
                profile.tags.len(),
                file.display()
            );
            ExitCode::SUCCESS
        }
        Err(WriteError::Invalid(errors)) => {
            // Name the CSV line of each tag the loader refused.
            for e in &errors.0 {
                match imported.line_of(&e.key_path) {
                    Some(line) => eprintln!("{}:{line}: {}", file.display(), e.message),
                    None => eprintln!("{e}"),
                }
            }
            eprintln!("{}: nothing written", out.display());
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("linesentry import: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The profile name an output path gives, or an error printed.
fn profile_name(out: &Path) -> Option<String> {
    let stem = out.file_stem().and_then(|s| s.to_str());
    match stem {
        Some(stem) if out.extension().is_some_and(|e| e == "toml") && !stem.is_empty() => {
            Some(stem.to_owned())
        }
        _ => {
            eprintln!(
                "linesentry: {}: expected a profile file named `<name>.toml`",
                out.display()
            );
            None
        }
    }
}

fn runtime() -> Option<tokio::runtime::Runtime> {
    match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => Some(rt),
        Err(e) => {
            eprintln!("linesentry: cannot start the runtime: {e}");
            None
        }
    }
}

#[allow(clippy::too_many_lines)] // arguments in, one discover, the profile out: in the order the user reads
pub(crate) fn discover(command: DiscoverCommand) -> ExitCode {
    let DiscoverCommand::Opcua {
        endpoint,
        security,
        start,
        depth,
        max_nodes,
        include,
        exclude,
        node_class,
        include_server,
        out,
        force,
    } = command;
    let Some(name) = profile_name(&out) else {
        return ExitCode::FAILURE;
    };
    if out.exists() && !force {
        eprintln!(
            "linesentry discover: {} exists; pass --force to replace it",
            out.display()
        );
        return ExitCode::FAILURE;
    }
    let (data, gateway_id) = if let Some(path) = &security.config {
        match config::load_agent(path) {
            Ok(agent) => (agent.data_dir, agent.gateway_id),
            Err(errors) => {
                eprintln!("{errors}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        let (Some(d), Some(g)) = (&security.data, &security.gateway_id) else {
            eprintln!("linesentry discover: give --config (the agent configuration) or both --data and --gateway-id, so the agent's own PKI and certificate are used");
            return ExitCode::from(2);
        };
        (d.clone(), g.clone())
    };
    let target = match opcua_target(
        &endpoint,
        &Security {
            mode: &security.security_mode,
            policy: &security.security_policy,
            user: security.user.as_deref(),
            password_env: security.password_env.as_deref(),
            password_file: security.password_file.as_deref(),
            user_cert: security.user_cert.as_deref(),
            user_key: security.user_key.as_deref(),
        },
        data,
        gateway_id,
        Duration::from_millis(security.timeout_ms),
    ) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("linesentry discover: {e}");
            return ExitCode::from(2);
        }
    };
    let options = DiscoverOptions {
        start,
        max_depth: depth,
        max_nodes,
        include,
        exclude,
        expand_variables: node_class == "all",
        include_server,
    };
    let Some(rt) = runtime() else {
        return ExitCode::FAILURE;
    };
    let terminal = std::io::stderr().is_terminal();
    let began = Instant::now();
    let mut progress = move |p: discover::Progress| {
        if terminal {
            eprint!(
                "\r\x1b[2Kbrowsing: {} nodes, {} variables, {} queued",
                p.visited, p.variables, p.queued
            );
        }
    };
    let found = rt.block_on(discover::discover(&target, &options, &mut progress));
    if terminal {
        eprint!("\r\x1b[2K");
    }
    let found = match found {
        Ok(f) => f,
        Err(e) => {
            eprintln!("linesentry discover: {endpoint}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let text = discover::render(&name, &endpoint, &found, &options);
    match write_profile(&out, &text) {
        Ok(profile) => {
            println!(
                "{}: {} tags from {} variables, {} nodes visited in {:.1} s{}",
                out.display(),
                profile.tags.len(),
                found.variables.len(),
                found.visited,
                began.elapsed().as_secs_f64(),
                if found.truncated {
                    format!(" (INCOMPLETE: stopped at --max-nodes {max_nodes})")
                } else {
                    String::new()
                }
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("linesentry discover: {e}");
            ExitCode::FAILURE
        }
    }
}

struct Security<'a> {
    mode: &'a str,
    policy: &'a str,
    user: Option<&'a str>,
    password_env: Option<&'a str>,
    password_file: Option<&'a Path>,
    user_cert: Option<&'a Path>,
    user_key: Option<&'a Path>,
}

fn opcua_target(
    endpoint: &str,
    s: &Security<'_>,
    data_dir: PathBuf,
    gateway_id: String,
    timeout: Duration,
) -> Result<OpcUaTarget, String> {
    let security_mode: OpcUaSecurityMode =
        serde_json::from_value(serde_json::Value::String(s.mode.to_owned())).map_err(|_| {
            format!(
                "--security-mode `{}`: expected None, Sign or SignAndEncrypt",
                s.mode
            )
        })?;
    let security_policy: OpcUaSecurityPolicy = serde_json::from_value(
        serde_json::Value::String(s.policy.to_owned()),
    )
    .map_err(|_| {
        format!(
            "--security-policy `{}`: expected None, Basic256Sha256, Aes128_Sha256_RsaOaep or Aes256_Sha256_RsaPss",
            s.policy
        )
    })?;
    let identity = match (s.user, s.user_cert, s.user_key) {
        (Some(user), _, _) => {
            let password = match (s.password_env, s.password_file) {
                (Some(var), _) => std::env::var(var).map_err(|_| {
                    format!("--password-env: environment variable `{var}` is not set")
                })?,
                (None, Some(file)) => std::fs::read_to_string(file)
                    .map(|t| t.trim_end_matches(['\r', '\n']).to_owned())
                    .map_err(|e| format!("--password-file {}: {e}", file.display()))?,
                (None, None) => {
                    return Err("--user needs --password-env VAR or --password-file FILE".into())
                }
            };
            OpcUaIdentity::UserName {
                user: user.to_owned(),
                password: Secret::new(password),
            }
        }
        (None, Some(cert), Some(key)) => OpcUaIdentity::Certificate {
            cert: cert.to_owned(),
            key: key.to_owned(),
        },
        _ => OpcUaIdentity::Anonymous,
    };
    Ok(OpcUaTarget {
        endpoint_url: endpoint.to_owned(),
        security_mode,
        security_policy,
        identity,
        data_dir,
        gateway_id,
        timeout,
    })
}

pub(crate) fn probe(args: &ProbeArgs) -> ExitCode {
    let (profile, target, timeout) = match probe_target(args) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("linesentry probe: {e}");
            return ExitCode::from(2);
        }
    };
    let options = ProbeOptions {
        polls: args.polls.max(1),
        interval: Duration::from_millis(args.interval_ms),
        timeout,
    };
    let Some(rt) = runtime() else {
        return ExitCode::FAILURE;
    };
    let reports = match rt.block_on(probe::probe(&profile, &target, &options)) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("linesentry probe: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut failed_tags = std::collections::BTreeSet::new();
    for report in &reports {
        if reports.len() > 1 {
            println!("poll {}/{}", report.poll, reports.len());
        }
        print!("{}", probe::table(report));
        for r in &report.results {
            if r.problem.is_some() {
                failed_tags.insert(r.tag.clone());
            }
        }
    }
    if failed_tags.is_empty() {
        println!(
            "{}: all {} tags ok in {} poll(s)",
            profile.name,
            profile.tags.len(),
            reports.len()
        );
        ExitCode::SUCCESS
    } else {
        println!(
            "{}: {} of {} tags failed: {}",
            profile.name,
            failed_tags.len(),
            profile.tags.len(),
            failed_tags.into_iter().collect::<Vec<_>>().join(", ")
        );
        ExitCode::FAILURE
    }
}

#[allow(clippy::too_many_lines)] // the two ways to name a device (a configured station, or a profile and an address), each checked
fn probe_target(args: &ProbeArgs) -> Result<(Profile, ProbeTarget, Duration), String> {
    let s = &args.security;
    if let (Some(path), Some(id)) = (&args.config, &args.station) {
        let config = config::load(path).map_err(|e| format!("{e}"))?;
        let station = config
            .stations
            .iter()
            .find(|st| &st.id == id)
            .ok_or_else(|| {
                let ids: Vec<&str> = config.stations.iter().map(|s| s.id.as_str()).collect();
                format!(
                    "no station `{id}` in {}; it has: {}",
                    path.display(),
                    ids.join(", ")
                )
            })?;
        let timeout = s.timeout_ms.map_or(station.timeout, Duration::from_millis);
        let target = match &station.source {
            SourceConfig::ModbusTcp { address, unit_id } => ProbeTarget::ModbusTcp {
                address: address.clone(),
                unit_id: *unit_id,
            },
            SourceConfig::OpcUa {
                endpoint_url,
                security_mode,
                security_policy,
                identity,
                ..
            } => ProbeTarget::OpcUa(OpcUaTarget {
                endpoint_url: endpoint_url.clone(),
                security_mode: *security_mode,
                security_policy: *security_policy,
                identity: identity.clone(),
                data_dir: config.agent.data_dir.clone(),
                gateway_id: config.agent.gateway_id.clone(),
                timeout,
            }),
            other => {
                return Err(format!(
                    "station `{id}` has source `{}`; probe reads modbus_tcp and opcua stations",
                    other.kind()
                ))
            }
        };
        return Ok(((*station.profile).clone(), target, timeout));
    }
    let Some(path) = &args.profile else {
        return Err(
            "give --config FILE --station ID, or --profile FILE with --address or --endpoint"
                .into(),
        );
    };
    let profile = config::load_profile(path).map_err(|e| format!("{e}"))?;
    let timeout = Duration::from_millis(s.timeout_ms.unwrap_or(3000));
    let target = match (&args.address, &args.endpoint) {
        (Some(address), None) => ProbeTarget::ModbusTcp {
            address: address.clone(),
            unit_id: args.unit_id,
        },
        (None, Some(endpoint)) => {
            let (Some(data), Some(gateway_id)) = (&s.data, &s.gateway_id) else {
                return Err("--endpoint needs --data DIR and --gateway-id ID (the agent's PKI and application URI), or use --config and --station".into());
            };
            ProbeTarget::OpcUa(opcua_target(
                endpoint,
                &Security {
                    mode: &s.security_mode,
                    policy: &s.security_policy,
                    user: s.user.as_deref(),
                    password_env: s.password_env.as_deref(),
                    password_file: s.password_file.as_deref(),
                    user_cert: s.user_cert.as_deref(),
                    user_key: s.user_key.as_deref(),
                },
                data.clone(),
                gateway_id.clone(),
                timeout,
            )?)
        }
        _ => {
            return Err(
                "--profile needs --address HOST:PORT (Modbus TCP) or --endpoint URL (OPC UA)"
                    .into(),
            )
        }
    };
    let protocol_fits = matches!(
        (&target, profile.protocol),
        (
            ProbeTarget::ModbusTcp { .. },
            linesentry_agent::source::Protocol::Modbus
        ) | (
            ProbeTarget::OpcUa(_),
            linesentry_agent::source::Protocol::OpcUa
        )
    );
    if !protocol_fits {
        return Err(format!(
            "{} is a {} profile; use {}",
            path.display(),
            profile.protocol,
            match profile.protocol {
                linesentry_agent::source::Protocol::Modbus => "--address HOST:PORT",
                linesentry_agent::source::Protocol::OpcUa => "--endpoint URL",
            }
        ));
    }
    Ok((profile, target, timeout))
}
