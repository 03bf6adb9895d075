//! The live stream hub: committed events fan out to subscribed clients.
//!
//! Each client has its own bounded queue, filled by [`Hub::publish`] with `try_send`: a
//! full queue drops the event for that client only and counts it, and the client is told
//! how many it missed (`{"type":"missed","count":N}`). Ingest never waits for a client.
//! Events are serialised once per publish, not once per client.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use serde::Deserialize;
use serde_json::json;
use tokio::sync::mpsc;

use super::describe::view_json;
use super::rows::Stored;
use linesentry_event::Severity;

/// What a client wants to see. Empty fields match everything.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Filter {
    /// Exact types (`auth.failed`) or prefixes ending in `.` or `.*` (`auth.`, `agent.*`).
    #[serde(default)]
    pub event_types: Vec<String>,
    #[serde(default)]
    pub min_severity: Option<Severity>,
    #[serde(default)]
    pub gateway_id: Option<String>,
    #[serde(default)]
    pub station_id: Option<String>,
    #[serde(default)]
    pub user_id: Option<String>,
}

impl Filter {
    pub fn check(&self) -> Result<(), String> {
        if self.event_types.len() > 100 {
            return Err("at most 100 event_types".into());
        }
        for t in &self.event_types {
            if t.is_empty() || t.len() > 128 {
                return Err("event_types: expected 1 to 128 characters each".into());
            }
        }
        Ok(())
    }

    pub fn matches(&self, s: &Stored) -> bool {
        let e = &s.event;
        if let Some(min) = self.min_severity {
            if e.severity < min {
                return false;
            }
        }
        if self.gateway_id.as_ref().is_some_and(|g| *g != e.gateway_id) {
            return false;
        }
        if self
            .station_id
            .as_ref()
            .is_some_and(|st| Some(st) != e.station_id.as_ref())
        {
            return false;
        }
        if self
            .user_id
            .as_ref()
            .is_some_and(|u| Some(u) != e.user_id.as_ref())
        {
            return false;
        }
        self.event_types.is_empty()
            || self.event_types.iter().any(|t| {
                let t = t.strip_suffix('*').unwrap_or(t);
                if t.ends_with('.') {
                    e.event_type.starts_with(t)
                } else {
                    e.event_type == *t
                }
            })
    }
}

#[derive(Debug)]
struct Slot {
    id: u64,
    filter: RwLock<Option<Filter>>,
    tx: mpsc::Sender<Arc<str>>,
    missed: AtomicU64,
}

/// The fan-out point between ingest and the stream clients.
#[derive(Debug, Clone)]
pub struct Hub {
    inner: Arc<HubInner>,
}

#[derive(Debug)]
struct HubInner {
    clients: RwLock<Vec<Arc<Slot>>>,
    queue: usize,
    max_clients: usize,
    next_id: AtomicU64,
    published: AtomicU64,
    dropped: AtomicU64,
}

/// The hub has as many clients as it may serve.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the live stream already serves {0} clients")]
pub struct HubFull(pub usize);

/// One client's end: its queue and its missed-event count. Dropping it unsubscribes.
#[derive(Debug)]
pub struct Subscription {
    slot: Arc<Slot>,
    pub rx: mpsc::Receiver<Arc<str>>,
    hub: Hub,
}

impl Subscription {
    pub fn id(&self) -> u64 {
        self.slot.id
    }

    /// Sets (or replaces) the filter; before the first call the client receives nothing.
    pub fn set_filter(&self, filter: Option<Filter>) {
        if let Ok(mut f) = self.slot.filter.write() {
            *f = filter;
        }
    }

    /// Events dropped for this client since the last call.
    pub fn take_missed(&self) -> u64 {
        self.slot.missed.swap(0, Ordering::Relaxed)
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if let Ok(mut clients) = self.hub.inner.clients.write() {
            clients.retain(|c| c.id != self.slot.id);
        }
    }
}

/// Counters of the hub.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HubStats {
    pub clients: usize,
    pub published: u64,
    pub dropped: u64,
}

impl Hub {
    pub fn new(queue: usize, max_clients: usize) -> Self {
        Self {
            inner: Arc::new(HubInner {
                clients: RwLock::new(Vec::new()),
                queue,
                max_clients,
                next_id: AtomicU64::new(1),
                published: AtomicU64::new(0),
                dropped: AtomicU64::new(0),
            }),
        }
    }

    pub fn subscribe(&self) -> Result<Subscription, HubFull> {
        let (tx, rx) = mpsc::channel(self.inner.queue);
        let slot = Arc::new(Slot {
            id: self.inner.next_id.fetch_add(1, Ordering::Relaxed),
            filter: RwLock::new(None),
            tx,
            missed: AtomicU64::new(0),
        });
        let mut clients = self
            .inner
            .clients
            .write()
            .map_err(|_| HubFull(self.inner.max_clients))?;
        if clients.len() >= self.inner.max_clients {
            return Err(HubFull(self.inner.max_clients));
        }
        clients.push(Arc::clone(&slot));
        Ok(Subscription {
            slot,
            rx,
            hub: self.clone(),
        })
    }

    /// Offers committed events to every client whose filter matches. Never waits.
    pub fn publish(&self, events: &[Arc<Stored>]) {
        let Ok(clients) = self.inner.clients.read() else {
            return;
        };
        if clients.is_empty() {
            return;
        }
        for s in events {
            let mut text: Option<Arc<str>> = None;
            for c in clients.iter() {
                let wanted = c
                    .filter
                    .read()
                    .ok()
                    .is_some_and(|f| f.as_ref().is_some_and(|f| f.matches(s)));
                if !wanted {
                    continue;
                }
                let msg = text.get_or_insert_with(|| {
                    Arc::from(json!({ "type": "event", "event": view_json(s) }).to_string())
                });
                match c.tx.try_send(Arc::clone(msg)) {
                    Ok(()) => {
                        self.inner.published.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        c.missed.fetch_add(1, Ordering::Relaxed);
                        self.inner.dropped.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => {}
                }
            }
        }
    }

    pub fn stats(&self) -> HubStats {
        HubStats {
            clients: self.inner.clients.read().map_or(0, |c| c.len()),
            published: self.inner.published.load(Ordering::Relaxed),
            dropped: self.inner.dropped.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::Verification;
    use linesentry_event::{EventType, SecurityEvent};

    fn stored(event_type: EventType, severity: Severity) -> Arc<Stored> {
        Arc::new(Stored {
            event: SecurityEvent::new("gw-1", event_type)
                .severity(severity)
                .station("press-1"),
            verification: Verification::Verified,
        })
    }

    #[test]
    fn filters_match_types_prefixes_severity_and_ids() {
        let e = stored(EventType::AuthFailed, Severity::Warn);
        let f = |v: serde_json::Value| serde_json::from_value::<Filter>(v).unwrap();
        assert!(f(json!({})).matches(&e));
        assert!(f(json!({"event_types": ["auth."]})).matches(&e));
        assert!(f(json!({"event_types": ["auth.*"]})).matches(&e));
        assert!(f(json!({"event_types": ["auth.failed"]})).matches(&e));
        assert!(!f(json!({"event_types": ["auth"]})).matches(&e));
        assert!(f(json!({"min_severity": "warn"})).matches(&e));
        assert!(!f(json!({"min_severity": "error"})).matches(&e));
        assert!(f(json!({"gateway_id": "gw-1", "station_id": "press-1"})).matches(&e));
        assert!(!f(json!({"user_id": "bob"})).matches(&e));
    }

    #[test]
    fn a_client_without_a_filter_receives_nothing() {
        let hub = Hub::new(4, 10);
        let mut sub = hub.subscribe().unwrap();
        hub.publish(&[stored(EventType::AuthFailed, Severity::Warn)]);
        assert!(sub.rx.try_recv().is_err());
        sub.set_filter(Some(Filter::default()));
        hub.publish(&[stored(EventType::AuthFailed, Severity::Warn)]);
        assert!(sub.rx.try_recv().unwrap().contains("\"auth.failed\""));
    }

    #[test]
    fn a_slow_client_loses_only_its_own_events_and_is_told_how_many() {
        let hub = Hub::new(2, 10);
        let mut slow = hub.subscribe().unwrap();
        let mut fast = hub.subscribe().unwrap();
        slow.set_filter(Some(Filter::default()));
        fast.set_filter(Some(Filter::default()));
        for _ in 0..5 {
            hub.publish(&[stored(EventType::EquipmentStatus, Severity::Info)]);
            assert!(fast.rx.try_recv().is_ok());
        }
        assert_eq!(slow.take_missed(), 3);
        assert_eq!(slow.take_missed(), 0);
        assert!(slow.rx.try_recv().is_ok() && slow.rx.try_recv().is_ok());
        assert_eq!(hub.stats().dropped, 3);
    }

    #[test]
    fn the_client_limit_holds_and_a_dropped_subscription_frees_its_place() {
        let hub = Hub::new(2, 1);
        let first = hub.subscribe().unwrap();
        assert!(hub.subscribe().is_err());
        drop(first);
        assert!(hub.subscribe().is_ok());
    }
}
