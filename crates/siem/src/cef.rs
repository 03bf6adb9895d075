//! CEF:0, as ArcSight, Sentinel (CommonSecurityLog) and most SIEMs parse it:
//!
//! `CEF:0|linesentry|linesentry|<version>|<class id>|<title>|<severity 0-10>|<extension>`
//!
//! Escaping (CEF Implementation Standard): in header fields `\` -> `\\` and `|` -> `\|`,
//! CR and LF become a space (the standard allows line breaks only in extension values); in
//! extension values `\` -> `\\`, `=` -> `\=`, CR -> `\r`, LF -> `\n` (pipes need no
//! escape there). Any other control character (NUL, ESC, TAB, ...) becomes U+FFFD in both
//! places: CEF has no escape for it. Non-ASCII text stays UTF-8.
//!
//! Extension keys, in this order (optional ones only when the event has the value):
//! `rt` and `end` (event time, ms since the epoch), `externalId` (event id), `cat` (family),
//! `act` (event_type), `dvchost` (gateway), `cs1` attack, `cs2` gateway, `cs3` station,
//! `cs4` chain, `cs5` prev_hash, `cs6` correlation_id (each with its `csNLabel`), `cn1`
//! seq (`cn1Label=seq`), `flexString1` batch signature as `key_id:signature`
//! (`flexString1Label=signature`), `suid` user, `src` source IP, `msg` event_data as
//! compact JSON.

use std::fmt::Write as _;

use crate::model::{data_json, replace_controls, Described, Exporter, Provenance, PRODUCT, VENDOR};
use crate::severity;
use linesentry_event::SecurityEvent;

/// One CEF:0 line for `event` (no trailing newline; framing adds it).
pub fn encode(event: &SecurityEvent, exporter: &Exporter, provenance: &Provenance) -> String {
    let d = Described::new(event);
    let mut out = String::with_capacity(512);
    out.push_str("CEF:0|");
    for field in [
        VENDOR,
        PRODUCT,
        exporter.product_version.as_str(),
        &d.class_id.to_string(),
        d.title,
    ] {
        push_header(&mut out, field);
        out.push('|');
    }
    let _ = write!(out, "{}|", severity::cef(event.severity));

    let mut ext = Ext(&mut out, true);
    let ms = d.time_ms().to_string();
    ext.pair("rt", &ms);
    ext.pair("end", &ms);
    ext.pair("externalId", &event.id.to_string());
    ext.pair("cat", d.family.as_str());
    ext.pair("act", &event.event_type);
    ext.pair("dvchost", &event.gateway_id);
    ext.labelled("cs1", "attack", &d.attack.join(","));
    ext.labelled("cs2", "gateway", &event.gateway_id);
    if let Some(station) = &event.station_id {
        ext.labelled("cs3", "station", station);
    }
    ext.labelled("cs4", "chain", provenance.chain.as_str());
    if let Some(prev) = &event.prev_hash {
        ext.labelled("cs5", "prev_hash", prev);
    }
    if let Some(corr) = event.correlation_id {
        ext.labelled("cs6", "correlation_id", &corr.to_string());
    }
    ext.labelled("cn1", "seq", &event.seq.to_string());
    if let Some(sig) = &provenance.signature {
        ext.labelled(
            "flexString1",
            "signature",
            &format!("{}:{}", sig.key_id, sig.signature),
        );
    }
    if let Some(user) = &event.user_id {
        ext.pair("suid", user);
    }
    if let Some(ip) = event.source_ip {
        ext.pair("src", &ip.to_string());
    }
    ext.pair("msg", &data_json(event));
    out
}

/// Extension writer: `key=value` pairs separated by single spaces.
struct Ext<'a>(&'a mut String, bool);

impl Ext<'_> {
    fn pair(&mut self, key: &str, value: &str) {
        if !self.1 {
            self.0.push(' ');
        }
        self.1 = false;
        self.0.push_str(key);
        self.0.push('=');
        push_value(self.0, value);
    }

    fn labelled(&mut self, key: &str, label: &str, value: &str) {
        self.pair(&format!("{key}Label"), label);
        self.pair(key, value);
    }
}

/// Appends a header field, escaped.
pub fn push_header(out: &mut String, text: &str) {
    for c in replace_controls(text, |c| c == '\r' || c == '\n').chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '|' => out.push_str("\\|"),
            '\r' | '\n' => out.push(' '),
            c => out.push(c),
        }
    }
}

/// Appends an extension value, escaped.
pub fn push_value(out: &mut String, text: &str) {
    for c in replace_controls(text, |c| c == '\r' || c == '\n').chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '=' => out.push_str("\\="),
            '\r' => out.push_str("\\r"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(s: &str) -> String {
        let mut o = String::new();
        push_header(&mut o, s);
        o
    }

    fn value(s: &str) -> String {
        let mut o = String::new();
        push_value(&mut o, s);
        o
    }

    #[test]
    fn header_escapes_pipe_and_backslash_and_flattens_line_breaks() {
        assert_eq!(header(r"a|b\c"), r"a\|b\\c");
        assert_eq!(header("a\r\nb"), "a  b");
        assert_eq!(header("x=y"), "x=y");
    }

    #[test]
    fn extension_values_escape_equals_backslash_and_line_breaks_but_not_pipes() {
        assert_eq!(value(r"a=b\c|d"), r"a\=b\\c|d");
        assert_eq!(value("l1\r\nl2"), r"l1\r\nl2");
        assert_eq!(value("nul\0tab\tü"), "nul\u{FFFD}tab\u{FFFD}ü");
    }
}
