//! The query and admin API.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::{Extension, Json};
use serde_json::json;

use super::{ApiError, AppState, Auth};
use crate::collector::auth::Role;

fn todo() -> ApiError {
    ApiError::new(StatusCode::NOT_IMPLEMENTED, "not_implemented", "not yet")
}

pub(super) async fn events() -> ApiError {
    todo()
}
pub(super) async fn event() -> ApiError {
    todo()
}
pub(super) async fn stats() -> ApiError {
    todo()
}
pub(super) async fn gateways() -> ApiError {
    todo()
}
pub(super) async fn add_gateway() -> ApiError {
    todo()
}
pub(super) async fn alerts() -> ApiError {
    todo()
}
pub(super) async fn ack_alert() -> ApiError {
    todo()
}
pub(super) async fn tokens() -> ApiError {
    todo()
}
pub(super) async fn create_token() -> ApiError {
    todo()
}
pub(super) async fn revoke_token() -> ApiError {
    todo()
}
pub(super) async fn status(
    State(st): State<AppState>,
    Extension(auth): Extension<Auth>,
) -> Result<impl IntoResponse, ApiError> {
    auth.require(Role::Viewer)?;
    Ok(Json(json!({ "ingest": st.ingest.counters.snapshot() })))
}
pub(super) async fn whoami(Extension(auth): Extension<Auth>) -> impl IntoResponse {
    Json(
        json!({ "name": auth.0.as_ref().map(|p| p.name.clone()), "role": auth.0.as_ref().map(|p| p.role.as_str()) }),
    )
}
pub(super) async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such API route")
}
