//! LEEF 2.0, as IBM QRadar parses it:
//!
//! `LEEF:2.0|linesentry|linesentry|<version>|<class id>|^|key=value^key=value...`
//!
//! The attribute delimiter is `^` (LEEF 2.0's sixth header field names it), chosen because
//! it is printable, appears in no key and rarely in data.
//!
//! Escaping: header fields as CEF's (`\` -> `\\`, `|` -> `\|`, CR/LF -> space); attribute
//! values `\` -> `\\`, `^` -> `\^`, CR -> `\r`, LF -> `\n`. `=` is not escaped: a key ends
//! at the first `=` of its pair and keys never contain one. Any other control character
//! becomes U+FFFD. Non-ASCII stays UTF-8.
//!
//! `devTime` is the event time as `yyyy-MM-dd'T'HH:mm:ss.SSSZ` in UTC (e.g.
//! `2026-12-07T19:30:00.123+0000`), announced in `devTimeFormat` (Java
//! `SimpleDateFormat`, what QRadar reads). Attributes, in order: `devTime`,
//! `devTimeFormat`, `sev` (1-10), `cat` (event_type), `eventId`, `family`, `gateway`,
//! `station`, `seq`, `chain`, `prevHash`, `attack` (ids joined by `,`), `correlationId`,
//! `signature` (`key_id:signature`), `usrName`, `src`, `data` (event_data as compact
//! JSON); optional ones only when the event has the value.

use std::fmt::Write as _;

use crate::cef::push_header;
use crate::model::{data_json, replace_controls, Described, Exporter, Provenance, PRODUCT, VENDOR};
use crate::severity;
use linesentry_event::SecurityEvent;

/// The attribute delimiter.
pub const DELIMITER: char = '^';

/// `devTimeFormat`.
pub const DEV_TIME_FORMAT: &str = "yyyy-MM-dd'T'HH:mm:ss.SSSZ";

/// One LEEF 2.0 line for `event` (no trailing newline).
pub fn encode(event: &SecurityEvent, exporter: &Exporter, provenance: &Provenance) -> String {
    let d = Described::new(event);
    let mut out = String::with_capacity(512);
    out.push_str("LEEF:2.0|");
    for field in [
        VENDOR,
        PRODUCT,
        exporter.product_version.as_str(),
        &d.class_id.to_string(),
    ] {
        push_header(&mut out, field);
        out.push('|');
    }
    out.push(DELIMITER);
    out.push('|');

    let mut first = true;
    let mut attr = |key: &str, value: &str| {
        if !first {
            out.push(DELIMITER);
        }
        first = false;
        let _ = write!(out, "{key}=");
        push_value(&mut out, value);
    };
    let time = event
        .timestamp
        .to_datetime()
        .format("%Y-%m-%dT%H:%M:%S%.3f+0000")
        .to_string();
    attr("devTime", &time);
    attr("devTimeFormat", DEV_TIME_FORMAT);
    attr("sev", &severity::cef(event.severity).max(1).to_string());
    attr("cat", &event.event_type);
    attr("eventId", &event.id.to_string());
    attr("family", d.family.as_str());
    attr("gateway", &event.gateway_id);
    if let Some(station) = &event.station_id {
        attr("station", station);
    }
    attr("seq", &event.seq.to_string());
    attr("chain", provenance.chain.as_str());
    if let Some(prev) = &event.prev_hash {
        attr("prevHash", prev);
    }
    if !d.attack.is_empty() {
        attr("attack", &d.attack.join(","));
    }
    if let Some(corr) = event.correlation_id {
        attr("correlationId", &corr.to_string());
    }
    if let Some(sig) = &provenance.signature {
        attr("signature", &format!("{}:{}", sig.key_id, sig.signature));
    }
    if let Some(user) = &event.user_id {
        attr("usrName", user);
    }
    if let Some(ip) = event.source_ip {
        attr("src", &ip.to_string());
    }
    attr("data", &data_json(event));
    out
}

/// Appends an attribute value, escaped.
pub fn push_value(out: &mut String, text: &str) {
    for c in replace_controls(text, |c| c == '\r' || c == '\n').chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            DELIMITER => out.push_str("\\^"),
            '\r' => out.push_str("\\r"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_escape_the_delimiter_backslash_and_line_breaks_and_keep_equals() {
        let mut o = String::new();
        push_value(&mut o, "a^b\\c=d\ne\0");
        assert_eq!(o, "a\\^b\\\\c=d\\ne\u{FFFD}");
    }
}
