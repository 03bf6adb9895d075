//! Key paths (`stations[2].identity.kind`) and the lines they sit on.
//!
//! Values are deserialised from `toml::Value`, which carries no positions, so a line is found
//! afterwards by walking the key path through a `toml_edit::Document` of the same text. A key
//! that is missing resolves to the deepest part of the path that exists (usually the table
//! header), which is where the user has to add it.

use toml_edit::{Array, ArrayOfTables, Document, InlineTable, Item, Table, Value};

/// `base.key`, quoting `key` when it is not a bare TOML key.
pub fn child(base: &str, key: &str) -> String {
    let is_bare = !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    let key = if is_bare {
        key.to_owned()
    } else {
        let escaped = key.replace('\\', "\\\\").replace('"', "\\\"");
        format!("\"{escaped}\"")
    };
    if base.is_empty() {
        key
    } else {
        format!("{base}.{key}")
    }
}

/// `base[index]`.
pub fn item(base: &str, index: usize) -> String {
    format!("{base}[{index}]")
}

#[derive(Debug, PartialEq, Eq)]
enum Segment {
    Key(String),
    Index(usize),
}

/// Splits a key path built by [`child`] and [`item`] back into segments.
fn segments(path: &str) -> Vec<Segment> {
    let mut out = Vec::new();
    let mut chars = path.chars().peekable();
    while let Some(&c) = chars.peek() {
        match c {
            '.' => {
                chars.next();
            }
            '[' => {
                chars.next();
                let digits: String = chars.by_ref().take_while(|&c| c != ']').collect();
                match digits.parse() {
                    Ok(index) => out.push(Segment::Index(index)),
                    Err(_) => return out,
                }
            }
            '"' => {
                chars.next();
                let mut key = String::new();
                while let Some(c) = chars.next() {
                    match c {
                        '\\' => key.extend(chars.next()),
                        '"' => break,
                        c => key.push(c),
                    }
                }
                out.push(Segment::Key(key));
            }
            _ => {
                let mut key = String::new();
                while let Some(&c) = chars.peek() {
                    if c == '.' || c == '[' {
                        break;
                    }
                    key.push(c);
                    chars.next();
                }
                out.push(Segment::Key(key));
            }
        }
    }
    out
}

/// The TOML text of one file, parsed once for line look-ups.
#[derive(Debug)]
pub struct Spans<'a> {
    text: &'a str,
    doc: Option<Document<&'a str>>,
}

enum Node<'d> {
    Table(&'d Table),
    Inline(&'d InlineTable),
    Tables(&'d ArrayOfTables),
    Array(&'d Array),
    Leaf,
}

impl<'d> Node<'d> {
    fn of_item(item: &'d Item) -> Self {
        match item {
            Item::Table(t) => Node::Table(t),
            Item::ArrayOfTables(a) => Node::Tables(a),
            Item::Value(v) => Node::of_value(v),
            Item::None => Node::Leaf,
        }
    }

    fn of_value(value: &'d Value) -> Self {
        match value {
            Value::InlineTable(t) => Node::Inline(t),
            Value::Array(a) => Node::Array(a),
            _ => Node::Leaf,
        }
    }

    /// The child at `segment` and the byte span to report for it.
    fn step(&self, segment: &Segment) -> Option<(Option<std::ops::Range<usize>>, Node<'d>)> {
        match (self, segment) {
            (Node::Table(t), Segment::Key(k)) => t
                .get_key_value(k)
                .map(|(key, item)| (key.span(), Node::of_item(item))),
            (Node::Inline(t), Segment::Key(k)) => t
                .get_key_value(k)
                .map(|(key, item)| (key.span(), Node::of_item(item))),
            (Node::Tables(a), Segment::Index(i)) => a.get(*i).map(|t| (t.span(), Node::Table(t))),
            (Node::Array(a), Segment::Index(i)) => a.get(*i).map(|v| (v.span(), Node::of_value(v))),
            _ => None,
        }
    }
}

impl<'a> Spans<'a> {
    /// Parses `text`; a text that does not parse yields no lines (the syntax error has its own).
    pub fn new(text: &'a str) -> Self {
        Self {
            text,
            doc: Document::parse(text).ok(),
        }
    }

    /// 1-based line of `key_path`, or of the deepest existing part of it.
    pub fn line(&self, key_path: &str) -> Option<usize> {
        let doc = self.doc.as_ref()?;
        let mut node = Node::Table(doc.as_table());
        let mut best = None;
        for segment in segments(key_path) {
            let Some((span, next)) = node.step(&segment) else {
                break;
            };
            // Implicit tables (`forward` in `[forward.mqtt]`) carry an empty span.
            if let Some(span) = span.filter(|s| !s.is_empty()) {
                best = Some(span.start);
            }
            node = next;
        }
        best.map(|offset| line_at(self.text, offset))
    }
}

/// 1-based line of byte `offset` in `text`.
pub fn line_at(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end].split(|&b| b == b'\n').count()
}

/// 1-based line of `key_path` in the TOML `source` (see [`Spans::line`]; a loader keeps
/// one parsed [`Spans`] per file instead of calling this for every error).
pub fn line_of(source: &str, key_path: &str) -> Option<usize> {
    Spans::new(source).line(key_path)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = r#"# agent
[agent]
gateway_id = "gw"

[severity]
"setpoint.changed" = "error"

[[stations]]
id = "a"

[[stations]]
id = "b"
identity = { kind = "username",
  user = "op" }
states = [1, 2,
  3]

[forward.mqtt]
host = "broker"
"#;

    #[test]
    fn key_paths_resolve_to_the_line_of_their_key() {
        assert_eq!(line_of(DOC, "agent.gateway_id"), Some(3));
        assert_eq!(line_of(DOC, "stations[1].id"), Some(12));
        assert_eq!(line_of(DOC, "stations[1].identity.user"), Some(14));
        assert_eq!(line_of(DOC, "stations[1].states[2]"), Some(16));
        assert_eq!(line_of(DOC, "severity.\"setpoint.changed\""), Some(6));
        assert_eq!(line_of(DOC, "forward.mqtt.host"), Some(19));
    }

    #[test]
    fn a_missing_key_resolves_to_its_nearest_existing_table() {
        assert_eq!(line_of(DOC, "agent.site"), Some(2));
        assert_eq!(line_of(DOC, "stations[0].profile"), Some(8));
        assert_eq!(line_of(DOC, "forward.mqtt.port"), Some(18));
        assert_eq!(line_of(DOC, "buffer.quota_mib"), None);
    }

    #[test]
    fn unparsable_text_has_no_lines() {
        assert_eq!(line_of("[agent\n", "agent"), None);
    }

    #[test]
    fn built_paths_split_back_into_their_segments() {
        let path = item(&child(&child("", "severity"), "a.b\"c"), 3);
        assert_eq!(path, r#"severity."a.b\"c"[3]"#);
        assert_eq!(
            segments(&path),
            vec![
                Segment::Key("severity".into()),
                Segment::Key("a.b\"c".into()),
                Segment::Index(3)
            ]
        );
    }
}
