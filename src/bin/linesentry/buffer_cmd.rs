//! `linesentry buffer stats|list|export`: offline inspection of a stopped agent's buffer.

use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;
use linesentry::buffer::Inspector;
use linesentry::event::SecurityEvent;

#[derive(Debug, Subcommand)]
pub(crate) enum BufferCommand {
    /// Depth, bytes, sequence numbers, drops.
    Stats {
        /// The agent's data directory (agent.data_dir).
        #[arg(long)]
        data: PathBuf,
    },
    /// One line per buffered event, oldest first.
    List {
        #[arg(long)]
        data: PathBuf,
        /// Start after this seq.
        #[arg(long)]
        after: Option<u64>,
        #[arg(long, default_value_t = 100)]
        limit: u64,
    },
    /// Every buffered event as JSON lines (the wire form), oldest first.
    Export {
        #[arg(long)]
        data: PathBuf,
        /// Write here instead of stdout.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

pub(crate) fn run(command: BufferCommand) -> ExitCode {
    match execute(command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("linesentry buffer: {message}");
            ExitCode::FAILURE
        }
    }
}

fn execute(command: BufferCommand) -> Result<(), String> {
    match command {
        BufferCommand::Stats { data } => {
            let inspector = Inspector::open(&data).map_err(|e| e.to_string())?;
            let stats = inspector.stats().map_err(|e| e.to_string())?;
            println!(
                "{}",
                serde_json::to_string_pretty(&stats).map_err(|e| e.to_string())?
            );
            Ok(())
        }
        BufferCommand::List { data, after, limit } => {
            let inspector = Inspector::open(&data).map_err(|e| e.to_string())?;
            let mut out = std::io::stdout().lock();
            let mut bad = 0u64;
            let mut closed = false;
            inspector
                .for_each(after, Some(limit), |item| match item {
                    // A reader that went away (`| head`) ends the listing quietly.
                    Ok(_) if closed => {}
                    Ok(e) => closed = writeln!(out, "{}", summary_line(&e)).is_err(),
                    Err(err) => {
                        bad += 1;
                        eprintln!("unreadable record: {err}");
                    }
                })
                .map_err(|e| e.to_string())?;
            finish(bad)
        }
        BufferCommand::Export { data, out } => {
            let inspector = Inspector::open(&data).map_err(|e| e.to_string())?;
            let sink: Box<dyn Write> = match &out {
                Some(path) => Box::new(
                    std::fs::File::create(path)
                        .map_err(|e| format!("cannot create {}: {e}", path.display()))?,
                ),
                None => Box::new(std::io::stdout().lock()),
            };
            let mut sink = BufWriter::new(sink);
            let mut bad = 0u64;
            let mut write_error = None;
            let n = inspector
                .for_each(None, None, |item| match item {
                    Ok(_) if write_error.is_some() => {}
                    Ok(e) => {
                        if let Err(err) = writeln!(sink, "{}", e.to_json()) {
                            write_error.get_or_insert(err);
                        }
                    }
                    Err(err) => {
                        bad += 1;
                        eprintln!("unreadable record: {err}");
                    }
                })
                .map_err(|e| e.to_string())?;
            let flushed = sink.flush();
            match write_error.map_or(flushed, Err) {
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(()),
                Err(e) => return Err(format!("write failed: {e}")),
                Ok(()) => {}
            }
            eprintln!("exported {} events", n - bad);
            finish(bad)
        }
    }
}

fn finish(bad: u64) -> Result<(), String> {
    if bad == 0 {
        Ok(())
    } else {
        Err(format!("{bad} record(s) could not be read"))
    }
}

fn summary_line(e: &SecurityEvent) -> String {
    format!(
        "{seq}\t{ts}\t{sev}\t{kind}\t{station}\t{data}",
        seq = e.seq,
        ts = e.timestamp,
        sev = e.severity,
        kind = e.event_type,
        station = e.station_id.as_deref().unwrap_or("-"),
        data = serde_json::Value::Object(e.event_data.clone()),
    )
}
