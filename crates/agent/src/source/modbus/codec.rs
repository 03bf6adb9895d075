//! Tag values to and from Modbus registers and bits.
//!
//! Decoding turns the registers (or the bit) of one tag into a [`Value`]; encoding is the
//! inverse, used by station simulators and by writes. Both are total: every input, however
//! malformed, gives a value or an error, never a panic, and never a value the rules could
//! mistake for a reading (NaN, infinity, text made of garbage bytes).
//!
//! # Register layout
//!
//! A Modbus register is a big-endian 16-bit word on the wire; the transport hands over
//! `u16`s, so bytes inside a register are already in value order for 16-bit types. Values
//! wider than one register are laid out according to [`ByteOrder`]. Name the value's bytes
//! from most to least significant `A B C D` (32-bit) or `A B C D E F G H` (64-bit):
//!
//! | order  | rule                                               | 32-bit         | 64-bit                     |
//! |--------|----------------------------------------------------|----------------|----------------------------|
//! | `ABCD` | words and bytes big-endian                          | `[AB, CD]`     | `[AB, CD, EF, GH]`         |
//! | `CDAB` | words in reverse order, bytes in a word big-endian  | `[CD, AB]`     | `[GH, EF, CD, AB]`         |
//! | `BADC` | words in order, bytes swapped within each word      | `[BA, DC]`     | `[BA, DC, FE, HG]`         |
//! | `DCBA` | fully little-endian                                 | `[DC, BA]`     | `[HG, FE, DC, BA]`         |
//!
//! Worked examples, f32 `123.456` (`0x42F6E979`) and f64 `123.456` (`0x405EDD2F1A9FBE77`):
//!
//! | order  | f32                | f64                                  |
//! |--------|--------------------|--------------------------------------|
//! | `ABCD` | `[0x42F6, 0xE979]` | `[0x405E, 0xDD2F, 0x1A9F, 0xBE77]`   |
//! | `CDAB` | `[0xE979, 0x42F6]` | `[0xBE77, 0x1A9F, 0xDD2F, 0x405E]`   |
//! | `BADC` | `[0xF642, 0x79E9]` | `[0x5E40, 0x2FDD, 0x9F1A, 0x77BE]`   |
//! | `DCBA` | `[0x79E9, 0xF642]` | `[0x77BE, 0x9F1A, 0x2FDD, 0x5E40]`   |
//!
//! `u16`, `i16`, bools and strings ignore the order. Strings hold two ASCII bytes per
//! register, high byte first (`"AB"` is `0x4142`).
//!
//! # Scaling
//!
//! Engineering value = raw × scale + offset. With the identity (scale 1, offset 0) integers
//! stay integers, so a 64-bit counter is never rounded through f64; any other scale makes the
//! result a [`Value::Float`]. Encoding reverses the scale and rounds to the nearest integer
//! (half away from zero) for integer types.

use thiserror::Error;

use crate::source::{ByteOrder, DataType, Value};

/// How one tag's value is laid out in registers and scaled to engineering units.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TagEncoding {
    pub data_type: DataType,
    /// Byte and word order of 32- and 64-bit values; other types ignore it.
    pub order: ByteOrder,
    /// Registers a string occupies; other types ignore it.
    pub length: u16,
    /// For a bool held in a register: the bit, 0 = least significant. `None` reads the
    /// whole register (0 = false, anything else = true). Other types ignore it.
    pub bit: Option<u8>,
    /// Engineering value = raw × scale + offset (numeric types only).
    pub scale: f64,
    pub offset: f64,
}

impl TagEncoding {
    /// An unscaled, big-endian (`ABCD`) encoding of `data_type`.
    pub fn new(data_type: DataType) -> Self {
        TagEncoding {
            data_type,
            order: ByteOrder::default(),
            length: 0,
            bit: None,
            scale: 1.0,
            offset: 0.0,
        }
    }

    /// Text of `length` registers (two characters each).
    pub fn string(length: u16) -> Self {
        TagEncoding {
            length,
            ..TagEncoding::new(DataType::String)
        }
    }

    /// A bool held in bit `bit` (0 = least significant) of a register.
    pub fn register_bit(bit: u8) -> Self {
        TagEncoding {
            bit: Some(bit),
            ..TagEncoding::new(DataType::Bool)
        }
    }

    #[must_use]
    pub fn with_order(self, order: ByteOrder) -> Self {
        TagEncoding { order, ..self }
    }

    #[must_use]
    pub fn with_scale(self, scale: f64, offset: f64) -> Self {
        TagEncoding {
            scale,
            offset,
            ..self
        }
    }

    /// Registers one value occupies when held in registers.
    pub fn registers(&self) -> u16 {
        match self.data_type {
            DataType::String => self.length,
            other => other.registers(),
        }
    }

    /// Scale 1 and offset 0: integers are passed through untouched.
    #[allow(clippy::float_cmp)] // exact on purpose: only the literal identity keeps integers
    fn is_identity(&self) -> bool {
        self.scale == 1.0 && self.offset == 0.0
    }
}

/// Why registers or bits could not be decoded into a value.
#[derive(Debug, Clone, PartialEq, Error)]
#[non_exhaustive]
pub enum DecodeError {
    #[error("wrong number of registers: expected {expected}, found {found}")]
    Length { expected: usize, found: usize },
    #[error("wrong number of bits for a bool tag: expected 1, found {found}")]
    BitCount { found: usize },
    #[error("wrong number of bytes for {count} packed bits: expected {expected}, found {found}")]
    ByteCount {
        count: usize,
        expected: usize,
        found: usize,
    },
    #[error("{} value is {value}, expected a finite number", .data_type.name())]
    NotFinite { data_type: DataType, value: f64 },
    #[error(
        "string byte {index} is 0x{byte:02X}, expected printable ASCII (0x20 to 0x7E) \
         followed only by NUL or space padding"
    )]
    NotAscii { index: usize, byte: u8 },
    #[error("bit {bit} does not exist in a 16-bit register, expected 0 to 15")]
    BitOutOfRange { bit: u8 },
}

/// Why a value could not be encoded into registers or a bit.
#[derive(Debug, Clone, PartialEq, Error)]
#[non_exhaustive]
pub enum EncodeError {
    #[error("cannot encode {found} as {}, expected {}", .data_type.name(), expected_kind(*.data_type))]
    Mismatch {
        data_type: DataType,
        found: &'static str,
    },
    #[error("value {value} is not finite, expected a finite number")]
    NotFinite { value: f64 },
    #[error(
        "scale {scale} and offset {offset} cannot be reversed, expected a finite non-zero \
         scale and a finite offset"
    )]
    InvalidScale { scale: f64, offset: f64 },
    #[error(
        "raw value {raw} (after reversing scale and offset) does not fit {}, expected {min} to {max}",
        .data_type.name()
    )]
    OutOfRange {
        data_type: DataType,
        raw: String,
        min: String,
        max: String,
    },
    #[error(
        "text of {len} characters does not fit {registers} registers, expected at most {capacity}"
    )]
    TooLong {
        len: usize,
        registers: u16,
        capacity: usize,
    },
    #[error("text character {index} is {ch:?}, expected printable ASCII (0x20 to 0x7E)")]
    NotAscii { index: usize, ch: char },
    #[error("bit {bit} does not exist in a 16-bit register, expected 0 to 15")]
    BitOutOfRange { bit: u8 },
    #[error("wrong register buffer length: expected {expected}, found {found}")]
    Length { expected: usize, found: usize },
}

/// Decodes one tag from its registers (exactly [`TagEncoding::registers`] of them).
///
/// Byte orders, string and scaling rules are defined, with worked examples, in the
/// [module documentation](self).
pub fn decode_registers(enc: &TagEncoding, regs: &[u16]) -> Result<Value, DecodeError> {
    let expected = usize::from(enc.registers());
    if regs.len() != expected {
        return Err(DecodeError::Length {
            expected,
            found: regs.len(),
        });
    }
    match Kind::of(enc.data_type) {
        Kind::Bool => decode_register_bit(enc.bit, regs[0]),
        Kind::Text => decode_text(regs),
        Kind::F32 => {
            let raw = f32::from_bits(canonical(enc.order, regs) as u32);
            scale_float(enc, f64::from(raw))
        }
        Kind::F64 => scale_float(enc, f64::from_bits(canonical(enc.order, regs))),
        Kind::Unsigned(_) => {
            let raw = canonical(enc.order, regs);
            if enc.is_identity() {
                Ok(Value::UInt(raw))
            } else {
                scale_float(enc, raw as f64)
            }
        }
        Kind::Signed(bits) => {
            let raw = sign_extend(canonical(enc.order, regs), bits);
            if enc.is_identity() {
                Ok(Value::Int(raw))
            } else {
                scale_float(enc, raw as f64)
            }
        }
    }
}

/// Decodes a bool tag held in a coil or discrete input (a slice of exactly one bit).
pub fn decode_bit(bits: &[bool]) -> Result<Value, DecodeError> {
    match bits {
        [bit] => Ok(Value::Bool(*bit)),
        _ => Err(DecodeError::BitCount { found: bits.len() }),
    }
}

/// Encodes `value` into a fresh register vector of [`TagEncoding::registers`] words.
///
/// A bool in a register bit yields a register with only that bit possibly set; to keep
/// neighbouring bits of a shared register, use [`encode_into`].
pub fn encode_value(enc: &TagEncoding, value: &Value) -> Result<Vec<u16>, EncodeError> {
    let mut regs = vec![0; usize::from(enc.registers())];
    encode_into(enc, value, &mut regs)?;
    Ok(regs)
}

/// Encodes `value` into `regs` (exactly [`TagEncoding::registers`] words). A bool in a
/// register bit changes only its bit. On error `regs` is left unchanged.
pub fn encode_into(enc: &TagEncoding, value: &Value, regs: &mut [u16]) -> Result<(), EncodeError> {
    let expected = usize::from(enc.registers());
    if regs.len() != expected {
        return Err(EncodeError::Length {
            expected,
            found: regs.len(),
        });
    }
    match Kind::of(enc.data_type) {
        Kind::Bool => {
            let on = encode_bit(value)?;
            match enc.bit {
                None => regs[0] = u16::from(on),
                Some(bit) if bit < 16 => {
                    let mask = 1u16 << bit;
                    regs[0] = if on { regs[0] | mask } else { regs[0] & !mask };
                }
                Some(bit) => return Err(EncodeError::BitOutOfRange { bit }),
            }
        }
        Kind::Text => encode_text(value, enc.length, regs)?,
        kind => {
            let bits = numeric_bits(enc, kind, value)?;
            layout(enc.order, bits, regs);
        }
    }
    Ok(())
}

/// The coil or discrete-input state for a bool value.
pub fn encode_bit(value: &Value) -> Result<bool, EncodeError> {
    match value {
        Value::Bool(b) => Ok(*b),
        other => Err(EncodeError::Mismatch {
            data_type: DataType::Bool,
            found: value_kind(other),
        }),
    }
}

/// Unpacks the data bytes of an FC 1 / FC 2 response: bit 0 of byte 0 is the first
/// address. `bytes` must be exactly `count.div_ceil(8)` long; padding bits are ignored.
pub fn unpack_bits(bytes: &[u8], count: usize) -> Result<Vec<bool>, DecodeError> {
    let expected = count.div_ceil(8);
    if bytes.len() != expected {
        return Err(DecodeError::ByteCount {
            count,
            expected,
            found: bytes.len(),
        });
    }
    Ok((0..count)
        .map(|i| bytes[i / 8] & (1 << (i % 8)) != 0)
        .collect())
}

/// Packs bits the way an FC 1 / FC 2 response carries them (inverse of [`unpack_bits`]),
/// padding the last byte with zeros.
pub fn pack_bits(bits: &[bool]) -> Vec<u8> {
    let mut bytes = vec![0u8; bits.len().div_ceil(8)];
    for (i, _) in bits.iter().enumerate().filter(|(_, on)| **on) {
        bytes[i / 8] |= 1 << (i % 8);
    }
    bytes
}

fn decode_register_bit(bit: Option<u8>, reg: u16) -> Result<Value, DecodeError> {
    match bit {
        None => Ok(Value::Bool(reg != 0)),
        Some(bit) if bit < 16 => Ok(Value::Bool(reg & (1 << bit) != 0)),
        Some(bit) => Err(DecodeError::BitOutOfRange { bit }),
    }
}

fn decode_text(regs: &[u16]) -> Result<Value, DecodeError> {
    let bytes: Vec<u8> = regs.iter().flat_map(|r| r.to_be_bytes()).collect();
    let kept = bytes
        .iter()
        .rposition(|b| !matches!(b, 0 | b' '))
        .map_or(0, |last| last + 1);
    let text = &bytes[..kept];
    if let Some(index) = text.iter().position(|b| !(0x20..=0x7E).contains(b)) {
        return Err(DecodeError::NotAscii {
            index,
            byte: text[index],
        });
    }
    // Printable ASCII is valid UTF-8, byte for byte.
    Ok(Value::Text(text.iter().map(|&b| char::from(b)).collect()))
}

fn scale_float(enc: &TagEncoding, raw: f64) -> Result<Value, DecodeError> {
    let not_finite = |value| DecodeError::NotFinite {
        data_type: enc.data_type,
        value,
    };
    if !raw.is_finite() {
        return Err(not_finite(raw));
    }
    // Skipping the arithmetic on identity keeps -0.0 and every bit of the raw value.
    let value = if enc.is_identity() {
        raw
    } else {
        raw * enc.scale + enc.offset
    };
    if value.is_finite() {
        Ok(Value::Float(value))
    } else {
        Err(not_finite(value))
    }
}

/// Whether `order` reverses the word sequence and whether it swaps bytes within each word.
fn swaps(order: ByteOrder) -> (bool, bool) {
    match order {
        ByteOrder::ABCD => (false, false),
        ByteOrder::CDAB => (true, false),
        ByteOrder::BADC => (false, true),
        ByteOrder::DCBA => (true, true),
    }
}

/// The registers of a 1-, 2- or 4-register value as one big-endian integer.
/// Both swaps are involutions, so the same transformation encodes and decodes.
fn canonical(order: ByteOrder, regs: &[u16]) -> u64 {
    let (reverse, swap_bytes) = if regs.len() > 1 {
        swaps(order)
    } else {
        (false, false)
    };
    let word = |w: u16| if swap_bytes { w.swap_bytes() } else { w };
    let fold = |acc: u64, &w: &u16| (acc << 16) | u64::from(word(w));
    if reverse {
        regs.iter().rev().fold(0, fold)
    } else {
        regs.iter().fold(0, fold)
    }
}

/// Inverse of [`canonical`]: writes the low `regs.len()` words of `bits` in `order`.
fn layout(order: ByteOrder, bits: u64, regs: &mut [u16]) {
    let n = regs.len();
    for (i, reg) in regs.iter_mut().enumerate() {
        *reg = (bits >> (16 * (n - 1 - i))) as u16;
    }
    if n > 1 {
        let (reverse, swap_bytes) = swaps(order);
        if reverse {
            regs.reverse();
        }
        if swap_bytes {
            for reg in regs.iter_mut() {
                *reg = reg.swap_bytes();
            }
        }
    }
}

/// The value classes the codec distinguishes, with integer widths in bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Bool,
    Text,
    Unsigned(u32),
    Signed(u32),
    F32,
    F64,
}

impl Kind {
    fn of(data_type: DataType) -> Kind {
        match data_type {
            DataType::Bool => Kind::Bool,
            DataType::String => Kind::Text,
            DataType::U16 => Kind::Unsigned(16),
            DataType::U32 => Kind::Unsigned(32),
            DataType::U64 => Kind::Unsigned(64),
            DataType::I16 => Kind::Signed(16),
            DataType::I32 => Kind::Signed(32),
            DataType::I64 => Kind::Signed(64),
            DataType::F32 => Kind::F32,
            DataType::F64 => Kind::F64,
        }
    }

    /// Inclusive range of an integer kind; `None` for the others.
    fn int_range(self) -> Option<(i128, i128)> {
        match self {
            Kind::Unsigned(bits) => Some(int_range(false, bits)),
            Kind::Signed(bits) => Some(int_range(true, bits)),
            Kind::Bool | Kind::Text | Kind::F32 | Kind::F64 => None,
        }
    }
}

/// Inclusive range of a `bits`-wide integer.
fn int_range(signed: bool, bits: u32) -> (i128, i128) {
    if signed {
        (-(1i128 << (bits - 1)), (1i128 << (bits - 1)) - 1)
    } else {
        (0, (1i128 << bits) - 1)
    }
}

/// Sign-extends the low `bits` bits of `raw` (16, 32 or 64).
fn sign_extend(raw: u64, bits: u32) -> i64 {
    let shift = 64 - bits;
    i64::from_be_bytes((raw << shift).to_be_bytes()) >> shift
}

/// The raw bit pattern (low bits of the u64) of a numeric value, range-checked.
fn numeric_bits(enc: &TagEncoding, kind: Kind, value: &Value) -> Result<u64, EncodeError> {
    let data_type = enc.data_type;
    let identity = enc.is_identity();

    // Integers into integer types without scaling: exact, no trip through f64.
    if let (true, Some(range)) = (identity, kind.int_range()) {
        let exact = match value {
            Value::Int(i) => Some(i128::from(*i)),
            Value::UInt(u) => Some(i128::from(*u)),
            _ => None,
        };
        if let Some(raw) = exact {
            return int_bits(data_type, range, raw, &raw.to_string());
        }
    }

    let eng = match value {
        Value::Int(i) => *i as f64,
        Value::UInt(u) => *u as f64,
        Value::Float(f) => *f,
        Value::Bool(_) | Value::Text(_) => {
            return Err(EncodeError::Mismatch {
                data_type,
                found: value_kind(value),
            })
        }
    };
    if !eng.is_finite() {
        return Err(EncodeError::NotFinite { value: eng });
    }
    let raw = if identity {
        eng
    } else {
        if enc.scale == 0.0 || !enc.scale.is_finite() || !enc.offset.is_finite() {
            return Err(EncodeError::InvalidScale {
                scale: enc.scale,
                offset: enc.offset,
            });
        }
        (eng - enc.offset) / enc.scale
    };

    match kind {
        Kind::F32 => {
            let narrow = raw as f32;
            if narrow.is_finite() {
                Ok(u64::from(narrow.to_bits()))
            } else {
                Err(float_out_of_range(data_type, raw, f64::from(f32::MAX)))
            }
        }
        Kind::F64 => {
            if raw.is_finite() {
                Ok(raw.to_bits())
            } else {
                Err(float_out_of_range(data_type, raw, f64::MAX))
            }
        }
        Kind::Unsigned(bits) => int_bits_rounded(data_type, int_range(false, bits), raw),
        Kind::Signed(bits) => int_bits_rounded(data_type, int_range(true, bits), raw),
        // `encode_into` routes these elsewhere; kept total rather than panicking.
        Kind::Bool | Kind::Text => Err(EncodeError::Mismatch {
            data_type,
            found: value_kind(value),
        }),
    }
}

/// Rounds half away from zero, then range-checks.
fn int_bits_rounded(
    data_type: DataType,
    range: (i128, i128),
    raw: f64,
) -> Result<u64, EncodeError> {
    let rounded = raw.round();
    // `as` saturates; anything saturated is outside every integer type anyway.
    let int = if rounded.is_finite() {
        rounded as i128
    } else {
        i128::MAX
    };
    int_bits(data_type, range, int, &rounded.to_string())
}

fn int_bits(
    data_type: DataType,
    (min, max): (i128, i128),
    raw: i128,
    shown: &str,
) -> Result<u64, EncodeError> {
    if (min..=max).contains(&raw) {
        // Two's complement truncation: the low bits are the encoding.
        Ok(raw as u64)
    } else {
        Err(EncodeError::OutOfRange {
            data_type,
            raw: shown.to_owned(),
            min: min.to_string(),
            max: max.to_string(),
        })
    }
}

fn float_out_of_range(data_type: DataType, raw: f64, max: f64) -> EncodeError {
    EncodeError::OutOfRange {
        data_type,
        raw: raw.to_string(),
        min: (-max).to_string(),
        max: max.to_string(),
    }
}

fn encode_text(value: &Value, length: u16, regs: &mut [u16]) -> Result<(), EncodeError> {
    let Value::Text(text) = value else {
        return Err(EncodeError::Mismatch {
            data_type: DataType::String,
            found: value_kind(value),
        });
    };
    if let Some((index, ch)) = text
        .chars()
        .enumerate()
        .find(|(_, ch)| !(' '..='~').contains(ch))
    {
        return Err(EncodeError::NotAscii { index, ch });
    }
    let capacity = regs.len() * 2;
    // All ASCII from here on: bytes and characters coincide.
    if text.len() > capacity {
        return Err(EncodeError::TooLong {
            len: text.len(),
            registers: length,
            capacity,
        });
    }
    let mut bytes = text.as_bytes().to_vec();
    bytes.resize(capacity, 0);
    for (reg, pair) in regs.iter_mut().zip(bytes.chunks_exact(2)) {
        *reg = u16::from_be_bytes([pair[0], pair[1]]);
    }
    Ok(())
}

fn expected_kind(data_type: DataType) -> &'static str {
    match data_type {
        DataType::Bool => "a bool",
        DataType::String => "text",
        _ => "a number",
    }
}

fn value_kind(value: &Value) -> &'static str {
    match value {
        Value::Bool(_) => "a bool",
        Value::Int(_) => "a signed integer",
        Value::UInt(_) => "an unsigned integer",
        Value::Float(_) => "a float",
        Value::Text(_) => "text",
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const ORDERS: [ByteOrder; 4] = [
        ByteOrder::ABCD,
        ByteOrder::CDAB,
        ByteOrder::BADC,
        ByteOrder::DCBA,
    ];

    const NUMERIC: [DataType; 8] = [
        DataType::U16,
        DataType::I16,
        DataType::U32,
        DataType::I32,
        DataType::U64,
        DataType::I64,
        DataType::F32,
        DataType::F64,
    ];

    fn enc(data_type: DataType, order: ByteOrder) -> TagEncoding {
        TagEncoding::new(data_type).with_order(order)
    }

    /// A value and its registers in ABCD, CDAB, BADC and DCBA order.
    struct Vector {
        data_type: DataType,
        value: Value,
        regs: [&'static [u16]; 4],
    }

    fn v(data_type: DataType, value: Value, regs: [&'static [u16]; 4]) -> Vector {
        Vector {
            data_type,
            value,
            regs,
        }
    }

    fn vectors() -> Vec<Vector> {
        let mut all = vectors_up_to_32_bits();
        all.extend(vectors_of_64_bits());
        all
    }

    fn vectors_up_to_32_bits() -> Vec<Vector> {
        vec![
            v(DataType::U16, Value::UInt(0xBEEF), [&[0xBEEF]; 4]),
            v(DataType::I16, Value::Int(-1), [&[0xFFFF]; 4]),
            v(DataType::I16, Value::Int(-32768), [&[0x8000]; 4]),
            v(DataType::I16, Value::Int(0x1234), [&[0x1234]; 4]),
            v(
                DataType::U32,
                Value::UInt(0x1234_5678),
                [
                    &[0x1234, 0x5678],
                    &[0x5678, 0x1234],
                    &[0x3412, 0x7856],
                    &[0x7856, 0x3412],
                ],
            ),
            v(
                DataType::I32,
                Value::Int(-123_456_789), // 0xF8A432EB
                [
                    &[0xF8A4, 0x32EB],
                    &[0x32EB, 0xF8A4],
                    &[0xA4F8, 0xEB32],
                    &[0xEB32, 0xA4F8],
                ],
            ),
            v(
                DataType::I32,
                Value::Int(-2),
                [
                    &[0xFFFF, 0xFFFE],
                    &[0xFFFE, 0xFFFF],
                    &[0xFFFF, 0xFEFF],
                    &[0xFEFF, 0xFFFF],
                ],
            ),
            v(
                DataType::F32,
                Value::Float(f64::from(123.456_f32)), // 0x42F6E979
                [
                    &[0x42F6, 0xE979],
                    &[0xE979, 0x42F6],
                    &[0xF642, 0x79E9],
                    &[0x79E9, 0xF642],
                ],
            ),
        ]
    }

    fn vectors_of_64_bits() -> Vec<Vector> {
        vec![
            v(
                DataType::U64,
                Value::UInt(0x0123_4567_89AB_CDEF),
                [
                    &[0x0123, 0x4567, 0x89AB, 0xCDEF],
                    &[0xCDEF, 0x89AB, 0x4567, 0x0123],
                    &[0x2301, 0x6745, 0xAB89, 0xEFCD],
                    &[0xEFCD, 0xAB89, 0x6745, 0x2301],
                ],
            ),
            v(
                DataType::I64,
                Value::Int(-2),
                [
                    &[0xFFFF, 0xFFFF, 0xFFFF, 0xFFFE],
                    &[0xFFFE, 0xFFFF, 0xFFFF, 0xFFFF],
                    &[0xFFFF, 0xFFFF, 0xFFFF, 0xFEFF],
                    &[0xFEFF, 0xFFFF, 0xFFFF, 0xFFFF],
                ],
            ),
            v(
                DataType::I64,
                Value::Int(i64::MIN),
                [
                    &[0x8000, 0, 0, 0],
                    &[0, 0, 0, 0x8000],
                    &[0x0080, 0, 0, 0],
                    &[0, 0, 0, 0x0080],
                ],
            ),
            v(
                DataType::F64,
                Value::Float(123.456), // 0x405EDD2F1A9FBE77
                [
                    &[0x405E, 0xDD2F, 0x1A9F, 0xBE77],
                    &[0xBE77, 0x1A9F, 0xDD2F, 0x405E],
                    &[0x5E40, 0x2FDD, 0x9F1A, 0x77BE],
                    &[0x77BE, 0x9F1A, 0x2FDD, 0x5E40],
                ],
            ),
            v(
                DataType::F64,
                Value::Float(-0.5), // 0xBFE0000000000000
                [
                    &[0xBFE0, 0, 0, 0],
                    &[0, 0, 0, 0xBFE0],
                    &[0xE0BF, 0, 0, 0],
                    &[0, 0, 0, 0xE0BF],
                ],
            ),
        ]
    }

    #[test]
    fn f32_123_456_in_abcd_is_0x42f6_0xe979() {
        let abcd = enc(DataType::F32, ByteOrder::ABCD);
        assert_eq!(
            decode_registers(&abcd, &[0x42F6, 0xE979]),
            Ok(Value::Float(f64::from(123.456_f32)))
        );
        assert_eq!(
            encode_value(&abcd, &Value::Float(123.456)),
            Ok(vec![0x42F6, 0xE979])
        );
    }

    #[test]
    fn every_type_decodes_its_known_vector_in_every_byte_order() {
        for vector in vectors() {
            for (order, regs) in ORDERS.into_iter().zip(vector.regs) {
                assert_eq!(
                    decode_registers(&enc(vector.data_type, order), regs),
                    Ok(vector.value.clone()),
                    "{:?} {order:?} {regs:04X?}",
                    vector.data_type
                );
            }
        }
    }

    #[test]
    fn every_type_encodes_to_its_known_vector_in_every_byte_order() {
        for vector in vectors() {
            for (order, regs) in ORDERS.into_iter().zip(vector.regs) {
                assert_eq!(
                    encode_value(&enc(vector.data_type, order), &vector.value).as_deref(),
                    Ok(regs),
                    "{:?} {order:?} {:?}",
                    vector.data_type,
                    vector.value
                );
            }
        }
    }

    #[test]
    fn sixteen_bit_values_ignore_the_byte_order() {
        for order in ORDERS {
            assert_eq!(
                decode_registers(&enc(DataType::U16, order), &[0x0102]),
                Ok(Value::UInt(0x0102))
            );
        }
    }

    #[test]
    fn nan_and_infinity_are_errors_never_values() {
        let cases: [(DataType, ByteOrder, &[u16]); 6] = [
            (DataType::F32, ByteOrder::ABCD, &[0x7FC0, 0x0000]),
            (DataType::F32, ByteOrder::ABCD, &[0x7F80, 0x0000]),
            (DataType::F32, ByteOrder::ABCD, &[0xFF80, 0x0000]),
            (DataType::F32, ByteOrder::CDAB, &[0x0000, 0x7FC0]),
            (DataType::F64, ByteOrder::ABCD, &[0x7FF8, 0, 0, 0]),
            (DataType::F64, ByteOrder::DCBA, &[0, 0, 0, 0xF07F]),
        ];
        for (data_type, order, regs) in cases {
            let result = decode_registers(&enc(data_type, order), regs);
            assert!(
                matches!(result, Err(DecodeError::NotFinite { .. })),
                "{data_type:?} {order:?} {regs:04X?} gave {result:?}"
            );
        }
    }

    #[test]
    fn scaling_that_overflows_to_infinity_is_not_finite() {
        let f32_max = TagEncoding::new(DataType::F32).with_scale(f64::MAX, 0.0);
        assert!(matches!(
            decode_registers(&f32_max, &[0x7F7F, 0xFFFF]),
            Err(DecodeError::NotFinite { .. })
        ));
        let u64_huge = TagEncoding::new(DataType::U64).with_scale(1e300, 0.0);
        assert!(matches!(
            decode_registers(&u64_huge, &[0xFFFF; 4]),
            Err(DecodeError::NotFinite { .. })
        ));
    }

    #[test]
    fn unscaled_integers_stay_integers_and_keep_their_signedness() {
        assert_eq!(
            decode_registers(&TagEncoding::new(DataType::U64), &[0xFFFF; 4]),
            Ok(Value::UInt(u64::MAX))
        );
        assert_eq!(
            decode_registers(
                &TagEncoding::new(DataType::I64),
                &[0x7FFF, 0xFFFF, 0xFFFF, 0xFFFF]
            ),
            Ok(Value::Int(i64::MAX))
        );
        assert_eq!(
            decode_registers(&TagEncoding::new(DataType::U32), &[0xFFFF, 0xFFFF]),
            Ok(Value::UInt(u64::from(u32::MAX)))
        );
    }

    #[test]
    fn scaled_values_are_raw_times_scale_plus_offset_as_floats() {
        let tenths = TagEncoding::new(DataType::U16).with_scale(0.5, 0.0);
        assert_eq!(decode_registers(&tenths, &[1235]), Ok(Value::Float(617.5)));
        let signed = TagEncoding::new(DataType::I16).with_scale(2.0, 1.0);
        assert_eq!(decode_registers(&signed, &[0xFFFB]), Ok(Value::Float(-9.0)));
        let offset_only = TagEncoding::new(DataType::I32).with_scale(1.0, -40.0);
        assert_eq!(
            decode_registers(&offset_only, &[0, 100]),
            Ok(Value::Float(60.0))
        );
        let float = TagEncoding::new(DataType::F32).with_scale(10.0, -5.0);
        assert_eq!(
            decode_registers(&float, &[0x4000, 0]),
            Ok(Value::Float(15.0))
        );
    }

    #[test]
    fn a_wrong_register_count_is_a_length_error_naming_both_counts() {
        let err = decode_registers(&TagEncoding::new(DataType::U32), &[1]).unwrap_err();
        assert_eq!(
            err,
            DecodeError::Length {
                expected: 2,
                found: 1
            }
        );
        assert_eq!(
            err.to_string(),
            "wrong number of registers: expected 2, found 1"
        );
        assert_eq!(
            decode_registers(&TagEncoding::string(3), &[0x4142; 4]),
            Err(DecodeError::Length {
                expected: 3,
                found: 4
            })
        );
        assert_eq!(
            decode_registers(&TagEncoding::new(DataType::F64), &[]),
            Err(DecodeError::Length {
                expected: 4,
                found: 0
            })
        );
    }

    #[test]
    fn strings_are_two_ascii_bytes_per_register_high_byte_first() {
        let text = |regs: &[u16]| decode_registers(&TagEncoding::string(regs.len() as u16), regs);
        assert_eq!(text(&[0x4142]), Ok(Value::Text("AB".into())));
        assert_eq!(
            text(&[0x4845, 0x4C4C, 0x4F00, 0x0000]),
            Ok(Value::Text("HELLO".into()))
        );
        assert_eq!(
            text(&[0x4845, 0x4C4C, 0x4F20, 0x2020]),
            Ok(Value::Text("HELLO".into()))
        );
        assert_eq!(text(&[0x4F20, 0x0020]), Ok(Value::Text("O".into())));
        assert_eq!(text(&[0x2041, 0x2042]), Ok(Value::Text(" A B".into())));
        assert_eq!(text(&[0x0000, 0x2000]), Ok(Value::Text(String::new())));
        assert_eq!(text(&[]), Ok(Value::Text(String::new())));
    }

    #[test]
    fn non_printable_string_bytes_are_errors_not_garbage_text() {
        let text = |regs: &[u16]| decode_registers(&TagEncoding::string(regs.len() as u16), regs);
        assert_eq!(
            text(&[0x41C3, 0xA900]),
            Err(DecodeError::NotAscii {
                index: 1,
                byte: 0xC3
            })
        );
        assert_eq!(
            text(&[0x4107]),
            Err(DecodeError::NotAscii {
                index: 1,
                byte: 0x07
            })
        );
        // NUL is padding only at the end.
        assert_eq!(
            text(&[0x4100, 0x4200]),
            Err(DecodeError::NotAscii { index: 1, byte: 0 })
        );
        let message = text(&[0x7F00]).unwrap_err().to_string();
        assert!(
            message.contains("0x7F") && message.contains("printable ASCII"),
            "{message}"
        );
    }

    #[test]
    fn a_bool_reads_its_bit_of_the_register() {
        let reg = 0b1000_0000_0000_1010;
        let bit = |b| decode_registers(&TagEncoding::register_bit(b), &[reg]);
        assert_eq!(bit(0), Ok(Value::Bool(false)));
        assert_eq!(bit(1), Ok(Value::Bool(true)));
        assert_eq!(bit(3), Ok(Value::Bool(true)));
        assert_eq!(bit(15), Ok(Value::Bool(true)));
        assert_eq!(bit(16), Err(DecodeError::BitOutOfRange { bit: 16 }));
        let whole = TagEncoding::new(DataType::Bool);
        assert_eq!(decode_registers(&whole, &[0]), Ok(Value::Bool(false)));
        assert_eq!(decode_registers(&whole, &[0x0100]), Ok(Value::Bool(true)));
    }

    #[test]
    fn a_coil_bool_needs_exactly_one_bit() {
        assert_eq!(decode_bit(&[true]), Ok(Value::Bool(true)));
        assert_eq!(decode_bit(&[false]), Ok(Value::Bool(false)));
        assert_eq!(decode_bit(&[]), Err(DecodeError::BitCount { found: 0 }));
        assert_eq!(
            decode_bit(&[true, false]),
            Err(DecodeError::BitCount { found: 2 })
        );
        assert_eq!(encode_bit(&Value::Bool(true)), Ok(true));
        assert!(matches!(
            encode_bit(&Value::Int(1)),
            Err(EncodeError::Mismatch { .. })
        ));
    }

    #[test]
    fn packed_bits_are_least_significant_bit_first() {
        let bits = [true, false, true, true, false, false, false, false, true];
        assert_eq!(pack_bits(&bits), vec![0b0000_1101, 0b0000_0001]);
        assert_eq!(
            unpack_bits(&[0b0000_1101, 0b1111_1111], 9),
            Ok(bits.to_vec())
        );
        assert_eq!(
            unpack_bits(&[0xFF], 9),
            Err(DecodeError::ByteCount {
                count: 9,
                expected: 2,
                found: 1
            })
        );
        assert_eq!(unpack_bits(&[], 0), Ok(vec![]));
    }

    #[test]
    fn encoding_a_bool_changes_only_its_bit_of_a_shared_register() {
        let mut regs = [0b1010_0000_0000_0001];
        encode_into(&TagEncoding::register_bit(3), &Value::Bool(true), &mut regs).unwrap();
        assert_eq!(regs, [0b1010_0000_0000_1001]);
        encode_into(
            &TagEncoding::register_bit(15),
            &Value::Bool(false),
            &mut regs,
        )
        .unwrap();
        assert_eq!(regs, [0b0010_0000_0000_1001]);
        assert_eq!(
            encode_into(
                &TagEncoding::register_bit(16),
                &Value::Bool(true),
                &mut regs
            ),
            Err(EncodeError::BitOutOfRange { bit: 16 })
        );
        assert_eq!(
            encode_value(&TagEncoding::new(DataType::Bool), &Value::Bool(true)),
            Ok(vec![1])
        );
    }

    #[test]
    fn encoding_rounds_to_the_nearest_integer_half_away_from_zero() {
        let u16_enc = TagEncoding::new(DataType::U16);
        let i16_enc = TagEncoding::new(DataType::I16);
        assert_eq!(encode_value(&u16_enc, &Value::Float(2.5)), Ok(vec![3]));
        assert_eq!(encode_value(&u16_enc, &Value::Float(2.4)), Ok(vec![2]));
        assert_eq!(
            encode_value(&i16_enc, &Value::Float(-2.5)),
            Ok(vec![0xFFFD])
        );
        let tenths = u16_enc.with_scale(0.1, 0.0);
        assert_eq!(encode_value(&tenths, &Value::Float(12.34)), Ok(vec![123]));
        let offset = i16_enc.with_scale(0.5, -40.0);
        assert_eq!(
            encode_value(&offset, &Value::Float(-41.0)),
            Ok(vec![0xFFFE])
        );
    }

    #[test]
    fn values_outside_the_type_after_reversing_the_scale_are_out_of_range() {
        let out = |enc: TagEncoding, value: Value| {
            let result = encode_value(&enc, &value);
            assert!(
                matches!(result, Err(EncodeError::OutOfRange { .. })),
                "{enc:?} {value:?} gave {result:?}"
            );
        };
        out(TagEncoding::new(DataType::U16), Value::UInt(65_536));
        out(TagEncoding::new(DataType::U16), Value::Int(-1));
        out(TagEncoding::new(DataType::U16), Value::Float(-0.6));
        out(TagEncoding::new(DataType::I16), Value::Int(-32_769));
        out(TagEncoding::new(DataType::I16), Value::Float(32_767.5));
        out(TagEncoding::new(DataType::U32), Value::Int(-1));
        out(TagEncoding::new(DataType::I64), Value::UInt(u64::MAX));
        out(TagEncoding::new(DataType::U64), Value::Float(1.9e19));
        out(
            TagEncoding::new(DataType::U16).with_scale(0.1, 0.0),
            Value::Float(6553.6),
        );
        out(
            TagEncoding::new(DataType::U16).with_scale(1.0, 100.0),
            Value::Float(99.0),
        );
        out(TagEncoding::new(DataType::F32), Value::Float(1e39));
        out(
            TagEncoding::new(DataType::F64).with_scale(1e-300, 0.0),
            Value::Float(1e300),
        );

        let message = encode_value(&TagEncoding::new(DataType::U16), &Value::UInt(70_000))
            .unwrap_err()
            .to_string();
        assert_eq!(message, "raw value 70000 (after reversing scale and offset) does not fit u16, expected 0 to 65535");
    }

    #[test]
    fn the_extremes_of_every_integer_type_encode_exactly() {
        let exact = |data_type, value: Value| {
            let enc = TagEncoding::new(data_type);
            let regs = encode_value(&enc, &value).unwrap();
            assert_eq!(decode_registers(&enc, &regs), Ok(value));
        };
        exact(DataType::U64, Value::UInt(u64::MAX));
        exact(DataType::U64, Value::UInt(u64::MAX - 1));
        exact(DataType::I64, Value::Int(i64::MIN));
        exact(DataType::I64, Value::Int(i64::MAX - 1));
        exact(DataType::I16, Value::Int(-32_768));
        exact(DataType::U32, Value::UInt(u64::from(u32::MAX)));
        // A signed value fits an unsigned type when non-negative, and vice versa.
        let regs = encode_value(&TagEncoding::new(DataType::U16), &Value::Int(7)).unwrap();
        assert_eq!(regs, vec![7]);
    }

    #[test]
    fn encoding_rejects_values_that_are_not_numbers_or_not_finite() {
        let u16_enc = TagEncoding::new(DataType::U16);
        assert!(matches!(
            encode_value(&u16_enc, &Value::Text("1".into())),
            Err(EncodeError::Mismatch { .. })
        ));
        assert!(matches!(
            encode_value(&u16_enc, &Value::Bool(true)),
            Err(EncodeError::Mismatch { .. })
        ));
        assert!(matches!(
            encode_value(&TagEncoding::new(DataType::F32), &Value::Float(f64::NAN)),
            Err(EncodeError::NotFinite { .. })
        ));
        assert!(matches!(
            encode_value(&u16_enc.with_scale(0.0, 1.0), &Value::Float(1.0)),
            Err(EncodeError::InvalidScale { .. })
        ));
        assert!(matches!(
            encode_value(&TagEncoding::string(2), &Value::UInt(1)),
            Err(EncodeError::Mismatch { .. })
        ));
        let message = encode_value(&u16_enc, &Value::Text("1".into()))
            .unwrap_err()
            .to_string();
        assert_eq!(message, "cannot encode text as u16, expected a number");
    }

    #[test]
    fn text_is_padded_with_nul_and_must_fit_and_be_printable_ascii() {
        let four = TagEncoding::string(4);
        assert_eq!(
            encode_value(&four, &Value::Text("HELLO".into())),
            Ok(vec![0x4845, 0x4C4C, 0x4F00, 0x0000])
        );
        assert_eq!(
            encode_value(&TagEncoding::string(1), &Value::Text("ABC".into())),
            Err(EncodeError::TooLong {
                len: 3,
                registers: 1,
                capacity: 2
            })
        );
        assert_eq!(
            encode_value(&four, &Value::Text("né".into())),
            Err(EncodeError::NotAscii { index: 1, ch: 'é' })
        );
        assert_eq!(
            encode_value(&four, &Value::Text("a\nb".into())),
            Err(EncodeError::NotAscii { index: 1, ch: '\n' })
        );
    }

    #[test]
    fn encode_into_a_buffer_of_the_wrong_length_leaves_it_untouched() {
        let mut regs = [9, 9, 9];
        assert_eq!(
            encode_into(&TagEncoding::new(DataType::U32), &Value::UInt(1), &mut regs),
            Err(EncodeError::Length {
                expected: 2,
                found: 3
            })
        );
        assert_eq!(regs, [9, 9, 9]);
    }

    fn order() -> impl Strategy<Value = ByteOrder> {
        prop::sample::select(ORDERS.to_vec())
    }

    fn data_type() -> impl Strategy<Value = DataType> {
        let mut all = NUMERIC.to_vec();
        all.extend([DataType::Bool, DataType::String]);
        prop::sample::select(all)
    }

    fn finite_f32() -> impl Strategy<Value = f32> {
        use prop::num::f32;
        f32::POSITIVE | f32::NEGATIVE | f32::NORMAL | f32::SUBNORMAL | f32::ZERO
    }

    fn finite_f64() -> impl Strategy<Value = f64> {
        use prop::num::f64;
        f64::POSITIVE | f64::NEGATIVE | f64::NORMAL | f64::SUBNORMAL | f64::ZERO
    }

    /// Any value the type can hold, as decoding an unscaled tag would give it.
    fn native_value(data_type: DataType) -> BoxedStrategy<Value> {
        match data_type {
            DataType::U16 => any::<u16>().prop_map(|v| Value::UInt(v.into())).boxed(),
            DataType::I16 => any::<i16>().prop_map(|v| Value::Int(v.into())).boxed(),
            DataType::U32 => any::<u32>().prop_map(|v| Value::UInt(v.into())).boxed(),
            DataType::I32 => any::<i32>().prop_map(|v| Value::Int(v.into())).boxed(),
            DataType::U64 => any::<u64>().prop_map(Value::UInt).boxed(),
            DataType::I64 => any::<i64>().prop_map(Value::Int).boxed(),
            DataType::F32 => finite_f32().prop_map(|v| Value::Float(v.into())).boxed(),
            DataType::F64 => finite_f64().prop_map(Value::Float).boxed(),
            DataType::Bool => any::<bool>().prop_map(Value::Bool).boxed(),
            DataType::String => "[ -~]{0,8}".prop_map(Value::Text).boxed(),
        }
    }

    /// A raw integer of the type that survives a trip through f64 (|raw| <= 2^53).
    fn raw_integer(data_type: DataType) -> BoxedStrategy<f64> {
        const EXACT: i64 = 1 << 53;
        match data_type {
            DataType::U16 => any::<u16>().prop_map(f64::from).boxed(),
            DataType::I16 => any::<i16>().prop_map(f64::from).boxed(),
            DataType::U32 => any::<u32>().prop_map(f64::from).boxed(),
            DataType::I32 => any::<i32>().prop_map(f64::from).boxed(),
            DataType::U64 => (0..=EXACT).prop_map(|v| v as f64).boxed(),
            _ => (-EXACT..=EXACT).prop_map(|v| v as f64).boxed(),
        }
    }

    fn scale_and_offset() -> impl Strategy<Value = (f64, f64)> {
        (1e-3..1e3_f64, any::<bool>(), -1e4..1e4_f64)
            .prop_map(|(scale, negative, offset)| (if negative { -scale } else { scale }, offset))
    }

    fn same(a: &Value, b: &Value) -> bool {
        match (a, b) {
            (Value::Float(x), Value::Float(y)) => x.to_bits() == y.to_bits(),
            _ => a == b,
        }
    }

    proptest! {
        #[test]
        fn every_numeric_type_round_trips_exactly_in_every_byte_order_without_scaling(
            (data_type, order, value) in prop::sample::select(NUMERIC.to_vec())
                .prop_flat_map(|t| (Just(t), order(), native_value(t)))
        ) {
            let enc = enc(data_type, order);
            let regs = encode_value(&enc, &value).unwrap();
            prop_assert_eq!(regs.len(), usize::from(data_type.registers()));
            let decoded = decode_registers(&enc, &regs).unwrap();
            prop_assert!(same(&decoded, &value), "{:?} became {:?}", value, decoded);
        }

        #[test]
        fn scaled_integers_round_trip_within_a_relative_tolerance(
            (data_type, order, raw, (scale, offset)) in prop::sample::select(NUMERIC[..6].to_vec())
                .prop_flat_map(|t| (Just(t), order(), raw_integer(t), scale_and_offset()))
        ) {
            let enc = enc(data_type, order).with_scale(scale, offset);
            let eng = raw * scale + offset;
            let regs = encode_value(&enc, &Value::Float(eng)).unwrap();
            let Ok(Value::Float(decoded)) = decode_registers(&enc, &regs) else {
                return Err(TestCaseError::fail("scaled integer did not decode to a float"));
            };
            let tolerance = 1e-9 * (eng.abs() + offset.abs());
            prop_assert!((decoded - eng).abs() <= tolerance, "{} became {}", eng, decoded);
        }

        #[test]
        fn scaled_floats_round_trip_within_a_relative_tolerance(
            data_type in prop::sample::select(vec![DataType::F32, DataType::F64]),
            order in order(),
            eng in -1e6..1e6_f64,
            (scale, offset) in scale_and_offset(),
        ) {
            let enc = enc(data_type, order).with_scale(scale, offset);
            let regs = encode_value(&enc, &Value::Float(eng)).unwrap();
            let Ok(Value::Float(decoded)) = decode_registers(&enc, &regs) else {
                return Err(TestCaseError::fail("scaled float did not decode to a float"));
            };
            let relative = if data_type == DataType::F32 { 1e-6 } else { 1e-12 };
            let tolerance = relative * (eng.abs() + offset.abs()) + 1e-30;
            prop_assert!((decoded - eng).abs() <= tolerance, "{} became {}", eng, decoded);
        }

        #[test]
        fn unscaled_numeric_registers_survive_decode_then_encode_unchanged(
            data_type in prop::sample::select(NUMERIC.to_vec()),
            order in order(),
            regs in prop::collection::vec(any::<u16>(), 4),
        ) {
            let enc = enc(data_type, order);
            let regs = &regs[..usize::from(data_type.registers())];
            // NaN and infinity are errors by design; everything else must come back.
            if let Ok(value) = decode_registers(&enc, regs) {
                prop_assert_eq!(encode_value(&enc, &value).unwrap(), regs.to_vec());
            }
        }

        #[test]
        fn text_round_trips_without_its_trailing_padding(
            (length, text) in (0u16..=20).prop_flat_map(|length| (Just(length), "[ -~]{0,40}")),
            order in order(),
        ) {
            let text = text[..text.len().min(2 * usize::from(length))].trim_end().to_owned();
            let enc = TagEncoding::string(length).with_order(order);
            let regs = encode_value(&enc, &Value::Text(text.clone())).unwrap();
            prop_assert_eq!(decode_registers(&enc, &regs), Ok(Value::Text(text)));
        }

        #[test]
        fn a_bool_round_trips_through_any_bit_of_a_shared_register(
            bit in 0u8..16,
            before in any::<u16>(),
            on in any::<bool>(),
            order in order(),
        ) {
            let enc = TagEncoding::register_bit(bit).with_order(order);
            let mut regs = [before];
            encode_into(&enc, &Value::Bool(on), &mut regs).unwrap();
            prop_assert_eq!(regs[0] & !(1 << bit), before & !(1 << bit));
            prop_assert_eq!(decode_registers(&enc, &regs), Ok(Value::Bool(on)));
        }

        #[test]
        fn decoding_never_panics_and_never_yields_a_non_finite_float_or_non_ascii_text(
            data_type in data_type(),
            order in order(),
            length in 0u16..=130,
            bit in any::<Option<u8>>(),
            scale in any::<f64>(),
            offset in any::<f64>(),
            regs in prop::collection::vec(any::<u16>(), 0..=140),
        ) {
            let enc = TagEncoding { data_type, order, length, bit, scale, offset };
            match decode_registers(&enc, &regs) {
                Ok(Value::Float(f)) => prop_assert!(f.is_finite()),
                Ok(Value::Text(t)) => prop_assert!(t.bytes().all(|b| (0x20..=0x7E).contains(&b))),
                Ok(_) | Err(_) => {}
            }
        }

        #[test]
        fn encoding_never_panics_and_gives_the_tags_register_count(
            data_type in data_type(),
            order in order(),
            length in 0u16..=130,
            bit in any::<Option<u8>>(),
            scale in any::<f64>(),
            offset in any::<f64>(),
            value in prop_oneof![
                any::<bool>().prop_map(Value::Bool),
                any::<i64>().prop_map(Value::Int),
                any::<u64>().prop_map(Value::UInt),
                any::<f64>().prop_map(Value::Float),
                ".{0,300}".prop_map(Value::Text),
            ],
        ) {
            let enc = TagEncoding { data_type, order, length, bit, scale, offset };
            if let Ok(regs) = encode_value(&enc, &value) {
                prop_assert_eq!(regs.len(), usize::from(enc.registers()));
            }
        }
    }
}
