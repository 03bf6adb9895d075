//! The MQTT sink: QoS 1 publishes of signed batches, acknowledged per PUBACK.
//!
//! Topics (see [`plan`]): `{prefix}/{site}/{gateway_id}/events/{severity}/{event_type}` for
//! events, and `{prefix}/{site}/{gateway_id}/status` for the retained gateway status: a
//! birth message on every connect
//! (`{"state":"online","gateway_id","site","version","config_digest","since"}`), a last will
//! `{"state":"offline","reason":"connection lost"}` published by the broker if the
//! connection dies, and `{"state":"offline","reason":"shutdown"}` on a clean stop.
//!
//! Each message is one [`BatchSigner`] envelope. `push` plans the batch into messages and
//! publishes them with up to `inflight` unacknowledged at once (counting earlier pushes'),
//! maps the packet ids rumqttc reports back to messages, and returns once the batch is
//! handed to the client, with the seqs whose PUBACK came meanwhile; `flush` waits for the
//! rest and `send` is push and flush. The forwarder thus reads and encodes the next batch
//! while the last PUBACKs are on their way. A dropped connection or a PUBACK later than
//! `ack_timeout` is a transient error (with the seqs acknowledged before it) and drops the
//! connection; the next call connects anew and the forwarder re-reads what was not
//! acknowledged. Events too large for `max_packet_kib`, and messages an MQTT 5 broker
//! refuses for good (not authorised, invalid topic or payload), are reported as rejected;
//! so are the events of a message the broker closed the connection on three times in a
//! row (see `Suspect`).

mod link;
pub mod plan;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use tokio::time::Instant;

use super::tls::TlsSettings;
use super::tls::{client_config, TlsError};
use super::{PushFuture, Pushed, SendFuture, Sink, SinkError};
use linesentry_common::Secret;
use linesentry_event::integrity::{canonical_json, BatchSigner, EventHash};
use linesentry_event::SecurityEvent;
use link::{Link, LinkEvent, Status};
use sha2::{Digest, Sha256};

const NAME: &str = "mqtt";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum MqttProtocol {
    #[serde(rename = "3.1.1")]
    V311,
    #[serde(rename = "5")]
    V5,
}

#[derive(Debug, Clone, PartialEq)]
pub struct MqttSettings {
    pub host: String,
    pub port: u16,
    pub client_id: String,
    pub tls: Option<TlsSettings>,
    pub username: Option<String>,
    pub password: Option<Secret>,
    /// No leading or trailing `/`, no wildcards.
    pub topic_prefix: String,
    pub events_per_message: usize,
    pub max_packet_bytes: usize,
    pub protocol: MqttProtocol,
    pub keep_alive: Duration,
    /// A message not acknowledged within this ends the connection (and is re-sent).
    pub ack_timeout: Duration,
    /// Messages published and not yet acknowledged, at most.
    pub inflight: u16,
}

/// Live counters of the MQTT sink.
#[derive(Debug, Default)]
pub struct MqttStats {
    pub connects: AtomicU64,
    pub connect_failures: AtomicU64,
    pub disconnects: AtomicU64,
    pub messages: AtomicU64,
    pub connected: AtomicBool,
}

/// Who this gateway is, for topics and the status messages.
#[derive(Debug, Clone)]
pub struct GatewayInfo {
    pub site: String,
    pub version: String,
    pub config_digest: String,
}

#[derive(Debug)]
pub struct MqttSink {
    settings: MqttSettings,
    password: Option<String>,
    tls: Option<Arc<rustls::ClientConfig>>,
    signer: BatchSigner,
    base: String,
    status: Status,
    info: GatewayInfo,
    link: Option<Link>,
    /// Messages of the current link not yet acknowledged.
    pending: Pending,
    /// Messages the broker may be closing the connection on.
    suspect: Suspect,
    stats: Arc<MqttStats>,
    metrics: Option<crate::health::SinkMetrics>,
}

impl MqttSink {
    /// Reads the TLS files now, so a bad path is an error at start-up, not at first send.
    pub fn new(
        settings: MqttSettings,
        signer: BatchSigner,
        info: GatewayInfo,
    ) -> Result<Self, TlsError> {
        let tls = settings.tls.as_ref().map(client_config).transpose()?;
        let base = format!(
            "{}/{}/{}",
            settings.topic_prefix,
            info.site,
            signer.gateway_id()
        );
        let status = Status {
            topic: format!("{base}/status"),
            birth: Vec::new(),
            will: serde_json::to_vec(&serde_json::json!({
                "state": "offline",
                "gateway_id": signer.gateway_id(),
                "reason": "connection lost",
            }))
            .unwrap_or_default(),
        };
        let password = settings.password.as_ref().map(|p| p.expose().to_owned());
        Ok(Self {
            settings,
            password,
            tls,
            signer,
            base,
            status,
            info,
            link: None,
            pending: Pending::default(),
            suspect: Suspect::default(),
            stats: Arc::new(MqttStats::default()),
            metrics: None,
        })
    }

    /// Counts reconnects (every connect after the first) in `metrics`.
    #[must_use]
    pub fn with_metrics(mut self, metrics: crate::health::SinkMetrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    pub fn stats(&self) -> Arc<MqttStats> {
        self.stats.clone()
    }

    /// The topic prefix of this gateway: `{prefix}/{site}/{gateway_id}`.
    pub fn base_topic(&self) -> &str {
        &self.base
    }

    fn status_payload(&self, state: &str, reason: Option<&str>) -> Vec<u8> {
        let mut v = serde_json::json!({
            "state": state,
            "gateway_id": self.signer.gateway_id(),
            "site": self.info.site,
            "version": self.info.version,
            "config_digest": self.info.config_digest,
            "key_id": self.signer.key_id(),
            "since": linesentry_event::Timestamp::now().to_string(),
        });
        if let Some(r) = reason {
            v["reason"] = r.into();
        }
        serde_json::to_vec(&v).unwrap_or_default()
    }

    /// Connects and publishes the birth message; waits for both to be acknowledged.
    async fn connect(&mut self) -> Result<(), String> {
        let mut status = self.status.clone();
        status.birth = self.status_payload("online", None);
        let mut link = Link::open(
            &self.settings,
            self.password.as_deref(),
            self.tls.clone(),
            &status,
        );
        let timeout = self.settings.ack_timeout;
        match link.next(timeout).await {
            Some(LinkEvent::Connected) => {}
            Some(LinkEvent::Down(reason)) => return Err(reason),
            Some(other) => return Err(format!("expected CONNACK, got {other:?}")),
            None => return Err(format!("no CONNACK within {} ms", timeout.as_millis())),
        }
        link.publish(&status.topic, status.birth, true)?;
        let mut pkid = None;
        loop {
            match link.next(timeout).await {
                Some(LinkEvent::Sent(id)) => pkid = Some(id),
                Some(LinkEvent::Acked { pkid: id, .. }) if Some(id) == pkid => break,
                Some(LinkEvent::Down(reason)) => return Err(reason),
                Some(_) => {}
                None => return Err("birth message not acknowledged in time".into()),
            }
        }
        self.link = Some(link);
        Ok(())
    }

    fn drop_link(&mut self, reason: &str) {
        // What was in flight on this connection is read from the queue again.
        self.pending = Pending::default();
        if self.link.take().is_some() {
            self.stats.disconnects.fetch_add(1, Ordering::Relaxed);
            self.stats.connected.store(false, Ordering::Relaxed);
            tracing::warn!(sink = NAME, %reason, "MQTT connection closed; events stay buffered");
        }
    }

    async fn ensure_connected(&mut self) -> Result<(), SinkError> {
        if self.link.is_some() {
            return Ok(());
        }
        if let Err(reason) = self.connect().await {
            self.stats.connect_failures.fetch_add(1, Ordering::Relaxed);
            return Err(SinkError::transient(
                NAME,
                format!(
                    "cannot connect to {}:{}: {reason}",
                    self.settings.host, self.settings.port
                ),
            ));
        }
        if self.stats.connects.fetch_add(1, Ordering::Relaxed) > 0 {
            if let Some(m) = &self.metrics {
                m.reconnect();
            }
        }
        self.stats.connected.store(true, Ordering::Relaxed);
        tracing::info!(sink = NAME, broker = %format!("{}:{}", self.settings.host, self.settings.port),
            "MQTT connected; birth message published");
        Ok(())
    }

    /// Publishes `batch` with at most `inflight` messages unacknowledged (its own and
    /// earlier pushes'), and returns once all of it is handed to the client, with whatever
    /// was confirmed meanwhile. A rejection is reported only when nothing is in flight any
    /// more; after a transient failure nothing is (the link is dropped).
    async fn push_batch(&mut self, batch: &[SecurityEvent]) -> Result<Pushed, SinkError> {
        self.ensure_connected().await?;
        let mut out = Outcome::default();
        self.publish_batch(batch, &mut out).await;
        if out.transient.is_none() {
            self.take_ready(&mut out);
        }
        if out.transient.is_none() && self.suspect.isolating() {
            self.wait_all(&mut out).await;
        }
        if out.transient.is_none() && out.refusal.is_some() {
            self.wait_all(&mut out).await;
        }
        self.finish(out)
    }

    /// Waits until every message pushed is acknowledged.
    async fn flush_all(&mut self) -> Result<Pushed, SinkError> {
        let mut out = Outcome::default();
        self.wait_all(&mut out).await;
        self.finish(out)
    }

    /// Everything of `batch` confirmed, or the error. The forwarder flushes before it
    /// sends, so nothing of earlier pushes is in flight here.
    async fn send_batch(&mut self, batch: &[SecurityEvent]) -> Result<(), SinkError> {
        let pushed = self.push_batch(batch).await?;
        self.flush_all().await.map(|_| ()).map_err(|mut e| {
            e.add_delivered(pushed.confirmed);
            e
        })
    }

    /// Plans and publishes one batch; stops at the first failure.
    async fn publish_batch(&mut self, batch: &[SecurityEvent], out: &mut Outcome) {
        // Each event is serialised once, canonically: the same text sizes the messages,
        // is hashed for the signature and goes on the wire.
        let texts: Vec<String> = batch.iter().map(canonical_json).collect();
        let hashes: Vec<EventHash> = texts
            .iter()
            .map(|t| Sha256::digest(t.as_bytes()).into())
            .collect();
        let sizes: Vec<usize> = texts.iter().map(String::len).collect();
        let (messages, oversized) = plan::plan(
            batch,
            &sizes,
            &self.base,
            self.signer.overhead(),
            self.settings.events_per_message,
            self.settings.max_packet_bytes,
        );
        if !oversized.is_empty() {
            // Nothing of this batch goes: the forwarder dead-letters the culprits and
            // sends the rest again.
            out.culprits.extend(oversized.iter().map(|&i| batch[i].seq));
            out.refusal.get_or_insert_with(|| {
                format!(
                    "event larger than the MQTT packet limit of {} bytes (forward.mqtt.max_packet_kib)",
                    self.settings.max_packet_bytes
                )
            });
            return;
        }
        // While a message the broker drops the connection on is being looked for, one at
        // a time.
        let window = if self.suspect.isolating() {
            1
        } else {
            usize::from(self.settings.inflight.max(1))
        };
        let timeout = self.settings.ack_timeout;
        let Some(link) = self.link.as_mut() else {
            out.transient = Some("not connected".into());
            return;
        };
        for m in &messages {
            while self.pending.len() >= window {
                if !self.pending.step(link, timeout, out, &self.stats).await {
                    return;
                }
            }
            let pieces: Vec<(&str, EventHash)> = m
                .events
                .iter()
                .map(|&i| (texts[i].as_str(), hashes[i]))
                .collect();
            let payload = self.signer.seal_canonical(&pieces);
            if let Err(e) = link.publish(&m.topic, payload, false) {
                out.transient = Some(format!("publish refused by the client: {e}"));
                return;
            }
            self.pending
                .published(m.events.iter().map(|&i| batch[i].seq).collect());
        }
    }

    /// Takes the link's events that are already there, without waiting.
    fn take_ready(&mut self, out: &mut Outcome) {
        let Some(link) = self.link.as_mut() else {
            return;
        };
        while let Some(ev) = link.try_next() {
            if !self.pending.handle(ev, out, &self.stats) {
                return;
            }
        }
    }

    async fn wait_all(&mut self, out: &mut Outcome) {
        let timeout = self.settings.ack_timeout;
        let Some(link) = self.link.as_mut() else {
            return;
        };
        while !self.pending.is_empty() {
            if !self.pending.step(link, timeout, out, &self.stats).await {
                return;
            }
        }
    }

    /// A transient failure wins over a rejection the sink cannot pin on events: those are
    /// found again on the retry, and undelivered events must not be dead-lettered. A
    /// refusal that names its messages wins even when the connection then dropped:
    /// Mosquitto 2.0.11 closes the connection right after a PUBACK "not authorised", and
    /// retrying such a message would reconnect for ever.
    fn finish(&mut self, out: Outcome) -> Result<Pushed, SinkError> {
        let Outcome {
            delivered,
            mut culprits,
            mut refusal,
            transient,
        } = out;
        self.suspect.confirmed(&delivered);
        if transient.is_some() && culprits.is_empty() {
            if let Some((seqs, drops)) = self.suspect.dropped(&self.pending) {
                refusal = Some(format!(
                    "the broker closed the connection each of the last {drops} times this message \
                     was the only one in flight (brokers close on a publish they refuse, e.g. \
                     one their ACL denies)"
                ));
                culprits = seqs;
            }
        }
        if !culprits.is_empty() {
            self.suspect = Suspect::default();
        }
        match (transient, refusal) {
            (Some(down), Some(reason)) if !culprits.is_empty() => {
                self.drop_link(&down);
                Err(SinkError::Rejected {
                    sink: NAME,
                    reason,
                    culprits,
                    delivered,
                })
            }
            (Some(reason), _) => {
                self.drop_link(&reason);
                Err(SinkError::Transient {
                    sink: NAME,
                    reason,
                    delivered,
                })
            }
            (None, Some(reason)) => Err(SinkError::Rejected {
                sink: NAME,
                reason,
                culprits,
                delivered,
            }),
            (None, None) => Ok(Pushed {
                confirmed: delivered,
                lost: false,
            }),
        }
    }

    /// Publishes the retained offline status and disconnects cleanly.
    async fn goodbye(&mut self) {
        let payload = self.status_payload("offline", Some("shutdown"));
        let topic = self.status.topic.clone();
        let timeout = self
            .settings
            .ack_timeout
            .min(std::time::Duration::from_secs(2));
        if let Some(link) = self.link.as_mut() {
            if link.publish(&topic, payload, true).is_ok() {
                let mut pkid = None;
                loop {
                    match link.next(timeout).await {
                        Some(LinkEvent::Sent(id)) => pkid = Some(id),
                        Some(LinkEvent::Acked { pkid: id, .. }) if Some(id) == pkid => break,
                        Some(LinkEvent::Down(_)) | None => break,
                        Some(_) => {}
                    }
                }
            }
            link.disconnect();
            let _ = link.next(timeout).await;
        }
        self.link = None;
        self.stats.connected.store(false, Ordering::Relaxed);
    }
}

/// What one `push` or `flush` saw.
#[derive(Debug, Default)]
struct Outcome {
    delivered: Vec<u64>,
    culprits: Vec<u64>,
    refusal: Option<String>,
    transient: Option<String>,
}

/// Messages handed to the client and not yet acknowledged, with the seqs each carries.
#[derive(Debug, Default)]
struct Pending {
    /// Published, packet id not yet known (rumqttc reports them in publish order).
    unsent: VecDeque<Vec<u64>>,
    by_pkid: HashMap<u16, Vec<u64>>,
    /// The last publish into an empty window or the last PUBACK: the ack timeout runs
    /// from here.
    last_progress: Option<Instant>,
}

impl Pending {
    fn len(&self) -> usize {
        self.unsent.len() + self.by_pkid.len()
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn published(&mut self, seqs: Vec<u64>) {
        if self.is_empty() {
            self.last_progress = Some(Instant::now());
        }
        self.unsent.push_back(seqs);
    }

    /// Waits for one event of the link, at most `timeout` after the last progress.
    /// False when the link failed (`out.transient` says why).
    async fn step(
        &mut self,
        link: &mut Link,
        timeout: std::time::Duration,
        out: &mut Outcome,
        stats: &MqttStats,
    ) -> bool {
        let since = self.last_progress.unwrap_or_else(Instant::now);
        let Some(ev) = link.next(timeout.saturating_sub(since.elapsed())).await else {
            out.transient = Some(format!("no PUBACK within {} ms", timeout.as_millis()));
            return false;
        };
        self.handle(ev, out, stats)
    }

    /// False when the link failed.
    fn handle(&mut self, ev: LinkEvent, out: &mut Outcome, stats: &MqttStats) -> bool {
        match ev {
            LinkEvent::Sent(pkid) => {
                if let Some(seqs) = self.unsent.pop_front() {
                    self.by_pkid.insert(pkid, seqs);
                }
            }
            LinkEvent::Acked { pkid, refused } => {
                let Some(seqs) = self.by_pkid.remove(&pkid) else {
                    return true;
                };
                self.last_progress = Some(Instant::now());
                stats.messages.fetch_add(1, Ordering::Relaxed);
                match refused {
                    None => out.delivered.extend(seqs),
                    Some(r) if r.permanent => {
                        out.culprits.extend(seqs);
                        out.refusal.get_or_insert(r.reason);
                    }
                    Some(r) => {
                        out.transient.get_or_insert(r.reason);
                    }
                }
            }
            LinkEvent::Connected => {}
            LinkEvent::Down(reason) => {
                out.transient = Some(reason);
                return false;
            }
        }
        true
    }
}

/// Closing the connection is how MQTT 3.1.1 brokers (and Mosquitto 2.0 for MQTT 5) answer
/// a publish they refuse. Retrying such a message would reconnect for ever, so after a drop
/// with messages in flight the sink publishes one message at a time until those are
/// through; the same events alone in flight at [`SUSPECT_DROPS`] drops in a row are
/// reported as rejected. A broker restart hits the same message so often only by chance.
#[derive(Debug, Default)]
struct Suspect {
    /// Isolating until a message with a seq at least this is confirmed.
    until_seq: Option<u64>,
    /// Events alone in flight at every one of the last `drops` drops.
    alone: Vec<u64>,
    drops: u32,
}

const SUSPECT_DROPS: u32 = 3;

impl Suspect {
    fn isolating(&self) -> bool {
        self.until_seq.is_some()
    }

    /// The connection dropped (or a PUBACK never came) with `pending` in flight. Returns
    /// the seqs to reject and the number of drops when the verdict is in.
    fn dropped(&mut self, pending: &Pending) -> Option<(Vec<u64>, u32)> {
        let in_flight: Vec<&Vec<u64>> = pending
            .unsent
            .iter()
            .chain(pending.by_pkid.values())
            .collect();
        let highest = in_flight.iter().flat_map(|m| m.iter()).copied().max()?;
        self.until_seq = Some(self.until_seq.map_or(highest, |u| u.max(highest)));
        let [alone] = in_flight[..] else {
            self.alone.clear();
            self.drops = 0;
            return None;
        };
        let overlap: Vec<u64> = if self.alone.is_empty() {
            alone.clone()
        } else {
            alone
                .iter()
                .copied()
                .filter(|s| self.alone.contains(s))
                .collect()
        };
        self.drops = if overlap.is_empty() || self.alone.is_empty() {
            1
        } else {
            self.drops + 1
        };
        self.alone = if overlap.is_empty() {
            alone.clone()
        } else {
            overlap
        };
        if self.drops < SUSPECT_DROPS {
            return None;
        }
        let drops = std::mem::take(&mut self.drops);
        Some((std::mem::take(&mut self.alone), drops))
    }

    fn confirmed(&mut self, seqs: &[u64]) {
        if seqs.is_empty() {
            return;
        }
        if seqs.iter().any(|s| self.alone.contains(s)) {
            self.alone.clear();
            self.drops = 0;
        }
        if let (Some(until), Some(&top)) = (self.until_seq, seqs.iter().max()) {
            if top >= until {
                self.until_seq = None;
            }
        }
    }
}

impl Sink for MqttSink {
    fn name(&self) -> &'static str {
        NAME
    }

    fn send<'a>(&'a mut self, batch: &'a [SecurityEvent]) -> SendFuture<'a> {
        Box::pin(self.send_batch(batch))
    }

    fn push<'a>(&'a mut self, batch: &'a [SecurityEvent]) -> PushFuture<'a> {
        Box::pin(self.push_batch(batch))
    }

    fn flush(&mut self) -> PushFuture<'_> {
        Box::pin(self.flush_all())
    }

    fn close(&mut self) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + '_>> {
        Box::pin(self.goodbye())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn in_flight(messages: &[&[u64]]) -> Pending {
        Pending {
            unsent: messages.iter().map(|m| m.to_vec()).collect(),
            ..Pending::default()
        }
    }

    #[test]
    fn a_drop_with_several_messages_in_flight_starts_isolating_without_a_verdict() {
        let mut s = Suspect::default();
        assert_eq!(s.dropped(&in_flight(&[&[1, 2], &[3, 4], &[5]])), None);
        assert!(s.isolating());
        s.confirmed(&[1, 2]);
        assert!(s.isolating(), "5 was in flight too");
        s.confirmed(&[3, 4, 5]);
        assert!(!s.isolating());
    }

    #[test]
    fn the_same_message_alone_in_flight_at_three_drops_in_a_row_is_the_culprit() {
        let mut s = Suspect::default();
        assert_eq!(s.dropped(&in_flight(&[&[7, 8, 9], &[10]])), None);
        assert_eq!(s.dropped(&in_flight(&[&[7, 8, 9]])), None);
        // Messages planned differently after progress: the overlap is what stays.
        s.confirmed(&[5, 6]);
        assert_eq!(s.dropped(&in_flight(&[&[8, 9]])), None);
        assert_eq!(s.dropped(&in_flight(&[&[8, 9, 11]])), Some((vec![8, 9], 3)));
        assert_eq!(s.drops, 0, "starts over after a verdict");
    }

    #[test]
    fn a_suspect_that_gets_through_is_cleared() {
        let mut s = Suspect::default();
        assert_eq!(s.dropped(&in_flight(&[&[3]])), None);
        assert_eq!(s.dropped(&in_flight(&[&[3]])), None);
        s.confirmed(&[3]);
        assert!(!s.isolating());
        assert_eq!(s.dropped(&in_flight(&[&[3]])), None, "count starts again");
        assert_eq!(s.drops, 1);
    }

    #[test]
    fn nothing_in_flight_at_a_drop_is_no_evidence() {
        let mut s = Suspect::default();
        assert_eq!(s.dropped(&Pending::default()), None);
        assert!(!s.isolating());
    }
}
