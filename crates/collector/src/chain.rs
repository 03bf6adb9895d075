//! The per-gateway hash chain as the collector checks it. Pure: the store fetches the links
//! it needs, this decides, the store writes the decisions.
//!
//! Each gateway event carries `seq` and `prev_hash`, the hash of the gateway's event `seq-1`
//! (see [`linesentry_event::integrity`]). Events arrive out of order (alerts ahead of older
//! telemetry, re-sends after an outage), so an event is judged against whatever the
//! collector holds:
//!
//! - `verified`: `seq-1` is held and its hash is `prev_hash`, or `seq` is 1 with no
//!   `prev_hash` (the start of the chain);
//! - `pending`: `seq-1` has not arrived yet. When it arrives the pending event becomes
//!   verified or broken; if it never does, the gap sweeper marks it `gap` (in
//!   `maintenance`);
//! - `broken`: `seq-1` is held and its hash differs from `prev_hash`, or the `seq` was
//!   already held with other content;
//! - `gap`: `prev_hash` is null at `seq` > 1 (the agent started a fresh store) or the sweeper
//!   gave up waiting for `seq-1`.
//!
//! A re-delivered event (same seq, same hash) is a duplicate: nothing changes and nothing is
//! raised again.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use linesentry_event::integrity::EventHash;

/// The collector's verdict on one event's place in its gateway's chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verification {
    Verified,
    Pending,
    Broken,
    Gap,
    /// Made by the collector itself; not part of any chain.
    Local,
}

impl Verification {
    pub const ALL: [Verification; 5] = [
        Verification::Verified,
        Verification::Pending,
        Verification::Broken,
        Verification::Gap,
        Verification::Local,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Verification::Verified => "verified",
            Verification::Pending => "pending",
            Verification::Broken => "broken",
            Verification::Gap => "gap",
            Verification::Local => "local",
        }
    }

    /// Still waiting for a predecessor that may yet arrive.
    fn awaits_predecessor(self) -> bool {
        matches!(self, Verification::Pending | Verification::Gap)
    }
}

impl fmt::Display for Verification {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Verification {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| format!("unknown verification `{s}`"))
    }
}

/// A link the store already holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredLink {
    pub seq: u64,
    pub hash: EventHash,
    pub prev: Option<EventHash>,
    pub status: Verification,
}

/// The link of an arriving event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewLink {
    pub seq: u64,
    pub hash: EventHash,
    pub prev: Option<EventHash>,
    /// The event says why the chain restarts here (`agent.buffer_reset`).
    pub explains_restart: bool,
}

/// What happens to one arriving event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Same seq and hash already held: store nothing, raise nothing.
    Duplicate,
    /// Store it with this status.
    New(Verification),
}

/// Something a security team must see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finding {
    /// The event at `seq` names a predecessor hash that is not the hash of the event held at
    /// `seq - 1`.
    Broken {
        seq: u64,
        expected: EventHash,
        found: Option<EventHash>,
    },
    /// A second, different event claims a seq already held.
    SeqReused {
        seq: u64,
        held: EventHash,
        arrived: EventHash,
    },
    /// `prev_hash` is null at `seq` > 1: the gateway started a new chain here.
    Restart { seq: u64, explained: bool },
}

/// The decisions for one batch of one gateway.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Assessment {
    /// One per arriving link, in input order.
    pub outcomes: Vec<Outcome>,
    /// Held links whose status changes now that their predecessor arrived: (seq, status).
    pub resolved: Vec<(u64, Verification)>,
    pub findings: Vec<Finding>,
}

/// Judges `arriving` (one gateway's events, any order) against `held`, which must contain
/// every stored link at the arriving seqs and at their neighbours (seq - 1, seq + 1).
pub fn assess(held: &[StoredLink], arriving: &[NewLink]) -> Assessment {
    let mut known: BTreeMap<u64, StoredLink> = held.iter().map(|l| (l.seq, l.clone())).collect();
    let mut outcomes = vec![Outcome::Duplicate; arriving.len()];
    let mut resolved: BTreeMap<u64, Verification> = BTreeMap::new();
    let mut findings = Vec::new();

    // In seq order, so an event's predecessor from the same batch is judged first.
    let mut order: Vec<usize> = (0..arriving.len()).collect();
    order.sort_by_key(|&i| arriving[i].seq);

    for i in order {
        let link = &arriving[i];
        if let Some(existing) = known.get(&link.seq) {
            if existing.hash != link.hash {
                findings.push(Finding::SeqReused {
                    seq: link.seq,
                    held: existing.hash,
                    arrived: link.hash,
                });
                outcomes[i] = Outcome::New(Verification::Broken);
            }
            // Same hash: a duplicate. The held link keeps its place in the chain.
            continue;
        }
        let status = match link.prev {
            None if link.seq == 1 => Verification::Verified,
            None => {
                findings.push(Finding::Restart {
                    seq: link.seq,
                    explained: link.explains_restart,
                });
                Verification::Gap
            }
            Some(named) => match known.get(&(link.seq - 1)) {
                None => Verification::Pending,
                Some(before) if before.hash == named => Verification::Verified,
                Some(before) => {
                    findings.push(Finding::Broken {
                        seq: link.seq,
                        expected: before.hash,
                        found: Some(named),
                    });
                    Verification::Broken
                }
            },
        };
        outcomes[i] = Outcome::New(status);
        known.insert(
            link.seq,
            StoredLink {
                seq: link.seq,
                hash: link.hash,
                prev: link.prev,
                status,
            },
        );
        // A held successor that was waiting for this event.
        if let Some(next) = known.get_mut(&(link.seq + 1)) {
            if next.status.awaits_predecessor() {
                match next.prev {
                    Some(p) if p == link.hash => {
                        next.status = Verification::Verified;
                        resolved.insert(next.seq, Verification::Verified);
                    }
                    Some(p) => {
                        findings.push(Finding::Broken {
                            seq: next.seq,
                            expected: link.hash,
                            found: Some(p),
                        });
                        next.status = Verification::Broken;
                        resolved.insert(next.seq, Verification::Broken);
                    }
                    // A restart stays a restart.
                    None => {}
                }
            }
        }
    }
    // Links of this batch are judged after their predecessors (seq order), so only links
    // held before can change status here.
    let held_seqs: std::collections::HashSet<u64> = held.iter().map(|l| l.seq).collect();
    let resolved = resolved
        .into_iter()
        .filter(|(seq, _)| held_seqs.contains(seq))
        .collect();
    Assessment {
        outcomes,
        resolved,
        findings,
    }
}

/// The seqs a gateway reported as lost or set aside, to explain a gap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Explanation {
    pub first_seq: u64,
    pub last_seq: u64,
    pub reason: String,
}

/// The reasons that together cover every seq in `first..=last`, or `None` if some seq there
/// is unexplained.
pub fn explain(first: u64, last: u64, known: &[Explanation]) -> Option<Vec<String>> {
    let mut ranges: Vec<&Explanation> = known
        .iter()
        .filter(|e| e.last_seq >= first && e.first_seq <= last)
        .collect();
    ranges.sort_by_key(|e| e.first_seq);
    let mut next = first;
    let mut reasons: Vec<String> = Vec::new();
    for r in ranges {
        if r.first_seq > next {
            return None;
        }
        if r.last_seq >= next {
            next = r.last_seq.saturating_add(1);
            if !reasons.contains(&r.reason) {
                reasons.push(r.reason.clone());
            }
        }
        if next > last {
            return Some(reasons);
        }
    }
    (next > last).then_some(reasons)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(n: u8) -> EventHash {
        [n; 32]
    }

    /// Event `seq` hashes to h(seq) and links to h(seq-1).
    fn link(seq: u8) -> NewLink {
        NewLink {
            seq: u64::from(seq),
            hash: h(seq),
            prev: (seq > 1).then(|| h(seq - 1)),
            explains_restart: false,
        }
    }

    fn held(seq: u8, status: Verification) -> StoredLink {
        StoredLink {
            seq: u64::from(seq),
            hash: h(seq),
            prev: (seq > 1).then(|| h(seq - 1)),
            status,
        }
    }

    use Verification::{Broken, Gap, Pending, Verified};

    #[test]
    fn an_in_order_chain_is_verified_from_seq_one() {
        let a = assess(&[], &[link(1), link(2), link(3)]);
        assert_eq!(a.outcomes, vec![Outcome::New(Verified); 3]);
        assert!(a.findings.is_empty() && a.resolved.is_empty());
    }

    #[test]
    fn a_batch_in_any_order_is_judged_in_seq_order() {
        let a = assess(&[held(4, Verified)], &[link(7), link(5), link(6)]);
        assert_eq!(a.outcomes, vec![Outcome::New(Verified); 3]);
    }

    #[test]
    fn an_event_ahead_of_its_predecessor_waits_then_verifies_when_it_arrives() {
        let first = assess(&[held(1, Verified)], &[link(3)]);
        assert_eq!(first.outcomes, [Outcome::New(Pending)]);
        let second = assess(&[held(1, Verified), held(3, Pending)], &[link(2)]);
        assert_eq!(second.outcomes, [Outcome::New(Verified)]);
        assert_eq!(second.resolved, [(3, Verified)]);
        assert!(second.findings.is_empty());
    }

    #[test]
    fn a_waiting_event_resolves_even_when_it_is_delivered_again_with_its_predecessor() {
        let a = assess(&[held(1, Verified), held(3, Pending)], &[link(2), link(3)]);
        assert_eq!(a.outcomes, [Outcome::New(Verified), Outcome::Duplicate]);
        assert_eq!(a.resolved, [(3, Verified)]);
    }

    #[test]
    fn a_late_predecessor_also_heals_a_gap_the_sweeper_declared() {
        let a = assess(&[held(1, Verified), held(3, Gap)], &[link(2)]);
        assert_eq!(a.resolved, [(3, Verified)]);
    }

    #[test]
    fn a_wrong_prev_hash_breaks_the_chain_and_is_reported() {
        let mut tampered = link(3);
        tampered.prev = Some(h(99));
        let a = assess(&[held(2, Verified)], &[tampered]);
        assert_eq!(a.outcomes, [Outcome::New(Broken)]);
        assert_eq!(
            a.findings,
            [Finding::Broken {
                seq: 3,
                expected: h(2),
                found: Some(h(99))
            }]
        );
    }

    #[test]
    fn a_pending_successor_whose_predecessor_does_not_match_becomes_broken() {
        let mut odd = held(3, Pending);
        odd.prev = Some(h(42));
        let a = assess(&[held(1, Verified), odd], &[link(2)]);
        assert_eq!(a.outcomes, [Outcome::New(Verified)]);
        assert_eq!(a.resolved, [(3, Broken)]);
        assert!(matches!(a.findings[..], [Finding::Broken { seq: 3, .. }]));
    }

    #[test]
    fn a_redelivered_event_is_a_duplicate_and_raises_nothing() {
        let a = assess(&[held(1, Verified), held(2, Verified)], &[link(1), link(2)]);
        assert_eq!(a.outcomes, [Outcome::Duplicate, Outcome::Duplicate]);
        assert!(a.findings.is_empty() && a.resolved.is_empty());
        let twice = assess(&[], &[link(1), link(1)]);
        assert_eq!(twice.outcomes, [Outcome::New(Verified), Outcome::Duplicate]);
    }

    #[test]
    fn other_content_under_a_held_seq_is_reported_as_reuse() {
        let mut forged = link(2);
        forged.hash = h(200);
        let a = assess(&[held(1, Verified), held(2, Verified)], &[forged]);
        assert_eq!(a.outcomes, [Outcome::New(Broken)]);
        assert!(matches!(
            a.findings[..],
            [Finding::SeqReused { seq: 2, .. }]
        ));
    }

    #[test]
    fn a_restart_without_prev_hash_is_a_gap_explained_only_by_a_reset_event() {
        let mut restart = link(50);
        restart.prev = None;
        let a = assess(&[], &[restart.clone()]);
        assert_eq!(a.outcomes, [Outcome::New(Gap)]);
        assert_eq!(
            a.findings,
            [Finding::Restart {
                seq: 50,
                explained: false
            }]
        );
        restart.explains_restart = true;
        assert_eq!(
            assess(&[], &[restart]).findings,
            [Finding::Restart {
                seq: 50,
                explained: true
            }]
        );
    }

    #[test]
    fn gaps_are_explained_only_when_every_missing_seq_is_covered() {
        let e = |a, b, r: &str| Explanation {
            first_seq: a,
            last_seq: b,
            reason: r.into(),
        };
        let known = [
            e(10, 14, "dropped"),
            e(15, 15, "dead-lettered"),
            e(30, 40, "x"),
        ];
        assert_eq!(
            explain(11, 15, &known),
            Some(vec!["dropped".into(), "dead-lettered".into()])
        );
        assert_eq!(explain(11, 16, &known), None);
        assert_eq!(explain(20, 21, &known), None);
        assert_eq!(explain(31, 31, &known), Some(vec!["x".into()]));
    }
}
