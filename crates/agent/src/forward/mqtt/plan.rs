//! Which events go in which MQTT message: pure, no I/O.
//!
//! Topic scheme: `{prefix}/{site}/{gateway_id}/events/{severity}/{event_type}`, e.g.
//! `linesentry/v1/plant-a/gw-07/events/warn/setpoint.changed`. All events of a message share
//! its topic; within a topic, messages are planned in seq order (the queue's lanes keep seq
//! order per severity, so each topic sees its events in seq order). A message holds at most
//! `per_message` events and its packet stays within `max_packet` bytes; an event too large
//! for a packet on its own is returned apart (the sink reports it as rejected).

use std::collections::BTreeMap;

use linesentry_event::SecurityEvent;

/// One planned message: indexes into the batch, in batch order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planned {
    pub topic: String,
    pub events: Vec<usize>,
}

/// Bytes an MQTT PUBLISH adds around topic and payload (fixed header with a 4-byte length,
/// topic length, packet id), plus margin for MQTT 5 properties.
pub const PACKET_OVERHEAD: usize = 16;

pub fn topic(base: &str, event: &SecurityEvent) -> String {
    format!(
        "{base}/events/{}/{}",
        event.severity.as_str(),
        event.event_type
    )
}

/// Plans messages for `batch`, given each event's JSON size and the envelope's overhead.
/// Returns the messages and the indexes of events that fit in no packet.
pub fn plan(
    batch: &[SecurityEvent],
    json_sizes: &[usize],
    base: &str,
    envelope_overhead: usize,
    per_message: usize,
    max_packet: usize,
) -> (Vec<Planned>, Vec<usize>) {
    let mut by_topic: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    let mut order: Vec<String> = Vec::new();
    for (i, e) in batch.iter().enumerate() {
        let t = topic(base, e);
        let list = by_topic.entry(t.clone()).or_default();
        if list.is_empty() {
            order.push(t);
        }
        list.push(i);
    }
    let mut messages = Vec::new();
    let mut oversized = Vec::new();
    for t in order {
        let budget = max_packet.saturating_sub(PACKET_OVERHEAD + t.len() + envelope_overhead);
        let mut current: Vec<usize> = Vec::new();
        let mut used = 0;
        for i in by_topic.remove(&t).unwrap_or_default() {
            let size = json_sizes[i] + 1; // and a comma
            if size > budget {
                oversized.push(i);
                continue;
            }
            if !current.is_empty() && (current.len() >= per_message || used + size > budget) {
                messages.push(Planned {
                    topic: t.clone(),
                    events: std::mem::take(&mut current),
                });
                used = 0;
            }
            current.push(i);
            used += size;
        }
        if !current.is_empty() {
            messages.push(Planned {
                topic: t,
                events: current,
            });
        }
    }
    oversized.sort_unstable();
    (messages, oversized)
}

#[cfg(test)]
mod tests {
    use super::*;
    use linesentry_event::{EventType, Severity};

    /// An event of any type name, known or not: topics are planned from the name.
    fn ev(kind: &str, severity: Severity) -> SecurityEvent {
        let mut e = SecurityEvent::new("gw", EventType::EquipmentStatus).severity(severity);
        e.event_type = kind.into();
        e
    }

    #[test]
    fn events_are_grouped_by_topic_in_batch_order_and_chunked_by_count() {
        let batch = vec![
            ev("a.b", Severity::Info),
            ev("c.d", Severity::Warn),
            ev("a.b", Severity::Info),
            ev("a.b", Severity::Info),
            ev("a.b", Severity::Warn),
        ];
        let sizes = vec![100; 5];
        let (msgs, over) = plan(&batch, &sizes, "p/s/gw", 100, 2, 10_000);
        assert!(over.is_empty());
        let got: Vec<(&str, Vec<usize>)> = msgs
            .iter()
            .map(|m| (m.topic.as_str(), m.events.clone()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("p/s/gw/events/info/a.b", vec![0, 2]),
                ("p/s/gw/events/info/a.b", vec![3]),
                ("p/s/gw/events/warn/c.d", vec![1]),
                ("p/s/gw/events/warn/a.b", vec![4]),
            ]
        );
    }

    #[test]
    fn messages_stay_within_the_packet_size_and_oversized_events_are_set_apart() {
        let batch: Vec<_> = (0..5).map(|_| ev("a.b", Severity::Info)).collect();
        let sizes = vec![300, 300, 5000, 300, 300];
        let t = "p/events/info/a.b".len();
        let max = PACKET_OVERHEAD + t + 50 + 700; // two 301-byte events per message
        let (msgs, over) = plan(&batch, &sizes, "p", 50, 100, max);
        assert_eq!(over, vec![2]);
        let groups: Vec<Vec<usize>> = msgs.into_iter().map(|m| m.events).collect();
        assert_eq!(groups, vec![vec![0, 1], vec![3, 4]]);
    }
}
