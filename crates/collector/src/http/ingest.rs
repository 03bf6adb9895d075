//! `POST /api/v1/ingest`: one signed batch envelope per request, gzip or identity.
//!
//! Answers: 200 only after commit (`accepted`, `duplicates`, verification counts); 400 with
//! every offending event named (index, id, seq) for invalid events, so the agent can split
//! the batch and set the poison events aside; 400 for a batch that is not genuine (bad
//! signature, unknown key), after it was quarantined and reported; 403 for a gateway that
//! is not registered or not the caller's; 413 over the size limit; 415 for another content
//! encoding; 503 when the database cannot commit in time (nothing of the batch is partly
//! stored: send it again).

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde_json::json;
use tokio::time::Instant;

use super::{ApiError, AppState, Auth, PeerInfo};
use crate::auth::Role;
use crate::decode::{self, Rejection};
use crate::ingest::{refusal, verify};
use crate::store::Transport;
use linesentry_event::Timestamp;

fn rejected(r: &Rejection) -> Response {
    let status = if matches!(r, Rejection::TooLarge { .. }) {
        StatusCode::PAYLOAD_TOO_LARGE
    } else {
        StatusCode::BAD_REQUEST
    };
    (status, Json(r.to_json())).into_response()
}

/// The body, size-limited and gunzipped; or the 4xx answer.
async fn read_body(st: &AppState, headers: &HeaderMap, body: Body) -> Result<Vec<u8>, Response> {
    let limits = st.settings.ingest.limits;
    let counters = &st.ingest.counters;
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .map(|v| v.to_str().unwrap_or("?").trim().to_ascii_lowercase());
    let gzip = match encoding.as_deref() {
        None | Some("identity" | "") => false,
        Some("gzip") => true,
        Some(other) => {
            counters.refused(Transport::Https, "encoding");
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "encoding",
                format!("Content-Encoding `{other}`; expected gzip or identity"),
            )
            .into_response());
        }
    };
    let Ok(raw) = axum::body::to_bytes(body, limits.max_bytes).await else {
        counters.refused(Transport::Https, "too_large");
        return Err(rejected(&Rejection::TooLarge {
            limit: limits.max_bytes,
        }));
    };
    match decode::decompress(&raw, gzip, limits.max_bytes) {
        Ok(b) => Ok(b.into_owned()),
        Err(r) => {
            counters.refused(Transport::Https, r.kind());
            Err(rejected(&r))
        }
    }
}

pub(super) async fn ingest(
    State(st): State<AppState>,
    Extension(auth): Extension<Auth>,
    ConnectInfo(peer): ConnectInfo<PeerInfo>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let principal = auth.require(Role::Gateway)?;
    let deadline = Instant::now() + st.settings.http.request_timeout;
    let counters = &st.ingest.counters;
    let bytes = match read_body(&st, &headers, body).await {
        Ok(b) => b,
        Err(answer) => return Ok(answer),
    };
    let env = match decode::decode(
        &bytes,
        &st.settings.ingest.limits,
        Timestamp::now().as_micros(),
    ) {
        Ok(env) => env,
        Err(r) => {
            counters.refused(Transport::Https, r.kind());
            tracing::info!(peer = %peer.addr, kind = r.kind(), reason = %r, "ingest batch refused");
            return Ok(rejected(&r));
        }
    };
    let expected = principal.gateway_id.clone();
    let verdict = verify(env, &st.registry, expected.as_deref())
        .await
        .map_err(|e| ApiError::internal(&e))?;
    let unavailable = |e: crate::ingest::Unavailable| {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", e.0)
    };
    let work = match verdict {
        Ok(work) => work,
        Err(ng) => {
            counters.refused(Transport::Https, ng.kind);
            tracing::warn!(peer = %peer.addr, gateway = ?ng.gateway_id, kind = ng.kind, reason = %ng.reason, "batch is not genuine; quarantining it");
            let status = match ng.kind {
                "unknown_gateway" | "gateway_disabled" | "gateway_mismatch" => {
                    StatusCode::FORBIDDEN
                }
                _ => StatusCode::BAD_REQUEST,
            };
            let (kind, reason) = (ng.kind, ng.reason.clone());
            let work = refusal(Transport::Https, peer.addr.to_string(), &bytes, true, ng);
            let report = st
                .ingest
                .commit(Transport::Https, work, None, deadline)
                .await
                .map_err(unavailable)?;
            let body = json!({
                "error": kind,
                "reason": reason,
                "quarantine_id": report.quarantine.map(|q| q.0.to_string()),
            });
            return Ok((status, Json(body)).into_response());
        }
    };
    let report = st
        .ingest
        .commit(Transport::Https, work, Some(Bytes::from(bytes)), deadline)
        .await
        .map_err(unavailable)?;
    if let Some((id, _)) = report.quarantine {
        // The database refused the content; it was quarantined instead.
        let body = json!({
            "error": "database_refused",
            "reason": "the database refused this batch's content; it was quarantined",
            "quarantine_id": id.to_string(),
        });
        return Ok((StatusCode::BAD_REQUEST, Json(body)).into_response());
    }
    let body = json!({
        "accepted": report.inserted,
        "duplicates": report.duplicates,
        "verification": report.statuses,
    });
    Ok((StatusCode::OK, Json(body)).into_response())
}
