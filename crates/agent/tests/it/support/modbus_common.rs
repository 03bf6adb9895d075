//! Test peers and harness shared by `modbus_interop` and `modbus_faults`.
//!
//! * [`load_stations`]: station configs through the real config loader (TOML files in a
//!   tempdir), so tests build stations exactly as the agent does.
//! * [`MapServer`]: a well-behaved Modbus TCP device, tokio-modbus's own server over a
//!   register map, on a free loopback port.
//! * [`silent_server`], [`garbage_server`], [`refused_address`], [`ScriptedServer`]: devices
//!   that misbehave at the TCP level, written against raw sockets.
//! * [`RtuBus`]: Modbus RTU slaves on the master side of a pseudo-terminal; the agent opens
//!   the slave side by path with tokio-serial, like a real serial port.
//! * [`poll_like_the_agent`]: a station task as the agent runs it (interval, missed ticks
//!   delayed), counting what the polls achieved.

#![allow(dead_code, unreachable_pub)]

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use linesentry_agent::source::modbus::{RtuStation, TcpStation};
use linesentry_agent::source::StationConfig;
use linesentry_agent::source::{PollResult, Source};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_modbus::prelude::{
    ConformityLevel, DeviceIdObject, ExceptionCode, ReadCode, ReadDeviceIdentificationResponse,
};
use tokio_modbus::{Request, Response};

/// Writes `profiles` (file stem, full text) to `<tmp>/devices` and an agent configuration
/// with `stations` (the `[[stations]]` tables) to `<tmp>/agent.toml`, and loads it.
pub fn load_stations(
    profiles: &[(&str, &str)],
    stations: &str,
) -> (tempfile::TempDir, Vec<StationConfig>) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("devices")).unwrap();
    for (name, text) in profiles {
        std::fs::write(dir.path().join(format!("devices/{name}.toml")), text).unwrap();
    }
    let config = format!(
        "[agent]\ngateway_id = \"gw-test\"\nsite = \"lab\"\ndata_dir = \"data\"\n\
         profiles_dir = \"devices\"\n\n{stations}"
    );
    let path = dir.path().join("agent.toml");
    std::fs::write(&path, &config).unwrap();
    let loaded = linesentry_agent::config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    (dir, loaded.stations)
}

pub use linesentry_testkit::free_port;

/// An address on which nothing listens: connections are refused.
pub fn refused_address() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

/// Aborts a background task when dropped.
#[derive(Debug)]
pub struct TaskGuard(pub JoinHandle<()>);

impl Drop for TaskGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The data a [`MapServer`] serves. Coils and discrete inputs are the bits of `bits`.
#[derive(Debug, Clone, Default)]
pub struct RegisterMap {
    pub holding: Vec<u16>,
    pub input: Vec<u16>,
    pub bits: Vec<bool>,
    /// Vendor, product code, revision; `None` answers FC 43 with "illegal function".
    pub identity: Option<(String, String, String)>,
}

impl RegisterMap {
    /// `size` holding and input registers holding their own address, bits alternating.
    pub fn counting(size: u16) -> Self {
        RegisterMap {
            holding: (0..size).collect(),
            input: (0..size).map(|a| a + 1000).collect(),
            bits: (0..size).map(|a| a % 2 == 0).collect(),
            identity: Some(("Acme".into(), "PX-1".into(), "1.0".into())),
        }
    }
}

#[derive(Clone)]
struct MapService {
    map: Arc<RegisterMap>,
    requests: Arc<AtomicU64>,
    identity_requests: Arc<AtomicU64>,
}

fn window<T: Clone>(table: &[T], start: u16, count: u16) -> Result<Vec<T>, ExceptionCode> {
    let start = usize::from(start);
    let end = start + usize::from(count);
    table
        .get(start..end)
        .map(<[T]>::to_vec)
        .ok_or(ExceptionCode::IllegalDataAddress)
}

impl tokio_modbus::server::Service for MapService {
    type Request = Request<'static>;
    type Response = Response;
    type Exception = ExceptionCode;
    type Future = std::future::Ready<Result<Response, ExceptionCode>>;

    fn call(&self, request: Request<'static>) -> Self::Future {
        self.requests.fetch_add(1, Ordering::SeqCst);
        let m = &self.map;
        std::future::ready(match request {
            Request::ReadCoils(a, n) => window(&m.bits, a, n).map(Response::ReadCoils),
            Request::ReadDiscreteInputs(a, n) => {
                window(&m.bits, a, n).map(Response::ReadDiscreteInputs)
            }
            Request::ReadHoldingRegisters(a, n) => {
                window(&m.holding, a, n).map(Response::ReadHoldingRegisters)
            }
            Request::ReadInputRegisters(a, n) => {
                window(&m.input, a, n).map(Response::ReadInputRegisters)
            }
            Request::ReadDeviceIdentification(..) => {
                self.identity_requests.fetch_add(1, Ordering::SeqCst);
                match &m.identity {
                    Some((vendor, product, revision)) => Ok(Response::ReadDeviceIdentification(
                        ReadDeviceIdentificationResponse {
                            read_code: ReadCode::Basic,
                            conformity_level: ConformityLevel::BasicIdentification,
                            more_follows: false,
                            next_object_id: 0,
                            device_id_objects: [vendor, product, revision]
                                .into_iter()
                                .zip(0u8..)
                                .map(|(text, id)| DeviceIdObject {
                                    id,
                                    value: text.clone().into_bytes().into(),
                                })
                                .collect(),
                        },
                    )),
                    None => Err(ExceptionCode::IllegalFunction),
                }
            }
            _ => Err(ExceptionCode::IllegalFunction),
        })
    }
}

/// A well-behaved Modbus TCP device: tokio-modbus's server over a [`RegisterMap`].
#[derive(Debug)]
pub struct MapServer {
    pub addr: SocketAddr,
    pub requests: Arc<AtomicU64>,
    pub identity_requests: Arc<AtomicU64>,
    _task: TaskGuard,
}

impl MapServer {
    pub async fn start(map: RegisterMap) -> MapServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let service = MapService {
            map: Arc::new(map),
            requests: Arc::default(),
            identity_requests: Arc::default(),
        };
        let requests = service.requests.clone();
        let identity_requests = service.identity_requests.clone();
        let task = tokio::spawn(async move {
            let server = tokio_modbus::server::tcp::Server::new(listener);
            let on_connected = |stream, socket_addr| {
                let service = service.clone();
                async move {
                    tokio_modbus::server::tcp::accept_tcp_connection(stream, socket_addr, |_| {
                        Ok(Some(service.clone()))
                    })
                }
            };
            let _ = server.serve(&on_connected, |_err| {}).await;
        });
        MapServer {
            addr,
            requests,
            identity_requests,
            _task: TaskGuard(task),
        }
    }
}

/// Accepts connections and reads requests, but never answers.
pub async fn silent_server() -> (SocketAddr, TaskGuard) {
    raw_server(|mut socket| async move {
        let mut buf = [0u8; 512];
        while matches!(socket.read(&mut buf).await, Ok(n) if n > 0) {}
    })
    .await
}

/// Answers every request with a frame that is not Modbus TCP: a plausible header with a
/// foreign protocol id and junk after it. (Text such as an HTTP error page reads as a header
/// announcing a frame of some 12 kB, and ends in a timeout instead: see [`silent_server`].)
pub async fn garbage_server() -> (SocketAddr, TaskGuard) {
    raw_server(|mut socket| async move {
        let mut buf = [0u8; 512];
        while matches!(socket.read(&mut buf).await, Ok(n) if n > 0) {
            let reply = [0x13, 0x37, 0xBA, 0xAD, 0x00, 0x03, 0x01, 0xFF, 0xEE];
            if socket.write_all(&reply).await.is_err() {
                break;
            }
        }
    })
    .await
}

async fn raw_server<F, Fut>(handle: F) -> (SocketAddr, TaskGuard)
where
    F: Fn(TcpStream) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut connections = tokio::task::JoinSet::new();
        while let Ok((socket, _)) = listener.accept().await {
            connections.spawn(handle(socket));
        }
    });
    (addr, TaskGuard(task))
}

/// What a [`ScriptedServer`] does with one request (numbered from 1 across connections).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Answers correctly but with the transaction id of another request.
    WrongTransactionId,
    /// Answers with one register fewer than asked.
    ShortResponse,
    /// Closes the connection without answering, stops listening for the given time, then
    /// listens again on the same port.
    GoAway(Duration),
    /// Answers correctly after the given time.
    Delay(Duration),
}

/// A Modbus TCP device on raw sockets that follows a script of faults. FC 3 and FC 4 are
/// answered from `registers`; anything else gets "illegal function".
#[derive(Debug)]
pub struct ScriptedServer {
    pub addr: SocketAddr,
    pub requests: Arc<AtomicU64>,
    pub connections: Arc<AtomicU64>,
    _task: TaskGuard,
}

impl ScriptedServer {
    pub async fn start(registers: Vec<u16>, faults: HashMap<u64, Fault>) -> ScriptedServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(AtomicU64::new(0));
        let connections = Arc::new(AtomicU64::new(0));
        let (r, c) = (requests.clone(), connections.clone());
        let task = tokio::spawn(async move {
            let mut listener = Some(listener);
            loop {
                let l = match listener.take() {
                    Some(l) => l,
                    None => TcpListener::bind(addr).await.unwrap(),
                };
                let mut away = None;
                while away.is_none() {
                    let Ok((socket, _)) = l.accept().await else {
                        return;
                    };
                    c.fetch_add(1, Ordering::SeqCst);
                    away = serve_scripted(socket, &registers, &faults, &r).await;
                }
                drop(l);
                // The scripted outage: the port refuses connections for this long.
                tokio::time::sleep(away.unwrap_or_default()).await;
            }
        });
        ScriptedServer {
            addr,
            requests,
            connections,
            _task: TaskGuard(task),
        }
    }
}

/// Serves one connection; `Some(outage)` when the script says to go away.
async fn serve_scripted(
    mut socket: TcpStream,
    registers: &[u16],
    faults: &HashMap<u64, Fault>,
    requests: &AtomicU64,
) -> Option<Duration> {
    loop {
        let mut header = [0u8; 7];
        socket.read_exact(&mut header).await.ok()?;
        let len = usize::from(u16::from_be_bytes([header[4], header[5]]));
        let mut pdu = vec![0u8; len.saturating_sub(1)];
        socket.read_exact(&mut pdu).await.ok()?;
        let n = requests.fetch_add(1, Ordering::SeqCst) + 1;
        let fault = faults.get(&n).copied();
        if let Some(Fault::GoAway(outage)) = fault {
            return Some(outage);
        }
        if let Some(Fault::Delay(delay)) = fault {
            // The scripted slow answer.
            tokio::time::sleep(delay).await;
        }
        let mut tid = u16::from_be_bytes([header[0], header[1]]);
        if fault == Some(Fault::WrongTransactionId) {
            tid = tid.wrapping_add(7);
        }
        let answer = match pdu.as_slice() {
            [fc @ (3 | 4), a0, a1, c0, c1] => {
                let start = usize::from(u16::from_be_bytes([*a0, *a1]));
                let mut count = usize::from(u16::from_be_bytes([*c0, *c1]));
                if fault == Some(Fault::ShortResponse) {
                    count -= 1;
                }
                match registers.get(start..start + count) {
                    Some(regs) => {
                        let mut a = vec![*fc, (count * 2) as u8];
                        a.extend(regs.iter().flat_map(|r| r.to_be_bytes()));
                        a
                    }
                    None => vec![fc | 0x80, 0x02],
                }
            }
            [fc, ..] => vec![fc | 0x80, 0x01],
            [] => return None,
        };
        let mut frame = Vec::with_capacity(7 + answer.len());
        frame.extend_from_slice(&tid.to_be_bytes());
        frame.extend_from_slice(&[0, 0]);
        frame.extend_from_slice(&((answer.len() + 1) as u16).to_be_bytes());
        frame.push(header[6]);
        frame.extend_from_slice(&answer);
        socket.write_all(&frame).await.ok()?;
    }
}

/// Something polled like a station.
pub trait Pollable: Send + 'static {
    fn poll_once(&mut self) -> impl Future<Output = PollResult> + Send;
}

impl Pollable for TcpStation {
    fn poll_once(&mut self) -> impl Future<Output = PollResult> + Send {
        self.poll()
    }
}

impl Pollable for RtuStation {
    fn poll_once(&mut self) -> impl Future<Output = PollResult> + Send {
        self.poll()
    }
}

impl Pollable for Source {
    fn poll_once(&mut self) -> impl Future<Output = PollResult> + Send {
        self.poll()
    }
}

/// What a station task achieved.
#[derive(Debug, Clone, Default)]
pub struct Achieved {
    /// Polls run.
    pub polls: u64,
    /// Polls that returned every tag of the profile and no error.
    pub complete: u64,
    /// Polls with `reachable == true`.
    pub reachable: u64,
    /// Complete polls after `measure_from` into the run.
    pub complete_after: u64,
    /// The last poll's result.
    pub last: Option<PollResult>,
    /// Every error seen, in order.
    pub errors: Vec<String>,
}

/// Polls `station` every `interval` for `run`, the way the agent's station task does (first
/// tick at once, missed ticks delayed), with `tags` readings making a poll complete.
pub async fn poll_like_the_agent<P: Pollable>(
    mut station: P,
    interval: Duration,
    run: Duration,
    tags: usize,
    measure_from: Duration,
) -> (P, Achieved) {
    let started = Instant::now();
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut achieved = Achieved::default();
    loop {
        ticker.tick().await;
        if started.elapsed() >= run {
            break;
        }
        let result = station.poll_once().await;
        achieved.polls += 1;
        let complete = result.errors.is_empty() && result.readings.len() == tags;
        achieved.complete += u64::from(complete);
        achieved.reachable += u64::from(result.reachable);
        if complete && started.elapsed() >= measure_from {
            achieved.complete_after += 1;
        }
        achieved
            .errors
            .extend(result.errors.iter().map(ToString::to_string));
        achieved.last = Some(result);
    }
    (station, achieved)
}

// --- Modbus RTU over a pseudo-terminal --------------------------------------------------

/// How a simulated RTU unit behaves.
#[derive(Debug, Clone)]
pub enum Unit {
    /// Answers FC 1-4 from these registers (bits: register != 0) and FC 43 with its identity.
    Registers(Vec<u16>),
    /// Never answers.
    Silent,
}

/// Modbus CRC-16 (polynomial 0xA001 reflected, initial 0xFFFF), low byte first on the line.
pub fn crc16(frame: &[u8]) -> [u8; 2] {
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

/// RTU slaves on the master side of a pseudo-terminal; `path` is the slave side, which the
/// code under test opens with tokio-serial.
pub struct RtuBus {
    pub path: PathBuf,
    /// Requests heard, by unit id.
    pub heard: Arc<Mutex<HashMap<u8, u64>>>,
    /// Keeps the slave side open so the master never sees a hang-up between openings.
    slave: Option<tokio_serial::SerialStream>,
    task: Option<TaskGuard>,
}

impl std::fmt::Debug for RtuBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RtuBus")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl RtuBus {
    pub fn start(units: HashMap<u8, Unit>) -> RtuBus {
        use tokio_serial::SerialPort as _;
        let (master, slave) = tokio_serial::SerialStream::pair().expect("a pseudo-terminal pair");
        let path = PathBuf::from(slave.name().expect("the pty has a name"));
        let heard = Arc::new(Mutex::new(HashMap::new()));
        let task = tokio::spawn(serve_rtu(master, units, heard.clone()));
        RtuBus {
            path,
            heard,
            slave: Some(slave),
            task: Some(TaskGuard(task)),
        }
    }

    pub fn heard(&self, unit: u8) -> u64 {
        self.heard.lock().unwrap().get(&unit).copied().unwrap_or(0)
    }

    /// The adapter is unplugged: both sides of the pty close.
    pub fn unplug(&mut self) {
        self.task.take();
        self.slave.take();
    }
}

async fn serve_rtu(
    mut port: tokio_serial::SerialStream,
    units: HashMap<u8, Unit>,
    heard: Arc<Mutex<HashMap<u8, u64>>>,
) {
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = [0u8; 256];
    loop {
        match port.read(&mut chunk).await {
            Ok(0) | Err(_) => {
                // No reader on the slave side yet (EIO): a pty gives no readiness for that,
                // so retry the read after a short pause instead of spinning.
                tokio::time::sleep(Duration::from_millis(5)).await;
                continue;
            }
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
        while buf.len() >= 2 {
            let len = match buf[1] {
                1..=4 => 8,
                0x2B => 7,
                _ => {
                    buf.remove(0);
                    continue;
                }
            };
            if buf.len() < len {
                break;
            }
            let frame: Vec<u8> = buf.drain(..len).collect();
            if crc16(&frame[..len - 2]) != [frame[len - 2], frame[len - 1]] {
                continue;
            }
            let unit = frame[0];
            *heard.lock().unwrap().entry(unit).or_insert(0) += 1;
            let Some(Unit::Registers(regs)) = units.get(&unit) else {
                continue;
            };
            let mut answer = rtu_answer(unit, &frame, regs);
            let crc = crc16(&answer);
            answer.extend_from_slice(&crc);
            if port.write_all(&answer).await.is_err() {
                return;
            }
        }
    }
}

fn rtu_answer(unit: u8, frame: &[u8], regs: &[u16]) -> Vec<u8> {
    let fc = frame[1];
    if fc == 0x2B {
        let mut a = vec![unit, 0x2B, 0x0E, 0x01, 0x81, 0x00, 0x00, 3];
        for (id, text) in [
            (0u8, "Sim".to_owned()),
            (1, format!("RTU-{unit}")),
            (2, "1.0".into()),
        ] {
            a.push(id);
            a.push(text.len() as u8);
            a.extend_from_slice(text.as_bytes());
        }
        return a;
    }
    let start = usize::from(u16::from_be_bytes([frame[2], frame[3]]));
    let count = usize::from(u16::from_be_bytes([frame[4], frame[5]]));
    let Some(values) = regs.get(start..start + count) else {
        return vec![unit, fc | 0x80, 0x02];
    };
    if fc <= 2 {
        let mut bytes = vec![0u8; count.div_ceil(8)];
        for (i, v) in values.iter().enumerate() {
            if *v != 0 {
                bytes[i / 8] |= 1 << (i % 8);
            }
        }
        let mut a = vec![unit, fc, bytes.len() as u8];
        a.extend(bytes);
        a
    } else {
        let mut a = vec![unit, fc, (count * 2) as u8];
        a.extend(values.iter().flat_map(|r| r.to_be_bytes()));
        a
    }
}

/// Points `link` at `target`, replacing any previous link.
pub fn relink(link: &Path, target: &Path) -> io::Result<()> {
    match std::fs::remove_file(link) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    std::os::unix::fs::symlink(target, link)
}
