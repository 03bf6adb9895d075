//! The transports against real receivers: rsyslog (TLS, plain TCP, UDP, RELP over TLS) and
//! syslog-ng (RFC 5425 over TLS), each started by `linesentry_testkit::syslog` on free
//! loopback ports and read back from the files they write.

use std::time::Duration;

use linesentry_event::{EventType, SecurityEvent};
use linesentry_siem::syslog::{self, SyslogOptions};
use linesentry_siem::transport::{
    Framing, Protocol, SendError, Sender, TlsSettings, TransportSettings,
};
use linesentry_siem::{Format, Provenance};
use linesentry_testkit::pki::Pki;
use linesentry_testkit::syslog::{Listener, Rsyslog, RsyslogOptions, SyslogNg};

use crate::samples::{every_type, exporter, provenance};

const WAIT: Duration = Duration::from_secs(10);

#[allow(clippy::unnecessary_wraps)] // `TransportSettings::tls` is an Option
fn tls(pki: &Pki, client_cert: bool) -> Option<TlsSettings> {
    Some(TlsSettings {
        ca_file: pki.ca(),
        client_cert: client_cert.then(|| (pki.client_cert(), pki.client_key())),
        server_name: None,
    })
}

fn settings(protocol: Protocol, port: u16, tls: Option<TlsSettings>) -> TransportSettings {
    let mut s = TransportSettings::new(protocol, format!("127.0.0.1:{port}"));
    s.tls = tls;
    s.timeout = Duration::from_secs(5);
    s
}

/// Every catalogue type as CEF inside RFC 5424.
fn messages(format: Format) -> Vec<String> {
    every_type()
        .iter()
        .map(|e| {
            let body = format.encode(e, &exporter(), &provenance());
            syslog::frame(e, &body, &SyslogOptions::default(), &provenance()).unwrap()
        })
        .collect()
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn syslog_over_tls_reaches_rsyslog_byte_for_byte_with_octet_counting_and_with_lf_framing() {
    let rs = Rsyslog::start();
    let sent = messages(Format::Cef);
    let rt = rt();
    rt.block_on(async {
        let mut s = Sender::new(settings(Protocol::Tls, rs.tls_port, tls(&rs.pki, false))).unwrap();
        let a = s.send(&sent).await.unwrap();
        assert_eq!(a.records, sent.len());
        assert!(a.text.contains("no acknowledgement"), "{}", a.text);
    });
    assert!(
        rs.wait_lines(Listener::Tls, sent.len(), WAIT) == sent,
        "octet counting"
    );
    rt.block_on(async {
        let mut lf = settings(Protocol::Tls, rs.tls_port, tls(&rs.pki, false));
        lf.framing = Framing::Lf;
        Sender::new(lf).unwrap().send(&sent).await.unwrap();
    });
    let got = rs.wait_lines(Listener::Tls, 2 * sent.len(), WAIT);
    assert!(got[sent.len()..] == sent[..], "LF framing");
}

#[test]
fn relp_batches_larger_than_the_window_are_acknowledged_and_written_once_in_order() {
    let rs = Rsyslog::start();
    let mut sent = Vec::new();
    for f in Format::ALL {
        sent.extend(messages(f));
    }
    rt().block_on(async {
        let mut st = settings(Protocol::Relp, rs.relp_port, tls(&rs.pki, true));
        st.relp_window = 16;
        let mut s = Sender::new(st).unwrap();
        let a = s.send(&sent).await.unwrap();
        assert!(a.text.ends_with("acknowledged: 200 OK"), "{}", a.text);
        // A second batch on the same session continues the transaction numbers.
        s.send(&sent[..3]).await.unwrap();
        s.close().await;
    });
    let got = rs.wait_lines(Listener::Relp, sent.len() + 3, WAIT);
    assert_eq!(got.len(), sent.len() + 3, "nothing twice");
    assert_eq!(got[..sent.len()], sent[..]);
    assert_eq!(got[sent.len()..], sent[..3]);
}

#[test]
fn relp_over_tls_without_a_client_certificate_is_refused_by_rsyslog() {
    let rs = Rsyslog::start();
    rt().block_on(async {
        let mut s =
            Sender::new(settings(Protocol::Relp, rs.relp_port, tls(&rs.pki, false))).unwrap();
        let err = s.send(&messages(Format::Cef)[..1]).await.unwrap_err();
        assert!(
            matches!(
                err,
                SendError::Tls { .. } | SendError::Io { .. } | SendError::Timeout { .. }
            ),
            "{err}"
        );
    });
    assert!(rs.lines(Listener::Relp).is_empty());
}

#[test]
fn a_receiver_whose_certificate_comes_from_another_ca_is_refused_before_anything_is_sent() {
    let rs = Rsyslog::start();
    let other = Pki::named("other");
    rt().block_on(async {
        for (protocol, port) in [(Protocol::Tls, rs.tls_port), (Protocol::Relp, rs.relp_port)] {
            let mut st = settings(protocol, port, tls(&other, true));
            // The other PKI's client certificate is no use either; the server check fails first.
            st.tls.as_mut().unwrap().client_cert =
                Some((rs.pki.client_cert(), rs.pki.client_key()));
            let err = Sender::new(st)
                .unwrap()
                .send(&messages(Format::Cef)[..1])
                .await
                .unwrap_err();
            let text = err.to_string();
            assert!(matches!(err, SendError::Tls { .. }), "{protocol}: {text}");
            assert!(text.contains("UnknownIssuer"), "{protocol}: {text}");
        }
        // A name the certificate does not carry is refused too.
        let mut st = settings(Protocol::Tls, rs.tls_port, tls(&rs.pki, false));
        st.tls.as_mut().unwrap().server_name = Some("siem.example".into());
        let err = Sender::new(st)
            .unwrap()
            .send(&messages(Format::Cef)[..1])
            .await
            .unwrap_err();
        assert!(err.to_string().contains("not valid for name"), "{err}");
    });
    std::thread::sleep(Duration::from_millis(300));
    assert!(rs.lines(Listener::Tls).is_empty());
    assert!(rs.lines(Listener::Relp).is_empty());
}

#[test]
fn over_the_receivers_limit_rsyslog_cuts_silently_so_messages_are_cut_at_max_message_first() {
    // rsyslog acknowledges an oversized RELP message and cuts it without a mark; the
    // sender's rule (docs/SIEM.md) is to cut at `max_message`, at most the receiver's limit,
    // keeping header and structured data whole and marking the cut.
    let rs = Rsyslog::start_with(&RsyslogOptions {
        max_message: 2048,
        relp_max_data: Some(2048),
    });
    let e = SecurityEvent::new("gw-1", EventType::SetpointChanged).data("note", "x".repeat(6000));
    let body = Format::Cef.encode(&e, &exporter(), &Provenance::default());
    let framed = |max_message| {
        syslog::frame(
            &e,
            &body,
            &SyslogOptions {
                max_message,
                ..Default::default()
            },
            &Provenance::default(),
        )
        .unwrap()
    };
    let (big, fitting) = (framed(8192), framed(2048));
    assert!(big.len() > 2048 && fitting.len() == 2048);
    rt().block_on(async {
        let mut s =
            Sender::new(settings(Protocol::Relp, rs.relp_port, tls(&rs.pki, true))).unwrap();
        s.send(&[big.clone(), fitting.clone()]).await.unwrap();
    });
    let got = rs.wait_lines(Listener::Relp, 2, WAIT);
    assert_ne!(got[0], big, "rsyslog kept an oversized message whole");
    assert!(big.starts_with(&got[0]) && !got[0].contains("truncated="));
    assert_eq!(got[1], fitting);
    assert!(fitting.contains(&format!("truncated=\"{}\"", body.len())));
}

#[test]
fn a_relp_sender_reconnects_after_the_receiver_restarts_and_loses_nothing_acknowledged() {
    let mut rs = Rsyslog::start();
    let sent = messages(Format::Leef);
    let (first, second) = sent.split_at(sent.len() / 2);
    rt().block_on(async {
        let mut s =
            Sender::new(settings(Protocol::Relp, rs.relp_port, tls(&rs.pki, true))).unwrap();
        s.send(first).await.unwrap();
        rs.stop();
        // The stopped receiver's serverclose, a reset or a refused connect: any error, and
        // nothing counted as acknowledged.
        let err = s.send(second).await.unwrap_err();
        assert_eq!(err.acknowledged(), 0, "{err}");
        rs.restart();
        s.send(second).await.unwrap();
    });
    let got = rs.wait_lines(Listener::Relp, sent.len(), WAIT);
    assert_eq!(got, sent);
}

#[test]
fn a_syslog_tls_sender_notices_a_closed_connection_and_connects_again() {
    let mut rs = Rsyslog::start();
    let sent = messages(Format::Cef);
    rt().block_on(async {
        let mut s = Sender::new(settings(Protocol::Tls, rs.tls_port, tls(&rs.pki, false))).unwrap();
        s.send(&sent[..5]).await.unwrap();
        rs.wait_lines(Listener::Tls, 5, WAIT);
        rs.restart();
        s.send(&sent[5..]).await.unwrap();
    });
    let got = rs.wait_lines(Listener::Tls, sent.len(), WAIT);
    assert_eq!(got, sent);
}

#[test]
fn plain_tcp_and_udp_reach_a_loopback_receiver() {
    let rs = Rsyslog::start();
    let sent = messages(Format::Ecs);
    rt().block_on(async {
        Sender::new(settings(Protocol::Tcp, rs.tcp_port, None))
            .unwrap()
            .send(&sent)
            .await
            .unwrap();
        Sender::new(settings(Protocol::Udp, rs.udp_port, None))
            .unwrap()
            .send(&sent[..3])
            .await
            .unwrap();
    });
    assert_eq!(rs.wait_lines(Listener::Tcp, sent.len(), WAIT), sent);
    assert_eq!(rs.wait_lines(Listener::Udp, 3, WAIT), sent[..3]);
}

#[test]
fn text_every_format_must_escape_arrives_at_rsyslog_exactly_as_encoded() {
    let rs = Rsyslog::start();
    let hostile = "a|b=c\\d\ne\rf\"g'h]i ü 漢 \u{0}j\u{1b}k ^l";
    let e = SecurityEvent::new("gw|=\\ 1", EventType::SecurityViolation)
        .station("st\"]")
        .data("text", hostile)
        .data(hostile, 1);
    let sent: Vec<String> = Format::ALL
        .iter()
        .map(|f| {
            let body = f.encode(&e, &exporter(), &provenance());
            syslog::frame(&e, &body, &SyslogOptions::default(), &provenance()).unwrap()
        })
        .collect();
    for m in &sent {
        assert!(!m.contains('\n') && !m.contains('\0'), "{m}");
    }
    rt().block_on(async {
        Sender::new(settings(Protocol::Relp, rs.relp_port, tls(&rs.pki, true)))
            .unwrap()
            .send(&sent)
            .await
            .unwrap();
    });
    assert_eq!(rs.wait_lines(Listener::Relp, sent.len(), WAIT), sent);
}

#[test]
fn syslog_ng_takes_octet_counted_rfc_5425_and_refuses_lf_framing() {
    let ng = SyslogNg::start();
    let sent = messages(Format::Cef);
    rt().block_on(async {
        Sender::new(settings(Protocol::Tls, ng.port, tls(&ng.pki, false)))
            .unwrap()
            .send(&sent)
            .await
            .unwrap();
    });
    assert_eq!(ng.wait_lines(sent.len(), WAIT), sent);
    rt().block_on(async {
        let mut lf = settings(Protocol::Tls, ng.port, tls(&ng.pki, false));
        lf.framing = Framing::Lf;
        // Written: syslog over TLS cannot tell; the receiver drops it.
        Sender::new(lf).unwrap().send(&sent[..2]).await.unwrap();
    });
    let refused = linesentry_testkit::wait_until(WAIT, || {
        ng.log().contains("Invalid frame header").then_some(())
    });
    assert!(refused.is_some(), "{}", ng.log());
    assert_eq!(ng.lines().len(), sent.len());
}
