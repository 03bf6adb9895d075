//! Transports to a SIEM (feature `transport`): the I/O around the pure encoders.
//!
//! - `tls`: syslog over TLS per RFC 5425 (port 6514), octet counting or LF framing;
//! - `relp`: RELP ([`relp`]), over TLS unless `tls = false`; every message is acknowledged;
//! - `https`: a JSON array of events per POST (reqwest, rustls);
//! - `tcp`, `udp`: plain syslog, only to a loopback address or with `insecure = true`.
//!
//! A [`Sender`] keeps one connection and sends batches of already encoded records
//! ([`Sender::send`]): syslog messages for `tls`, `relp`, `tcp`, `udp`, JSON objects for
//! `https`. It succeeds only when the records are acknowledged (RELP `rsp 200`, an HTTP
//! 2xx) or, for the syslog transports that have no acknowledgement, written and flushed to
//! a connection that was open before the write. Any failure drops the connection; the next
//! call connects again. Every connect, handshake, write and wait for an answer is bounded
//! by the configured timeout. TLS verifies the receiver's certificate against the
//! configured CA file and its name; a client certificate is presented when configured.

pub mod relp;

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use linesentry_common::{pem, Secret};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

/// How records travel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// Syslog over TLS (RFC 5425).
    Tls,
    /// RELP, acknowledged.
    Relp,
    /// JSON batches over HTTPS.
    Https,
    /// Plain syslog over TCP (RFC 6587).
    Tcp,
    /// Plain syslog over UDP (RFC 5426).
    Udp,
}

impl Protocol {
    pub const ALL: [Protocol; 5] = [
        Protocol::Tls,
        Protocol::Relp,
        Protocol::Https,
        Protocol::Tcp,
        Protocol::Udp,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tls => "tls",
            Protocol::Relp => "relp",
            Protocol::Https => "https",
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.as_str() == name)
    }

    /// Whether the receiver acknowledges each record (else "sent" means written).
    pub fn acknowledged(self) -> bool {
        matches!(self, Protocol::Relp | Protocol::Https)
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Framing of syslog messages on a stream (`tls`, `tcp`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Framing {
    /// `LEN SP MSG` (RFC 5425 4.3, RFC 6587 3.4.1).
    #[default]
    OctetCounting,
    /// `MSG LF`, for older receivers (a message with a line feed is refused).
    Lf,
}

/// The TLS side of a destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    /// PEM file of the CA(s) the receiver's certificate must chain to.
    pub ca_file: PathBuf,
    /// PEM certificate and key presented to the receiver.
    pub client_cert: Option<(PathBuf, PathBuf)>,
    /// The name the certificate must carry; default the host of `address`.
    pub server_name: Option<String>,
}

/// Everything a [`Sender`] needs; the collector's `[[siem]]` and the agent's sink build it.
#[derive(Debug, Clone)]
pub struct TransportSettings {
    pub protocol: Protocol,
    /// `host:port` for the syslog transports and RELP; the URL for `https`.
    pub address: String,
    pub framing: Framing,
    /// Required for `tls` and `https` and for `relp` unless it runs in the clear.
    pub tls: Option<TlsSettings>,
    /// Bound of each connect, handshake, write and wait for an answer.
    pub timeout: Duration,
    /// RELP: messages sent before waiting for their answers.
    pub relp_window: usize,
    /// HTTPS: extra headers, e.g. `Authorization` (values never logged).
    pub headers: Vec<(String, Secret)>,
    /// Allows plain `tcp`, `udp` or RELP without TLS to a non-loopback address.
    pub insecure: bool,
}

impl TransportSettings {
    /// Defaults for `protocol` to `address`: octet counting, 10 s timeout, RELP window 128.
    pub fn new(protocol: Protocol, address: impl Into<String>) -> Self {
        Self {
            protocol,
            address: address.into(),
            framing: Framing::default(),
            tls: None,
            timeout: Duration::from_secs(10),
            relp_window: 128,
            headers: Vec::new(),
            insecure: false,
        }
    }

    /// Whether this destination talks in the clear.
    pub fn plaintext(&self) -> bool {
        match self.protocol {
            Protocol::Tcp | Protocol::Udp => true,
            Protocol::Relp => self.tls.is_none(),
            Protocol::Tls | Protocol::Https => false,
        }
    }

    /// Every problem of these settings, as (setting, message): for configuration errors.
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if self.protocol == Protocol::Https {
            match reqwest::Url::parse(&self.address) {
                Ok(u) if u.scheme() == "https" => {}
                Ok(u) => out.push((
                    "address",
                    format!("expected an https:// URL, not {}://", u.scheme()),
                )),
                Err(e) => out.push(("address", format!("not a URL: {e}"))),
            }
        } else {
            match split_host_port(&self.address) {
                Some((host, _)) => {
                    if self.plaintext() && !self.insecure && !is_loopback(host) {
                        out.push((
                            "address",
                            format!(
                                "{} sends in the clear: only to a loopback address unless `insecure = true`",
                                self.protocol
                            ),
                        ));
                    }
                }
                None => out.push(("address", "expected host:port".to_owned())),
            }
        }
        if matches!(self.protocol, Protocol::Tls | Protocol::Https) && self.tls.is_none() {
            out.push((
                "ca_file",
                format!("{} needs the receiver's CA", self.protocol),
            ));
        }
        if self.timeout.is_zero() {
            out.push(("timeout", "must be above zero".to_owned()));
        }
        if self.relp_window == 0 || self.relp_window > 10_000 {
            out.push(("relp_window", "expected 1 to 10000".to_owned()));
        }
        out
    }
}

fn split_host_port(address: &str) -> Option<(&str, u16)> {
    let (host, port) = address.rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port = port.parse().ok()?;
    (!host.is_empty()).then_some((host, port))
}

fn is_loopback(host: &str) -> bool {
    host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Why a send or a setup failed. The connection is dropped on every one of them.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    #[error("bad transport settings: {0}")]
    Settings(String),
    #[error("cannot connect to {address}: {reason}")]
    Connect { address: String, reason: String },
    #[error("TLS with {address} failed: {reason}")]
    Tls { address: String, reason: String },
    #[error("{what} timed out after {timeout:?}")]
    Timeout {
        what: &'static str,
        timeout: Duration,
    },
    #[error("connection to {address} lost: {reason}")]
    Io { address: String, reason: String },
    /// The receiver answered and said no.
    #[error("the receiver refused: {answer}")]
    Refused { answer: String, acknowledged: usize },
    #[error("the receiver does not speak {protocol}: {reason}")]
    Protocol {
        protocol: &'static str,
        reason: String,
    },
    #[error("record {index} cannot be framed: {reason}")]
    Record { index: usize, reason: String },
}

impl SendError {
    /// Records of the failed batch the receiver acknowledged before the failure (RELP).
    pub fn acknowledged(&self) -> usize {
        match self {
            SendError::Refused { acknowledged, .. } => *acknowledged,
            _ => 0,
        }
    }
}

/// What the receiver answered to a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// Records sent.
    pub records: usize,
    /// The receiver's words: `200 OK` (RELP), `HTTP 200 ...`, or what a syslog transport
    /// can say (written, no acknowledgement).
    pub text: String,
}

trait Stream: AsyncRead + AsyncWrite + Unpin + Send + Sync + fmt::Debug {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + Sync + fmt::Debug> Stream for T {}

#[derive(Debug)]
enum Link {
    None,
    Stream {
        stream: Box<dyn Stream>,
        /// What was read and not yet parsed (RELP answers).
        rbuf: Vec<u8>,
    },
    Udp(UdpSocket),
}

/// One destination's connection: sends batches, reconnects after a failure.
pub struct Sender {
    settings: TransportSettings,
    tls: Option<Arc<rustls::ClientConfig>>,
    http: Option<reqwest::Client>,
    link: Link,
    txnr: u32,
}

impl fmt::Debug for Sender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sender")
            .field("protocol", &self.settings.protocol)
            .field("address", &self.settings.address)
            .field("connected", &!matches!(self.link, Link::None))
            .finish_non_exhaustive()
    }
}

/// The rustls client configuration of `tls`: its CA as the only roots, its client
/// certificate if any.
pub fn client_config(tls: &TlsSettings) -> Result<rustls::ClientConfig, SendError> {
    let bad = |e: String| SendError::Settings(e);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for c in pem::read_certs(&tls.ca_file).map_err(|e| bad(e.to_string()))? {
        roots
            .add(c)
            .map_err(|e| bad(format!("{}: {e}", tls.ca_file.display())))?;
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(e.to_string()))?
        .with_root_certificates(roots);
    match &tls.client_cert {
        Some((cert, key)) => builder
            .with_client_auth_cert(
                pem::read_certs(cert).map_err(|e| bad(e.to_string()))?,
                pem::read_key(key).map_err(|e| bad(e.to_string()))?,
            )
            .map_err(|e| bad(format!("{}: {e}", cert.display()))),
        None => Ok(builder.with_no_client_auth()),
    }
}

impl Sender {
    /// Checks the settings and loads the certificates; connects on the first send.
    pub fn new(settings: TransportSettings) -> Result<Self, SendError> {
        if let Some((key, problem)) = settings.problems().into_iter().next() {
            return Err(SendError::Settings(format!("{key}: {problem}")));
        }
        let tls = match (&settings.tls, settings.protocol) {
            (Some(t), Protocol::Tls | Protocol::Relp) => Some(Arc::new(client_config(t)?)),
            _ => None,
        };
        let http = if settings.protocol == Protocol::Https {
            Some(http_client(&settings)?)
        } else {
            None
        };
        Ok(Self {
            settings,
            tls,
            http,
            link: Link::None,
            txnr: 0,
        })
    }

    pub fn settings(&self) -> &TransportSettings {
        &self.settings
    }

    /// Sends `records` in order; `Ok` once all are acknowledged (or written, for the
    /// syslog transports). Not cancel-safe: a cancelled send leaves the connection in an
    /// unknown state, so drop the sender or call [`Sender::reset`].
    pub async fn send(&mut self, records: &[String]) -> Result<Answer, SendError> {
        let result = match self.settings.protocol {
            Protocol::Tls | Protocol::Tcp => self.send_syslog(records).await,
            Protocol::Relp => self.send_relp(records).await,
            Protocol::Udp => self.send_udp(records).await,
            Protocol::Https => self.send_https(records).await,
        };
        if result.is_err() {
            self.reset();
        }
        result
    }

    /// Drops the connection; the next send connects again.
    pub fn reset(&mut self) {
        self.link = Link::None;
    }

    /// Ends a RELP session politely (`close`, waits for its answer); drops any other
    /// connection.
    pub async fn close(&mut self) {
        if self.settings.protocol == Protocol::Relp && !matches!(self.link, Link::None) {
            let txnr = relp::next_txnr(self.txnr);
            let mut buf = Vec::new();
            relp::encode(&mut buf, txnr, "close", b"");
            if self.write_all(&buf).await.is_ok() {
                let _ = self.read_frame().await;
            }
        }
        self.reset();
    }

    async fn bounded<T, F>(&self, what: &'static str, f: F) -> Result<T, SendError>
    where
        F: std::future::Future<Output = Result<T, SendError>>,
    {
        let timeout = self.settings.timeout;
        tokio::time::timeout(timeout, f)
            .await
            .unwrap_or(Err(SendError::Timeout { what, timeout }))
    }

    async fn connect(&mut self) -> Result<(), SendError> {
        let address = self.settings.address.clone();
        let tcp = self
            .bounded("connect", async {
                TcpStream::connect(&address)
                    .await
                    .map_err(|e| SendError::Connect {
                        address: address.clone(),
                        reason: e.to_string(),
                    })
            })
            .await?;
        let _ = tcp.set_nodelay(true);
        let stream: Box<dyn Stream> = match &self.tls {
            None => Box::new(tcp),
            Some(config) => {
                let name = self
                    .settings
                    .tls
                    .as_ref()
                    .and_then(|t| t.server_name.clone())
                    .or_else(|| split_host_port(&address).map(|(h, _)| h.to_owned()))
                    .unwrap_or_default();
                let name = ServerName::try_from(name.clone())
                    .map_err(|e| SendError::Settings(format!("server name {name:?}: {e}")))?;
                let connector = tokio_rustls::TlsConnector::from(Arc::clone(config));
                let tls = self
                    .bounded("TLS handshake", async {
                        connector
                            .connect(name, tcp)
                            .await
                            .map_err(|e| SendError::Tls {
                                address: address.clone(),
                                reason: e.to_string(),
                            })
                    })
                    .await?;
                Box::new(tls)
            }
        };
        self.link = Link::Stream {
            stream,
            rbuf: Vec::new(),
        };
        if self.settings.protocol == Protocol::Relp {
            self.txnr = 0;
            let answer = self.relp_open().await?;
            tracing::debug!(address = %self.settings.address, offers = %answer.offers.replace('\n', " "), "RELP session open");
        }
        Ok(())
    }

    /// A stream that the receiver closed shows end-of-file without waiting; an open one
    /// has nothing to read (a syslog receiver never writes).
    async fn still_open(&mut self) -> bool {
        let Link::Stream { stream, .. } = &mut self.link else {
            return false;
        };
        let mut chunk = [0u8; 512];
        match tokio::time::timeout(Duration::ZERO, stream.read(&mut chunk)).await {
            Err(_) => true,
            Ok(Ok(n)) => n > 0,
            Ok(Err(_)) => false,
        }
    }

    async fn write_all(&mut self, bytes: &[u8]) -> Result<(), SendError> {
        let address = self.settings.address.clone();
        let timeout = self.settings.timeout;
        let Link::Stream { stream, .. } = &mut self.link else {
            return Err(SendError::Io {
                address,
                reason: "not connected".into(),
            });
        };
        let io = |e: std::io::Error| SendError::Io {
            address: address.clone(),
            reason: e.to_string(),
        };
        let write = async {
            stream.write_all(bytes).await.map_err(io)?;
            stream.flush().await.map_err(io)
        };
        tokio::time::timeout(timeout, write)
            .await
            .unwrap_or(Err(SendError::Timeout {
                what: "write",
                timeout,
            }))
    }

    async fn send_syslog(&mut self, records: &[String]) -> Result<Answer, SendError> {
        if !self.still_open().await {
            self.connect().await?;
        }
        let mut buf = Vec::with_capacity(records.iter().map(|r| r.len() + 8).sum());
        for (index, r) in records.iter().enumerate() {
            match self.settings.framing {
                Framing::OctetCounting => {
                    buf.extend_from_slice(r.len().to_string().as_bytes());
                    buf.push(b' ');
                    buf.extend_from_slice(r.as_bytes());
                }
                Framing::Lf => {
                    if r.contains('\n') {
                        return Err(SendError::Record {
                            index,
                            reason: "a line feed inside a message cannot be LF-framed".into(),
                        });
                    }
                    buf.extend_from_slice(r.as_bytes());
                    buf.push(b'\n');
                }
            }
        }
        self.write_all(&buf).await?;
        Ok(Answer {
            records: records.len(),
            text: format!(
                "{} message(s), {} bytes written and flushed; syslog over {} has no acknowledgement",
                records.len(),
                buf.len(),
                self.settings.protocol
            ),
        })
    }

    async fn read_frame(&mut self) -> Result<relp::Frame, SendError> {
        let address = self.settings.address.clone();
        let timeout = self.settings.timeout;
        let Link::Stream { stream, rbuf } = &mut self.link else {
            return Err(SendError::Io {
                address,
                reason: "not connected".into(),
            });
        };
        let read = async {
            let mut chunk = [0u8; 4096];
            loop {
                match relp::parse(rbuf) {
                    Ok(Some((frame, used))) => {
                        rbuf.drain(..used);
                        return Ok(frame);
                    }
                    Ok(None) => {}
                    Err(e) => {
                        return Err(SendError::Protocol {
                            protocol: "RELP",
                            reason: e.to_string(),
                        })
                    }
                }
                let got = stream.read(&mut chunk).await.map_err(|e| SendError::Io {
                    address: address.clone(),
                    reason: e.to_string(),
                })?;
                if got == 0 {
                    return Err(SendError::Io {
                        address: address.clone(),
                        reason: "the receiver closed the connection".into(),
                    });
                }
                rbuf.extend_from_slice(&chunk[..got]);
            }
        };
        tokio::time::timeout(timeout, read)
            .await
            .unwrap_or(Err(SendError::Timeout {
                what: "RELP answer",
                timeout,
            }))
    }

    /// Reads the answer to `txnr`; `serverclose` or another number is a protocol error.
    async fn relp_answer(&mut self, txnr: u32) -> Result<relp::Response, SendError> {
        let frame = self.read_frame().await?;
        if frame.command == "serverclose" {
            return Err(SendError::Io {
                address: self.settings.address.clone(),
                reason: "the receiver closed the RELP session (serverclose)".into(),
            });
        }
        if frame.command != "rsp" || frame.txnr != txnr {
            return Err(SendError::Protocol {
                protocol: "RELP",
                reason: format!(
                    "expected the answer to {txnr}, got `{} {}`",
                    frame.txnr, frame.command
                ),
            });
        }
        relp::Response::parse(&frame.data).map_err(|e| SendError::Protocol {
            protocol: "RELP",
            reason: e.to_string(),
        })
    }

    async fn relp_open(&mut self) -> Result<relp::Response, SendError> {
        self.txnr = relp::next_txnr(self.txnr);
        let txnr = self.txnr;
        let mut buf = Vec::new();
        relp::encode(&mut buf, txnr, "open", &relp::open_offer());
        self.write_all(&buf).await?;
        let answer = self.relp_answer(txnr).await?;
        if !answer.is_ok() {
            return Err(SendError::Refused {
                answer: format!("open: {} {}", answer.code, answer.text),
                acknowledged: 0,
            });
        }
        if !answer.offers.lines().any(|l| {
            l.strip_prefix("commands=")
                .is_some_and(|c| c.split(',').any(|c| c == "syslog"))
        }) {
            return Err(SendError::Protocol {
                protocol: "RELP",
                reason: format!("the server does not offer `syslog`: {:?}", answer.offers),
            });
        }
        Ok(answer)
    }

    async fn send_relp(&mut self, records: &[String]) -> Result<Answer, SendError> {
        if matches!(self.link, Link::None) {
            self.connect().await?;
        }
        let mut acknowledged = 0;
        let mut last = String::new();
        for window in records.chunks(self.settings.relp_window.max(1)) {
            let mut buf = Vec::with_capacity(window.iter().map(|r| r.len() + 24).sum());
            let first = relp::next_txnr(self.txnr);
            let mut txnr = self.txnr;
            for r in window {
                txnr = relp::next_txnr(txnr);
                relp::encode(&mut buf, txnr, "syslog", r.as_bytes());
            }
            self.txnr = txnr;
            self.write_all(&buf).await?;
            let mut expect = first;
            for _ in window {
                let answer = self.relp_answer(expect).await?;
                if !answer.is_ok() {
                    return Err(SendError::Refused {
                        answer: format!("{} {}", answer.code, answer.text),
                        acknowledged,
                    });
                }
                acknowledged += 1;
                last = format!("{} {}", answer.code, answer.text);
                expect = relp::next_txnr(expect);
            }
        }
        Ok(Answer {
            records: records.len(),
            text: format!("{acknowledged} message(s) acknowledged: {last}"),
        })
    }

    async fn send_udp(&mut self, records: &[String]) -> Result<Answer, SendError> {
        let address = self.settings.address.clone();
        if matches!(self.link, Link::None) {
            let target: SocketAddr = tokio::net::lookup_host(&address)
                .await
                .ok()
                .and_then(|mut a| a.next())
                .ok_or_else(|| SendError::Connect {
                    address: address.clone(),
                    reason: "cannot resolve".into(),
                })?;
            let local: SocketAddr = if target.is_ipv4() {
                ([0, 0, 0, 0], 0).into()
            } else {
                (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
            };
            let io = |e: std::io::Error| SendError::Connect {
                address: address.clone(),
                reason: e.to_string(),
            };
            let socket = UdpSocket::bind(local).await.map_err(io)?;
            socket.connect(target).await.map_err(io)?;
            self.link = Link::Udp(socket);
        }
        let Link::Udp(socket) = &self.link else {
            return Err(SendError::Settings("udp without a socket".into()));
        };
        for r in records {
            socket.send(r.as_bytes()).await.map_err(|e| SendError::Io {
                address: address.clone(),
                reason: e.to_string(),
            })?;
        }
        Ok(Answer {
            records: records.len(),
            text: format!(
                "{} datagram(s) sent; UDP has no acknowledgement",
                records.len()
            ),
        })
    }

    async fn send_https(&mut self, records: &[String]) -> Result<Answer, SendError> {
        let Some(http) = &self.http else {
            return Err(SendError::Settings("https without a client".into()));
        };
        let mut body =
            String::with_capacity(records.iter().map(|r| r.len() + 1).sum::<usize>() + 2);
        body.push('[');
        for (i, r) in records.iter().enumerate() {
            if i > 0 {
                body.push(',');
            }
            body.push_str(r);
        }
        body.push(']');
        let mut req = http
            .post(&self.settings.address)
            .header("content-type", "application/json")
            .header(
                "user-agent",
                concat!("linesentry/", env!("CARGO_PKG_VERSION")),
            );
        for (name, value) in &self.settings.headers {
            req = req.header(name.as_str(), value.expose());
        }
        let address = self.settings.address.clone();
        let resp = req.body(body).send().await.map_err(|e| {
            if e.is_timeout() {
                SendError::Timeout {
                    what: "HTTPS request",
                    timeout: self.settings.timeout,
                }
            } else if e.is_connect() {
                SendError::Connect {
                    address: address.clone(),
                    reason: error_chain(&e),
                }
            } else {
                SendError::Io {
                    address: address.clone(),
                    reason: error_chain(&e),
                }
            }
        })?;
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        let text: String = text.chars().take(200).collect();
        let answer = format!("HTTP {} {}", status.as_u16(), text.trim());
        if status.is_success() {
            Ok(Answer {
                records: records.len(),
                text: answer,
            })
        } else {
            Err(SendError::Refused {
                answer,
                acknowledged: 0,
            })
        }
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}

fn http_client(settings: &TransportSettings) -> Result<reqwest::Client, SendError> {
    let config = match &settings.tls {
        Some(t) => client_config(t)?,
        None => return Err(SendError::Settings("https needs ca_file".into())),
    };
    reqwest::Client::builder()
        .timeout(settings.timeout)
        .connect_timeout(settings.timeout)
        .redirect(reqwest::redirect::Policy::none())
        .tls_backend_preconfigured(config)
        .build()
        .map_err(|e| SendError::Settings(error_chain(&e)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_transports_are_refused_off_loopback_unless_insecure() {
        for p in [Protocol::Tcp, Protocol::Udp, Protocol::Relp] {
            let mut s = TransportSettings::new(p, "10.0.0.5:514");
            assert!(
                s.problems()
                    .iter()
                    .any(|(k, m)| *k == "address" && m.contains("insecure")),
                "{p}"
            );
            s.insecure = true;
            assert!(s.problems().is_empty(), "{p}: {:?}", s.problems());
            let s = TransportSettings::new(p, "127.0.0.1:514");
            assert!(s.problems().is_empty(), "{p}");
            let s = TransportSettings::new(p, "[::1]:514");
            assert!(s.problems().is_empty(), "{p}");
        }
    }

    #[test]
    fn tls_and_https_need_a_ca_and_https_an_https_url() {
        let s = TransportSettings::new(Protocol::Tls, "siem.example:6514");
        assert_eq!(s.problems()[0].0, "ca_file");
        let s = TransportSettings::new(Protocol::Https, "http://siem.example/x");
        let p = s.problems();
        assert!(
            p.iter()
                .any(|(k, m)| *k == "address" && m.contains("https://")),
            "{p:?}"
        );
        let s = TransportSettings::new(Protocol::Tls, "no-port");
        assert!(s.problems().iter().any(|(k, _)| *k == "address"));
    }

    #[test]
    fn protocol_names_parse_back() {
        for p in Protocol::ALL {
            assert_eq!(Protocol::from_name(p.as_str()), Some(p));
        }
        assert_eq!(Protocol::from_name("syslog"), None);
    }
}

/// The client's side of RELP error answers, against a scripted server: rsyslog answers
/// `200 OK` to every well-formed message, so its refusals cannot be provoked from outside.
#[cfg(test)]
mod relp_answers {
    use super::*;
    use tokio::io::{AsyncBufReadExt, BufReader};
    use tokio::net::TcpListener;

    /// Accepts one session, answers `open` with `offers`, the first `ok` messages with
    /// 200 and the next one with `500 <reason>`.
    async fn server(
        offers: &'static str,
        ok: usize,
    ) -> (u16, tokio::task::JoinHandle<Vec<String>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            let (conn, _) = listener.accept().await.unwrap();
            let (read, mut write) = conn.into_split();
            let mut lines = BufReader::new(read).lines();
            let mut got = Vec::new();
            let mut n = 0;
            while let Ok(Some(line)) = lines.next_line().await {
                let mut parts = line.splitn(4, ' ');
                let txnr = parts.next().unwrap().to_owned();
                let cmd = parts.next().unwrap().to_owned();
                let data = match cmd.as_str() {
                    "open" => {
                        // The offer spans three lines.
                        lines.next_line().await.unwrap();
                        lines.next_line().await.unwrap();
                        format!("200 OK\n{offers}")
                    }
                    "syslog" => {
                        got.push(parts.nth(1).unwrap_or_default().to_owned());
                        n += 1;
                        if n > ok {
                            "500 message refused by policy".to_owned()
                        } else {
                            "200 OK".to_owned()
                        }
                    }
                    _ => break,
                };
                let mut out = Vec::new();
                relp::encode(&mut out, txnr.parse().unwrap(), "rsp", data.as_bytes());
                write.write_all(&out).await.unwrap();
            }
            got
        });
        (port, task)
    }

    #[tokio::test]
    async fn an_error_answer_fails_the_batch_naming_the_reason_and_what_was_acknowledged() {
        let (port, task) = server("relp_version=0\ncommands=syslog", 2).await;
        let mut s = Sender::new(TransportSettings::new(
            Protocol::Relp,
            format!("127.0.0.1:{port}"),
        ))
        .unwrap();
        let batch: Vec<String> = (0..4).map(|i| format!("<13>1 - - - - - - m{i}")).collect();
        let err = s.send(&batch).await.unwrap_err();
        assert_eq!(err.acknowledged(), 2);
        assert!(
            err.to_string().contains("500 message refused by policy"),
            "{err}"
        );
        drop(s);
        let got = task.await.unwrap();
        assert_eq!(
            got.len(),
            4,
            "the whole window was sent before the answers were read"
        );
    }

    #[tokio::test]
    async fn a_server_that_does_not_offer_syslog_is_refused_at_open() {
        let (port, _task) = server("relp_version=0\ncommands=", 0).await;
        let mut s = Sender::new(TransportSettings::new(
            Protocol::Relp,
            format!("127.0.0.1:{port}"),
        ))
        .unwrap();
        let err = s
            .send(&["<13>1 - - - - - - m".to_owned()])
            .await
            .unwrap_err();
        assert!(matches!(err, SendError::Protocol { .. }), "{err}");
        assert!(err.to_string().contains("does not offer `syslog`"), "{err}");
    }

    #[tokio::test]
    async fn a_silent_receiver_times_out_instead_of_hanging() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let _hold = tokio::spawn(async move {
            let (s, _) = l.accept().await.unwrap();
            tokio::time::sleep(Duration::from_secs(30)).await;
            drop(s);
        });
        let mut st = TransportSettings::new(Protocol::Relp, format!("127.0.0.1:{port}"));
        st.timeout = Duration::from_millis(300);
        let err = Sender::new(st)
            .unwrap()
            .send(&["m".to_owned()])
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                SendError::Timeout {
                    what: "RELP answer",
                    ..
                }
            ),
            "{err}"
        );
    }
}
