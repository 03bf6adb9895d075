//! The Modbus simulator's diagnostic counters, answered over FC 08 (Diagnostics) and FC 11
//! (Get Comm Event Counter). Pure: [`DiagCounters::record`] counts what the front end
//! served, [`DiagCounters::answer`] answers the two functions.
//!
//! What each counter counts, on this TCP device (the serial-line meanings carried over):
//!
//! | FC 08 sub-function | counter | counts |
//! |---|---|---|
//! | 0x0B | bus message count | every request received |
//! | 0x0C | bus communication error count | 0: TCP frames that do not parse never reach the service |
//! | 0x0D | bus exception error count | exception responses sent |
//! | 0x0E | server message count | every request received (every request is for this unit) |
//! | 0x0F | server no response count | requests left unanswered (link `silent`) |
//! | FC 11 | comm event count | requests answered without an exception, FC 11 itself excluded |
//!
//! A request is counted when it arrives, so a counter read includes the request that reads
//! it. FC 08 sub-function 0x0A (clear counters and diagnostic register) and the `diag_clear`
//! scenario action set every counter to 0, as an attacker covering a scan would; 0x00
//! (return query data) echoes its data. Other sub-functions are exception 01, a data field
//! other than 0x0000 (or a request of the wrong length) exception 03. All counters are
//! 16 bits and wrap.

use tokio_modbus::bytes::Bytes;
use tokio_modbus::{ExceptionCode, Request, Response};

use linesentry_agent::source::modbus::diag::{
    FC_COMM_EVENT_COUNTER, FC_DIAGNOSTICS, SUB_CLEAR_COUNTERS, SUB_RETURN_QUERY_DATA,
};

/// How a request was served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Served {
    Answered,
    Exception,
    NoResponse,
}

/// A Modbus device's diagnostic counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DiagCounters {
    pub bus_messages: u16,
    pub bus_comm_errors: u16,
    pub bus_exceptions: u16,
    pub server_messages: u16,
    pub server_no_responses: u16,
    pub comm_events: u16,
}

impl DiagCounters {
    /// Clears every counter (FC 08 / 0x0A, the `diag_clear` action).
    pub fn clear(&mut self) {
        *self = DiagCounters::default();
    }

    /// Counts a request as it arrives.
    pub fn arrived(&mut self) {
        self.bus_messages = self.bus_messages.wrapping_add(1);
        self.server_messages = self.server_messages.wrapping_add(1);
    }

    /// Counts how a request of `function` was served.
    pub fn record(&mut self, function: u8, served: Served) {
        match served {
            Served::Answered if function != FC_COMM_EVENT_COUNTER => {
                self.comm_events = self.comm_events.wrapping_add(1);
            }
            Served::Answered => {}
            Served::Exception => self.bus_exceptions = self.bus_exceptions.wrapping_add(1),
            Served::NoResponse => {
                self.server_no_responses = self.server_no_responses.wrapping_add(1);
            }
        }
    }

    /// The answer to an FC 08 or FC 11 request; `None` for any other request.
    pub fn answer(&mut self, request: &Request<'_>) -> Option<Result<Response, ExceptionCode>> {
        let Request::Custom(function, data) = request else {
            return None;
        };
        match *function {
            FC_DIAGNOSTICS => Some(self.diagnostics(data)),
            FC_COMM_EVENT_COUNTER => Some(if data.is_empty() {
                let [s0, s1] = 0u16.to_be_bytes();
                let [c0, c1] = self.comm_events.to_be_bytes();
                Ok(Response::Custom(
                    FC_COMM_EVENT_COUNTER,
                    Bytes::from(vec![s0, s1, c0, c1]),
                ))
            } else {
                Err(ExceptionCode::IllegalDataValue)
            }),
            _ => None,
        }
    }

    fn diagnostics(&mut self, data: &[u8]) -> Result<Response, ExceptionCode> {
        let [s0, s1, d0, d1] = data else {
            return Err(ExceptionCode::IllegalDataValue);
        };
        let sub = u16::from_be_bytes([*s0, *s1]);
        let word = u16::from_be_bytes([*d0, *d1]);
        let counter = match sub {
            SUB_RETURN_QUERY_DATA => word,
            _ if word != 0 => return Err(ExceptionCode::IllegalDataValue),
            SUB_CLEAR_COUNTERS => {
                self.clear();
                0
            }
            0x0B => self.bus_messages,
            0x0C => self.bus_comm_errors,
            0x0D => self.bus_exceptions,
            0x0E => self.server_messages,
            0x0F => self.server_no_responses,
            _ => return Err(ExceptionCode::IllegalFunction),
        };
        let [c0, c1] = counter.to_be_bytes();
        Ok(Response::Custom(
            FC_DIAGNOSTICS,
            Bytes::from(vec![*s0, *s1, c0, c1]),
        ))
    }
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use super::*;
    use linesentry_agent::source::modbus::diag::{
        decode_comm_event_counter, diagnostics_request, DiagCounter,
    };

    /// Serves `request` the way the Modbus front end does.
    fn serve(c: &mut DiagCounters, request: &Request<'_>) -> Result<Response, ExceptionCode> {
        c.arrived();
        let answer = c
            .answer(request)
            .unwrap_or(Err(ExceptionCode::IllegalFunction));
        let served = if answer.is_ok() {
            Served::Answered
        } else {
            Served::Exception
        };
        let function = request.function_code().value();
        c.record(function, served);
        answer
    }

    #[test]
    fn the_counters_count_what_was_served_and_the_agent_decodes_them() {
        let mut c = DiagCounters::default();
        for _ in 0..3 {
            serve(&mut c, &Request::ReadHoldingRegisters(0, 1)).unwrap_err();
        }
        c.record(0x03, Served::Answered);
        let answer = serve(&mut c, &DiagCounter::BusMessageCount.request()).unwrap();
        assert_eq!(DiagCounter::BusMessageCount.decode(&answer), Ok(4));
        let answer = serve(&mut c, &DiagCounter::BusExceptionErrorCount.request()).unwrap();
        assert_eq!(DiagCounter::BusExceptionErrorCount.decode(&answer), Ok(3));
        let answer = serve(&mut c, &DiagCounter::CommEventCount.request()).unwrap();
        assert_eq!(
            decode_comm_event_counter(&answer).map(|a| (a.status, a.event_count)),
            Ok((0, 3)),
            "one answered read and two FC 08 reads; exceptions and FC 11 are not events"
        );
        let answer = serve(&mut c, &DiagCounter::ServerMessageCount.request()).unwrap();
        assert_eq!(DiagCounter::ServerMessageCount.decode(&answer), Ok(7));
    }

    #[test]
    fn sub_function_0x0a_clears_every_counter_and_echoes_the_request() {
        let mut c = DiagCounters {
            bus_messages: 500,
            bus_exceptions: 20,
            server_messages: 500,
            comm_events: 480,
            ..DiagCounters::default()
        };
        let answer = serve(&mut c, &diagnostics_request(SUB_CLEAR_COUNTERS, 0)).unwrap();
        assert_eq!(
            answer,
            Response::Custom(0x08, Bytes::from_static(&[0x00, 0x0A, 0x00, 0x00]))
        );
        assert_eq!(
            c,
            DiagCounters {
                comm_events: 1,
                ..DiagCounters::default()
            },
            "the clear itself completes as an event"
        );
    }

    #[test]
    fn unknown_sub_functions_and_bad_data_are_exceptions() {
        let mut c = DiagCounters::default();
        assert_eq!(
            serve(&mut c, &diagnostics_request(0x15, 0)),
            Err(ExceptionCode::IllegalFunction)
        );
        assert_eq!(
            serve(&mut c, &diagnostics_request(0x0B, 7)),
            Err(ExceptionCode::IllegalDataValue)
        );
        assert_eq!(
            serve(&mut c, &Request::Custom(0x08, Cow::Borrowed(&[0x00, 0x0B]))),
            Err(ExceptionCode::IllegalDataValue)
        );
        assert_eq!(
            serve(&mut c, &Request::Custom(0x0B, Cow::Borrowed(&[0x01]))),
            Err(ExceptionCode::IllegalDataValue)
        );
        assert_eq!(
            serve(&mut c, &diagnostics_request(SUB_RETURN_QUERY_DATA, 0xA5A5)),
            Ok(Response::Custom(
                0x08,
                Bytes::from_static(&[0x00, 0x00, 0xA5, 0xA5])
            ))
        );
        assert_eq!(c.bus_exceptions, 4);
        assert!(c.answer(&Request::ReadCoils(0, 1)).is_none());
    }

    #[test]
    fn counters_wrap_at_16_bits() {
        let mut c = DiagCounters {
            bus_messages: u16::MAX,
            server_messages: u16::MAX,
            ..DiagCounters::default()
        };
        c.arrived();
        assert_eq!((c.bus_messages, c.server_messages), (0, 0));
    }
}
