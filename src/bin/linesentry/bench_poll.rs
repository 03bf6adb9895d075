//! `linesentry bench poll`: the whole agent (poll, decode, rules, durable queue) against
//! simulated Modbus TCP stations served by a child process, so the agent process's CPU and
//! memory are its own. Figures: readings achieved per second vs requested, CPU % of one core
//! (user + system from /proc/self/stat), resident memory (VmRSS, VmHWM).

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use linesentry_agent::runtime::{self, RunOptions};
use tokio_util::sync::CancellationToken;

fn profile_text(registers: u16, role: &str) -> String {
    let mut t = String::from(
        "[profile]\nname = \"bench_station\"\ndescription = \"benchmark: contiguous u16 measurements\"\nprotocol = \"modbus\"\n",
    );
    for i in 0..registers {
        let _ = write!(
            t,
            "\n[[tags]]\nname = \"r{i:03}\"\nrole = \"{role}\"\ntype = \"u16\"\narea = \"holding_register\"\naddress = {i}\n"
        );
        if role == "measurement" {
            t.push_str("limits = { min = 0.0, max = 1000.0 }\n");
        }
    }
    t
}

/// Child: serves `stations` simulators of the profile and prints `ADDR host:port` lines.
pub(super) fn serve(profile: &Path, stations: u16) -> ExitCode {
    let Ok(rt) = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
    else {
        return ExitCode::FAILURE;
    };
    rt.block_on(async {
        let profile = match linesentry_sim::load_profile(profile) {
            Ok(p) => p,
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::FAILURE;
            }
        };
        let mut handles = Vec::new();
        for i in 0..stations {
            let options = linesentry_sim::SimOptions {
                seed: u64::from(i),
                ..linesentry_sim::SimOptions::default()
            };
            match linesentry_sim::modbus::start(profile.clone(), &options).await {
                Ok(h) => {
                    println!("ADDR {}", h.local_addr());
                    handles.push(h);
                }
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::FAILURE;
                }
            }
        }
        println!("READY");
        let _ = std::io::stdout().flush();
        // Until the parent closes our stdin.
        let _ = tokio::task::spawn_blocking(|| {
            let mut sink = String::new();
            while std::io::stdin().read_line(&mut sink).is_ok_and(|n| n > 0) {}
        })
        .await;
        for h in handles {
            h.shutdown().await;
        }
        ExitCode::SUCCESS
    })
}

/// CPU seconds (user + system) used by this process so far.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|x| x.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of stat, 12 and 13 after the name and state.
    (ticks(11) + ticks(12)) / 100.0
}

fn status_kib(key: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// What `bench poll` runs.
#[derive(Debug)]
pub(super) struct Options {
    pub(super) stations: u16,
    pub(super) registers: u16,
    pub(super) interval_ms: u64,
    pub(super) seconds: u64,
    pub(super) role: String,
    pub(super) linger_ms: u64,
    pub(super) routine_commit_ms: Option<u64>,
    pub(super) cache_mib: u64,
    pub(super) worker_threads: usize,
}

pub(super) fn run(options: &Options) -> ExitCode {
    match measure(options) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench poll: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Starts the `bench poll-serve` child with `stations` simulated stations of `profile`;
/// returns it with the stations' addresses once it is ready.
fn spawn_stations(
    stations: u16,
    profile: &std::path::Path,
) -> Result<(std::process::Child, Vec<String>), String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut child = Command::new(exe)
        .args([
            "bench",
            "poll-serve",
            "--stations",
            &stations.to_string(),
            "--profile",
        ])
        .arg(profile)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    let mut addrs = Vec::new();
    let out = child.stdout.take().ok_or("no child stdout")?;
    for line in BufReader::new(out).lines() {
        let line = line.map_err(|e| e.to_string())?;
        if let Some(a) = line.strip_prefix("ADDR ") {
            addrs.push(a.to_owned());
        } else if line == "READY" {
            break;
        }
    }
    if addrs.len() != usize::from(stations) {
        let _ = child.kill();
        return Err(format!(
            "the simulator child served {} of {stations} stations",
            addrs.len()
        ));
    }
    Ok((child, addrs))
}

fn measure(options: &Options) -> Result<(), String> {
    let &Options {
        stations,
        registers,
        interval_ms,
        seconds,
        ref role,
        linger_ms,
        routine_commit_ms,
        cache_mib,
        worker_threads,
    } = options;
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let devices = dir.path().join("devices");
    std::fs::create_dir_all(&devices).map_err(|e| e.to_string())?;
    let profile = devices.join("bench_station.toml");
    std::fs::write(&profile, profile_text(registers, role)).map_err(|e| e.to_string())?;

    let (mut child, addrs) = spawn_stations(stations, &profile)?;
    let mut config = format!(
        "[agent]\ngateway_id = \"gw-bench\"\nsite = \"bench\"\ndata_dir = \"{}\"\nprofiles_dir = \"{}\"\n\n[log]\nlevel = \"warn\"\n\n[health]\nenabled = false\n\n[buffer]\ncommit_linger_ms = {linger_ms}\ncache_mib = {cache_mib}\n",
        dir.path().join("data").display(),
        devices.display()
    );
    if let Some(ms) = routine_commit_ms {
        let _ = writeln!(config, "routine_commit_ms = {ms}");
    }
    for (i, a) in addrs.iter().enumerate() {
        let _ = write!(
            config,
            "\n[[stations]]\nid = \"st-{i:03}\"\nprofile = \"bench_station\"\nsource = \"modbus_tcp\"\naddress = \"{a}\"\npoll_interval_ms = {interval_ms}\ntimeout_ms = 1000\n"
        );
    }
    let config = linesentry_agent::config::load_str(&dir.path().join("agent.toml"), &config)
        .map_err(|e| e.to_string())?;

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(worker_threads)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let routine = config.buffer.routine_commit;
    let (summary, cpu, wall, rss_kib) = rt.block_on(async {
        let shutdown = CancellationToken::new();
        let agent = tokio::spawn(runtime::run(
            config,
            RunOptions::default(),
            shutdown.clone(),
        ));
        // Let connections settle before measuring.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let (cpu0, t0) = (cpu_seconds(), Instant::now());
        tokio::time::sleep(Duration::from_secs(seconds)).await;
        let (cpu, wall, rss) = (cpu_seconds() - cpu0, t0.elapsed(), status_kib("VmRSS:"));
        shutdown.cancel();
        let summary = agent
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        Ok::<_, String>((summary, cpu, wall, rss))
    })?;
    drop(child.stdin.take());
    let _ = child.wait();
    let total = wall.as_secs_f64() + 2.0;
    let requested = f64::from(stations) * f64::from(registers) * 1000.0 / interval_ms as f64;
    let achieved = summary.readings as f64 / total;
    println!(
        "bench poll: {stations} stations x {registers} {role} registers @ {interval_ms} ms for {seconds} s, linger {linger_ms} ms, \
         routine commit {} ms, \
         cache {cache_mib} MiB, {worker_threads} worker threads: \
         {achieved:.0} readings/s of {requested:.0} requested ({:.1} %), CPU {:.2} % of one core, \
         RSS {:.1} MiB (peak {:.1} MiB), {} events, {} commits ({:.0}/s)",
        routine.as_millis(),
        achieved / requested * 100.0,
        cpu / wall.as_secs_f64() * 100.0,
        rss_kib as f64 / 1024.0,
        status_kib("VmHWM:") as f64 / 1024.0,
        summary.events,
        summary.commits,
        summary.commits as f64 / total
    );
    Ok(())
}
