//! The HTTPS sink: signed batches POSTed to the collector's ingest endpoint.
//!
//! **Request.** One [`BatchSigner`] envelope per request, at most `batch_events` events.
//! A larger forwarder batch becomes several requests, sent one after the other in seq
//! order; the first one not delivered ends `send`, and its error lists the seqs of the
//! requests before it as delivered. Each request is
//! `POST {url}` with `Content-Type: application/json`, `Content-Encoding: gzip`, and
//! `Authorization: Bearer <token>` when a token is configured (mutual TLS comes from the
//! client certificate in `[forward.https.tls]`). Redirects are not followed. Every request
//! has `timeout` for connecting, sending and reading the whole answer.
//!
//! **Answers.** A 2xx means the collector has committed every event of the request. Any
//! other answer means it committed none of them. The sink maps answers as follows (the
//! forwarder retries transient failures with backoff and splits rejected batches):
//!
//! | answer                                              | result                        |
//! |-----------------------------------------------------|-------------------------------|
//! | 2xx, answer read to its end                         | delivered                     |
//! | 400, 409, 413, 422                                  | rejected (see below)          |
//! | 401, 403; or 4xx with an identity `error` (below)   | transient: our credentials    |
//! | 408, 429, 5xx                                       | transient, `Retry-After` kept |
//! | other 3xx / 4xx (404, 405, 415, ...)                | transient: endpoint refuses   |
//! | connect, TLS, timeout, cut connection, not HTTP     | transient                     |
//!
//! Credentials and endpoint problems are transient on purpose: they are the same for every
//! batch, so treating them as poison would move the whole queue to the dead-letter table.
//! `Retry-After` (seconds or an HTTP date) on a transient answer delays the next request,
//! up to [`RETRY_AFTER_CAP`].
//!
//! **Rejection body.** A 4xx answer may carry a JSON body naming the offending events:
//!
//! ```json
//! {"error": "invalid_events", "reason": "2 invalid event(s), first: ...",
//!  "events": [{"index": 3, "id": "0190...", "seq": 1042, "reason": "timestamp in the future"}]}
//! ```
//!
//! `index` is the 0-based position in the request's `events` array; `id` the event id;
//! `seq` its seq. Any one of them identifies an event (tried in the order id, seq, index);
//! `rejected` is accepted as another name for `events`. The named events become the
//! rejection's culprits, which the forwarder dead-letters at once; without a usable list the
//! forwarder splits the batch to find them. A 413 for several events names none (the
//! forwarder splits until the parts fit); a 413 for a single event names that event. An
//! `error` of `unknown_gateway`, `gateway_disabled`, `gateway_mismatch`, `unknown_key`,
//! `revoked_key`, `unauthorized` or `forbidden` is an identity problem, hence transient,
//! whatever the status. The reason quoted in errors and dead letters is the status and the
//! body's `error` and `reason` (or the start of a non-JSON body), stripped of control
//! characters and cut to a few hundred characters.

use std::fmt::Write as _;
use std::io::Write as _;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{HeaderValue, AUTHORIZATION, CONTENT_ENCODING, CONTENT_TYPE, RETRY_AFTER};
use reqwest::{Client, Url};
use rustls::{ClientConfig, RootCertStore};
use serde_json::Value;
use tokio::time::Instant;

use super::tls::TlsSettings;
use super::tls::{self, TlsError};
use super::{SendFuture, Sink, SinkError};
use linesentry_common::Secret;
use linesentry_event::integrity::BatchSigner;
use linesentry_event::SecurityEvent;

const NAME: &str = "https";

/// The validated `[forward.https]` section.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpsSettings {
    pub url: String,
    pub tls: Option<TlsSettings>,
    pub bearer_token: Option<Secret>,
    pub batch_events: usize,
    pub timeout: Duration,
}

/// Longest wait a `Retry-After` header can impose before the next request.
pub const RETRY_AFTER_CAP: Duration = Duration::from_secs(60);

/// Bytes of an answer kept for the reason text and the culprit list.
const ANSWER_KEEP: usize = 64 << 10;
/// Bytes of an answer read at most; the rest is not waited for.
const ANSWER_READ_MAX: usize = 1 << 20;
/// Characters of an answer quoted in a reason.
const QUOTE_MAX: usize = 300;

/// `error` values of a 4xx body that mean "who you are", not "what you sent".
const IDENTITY_ERRORS: &[&str] = &[
    "unknown_gateway",
    "gateway_disabled",
    "gateway_mismatch",
    "unknown_key",
    "revoked_key",
    "unauthorized",
    "forbidden",
];

/// Why the sink cannot be built (bad configuration or TLS files).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HttpsError {
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("url `{url}`: {reason}")]
    Url { url: String, reason: String },
    #[error("bearer token: {0}")]
    Token(&'static str),
    #[error("HTTP client: {0}")]
    Client(String),
}

/// Live counters of the HTTPS sink.
#[derive(Debug, Default)]
pub struct HttpsStats {
    /// Requests sent (answered or not).
    pub requests: AtomicU64,
    /// Requests answered 2xx, and the events they carried.
    pub delivered_requests: AtomicU64,
    pub delivered_events: AtomicU64,
    /// Gzipped body bytes of all requests sent.
    pub bytes_sent: AtomicU64,
    /// No usable answer: connect, TLS, timeout, cut connection, not HTTP.
    pub transport_failures: AtomicU64,
    /// 5xx, 408, 429.
    pub server_failures: AtomicU64,
    /// 401, 403 and identity refusals.
    pub auth_failures: AtomicU64,
    /// Redirects and 4xx that refuse the endpoint rather than the events (404, 415, ...).
    pub endpoint_failures: AtomicU64,
    /// 4xx that reject the events of a request.
    pub rejections: AtomicU64,
    /// Status of the last answer (0: none yet).
    pub last_status: AtomicU16,
}

/// Why a request failed in a way worth retrying; decides the counter and the log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    Transport,
    Server,
    Auth,
    Endpoint,
}

/// What an answer means for the events of its request.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Verdict {
    Delivered,
    Retry {
        failure: Failure,
        reason: String,
        retry_after: Option<Duration>,
    },
    Reject {
        reason: String,
        culprits: Vec<u64>,
    },
}

/// Sends batches to the collector over HTTPS; see the module doc for the protocol.
#[derive(Debug)]
pub struct HttpsSink {
    url: Url,
    client: Client,
    authorization: Option<HeaderValue>,
    settings: HttpsSettings,
    signer: BatchSigner,
    stats: Arc<HttpsStats>,
    /// No request before this (a `Retry-After`).
    not_before: Option<Instant>,
    /// The failure of the previous request, to log a change once instead of every retry.
    failing: Option<Failure>,
}

impl HttpsSink {
    /// Checks the URL and reads the TLS files now, so that a bad path or certificate is an
    /// error at start-up, not at the first send.
    pub fn new(settings: HttpsSettings, signer: BatchSigner) -> Result<Self, HttpsError> {
        let url = check_url(&settings.url)?;
        let tls = match &settings.tls {
            Some(t) => Arc::unwrap_or_clone(tls::client_config(t)?),
            None if url.scheme() == "https" => {
                Arc::unwrap_or_clone(tls::client_config(&TlsSettings {
                    ca_file: None,
                    client_cert: None,
                    client_key: None,
                })?)
            }
            // Plain http to loopback: TLS is never used; trust nothing rather than read the
            // system roots (or make reqwest look for a platform verifier).
            None => {
                tls::install_provider();
                ClientConfig::builder()
                    .with_root_certificates(RootCertStore::empty())
                    .with_no_client_auth()
            }
        };
        let authorization = settings
            .bearer_token
            .as_ref()
            .map(|token| {
                let mut value = HeaderValue::from_str(&format!("Bearer {}", token.expose()))
                    .map_err(|_| {
                        HttpsError::Token("holds characters not allowed in an HTTP header")
                    })?;
                value.set_sensitive(true);
                Ok::<_, HttpsError>(value)
            })
            .transpose()?;
        let client = Client::builder()
            .tls_backend_preconfigured(tls)
            .connect_timeout(settings.timeout)
            .timeout(settings.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("linesentry/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| HttpsError::Client(describe(&e)))?;
        Ok(Self {
            url,
            client,
            authorization,
            settings,
            signer,
            stats: Arc::new(HttpsStats::default()),
            not_before: None,
            failing: None,
        })
    }

    pub fn stats(&self) -> Arc<HttpsStats> {
        self.stats.clone()
    }

    /// Sends `batch` as consecutive requests; stops at the first one not delivered.
    async fn send_batch(&mut self, batch: &[SecurityEvent]) -> Result<(), SinkError> {
        let mut delivered: Vec<u64> = Vec::new();
        for chunk in batch.chunks(self.settings.batch_events.max(1)) {
            match self.post(chunk).await {
                Verdict::Delivered => delivered.extend(chunk.iter().map(|e| e.seq)),
                Verdict::Retry { reason, .. } => {
                    return Err(SinkError::Transient {
                        sink: NAME,
                        reason,
                        delivered,
                    })
                }
                Verdict::Reject { reason, culprits } => {
                    return Err(SinkError::Rejected {
                        sink: NAME,
                        reason,
                        culprits,
                        delivered,
                    })
                }
            }
        }
        Ok(())
    }

    /// One request for `chunk`, judged; counts and logs what happened.
    async fn post(&mut self, chunk: &[SecurityEvent]) -> Verdict {
        if let Some(at) = self.not_before.take() {
            tokio::time::sleep_until(at).await;
        }
        let verdict = self.exchange(chunk).await;
        self.account(chunk, &verdict);
        verdict
    }

    async fn exchange(&self, chunk: &[SecurityEvent]) -> Verdict {
        let transport = |reason: String| Verdict::Retry {
            failure: Failure::Transport,
            reason,
            retry_after: None,
        };
        let body = match gzip(&self.signer.seal(chunk)) {
            Ok(b) => b,
            Err(e) => return transport(format!("cannot compress the batch: {e}")),
        };
        self.stats.requests.fetch_add(1, Ordering::Relaxed);
        self.stats
            .bytes_sent
            .fetch_add(body.len() as u64, Ordering::Relaxed);
        let mut request = self
            .client
            .post(self.url.clone())
            .header(CONTENT_TYPE, "application/json")
            .header(CONTENT_ENCODING, "gzip")
            .body(body);
        if let Some(auth) = &self.authorization {
            request = request.header(AUTHORIZATION, auth.clone());
        }
        let mut response = match request.send().await {
            Ok(r) => r,
            Err(e) => return transport(self.transport_reason(&e, None)),
        };
        let status = response.status().as_u16();
        self.stats.last_status.store(status, Ordering::Relaxed);
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        // The whole answer is read: a connection cut before its end is a failed request,
        // even after a 2xx status line (sending again is safe, the collector de-duplicates).
        let mut answer = Vec::new();
        let mut read = 0usize;
        loop {
            match response.chunk().await {
                Ok(Some(bytes)) => {
                    read += bytes.len();
                    let room = ANSWER_KEEP.saturating_sub(answer.len());
                    answer.extend_from_slice(&bytes[..bytes.len().min(room)]);
                    if read > ANSWER_READ_MAX {
                        break;
                    }
                }
                Ok(None) => break,
                Err(e) => return transport(self.transport_reason(&e, Some(status))),
            }
        }
        judge(
            status,
            retry_after.as_deref(),
            &answer,
            chunk,
            chrono::Utc::now(),
        )
    }

    fn transport_reason(&self, e: &reqwest::Error, status: Option<u16>) -> String {
        let what = match status {
            Some(s) => format!("answer (HTTP {s}) cut short"),
            None if e.is_timeout() => {
                format!("no answer within {} ms", self.settings.timeout.as_millis())
            }
            None if e.is_connect() => "cannot connect".to_owned(),
            None => "request failed".to_owned(),
        };
        format!("{} {what}: {}", host_of(&self.url), describe(e))
    }

    fn account(&mut self, chunk: &[SecurityEvent], verdict: &Verdict) {
        let s = &self.stats;
        match verdict {
            Verdict::Delivered => {
                s.delivered_requests.fetch_add(1, Ordering::Relaxed);
                s.delivered_events
                    .fetch_add(chunk.len() as u64, Ordering::Relaxed);
                if let Some(was) = self.failing.take() {
                    tracing::info!(sink = NAME, collector = %host_of(&self.url), after = ?was,
                        "collector accepts batches again");
                }
            }
            Verdict::Retry {
                failure,
                reason,
                retry_after,
            } => {
                let counter = match failure {
                    Failure::Transport => &s.transport_failures,
                    Failure::Server => &s.server_failures,
                    Failure::Auth => &s.auth_failures,
                    Failure::Endpoint => &s.endpoint_failures,
                };
                counter.fetch_add(1, Ordering::Relaxed);
                if let Some(wait) = retry_after {
                    self.not_before = Some(Instant::now() + *wait);
                }
                if self.failing != Some(*failure) {
                    match failure {
                        Failure::Auth => {
                            tracing::warn!(sink = NAME, collector = %host_of(&self.url), %reason,
                                "collector refuses our credentials (forward.https.bearer_token, \
                                 client certificate, or the gateway's key registration); events \
                                 stay buffered and are retried, never dead-lettered");
                        }
                        Failure::Endpoint => {
                            tracing::warn!(sink = NAME, collector = %host_of(&self.url), %reason,
                                "collector refuses requests to this URL (check forward.https.url); \
                                 events stay buffered");
                        }
                        Failure::Transport | Failure::Server => {
                            tracing::debug!(sink = NAME, %reason, "request failed");
                        }
                    }
                }
                self.failing = Some(*failure);
            }
            Verdict::Reject { reason, culprits } => {
                s.rejections.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(sink = NAME, %reason, events = chunk.len(),
                    named = culprits.len(), "collector rejected a request");
            }
        }
    }
}

impl Sink for HttpsSink {
    fn name(&self) -> &'static str {
        NAME
    }

    fn send<'a>(&'a mut self, batch: &'a [SecurityEvent]) -> SendFuture<'a> {
        Box::pin(self.send_batch(batch))
    }
}

/// `https://...`, or `http://` to a loopback host only.
fn check_url(text: &str) -> Result<Url, HttpsError> {
    let bad = |reason: &str| HttpsError::Url {
        url: text.to_owned(),
        reason: reason.to_owned(),
    };
    let url = Url::parse(text).map_err(|e| bad(&e.to_string()))?;
    match url.scheme() {
        "https" => {}
        "http" => {
            let host = url.host_str().unwrap_or_default();
            let loopback = host.eq_ignore_ascii_case("localhost")
                || host
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback());
            if !loopback {
                return Err(bad("plain http is refused for a non-loopback host"));
            }
        }
        _ => return Err(bad("expected an https:// URL")),
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(bad("the URL has no host"));
    }
    Ok(url)
}

fn host_of(url: &Url) -> String {
    match (url.host_str(), url.port_or_known_default()) {
        (Some(h), Some(p)) => format!("{h}:{p}"),
        (Some(h), None) => h.to_owned(),
        _ => url.as_str().to_owned(),
    }
}

/// The causes of a reqwest error (its own text only repeats the URL, which may hold
/// credentials, and the kind, which the caller says), each once.
fn describe(e: &reqwest::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut current = std::error::Error::source(e);
    while let Some(err) = current {
        let text = err.to_string();
        if !text.is_empty() && !parts.last().is_some_and(|p| p.contains(&text)) {
            parts.push(text);
        }
        current = err.source();
    }
    if parts.is_empty() {
        parts.push(reqwest_kind(e).to_owned());
    }
    let mut out = parts.join(": ");
    if out.contains("ertificate") {
        out.push_str(" (check [forward.https.tls]: ca_file, client_cert, client_key)");
    }
    out
}

fn reqwest_kind(e: &reqwest::Error) -> &'static str {
    if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else if e.is_body() {
        "request or answer body failed"
    } else if e.is_decode() {
        "answer could not be decoded"
    } else {
        "HTTP error"
    }
}

fn gzip(bytes: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut encoder = flate2::write::GzEncoder::new(
        Vec::with_capacity(bytes.len() / 4 + 64),
        flate2::Compression::default(),
    );
    encoder.write_all(bytes)?;
    encoder.finish()
}

/// What an answer means; pure, so that every case is tested without a server.
fn judge(
    status: u16,
    retry_after: Option<&str>,
    body: &[u8],
    chunk: &[SecurityEvent],
    now: chrono::DateTime<chrono::Utc>,
) -> Verdict {
    if (200..300).contains(&status) {
        return Verdict::Delivered;
    }
    let answer = Answer::parse(body);
    let reason = answer.reason(status);
    let retry = |failure, retry_after: Option<Duration>| Verdict::Retry {
        failure,
        reason: reason.clone(),
        retry_after,
    };
    let identity = answer
        .error
        .as_deref()
        .is_some_and(|e| IDENTITY_ERRORS.contains(&e));
    match status {
        401 | 403 => retry(Failure::Auth, None),
        400 | 409 | 413 | 422 if identity => retry(Failure::Auth, None),
        400 | 409 | 413 | 422 => {
            let mut culprits = answer.culprits(chunk);
            if culprits.is_empty() && status == 413 && chunk.len() == 1 {
                culprits.push(chunk[0].seq);
            }
            Verdict::Reject {
                reason: if status == 413 && chunk.len() == 1 {
                    format!("{reason} (a single event larger than the collector accepts)")
                } else {
                    reason.clone()
                },
                culprits,
            }
        }
        408 | 429 | 500..=599 => retry(
            Failure::Server,
            retry_after
                .and_then(|v| parse_retry_after(v, now))
                .map(|d| d.min(RETRY_AFTER_CAP)),
        ),
        _ => retry(Failure::Endpoint, None),
    }
}

/// `Retry-After`: delta-seconds or an HTTP date.
fn parse_retry_after(value: &str, now: chrono::DateTime<chrono::Utc>) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let wait = at.with_timezone(&chrono::Utc) - now;
    Some(wait.to_std().unwrap_or(Duration::ZERO))
}

/// What a non-2xx answer's body says.
#[derive(Debug, Default)]
struct Answer {
    error: Option<String>,
    reason: Option<String>,
    /// `events` (or `rejected`) entries.
    named: Vec<Value>,
    /// The start of a body that is not a JSON object.
    text: Option<String>,
}

impl Answer {
    fn parse(body: &[u8]) -> Self {
        match serde_json::from_slice::<Value>(body) {
            Ok(Value::Object(mut map)) => {
                let string = |v: Option<Value>| match v {
                    Some(Value::String(s)) => Some(s),
                    Some(Value::Null) | None => None,
                    Some(other) => Some(other.to_string()),
                };
                let named = match map.remove("events").or_else(|| map.remove("rejected")) {
                    Some(Value::Array(items)) => items,
                    _ => Vec::new(),
                };
                Self {
                    error: string(map.remove("error")),
                    reason: string(map.remove("reason")).or_else(|| string(map.remove("message"))),
                    named,
                    text: None,
                }
            }
            _ => Self {
                text: (!body.is_empty()).then(|| String::from_utf8_lossy(body).into_owned()),
                ..Self::default()
            },
        }
    }

    /// `HTTP 400 Bad Request: invalid_events: ...; event 3 (id ...): ...`, sanitised and cut.
    fn reason(&self, status: u16) -> String {
        let canonical = reqwest::StatusCode::from_u16(status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("");
        let mut out = format!("HTTP {status} {canonical}").trim_end().to_owned();
        let said: Vec<&str> = [&self.error, &self.reason, &self.text]
            .into_iter()
            .filter_map(Option::as_deref)
            .collect();
        if !said.is_empty() {
            out.push_str(": ");
            out.push_str(&said.join(": "));
        }
        for item in self.named.iter().take(3) {
            let Some(Value::String(why)) = item.get("reason") else {
                continue;
            };
            let which = match (item.get("id"), item.get("seq"), item.get("index")) {
                (Some(Value::String(id)), _, _) => format!("event {id}"),
                (_, Some(seq), _) if seq.is_u64() => format!("event seq {seq}"),
                (_, _, Some(index)) if index.is_u64() => format!("event index {index}"),
                _ => "event".to_owned(),
            };
            let _ = write!(out, "; {which}: {why}");
        }
        sanitise(&out, QUOTE_MAX)
    }

    /// Seqs of the named events that are in `chunk` (by id, else seq, else index).
    fn culprits(&self, chunk: &[SecurityEvent]) -> Vec<u64> {
        let mut out: Vec<u64> = Vec::new();
        for item in &self.named {
            let by_id = item
                .get("id")
                .and_then(Value::as_str)
                .and_then(|id| chunk.iter().find(|e| e.id.to_string() == id));
            let by_seq = || {
                item.get("seq")
                    .and_then(Value::as_u64)
                    .and_then(|seq| chunk.iter().find(|e| e.seq == seq))
            };
            let by_index = || {
                item.get("index")
                    .and_then(Value::as_u64)
                    .and_then(|i| chunk.get(usize::try_from(i).ok()?))
            };
            if let Some(e) = by_id.or_else(by_seq).or_else(by_index) {
                if !out.contains(&e.seq) {
                    out.push(e.seq);
                }
            }
        }
        out
    }
}

/// One line of printable text, at most `max` characters.
fn sanitise(text: &str, max: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max + 3));
    let mut count = 0;
    let mut space = false;
    for c in text.chars() {
        if c.is_whitespace() || c.is_control() {
            space = count > 0;
            continue;
        }
        if count + usize::from(space) >= max {
            out.push('…');
            return out;
        }
        if space {
            out.push(' ');
            count += 1;
            space = false;
        }
        out.push(c);
        count += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use linesentry_event::EventType;

    fn chunk(n: u64) -> Vec<SecurityEvent> {
        (1..=n)
            .map(|seq| {
                let mut e = SecurityEvent::new("gw-1", EventType::SetpointChanged);
                e.seq = 100 + seq;
                e
            })
            .collect()
    }

    fn now() -> chrono::DateTime<chrono::Utc> {
        chrono::DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
            .unwrap()
            .with_timezone(&chrono::Utc)
    }

    fn judged(status: u16, body: &str, events: &[SecurityEvent]) -> Verdict {
        judge(status, None, body.as_bytes(), events, now())
    }

    #[test]
    fn any_2xx_delivers_whatever_the_body_says() {
        let events = chunk(2);
        for status in [200, 201, 202, 204] {
            assert_eq!(judged(status, "nonsense", &events), Verdict::Delivered);
        }
    }

    #[test]
    fn server_errors_timeouts_and_throttling_are_transient() {
        for status in [408, 429, 500, 502, 503, 504] {
            let v = judged(status, "", &chunk(3));
            assert!(
                matches!(
                    v,
                    Verdict::Retry {
                        failure: Failure::Server,
                        ..
                    }
                ),
                "{status}: {v:?}"
            );
        }
    }

    #[test]
    fn credentials_problems_are_transient_and_never_poison() {
        let events = chunk(3);
        for (status, body) in [
            (
                401,
                r#"{"error":"unauthorized","reason":"a bearer token is required"}"#,
            ),
            (403, ""),
            (
                400,
                r#"{"error":"unknown_key","reason":"key `ab` is not registered"}"#,
            ),
            (403, r#"{"error":"unknown_gateway"}"#),
        ] {
            let v = judged(status, body, &events);
            assert!(
                matches!(
                    v,
                    Verdict::Retry {
                        failure: Failure::Auth,
                        ..
                    }
                ),
                "{status} {body}: {v:?}"
            );
        }
    }

    #[test]
    fn endpoint_refusals_are_transient_so_a_wrong_url_dead_letters_nothing() {
        for status in [301, 404, 405, 415, 426] {
            let v = judged(status, "<html>not here</html>", &chunk(2));
            assert!(
                matches!(
                    v,
                    Verdict::Retry {
                        failure: Failure::Endpoint,
                        ..
                    }
                ),
                "{status}: {v:?}"
            );
        }
    }

    #[test]
    fn a_rejection_names_its_culprits_by_id_seq_or_index() {
        let events = chunk(5);
        let body = serde_json::json!({
            "error": "invalid_events",
            "reason": "3 invalid event(s)",
            "events": [
                {"index": 0, "id": events[1].id.to_string(), "seq": null, "reason": "bad"},
                {"index": 9, "seq": events[3].seq, "reason": "worse"},
                {"index": 4, "reason": "worst"},
                {"index": 99, "id": "not-in-this-request"},
            ],
        })
        .to_string();
        let Verdict::Reject { reason, culprits } = judged(400, &body, &events) else {
            panic!("not a rejection");
        };
        assert_eq!(culprits, vec![events[1].seq, events[3].seq, events[4].seq]);
        assert!(
            reason.starts_with("HTTP 400 Bad Request: invalid_events: 3 invalid event(s); event "),
            "{reason}"
        );
        assert!(
            reason.ends_with(&format!(
                "bad; event seq {}: worse; event index 4: worst",
                events[3].seq
            )),
            "{reason}"
        );
    }

    #[test]
    fn rejected_is_accepted_as_the_name_of_the_culprit_list() {
        let events = chunk(3);
        let body = r#"{"error":"bad","rejected":[{"index":2}]}"#;
        let Verdict::Reject { culprits, .. } = judged(422, body, &events) else {
            panic!("not a rejection");
        };
        assert_eq!(culprits, vec![events[2].seq]);
    }

    #[test]
    fn a_rejection_without_a_usable_list_leaves_the_split_to_the_forwarder() {
        let events = chunk(4);
        for body in [
            "",
            "<html>bad request</html>",
            r#"{"error":"x","events":"?"}"#,
        ] {
            let Verdict::Reject { culprits, .. } = judged(400, body, &events) else {
                panic!("not a rejection");
            };
            assert!(culprits.is_empty(), "{body}");
        }
    }

    #[test]
    fn too_large_names_the_event_only_when_it_is_alone() {
        let many = chunk(4);
        let Verdict::Reject { culprits, .. } = judged(413, "", &many) else {
            panic!("not a rejection");
        };
        assert!(culprits.is_empty());
        let one = chunk(1);
        let Verdict::Reject { culprits, reason } = judged(413, "", &one) else {
            panic!("not a rejection");
        };
        assert_eq!(culprits, vec![one[0].seq]);
        assert!(reason.contains("single event"), "{reason}");
    }

    #[test]
    fn quoted_bodies_are_one_short_printable_line() {
        let body = format!("line one\r\n\tline\u{7}two {}", "x".repeat(1000));
        let Verdict::Reject { reason, .. } = judged(400, &body, &chunk(2)) else {
            panic!("not a rejection");
        };
        assert!(
            reason.starts_with("HTTP 400 Bad Request: line one line two xxx"),
            "{reason}"
        );
        assert!(reason.chars().count() <= QUOTE_MAX + 1);
        assert!(!reason.chars().any(char::is_control));
    }

    #[test]
    fn retry_after_takes_seconds_or_a_date_and_is_capped() {
        let events = chunk(1);
        let wait = |value: &str| match judge(503, Some(value), b"", &events, now()) {
            Verdict::Retry { retry_after, .. } => retry_after,
            other => panic!("{other:?}"),
        };
        assert_eq!(wait("7"), Some(Duration::from_secs(7)));
        assert_eq!(
            wait("Thu, 01 Jan 2026 00:00:30 GMT"),
            Some(Duration::from_secs(30))
        );
        assert_eq!(wait("Wed, 31 Dec 2025 23:00:00 GMT"), Some(Duration::ZERO));
        assert_eq!(wait("86400"), Some(RETRY_AFTER_CAP));
        assert_eq!(wait("soon"), None);
    }

    #[test]
    fn only_https_or_loopback_http_urls_are_accepted() {
        for ok in [
            "https://collector.example/api/v1/ingest",
            "http://127.0.0.1:8080/ingest",
            "http://localhost/ingest",
            "http://[::1]:9/x",
        ] {
            assert!(check_url(ok).is_ok(), "{ok}");
        }
        for bad in [
            "http://collector.example/x",
            "ftp://127.0.0.1/",
            "not a url",
        ] {
            assert!(check_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn gzip_round_trips() {
        let text = b"{\"events\":[]}".repeat(100);
        let packed = gzip(&text).unwrap();
        let mut out = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&packed[..]), &mut out)
            .unwrap();
        assert_eq!(out, text);
        assert!(packed.len() < text.len() / 4);
    }
}
