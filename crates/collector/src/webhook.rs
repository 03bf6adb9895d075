//! Webhook delivery from the outbox the ingest transaction wrote.
//!
//! Deliveries are claimed with a lease (`next_attempt_at` pushed past the request timeout,
//! `FOR UPDATE SKIP LOCKED`), so several collectors share the outbox and a collector that
//! dies mid-delivery leaves its claim to expire rather than lose it. Each attempt is a POST of
//! the JSON payload with `X-Linesentry-Delivery` (the outbox id, for de-duplication at the
//! receiver: delivery is at least once) and, when a secret is configured,
//! `X-Linesentry-Signature: sha256=<hex HMAC-SHA256 of the body>`. A 2xx ends it; anything
//! else is retried with capped exponential backoff (1 s, 2 s, 4 s ... 10 min) until
//! `max_attempts`, after which the delivery is marked failed and a `webhook.failed` event
//! says so.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::config::Webhook;
use super::db::{DbError, Pool};
use super::ingest::Ingest;
use super::rows::local_event;
use linesentry_event::integrity::hex;
use linesentry_event::{EventType, Severity};

/// HMAC-SHA256 (RFC 2104).
pub fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    const BLOCK: usize = 64;
    let mut k = [0u8; BLOCK];
    if key.len() > BLOCK {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let mut inner = Sha256::new();
    inner.update(k.map(|b| b ^ 0x36));
    inner.update(message);
    let mut outer = Sha256::new();
    outer.update(k.map(|b| b ^ 0x5c));
    outer.update(inner.finalize());
    outer.finalize().into()
}

/// Delay before attempt `attempts + 1`.
fn retry_delay(attempts: i32) -> Duration {
    let exp = u32::try_from(attempts.clamp(1, 20) - 1).unwrap_or(0);
    Duration::from_secs(1u64 << exp).min(Duration::from_secs(600))
}

const CLAIM: &str = "UPDATE webhook_outbox SET attempts = attempts + 1, \
     next_attempt_at = now() + make_interval(secs => $1) \
     WHERE id IN (SELECT id FROM webhook_outbox WHERE delivered_at IS NULL AND failed_at IS NULL \
                  AND next_attempt_at <= now() ORDER BY id LIMIT 20 FOR UPDATE SKIP LOCKED) \
     RETURNING id, webhook, payload, attempts, alert_id";

struct Client {
    hook: Webhook,
    http: reqwest::Client,
}

fn client(hook: &Webhook) -> Result<reqwest::Client, String> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut b = reqwest::Client::builder()
        .timeout(hook.timeout)
        .redirect(reqwest::redirect::Policy::none());
    if let Some(ca) = &hook.ca_file {
        let pem = std::fs::read(ca).map_err(|e| format!("{}: {e}", ca.display()))?;
        let cert =
            reqwest::Certificate::from_pem(&pem).map_err(|e| format!("{}: {e}", ca.display()))?;
        b = b.add_root_certificate(cert);
    }
    b.build().map_err(|e| e.to_string())
}

/// Delivers the outbox until `shutdown`; `wake` is notified when alerts were committed.
pub async fn run(
    pool: Pool,
    hooks: Vec<Webhook>,
    ingest: Ingest,
    wake: Arc<Notify>,
    shutdown: CancellationToken,
) {
    let mut clients: HashMap<String, Client> = HashMap::new();
    for hook in hooks {
        match client(&hook) {
            Ok(http) => {
                clients.insert(hook.name.clone(), Client { hook, http });
            }
            Err(e) => {
                tracing::error!(webhook = %hook.name, error = %e, "webhook disabled: its client could not be built");
            }
        }
    }
    if clients.is_empty() {
        shutdown.cancelled().await;
        return;
    }
    let lease = clients
        .values()
        .map(|c| c.hook.timeout)
        .max()
        .unwrap_or(Duration::from_secs(5))
        + Duration::from_secs(10);
    loop {
        let more = match deliver_due(&pool, &clients, &ingest, lease).await {
            Ok(n) => n > 0,
            Err(e) => {
                tracing::warn!(error = %e, "webhook outbox unavailable; retrying");
                false
            }
        };
        if more {
            continue;
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = wake.notified() => {}
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

/// One round of due deliveries; returns how many were attempted.
async fn deliver_due(
    pool: &Pool,
    clients: &HashMap<String, Client>,
    ingest: &Ingest,
    lease: Duration,
) -> Result<usize, DbError> {
    let due = {
        let conn = pool.get().await?;
        conn.client.query(CLAIM, &[&lease.as_secs_f64()]).await?
    };
    let n = due.len();
    for row in due {
        let id: i64 = row.get(0);
        let name: String = row.get(1);
        let payload: Value = row.get(2);
        let attempts: i32 = row.get(3);
        let alert_id: uuid::Uuid = row.get(4);
        let outcome = match clients.get(&name) {
            None => Err((false, "webhook no longer configured".to_owned())),
            Some(c) => post(c, id, &payload).await.map_err(|e| (true, e)),
        };
        let conn = pool.get().await?;
        match outcome {
            Ok(()) => {
                conn.client
                    .execute(
                        "UPDATE webhook_outbox SET delivered_at = now(), last_error = NULL WHERE id = $1",
                        &[&id],
                    )
                    .await?;
                tracing::info!(webhook = %name, delivery = id, attempts, "webhook delivered");
            }
            Err((retry, error)) => {
                let max = clients.get(&name).map_or(0, |c| c.hook.max_attempts);
                let give_up = !retry || u32::try_from(attempts).unwrap_or(u32::MAX) >= max;
                if give_up {
                    conn.client
                        .execute(
                            "UPDATE webhook_outbox SET failed_at = now(), last_error = $2 WHERE id = $1",
                            &[&id, &error],
                        )
                        .await?;
                    tracing::error!(webhook = %name, delivery = id, attempts, error = %error, "webhook delivery failed for good");
                    let e = local_event(
                        &ingest_id(ingest),
                        EventType::WebhookFailed,
                        Severity::Error,
                    )
                    .correlation(alert_id)
                    .data("webhook", name.clone())
                    .data("delivery", id)
                    .data("attempts", attempts)
                    .data("error", error);
                    ingest.submit_local(vec![e]).await;
                } else {
                    let delay = retry_delay(attempts);
                    conn.client
                        .execute(
                            "UPDATE webhook_outbox SET next_attempt_at = now() + make_interval(secs => $2), last_error = $3 WHERE id = $1",
                            &[&id, &delay.as_secs_f64(), &error],
                        )
                        .await?;
                    tracing::warn!(webhook = %name, delivery = id, attempts, error = %error, retry_in_s = delay.as_secs(), "webhook delivery failed; will retry");
                }
            }
        }
    }
    Ok(n)
}

fn ingest_id(ingest: &Ingest) -> String {
    ingest.collector_id().to_owned()
}

async fn post(c: &Client, id: i64, payload: &Value) -> Result<(), String> {
    let body = payload.to_string();
    let mut req = c
        .http
        .post(&c.hook.url)
        .header("content-type", "application/json")
        .header(
            "user-agent",
            concat!("linesentry-collector/", env!("CARGO_PKG_VERSION")),
        )
        .header("x-linesentry-event", "alert.raised")
        .header("x-linesentry-delivery", id.to_string());
    if let Some(secret) = &c.hook.secret {
        let mac = hmac_sha256(secret.expose().as_bytes(), body.as_bytes());
        req = req.header("x-linesentry-signature", format!("sha256={}", hex(&mac)));
    }
    let resp = req.body(body).send().await.map_err(|e| e.to_string())?;
    if resp.status().is_success() {
        Ok(())
    } else {
        Err(format!("HTTP {}", resp.status().as_u16()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_matches_rfc_4231_test_case_2() {
        let mac = hmac_sha256(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(
            hex(&mac),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn retries_back_off_to_ten_minutes() {
        assert_eq!(retry_delay(1), Duration::from_secs(1));
        assert_eq!(retry_delay(4), Duration::from_secs(8));
        assert_eq!(retry_delay(30), Duration::from_secs(600));
    }
}
