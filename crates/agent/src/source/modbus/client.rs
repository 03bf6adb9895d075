//! Modbus TCP: one connection to one device, owned by that station's task.
//!
//! The agent runs one task per station, so a TCP device that hangs holds up only its own
//! task: nothing is shared between devices but the tokio runtime. Within the task the
//! connection is a small state machine: `Disconnected { retry_at }` ⇄ `Connected(Context)`.
//!
//! * Connecting (name resolution included) is bounded by the station's timeout. A failure
//!   schedules the next attempt with capped exponential backoff and jitter (200 ms doubling to
//!   30 s by default); until then [`TcpStation::poll`] returns at once with
//!   [`SourceError::Connect`] naming the last failure. The breaker's probe poll skips the wait.
//! * Every request runs under `tokio::time::timeout(station.timeout)`: the tokio-modbus client
//!   has no timeout of its own.
//! * A timeout, an I/O error, a frame that does not parse or an answer with another
//!   transaction id drops the connection: whatever the device sends late would otherwise be
//!   read as the answer to the next request ("transaction ids fall out of sync and never
//!   recover"). The next poll reconnects.
//! * `TCP_NODELAY` is set: a request is one small segment that must leave at once.
//! * A poll dropped mid-request (the agent shutting down, a caller's own timeout) leaves its
//!   answer in flight; the next poll notices and starts on a fresh connection, so `poll` is
//!   cancel-safe.
//! * tokio-modbus reports a connection closed by the device with a stale OS error; the stream
//!   is wrapped to note end-of-stream, so the error says "the device closed the connection".
//!
//! Everything else (read plan, decoding, breaker, identification, counters) is the shared
//! [`Poller`](super::station).

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{timeout, Instant};
use tokio_modbus::client::{tcp, Client as _, Context};
use tokio_modbus::{Request, Slave};

use super::breaker::BreakerState;
use super::station::{
    custom_exception, millis, CallResult, Link, LinkDown, LinkError, ModbusCounters, Poller,
    StationOptions,
};
use crate::source::{PollResult, SourceError};
use crate::source::{SourceConfig, StationConfig};
use linesentry_common::Backoff;

/// A Modbus TCP station: [`Source::ModbusTcp`](crate::source::Source::ModbusTcp).
pub struct TcpStation {
    poller: Poller,
    link: TcpLink,
}

impl fmt::Debug for TcpStation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TcpStation")
            .field("address", &self.link.address)
            .field("unit_id", &self.link.unit_id)
            .field("connected", &self.link.context.is_some())
            .field("poller", &self.poller)
            .finish_non_exhaustive()
    }
}

impl TcpStation {
    /// The station with the [`StationOptions`] its config asks for. Fails on a station that
    /// is not `modbus_tcp` or whose tags cannot be planned; does no I/O.
    pub fn new(station: &StationConfig) -> Result<Self, SourceError> {
        Self::with_options(station, &StationOptions::from_tuning(&station.tuning))
    }

    pub fn with_options(
        station: &StationConfig,
        options: &StationOptions,
    ) -> Result<Self, SourceError> {
        let SourceConfig::ModbusTcp { address, unit_id } = &station.source else {
            return Err(SourceError::Other(format!(
                "station `{}` has source `{}`, expected `modbus_tcp`",
                station.id,
                station.source.kind()
            )));
        };
        let seed = options.seed.unwrap_or_else(|| fastrand::u64(..));
        Ok(TcpStation {
            poller: Poller::new(station, options, seed)?,
            link: TcpLink {
                address: address.clone(),
                unit_id: *unit_id,
                context: None,
                backoff: Backoff::seeded(options.reconnect, seed.rotate_left(17)),
                retry_at: None,
                last_error: String::new(),
                epoch: 0,
                closed_by_peer: Arc::default(),
                in_flight: false,
            },
        })
    }

    /// One poll: connect if needed, read every block, maybe the identification. Never waits
    /// longer than the station's timeout per request (and once more for connecting).
    pub async fn poll(&mut self) -> PollResult {
        self.poller.poll(&mut self.link).await
    }

    pub fn counters(&self) -> &ModbusCounters {
        self.poller.counters()
    }

    pub fn breaker_state(&self) -> BreakerState {
        self.poller.breaker_state()
    }

    pub fn is_connected(&self) -> bool {
        self.link.context.is_some()
    }

    /// The read requests one poll sends, as `(area, start, count)`.
    pub fn read_plan(&self) -> Vec<(crate::source::RegisterArea, u16, u16)> {
        self.poller
            .plan()
            .blocks()
            .iter()
            .map(|b| (b.area, b.start, b.count))
            .collect()
    }
}

/// The connection of one TCP station.
struct TcpLink {
    /// `host:port`, resolved on every connect (a DHCP-assigned device may move).
    address: String,
    unit_id: u8,
    context: Option<Context>,
    backoff: Backoff,
    /// No connection attempt before this (set after a failed attempt).
    retry_at: Option<Instant>,
    last_error: String,
    /// Incremented on every new connection.
    epoch: u64,
    /// Set when the device closed the current connection.
    closed_by_peer: Arc<AtomicBool>,
    /// A request is on the wire; still set at the next poll if the last one was dropped.
    in_flight: bool,
}

/// The connection's stream, noting when the device closes it.
#[derive(Debug)]
struct Watched {
    inner: TcpStream,
    closed_by_peer: Arc<AtomicBool>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let room = buf.remaining() > 0;
        let poll = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(poll, Poll::Ready(Ok(()))) && room && buf.filled().len() == before {
            self.closed_by_peer.store(true, Ordering::Relaxed);
        }
        poll
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, data)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Resolves `address` and connects to the first address that accepts.
async fn connect(address: &str) -> io::Result<TcpStream> {
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host(address).await?.collect();
    let mut last = io::Error::new(io::ErrorKind::NotFound, "the name resolved to no address");
    for addr in addrs {
        match TcpStream::connect(addr).await {
            Ok(stream) => {
                stream.set_nodelay(true)?;
                return Ok(stream);
            }
            Err(e) => last = e,
        }
    }
    Err(last)
}

impl TcpLink {
    fn disconnect(&mut self) {
        // Dropping the stream closes it; a graceful shutdown could itself hang.
        self.context = None;
        self.in_flight = false;
    }
}

impl Link for TcpLink {
    async fn prepare(
        &mut self,
        probe: bool,
        limit: Duration,
        counters: &mut ModbusCounters,
    ) -> Result<(), LinkDown> {
        if self.in_flight {
            // A poll was dropped mid-request: its answer may still arrive on this connection.
            self.disconnect();
        }
        if self.context.is_some() {
            return Ok(());
        }
        let now = Instant::now();
        if let Some(at) = self.retry_at.filter(|at| !probe && now < *at) {
            return Err(LinkDown {
                error: SourceError::Connect(format!(
                    "{}; next attempt in {} ms",
                    self.last_error,
                    millis(at - now)
                )),
                attempted: false,
            });
        }
        counters.connect_attempts += 1;
        let outcome = match timeout(limit, connect(&self.address)).await {
            Ok(Ok(stream)) => Ok(stream),
            Ok(Err(e)) => Err(format!("{}: {e}", self.address)),
            Err(_) => Err(format!(
                "{}: no connection within {} ms",
                self.address,
                millis(limit)
            )),
        };
        match outcome {
            Ok(stream) => {
                self.closed_by_peer = Arc::new(AtomicBool::new(false));
                let stream = Watched {
                    inner: stream,
                    closed_by_peer: self.closed_by_peer.clone(),
                };
                self.context = Some(tcp::attach_slave(stream, Slave(self.unit_id)));
                if self.epoch > 0 {
                    counters.reconnects += 1;
                }
                self.epoch += 1;
                self.backoff.reset();
                self.retry_at = None;
                tracing::debug!(address = %self.address, epoch = self.epoch, "connected");
                Ok(())
            }
            Err(message) => {
                counters.connect_failures += 1;
                let delay = self.backoff.next_delay();
                self.retry_at = Some(now + delay);
                tracing::debug!(address = %self.address, error = %message,
                    retry_in_ms = millis(delay), "connection failed");
                self.last_error.clone_from(&message);
                Err(LinkDown {
                    error: SourceError::Connect(message),
                    attempted: true,
                })
            }
        }
    }

    async fn call(&mut self, request: Request<'static>, limit: Duration) -> CallResult {
        let Some(context) = self.context.as_mut() else {
            return Err(LinkError::Down(SourceError::Connect(format!(
                "{}: not connected",
                self.address
            ))));
        };
        self.in_flight = true;
        let outcome = timeout(limit, context.call(request)).await;
        self.in_flight = false;
        match outcome {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(tokio_modbus::Error::Transport(e))) => {
                // tokio-modbus reports a connection closed by the device with whatever the
                // last OS error was; the stream wrapper knows better.
                let closed = self.closed_by_peer.load(Ordering::Relaxed);
                self.disconnect();
                Err(LinkError::Transport(if closed {
                    "the device closed the connection".to_owned()
                } else {
                    e.to_string()
                }))
            }
            Ok(Err(tokio_modbus::Error::Protocol(e))) => {
                if let Some(code) = custom_exception(&e) {
                    return Ok(Err(code));
                }
                self.disconnect();
                Err(LinkError::Protocol(e.to_string()))
            }
            Err(_) => {
                self.disconnect();
                Err(LinkError::Timeout)
            }
        }
    }

    fn epoch(&self) -> u64 {
        self.epoch
    }
}
