//! A sink that writes events to stdout: JSON lines for pipes, or one readable line per event.

use std::io::Write;

use super::{SendFuture, Sink, SinkError};
use linesentry_event::SecurityEvent;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsoleFormat {
    Json,
    Text,
}

#[derive(Debug)]
pub struct ConsoleSink {
    format: ConsoleFormat,
}

impl ConsoleSink {
    pub fn new(format: ConsoleFormat) -> Self {
        Self { format }
    }

    /// One line for one event.
    pub fn line(&self, e: &SecurityEvent) -> String {
        match self.format {
            ConsoleFormat::Json => e.to_json(),
            ConsoleFormat::Text => {
                let data = serde_json::Value::Object(e.event_data.clone());
                format!(
                    "{ts} #{seq:<6} {sev:<8} {kind:<24} {station:<12} {data}",
                    ts = e.timestamp,
                    seq = e.seq,
                    sev = e.severity.as_str(),
                    kind = e.event_type,
                    station = e.station_id.as_deref().unwrap_or("-"),
                )
            }
        }
    }
}

impl Sink for ConsoleSink {
    fn name(&self) -> &'static str {
        "console"
    }

    fn send<'a>(&'a mut self, batch: &'a [SecurityEvent]) -> SendFuture<'a> {
        let mut text = String::new();
        for e in batch {
            text.push_str(&self.line(e));
            text.push('\n');
        }
        let result = {
            let mut out = std::io::stdout().lock();
            out.write_all(text.as_bytes())
                .and_then(|()| out.flush())
                .map_err(|e| SinkError::transient("console", e.to_string()))
        };
        Box::pin(async move { result })
    }
}
