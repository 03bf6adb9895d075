//! Modbus RTU: several stations (unit ids) on one serial bus, one arbiter task per bus.
//!
//! A serial line carries one request at a time, so the stations on it cannot each own a
//! connection the way TCP stations do. Each bus instead gets one **arbiter** task that owns
//! the port; stations send it their requests over a bounded channel and wait for the answer
//! on a oneshot channel. The arbiter executes requests one at a time, in arrival order:
//!
//! 1. a request whose station has stopped waiting (its poll was cancelled) is skipped;
//! 2. the port is opened if it is closed and its reopen backoff has run out; while it backs
//!    off, every request is answered at once with [`SourceError::Connect`] naming the port and
//!    the last error, so every station on the bus reports `reachable = false` with the reason;
//! 3. the line is kept quiet for the inter-frame gap (3.5 character times, at least 1.75 ms
//!    above 19 200 baud), input that arrived since the last answer (a late reply from a unit
//!    that timed out) is discarded, the unit id is set with `set_slave` and the request is sent
//!    under the requesting station's timeout;
//! 4. an I/O error or end of stream on the port closes it and schedules a reopen with capped
//!    exponential backoff (200 ms doubling to 30 s); a timeout or a garbled frame is the unit's
//!    failure only, and the tokio-modbus client is rebuilt on the same port so no half-read
//!    frame carries over.
//!
//! Each station still has its own [`Breaker`](super::breaker::Breaker): a unit that times
//! out repeatedly is isolated and sends nothing to the arbiter until its probe, so a dead
//! unit costs the bus at most one timeout per poll until it is isolated, then nothing, and the
//! other units keep their rate. A station stops its poll at the first timeout, so a dead unit
//! never costs more than one timeout per poll. Bus failures are not counted against any
//! unit's breaker: when the port comes back every unit resumes at once.
//!
//! # Registry
//!
//! Stations find their bus through an [`RtuBuses`] registry keyed by the device path
//! (canonicalised, so `/dev/serial/by-id/…` and `/dev/ttyUSB0` share one arbiter when both
//! exist at start-up). [`RtuBuses::global`] opens ports with tokio-serial and is what
//! [`Source::for_station`](crate::source::Source::for_station) uses; tests build their own
//! registry with any [`PortOpener`] (a pseudo-terminal, an in-memory duplex). The registry
//! holds only weak senders: when the last station of a bus is dropped the arbiter's channel
//! closes, the task ends and the port is closed. Every station on one path must use the same
//! serial settings; a mismatch is refused when the station is created.
//!
//! # Queueing
//!
//! A station has at most one request in flight, so the queue holds at most one request per
//! station: with the default capacity of 64 it never fills unless more than 64 stations share
//! a bus. When it does, the station waits for room (back-pressure, never a drop) and the wait
//! is counted in [`BusCounters::queue_full`]. A station does not time out while its request
//! waits in the queue behind other units: that wait is bounded by the queue length times the
//! per-request timeouts, and counting it against the unit would let one dead unit open every
//! other unit's breaker.

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::task::{Context as TaskContext, Poll, Waker};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{mpsc, oneshot};
use tokio::time::{sleep_until, timeout, Instant};
use tokio_modbus::client::{rtu, Client as _, Context};
use tokio_modbus::prelude::SlaveContext as _;
use tokio_modbus::{Request, Slave};

use super::breaker::{self, BreakerState};
use super::station::{
    custom_exception, millis, CallResult, Link, LinkDown, LinkError, ModbusCounters, Poller,
    StationOptions,
};
use crate::source::{Parity, SourceConfig, StationConfig};
use crate::source::{PollResult, SourceError};
use linesentry_common::{Backoff, BackoffPolicy};

/// Line settings of a serial port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SerialSettings {
    pub baud: u32,
    pub parity: Parity,
    /// 7 or 8.
    pub data_bits: u8,
    /// 1 or 2.
    pub stop_bits: u8,
}

impl SerialSettings {
    /// Bits on the line per character: start, data, parity, stop.
    fn bits_per_char(self) -> u32 {
        let parity = u32::from(self.parity != Parity::None);
        1 + u32::from(self.data_bits) + parity + u32::from(self.stop_bits)
    }

    /// The silent interval that separates two RTU frames: 3.5 character times, fixed at
    /// 1.75 ms above 19 200 baud (Modbus over serial line, 2.5.1.1).
    pub fn inter_frame_gap(self) -> Duration {
        if self.baud > 19_200 || self.baud == 0 {
            Duration::from_micros(1750)
        } else {
            Duration::from_secs_f64(3.5 * f64::from(self.bits_per_char()) / f64::from(self.baud))
        }
    }
}

impl fmt::Display for SerialSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parity = match self.parity {
            Parity::None => 'N',
            Parity::Even => 'E',
            Parity::Odd => 'O',
        };
        write!(
            f,
            "{} {}{parity}{}",
            self.baud, self.data_bits, self.stop_bits
        )
    }
}

/// An open serial port (or anything that behaves like one).
pub trait BusPort: AsyncRead + AsyncWrite + Unpin + Send + 'static {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> BusPort for T {}

/// Opens the port of a bus; called by the arbiter, on its task, whenever the port is closed.
pub trait PortOpener: Send + Sync + 'static {
    fn open(&self, device: &Path, settings: &SerialSettings) -> io::Result<Box<dyn BusPort>>;
}

impl<F> PortOpener for F
where
    F: Fn(&Path, &SerialSettings) -> io::Result<Box<dyn BusPort>> + Send + Sync + 'static,
{
    fn open(&self, device: &Path, settings: &SerialSettings) -> io::Result<Box<dyn BusPort>> {
        self(device, settings)
    }
}

/// Opens real serial ports with tokio-serial (exclusive access).
#[derive(Debug, Clone, Copy, Default)]
pub struct TokioSerial;

impl PortOpener for TokioSerial {
    fn open(&self, device: &Path, settings: &SerialSettings) -> io::Result<Box<dyn BusPort>> {
        use tokio_serial::SerialPortBuilderExt as _;
        let builder = tokio_serial::new(device.to_string_lossy(), settings.baud)
            .parity(match settings.parity {
                Parity::None => tokio_serial::Parity::None,
                Parity::Even => tokio_serial::Parity::Even,
                Parity::Odd => tokio_serial::Parity::Odd,
            })
            .data_bits(if settings.data_bits == 7 {
                tokio_serial::DataBits::Seven
            } else {
                tokio_serial::DataBits::Eight
            })
            .stop_bits(if settings.stop_bits == 2 {
                tokio_serial::StopBits::Two
            } else {
                tokio_serial::StopBits::One
            })
            .flow_control(tokio_serial::FlowControl::None);
        let port = builder.open_native_async().map_err(io::Error::from)?;
        Ok(Box::new(port))
    }
}

/// Tunables of a bus arbiter.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BusOptions {
    /// Reopen timing of a failed port; default 200 ms doubling to 30 s, ±20 %.
    pub reopen: BackoffPolicy,
    /// Requests that may wait for the bus; default 64 (at most one per station is ever
    /// queued). Full: the sender waits.
    pub queue: usize,
    /// Silence kept between frames; `None` (default) derives it from the line settings.
    pub inter_frame_gap: Option<Duration>,
}

impl Default for BusOptions {
    fn default() -> Self {
        BusOptions {
            reopen: breaker::RECONNECT,
            queue: 64,
            inter_frame_gap: None,
        }
    }
}

/// What a bus arbiter has done, for `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BusCounters {
    /// Times the port was opened.
    pub opens: u64,
    /// Failed attempts to open the port.
    pub open_failures: u64,
    /// Times an open port failed (I/O error, end of stream) and was closed.
    pub port_failures: u64,
    /// Requests put on the line.
    pub requests: u64,
    /// Requests answered at once because the port was closed.
    pub refused_port_down: u64,
    /// Requests skipped because their station had stopped waiting.
    pub abandoned: u64,
    /// Times a station found the queue full and had to wait.
    pub queue_full: u64,
}

#[derive(Debug, Default)]
struct BusStats {
    opens: AtomicU64,
    open_failures: AtomicU64,
    port_failures: AtomicU64,
    requests: AtomicU64,
    refused_port_down: AtomicU64,
    abandoned: AtomicU64,
    queue_full: AtomicU64,
}

impl BusStats {
    fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    fn snapshot(&self) -> BusCounters {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        BusCounters {
            opens: get(&self.opens),
            open_failures: get(&self.open_failures),
            port_failures: get(&self.port_failures),
            requests: get(&self.requests),
            refused_port_down: get(&self.refused_port_down),
            abandoned: get(&self.abandoned),
            queue_full: get(&self.queue_full),
        }
    }
}

/// One request for the arbiter.
struct Job {
    unit: u8,
    request: Request<'static>,
    timeout: Duration,
    reply: oneshot::Sender<Reply>,
}

struct Reply {
    result: CallResult,
    /// Which opening of the port answered (0: none yet).
    epoch: u64,
}

/// A station's way to its bus. Cloning shares the arbiter.
#[derive(Clone)]
pub struct BusHandle {
    device: PathBuf,
    settings: SerialSettings,
    sender: mpsc::Sender<Job>,
    stats: Arc<BusStats>,
}

impl fmt::Debug for BusHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BusHandle")
            .field("device", &self.device)
            .field("settings", &self.settings)
            .field("counters", &self.counters())
            .finish_non_exhaustive()
    }
}

impl BusHandle {
    pub fn device(&self) -> &Path {
        &self.device
    }

    pub fn counters(&self) -> BusCounters {
        self.stats.snapshot()
    }
}

struct BusEntry {
    settings: SerialSettings,
    sender: mpsc::WeakSender<Job>,
    stats: Arc<BusStats>,
}

/// The serial buses in use, keyed by device path; one arbiter task per bus.
pub struct RtuBuses {
    opener: Arc<dyn PortOpener>,
    options: BusOptions,
    buses: Mutex<HashMap<PathBuf, BusEntry>>,
}

impl fmt::Debug for RtuBuses {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let buses = self.buses.lock().unwrap_or_else(PoisonError::into_inner);
        f.debug_struct("RtuBuses")
            .field("options", &self.options)
            .field("buses", &buses.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl RtuBuses {
    pub fn new(opener: impl PortOpener, options: BusOptions) -> Self {
        RtuBuses {
            opener: Arc::new(opener),
            options,
            buses: Mutex::new(HashMap::new()),
        }
    }

    /// The process-wide registry with real serial ports and default options.
    pub fn global() -> &'static RtuBuses {
        static GLOBAL: OnceLock<RtuBuses> = OnceLock::new();
        GLOBAL.get_or_init(|| RtuBuses::new(TokioSerial, BusOptions::default()))
    }

    /// The bus on `device`, starting its arbiter (on the current tokio runtime) if none runs.
    /// Nothing is opened here: the arbiter opens the port for the first request.
    pub fn attach(
        &self,
        device: &Path,
        settings: SerialSettings,
    ) -> Result<BusHandle, SourceError> {
        let key = std::fs::canonicalize(device).unwrap_or_else(|_| device.to_owned());
        let mut buses = self.buses.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(entry) = buses.get(&key) {
            if let Some(sender) = entry.sender.upgrade().filter(|s| !s.is_closed()) {
                if entry.settings != settings {
                    return Err(SourceError::Other(format!(
                        "serial port {}: this station asks for {settings}, another station on \
                         the same port for {}; expected the same baud rate, parity, data and \
                         stop bits for every station on one bus",
                        device.display(),
                        entry.settings
                    )));
                }
                return Ok(BusHandle {
                    device: device.to_owned(),
                    settings,
                    sender,
                    stats: entry.stats.clone(),
                });
            }
        }
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
            SourceError::Other(format!(
                "serial port {}: the bus arbiter needs a tokio runtime",
                device.display()
            ))
        })?;
        let (sender, jobs) = mpsc::channel(self.options.queue.max(1));
        let stats = Arc::new(BusStats::default());
        let arbiter = Arbiter {
            device: device.to_owned(),
            settings,
            opener: self.opener.clone(),
            gap: self
                .options
                .inter_frame_gap
                .unwrap_or_else(|| settings.inter_frame_gap()),
            backoff: Backoff::seeded(self.options.reopen, fastrand::u64(..)),
            stats: stats.clone(),
            port: None,
            retry_at: None,
            last_error: String::new(),
            epoch: 0,
        };
        runtime.spawn(arbiter.run(jobs));
        buses.insert(
            key,
            BusEntry {
                settings,
                sender: sender.downgrade(),
                stats: stats.clone(),
            },
        );
        Ok(BusHandle {
            device: device.to_owned(),
            settings,
            sender,
            stats,
        })
    }
}

/// The task that owns one serial port.
struct Arbiter {
    device: PathBuf,
    settings: SerialSettings,
    opener: Arc<dyn PortOpener>,
    gap: Duration,
    backoff: Backoff,
    stats: Arc<BusStats>,
    port: Option<OpenPort>,
    retry_at: Option<Instant>,
    last_error: String,
    epoch: u64,
}

impl Arbiter {
    /// Serves requests until every station of the bus is gone.
    async fn run(mut self, mut jobs: mpsc::Receiver<Job>) {
        tracing::debug!(device = %self.device.display(), settings = %self.settings, "bus arbiter started");
        while let Some(job) = jobs.recv().await {
            if job.reply.is_closed() {
                BusStats::bump(&self.stats.abandoned);
                continue;
            }
            let result = self.execute(job.unit, job.request, job.timeout).await;
            // The station may have stopped waiting meanwhile; nothing to do then.
            let _ = job.reply.send(Reply {
                result,
                epoch: self.epoch,
            });
        }
        tracing::debug!(device = %self.device.display(), "bus arbiter stopped: no station left");
    }

    async fn execute(
        &mut self,
        unit: u8,
        request: Request<'static>,
        limit: Duration,
    ) -> CallResult {
        if self.port.is_none() {
            self.open()?;
        }
        let Some(port) = self.port.as_mut() else {
            return Err(self.down());
        };
        BusStats::bump(&self.stats.requests);
        let result = port.call(unit, request, limit, self.gap).await;
        if let Some(error) = port.take_failure() {
            BusStats::bump(&self.stats.port_failures);
            self.port = None;
            self.schedule_reopen(format!("{error}"));
            tracing::warn!(device = %self.device.display(), %error,
                "serial port failed; every station on it is unreachable until it reopens");
            return Err(self.down());
        }
        result
    }

    /// Opens the port unless its reopen backoff still runs.
    fn open(&mut self) -> Result<(), LinkError> {
        if self.retry_at.is_some_and(|at| Instant::now() < at) {
            BusStats::bump(&self.stats.refused_port_down);
            return Err(self.down());
        }
        match self.opener.open(&self.device, &self.settings) {
            Ok(io) => {
                self.epoch += 1;
                self.port = Some(OpenPort::new(io));
                self.backoff.reset();
                self.retry_at = None;
                BusStats::bump(&self.stats.opens);
                tracing::info!(device = %self.device.display(), settings = %self.settings,
                    "serial port open");
                Ok(())
            }
            Err(error) => {
                BusStats::bump(&self.stats.open_failures);
                BusStats::bump(&self.stats.refused_port_down);
                let why = format!("cannot open: {error}");
                // The first failure and each new one reach the journal (a missing adapter or
                // a wrong path is then visible from the start); retries that fail the same
                // way stay at debug, not one line per backoff.
                if why == self.last_error {
                    tracing::debug!(device = %self.device.display(), %error, "cannot open serial port");
                } else {
                    tracing::warn!(device = %self.device.display(), %error,
                        "cannot open serial port; its stations are unreachable until it opens");
                }
                self.schedule_reopen(why);
                Err(self.down())
            }
        }
    }

    fn schedule_reopen(&mut self, error: String) {
        self.retry_at = Some(Instant::now() + self.backoff.next_delay());
        self.last_error = error;
    }

    /// The answer to a request while the port is closed.
    fn down(&self) -> LinkError {
        let retry_in = self
            .retry_at
            .map_or(0, |at| millis(at.saturating_duration_since(Instant::now())));
        LinkError::Down(SourceError::Connect(format!(
            "serial port {}: {}; reopening in {retry_in} ms",
            self.device.display(),
            self.last_error
        )))
    }
}

/// An open port and the tokio-modbus client on it.
struct OpenPort {
    shared: SharedPort,
    client: Option<Context>,
    /// When the line last fell silent (end of the last answer or timeout).
    quiet_since: Instant,
}

impl OpenPort {
    fn new(io: Box<dyn BusPort>) -> Self {
        OpenPort {
            shared: SharedPort(Arc::new(Mutex::new(PortState { io, failure: None }))),
            client: None,
            quiet_since: Instant::now(),
        }
    }

    async fn call(
        &mut self,
        unit: u8,
        request: Request<'static>,
        limit: Duration,
        gap: Duration,
    ) -> CallResult {
        sleep_until(self.quiet_since + gap).await;
        self.shared.discard_input();
        let shared = &self.shared;
        let client = self
            .client
            .get_or_insert_with(|| rtu::attach_slave(shared.clone(), Slave(unit)));
        client.set_slave(Slave(unit));
        let outcome = timeout(limit, client.call(request)).await;
        self.quiet_since = Instant::now();
        match outcome {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(error)) => {
                if let tokio_modbus::Error::Protocol(e) = &error {
                    if let Some(code) = custom_exception(e) {
                        return Ok(Err(code));
                    }
                }
                // A failed read may leave the framed decoder unusable: start afresh.
                self.client = None;
                Err(match error {
                    tokio_modbus::Error::Transport(e) => LinkError::Transport(e.to_string()),
                    tokio_modbus::Error::Protocol(e) => LinkError::Protocol(e.to_string()),
                })
            }
            Err(_) => {
                // The request may have been cut off mid-frame: start afresh.
                self.client = None;
                Err(LinkError::Timeout)
            }
        }
    }

    fn take_failure(&mut self) -> Option<io::Error> {
        self.shared.lock().failure.take()
    }
}

struct PortState {
    io: Box<dyn BusPort>,
    /// The first I/O error or end of stream seen on the port: the port is gone.
    failure: Option<io::Error>,
}

/// The port, shared between the arbiter and the tokio-modbus client built on it, so that the
/// client can be rebuilt after an error and stale input can be discarded between requests.
/// Records port failures (as opposed to bad frames, which the client reports).
#[derive(Clone)]
struct SharedPort(Arc<Mutex<PortState>>);

impl SharedPort {
    fn lock(&self) -> std::sync::MutexGuard<'_, PortState> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Reads and drops whatever input is already buffered, without waiting.
    fn discard_input(&self) {
        let mut state = self.lock();
        let mut cx = TaskContext::from_waker(Waker::noop());
        let mut scratch = [0u8; 256];
        loop {
            let mut buf = ReadBuf::new(&mut scratch);
            match Pin::new(&mut state.io).poll_read(&mut cx, &mut buf) {
                Poll::Ready(Ok(())) if !buf.filled().is_empty() => {}
                Poll::Ready(Ok(())) => {
                    state.note(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "end of stream",
                    ));
                    break;
                }
                Poll::Ready(Err(e)) => {
                    state.note(e);
                    break;
                }
                Poll::Pending => break,
            }
        }
    }
}

impl PortState {
    fn note(&mut self, error: io::Error) {
        if self.failure.is_none() {
            self.failure = Some(error);
        }
    }

    /// Records an I/O failure of the port itself and passes the poll result on.
    fn observe<T>(&mut self, poll: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if let Poll::Ready(Err(e)) = &poll {
            self.note(io::Error::new(e.kind(), e.to_string()));
        }
        poll
    }
}

impl AsyncRead for SharedPort {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let mut state = self.lock();
        let before = buf.filled().len();
        let room = buf.remaining() > 0;
        let poll = Pin::new(&mut state.io).poll_read(cx, buf);
        if matches!(poll, Poll::Ready(Ok(()))) && room && buf.filled().len() == before {
            state.note(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "end of stream",
            ));
        }
        state.observe(poll)
    }
}

impl AsyncWrite for SharedPort {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let mut state = self.lock();
        let poll = Pin::new(&mut state.io).poll_write(cx, data);
        state.observe(poll)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        let mut state = self.lock();
        let poll = Pin::new(&mut state.io).poll_flush(cx);
        state.observe(poll)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        let mut state = self.lock();
        let poll = Pin::new(&mut state.io).poll_shutdown(cx);
        state.observe(poll)
    }
}

/// A Modbus RTU station: [`Source::ModbusRtu`](crate::source::Source::ModbusRtu).
pub struct RtuStation {
    poller: Poller,
    link: RtuLink,
}

impl fmt::Debug for RtuStation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RtuStation")
            .field("device", &self.link.bus.device)
            .field("unit_id", &self.link.unit)
            .field("poller", &self.poller)
            .finish_non_exhaustive()
    }
}

impl RtuStation {
    /// The station on the process-wide bus registry ([`RtuBuses::global`]) with the
    /// [`StationOptions`] its config asks for. Must be called within a tokio runtime (the bus
    /// arbiter is spawned on it); opens nothing.
    pub fn new(station: &StationConfig) -> Result<Self, SourceError> {
        Self::on_bus(
            station,
            RtuBuses::global(),
            &StationOptions::from_tuning(&station.tuning),
        )
    }

    /// The station on `buses`.
    pub fn on_bus(
        station: &StationConfig,
        buses: &RtuBuses,
        options: &StationOptions,
    ) -> Result<Self, SourceError> {
        let SourceConfig::ModbusRtu {
            device,
            baud,
            parity,
            data_bits,
            stop_bits,
            unit_id,
        } = &station.source
        else {
            return Err(SourceError::Other(format!(
                "station `{}` has source `{}`, expected `modbus_rtu`",
                station.id,
                station.source.kind()
            )));
        };
        if *unit_id == 0 {
            return Err(SourceError::Other(format!(
                "station `{}`: unit_id 0 is the broadcast address on a serial bus, which never \
                 answers; expected a unit id from 1 to 247",
                station.id
            )));
        }
        let seed = options.seed.unwrap_or_else(|| fastrand::u64(..));
        let poller = Poller::new(station, options, seed)?;
        let settings = SerialSettings {
            baud: *baud,
            parity: *parity,
            data_bits: *data_bits,
            stop_bits: *stop_bits,
        };
        let bus = buses.attach(device, settings)?;
        Ok(RtuStation {
            poller,
            link: RtuLink {
                bus,
                unit: *unit_id,
                epoch: 0,
            },
        })
    }

    /// One poll through the bus arbiter.
    pub async fn poll(&mut self) -> PollResult {
        self.poller.poll(&mut self.link).await
    }

    pub fn counters(&self) -> &ModbusCounters {
        self.poller.counters()
    }

    pub fn breaker_state(&self) -> BreakerState {
        self.poller.breaker_state()
    }

    pub fn bus(&self) -> &BusHandle {
        &self.link.bus
    }
}

/// A station's side of the bus.
struct RtuLink {
    bus: BusHandle,
    unit: u8,
    epoch: u64,
}

impl Link for RtuLink {
    async fn prepare(
        &mut self,
        _probe: bool,
        _timeout: Duration,
        _counters: &mut ModbusCounters,
    ) -> Result<(), LinkDown> {
        // The arbiter opens the port and answers at once while it is down.
        Ok(())
    }

    async fn call(&mut self, request: Request<'static>, limit: Duration) -> CallResult {
        let stopped = || {
            LinkError::Down(SourceError::Other(format!(
                "serial port {}: the bus arbiter has stopped",
                self.bus.device.display()
            )))
        };
        let (reply, answer) = oneshot::channel();
        let job = Job {
            unit: self.unit,
            request,
            timeout: limit,
            reply,
        };
        match self.bus.sender.try_send(job) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(job)) => {
                BusStats::bump(&self.bus.stats.queue_full);
                self.bus.sender.send(job).await.map_err(|_| stopped())?;
            }
            Err(mpsc::error::TrySendError::Closed(_)) => return Err(stopped()),
        }
        let reply = answer.await.map_err(|_| stopped())?;
        self.epoch = reply.epoch;
        reply.result
    }

    fn epoch(&self) -> u64 {
        self.epoch
    }
}

#[cfg(test)]
mod tests {
    //! The arbiter over an in-memory duplex "serial line", with a scripted slave on the far
    //! end. The serial-port path itself (tokio-serial on a pseudo-terminal) is exercised by
    //! `crates/agent/tests/it/modbus_faults.rs`.

    use std::sync::atomic::AtomicUsize;

    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _, DuplexStream};

    use super::*;
    use crate::source::Value;

    fn crc(frame: &[u8]) -> [u8; 2] {
        let mut crc = 0xFFFFu16;
        for &b in frame {
            crc ^= u16::from(b);
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ 0xA001
                } else {
                    crc >> 1
                };
            }
        }
        crc.to_le_bytes()
    }

    fn framed(mut frame: Vec<u8>) -> Vec<u8> {
        let c = crc(&frame);
        frame.extend_from_slice(&c);
        frame
    }

    /// Reads one request frame: (unit, function code).
    async fn read_request(io: &mut DuplexStream) -> Option<(u8, u8)> {
        let mut head = [0u8; 2];
        io.read_exact(&mut head).await.ok()?;
        let rest = if head[1] == 0x2B { 5 } else { 6 };
        let mut tail = vec![0u8; rest];
        io.read_exact(&mut tail).await.ok()?;
        Some((head[0], head[1]))
    }

    /// FC 3 answer with one register.
    fn register_answer(unit: u8, value: u16) -> Vec<u8> {
        let [hi, lo] = value.to_be_bytes();
        framed(vec![unit, 0x03, 2, hi, lo])
    }

    /// A slave that answers FC 3 with `unit * 100 + n` (n counting its answers), says
    /// "illegal function" to FC 43, and records the units it heard.
    async fn slave(mut io: DuplexStream, heard: Arc<Mutex<Vec<u8>>>, late_duplicate: bool) {
        let mut n = 0u16;
        while let Some((unit, fc)) = read_request(&mut io).await {
            heard.lock().unwrap().push(unit);
            if fc == 0x2B {
                let _ = io.write_all(&framed(vec![unit, 0xAB, 0x01])).await;
                continue;
            }
            n += 1;
            let answer = register_answer(unit, u16::from(unit) * 100 + n);
            let _ = io.write_all(&answer).await;
            if late_duplicate {
                // The same unit answers again, too late: it must not become the next answer.
                let _ = io.write_all(&register_answer(unit, 9999)).await;
            }
        }
    }

    fn station_with(unit_id: u8, baud: u32) -> StationConfig {
        use crate::source::modbus::station::tests::{station_of, tag};
        use crate::source::{DataType, Parity, RegisterArea, SourceConfig};
        let source = SourceConfig::ModbusRtu {
            device: "/dev/ttyTEST".into(),
            baud,
            parity: Parity::Even,
            data_bits: 8,
            stop_bits: 1,
            unit_id,
        };
        let value = tag("value", DataType::U16, RegisterArea::HoldingRegister, 0, 0);
        station_of(vec![value], None, source, Duration::from_millis(200))
    }

    fn station(unit_id: u8) -> StationConfig {
        station_with(unit_id, 115_200)
    }

    fn options() -> StationOptions {
        StationOptions {
            identity_every: 0,
            seed: Some(1),
            ..StationOptions::default()
        }
    }

    fn value(result: &PollResult) -> Option<u64> {
        match result.readings.first().map(|r| &r.value) {
            Some(Value::UInt(v)) => Some(*v),
            _ => None,
        }
    }

    /// A registry whose port is a fresh duplex with `slave` on the far end at every opening.
    fn duplex_bus(
        heard: Arc<Mutex<Vec<u8>>>,
        late_duplicate: bool,
    ) -> (RtuBuses, Arc<AtomicUsize>) {
        let openings = Arc::new(AtomicUsize::new(0));
        let count = openings.clone();
        let opener = move |_: &Path, _: &SerialSettings| -> io::Result<Box<dyn BusPort>> {
            count.fetch_add(1, Ordering::SeqCst);
            let (port, far_end) = tokio::io::duplex(1024);
            tokio::spawn(slave(far_end, heard.clone(), late_duplicate));
            Ok(Box::new(port))
        };
        (RtuBuses::new(opener, BusOptions::default()), openings)
    }

    #[tokio::test]
    async fn stations_on_one_bus_share_one_port_and_each_request_carries_its_unit_id() {
        let heard = Arc::new(Mutex::new(Vec::new()));
        let (buses, opened) = duplex_bus(heard.clone(), false);
        let mut one = RtuStation::on_bus(&station(1), &buses, &options()).unwrap();
        let mut two = RtuStation::on_bus(&station(2), &buses, &options()).unwrap();
        let (a, b) = tokio::join!(one.poll(), two.poll());
        assert!(a.reachable && b.reachable, "{a:?} {b:?}");
        assert_eq!(value(&a).map(|v| v / 100), Some(1));
        assert_eq!(value(&b).map(|v| v / 100), Some(2));
        assert_eq!(opened.load(Ordering::SeqCst), 1, "one port for the bus");
        let mut units = heard.lock().unwrap().clone();
        units.sort_unstable();
        // Each unit: its read, then the identification request answered "illegal function".
        assert_eq!(units, [1, 1, 2, 2]);
        assert_eq!(one.bus().counters().requests, 4);
    }

    #[tokio::test]
    async fn stations_asking_for_other_line_settings_on_the_same_port_are_refused() {
        let heard = Arc::new(Mutex::new(Vec::new()));
        let (buses, _) = duplex_bus(heard, false);
        let _one = RtuStation::on_bus(&station(1), &buses, &options()).unwrap();
        let other = station_with(2, 9600);
        let error = RtuStation::on_bus(&other, &buses, &options()).unwrap_err();
        let message = error.to_string();
        assert!(
            message.contains("9600 8E1") && message.contains("115200 8E1"),
            "{message}"
        );
    }

    #[tokio::test]
    async fn a_late_answer_does_not_become_the_answer_to_the_next_request() {
        let heard = Arc::new(Mutex::new(Vec::new()));
        let (buses, _) = duplex_bus(heard, true);
        let mut one = RtuStation::on_bus(&station(1), &buses, &options()).unwrap();
        for _ in 0..5 {
            let result = one.poll().await;
            let v = value(&result).expect("a reading");
            assert_ne!(v, 9999, "a stale frame was taken as the answer");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test]
    async fn a_port_that_cannot_be_opened_is_reported_at_once_and_retried_after_a_backoff() {
        let attempts = Arc::new(AtomicUsize::new(0));
        let count = attempts.clone();
        let opener = move |_: &Path, _: &SerialSettings| -> io::Result<Box<dyn BusPort>> {
            count.fetch_add(1, Ordering::SeqCst);
            Err(io::Error::new(io::ErrorKind::NotFound, "no such device"))
        };
        let buses = RtuBuses::new(opener, BusOptions::default());
        let mut one = RtuStation::on_bus(&station(1), &buses, &options()).unwrap();
        let mut two = RtuStation::on_bus(&station(2), &buses, &options()).unwrap();
        let started = Instant::now();
        for _ in 0..3 {
            for result in [one.poll().await, two.poll().await] {
                assert!(!result.reachable);
                match &result.errors[..] {
                    [SourceError::Connect(message)] => {
                        assert!(message.contains("/dev/ttyTEST"), "{message}");
                        assert!(message.contains("no such device"), "{message}");
                    }
                    other => panic!("expected a connect error, got {other:?}"),
                }
            }
        }
        assert!(
            started.elapsed() < Duration::from_millis(100),
            "answered at once"
        );
        assert_eq!(
            attempts.load(Ordering::SeqCst),
            1,
            "no retry within the backoff"
        );
        tokio::time::sleep(Duration::from_millis(260)).await;
        one.poll().await;
        assert_eq!(attempts.load(Ordering::SeqCst), 2);
        // A bus that cannot be opened is not the units' fault.
        assert_eq!(one.breaker_state(), BreakerState::Closed { failures: 0 });
        let c = one.bus().counters();
        assert_eq!((c.open_failures, c.opens, c.requests), (2, 0, 0));
    }

    #[tokio::test]
    async fn a_port_that_fails_is_reopened_and_the_units_resume() {
        let openings = Arc::new(AtomicUsize::new(0));
        let count = openings.clone();
        let opener = move |_: &Path, _: &SerialSettings| -> io::Result<Box<dyn BusPort>> {
            let n = count.fetch_add(1, Ordering::SeqCst);
            let (port, mut far_end) = tokio::io::duplex(1024);
            tokio::spawn(async move {
                if n == 0 {
                    // The first port answers once, then disappears.
                    if let Some((unit, _)) = read_request(&mut far_end).await {
                        let _ = far_end.write_all(&register_answer(unit, 1)).await;
                    }
                    drop(far_end);
                } else {
                    slave(far_end, Arc::default(), false).await;
                }
            });
            Ok(Box::new(port))
        };
        let buses = RtuBuses::new(opener, BusOptions::default());
        let mut one = RtuStation::on_bus(&station(1), &buses, &options()).unwrap();
        let first = one.poll().await;
        assert_eq!(value(&first), Some(1));
        tokio::time::sleep(Duration::from_millis(20)).await;
        let second = one.poll().await;
        assert!(!second.reachable);
        assert!(
            matches!(&second.errors[..], [SourceError::Connect(m)] if m.contains("reopening in")),
            "{second:?}"
        );
        tokio::time::sleep(Duration::from_millis(260)).await;
        let third = one.poll().await;
        assert!(third.reachable, "{third:?}");
        assert_eq!(value(&third), Some(101));
        let c = one.bus().counters();
        assert_eq!((c.opens, c.port_failures), (2, 1));
        assert_eq!(one.breaker_state(), BreakerState::Closed { failures: 0 });
    }

    #[test]
    fn the_inter_frame_gap_is_three_and_a_half_characters_or_fixed_above_19200_baud() {
        let s = |baud, parity| SerialSettings {
            baud,
            parity,
            data_bits: 8,
            stop_bits: 1,
        };
        // 9600 8E1: 11 bits per character, 3.5 characters ≈ 4.01 ms.
        let gap = s(9600, Parity::Even).inter_frame_gap();
        assert!((gap.as_secs_f64() - 3.5 * 11.0 / 9600.0).abs() < 1e-9);
        assert_eq!(
            s(115_200, Parity::None).inter_frame_gap(),
            Duration::from_micros(1750)
        );
    }
}
