//! `linesentry buffer stats|list|export|dead-letters`: offline inspection of a stopped
//! agent's buffer, and putting dead letters back into its queue.

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Subcommand};
use linesentry_agent::buffer::{DeadLetter, Inspector, Queue, QueueOptions};
use linesentry_event::SecurityEvent;

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
    /// Events the receiver rejected (oldest seq first): seq, when, event type, id, reason.
    /// With `--requeue`, moves them back into the queue (the agent must be stopped).
    DeadLetters {
        #[command(flatten)]
        store: StoreArgs,
        /// One JSON object per line: seq, reason, dead_lettered_at and the event.
        #[arg(long)]
        json: bool,
        /// Move these dead letters (by seq) back into the queue, under their own seq; every
        /// one when no seq is given.
        #[arg(long, value_name = "SEQ", num_args = 0..)]
        requeue: Option<Vec<u64>>,
    },
}

/// Which store: the data directory itself, or the agent config that names it.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub(crate) struct StoreArgs {
    /// The agent's data directory (agent.data_dir).
    #[arg(long)]
    data: Option<PathBuf>,
    /// The agent's config file (its agent.data_dir, gateway_id and [buffer] are used).
    #[arg(long, short)]
    config: Option<PathBuf>,
}

/// Dead letters the store keeps at most (the table is bounded at 10,000).
const DEAD_LETTERS_MAX: usize = 100_000;

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
        BufferCommand::DeadLetters {
            store,
            json,
            requeue,
        } => dead_letters(store, json, requeue),
    }
}

/// The data directory, and the queue options to open it for writing.
fn resolve(store: StoreArgs) -> Result<(PathBuf, Option<QueueOptions>), String> {
    match (store.data, store.config) {
        (Some(dir), _) => Ok((dir, None)),
        (None, Some(path)) => {
            let config = linesentry_agent::config::load(&path).map_err(|errors| {
                format!("{}: {} error(s):\n{errors}", path.display(), errors.0.len())
            })?;
            let opts = config.buffer.clone();
            Ok((config.agent.data_dir.clone(), Some(opts)))
        }
        (None, None) => Err("expected --data DIR or --config FILE".into()),
    }
}

fn dead_letters(store: StoreArgs, json: bool, requeue: Option<Vec<u64>>) -> Result<(), String> {
    let (dir, opts) = resolve(store)?;
    // Read-only first: a missing store is not created, a store in use is named as such.
    let dead = {
        let inspector = Inspector::open(&dir).map_err(|e| e.to_string())?;
        inspector
            .dead_letters(DEAD_LETTERS_MAX)
            .map_err(|e| e.to_string())?
    };
    match requeue {
        None => print_dead_letters(&dead, json),
        Some(seqs) => requeue_dead_letters(&dir, opts, &dead, seqs),
    }
}

fn print_dead_letters(dead: &[DeadLetter], json: bool) -> Result<(), String> {
    let mut out = BufWriter::new(std::io::stdout().lock());
    for d in dead {
        let line = if json {
            serde_json::to_string(d).map_err(|e| e.to_string())?
        } else {
            format!(
                "{seq}\t{at}\t{kind}\t{id}\t{reason}",
                seq = d.seq,
                at = d.dead_lettered_at,
                kind = d.event.event_type,
                id = d.event.id,
                reason = one_line(&d.reason),
            )
        };
        match writeln!(out, "{line}") {
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(()),
            Err(e) => return Err(format!("write failed: {e}")),
            Ok(()) => {}
        }
    }
    match out.flush() {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(format!("write failed: {e}")),
        _ => {
            if !json {
                eprintln!("{} dead letter(s)", dead.len());
            }
            Ok(())
        }
    }
}

/// Moves `seqs` (every dead letter when empty) back into the queue. Refuses, moving
/// nothing, when a seq is not a dead letter.
fn requeue_dead_letters(
    dir: &Path,
    opts: Option<QueueOptions>,
    dead: &[DeadLetter],
    seqs: Vec<u64>,
) -> Result<(), String> {
    let unknown: Vec<String> = seqs
        .iter()
        .filter(|s| !dead.iter().any(|d| d.seq == **s))
        .map(u64::to_string)
        .collect();
    if !unknown.is_empty() {
        return Err(format!(
            "not in the dead-letter table: seq {}; nothing was requeued",
            unknown.join(", ")
        ));
    }
    if dead.is_empty() {
        eprintln!("no dead letters to requeue");
        return Ok(());
    }
    let opts = opts.unwrap_or_else(|| QueueOptions {
        // Without the config, the agent's quota is unknown: requeueing must not evict what
        // is buffered; the agent applies its own quota when it appends next.
        quota_bytes: 1 << 50,
        ..QueueOptions::new(dir, dead[0].event.gateway_id.clone())
    });
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    let moved = runtime.block_on(async {
        let (queue, _) = Queue::open(opts).map_err(|e| e.to_string())?;
        let wanted = (!seqs.is_empty()).then_some(seqs);
        let moved = queue.requeue(wanted).await.map_err(|e| e.to_string());
        queue.close().await;
        moved
    })?;
    eprintln!("requeued {moved} dead letter(s); the agent sends them on its next start");
    Ok(())
}

/// Free text on one line (tabs and newlines would break the columns).
fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
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
