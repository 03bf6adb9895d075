//! The query and admin API. Roles: viewer reads (events, stats, gateways, alerts, status,
//! stream); operator also acknowledges alerts; admin also registers gateways and manages
//! tokens.

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::{Extension, Json};
use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use tokio_postgres::Row;
use uuid::Uuid;

use super::{ApiError, AppState, Auth};
use crate::auth::{self, Role};
use crate::chain::Verification;
use crate::describe::view_json;
use crate::query::{self, EventFilter};
use crate::registry::{self, AdminError};
use crate::rows::{local_event, timestamp_of, Stored};
use linesentry_event::{EventType, SecurityEvent, Severity, SCHEMA_VERSION};

type Pairs = Query<Vec<(String, String)>>;

fn admin_error(e: AdminError) -> ApiError {
    match e {
        AdminError::Invalid(m) => ApiError::bad_request(m),
        AdminError::NotFound(m) => ApiError::new(StatusCode::NOT_FOUND, "not_found", m),
        AdminError::Db(e) => ApiError::internal(&e),
    }
}

fn body<T: DeserializeOwned>(bytes: &Bytes) -> Result<T, ApiError> {
    if bytes.len() > 64 * 1024 {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            "request body over 64 KiB",
        ));
    }
    serde_json::from_slice(bytes).map_err(|e| ApiError::bad_request(format!("request body: {e}")))
}

fn object(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

fn iso(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// A `security_events` row (columns as in [`EventFilter::sql`]) as the API shows it.
fn event_json(r: &Row) -> Value {
    let seq: Option<i64> = r.get(11);
    let event = SecurityEvent {
        schema_version: SCHEMA_VERSION,
        id: r.get(0),
        seq: seq.and_then(|s| u64::try_from(s).ok()).unwrap_or(0),
        gateway_id: r.get(9),
        station_id: r.get(10),
        event_type: r.get(1),
        severity: r.get::<_, &str>(8).parse().unwrap_or(Severity::Info),
        timestamp: timestamp_of(r.get(4)),
        correlation_id: r.get(5),
        user_id: r.get(6),
        source_ip: r.get(7),
        event_data: object(r.get(2)),
        context: object(r.get(3)),
        prev_hash: r.get(12),
    };
    let verification = r.get::<_, &str>(13).parse().unwrap_or(Verification::Local);
    let mut v = view_json(&Stored {
        event,
        verification,
    });
    v["seq"] = seq.into();
    v["received_at"] = iso(r.get(14)).into();
    v
}

/// `GET /api/v1/events`: the original design's getEvents, newest first, with a keyset
/// cursor (`next`) for deep pages.
pub(super) async fn events(
    State(st): State<AppState>,
    Extension(auth): Extension<Auth>,
    Query(pairs): Pairs,
) -> Result<Json<Value>, ApiError> {
    auth.require(Role::Viewer)?;
    let filter = EventFilter::parse(&pairs).map_err(ApiError::bad_request)?;
    let (sql, params) = filter.sql();
    let refs: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
        params.iter().map(|p| p.as_ref() as _).collect();
    let conn = st.pool.get().await.map_err(|e| ApiError::internal(&e))?;
    let mut rows = conn
        .client
        .query(sql.as_str(), &refs)
        .await
        .map_err(|e| ApiError::internal(&e))?;
    let limit = usize::try_from(filter.limit).unwrap_or(0);
    let more = rows.len() > limit;
    rows.truncate(limit);
    let next = if more {
        rows.last().map(|r| query::cursor(r.get(4), r.get(0)))
    } else {
        None
    };
    let events: Vec<Value> = rows.iter().map(event_json).collect();
    Ok(Json(
        json!({ "events": events, "count": events.len(), "next": next }),
    ))
}

/// `GET /api/v1/events/{id}`.
pub(super) async fn event(
    State(st): State<AppState>,
    Extension(auth): Extension<Auth>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    auth.require(Role::Viewer)?;
    let id: Uuid = id
        .parse()
        .map_err(|_| ApiError::bad_request("event id: expected a UUID"))?;
    let conn = st.pool.get().await.map_err(|e| ApiError::internal(&e))?;
    let row = conn
        .client
        .query_opt(
            "SELECT id, event_type, event_data, context, \"timestamp\", correlation_id, user_id, \
             source_ip, severity, gateway_id, station_id, seq, prev_hash, verification, created_at \
             FROM security_events WHERE id = $1 LIMIT 1",
            &[&id],
        )
        .await
        .map_err(|e| ApiError::internal(&e))?
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such event"))?;
    Ok(Json(event_json(&row)))
}

/// `GET /api/v1/stats`: the original design's getEventStats, from the rollups.
pub(super) async fn stats(
    State(st): State<AppState>,
    Extension(auth): Extension<Auth>,
    Query(pairs): Pairs,
) -> Result<Json<Value>, ApiError> {
    auth.require(Role::Viewer)?;
    let (window, gateway) =
        query::stats_window(&pairs, Utc::now()).map_err(ApiError::bad_request)?;
    let conn = st.pool.get().await.map_err(|e| ApiError::internal(&e))?;
    let stmt = conn
        .client
        .prepare_typed(
            query::STATS_SQL,
            &[
                tokio_postgres::types::Type::TEXT,
                tokio_postgres::types::Type::TIMESTAMPTZ,
                tokio_postgres::types::Type::TIMESTAMPTZ,
                tokio_postgres::types::Type::TEXT,
            ],
        )
        .await
        .map_err(|e| ApiError::internal(&e))?;
    let rows = conn
        .client
        .query(
            &stmt,
            &[&window.granularity, &window.from, &window.to, &gateway],
        )
        .await
        .map_err(|e| ApiError::internal(&e))?;
    let mut by_type = Map::new();
    let mut by_severity = Map::new();
    let mut total = 0i64;
    let rows: Vec<Value> = rows
        .iter()
        .map(|r| {
            let (t, s, n): (String, String, i64) = (r.get(0), r.get(1), r.get(2));
            total += n;
            let add = |m: &mut Map<String, Value>, k: &str| {
                let old = m.get(k).and_then(Value::as_i64).unwrap_or(0);
                m.insert(k.to_owned(), (old + n).into());
            };
            add(&mut by_type, &t);
            add(&mut by_severity, &s);
            json!({ "event_type": t, "severity": s, "count": n })
        })
        .collect();
    Ok(Json(json!({
        "granularity": window.granularity,
        "from": iso(window.from),
        "to": iso(window.to),
        "gateway_id": gateway,
        "total": total,
        "by_type": by_type,
        "by_severity": by_severity,
        "rows": rows,
    })))
}

/// `GET /api/v1/gateways`: registry, last contact, chain counters, MQTT status.
pub(super) async fn gateways(
    State(st): State<AppState>,
    Extension(auth): Extension<Auth>,
) -> Result<Json<Value>, ApiError> {
    auth.require(Role::Viewer)?;
    let list = registry::list_gateways(&st.pool)
        .await
        .map_err(admin_error)?;
    Ok(Json(json!({ "gateways": list })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewGateway {
    gateway_id: String,
    public_key: String,
    description: Option<String>,
    /// PEM of the client certificate the gateway may present (mTLS).
    client_cert_pem: Option<String>,
}

/// `POST /api/v1/gateways` (admin): register a gateway or add a key.
pub(super) async fn add_gateway(
    State(st): State<AppState>,
    Extension(auth): Extension<Auth>,
    bytes: Bytes,
) -> Result<impl IntoResponse, ApiError> {
    auth.require(Role::Admin)?;
    let req: NewGateway = body(&bytes)?;
    // The collector's own events are filed under its id; a gateway of that name would mix
    // them into its rows, counts and chain.
    if req.gateway_id == st.settings.collector_id {
        return Err(ApiError::bad_request(format!(
            "`gateway_id`: `{}` is this collector's id ([collector] id), under which it files its own events",
            req.gateway_id
        )));
    }
    let key = registry::parse_public_key(&req.public_key).map_err(admin_error)?;
    let cert = match &req.client_cert_pem {
        Some(pem) => Some(registry::cert_fingerprint(pem.as_bytes()).map_err(admin_error)?),
        None => None,
    };
    let key_id = registry::add_gateway(
        &st.pool,
        &req.gateway_id,
        &key,
        req.description.as_deref(),
        cert,
    )
    .await
    .map_err(admin_error)?;
    st.registry.invalidate().await;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "gateway_id": req.gateway_id, "key_id": key_id })),
    ))
}

/// `GET /api/v1/alerts?status=open|acknowledged|all&limit=N`.
pub(super) async fn alerts(
    State(st): State<AppState>,
    Extension(auth): Extension<Auth>,
    Query(pairs): Pairs,
) -> Result<Json<Value>, ApiError> {
    auth.require(Role::Viewer)?;
    let mut status: Option<String> = Some("open".into());
    let mut limit: i64 = 100;
    for (k, v) in &pairs {
        match (k.as_str(), v.as_str()) {
            ("status", "open" | "acknowledged") => status = Some(v.clone()),
            ("status", "all") => status = None,
            ("status", _) => {
                return Err(ApiError::bad_request(
                    "`status`: expected open, acknowledged or all",
                ))
            }
            ("limit", n) => {
                limit = n
                    .parse()
                    .ok()
                    .filter(|n| (1..=1000).contains(n))
                    .ok_or_else(|| ApiError::bad_request("`limit`: expected 1 to 1000"))?;
            }
            (other, _) => {
                return Err(ApiError::bad_request(format!(
                    "unknown parameter `{other}`; expected status, limit"
                )))
            }
        }
    }
    let conn = st.pool.get().await.map_err(|e| ApiError::internal(&e))?;
    let rows = conn
        .client
        .query(
            "SELECT a.id, a.rule, a.group_key, a.severity, a.source_count, a.raised_at, a.status, \
                    a.acknowledged_by, a.acknowledged_at, a.note, e.event_data \
             FROM alerts a LEFT JOIN security_events e ON e.id = a.id AND e.\"timestamp\" = a.event_ts \
             WHERE ($1::text IS NULL OR a.status = $1) ORDER BY a.raised_at DESC LIMIT $2",
            &[&status, &limit],
        )
        .await
        .map_err(|e| ApiError::internal(&e))?;
    let list: Vec<Value> = rows
        .iter()
        .map(|r| {
            json!({
                "id": r.get::<_, Uuid>(0).to_string(),
                "rule": r.get::<_, String>(1),
                "group_key": r.get::<_, String>(2),
                "severity": r.get::<_, String>(3),
                "source_count": r.get::<_, i32>(4),
                "raised_at": iso(r.get(5)),
                "status": r.get::<_, String>(6),
                "acknowledged_by": r.get::<_, Option<String>>(7),
                "acknowledged_at": r.get::<_, Option<DateTime<Utc>>>(8).map(iso),
                "note": r.get::<_, Option<String>>(9),
                "event_data": r.get::<_, Option<Value>>(10),
            })
        })
        .collect();
    Ok(Json(json!({ "alerts": list })))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Ack {
    note: Option<String>,
}

/// `POST /api/v1/alerts/{id}/ack` (operator): acknowledge an open alert; recorded as an
/// `alert.acknowledged` event correlated to the alert.
pub(super) async fn ack_alert(
    State(st): State<AppState>,
    Extension(auth): Extension<Auth>,
    Path(id): Path<String>,
    bytes: Bytes,
) -> Result<Json<Value>, ApiError> {
    let who = auth.require(Role::Operator)?;
    let id: Uuid = id
        .parse()
        .map_err(|_| ApiError::bad_request("alert id: expected a UUID"))?;
    let ack: Ack = if bytes.is_empty() {
        Ack::default()
    } else {
        body(&bytes)?
    };
    if ack
        .note
        .as_ref()
        .is_some_and(|n| n.len() > 2000 || n.contains('\0'))
    {
        return Err(ApiError::bad_request("`note`: at most 2000 characters"));
    }
    let conn = st.pool.get().await.map_err(|e| ApiError::internal(&e))?;
    let row = conn
        .client
        .query_opt(
            "UPDATE alerts SET status = 'acknowledged', acknowledged_by = $2, \
             acknowledged_at = now(), note = $3 WHERE id = $1 AND status = 'open' \
             RETURNING rule, group_key",
            &[&id, &who.name, &ack.note],
        )
        .await
        .map_err(|e| ApiError::internal(&e))?;
    let Some(row) = row else {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "not_open",
            "no open alert with this id",
        ));
    };
    let mut e = local_event(
        &st.settings.collector_id,
        EventType::AlertAcknowledged,
        Severity::Info,
    )
    .correlation(id)
    .data("alert_id", id.to_string())
    .data("rule", row.get::<_, String>(0))
    .data("group_key", row.get::<_, String>(1))
    .data("note", ack.note.clone());
    e.user_id = Some(who.name.clone());
    st.ingest.submit_local(vec![e]).await;
    Ok(Json(
        json!({ "id": id.to_string(), "status": "acknowledged" }),
    ))
}

/// `GET /api/v1/tokens` (admin).
pub(super) async fn tokens(
    State(st): State<AppState>,
    Extension(auth): Extension<Auth>,
) -> Result<Json<Value>, ApiError> {
    auth.require(Role::Admin)?;
    let list = auth::list_tokens(&st.pool).await.map_err(admin_error)?;
    Ok(Json(json!({ "tokens": list })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewToken {
    name: String,
    role: String,
    gateway_id: Option<String>,
}

/// `POST /api/v1/tokens` (admin): the token is in this answer only.
pub(super) async fn create_token(
    State(st): State<AppState>,
    Extension(auth): Extension<Auth>,
    bytes: Bytes,
) -> Result<impl IntoResponse, ApiError> {
    auth.require(Role::Admin)?;
    let req: NewToken = body(&bytes)?;
    let role: Role = req.role.parse().map_err(ApiError::bad_request)?;
    let (id, token) = auth::create_token(&st.pool, &req.name, role, req.gateway_id.as_deref())
        .await
        .map_err(admin_error)?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "id": id.to_string(), "role": role.as_str(), "token": token })),
    ))
}

/// `DELETE /api/v1/tokens/{id}` (admin).
pub(super) async fn revoke_token(
    State(st): State<AppState>,
    Extension(auth): Extension<Auth>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    auth.require(Role::Admin)?;
    let id: Uuid = id
        .parse()
        .map_err(|_| ApiError::bad_request("token id: expected a UUID"))?;
    auth::revoke_token(&st.pool, id)
        .await
        .map_err(admin_error)?;
    st.tokens.invalidate().await;
    Ok(Json(json!({ "id": id.to_string(), "revoked": true })))
}

/// `GET /api/v1/status`: ingest counters and the stream.
pub(super) async fn status(
    State(st): State<AppState>,
    Extension(auth): Extension<Auth>,
) -> Result<Json<Value>, ApiError> {
    auth.require(Role::Viewer)?;
    let hub = st.hub.stats();
    let siem = crate::siem::status(&st.pool, &st.settings.siem)
        .await
        .map_err(|e| ApiError::internal(&e))?;
    Ok(Json(json!({
        "collector_id": st.settings.collector_id,
        "version": env!("CARGO_PKG_VERSION"),
        "ingest": st.ingest.counters.snapshot(),
        "stream": { "clients": hub.clients, "sent": hub.published, "dropped": hub.dropped },
        "siem": siem,
    })))
}

/// `GET /api/v1/whoami`: the caller's name and role (the page uses it).
pub(super) async fn whoami(Extension(auth): Extension<Auth>) -> Result<Json<Value>, ApiError> {
    let p = auth
        .require(Role::Gateway)
        .or_else(|_| auth.require(Role::Viewer))?;
    Ok(Json(
        json!({ "name": p.name, "role": p.role.as_str(), "gateway_id": p.gateway_id }),
    ))
}

pub(super) async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such API route")
}
