//! The tag table of the Modbus interop tests (`modbus_interop` over TCP,
//! `modbus_rtu_interop` over a serial line) and the harness for their Python peers.
//!
//! The test describes the device's data as values ([`points`]): it writes the station
//! profile from them ([`profile`]) and hands the same table to the pymodbus server
//! ([`Point::spec`]), which encodes every value with pymodbus's own converter and Python's
//! `struct`, never with our codec. The peers run under `linesentry_testkit::PythonPeer`.

#![allow(dead_code, unreachable_pub)]

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::process::Child;

use linesentry_agent::source::{PollResult, Value};
use serde_json::json;

pub const VENDOR: &str = "LineSentry Test Works";
pub const PRODUCT_CODE: &str = "LS-PLC-42";
pub const REVISION: &str = "3.1.4";

/// Kills the child process however the test ends.
#[derive(Debug)]
pub struct ChildGuard(pub Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One tag: where the server puts it, how it is encoded and what the station must read.
#[derive(Debug, Clone)]
pub struct Point {
    pub name: String,
    pub table: &'static str,
    /// Zero-based protocol address.
    pub address: u16,
    pub data_type: &'static str,
    pub order: Option<&'static str>,
    pub bit: Option<u8>,
    pub length: Option<u16>,
    /// The raw value the server stores.
    pub raw: serde_json::Value,
    pub scale: Option<(f64, f64)>,
    pub expected: Value,
}

impl Point {
    pub fn new(
        name: impl Into<String>,
        table: &'static str,
        address: u16,
        data_type: &'static str,
        raw: serde_json::Value,
        expected: Value,
    ) -> Point {
        Point {
            name: name.into(),
            table,
            address,
            data_type,
            order: None,
            bit: None,
            length: None,
            raw,
            scale: None,
            expected,
        }
    }

    pub fn order(self, order: &'static str) -> Point {
        Point {
            order: Some(order),
            ..self
        }
    }

    /// Engineering value = raw × scale + offset, the profile's definition.
    pub fn scaled(self, raw: f64, scale: f64, offset: f64) -> Point {
        Point {
            scale: Some((scale, offset)),
            expected: Value::Float(raw * scale + offset),
            ..self
        }
    }

    pub fn registers(&self) -> u16 {
        match self.data_type {
            "u32" | "i32" | "f32" => 2,
            "u64" | "i64" | "f64" => 4,
            "string" => self.length.unwrap(),
            _ => 1,
        }
    }

    /// The `[[tags]]` table, with the address written as `addressing` wants it.
    pub fn toml(&self, one_based: bool) -> String {
        let mut t = format!(
            "[[tags]]\nname = \"{}\"\nrole = \"measurement\"\ntype = \"{}\"\narea = \"{}\"\n\
             address = {}\n",
            self.name,
            self.data_type,
            self.table,
            u32::from(self.address) + u32::from(one_based)
        );
        if let Some(order) = self.order {
            writeln!(t, "order = \"{order}\"").unwrap();
        }
        if let Some(bit) = self.bit {
            writeln!(t, "bit = {bit}").unwrap();
        }
        if let Some(length) = self.length {
            writeln!(t, "length = {length}").unwrap();
        }
        if let Some((scale, offset)) = self.scale {
            writeln!(t, "scale = {scale:?}\noffset = {offset:?}").unwrap();
        }
        t + "\n"
    }

    pub fn spec(&self) -> serde_json::Value {
        json!({
            "table": self.table,
            "address": self.address,
            "type": self.data_type,
            "order": self.order.unwrap_or("ABCD"),
            "bit": self.bit,
            "length": self.length,
            "value": self.raw,
        })
    }
}

pub const ORDERS: [&str; 4] = ["ABCD", "CDAB", "BADC", "DCBA"];

/// Every data type in every byte order, scaled values, bits of every kind.
#[allow(clippy::too_many_lines)] // one table, read top to bottom
pub fn points() -> Vec<Point> {
    let mut p = vec![
        Point::new("coil_on", "coil", 0, "bool", json!(true), Value::Bool(true)),
        Point::new(
            "coil_off",
            "coil",
            1,
            "bool",
            json!(false),
            Value::Bool(false),
        ),
        Point::new(
            "coil_far",
            "coil",
            37,
            "bool",
            json!(true),
            Value::Bool(true),
        ),
        Point::new(
            "di_on",
            "discrete_input",
            3,
            "bool",
            json!(true),
            Value::Bool(true),
        ),
        Point::new(
            "di_off",
            "discrete_input",
            4,
            "bool",
            json!(false),
            Value::Bool(false),
        ),
    ];
    for (bit, on) in [(0u8, true), (7, false), (15, true)] {
        p.push(Point {
            bit: Some(bit),
            ..Point::new(
                format!("hr_bit_{bit}"),
                "holding_register",
                0,
                "bool",
                json!(on),
                Value::Bool(on),
            )
        });
    }
    p.push(Point::new(
        "u16_max",
        "holding_register",
        1,
        "u16",
        json!(65_535),
        Value::UInt(65_535),
    ));
    p.push(Point::new(
        "i16_neg",
        "holding_register",
        2,
        "i16",
        json!(-12_345),
        Value::Int(-12_345),
    ));

    let f32_value = f64::from(123.456_f32);
    let mut next = 10u16;
    for order in ORDERS {
        let typed: [(&str, serde_json::Value, Value); 6] = [
            ("u32", json!(3_735_928_559_u32), Value::UInt(3_735_928_559)),
            ("i32", json!(-123_456_789), Value::Int(-123_456_789)),
            (
                "u64",
                json!(0xFEDC_BA98_7654_3210_u64),
                Value::UInt(0xFEDC_BA98_7654_3210),
            ),
            (
                "i64",
                json!(-1_234_567_890_123_456_789_i64),
                Value::Int(-1_234_567_890_123_456_789),
            ),
            ("f32", json!(f32_value), Value::Float(f32_value)),
            ("f64", json!(-9_876.543_21), Value::Float(-9_876.543_21)),
        ];
        for (data_type, raw, expected) in typed {
            let point = Point::new(
                format!("{data_type}_{}", order.to_lowercase()),
                "holding_register",
                next,
                data_type,
                raw,
                expected,
            )
            .order(order);
            // One unused register between tags: the planner still joins them into blocks.
            next += point.registers() + 1;
            p.push(point);
        }
    }
    assert!(next < 200);

    p.push(Point {
        length: Some(5),
        ..Point::new(
            "text",
            "input_register",
            0,
            "string",
            json!("LINE-7 ok"),
            Value::Text("LINE-7 ok".into()),
        )
    });
    p.push(
        Point::new(
            "i32_ir_dcba",
            "input_register",
            10,
            "i32",
            json!(-2_000_000_001),
            Value::Int(-2_000_000_001),
        )
        .order("DCBA"),
    );
    // Scaled values, including one in the input registers.
    p.push(
        Point::new(
            "scaled_i16",
            "holding_register",
            220,
            "i16",
            json!(-400),
            Value::Bool(false),
        )
        .scaled(-400.0, 0.25, 10.0),
    );
    p.push(
        Point::new(
            "scaled_u16",
            "holding_register",
            221,
            "u16",
            json!(1234),
            Value::Bool(false),
        )
        .scaled(1234.0, 0.1, 0.0),
    );
    p.push(
        Point::new(
            "scaled_f32",
            "holding_register",
            222,
            "f32",
            json!(2.5),
            Value::Bool(false),
        )
        .order("DCBA")
        .scaled(2.5, 4.0, -1.0),
    );
    p.push(
        Point::new(
            "scaled_u32_ir",
            "input_register",
            20,
            "u32",
            json!(1_234_567),
            Value::Bool(false),
        )
        .order("CDAB")
        .scaled(1_234_567.0, 0.001, -1000.0),
    );
    p
}

pub fn profile(name: &str, one_based: bool, points: &[Point]) -> String {
    let addressing = if one_based { "one_based" } else { "zero_based" };
    let mut text = format!(
        "[profile]\nname = \"{name}\"\nprotocol = \"modbus\"\naddressing = \"{addressing}\"\n\n"
    );
    for p in points {
        text += &p.toml(one_based);
    }
    text
}

pub fn values(result: &PollResult) -> BTreeMap<String, Value> {
    result
        .readings
        .iter()
        .map(|r| (r.tag.to_string(), r.value.clone()))
        .collect()
}

pub fn expected(points: &[Point]) -> BTreeMap<String, Value> {
    points
        .iter()
        .map(|p| (p.name.clone(), p.expected.clone()))
        .collect()
}
