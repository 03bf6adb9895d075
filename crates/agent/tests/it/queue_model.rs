//! Model test: random append / peek / ack / reopen sequences against the real store give the
//! same answers as a `VecDeque` that does the obvious thing.

use std::collections::VecDeque;

use linesentry_agent::buffer::{Ack, Queue, QueueOptions};
use linesentry_event::{EventType, SecurityEvent, Severity};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    /// Append this many events (with these severities).
    Append(Vec<u8>),
    /// Peek from the position `after` (an index into the model, or from the start), max n.
    Peek(Option<usize>, usize),
    /// Ack everything up to the model element at this index (mod len).
    AckUpTo(usize),
    /// Ack the model elements at these indexes (mod len), plus one seq that does not exist.
    AckSet(Vec<usize>),
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => prop::collection::vec(0u8..5, 1..12).prop_map(Op::Append),
        3 => (prop::option::of(0usize..64), 1usize..20).prop_map(|(a, n)| Op::Peek(a, n)),
        2 => (0usize..64).prop_map(Op::AckUpTo),
        2 => prop::collection::vec(0usize..64, 0..6).prop_map(Op::AckSet),
        1 => Just(Op::Reopen),
    ]
}

#[derive(Debug, Clone, PartialEq)]
struct Seen {
    seq: u64,
    n: u64,
    severity: Severity,
}

fn seen(e: &SecurityEvent) -> Seen {
    Seen {
        seq: e.seq,
        n: e.event_data["n"].as_u64().unwrap(),
        severity: e.severity,
    }
}

fn run(ops: &[Op]) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let options = QueueOptions::new(dir.path(), "gw-model");
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(async {
        let (mut q, _) = Queue::open(options.clone()).unwrap();
        let mut model: VecDeque<Seen> = VecDeque::new();
        let mut next_seq = 1u64;
        let mut counter = 0u64;
        for op in ops {
            match op {
                Op::Append(sevs) => {
                    let mut events = Vec::new();
                    let mut expected = Vec::new();
                    for s in sevs {
                        let severity = Severity::ALL[usize::from(*s)];
                        events.push(
                            SecurityEvent::new("gw-model", EventType::EquipmentStatus)
                                .severity(severity)
                                .data("n", counter),
                        );
                        expected.push(Seen {
                            seq: next_seq,
                            n: counter,
                            severity,
                        });
                        counter += 1;
                        next_seq += 1;
                    }
                    let assigned = q.append(&events).await.unwrap();
                    prop_assert_eq!(assigned, expected.iter().map(|s| s.seq).collect::<Vec<_>>());
                    model.extend(expected);
                }
                Op::Peek(after, max) => {
                    let after_seq = after
                        .and_then(|i| model.get(i % model.len().max(1)))
                        .map(|s| s.seq);
                    let got: Vec<Seen> =
                        q.peek(after_seq, *max).unwrap().iter().map(seen).collect();
                    let want: Vec<Seen> = model
                        .iter()
                        .filter(|s| after_seq.is_none_or(|a| s.seq > a))
                        .take(*max)
                        .cloned()
                        .collect();
                    prop_assert_eq!(got, want);
                }
                Op::AckUpTo(i) => {
                    let Some(up_to) = model.get(i % model.len().max(1)).map(|s| s.seq) else {
                        continue;
                    };
                    let before = model.len();
                    model.retain(|s| s.seq > up_to);
                    let report = q.ack(Ack::UpTo(up_to)).await.unwrap();
                    prop_assert_eq!(report.removed, (before - model.len()) as u64);
                }
                Op::AckSet(idx) => {
                    let mut seqs: Vec<u64> = idx
                        .iter()
                        .filter_map(|i| model.get(i % model.len().max(1)).map(|s| s.seq))
                        .collect();
                    seqs.sort_unstable();
                    seqs.dedup();
                    let before = model.len();
                    model.retain(|s| !seqs.contains(&s.seq));
                    seqs.push(next_seq + 1000);
                    let report = q.ack(Ack::Seqs(seqs)).await.unwrap();
                    prop_assert_eq!(report.removed, (before - model.len()) as u64);
                }
                Op::Reopen => {
                    q.close().await;
                    let (reopened, report) = Queue::open(options.clone()).unwrap();
                    prop_assert!(report.reset.is_none());
                    prop_assert_eq!(report.next_seq, next_seq);
                    prop_assert_eq!(report.depth, model.len() as u64);
                    q = reopened;
                }
            }
            prop_assert_eq!(q.stats().depth, model.len() as u64);
        }
        let all: Vec<Seen> = q.peek(None, usize::MAX).unwrap().iter().map(seen).collect();
        prop_assert_eq!(all, model.into_iter().collect::<Vec<_>>());
        q.close().await;
        Ok(())
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn the_store_behaves_like_an_in_memory_queue(ops in prop::collection::vec(op(), 1..40)) {
        run(&ops)?;
    }
}
