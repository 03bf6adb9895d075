//! Modbus diagnostic counters: FC 08 (Diagnostics, the counter sub-functions 0x0B-0x0F) and
//! FC 11 (Get Comm Event Counter). Pure: the requests, the decoding of their answers and
//! the schedule, tested without a device.
//!
//! A device counts what it serves; an attacker who wants to hide a scan or a burst of writes
//! clears the counters (FC 08 sub-function 0x0A, or a restart). The poller reads the
//! counters a profile's `[diagnostics]` lists every `every_s` seconds and hands each one to
//! the rules as a reading named `_modbus.diag.<counter>` ([`DiagCounter::tag`]); the rules
//! raise `diag.counters_reset` when they go back while the link stayed up.
//!
//! tokio-modbus 0.17 has no types for either function, so both travel as
//! [`Request::Custom`] / [`Response::Custom`]. FC 08 echoes the sub-function and carries
//! one data word; FC 11 answers a status word (0xFFFF: busy with a previous command) and the
//! event count.

use std::borrow::Cow;
use std::time::Duration;

use serde::Deserialize;
use tokio::time::Instant;
use tokio_modbus::{Request, Response};

/// Function code of Diagnostics.
pub const FC_DIAGNOSTICS: u8 = 0x08;
/// Function code of Get Comm Event Counter.
pub const FC_COMM_EVENT_COUNTER: u8 = 0x0B;
/// FC 08 sub-function: clear counters and diagnostic register.
pub const SUB_CLEAR_COUNTERS: u16 = 0x0A;
/// FC 08 sub-function: return query data (loopback).
pub const SUB_RETURN_QUERY_DATA: u16 = 0x00;
/// Prefix of the readings of diagnostic counters.
pub const TAG_PREFIX: &str = crate::reading::reserved::MODBUS_DIAG_PREFIX;

/// One diagnostic counter a device may keep. The names are the profile's vocabulary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DiagCounter {
    /// FC 11: successful message completions (not exceptions, not FC 11 itself).
    CommEventCount,
    /// FC 08 / 0x0B: messages the device saw on the bus.
    BusMessageCount,
    /// FC 08 / 0x0C: frames with a CRC (or framing) error.
    BusCommErrorCount,
    /// FC 08 / 0x0D: exception responses the device returned.
    BusExceptionErrorCount,
    /// FC 08 / 0x0E: messages addressed to the device.
    ServerMessageCount,
    /// FC 08 / 0x0F: messages addressed to the device it did not answer.
    ServerNoResponseCount,
}

impl DiagCounter {
    /// Every counter, in the order they are read.
    pub const ALL: [DiagCounter; 6] = [
        DiagCounter::CommEventCount,
        DiagCounter::BusMessageCount,
        DiagCounter::BusCommErrorCount,
        DiagCounter::BusExceptionErrorCount,
        DiagCounter::ServerMessageCount,
        DiagCounter::ServerNoResponseCount,
    ];

    /// The profile name (`bus_message_count`).
    pub fn name(self) -> &'static str {
        match self {
            DiagCounter::CommEventCount => "comm_event_count",
            DiagCounter::BusMessageCount => "bus_message_count",
            DiagCounter::BusCommErrorCount => "bus_comm_error_count",
            DiagCounter::BusExceptionErrorCount => "bus_exception_error_count",
            DiagCounter::ServerMessageCount => "server_message_count",
            DiagCounter::ServerNoResponseCount => "server_no_response_count",
        }
    }

    /// The reserved reading name (`_modbus.diag.bus_message_count`).
    pub fn tag(self) -> &'static str {
        match self {
            DiagCounter::CommEventCount => "_modbus.diag.comm_event_count",
            DiagCounter::BusMessageCount => "_modbus.diag.bus_message_count",
            DiagCounter::BusCommErrorCount => "_modbus.diag.bus_comm_error_count",
            DiagCounter::BusExceptionErrorCount => "_modbus.diag.bus_exception_error_count",
            DiagCounter::ServerMessageCount => "_modbus.diag.server_message_count",
            DiagCounter::ServerNoResponseCount => "_modbus.diag.server_no_response_count",
        }
    }

    /// The FC 08 sub-function, `None` for the FC 11 counter.
    pub fn sub_function(self) -> Option<u16> {
        match self {
            DiagCounter::CommEventCount => None,
            DiagCounter::BusMessageCount => Some(0x0B),
            DiagCounter::BusCommErrorCount => Some(0x0C),
            DiagCounter::BusExceptionErrorCount => Some(0x0D),
            DiagCounter::ServerMessageCount => Some(0x0E),
            DiagCounter::ServerNoResponseCount => Some(0x0F),
        }
    }

    /// The function code that reads it.
    pub fn function(self) -> u8 {
        if self.sub_function().is_some() {
            FC_DIAGNOSTICS
        } else {
            FC_COMM_EVENT_COUNTER
        }
    }

    /// `FC 08/0x0B (bus_message_count)`, for error messages.
    pub fn describe(self) -> String {
        match self.sub_function() {
            Some(sub) => format!("diagnostic counter FC 08/{sub:#04x} ({})", self.name()),
            None => format!("comm event counter FC 11 ({})", self.name()),
        }
    }

    /// The request that reads it.
    pub fn request(self) -> Request<'static> {
        match self.sub_function() {
            Some(sub) => diagnostics_request(sub, 0),
            None => Request::Custom(FC_COMM_EVENT_COUNTER, Cow::Borrowed(&[])),
        }
    }

    /// The counter in `response`, or why the response is not an answer to [`Self::request`].
    pub fn decode(self, response: &Response) -> Result<u16, String> {
        match self.sub_function() {
            Some(sub) => decode_diagnostics(sub, response),
            None => decode_comm_event_counter(response).map(|c| c.event_count),
        }
    }
}

/// An FC 08 request: sub-function and one data word.
pub fn diagnostics_request(sub_function: u16, data: u16) -> Request<'static> {
    let [s0, s1] = sub_function.to_be_bytes();
    let [d0, d1] = data.to_be_bytes();
    Request::Custom(FC_DIAGNOSTICS, Cow::Owned(vec![s0, s1, d0, d1]))
}

/// The data word of an FC 08 answer to `sub_function`.
pub fn decode_diagnostics(sub_function: u16, response: &Response) -> Result<u16, String> {
    let data = custom_data(FC_DIAGNOSTICS, response)?;
    let [s0, s1, d0, d1] = data else {
        return Err(format!(
            "FC 08 answer of {} data bytes, expected 4 (sub-function, counter)",
            data.len()
        ));
    };
    let echoed = u16::from_be_bytes([*s0, *s1]);
    if echoed != sub_function {
        return Err(format!(
            "FC 08 answer for sub-function {echoed:#06x}, asked {sub_function:#06x}"
        ));
    }
    Ok(u16::from_be_bytes([*d0, *d1]))
}

/// An FC 11 answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommEventCounter {
    /// 0xFFFF while the device is still busy with a previous program command, else 0.
    pub status: u16,
    pub event_count: u16,
}

/// The status word and event count of an FC 11 answer.
pub fn decode_comm_event_counter(response: &Response) -> Result<CommEventCounter, String> {
    let data = custom_data(FC_COMM_EVENT_COUNTER, response)?;
    let [s0, s1, c0, c1] = data else {
        return Err(format!(
            "FC 11 answer of {} data bytes, expected 4 (status, event count)",
            data.len()
        ));
    };
    let status = u16::from_be_bytes([*s0, *s1]);
    if status != 0 && status != 0xFFFF {
        return Err(format!(
            "FC 11 status word {status:#06x}, expected 0x0000 or 0xffff"
        ));
    }
    Ok(CommEventCounter {
        status,
        event_count: u16::from_be_bytes([*c0, *c1]),
    })
}

fn custom_data(function: u8, response: &Response) -> Result<&[u8], String> {
    match response {
        Response::Custom(code, data) if *code == function => Ok(data),
        other => Err(format!(
            "the response is of the wrong kind: function {}, expected {function}",
            other.function_code().value()
        )),
    }
}

/// Which counters a station reads and how often: the validated `[diagnostics]` of its
/// profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiagnosticsConfig {
    /// In [`DiagCounter::ALL`] order, no duplicates, not empty.
    pub counters: Vec<DiagCounter>,
    /// Time between two reads.
    pub every: Duration,
}

/// When to read the counters, and which function codes the device turned down. Pure.
#[derive(Debug, Clone)]
pub(crate) struct DiagSchedule {
    config: DiagnosticsConfig,
    next: Option<Instant>,
    /// Function codes answered with exception 01 (illegal function): never asked again.
    refused: Vec<u8>,
}

impl DiagSchedule {
    pub(crate) fn new(config: DiagnosticsConfig) -> Self {
        DiagSchedule {
            config,
            next: None,
            refused: Vec::new(),
        }
    }

    /// The counters to read now, if a read is due at `now`; the next read is then
    /// scheduled. Empty once the device refused every function the counters need.
    pub(crate) fn due(&mut self, now: Instant) -> Vec<DiagCounter> {
        if self.next.is_some_and(|next| now < next) {
            return Vec::new();
        }
        let counters: Vec<DiagCounter> = self
            .config
            .counters
            .iter()
            .copied()
            .filter(|c| !self.refused.contains(&c.function()))
            .collect();
        if !counters.is_empty() {
            self.next = Some(now + self.config.every);
        }
        counters
    }

    /// The device answered `function` with exception 01. Returns true the first time, so
    /// the caller logs and counts it once.
    pub(crate) fn refuse(&mut self, function: u8) -> bool {
        if self.refused.contains(&function) {
            return false;
        }
        self.refused.push(function);
        true
    }

    pub(crate) fn is_refused(&self, function: u8) -> bool {
        self.refused.contains(&function)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_modbus::bytes::Bytes;

    fn custom(function: u8, data: &'static [u8]) -> Response {
        Response::Custom(function, Bytes::from_static(data))
    }

    #[test]
    fn each_counter_is_asked_with_its_function_and_sub_function() {
        assert_eq!(
            DiagCounter::BusMessageCount.request(),
            Request::Custom(0x08, Cow::Borrowed(&[0x00, 0x0B, 0x00, 0x00]))
        );
        assert_eq!(
            DiagCounter::ServerNoResponseCount.request(),
            Request::Custom(0x08, Cow::Borrowed(&[0x00, 0x0F, 0x00, 0x00]))
        );
        assert_eq!(
            DiagCounter::CommEventCount.request(),
            Request::Custom(0x0B, Cow::Borrowed(&[]))
        );
        assert_eq!(
            diagnostics_request(SUB_CLEAR_COUNTERS, 0),
            Request::Custom(0x08, Cow::Borrowed(&[0x00, 0x0A, 0x00, 0x00]))
        );
    }

    #[test]
    fn an_fc08_answer_gives_its_counter_when_it_echoes_the_sub_function() {
        let answer = custom(0x08, &[0x00, 0x0E, 0x12, 0x34]);
        assert_eq!(DiagCounter::ServerMessageCount.decode(&answer), Ok(0x1234));
        let error = DiagCounter::BusMessageCount.decode(&answer).unwrap_err();
        assert!(
            error.contains("0x000e") && error.contains("0x000b"),
            "{error}"
        );
    }

    #[test]
    fn an_fc08_answer_of_the_wrong_length_or_function_is_refused() {
        let short = custom(0x08, &[0x00, 0x0B, 0x12]);
        assert!(DiagCounter::BusMessageCount
            .decode(&short)
            .unwrap_err()
            .contains("3 data bytes"));
        let long = custom(0x08, &[0x00, 0x0B, 0x12, 0x34, 0x56]);
        assert!(DiagCounter::BusMessageCount.decode(&long).is_err());
        let wrong = Response::ReadHoldingRegisters(vec![1, 2]);
        let error = DiagCounter::BusMessageCount.decode(&wrong).unwrap_err();
        assert!(error.contains("function 3"), "{error}");
    }

    #[test]
    fn an_fc11_answer_gives_status_and_event_count() {
        let idle = custom(0x0B, &[0x00, 0x00, 0x01, 0x08]);
        assert_eq!(
            decode_comm_event_counter(&idle),
            Ok(CommEventCounter {
                status: 0,
                event_count: 264
            })
        );
        assert_eq!(DiagCounter::CommEventCount.decode(&idle), Ok(264));
        let busy = custom(0x0B, &[0xFF, 0xFF, 0x00, 0x02]);
        assert_eq!(
            decode_comm_event_counter(&busy).map(|c| c.status),
            Ok(0xFFFF)
        );
        let odd = custom(0x0B, &[0x12, 0x00, 0x00, 0x02]);
        assert!(decode_comm_event_counter(&odd)
            .unwrap_err()
            .contains("status word"));
        let short = custom(0x0B, &[0x00, 0x00]);
        assert!(decode_comm_event_counter(&short).is_err());
    }

    fn schedule(counters: &[DiagCounter]) -> DiagSchedule {
        DiagSchedule::new(DiagnosticsConfig {
            counters: counters.to_vec(),
            every: Duration::from_secs(60),
        })
    }

    #[test]
    fn counters_are_read_at_once_and_then_every_interval() {
        let mut s = schedule(&[DiagCounter::CommEventCount, DiagCounter::BusMessageCount]);
        let t0 = Instant::now();
        assert_eq!(s.due(t0).len(), 2);
        assert!(s.due(t0 + Duration::from_secs(59)).is_empty());
        assert_eq!(s.due(t0 + Duration::from_secs(60)).len(), 2);
        assert!(s.due(t0 + Duration::from_secs(61)).is_empty());
    }

    #[test]
    fn a_refused_function_is_left_out_for_good_and_reported_once() {
        let mut s = schedule(&[
            DiagCounter::CommEventCount,
            DiagCounter::BusMessageCount,
            DiagCounter::ServerMessageCount,
        ]);
        let t0 = Instant::now();
        assert!(s.refuse(FC_DIAGNOSTICS));
        assert!(!s.refuse(FC_DIAGNOSTICS), "only the first refusal is news");
        assert!(s.is_refused(FC_DIAGNOSTICS));
        assert_eq!(s.due(t0), [DiagCounter::CommEventCount]);
        assert!(s.refuse(FC_COMM_EVENT_COUNTER));
        for minute in 1..10 {
            assert!(s.due(t0 + Duration::from_secs(60 * minute)).is_empty());
        }
    }
}
