//! Pure mapping between OPC UA data and the agent's vocabulary: variants to [`Value`]s, status
//! codes to [`Quality`], server status and diagnostics to readings with reserved tag names,
//! status codes to [`SourceError`] kinds. No I/O; tested without a server.

use std::str::FromStr;

use opcua::types::{
    ByteString, DataValue, DateTime, Identifier, NodeId, ReadValueId, StatusCode, VariableId,
    Variant,
};

use crate::source::{DataType, DeviceIdentity, Quality, SourceError, Value};
use crate::source::{OpcUaSecurityMode, OpcUaSecurityPolicy};
use linesentry_event::Timestamp;

/// Parses the text form of a node id as profiles write it (`ns=2;s=Press.State`).
pub(crate) fn parse_node_id(text: &str) -> Result<NodeId, String> {
    NodeId::from_str(text).map_err(|e| format!("`{text}` is not an OPC UA node id: {e}"))
}

/// What a node of a standard data type holds, in the terms of a profile's types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NodeKind {
    Bool,
    /// An integer of `bits` bits, signed or not.
    Int {
        signed: bool,
        bits: u8,
    },
    Float,
    /// Values the agent reads as text: String, ByteString, LocalizedText, DateTime, ...
    Text,
    /// Enumeration and its subtypes: Int32 values naming states, small and not negative in
    /// practice, as integer status and mode tags hold them.
    Enumeration,
    /// Abstract Integer and UInteger: each value comes as some concrete integer type.
    AnyInteger,
    /// Abstract Number: each value comes as some concrete numeric type.
    AnyNumber,
}

/// Name and kind of a data type of namespace 0 (Part 3, 8; Part 6, 5.1.2); `None` for those
/// the agent cannot judge (BaseDataType, structures, ...).
fn standard_type(id: u32) -> Option<(&'static str, NodeKind)> {
    use NodeKind::{AnyInteger, AnyNumber, Bool, Enumeration, Float, Int, Text};
    let int = |signed, bits| Int { signed, bits };
    Some(match id {
        1 => ("Boolean", Bool),
        2 => ("SByte", int(true, 8)),
        3 => ("Byte", int(false, 8)),
        4 => ("Int16", int(true, 16)),
        5 => ("UInt16", int(false, 16)),
        6 => ("Int32", int(true, 32)),
        7 => ("UInt32", int(false, 32)),
        8 => ("Int64", int(true, 64)),
        9 => ("UInt64", int(false, 64)),
        10 => ("Float", Float),
        11 => ("Double", Float),
        // String and its subtypes (NormalizedString, DecimalString, ...).
        12 | 12877..=12881 => ("String", Text),
        13 => ("DateTime", Text),
        14 => ("Guid", Text),
        15 => ("ByteString", Text),
        19 => ("StatusCode", Text),
        21 => ("LocalizedText", Text),
        26 => ("Number", AnyNumber),
        27 => ("Integer", AnyInteger),
        28 => ("UInteger", AnyInteger),
        29 => ("Enumeration", Enumeration),
        30 => ("Image", Text),
        288 => ("IntegerId", int(false, 32)),
        289 => ("Counter", int(false, 32)),
        290 => ("Duration", Float),
        294 => ("UtcTime", Text),
        295 => ("LocaleId", Text),
        _ => return None,
    })
}

/// The name of a standard data type of namespace 0 (`Double`, `UInt16`, ...); `None` for
/// another namespace or a type the agent cannot judge.
pub(crate) fn data_type_name(node_type: &NodeId) -> Option<&'static str> {
    let (0, Identifier::Numeric(id)) = (node_type.namespace, &node_type.identifier) else {
        return None;
    };
    standard_type(*id).map(|(name, _)| name)
}

/// Whether a tag declared `declared` may read a node whose DataType attribute is
/// `node_type`. It may when the node's values fit the declared type without changing
/// meaning: the same type, a wider integer (UInt16 as `u32`, Byte as `i16`), either float
/// type for Float and Double, a small integer as a float, any integer type for an
/// enumeration. A data type the agent cannot judge (outside namespace 0, BaseDataType,
/// structures) is let through. `Err` names the node's type.
pub(crate) fn check_data_type(node_type: &NodeId, declared: DataType) -> Result<(), &'static str> {
    let (0, Identifier::Numeric(id)) = (node_type.namespace, &node_type.identifier) else {
        return Ok(());
    };
    let Some((name, kind)) = standard_type(*id) else {
        return Ok(());
    };
    if fits(kind, declared) {
        Ok(())
    } else {
        Err(name)
    }
}

fn fits(kind: NodeKind, declared: DataType) -> bool {
    use DataType as D;
    let integer = match declared {
        D::U16 => Some((false, 16)),
        D::I16 => Some((true, 16)),
        D::U32 => Some((false, 32)),
        D::I32 => Some((true, 32)),
        D::U64 => Some((false, 64)),
        D::I64 => Some((true, 64)),
        _ => None,
    };
    match kind {
        NodeKind::Bool => declared == D::Bool,
        NodeKind::Text => declared == D::String,
        NodeKind::Float => matches!(declared, D::F32 | D::F64),
        NodeKind::Int { signed, bits } => match (integer, declared) {
            (Some((to_signed, to_bits)), _) => {
                if signed {
                    to_signed && bits <= to_bits
                } else {
                    bits < to_bits || (!to_signed && bits <= to_bits)
                }
            }
            // Exactly representable: f32 holds 24-bit, f64 53-bit integers.
            (None, D::F32) => bits <= 16,
            (None, D::F64) => bits <= 32,
            (None, _) => false,
        },
        NodeKind::Enumeration | NodeKind::AnyInteger => integer.is_some(),
        NodeKind::AnyNumber => declared.is_numeric(),
    }
}

/// The profile type that reads a node of the standard data type `name` as it is.
pub(crate) fn natural_type(name: &str) -> &'static str {
    match name {
        "Boolean" => "bool",
        "SByte" | "Int16" => "i16",
        "Byte" | "UInt16" | "Enumeration" => "u16",
        "Int32" => "i32",
        "UInt32" | "IntegerId" | "Counter" => "u32",
        "Int64" => "i64",
        "UInt64" => "u64",
        "Float" => "f32",
        "Double" | "Duration" => "f64",
        _ => "string",
    }
}

/// The value of a variant, `Ok(None)` for an empty one. Floats that are NaN or infinite are
/// refused: no rule can compare them and they usually mean a failed sensor.
pub(crate) fn decode_variant(variant: &Variant) -> Result<Option<Value>, String> {
    Ok(Some(match variant {
        Variant::Empty => return Ok(None),
        Variant::Boolean(b) => Value::Bool(*b),
        Variant::SByte(v) => Value::Int(i64::from(*v)),
        Variant::Int16(v) => Value::Int(i64::from(*v)),
        Variant::Int32(v) => Value::Int(i64::from(*v)),
        Variant::Int64(v) => Value::Int(*v),
        Variant::Byte(v) => Value::UInt(u64::from(*v)),
        Variant::UInt16(v) => Value::UInt(u64::from(*v)),
        Variant::UInt32(v) => Value::UInt(u64::from(*v)),
        Variant::UInt64(v) => Value::UInt(*v),
        Variant::Float(v) => finite(f64::from(*v))?,
        Variant::Double(v) => finite(*v)?,
        Variant::String(s) => Value::Text(s.as_ref().to_owned()),
        Variant::ByteString(b) => Value::Text(byte_string_text(b)),
        Variant::LocalizedText(t) => Value::Text(t.text.as_ref().to_owned()),
        Variant::DateTime(t) => Value::Text(time_text(t)),
        Variant::StatusCode(s) => Value::Text(status_name(*s).to_owned()),
        other => {
            return Err(match other.scalar_type_id() {
                Some(t) if !matches!(other, Variant::Array(_)) => {
                    format!("unsupported OPC UA type {t}")
                }
                _ => "unsupported OPC UA value (array or nested variant)".to_owned(),
            })
        }
    }))
}

fn finite(x: f64) -> Result<Value, String> {
    if x.is_finite() {
        Ok(Value::Float(x))
    } else {
        Err(format!("non-finite float {x}"))
    }
}

/// UTF-8 byte strings as text, anything else as lowercase hex (checksums, binary ids).
fn byte_string_text(b: &ByteString) -> String {
    let bytes = b.as_ref();
    match std::str::from_utf8(bytes) {
        Ok(text) if !text.contains('\0') => text.to_owned(),
        _ => hex(bytes),
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

fn time_text(t: &DateTime) -> String {
    timestamp(t).map_or_else(String::new, |t| t.to_string())
}

/// The specification's name of a status code (`BadNodeIdUnknown`), without flag bits.
pub(crate) fn status_name(status: StatusCode) -> &'static str {
    status.sub_code().name()
}

/// Good / Uncertain / Bad from the severity bits of a status code.
pub(crate) fn quality(status: StatusCode) -> Quality {
    if status.is_good() {
        Quality::Good
    } else if status.is_uncertain() {
        Quality::Uncertain
    } else {
        Quality::Bad
    }
}

/// A source or server timestamp; `None` for the null time (servers send it for "unknown").
pub(crate) fn timestamp(t: &DateTime) -> Option<Timestamp> {
    if t.is_null() {
        return None;
    }
    Some(Timestamp::from_micros(t.as_chrono().timestamp_micros()))
}

/// What became of one data value of a tag.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Sample {
    /// A value with its quality and source time.
    Value {
        value: Value,
        quality: Quality,
        source_time: Option<Timestamp>,
    },
    /// The node itself is wrong (unknown, not readable, no value attribute): report once
    /// and stop asking for it.
    BadNode(StatusCode),
    /// No usable value this time (empty, bad status without value, undecodable).
    Error(String),
}

/// Statuses that mean the node id or its access rights are wrong, not that the value is
/// momentarily bad. Such nodes are skipped after the first report.
pub(crate) fn is_bad_node(status: StatusCode) -> bool {
    [
        StatusCode::BadNodeIdUnknown,
        StatusCode::BadNodeIdInvalid,
        StatusCode::BadAttributeIdInvalid,
        StatusCode::BadNotReadable,
        StatusCode::BadUserAccessDenied,
        StatusCode::BadIndexRangeInvalid,
    ]
    .iter()
    .any(|s| status.sub_code() == s.sub_code())
}

/// Classifies one data value read or published for a tag.
pub(crate) fn sample(dv: &DataValue) -> Sample {
    let status = dv.status.unwrap_or(StatusCode::Good);
    if status.is_bad() && is_bad_node(status) {
        return Sample::BadNode(status);
    }
    let value = match dv.value.as_ref().map(decode_variant) {
        Some(Ok(Some(value))) => value,
        Some(Err(reason)) => return Sample::Error(reason),
        None | Some(Ok(None)) => {
            return Sample::Error(if status.is_good() {
                "the server sent no value".to_owned()
            } else {
                format!("no value, status {}", status_name(status))
            })
        }
    };
    Sample::Value {
        value,
        quality: quality(status),
        source_time: dv.source_timestamp.as_ref().and_then(timestamp),
    }
}

/// Maps a failure status of a connect attempt or service call to the kind of error the rules
/// tell apart: rejected credentials, certificate trouble, an unreachable server, a timeout.
pub(crate) fn classify(status: StatusCode, detail: &str) -> SourceError {
    let sub = status.sub_code();
    let is = |s: StatusCode| s.sub_code() == sub;
    let name = status_name(status);
    let text = if detail.is_empty() {
        name.to_owned()
    } else {
        format!("{name}: {detail}")
    };
    if [
        StatusCode::BadIdentityTokenRejected,
        StatusCode::BadIdentityTokenInvalid,
        StatusCode::BadUserAccessDenied,
        StatusCode::BadUserSignatureInvalid,
    ]
    .into_iter()
    .any(is)
    {
        SourceError::Auth(text)
    } else if name.starts_with("BadCertificate")
        || [
            StatusCode::BadSecurityChecksFailed,
            StatusCode::BadSecurityPolicyRejected,
            StatusCode::BadNoValidCertificates,
            StatusCode::BadApplicationSignatureInvalid,
        ]
        .into_iter()
        .any(is)
    {
        SourceError::Certificate(text)
    } else if is(StatusCode::BadTimeout) || is(StatusCode::BadRequestTimeout) {
        SourceError::Transport(text)
    } else {
        SourceError::Connect(text)
    }
}

/// The async-opcua security policy for a configured one.
pub(crate) fn security_policy(policy: OpcUaSecurityPolicy) -> opcua::crypto::SecurityPolicy {
    use opcua::crypto::SecurityPolicy as P;
    match policy {
        OpcUaSecurityPolicy::None => P::None,
        OpcUaSecurityPolicy::Basic256Sha256 => P::Basic256Sha256,
        OpcUaSecurityPolicy::Aes128Sha256RsaOaep => P::Aes128Sha256RsaOaep,
        OpcUaSecurityPolicy::Aes256Sha256RsaPss => P::Aes256Sha256RsaPss,
    }
}

pub(crate) fn security_mode(mode: OpcUaSecurityMode) -> opcua::types::MessageSecurityMode {
    use opcua::types::MessageSecurityMode as M;
    match mode {
        OpcUaSecurityMode::None => M::None,
        OpcUaSecurityMode::Sign => M::Sign,
        OpcUaSecurityMode::SignAndEncrypt => M::SignAndEncrypt,
    }
}

/// How a status value of the server is exposed: reserved tag name, node, and how to turn
/// the value into a reading value.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StatusNode {
    pub(crate) tag: &'static str,
    pub(crate) node: VariableId,
    kind: StatusKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StatusKind {
    State,
    Time,
    Text,
    Count,
}

macro_rules! status_nodes {
    ($($tag:literal => $node:ident, $kind:ident;)*) => {
        &[$(StatusNode { tag: $tag, node: VariableId::$node, kind: StatusKind::$kind },)*]
    };
}

/// Every server status and diagnostics value read on connect and periodically. The reserved
/// tag names start with `_`, which profile tag names cannot, so they never clash; those the
/// rules use are the constants of [`crate::source::reserved`].
pub(crate) const STATUS_NODES: &[StatusNode] = status_nodes! {
    "_server.state" => Server_ServerStatus_State, State;
    "_server.start_time" => Server_ServerStatus_StartTime, Time;
    "_server.current_time" => Server_ServerStatus_CurrentTime, Time;
    "_server.build.product_uri" => Server_ServerStatus_BuildInfo_ProductUri, Text;
    "_server.build.manufacturer_name" => Server_ServerStatus_BuildInfo_ManufacturerName, Text;
    "_server.build.product_name" => Server_ServerStatus_BuildInfo_ProductName, Text;
    "_server.build.software_version" => Server_ServerStatus_BuildInfo_SoftwareVersion, Text;
    "_server.build.build_number" => Server_ServerStatus_BuildInfo_BuildNumber, Text;
    "_server.build.build_date" => Server_ServerStatus_BuildInfo_BuildDate, Time;
    "_diag.server_view_count" => Server_ServerDiagnostics_ServerDiagnosticsSummary_ServerViewCount, Count;
    "_diag.current_session_count" => Server_ServerDiagnostics_ServerDiagnosticsSummary_CurrentSessionCount, Count;
    "_diag.cumulated_session_count" => Server_ServerDiagnostics_ServerDiagnosticsSummary_CumulatedSessionCount, Count;
    "_diag.security_rejected_session_count" => Server_ServerDiagnostics_ServerDiagnosticsSummary_SecurityRejectedSessionCount, Count;
    "_diag.rejected_session_count" => Server_ServerDiagnostics_ServerDiagnosticsSummary_RejectedSessionCount, Count;
    "_diag.session_timeout_count" => Server_ServerDiagnostics_ServerDiagnosticsSummary_SessionTimeoutCount, Count;
    "_diag.session_abort_count" => Server_ServerDiagnostics_ServerDiagnosticsSummary_SessionAbortCount, Count;
    "_diag.publishing_interval_count" => Server_ServerDiagnostics_ServerDiagnosticsSummary_PublishingIntervalCount, Count;
    "_diag.current_subscription_count" => Server_ServerDiagnostics_ServerDiagnosticsSummary_CurrentSubscriptionCount, Count;
    "_diag.cumulated_subscription_count" => Server_ServerDiagnostics_ServerDiagnosticsSummary_CumulatedSubscriptionCount, Count;
    "_diag.security_rejected_requests_count" => Server_ServerDiagnostics_ServerDiagnosticsSummary_SecurityRejectedRequestsCount, Count;
    "_diag.rejected_requests_count" => Server_ServerDiagnostics_ServerDiagnosticsSummary_RejectedRequestsCount, Count;
};

use super::reserved::POLICY_STRENGTH;

/// The short name of a security policy URI (`...SecurityPolicy#Basic256Sha256`).
pub(crate) fn short_policy(uri: &str) -> &str {
    uri.rsplit('#').next().unwrap_or(uri)
}

/// The strongest policy among `uris` (unknown ones rank below None), by short name.
pub(crate) fn best_policy<'a>(uris: impl IntoIterator<Item = &'a str>) -> Option<String> {
    uris.into_iter()
        .map(short_policy)
        .max_by_key(|p| {
            POLICY_STRENGTH
                .iter()
                .position(|x| x == p)
                .map_or(0, |i| i + 1)
        })
        .map(str::to_owned)
}

pub(crate) fn status_read_ids() -> Vec<ReadValueId> {
    STATUS_NODES
        .iter()
        .map(|n| ReadValueId::from(NodeId::from(n.node)))
        .collect()
}

/// Status values that decoded, in [`STATUS_NODES`] order; values the server refused (no
/// diagnostics for this user, not implemented) are left out and listed in the second part
/// by tag name and status.
pub(crate) fn status_values(values: &[DataValue]) -> (Vec<(&'static str, Value)>, Vec<String>) {
    let mut out = Vec::new();
    let mut refused = Vec::new();
    for (node, dv) in STATUS_NODES.iter().zip(values) {
        let status = dv.status.unwrap_or(StatusCode::Good);
        if status.is_bad() {
            refused.push(format!("{} ({})", node.tag, status_name(status)));
            continue;
        }
        let value = match (node.kind, dv.value.as_ref()) {
            (_, None | Some(Variant::Empty)) => continue,
            (StatusKind::State, Some(v)) => match decode_variant(v) {
                Ok(Some(Value::Int(i))) => Value::Int(i),
                Ok(Some(Value::UInt(u))) => Value::Int(i64::try_from(u).unwrap_or(i64::MAX)),
                _ => continue,
            },
            (StatusKind::Time, Some(Variant::DateTime(t))) => match timestamp(t) {
                Some(t) => Value::Text(t.to_string()),
                None => continue,
            },
            (StatusKind::Count, Some(v)) => match decode_variant(v) {
                Ok(Some(Value::UInt(u))) => Value::UInt(u),
                Ok(Some(Value::Int(i))) => Value::UInt(u64::try_from(i).unwrap_or(0)),
                _ => continue,
            },
            (StatusKind::Text | StatusKind::Time, Some(v)) => match decode_variant(v) {
                Ok(Some(Value::Text(t))) => Value::Text(t),
                _ => continue,
            },
        };
        out.push((node.tag, value));
    }
    (out, refused)
}

/// The identity part a status read contributes; endpoint facts are added by the caller.
pub(crate) fn identity_from_status(values: &[(&'static str, Value)]) -> DeviceIdentity {
    let text = |tag: &str| {
        values.iter().find_map(|(t, v)| match v {
            Value::Text(s) if *t == tag && !s.is_empty() => Some(s.clone()),
            _ => None,
        })
    };
    DeviceIdentity {
        vendor: text("_server.build.manufacturer_name"),
        product_code: text("_server.build.product_uri"),
        revision: text("_server.build.software_version"),
        product_name: text("_server.build.product_name"),
        application_uri: None,
        certificate_thumbprint: None,
    }
}

/// SHA-1 thumbprint (lowercase hex) of a DER certificate, `None` when there is none.
pub(crate) fn certificate_thumbprint(der: &ByteString) -> Option<String> {
    if der.is_null_or_empty() {
        return None;
    }
    opcua::crypto::X509::from_byte_string(der)
        .ok()
        .map(|cert| cert.thumbprint().as_hex_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use opcua::types::{LocalizedText, UAString};

    #[test]
    fn integers_keep_their_signedness_and_width() {
        assert_eq!(
            decode_variant(&Variant::Int16(-7)),
            Ok(Some(Value::Int(-7)))
        );
        assert_eq!(
            decode_variant(&Variant::Int64(i64::MIN)),
            Ok(Some(Value::Int(i64::MIN)))
        );
        assert_eq!(
            decode_variant(&Variant::UInt64(u64::MAX)),
            Ok(Some(Value::UInt(u64::MAX)))
        );
        assert_eq!(
            decode_variant(&Variant::Byte(200)),
            Ok(Some(Value::UInt(200)))
        );
        assert_eq!(
            decode_variant(&Variant::Boolean(true)),
            Ok(Some(Value::Bool(true)))
        );
    }

    #[test]
    fn floats_widen_and_non_finite_floats_are_refused() {
        assert_eq!(
            decode_variant(&Variant::Float(1.5)),
            Ok(Some(Value::Float(1.5)))
        );
        assert!(decode_variant(&Variant::Float(f32::NAN)).is_err());
        assert!(decode_variant(&Variant::Double(f64::INFINITY)).is_err());
        assert!(decode_variant(&Variant::Double(f64::NEG_INFINITY)).is_err());
    }

    #[test]
    fn strings_and_byte_strings_become_text_binary_as_hex() {
        assert_eq!(
            decode_variant(&Variant::String(UAString::from("PCB-1"))),
            Ok(Some(Value::Text("PCB-1".into())))
        );
        assert_eq!(
            decode_variant(&Variant::ByteString(ByteString::from(b"v1.2".to_vec()))),
            Ok(Some(Value::Text("v1.2".into())))
        );
        assert_eq!(
            decode_variant(&Variant::ByteString(ByteString::from(vec![
                0xde, 0xad, 0x00
            ]))),
            Ok(Some(Value::Text("dead00".into())))
        );
        assert_eq!(
            decode_variant(&Variant::LocalizedText(Box::new(LocalizedText::new(
                "en", "Running"
            )))),
            Ok(Some(Value::Text("Running".into())))
        );
        assert_eq!(decode_variant(&Variant::Empty), Ok(None));
    }

    #[test]
    fn quality_follows_the_status_severity() {
        assert_eq!(quality(StatusCode::Good), Quality::Good);
        assert_eq!(
            quality(StatusCode::UncertainLastUsableValue),
            Quality::Uncertain
        );
        assert_eq!(quality(StatusCode::BadCommunicationError), Quality::Bad);
    }

    #[test]
    fn a_bad_value_with_a_value_is_a_bad_quality_reading_and_an_unknown_node_is_a_bad_node() {
        let dv = DataValue {
            value: Some(Variant::Double(3.0)),
            status: Some(StatusCode::BadSensorFailure),
            ..DataValue::default()
        };
        assert!(matches!(
            sample(&dv),
            Sample::Value {
                quality: Quality::Bad,
                ..
            }
        ));
        let dv = DataValue {
            value: None,
            status: Some(StatusCode::BadNodeIdUnknown),
            ..DataValue::default()
        };
        assert_eq!(sample(&dv), Sample::BadNode(StatusCode::BadNodeIdUnknown));
        let dv = DataValue {
            value: Some(Variant::Float(f32::NAN)),
            status: Some(StatusCode::Good),
            ..DataValue::default()
        };
        assert!(matches!(sample(&dv), Sample::Error(r) if r.contains("non-finite")));
    }

    #[test]
    fn the_source_timestamp_is_kept_in_microseconds() {
        let t = DateTime::from(chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap());
        let dv = DataValue {
            value: Some(Variant::UInt32(5)),
            status: Some(StatusCode::Good),
            source_timestamp: Some(t),
            ..DataValue::default()
        };
        let Sample::Value { source_time, .. } = sample(&dv) else {
            panic!("expected a value");
        };
        assert_eq!(
            source_time,
            Some(Timestamp::from_micros(1_700_000_000_000_000))
        );
        assert_eq!(timestamp(&DateTime::null()), None);
    }

    #[test]
    fn rejected_credentials_and_certificates_are_told_apart_from_link_failures() {
        assert!(matches!(
            classify(StatusCode::BadIdentityTokenRejected, ""),
            SourceError::Auth(_)
        ));
        assert!(matches!(
            classify(StatusCode::BadUserAccessDenied, "x"),
            SourceError::Auth(_)
        ));
        assert!(matches!(
            classify(StatusCode::BadCertificateUntrusted, ""),
            SourceError::Certificate(_)
        ));
        assert!(matches!(
            classify(StatusCode::BadSecurityChecksFailed, ""),
            SourceError::Certificate(_)
        ));
        assert!(matches!(
            classify(StatusCode::BadCommunicationError, ""),
            SourceError::Connect(_)
        ));
        assert!(matches!(
            classify(StatusCode::BadTimeout, ""),
            SourceError::Transport(_)
        ));
    }

    #[test]
    fn status_values_map_state_times_and_counters_and_list_refusals() {
        let mut values = vec![DataValue::default(); STATUS_NODES.len()];
        let at = |tag: &str| STATUS_NODES.iter().position(|n| n.tag == tag).unwrap();
        values[at("_server.state")] = DataValue::new_now(Variant::Int32(0));
        values[at("_server.build.software_version")] = DataValue::new_now(Variant::from("2.1.0"));
        values[at("_server.build.manufacturer_name")] = DataValue::new_now(Variant::from("ACME"));
        values[at("_diag.current_session_count")] = DataValue::new_now(Variant::UInt32(3));
        values[at("_diag.rejected_session_count")] = DataValue {
            status: Some(StatusCode::BadUserAccessDenied),
            ..DataValue::default()
        };
        let (out, refused) = status_values(&values);
        assert!(out.contains(&("_server.state", Value::Int(0))));
        assert!(out.contains(&("_diag.current_session_count", Value::UInt(3))));
        assert_eq!(
            refused,
            ["_diag.rejected_session_count (BadUserAccessDenied)"]
        );
        let identity = identity_from_status(&out);
        assert_eq!(identity.revision.as_deref(), Some("2.1.0"));
        assert_eq!(identity.vendor.as_deref(), Some("ACME"));
    }

    #[test]
    fn the_best_policy_is_the_strongest_offered() {
        let uris = [
            "http://opcfoundation.org/UA/SecurityPolicy#None",
            "http://opcfoundation.org/UA/SecurityPolicy#Aes128_Sha256_RsaOaep",
            "http://opcfoundation.org/UA/SecurityPolicy#Basic256Sha256",
        ];
        assert_eq!(best_policy(uris).as_deref(), Some("Basic256Sha256"));
        assert_eq!(
            best_policy(["http://opcfoundation.org/UA/SecurityPolicy#None"]).as_deref(),
            Some("None")
        );
        assert_eq!(best_policy([]), None);
    }

    #[test]
    fn node_ids_parse_from_the_profile_text_form() {
        assert_eq!(
            parse_node_id("ns=2;s=AOI.State").unwrap(),
            NodeId::new(2, "AOI.State")
        );
        assert_eq!(parse_node_id("i=2258").unwrap(), NodeId::new(0, 2258u32));
        assert!(parse_node_id("nonsense").is_err());
    }

    #[test]
    fn a_node_data_type_fits_a_declared_type_only_without_changing_meaning() {
        use DataType as D;
        let ns0 = |id: u32| NodeId::new(0, id);
        let fits = |id: u32, declared| check_data_type(&ns0(id), declared);
        // Same type, widenings, either float for a float.
        for (id, declared) in [
            (1, D::Bool),
            (5, D::U16),
            (5, D::U32),
            (5, D::I32),
            (3, D::I16),
            (4, D::I64),
            (7, D::U64),
            (11, D::F32),
            (10, D::F64),
            (5, D::F32),
            (6, D::F64),
            (12, D::String),
            (21, D::String),
            (13, D::String),
            (29, D::U16),
            (289, D::U32),
            (26, D::F32),
        ] {
            assert_eq!(fits(id, declared), Ok(()), "i={id} as {declared:?}");
        }
        // What the issue saw (Double as bool, String as u16) and other narrowings.
        for (id, declared, name) in [
            (11, D::Bool, "Double"),
            (12, D::U16, "String"),
            (11, D::U16, "Double"),
            (1, D::U16, "Boolean"),
            (6, D::U16, "Int32"),
            (4, D::U16, "Int16"),
            (5, D::I16, "UInt16"),
            (9, D::F64, "UInt64"),
            (10, D::String, "Float"),
            (12, D::Bool, "String"),
            (29, D::F32, "Enumeration"),
        ] {
            assert_eq!(fits(id, declared), Err(name), "i={id} as {declared:?}");
        }
        // Types the agent cannot judge are let through.
        assert_eq!(fits(24, D::Bool), Ok(()), "BaseDataType");
        assert_eq!(fits(22, D::U16), Ok(()), "Structure");
        assert_eq!(check_data_type(&NodeId::new(2, 3001), D::U16), Ok(()));
        assert_eq!(check_data_type(&NodeId::new(0, "x"), D::U16), Ok(()));
    }
}
