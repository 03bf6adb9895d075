//! Disk full: a child process appends under a file-size limit (RLIMIT_FSIZE, so writes past
//! it fail with EFBIG as on a full disk) until the queue refuses. The refusal must be a clear
//! error, and after reopening without the limit every confirmed event must be there and the
//! store must not need a reset.
#![allow(unsafe_code)] // setrlimit/signal in the child process only

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use linesentry_agent::buffer::{Queue, QueueOptions};
use linesentry_event::{EventType, SecurityEvent};

const CHILD_ENV: &str = "LINESENTRY_DISK_FULL_CHILD";
const TEST_NAME: &str =
    "queue_disk_full::a_full_disk_is_a_clear_error_and_loses_no_confirmed_event";
const LIMIT_BYTES: u64 = 6 << 20;

fn child(dir: &str) -> ! {
    // SAFETY: plain libc calls on this process before any thread of ours writes files.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
        let lim = libc::rlimit {
            rlim_cur: LIMIT_BYTES,
            rlim_max: LIMIT_BYTES,
        };
        assert_eq!(libc::setrlimit(libc::RLIMIT_FSIZE, &raw const lim), 0);
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(async {
        let (queue, _) = Queue::open(QueueOptions::new(dir, "gw-full")).expect("open queue");
        let mut out = std::io::stdout().lock();
        for n in 0u64.. {
            let batch: Vec<_> = (0..50)
                .map(|k| {
                    SecurityEvent::new("gw-full", EventType::EquipmentStatus)
                        .data("n", n)
                        .data("k", k)
                        .data("pad", "y".repeat(200))
                })
                .collect();
            match queue.append(&batch).await {
                Ok(seqs) => {
                    for seq in seqs {
                        writeln!(out, "OK {seq}").unwrap();
                    }
                    out.flush().unwrap();
                }
                Err(e) => {
                    writeln!(out, "ERR {e}").unwrap();
                    out.flush().unwrap();
                    std::process::exit(3);
                }
            }
        }
    });
    std::process::exit(0)
}

#[test]
fn a_full_disk_is_a_clear_error_and_loses_no_confirmed_event() {
    if let Ok(dir) = std::env::var(CHILD_ENV) {
        child(&dir);
    }
    let dir = tempfile::tempdir().unwrap();
    let mut proc = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", TEST_NAME, "--nocapture", "--test-threads", "1"])
        .env(CHILD_ENV, dir.path())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut confirmed = Vec::new();
    let mut error = None;
    for line in BufReader::new(proc.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        if let Some(seq) = line.strip_prefix("OK ") {
            confirmed.push(seq.parse::<u64>().unwrap());
        } else if let Some(e) = line.strip_prefix("ERR ") {
            error = Some(e.to_owned());
        }
    }
    let status = proc.wait().unwrap();
    assert_eq!(
        status.code(),
        Some(3),
        "the child should stop on a refused append"
    );
    let error = error.expect("an error line");
    assert!(
        error.contains("store error") && error.contains("File too large"),
        "unclear error: {error}"
    );
    assert!(
        confirmed.len() > 1000,
        "only {} confirmed before the limit",
        confirmed.len()
    );

    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(async {
        let (q, report) = Queue::open(QueueOptions::new(dir.path(), "gw-full")).unwrap();
        assert!(
            report.reset.is_none(),
            "store reset after disk full: {report:?}"
        );
        let stored: Vec<u64> = q
            .peek(None, usize::MAX)
            .unwrap()
            .iter()
            .map(|e| e.seq)
            .collect();
        for seq in &confirmed {
            assert!(
                stored.binary_search(seq).is_ok(),
                "confirmed seq {seq} lost"
            );
        }
        // And the store works again once there is room.
        let more = q
            .append(&[SecurityEvent::new("gw-full", EventType::EquipmentStatus)])
            .await
            .unwrap();
        assert!(more[0] > *confirmed.last().unwrap());
        q.close().await;
    });
    println!(
        "{} events confirmed before the disk filled; all present; error was: {error}",
        confirmed.len()
    );
}
