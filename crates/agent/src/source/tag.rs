//! The vocabulary of station profiles: what a tag is, how its bits decode, what it means.

use serde::{Deserialize, Serialize};

/// How a tag's value is encoded on the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DataType {
    Bool,
    U16,
    I16,
    U32,
    I32,
    U64,
    I64,
    F32,
    F64,
    /// Fixed-length text, two ASCII bytes per register; the length is given with the tag.
    String,
}

impl DataType {
    /// 16-bit registers one value occupies (strings: per the tag's length).
    pub fn registers(self) -> u16 {
        match self {
            DataType::Bool | DataType::U16 | DataType::I16 => 1,
            DataType::U32 | DataType::I32 | DataType::F32 => 2,
            DataType::U64 | DataType::I64 | DataType::F64 => 4,
            DataType::String => 0,
        }
    }

    pub fn is_numeric(self) -> bool {
        !matches!(self, DataType::Bool | DataType::String)
    }

    /// The name a profile writes (`u16`, `f32`, `string`, ...).
    pub fn name(self) -> &'static str {
        match self {
            DataType::Bool => "bool",
            DataType::U16 => "u16",
            DataType::I16 => "i16",
            DataType::U32 => "u32",
            DataType::I32 => "i32",
            DataType::U64 => "u64",
            DataType::I64 => "i64",
            DataType::F32 => "f32",
            DataType::F64 => "f64",
            DataType::String => "string",
        }
    }
}

/// Byte and word order of 32- and 64-bit values, named by where bytes A (most significant)
/// to D land: `ABCD` big-endian, `CDAB` word-swapped, `BADC` byte-swapped, `DCBA` little-endian.
/// For 64-bit values the same swap applies across all four words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum ByteOrder {
    #[default]
    ABCD,
    CDAB,
    BADC,
    DCBA,
}

/// Modbus data model tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RegisterArea {
    /// FC 1, read/write bits.
    Coil,
    /// FC 2, read-only bits.
    DiscreteInput,
    /// FC 3, read/write registers.
    HoldingRegister,
    /// FC 4, read-only registers.
    InputRegister,
}

impl RegisterArea {
    pub fn is_bit(self) -> bool {
        matches!(self, RegisterArea::Coil | RegisterArea::DiscreteInput)
    }
}

/// Where a Modbus tag lives, already normalised to the zero-based protocol address
/// (profiles may be written one-based; the profile loader converts).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ModbusAddress {
    pub area: RegisterArea,
    pub index: u16,
    /// For `bool` tags held in a register: the bit (0 = least significant).
    pub bit: Option<u8>,
}
