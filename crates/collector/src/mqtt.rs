//! MQTT ingest: a rumqttc subscriber with QoS 1, a persistent session and manual
//! acknowledgement.
//!
//! - Events: `{prefix}/+/+/events/#`, or `$share/{group}/{prefix}/+/+/events/#` so several
//!   collectors split the messages of many gateways between them with no change to the
//!   gateways. A message is PUBACKed only after its events (or its quarantine record) are
//!   committed; until then the broker holds it and delivers it again after a reconnect,
//!   to this collector or, for a shared subscription, to another.
//! - Status: `{prefix}/+/+/status`, never shared (every collector sees the retained status),
//!   kept in `gateways.status`; a change of state is recorded as `gateway.online` or
//!   `gateway.offline`.
//!
//! The session is persistent (MQTT 3.1.1: `clean_session = false`; MQTT 5, with
//! `mqtt.protocol = "5"`: `clean_start = false` and a session expiry interval that never
//! ends), so the broker keeps unacknowledged messages and their packet ids across
//! reconnects. An acknowledgement carries the
//! connection epoch it was received on; after a reconnect that lost the session (the broker
//! restarted), old packet ids may name new messages, so acknowledgements of an older epoch
//! are dropped: their messages are not in the new session anyway.
//!
//! The poller hands messages to the workers through bounded queues. When they are full it
//! stops reading the socket: backpressure goes to the broker, which queues for this client
//! (`max_queued_messages`) and stops sending beyond its in-flight window.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use rumqttc::v5::mqttbytes::v5 as v5p;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, Publish, QoS};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::config::{MqttProtocol, MqttSettings};
use super::db::Pool;
use super::ingest::{Ingest, Input, Job, Reply, Unavailable};
use super::rows::{about, local_event};
use super::store::{Transport, WorkReport};
use linesentry_common::Backoff;
use linesentry_event::{EventType, Severity};

/// The client handle of either protocol version.
#[derive(Debug, Clone)]
enum Client {
    V4(AsyncClient),
    V5(rumqttc::v5::AsyncClient),
}

/// The event loop of either protocol version.
enum EventLoop {
    V4(Box<rumqttc::EventLoop>),
    V5(Box<rumqttc::v5::EventLoop>),
}

/// What the subscriber needs of an incoming packet, whatever the version.
enum Incoming {
    ConnAck {
        session_present: bool,
    },
    Publish {
        topic: String,
        payload: Bytes,
        ack: Acker,
    },
    /// A SUBACK; `refused` says why the broker refused the subscription, if it did.
    SubAck {
        refused: Option<String>,
    },
    Other,
    Failed(String),
}

/// The client and the (payload-less) message to acknowledge.
#[derive(Debug)]
enum Acker {
    V4(AsyncClient, Box<Publish>),
    V5(rumqttc::v5::AsyncClient, Box<v5p::Publish>),
}

impl Acker {
    fn pkid(&self) -> u16 {
        match self {
            Acker::V4(_, p) => p.pkid,
            Acker::V5(_, p) => p.pkid,
        }
    }

    fn send(self) {
        match self {
            Acker::V4(client, publish) => {
                if let Err(rumqttc::ClientError::TryRequest(_)) = client.try_ack(&publish) {
                    tokio::spawn(async move {
                        let _ = client.ack(&publish).await;
                    });
                }
            }
            Acker::V5(client, publish) => {
                if let Err(rumqttc::v5::ClientError::TryRequest(_)) = client.try_ack(&publish) {
                    tokio::spawn(async move {
                        let _ = client.ack(&publish).await;
                    });
                }
            }
        }
    }
}

impl EventLoop {
    /// Cancel-safe, as rumqttc's `poll` is.
    async fn poll(&mut self, client: &Client) -> Incoming {
        match (self, client) {
            (EventLoop::V4(el), Client::V4(c)) => match el.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(ack))) => Incoming::ConnAck {
                    session_present: ack.session_present,
                },
                Ok(Event::Incoming(Packet::Publish(publish))) => {
                    let mut bare = publish.clone();
                    bare.payload = Bytes::new();
                    Incoming::Publish {
                        topic: publish.topic,
                        payload: publish.payload,
                        ack: Acker::V4(c.clone(), Box::new(bare)),
                    }
                }
                Ok(Event::Incoming(Packet::SubAck(ack))) => Incoming::SubAck {
                    refused: ack
                        .return_codes
                        .iter()
                        .find(|c| !matches!(c, rumqttc::SubscribeReasonCode::Success(_)))
                        .map(|c| format!("{c:?}")),
                },
                Ok(_) => Incoming::Other,
                Err(e) => Incoming::Failed(e.to_string()),
            },
            (EventLoop::V5(el), Client::V5(c)) => match el.poll().await {
                Ok(rumqttc::v5::Event::Incoming(v5p::Packet::ConnAck(ack))) => Incoming::ConnAck {
                    session_present: ack.session_present,
                },
                Ok(rumqttc::v5::Event::Incoming(v5p::Packet::Publish(publish))) => {
                    // No topic alias is allowed (topic_alias_max unset), so the topic is
                    // always there.
                    let Ok(topic) = String::from_utf8(publish.topic.to_vec()) else {
                        return Incoming::Other;
                    };
                    let mut bare = publish.clone();
                    bare.payload = Bytes::new();
                    Incoming::Publish {
                        topic,
                        payload: publish.payload,
                        ack: Acker::V5(c.clone(), Box::new(bare)),
                    }
                }
                Ok(rumqttc::v5::Event::Incoming(v5p::Packet::SubAck(ack))) => Incoming::SubAck {
                    refused: ack
                        .return_codes
                        .iter()
                        .find(|c| !matches!(c, v5p::SubscribeReasonCode::Success(_)))
                        .map(|c| format!("{c:?}")),
                },
                Ok(_) => Incoming::Other,
                Err(e) => Incoming::Failed(e.to_string()),
            },
            _ => Incoming::Failed("MQTT client and event loop of different versions".into()),
        }
    }
}

impl Client {
    async fn subscribe(&self, filter: &str) -> Result<(), String> {
        match self {
            Client::V4(c) => c
                .subscribe(filter, QoS::AtLeastOnce)
                .await
                .map_err(|e| e.to_string()),
            Client::V5(c) => c
                .subscribe(filter, rumqttc::v5::mqttbytes::QoS::AtLeastOnce)
                .await
                .map_err(|e| e.to_string()),
        }
    }

    async fn disconnect(&self) {
        let _ = match self {
            Client::V4(c) => c.disconnect().await.map_err(|e| e.to_string()),
            Client::V5(c) => c.disconnect().await.map_err(|e| e.to_string()),
        };
    }
}

/// Acknowledges one message once its events are committed.
#[derive(Debug)]
pub struct MqttAck {
    acker: Acker,
    epoch: u64,
    current: Arc<AtomicU64>,
}

impl MqttAck {
    /// Sends the PUBACK, unless the connection the message came on is gone (see the module
    /// doc). Never waits.
    pub fn ack(self) {
        if self.current.load(Ordering::Acquire) != self.epoch {
            tracing::debug!(
                pkid = self.acker.pkid(),
                "not acknowledging a message of an earlier connection"
            );
            return;
        }
        self.acker.send();
    }
}

impl Reply for MqttAck {
    /// Either way the message is done with: committed, or (the database refused it)
    /// dropped, which a redelivery would not change.
    fn finish(self: Box<Self>, _: Result<WorkReport, Unavailable>) {
        self.ack();
    }
}

/// The topic filters a collector subscribes to.
pub fn filters(settings: &MqttSettings) -> (String, String) {
    let events = format!("{}/+/+/events/#", settings.topic_prefix);
    let events = match &settings.share_group {
        Some(group) => format!("$share/{group}/{events}"),
        None => events,
    };
    (events, format!("{}/+/+/status", settings.topic_prefix))
}

/// The gateway named by an events topic `{prefix}/{site}/{gateway}/events/...`.
pub fn topic_gateway<'a>(topic: &'a str, prefix: &str) -> Option<&'a str> {
    let rest = topic.strip_prefix(prefix)?.strip_prefix('/')?;
    let mut levels = rest.split('/');
    let _site = levels.next()?;
    let gateway = levels.next()?;
    (levels.next() == Some("events")).then_some(gateway)
}

/// The gateway of a status topic `{prefix}/{site}/{gateway}/status`.
fn status_gateway<'a>(topic: &'a str, prefix: &str) -> Option<&'a str> {
    let rest = topic.strip_prefix(prefix)?.strip_prefix('/')?;
    let mut levels = rest.split('/');
    let _site = levels.next()?;
    let gateway = levels.next()?;
    (levels.next() == Some("status") && levels.next().is_none()).then_some(gateway)
}

fn transport(settings: &MqttSettings) -> Result<Option<rumqttc::Transport>, String> {
    match &settings.tls {
        Some(tls) => {
            let client_auth = tls.client_cert.as_deref().zip(tls.client_key.as_deref());
            let config = super::tls::client_config(&tls.ca_file, client_auth)?;
            Ok(Some(rumqttc::Transport::tls_with_config(
                rumqttc::TlsConfiguration::Rustls(Arc::new(config)),
            )))
        }
        None => Ok(None),
    }
}

fn connect(settings: &MqttSettings, max_message: usize) -> Result<(Client, EventLoop), String> {
    let password = settings
        .password
        .as_ref()
        .map(|p| p.expose().to_owned())
        .unwrap_or_default();
    let max_packet = max_message + 64 * 1024;
    match settings.protocol {
        MqttProtocol::V311 => {
            let mut opts = MqttOptions::new(&settings.client_id, &settings.host, settings.port);
            opts.set_keep_alive(settings.keep_alive)
                .set_clean_session(false)
                .set_manual_acks(true)
                .set_max_packet_size(max_packet, 64 * 1024);
            if let Some(user) = &settings.username {
                opts.set_credentials(user, password);
            }
            if let Some(t) = transport(settings)? {
                opts.set_transport(t);
            }
            let (client, eventloop) = AsyncClient::new(opts, 1024);
            Ok((Client::V4(client), EventLoop::V4(Box::new(eventloop))))
        }
        MqttProtocol::V5 => {
            let mut opts =
                rumqttc::v5::MqttOptions::new(&settings.client_id, &settings.host, settings.port);
            // clean_start = false alone keeps the session only while connected in MQTT 5:
            // the expiry interval makes it outlive a disconnect, as in 3.1.1.
            opts.set_keep_alive(settings.keep_alive)
                .set_clean_start(false)
                .set_session_expiry_interval(Some(u32::MAX))
                .set_manual_acks(true)
                .set_max_packet_size(Some(u32::try_from(max_packet).unwrap_or(u32::MAX)))
                .set_request_channel_capacity(1024);
            if let Some(user) = &settings.username {
                opts.set_credentials(user, password);
            }
            if let Some(t) = transport(settings)? {
                opts.set_transport(t);
            }
            let (client, eventloop) = rumqttc::v5::AsyncClient::new(opts, 1024);
            Ok((Client::V5(client), EventLoop::V5(Box::new(eventloop))))
        }
    }
}

/// Runs the subscriber until `shutdown`.
pub async fn run(
    settings: MqttSettings,
    max_message: usize,
    ingest: Ingest,
    pool: Pool,
    collector_id: String,
    subscribed: Arc<AtomicBool>,
    shutdown: CancellationToken,
) -> Result<(), String> {
    let (client, mut eventloop) = connect(&settings, max_message)?;
    let epoch = Arc::new(AtomicU64::new(0));
    let (events_filter, status_filter) = filters(&settings);
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(30));
    // Filters the broker granted on the current connection.
    let mut granted = 0;
    loop {
        let event = tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            ev = eventloop.poll(&client) => ev,
        };
        match event {
            Incoming::ConnAck { session_present } => {
                subscribed.store(false, Ordering::Release);
                granted = 0;
                epoch.fetch_add(1, Ordering::AcqRel);
                backoff.reset();
                tracing::info!(host = %settings.host, port = settings.port, protocol = ?settings.protocol, session_present, filter = %events_filter, "MQTT connected");
                // Subscriptions survive in a persistent session; subscribing again is
                // harmless and covers a session the broker lost.
                for f in [&events_filter, &status_filter] {
                    if let Err(e) = client.subscribe(f).await {
                        tracing::warn!(filter = %f, error = %e, "MQTT subscribe failed");
                    }
                }
            }
            Incoming::Publish {
                topic,
                payload,
                ack,
            } => {
                let ack = MqttAck {
                    acker: ack,
                    epoch: epoch.load(Ordering::Acquire),
                    current: Arc::clone(&epoch),
                };
                if let Some(gw) = status_gateway(&topic, &settings.topic_prefix) {
                    let (pool, ingest, id, gw) = (
                        pool.clone(),
                        ingest.clone(),
                        collector_id.clone(),
                        gw.to_owned(),
                    );
                    tokio::spawn(async move {
                        status(&pool, &ingest, &id, &gw, &payload).await;
                        ack.ack();
                    });
                    continue;
                }
                let gateway = topic_gateway(&topic, &settings.topic_prefix).map(str::to_owned);
                let hint = gateway.clone().unwrap_or_default();
                let job = Job {
                    raw: Some(payload.clone()),
                    input: Input::Message {
                        origin: topic,
                        gateway,
                        payload,
                    },
                    transport: Transport::Mqtt,
                    reply: Some(Box::new(ack)),
                    deadline: None,
                };
                // Waits while the worker's queue is full: backpressure to the broker.
                tokio::select! {
                    biased;
                    () = shutdown.cancelled() => break,
                    r = ingest.submit(job, &hint) => if r.is_err() { break },
                }
            }
            Incoming::SubAck {
                refused: Some(reason),
            } => {
                tracing::error!(%reason, filter = %events_filter,
                    "the MQTT broker refused a subscription: check its ACL for this collector");
            }
            Incoming::SubAck { refused: None } => {
                granted += 1;
                if granted == 2 {
                    subscribed.store(true, Ordering::Release);
                    tracing::info!(filter = %events_filter, "MQTT subscribed");
                }
            }
            Incoming::Other => {}
            Incoming::Failed(e) => {
                subscribed.store(false, Ordering::Release);
                let delay = backoff.next_delay();
                tracing::warn!(host = %settings.host, port = settings.port, error = %e, retry_in_ms = delay.as_millis() as u64, "MQTT connection failed");
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
    // Unacknowledged messages stay with the broker for the next session or another
    // collector of the share group.
    subscribed.store(false, Ordering::Release);
    let _ = tokio::time::timeout(Duration::from_secs(2), client.disconnect()).await;
    Ok(())
}

const STATUS_UPDATE: &str = r"
WITH old AS (SELECT status FROM gateways WHERE gateway_id = $1 FOR UPDATE)
UPDATE gateways g SET status = $2, status_detail = $3, status_at = now()
FROM old WHERE g.gateway_id = $1
RETURNING old.status";

/// Records a gateway's retained status; a change of state becomes an event.
async fn status(
    pool: &Pool,
    ingest: &Ingest,
    collector_id: &str,
    gateway_id: &str,
    payload: &[u8],
) {
    let detail: Value = match serde_json::from_slice(payload) {
        Ok(v @ Value::Object(_)) if payload.len() <= 64 * 1024 => v,
        // An empty retained message clears the status; anything else is not ours.
        _ => {
            tracing::debug!(gateway = %gateway_id, "ignoring a status message that is not a JSON object");
            return;
        }
    };
    let Some(state) = detail
        .get("state")
        .and_then(Value::as_str)
        .filter(|s| matches!(*s, "online" | "offline"))
        .map(str::to_owned)
    else {
        return;
    };
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    let previous: Option<Option<String>> = loop {
        let result = async {
            let conn = pool.get().await?;
            let row = conn
                .client
                .query_opt(STATUS_UPDATE, &[&gateway_id, &state, &detail])
                .await?;
            Ok::<_, super::db::DbError>(row.map(|r| r.get::<_, Option<String>>(0)))
        }
        .await;
        match result {
            Ok(p) => break p,
            Err(e) if e.is_transient() => tokio::time::sleep(backoff.next_delay()).await,
            Err(e) => {
                tracing::warn!(gateway = %gateway_id, error = %e, "gateway status not recorded");
                return;
            }
        }
    };
    let Some(previous) = previous else {
        tracing::debug!(gateway = %gateway_id, "status of an unregistered gateway ignored");
        return;
    };
    if previous.as_deref() == Some(state.as_str()) {
        return;
    }
    let (event_type, severity) = if state == "offline" {
        (EventType::GatewayOffline, Severity::Warn)
    } else {
        (EventType::GatewayOnline, Severity::Info)
    };
    let mut e = local_event(collector_id, event_type, severity);
    about(&mut e, gateway_id, None);
    e.event_data.insert("previous".into(), previous.into());
    for key in ["version", "config_digest", "reason"] {
        if let Some(v) = detail.get(key) {
            e.event_data.insert(key.into(), v.clone());
        }
    }
    ingest.submit_local(vec![e]).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(share: Option<&str>) -> MqttSettings {
        MqttSettings {
            host: "h".into(),
            port: 1883,
            client_id: "c".into(),
            share_group: share.map(str::to_owned),
            topic_prefix: "linesentry/v1".into(),
            tls: None,
            username: None,
            password: None,
            keep_alive: Duration::from_secs(30),
            protocol: crate::config::MqttProtocol::V311,
        }
    }

    #[test]
    fn a_share_group_makes_the_events_subscription_shared_but_never_the_status_one() {
        assert_eq!(
            filters(&settings(Some("collectors"))),
            (
                "$share/collectors/linesentry/v1/+/+/events/#".to_owned(),
                "linesentry/v1/+/+/status".to_owned()
            )
        );
        assert_eq!(filters(&settings(None)).0, "linesentry/v1/+/+/events/#");
    }

    #[test]
    fn the_gateway_of_an_events_topic_is_its_fourth_level() {
        let p = "linesentry/v1";
        assert_eq!(
            topic_gateway("linesentry/v1/plant-a/gw-7/events/warn/setpoint.changed", p),
            Some("gw-7")
        );
        assert_eq!(topic_gateway("linesentry/v1/plant-a/gw-7/status", p), None);
        assert_eq!(topic_gateway("other/v1/plant-a/gw-7/events/x/y", p), None);
    }

    #[test]
    fn status_topics_name_their_gateway() {
        assert_eq!(
            status_gateway("linesentry/v1/site/gw-1/status", "linesentry/v1"),
            Some("gw-1")
        );
        assert_eq!(
            status_gateway("linesentry/v1/site/gw-1/status/x", "linesentry/v1"),
            None
        );
        assert_eq!(
            status_gateway("linesentry/v1/site/gw-1/events/x", "linesentry/v1"),
            None
        );
    }
}
