//! Station profiles (`devices/*.toml`): what a kind of station exposes, tag by tag, read and
//! validated into [`crate::source::Profile`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;

use super::defaults;
use super::raw;
use super::report::{type_name, Report};
use super::rules;
use crate::source::modbus::{DiagCounter, DiagnosticsConfig};
use crate::source::{
    ByteOrder, DataType, Limits, ModbusAddress, Profile, Protocol, RegisterArea, TagRole, TagSpec,
};
use linesentry_common::config::spans::{child, item};
use linesentry_common::config::ConfigError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Addressing {
    ZeroBased,
    OneBased,
}

/// What reading one profile file gave.
#[derive(Debug)]
pub(super) struct Loaded {
    pub(super) path: PathBuf,
    /// The file's bytes (for the digest), or the OS error that prevented reading it.
    pub(super) bytes: Result<Vec<u8>, std::io::Error>,
    pub(super) profile: Option<Arc<Profile>>,
    /// Problems inside the profile file.
    pub(super) errors: Vec<ConfigError>,
}

/// Reads and validates `{dir}/{name}.toml`. An unreadable file is not an error here: the
/// station that names it reports it, at its own `profile` key.
pub(super) fn load(dir: &Path, name: &str) -> Loaded {
    let path = dir.join(format!("{name}.toml"));
    let bytes = std::fs::read(&path);
    let (profile, errors) = match &bytes {
        Err(_) => (None, Vec::new()),
        Ok(bytes) => match std::str::from_utf8(bytes) {
            Ok(text) => parse(&path, name, text),
            Err(e) => (None, vec![super::not_utf8(&path, bytes, &e)]),
        },
    };
    Loaded {
        path,
        bytes,
        profile: profile.map(Arc::new),
        errors,
    }
}

/// Validates the profile text of `path`, whose stem is `stem`.
pub(super) fn parse(path: &Path, stem: &str, text: &str) -> (Option<Profile>, Vec<ConfigError>) {
    let mut report = Report::new(path, text);
    let Some(mut table) = report.parse() else {
        return (None, report.into_errors());
    };
    report.unknown_keys("", &table, &["profile", "rules", "diagnostics", "tags"]);
    let raw_header = table.get("profile").cloned();
    let header = if let Some(value) = table.remove("profile") {
        report
            .deserialize::<raw::ProfileHeader>("profile", value)
            .and_then(|h| header(&mut report, h, stem))
    } else {
        report.error(
            "profile",
            "missing required table `[profile]`; expected name, description and protocol",
        );
        None
    };
    let (protocol, addressing) = match &header {
        Some(h) => (Some(h.protocol), h.addressing),
        None => header_fallback(raw_header.as_ref()),
    };
    let rules = match table.remove("rules") {
        Some(value) => report
            .deserialize::<raw::Rules>("rules", value)
            .and_then(|raw| rules::settings(&mut report, "rules", &raw)),
        None => rules::settings(&mut report, "rules", &raw::Rules::default()),
    };
    let diagnostics = table
        .remove("diagnostics")
        .and_then(|value| diagnostics(&mut report, value, protocol));
    let tags = tags(&mut report, table.remove("tags"), protocol, addressing);
    let profile = match (header, tags, rules) {
        (Some(h), Some(tags), Some(rules)) if report.error_count() == 0 => Some(Profile {
            name: h.name,
            file: path.to_owned(),
            description: h.description,
            protocol: h.protocol,
            tags,
            rules,
            diagnostics,
        }),
        _ => None,
    };
    (profile, report.into_errors())
}

/// Validates `[diagnostics]`; `None` when it had an error (each reported at its key).
fn diagnostics(
    report: &mut Report<'_>,
    value: toml::Value,
    protocol: Option<Protocol>,
) -> Option<DiagnosticsConfig> {
    let raw = report.deserialize::<raw::Diagnostics>("diagnostics", value)?;
    if protocol == Some(Protocol::OpcUa) {
        report.error(
            "diagnostics",
            "`[diagnostics]` reads Modbus diagnostic counters (FC 08 / FC 11); remove it from an \
             opcua profile",
        );
        return None;
    }
    let before = report.error_count();
    let every = report.int(
        "diagnostics.every_s",
        raw.every_s,
        defaults::DIAGNOSTICS_EVERY_S,
    );
    let counters = match raw.counters {
        None => DiagCounter::ALL.to_vec(),
        Some(names) if names.is_empty() => {
            report.error(
                "diagnostics.counters",
                format!(
                    "expected at least one counter of {}; remove `[diagnostics]` to read none",
                    DiagCounter::ALL.map(DiagCounter::name).join(", ")
                ),
            );
            Vec::new()
        }
        Some(names) => {
            let mut counters = Vec::with_capacity(names.len());
            for (i, name) in names.iter().enumerate() {
                let at = item("diagnostics.counters", i);
                let Some(counter) = report.choice::<DiagCounter>(&at, name) else {
                    continue;
                };
                if counters.contains(&counter) {
                    report.error(
                        &at,
                        format!("duplicate counter `{name}`; expected each once"),
                    );
                } else {
                    counters.push(counter);
                }
            }
            counters.sort_unstable();
            counters
        }
    };
    let every = every?;
    (report.error_count() == before).then(|| DiagnosticsConfig {
        counters,
        every: std::time::Duration::from_secs(u64::try_from(every).unwrap_or(60)),
    })
}

/// Protocol and addressing read straight from a `[profile]` table that failed to
/// deserialise, so that its tags still get the protocol's checks.
fn header_fallback(raw: Option<&toml::Value>) -> (Option<Protocol>, Addressing) {
    fn parse<'de, T: Deserialize<'de>>(text: &'de str) -> Option<T> {
        T::deserialize(serde::de::value::StrDeserializer::<serde::de::value::Error>::new(text)).ok()
    }
    let name = |key: &str| raw.and_then(|h| h.get(key)).and_then(toml::Value::as_str);
    let protocol = name("protocol").and_then(parse::<Protocol>);
    let addressing = name("addressing")
        .and_then(parse::<Addressing>)
        .unwrap_or(Addressing::ZeroBased);
    (protocol, addressing)
}

struct Header {
    name: String,
    description: String,
    protocol: Protocol,
    addressing: Addressing,
}

fn header(report: &mut Report<'_>, raw: raw::ProfileHeader, stem: &str) -> Option<Header> {
    if raw.name != stem {
        report.error(
            "profile.name",
            format!(
                "profile name `{}` does not match its file name `{stem}.toml`; expected `{stem}`",
                raw.name.escape_debug()
            ),
        );
    }
    let protocol = report.choice::<Protocol>("profile.protocol", &raw.protocol)?;
    let addressing = match (&raw.addressing, protocol) {
        (Some(_), Protocol::OpcUa) => {
            report.error(
                "profile.addressing",
                "`addressing` only applies to modbus profiles; remove it from an opcua profile",
            );
            Addressing::ZeroBased
        }
        (given, _) => report.choice(
            "profile.addressing",
            given.as_deref().unwrap_or(defaults::ADDRESSING),
        )?,
    };
    Some(Header {
        name: raw.name,
        description: raw.description.unwrap_or_default(),
        protocol,
        addressing,
    })
}

fn tags(
    report: &mut Report<'_>,
    value: Option<toml::Value>,
    protocol: Option<Protocol>,
    addressing: Addressing,
) -> Option<Vec<TagSpec>> {
    let items = match value {
        Some(toml::Value::Array(items)) if !items.is_empty() => items,
        Some(toml::Value::Array(_)) | None => {
            report.error("tags", "expected at least one `[[tags]]` table, found none");
            return None;
        }
        Some(other) => {
            report.error(
                "tags",
                format!(
                    "expected an array of tables `[[tags]]`, found {}",
                    type_name(&other)
                ),
            );
            return None;
        }
    };
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    // Each valid tag with its position, for the checks across tags.
    let mut out: Vec<(usize, TagSpec)> = Vec::with_capacity(items.len());
    let mut declared = Vec::with_capacity(items.len());
    for (i, value) in items.into_iter().enumerate() {
        let at = item("tags", i);
        // Key by key, so that an unknown or mistyped key does not hide the tag's other errors.
        let (raw, left_out) = report.deserialize_keys::<raw::Tag>(&at, value);
        let Some(raw) = raw else {
            continue;
        };
        if let Some(first) = seen.get(&raw.name) {
            report.error(
                &child(&at, "name"),
                format!("duplicate tag name `{}`; first defined in tags[{first}], expected unique names", raw.name),
            );
        } else {
            seen.insert(raw.name.clone(), i);
        }
        declared.push((raw.name.clone(), raw.role.clone()));
        if let Some(tag) = tag(report, &at, raw, protocol, addressing, &left_out) {
            if left_out.is_empty() {
                out.push((i, tag));
            }
        }
    }
    rules::alarm_links(report, &mut out, &declared);
    Some(out.into_iter().map(|(_, tag)| tag).collect())
}

/// Validates one tag; `None` when it had any error (each already reported).
fn tag(
    report: &mut Report<'_>,
    at: &str,
    raw: raw::Tag,
    protocol: Option<Protocol>,
    addressing: Addressing,
    left_out: &[String],
) -> Option<TagSpec> {
    let before = report.error_count();
    let key = |k: &str| child(at, k);
    if !is_tag_name(&raw.name) {
        report.error(
            &key("name"),
            format!(
                "expected 1-64 characters of [a-z0-9_], found `{}`",
                raw.name.escape_debug()
            ),
        );
    }
    let role = report.choice::<TagRole>(&key("role"), &raw.role);
    let data_type = match &raw.data_type {
        Some(given) => report.choice::<DataType>(&key("type"), given),
        // Of the wrong TOML kind: reported already.
        None if left_out.iter().any(|k| k == "type") => None,
        None => {
            report.error(
                &key("type"),
                "missing required key `type`; expected a data type such as `bool`, `u16`, `f32` or `string`",
            );
            None
        }
    };
    let order = match &raw.order {
        Some(given) => report.choice::<ByteOrder>(&key("order"), given),
        None => Some(ByteOrder::default()),
    };
    let states = states(report, at, raw.states.as_ref(), data_type);
    let limits = limits(report, at, raw.limits.as_ref());
    let (scale, offset) = (
        raw.scale.unwrap_or(defaults::SCALE),
        raw.offset.unwrap_or(defaults::OFFSET),
    );
    if !scale.is_finite() || scale == 0.0 {
        report.error(
            &key("scale"),
            format!("expected a finite, non-zero number, found {scale}"),
        );
    }
    if !offset.is_finite() {
        report.error(
            &key("offset"),
            format!("expected a finite number, found {offset}"),
        );
    }
    if let Some(data_type) = data_type {
        type_rules(report, at, &raw, data_type, role);
    }
    let rules = rules::tag_rules(report, at, &raw, role, data_type);
    // A bad `type` (reported above) leaves out only the checks that need the type.
    let (modbus, node_id, length) = match protocol {
        Some(Protocol::Modbus) => {
            let length = data_type.map_or(0, |t| string_length(report, at, raw.length, t));
            let address = modbus_address(report, at, &raw, data_type, length, addressing);
            (address, None, length)
        }
        Some(Protocol::OpcUa) => (None, opcua_fields(report, at, &raw), 0),
        None => (None, None, 0),
    };
    let server_deadband = server_deadband(report, at, &raw, protocol, data_type);
    if report.error_count() > before {
        return None;
    }
    Some(TagSpec {
        server_deadband,
        name: raw.name,
        role: role?,
        data_type: data_type?,
        order: order?,
        length,
        modbus,
        node_id,
        scale,
        offset,
        unit: raw.unit,
        states,
        limits,
        rules,
    })
}

/// `server_deadband`: OPC UA profiles and numeric tags only; exactly one of `absolute`
/// (>= 0, in the value's unit) or `percent` (0-100 of the node's EURange).
fn server_deadband(
    report: &mut Report<'_>,
    at: &str,
    raw: &raw::Tag,
    protocol: Option<Protocol>,
    data_type: Option<DataType>,
) -> Option<crate::source::opcua::Deadband> {
    use crate::source::opcua::Deadband;
    let given = raw.server_deadband.as_ref()?;
    let key = child(at, "server_deadband");
    if protocol != Some(Protocol::OpcUa) {
        report.error(&key, "`server_deadband` only applies to opcua profiles (a Modbus device has no server-side filter); use `deadband` for the rules");
        return None;
    }
    if data_type.is_some_and(|t| !t.is_numeric()) {
        report.error(&key, "`server_deadband` only applies to numeric tags; expected it on an integer or float tag");
        return None;
    }
    match (given.absolute, given.percent) {
        (Some(a), None) if a.is_finite() && a >= 0.0 => Some(Deadband::Absolute(a)),
        (None, Some(p)) if p.is_finite() && (0.0..=100.0).contains(&p) => {
            Some(Deadband::Percent(p))
        }
        (Some(a), None) => {
            report.error(
                &child(&key, "absolute"),
                format!("expected a finite number >= 0, found {a}"),
            );
            None
        }
        (None, Some(p)) => {
            report.error(
                &child(&key, "percent"),
                format!("expected a number between 0 and 100, found {p}"),
            );
            None
        }
        _ => {
            report.error(
                &key,
                "expected exactly one of `absolute` or `percent`, such as `{ absolute = 0.5 }`",
            );
            None
        }
    }
}

/// Checks that depend on the data type and role only.
fn type_rules(
    report: &mut Report<'_>,
    at: &str,
    raw: &raw::Tag,
    data_type: DataType,
    role: Option<TagRole>,
) {
    let type_name = raw.data_type.as_deref().unwrap_or_default();
    if raw.order.is_some() && data_type.registers() < 2 {
        report.error(
            &child(at, "order"),
            format!("`order` only applies to 32- and 64-bit types; expected no `order` on a tag of type {type_name}"),
        );
    }
    if !data_type.is_numeric() {
        for (given, name) in [
            (raw.scale.is_some(), "scale"),
            (raw.offset.is_some(), "offset"),
            (raw.limits.is_some(), "limits"),
        ] {
            report.forbid(
                &child(at, name),
                given,
                &format!("`{name}` only applies to numeric types; expected no `{name}` on a tag of type {type_name}"),
            );
        }
    }
    let integer = data_type.is_numeric() && !matches!(data_type, DataType::F32 | DataType::F64);
    if raw.states.is_some() && !integer && data_type != DataType::Bool {
        report.error(
            &child(at, "states"),
            format!("`states` maps integer raw values to names; expected no `states` on a tag of type {type_name}"),
        );
    }
    if role == Some(TagRole::AlarmActive) && !(integer || data_type == DataType::Bool) {
        report.error(
            &child(at, "type"),
            format!("an alarm_active tag is on (non-zero) or off (zero); expected type bool or an integer type, found {type_name}"),
        );
    }
    if let Some(role @ (TagRole::Status | TagRole::Mode)) = role {
        if raw.states.is_none() && integer {
            report.error(
                &child(at, "states"),
                format!("missing required key `states` for a {role} tag of type {type_name}; expected e.g. states = {{ 0 = \"idle\", 1 = \"run\" }}"),
            );
        }
    }
}

fn states(
    report: &mut Report<'_>,
    at: &str,
    given: Option<&BTreeMap<String, String>>,
    data_type: Option<DataType>,
) -> BTreeMap<i64, String> {
    let mut out = BTreeMap::new();
    let at = child(at, "states");
    for (key, name) in given.into_iter().flatten() {
        let key_at = child(&at, key);
        let Ok(raw) = key.trim().parse::<i64>() else {
            report.error(
                &key_at,
                format!(
                    "expected an integer raw value as key, found `{}`",
                    key.escape_debug()
                ),
            );
            continue;
        };
        if data_type == Some(DataType::Bool) && !(0..=1).contains(&raw) {
            report.error(
                &key_at,
                format!("expected 0 or 1 as the key of a bool tag's state, found {raw}"),
            );
        }
        if name.is_empty() {
            report.error(&key_at, "expected a state name, found an empty string");
        }
        if out.insert(raw, name.clone()).is_some() {
            report.error(
                &key_at,
                format!("duplicate raw value {raw}; expected each raw value once"),
            );
        }
    }
    out
}

fn limits(report: &mut Report<'_>, at: &str, given: Option<&raw::Limits>) -> Option<Limits> {
    let given = given?;
    let at = child(at, "limits");
    let mut ok = true;
    for (value, name) in [(given.min, "min"), (given.max, "max")] {
        if !value.is_finite() {
            report.error(
                &child(&at, name),
                format!("expected a finite number, found {value}"),
            );
            ok = false;
        }
    }
    if ok && given.min >= given.max {
        report.error(
            &child(&at, "max"),
            format!(
                "expected min < max, found min = {} and max = {}",
                given.min, given.max
            ),
        );
    }
    Some(Limits {
        min: given.min,
        max: given.max,
    })
}

/// `length` of a Modbus tag: required for strings (1..=125 registers), forbidden otherwise.
fn string_length(
    report: &mut Report<'_>,
    at: &str,
    given: Option<i64>,
    data_type: DataType,
) -> u16 {
    let at = child(at, "length");
    match (data_type, given) {
        (DataType::String, Some(n)) => report
            .range(&at, n, defaults::STRING_REGISTERS)
            .map_or(0, |n| n as u16),
        (DataType::String, None) => {
            report.error(&at, "missing required key `length` for a string tag; expected the number of registers, 1 to 125");
            0
        }
        (_, given) => {
            report.forbid(
                &at,
                given.is_some(),
                "`length` only applies to string tags; expected no `length` here",
            );
            0
        }
    }
}

fn modbus_address(
    report: &mut Report<'_>,
    at: &str,
    raw: &raw::Tag,
    data_type: Option<DataType>,
    length: u16,
    addressing: Addressing,
) -> Option<ModbusAddress> {
    report.forbid(
        &child(at, "node_id"),
        raw.node_id.is_some(),
        "`node_id` only applies to opcua profiles; expected `area` and `address` in a modbus profile",
    );
    let area = if let Some(given) = &raw.area {
        report.choice::<RegisterArea>(&child(at, "area"), given)
    } else {
        report.error(
            &child(at, "area"),
            "missing required key `area`; expected one of `coil`, `discrete_input`, `holding_register`, `input_register`",
        );
        None
    };
    let bit = match (area, data_type) {
        (Some(area), Some(data_type)) => bit(report, at, raw, data_type, area),
        _ => None,
    };
    let Some(address) = raw.address else {
        report.error(
            &child(at, "address"),
            "missing required key `address`; expected the register or bit number",
        );
        return None;
    };
    let index = register_index(report, &child(at, "address"), address, addressing)?;
    let count = match data_type {
        Some(DataType::String) | None => i64::from(length.max(1)),
        Some(other) => i64::from(other.registers()),
    };
    let last = index + count - 1;
    if area.is_some_and(|a| !a.is_bit()) && last > defaults::MAX_MODBUS_INDEX {
        report.error(
            &child(at, "address"),
            format!("the value spans registers {index} to {last}, past the last register {}; expected it to fit", defaults::MAX_MODBUS_INDEX),
        );
        return None;
    }
    Some(ModbusAddress {
        area: area?,
        index: index as u16,
        bit,
    })
}

/// The zero-based index of a Modbus address written with `addressing`.
fn register_index(
    report: &mut Report<'_>,
    at: &str,
    address: i64,
    addressing: Addressing,
) -> Option<i64> {
    let (min, name) = match addressing {
        Addressing::ZeroBased => (0, "zero_based"),
        Addressing::OneBased => (1, "one_based"),
    };
    let max = defaults::MAX_MODBUS_INDEX + min;
    if (min..=max).contains(&address) {
        Some(address - min)
    } else {
        report.error(
            at,
            format!(
                "expected an address between {min} and {max} ({name} addressing), found {address}"
            ),
        );
        None
    }
}

/// `bit`: required for bool tags in a register area, forbidden everywhere else. Also checks
/// that bit areas hold bools only.
fn bit(
    report: &mut Report<'_>,
    at: &str,
    raw: &raw::Tag,
    data_type: DataType,
    area: RegisterArea,
) -> Option<u8> {
    let bit_at = child(at, "bit");
    if area.is_bit() {
        if data_type != DataType::Bool {
            report.error(
                &child(at, "type"),
                format!(
                    "a {} holds single bits; expected type `bool`, found `{}`",
                    raw.area.as_deref().unwrap_or_default(),
                    raw.data_type.as_deref().unwrap_or_default()
                ),
            );
        }
        report.forbid(&bit_at, raw.bit.is_some(), "`bit` only applies to bool tags in a register area; expected no `bit` for a coil or discrete input");
        return None;
    }
    match (data_type, raw.bit) {
        (DataType::Bool, Some(bit)) => report.range(&bit_at, bit, defaults::BIT).map(|b| b as u8),
        (DataType::Bool, None) => {
            report.error(&bit_at, "missing required key `bit` for a bool tag in a register area; expected the bit number, 0 (least significant) to 15");
            None
        }
        (_, given) => {
            report.forbid(
                &bit_at,
                given.is_some(),
                "`bit` only applies to bool tags; expected no `bit` on a numeric or string tag",
            );
            None
        }
    }
}

fn opcua_fields(report: &mut Report<'_>, at: &str, raw: &raw::Tag) -> Option<String> {
    for (given, name) in [
        (raw.area.is_some(), "area"),
        (raw.address.is_some(), "address"),
        (raw.bit.is_some(), "bit"),
        (raw.order.is_some(), "order"),
        (raw.length.is_some(), "length"),
    ] {
        report.forbid(
            &child(at, name),
            given,
            &format!("`{name}` only applies to modbus profiles; expected `node_id` alone in an opcua profile"),
        );
    }
    let at = child(at, "node_id");
    let Some(node_id) = &raw.node_id else {
        report.error(&at, "missing required key `node_id`; expected an OPC UA node id such as `ns=2;s=Press.State`");
        return None;
    };
    if let Err(why) = check_node_id(node_id) {
        report.error(
            &at,
            format!("{why}; expected an OPC UA node id: optional `ns=<0-65535>;` then `i=<number>`, `s=<string>`, `g=<guid>` or `b=<base64>`, such as `ns=2;s=Press.State`, found `{}`", node_id.escape_debug()),
        );
        return None;
    }
    Some(node_id.clone())
}

/// Checks the text form of an OPC UA NodeId (Part 6, 5.3.1.10).
pub(super) fn check_node_id(text: &str) -> Result<(), &'static str> {
    let rest = match text.strip_prefix("ns=") {
        Some(rest) => {
            let (ns, rest) = rest.split_once(';').ok_or("`ns=` is not followed by `;`")?;
            ns.parse::<u16>()
                .map_err(|_| "the namespace index is not a number 0-65535")?;
            rest
        }
        None => text,
    };
    let (kind, id) = rest.split_at_checked(2).ok_or("no identifier")?;
    let ok = match kind {
        "i=" => id.parse::<u32>().is_ok(),
        "s=" => !id.is_empty(),
        "g=" => is_guid(id),
        "b=" => {
            !id.is_empty()
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='))
        }
        _ => return Err("unknown identifier type"),
    };
    if ok {
        Ok(())
    } else {
        Err("malformed identifier")
    }
}

fn is_guid(text: &str) -> bool {
    let groups: Vec<&str> = text.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, len)| g.len() == len && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

fn is_tag_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// Profile names double as file names: letters, digits, `_` and `-` only.
pub(super) fn is_profile_name(name: &str) -> bool {
    super::report::is_ident(name, defaults::MAX_ID_LEN, b"_-")
}

/// The profiles one configuration references, each read and validated once.
#[derive(Debug)]
pub(super) struct Library {
    dir: PathBuf,
    loaded: BTreeMap<String, Loaded>,
}

impl Library {
    pub(super) fn new(dir: PathBuf) -> Self {
        Self {
            dir,
            loaded: BTreeMap::new(),
        }
    }

    pub(super) fn dir(&self) -> &Path {
        &self.dir
    }

    /// The profile `name`, loading it on first use.
    pub(super) fn get(&mut self, name: &str) -> &Loaded {
        let dir = &self.dir;
        self.loaded
            .entry(name.to_owned())
            .or_insert_with(|| load(dir, name))
    }

    /// Profile stems present in the directory, for "expected one of" messages.
    pub(super) fn available(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|entry| {
                let path = entry.path();
                (path.extension()? == "toml")
                    .then(|| path.file_stem()?.to_str().map(str::to_owned))
                    .flatten()
            })
            .collect();
        names.sort();
        names
    }

    /// Every loaded profile by name (sorted, for a stable digest), then their errors.
    pub(super) fn into_parts(self) -> (Vec<(String, Vec<u8>)>, Vec<ConfigError>) {
        let mut files = Vec::new();
        let mut errors = Vec::new();
        for (name, loaded) in self.loaded {
            if let Ok(bytes) = loaded.bytes {
                files.push((name, bytes));
            }
            errors.extend(loaded.errors);
        }
        (files, errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_text(text: &str) -> (Option<Profile>, Vec<String>) {
        let (profile, errors) = parse(Path::new("/d/press.toml"), "press", text);
        (profile, errors.iter().map(ToString::to_string).collect())
    }

    const HEAD: &str = "[profile]\nname = \"press\"\nprotocol = \"modbus\"\n";

    #[test]
    fn node_ids_of_every_identifier_type_are_accepted() {
        for ok in [
            "i=85",
            "ns=2;s=Press.State",
            "ns=0;i=2258",
            "ns=3;g=09087e75-8e5e-499b-954f-f2a9603db28a",
            "ns=1;b=M/RbKBsRVkePCePcx24oRA==",
        ] {
            assert_eq!(check_node_id(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "Press.State",
            "ns=x;s=a",
            "ns=2;s=",
            "ns=2;i=abc",
            "ns=2",
            "g=1234",
            "ns=70000;i=1",
        ] {
            assert!(check_node_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn one_based_addresses_become_zero_based_indexes() {
        let text = "[profile]\nname = \"press\"\nprotocol = \"modbus\"\naddressing = \"one_based\"\n\
                    [[tags]]\nname = \"count\"\nrole = \"counter\"\ntype = \"u32\"\narea = \"input_register\"\naddress = 1\n";
        let (profile, errors) = parse_text(text);
        assert!(errors.is_empty(), "{errors:?}");
        let tag = &profile.unwrap().tags[0];
        assert_eq!(tag.modbus.unwrap().index, 0);
        assert_eq!(tag.registers(), 2);
    }

    #[test]
    fn address_zero_is_refused_under_one_based_addressing() {
        let text = "[profile]\nname = \"press\"\nprotocol = \"modbus\"\naddressing = \"one_based\"\n\
                    [[tags]]\nname = \"count\"\nrole = \"counter\"\ntype = \"u16\"\narea = \"input_register\"\naddress = 0\n";
        let (_, errors) = parse_text(text);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0].contains(":10: `tags[0].address`: expected an address between 1 and 65536"),
            "{errors:?}"
        );
    }

    #[test]
    fn a_value_running_past_the_last_register_is_refused() {
        let text = format!("{HEAD}[[tags]]\nname = \"v\"\nrole = \"measurement\"\ntype = \"f64\"\narea = \"holding_register\"\naddress = 65533\n");
        let (_, errors) = parse_text(&text);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0].contains("spans registers 65533 to 65536"),
            "{errors:?}"
        );
    }

    #[test]
    fn bits_areas_need_bool_and_integer_status_tags_need_states() {
        let text = format!(
            "{HEAD}[[tags]]\nname = \"a\"\nrole = \"alarm_enable\"\ntype = \"u16\"\narea = \"coil\"\naddress = 1\n\
             [[tags]]\nname = \"s\"\nrole = \"status\"\ntype = \"u16\"\narea = \"holding_register\"\naddress = 2\n"
        );
        let (_, errors) = parse_text(&text);
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(
            errors[0].contains("`tags[0].type`: a coil holds single bits; expected type `bool`")
        );
        assert!(errors[1].contains("`tags[1].states`: missing required key `states`"));
    }

    #[test]
    fn states_keys_must_be_integers_and_scale_must_be_non_zero() {
        let text = format!(
            "{HEAD}[[tags]]\nname = \"s\"\nrole = \"status\"\ntype = \"u16\"\narea = \"holding_register\"\naddress = 2\n\
             scale = 0.0\nstates = {{ 0 = \"idle\", run = \"run\" }}\n"
        );
        let (_, errors) = parse_text(&text);
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(errors
            .iter()
            .any(|e| e.contains("`tags[0].states.run`: expected an integer raw value")));
        assert!(errors
            .iter()
            .any(|e| e.contains("`tags[0].scale`: expected a finite, non-zero number, found 0")));
    }

    #[test]
    fn modbus_keys_are_refused_in_an_opcua_profile() {
        let text = "[profile]\nname = \"press\"\nprotocol = \"opcua\"\n\
                    [[tags]]\nname = \"s\"\nrole = \"counter\"\ntype = \"u32\"\naddress = 3\nnode_id = \"ns=2;i=7\"\n";
        let (_, errors) = parse_text(text);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].contains("`tags[0].address`: `address` only applies to modbus profiles"));
    }

    #[test]
    fn duplicate_tag_names_name_the_first_definition() {
        let tag = "[[tags]]\nname = \"c\"\nrole = \"counter\"\ntype = \"u16\"\narea = \"input_register\"\naddress = 1\n";
        let (_, errors) = parse_text(&format!("{HEAD}{tag}{tag}"));
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0].contains("`tags[1].name`: duplicate tag name `c`; first defined in tags[0]")
        );
    }

    const ONE_TAG: &str = "[[tags]]\nname = \"c\"\nrole = \"counter\"\ntype = \"u16\"\narea = \"input_register\"\naddress = 1\n";

    #[test]
    fn diagnostics_default_to_every_counter_once_a_minute() {
        let (profile, errors) = parse_text(&format!("{HEAD}[diagnostics]\n{ONE_TAG}"));
        assert!(errors.is_empty(), "{errors:?}");
        let diagnostics = profile.unwrap().diagnostics.unwrap();
        assert_eq!(diagnostics.counters, DiagCounter::ALL);
        assert_eq!(diagnostics.every, std::time::Duration::from_secs(60));
        let (profile, _) = parse_text(&format!("{HEAD}{ONE_TAG}"));
        assert_eq!(
            profile.unwrap().diagnostics,
            None,
            "no table, no diagnostics"
        );
    }

    #[test]
    fn diagnostics_keys_are_checked_and_each_error_names_its_key() {
        let text = format!(
            "{HEAD}[diagnostics]\nevery_s = 0\ncounters = [\"bus_message_count\", \"bus_mesage_count\", \"bus_message_count\"]\n{ONE_TAG}"
        );
        let (profile, errors) = parse_text(&text);
        assert!(profile.is_none());
        assert_eq!(errors.len(), 3, "{errors:?}");
        assert!(errors[0].contains("/d/press.toml:5: `diagnostics.every_s`: expected an integer between 1 and 86400 (s), found 0"), "{errors:?}");
        assert!(
            errors[1].contains("`diagnostics.counters[1]`")
                && errors[1].contains("bus_mesage_count"),
            "{errors:?}"
        );
        assert!(
            errors[2].contains("`diagnostics.counters[2]`: duplicate counter"),
            "{errors:?}"
        );

        let (_, errors) = parse_text(&format!("{HEAD}[diagnostics]\nevery = 5\n{ONE_TAG}"));
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0].contains("`diagnostics.every`: unknown key `every`"),
            "{errors:?}"
        );

        let (_, errors) = parse_text(&format!("{HEAD}[diagnostics]\ncounters = []\n{ONE_TAG}"));
        assert!(
            errors[0].contains("`diagnostics.counters`: expected at least one counter"),
            "{errors:?}"
        );
    }

    #[test]
    fn diagnostics_are_refused_in_an_opcua_profile() {
        let text = "[profile]\nname = \"press\"\nprotocol = \"opcua\"\n[diagnostics]\n\
                    [[tags]]\nname = \"s\"\nrole = \"counter\"\ntype = \"u32\"\nnode_id = \"ns=2;i=7\"\n";
        let (_, errors) = parse_text(text);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0].contains("`diagnostics`: `[diagnostics]` reads Modbus"),
            "{errors:?}"
        );
    }
}
