//! RFC 5424 syslog framing around any body (a CEF or LEEF line, OCSF or ECS JSON), and the
//! transport framings: RFC 6587 / RFC 5425 octet counting (`LEN SP MSG`) and LF framing for
//! older receivers.
//!
//! `<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID [linesentry@PEN id=".." type=".."
//! seq=".." gateway=".." station=".." chain=".."] MSG`
//!
//! - PRI = facility x 8 + severity, severity from [`crate::severity::syslog`]
//!   (critical 2, error 3, warn 4, info 6, debug 7); the facility is configured (default
//!   16, local0).
//! - TIMESTAMP: the event time in UTC with microseconds (`2026-12-07T19:30:00.123456Z`).
//! - HOSTNAME: the gateway id; APP-NAME and PROCID: configured (PROCID NILVALUE `-` when
//!   unset); MSGID: the event type. Header fields are PRINTUSASCII: any other character
//!   becomes `_`, and each is cut to its RFC 5424 limit (HOSTNAME 255, APP-NAME 48, PROCID
//!   128, MSGID 32 octets); an empty one is the NILVALUE `-`. The structured data carries
//!   the exact values.
//! - Structured data: one element, SD-ID `linesentry@<PEN>`. linesentry has no IANA
//!   Private Enterprise Number of its own, so the default is 32473, the number RFC 5612
//!   reserves for documentation; a site with its own PEN configures it. PARAM-VALUEs escape
//!   `"`, `\` and `]` with a backslash; control characters become U+FFFD. `station` is
//!   left out when the event has none.
//! - MSG: the body, with no BOM unless configured (many CEF parsers do not expect one).
//!
//! **Size limit and truncation.** A message (header, structured data and body; not the
//! octet count of the framing) is at most `max_message` bytes (default 8192, what RFC 5425
//! receivers SHOULD accept; RFC 5424 receivers MUST accept 480 and SHOULD 2048). A longer
//! one keeps its header and structured data whole, gets `truncated="<body bytes before>"`
//! in the structured data, and its body is cut at a UTF-8 character boundary to fit; a
//! backslash left dangling at the cut (half a CEF/LEEF escape) is dropped too. A truncated
//! JSON body is no longer JSON: the structured data still names the event (`id`, `seq`,
//! `gateway`) so it can be fetched whole. If the header and structured data alone exceed
//! the limit the message is refused ([`EncodeError::HeaderOverLimit`]).

use std::fmt::Write as _;

use crate::model::{replace_controls, EncodeError, Provenance};
use crate::severity;
use linesentry_event::SecurityEvent;

/// RFC 5424 field limits, in octets.
pub const HOSTNAME_MAX: usize = 255;
pub const APP_NAME_MAX: usize = 48;
pub const PROCID_MAX: usize = 128;
pub const MSGID_MAX: usize = 32;
/// The smallest message every RFC 5424 receiver must accept; a lower limit is refused.
pub const MIN_MESSAGE: usize = 480;
/// The RFC 5612 documentation PEN, the default until a site configures its own.
pub const DEFAULT_ENTERPRISE: u32 = 32473;

/// Settings of the RFC 5424 framing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyslogOptions {
    /// 0..=23; default 16 (local0).
    pub facility: u8,
    /// 1-48 PRINTUSASCII characters; default `linesentry`.
    pub app_name: String,
    /// 1-128 PRINTUSASCII characters, or NILVALUE when `None`.
    pub procid: Option<String>,
    /// The enterprise number of the SD-ID `linesentry@<enterprise>`.
    pub enterprise: u32,
    /// Largest message in bytes, at least [`MIN_MESSAGE`].
    pub max_message: usize,
    /// Start MSG with a UTF-8 BOM (RFC 5424's MSG-UTF8).
    pub bom: bool,
}

impl Default for SyslogOptions {
    fn default() -> Self {
        Self {
            facility: 16,
            app_name: "linesentry".into(),
            procid: None,
            enterprise: DEFAULT_ENTERPRISE,
            max_message: 8192,
            bom: false,
        }
    }
}

impl SyslogOptions {
    /// Checks every setting; [`frame`] calls it, configuration should too.
    pub fn validate(&self) -> Result<(), EncodeError> {
        let bad = |field, reason: String| Err(EncodeError::SyslogSetting { field, reason });
        if self.facility > 23 {
            return bad("facility", format!("{} is not 0..=23", self.facility));
        }
        check_header_field("app_name", &self.app_name, APP_NAME_MAX)?;
        if let Some(p) = &self.procid {
            check_header_field("procid", p, PROCID_MAX)?;
        }
        if self.max_message < MIN_MESSAGE {
            return bad(
                "max_message",
                format!(
                    "{} is below the {MIN_MESSAGE} bytes every receiver accepts",
                    self.max_message
                ),
            );
        }
        Ok(())
    }
}

fn check_header_field(field: &'static str, value: &str, max: usize) -> Result<(), EncodeError> {
    if value.is_empty() || value.len() > max || !value.bytes().all(|b| (33..=126).contains(&b)) {
        return Err(EncodeError::SyslogSetting {
            field,
            reason: format!("expected 1 to {max} printable ASCII characters without spaces"),
        });
    }
    Ok(())
}

/// `event` with `body` as its MSG, as one RFC 5424 message (no framing, no newline).
pub fn frame(
    event: &SecurityEvent,
    body: &str,
    options: &SyslogOptions,
    provenance: &Provenance,
) -> Result<String, EncodeError> {
    options.validate()?;
    let pri = u16::from(options.facility) * 8 + u16::from(severity::syslog(event.severity));
    let time = event
        .timestamp
        .to_datetime()
        .format("%Y-%m-%dT%H:%M:%S%.6fZ");
    let mut head = String::with_capacity(256);
    let _ = write!(head, "<{pri}>1 {time} ");
    push_header_field(&mut head, &event.gateway_id, HOSTNAME_MAX);
    head.push(' ');
    head.push_str(&options.app_name);
    head.push(' ');
    head.push_str(options.procid.as_deref().unwrap_or("-"));
    head.push(' ');
    push_header_field(&mut head, &event.event_type, MSGID_MAX);
    head.push(' ');

    let bom = if options.bom { "\u{FEFF}" } else { "" };
    let body_len = if body.is_empty() {
        0
    } else {
        1 + bom.len() + body.len()
    };
    let sd = structured_data(event, options.enterprise, provenance, None);
    if head.len() + sd.len() + body_len <= options.max_message {
        let mut out = head + &sd;
        if !body.is_empty() {
            out.push(' ');
            out.push_str(bom);
            out.push_str(body);
        }
        return Ok(out);
    }

    let sd = structured_data(event, options.enterprise, provenance, Some(body.len()));
    let fixed = head.len() + sd.len() + 1 + bom.len();
    if fixed >= options.max_message {
        return Err(EncodeError::HeaderOverLimit {
            needed: fixed + 1,
            limit: options.max_message,
        });
    }
    let cut = cut_body(body, options.max_message - fixed);
    Ok(format!("{head}{sd} {bom}{cut}"))
}

/// The longest prefix of `body` within `budget` bytes that ends on a character boundary and
/// not inside a backslash escape.
fn cut_body(body: &str, budget: usize) -> &str {
    let mut end = budget.min(body.len());
    while !body.is_char_boundary(end) {
        end -= 1;
    }
    let cut = &body[..end];
    let trailing = cut.bytes().rev().take_while(|b| *b == b'\\').count();
    if trailing % 2 == 1 {
        &cut[..cut.len() - 1]
    } else {
        cut
    }
}

/// PRINTUSASCII, cut to `max`, NILVALUE when empty.
fn push_header_field(out: &mut String, value: &str, max: usize) {
    if value.is_empty() {
        out.push('-');
        return;
    }
    out.extend(
        value
            .chars()
            .map(|c| if ('!'..='~').contains(&c) { c } else { '_' })
            .take(max),
    );
}

fn structured_data(
    event: &SecurityEvent,
    enterprise: u32,
    provenance: &Provenance,
    truncated_from: Option<usize>,
) -> String {
    let mut sd = format!("[linesentry@{enterprise}");
    let mut param = |name: &str, value: &str| {
        let _ = write!(sd, " {name}=\"");
        push_param_value(&mut sd, value);
        sd.push('"');
    };
    param("id", &event.id.to_string());
    param("type", &event.event_type);
    param("seq", &event.seq.to_string());
    param("gateway", &event.gateway_id);
    if let Some(station) = &event.station_id {
        param("station", station);
    }
    param("chain", provenance.chain.as_str());
    if let Some(n) = truncated_from {
        param("truncated", &n.to_string());
    }
    sd.push(']');
    sd
}

/// Appends an SD PARAM-VALUE, escaped (RFC 5424 6.3.3).
pub fn push_param_value(out: &mut String, value: &str) {
    for c in replace_controls(value, |_| false).chars() {
        if matches!(c, '"' | '\\' | ']') {
            out.push('\\');
        }
        out.push(c);
    }
}

/// RFC 6587 3.4.1 / RFC 5425 4.3 octet counting: `MSG-LEN SP SYSLOG-MSG`, the length in
/// bytes.
pub fn octet_counted(message: &str) -> String {
    format!("{} {message}", message.len())
}

/// LF framing (RFC 6587 3.4.2, non-transparent): the message and a line feed. A message
/// with a line feed of its own cannot be framed so; every encoder of this crate escapes
/// them, so this fails only for a foreign body.
pub fn lf_framed(message: &str) -> Result<String, EncodeError> {
    if message.contains('\n') {
        return Err(EncodeError::LineFeedInMessage);
    }
    Ok(format!("{message}\n"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use linesentry_event::{EventType, Timestamp};

    fn event() -> SecurityEvent {
        let mut e = SecurityEvent::stamped(
            "gw-1",
            EventType::SetpointChanged,
            Timestamp::from_micros(1_796_671_800_123_456),
        )
        .station("press-01");
        e.seq = 42;
        e
    }

    #[test]
    fn a_message_has_pri_version_header_sd_and_body() {
        let m = frame(
            &event(),
            "hello",
            &SyslogOptions::default(),
            &Provenance::default(),
        )
        .unwrap();
        // local0 (16) * 8 + warning (4) = 132
        assert!(m.starts_with("<132>1 2026-12-07T19:30:00.123456Z gw-1 linesentry - setpoint.changed [linesentry@32473 id=\""), "{m}");
        assert!(
            m.ends_with(
                "seq=\"42\" gateway=\"gw-1\" station=\"press-01\" chain=\"unchecked\"] hello"
            ),
            "{m}"
        );
    }

    #[test]
    fn header_fields_are_cut_to_their_limits_and_made_printable() {
        let mut e = event();
        e.gateway_id = "g w".repeat(200);
        e.event_type = format!("{}.x", "a".repeat(60));
        let m = frame(&e, "", &SyslogOptions::default(), &Provenance::default()).unwrap();
        let fields: Vec<&str> = m.splitn(7, ' ').collect();
        assert_eq!(fields[2].len(), HOSTNAME_MAX);
        assert!(fields[2].starts_with("g_wg_w"));
        assert_eq!(fields[5].len(), MSGID_MAX);
        assert!(m.ends_with(']'), "no body, no trailing space: {m}");
    }

    #[test]
    fn empty_hostname_is_the_nilvalue() {
        let mut e = event();
        e.gateway_id = String::new();
        let m = frame(&e, "b", &SyslogOptions::default(), &Provenance::default()).unwrap();
        assert_eq!(m.split(' ').nth(2), Some("-"));
    }

    #[test]
    fn sd_values_escape_quote_backslash_and_bracket() {
        let mut o = String::new();
        push_param_value(&mut o, "a\"b\\c]d\ne");
        assert_eq!(o, "a\\\"b\\\\c\\]d\u{FFFD}e");
    }

    #[test]
    fn bad_settings_are_refused_with_the_setting_named() {
        for (opts, field) in [
            (
                SyslogOptions {
                    facility: 24,
                    ..Default::default()
                },
                "facility",
            ),
            (
                SyslogOptions {
                    app_name: "a b".into(),
                    ..Default::default()
                },
                "app_name",
            ),
            (
                SyslogOptions {
                    app_name: "a".repeat(49),
                    ..Default::default()
                },
                "app_name",
            ),
            (
                SyslogOptions {
                    procid: Some("p".repeat(129)),
                    ..Default::default()
                },
                "procid",
            ),
            (
                SyslogOptions {
                    max_message: 100,
                    ..Default::default()
                },
                "max_message",
            ),
        ] {
            let err = frame(&event(), "b", &opts, &Provenance::default()).unwrap_err();
            assert!(
                matches!(err, EncodeError::SyslogSetting { field: f, .. } if f == field),
                "{err}"
            );
        }
    }

    #[test]
    fn an_oversized_body_is_cut_to_the_limit_and_marked_while_header_and_sd_stay_whole() {
        let opts = SyslogOptions {
            max_message: 600,
            ..Default::default()
        };
        let body = format!("CEF:0|x|{}", "é".repeat(1000));
        let m = frame(&event(), &body, &opts, &Provenance::default()).unwrap();
        assert!(m.len() <= 600 && m.len() >= 598, "{}", m.len());
        assert!(
            m.contains(&format!(" truncated=\"{}\"]", body.len())),
            "{m}"
        );
        assert!(m.contains("station=\"press-01\""));
        let short = frame(&event(), "short", &opts, &Provenance::default()).unwrap();
        assert!(!short.contains("truncated"));
    }

    #[test]
    fn a_configured_bom_opens_the_body_and_counts_against_the_limit() {
        let opts = SyslogOptions {
            bom: true,
            max_message: 600,
            ..Default::default()
        };
        let m = frame(&event(), "body", &opts, &Provenance::default()).unwrap();
        assert!(m.ends_with("] \u{FEFF}body"), "{m}");
        let long = "x".repeat(2000);
        let m = frame(&event(), &long, &opts, &Provenance::default()).unwrap();
        assert_eq!(m.len(), 600);
        assert!(m.contains("] \u{FEFF}x"));
    }

    #[test]
    fn a_cut_never_leaves_half_an_escape() {
        assert_eq!(cut_body(r"ab\\cd", 3), "ab");
        assert_eq!(cut_body(r"ab\\cd", 4), r"ab\\");
        assert_eq!(cut_body("aé", 2), "a");
    }

    #[test]
    fn a_header_too_long_for_the_limit_is_an_error() {
        let mut e = event();
        e.station_id = Some("s".repeat(600));
        let opts = SyslogOptions {
            max_message: 500,
            ..Default::default()
        };
        let err = frame(&e, "body", &opts, &Provenance::default()).unwrap_err();
        assert!(
            matches!(err, EncodeError::HeaderOverLimit { limit: 500, .. }),
            "{err}"
        );
    }

    #[test]
    fn octet_counting_counts_bytes_and_lf_framing_refuses_line_feeds() {
        assert_eq!(octet_counted("<1>1 é"), "7 <1>1 é");
        assert_eq!(lf_framed("a").unwrap(), "a\n");
        assert_eq!(lf_framed("a\nb"), Err(EncodeError::LineFeedInMessage));
    }
}
