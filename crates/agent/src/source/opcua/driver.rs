//! The I/O of one OPC UA station: discover the endpoint, build a session, run async-opcua's
//! session event loop on its own task, keep the subscription alive, rebuild everything with
//! backoff when the event loop gives up. Runs until the source's token is cancelled.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use opcua::client::transport::{
    Connector, RequestRecv, SecureChannelState, TcpConnector, TcpTransport, TransportConfiguration,
};
use opcua::client::{
    Client, ClientBuilder, ClientEndpoint, ConnectionSource, MonitoredItemMap,
    OnSubscriptionNotificationCore, Session, SessionEventLoop,
};
use opcua::types::{
    AttributeId, DataChangeFilter, DataChangeNotification, DataChangeTrigger, DeadbandType,
    EndpointDescription, ExtensionObject, MessageSecurityMode, MonitoredItemCreateRequest,
    MonitoringMode, MonitoringParameters, NotificationMessage, ReadValueId,
    StatusChangeNotification, StatusCode, TimestampsToReturn, Variant,
};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::convert;
use super::state::{Notified, Watchdog};
use super::{Acquisition, Deadband, EndpointFacts, OpcUaSettings, Phase, Shared, Station};
use crate::source::SourceError;
use linesentry_common::{Backoff, BackoffPolicy};
use linesentry_event::Timestamp;

/// A service call under `timeout`, its failure classified.
pub(super) async fn call<T>(
    timeout: Duration,
    fut: impl std::future::Future<Output = Result<T, opcua::types::Error>>,
) -> Result<T, SourceError> {
    match tokio::time::timeout(timeout, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(convert::classify(e.status(), &e.to_string())),
        Err(_) => Err(SourceError::Timeout(
            u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
        )),
    }
}

/// Whether the session is connected right now. async-opcua only exposes "wait until
/// connected", whose first poll answers from the current state, so a zero timeout reads it.
pub(super) async fn is_connected(session: &Session) -> bool {
    tokio::time::timeout(Duration::ZERO, session.wait_for_connection())
        .await
        .is_ok_and(|connected| connected)
}

/// Security token lifetime the client asks for. async-opcua's default is 60 s, renewed at 3/4
/// of it: with SignAndEncrypt each renewal costs two RSA private-key operations on the
/// gateway (sign the request, decrypt the answer), which was a tenth of the agent's idle CPU
/// with two OPC UA stations. One hour is the common client default (the OPC Foundation
/// stacks); the server revises it down to its own maximum (async-opcua servers: 5 min).
const CHANNEL_LIFETIME_MS: u32 = 3_600_000;

/// The id of the station's endpoint in the client config.
const STATION_ENDPOINT: &str = "station";

/// The async-opcua client of one station: the agent's PKI and application URI, its own
/// certificate (never created here: [`super::Pki::ensure_own`] did that once), server
/// certificates trusted only from `trusted/` unless auto-accept is on.
pub(super) fn build_client(station: &Station) -> Result<Client, SourceError> {
    let s = &station.settings;
    let keep_alive =
        (station.poll_interval * 5).clamp(Duration::from_secs(1), Duration::from_secs(30));
    // Sessions are built with `connect_to_endpoint_directly` on the endpoint discovery
    // found, so the config's endpoint list is never used to connect. It is filled with the
    // station's endpoint all the same: async-opcua's config validation warns "Endpoint config
    // contains no endpoints" for an empty list, once per station at every start and reload.
    let endpoint = ClientEndpoint {
        security_policy: convert::security_policy(station.security_policy)
            .to_str()
            .to_owned(),
        security_mode: convert::security_mode(station.security_mode).into(),
        ..ClientEndpoint::new(station.endpoint_url.clone())
    };
    ClientBuilder::new()
        .endpoint(STATION_ENDPOINT, endpoint)
        .default_endpoint(STATION_ENDPOINT)
        .application_name(s.application_name.clone())
        .application_uri(s.application_uri.clone())
        .product_uri("urn:linesentry")
        .pki_dir(s.pki.root())
        .create_sample_keypair(false)
        .trust_server_certs(s.auto_accept_server_certificates)
        .verify_server_certs(true)
        .session_name(format!("linesentry {}", station.id))
        .session_retry_limit(i32::try_from(s.session_retries).unwrap_or(i32::MAX))
        .session_retry_initial(Duration::from_millis(250))
        .session_retry_max(Duration::from_secs(2))
        .request_timeout(station.timeout)
        .channel_lifetime(CHANNEL_LIFETIME_MS)
        .keep_alive_interval(keep_alive)
        .max_failed_keep_alive_count(3)
        .recreate_subscriptions(true)
        .client()
        .map_err(|errors| {
            SourceError::Other(format!("OPC UA client settings: {}", errors.join("; ")))
        })
}

/// Why a session ended.
enum Ended {
    Cancelled,
    /// The event loop stopped: async-opcua gave up reconnecting (or the session was closed).
    Gave(StatusCode),
    /// The driver dropped a session that is up but does not reach the server serving the
    /// address (the reason).
    Dropped(String),
}

/// The driver task.
pub(super) async fn run(
    mut client: Client,
    station: Arc<Station>,
    shared: Arc<Shared>,
    cancel: CancellationToken,
) {
    let s = &station.settings;
    let seed = station
        .id
        .bytes()
        .fold(17u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
    let mut backoff = Backoff::seeded(
        BackoffPolicy::doubling(
            s.reconnect_initial,
            s.reconnect_max.max(s.reconnect_initial),
        ),
        seed,
    );
    loop {
        shared.lock().phase = Phase::Connecting;
        let attempt = tokio::select! {
            () = cancel.cancelled() => break,
            attempt = connect(&mut client, &station, &shared) => attempt,
        };
        let failure = match attempt {
            Ok((session, event_loop)) => {
                let _own = super::own::OwnSession::register(&station.endpoint_url);
                shared.lock().session = Some(session.clone());
                let ended = supervise(
                    &client,
                    &station,
                    &shared,
                    &session,
                    event_loop,
                    &cancel,
                    &mut backoff,
                )
                .await;
                shared.lock().session = None;
                match ended {
                    Ended::Cancelled => break,
                    Ended::Gave(status) => {
                        let error = explain(
                            &station,
                            &shared,
                            convert::classify(status, "async-opcua gave up connecting"),
                        );
                        tracing::warn!(station = %station.id, error = %error, "OPC UA session ended; rebuilding it");
                        error
                    }
                    Ended::Dropped(why) => SourceError::Transport(why),
                }
            }
            Err(error) => {
                let error = explain(&station, &shared, error);
                tracing::warn!(station = %station.id, error = %error, "OPC UA connection failed");
                error
            }
        };
        {
            let mut inner = shared.lock();
            inner.server_answered =
                matches!(failure, SourceError::Auth(_) | SourceError::Certificate(_));
            inner.phase = Phase::Backoff;
        }
        shared.push_error(failure);
        let delay = backoff.next_delay();
        tokio::select! {
            () = cancel.cancelled() => break,
            () = tokio::time::sleep(delay) => {}
        }
    }
    shared.lock().phase = Phase::Stopped;
}

/// Adds what an operator needs to a certificate error: which server certificate, and
/// where it waits to be trusted.
fn explain(station: &Station, shared: &Shared, error: SourceError) -> SourceError {
    let SourceError::Certificate(text) = &error else {
        return error;
    };
    let thumbprint = shared
        .lock()
        .endpoint
        .as_ref()
        .and_then(|f| f.certificate_thumbprint.clone());
    let Some(thumbprint) = thumbprint else {
        return error;
    };
    let pki = &station.settings.pki;
    match pki.rejected_path(&thumbprint) {
        Some(path) => SourceError::Certificate(format!(
            "{text}; server certificate {thumbprint} is not trusted, it waits in {}; trust it with `linesentry pki trust --data <data_dir> {thumbprint}`",
            path.display()
        )),
        None => SourceError::Certificate(format!("{text}; server certificate {thumbprint}")),
    }
}

/// Discovers the server's endpoints, picks the configured one and builds a session on it.
async fn connect(
    client: &mut Client,
    station: &Station,
    shared: &Shared,
) -> Result<(Arc<Session>, SessionEventLoop<CountingConnector>), SourceError> {
    let url = station.endpoint_url.as_str();
    let endpoints = call(station.timeout, client.get_server_endpoints_from_url(url)).await?;
    let policy = convert::security_policy(station.security_policy);
    let mode = convert::security_mode(station.security_mode);
    let Some(endpoint) = Client::find_matching_endpoint(&endpoints, url, policy, mode) else {
        let offered = endpoints
            .iter()
            .map(|e| {
                format!(
                    "{} {}/{:?}",
                    e.endpoint_url,
                    convert::short_policy(e.security_policy_uri.as_ref()),
                    e.security_mode
                )
            })
            .collect::<Vec<_>>()
            .join(", ");
        // What the server offers now still goes to the rules (a weaker set than the baseline
        // is a downgrade); the agent never falls back to a weaker endpoint itself.
        {
            let mut inner = shared.lock();
            let facts = offered_facts(&endpoints, inner.endpoint.as_ref());
            inner.offered = Some(facts.clone());
            inner.endpoint = Some(facts);
        }
        return Err(SourceError::Other(format!(
            "{url} offers no endpoint with security policy {policy} and mode {mode:?}; it offers: {offered}"
        )));
    };
    shared.lock().endpoint = Some(facts(&endpoints, &endpoint));
    let (session, event_loop) = client
        .session_builder()
        .with_connector(CountingSource {
            connects: shared.connects.clone(),
        })
        .connect_to_endpoint_directly(endpoint)
        .and_then(|b| {
            b.user_identity_token(station.identity.clone())
                .build(client.certificate_store().clone())
        })
        .map_err(|e| convert::classify(e.status(), &e.to_string()))?;
    shared.lock().stats.sessions_built += 1;
    Ok((session, event_loop))
}

/// Refreshes the endpoint facts (application URI, certificate, policies) after a reconnect;
/// false when discovery failed (the caller tries again).
async fn rediscover(client: &Client, station: &Station, shared: &Shared) -> bool {
    let url = station.endpoint_url.as_str();
    match call(station.timeout, client.get_server_endpoints_from_url(url)).await {
        Ok(endpoints) => {
            let policy = convert::security_policy(station.security_policy);
            let mode = convert::security_mode(station.security_mode);
            let mut inner = shared.lock();
            if let Some(chosen) = Client::find_matching_endpoint(&endpoints, url, policy, mode) {
                inner.endpoint = Some(facts(&endpoints, &chosen));
            } else {
                let facts = offered_facts(&endpoints, inner.endpoint.as_ref());
                inner.endpoint = Some(facts);
            }
            true
        }
        Err(e) => {
            tracing::info!(station = %station.id, error = %e, "endpoint rediscovery failed; trying again");
            false
        }
    }
}

fn facts(all: &[EndpointDescription], chosen: &EndpointDescription) -> EndpointFacts {
    let uri = chosen.server.application_uri.as_ref();
    EndpointFacts {
        application_uri: (!uri.is_empty()).then(|| uri.to_owned()),
        certificate_thumbprint: convert::certificate_thumbprint(&chosen.server_certificate),
        ..offered_facts(all, None)
    }
}

/// The security the endpoints offer (strongest policy, None offered) when none of them is
/// the configured one. Identity stays what `previous` learned from the endpoint the agent
/// uses: another endpoint's certificate or an empty one says nothing about the server.
pub(super) fn offered_facts(
    all: &[EndpointDescription],
    previous: Option<&EndpointFacts>,
) -> EndpointFacts {
    EndpointFacts {
        application_uri: previous.and_then(|p| p.application_uri.clone()),
        certificate_thumbprint: previous.and_then(|p| p.certificate_thumbprint.clone()),
        best_policy: convert::best_policy(all.iter().map(|e| e.security_policy_uri.as_ref())),
        offers_none: all
            .iter()
            .any(|e| e.security_mode == MessageSecurityMode::None),
    }
}

/// Runs the session's event loop on its own task and looks after the subscription until the
/// loop ends or the source is cancelled.
async fn supervise(
    client: &Client,
    station: &Station,
    shared: &Arc<Shared>,
    session: &Arc<Session>,
    event_loop: SessionEventLoop<CountingConnector>,
    cancel: &CancellationToken,
    backoff: &mut Backoff,
) -> Ended {
    // Transport connects seen so far: a change means a reconnect, even one that happened
    // entirely between two ticks (or before the first tick saw the session up). A failed
    // activation also opens a transport; taking it for a reconnect only costs a rediscovery.
    let mut seen_connects = shared.connects.load(Ordering::Relaxed) + 1;
    let mut handle: JoinHandle<StatusCode> = event_loop.spawn();
    let check = station
        .poll_interval
        .clamp(Duration::from_millis(100), Duration::from_secs(1));
    let mut tick = tokio::time::interval(check);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut upkeep = Upkeep::new(station, shared, session);
    // `None` until the first connection of this session.
    let mut was_connected: Option<bool> = None;
    let mut rediscovery_due = false;
    // `connect` discovered the endpoints just now.
    let mut discovered = Instant::now();
    loop {
        tokio::select! {
            () = cancel.cancelled() => {
                // Close while the event loop still runs: the close requests need it.
                close(station, session).await;
                handle.abort();
                return Ended::Cancelled;
            }
            status = &mut handle => {
                return Ended::Gave(status.unwrap_or(StatusCode::BadUnexpectedError));
            }
            _ = tick.tick() => {}
        }
        let connected = is_connected(session).await;
        if !connected {
            if was_connected == Some(true) {
                tracing::warn!(station = %station.id, "OPC UA connection lost; async-opcua is reconnecting");
                shared.push_error(SourceError::Transport(
                    "connection to the server lost; reconnecting".into(),
                ));
                was_connected = Some(false);
            }
            shared.lock().phase = Phase::Connecting;
            continue;
        }
        let connects = shared.connects.load(Ordering::Relaxed);
        let reconnected = was_connected == Some(false) || connects > seen_connects;
        // Another device (or the same one with a new certificate) may answer at the address
        // now: learn its endpoints again before the status (and identity) is re-read, and
        // keep trying on every tick until that succeeds: a swapped certificate must not go
        // unreported because one discovery timed out.
        if let Some(why) = rediscover_when_due(
            client,
            station,
            shared,
            (&mut rediscovery_due, &mut discovered),
            reconnected,
        )
        .await
        {
            return rebuild(station, session, handle, why).await;
        }
        if was_connected != Some(true) || reconnected {
            {
                let mut inner = shared.lock();
                inner.phase = Phase::Connected;
                inner.server_answered = false;
                // A reconnect may mean a restarted server: re-read its status.
                inner.status_due = true;
                if reconnected {
                    inner.stats.reconnects += 1;
                }
            }
            tracing::info!(station = %station.id, session = %session.server_session_id(), reconnected, "OPC UA session up");
            backoff.reset();
            if reconnected {
                // async-opcua 0.19 re-creates subscriptions while reconnecting, before its
                // new publish loop exists; that loop then waits for a trigger that already
                // fired and never publishes. Kick it (the watchdog stays the safety net).
                session.trigger_publish_now();
            }
            // Silence while disconnected is not the subscription's fault.
            {
                let mut inner = shared.lock();
                let now = Instant::now();
                inner.dog.feed(now);
                inner.heard.feed(now);
            }
            was_connected = Some(true);
        }
        seen_connects = connects;
        // Before the subscription's items are created: a tag of the wrong type gets none.
        check_types(station, shared, session).await;
        if station.settings.acquisition == Acquisition::Subscription {
            upkeep.check(cancel).await;
        }
        if let Some(why) = distrust(shared) {
            return rebuild(station, session, handle, why).await;
        }
    }
}

/// Rediscovers the endpoints after a reconnect and every status interval, and keeps trying
/// on every tick until that succeeds: another device (or the same one with a new
/// certificate) may answer at the address, and a server restarted in its process can leave
/// this connection open while a new instance serves the address; only a new connection sees
/// that. Returns why the session must be rebuilt when the certificate at the address is not
/// the one the session was opened with.
async fn rediscover_when_due(
    client: &Client,
    station: &Station,
    shared: &Shared,
    (due, discovered): (&mut bool, &mut Instant),
    reconnected: bool,
) -> Option<String> {
    *due |= reconnected || discovered.elapsed() >= station.settings.status_interval;
    if !*due {
        return None;
    }
    let thumbprint = |shared: &Shared| {
        shared
            .lock()
            .endpoint
            .as_ref()
            .and_then(|f| f.certificate_thumbprint.clone())
    };
    let before = thumbprint(shared);
    if !rediscover(client, station, shared).await {
        return None;
    }
    *due = false;
    *discovered = Instant::now();
    // The status (and the identity with it) is read again with what discovery found.
    shared.lock().status_due = true;
    let after = thumbprint(shared);
    (before.is_some() && after != before).then(|| {
        format!(
            "the server at the address now presents certificate {}, not the one this session was opened with; rebuilding the session",
            after.as_deref().unwrap_or("(none)")
        )
    })
}

/// Why a session that says it is connected must not be trusted any more, if it must not:
/// the handle found the server's clock standing still, or nothing came from the server for
/// twice the watchdog limit, the subscription's re-creation included (a connection to a
/// server that no longer serves).
fn distrust(shared: &Shared) -> Option<String> {
    let mut inner = shared.lock();
    if let Some(why) = inner.rebuild.take() {
        return Some(why);
    }
    let silent_for = inner.heard.silent_for(Instant::now());
    (silent_for > inner.heard.limit().saturating_mul(2)).then(|| {
        format!(
            "nothing heard from the server for {silent_for:?} although the session is up; rebuilding the session"
        )
    })
}

/// Ends a session that is up but cannot be trusted to reach the server at the address:
/// logged, closed (bounded), its event loop stopped; the driver reports `why` with the next
/// poll and builds a new session.
async fn rebuild(
    station: &Station,
    session: &Session,
    handle: JoinHandle<StatusCode>,
    why: String,
) -> Ended {
    tracing::warn!(station = %station.id, %why, "OPC UA session dropped; building a new one");
    close(station, session).await;
    handle.abort();
    Ended::Dropped(why)
}

/// Failed reads of the tags' DataTypes after which a connection is left unchecked.
const TYPE_CHECK_ATTEMPTS: u32 = 3;

/// Reads the DataType attribute of every active tag's node, once per transport connection,
/// and skips each tag whose declared type does not fit it: reported once (warn, and an error
/// with the next poll), as a node the server refuses is. When the read itself fails, the
/// next call tries again, up to [`TYPE_CHECK_ATTEMPTS`] times per connection (a server that
/// never answers it must not cost a timeout on every tick); a node whose DataType cannot be
/// read is left to the value reads, which report it.
pub(super) async fn check_types(station: &Station, shared: &Shared, session: &Session) {
    let connection = shared.connects.load(Ordering::Relaxed);
    let reads: Vec<(usize, ReadValueId)> = {
        let inner = shared.lock();
        if inner.types_checked == Some(connection) {
            return;
        }
        inner
            .book
            .active()
            .filter_map(|i| {
                let node = station.tags[i].node.clone()?;
                let read = ReadValueId {
                    attribute_id: AttributeId::DataType as u32,
                    ..ReadValueId::from(node)
                };
                Some((i, read))
            })
            .collect()
    };
    if reads.is_empty() {
        shared.lock().types_checked = Some(connection);
        return;
    }
    let ids: Vec<ReadValueId> = reads.iter().map(|(_, r)| r.clone()).collect();
    let values = match call(
        station.timeout,
        session.read(&ids, TimestampsToReturn::Neither, 0.0),
    )
    .await
    {
        Ok(values) => values,
        Err(e) => {
            let mut inner = shared.lock();
            let failures = match inner.type_check_failures {
                (c, n) if c == connection => n + 1,
                _ => 1,
            };
            inner.type_check_failures = (connection, failures);
            if failures >= TYPE_CHECK_ATTEMPTS {
                inner.types_checked = Some(connection);
                tracing::warn!(station = %station.id, error = %e, failures,
                    "reading the DataType of the tags' nodes failed; their types are not checked on this connection");
            } else {
                tracing::debug!(station = %station.id, error = %e, "reading the DataType of the tags' nodes failed; trying again");
            }
            return;
        }
    };
    let mut inner = shared.lock();
    for ((index, _), value) in reads.iter().zip(&values) {
        let Some(Variant::NodeId(node_type)) = &value.value else {
            continue;
        };
        let tag = &station.tags[*index];
        let Err(node_type) = convert::check_data_type(node_type, tag.declared) else {
            continue;
        };
        if inner.book.mark_bad(*index) {
            let declared = tag.declared.name();
            tracing::warn!(station = %station.id, tag = %tag.name, node = %tag.node_text,
                node_type, declared, "OPC UA node's DataType does not fit the profile's type; the tag is skipped");
            if inner.errors.len() >= super::MAX_PENDING_ERRORS {
                inner.errors.remove(0);
            }
            inner.errors.push(SourceError::Other(format!(
                "station `{}`, {}: the node's DataType is {node_type} but the profile declares \
                 type `{declared}`; the tag is skipped (expected a type that holds {node_type} \
                 values, such as `{}`)",
                station.id,
                tag.what(),
                convert::natural_type(node_type)
            )));
        }
    }
    inner.types_checked = Some(connection);
}

/// Best-effort close: delete subscriptions and the session on the server.
async fn close(station: &Station, session: &Session) {
    if tokio::time::timeout(station.timeout, session.disconnect())
        .await
        .is_err()
    {
        tracing::debug!(station = %station.id, "OPC UA session close timed out");
    }
}

/// The publishing interval of a station's subscription: its poll interval, at least 50 ms.
fn publishing_interval(poll_interval: Duration) -> Duration {
    poll_interval.max(Duration::from_millis(50))
}

/// The subscription watchdog of a station: `watchdog_intervals` publishing intervals, more
/// than one keep-alive period.
pub(super) fn watchdog(poll_interval: Duration, settings: &OpcUaSettings) -> Watchdog {
    let intervals = settings
        .watchdog_intervals
        .max(settings.keep_alive_count + 1);
    Watchdog::new(
        publishing_interval(poll_interval),
        intervals,
        Instant::now(),
    )
}

/// Keeps one subscription with an item per active tag on the session.
struct Upkeep<'a> {
    station: &'a Station,
    shared: &'a Arc<Shared>,
    session: &'a Arc<Session>,
    publishing_interval: Duration,
}

impl<'a> Upkeep<'a> {
    fn new(station: &'a Station, shared: &'a Arc<Shared>, session: &'a Arc<Session>) -> Self {
        Self {
            station,
            shared,
            session,
            publishing_interval: publishing_interval(station.poll_interval),
        }
    }

    /// Subscription ids on the session and the client handles monitored on them.
    fn current(&self) -> (Vec<u32>, Vec<u32>) {
        let state = self.session.subscription_state().lock();
        let ids = state.subscription_ids().unwrap_or_default();
        let handles = ids
            .iter()
            .filter_map(|id| state.get(*id))
            .flat_map(|s| {
                s.monitored_items()
                    .map(opcua::client::MonitoredItem::client_handle)
            })
            .collect();
        (ids, handles)
    }

    async fn check(&mut self, cancel: &CancellationToken) {
        let (lost, silent, limit) = {
            let mut inner = self.shared.lock();
            (
                std::mem::take(&mut inner.subscription_lost),
                inner.dog.expired(Instant::now()),
                inner.dog.limit(),
            )
        };
        let (ids, handles) = self.current();
        if !ids.is_empty() && (lost || silent) {
            let why = if lost {
                "the server reported the subscription lost".to_owned()
            } else {
                format!("no notification, not even a keep-alive, for {limit:?}")
            };
            tracing::warn!(station = %self.station.id, subscriptions = ?ids, %why,
                "OPC UA subscription silent; deleting and re-creating it");
            self.shared.push_error(SourceError::Other(format!(
                "subscription re-created by the watchdog: {why}"
            )));
            self.shared.lock().stats.watchdog_recreations += 1;
            if let Err(e) = call(
                self.station.timeout,
                self.session.delete_subscriptions(&ids),
            )
            .await
            {
                tracing::debug!(station = %self.station.id, error = %e, "deleting the silent subscription failed");
            }
            if !cancel.is_cancelled() {
                self.create(&[]).await;
            }
            return;
        }
        if ids.is_empty() {
            self.create(&[]).await;
            return;
        }
        let missing: Vec<usize> = {
            let inner = self.shared.lock();
            inner
                .book
                .active()
                .filter(|i| !handles.contains(&handle_of(*i)))
                .collect()
        };
        if !missing.is_empty() {
            tracing::info!(station = %self.station.id, missing = missing.len(), "adding monitored items missing from the subscription");
            self.add_items(ids[0], &missing).await;
        }
    }

    /// Creates the subscription and its items; `only` empty means every active tag.
    async fn create(&mut self, only: &[usize]) {
        let s = &self.station.settings;
        let keep_alive = s.keep_alive_count.max(1);
        let lifetime = keep_alive.saturating_mul(4).max(3 * keep_alive);
        let callback = Collector {
            shared: self.shared.clone(),
            tags: self.station.tags.len(),
        };
        let created = call(
            self.station.timeout,
            self.session.create_subscription(
                self.publishing_interval,
                lifetime,
                keep_alive,
                0,
                0,
                true,
                callback,
            ),
        )
        .await;
        let id = match created {
            Ok(id) => id,
            Err(e) => {
                tracing::warn!(station = %self.station.id, error = %e, "creating the OPC UA subscription failed");
                self.shared.push_error(e);
                return;
            }
        };
        {
            let mut inner = self.shared.lock();
            inner.dog.feed(Instant::now());
            inner.stats.subscriptions_created += 1;
        }
        let tags: Vec<usize> = if only.is_empty() {
            self.shared.lock().book.active().collect()
        } else {
            only.to_vec()
        };
        tracing::info!(station = %self.station.id, subscription = id, items = tags.len(),
            interval_ms = self.publishing_interval.as_millis() as u64, "OPC UA subscription created");
        self.add_items(id, &tags).await;
    }

    /// Creates monitored items for `tags`; refused nodes are reported once and skipped, a
    /// refused deadband is reported once and the item is monitored without it.
    async fn add_items(&mut self, subscription: u32, tags: &[usize]) {
        if tags.is_empty() {
            return;
        }
        let mut pending: Vec<(usize, bool)> = tags.iter().map(|&t| (t, true)).collect();
        // At most two rounds: with the requested deadbands, then without the refused ones.
        for _ in 0..2 {
            let requests: Vec<MonitoredItemCreateRequest> = pending
                .iter()
                .filter_map(|&(t, with_filter)| self.request(t, with_filter))
                .collect();
            if requests.is_empty() {
                return;
            }
            let results = match call(
                self.station.timeout,
                self.session.create_monitored_items(
                    subscription,
                    TimestampsToReturn::Both,
                    requests,
                ),
            )
            .await
            {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(station = %self.station.id, error = %e, "creating monitored items failed");
                    self.shared.push_error(e);
                    return;
                }
            };
            let mut retry = Vec::new();
            for (&(t, with_filter), created) in pending.iter().zip(&results) {
                let status = created.result.status_code;
                if status.is_good() {
                    continue;
                }
                let tag = &self.station.tags[t];
                if convert::is_bad_node(status) {
                    if self.shared.lock().book.mark_bad(t) {
                        tracing::warn!(station = %self.station.id, tag = %tag.name, node = %tag.node_text,
                            status = convert::status_name(status), "OPC UA node refused; the tag is skipped from now on");
                        self.shared.push_error(SourceError::Decode {
                            what: tag.what(),
                            reason: format!(
                                "{}; the tag is skipped from now on",
                                convert::status_name(status)
                            ),
                        });
                    }
                } else if with_filter
                    && tag.deadband.is_some()
                    && convert::status_name(status).contains("Filter")
                {
                    self.shared.push_error(SourceError::Other(format!(
                        "{}: the server refused the deadband ({}); monitoring every change instead",
                        tag.what(),
                        convert::status_name(status)
                    )));
                    retry.push((t, false));
                } else {
                    self.shared.push_error(SourceError::Other(format!(
                        "{}: monitored item refused: {}",
                        tag.what(),
                        convert::status_name(status)
                    )));
                }
            }
            if retry.is_empty() {
                return;
            }
            pending = retry;
        }
    }

    fn request(&self, tag: usize, with_filter: bool) -> Option<MonitoredItemCreateRequest> {
        let plan = &self.station.tags[tag];
        let node = plan.node.clone()?;
        let filter = match plan.deadband.filter(|_| with_filter) {
            None => ExtensionObject::null(),
            Some(d) => {
                let (deadband_type, deadband_value) = match d {
                    Deadband::Absolute(v) => (DeadbandType::Absolute, v),
                    Deadband::Percent(v) => (DeadbandType::Percent, v),
                };
                ExtensionObject::from_message(DataChangeFilter {
                    trigger: DataChangeTrigger::StatusValue,
                    deadband_type: deadband_type as u32,
                    deadband_value,
                })
            }
        };
        Some(MonitoredItemCreateRequest {
            item_to_monitor: ReadValueId::from(node),
            monitoring_mode: MonitoringMode::Reporting,
            requested_parameters: MonitoringParameters {
                client_handle: handle_of(tag),
                sampling_interval: self.publishing_interval.as_secs_f64() * 1000.0,
                filter,
                queue_size: self.station.settings.queue_size.max(1),
                discard_oldest: true,
            },
        })
    }
}

/// The connection source of every session: direct TCP, counting the transports it opens so
/// the driver notices reconnects however quickly they happen.
struct CountingSource {
    connects: Arc<AtomicU64>,
}

impl ConnectionSource for CountingSource {
    type Builder = CountingConnector;

    fn get_connector(
        &self,
        endpoint: &EndpointDescription,
    ) -> Result<CountingConnector, opcua::types::Error> {
        Ok(CountingConnector {
            inner: TcpConnector::new(endpoint.endpoint_url.as_ref())?,
            connects: self.connects.clone(),
        })
    }
}

/// async-opcua's TCP connector, counting successful connects.
pub(super) struct CountingConnector {
    inner: TcpConnector,
    connects: Arc<AtomicU64>,
}

impl Connector for CountingConnector {
    type Transport = TcpTransport;

    async fn connect(
        &self,
        channel: Arc<SecureChannelState>,
        outgoing_recv: RequestRecv,
        config: TransportConfiguration,
    ) -> Result<TcpTransport, opcua::types::Error> {
        let transport = self.inner.connect(channel, outgoing_recv, config).await?;
        self.connects.fetch_add(1, Ordering::Relaxed);
        Ok(transport)
    }

    fn default_endpoint(&self) -> EndpointDescription {
        self.inner.default_endpoint()
    }
}

/// Client handle of a tag: its index + 1 (0 would make async-opcua pick one).
fn handle_of(tag: usize) -> u32 {
    u32::try_from(tag + 1).unwrap_or(u32::MAX)
}

/// Receives every notification of the station's subscription (data changes and
/// keep-alives) inside async-opcua's event loop and queues data changes for the next poll.
struct Collector {
    shared: Arc<Shared>,
    tags: usize,
}

impl OnSubscriptionNotificationCore for Collector {
    fn on_subscription_notification(
        &mut self,
        notification: NotificationMessage,
        _items: MonitoredItemMap<'_>,
    ) {
        let now = Instant::now();
        let received = Timestamp::now();
        let mut inner = self.shared.lock();
        inner.dog.feed(now);
        inner.heard.feed(now);
        inner.stats.notifications += 1;
        for object in notification.notification_data.into_iter().flatten() {
            if let Some(change) = object.inner_as::<StatusChangeNotification>() {
                if change.status.is_bad() {
                    tracing::warn!(
                        status = convert::status_name(change.status),
                        "OPC UA subscription status change"
                    );
                    inner.subscription_lost = true;
                }
                continue;
            }
            let Some(data) = object.into_inner_as::<DataChangeNotification>() else {
                continue;
            };
            for item in data.monitored_items.into_iter().flatten() {
                let tag = (item.client_handle as usize).wrapping_sub(1);
                if tag < self.tags {
                    inner.inbox.push(Notified {
                        tag,
                        value: item.value,
                        received,
                    });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(policy: &str, mode: MessageSecurityMode, uri: &str) -> EndpointDescription {
        let mut e = EndpointDescription {
            security_policy_uri: format!("http://opcfoundation.org/UA/SecurityPolicy#{policy}")
                .into(),
            security_mode: mode,
            ..EndpointDescription::default()
        };
        e.server.application_uri = uri.into();
        e
    }

    #[test]
    fn the_offered_security_is_extracted_when_the_configured_endpoint_is_missing() {
        let before = EndpointFacts {
            application_uri: Some("urn:press".into()),
            certificate_thumbprint: Some("ab12".into()),
            best_policy: Some("Aes256_Sha256_RsaPss".into()),
            offers_none: false,
        };
        let weaker = [
            endpoint("None", MessageSecurityMode::None, "urn:other"),
            endpoint("Basic128Rsa15", MessageSecurityMode::Sign, "urn:other"),
        ];
        let facts = offered_facts(&weaker, Some(&before));
        assert_eq!(facts.best_policy.as_deref(), Some("Basic128Rsa15"));
        assert!(facts.offers_none);
        assert_eq!(
            (
                facts.application_uri.as_deref(),
                facts.certificate_thumbprint.as_deref()
            ),
            (Some("urn:press"), Some("ab12")),
            "identity stays that of the endpoint the agent used"
        );

        let facts = offered_facts(&weaker[1..], None);
        assert!(!facts.offers_none);
        assert_eq!(facts.application_uri, None);
        let nothing = offered_facts(&[], None);
        assert_eq!((nothing.best_policy, nothing.offers_none), (None, false));
    }

    #[test]
    fn the_chosen_endpoint_gives_identity_and_all_endpoints_the_security() {
        let all = [
            endpoint("None", MessageSecurityMode::None, "urn:press"),
            endpoint(
                "Basic256Sha256",
                MessageSecurityMode::SignAndEncrypt,
                "urn:press",
            ),
            endpoint(
                "Aes256_Sha256_RsaPss",
                MessageSecurityMode::SignAndEncrypt,
                "urn:press",
            ),
        ];
        let facts = facts(&all, &all[1]);
        assert_eq!(facts.application_uri.as_deref(), Some("urn:press"));
        assert_eq!(facts.best_policy.as_deref(), Some("Aes256_Sha256_RsaPss"));
        assert!(facts.offers_none);
    }
}
