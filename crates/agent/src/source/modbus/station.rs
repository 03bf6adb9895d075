//! One poll of one Modbus station, whatever carries the requests (TCP or a shared serial bus).
//!
//! The [`Poller`] owns everything about a station that does not depend on the transport: the
//! read plan (computed once from the profile with [`plan_reads`]), the circuit breaker, the
//! device-identification schedule and the counters. The transport is a [`Link`]: the TCP
//! connection of [`TcpStation`](super::TcpStation) or the bus arbiter handle of
//! [`RtuStation`](super::RtuStation). Both kinds of station are this poller over their link,
//! so the rules below hold for both.
//!
//! A poll:
//! 1. asks the breaker; while the device is isolated the poll returns at once with
//!    [`SourceError::CircuitOpen`] and touches neither the device nor the bus;
//! 2. prepares the link (TCP: connects under the timeout, or returns at once with
//!    [`SourceError::Connect`] while the reconnect backoff runs);
//! 3. sends one request per [`ReadBlock`], each bounded by the station's timeout. An exception
//!    fails that block only. A timeout or a transport error stops the poll (on TCP the
//!    connection is dropped, since transaction ids may be out of step) but keeps the readings
//!    already decoded. A response of the wrong length fails its block with
//!    [`SourceError::Decode`], a value that does not decode (NaN, non-ASCII text) fails its tag:
//!    never a wrong value;
//! 4. reads the device identification (FC 43/14, basic objects) on every new connection and
//!    then every `identity_every` polls, unless the device said "illegal function" on this
//!    connection;
//! 5. reads the diagnostic counters its profile's `[diagnostics]` lists (FC 08 / FC 11, see
//!    [`diag`](super::diag)) every `every_s` seconds, each request under the same timeout. A
//!    function the device answers with exception 01 (illegal function) is not asked again
//!    for the life of the station: one warning, one count (`diagnostics_refused`), never a
//!    retry on every poll. Each counter becomes a reading `_modbus.diag.<counter>`;
//! 6. tells the breaker how it went. A poll fails when the link failed (connect, timeout,
//!    transport, mismatched transaction) or the device answered garbage (a response of the
//!    wrong length). Exceptions are answers: a device that says "illegal address" is alive and
//!    stays in service. Tag values that do not decode are not counted either: one
//!    uninitialised float register must not take the device's other tags away. A serial bus
//!    that is down is not the unit's fault and is not counted against the unit.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_modbus::prelude::{ExceptionCode, ReadCode, ReadDeviceIdentificationResponse};
use tokio_modbus::{Request, Response};

use super::breaker::{self, Admission, Breaker, BreakerPolicy, BreakerState, Transition};
use super::codec::{decode_bit, decode_registers, TagEncoding};
use super::diag::{DiagCounter, DiagSchedule};
use super::plan::{extract, plan_reads, PlanError, PlanLimits, ReadBlock, TagSpan};
use crate::reading::reserved;
use crate::source::StationConfig;
use crate::source::{DeviceIdentity, PollResult, Quality, Reading, RegisterArea, SourceError};
use linesentry_common::BackoffPolicy;
use linesentry_event::Timestamp;

/// Tunables of a Modbus station; [`Default`] gives the documented defaults.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StationOptions {
    /// How tags are coalesced into requests; default [`PlanLimits::default`].
    pub limits: PlanLimits,
    /// When the device is isolated; default 3 failed polls, then 1 s doubling to 30 s.
    pub breaker: BreakerPolicy,
    /// Reconnect timing of a TCP device; default 200 ms doubling to 30 s, ±20 %.
    pub reconnect: BackoffPolicy,
    /// Polls between two device-identification reads; default 60. 0 reads it only on a new
    /// connection.
    pub identity_every: u32,
    /// Seed of the jitter; `None` picks one at random.
    pub seed: Option<u64>,
}

/// Polls between two FC 43/14 identity reads, by default; 0 reads only on a new connection.
pub const DEFAULT_IDENTITY_EVERY: u32 = 60;

impl Default for StationOptions {
    fn default() -> Self {
        StationOptions {
            limits: PlanLimits::default(),
            breaker: BreakerPolicy::default(),
            reconnect: breaker::RECONNECT,
            identity_every: DEFAULT_IDENTITY_EVERY,
            seed: None,
        }
    }
}

impl StationOptions {
    /// The options a station's config asks for (`[[stations]]` tuning keys); the growth and
    /// jitter of both backoffs stay those of [`breaker::RECONNECT`] and
    /// [`breaker::ISOLATION`].
    pub fn from_tuning(tuning: &crate::source::SourceTuning) -> Self {
        StationOptions {
            limits: tuning.plan,
            breaker: BreakerPolicy {
                failure_threshold: tuning.breaker_failures,
                open: BackoffPolicy {
                    initial: tuning.breaker_open,
                    max: tuning.breaker_open_max,
                    ..breaker::ISOLATION
                },
            },
            reconnect: BackoffPolicy {
                initial: tuning.reconnect_initial,
                max: tuning.reconnect_max,
                ..breaker::RECONNECT
            },
            identity_every: tuning.identity_every,
            seed: None,
        }
    }
}

/// What a station has done since it was created, for `/metrics`. Monotonic except
/// `last_poll_latency`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModbusCounters {
    /// Calls of `poll`.
    pub polls: u64,
    /// Polls the breaker counted as failed.
    pub polls_failed: u64,
    /// Polls that returned at once: device isolated, reconnect backoff or serial bus down.
    pub polls_skipped: u64,
    /// Requests sent (reads and identification).
    pub requests: u64,
    /// Requests answered, exceptions included.
    pub responses: u64,
    /// Requests without an answer within the timeout.
    pub timeouts: u64,
    /// I/O errors and frames that did not parse.
    pub transport_errors: u64,
    /// Answers that did not belong to the request (transaction id, unit or function code).
    pub protocol_errors: u64,
    /// Exception responses by exception code.
    pub exceptions: BTreeMap<u8, u64>,
    /// Blocks of the wrong length and tag values that did not decode.
    pub decode_errors: u64,
    /// Connection attempts (TCP).
    pub connect_attempts: u64,
    /// Connection attempts that failed (TCP).
    pub connect_failures: u64,
    /// Successful connections after the first one (TCP), or serial port reopenings seen (RTU).
    pub reconnects: u64,
    /// Times the breaker isolated the device.
    pub circuit_opens: u64,
    /// Diagnostic functions (FC 08, FC 11) the device refused with exception 01 and that are
    /// no longer asked.
    pub diagnostics_refused: u64,
    /// Wall time of the last poll.
    pub last_poll_latency: Option<Duration>,
}

/// Why the link cannot carry this poll.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct LinkDown {
    pub(crate) error: SourceError,
    /// Whether the device was tried (and so the breaker counts the poll as failed).
    pub(crate) attempted: bool,
}

/// Why one request got no usable answer.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum LinkError {
    Timeout,
    /// I/O error or a frame that did not parse.
    Transport(String),
    /// An answer to another request: transaction id, unit or function code differ.
    Protocol(String),
    /// The carrier itself is gone (the serial port); not the unit's fault.
    Down(SourceError),
}

pub(crate) type CallResult = Result<Result<Response, ExceptionCode>, LinkError>;

/// What carries a station's requests.
pub(crate) trait Link {
    /// Readies the link for a poll. `probe`: the breaker's trial poll, which skips any
    /// reconnect wait. Counts connection attempts.
    async fn prepare(
        &mut self,
        probe: bool,
        timeout: Duration,
        counters: &mut ModbusCounters,
    ) -> Result<(), LinkDown>;

    /// One request, answered within `timeout` or failed. On a link failure the link itself
    /// decides what to reset (TCP drops the connection).
    async fn call(&mut self, request: Request<'static>, timeout: Duration) -> CallResult;

    /// Changes whenever a new connection (TCP) or a reopened serial port (RTU) is in use.
    fn epoch(&self) -> u64;
}

/// A tag ready to be cut out of its block and decoded.
#[derive(Debug, Clone)]
struct PlannedTag {
    name: Arc<str>,
    span: TagSpan,
    encoding: TagEncoding,
}

/// The station's tags and the requests that read them, computed once.
#[derive(Debug, Clone)]
pub(crate) struct StationPlan {
    station_id: Arc<str>,
    tags: Vec<PlannedTag>,
    blocks: Vec<ReadBlock>,
}

impl StationPlan {
    pub(crate) fn new(station: &StationConfig, limits: PlanLimits) -> Result<Self, SourceError> {
        let mut tags = Vec::with_capacity(station.profile.tags.len());
        for (i, spec) in station.profile.tags.iter().enumerate() {
            let Some(address) = spec.modbus else {
                return Err(SourceError::Other(format!(
                    "tag `{}` of profile `{}` has no Modbus address; a Modbus station needs a \
                     profile with protocol = \"modbus\"",
                    spec.name, station.profile.name
                )));
            };
            let len = if address.area.is_bit() {
                1
            } else {
                spec.registers()
            };
            tags.push(PlannedTag {
                name: Arc::from(spec.name.as_str()),
                span: TagSpan::new(i, address, len),
                encoding: TagEncoding {
                    data_type: spec.data_type,
                    order: spec.order,
                    length: spec.length,
                    bit: address.bit,
                    scale: spec.scale,
                    offset: spec.offset,
                },
            });
        }
        let spans: Vec<TagSpan> = tags.iter().map(|t| t.span).collect();
        let blocks = plan_reads(&spans, &limits).map_err(|e| {
            let tag = match &e {
                PlanError::EmptyTag { tag, .. }
                | PlanError::TagTooLarge { tag, .. }
                | PlanError::PastEndOfAddressSpace { tag, .. } => tags.get(*tag),
                _ => None,
            };
            let named = tag.map_or(String::new(), |t| {
                format!(" (tag {} is `{}`)", t.span.tag, t.name)
            });
            SourceError::Other(format!(
                "cannot plan the reads of profile `{}`: {e}{named}",
                station.profile.name
            ))
        })?;
        Ok(StationPlan {
            station_id: Arc::from(station.id.as_str()),
            tags,
            blocks,
        })
    }

    pub(crate) fn blocks(&self) -> &[ReadBlock] {
        &self.blocks
    }

    /// Decodes one block's response into `out`. Returns false when the response itself was
    /// garbage (wrong length or kind), which the breaker counts.
    fn decode_block(
        &self,
        block: &ReadBlock,
        response: Response,
        out: &mut PollResult,
        counters: &mut ModbusCounters,
    ) -> bool {
        let received = Timestamp::now();
        let data = match block_data(block, response) {
            Ok(data) => data,
            Err(reason) => {
                counters.decode_errors += 1;
                out.errors.push(SourceError::Decode {
                    what: self.describe(block),
                    reason,
                });
                return false;
            }
        };
        // One reading per tag at most: growing the vector push by push was 3 % of the agent's
        // CPU on `bench poll` (50 stations x 100 tags).
        out.readings.reserve(block.tags.len());
        for &i in &block.tags {
            let tag = &self.tags[i];
            let decoded = match &data {
                BlockData::Bits(bits) => extract(block, bits, &tag.span)
                    .map_err(|e| e.to_string())
                    .and_then(|b| decode_bit(b).map_err(|e| e.to_string())),
                BlockData::Registers(regs) => extract(block, regs, &tag.span)
                    .map_err(|e| e.to_string())
                    .and_then(|r| decode_registers(&tag.encoding, r).map_err(|e| e.to_string())),
            };
            match decoded {
                Ok(value) => out.readings.push(Reading {
                    station_id: self.station_id.clone(),
                    tag: tag.name.clone(),
                    value,
                    quality: Quality::Good,
                    source_time: None,
                    received,
                }),
                Err(reason) => {
                    counters.decode_errors += 1;
                    out.errors.push(SourceError::Decode {
                        what: format!("tag `{}`", tag.name),
                        reason,
                    });
                }
            }
        }
        true
    }

    /// `holding registers 100-109 (tags a, b)`.
    fn describe(&self, block: &ReadBlock) -> String {
        let mut text = describe_range(block.area, block.start, block.count);
        text.push_str(" (tag");
        if block.tags.len() > 1 {
            text.push('s');
        }
        for (n, &i) in block.tags.iter().enumerate() {
            let sep = if n == 0 { " " } else { ", " };
            let _ = write!(text, "{sep}{}", self.tags[i].name);
        }
        text.push(')');
        text
    }
}

/// `coils 0-15`, `input registers 7`.
pub(crate) fn describe_range(area: RegisterArea, start: u16, count: u16) -> String {
    let name = match area {
        RegisterArea::Coil => "coil",
        RegisterArea::DiscreteInput => "discrete input",
        RegisterArea::HoldingRegister => "holding register",
        RegisterArea::InputRegister => "input register",
    };
    let last = u32::from(start) + u32::from(count.max(1)) - 1;
    if count <= 1 {
        format!("{name} {start}")
    } else {
        format!("{name}s {start}-{last}")
    }
}

/// The read request for a block.
pub(crate) fn request(block: &ReadBlock) -> Request<'static> {
    match block.area {
        RegisterArea::Coil => Request::ReadCoils(block.start, block.count),
        RegisterArea::DiscreteInput => Request::ReadDiscreteInputs(block.start, block.count),
        RegisterArea::HoldingRegister => Request::ReadHoldingRegisters(block.start, block.count),
        RegisterArea::InputRegister => Request::ReadInputRegisters(block.start, block.count),
    }
}

/// FC 43 / 14, basic objects (VendorName, ProductCode, MajorMinorRevision) from object 0.
pub(crate) const IDENTITY_REQUEST: Request<'static> =
    Request::ReadDeviceIdentification(ReadCode::Basic, 0x00);

#[derive(Debug, Clone, PartialEq)]
enum BlockData {
    Bits(Vec<bool>),
    Registers(Vec<u16>),
}

/// The values of a block's response, checked against the block's size.
///
/// The transport unpacks every bit of the bytes a bit response carries, so a correct answer to
/// `count` bits has exactly `count.div_ceil(8) * 8` of them; the padding is dropped here.
fn block_data(block: &ReadBlock, response: Response) -> Result<BlockData, String> {
    let count = usize::from(block.count);
    match (block.area, response) {
        (RegisterArea::Coil, Response::ReadCoils(mut bits))
        | (RegisterArea::DiscreteInput, Response::ReadDiscreteInputs(mut bits)) => {
            let expected = count.div_ceil(8);
            if bits.len() != expected * 8 {
                return Err(format!(
                    "the response carries {} bytes of bits, expected {expected} for {count} bits",
                    bits.len() / 8
                ));
            }
            bits.truncate(count);
            Ok(BlockData::Bits(bits))
        }
        (RegisterArea::HoldingRegister, Response::ReadHoldingRegisters(regs))
        | (RegisterArea::InputRegister, Response::ReadInputRegisters(regs)) => {
            block
                .check_response(regs.len())
                .map_err(|e| e.to_string())?;
            Ok(BlockData::Registers(regs))
        }
        (_, other) => Err(format!(
            "the response is of the wrong kind: {:?}",
            other.function_code()
        )),
    }
}

/// Name of a Modbus exception code (application protocol, section 7).
pub fn exception_name(code: u8) -> &'static str {
    match code {
        0x01 => "illegal function",
        0x02 => "illegal data address",
        0x03 => "illegal data value",
        0x04 => "server device failure",
        0x05 => "acknowledge",
        0x06 => "server device busy",
        0x08 => "memory parity error",
        0x0A => "gateway path unavailable",
        0x0B => "gateway target device failed to respond",
        _ => "unknown exception",
    }
}

/// The exception inside a function-code mismatch that is none: tokio-modbus 0.17 files an
/// exception to a function it has no type for (FC 08, FC 11, sent as `Request::Custom`)
/// under the function's named code, which then differs from the request's `Custom` code.
/// The device did answer; the link is in step.
pub(crate) fn custom_exception(error: &tokio_modbus::ProtocolError) -> Option<ExceptionCode> {
    match error {
        tokio_modbus::ProtocolError::FunctionCodeMismatch {
            request,
            result: Err(exception),
        } if request.value() == exception.function.value() => Some(exception.exception),
        _ => None,
    }
}

fn exception_error(code: ExceptionCode, what: String) -> SourceError {
    let code = u8::from(code);
    SourceError::Exception {
        code,
        name: exception_name(code).to_owned(),
        what,
    }
}

/// The identity in a FC 43/14 response; objects that are not UTF-8 are left out with an error.
fn parse_identity(
    response: &ReadDeviceIdentificationResponse,
    errors: &mut Vec<SourceError>,
) -> DeviceIdentity {
    let mut identity = DeviceIdentity::default();
    for object in &response.device_id_objects {
        let slot = match object.id {
            0x00 => &mut identity.vendor,
            0x01 => &mut identity.product_code,
            0x02 => &mut identity.revision,
            0x04 => &mut identity.product_name,
            _ => continue,
        };
        match std::str::from_utf8(&object.value) {
            Ok(text) => *slot = Some(text.to_owned()),
            Err(e) => errors.push(SourceError::Decode {
                what: format!("device identification object {:#04x}", object.id),
                reason: format!("not UTF-8: {e}"),
            }),
        }
    }
    identity
}

/// How an identification request went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IdentityOutcome {
    Answered,
    /// Exception 01: the device does not implement FC 43; not asked again on this connection.
    Unsupported,
    /// Another exception or a garbled answer: asked again at the next interval.
    Failed,
    /// Timeout or transport error: asked again at the next interval, not on the reconnect it
    /// caused (a device that ignores FC 43 would otherwise never be read).
    NoAnswer,
    /// The serial bus was down: nothing learnt, still due.
    NotSent,
}

/// What one identification request gave the poll.
#[derive(Debug)]
struct IdentityRead {
    outcome: IdentityOutcome,
    /// The answer was garbled (counts against the breaker).
    garbage: bool,
    /// The link failed.
    lost: Option<(LinkError, SourceError)>,
}

impl IdentityRead {
    fn answer(outcome: IdentityOutcome) -> Self {
        IdentityRead {
            outcome,
            garbage: false,
            lost: None,
        }
    }
}

/// When to read the device identification. Pure.
#[derive(Debug, Clone)]
pub(crate) struct IdentityTracker {
    every: u32,
    epoch: Option<u64>,
    unsupported: bool,
    polls_until_due: u32,
    no_answer_last: bool,
}

impl IdentityTracker {
    pub(crate) fn new(every: u32) -> Self {
        IdentityTracker {
            every,
            epoch: None,
            unsupported: false,
            polls_until_due: 0,
            no_answer_last: false,
        }
    }

    /// Call once per poll that got through, before [`IdentityTracker::due`].
    pub(crate) fn start_poll(&mut self, epoch: u64) {
        if self.epoch != Some(epoch) {
            self.epoch = Some(epoch);
            self.unsupported = false;
            if !self.no_answer_last {
                self.polls_until_due = 0;
            }
        }
        self.polls_until_due = self.polls_until_due.saturating_sub(1);
    }

    pub(crate) fn due(&self) -> bool {
        !self.unsupported && self.polls_until_due == 0
    }

    pub(crate) fn record(&mut self, outcome: IdentityOutcome) {
        if outcome == IdentityOutcome::NotSent {
            return;
        }
        self.no_answer_last = outcome == IdentityOutcome::NoAnswer;
        match outcome {
            IdentityOutcome::Unsupported => self.unsupported = true,
            _ if self.every == 0 => self.polls_until_due = u32::MAX,
            _ => self.polls_until_due = self.every,
        }
    }
}

/// The transport-independent state of one Modbus station.
#[derive(Debug)]
pub(crate) struct Poller {
    plan: StationPlan,
    timeout: Duration,
    breaker: Breaker,
    identity: IdentityTracker,
    diagnostics: Option<DiagSchedule>,
    counters: ModbusCounters,
}

impl Poller {
    pub(crate) fn new(
        station: &StationConfig,
        options: &StationOptions,
        seed: u64,
    ) -> Result<Self, SourceError> {
        Ok(Poller {
            plan: StationPlan::new(station, options.limits)?,
            timeout: station.timeout,
            breaker: Breaker::new(options.breaker, seed),
            identity: IdentityTracker::new(options.identity_every),
            diagnostics: station.profile.diagnostics.clone().map(DiagSchedule::new),
            counters: ModbusCounters::default(),
        })
    }

    pub(crate) fn counters(&self) -> &ModbusCounters {
        &self.counters
    }

    pub(crate) fn breaker_state(&self) -> BreakerState {
        self.breaker.state()
    }

    pub(crate) fn plan(&self) -> &StationPlan {
        &self.plan
    }

    /// One poll over `link`. Cancel-safe as far as the links are: the TCP link replaces a
    /// connection left with a request in flight, the RTU arbiter drops the answer nobody waits
    /// for.
    pub(crate) async fn poll(&mut self, link: &mut impl Link) -> PollResult {
        let started = Instant::now();
        self.counters.polls += 1;
        let mut result = PollResult::default();
        let admission = self.breaker.admit(started);
        if let Admission::Reject { retry_in } = admission {
            self.counters.polls_skipped += 1;
            result.errors.push(SourceError::CircuitOpen {
                retry_in_ms: millis(retry_in),
            });
            self.counters.last_poll_latency = Some(started.elapsed());
            return result;
        }
        let probe = admission == Admission::Probe;
        if let Err(down) = link.prepare(probe, self.timeout, &mut self.counters).await {
            if down.attempted {
                self.fail(started, &down.error);
            } else {
                self.counters.polls_skipped += 1;
            }
            result.errors.push(down.error);
            self.counters.last_poll_latency = Some(started.elapsed());
            return result;
        }

        let mut garbage = false;
        let mut lost: Option<(LinkError, SourceError)> = None;
        let mut unsent = 0usize;
        let blocks = self.plan.blocks.len();
        for b in 0..blocks {
            if lost.is_some() {
                unsent += 1;
                continue;
            }
            let block = &self.plan.blocks[b];
            self.counters.requests += 1;
            match link.call(request(block), self.timeout).await {
                Ok(Ok(response)) => {
                    self.counters.responses += 1;
                    result.reachable = true;
                    let block = &self.plan.blocks[b];
                    if !self
                        .plan
                        .decode_block(block, response, &mut result, &mut self.counters)
                    {
                        garbage = true;
                    }
                }
                Ok(Err(code)) => {
                    self.counters.responses += 1;
                    *self.counters.exceptions.entry(u8::from(code)).or_insert(0) += 1;
                    result.reachable = true;
                    let what = self.plan.describe(&self.plan.blocks[b]);
                    result.errors.push(exception_error(code, what));
                }
                Err(e) => {
                    let what = self.plan.describe(&self.plan.blocks[b]);
                    let error = self.link_error(&e, &what);
                    result.errors.push(error.clone());
                    lost = Some((e, error));
                }
            }
        }
        if unsent > 0 {
            result.errors.push(SourceError::Other(format!(
                "{unsent} of {blocks} read requests not sent this poll after the link failed"
            )));
        }

        if lost.is_none() {
            self.identity.start_poll(link.epoch());
            if self.identity.due() {
                let read = self.read_identity(link, &mut result).await;
                self.identity.record(read.outcome);
                garbage |= read.garbage;
                lost = read.lost;
            }
        }
        if lost.is_none() {
            let read = self.read_diagnostics_if_due(link, &mut result).await;
            garbage |= read.garbage;
            lost = read.lost;
        }

        match &lost {
            // The serial bus is down: not this unit's fault, and nothing was learnt about it.
            Some((LinkError::Down(_), _)) if !garbage => {}
            Some((_, error)) => self.fail(started, error),
            None if garbage => self.fail(
                started,
                &SourceError::Other("the device answered with garbage".into()),
            ),
            None => {
                if self.breaker.record_success() == Transition::Closed {
                    tracing::info!(station = %self.plan.station_id, "device answers again; no longer isolated");
                }
            }
        }
        self.counters.last_poll_latency = Some(started.elapsed());
        result
    }

    /// Reads the device identification into `result`.
    async fn read_identity(
        &mut self,
        link: &mut impl Link,
        result: &mut PollResult,
    ) -> IdentityRead {
        const WHAT: &str = "device identification (FC 43/14)";
        self.counters.requests += 1;
        match link.call(IDENTITY_REQUEST, self.timeout).await {
            Ok(Ok(Response::ReadDeviceIdentification(response))) => {
                self.counters.responses += 1;
                result.reachable = true;
                result.identity = Some(parse_identity(&response, &mut result.errors));
                IdentityRead::answer(IdentityOutcome::Answered)
            }
            Ok(Ok(other)) => {
                self.counters.responses += 1;
                self.counters.decode_errors += 1;
                result.reachable = true;
                result.errors.push(SourceError::Decode {
                    what: WHAT.into(),
                    reason: format!(
                        "the response is of the wrong kind: {:?}",
                        other.function_code()
                    ),
                });
                IdentityRead {
                    garbage: true,
                    ..IdentityRead::answer(IdentityOutcome::Failed)
                }
            }
            Ok(Err(code)) => {
                self.counters.responses += 1;
                *self.counters.exceptions.entry(u8::from(code)).or_insert(0) += 1;
                result.reachable = true;
                result.errors.push(exception_error(code, WHAT.into()));
                IdentityRead::answer(if code == ExceptionCode::IllegalFunction {
                    IdentityOutcome::Unsupported
                } else {
                    IdentityOutcome::Failed
                })
            }
            Err(e) => {
                let error = self.link_error(&e, WHAT);
                result.errors.push(error.clone());
                IdentityRead {
                    outcome: if matches!(e, LinkError::Down(_)) {
                        IdentityOutcome::NotSent
                    } else {
                        IdentityOutcome::NoAnswer
                    },
                    garbage: false,
                    lost: Some((e, error)),
                }
            }
        }
    }

    /// Reads the diagnostic counters due into `result`, one request each, in order; stops at a
    /// link failure. Exception 01 retires the counter's function code for good.
    async fn read_diagnostics_if_due(
        &mut self,
        link: &mut impl Link,
        result: &mut PollResult,
    ) -> IdentityRead {
        let mut read = IdentityRead::answer(IdentityOutcome::Answered);
        let due: Vec<DiagCounter> = self
            .diagnostics
            .as_mut()
            .map(|d| d.due(Instant::now()))
            .unwrap_or_default();
        let read_before = result.readings.len();
        for counter in due {
            let function = counter.function();
            if self
                .diagnostics
                .as_ref()
                .is_some_and(|d| d.is_refused(function))
            {
                continue;
            }
            self.counters.requests += 1;
            match link.call(counter.request(), self.timeout).await {
                Ok(Ok(response)) => {
                    self.counters.responses += 1;
                    result.reachable = true;
                    match counter.decode(&response) {
                        Ok(count) => result.readings.push(Reading {
                            station_id: self.plan.station_id.clone(),
                            tag: Arc::from(counter.tag()),
                            value: crate::source::Value::UInt(u64::from(count)),
                            quality: Quality::Good,
                            source_time: None,
                            received: Timestamp::now(),
                        }),
                        Err(reason) => {
                            self.counters.decode_errors += 1;
                            read.garbage = true;
                            result.errors.push(SourceError::Decode {
                                what: counter.describe(),
                                reason,
                            });
                        }
                    }
                }
                Ok(Err(code)) => {
                    self.counters.responses += 1;
                    *self.counters.exceptions.entry(u8::from(code)).or_insert(0) += 1;
                    result.reachable = true;
                    result
                        .errors
                        .push(exception_error(code, counter.describe()));
                    let first = code == ExceptionCode::IllegalFunction
                        && self
                            .diagnostics
                            .as_mut()
                            .is_some_and(|d| d.refuse(function));
                    if first {
                        self.counters.diagnostics_refused += 1;
                        tracing::warn!(
                            station = %self.plan.station_id,
                            function,
                            "the device does not implement this diagnostics function \
                             (exception 01); its counters are no longer read"
                        );
                    }
                }
                Err(e) => {
                    let error = self.link_error(&e, &counter.describe());
                    result.errors.push(error.clone());
                    read.lost = Some((e, error));
                    break;
                }
            }
        }
        if result.readings.len() > read_before {
            // The agent's own share of what the counters count, as of this read.
            let own = [
                (reserved::MODBUS_OWN_REQUESTS, self.counters.requests),
                (
                    reserved::MODBUS_OWN_EXCEPTIONS,
                    self.counters.exceptions.values().sum::<u64>(),
                ),
            ];
            for (tag, count) in own {
                result.readings.push(Reading {
                    station_id: self.plan.station_id.clone(),
                    tag: Arc::from(tag),
                    value: crate::source::Value::UInt(count),
                    quality: Quality::Good,
                    source_time: None,
                    received: Timestamp::now(),
                });
            }
        }
        read
    }

    /// Counts a failed request and turns it into the poll's error.
    fn link_error(&mut self, e: &LinkError, what: &str) -> SourceError {
        match e {
            LinkError::Timeout => {
                self.counters.timeouts += 1;
                SourceError::Timeout(millis(self.timeout))
            }
            LinkError::Transport(reason) => {
                self.counters.transport_errors += 1;
                SourceError::Transport(format!("{what}: {reason}"))
            }
            LinkError::Protocol(reason) => {
                self.counters.protocol_errors += 1;
                SourceError::Transport(format!(
                    "{what}: the answer does not belong to the request: {reason}"
                ))
            }
            LinkError::Down(error) => error.clone(),
        }
    }

    fn fail(&mut self, now: Instant, why: &SourceError) {
        self.counters.polls_failed += 1;
        if let Transition::Opened { retry_in } = self.breaker.record_failure(now) {
            self.counters.circuit_opens += 1;
            tracing::warn!(
                station = %self.plan.station_id,
                retry_in_ms = millis(retry_in),
                error = %why,
                "device isolated after repeated failed polls"
            );
        }
    }
}

pub(crate) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
#[allow(clippy::unnecessary_wraps)] // the answer builders return what a link returns
pub(crate) mod tests {
    use std::collections::VecDeque;

    use super::*;
    use crate::source::Value;
    use tokio_modbus::prelude::{ConformityLevel, DeviceIdObject};

    use super::super::diag::{DiagCounter, DiagnosticsConfig};
    use crate::rules::{RuleSettings, TagRules};
    use crate::source::{
        ByteOrder, DataType, ModbusAddress, Profile, Protocol, SourceConfig, SourceTuning, TagRole,
        TagSpec,
    };

    /// A Modbus station named `press-01` with `tags` and `diagnostics`, reached over `source`,
    /// with the defaults a configuration gives (1 s polls, the source's tuning). Built by hand
    /// so that the source's tests need no `config`.
    pub(crate) fn station_of(
        tags: Vec<TagSpec>,
        diagnostics: Option<DiagnosticsConfig>,
        source: SourceConfig,
        timeout: Duration,
    ) -> StationConfig {
        let tuning = SourceTuning::defaults_for(source.kind());
        StationConfig {
            id: "press-01".into(),
            profile: Arc::new(Profile {
                name: "test".into(),
                file: "devices/test.toml".into(),
                description: String::new(),
                protocol: Protocol::Modbus,
                tags,
                rules: RuleSettings::default(),
                diagnostics,
            }),
            source,
            poll_interval: Duration::from_secs(1),
            timeout,
            enabled: true,
            change_windows: Vec::new(),
            tuning,
        }
    }

    /// A measurement tag at zero-based `index` of `area`; `length` for strings, else 0.
    pub(crate) fn tag(
        name: &str,
        data_type: DataType,
        area: RegisterArea,
        index: u16,
        length: u16,
    ) -> TagSpec {
        TagSpec {
            name: name.into(),
            role: TagRole::Measurement,
            data_type,
            order: ByteOrder::ABCD,
            length,
            modbus: Some(ModbusAddress {
                area,
                index,
                bit: None,
            }),
            node_id: None,
            scale: 1.0,
            offset: 0.0,
            unit: None,
            states: BTreeMap::new(),
            limits: None,
            rules: TagRules::default(),
            server_deadband: None,
        }
    }

    /// Blocks: coil 0, holding registers 0-2, holding register 300, input registers 0-1.
    fn profile_tags() -> Vec<TagSpec> {
        vec![
            tag("run", DataType::Bool, RegisterArea::Coil, 0, 0),
            tag("speed", DataType::U16, RegisterArea::HoldingRegister, 0, 0),
            tag("temp", DataType::F32, RegisterArea::HoldingRegister, 1, 0),
            tag("far", DataType::U16, RegisterArea::HoldingRegister, 300, 0),
            tag("name", DataType::String, RegisterArea::InputRegister, 0, 2),
        ]
    }

    fn tcp() -> SourceConfig {
        SourceConfig::ModbusTcp {
            address: "127.0.0.1:502".into(),
            unit_id: 1,
        }
    }

    fn station() -> StationConfig {
        station_of(profile_tags(), None, tcp(), Duration::from_millis(50))
    }

    fn poller(identity_every: u32) -> Poller {
        let options = StationOptions {
            identity_every,
            ..StationOptions::default()
        };
        Poller::new(&station(), &options, 1).unwrap()
    }

    /// A link that answers from a script and records what it was asked.
    #[derive(Default)]
    struct Scripted {
        answers: VecDeque<CallResult>,
        calls: Vec<Request<'static>>,
        epoch: u64,
    }

    impl Scripted {
        fn answering(answers: impl IntoIterator<Item = CallResult>) -> Self {
            Scripted {
                answers: answers.into_iter().collect(),
                epoch: 1,
                ..Scripted::default()
            }
        }

        fn push(&mut self, answers: impl IntoIterator<Item = CallResult>) {
            self.answers.extend(answers);
        }
    }

    impl Link for Scripted {
        async fn prepare(
            &mut self,
            _probe: bool,
            _timeout: Duration,
            _counters: &mut ModbusCounters,
        ) -> Result<(), LinkDown> {
            Ok(())
        }

        async fn call(&mut self, request: Request<'static>, _timeout: Duration) -> CallResult {
            self.calls.push(request);
            self.answers.pop_front().unwrap_or(Err(LinkError::Timeout))
        }

        fn epoch(&self) -> u64 {
            self.epoch
        }
    }

    fn coils(bits: &[bool]) -> CallResult {
        let mut bits = bits.to_vec();
        bits.resize(bits.len().div_ceil(8) * 8, false);
        Ok(Ok(Response::ReadCoils(bits)))
    }

    fn holding(regs: &[u16]) -> CallResult {
        Ok(Ok(Response::ReadHoldingRegisters(regs.to_vec())))
    }

    fn input(regs: &[u16]) -> CallResult {
        Ok(Ok(Response::ReadInputRegisters(regs.to_vec())))
    }

    fn exception(code: ExceptionCode) -> CallResult {
        Ok(Err(code))
    }

    /// Answers for every block of `station()`, in plan order.
    fn good_answers() -> Vec<CallResult> {
        vec![
            coils(&[true]),
            holding(&[7, 0x42F6, 0xE979]),
            holding(&[5]),
            input(&[0x4142, 0x4300]),
        ]
    }

    fn identity_answer() -> CallResult {
        Ok(Ok(Response::ReadDeviceIdentification(
            ReadDeviceIdentificationResponse {
                read_code: ReadCode::Basic,
                conformity_level: ConformityLevel::BasicIdentification,
                more_follows: false,
                next_object_id: 0,
                device_id_objects: vec![
                    DeviceIdObject {
                        id: 0,
                        value: "Acme".into(),
                    },
                    DeviceIdObject {
                        id: 1,
                        value: "PX-9".into(),
                    },
                    DeviceIdObject {
                        id: 2,
                        value: "2.1".into(),
                    },
                ],
            },
        )))
    }

    fn values(result: &PollResult) -> Vec<(String, Value)> {
        result
            .readings
            .iter()
            .map(|r| (r.tag.to_string(), r.value.clone()))
            .collect()
    }

    #[test]
    fn tags_are_planned_into_one_request_per_block_in_function_code_order() {
        let plan = StationPlan::new(&station(), PlanLimits::default()).unwrap();
        let requests: Vec<Request<'static>> = plan.blocks().iter().map(request).collect();
        assert_eq!(
            requests,
            [
                Request::ReadCoils(0, 1),
                Request::ReadHoldingRegisters(0, 3),
                Request::ReadHoldingRegisters(300, 1),
                Request::ReadInputRegisters(0, 2),
            ]
        );
    }

    #[test]
    fn a_tag_without_a_modbus_address_is_refused_with_its_name() {
        let mut station = station();
        let mut profile = (*station.profile).clone();
        profile.tags[2].modbus = None;
        station.profile = Arc::new(profile);
        let error = StationPlan::new(&station, PlanLimits::default()).unwrap_err();
        assert!(error.to_string().contains("`temp`"), "{error}");
    }

    #[tokio::test]
    async fn every_block_is_read_and_each_tag_decoded_into_a_good_reading() {
        let mut p = poller(60);
        let mut link = Scripted::answering(good_answers());
        link.push([identity_answer()]);
        let result = p.poll(&mut link).await;
        assert!(result.reachable);
        assert_eq!(result.errors, []);
        assert_eq!(
            values(&result),
            [
                ("run".into(), Value::Bool(true)),
                ("speed".into(), Value::UInt(7)),
                ("temp".into(), Value::Float(f64::from(123.456f32))),
                ("far".into(), Value::UInt(5)),
                ("name".into(), Value::Text("ABC".into())),
            ]
        );
        assert!(result
            .readings
            .iter()
            .all(|r| r.quality == Quality::Good && r.source_time.is_none()));
        assert_eq!(
            result.identity,
            Some(DeviceIdentity {
                vendor: Some("Acme".into()),
                product_code: Some("PX-9".into()),
                revision: Some("2.1".into()),
                ..DeviceIdentity::default()
            })
        );
        assert_eq!(link.calls.last(), Some(&IDENTITY_REQUEST));
        let c = p.counters();
        assert_eq!((c.polls, c.requests, c.responses), (1, 5, 5));
    }

    #[tokio::test]
    async fn an_exception_fails_its_block_and_keeps_the_other_blocks_readings() {
        let mut p = poller(0);
        let mut answers = good_answers();
        answers[2] = exception(ExceptionCode::IllegalDataAddress);
        let mut link = Scripted::answering(answers);
        link.push([identity_answer()]);
        let result = p.poll(&mut link).await;
        assert!(result.reachable);
        let tags: Vec<String> = values(&result).into_iter().map(|(t, _)| t).collect();
        assert_eq!(tags, ["run", "speed", "temp", "name"]);
        assert_eq!(
            result.errors,
            [SourceError::Exception {
                code: 2,
                name: "illegal data address".into(),
                what: "holding register 300 (tag far)".into(),
            }]
        );
        assert_eq!(p.counters().exceptions, BTreeMap::from([(2, 1)]));
        assert_eq!(p.breaker_state(), BreakerState::Closed { failures: 0 });
    }

    #[tokio::test]
    async fn a_timeout_ends_the_poll_but_keeps_the_readings_already_decoded() {
        let mut p = poller(60);
        let mut link = Scripted::answering([coils(&[false]), Err(LinkError::Timeout)]);
        let result = p.poll(&mut link).await;
        assert!(result.reachable, "the coil block was answered");
        assert_eq!(values(&result), [("run".into(), Value::Bool(false))]);
        assert_eq!(
            result.errors,
            [
                SourceError::Timeout(50),
                SourceError::Other(
                    "2 of 4 read requests not sent this poll after the link failed".into()
                ),
            ]
        );
        assert_eq!(link.calls.len(), 2, "nothing sent after the timeout");
        assert_eq!(p.counters().timeouts, 1);
        assert_eq!(p.breaker_state(), BreakerState::Closed { failures: 1 });
    }

    #[tokio::test]
    async fn a_response_of_the_wrong_length_fails_only_its_block_and_counts_as_garbage() {
        let mut p = poller(0);
        let mut answers = good_answers();
        answers[1] = holding(&[7, 0x42F6]);
        let mut link = Scripted::answering(answers);
        link.push([identity_answer()]);
        let result = p.poll(&mut link).await;
        let tags: Vec<String> = values(&result).into_iter().map(|(t, _)| t).collect();
        assert_eq!(tags, ["run", "far", "name"]);
        match result.errors.as_slice() {
            [SourceError::Decode { what, reason }] => {
                assert_eq!(what, "holding registers 0-2 (tags speed, temp)");
                assert!(reason.contains("expected 3"), "{reason}");
            }
            other => panic!("expected one decode error, got {other:?}"),
        }
        assert_eq!(p.breaker_state(), BreakerState::Closed { failures: 1 });
    }

    #[tokio::test]
    async fn a_bit_response_with_the_wrong_byte_count_is_refused() {
        let mut p = poller(0);
        let mut answers = good_answers();
        answers[0] = Ok(Ok(Response::ReadCoils(vec![true; 16])));
        let mut link = Scripted::answering(answers);
        link.push([identity_answer()]);
        let result = p.poll(&mut link).await;
        assert!(!values(&result).iter().any(|(t, _)| t == "run"));
        assert!(
            matches!(&result.errors[..], [SourceError::Decode { what, .. }] if what.starts_with("coil 0"))
        );
    }

    #[tokio::test]
    async fn a_value_that_does_not_decode_fails_only_its_tag_and_not_the_device() {
        let mut p = poller(0);
        let mut answers = good_answers();
        answers[1] = holding(&[7, 0x7FC0, 0x0000]); // f32 NaN
        let mut link = Scripted::answering(answers);
        link.push([identity_answer()]);
        let result = p.poll(&mut link).await;
        let tags: Vec<String> = values(&result).into_iter().map(|(t, _)| t).collect();
        assert_eq!(tags, ["run", "speed", "far", "name"]);
        assert!(
            matches!(&result.errors[..], [SourceError::Decode { what, .. }] if what == "tag `temp`")
        );
        assert_eq!(p.counters().decode_errors, 1);
        assert_eq!(p.breaker_state(), BreakerState::Closed { failures: 0 });
    }

    // Real time with a short isolation: tokio's `test-util` (time::pause) is not enabled.
    #[tokio::test]
    async fn three_failed_polls_isolate_the_device_until_a_probe_succeeds() {
        let options = StationOptions {
            identity_every: 0,
            breaker: BreakerPolicy {
                failure_threshold: 3,
                open: BackoffPolicy {
                    initial: Duration::from_millis(200),
                    max: Duration::from_secs(1),
                    multiplier: 2.0,
                    jitter: linesentry_common::Jitter::Spread(0.0),
                },
            },
            ..StationOptions::default()
        };
        let mut p = Poller::new(&station(), &options, 1).unwrap();
        let mut link = Scripted::answering([]);
        for _ in 0..3 {
            let result = p.poll(&mut link).await;
            assert!(!result.reachable);
        }
        assert_eq!(link.calls.len(), 3);
        assert!(matches!(p.breaker_state(), BreakerState::Open { .. }));
        assert_eq!(p.counters().circuit_opens, 1);

        let result = p.poll(&mut link).await;
        assert!(matches!(
            result.errors[..],
            [SourceError::CircuitOpen { retry_in_ms }] if (100..=200).contains(&retry_in_ms)
        ));
        assert_eq!(link.calls.len(), 3, "an isolated device is not asked");

        tokio::time::sleep(Duration::from_millis(210)).await;
        link.push(good_answers());
        link.push([identity_answer()]);
        let result = p.poll(&mut link).await;
        assert!(result.reachable);
        assert_eq!(result.readings.len(), 5);
        assert_eq!(p.breaker_state(), BreakerState::Closed { failures: 0 });
        let c = p.counters();
        assert_eq!((c.polls, c.polls_failed, c.polls_skipped), (5, 3, 1));
    }

    #[tokio::test]
    async fn a_serial_bus_that_is_down_does_not_count_against_the_unit() {
        let mut p = poller(0);
        let down = || {
            Err(LinkError::Down(SourceError::Connect(
                "serial port /dev/ttyX: gone".into(),
            )))
        };
        let mut link = Scripted::answering([down(), down(), down(), down()]);
        for _ in 0..4 {
            let result = p.poll(&mut link).await;
            assert!(!result.reachable);
            assert!(matches!(&result.errors[0], SourceError::Connect(m) if m.contains("ttyX")));
        }
        assert_eq!(p.breaker_state(), BreakerState::Closed { failures: 0 });
        assert_eq!(p.counters().polls_failed, 0);
    }

    #[tokio::test]
    async fn illegal_function_for_identification_is_not_asked_again_on_that_connection() {
        let mut p = poller(2);
        let mut link = Scripted::answering(good_answers());
        link.push([exception(ExceptionCode::IllegalFunction)]);
        let first = p.poll(&mut link).await;
        assert!(first.identity.is_none());
        assert!(matches!(
            first.errors[..],
            [SourceError::Exception { code: 1, .. }]
        ));
        for _ in 0..4 {
            link.push(good_answers());
            let result = p.poll(&mut link).await;
            assert_eq!(result.errors, []);
        }
        let identity_requests = link
            .calls
            .iter()
            .filter(|r| **r == IDENTITY_REQUEST)
            .count();
        assert_eq!(identity_requests, 1);
        assert_eq!(p.breaker_state(), BreakerState::Closed { failures: 0 });

        // A new connection may be another device: ask again.
        link.epoch += 1;
        link.push(good_answers());
        link.push([identity_answer()]);
        let result = p.poll(&mut link).await;
        assert!(result.identity.is_some());
    }

    #[test]
    fn identity_is_read_on_a_new_connection_and_then_every_n_polls() {
        let mut t = IdentityTracker::new(3);
        let mut asked = Vec::new();
        for poll in 0..8 {
            t.start_poll(1);
            if t.due() {
                asked.push(poll);
                t.record(IdentityOutcome::Answered);
            }
        }
        assert_eq!(asked, [0, 3, 6]);
        t.start_poll(2);
        assert!(t.due(), "a new connection reads it at once");
    }

    #[test]
    fn a_device_that_ignores_identification_is_not_asked_again_on_the_reconnect() {
        let mut t = IdentityTracker::new(3);
        t.start_poll(1);
        assert!(t.due());
        t.record(IdentityOutcome::NoAnswer);
        // The timeout dropped the connection; the next poll runs on a new one.
        t.start_poll(2);
        assert!(!t.due());
        t.start_poll(2);
        t.start_poll(2);
        assert!(t.due(), "asked again at the normal interval");
    }

    #[test]
    fn an_identification_request_the_bus_could_not_carry_stays_due() {
        let mut t = IdentityTracker::new(3);
        t.start_poll(1);
        t.record(IdentityOutcome::NotSent);
        t.start_poll(2);
        assert!(t.due());
    }

    #[test]
    fn with_an_interval_of_zero_identity_is_read_only_on_new_connections() {
        let mut t = IdentityTracker::new(0);
        t.start_poll(1);
        assert!(t.due());
        t.record(IdentityOutcome::Answered);
        for _ in 0..100 {
            t.start_poll(1);
            assert!(!t.due());
        }
        t.start_poll(2);
        assert!(t.due());
    }

    #[test]
    fn identity_objects_that_are_not_utf8_are_left_out_with_an_error() {
        let response = ReadDeviceIdentificationResponse {
            read_code: ReadCode::Basic,
            conformity_level: ConformityLevel::BasicIdentification,
            more_follows: false,
            next_object_id: 0,
            device_id_objects: vec![
                DeviceIdObject {
                    id: 0,
                    value: "Acme".into(),
                },
                DeviceIdObject {
                    id: 2,
                    value: vec![0xFF, 0xFE].into(),
                },
            ],
        };
        let mut errors = Vec::new();
        let identity = parse_identity(&response, &mut errors);
        assert_eq!(identity.vendor.as_deref(), Some("Acme"));
        assert_eq!(identity.revision, None);
        assert!(matches!(&errors[..], [SourceError::Decode { what, .. }] if what.contains("0x02")));
    }

    fn diag_poller() -> Poller {
        let diagnostics = DiagnosticsConfig {
            counters: vec![
                DiagCounter::CommEventCount,
                DiagCounter::BusMessageCount,
                DiagCounter::ServerMessageCount,
            ],
            every: Duration::from_secs(60),
        };
        let station = station_of(
            profile_tags(),
            Some(diagnostics),
            tcp(),
            Duration::from_millis(50),
        );
        let options = StationOptions {
            identity_every: 0,
            ..StationOptions::default()
        };
        Poller::new(&station, &options, 1).unwrap()
    }

    fn fc08(sub: u8, count: u16) -> CallResult {
        let [hi, lo] = count.to_be_bytes();
        Ok(Ok(Response::Custom(0x08, vec![0x00, sub, hi, lo].into())))
    }

    fn fc11(count: u16) -> CallResult {
        let [hi, lo] = count.to_be_bytes();
        Ok(Ok(Response::Custom(0x0B, vec![0x00, 0x00, hi, lo].into())))
    }

    fn diag_values(result: &PollResult) -> Vec<(String, Value)> {
        values(result)
            .into_iter()
            .filter(|(t, _)| t.starts_with("_modbus.diag."))
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn diagnostic_counters_are_read_every_interval_and_become_readings() {
        let mut p = diag_poller();
        let mut link = Scripted::answering(good_answers());
        link.push([identity_answer(), fc11(17), fc08(0x0B, 40), fc08(0x0E, 38)]);
        let result = p.poll(&mut link).await;
        assert_eq!(result.errors, []);
        assert_eq!(
            diag_values(&result),
            [
                ("_modbus.diag.comm_event_count".into(), Value::UInt(17)),
                ("_modbus.diag.bus_message_count".into(), Value::UInt(40)),
                ("_modbus.diag.server_message_count".into(), Value::UInt(38)),
            ]
        );
        let own: Vec<(String, Value)> = result
            .readings
            .iter()
            .filter(|r| r.tag.starts_with("_modbus.own."))
            .map(|r| (r.tag.to_string(), r.value.clone()))
            .collect();
        assert_eq!(
            own,
            [
                (
                    "_modbus.own.requests".into(),
                    Value::UInt(p.counters().requests)
                ),
                ("_modbus.own.exceptions".into(), Value::UInt(0)),
            ],
            "the agent's own share, for the scan and flood rules"
        );
        assert_eq!(
            link.calls[link.calls.len() - 3..],
            [
                DiagCounter::CommEventCount.request(),
                DiagCounter::BusMessageCount.request(),
                DiagCounter::ServerMessageCount.request(),
            ]
        );

        tokio::time::advance(Duration::from_secs(30)).await;
        link.push(good_answers());
        let result = p.poll(&mut link).await;
        assert_eq!(diag_values(&result), [], "not due before its interval");
        assert_eq!(result.errors, []);

        tokio::time::advance(Duration::from_secs(30)).await;
        link.push(good_answers());
        link.push([fc11(18), fc08(0x0B, 50), fc08(0x0E, 47)]);
        let result = p.poll(&mut link).await;
        assert_eq!(diag_values(&result).len(), 3);
        assert_eq!(p.counters().requests, 4 + 1 + 3 + 4 + 4 + 3);
    }

    #[tokio::test(start_paused = true)]
    async fn a_device_without_fc08_is_asked_once_and_keeps_its_fc11_counter() {
        let mut p = diag_poller();
        let mut link = Scripted::answering(good_answers());
        link.push([
            identity_answer(),
            fc11(5),
            exception(ExceptionCode::IllegalFunction),
        ]);
        let result = p.poll(&mut link).await;
        assert_eq!(
            diag_values(&result),
            [("_modbus.diag.comm_event_count".into(), Value::UInt(5))]
        );
        assert!(matches!(
            &result.errors[..],
            [SourceError::Exception { code: 1, what, .. }] if what.contains("FC 08/0x0b")
        ));
        assert_eq!(p.counters().diagnostics_refused, 1);
        assert_eq!(p.breaker_state(), BreakerState::Closed { failures: 0 });

        for _ in 0..3 {
            tokio::time::advance(Duration::from_secs(60)).await;
            link.push(good_answers());
            link.push([fc11(6)]);
            let result = p.poll(&mut link).await;
            assert_eq!(result.errors, [], "FC 08 is not asked again");
            assert_eq!(diag_values(&result).len(), 1);
        }
        let fc08_requests = link
            .calls
            .iter()
            .filter(|r| matches!(r, Request::Custom(0x08, _)))
            .count();
        assert_eq!(fc08_requests, 1);
        assert_eq!(p.counters().diagnostics_refused, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_garbled_diagnostics_answer_fails_its_counter_and_counts_against_the_device() {
        let mut p = diag_poller();
        let mut link = Scripted::answering(good_answers());
        link.push([identity_answer(), fc11(5), fc08(0x0C, 9), fc08(0x0E, 3)]);
        let result = p.poll(&mut link).await;
        assert_eq!(diag_values(&result).len(), 2);
        assert!(matches!(
            &result.errors[..],
            [SourceError::Decode { what, reason }]
                if what.contains("bus_message_count") && reason.contains("sub-function")
        ));
        assert_eq!(p.breaker_state(), BreakerState::Closed { failures: 1 });
    }

    #[tokio::test(start_paused = true)]
    async fn a_diagnostics_request_that_times_out_ends_the_poll_and_waits_for_the_next_interval() {
        let mut p = diag_poller();
        let mut link = Scripted::answering(good_answers());
        link.push([identity_answer(), fc11(5), Err(LinkError::Timeout)]);
        let result = p.poll(&mut link).await;
        assert_eq!(diag_values(&result).len(), 1);
        assert_eq!(
            result.errors,
            [SourceError::Timeout(50)],
            "the rest of the counters are not sent"
        );
        assert_eq!(link.calls.len(), 4 + 1 + 2);
        assert_eq!(p.breaker_state(), BreakerState::Closed { failures: 1 });
        link.push(good_answers());
        let result = p.poll(&mut link).await;
        assert_eq!(result.errors, [], "no diagnostics on the next poll");
    }

    #[test]
    fn an_exception_to_a_custom_function_is_an_answer_not_a_mismatch() {
        use tokio_modbus::{ExceptionResponse, FunctionCode, ProtocolError};
        let mismatch = |function| ProtocolError::FunctionCodeMismatch {
            request: FunctionCode::Custom(0x08),
            result: Err(ExceptionResponse {
                function,
                exception: ExceptionCode::IllegalFunction,
            }),
        };
        assert_eq!(
            custom_exception(&mismatch(FunctionCode::Diagnostics)),
            Some(ExceptionCode::IllegalFunction)
        );
        assert_eq!(
            custom_exception(&mismatch(FunctionCode::ReadCoils)),
            None,
            "an exception to another function is a real mismatch"
        );
    }

    #[test]
    fn ranges_are_described_in_protocol_addresses() {
        assert_eq!(describe_range(RegisterArea::Coil, 0, 16), "coils 0-15");
        assert_eq!(
            describe_range(RegisterArea::InputRegister, 7, 1),
            "input register 7"
        );
        assert_eq!(
            describe_range(RegisterArea::HoldingRegister, 65_530, 6),
            "holding registers 65530-65535"
        );
    }
}
