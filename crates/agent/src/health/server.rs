//! The HTTP endpoint: `GET /healthz` and `GET /metrics`, nothing else.
//!
//! One task per connection (the shared accept loop, `linesentry_common::accept`), bounded
//! three ways so that neither a slow nor a hostile client can hold the endpoint: at most `max_connections` at once (the rest
//! wait in the listen backlog), a TLS handshake and each request head must arrive in time,
//! and every connection is closed `connection_lifetime` after it was accepted, keep-alive or
//! not. HTTP/1.1 only. With a token configured, every request, an unknown path included,
//! needs `Authorization: Bearer <token>`; the token is compared as a SHA-256 digest in
//! constant time and never logged.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use linesentry_common::accept::{accept_loop, AcceptOptions};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use super::exposition::{Exposition, CONTENT_TYPE};
use super::{HealthError, Liveness, Metrics};
use super::{HealthSettings, HealthTls};

/// How much the endpoint lets its clients take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerLimits {
    /// Connections served at once; further ones wait in the listen backlog.
    pub max_connections: usize,
    /// A TLS client must complete its handshake within this.
    pub handshake_timeout: Duration,
    /// Each request head must arrive within this.
    pub header_read_timeout: Duration,
    /// Bytes a request head may take (at least 8 KiB).
    pub max_header_bytes: usize,
    /// A connection is closed this long after it was accepted.
    pub connection_lifetime: Duration,
    /// How long a closing connection may take to finish its response (lifetime over, or
    /// shutdown) before it is dropped.
    pub close_grace: Duration,
}

impl Default for ServerLimits {
    fn default() -> Self {
        Self {
            max_connections: 16,
            handshake_timeout: Duration::from_secs(5),
            header_read_timeout: Duration::from_secs(5),
            max_header_bytes: 16 * 1024,
            connection_lifetime: Duration::from_secs(60),
            close_grace: Duration::from_secs(2),
        }
    }
}

/// A bound endpoint, not yet serving: binding first lets start-up fail on a taken port or a
/// bad certificate before the agent reports ready.
pub struct Server {
    listener: TcpListener,
    local_addr: SocketAddr,
    tls: Option<TlsAcceptor>,
    token: Option<TokenDigest>,
    limits: ServerLimits,
}

impl fmt::Debug for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server")
            .field("local_addr", &self.local_addr)
            .field("tls", &self.tls.is_some())
            .field("token", &self.token.is_some())
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

/// SHA-256 of the expected token: what requests are compared against.
type TokenDigest = [u8; 32];

impl Server {
    /// Loads the TLS material and binds `settings.listen` (whether or not `enabled`).
    /// Refuses a non-loopback address without TLS and a token, whoever built the settings.
    pub async fn bind(settings: &HealthSettings) -> Result<Self, HealthError> {
        let addr = settings.listen;
        if !addr.ip().is_loopback() && (settings.tls.is_none() || settings.token.is_none()) {
            return Err(HealthError::Unprotected { addr });
        }
        let tls = settings.tls.as_ref().map(tls_acceptor).transpose()?;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| HealthError::Bind { addr, source })?;
        let local_addr = listener
            .local_addr()
            .map_err(|source| HealthError::Bind { addr, source })?;
        Ok(Self {
            listener,
            local_addr,
            tls,
            token: settings
                .token
                .as_ref()
                .map(|t| Sha256::digest(t.expose().as_bytes()).into()),
            limits: ServerLimits::default(),
        })
    }

    #[must_use]
    pub fn with_limits(mut self, limits: ServerLimits) -> Self {
        self.limits = limits;
        self
    }

    /// The address actually bound (the port chosen when `listen` had port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves until `shutdown` is cancelled, then gives open connections `close_grace` to
    /// finish and returns.
    pub async fn run(self, metrics: Metrics, liveness: Liveness, shutdown: CancellationToken) {
        let Server {
            listener,
            local_addr,
            tls,
            token,
            limits,
        } = self;
        tracing::info!(listen = %local_addr, tls = tls.is_some(), token = token.is_some(),
            "health endpoint listening");
        let router = router(AppState { metrics, liveness }, token);
        let options = AcceptOptions {
            max_connections: Some(limits.max_connections),
            handshake_timeout: limits.handshake_timeout,
            log_prefix: "health endpoint: ",
        };
        let closing = shutdown.clone();
        let mut connections = accept_loop(listener, tls, options, shutdown, move |c| {
            // HTTP/1.1 until the client is done, the lifetime is over or shutdown.
            let router = router.clone().layer(Extension(Peer(c.peer)));
            let shutdown = closing.clone();
            async move {
                let deadline = c.accepted_at + limits.connection_lifetime;
                http(c.io, router, limits, &shutdown, deadline).await;
            }
        })
        .await;
        // Every connection watches the same token and is closing; wait for them, bounded.
        let drained = tokio::time::timeout(limits.close_grace, async {
            while connections.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            connections.abort_all();
        }
        tracing::debug!("health endpoint stopped");
    }
}

/// Binds and serves `settings` until `shutdown` is cancelled. When `enabled` is false it
/// serves nothing and just waits for `shutdown`, so callers treat both cases alike.
pub async fn serve(
    settings: HealthSettings,
    metrics: Metrics,
    liveness: Liveness,
    shutdown: CancellationToken,
) -> Result<(), HealthError> {
    if !settings.enabled {
        shutdown.cancelled().await;
        return Ok(());
    }
    Server::bind(&settings)
        .await?
        .run(metrics, liveness, shutdown)
        .await;
    Ok(())
}

fn tls_acceptor(tls: &HealthTls) -> Result<TlsAcceptor, HealthError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let cert_error = |reason: String| HealthError::Tls {
        path: tls.cert_file.clone(),
        reason,
    };
    let certs = CertificateDer::pem_file_iter(&tls.cert_file)
        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        .map_err(|e| cert_error(format!("cannot read the certificate chain: {e}")))?;
    if certs.is_empty() {
        return Err(cert_error(
            "no CERTIFICATE block; expected a PEM certificate chain".to_owned(),
        ));
    }
    let key = PrivateKeyDer::from_pem_file(&tls.key_file).map_err(|e| HealthError::Tls {
        path: tls.key_file.clone(),
        reason: format!("cannot read the private key: {e}"),
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| cert_error(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| HealthError::Tls {
            path: tls.key_file.clone(),
            reason: format!("the key does not fit the certificate or is unusable: {e}"),
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

#[derive(Debug, Clone)]
struct AppState {
    metrics: Metrics,
    liveness: Liveness,
}

/// The remote address of the connection a request came on, for logs.
#[derive(Debug, Clone, Copy)]
struct Peer(SocketAddr);

fn router(state: AppState, token: Option<TokenDigest>) -> Router {
    Router::new()
        .route("/healthz", get(healthz).fallback(not_found))
        .route("/metrics", get(metrics).fallback(not_found))
        .fallback(not_found)
        .with_state(state)
        .layer(middleware::from_fn_with_state(token, authorize))
}

async fn authorize(
    State(token): State<Option<TokenDigest>>,
    peer: Option<Extension<Peer>>,
    request: Request,
    next: Next,
) -> Response {
    let Some(expected) = token else {
        return next.run(request).await;
    };
    if bearer_matches(&expected, request.headers()) {
        return next.run(request).await;
    }
    let peer = peer.map(|Extension(Peer(addr))| addr.to_string());
    tracing::warn!(
        peer = peer.as_deref().unwrap_or("?"),
        path = request.uri().path(),
        "health endpoint: request without a valid bearer token refused"
    );
    (
        StatusCode::UNAUTHORIZED,
        [
            (
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"linesentry\""),
            ),
            (header::CONTENT_TYPE, HeaderValue::from_static(TEXT)),
        ],
        "unauthorized\n",
    )
        .into_response()
}

/// `Authorization: Bearer <token>` whose SHA-256 equals `expected`, compared in constant time.
fn bearer_matches(expected: &TokenDigest, headers: &HeaderMap) -> bool {
    let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let Some((scheme, token)) = value.trim().split_once(' ') else {
        return false;
    };
    if !scheme.eq_ignore_ascii_case("bearer") {
        return false;
    }
    let given: TokenDigest = Sha256::digest(token.trim().as_bytes()).into();
    given
        .iter()
        .zip(expected)
        .fold(0u8, |diff, (a, b)| diff | (a ^ b))
        == 0
}

const TEXT: &str = "text/plain; charset=utf-8";

async fn healthz(State(state): State<AppState>) -> Response {
    let health = state.liveness.check(Instant::now());
    let mut body = String::new();
    if health.ok {
        body.push_str("ok\n");
    }
    for reason in &health.reasons {
        body.push_str(reason);
        body.push('\n');
    }
    let status = if health.ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    text(status, TEXT, body)
}

async fn metrics(State(state): State<AppState>) -> Response {
    let now = Instant::now();
    let mut exp = Exposition::new();
    state.metrics.write(&mut exp, now);
    state.liveness.write(&mut exp, now);
    text(StatusCode::OK, CONTENT_TYPE, exp.finish())
}

async fn not_found() -> Response {
    text(StatusCode::NOT_FOUND, TEXT, "not found\n".to_owned())
}

fn text(status: StatusCode, content_type: &'static str, body: String) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
        body,
    )
        .into_response()
}

async fn http<I>(
    io: I,
    router: Router,
    limits: ServerLimits,
    shutdown: &CancellationToken,
    deadline: tokio::time::Instant,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut builder = Builder::new(TokioExecutor::new()).http1_only();
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_bytes.max(8192));
    let conn = builder.serve_connection(TokioIo::new(io), TowerToHyperService::new(router));
    tokio::pin!(conn);
    tokio::select! {
        result = conn.as_mut() => {
            if let Err(e) = result {
                tracing::debug!(error = %e, "health endpoint: connection ended with an error");
            }
            return;
        }
        () = shutdown.cancelled() => {}
        () = tokio::time::sleep_until(deadline) => {}
    }
    conn.as_mut().graceful_shutdown();
    let _ = tokio::time::timeout(limits.close_grace, conn).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(authorization: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(authorization).unwrap(),
        );
        h
    }

    #[test]
    fn only_the_exact_bearer_token_is_accepted() {
        let expected: TokenDigest = Sha256::digest(b"s3cret").into();
        assert!(bearer_matches(&expected, &headers("Bearer s3cret")));
        assert!(bearer_matches(&expected, &headers("bearer s3cret")));
        assert!(!bearer_matches(&expected, &headers("Bearer s3cre")));
        assert!(!bearer_matches(&expected, &headers("Bearer s3cret2")));
        assert!(!bearer_matches(&expected, &headers("Basic s3cret")));
        assert!(!bearer_matches(&expected, &headers("s3cret")));
        assert!(!bearer_matches(&expected, &HeaderMap::new()));
    }
}
