//! Webhook delivery (filled in with the alerts).

use std::sync::Arc;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::config::Webhook;
use super::db::Pool;

/// Delivers the webhook outbox until `shutdown`.
pub async fn run(
    _pool: Pool,
    _hooks: Vec<Webhook>,
    _wake: Arc<Notify>,
    shutdown: CancellationToken,
) {
    shutdown.cancelled().await;
}
