//! `linesentry probe`: read every tag of a profile from the live device, once or N times,
//! and say tag by tag what came back and what is wrong, before a station is deployed.
//!
//! Unlike a station's poll, each Modbus tag is read with a request of its own, so a device
//! exception names the one tag it belongs to; OPC UA tags are read in one Read per poll
//! (Value), after one Read of every node's DataType. Every request runs under the timeout;
//! a Modbus link that fails is reopened for the next tag.
//!
//! What fails a tag ([`judge`] and the readers): a device exception, a link failure or
//! timeout, a node the server does not know (or lets this user read), a node whose
//! DataType the profile's `type` does not fit (the check a station runs at connect), a
//! value that does not decode (NaN and infinities included), a value outside the tag's
//! `limits`, a status or mode value its `states` do not name.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

use opcua::types::{AttributeId, ReadValueId, TimestampsToReturn, Variant};
use tokio_modbus::client::{tcp, Reader as _};
use tokio_modbus::Slave;

use super::session::{self, OpcUaTarget};
use crate::source::modbus::{decode_bit, decode_registers, exception_name, TagEncoding};
use crate::source::opcua::convert;
use crate::source::{Profile, RegisterArea, SourceError, TagRole, TagSpec, Value};

/// The device to probe.
#[derive(Debug, Clone)]
pub enum ProbeTarget {
    ModbusTcp { address: String, unit_id: u8 },
    OpcUa(OpcUaTarget),
}

/// How often and how patiently.
#[derive(Debug, Clone, Copy)]
pub struct ProbeOptions {
    pub polls: u32,
    /// Between the start of two polls.
    pub interval: Duration,
    /// Bound of every request (and of connecting).
    pub timeout: Duration,
}

/// One tag in one poll.
#[derive(Debug, Clone, PartialEq)]
pub struct TagResult {
    pub tag: String,
    pub role: TagRole,
    pub unit: Option<String>,
    /// Registers (hex), bits or the OPC UA variant as received; empty when nothing came.
    pub raw: String,
    pub value: Option<Value>,
    /// The name the tag's `states` give the value, if any.
    pub state: Option<String>,
    /// What is wrong; `None` when the tag is fine.
    pub problem: Option<String>,
}

/// One poll of every tag.
#[derive(Debug, Clone, PartialEq)]
pub struct PollReport {
    pub poll: u32,
    pub results: Vec<TagResult>,
}

impl PollReport {
    pub fn failures(&self) -> usize {
        self.results.iter().filter(|r| r.problem.is_some()).count()
    }
}

/// Polls `profile`'s tags from `target` `options.polls` times. `Err` only when the device
/// cannot be reached at all (no connection, no session); a tag's failure is in its result.
pub async fn probe(
    profile: &Profile,
    target: &ProbeTarget,
    options: &ProbeOptions,
) -> Result<Vec<PollReport>, SourceError> {
    let polls = options.polls.max(1);
    let mut reports = Vec::with_capacity(polls as usize);
    match target {
        ProbeTarget::ModbusTcp { address, unit_id } => {
            let mut link = ModbusLink {
                address: address.clone(),
                unit_id: *unit_id,
                timeout: options.timeout,
                context: None,
            };
            // A device that cannot be reached at all is one error, not one per tag.
            link.connect().await?;
            for poll in 1..=polls {
                let started = tokio::time::Instant::now();
                let mut results = Vec::with_capacity(profile.tags.len());
                for tag in &profile.tags {
                    results.push(link.read(tag).await);
                }
                reports.push(PollReport { poll, results });
                if poll < polls {
                    tokio::time::sleep_until(started + options.interval).await;
                }
            }
        }
        ProbeTarget::OpcUa(target) => {
            let s = session::connect(target).await?;
            let outcome = opcua_polls(&s, profile, options, polls, &mut reports).await;
            s.close().await;
            outcome?;
        }
    }
    Ok(reports)
}

/// What a tag's decoded value says: the value (when there is one) and what is wrong with
/// it. Pure.
pub fn judge(tag: &TagSpec, decoded: Result<Value, String>) -> (Option<Value>, Option<String>) {
    let value = match decoded {
        Ok(v) => v,
        Err(why) => return (None, Some(why)),
    };
    if let Value::Float(x) = value {
        if !x.is_finite() {
            return (Some(value), Some(format!("not a number ({x})")));
        }
    }
    if let (Some(limits), Some(x)) = (tag.limits, value.as_f64()) {
        if !limits.contains(x) {
            return (
                Some(value),
                Some(format!(
                    "outside its limits {} .. {}",
                    limits.min, limits.max
                )),
            );
        }
    }
    if matches!(tag.role, TagRole::Status | TagRole::Mode) && !tag.states.is_empty() {
        if let Some(raw) = raw_state(&value) {
            if tag.state_name(raw).is_none() {
                return (Some(value), Some(format!("{raw} is none of its states")));
            }
        }
    }
    (Some(value), None)
}

/// The integer a status or mode value is looked up by in `states`.
fn raw_state(value: &Value) -> Option<i64> {
    match value {
        Value::Bool(b) => Some(i64::from(*b)),
        Value::Int(i) => Some(*i),
        Value::UInt(u) => i64::try_from(*u).ok(),
        _ => None,
    }
}

/// The name `tag`'s states give `value`.
fn state_of(tag: &TagSpec, value: Option<&Value>) -> Option<String> {
    tag.state_name(raw_state(value?)?).map(str::to_owned)
}

/// The table of one poll, as `linesentry probe` prints it. Pure.
pub fn table(report: &PollReport) -> String {
    let header = ["tag", "role", "raw", "value", "unit", "verdict"];
    let rows: Vec<[String; 6]> = report
        .results
        .iter()
        .map(|r| {
            [
                r.tag.clone(),
                r.role.to_string(),
                r.raw.clone(),
                match (&r.value, &r.state) {
                    (Some(v), Some(state)) => format!("{v} ({state})"),
                    (Some(v), None) => v.to_string(),
                    (None, _) => String::new(),
                },
                r.unit.clone().unwrap_or_default(),
                match &r.problem {
                    None => "ok".to_owned(),
                    Some(p) => format!("FAIL: {p}"),
                },
            ]
        })
        .collect();
    let mut widths = header.map(|h| h.chars().count());
    for row in &rows {
        // The verdict is last and left ragged.
        for (w, cell) in widths.iter_mut().zip(row.iter()).take(5) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let line = |out: &mut String, cells: &[String]| {
        for (i, cell) in cells.iter().enumerate() {
            if i == cells.len() - 1 {
                let _ = writeln!(out, "{cell}");
            } else {
                let pad = widths[i].saturating_sub(cell.chars().count());
                let _ = write!(out, "{cell}{}  ", " ".repeat(pad));
            }
        }
    };
    line(&mut out, &header.map(str::to_owned));
    for row in &rows {
        line(&mut out, row);
    }
    out
}

struct ModbusLink {
    address: String,
    unit_id: u8,
    timeout: Duration,
    context: Option<tokio_modbus::client::Context>,
}

impl ModbusLink {
    fn millis(&self) -> u128 {
        self.timeout.as_millis()
    }

    async fn connect(&mut self) -> Result<(), SourceError> {
        let address = self.address.clone();
        let attempt = async {
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host(&address).await?.collect();
            let mut last = std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "the name resolved to no address",
            );
            for addr in addrs {
                match tcp::connect_slave(addr, Slave(self.unit_id)).await {
                    Ok(ctx) => return Ok(ctx),
                    Err(e) => last = e,
                }
            }
            Err(last)
        };
        match tokio::time::timeout(self.timeout, attempt).await {
            Ok(Ok(ctx)) => {
                self.context = Some(ctx);
                Ok(())
            }
            Ok(Err(e)) => Err(SourceError::Connect(format!("{}: {e}", self.address))),
            Err(_) => Err(SourceError::Connect(format!(
                "{}: no connection within {} ms",
                self.address,
                self.millis()
            ))),
        }
    }

    async fn read(&mut self, tag: &TagSpec) -> TagResult {
        let mut result = TagResult {
            tag: tag.name.clone(),
            role: tag.role,
            unit: tag.unit.clone(),
            raw: String::new(),
            value: None,
            state: None,
            problem: None,
        };
        let Some(address) = tag.modbus else {
            result.problem = Some("no Modbus address (not a modbus profile)".into());
            return result;
        };
        if self.context.is_none() {
            if let Err(e) = self.connect().await {
                result.problem = Some(e.to_string());
                return result;
            }
        }
        let Some(ctx) = self.context.as_mut() else {
            result.problem = Some("not connected".into());
            return result;
        };
        let (start, count) = (address.index, tag.registers().max(1));
        let decoded = match address.area {
            RegisterArea::Coil | RegisterArea::DiscreteInput => {
                let call = async {
                    if address.area == RegisterArea::Coil {
                        ctx.read_coils(start, 1).await
                    } else {
                        ctx.read_discrete_inputs(start, 1).await
                    }
                };
                match tokio::time::timeout(self.timeout, call).await {
                    Ok(Ok(Ok(bits))) => {
                        result.raw = bits
                            .iter()
                            .take(1)
                            .map(|b| if *b { "1" } else { "0" })
                            .collect();
                        decode_bit(bits.get(..1).unwrap_or(&bits)).map_err(|e| e.to_string())
                    }
                    other => Err(self.failure(other, address.area, start, 1)),
                }
            }
            RegisterArea::HoldingRegister | RegisterArea::InputRegister => {
                let call = async {
                    if address.area == RegisterArea::HoldingRegister {
                        ctx.read_holding_registers(start, count).await
                    } else {
                        ctx.read_input_registers(start, count).await
                    }
                };
                match tokio::time::timeout(self.timeout, call).await {
                    Ok(Ok(Ok(regs))) => {
                        result.raw = regs
                            .iter()
                            .map(|r| format!("{r:04x}"))
                            .collect::<Vec<_>>()
                            .join(" ");
                        let encoding = TagEncoding {
                            data_type: tag.data_type,
                            order: tag.order,
                            length: tag.length,
                            bit: address.bit,
                            scale: tag.scale,
                            offset: tag.offset,
                        };
                        decode_registers(&encoding, &regs).map_err(|e| e.to_string())
                    }
                    other => Err(self.failure(other, address.area, start, count)),
                }
            }
        };
        let (value, problem) = judge(tag, decoded);
        result.state = state_of(tag, value.as_ref());
        result.value = value;
        result.problem = problem;
        result
    }

    /// Says what went wrong with a request; drops the link unless the device answered.
    fn failure<T>(
        &mut self,
        outcome: Result<tokio_modbus::Result<T>, tokio::time::error::Elapsed>,
        area: RegisterArea,
        start: u16,
        count: u16,
    ) -> String {
        let what = format!("{area:?} {start}+{count}");
        match outcome {
            Ok(Ok(Err(code))) => {
                let code = u8::from(code);
                format!(
                    "device exception {code:#04x} ({}) reading {what}",
                    exception_name(code)
                )
            }
            Ok(Err(e)) => {
                self.context = None;
                format!("link failed reading {what}: {e}")
            }
            Err(_) => {
                self.context = None;
                format!("no answer within {} ms reading {what}", self.millis())
            }
            Ok(Ok(Ok(_))) => String::new(),
        }
    }
}

#[allow(clippy::too_many_lines)] // one verdict per tag, in the order of the checks
async fn opcua_polls(
    s: &session::Connected,
    profile: &Profile,
    options: &ProbeOptions,
    polls: u32,
    reports: &mut Vec<PollReport>,
) -> Result<(), SourceError> {
    // Node ids that parse, per tag; a tag whose id does not parse fails every poll.
    let nodes: Vec<Option<opcua::types::NodeId>> = profile
        .tags
        .iter()
        .map(|t| {
            t.node_id
                .as_deref()
                .and_then(|n| convert::parse_node_id(n).ok())
        })
        .collect();
    let read = |attribute: AttributeId| -> Vec<ReadValueId> {
        nodes
            .iter()
            .flatten()
            .map(|n| ReadValueId {
                attribute_id: attribute as u32,
                ..ReadValueId::from(n.clone())
            })
            .collect()
    };
    let type_ids = read(AttributeId::DataType);
    let value_ids = read(AttributeId::Value);
    let mut types = Vec::with_capacity(type_ids.len());
    for chunk in type_ids.chunks(500) {
        types.extend(
            s.call(s.session.read(chunk, TimestampsToReturn::Neither, 0.0))
                .await?,
        );
    }
    for poll in 1..=polls {
        let started = tokio::time::Instant::now();
        let mut values = Vec::with_capacity(value_ids.len());
        for chunk in value_ids.chunks(500) {
            values.extend(
                s.call(s.session.read(chunk, TimestampsToReturn::Both, 0.0))
                    .await?,
            );
        }
        let mut results = Vec::with_capacity(profile.tags.len());
        let mut next = 0;
        for (tag, node) in profile.tags.iter().zip(&nodes) {
            let mut result = TagResult {
                tag: tag.name.clone(),
                role: tag.role,
                unit: tag.unit.clone(),
                raw: String::new(),
                value: None,
                state: None,
                problem: None,
            };
            if node.is_none() {
                result.problem = Some(format!(
                    "node id `{}` does not parse",
                    tag.node_id.as_deref().unwrap_or_default()
                ));
                results.push(result);
                continue;
            }
            let (dt, dv) = (types.get(next), values.get(next));
            next += 1;
            let status = dv.and_then(|dv| dv.status).unwrap_or_default();
            if let Some(variant) = dv.and_then(|dv| dv.value.as_ref()) {
                result.raw = variant_text(variant);
            }
            let problem = if status.is_bad() {
                let name = convert::status_name(status);
                Some(if convert::is_bad_node(status) {
                    format!("bad node id or not readable ({name})")
                } else {
                    format!("the server answered {name}")
                })
            } else if let Some(Variant::NodeId(id)) = dt.and_then(|d| d.value.as_ref()) {
                convert::check_data_type(id, tag.data_type)
                    .err()
                    .map(|node_type| {
                        format!(
                        "type mismatch: the node's DataType is {node_type}, the profile says {}",
                        tag.data_type.name()
                    )
                    })
            } else {
                None
            };
            if let Some(problem) = problem {
                result.problem = Some(problem);
                results.push(result);
                continue;
            }
            let decoded = match dv.and_then(|dv| dv.value.as_ref()) {
                None => Err("the server sent no value".to_owned()),
                Some(v) => match convert::decode_variant(v) {
                    Ok(Some(value)) => Ok(value),
                    Ok(None) => Err("the server sent an empty value".to_owned()),
                    Err(why) => Err(why),
                },
            };
            let (value, problem) = judge(tag, decoded);
            result.state = state_of(tag, value.as_ref());
            result.value = value;
            result.problem = problem;
            results.push(result);
        }
        reports.push(PollReport { poll, results });
        if poll < polls {
            tokio::time::sleep_until(started + options.interval).await;
        }
    }
    Ok(())
}

/// A variant as received: its type and value (`Double 21.5`).
fn variant_text(v: &Variant) -> String {
    let text = format!("{v:?}");
    // `Double(21.5)` -> `Double 21.5`; long values (strings, arrays) shortened.
    let text = match text.split_once('(') {
        Some((kind, rest)) => format!("{kind} {}", rest.strip_suffix(')').unwrap_or(rest)),
        None => text,
    };
    if text.chars().count() > 40 {
        let cut: String = text.chars().take(39).collect();
        format!("{cut}…")
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_profile;
    use std::path::Path;

    fn profile() -> Profile {
        parse_profile(
            Path::new("/d/p.toml"),
            "[profile]\nname = \"p\"\nprotocol = \"modbus\"\n\
             [[tags]]\nname = \"temp\"\nrole = \"measurement\"\ntype = \"f32\"\narea = \"input_register\"\naddress = 0\nlimits = { min = 0.0, max = 300.0 }\nunit = \"°C\"\n\
             [[tags]]\nname = \"state\"\nrole = \"status\"\ntype = \"u16\"\narea = \"input_register\"\naddress = 2\nstates = { 0 = \"idle\", 1 = \"run\" }\n",
        )
        .unwrap()
    }

    #[test]
    fn values_outside_limits_unknown_states_nan_and_decode_errors_fail_their_tag() {
        let p = profile();
        let temp = p.tag("temp").unwrap();
        let state = p.tag("state").unwrap();
        assert_eq!(
            judge(temp, Ok(Value::Float(21.5))),
            (Some(Value::Float(21.5)), None)
        );
        let (_, why) = judge(temp, Ok(Value::Float(301.0)));
        assert_eq!(why.as_deref(), Some("outside its limits 0 .. 300"));
        let (_, why) = judge(temp, Ok(Value::Float(f64::NAN)));
        assert!(why.unwrap().starts_with("not a number"));
        let (value, why) = judge(temp, Err("non-finite float NaN".into()));
        assert_eq!(
            (value, why.as_deref()),
            (None, Some("non-finite float NaN"))
        );
        assert_eq!(judge(state, Ok(Value::UInt(1))).1, None);
        assert_eq!(
            judge(state, Ok(Value::UInt(7))).1.as_deref(),
            Some("7 is none of its states")
        );
    }

    #[test]
    fn the_table_lines_up_its_columns_and_says_fail_with_the_reason() {
        let report = PollReport {
            poll: 1,
            results: vec![
                TagResult {
                    tag: "temp".into(),
                    role: TagRole::Measurement,
                    unit: Some("°C".into()),
                    raw: "41ac 0000".into(),
                    value: Some(Value::Float(21.5)),
                    state: None,
                    problem: None,
                },
                TagResult {
                    tag: "missing_register".into(),
                    role: TagRole::Counter,
                    unit: None,
                    raw: String::new(),
                    value: None,
                    state: None,
                    problem: Some("device exception 0x02 (illegal data address) reading HoldingRegister 900+1".into()),
                },
            ],
        };
        assert_eq!(report.failures(), 1);
        let text = table(&report);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        let col = |l: &str, what: &str| l.find(what).unwrap();
        assert_eq!(col(lines[0], "raw"), col(lines[1], "41ac"));
        assert_eq!(col(lines[0], "verdict"), col(lines[2], "FAIL"));
        assert!(lines[1].ends_with("ok"));
        assert!(lines[2].contains("FAIL: device exception 0x02 (illegal data address)"));
    }

    #[test]
    fn variants_show_their_type_and_long_ones_are_shortened() {
        assert_eq!(variant_text(&Variant::Double(21.5)), "Double 21.5");
        assert!(variant_text(&Variant::String("x".repeat(100).into())).ends_with('…'));
    }
}
