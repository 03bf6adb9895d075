//! A small ingest endpoint for the HTTPS sink's tests, on a real loopback socket.
//!
//! It does what a collector must: gunzips the body, checks the signature of every batch
//! independently of the crate (its own canonical JSON, SHA-256 and Ed25519 over the raw
//! received JSON, following the documented format), and stores events by id. It can be told
//! to misbehave ([`Mode`]), to require a bearer token or a client certificate, to refuse
//! batches above an event count or a size, and it rejects every batch holding an event with
//! `event_data.poison` (naming the culprits or not).
//!
//! Misbehaviour that is not HTTP (garbage, cut connections) happens right after the TLS
//! handshake, so every answer closes its connection (`Connection: close`): each request
//! arrives on a new connection and sees the mode current when it arrives.

#![allow(dead_code, unreachable_pub)]

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Read as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use ed25519_dalek::{Signature, Verifier, VerifyingKey};
use linesentry_agent::forward::tls::TlsSettings;
use linesentry_event::integrity::Envelope;
use linesentry_event::SecurityEvent;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_util::either::Either;

pub use linesentry_testkit::pki::Pki;

/// What a gateway trusting the CA of `pki` uses, with or without the client certificate.
pub fn client_tls(pki: &Pki, with_client_cert: bool) -> TlsSettings {
    TlsSettings {
        ca_file: Some(pki.ca()),
        client_cert: with_client_cert.then(|| pki.client_cert()),
        client_key: with_client_cert.then(|| pki.client_key()),
    }
}

fn server_config(pki: &Pki, require_client_cert: bool) -> ServerConfig {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let read_certs = |file: &str| -> Vec<CertificateDer<'static>> {
        linesentry_common::pem::read_certs(&pki.path(file)).expect("PEM certificates")
    };
    let key: PrivateKeyDer<'static> =
        linesentry_common::pem::read_key(&pki.path("server.key")).expect("PEM key");
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("protocol versions");
    let builder = if require_client_cert {
        let mut roots = RootCertStore::empty();
        for c in read_certs("ca.pem") {
            roots.add(c).expect("CA certificate");
        }
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .expect("client verifier");
        builder.with_client_cert_verifier(verifier)
    } else {
        builder.with_no_client_auth()
    };
    let mut config = builder
        .with_single_cert(read_certs("server.pem"), key)
        .expect("server certificate");
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config
}

/// How the next requests are answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// Check, store, 200 (or 400 / 413 as the batch deserves).
    Normal,
    /// Answer this status (with `Retry-After` when given), storing nothing.
    Status(u16, Option<String>),
    /// Answer after this long (longer than the client's timeout).
    Stall(Duration),
    /// Bytes that are not HTTP, then close.
    Garbage,
    /// Read the request and close without a word.
    Cut,
    /// A 200 status line and a body cut short.
    CutMidAnswer,
}

/// What the endpoint is told to do.
#[derive(Debug, Clone)]
pub struct Control {
    pub mode: Mode,
    /// Accept this many more batches, then answer with this status (and stay in that mode).
    pub fail_after: Option<(usize, u16)>,
    /// Bearer token required (401 otherwise).
    pub token: Option<String>,
    /// 413 for a batch of more events than this.
    pub max_events: Option<usize>,
    /// 413 for a batch larger than this, decompressed.
    pub max_bytes: Option<usize>,
    /// A batch with poison events is refused with a list naming them (else without).
    pub name_culprits: bool,
}

impl Default for Control {
    fn default() -> Self {
        Self {
            mode: Mode::Normal,
            fail_after: None,
            token: None,
            max_events: None,
            max_bytes: None,
            name_culprits: true,
        }
    }
}

/// One request as the endpoint saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub at: Instant,
    pub status: u16,
    pub events: usize,
}

#[derive(Debug, Default)]
pub struct Log {
    /// Stored events by id.
    pub events: BTreeMap<String, SecurityEvent>,
    /// Requests that reached HTTP, in arrival order.
    pub requests: Vec<Seen>,
    /// Bodies that were not gzip, not JSON, not an envelope, or without the right headers.
    pub protocol_errors: Vec<String>,
    /// Batches whose signature did not verify (independent check).
    pub bad_signatures: Vec<String>,
    /// Connections dropped in the TLS handshake (missing or untrusted client certificate).
    pub handshake_failures: u64,
    /// Connections answered by a non-HTTP mode.
    pub misbehaved: u64,
}

struct Shared {
    control: Control,
    log: Log,
    public_key: VerifyingKey,
}

type Io = Either<tokio_rustls::server::TlsStream<TcpStream>, TcpStream>;

/// A running endpoint; stopped on drop.
pub struct Collector {
    pub url: String,
    shared: Arc<Mutex<Shared>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Collector {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Collector {
    /// HTTPS with `pki`'s server certificate; requires a client certificate when told.
    pub async fn start(pki: &Pki, public_key: VerifyingKey, require_client_cert: bool) -> Self {
        let acceptor = TlsAcceptor::from(Arc::new(server_config(pki, require_client_cert)));
        Self::start_with(Some(acceptor), public_key).await
    }

    /// Plain HTTP (the sink allows it to loopback only).
    pub async fn start_plain(public_key: VerifyingKey) -> Self {
        Self::start_with(None, public_key).await
    }

    async fn start_with(acceptor: Option<TlsAcceptor>, public_key: VerifyingKey) -> Self {
        let tcp = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let addr = tcp.local_addr().expect("local address");
        let scheme = if acceptor.is_some() { "https" } else { "http" };
        let shared = Arc::new(Mutex::new(Shared {
            control: Control::default(),
            log: Log::default(),
            public_key,
        }));
        let (tx, rx) = mpsc::channel(64);
        let accept = tokio::spawn(accept_loop(tcp, acceptor, shared.clone(), tx));
        let router = axum::Router::new()
            .route("/api/v1/ingest", axum::routing::post(ingest))
            .with_state(shared.clone());
        let serve = tokio::spawn(async move {
            let _ = axum::serve(Incoming { addr, rx }, router).await;
        });
        Self {
            url: format!("{scheme}://{addr}/api/v1/ingest"),
            shared,
            tasks: vec![accept, serve],
        }
    }

    fn lock(&self) -> MutexGuard<'_, Shared> {
        self.shared
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn set(&self, change: impl FnOnce(&mut Control)) {
        change(&mut self.lock().control);
    }

    /// Reads the log.
    pub fn log<T>(&self, read: impl FnOnce(&Log) -> T) -> T {
        read(&self.lock().log)
    }

    /// Stored events in seq order.
    pub fn events(&self) -> Vec<SecurityEvent> {
        let mut events: Vec<SecurityEvent> = self.log(|l| l.events.values().cloned().collect());
        events.sort_by_key(|e| e.seq);
        events
    }

    /// Answer statuses of the requests so far, in order.
    pub fn statuses(&self) -> Vec<u16> {
        self.log(|l| l.requests.iter().map(|r| r.status).collect())
    }

    /// Polls until `done` holds; panics with `what` after `within`.
    pub async fn wait_until(&self, what: &str, within: Duration, done: impl Fn(&Log) -> bool) {
        linesentry_testkit::wait_until_async(within, async || self.log(&done).then_some(()))
            .await
            .unwrap_or_else(|| {
                panic!(
                    "not within {within:?}: {what}; statuses {:?}, {} events stored",
                    self.statuses(),
                    self.log(|l| l.events.len())
                )
            });
    }

    /// The checks every test makes: the sink spoke the protocol and signed every batch.
    pub fn assert_clean(&self) {
        self.log(|l| {
            assert!(
                l.protocol_errors.is_empty(),
                "protocol errors: {:?}",
                l.protocol_errors
            );
            assert!(
                l.bad_signatures.is_empty(),
                "bad signatures: {:?}",
                l.bad_signatures
            );
        });
    }
}

/// Hands handshaken connections to axum.
struct Incoming {
    addr: SocketAddr,
    rx: mpsc::Receiver<Io>,
}

impl axum::serve::Listener for Incoming {
    type Io = Io;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.rx.recv().await {
            Some(io) => (io, self.addr),
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.addr)
    }
}

async fn accept_loop(
    tcp: TcpListener,
    acceptor: Option<TlsAcceptor>,
    shared: Arc<Mutex<Shared>>,
    tx: mpsc::Sender<Io>,
) {
    loop {
        let Ok((stream, _)) = tcp.accept().await else {
            // A failed accept (e.g. out of descriptors): pause instead of spinning.
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let acceptor = acceptor.clone();
        let shared = shared.clone();
        let tx = tx.clone();
        tokio::spawn(async move {
            let io = match acceptor {
                None => Either::Right(stream),
                Some(acceptor) => {
                    let Ok(tls) = acceptor.accept(stream).await else {
                        lock(&shared).log.handshake_failures += 1;
                        return;
                    };
                    Either::Left(tls)
                }
            };
            let mode = lock(&shared).control.mode.clone();
            match mode {
                Mode::Garbage | Mode::Cut | Mode::CutMidAnswer => {
                    lock(&shared).log.misbehaved += 1;
                    misbehave(io, &mode).await;
                }
                _ => {
                    let _ = tx.send(io).await;
                }
            }
        });
    }
}

fn lock(shared: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    shared
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Reads the request head (a second at most), then answers as `mode` says and closes.
async fn misbehave(mut io: Io, mode: &Mode) {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match tokio::time::timeout_at(deadline, io.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => head.extend_from_slice(&buf[..n]),
            _ => break,
        }
    }
    let answer: &[u8] = match mode {
        Mode::Garbage => b"SSH-2.0-OpenSSH_9.6 this is not HTTP\r\n\r\n\x00\x01\x02",
        Mode::CutMidAnswer => {
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 400\r\n\r\n{\"accepted\":"
        }
        _ => b"",
    };
    let _ = io.write_all(answer).await;
    let _ = io.flush().await;
    let _ = io.shutdown().await;
}

fn answer(status: u16, body: &Value) -> Response {
    let status = StatusCode::from_u16(status).expect("a valid status");
    (
        status,
        [
            (header::CONNECTION, "close"),
            (header::CONTENT_TYPE, "application/json"),
        ],
        body.to_string(),
    )
        .into_response()
}

async fn ingest(
    State(shared): State<Arc<Mutex<Shared>>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (control, key) = {
        let s = lock(&shared);
        (s.control.clone(), s.public_key)
    };
    let (status, response, events) = judge(&control, &key, &headers, &body, &shared);
    if let Mode::Stall(d) = control.mode {
        // The scripted stall: the answer comes this much later.
        tokio::time::sleep(d).await;
    }
    let mut s = lock(&shared);
    s.log.requests.push(Seen {
        at: Instant::now(),
        status,
        events: events.len(),
    });
    if (200..300).contains(&status) {
        for e in events {
            s.log.events.insert(e.id.to_string(), e);
        }
        if let Some((left, fail)) = &mut s.control.fail_after {
            if *left <= 1 {
                s.control.mode = Mode::Status(*fail, None);
                s.control.fail_after = None;
            } else {
                *left -= 1;
            }
        }
    }
    response
}

/// The answer for one request, and the events to store if it is a 2xx.
fn judge(
    control: &Control,
    key: &VerifyingKey,
    headers: &HeaderMap,
    body: &[u8],
    shared: &Mutex<Shared>,
) -> (u16, Response, Vec<SecurityEvent>) {
    let refuse = |status: u16, error: &str, reason: String| {
        (
            status,
            answer(status, &json!({"error": error, "reason": reason})),
            Vec::new(),
        )
    };
    let protocol = |reason: String| {
        lock(shared).log.protocol_errors.push(reason.clone());
        refuse(400, "malformed", reason)
    };
    if let Some(token) = &control.token {
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        if presented != Some(format!("Bearer {token}").as_str()) {
            return refuse(
                401,
                "unauthorized",
                "a valid bearer token is required".into(),
            );
        }
    }
    if let Mode::Status(status, retry_after) = &control.mode {
        let mut response = answer(*status, &json!({"error": "test", "reason": "told to fail"}));
        if let Some(v) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, v.parse().expect("header value"));
        }
        return (*status, response, Vec::new());
    }
    let header_is =
        |name, want: &str| headers.get(name).and_then(|v| v.to_str().ok()) == Some(want);
    if !header_is(header::CONTENT_ENCODING, "gzip")
        || !header_is(header::CONTENT_TYPE, "application/json")
    {
        return protocol(format!("headers: {headers:?}"));
    }
    let mut json_bytes = Vec::new();
    if let Err(e) = flate2::read::GzDecoder::new(body).read_to_end(&mut json_bytes) {
        return protocol(format!("not gzip: {e}"));
    }
    if control.max_bytes.is_some_and(|max| json_bytes.len() > max) {
        return refuse(
            413,
            "too_large",
            format!("batch of {} bytes", json_bytes.len()),
        );
    }
    let raw: Value = match serde_json::from_slice(&json_bytes) {
        Ok(v) => v,
        Err(e) => return protocol(format!("not JSON: {e}")),
    };
    if let Err(why) = verify_independently(&raw, key) {
        lock(shared).log.bad_signatures.push(why.clone());
        return refuse(400, "bad_signature", why);
    }
    let envelope = match Envelope::parse(&json_bytes) {
        Ok(env) => env,
        Err(e) => return protocol(format!("not an envelope: {e}")),
    };
    let events = envelope.events;
    if control.max_events.is_some_and(|max| events.len() > max) {
        return refuse(413, "too_many_events", format!("{} events", events.len()));
    }
    let poison: Vec<Value> = events
        .iter()
        .enumerate()
        .filter(|(_, e)| e.event_data.contains_key("poison"))
        .map(|(index, e)| json!({"index": index, "id": e.id.to_string(), "seq": e.seq, "reason": "poisoned on purpose"}))
        .collect();
    if !poison.is_empty() {
        let mut body = json!({"error": "invalid_events", "reason": format!("{} invalid event(s)", poison.len())});
        if control.name_culprits {
            body["events"] = Value::Array(poison);
        }
        return (400, answer(400, &body), Vec::new());
    }
    let n = events.len();
    (
        200,
        answer(200, &json!({"accepted": n, "duplicates": 0})),
        events,
    )
}

/// The documented batch signature, checked without the crate's code: canonical JSON (keys
/// sorted by bytes at every depth, no whitespace) of each event as received, SHA-256, the
/// signing text `linesentry-batch-v1\n{gateway_id}\n{key_id}\n` + one hex hash per line,
/// Ed25519; `key_id` is the first 16 hex digits of SHA-256 over the public key.
fn verify_independently(raw: &Value, key: &VerifyingKey) -> Result<(), String> {
    let field = |name: &str| {
        raw.get(name)
            .and_then(Value::as_str)
            .ok_or_else(|| format!("envelope without `{name}`"))
    };
    let gateway_id = field("gateway_id")?;
    let key_id = field("key_id")?;
    let expected_key_id = hex_of(&Sha256::digest(key.as_bytes())[..8]);
    if key_id != expected_key_id {
        return Err(format!("key_id {key_id}, expected {expected_key_id}"));
    }
    let mut message = format!("linesentry-batch-v1\n{gateway_id}\n{key_id}\n");
    for event in raw
        .get("events")
        .and_then(Value::as_array)
        .ok_or("no events array")?
    {
        let mut canonical = String::new();
        canonical_json(&mut canonical, event);
        let hash = hex_of(&Sha256::digest(canonical.as_bytes()));
        message.push_str(&hash);
        message.push('\n');
    }
    let signature = base64::Engine::decode(
        &base64::engine::general_purpose::STANDARD,
        field("signature")?,
    )
    .map_err(|e| format!("signature not base64: {e}"))?;
    let signature = Signature::from_slice(&signature).map_err(|e| format!("signature: {e}"))?;
    key.verify(message.as_bytes(), &signature)
        .map_err(|_| "signature does not verify".to_owned())
}

fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn canonical_json(out: &mut String, value: &Value) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&serde_json::to_string(k).expect("string"));
                out.push(':');
                canonical_json(out, &map[k]);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical_json(out, item);
            }
            out.push(']');
        }
        other => out.push_str(&serde_json::to_string(other).expect("scalar")),
    }
}
