//! `[[stations]]`: which station, which profile, how to reach it, how often to poll it;
//! validated into [`crate::source::StationConfig`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use super::defaults;
use super::profile::{is_profile_name, Library};
use super::raw;
use super::report::{type_name, Report};
use super::rules;
use super::secret;
use crate::source::{
    OpcUaIdentity, OpcUaSecurityMode, OpcUaSecurityPolicy, Parity, Profile, Protocol, SourceConfig,
    SourceTuning, StationConfig,
};
use linesentry_common::config::spans::{child, item};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Kind {
    Simulated,
    ModbusTcp,
    ModbusRtu,
    #[serde(rename = "opcua")]
    OpcUa,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Simulated => "simulated",
            Kind::ModbusTcp => "modbus_tcp",
            Kind::ModbusRtu => "modbus_rtu",
            Kind::OpcUa => "opcua",
        }
    }

    fn protocol(self) -> Option<Protocol> {
        match self {
            Kind::Simulated => None,
            Kind::ModbusTcp | Kind::ModbusRtu => Some(Protocol::Modbus),
            Kind::OpcUa => Some(Protocol::OpcUa),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum IdentityKind {
    Anonymous,
    Username,
    Certificate,
}

/// The `[[stations]]` array; `None` when any station had an error.
pub(super) fn stations(
    report: &mut Report<'_>,
    value: Option<toml::Value>,
    base_dir: &Path,
    library: &mut Library,
) -> Option<Vec<StationConfig>> {
    let items = match value {
        None => return Some(Vec::new()),
        Some(toml::Value::Array(items)) => items,
        Some(other) => {
            report.error(
                "stations",
                format!(
                    "expected an array of tables `[[stations]]`, found {}",
                    type_name(&other)
                ),
            );
            return None;
        }
    };
    let before = report.error_count();
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut out = Vec::with_capacity(items.len());
    for (i, value) in items.into_iter().enumerate() {
        let at = item("stations", i);
        let Some(raw) = report.deserialize::<raw::Station>(&at, value) else {
            continue;
        };
        if let Some(first) = seen.get(&raw.id) {
            report.error(
                &child(&at, "id"),
                format!("duplicate station id `{}`; first used by stations[{first}], expected unique ids", raw.id),
            );
        } else {
            seen.insert(raw.id.clone(), i);
        }
        if let Some(station) = station(report, &at, &raw, base_dir, library) {
            out.push(station);
        }
    }
    (report.error_count() == before).then_some(out)
}

fn station(
    report: &mut Report<'_>,
    at: &str,
    raw: &raw::Station,
    base_dir: &Path,
    library: &mut Library,
) -> Option<StationConfig> {
    let before = report.error_count();
    let id = report.ident(&child(at, "id"), &raw.id);
    let profile = profile(report, &child(at, "profile"), &raw.profile, library);
    let kind = report.choice::<Kind>(&child(at, "source"), &raw.source);
    let source = kind.and_then(|kind| source(report, at, raw, kind, base_dir));
    if let (Some(kind), Some(profile)) = (kind, &profile) {
        if let Some(protocol) = kind.protocol().filter(|p| *p != profile.protocol) {
            report.error(
                &child(at, "profile"),
                format!(
                    "profile `{}` has protocol = \"{}\" ({}); source = \"{}\" expects a profile with protocol = \"{protocol}\"",
                    profile.name,
                    profile.protocol,
                    profile.file.display(),
                    kind.name(),
                ),
            );
        }
    }
    let poll = report.int(
        &child(at, "poll_interval_ms"),
        raw.poll_interval_ms,
        defaults::POLL_INTERVAL_MS,
    );
    let timeout = report.int(
        &child(at, "timeout_ms"),
        raw.timeout_ms,
        defaults::TIMEOUT_MS,
    );
    let change_windows = rules::change_windows(
        report,
        &child(at, "change_windows"),
        raw.change_windows.as_deref(),
    );
    let tuning = tuning(report, at, raw, kind);
    if report.error_count() > before {
        return None;
    }
    Some(StationConfig {
        id: id?,
        profile: profile?,
        source: source?,
        poll_interval: Duration::from_millis(poll? as u64),
        timeout: Duration::from_millis(timeout? as u64),
        enabled: raw.enabled.unwrap_or(defaults::ENABLED),
        change_windows: change_windows?,
        tuning: tuning?,
    })
}

/// The acquisition tuning keys; whether they fit the source kind is checked in `source`.
fn tuning(
    report: &mut Report<'_>,
    at: &str,
    raw: &raw::Station,
    kind: Option<Kind>,
) -> Option<SourceTuning> {
    let before = report.error_count();
    let mut int = |key: &str, given: Option<i64>, setting: defaults::Int| {
        report.int(&child(at, key), given, setting)
    };
    let max_gap = int("max_gap", raw.max_gap, defaults::MAX_GAP);
    let max_registers = int(
        "max_read_registers",
        raw.max_read_registers,
        defaults::MAX_READ_REGISTERS,
    );
    let max_bits = int("max_read_bits", raw.max_read_bits, defaults::MAX_READ_BITS);
    let failures = int(
        "breaker_failures",
        raw.breaker_failures,
        defaults::BREAKER_FAILURES,
    );
    let open = int(
        "breaker_open_ms",
        raw.breaker_open_ms,
        defaults::BREAKER_OPEN_MS,
    );
    let open_max = int(
        "breaker_open_max_ms",
        raw.breaker_open_max_ms,
        defaults::BREAKER_OPEN_MAX_MS,
    );
    let identity_every = int(
        "identity_every_polls",
        raw.identity_every_polls,
        defaults::IDENTITY_EVERY_POLLS,
    );
    let initial_default = if kind == Some(Kind::OpcUa) {
        defaults::RECONNECT_INITIAL_MS_OPCUA
    } else {
        defaults::RECONNECT_INITIAL_MS_MODBUS
    };
    let reconnect = int(
        "reconnect_initial_ms",
        raw.reconnect_initial_ms,
        initial_default,
    );
    let reconnect_max = int(
        "reconnect_max_ms",
        raw.reconnect_max_ms,
        defaults::RECONNECT_MAX_MS,
    );
    let queue_size = int("queue_size", raw.queue_size, defaults::QUEUE_SIZE);
    let watchdog = int(
        "watchdog_intervals",
        raw.watchdog_intervals,
        defaults::WATCHDOG_INTERVALS,
    );
    for (first, last, first_key, last_key) in [
        (open, open_max, "breaker_open_ms", "breaker_open_max_ms"),
        (
            reconnect,
            reconnect_max,
            "reconnect_initial_ms",
            "reconnect_max_ms",
        ),
    ] {
        if let (Some(first), Some(last)) = (first, last) {
            if first > last {
                report.error(
                    &child(at, last_key),
                    format!("expected at least `{first_key}` ({first} ms), found {last} ms"),
                );
            }
        }
    }
    if report.error_count() > before {
        return None;
    }
    let ms = |v: Option<i64>| v.map(|v| Duration::from_millis(v as u64));
    Some(SourceTuning {
        plan: crate::source::modbus::PlanLimits {
            max_registers: max_registers? as u16,
            max_bits: max_bits? as u16,
            max_gap: max_gap? as u16,
        },
        breaker_failures: failures? as u32,
        breaker_open: ms(open)?,
        breaker_open_max: ms(open_max)?,
        identity_every: identity_every? as u32,
        reconnect_initial: ms(reconnect)?,
        reconnect_max: ms(reconnect_max)?,
        queue_size: queue_size? as u32,
        watchdog_intervals: watchdog? as u32,
    })
}

fn profile(
    report: &mut Report<'_>,
    at: &str,
    name: &str,
    library: &mut Library,
) -> Option<Arc<Profile>> {
    if !is_profile_name(name) {
        report.error(
            at,
            format!(
                "expected a profile name of 1-64 characters of [A-Za-z0-9_-], found `{}`",
                name.escape_debug()
            ),
        );
        return None;
    }
    let loaded = library.get(name);
    let problem = match &loaded.bytes {
        Ok(_) => return loaded.profile.clone(),
        Err(e) => format!("cannot read profile file `{}`: {e}", loaded.path.display()),
    };
    let message = format!(
        "{problem}; expected one of the profiles in `{}`: {}",
        library.dir().display(),
        list(&library.available()),
    );
    report.error(at, message);
    None
}

fn list(names: &[String]) -> String {
    if names.is_empty() {
        return "(none found)".to_owned();
    }
    names
        .iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Which source kinds each kind-specific key applies to.
const KIND_KEYS: &[(&str, &[Kind])] = &[
    ("address", &[Kind::ModbusTcp]),
    ("unit_id", &[Kind::ModbusTcp, Kind::ModbusRtu]),
    ("device", &[Kind::ModbusRtu]),
    ("baud", &[Kind::ModbusRtu]),
    ("parity", &[Kind::ModbusRtu]),
    ("data_bits", &[Kind::ModbusRtu]),
    ("stop_bits", &[Kind::ModbusRtu]),
    ("endpoint_url", &[Kind::OpcUa]),
    ("security_mode", &[Kind::OpcUa]),
    ("security_policy", &[Kind::OpcUa]),
    ("identity", &[Kind::OpcUa]),
    ("acquisition", &[Kind::OpcUa]),
    ("queue_size", &[Kind::OpcUa]),
    ("watchdog_intervals", &[Kind::OpcUa]),
    ("max_gap", &[Kind::ModbusTcp, Kind::ModbusRtu]),
    ("max_read_registers", &[Kind::ModbusTcp, Kind::ModbusRtu]),
    ("max_read_bits", &[Kind::ModbusTcp, Kind::ModbusRtu]),
    ("breaker_failures", &[Kind::ModbusTcp, Kind::ModbusRtu]),
    ("breaker_open_ms", &[Kind::ModbusTcp, Kind::ModbusRtu]),
    ("breaker_open_max_ms", &[Kind::ModbusTcp, Kind::ModbusRtu]),
    ("identity_every_polls", &[Kind::ModbusTcp, Kind::ModbusRtu]),
    // A serial port is reopened by its bus arbiter, shared by every unit on it.
    ("reconnect_initial_ms", &[Kind::ModbusTcp, Kind::OpcUa]),
    ("reconnect_max_ms", &[Kind::ModbusTcp, Kind::OpcUa]),
];

fn given_keys(raw: &raw::Station) -> [(&'static str, bool); 23] {
    [
        ("address", raw.address.is_some()),
        ("unit_id", raw.unit_id.is_some()),
        ("device", raw.device.is_some()),
        ("baud", raw.baud.is_some()),
        ("parity", raw.parity.is_some()),
        ("data_bits", raw.data_bits.is_some()),
        ("stop_bits", raw.stop_bits.is_some()),
        ("endpoint_url", raw.endpoint_url.is_some()),
        ("security_mode", raw.security_mode.is_some()),
        ("security_policy", raw.security_policy.is_some()),
        ("identity", raw.identity.is_some()),
        ("acquisition", raw.acquisition.is_some()),
        ("queue_size", raw.queue_size.is_some()),
        ("watchdog_intervals", raw.watchdog_intervals.is_some()),
        ("max_gap", raw.max_gap.is_some()),
        ("max_read_registers", raw.max_read_registers.is_some()),
        ("max_read_bits", raw.max_read_bits.is_some()),
        ("breaker_failures", raw.breaker_failures.is_some()),
        ("breaker_open_ms", raw.breaker_open_ms.is_some()),
        ("breaker_open_max_ms", raw.breaker_open_max_ms.is_some()),
        ("identity_every_polls", raw.identity_every_polls.is_some()),
        ("reconnect_initial_ms", raw.reconnect_initial_ms.is_some()),
        ("reconnect_max_ms", raw.reconnect_max_ms.is_some()),
    ]
}

fn source(
    report: &mut Report<'_>,
    at: &str,
    raw: &raw::Station,
    kind: Kind,
    base_dir: &Path,
) -> Option<SourceConfig> {
    let mut misplaced = false;
    for (key, given) in given_keys(raw) {
        let kinds = KIND_KEYS
            .iter()
            .find(|(k, _)| *k == key)
            .map_or(&[][..], |(_, kinds)| *kinds);
        if given && !kinds.contains(&kind) {
            let names = kinds
                .iter()
                .map(|k| format!("\"{}\"", k.name()))
                .collect::<Vec<_>>()
                .join(" or ");
            report.error(
                &child(at, key),
                format!("`{key}` only applies to source = {names}; expected no `{key}` on a station with source = \"{}\"", kind.name()),
            );
            misplaced = true;
        }
    }
    let source = match kind {
        Kind::Simulated => Some(SourceConfig::Simulated),
        Kind::ModbusTcp => modbus_tcp(report, at, raw),
        Kind::ModbusRtu => modbus_rtu(report, at, raw),
        Kind::OpcUa => opcua(report, at, raw, base_dir),
    };
    if misplaced {
        None
    } else {
        source
    }
}

fn unit_id(report: &mut Report<'_>, at: &str, raw: &raw::Station) -> Option<u8> {
    report
        .int(&child(at, "unit_id"), raw.unit_id, defaults::UNIT_ID)
        .map(|u| u as u8)
}

fn modbus_tcp(report: &mut Report<'_>, at: &str, raw: &raw::Station) -> Option<SourceConfig> {
    let unit_id = unit_id(report, at, raw);
    let key = child(at, "address");
    let Some(address) = &raw.address else {
        report.error(&key, "missing required key `address` for source = \"modbus_tcp\"; expected host:port such as `192.168.10.21:502`");
        return None;
    };
    if !is_host_port(address) {
        report.error(
            &key,
            format!(
                "expected host:port such as `192.168.10.21:502`, found `{}`",
                address.escape_debug()
            ),
        );
        return None;
    }
    Some(SourceConfig::ModbusTcp {
        address: address.clone(),
        unit_id: unit_id?,
    })
}

/// `host:port` or `[v6]:port` with a non-zero port; the host is not resolved.
pub(super) fn is_host_port(text: &str) -> bool {
    let Some((host, port)) = text.rsplit_once(':') else {
        return false;
    };
    let host = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(v6) => {
            return v6.parse::<std::net::Ipv6Addr>().is_ok()
                && port.parse::<u16>().is_ok_and(|p| p > 0)
        }
        None => host,
    };
    !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
        && port.parse::<u16>().is_ok_and(|p| p > 0)
}

fn modbus_rtu(report: &mut Report<'_>, at: &str, raw: &raw::Station) -> Option<SourceConfig> {
    let unit_id = unit_id(report, at, raw);
    let baud = report.int(&child(at, "baud"), raw.baud, defaults::BAUD);
    let parity = report.choice::<Parity>(
        &child(at, "parity"),
        raw.parity.as_deref().unwrap_or(defaults::PARITY),
    );
    let data_bits = report.int(&child(at, "data_bits"), raw.data_bits, defaults::DATA_BITS);
    let stop_bits = report.int(&child(at, "stop_bits"), raw.stop_bits, defaults::STOP_BITS);
    let device = match raw.device.as_deref() {
        Some(device) if !device.is_empty() => Some(PathBuf::from(device)),
        Some(_) => {
            report.error(
                &child(at, "device"),
                "expected a serial device path such as `/dev/ttyUSB0`, found an empty string",
            );
            None
        }
        None => {
            report.error(&child(at, "device"), "missing required key `device` for source = \"modbus_rtu\"; expected a serial device path such as `/dev/ttyUSB0`");
            None
        }
    };
    Some(SourceConfig::ModbusRtu {
        device: device?,
        baud: baud? as u32,
        parity: parity?,
        data_bits: data_bits? as u8,
        stop_bits: stop_bits? as u8,
        unit_id: unit_id?,
    })
}

fn opcua(
    report: &mut Report<'_>,
    at: &str,
    raw: &raw::Station,
    base_dir: &Path,
) -> Option<SourceConfig> {
    let url_at = child(at, "endpoint_url");
    let endpoint_url = match &raw.endpoint_url {
        Some(url) if is_opc_tcp_url(url) => Some(url.clone()),
        Some(url) => {
            report.error(
                &url_at,
                format!(
                    "expected an opc.tcp:// URL such as `opc.tcp://10.0.0.5:4840`, found `{}`",
                    url.escape_debug()
                ),
            );
            None
        }
        None => {
            report.error(&url_at, "missing required key `endpoint_url` for source = \"opcua\"; expected an opc.tcp:// URL such as `opc.tcp://10.0.0.5:4840`");
            None
        }
    };
    let mode_at = child(at, "security_mode");
    let policy_at = child(at, "security_policy");
    let mode = report.choice::<OpcUaSecurityMode>(
        &mode_at,
        raw.security_mode
            .as_deref()
            .unwrap_or(defaults::SECURITY_MODE),
    );
    let policy = report.choice::<OpcUaSecurityPolicy>(
        &policy_at,
        raw.security_policy
            .as_deref()
            .unwrap_or(defaults::SECURITY_POLICY),
    );
    match (mode, policy) {
        (Some(OpcUaSecurityMode::None), Some(p)) if p != OpcUaSecurityPolicy::None => report.error(
            &policy_at,
            format!("security_mode = \"None\" requires security_policy = \"None\", found {p:?}; set security_mode = \"SignAndEncrypt\" to use this policy"),
        ),
        (Some(m), Some(OpcUaSecurityPolicy::None)) if m != OpcUaSecurityMode::None => report.error(
            &policy_at,
            format!("security_mode = \"{m:?}\" needs a security policy other than None; expected e.g. security_policy = \"Basic256Sha256\""),
        ),
        _ => {}
    }
    let acquisition = report.choice::<crate::source::opcua::Acquisition>(
        &child(at, "acquisition"),
        raw.acquisition.as_deref().unwrap_or("subscription"),
    );
    let identity = match &raw.identity {
        None => Some(OpcUaIdentity::Anonymous),
        Some(identity) => self::identity(report, &child(at, "identity"), identity, base_dir),
    };
    Some(SourceConfig::OpcUa {
        endpoint_url: endpoint_url?,
        security_mode: mode?,
        security_policy: policy?,
        identity: identity?,
        acquisition: acquisition?,
    })
}

fn is_opc_tcp_url(url: &str) -> bool {
    url.strip_prefix("opc.tcp://")
        .and_then(|rest| rest.split('/').next())
        .is_some_and(|authority| !authority.is_empty() && !authority.contains(char::is_whitespace))
}

fn identity(
    report: &mut Report<'_>,
    at: &str,
    raw: &raw::Identity,
    base_dir: &Path,
) -> Option<OpcUaIdentity> {
    let kind = report.choice::<IdentityKind>(&child(at, "kind"), &raw.kind)?;
    let allowed: &[&str] = match kind {
        IdentityKind::Anonymous => &[],
        IdentityKind::Username => &["user", "password"],
        IdentityKind::Certificate => &["cert", "key"],
    };
    let given = [
        ("user", raw.user.is_some()),
        ("password", raw.password.is_some()),
        ("cert", raw.cert.is_some()),
        ("key", raw.key.is_some()),
    ];
    let mut ok = true;
    for (key, is_given) in given {
        if is_given && !allowed.contains(&key) {
            report.error(
                &child(at, key),
                format!(
                    "`{key}` does not apply to kind = \"{}\"; expected only {}",
                    raw.kind,
                    std::iter::once("kind")
                        .chain(allowed.iter().copied())
                        .map(|k| format!("`{k}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            );
            ok = false;
        }
        if !is_given && allowed.contains(&key) {
            report.error(
                &child(at, key),
                format!("missing required key `{key}` for kind = \"{}\"", raw.kind),
            );
            ok = false;
        }
    }
    if !ok {
        return None;
    }
    match kind {
        IdentityKind::Anonymous => Some(OpcUaIdentity::Anonymous),
        IdentityKind::Username => {
            let user = raw.user.clone().filter(|u| !u.is_empty());
            if user.is_none() {
                report.error(
                    &child(at, "user"),
                    "expected a user name, found an empty string",
                );
            }
            let password = raw
                .password
                .as_ref()
                .and_then(|p| secret::resolve(report, &child(at, "password"), p, base_dir));
            Some(OpcUaIdentity::UserName {
                user: user?,
                password: password?,
            })
        }
        IdentityKind::Certificate => Some(OpcUaIdentity::Certificate {
            cert: base_dir.join(raw.cert.as_deref()?),
            key: base_dir.join(raw.key.as_deref()?),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_accepts_names_ipv4_and_bracketed_ipv6() {
        for ok in ["127.0.0.1:5020", "press-01.plant.local:502", "[::1]:502"] {
            assert!(is_host_port(ok), "{ok}");
        }
        for bad in [
            "127.0.0.1",
            "host:0",
            "host:99999",
            ":502",
            "a b:502",
            "::1:502",
            "tcp://h:502",
        ] {
            assert!(!is_host_port(bad), "{bad}");
        }
    }

    #[test]
    fn opc_tcp_urls_need_the_scheme_and_a_host() {
        assert!(is_opc_tcp_url("opc.tcp://127.0.0.1:4840"));
        assert!(is_opc_tcp_url("opc.tcp://aoi-01:4840/UA/Server"));
        assert!(!is_opc_tcp_url("opc.tcp://"));
        assert!(!is_opc_tcp_url("http://aoi-01:4840"));
    }

    #[test]
    fn the_tuning_keys_default_to_the_sources_own_defaults() {
        // One table of ranges serves every source kind's keys; its defaults must be what
        // each kind's source uses (`SourceTuning::defaults_for`), reconnect_max included.
        let ms = |d: Duration| d.as_millis() as i64;
        for kind in ["modbus_tcp", "modbus_rtu", "opcua"] {
            let t = SourceTuning::defaults_for(kind);
            let initial = if kind == "opcua" {
                defaults::RECONNECT_INITIAL_MS_OPCUA
            } else {
                defaults::RECONNECT_INITIAL_MS_MODBUS
            };
            assert_eq!(i64::from(t.plan.max_gap), defaults::MAX_GAP.default);
            assert_eq!(
                i64::from(t.plan.max_registers),
                defaults::MAX_READ_REGISTERS.default
            );
            assert_eq!(i64::from(t.plan.max_bits), defaults::MAX_READ_BITS.default);
            assert_eq!(
                i64::from(t.breaker_failures),
                defaults::BREAKER_FAILURES.default
            );
            assert_eq!(ms(t.breaker_open), defaults::BREAKER_OPEN_MS.default);
            assert_eq!(
                ms(t.breaker_open_max),
                defaults::BREAKER_OPEN_MAX_MS.default
            );
            assert_eq!(
                i64::from(t.identity_every),
                defaults::IDENTITY_EVERY_POLLS.default
            );
            assert_eq!(ms(t.reconnect_initial), initial.default, "{kind}");
            assert_eq!(
                ms(t.reconnect_max),
                defaults::RECONNECT_MAX_MS.default,
                "{kind}"
            );
            assert_eq!(i64::from(t.queue_size), defaults::QUEUE_SIZE.default);
            assert_eq!(
                i64::from(t.watchdog_intervals),
                defaults::WATCHDOG_INTERVALS.default
            );
        }
    }
}
