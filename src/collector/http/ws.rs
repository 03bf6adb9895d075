//! The live stream over WebSocket.

use axum::http::StatusCode;

use super::ApiError;

pub(super) async fn stream() -> ApiError {
    ApiError::new(StatusCode::NOT_IMPLEMENTED, "not_implemented", "not yet")
}
