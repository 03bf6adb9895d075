//! `[health]`: the agent's local health and metrics endpoint, validated into
//! [`HealthSettings`] (served by [`crate::health`]).
//!
//! Plain HTTP is accepted only on a loopback address. Any other address, `0.0.0.0` and `[::]`
//! included, needs both `tls` and `token`: metrics name stations and sinks, and a bearer
//! token sent in clear over the plant network would be no protection at all. The certificate
//! and key paths are resolved against the config file's directory but not opened here; the
//! endpoint reads them when it starts.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use super::defaults;
use super::raw;
use super::report::Report;
use super::secret;
use crate::health::{self as component, HealthSettings, HealthTls};
use linesentry_common::config::spans::child;

const AT: &str = "health";

pub(super) fn health(
    report: &mut Report<'_>,
    value: Option<toml::Value>,
    base_dir: &Path,
) -> Option<HealthSettings> {
    let raw = match value {
        Some(value) => report.deserialize::<raw::Health>(AT, value)?,
        None => raw::Health::default(),
    };
    let before = report.error_count();
    let listen = raw
        .listen
        .as_deref()
        .map_or(Some(component::DEFAULT_LISTEN), |given| {
            listen(report, given)
        });
    let tls = raw.tls.as_ref().and_then(|t| tls(report, t, base_dir));
    let token = raw
        .token
        .as_ref()
        .and_then(|t| secret::resolve(report, "health.token", t, base_dir));
    let stall_after = report.int(
        "health.stall_after_ms",
        raw.stall_after_ms,
        defaults::STALL_AFTER_MS,
    );
    if let Some(addr) = listen {
        require_protection(report, addr, raw.tls.is_some(), raw.token.is_some());
    }
    if report.error_count() > before {
        return None;
    }
    Some(HealthSettings {
        enabled: raw.enabled.unwrap_or(component::DEFAULT_ENABLED),
        listen: listen?,
        tls,
        token,
        stall_after: Duration::from_millis(stall_after? as u64),
    })
}

fn listen(report: &mut Report<'_>, given: &str) -> Option<SocketAddr> {
    const KEY: &str = "health.listen";
    match given.parse::<SocketAddr>() {
        Ok(addr) if addr.port() == 0 => {
            report.error(
                KEY,
                format!(
                    "expected a port between 1 and 65535, found `{}` (port 0)",
                    given.escape_debug()
                ),
            );
            None
        }
        Ok(addr) => Some(addr),
        Err(_) => {
            report.error(
                KEY,
                format!(
                    "expected an IP address and port such as `{}` or `[::1]:9464`, found `{}`",
                    component::DEFAULT_LISTEN,
                    given.escape_debug()
                ),
            );
            None
        }
    }
}

/// A non-loopback address without TLS and a token is refused, naming what is missing.
fn require_protection(report: &mut Report<'_>, addr: SocketAddr, tls: bool, token: bool) {
    if addr.ip().is_loopback() || (tls && token) {
        return;
    }
    let missing = match (tls, token) {
        (false, false) => "`tls` and `token` are",
        (false, true) => "`tls` is",
        _ => "`token` is",
    };
    report.error(
        "health.listen",
        format!(
            "`{addr}` is not a loopback address, and serving health and metrics beyond this \
             host needs TLS and a bearer token, but {missing} missing; expected a loopback \
             address such as `{}`, or `tls = {{ cert_file = \"...\", key_file = \"...\" }}` \
             and `token = {{ env = \"VAR\" }}` in [health]",
            component::DEFAULT_LISTEN
        ),
    );
}

fn tls(report: &mut Report<'_>, raw: &raw::HealthTls, base_dir: &Path) -> Option<HealthTls> {
    const AT: &str = "health.tls";
    let mut path = |key: &str, given: Option<&String>, what: &str, other: &str| match given {
        None => {
            report.error(
                &child(AT, key),
                format!(
                    "missing required key `{key}`; expected the path of {what} alongside `{other}`"
                ),
            );
            None
        }
        Some(p) if p.is_empty() => {
            report.error(
                &child(AT, key),
                format!("expected the path of {what}, found an empty string"),
            );
            None
        }
        Some(p) => Some(base_dir.join(p)),
    };
    let cert_file = path(
        "cert_file",
        raw.cert_file.as_ref(),
        "a PEM certificate chain (the endpoint's certificate first)",
        "key_file",
    );
    let key_file = path(
        "key_file",
        raw.key_file.as_ref(),
        "the PEM private key of that certificate",
        "cert_file",
    );
    Some(HealthTls {
        cert_file: cert_file?,
        key_file: key_file?,
    })
}
