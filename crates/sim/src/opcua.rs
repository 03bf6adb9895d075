//! OPC UA front end of the station simulator: serves a [`StationModel`] with async-opcua's
//! server and its in-memory [`SimpleNodeManager`].
//!
//! # Address space
//!
//! Every profile tag is a variable at its `node_id`, of the OPC UA type of the tag's `type`
//! (`bool` Boolean, `u16` UInt16, `i16` Int16, `u32` UInt32, `i32` Int32, `u64` UInt64, `i64`
//! Int64, `f32` Float, `f64` Double, `string` String), readable, under one folder per
//! namespace. Namespace indices are kept as the profile writes them: each index from 2 to the
//! highest one used gets its own namespace (`urn:linesentry:sim:<profile>:ns<i>`), so
//! `ns=3;s=...` is served at index 3. Tags in namespaces 0 and 1 are not served (logged).
//! After each model tick the values that changed are written with the tick's time as source
//! timestamp ([`StationModel::source_time`]: a held one after `timestamps_freeze`), which
//! notifies subscriptions. `ServerStatus.State` is Suspended while
//! [`StationModel::is_suspended`], else Running.
//!
//! # Server
//!
//! Endpoints at `opc.tcp://127.0.0.1:<port>/`: None, and Sign and SignAndEncrypt for each of
//! Basic256Sha256, Aes128_Sha256_RsaOaep and Aes256_Sha256_RsaPss. Identities: anonymous,
//! one user name / password ([`OpcUaSimOptions::user`], allowed to read diagnostics) and the
//! X.509 user certificates of [`OpcUaSimOptions::x509_users`]. The
//! server's certificate is created once in [`OpcUaSimOptions::pki_dir`] (same layout as the
//! agent's PKI) and kept across restarts; client certificates are trusted on first use unless
//! [`OpcUaSimOptions::trust_client_certificates`] is off (then they wait in `rejected/`).
//! `ServerStatus.BuildInfo` and the ApplicationUri come from [`StationModel::identity`]; when
//! the identity changes (firmware update, another device at the address) the server restarts
//! with the new one, as a real device would, and a different ApplicationUri gets its own
//! certificate (`<pki_dir>/identities/<n>`). Diagnostics are enabled; a refused identity
//! counts in `SecurityRejectedSessionCount` (async-opcua alone never counts it).
//!
//! # Security and intruders
//!
//! When [`StationModel::security`] changes, the server restarts offering only None and
//! Basic256Sha256 (`WithoutStrongest`: a downgrade from Aes256_Sha256_RsaPss as the
//! strongest) or only None and Aes128_Sha256_RsaOaep (`OnlyWeaker`: a client configured for
//! Basic256Sha256 finds no endpoint). An intruder task
//! plays the network side of an attack with real client connections over the None
//! endpoint: it holds [`StationModel::intruder_sessions`] extra anonymous sessions open and
//! tries wrong passwords for the configured user ([`StationModel::take_login_guesses`]).
//!
//! # Link behaviours
//!
//! - `Silent`: the server is stopped (connections refused) until the link is normal again.
//! - `Exceptions`: every value is served without a value and status `BadOutOfService`.
//! - `Garbage`: every value is served with status `BadCommunicationError` (its value kept).
//!
//! # Restarts
//!
//! [`OpcUaSim::stop_server`] / [`OpcUaSim::start_server`] / [`OpcUaSim::restart`] stop and
//! start the OPC UA server on the same port while the model keeps ticking: clients lose
//! their connection and their session, and the server's `StartTime` changes.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use opcua::client::{ClientBuilder, ClientEndpoint, IdentityToken, Session};
use opcua::crypto::SecurityPolicy;
use opcua::crypto::Thumbprint;
use opcua::server::address_space::AccessLevel;
use opcua::server::address_space::VariableBuilder;
use opcua::server::authenticator::{
    AuthManager, CoreServerPermissions, DefaultAuthenticator, Password, UserToken,
};
use opcua::server::diagnostics::NamespaceMetadata;
use opcua::server::node_manager::memory::{simple_node_manager, SimpleNodeManager};
use opcua::server::{
    ServerBuilder, ServerEndpoint, ServerHandle, ServerInfo, ServerUserToken,
    ANONYMOUS_USER_TOKEN_ID,
};
use opcua::types::{
    BuildInfo, DataTypeId, DataValue, DateTime, MessageSecurityMode, NodeId, ObjectId, ServerState,
    StatusCode, UserTokenPolicy, Variant,
};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{
    lock, Action, LinkBehaviour, SecurityOffer, SharedModel, SimError, SimHandle, SimOptions,
    StationModel,
};
use linesentry_agent::source::opcua::Pki;
use linesentry_agent::source::{DataType, DeviceIdentity, Value};
use linesentry_agent::source::{Profile, Protocol, TagSpec};

/// User name of the simulator's password identity, unless the options say otherwise.
pub const DEFAULT_USER: &str = "operator";
/// Its password. A simulator's, published on purpose: do not reuse it anywhere.
pub const DEFAULT_PASSWORD: &str = "operator";

const USER_TOKEN_ID: &str = "sim-user";
/// How often the server side checks the model for changed values, identity and link.
const UPDATE_PERIOD: Duration = Duration::from_millis(50);

/// OPC UA specifics of a simulator.
#[derive(Debug, Clone)]
pub struct OpcUaSimOptions {
    /// The server's PKI: `own/cert.der`, `private/private.pem`, `trusted/`, `rejected/`.
    pub pki_dir: PathBuf,
    /// User name and password accepted besides anonymous.
    pub user: (String, String),
    /// Trust every client certificate on first use (default), or only those in `trusted/`.
    pub trust_client_certificates: bool,
    /// User certificates (DER or PEM files) accepted as X.509 identities.
    pub x509_users: Vec<PathBuf>,
}

impl OpcUaSimOptions {
    pub fn new(pki_dir: impl Into<PathBuf>) -> Self {
        Self {
            pki_dir: pki_dir.into(),
            user: (DEFAULT_USER.to_owned(), DEFAULT_PASSWORD.to_owned()),
            trust_client_certificates: true,
            x509_users: Vec::new(),
        }
    }
}

/// A running OPC UA simulator: the shared runtime ([`SimHandle`]: ticker, schedule, control
/// port) plus the OPC UA server, which can be stopped and started on the same port.
#[derive(Debug)]
pub struct OpcUaSim {
    handle: SimHandle,
    commands: mpsc::Sender<Command>,
    addr: SocketAddr,
    pki_dir: PathBuf,
}

#[derive(Debug)]
enum Command {
    Stop(oneshot::Sender<()>),
    Start(oneshot::Sender<Result<(), SimError>>),
}

/// Starts an OPC UA simulator of `profile` on `options.listen`, with its ticker, schedule
/// and control port. Returns once the server listens.
pub async fn start(
    profile: Arc<Profile>,
    options: &SimOptions,
    opcua: &OpcUaSimOptions,
) -> Result<OpcUaSim, SimError> {
    if profile.protocol != Protocol::OpcUa {
        return Err(SimError::Protocol {
            profile: profile.name.clone(),
            found: profile.protocol,
            expected: Protocol::OpcUa,
        });
    }
    let listener = bind(options.listen).await?;
    let addr = listener
        .local_addr()
        .map_err(|source| bind_error(options.listen, source))?;
    let model: SharedModel = Arc::new(std::sync::Mutex::new(StationModel::new(
        Arc::clone(&profile),
        options.seed,
    )));
    let cancel = CancellationToken::new();
    let served = Served::new(&profile);
    let first = Running::start(listener, addr, &model, opcua, &served)?;
    let impostors = options
        .schedule
        .items()
        .iter()
        .filter(|item| matches!(item.action, Action::IdentityChange))
        .count();
    let uris: Vec<String> = {
        let model = lock(&model);
        (1..=u32::try_from(impostors).unwrap_or(u32::MAX))
            .map(|n| model.impostor_uri(n))
            .collect()
    };
    prepare_identities(uris, opcua, &served.profile).await;
    let mut handle = SimHandle::launch(Arc::clone(&model), addr, options, cancel.clone()).await?;
    handle.track(tokio::spawn(intrude(
        Arc::clone(&model),
        format!("opc.tcp://{}:{}/", addr.ip(), addr.port()),
        opcua.pki_dir.join("intruder"),
        opcua.user.0.clone(),
        options
            .schedule
            .items()
            .iter()
            .any(|item| matches!(item.action, Action::SessionFlood | Action::PasswordGuess)),
        cancel.clone(),
    )));
    let (commands, receiver) = mpsc::channel(4);
    handle.track(tokio::spawn(supervise(
        Some(first),
        addr,
        model,
        opcua.clone(),
        served,
        receiver,
        cancel,
    )));
    tracing::info!(%addr, profile = %profile.name, "OPC UA simulator listening");
    Ok(OpcUaSim {
        handle,
        commands,
        addr,
        pki_dir: opcua.pki_dir.clone(),
    })
}

impl OpcUaSim {
    /// `opc.tcp://127.0.0.1:<port>/`.
    pub fn endpoint_url(&self) -> String {
        format!("opc.tcp://{}:{}/", self.addr.ip(), self.addr.port())
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The shared runtime: apply scenario actions, reach the model.
    pub fn handle(&self) -> &SimHandle {
        &self.handle
    }

    pub fn model(&self) -> &SharedModel {
        self.handle.model()
    }

    /// The server's PKI directory (its certificate is `own/cert.der`).
    pub fn pki_dir(&self) -> &std::path::Path {
        &self.pki_dir
    }

    /// Stops the OPC UA server (connections close, the port is released); the model keeps
    /// ticking.
    pub async fn stop_server(&self) {
        let (tx, rx) = oneshot::channel();
        if self.commands.send(Command::Stop(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }

    /// Starts the OPC UA server again on the same port.
    pub async fn start_server(&self) -> Result<(), SimError> {
        let (tx, rx) = oneshot::channel();
        if self.commands.send(Command::Start(tx)).await.is_err() {
            return Ok(());
        }
        rx.await.unwrap_or(Ok(()))
    }

    /// Stops and starts the server: a device restart as clients see it.
    pub async fn restart(&self) -> Result<(), SimError> {
        self.stop_server().await;
        self.start_server().await
    }

    /// Stops everything and waits for it. Not cancel-safe (see [`SimHandle::shutdown`]).
    pub async fn shutdown(self) {
        self.handle.shutdown().await;
    }
}

/// One tag as served.
#[derive(Debug, Clone)]
struct ServedTag {
    index: usize,
    node: NodeId,
    data_type: DataType,
    name: String,
}

/// What the address space holds, derived from the profile once.
#[derive(Debug, Clone)]
struct Served {
    profile: String,
    tags: Vec<ServedTag>,
    /// Highest namespace index used (at least 2).
    max_namespace: u16,
}

impl Served {
    fn new(profile: &Profile) -> Self {
        let mut tags = Vec::new();
        for (index, spec) in profile.tags.iter().enumerate() {
            let Some(node) = spec
                .node_id
                .as_deref()
                .and_then(|t| NodeId::from_str(t).ok())
            else {
                tracing::warn!(tag = %spec.name, node = ?spec.node_id, "tag without a usable node id is not served");
                continue;
            };
            if node.namespace < 2 {
                tracing::warn!(tag = %spec.name, %node, "tags in namespaces 0 and 1 are not served");
                continue;
            }
            tags.push(ServedTag {
                index,
                node,
                data_type: spec.data_type,
                name: spec.name.clone(),
            });
        }
        let max_namespace = tags.iter().map(|t| t.node.namespace).max().unwrap_or(2);
        Self {
            profile: profile.name.clone(),
            tags,
            max_namespace,
        }
    }

    fn namespace_uri(&self, index: u16) -> String {
        format!("urn:linesentry:sim:{}:ns{index}", self.profile)
    }

    fn manager_name(index: u16) -> String {
        format!("linesentry-sim-ns{index}")
    }
}

/// One run of the OPC UA server.
struct Running {
    server: JoinHandle<()>,
    updater: JoinHandle<()>,
    stop: CancellationToken,
    identity: DeviceIdentity,
    /// The security policies served.
    security: SecurityOffer,
}

impl Running {
    /// Builds the server for the model's current identity, fills its address space and
    /// spawns it on `listener`.
    fn start(
        listener: TcpListener,
        addr: SocketAddr,
        model: &SharedModel,
        opcua: &OpcUaSimOptions,
        served: &Served,
    ) -> Result<Self, SimError> {
        let (identity, security) = {
            let model = lock(model);
            (model.identity().clone(), model.security())
        };
        let info = Arc::new(std::sync::OnceLock::new());
        let builder = server_builder(&identity, security, addr, opcua, served, &info)?;
        let (instance, handle) = builder.build().map_err(|e| build_error(addr, e))?;
        let _ = info.set(Arc::clone(handle.info()));
        let managers = populate(&handle, model, served, addr)?;
        let stop = handle.token().clone();
        let task = tokio::spawn(async move {
            if let Err(e) = instance.run_with(listener).await {
                tracing::error!(error = %e, "OPC UA simulator server failed");
            }
        });
        let updater = tokio::spawn(update(
            handle.clone(),
            managers,
            Arc::clone(model),
            served.clone(),
            stop.clone(),
        ));
        Ok(Self {
            server: task,
            updater,
            stop,
            identity,
            security,
        })
    }

    /// Stops the server and waits (bounded) for its connections to close.
    async fn stop(self) {
        self.stop.cancel();
        self.updater.abort();
        if tokio::time::timeout(Duration::from_secs(5), self.server)
            .await
            .is_err()
        {
            tracing::warn!("OPC UA simulator server did not stop within 5 s");
        }
    }
}

/// The server of one run: identity, certificate, endpoints, users and a node manager per
/// namespace index the profile uses.
fn server_builder(
    identity: &DeviceIdentity,
    security: SecurityOffer,
    addr: SocketAddr,
    opcua: &OpcUaSimOptions,
    served: &Served,
    info: &Arc<std::sync::OnceLock<Arc<ServerInfo>>>,
) -> Result<ServerBuilder, SimError> {
    let application_uri = identity
        .application_uri
        .clone()
        .unwrap_or_else(|| format!("urn:linesentry:sim:{}", served.profile));
    let pki = pki_for(opcua, &application_uri, &served.profile);
    let name = identity
        .product_name
        .clone()
        .unwrap_or_else(|| served.profile.clone());
    pki.ensure_own(
        &application_uri,
        &format!("linesentry sim {}", served.profile),
    )
    .map_err(|e| build_error(addr, e.to_string()))?;
    let url = format!("opc.tcp://{}:{}/", addr.ip(), addr.port());
    let (user, password) = &opcua.user;
    let x509_ids: Vec<String> = (0..opcua.x509_users.len())
        .map(|i| format!("sim-x509-{i}"))
        .collect();
    let tokens: Vec<&str> = [ANONYMOUS_USER_TOKEN_ID, USER_TOKEN_ID]
        .into_iter()
        .chain(x509_ids.iter().map(String::as_str))
        .collect();
    let mut builder = ServerBuilder::new()
        .application_name(name)
        .application_uri(application_uri)
        .product_uri(identity.product_code.clone().unwrap_or_default())
        .build_info(BuildInfo {
            product_uri: identity.product_code.clone().unwrap_or_default().into(),
            manufacturer_name: identity.vendor.clone().unwrap_or_default().into(),
            product_name: identity.product_name.clone().unwrap_or_default().into(),
            software_version: identity.revision.clone().unwrap_or_default().into(),
            build_number: "sim".into(),
            build_date: DateTime::now(),
        })
        .pki_dir(pki.root())
        .create_sample_keypair(false)
        .trust_client_certs(opcua.trust_client_certificates)
        .host(addr.ip().to_string())
        .port(addr.port())
        .discovery_urls(vec![url])
        .diagnostics_enabled(true)
        .add_user_token(
            USER_TOKEN_ID,
            ServerUserToken::user_pass(user.as_str(), password.as_str()).read_diagnostics(true),
        )
        .add_endpoint(
            "none",
            (
                "/",
                SecurityPolicy::None,
                MessageSecurityMode::None,
                &tokens[..],
            ),
        );
    for (id, path) in x509_ids.iter().zip(&opcua.x509_users) {
        builder = builder.add_user_token(id, ServerUserToken::x509(id.as_str(), path));
    }
    let policies: &[SecurityPolicy] = match security {
        SecurityOffer::Full => &[
            SecurityPolicy::Basic256Sha256,
            SecurityPolicy::Aes128Sha256RsaOaep,
            SecurityPolicy::Aes256Sha256RsaPss,
        ],
        SecurityOffer::WithoutStrongest => &[SecurityPolicy::Basic256Sha256],
        SecurityOffer::OnlyWeaker => &[SecurityPolicy::Aes128Sha256RsaOaep],
    };
    for &policy in policies {
        for mode in [
            MessageSecurityMode::Sign,
            MessageSecurityMode::SignAndEncrypt,
        ] {
            builder = builder.add_endpoint(
                format!("{}_{mode:?}", policy.to_str()),
                ("/", policy, mode, &tokens[..]),
            );
        }
    }
    let mut users = builder.config().user_tokens.clone();
    users
        .values_mut()
        .for_each(ServerUserToken::read_thumbprint);
    builder = builder.with_authenticator(Arc::new(CountingAuth {
        inner: DefaultAuthenticator::new(users),
        info: Arc::clone(info),
    }));
    for ns in 2..=served.max_namespace {
        builder = builder.with_node_manager(simple_node_manager(
            NamespaceMetadata {
                namespace_uri: served.namespace_uri(ns),
                ..NamespaceMetadata::default()
            },
            &Served::manager_name(ns),
        ));
    }
    Ok(builder)
}

/// async-opcua's own authenticator, which also counts refused identities in
/// `ServerDiagnosticsSummary.SecurityRejectedSessionCount` (async-opcua 0.19 never does), so
/// a client that reads diagnostics sees failed logins as a real server reports them.
struct CountingAuth {
    inner: DefaultAuthenticator,
    /// The running server's info, set once it is built.
    info: Arc<std::sync::OnceLock<Arc<ServerInfo>>>,
}

impl CountingAuth {
    fn counted<T>(&self, result: Result<T, opcua::types::Error>) -> Result<T, opcua::types::Error> {
        if result.is_err() {
            if let Some(info) = self.info.get() {
                info.diagnostics.inc_security_rejected_session_count();
            }
        }
        result
    }
}

type AuthFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, opcua::types::Error>> + Send + 'a>>;

// The trait is declared with `async_trait`; these are its methods written out by hand, so
// the crate needs no `async-trait` dependency of its own.
#[allow(clippy::needless_lifetimes, single_use_lifetimes)]
impl AuthManager for CountingAuth {
    fn authenticate_anonymous_token<'life0, 'life1, 'async_trait>(
        &'life0 self,
        endpoint: &'life1 ServerEndpoint,
    ) -> AuthFuture<'async_trait, ()>
    where
        'life0: 'async_trait,
        'life1: 'async_trait,
        Self: 'async_trait,
    {
        Box::pin(
            async move { self.counted(self.inner.authenticate_anonymous_token(endpoint).await) },
        )
    }

    fn authenticate_username_identity_token<'life0, 'life1, 'life2, 'life3, 'async_trait>(
        &'life0 self,
        endpoint: &'life1 ServerEndpoint,
        username: &'life2 str,
        password: &'life3 Password,
    ) -> AuthFuture<'async_trait, UserToken>
    where
        'life0: 'async_trait,
        'life1: 'async_trait,
        'life2: 'async_trait,
        'life3: 'async_trait,
        Self: 'async_trait,
    {
        Box::pin(async move {
            self.counted(
                self.inner
                    .authenticate_username_identity_token(endpoint, username, password)
                    .await,
            )
        })
    }

    fn authenticate_x509_identity_token<'life0, 'life1, 'life2, 'async_trait>(
        &'life0 self,
        endpoint: &'life1 ServerEndpoint,
        signing_thumbprint: &'life2 Thumbprint,
    ) -> AuthFuture<'async_trait, UserToken>
    where
        'life0: 'async_trait,
        'life1: 'async_trait,
        'life2: 'async_trait,
        Self: 'async_trait,
    {
        Box::pin(async move {
            self.counted(
                self.inner
                    .authenticate_x509_identity_token(endpoint, signing_thumbprint)
                    .await,
            )
        })
    }

    fn effective_user_access_level(
        &self,
        token: &UserToken,
        user_access_level: AccessLevel,
        node_id: &NodeId,
    ) -> AccessLevel {
        self.inner
            .effective_user_access_level(token, user_access_level, node_id)
    }

    fn is_user_executable(&self, token: &UserToken, method_id: &NodeId) -> bool {
        self.inner.is_user_executable(token, method_id)
    }

    fn user_token_policies(&self, endpoint: &ServerEndpoint) -> Vec<UserTokenPolicy> {
        self.inner.user_token_policies(endpoint)
    }

    fn core_permissions(&self, token: &UserToken) -> CoreServerPermissions {
        self.inner.core_permissions(token)
    }
}

/// How long an intruder waits for one session.
const INTRUDER_TIMEOUT: Duration = Duration::from_secs(10);
/// The intruder's application URI (its certificate's subject alternative name).
const INTRUDER_URI: &str = "urn:linesentry:sim:intruder";

/// An intruder on the network, played by the simulator against its own server over real
/// connections (endpoint None): holds [`StationModel::intruder_sessions`] extra anonymous
/// sessions open and tries the wrong passwords of [`StationModel::take_login_guesses`] for
/// the configured user. Ends on `cancel`, closing what it holds.
async fn intrude(
    model: SharedModel,
    url: String,
    pki_dir: PathBuf,
    user: String,
    prepare: bool,
    cancel: CancellationToken,
) {
    let mut held: Vec<(Arc<Session>, JoinHandle<StatusCode>)> = Vec::new();
    let mut guesses = 0u32;
    // When the schedule has an attack, the intruder's certificate is made now, off the
    // runtime, so the attack plays at its time instead of after a key generation (seconds
    // on a slow CPU or under qemu). Otherwise it is made by the first attack.
    let mut keypair = prepare.then(|| {
        let pki = Pki::new(&pki_dir);
        tokio::task::spawn_blocking(move || pki.ensure_own(INTRUDER_URI, "intruder"))
    });
    let mut interval = tokio::time::interval(UPDATE_PERIOD * 2);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = cancel.cancelled() => break,
            _ = interval.tick() => {}
        }
        let (wanted, tries) = {
            let mut model = lock(&model);
            (
                model.intruder_sessions() as usize,
                model.take_login_guesses(),
            )
        };
        if wanted > held.len() || tries > 0 {
            if let Some(made) = keypair.take() {
                match made.await {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => tracing::warn!(error = %e, "intruder certificate not made"),
                    Err(e) => tracing::warn!(error = %e, "intruder certificate task failed"),
                }
            }
        }
        while held.len() < wanted && !cancel.is_cancelled() {
            match intruder_session(&url, &pki_dir, IdentityToken::Anonymous).await {
                Ok(session) => held.push(session),
                Err(e) => {
                    tracing::warn!(error = %e, "intruder session not made");
                    break;
                }
            }
        }
        while held.len() > wanted {
            if let Some((session, event_loop)) = held.pop() {
                let _ = session.disconnect().await;
                event_loop.abort();
            }
        }
        for _ in 0..tries {
            guesses += 1;
            let guess = format!("guess-{guesses}");
            match intruder_session(
                &url,
                &pki_dir,
                IdentityToken::UserName(user.clone(), guess.into()),
            )
            .await
            {
                Ok((session, event_loop)) => {
                    tracing::warn!("intruder guessed a password");
                    let _ = session.disconnect().await;
                    event_loop.abort();
                }
                Err(e) => tracing::debug!(error = %e, "intruder login refused"),
            }
        }
    }
    for (session, event_loop) in held {
        let _ = tokio::time::timeout(Duration::from_secs(2), session.disconnect()).await;
        event_loop.abort();
    }
}

/// One intruder session over the None endpoint; an error when it is not activated.
async fn intruder_session(
    url: &str,
    pki_dir: &std::path::Path,
    identity: IdentityToken,
) -> Result<(Arc<Session>, JoinHandle<StatusCode>), String> {
    // Connected below with `connect_to_matching_endpoint`; the config's endpoint list is
    // filled only so async-opcua does not warn "Endpoint config contains no endpoints".
    let configured = ClientEndpoint {
        security_policy: SecurityPolicy::None.to_str().to_owned(),
        security_mode: MessageSecurityMode::None.into(),
        ..ClientEndpoint::new(url)
    };
    let mut client = ClientBuilder::new()
        .endpoint("intruder", configured)
        .default_endpoint("intruder")
        .application_name("intruder")
        .application_uri(INTRUDER_URI)
        .product_uri(INTRUDER_URI)
        .pki_dir(pki_dir)
        .create_sample_keypair(true)
        .trust_server_certs(true)
        .session_retry_limit(0)
        .request_timeout(INTRUDER_TIMEOUT)
        .client()
        .map_err(|e| e.join("; "))?;
    let endpoint = (
        url,
        SecurityPolicy::None.to_uri(),
        MessageSecurityMode::None,
    );
    let (session, event_loop) = tokio::time::timeout(
        INTRUDER_TIMEOUT,
        client.connect_to_matching_endpoint(endpoint, identity),
    )
    .await
    .map_err(|_| "timed out".to_owned())?
    .map_err(|e| e.to_string())?;
    let mut event_loop = event_loop.spawn();
    let connected = tokio::select! {
        connected = session.wait_for_connection() => connected,
        ended = &mut event_loop => {
            return Err(format!("session ended: {}", ended.map_or_else(|e| e.to_string(), |s| s.to_string())));
        }
        () = tokio::time::sleep(INTRUDER_TIMEOUT) => false,
    };
    if connected {
        Ok((session, event_loop))
    } else {
        event_loop.abort();
        Err("not connected".to_owned())
    }
}

/// The PKI of an application URI: the configured directory for the first one it sees, a
/// directory of its own for every other (another device has another certificate).
fn pki_for(opcua: &OpcUaSimOptions, uri: &str, profile: &str) -> Pki {
    let base = Pki::new(&opcua.pki_dir);
    let own = base.own_certificate_path();
    if !own.exists() || uri == format!("urn:linesentry:sim:{profile}") {
        return base;
    }
    let key: String = uri
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    Pki::new(opcua.pki_dir.join("identities").join(key))
}

/// Makes the certificates of the identities a schedule changes to, before the schedule's
/// clock starts, off the runtime: a key generation takes seconds on a slow CPU or under
/// qemu, and made at the change it would keep the new server from answering for that long
/// (the change would play late, or after a short scenario ended). A failure is logged; the
/// restart then tries again and reports it.
async fn prepare_identities(uris: Vec<String>, opcua: &OpcUaSimOptions, profile: &str) {
    for uri in uris {
        let pki = pki_for(opcua, &uri, profile);
        let name = format!("linesentry sim {profile}");
        let made = tokio::task::spawn_blocking(move || pki.ensure_own(&uri, &name)).await;
        match made {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "impostor certificate not made"),
            Err(e) => tracing::warn!(error = %e, "impostor certificate task failed"),
        }
    }
}

/// Adds a folder per namespace and a variable per served tag, with the model's values.
fn populate(
    handle: &ServerHandle,
    model: &SharedModel,
    served: &Served,
    addr: SocketAddr,
) -> Result<Vec<Arc<SimpleNodeManager>>, SimError> {
    let mut managers = Vec::new();
    for ns in 2..=served.max_namespace {
        let Some(manager) = handle
            .node_managers()
            .get_by_name::<SimpleNodeManager>(&Served::manager_name(ns))
        else {
            return Err(build_error(
                addr,
                format!("node manager for namespace {ns} missing"),
            ));
        };
        let actual = handle.get_namespace_index(&served.namespace_uri(ns));
        if actual != Some(ns) {
            return Err(build_error(
                addr,
                format!(
                    "namespace {} got index {actual:?}, expected {ns}",
                    served.namespace_uri(ns)
                ),
            ));
        }
        let folder = NodeId::new(ns, format!("{}.ns{ns}", served.profile));
        {
            let mut space = manager.address_space().write();
            space.add_folder(
                &folder,
                served.profile.as_str(),
                served.profile.as_str(),
                &ObjectId::ObjectsFolder.into(),
            );
            let model = lock(model);
            let variables = served
                .tags
                .iter()
                .filter(|t| t.node.namespace == ns)
                .map(|t| {
                    VariableBuilder::new(&t.node, t.name.as_str(), t.name.as_str())
                        .data_type(data_type_id(t.data_type))
                        .value(variant(t.data_type, model.value_at(t.index)))
                        .build()
                })
                .collect();
            space.add_variables(variables, &folder);
        }
        managers.push(manager);
    }
    Ok(managers)
}

/// Writes changed model values into the address space (notifying subscriptions) until
/// `stop`.
async fn update(
    handle: ServerHandle,
    managers: Vec<Arc<SimpleNodeManager>>,
    model: SharedModel,
    served: Served,
    stop: CancellationToken,
) {
    let mut last: Vec<Option<(Variant, StatusCode)>> = vec![None; served.tags.len()];
    let mut served_state = None;
    let mut interval = tokio::time::interval(UPDATE_PERIOD);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = interval.tick() => {}
        }
        let mut changes: Vec<(usize, DataValue)> = Vec::new();
        {
            let model = lock(&model);
            let at = model
                .source_time()
                .map_or_else(DateTime::now, |t| DateTime::from(t.to_datetime()));
            let state = if model.is_suspended() {
                ServerState::Suspended
            } else {
                ServerState::Running
            };
            if served_state != Some(state) {
                served_state = Some(state);
                handle.set_server_state(state);
            }
            let link = model.link();
            for (i, tag) in served.tags.iter().enumerate() {
                let value = variant(tag.data_type, model.value_at(tag.index));
                let (value, status) = match link {
                    LinkBehaviour::Exceptions => (Variant::Empty, StatusCode::BadOutOfService),
                    LinkBehaviour::Garbage => (value, StatusCode::BadCommunicationError),
                    LinkBehaviour::Normal | LinkBehaviour::Silent => (value, StatusCode::Good),
                };
                if last[i].as_ref() != Some(&(value.clone(), status)) {
                    last[i] = Some((value.clone(), status));
                    changes.push((
                        i,
                        DataValue {
                            // An empty variant, not none: async-opcua drops the status
                            // of a variable without a value.
                            value: Some(value),
                            status: Some(status),
                            source_timestamp: Some(at),
                            server_timestamp: Some(DateTime::now()),
                            ..DataValue::default()
                        },
                    ));
                }
            }
        }
        for (ns_offset, manager) in managers.iter().enumerate() {
            let ns = u16::try_from(ns_offset)
                .unwrap_or(u16::MAX)
                .saturating_add(2);
            let updates = changes
                .iter()
                .filter(|(i, _)| served.tags[*i].node.namespace == ns)
                .map(|(i, dv)| (&served.tags[*i].node, None, dv.clone()));
            if let Err(e) = manager.set_values(handle.subscriptions(), updates) {
                tracing::warn!(status = %e, "OPC UA simulator could not update values");
            }
        }
    }
}

/// Owns the server runs: serves commands (stop, start), restarts on identity changes,
/// stops while the link is silent. Ends on `cancel`.
async fn supervise(
    mut running: Option<Running>,
    addr: SocketAddr,
    model: SharedModel,
    opcua: OpcUaSimOptions,
    served: Served,
    mut commands: mpsc::Receiver<Command>,
    cancel: CancellationToken,
) {
    // Stopped by a command (as opposed to by the link): only a command starts it again.
    let mut held = false;
    let mut interval = tokio::time::interval(UPDATE_PERIOD);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = cancel.cancelled() => break,
            command = commands.recv() => match command {
                Some(Command::Stop(ack)) => {
                    if let Some(run) = running.take() {
                        run.stop().await;
                        tracing::info!(%addr, "OPC UA simulator server stopped");
                    }
                    held = true;
                    let _ = ack.send(());
                }
                Some(Command::Start(ack)) => {
                    held = false;
                    let result = if running.is_none() {
                        relaunch(addr, &model, &opcua, &served).await.map(|run| {
                            running = Some(run);
                        })
                    } else {
                        Ok(())
                    };
                    let _ = ack.send(result);
                }
                None => break,
            },
            _ = interval.tick() => {
                let (identity, link, security) = {
                    let model = lock(&model);
                    (model.identity().clone(), model.link(), model.security())
                };
                let silent = link == LinkBehaviour::Silent;
                match running.take() {
                    Some(run) if silent || run.identity != identity || run.security != security => {
                        run.stop().await;
                        if silent {
                            tracing::info!(%addr, "link silent: OPC UA simulator server stopped");
                        } else {
                            tracing::info!(%addr, "identity or security changed: restarting the OPC UA simulator server");
                            running = relaunch(addr, &model, &opcua, &served).await.ok();
                        }
                    }
                    Some(run) => running = Some(run),
                    None if !silent && !held => {
                        running = relaunch(addr, &model, &opcua, &served).await.ok();
                    }
                    None => {}
                }
            }
        }
    }
    if let Some(run) = running.take() {
        run.stop().await;
    }
}

/// Binds the same port again (retrying briefly while the old socket lets go) and starts a
/// server run.
async fn relaunch(
    addr: SocketAddr,
    model: &SharedModel,
    opcua: &OpcUaSimOptions,
    served: &Served,
) -> Result<Running, SimError> {
    let mut tries = 0;
    let listener = loop {
        match bind(addr).await {
            Ok(l) => break l,
            Err(e) if tries < 50 => {
                tries += 1;
                tracing::debug!(error = %e, "rebinding the OPC UA simulator port");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot restart the OPC UA simulator server");
                return Err(e);
            }
        }
    };
    let run = Running::start(listener, addr, model, opcua, served);
    match &run {
        Ok(_) => tracing::info!(%addr, "OPC UA simulator server started"),
        Err(e) => tracing::error!(error = %e, "cannot restart the OPC UA simulator server"),
    }
    run
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, SimError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| bind_error(addr, source))
}

fn bind_error(addr: SocketAddr, source: std::io::Error) -> SimError {
    SimError::Bind {
        what: "OPC UA server",
        addr,
        source,
    }
}

fn build_error(addr: SocketAddr, reason: String) -> SimError {
    bind_error(addr, std::io::Error::other(reason))
}

fn data_type_id(data_type: DataType) -> DataTypeId {
    match data_type {
        DataType::Bool => DataTypeId::Boolean,
        DataType::U16 => DataTypeId::UInt16,
        DataType::I16 => DataTypeId::Int16,
        DataType::U32 => DataTypeId::UInt32,
        DataType::I32 => DataTypeId::Int32,
        DataType::U64 => DataTypeId::UInt64,
        DataType::I64 => DataTypeId::Int64,
        DataType::F32 => DataTypeId::Float,
        DataType::F64 => DataTypeId::Double,
        DataType::String => DataTypeId::String,
    }
}

/// The model's value as the variant of the tag's OPC UA type. The model conforms values to
/// their tags, so the conversions only saturate on values it never produces.
fn variant(data_type: DataType, value: &Value) -> Variant {
    let float = value.as_f64().unwrap_or(0.0);
    let int = match value {
        Value::Int(i) => *i,
        Value::UInt(u) => i64::try_from(*u).unwrap_or(i64::MAX),
        Value::Bool(b) => i64::from(*b),
        _ => float as i64,
    };
    let uint = match value {
        Value::UInt(u) => *u,
        Value::Int(i) => u64::try_from(*i).unwrap_or(0),
        Value::Bool(b) => u64::from(*b),
        _ => float.max(0.0) as u64,
    };
    match data_type {
        DataType::Bool => Variant::Boolean(match value {
            Value::Bool(b) => *b,
            _ => float != 0.0,
        }),
        DataType::U16 => Variant::UInt16(u16::try_from(uint).unwrap_or(u16::MAX)),
        DataType::I16 => Variant::Int16(int.clamp(i16::MIN.into(), i16::MAX.into()) as i16),
        DataType::U32 => Variant::UInt32(u32::try_from(uint).unwrap_or(u32::MAX)),
        DataType::I32 => Variant::Int32(int.clamp(i32::MIN.into(), i32::MAX.into()) as i32),
        DataType::U64 => Variant::UInt64(uint),
        DataType::I64 => Variant::Int64(int),
        DataType::F32 => Variant::Float(float as f32),
        DataType::F64 => Variant::Double(float),
        DataType::String => Variant::from(match value {
            Value::Text(t) => t.clone(),
            other => other.to_string(),
        }),
    }
}

/// Profile tags this front end serves, for tests and the CLI.
pub fn served_tags(profile: &Profile) -> Vec<&TagSpec> {
    let served = Served::new(profile);
    served.tags.iter().map(|t| &profile.tags[t.index]).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_become_the_variant_of_the_tag_type() {
        assert_eq!(variant(DataType::U16, &Value::UInt(7)), Variant::UInt16(7));
        assert_eq!(variant(DataType::I16, &Value::Int(-7)), Variant::Int16(-7));
        assert_eq!(
            variant(DataType::F32, &Value::Float(1.5)),
            Variant::Float(1.5)
        );
        assert_eq!(
            variant(DataType::Bool, &Value::Bool(true)),
            Variant::Boolean(true)
        );
        assert_eq!(
            variant(DataType::String, &Value::Text("x".into())),
            Variant::from("x")
        );
        assert_eq!(
            variant(DataType::U16, &Value::UInt(70_000)),
            Variant::UInt16(u16::MAX)
        );
    }
}
