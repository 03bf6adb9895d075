//! The collector's HTTP side (axum over rustls): HTTPS ingest, the query API, the live
//! stream, the web page.
//!
//! Every `/api/` request passes [`access`]: it identifies the caller (bearer token, or a
//! gateway's client certificate), refuses anonymous and unknown callers with 401, and
//! records the request as an `api.access` event (method, route, query, status, duration,
//! who, from where), as the original design's middleware did. Handlers then check the
//! caller's role ([`Auth::require`]).

mod api;
mod console;
mod ingest;
mod page;
pub mod tls;
mod ws;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::auth::{Principal, Role, Tokens};
use super::config::Settings;
use super::db::Pool;
use super::ingest::Ingest;
use super::registry::Registry;
use super::rows::local_event;
use super::stream::Hub;
use linesentry_event::{EventType, Severity};
pub use tls::PeerInfo;

/// What every handler can reach.
#[derive(Debug, Clone)]
pub struct AppState {
    pub pool: Pool,
    pub ingest: Ingest,
    pub registry: Registry,
    pub tokens: Tokens,
    pub hub: Hub,
    pub settings: Arc<Settings>,
    pub shutdown: CancellationToken,
}

/// An API error: a status and a JSON body `{"error": kind, "reason": text}`.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub kind: &'static str,
    pub reason: String,
    pub extra: Option<serde_json::Value>,
}

impl ApiError {
    pub fn new(status: StatusCode, kind: &'static str, reason: impl Into<String>) -> Self {
        Self {
            status,
            kind,
            reason: reason.into(),
            extra: None,
        }
    }

    pub fn bad_request(reason: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", reason)
    }

    pub fn internal(e: &impl std::fmt::Display) -> Self {
        tracing::warn!(error = %e, "API request failed");
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the database is unavailable; try again",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({ "error": self.kind, "reason": self.reason });
        if let (Some(serde_json::Value::Object(extra)), Some(obj)) =
            (self.extra, body.as_object_mut())
        {
            obj.extend(extra);
        }
        (self.status, Json(body)).into_response()
    }
}

/// The caller, as [`access`] identified it.
#[derive(Debug, Clone)]
pub struct Auth(pub Option<Principal>);

impl Auth {
    /// The principal if its role includes `role`; 401 without one, 403 with too little.
    pub fn require(&self, role: Role) -> Result<&Principal, ApiError> {
        match &self.0 {
            None => Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "a bearer token is required",
            )),
            Some(p) if p.role.allows(role) => Ok(p),
            Some(p) => Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!("role `{}` may not do this; it needs `{}`", p.role, role),
            )),
        }
    }
}

/// The token of a request: `Authorization: Bearer <token>`, or for browser WebSockets a
/// `Sec-WebSocket-Protocol` entry `bearer.<token>` (a browser cannot set headers there).
pub fn presented_token(headers: &HeaderMap) -> Option<String> {
    if let Some(v) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        let v = v.trim();
        if v.len() > 7 && v[..7].eq_ignore_ascii_case("bearer ") {
            return Some(v[7..].trim().to_owned());
        }
        return Some(String::new());
    }
    headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .find_map(|p| p.trim().strip_prefix("bearer.").map(str::to_owned))
}

async fn identify(
    st: &AppState,
    peer: &PeerInfo,
    headers: &HeaderMap,
) -> Result<(Option<Principal>, bool), ApiError> {
    if let Some(token) = presented_token(headers) {
        return match st.tokens.authenticate(&token).await {
            Ok(p) => Ok((p, true)),
            Err(e) => Err(ApiError::internal(&e)),
        };
    }
    if let Some(cert) = &peer.client_cert_sha256 {
        match st.registry.gateway_for_cert(cert).await {
            Ok(Some(gw)) => {
                return Ok((
                    Some(Principal {
                        token_id: None,
                        name: format!("cert:{gw}"),
                        role: Role::Gateway,
                        gateway_id: Some(gw),
                    }),
                    true,
                ))
            }
            Ok(None) => return Ok((None, true)),
            Err(e) => return Err(ApiError::internal(&e)),
        }
    }
    Ok((None, false))
}

/// Identifies the caller, refuses anonymous `/api/` calls, records `api.access`.
async fn access(
    State(st): State<AppState>,
    ConnectInfo(peer): ConnectInfo<PeerInfo>,
    mut req: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let method = req.method().to_string();
    let path = req.uri().path().to_owned();
    let query = req
        .uri()
        .query()
        .map(|q| q.chars().take(1000).collect::<String>());
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_owned());
    let api = path.starts_with("/api/");
    let (principal, response) = match identify(&st, &peer, req.headers()).await {
        Err(e) => (None, e.into_response()),
        Ok((None, presented)) if api => {
            let reason = if presented {
                "the token or client certificate is not valid (unknown, revoked or not registered)"
            } else {
                "a bearer token is required"
            };
            (
                None,
                ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", reason).into_response(),
            )
        }
        Ok((p, _)) => {
            req.extensions_mut().insert(Auth(p.clone()));
            (p, next.run(req).await)
        }
    };
    if api {
        let status = response.status().as_u16();
        let severity = if matches!(status, 401 | 403) {
            Severity::Warn
        } else {
            Severity::Debug
        };
        let mut e = local_event(&st.settings.collector_id, EventType::ApiAccess, severity)
            .data("method", method)
            .data("path", path)
            .data("status", status)
            .data("duration_ms", started.elapsed().as_secs_f64() * 1000.0);
        if let Some(r) = route {
            e = e.data("route", r);
        }
        if let Some(q) = query {
            e = e.data("query", q);
        }
        if let Some(p) = &principal {
            e.user_id = Some(p.name.clone());
            e = e.data("role", p.role.as_str());
            if let Some(id) = p.token_id {
                e = e.data("token_id", id.to_string());
            }
        }
        e.source_ip = Some(peer.addr.ip());
        st.ingest.submit_local(vec![e]).await;
    }
    response
}

/// Security headers on every response; the page is same-origin only.
async fn headers(req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        "nosniff".parse().expect("static"),
    );
    h.insert(header::X_FRAME_OPTIONS, "DENY".parse().expect("static"));
    h.insert(
        header::REFERRER_POLICY,
        "no-referrer".parse().expect("static"),
    );
    h.insert(header::CACHE_CONTROL, "no-store".parse().expect("static"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        "default-src 'self'; connect-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; frame-ancestors 'none'"
            .parse()
            .expect("static"),
    );
    resp
}

async fn healthz() -> &'static str {
    "ok\n"
}

/// The router with every route and layer.
pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .route("/api/v1/ingest", post(ingest::ingest))
        .route("/api/v1/events", get(api::events))
        .route("/api/v1/events/{id}", get(api::event))
        .route("/api/v1/events/{id}/chain", get(console::chain))
        .route("/api/v1/timeline", get(console::timeline))
        .route("/api/v1/assets", get(console::assets))
        .route(
            "/api/v1/assets/{gateway}/{station}/history",
            get(console::asset_history),
        )
        .route("/api/v1/attack", get(console::attack))
        .route("/api/v1/stats", get(api::stats))
        .route(
            "/api/v1/gateways",
            get(api::gateways).post(api::add_gateway),
        )
        .route("/api/v1/alerts", get(api::alerts))
        .route("/api/v1/alerts/{id}/ack", post(api::ack_alert))
        .route("/api/v1/tokens", get(api::tokens).post(api::create_token))
        .route(
            "/api/v1/tokens/{id}",
            axum::routing::delete(api::revoke_token),
        )
        .route("/api/v1/status", get(api::status))
        .route("/api/v1/whoami", get(api::whoami))
        .route("/api/v1/stream", get(ws::stream))
        .fallback(api::not_found)
        .layer(axum::middleware::from_fn_with_state(state.clone(), access));
    Router::new()
        .route("/healthz", get(healthz))
        .route("/", get(page::index))
        .route("/app.js", get(page::script))
        .route("/app.css", get(page::style))
        .merge(api)
        .layer(axum::middleware::from_fn(headers))
        .layer(axum::extract::DefaultBodyLimit::disable())
        .with_state(state)
}

/// Serves until `shutdown`; returns the bound address at once.
pub async fn serve(
    state: AppState,
    listen: SocketAddr,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>), String> {
    let tls = match &state.settings.http.tls {
        Some(files) => Some(Arc::new(tls::server_config(files)?)),
        None => None,
    };
    let tcp = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    let shutdown = state.shutdown.clone();
    let listener =
        tls::CollectorListener::start(tcp, tls, shutdown.clone()).map_err(|e| e.to_string())?;
    let addr = axum::serve::Listener::local_addr(&listener)
        .map_err(|e| e.to_string())?
        .addr;
    let app = router(state);
    let handle = tokio::spawn(async move {
        let server = axum::serve(
            listener,
            app.into_make_service_with_connect_info::<PeerInfo>(),
        )
        .with_graceful_shutdown(shutdown.cancelled_owned());
        if let Err(e) = server.await {
            tracing::error!(error = %e, "HTTP server stopped");
        }
    });
    Ok((addr, handle))
}
