//! RELP, rsyslog's Reliable Event Logging Protocol (librelp's `doc/relp.html`), the pure
//! part: frames and their parser, no I/O. A frame is `TXNR SP COMMAND SP DATALEN [SP DATA]
//! LF`; the client opens a session with `open` (offers `relp_version=0` and
//! `commands=syslog`), sends each message as a `syslog` frame with the next transaction
//! number (1 to 999 999 999, then 1 again), and the server answers every frame with a `rsp`
//! frame of the same number whose data starts with a status code: `200 OK` acknowledges,
//! anything else refuses. `close` ends the session; the server may also send
//! `serverclose` (number 0) before hanging up.

/// The largest transaction number; the next one is 1.
pub const MAX_TXNR: u32 = 999_999_999;
/// A response frame longer than this is not a RELP peer (librelp's own limit is 128 KiB
/// of data by default).
pub const MAX_FRAME: usize = 1 << 20;

/// One frame as read from the peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub txnr: u32,
    pub command: String,
    pub data: Vec<u8>,
}

/// What a `rsp` frame says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The status code, 200 for success.
    pub code: u16,
    /// The rest of the first line, e.g. `OK` or the server's reason.
    pub text: String,
    /// The lines after the first (the `open` answer's offers).
    pub offers: String,
}

/// A peer that does not speak RELP.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a RELP frame: {0}")]
pub struct FrameError(pub String);

/// The number after `txnr`, wrapping to 1 after [`MAX_TXNR`].
pub fn next_txnr(txnr: u32) -> u32 {
    if txnr >= MAX_TXNR {
        1
    } else {
        txnr + 1
    }
}

/// Appends a frame to `out`.
pub fn encode(out: &mut Vec<u8>, txnr: u32, command: &str, data: &[u8]) {
    out.extend_from_slice(format!("{txnr} {command} {}", data.len()).as_bytes());
    if !data.is_empty() {
        out.push(b' ');
        out.extend_from_slice(data);
    }
    out.push(b'\n');
}

/// The `open` offer of a client that only sends syslog messages.
pub fn open_offer() -> Vec<u8> {
    format!(
        "relp_version=0\nrelp_software=linesentry,{},https://github.com/linesentry\ncommands=syslog",
        env!("CARGO_PKG_VERSION")
    )
    .into_bytes()
}

/// The first frame in `buf`, and how many bytes it took; `Ok(None)` while incomplete.
pub fn parse(buf: &[u8]) -> Result<Option<(Frame, usize)>, FrameError> {
    let bad = |what: &str| {
        FrameError(format!(
            "{what} in {:?}",
            String::from_utf8_lossy(&buf[..buf.len().min(60)])
        ))
    };
    // TXNR SP
    let Some(sp1) = buf.iter().position(|b| *b == b' ') else {
        return incomplete_or(buf, 10, bad("no transaction number"));
    };
    let txnr = digits(&buf[..sp1], 9).ok_or_else(|| bad("bad transaction number"))?;
    let rest = &buf[sp1 + 1..];
    // COMMAND SP
    let Some(sp2) = rest.iter().position(|b| *b == b' ') else {
        return incomplete_or(rest, 32, bad("no command"));
    };
    let command = &rest[..sp2];
    if command.is_empty() || command.len() > 32 || !command.iter().all(u8::is_ascii_alphabetic) {
        return Err(bad("bad command"));
    }
    let rest = &rest[sp2 + 1..];
    // DATALEN, then SP DATA LF or LF
    let Some(end) = rest.iter().position(|b| *b == b' ' || *b == b'\n') else {
        return incomplete_or(rest, 9, bad("no data length"));
    };
    let len = digits(&rest[..end], 9).ok_or_else(|| bad("bad data length"))? as usize;
    let head = sp1 + 1 + sp2 + 1 + end;
    if len + head > MAX_FRAME {
        return Err(bad("frame over 1 MiB"));
    }
    let (data, total) = if len == 0 {
        if rest[end] == b'\n' {
            (Vec::new(), head + 1)
        } else {
            // `0 ` then LF is tolerated: some peers write the separator anyway.
            match rest.get(end + 1) {
                None => return Ok(None),
                Some(b'\n') => (Vec::new(), head + 2),
                Some(_) => return Err(bad("data after a zero length")),
            }
        }
    } else {
        if rest[end] != b' ' {
            return Err(bad("no data after the length"));
        }
        let start = end + 1;
        if rest.len() < start + len + 1 {
            return Ok(None);
        }
        if rest[start + len] != b'\n' {
            return Err(bad("no line feed after the data"));
        }
        (rest[start..start + len].to_vec(), head + 1 + len + 1)
    };
    Ok(Some((
        Frame {
            txnr,
            command: String::from_utf8_lossy(command).into_owned(),
            data,
        },
        total,
    )))
}

fn incomplete_or<T>(part: &[u8], max: usize, err: FrameError) -> Result<Option<T>, FrameError> {
    if part.len() > max {
        Err(err)
    } else {
        Ok(None)
    }
}

fn digits(b: &[u8], max: usize) -> Option<u32> {
    if b.is_empty() || b.len() > max || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(b).ok()?.parse().ok()
}

impl Response {
    /// The data of a `rsp` frame: `CODE SP TEXT [LF offers]`.
    pub fn parse(data: &[u8]) -> Result<Self, FrameError> {
        let text = String::from_utf8_lossy(data);
        let (first, offers) = text.split_once('\n').unwrap_or((&text, ""));
        let (code, rest) = first.split_once(' ').unwrap_or((first, ""));
        let code = (code.len() == 3)
            .then(|| code.parse::<u16>().ok())
            .flatten()
            .ok_or_else(|| FrameError(format!("rsp without a status code: {first:?}")))?;
        Ok(Self {
            code,
            text: rest.to_owned(),
            offers: offers.to_owned(),
        })
    }

    pub fn is_ok(&self) -> bool {
        self.code == 200
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_encode_with_and_without_data() {
        let mut out = Vec::new();
        encode(&mut out, 7, "syslog", b"<13>1 - - - - - - hi");
        encode(&mut out, 8, "close", b"");
        assert_eq!(out, b"7 syslog 20 <13>1 - - - - - - hi\n8 close 0\n");
    }

    #[test]
    fn a_response_parses_once_complete_and_says_how_much_it_took() {
        let wire = b"2 rsp 6 200 OK\n3 rsp 6 200 OK\n";
        for cut in 0..15 {
            assert_eq!(parse(&wire[..cut]).unwrap(), None, "cut at {cut}");
        }
        let (f, n) = parse(wire).unwrap().unwrap();
        assert_eq!(
            (f.txnr, f.command.as_str(), &f.data[..], n),
            (2, "rsp", &b"200 OK"[..], 15)
        );
        let (f, _) = parse(&wire[n..]).unwrap().unwrap();
        assert_eq!(f.txnr, 3);
    }

    #[test]
    fn a_zero_length_frame_has_no_data() {
        let (f, n) = parse(b"0 serverclose 0\n").unwrap().unwrap();
        assert_eq!(
            (f.txnr, f.command.as_str(), f.data.len(), n),
            (0, "serverclose", 0, 16)
        );
    }

    #[test]
    fn an_error_answer_keeps_its_code_and_reason() {
        let r = Response::parse(b"500 message too long").unwrap();
        assert_eq!(
            (r.code, r.text.as_str(), r.is_ok()),
            (500, "message too long", false)
        );
        let r = Response::parse(b"200 OK\nrelp_version=0\ncommands=syslog").unwrap();
        assert!(r.is_ok());
        assert_eq!(r.offers, "relp_version=0\ncommands=syslog");
        assert!(Response::parse(b"OK").is_err());
    }

    #[test]
    fn garbage_is_refused_not_waited_for() {
        assert!(parse(b"HTTP/1.1 400 Bad Request\r\n").is_err());
        assert!(parse(b"12345678901 rsp").is_err());
        assert!(parse(b"1 rsp 3 abcX").is_err());
        assert!(parse(b"1 rsp 99999999999").is_err());
    }

    #[test]
    fn transaction_numbers_wrap_to_one() {
        assert_eq!(next_txnr(1), 2);
        assert_eq!(next_txnr(MAX_TXNR), 1);
    }
}
