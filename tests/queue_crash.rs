//! Crash test: a child process appends continuously and is killed with SIGKILL at random
//! moments. After each kill the store must reopen without a reset and hold every event whose
//! append was confirmed, in seq order, with no gap in seq and no duplicate.

use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use linesentry::buffer::{Queue, QueueOptions};

/// `cargo test` builds the examples next to the test binaries; a filtered run
/// (`cargo test --test queue_crash`) does not, so build it then.
fn appender() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let path = exe
        .parent()
        .and_then(|deps| deps.parent())
        .unwrap()
        .join("examples")
        .join("queue_appender");
    if !path.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "--example", "queue_appender"])
            .status()
            .unwrap();
        assert!(
            status.success(),
            "building the queue_appender example failed"
        );
    }
    assert!(path.exists(), "{} missing", path.display());
    path
}

#[test]
fn every_confirmed_append_survives_sigkill_in_order_without_gaps_or_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let exe = appender();
    let mut confirmed: BTreeMap<u64, (u64, u64, u64)> = BTreeMap::new();
    let kills = 24;
    let mut rng = fastrand::Rng::with_seed(0x5eed);
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    for run in 0..kills {
        let mut child = Command::new(&exe)
            .arg(dir.path())
            .arg(run.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut lines = Vec::new();
            for line in BufReader::new(stdout).lines() {
                match line {
                    Ok(l) => lines.push(l),
                    Err(_) => break,
                }
            }
            lines
        });
        // Kill at a random moment, some very early (while opening), most mid-stream.
        let wait = Duration::from_millis(rng.u64(5..400));
        let started = Instant::now();
        while started.elapsed() < wait {
            std::thread::sleep(Duration::from_millis(5));
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let lines = reader.join().unwrap();
        for line in lines {
            let f: Vec<u64> = line
                .split_whitespace()
                .skip(1)
                .map(|x| x.parse().unwrap())
                .collect();
            if let [r, seq, n, k] = f[..] {
                assert!(
                    confirmed.insert(seq, (r, n, k)).is_none(),
                    "seq {seq} confirmed twice"
                );
            }
        }

        // Reopen: no reset, everything confirmed present and identical, contiguous seqs.
        rt.block_on(async {
            let (q, report) = Queue::open(QueueOptions::new(dir.path(), "gw-crash")).unwrap();
            assert!(
                report.reset.is_none(),
                "store was reset after kill {run}: {report:?}"
            );
            let stored = q.peek(None, usize::MAX).unwrap();
            let seqs: Vec<u64> = stored.iter().map(|e| e.seq).collect();
            if let (Some(first), Some(last)) = (seqs.first(), seqs.last()) {
                assert_eq!(*first, 1);
                assert_eq!(
                    seqs.len() as u64,
                    last - first + 1,
                    "gap in seq after kill {run}"
                );
            }
            let mut ids = HashSet::new();
            let mut contents = HashSet::new();
            for e in &stored {
                assert!(ids.insert(e.id), "duplicate id {}", e.id);
                let key = (
                    e.event_data["run"].as_u64().unwrap(),
                    e.event_data["n"].as_u64().unwrap(),
                    e.event_data["k"].as_u64().unwrap(),
                );
                assert!(contents.insert(key), "duplicate content {key:?}");
            }
            let by_seq: BTreeMap<u64, _> = stored.iter().map(|e| (e.seq, e)).collect();
            for (seq, (r, n, k)) in &confirmed {
                let e = by_seq
                    .get(seq)
                    .unwrap_or_else(|| panic!("confirmed seq {seq} lost after kill {run}"));
                assert_eq!(e.event_data["run"], *r);
                assert_eq!(e.event_data["n"], *n);
                assert_eq!(e.event_data["k"], *k);
            }
            q.close().await;
        });
    }
    assert!(
        confirmed.len() > 1000,
        "the child confirmed only {} appends in {kills} runs",
        confirmed.len()
    );
    println!(
        "{kills} SIGKILLs, {} confirmed events, all present",
        confirmed.len()
    );
}
