//! Crash test: a child process appends continuously and is killed with SIGKILL at random
//! moments. After each kill the store must reopen without a reset and hold every event whose
//! append was confirmed, in seq order, with no gap in seq and no duplicate.

use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use linesentry_agent::buffer::{Queue, QueueOptions};
use linesentry_event::{EventType, SecurityEvent, Severity};

const CHILD_ENV: &str = "LINESENTRY_CRASH_CHILD";
const TEST_NAME: &str =
    "queue_crash::every_confirmed_append_survives_sigkill_in_order_without_gaps_or_duplicates";

/// The child: appends from several tasks as fast as it can and prints one line per
/// confirmed event (`OK run seq n k`), until killed. It is this same test binary, started
/// with `CHILD_ENV` set, so it is always built from the code under test.
fn child(dir: &str, run: u64) -> ! {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    rt.block_on(async {
        let (queue, _) = Queue::open(QueueOptions::new(dir, "gw-crash")).expect("open queue");
        let mut tasks = Vec::new();
        for task in 0..4u64 {
            let queue = queue.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0.. {
                    let n = i * 4 + task;
                    let batch: Vec<_> = (0..=(i % 7))
                        .map(|k| {
                            SecurityEvent::new("gw-crash", EventType::EquipmentStatus)
                                .severity(if k % 3 == 0 {
                                    Severity::Warn
                                } else {
                                    Severity::Info
                                })
                                .data("run", run)
                                .data("n", n)
                                .data("k", k)
                        })
                        .collect();
                    let seqs = queue.append(&batch).await.expect("append");
                    let mut out = std::io::stdout().lock();
                    for (k, seq) in seqs.iter().enumerate() {
                        writeln!(out, "OK {run} {seq} {n} {k}").unwrap();
                    }
                    out.flush().unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    });
    std::process::exit(0)
}

#[test]
#[allow(clippy::too_many_lines)] // one scenario, read top to bottom
fn every_confirmed_append_survives_sigkill_in_order_without_gaps_or_duplicates() {
    if let Ok(spec) = std::env::var(CHILD_ENV) {
        let (dir, run) = spec.rsplit_once('|').unwrap();
        child(dir, run.parse().unwrap());
    }
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut confirmed: BTreeMap<u64, (u64, u64, u64)> = BTreeMap::new();
    let kills = 24;
    let mut rng = fastrand::Rng::with_seed(0x5eed);
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    for run in 0..kills {
        let mut child = Command::new(&exe)
            .args(["--exact", TEST_NAME, "--nocapture", "--test-threads", "1"])
            .env(CHILD_ENV, format!("{}|{run}", dir.path().display()))
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
        // The random moment is the test: a fixed sleep of that length.
        std::thread::sleep(wait);
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let lines = reader.join().unwrap();
        for line in lines {
            if !line.starts_with("OK ") {
                continue;
            }
            let f: Vec<u64> = line
                .split_whitespace()
                .skip(1)
                .map_while(|x| x.parse().ok())
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
