//! Child process of `tests/queue_crash.rs`: appends to the queue in DIR as fast as it can from
//! several tasks and prints one line per confirmed append (`OK run seq n`), until killed.

use linesentry::buffer::{Queue, QueueOptions};
use linesentry::event::{SecurityEvent, Severity};
use std::io::Write;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(dir), Some(run)) = (args.next(), args.next()) else {
        eprintln!("usage: queue_appender DIR RUN");
        std::process::exit(2);
    };
    let run: u64 = run.parse().expect("RUN is a number");
    let (queue, _) = Queue::open(QueueOptions::new(dir, "gw-crash")).expect("open queue");
    let mut tasks = Vec::new();
    for task in 0..4u64 {
        let queue = queue.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0.. {
                let n = i * 4 + task;
                let batch: Vec<_> = (0..=(i % 7))
                    .map(|k| {
                        SecurityEvent::new("gw-crash", "crash.test")
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
}
