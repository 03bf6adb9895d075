//! Handlers and alerts (filled in with the alert rules).

use std::sync::Arc;

use super::config::{AlertRule, Webhook};
use super::db::DbError;
use super::store::Stored;

/// What the handlers need inside an ingest transaction.
#[derive(Debug, Clone)]
pub struct AlertContext {
    pub collector_id: String,
    pub rules: Vec<AlertRule>,
    pub webhooks: Vec<Webhook>,
}

/// Runs the handlers over newly inserted events; returns the alert events it inserted.
#[allow(clippy::unused_async)]
pub async fn run(
    _tx: &tokio_postgres::Transaction<'_>,
    _ctx: &AlertContext,
    _new: &[Arc<Stored>],
) -> Result<Vec<Arc<Stored>>, DbError> {
    Ok(Vec::new())
}
