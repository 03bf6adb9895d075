//! Modbus TCP front end of the station simulator: serves a [`StationModel`] with
//! tokio-modbus's server.
//!
//! # Register image
//!
//! Each read is answered from the model's current values, encoded per tag with
//! [`codec::encode_into`] / [`codec::encode_bit`] at the tag's zero-based address
//! ([`TagSpec::modbus`]). Bool tags sharing a register keep each other's bits.
//!
//! The device's register map is the tags of each area joined into regions where they are at
//! most [`MAP_GAP`] registers (bits) apart, the agent's read planner's default gap, so the
//! agent's coalesced reads are answered; gaps inside a region read as zero, like a real
//! register map's padding. A read reaching outside every region is exception 02 (illegal
//! data address); a quantity of 0 or above the protocol limit (125 registers, 2000 bits) is
//! exception 03. Writes and every other function are exception 01 (illegal function): the
//! simulator is read-only, and a station is changed through scenario actions.
//!
//! FC 08 (diagnostics) and FC 11 (comm event counter) are answered from the model's
//! [`DiagCounters`](super::diag::DiagCounters), which count every request this front end
//! serves (see [`super::diag`]).
//!
//! FC 43 / 14 (read device identification) is answered from [`StationModel::identity`]
//! (tokio-modbus decodes the request and encodes the answer): objects 0x00 vendor name,
//! 0x01 product code, 0x02 revision (basic), 0x04 product name (regular); conformity level
//! 0x82, so individual access (read code 4) works too. Stream access from an unknown object
//! restarts at object 0 (Modbus application protocol 6.21); individual access to an object
//! the device lacks is exception 02.
//!
//! # Link behaviours
//!
//! - `Silent`: the service answers nothing (tokio-modbus's server then reads the next
//!   request), so each request times out at the client and the connection stays usable.
//! - `Exceptions`: every read (FC 1-4, 43) is exception 02.
//! - `Garbage`: answers are computed as usual, then the connection's transport
//!   (`LinkStream`, wrapped around the `TcpStream` and handed to the server in place of
//!   it) corrupts each outgoing frame: wrong transaction id, wrong protocol id, a length of
//!   0, or a random PDU under a wrong function code, chosen at random. Each makes a
//!   tokio-modbus client fail at once rather than hang.
//!
//! # Connections
//!
//! At most [`MAX_CONNECTIONS`] at once, like a small controller; more are closed on accept.
//! All of them end when the simulator is shut down (tokio-modbus cancels its connection
//! tasks when its `serve` future is dropped).

use std::future::{ready, Ready};
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_modbus::prelude::{
    ConformityLevel, DeviceIdObject, ReadCode, ReadDeviceIdentificationResponse,
};
use tokio_modbus::server::tcp::Server;
use tokio_modbus::{ExceptionCode, Request, Response};
use tokio_util::sync::CancellationToken;

use super::diag::Served;
use super::{lock, LinkBehaviour, SharedModel, SimError, SimHandle, SimOptions, StationModel};
use linesentry_agent::source::modbus::codec::{self, TagEncoding};
use linesentry_agent::source::modbus::plan::{MAX_READ_BITS, MAX_READ_REGISTERS};
use linesentry_agent::source::{DeviceIdentity, RegisterArea};
use linesentry_agent::source::{Profile, Protocol, TagSpec};

/// Unused registers (bits) between two tags that still belong to one mapped region.
pub const MAP_GAP: u16 = 10;
/// Modbus TCP connections served at once.
pub const MAX_CONNECTIONS: usize = 16;
/// Longest device identification object value, in bytes (longer ones are cut).
const MAX_OBJECT_LEN: usize = 64;

/// Starts a Modbus TCP simulator of `profile` on `options.listen`, with its ticker,
/// schedule and control port. Returns once every socket is bound.
pub async fn start(profile: Arc<Profile>, options: &SimOptions) -> Result<SimHandle, SimError> {
    if profile.protocol != Protocol::Modbus {
        return Err(SimError::Protocol {
            profile: profile.name.clone(),
            found: profile.protocol,
            expected: Protocol::Modbus,
        });
    }
    let map = RegisterMap::new(&profile);
    let model: SharedModel = Arc::new(std::sync::Mutex::new(StationModel::new(
        profile,
        options.seed,
    )));
    let bind_error = |source| SimError::Bind {
        what: "Modbus TCP server",
        addr: options.listen,
        source,
    };
    let listener = TcpListener::bind(options.listen)
        .await
        .map_err(bind_error)?;
    let local_addr = listener.local_addr().map_err(bind_error)?;
    let cancel = CancellationToken::new();
    let mut handle =
        SimHandle::launch(Arc::clone(&model), local_addr, options, cancel.clone()).await?;
    let service = Arc::new(Shared {
        model,
        map,
        seed: options.seed,
    });
    handle.track(tokio::spawn(serve(listener, service, cancel)));
    tracing::info!(%local_addr, control = ?handle.control_addr(), "Modbus TCP simulator listening");
    Ok(handle)
}

/// What every connection's service shares.
#[derive(Debug)]
struct Shared {
    model: SharedModel,
    map: RegisterMap,
    seed: u64,
}

/// Runs tokio-modbus's server until `cancel`. An accept error (out of descriptors) ends
/// `serve` and with it the open connections; the server is started again after a pause.
async fn serve(listener: TcpListener, shared: Arc<Shared>, cancel: CancellationToken) {
    let server = Server::new(listener);
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let connections = std::sync::atomic::AtomicU64::new(0);
    let on_connected = |stream: TcpStream, peer: SocketAddr| {
        let permit = Arc::clone(&permits).try_acquire_owned();
        let shared = Arc::clone(&shared);
        let n = connections.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        async move {
            let Ok(permit) = permit else {
                tracing::warn!(%peer, limit = MAX_CONNECTIONS, "Modbus connection refused: too many open");
                return Ok(None);
            };
            tracing::debug!(%peer, "Modbus connection accepted");
            let stream = LinkStream::new(stream, Arc::clone(&shared.model), shared.seed ^ n);
            io::Result::Ok(Some((
                Service {
                    shared,
                    _permit: permit,
                },
                stream,
            )))
        }
    };
    let on_process_error = |e: io::Error| {
        tracing::debug!(error = %e, "Modbus connection ended with an error");
    };
    loop {
        tokio::select! {
            () = cancel.cancelled() => break,
            result = server.serve(&on_connected, on_process_error) => {
                if let Err(e) = result {
                    tracing::warn!(error = %e, "Modbus TCP accept failed; restarting the server");
                }
                tokio::select! {
                    () = cancel.cancelled() => break,
                    () = tokio::time::sleep(Duration::from_millis(100)) => {}
                }
            }
        }
    }
}

/// One connection's request handler.
#[derive(Debug)]
struct Service {
    shared: Arc<Shared>,
    /// Frees the connection's slot when the connection ends.
    _permit: OwnedSemaphorePermit,
}

impl tokio_modbus::server::Service for Service {
    type Request = Request<'static>;
    type Response = Option<Response>;
    type Exception = ExceptionCode;
    type Future = Ready<Result<Self::Response, Self::Exception>>;

    fn call(&self, request: Self::Request) -> Self::Future {
        let mut model = lock(&self.shared.model);
        model.diag_mut().arrived();
        let result = if model.link() == LinkBehaviour::Silent {
            Ok(None)
        } else if let Some(diagnostics) = model.diag_mut().answer(&request) {
            diagnostics.map(Some)
        } else {
            answer(&self.shared.map, &model, &request)
        };
        let served = match &result {
            Ok(Some(_)) => Served::Answered,
            Ok(None) => Served::NoResponse,
            Err(_) => Served::Exception,
        };
        model
            .diag_mut()
            .record(request.function_code().value(), served);
        ready(result)
    }
}

/// The answer to `request`: `Ok(None)` sends nothing.
fn answer(
    map: &RegisterMap,
    model: &StationModel,
    request: &Request<'_>,
) -> Result<Option<Response>, ExceptionCode> {
    let is_read = matches!(
        request,
        Request::ReadCoils(..)
            | Request::ReadDiscreteInputs(..)
            | Request::ReadHoldingRegisters(..)
            | Request::ReadInputRegisters(..)
            | Request::ReadDeviceIdentification(..)
    );
    match model.link() {
        LinkBehaviour::Silent => return Ok(None),
        LinkBehaviour::Exceptions if is_read => return Err(ExceptionCode::IllegalDataAddress),
        _ => {}
    }
    let response =
        match *request {
            Request::ReadCoils(start, count) => {
                Response::ReadCoils(map.bits(RegisterArea::Coil, start, count, model)?)
            }
            Request::ReadDiscreteInputs(start, count) => Response::ReadDiscreteInputs(map.bits(
                RegisterArea::DiscreteInput,
                start,
                count,
                model,
            )?),
            Request::ReadHoldingRegisters(start, count) => Response::ReadHoldingRegisters(
                map.registers(RegisterArea::HoldingRegister, start, count, model)?,
            ),
            Request::ReadInputRegisters(start, count) => Response::ReadInputRegisters(
                map.registers(RegisterArea::InputRegister, start, count, model)?,
            ),
            Request::ReadDeviceIdentification(code, object) => Response::ReadDeviceIdentification(
                device_identification(model.identity(), code, object)?,
            ),
            _ => return Err(ExceptionCode::IllegalFunction),
        };
    Ok(Some(response))
}

/// The FC 43 / 14 answer for `identity` (see the module documentation).
fn device_identification(
    identity: &DeviceIdentity,
    code: ReadCode,
    object: u8,
) -> Result<ReadDeviceIdentificationResponse, ExceptionCode> {
    let text = |value: &Option<String>| {
        let mut bytes = value.as_deref().unwrap_or("").as_bytes().to_vec();
        bytes.truncate(MAX_OBJECT_LEN);
        bytes
    };
    let objects: Vec<(u8, Vec<u8>)> = vec![
        (0x00, text(&identity.vendor)),
        (0x01, text(&identity.product_code)),
        (0x02, text(&identity.revision)),
        (0x04, text(&identity.product_name)),
    ];
    let last = match code {
        ReadCode::Basic => 0x02,
        ReadCode::Regular | ReadCode::Extended | ReadCode::Specific => 0x7F,
    };
    let selected: Vec<&(u8, Vec<u8>)> = if code == ReadCode::Specific {
        let found = objects.iter().find(|(id, _)| *id == object);
        vec![found.ok_or(ExceptionCode::IllegalDataAddress)?]
    } else {
        let known = objects.iter().any(|(id, _)| *id == object && *id <= last);
        let from = if known { object } else { 0 };
        objects
            .iter()
            .filter(|(id, _)| (from..=last).contains(id))
            .collect()
    };
    Ok(ReadDeviceIdentificationResponse {
        read_code: code,
        conformity_level: ConformityLevel::RegularIdentification,
        more_follows: false,
        next_object_id: 0,
        device_id_objects: selected
            .into_iter()
            .map(|(id, value)| DeviceIdObject {
                id: *id,
                value: value.clone().into(),
            })
            .collect(),
    })
}

/// Where each tag of a Modbus profile sits, per area, and which addresses answer.
#[derive(Debug, Default)]
struct RegisterMap {
    coils: AreaMap,
    discrete_inputs: AreaMap,
    holding_registers: AreaMap,
    input_registers: AreaMap,
}

#[derive(Debug, Default)]
struct AreaMap {
    slots: Vec<Slot>,
    /// Sorted, disjoint, half-open address ranges that answer.
    regions: Vec<(u32, u32)>,
}

#[derive(Debug)]
struct Slot {
    /// Index of the tag in the profile (and the model).
    tag: usize,
    start: u32,
    /// Registers (bits) the tag spans.
    len: u32,
    encoding: TagEncoding,
}

impl Slot {
    fn end(&self) -> u32 {
        self.start + self.len
    }
}

impl RegisterMap {
    fn new(profile: &Profile) -> Self {
        let mut map = RegisterMap::default();
        for (tag, spec) in profile.tags.iter().enumerate() {
            let Some(address) = spec.modbus else {
                continue;
            };
            let len = if address.area.is_bit() {
                1
            } else {
                u32::from(spec.registers())
            };
            map.area_mut(address.area).slots.push(Slot {
                tag,
                start: u32::from(address.index),
                len,
                encoding: encoding(spec, address.bit),
            });
        }
        for area in [
            &mut map.coils,
            &mut map.discrete_inputs,
            &mut map.holding_registers,
            &mut map.input_registers,
        ] {
            area.slots.sort_by_key(|s| (s.start, s.len));
            for slot in &area.slots {
                match area.regions.last_mut() {
                    Some(last) if slot.start <= last.1 + u32::from(MAP_GAP) => {
                        last.1 = last.1.max(slot.end());
                    }
                    _ => area.regions.push((slot.start, slot.end())),
                }
            }
        }
        map
    }

    fn area(&self, area: RegisterArea) -> &AreaMap {
        match area {
            RegisterArea::Coil => &self.coils,
            RegisterArea::DiscreteInput => &self.discrete_inputs,
            RegisterArea::HoldingRegister => &self.holding_registers,
            RegisterArea::InputRegister => &self.input_registers,
        }
    }

    fn area_mut(&mut self, area: RegisterArea) -> &mut AreaMap {
        match area {
            RegisterArea::Coil => &mut self.coils,
            RegisterArea::DiscreteInput => &mut self.discrete_inputs,
            RegisterArea::HoldingRegister => &mut self.holding_registers,
            RegisterArea::InputRegister => &mut self.input_registers,
        }
    }

    /// `count` registers of `area` from `start`, encoded from the model's values.
    fn registers(
        &self,
        area: RegisterArea,
        start: u16,
        count: u16,
        model: &StationModel,
    ) -> Result<Vec<u16>, ExceptionCode> {
        let (from, to) = self.check(area, start, count, MAX_READ_REGISTERS)?;
        let slots: Vec<&Slot> = self
            .area(area)
            .slots
            .iter()
            .filter(|s| s.start < to && s.end() > from)
            .collect();
        // The image spans the read and every tag it touches, so tags are encoded whole.
        let lo = slots.iter().map(|s| s.start).fold(from, u32::min);
        let hi = slots.iter().map(|s| s.end()).fold(to, u32::max);
        let mut image = vec![0u16; (hi - lo) as usize];
        for slot in slots {
            let at = (slot.start - lo) as usize..(slot.end() - lo) as usize;
            let value = model.value_at(slot.tag);
            if let Err(e) = codec::encode_into(&slot.encoding, value, &mut image[at]) {
                tracing::debug!(tag = %model.profile().tags[slot.tag].name, %value, error = %e, "value does not encode; reading zeros");
            }
        }
        Ok(image[(from - lo) as usize..(to - lo) as usize].to_vec())
    }

    /// `count` bits of `area` from `start`.
    fn bits(
        &self,
        area: RegisterArea,
        start: u16,
        count: u16,
        model: &StationModel,
    ) -> Result<Vec<bool>, ExceptionCode> {
        let (from, to) = self.check(area, start, count, MAX_READ_BITS)?;
        let mut bits = vec![false; (to - from) as usize];
        for slot in self
            .area(area)
            .slots
            .iter()
            .filter(|s| s.start >= from && s.start < to)
        {
            bits[(slot.start - from) as usize] =
                codec::encode_bit(model.value_at(slot.tag)).unwrap_or(false);
        }
        Ok(bits)
    }

    /// The half-open range of a valid read, or the exception that refuses it.
    fn check(
        &self,
        area: RegisterArea,
        start: u16,
        count: u16,
        max: u16,
    ) -> Result<(u32, u32), ExceptionCode> {
        if count == 0 || count > max {
            return Err(ExceptionCode::IllegalDataValue);
        }
        let (from, to) = (u32::from(start), u32::from(start) + u32::from(count));
        let mapped = self
            .area(area)
            .regions
            .iter()
            .any(|&(lo, hi)| lo <= from && to <= hi);
        if mapped {
            Ok((from, to))
        } else {
            Err(ExceptionCode::IllegalDataAddress)
        }
    }
}

fn encoding(spec: &TagSpec, bit: Option<u8>) -> TagEncoding {
    TagEncoding {
        data_type: spec.data_type,
        order: spec.order,
        length: spec.length,
        bit,
        scale: spec.scale,
        offset: spec.offset,
    }
}

/// The connection's transport: a `TcpStream` that, while the model's link is `Garbage`,
/// corrupts every frame written to it. Reads pass through.
///
/// tokio-modbus's server sends and flushes one response frame at a time, so every write
/// starts a frame. A corrupted frame is queued whole and reported written in full, then
/// drained before anything else, so order is kept and a partial write cannot split it.
#[derive(Debug)]
struct LinkStream {
    inner: TcpStream,
    model: SharedModel,
    rng: fastrand::Rng,
    /// Corrupted bytes not yet written.
    pending: Vec<u8>,
}

impl LinkStream {
    fn new(inner: TcpStream, model: SharedModel, seed: u64) -> Self {
        LinkStream {
            inner,
            model,
            rng: fastrand::Rng::with_seed(seed),
            pending: Vec::new(),
        }
    }

    /// Writes out `pending`; ready when it is empty.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.pending.is_empty() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.pending))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.pending.drain(..n);
        }
        Poll::Ready(Ok(()))
    }
}

/// `frame` corrupted one of four ways (see the module documentation).
fn corrupt(frame: &[u8], rng: &mut fastrand::Rng) -> Vec<u8> {
    let mut out = frame.to_vec();
    if out.len() < 8 {
        // Not a whole frame: noise it is.
        for b in &mut out {
            *b = rng.u8(..);
        }
        return out;
    }
    match rng.u8(0..4) {
        0 => {
            out[0] ^= 0x5A;
            out[1] ^= 0xA5;
        }
        1 => out[2..4].copy_from_slice(&rng.u16(1..).to_be_bytes()),
        2 => out[4..6].copy_from_slice(&[0, 0]),
        _ => {
            let function = out[7] ^ 0x40;
            out.truncate(7);
            out.push(function);
            out.extend((0..rng.usize(0..32)).map(|_| rng.u8(..)));
            let len = (out.len() - 6) as u16;
            out[4..6].copy_from_slice(&len.to_be_bytes());
        }
    }
    out
}

impl AsyncRead for LinkStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for LinkStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        if lock(&this.model).link() != LinkBehaviour::Garbage {
            return Pin::new(&mut this.inner).poll_write(cx, buf);
        }
        this.pending = corrupt(buf, &mut this.rng);
        // The frame is queued; what cannot be written now goes out on flush.
        if let Poll::Ready(Err(e)) = this.poll_drain(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn press() -> (RegisterMap, StationModel) {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../devices/stamping_press.toml");
        let profile = super::super::load_profile(&path).unwrap();
        (RegisterMap::new(&profile), StationModel::new(profile, 0))
    }

    #[test]
    fn tags_close_together_form_one_region_and_distant_ones_another() {
        let (map, _) = press();
        // 200-203 setpoints, 210-212 alarm limits (gap 6): one region; 101 alone.
        assert_eq!(map.holding_registers.regions, vec![(101, 102), (200, 213)]);
    }

    #[test]
    fn reads_in_gaps_are_zero_and_reads_outside_regions_are_exception_02() {
        let (map, model) = press();
        let regs = map
            .registers(RegisterArea::HoldingRegister, 204, 6, &model)
            .unwrap();
        assert_eq!(regs, vec![0; 6]);
        assert_eq!(
            map.registers(RegisterArea::HoldingRegister, 0, 1, &model),
            Err(ExceptionCode::IllegalDataAddress)
        );
        assert_eq!(
            map.registers(RegisterArea::HoldingRegister, 212, 2, &model),
            Err(ExceptionCode::IllegalDataAddress)
        );
        assert_eq!(
            map.registers(RegisterArea::HoldingRegister, 200, 0, &model),
            Err(ExceptionCode::IllegalDataValue)
        );
        assert_eq!(
            map.bits(RegisterArea::Coil, 0, 2, &model),
            Ok(vec![true, true])
        );
    }

    #[test]
    fn half_a_wide_tag_reads_as_its_half() {
        let (map, model) = press();
        let whole = map
            .registers(RegisterArea::HoldingRegister, 200, 2, &model)
            .unwrap();
        let second = map
            .registers(RegisterArea::HoldingRegister, 201, 1, &model)
            .unwrap();
        assert_eq!(second, whole[1..]);
    }

    #[test]
    fn device_identification_follows_read_code_and_object_id() {
        let identity = DeviceIdentity {
            vendor: Some("V".into()),
            product_code: Some("P".into()),
            revision: Some("1.0".into()),
            product_name: Some("N".into()),
            ..DeviceIdentity::default()
        };
        let ids = |code, object| {
            device_identification(&identity, code, object)
                .map(|r| r.device_id_objects.iter().map(|o| o.id).collect::<Vec<_>>())
        };
        assert_eq!(ids(ReadCode::Basic, 0), Ok(vec![0, 1, 2]));
        assert_eq!(ids(ReadCode::Basic, 1), Ok(vec![1, 2]));
        assert_eq!(ids(ReadCode::Basic, 4), Ok(vec![0, 1, 2]), "restart at 0");
        assert_eq!(ids(ReadCode::Regular, 0), Ok(vec![0, 1, 2, 4]));
        assert_eq!(ids(ReadCode::Specific, 2), Ok(vec![2]));
        assert_eq!(
            ids(ReadCode::Specific, 3),
            Err(ExceptionCode::IllegalDataAddress)
        );
    }

    #[test]
    fn every_corruption_breaks_the_frame_header_or_function() {
        let frame = [0, 7, 0, 0, 0, 5, 1, 3, 2, 0x12, 0x34];
        let mut rng = fastrand::Rng::with_seed(1);
        for _ in 0..200 {
            let bad = corrupt(&frame, &mut rng);
            let header_broken = bad[0..2] != frame[0..2]
                || bad[2..4] != [0, 0]
                || bad[4..6] == [0, 0]
                || bad[7] != frame[7];
            assert!(header_broken, "{bad:02X?}");
        }
    }
}
