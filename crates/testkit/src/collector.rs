//! Test harness for the collector, over real servers and real sockets.
//!
//! - [`postgres`]: one private PostgreSQL per test binary (initdb'd in a temp dir, loopback
//!   port, `ssl = on`, stopped when the binary exits); [`database`] gives each test its own
//!   database. Each [`Env`]'s PKI directory holds the CA of its certificate as
//!   `postgres-ca.pem`.
//! - [`mosquitto`]: a private Mosquitto per test (or more, for restarts).
//! - [`Pki`]: the test PKI ([`crate::pki`]), re-exported for the collector's tests.
//! - [`Env`]: a running collector (HTTPS with mTLS) on its own database, with helpers to
//!   register gateways, make tokens, post batches and look into the database.

#![allow(dead_code, unreachable_pub)]

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use ed25519_dalek::SigningKey;
use linesentry_collector::config;
use linesentry_collector::{auth, registry, Collector};
use linesentry_common::local::{
    LocalMosquitto, LocalPostgres, MosquittoOptions, MosquittoTls, PostgresOptions, PostgresTls,
};
use linesentry_event::integrity::{event_hash, hex, BatchSigner, EventHash};
use linesentry_event::{EventType, SecurityEvent, Severity, Timestamp};
use serde_json::Value;

pub use crate::pki::Pki;

/// The private PostgreSQL of this test binary, with `ssl = on` (a certificate for
/// 127.0.0.1 only, from a CA of its own: [`postgres_ca_pem`]). Clients may still connect
/// without TLS, as the test helpers do.
pub fn postgres() -> &'static LocalPostgres {
    &postgres_and_ca().0
}

/// The CA (PEM) that signed the test PostgreSQL's certificate.
pub fn postgres_ca_pem() -> &'static str {
    &postgres_and_ca().1
}

fn postgres_and_ca() -> &'static (LocalPostgres, String) {
    static PG: OnceLock<(LocalPostgres, String)> = OnceLock::new();
    PG.get_or_init(|| {
        // The files go into the cluster's own directory; this PKI's directory is removed.
        let pki = Pki::new();
        let (cert_pem, key_pem) = pki.issue(&["127.0.0.1"], false);
        let options = PostgresOptions {
            tls: Some(PostgresTls { cert_pem, key_pem }),
            ..PostgresOptions::default()
        };
        let pg = LocalPostgres::start(&options)
            .unwrap_or_else(|e| panic!("cannot start a private PostgreSQL for the tests: {e}"));
        (pg, pki.ca_pem.clone())
    })
}

/// A fresh, empty database; returns its URL.
pub async fn database() -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let name = format!(
        "t{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    );
    let pg = postgres();
    linesentry_collector::db::create_database(&pg.url("postgres"), &name)
        .await
        .expect("create database");
    pg.url(&name)
}

/// A private Mosquitto with an anonymous loopback listener.
pub fn mosquitto() -> LocalMosquitto {
    LocalMosquitto::start(&MosquittoOptions::default())
        .unwrap_or_else(|e| panic!("cannot start a private Mosquitto for the tests: {e}"))
}

/// A private Mosquitto with a plain listener and a TLS listener (server certificate of
/// `pki`, no client certificate required) on its `tls_port()`.
pub fn mosquitto_tls(pki: &Pki) -> LocalMosquitto {
    let (cert_pem, key_pem) = pki.issue(&["127.0.0.1", "localhost"], false);
    let options = MosquittoOptions {
        tls: Some(MosquittoTls {
            ca_pem: pki.ca_pem.clone(),
            cert_pem,
            key_pem,
            require_certificate: false,
        }),
        ..MosquittoOptions::default()
    };
    LocalMosquitto::start(&options)
        .unwrap_or_else(|e| panic!("cannot start a private Mosquitto with TLS: {e}"))
}

/// A connected client for assertions.
pub async fn sql(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect to the test database");
    tokio::spawn(conn);
    client
}

/// How to start a collector.
#[derive(Clone)]
pub struct EnvOptions {
    /// MQTT broker port; None: no MQTT ingest.
    pub mqtt_port: Option<u16>,
    pub mqtt_client_id: String,
    pub share_group: Option<String>,
    pub gap_after_s: u64,
    pub workers: usize,
    pub max_body_bytes: usize,
    /// More TOML, appended.
    pub extra: String,
    /// Reuse this database instead of a fresh one.
    pub database: Option<String>,
    /// Connect to the MQTT port over TLS, trusting this CA (instead of plain).
    pub mqtt_ca: Option<PathBuf>,
    /// More keys of the `[database]` table (sslmode, ca_file, ...).
    pub database_toml: String,
    /// `mqtt.protocol` ("3.1.1" or "5"); None: the default.
    pub mqtt_protocol: Option<&'static str>,
    /// With MQTT: `start` returns once the broker granted the subscriptions, so what a
    /// test publishes next reaches the collector. False for a collector that must not
    /// get a session.
    pub wait_subscribed: bool,
}

impl Default for EnvOptions {
    fn default() -> Self {
        Self {
            mqtt_port: None,
            mqtt_client_id: "collector-test".into(),
            share_group: None,
            gap_after_s: 300,
            workers: 2,
            max_body_bytes: 1024 * 1024,
            extra: String::new(),
            database: None,
            mqtt_ca: None,
            database_toml: String::new(),
            mqtt_protocol: None,
            wait_subscribed: true,
        }
    }
}

/// A running collector and what a test needs around it.
pub struct Env {
    pub collector: Option<Collector>,
    pub db_url: String,
    pub base: String,
    pub http: reqwest::Client,
    pub pki: Pki,
    pub options: EnvOptions,
    pub settings: config::Settings,
}

pub fn install_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

impl Env {
    pub async fn start(options: EnvOptions) -> Self {
        install_crypto();
        let db_url = match &options.database {
            Some(u) => u.clone(),
            None => database().await,
        };
        let pki = Pki::new();
        std::fs::write(pki.path("postgres-ca.pem"), postgres_ca_pem()).expect("write");
        let settings = Self::settings(&options, &db_url, &pki);
        let collector = Collector::start(settings.clone())
            .await
            .unwrap_or_else(|e| panic!("collector did not start: {e}"));
        if options.mqtt_port.is_some() && options.wait_subscribed {
            crate::wait_until_async(Duration::from_secs(30), async || {
                collector.mqtt_subscribed().then_some(())
            })
            .await
            .unwrap_or_else(|| panic!("the collector did not subscribe within 30 s"));
        }
        let base = format!("https://127.0.0.1:{}", collector.http_addr().port());
        let http = Self::client(&pki, None);
        Self {
            collector: Some(collector),
            db_url,
            base,
            http,
            pki,
            options,
            settings,
        }
    }

    pub fn settings(options: &EnvOptions, db_url: &str, pki: &Pki) -> config::Settings {
        let mut text = format!(
            r#"
[collector]
id = "collector-test"

[database]
url = "{db_url}"
pool_size = 16
{database_toml}

[ingest]
workers = {workers}
gap_after_s = {gap}
max_body_bytes = {max_body}

[http]
listen = "127.0.0.1:0"
tls_cert = "{cert}"
tls_key = "{key}"
client_ca = "{ca}"
"#,
            database_toml = options.database_toml,
            workers = options.workers,
            gap = options.gap_after_s,
            max_body = options.max_body_bytes,
            cert = pki.path("server.pem").display(),
            key = pki.path("server.key").display(),
            ca = pki.path("ca.pem").display(),
        );
        if let Some(port) = options.mqtt_port {
            let transport = match &options.mqtt_ca {
                Some(ca) => format!("ca_file = \"{}\"", ca.display()),
                None => "plain = true".to_owned(),
            };
            let _ = write!(
                text,
                "\n[mqtt]\nhost = \"127.0.0.1\"\nport = {port}\nclient_id = \"{}\"\n{transport}\nkeep_alive_s = 5\n",
                options.mqtt_client_id
            );
            if let Some(g) = &options.share_group {
                let _ = writeln!(text, "share_group = \"{g}\"");
            }
            if let Some(p) = options.mqtt_protocol {
                let _ = writeln!(text, "protocol = \"{p}\"");
            }
        }
        text.push_str(&options.extra);
        config::parse(&text, std::path::Path::new("test.toml"), pki.dir.path())
            .unwrap_or_else(|e| panic!("test config: {e}"))
    }

    /// An HTTPS client trusting the test CA, optionally presenting a client certificate.
    pub fn client(pki: &Pki, identity: Option<(&str, &str)>) -> reqwest::Client {
        install_crypto();
        let mut b = reqwest::Client::builder()
            .tls_certs_only([reqwest::Certificate::from_pem(pki.ca_pem.as_bytes()).expect("CA")])
            .timeout(Duration::from_secs(30));
        if let Some((cert, key)) = identity {
            let pem = format!("{cert}{key}");
            b = b.identity(reqwest::Identity::from_pem(pem.as_bytes()).expect("identity"));
        }
        b.build().expect("client")
    }

    pub fn collector(&self) -> &Collector {
        self.collector.as_ref().expect("collector running")
    }

    pub async fn db(&self) -> tokio_postgres::Client {
        sql(&self.db_url).await
    }

    /// Registers a gateway with a fresh key; returns its signer.
    pub async fn gateway(&self, id: &str) -> BatchSigner {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).expect("random");
        let key = SigningKey::from_bytes(&seed);
        registry::add_gateway(
            self.collector().pool(),
            id,
            &key.verifying_key(),
            None,
            None,
        )
        .await
        .expect("register gateway");
        BatchSigner::new(id, key)
    }

    pub async fn token(&self, role: auth::Role, gateway: Option<&str>) -> String {
        auth::create_token(
            self.collector().pool(),
            &format!("{role}-test"),
            role,
            gateway,
        )
        .await
        .expect("token")
        .1
    }

    /// POSTs a body to the ingest endpoint.
    pub async fn post(&self, token: Option<&str>, body: Vec<u8>, gzip: bool) -> (u16, Value) {
        post_with(&self.http, &self.base, token, body, gzip).await
    }

    pub async fn get(&self, token: &str, path_and_query: &str) -> (u16, Value) {
        let resp = self
            .http
            .get(format!("{}{path_and_query}", self.base))
            .bearer_auth(token)
            .send()
            .await
            .expect("GET");
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.expect("body");
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    /// Polls `sql` (returning one bigint) until it equals `want` or 20 s pass.
    pub async fn wait_count(&self, sql_text: &str, want: i64) -> i64 {
        let db = self.db().await;
        let mut last = -1;
        crate::wait_until_async(Duration::from_secs(20), async || {
            last = db.query_one(sql_text, &[]).await.expect("query").get(0);
            (last == want).then_some(())
        })
        .await;
        last
    }

    pub async fn stop(&mut self) {
        if let Some(c) = self.collector.take() {
            c.shutdown().await;
        }
    }

    /// Stops the collector at once, as a crash would.
    pub fn crash(&mut self) {
        if let Some(c) = self.collector.take() {
            c.abort();
        }
    }
}

/// A test MQTT client that publishes with QoS 1 and counts the broker's PUBACKs.
pub struct Publisher {
    pub client: rumqttc::AsyncClient,
    acked: std::sync::Arc<std::sync::atomic::AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Publisher {
    pub async fn connect(port: u16, client_id: &str) -> Self {
        let mut opts = rumqttc::MqttOptions::new(client_id, "127.0.0.1", port);
        opts.set_keep_alive(Duration::from_secs(5));
        opts.set_max_packet_size(16 * 1024 * 1024, 16 * 1024 * 1024);
        let (client, mut eventloop) = rumqttc::AsyncClient::new(opts, 1000);
        let acked = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counter = std::sync::Arc::clone(&acked);
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let mut ready = Some(ready_tx);
        let task = tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_))) => {
                        if let Some(tx) = ready.take() {
                            let _ = tx.send(());
                        }
                    }
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_))) => {
                        counter.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(_) => {}
                    // A pause before the next poll reconnects, not a wait for a condition:
                    // without it a refused connection would spin this task.
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(10), ready_rx)
            .await
            .expect("publisher connected")
            .expect("publisher connected");
        Self {
            client,
            acked,
            task,
        }
    }

    pub async fn publish(&self, topic: &str, payload: Vec<u8>, retain: bool) {
        self.client
            .publish(topic, rumqttc::QoS::AtLeastOnce, retain, payload)
            .await
            .expect("publish");
    }

    /// Waits until the broker acknowledged `n` publishes in total.
    pub async fn wait_acked(&self, n: u64) {
        crate::wait_until_async(Duration::from_secs(10), async || {
            (self.acked.load(Ordering::Relaxed) >= n).then_some(())
        })
        .await
        .unwrap_or_else(|| {
            panic!(
                "broker acknowledged {} of {n} publishes within 10 s",
                self.acked.load(Ordering::Relaxed)
            )
        });
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The events topic of a batch: `linesentry/v1/{site}/{gateway}/events/{severity}/{type}`.
pub fn events_topic(gateway: &str, first: &SecurityEvent) -> String {
    format!(
        "linesentry/v1/site-a/{gateway}/events/{}/{}",
        first.severity, first.event_type
    )
}

pub async fn post_with(
    http: &reqwest::Client,
    base: &str,
    token: Option<&str>,
    body: Vec<u8>,
    gzip: bool,
) -> (u16, Value) {
    let mut req = http.post(format!("{base}/api/v1/ingest"));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let body = if gzip {
        req = req.header("content-encoding", "gzip");
        gzip_bytes(&body)
    } else {
        body
    };
    let resp = req
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("POST");
    let status = resp.status().as_u16();
    let bytes = resp.bytes().await.expect("body");
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

pub fn gzip_bytes(body: &[u8]) -> Vec<u8> {
    use std::io::Write as _;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(body).expect("gzip");
    gz.finish().expect("gzip")
}

/// A gateway's event stream as the agent's queue would number and chain it.
pub struct Chain {
    pub gateway_id: String,
    pub next_seq: u64,
    pub last_hash: Option<EventHash>,
}

impl Chain {
    pub fn new(gateway_id: &str) -> Self {
        Self {
            gateway_id: gateway_id.into(),
            next_seq: 1,
            last_hash: None,
        }
    }

    /// Numbers and links `e` as the next event.
    pub fn link(&mut self, mut e: SecurityEvent) -> SecurityEvent {
        e.gateway_id.clone_from(&self.gateway_id);
        e.seq = self.next_seq;
        e.prev_hash = self.last_hash.map(|h| hex(&h));
        self.next_seq += 1;
        self.last_hash = Some(event_hash(&e));
        e
    }

    /// `n` numbered and linked events of `event_type`.
    pub fn events(&mut self, event_type: EventType, n: usize) -> Vec<SecurityEvent> {
        (0..n)
            .map(|i| {
                self.link(
                    SecurityEvent::new(&self.gateway_id, event_type)
                        .station("press-01")
                        .data("tag", "die_temp_sp")
                        .data("value", 180.0 + i as f64)
                        .context("source", "modbus"),
                )
            })
            .collect()
    }
}

/// An event with a specific type and severity, now.
pub fn event(event_type: EventType, severity: Severity) -> SecurityEvent {
    SecurityEvent::new("placeholder", event_type)
        .severity(severity)
        .at(Timestamp::now())
}

/// A WebSocket client of the live stream, over TLS.
pub type Ws =
    tokio_tungstenite::WebSocketStream<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>;

impl Env {
    /// Opens the live stream; `token` goes in the Authorization header, or as the
    /// `bearer.<token>` subprotocol when `as_protocol` (what a browser does).
    pub async fn ws(
        &self,
        token: Option<&str>,
        as_protocol: bool,
    ) -> Result<Ws, tokio_tungstenite::tungstenite::Error> {
        self.ws_with(token, as_protocol, None).await
    }

    /// Opens the live stream with a fixed socket receive buffer of `recv_buffer` bytes:
    /// a client that stops reading then holds that much in the kernel, not the tens of MB
    /// the kernel's autotuning may grant (`net.ipv4.tcp_rmem`, 32 MiB on some machines).
    pub async fn ws_small_buffer(
        &self,
        token: Option<&str>,
        recv_buffer: u32,
    ) -> Result<Ws, tokio_tungstenite::tungstenite::Error> {
        self.ws_with(token, false, Some(recv_buffer)).await
    }

    async fn ws_with(
        &self,
        token: Option<&str>,
        as_protocol: bool,
        recv_buffer: Option<u32>,
    ) -> Result<Ws, tokio_tungstenite::tungstenite::Error> {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
        install_crypto();
        let port = self.collector().http_addr().port();
        let mut roots = rustls::RootCertStore::empty();
        for cert in linesentry_common::pem::parse_certs(self.pki.ca_pem.as_bytes()).expect("CA PEM")
        {
            roots.add(cert).expect("CA");
        }
        let config = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        if let Some(size) = recv_buffer {
            socket.set_recv_buffer_size(size).expect("SO_RCVBUF");
        }
        let tcp = socket
            .connect(std::net::SocketAddr::from(([127, 0, 0, 1], port)))
            .await
            .expect("connect");
        let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
            .connect(
                rustls::pki_types::ServerName::try_from("127.0.0.1").expect("name"),
                tcp,
            )
            .await
            .expect("TLS");
        let mut req = format!("wss://127.0.0.1:{port}/api/v1/stream")
            .into_client_request()
            .expect("request");
        if let Some(t) = token {
            let (name, value) = if as_protocol {
                (
                    "sec-websocket-protocol",
                    format!("linesentry.v1, bearer.{t}"),
                )
            } else {
                ("authorization", format!("Bearer {t}"))
            };
            req.headers_mut()
                .insert(name, value.parse().expect("header"));
        }
        tokio_tungstenite::client_async(req, tls)
            .await
            .map(|(ws, _)| ws)
    }
}

/// The next JSON text frame, or None after `wait`.
pub async fn ws_next(ws: &mut Ws, wait: Duration) -> Option<Value> {
    use futures_util::StreamExt as _;
    loop {
        match tokio::time::timeout(wait, ws.next()).await {
            Ok(Some(Ok(tokio_tungstenite::tungstenite::Message::Text(t)))) => {
                return Some(serde_json::from_str(t.as_str()).expect("JSON frame"))
            }
            Ok(Some(Ok(_))) => {}
            _ => return None,
        }
    }
}

pub async fn ws_send(ws: &mut Ws, v: &Value) {
    use futures_util::SinkExt as _;
    ws.send(tokio_tungstenite::tungstenite::Message::Text(
        v.to_string().into(),
    ))
    .await
    .expect("send");
}
