//! One MQTT connection (3.1.1 or 5) and the task that drives its event loop.
//!
//! rumqttc's `publish` returns when the request is queued, not when the broker has it, and
//! its event loop reconnects and re-sends on its own when polled after an error. Neither
//! fits a forwarder whose queue is the source of truth, so a `Link` is used for exactly one
//! connection: the task reports the packet id each publish got (`Sent`, in publish order)
//! and each PUBACK (`Acked`), and ends at the first error. The sink then drops the link and,
//! after its backoff, opens a new one and re-sends from the queue whatever was not acked.

use std::sync::Arc;
use std::time::Duration;

use rumqttc::{Outgoing, QoS, TlsConfiguration, Transport};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::{MqttProtocol, MqttSettings};

/// What the connection task reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum LinkEvent {
    Connected,
    /// The next publish in order went out with this packet id.
    Sent(u16),
    /// The broker acknowledged a packet id; `refused` carries an MQTT 5 error reason.
    Acked {
        pkid: u16,
        refused: Option<Refusal>,
    },
    /// The connection ended (the task has stopped).
    Down(String),
}

/// An MQTT 5 PUBACK reason other than success.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Refusal {
    pub(super) reason: String,
    /// Would the same message be refused again?
    pub(super) permanent: bool,
}

enum Client {
    V4(rumqttc::AsyncClient),
    V5(rumqttc::v5::AsyncClient),
}

/// A connected (or connecting) MQTT session.
pub(super) struct Link {
    client: Client,
    pub(super) events: mpsc::Receiver<LinkEvent>,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link").finish_non_exhaustive()
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What a new connection announces: the retained status it publishes on connect (birth)
/// and the one the broker publishes if it loses the connection (last will).
#[derive(Debug, Clone)]
pub(super) struct Status {
    pub(super) topic: String,
    pub(super) birth: Vec<u8>,
    pub(super) will: Vec<u8>,
}

impl Link {
    /// Starts connecting; the first event is `Connected` or `Down`.
    pub(super) fn open(
        settings: &MqttSettings,
        password: Option<&str>,
        tls: Option<Arc<rustls::ClientConfig>>,
        status: &Status,
    ) -> Self {
        let capacity = usize::from(settings.inflight) * 2 + 16;
        let (tx, rx) = mpsc::channel(capacity);
        let transport = tls.map_or_else(Transport::tcp, |config| {
            Transport::tls_with_config(TlsConfiguration::Rustls(config))
        });
        let timeout_s = settings.ack_timeout.as_secs().max(1);
        let (client, task) = match settings.protocol {
            MqttProtocol::V311 => {
                let mut o =
                    rumqttc::MqttOptions::new(&settings.client_id, &settings.host, settings.port);
                o.set_keep_alive(settings.keep_alive)
                    .set_clean_session(true)
                    .set_inflight(settings.inflight)
                    .set_request_channel_capacity(capacity)
                    .set_max_packet_size(64 * 1024, settings.max_packet_bytes)
                    .set_transport(transport)
                    .set_last_will(rumqttc::LastWill::new(
                        &status.topic,
                        status.will.clone(),
                        QoS::AtLeastOnce,
                        true,
                    ));
                if let Some(user) = &settings.username {
                    o.set_credentials(user, password.unwrap_or_default());
                }
                let (client, mut eventloop) = rumqttc::AsyncClient::new(o, capacity);
                eventloop.network_options.set_connection_timeout(timeout_s);
                // The sink batches events into messages itself; Nagle would only hold back
                // the last segment of a burst.
                eventloop.network_options.set_tcp_nodelay(true);
                (Client::V4(client), tokio::spawn(drive_v4(eventloop, tx)))
            }
            MqttProtocol::V5 => {
                let mut o = rumqttc::v5::MqttOptions::new(
                    &settings.client_id,
                    &settings.host,
                    settings.port,
                );
                o.set_keep_alive(settings.keep_alive)
                    .set_clean_start(true)
                    .set_outgoing_inflight_upper_limit(settings.inflight)
                    .set_request_channel_capacity(capacity)
                    .set_max_packet_size(Some(64 * 1024))
                    .set_transport(transport)
                    .set_last_will(rumqttc::v5::mqttbytes::v5::LastWill::new(
                        &status.topic,
                        status.will.clone(),
                        rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
                        true,
                        None,
                    ));
                o.set_connection_timeout(timeout_s);
                let mut network = o.network_options();
                network.set_tcp_nodelay(true);
                o.set_network_options(network);
                if let Some(user) = &settings.username {
                    o.set_credentials(user, password.unwrap_or_default());
                }
                let (client, eventloop) = rumqttc::v5::AsyncClient::new(o, capacity);
                (Client::V5(client), tokio::spawn(drive_v5(eventloop, tx)))
            }
        };
        Self {
            client,
            events: rx,
            task,
        }
    }

    /// Queues a QoS 1 publish; its packet id arrives later as `Sent`.
    pub(super) fn publish(
        &self,
        topic: &str,
        payload: Vec<u8>,
        retain: bool,
    ) -> Result<(), String> {
        match &self.client {
            Client::V4(c) => c
                .try_publish(topic, QoS::AtLeastOnce, retain, payload)
                .map_err(|e| e.to_string()),
            Client::V5(c) => c
                .try_publish(
                    topic,
                    rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
                    retain,
                    payload,
                )
                .map_err(|e| e.to_string()),
        }
    }

    /// Asks for a clean DISCONNECT (the broker then does not publish the last will).
    pub(super) fn disconnect(&self) {
        match &self.client {
            Client::V4(c) => {
                let _ = c.try_disconnect();
            }
            Client::V5(c) => {
                let _ = c.try_disconnect();
            }
        }
    }

    /// The next event if one is waiting; never waits.
    pub(super) fn try_next(&mut self) -> Option<LinkEvent> {
        match self.events.try_recv() {
            Ok(ev) => Some(ev),
            Err(mpsc::error::TryRecvError::Empty) => None,
            Err(mpsc::error::TryRecvError::Disconnected) => {
                Some(LinkEvent::Down("connection task ended".into()))
            }
        }
    }

    /// Waits for the next event, at most `timeout`.
    pub(super) async fn next(&mut self, timeout: Duration) -> Option<LinkEvent> {
        match tokio::time::timeout(timeout, self.events.recv()).await {
            Ok(Some(ev)) => Some(ev),
            Ok(None) => Some(LinkEvent::Down("connection task ended".into())),
            Err(_) => None,
        }
    }
}

async fn drive_v4(mut eventloop: rumqttc::EventLoop, tx: mpsc::Sender<LinkEvent>) {
    use rumqttc::{ConnectionError, Event, Packet};
    loop {
        let report = match eventloop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => LinkEvent::Connected,
            Ok(Event::Outgoing(Outgoing::Publish(pkid))) => LinkEvent::Sent(pkid),
            Ok(Event::Incoming(Packet::PubAck(ack))) => LinkEvent::Acked {
                pkid: ack.pkid,
                refused: None,
            },
            Ok(Event::Incoming(Packet::Disconnect)) => {
                let _ = tx
                    .send(LinkEvent::Down("broker sent DISCONNECT".into()))
                    .await;
                return;
            }
            Ok(Event::Outgoing(Outgoing::Disconnect)) => {
                let _ = tx.send(LinkEvent::Down("disconnected".into())).await;
                return;
            }
            Ok(_) => continue,
            Err(e) => {
                let reason = match &e {
                    ConnectionError::ConnectionRefused(code) => {
                        format!("broker refused the connection: {code:?}")
                    }
                    other => other.to_string(),
                };
                let _ = tx.send(LinkEvent::Down(reason)).await;
                return;
            }
        };
        if tx.send(report).await.is_err() {
            return;
        }
    }
}

async fn drive_v5(mut eventloop: rumqttc::v5::EventLoop, tx: mpsc::Sender<LinkEvent>) {
    use rumqttc::v5::mqttbytes::v5::{Packet, PubAckReason};
    use rumqttc::v5::{ConnectionError, Event};
    loop {
        let report = match eventloop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => LinkEvent::Connected,
            Ok(Event::Outgoing(Outgoing::Publish(pkid))) => LinkEvent::Sent(pkid),
            Ok(Event::Incoming(Packet::PubAck(ack))) => {
                let refused = match ack.reason {
                    PubAckReason::Success | PubAckReason::NoMatchingSubscribers => None,
                    reason => Some(Refusal {
                        permanent: matches!(
                            reason,
                            PubAckReason::NotAuthorized
                                | PubAckReason::TopicNameInvalid
                                | PubAckReason::PayloadFormatInvalid
                        ),
                        reason: format!(
                            "PUBACK {reason:?}{}",
                            ack.properties
                                .and_then(|p| p.reason_string)
                                .map(|s| format!(": {s}"))
                                .unwrap_or_default()
                        ),
                    }),
                };
                LinkEvent::Acked {
                    pkid: ack.pkid,
                    refused,
                }
            }
            Ok(Event::Incoming(Packet::Disconnect(d))) => {
                let _ = tx
                    .send(LinkEvent::Down(format!(
                        "broker sent DISCONNECT {:?}",
                        d.reason_code
                    )))
                    .await;
                return;
            }
            Ok(Event::Outgoing(Outgoing::Disconnect)) => {
                let _ = tx.send(LinkEvent::Down("disconnected".into())).await;
                return;
            }
            Ok(_) => continue,
            Err(e) => {
                let reason = match &e {
                    ConnectionError::ConnectionRefused(code) => {
                        format!("broker refused the connection: {code:?}")
                    }
                    other => other.to_string(),
                };
                let _ = tx.send(LinkEvent::Down(reason)).await;
                return;
            }
        };
        if tx.send(report).await.is_err() {
            return;
        }
    }
}
