//! Prometheus text exposition format 0.0.4: the one writer every metric family goes through.
//!
//! A family's `# HELP` and `# TYPE` lines are written once, just before its first sample, so
//! a family without samples (no station registered yet) leaves no trace. Every sample of a
//! family must follow its header without another family in between; callers write one family
//! at a time.

use std::fmt::Write as _;

/// The content type of the text format, as Prometheus asks for it.
pub(super) const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// A sample value: counters stay integers (an `f64` loses them above 2^53).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Num {
    Int(u64),
    Float(f64),
}

impl From<u64> for Num {
    fn from(v: u64) -> Self {
        Num::Int(v)
    }
}

impl From<f64> for Num {
    fn from(v: f64) -> Self {
        Num::Float(v)
    }
}

/// The text of one scrape, built family by family.
#[derive(Debug, Default)]
pub(super) struct Exposition {
    out: String,
    /// The header of the current family, until its first sample writes it.
    pending: Option<(String, Kind, &'static str)>,
}

impl Exposition {
    pub(super) fn new() -> Self {
        Self::default()
    }

    /// Starts the family `name`; its header is written with its first sample.
    pub(super) fn family(&mut self, name: &str, kind: Kind, help: &'static str) {
        self.pending = Some((name.to_owned(), kind, help));
    }

    /// One sample line: `name{label="value",...} value`.
    pub(super) fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl Into<Num>) {
        if let Some((family, kind, help)) = self.pending.take() {
            let _ = writeln!(self.out, "# HELP {family} {}", escape_help(help));
            let _ = writeln!(self.out, "# TYPE {family} {}", kind.as_str());
        }
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (label, value)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{label}=\"{}\"", escape_label_value(value));
            }
            self.out.push('}');
        }
        self.out.push(' ');
        match value.into() {
            Num::Int(v) => {
                let _ = write!(self.out, "{v}");
            }
            Num::Float(v) => self.out.push_str(&float(v)),
        }
        self.out.push('\n');
    }

    pub(super) fn finish(self) -> String {
        self.out
    }
}

/// A float as the format spells it: `+Inf`, `-Inf`, `NaN`, otherwise the shortest decimal
/// that reads back as the same value (never an exponent).
pub(super) fn float(v: f64) -> String {
    if v.is_nan() {
        "NaN".to_owned()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.to_owned()
    } else {
        format!("{v}")
    }
}

/// Label values escape `\`, `"` and line feeds.
fn escape_label_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// HELP text escapes `\` and line feeds (quotes stay as they are).
fn escape_help(help: &str) -> String {
    help.replace('\\', "\\\\").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_family_header_comes_once_before_its_first_sample_and_not_at_all_without_samples() {
        let mut exp = Exposition::new();
        exp.family("x_total", Kind::Counter, "Xs.");
        exp.sample("x_total", &[("a", "1")], 3u64);
        exp.sample("x_total", &[("a", "2")], 4u64);
        exp.family("empty", Kind::Gauge, "Never sampled.");
        exp.family("y", Kind::Gauge, "A y.");
        exp.sample("y", &[], 0.25);
        assert_eq!(
            exp.finish(),
            "# HELP x_total Xs.\n# TYPE x_total counter\nx_total{a=\"1\"} 3\nx_total{a=\"2\"} 4\n\
             # HELP y A y.\n# TYPE y gauge\ny 0.25\n"
        );
    }

    #[test]
    fn label_values_escape_backslash_quote_and_line_feed_and_nothing_else() {
        let mut exp = Exposition::new();
        exp.family("m", Kind::Gauge, "back\\slash and\nnewline \"quoted\"");
        exp.sample("m", &[("station", "a\\b\"c\nd'e{f}")], 1u64);
        assert_eq!(
            exp.finish(),
            "# HELP m back\\\\slash and\\nnewline \"quoted\"\n# TYPE m gauge\n\
             m{station=\"a\\\\b\\\"c\\nd'e{f}\"} 1\n"
        );
    }

    #[test]
    fn floats_are_written_without_exponents_and_specials_as_the_format_names_them() {
        assert_eq!(float(0.001), "0.001");
        assert_eq!(float(2.5), "2.5");
        assert_eq!(float(1.0), "1");
        assert_eq!(float(1e-7), "0.0000001");
        assert_eq!(float(f64::INFINITY), "+Inf");
        assert_eq!(float(f64::NEG_INFINITY), "-Inf");
        assert_eq!(float(f64::NAN), "NaN");
    }
}
