//! OPC UA stations: an async-opcua client per station, driven by its own task, drained by
//! [`OpcUaSource::poll`].
//!
//! Three parts, as in rumqttc: this file is the handle the station task polls; `driver` is the
//! I/O (endpoint discovery, session, async-opcua's event loop, subscription upkeep);
//! `convert` and `state` are pure (value mapping, error classes, inbox, watchdog, backoff).
//!
//! # Acquisition
//!
//! * [`Acquisition::Subscription`] (default): one subscription per station, publishing interval
//!   = the station's poll interval, one monitored item per tag (sampling interval = poll
//!   interval, queue size and deadband from [`OpcUaSettings`]). Data changes land in a bounded
//!   inbox (oldest dropped and counted when full) that each poll drains.
//! * [`Acquisition::Polling`]: each poll issues one Read of every tag.
//!
//! Every service call is bounded by the station's timeout (the client's request timeout and a
//! tokio timeout around each call).
//!
//! # Reconnects and the subscription watchdog
//!
//! async-opcua's session event loop reconnects by itself (a few quick attempts, then it gives
//! up) and re-creates subscriptions on a new session. In 0.19 the publish loop does not start
//! for subscriptions re-created that way (they stay silent until something triggers a
//! publish), so the driver triggers one after every reconnect. It does not rely on that alone:
//! on every check it verifies that a subscription exists with an item for every active tag
//! (creating what is missing), and a watchdog deletes and re-creates a subscription that
//! delivered nothing — not even a keep-alive — for `watchdog_intervals` publishing intervals.
//! When the event loop gives up, the driver rediscovers the endpoint and builds a new session
//! with capped, jittered exponential backoff. The [`OpcUaSource`] itself is never re-created.
//!
//! A session async-opcua reports as connected is not trusted on its own. A server restarted
//! inside its process (python-asyncua, and devices that restart their server without a
//! reboot) can accept a client that reconnects at once while it shuts down and leave that
//! connection open, served by an instance that no longer runs, while a new instance serves
//! the address. So the driver drops the session and builds a new one when
//! - nothing was heard from the server (no notification, no keep-alive; in polling mode no
//!   Read answered) for twice the watchdog limit, the subscription's re-creation included;
//! - the server's `CurrentTime` stands still between two status reads on one connection;
//! - endpoint discovery, repeated after every reconnect and every `status_interval` (and
//!   retried until it succeeds), finds another certificate at the address than the
//!   session's: a swapped certificate is reported (`identity.changed`, and `cert.invalid`
//!   while it is not trusted) within one status interval.
//!
//! # Reserved tags
//!
//! On connect and every `status_interval`, the server's status is read and returned as
//! readings whose names start with `_` (profile tag names cannot), plus
//! [`PollResult::identity`]:
//!
//! | tag | value |
//! |---|---|
//! | `_server.state` | `ServerStatus.State` as an integer (0 Running, 1 Failed, 2 NoConfiguration, 3 Suspended, 4 Shutdown, 5 Test, 6 CommunicationFault, 7 Unknown) |
//! | `_server.start_time`, `_server.current_time` | RFC 3339 text |
//! | `_server.build.product_uri`, `.manufacturer_name`, `.product_name`, `.software_version`, `.build_number` | text |
//! | `_server.build.build_date` | RFC 3339 text |
//! | `_diag.server_view_count`, `_diag.current_session_count`, `_diag.cumulated_session_count`, `_diag.security_rejected_session_count`, `_diag.rejected_session_count`, `_diag.session_timeout_count`, `_diag.session_abort_count`, `_diag.publishing_interval_count`, `_diag.current_subscription_count`, `_diag.cumulated_subscription_count`, `_diag.security_rejected_requests_count`, `_diag.rejected_requests_count` | unsigned counters of `ServerDiagnosticsSummary` (absent when the server refuses them) |
//! | `_security.best_policy` | the strongest security policy any endpoint offers (short name) |
//! | `_security.offers_none` | true when an endpoint offers security mode None |
//!
//! The two `_security` readings also come without a session: when discovery finds no
//! endpoint with the configured policy and mode, the connection fails (and is retried with
//! backoff, never on a weaker endpoint) and the next poll carries what the server does offer,
//! so the rules can compare it with the learned baseline.
//!
//! Identity: `vendor` = ManufacturerName, `product_name` = ProductName, `product_code` =
//! ProductUri, `revision` = SoftwareVersion, `application_uri` and `certificate_thumbprint`
//! (SHA-1 hex) from the discovered endpoint. The names the rules use are the constants of
//! [`crate::source::reserved`].
//!
//! # Configuration
//!
//! Endpoint, security, identity, poll interval and timeout come from the station's config.
//! What the config has no key for yet is in [`OpcUaSettings`], with defaults: acquisition
//! mode (subscription), per-tag server-side deadband (none), queue size, inbox capacity,
//! keep-alive and watchdog counts, status interval, reconnect timings, and auto-accepting
//! server certificates (off).
//!
//! # Errors
//!
//! A rejected identity is [`SourceError::Auth`]; an untrusted, invalid or mismatching
//! certificate is [`SourceError::Certificate`] (an untrusted server certificate is put in
//! `<pki>/rejected`; `linesentry pki trust` moves it to `trusted`). A node the server does not
//! know (or lets this user read) is reported once and skipped afterwards; it is never fatal.
//! So is a tag whose profile `type` does not fit its node's DataType attribute, read for
//! every tag on every new connection (`convert::check_data_type` says which types fit: the
//! same, a wider integer, either float type for Float and Double, ...); the error names the
//! station, the tag and both types.
//! `reachable` is true when the server answered for this poll: the Read of the tags or of the
//! status came back, or (subscriptions) a notification or keep-alive arrived within the
//! watchdog limit. It is also true when the server answered but refused the session
//! (credentials, certificates): it is alive. A session async-opcua reports as connected is
//! not enough: after a reconnect it may be up before the server serves anything.

pub(crate) mod convert;
mod driver;
mod own;
pub mod pki;
mod state;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use opcua::client::{IdentityToken, Session};
use opcua::types::{NodeId, ReadValueId, TimestampsToReturn};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use linesentry_event::Timestamp;

use super::reserved;
use super::{
    DataType, DeviceIdentity, OpcUaIdentity, OpcUaSecurityMode, OpcUaSecurityPolicy, PollResult,
    Reading, SourceConfig, SourceError, StationConfig, Value,
};
use convert::Sample;
use state::{Current, Inbox, NodeBook, Notified, ServerClock, Watchdog};

pub use pki::{CertInfo, CertState, Pki, PkiError};

// Defaults of `OpcUaSettings::new`, which the `[[stations]]` tuning keys default to as well.
/// Values the server queues per monitored item between publishes.
pub const DEFAULT_QUEUE_SIZE: u32 = 10;
/// Publishing intervals without a notification before the subscription is re-created; more
/// than the keep-alive count (5), so a quiet but healthy subscription is kept.
pub const DEFAULT_WATCHDOG_INTERVALS: u32 = 15;
/// First reconnect delay, doubling with jitter up to [`DEFAULT_RECONNECT_MAX`].
pub const DEFAULT_RECONNECT_INITIAL: Duration = Duration::from_millis(500);
pub const DEFAULT_RECONNECT_MAX: Duration = Duration::from_secs(30);

/// How a station's values are obtained (`acquisition = "subscription" | "polling"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Acquisition {
    /// Monitored items on one subscription; polls drain what was published.
    #[default]
    Subscription,
    /// One Read of every tag per poll.
    Polling,
}

/// A data change filter for a monitored item (OPC UA Part 4, 7.22.2).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Deadband {
    /// Report only changes larger than this, in the value's unit.
    Absolute(f64),
    /// Report only changes larger than this percentage of the node's EURange.
    Percent(f64),
}

/// Client-side choices for OPC UA stations. [`OpcUaSettings::new`] gives the defaults; the
/// station config supplies endpoint, security, identity, poll interval and timeout.
#[derive(Debug, Clone)]
pub struct OpcUaSettings {
    /// The agent's PKI (`<data_dir>/pki`).
    pub pki: Pki,
    /// `urn:linesentry:<gateway_id>`, also the first SAN of the client certificate.
    pub application_uri: String,
    pub application_name: String,
    pub acquisition: Acquisition,
    /// Trust a server certificate the first time it is seen. Off by default: an operator
    /// trusts servers with `linesentry pki trust`.
    pub auto_accept_server_certificates: bool,
    /// Queue size of each monitored item on the server.
    pub queue_size: u32,
    /// Deadband per tag name; tags not listed report every change.
    pub deadbands: BTreeMap<String, Deadband>,
    /// Data changes kept between two polls before the oldest are dropped (and counted).
    pub inbox_capacity: usize,
    /// Keep-alive count requested for the subscription.
    pub keep_alive_count: u32,
    /// Publishing intervals without any notification (data or keep-alive) after which a
    /// subscription is deleted and re-created. Must exceed `keep_alive_count`.
    pub watchdog_intervals: u32,
    /// How often server status and diagnostics are re-read (also on every new session).
    pub status_interval: Duration,
    /// async-opcua's own reconnect attempts before the driver rebuilds the session.
    pub session_retries: u32,
    /// First and largest delay between the driver's rebuild attempts (jittered).
    pub reconnect_initial: Duration,
    pub reconnect_max: Duration,
}

impl OpcUaSettings {
    /// Defaults for an agent with this data directory and gateway id.
    pub fn new(data_dir: &Path, gateway_id: &str) -> Self {
        Self {
            pki: Pki::in_data_dir(data_dir),
            application_uri: format!("urn:linesentry:{gateway_id}"),
            application_name: format!("linesentry {gateway_id}"),
            acquisition: Acquisition::Subscription,
            auto_accept_server_certificates: false,
            queue_size: DEFAULT_QUEUE_SIZE,
            deadbands: BTreeMap::new(),
            inbox_capacity: 10_000,
            keep_alive_count: 5,
            watchdog_intervals: DEFAULT_WATCHDOG_INTERVALS,
            status_interval: Duration::from_secs(30),
            session_retries: 4,
            reconnect_initial: DEFAULT_RECONNECT_INITIAL,
            reconnect_max: DEFAULT_RECONNECT_MAX,
        }
    }
}

/// Counters of what the client did; for tests, logs and health output.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientStats {
    /// Sessions built by the driver (first connect and every rebuild after the event loop
    /// gave up).
    pub sessions_built: u64,
    /// Times async-opcua's event loop brought a lost connection back on the same session
    /// object (subscriptions transferred or re-created by it).
    pub reconnects: u64,
    /// Subscriptions the driver created (not counting async-opcua's own re-creations).
    pub subscriptions_created: u64,
    /// Subscriptions deleted and re-created by the watchdog.
    pub watchdog_recreations: u64,
    /// Notifications received (data changes and keep-alives).
    pub notifications: u64,
    /// Data changes dropped because the inbox was full.
    pub dropped_changes: u64,
}

/// One tag as the client asks for it.
#[derive(Debug, Clone)]
struct TagPlan {
    name: Arc<str>,
    node_text: String,
    /// `None` when the profile's node id does not parse; such a tag is reported once.
    node: Option<NodeId>,
    deadband: Option<Deadband>,
    /// The profile's `type`, checked against the node's DataType on every connection.
    declared: DataType,
}

impl TagPlan {
    fn what(&self) -> String {
        format!("tag `{}` ({})", self.name, self.node_text)
    }
}

/// Where the driver is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Discovering, connecting or async-opcua reconnecting.
    Connecting,
    Connected,
    /// Waiting before the next rebuild; the last attempt failed.
    Backoff,
    Stopped,
}

/// What the driver learned from endpoint discovery.
#[derive(Debug, Clone, Default)]
struct EndpointFacts {
    application_uri: Option<String>,
    certificate_thumbprint: Option<String>,
    best_policy: Option<String>,
    offers_none: bool,
}

/// State shared by the handle, the driver and the notification callback. Locked briefly,
/// never across an await.
struct Inner {
    inbox: Inbox,
    /// What the subscription last delivered per tag, handed to the rules every poll.
    current: Current,
    /// Errors for the next poll (bounded; the oldest are dropped beyond `MAX_PENDING_ERRORS`).
    errors: Vec<SourceError>,
    book: NodeBook,
    session: Option<Arc<Session>>,
    phase: Phase,
    /// True when the last failure came from a server that answered (auth, certificates).
    server_answered: bool,
    endpoint: Option<EndpointFacts>,
    /// The subscription watchdog: fed by every notification (data change, keep-alive,
    /// status change) and when a session comes up or a subscription is created. Expired: the
    /// driver re-creates the subscription.
    dog: Watchdog,
    /// Set when the handle finds the session talks to a server that no longer runs (its
    /// clock stands still); the driver drops the session and builds a new one.
    rebuild: Option<String>,
    /// Whether the server is heard: fed by every notification and when a session comes up,
    /// not by creating a subscription. Expired: polls report the station unreachable (and
    /// hold no values), whatever the session state says, until notifications arrive again.
    heard: Watchdog,
    /// Set when a subscription reports a bad status (lifetime expired): re-create now.
    subscription_lost: bool,
    status_due: bool,
    /// Discovery found no endpoint with the configured policy and mode: what it offers goes
    /// to the rules with the next poll that has no session.
    offered: Option<EndpointFacts>,
    /// The transport connection (count of `Shared::connects`) whose node DataTypes were
    /// checked against the profile (or given up on); a new connection checks again.
    types_checked: Option<u64>,
    /// Failed DataType reads on the connection named first.
    type_check_failures: (u64, u32),
    stats: ClientStats,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inner")
            .field("phase", &self.phase)
            .field("has_session", &self.session.is_some())
            .field("queued", &self.inbox.len())
            .field("errors", &self.errors.len())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

const MAX_PENDING_ERRORS: usize = 256;

#[derive(Debug)]
struct Shared {
    inner: Mutex<Inner>,
    /// Transport connections opened by the current and earlier sessions.
    connects: Arc<std::sync::atomic::AtomicU64>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding this lock leaves plain data behind; keep going.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn push_error(&self, error: SourceError) {
        let mut inner = self.lock();
        if inner.errors.len() >= MAX_PENDING_ERRORS {
            inner.errors.remove(0);
        }
        inner.errors.push(error);
    }
}

/// Everything the driver needs that does not change.
struct Station {
    id: Arc<str>,
    endpoint_url: String,
    security_policy: OpcUaSecurityPolicy,
    security_mode: OpcUaSecurityMode,
    identity: IdentityToken,
    poll_interval: Duration,
    timeout: Duration,
    tags: Vec<TagPlan>,
    settings: OpcUaSettings,
}

impl std::fmt::Debug for Station {
    // Leaves out the identity token: it holds a password or a private key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Station")
            .field("id", &self.id)
            .field("endpoint_url", &self.endpoint_url)
            .field("security_policy", &self.security_policy)
            .field("security_mode", &self.security_mode)
            .field("tags", &self.tags.len())
            .field("acquisition", &self.settings.acquisition)
            .finish_non_exhaustive()
    }
}

/// An OPC UA station: a running client and the handle the station task polls.
/// Dropping it stops the client; [`OpcUaSource::close`] also waits for the session to close.
#[derive(Debug)]
pub struct OpcUaSource {
    station: Arc<Station>,
    shared: Arc<Shared>,
    cancel: CancellationToken,
    task: Option<JoinHandle<()>>,
    last_status: Option<Instant>,
    /// Refused status values are reported once per source.
    status_refusal_reported: bool,
    clock: ServerClock,
}

impl OpcUaSource {
    /// Starts the client of one `source = "opcua"` station. Must run inside a tokio runtime.
    /// Fails only on local problems (wrong source kind, PKI not writable, unreadable user
    /// certificate); the server being down is a poll error, not a start error.
    pub fn start(station: &StationConfig, settings: OpcUaSettings) -> Result<Self, SourceError> {
        let SourceConfig::OpcUa {
            endpoint_url,
            security_mode,
            security_policy,
            identity,
            ..
        } = &station.source
        else {
            return Err(SourceError::Other(format!(
                "station `{}` has source `{}`, not `opcua`",
                station.id,
                station.source.kind()
            )));
        };
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
            SourceError::Other("an OPC UA station must be started inside a tokio runtime".into())
        })?;
        settings
            .pki
            .ensure_own(&settings.application_uri, &settings.application_name)
            .map_err(|e| SourceError::Certificate(e.to_string()))?;
        let identity = identity_token(identity)?;
        let tags = plan(station, &settings);
        let mut book = NodeBook::new(tags.len());
        let mut errors = Vec::new();
        for (i, tag) in tags.iter().enumerate() {
            if tag.node.is_none() && book.mark_bad(i) {
                errors.push(SourceError::Decode {
                    what: tag.what(),
                    reason: "the node id does not parse; the tag is skipped".into(),
                });
            }
        }
        let shared = Arc::new(Shared {
            inner: Mutex::new(Inner {
                inbox: Inbox::new(settings.inbox_capacity),
                current: Current::new(tags.len()),
                errors,
                book,
                session: None,
                phase: Phase::Connecting,
                server_answered: false,
                endpoint: None,
                dog: driver::watchdog(station.poll_interval, &settings),
                heard: driver::watchdog(station.poll_interval, &settings),
                rebuild: None,
                subscription_lost: false,
                status_due: true,
                offered: None,
                types_checked: None,
                type_check_failures: (0, 0),
                stats: ClientStats::default(),
            }),
            connects: Arc::default(),
        });
        let station = Arc::new(Station {
            id: Arc::from(station.id.as_str()),
            endpoint_url: endpoint_url.clone(),
            security_policy: *security_policy,
            security_mode: *security_mode,
            identity,
            poll_interval: station.poll_interval,
            timeout: station.timeout,
            tags,
            settings,
        });
        let cancel = CancellationToken::new();
        let client = driver::build_client(&station)?;
        let task = runtime.spawn(driver::run(
            client,
            station.clone(),
            shared.clone(),
            cancel.clone(),
        ));
        Ok(Self {
            station,
            shared,
            cancel,
            task: Some(task),
            last_status: None,
            status_refusal_reported: false,
            clock: ServerClock::default(),
        })
    }

    /// One poll: what subscriptions delivered since the last poll (or one Read of every tag),
    /// server status when due, and every error since the last poll.
    pub async fn poll(&mut self) -> PollResult {
        let session = self.wait_for_session().await;
        let mut result = PollResult::default();
        // Whether the server answered for this poll: a Read came back, or the subscription
        // delivered within its watchdog limit. A session async-opcua reports as connected
        // proves nothing by itself (a reconnect may report it before the server serves).
        let mut answered = match self.station.settings.acquisition {
            Acquisition::Subscription => {
                let live = session.is_some() && !self.shared.lock().heard.expired(Instant::now());
                self.drain(&mut result, live);
                live
            }
            Acquisition::Polling => match &session {
                Some(session) => self.read_tags(session, &mut result).await,
                None => false,
            },
        };
        if let Some(session) = &session {
            answered |= self.read_status_if_due(session, &mut result).await;
        } else {
            self.offered_security(&mut result);
        }
        if result.identity.is_none() {
            // What endpoint discovery saw, even when no session could be made: a server that
            // now presents another certificate or application URI is an identity change
            // whether or not we trust it.
            result.identity = self.endpoint_identity();
        }
        let mut inner = self.shared.lock();
        result
            .errors
            .splice(0..0, std::mem::take(&mut inner.errors));
        result.reachable = answered || inner.server_answered;
        if session.is_some() && !answered && result.errors.is_empty() {
            result.errors.push(SourceError::Transport(format!(
                "the session is up but the server delivered nothing, not even a keep-alive, for {:?}",
                inner.heard.limit()
            )));
        }
        if session.is_none() && result.errors.is_empty() {
            result.errors.push(match inner.phase {
                Phase::Stopped => SourceError::Other("the OPC UA client has stopped".into()),
                _ => SourceError::Connect(format!(
                    "no session with {} yet",
                    self.station.endpoint_url
                )),
            });
        }
        result
    }

    /// Counters of the client so far.
    pub fn stats(&self) -> ClientStats {
        self.shared.lock().stats.clone()
    }

    /// True while a session is connected.
    pub async fn is_connected(&self) -> bool {
        let session = self.shared.lock().session.clone();
        match session {
            Some(s) => driver::is_connected(&s).await,
            None => false,
        }
    }

    /// Stops the client: closes the session (deleting its subscriptions) within the station
    /// timeout and waits for the driver task to end.
    pub async fn close(mut self) {
        self.cancel.cancel();
        if let Some(task) = self.task.take() {
            let limit = self.station.timeout.saturating_mul(2) + Duration::from_secs(1);
            if tokio::time::timeout(limit, task).await.is_err() {
                tracing::warn!(station = %self.station.id, "OPC UA client did not stop in time");
            }
        }
    }

    /// The connected session, waiting up to the station timeout while a connection attempt is
    /// in progress (not while backing off, so a dead server costs one timeout at most).
    async fn wait_for_session(&self) -> Option<Arc<Session>> {
        let deadline = tokio::time::Instant::now() + self.station.timeout;
        loop {
            let (session, phase) = {
                let inner = self.shared.lock();
                (inner.session.clone(), inner.phase)
            };
            if let Some(s) = &session {
                if driver::is_connected(s).await {
                    return session;
                }
            }
            if !matches!(phase, Phase::Connecting) || tokio::time::Instant::now() >= deadline {
                return None;
            }
            match session {
                Some(s) => {
                    let _ = tokio::time::timeout_at(deadline, s.wait_for_connection()).await;
                }
                None => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    }

    /// Turns what subscriptions delivered into readings, then adds the value every other tag
    /// still has (see [`Current`]) while the subscription is `live`; once it is silent past
    /// its watchdog limit, or the session is gone, nothing is held.
    fn drain(&self, result: &mut PollResult, live: bool) {
        let mut guard = self.shared.lock();
        let inner = &mut *guard;
        let (items, dropped) = inner.inbox.drain();
        if dropped > 0 {
            inner.stats.dropped_changes += dropped;
            tracing::warn!(station = %self.station.id, dropped, "OPC UA inbox full: oldest data changes dropped");
            result.errors.push(SourceError::Other(format!(
                "{dropped} data changes dropped: more arrived between two polls than the inbox holds ({})",
                self.station.settings.inbox_capacity
            )));
        }
        let mut delivered = vec![false; self.station.tags.len()];
        for Notified {
            tag,
            value,
            received,
        } in items
        {
            if inner.book.is_skipped(tag) {
                continue;
            }
            let sample = convert::sample(&value);
            let before = result.readings.len();
            self.take(&mut inner.book, tag, sample, received, result);
            let taken = (result.readings.len() > before).then(|| &result.readings[before]);
            inner.current.set(tag, taken);
            if let Some(d) = delivered.get_mut(tag) {
                *d = true;
            }
        }
        if !live {
            inner.current.clear();
            return;
        }
        let book = &inner.book;
        result.readings.extend(inner.current.held_except(
            |i| delivered.get(i).copied().unwrap_or(true) || book.is_skipped(i),
            Timestamp::now(),
        ));
    }

    /// Adds one sample of tag `index` to the result.
    fn take(
        &self,
        book: &mut NodeBook,
        index: usize,
        sample: Sample,
        received: Timestamp,
        result: &mut PollResult,
    ) {
        let tag = &self.station.tags[index];
        match sample {
            Sample::Value {
                value,
                quality,
                source_time,
            } => result.readings.push(Reading {
                station_id: self.station.id.clone(),
                tag: tag.name.clone(),
                value,
                quality,
                source_time,
                received,
            }),
            Sample::BadNode(status) => {
                if book.mark_bad(index) {
                    tracing::warn!(station = %self.station.id, tag = %tag.name, node = %tag.node_text,
                        status = convert::status_name(status), "OPC UA node refused; the tag is skipped from now on");
                    result.errors.push(SourceError::Decode {
                        what: tag.what(),
                        reason: format!(
                            "{}; the tag is skipped from now on",
                            convert::status_name(status)
                        ),
                    });
                }
            }
            Sample::Error(reason) => result.errors.push(SourceError::Decode {
                what: tag.what(),
                reason,
            }),
        }
    }

    /// Polling mode: one Read of every tag not skipped. True when the server answered it
    /// (with no tag left to read: when the session is connected).
    async fn read_tags(&self, session: &Session, result: &mut PollResult) -> bool {
        // The driver checks on connect too; whichever comes first, a tag of the wrong type is
        // skipped before its first value is read.
        driver::check_types(&self.station, &self.shared, session).await;
        let active: Vec<usize> = self.shared.lock().book.active().collect();
        if active.is_empty() {
            // Nothing to read: the connection is all there is to go by.
            let connected = driver::is_connected(session).await;
            if connected {
                self.shared.lock().heard.feed(Instant::now());
            }
            return connected;
        }
        let ids: Vec<ReadValueId> = active
            .iter()
            .filter_map(|&i| self.station.tags[i].node.clone().map(ReadValueId::from))
            .collect();
        match self
            .call(session.read(&ids, TimestampsToReturn::Both, 0.0))
            .await
        {
            Ok(values) => {
                let received = Timestamp::now();
                let mut inner = self.shared.lock();
                inner.heard.feed(Instant::now());
                for (&index, dv) in active.iter().zip(&values) {
                    self.take(
                        &mut inner.book,
                        index,
                        convert::sample(dv),
                        received,
                        result,
                    );
                }
                true
            }
            Err(e) => {
                result.errors.push(e);
                false
            }
        }
    }

    /// Server status and diagnostics on a new session and every `status_interval`. True
    /// when they were read (the server answered).
    async fn read_status_if_due(&mut self, session: &Session, result: &mut PollResult) -> bool {
        let due = {
            let mut inner = self.shared.lock();
            std::mem::take(&mut inner.status_due)
                || self
                    .last_status
                    .is_none_or(|t| t.elapsed() >= self.station.settings.status_interval)
        };
        if !due {
            return false;
        }
        let values = match self
            .call(session.read(&convert::status_read_ids(), TimestampsToReturn::Both, 0.0))
            .await
        {
            Ok(values) => values,
            Err(e) => {
                self.shared.lock().status_due = true;
                result.errors.push(e);
                return false;
            }
        };
        self.last_status = Some(Instant::now());
        let received = Timestamp::now();
        let (values, refused) = convert::status_values(&values);
        if !refused.is_empty() && !self.status_refusal_reported {
            self.status_refusal_reported = true;
            tracing::info!(station = %self.station.id, refused = %refused.join(", "),
                "server refused some status values; they are left out");
            result.errors.push(SourceError::Other(format!(
                "server status values not readable by this session, left out: {}",
                refused.join(", ")
            )));
        }
        let clock = values
            .iter()
            .find(|(tag, _)| *tag == reserved::SERVER_CURRENT_TIME)
            .map(|(_, v)| v.to_string());
        if let Some(clock) = clock {
            let connection = self
                .shared
                .connects
                .load(std::sync::atomic::Ordering::Relaxed);
            if let Some(still) = self.clock.observe(&clock, Instant::now(), connection) {
                let why = format!(
                    "the server's CurrentTime stands at {clock} for {still:?}: it no longer runs, although this connection is open; rebuilding the session"
                );
                let mut inner = self.shared.lock();
                inner.rebuild = Some(why);
                inner.status_due = true;
                return false;
            }
        }
        let mut identity = convert::identity_from_status(&values);
        let mut values: Vec<(&str, Value)> = values;
        if let Some(facts) = self.shared.lock().endpoint.clone() {
            identity.application_uri.clone_from(&facts.application_uri);
            identity
                .certificate_thumbprint
                .clone_from(&facts.certificate_thumbprint);
            values.extend(security_values(&facts));
        }
        // The rules leave the agent's own sessions out of the server's session count.
        values.push((
            reserved::OWN_SESSIONS,
            Value::UInt(own::count(&self.station.endpoint_url)),
        ));
        result.readings.extend(
            values
                .into_iter()
                .map(|(tag, value)| self.device_reading(tag, value, received)),
        );
        result.identity = Some(identity);
        true
    }

    /// Without a session: what the endpoints offer, when discovery found the configured
    /// endpoint missing since the last poll. The rules compare it with the baseline.
    fn offered_security(&self, result: &mut PollResult) {
        let Some(facts) = self.shared.lock().offered.take() else {
            return;
        };
        let received = Timestamp::now();
        result.readings.extend(
            security_values(&facts)
                .into_iter()
                .map(|(tag, value)| self.device_reading(tag, value, received)),
        );
    }

    /// A reading the agent derived from the server itself (status, endpoints), not a tag.
    fn device_reading(&self, tag: &str, value: Value, received: Timestamp) -> Reading {
        Reading {
            station_id: self.station.id.clone(),
            tag: Arc::from(tag),
            value,
            quality: super::Quality::Good,
            source_time: None,
            received,
        }
    }

    /// A service call under the station timeout, its failure classified.
    async fn call<T>(
        &self,
        fut: impl std::future::Future<Output = Result<T, opcua::types::Error>>,
    ) -> Result<T, SourceError> {
        driver::call(self.station.timeout, fut).await
    }

    /// The PKI directory this source uses.
    pub fn pki_dir(&self) -> PathBuf {
        self.station.settings.pki.root().to_owned()
    }

    /// Identity learned from endpoint discovery so far (application URI, certificate).
    pub fn endpoint_identity(&self) -> Option<DeviceIdentity> {
        let facts = self.shared.lock().endpoint.clone()?;
        Some(DeviceIdentity {
            application_uri: facts.application_uri,
            certificate_thumbprint: facts.certificate_thumbprint,
            ..DeviceIdentity::default()
        })
    }
}

/// The readings of the security the endpoints offer: `_security.best_policy` (when any
/// policy is known) and `_security.offers_none`.
fn security_values(facts: &EndpointFacts) -> Vec<(&'static str, Value)> {
    let mut values = Vec::with_capacity(2);
    if let Some(best) = &facts.best_policy {
        values.push((reserved::BEST_POLICY, Value::Text(best.clone())));
    }
    values.push((reserved::OFFERS_NONE, Value::Bool(facts.offers_none)));
    values
}

/// The identity token a session activates with; a user certificate is read here, once.
pub(crate) fn identity_token(identity: &OpcUaIdentity) -> Result<IdentityToken, SourceError> {
    Ok(match identity {
        OpcUaIdentity::Anonymous => IdentityToken::Anonymous,
        OpcUaIdentity::UserName { user, password } => {
            IdentityToken::UserName(user.clone(), password.expose().into())
        }
        OpcUaIdentity::Certificate { cert, key } => IdentityToken::new_x509_path(cert, key)
            .map_err(|e| {
                SourceError::Certificate(format!(
                    "user certificate {} / key {}: {e}",
                    cert.display(),
                    key.display()
                ))
            })?,
    })
}

/// What to ask for each profile tag.
fn plan(station: &StationConfig, settings: &OpcUaSettings) -> Vec<TagPlan> {
    station
        .profile
        .tags
        .iter()
        .map(|t| {
            let node_text = t.node_id.clone().unwrap_or_default();
            TagPlan {
                name: Arc::from(t.name.as_str()),
                node: convert::parse_node_id(&node_text).ok(),
                node_text,
                deadband: settings.deadbands.get(&t.name).copied(),
                declared: t.data_type,
            }
        })
        .collect()
}

impl Drop for OpcUaSource {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}
