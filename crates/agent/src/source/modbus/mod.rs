//! Modbus protocol logic with no I/O: how tag values sit in registers ([`codec`]) and how a
//! station's tags become read requests ([`plan`]).
//!
//! Both are pure functions on plain data. They are where Modbus integrations usually go
//! wrong (byte orders, sign extension, strings, off-by-one block ends near 65535), so they
//! are kept apart from sockets, timeouts and retries and tested exhaustively without a
//! device or a runtime: table tests against known vectors and property tests for round trips
//! and planner invariants. The transports (TCP, RTU) and station simulators build on them.
//!
//! A poll cycle: [`plan_reads`] once per station profile, then for every [`ReadBlock`] one
//! request; [`extract`] cuts each tag's registers or bits out of the response, and
//! [`decode_registers`] / [`decode_bit`] turn them into a [`Value`](crate::source::Value).
//! A failed or short response fails the tags of that block only.

pub mod breaker;
mod client;
pub mod codec;
pub mod diag;
pub mod plan;
pub mod rtu;
mod station;

pub use client::TcpStation;
pub use codec::{
    decode_bit, decode_registers, encode_bit, encode_into, encode_value, pack_bits, unpack_bits,
    DecodeError, EncodeError, TagEncoding,
};
pub use diag::{DiagCounter, DiagnosticsConfig};
pub use plan::{
    extract, plan_reads, ExtractError, PlanError, PlanLimits, ReadBlock, TagSpan, DEFAULT_MAX_GAP,
    MAX_READ_BITS, MAX_READ_REGISTERS,
};
pub use rtu::{BusCounters, BusHandle, BusOptions, RtuBuses, RtuStation, SerialSettings};
pub use station::{exception_name, ModbusCounters, StationOptions, DEFAULT_IDENTITY_EVERY};
