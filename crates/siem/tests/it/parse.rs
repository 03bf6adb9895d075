//! Small parsers of the text formats, written from the format descriptions, to read the
//! encoders' output back: CEF header and extension, LEEF attributes, RFC 5424 header and
//! structured data.

use std::collections::BTreeMap;

/// Splits `text` at unescaped `sep`, at most `max` pieces; escapes are kept.
fn split_unescaped(text: &str, sep: char, max: usize) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut escaped = false;
    for c in text.chars() {
        if escaped {
            out.last_mut().unwrap().push(c);
            escaped = false;
        } else if c == '\\' {
            out.last_mut().unwrap().push(c);
            escaped = true;
        } else if c == sep && out.len() < max {
            out.push(String::new());
        } else {
            out.last_mut().unwrap().push(c);
        }
    }
    out
}

/// Removes backslash escapes; `\r` and `\n` become CR and LF.
fn unescape(text: &str) -> String {
    let mut out = String::new();
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some('r') => out.push('\r'),
                Some('n') => out.push('\n'),
                Some(other) => out.push(other),
                None => panic!("dangling backslash in {text:?}"),
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[derive(Debug)]
pub(crate) struct Cef {
    /// version, vendor, product, product version, class id, name, severity (unescaped)
    pub(crate) header: Vec<String>,
    pub(crate) ext: BTreeMap<String, String>,
}

impl Cef {
    /// The value of the custom field labelled `label` (`csN` / `cnN` / `flexStringN`).
    pub(crate) fn labelled(&self, label: &str) -> Option<&str> {
        let (key, _) = self
            .ext
            .iter()
            .find(|(k, v)| k.ends_with("Label") && v.as_str() == label)?;
        self.ext
            .get(key.trim_end_matches("Label"))
            .map(String::as_str)
    }
}

pub(crate) fn cef(line: &str) -> Cef {
    assert!(
        !line.contains(['\r', '\n', '\0']),
        "raw control in {line:?}"
    );
    let parts = split_unescaped(line, '|', 8);
    assert_eq!(
        parts.len(),
        8,
        "CEF needs 7 header fields and the extension: {line}"
    );
    let header = parts[..7].iter().map(|h| unescape(h)).collect();
    // Extension: keys end at unescaped `=`; a value runs to the space before the next key.
    let segs = split_unescaped(&parts[7], '=', usize::MAX);
    let mut ext = BTreeMap::new();
    let mut key = segs[0].clone();
    for (i, seg) in segs.iter().enumerate().skip(1) {
        let (value, next) = if i + 1 == segs.len() {
            (seg.as_str(), "")
        } else {
            let at = seg
                .rfind(' ')
                .unwrap_or_else(|| panic!("no key after {seg:?}"));
            (&seg[..at], &seg[at + 1..])
        };
        assert!(
            key.chars().all(|c| c.is_ascii_alphanumeric()),
            "bad key {key:?}"
        );
        assert!(
            ext.insert(key.clone(), unescape(value)).is_none(),
            "{key} twice"
        );
        next.clone_into(&mut key);
    }
    Cef { header, ext }
}

#[derive(Debug)]
pub(crate) struct Leef {
    /// LEEF:2.0, vendor, product, version, event id, delimiter
    pub(crate) header: Vec<String>,
    pub(crate) attrs: BTreeMap<String, String>,
}

pub(crate) fn leef(line: &str) -> Leef {
    assert!(
        !line.contains(['\r', '\n', '\0']),
        "raw control in {line:?}"
    );
    let parts = split_unescaped(line, '|', 7);
    assert_eq!(parts.len(), 7, "LEEF 2.0 needs 6 header fields: {line}");
    let header: Vec<String> = parts[..6].iter().map(|h| unescape(h)).collect();
    let delim = header[5].chars().next().unwrap();
    let mut attrs = BTreeMap::new();
    for pair in split_unescaped(&parts[6], delim, usize::MAX) {
        let (k, v) = pair
            .split_once('=')
            .unwrap_or_else(|| panic!("no = in {pair:?}"));
        assert!(
            attrs.insert(k.to_owned(), unescape(v)).is_none(),
            "{k} twice"
        );
    }
    Leef { header, attrs }
}

#[derive(Debug)]
pub(crate) struct Syslog {
    pub(crate) pri: u16,
    /// TIMESTAMP HOSTNAME APP-NAME PROCID MSGID
    pub(crate) fields: Vec<String>,
    pub(crate) sd_id: String,
    pub(crate) params: BTreeMap<String, String>,
    pub(crate) msg: String,
}

pub(crate) fn syslog(message: &str) -> Syslog {
    assert!(
        !message.contains(['\n', '\0']),
        "raw control in {message:?}"
    );
    let rest = message.strip_prefix('<').expect("PRI");
    let (pri, rest) = rest.split_once(">1 ").expect("VERSION 1");
    let mut it = rest.splitn(6, ' ');
    let fields: Vec<String> = (0..5).map(|_| it.next().unwrap().to_owned()).collect();
    for (f, max) in fields[1..].iter().zip([255, 48, 128, 32]) {
        assert!(
            !f.is_empty() && f.len() <= max && f.bytes().all(|b| (33..=126).contains(&b)),
            "{f:?}"
        );
    }
    let sd = it.next().unwrap();
    let sd = sd.strip_prefix('[').expect("one SD element");
    // Read the element to its unescaped `]`.
    let mut chars = sd.char_indices();
    let mut in_quotes = false;
    let mut end = None;
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' if in_quotes => {
                chars.next();
            }
            '"' => in_quotes = !in_quotes,
            ']' if !in_quotes => {
                end = Some(i);
                break;
            }
            _ => {}
        }
    }
    let end = end.expect("SD element closed");
    let element = &sd[..end];
    let msg = sd[end + 1..].strip_prefix(' ').unwrap_or("").to_owned();
    let (sd_id, mut params_text) = element.split_once(' ').unwrap();
    let mut params = BTreeMap::new();
    while !params_text.is_empty() {
        let (name, rest) = params_text.split_once("=\"").unwrap();
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let mut after = rest.len();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => value.push(chars.next().unwrap().1),
                '"' => {
                    after = i + 1;
                    break;
                }
                c => value.push(c),
            }
        }
        params.insert(name.trim().to_owned(), value);
        params_text = rest[after..].trim_start();
    }
    Syslog {
        pri: pri.parse().unwrap(),
        fields,
        sd_id: sd_id.to_owned(),
        params,
        msg,
    }
}
