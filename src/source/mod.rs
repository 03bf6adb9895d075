//! Acquisition: where a reading enters. Station protocols (Modbus TCP/RTU, OPC UA) and the
//! built-in generator all yield [`Reading`]s for the rules stage.

pub mod generator;
pub mod modbus;
pub mod tag;

use std::fmt;
use std::sync::Arc;

use serde::Serialize;

use crate::event::Timestamp;

pub use tag::{ByteOrder, DataType, ModbusAddress, RegisterArea, TagRole};

/// A decoded tag value. Integers keep their signedness so nothing is rounded through f64.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Value {
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    Text(String),
}

impl Value {
    /// The value as f64 for numeric comparisons (deadbands, limits); `None` for text.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Bool(b) => Some(f64::from(u8::from(*b))),
            Value::Int(i) => Some(*i as f64),
            Value::UInt(u) => Some(*u as f64),
            Value::Float(f) => Some(*f),
            Value::Text(_) => None,
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Bool(b) => write!(f, "{b}"),
            Value::Int(i) => write!(f, "{i}"),
            Value::UInt(u) => write!(f, "{u}"),
            Value::Float(x) => write!(f, "{x}"),
            Value::Text(s) => f.write_str(s),
        }
    }
}

/// OPC UA-style quality of a reading; Modbus readings are `Good` or absent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Quality {
    Good,
    Uncertain,
    Bad,
}

/// One sampled tag value of one station.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    pub station_id: Arc<str>,
    pub tag: Arc<str>,
    pub value: Value,
    pub quality: Quality,
    /// Time the device stamped the value, where the protocol carries one (OPC UA).
    pub source_time: Option<Timestamp>,
    /// Time the gateway received it.
    pub received: Timestamp,
}
