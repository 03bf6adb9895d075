//! SIEM egress against real receivers: rsyslog (RELP over TLS, syslog over TLS) and
//! syslog-ng (RFC 5425), started by `linesentry_testkit::syslog`, read back from the files
//! they write; the collector on a private PostgreSQL.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use linesentry_testkit::collector as env;
use linesentry_testkit::syslog::{Listener, Rsyslog, SyslogNg};

use env::{Chain, Env, EnvOptions};
use linesentry_collector::auth::Role;
use linesentry_event::{EventType, SecurityEvent, Severity};
use serde_json::Value;

/// The SD PARAM `name` of an RFC 5424 line.
fn sd<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let start = line.find(&format!(" {name}=\""))? + name.len() + 3;
    let len = line[start..].find('"')?;
    Some(&line[start..start + len])
}

fn relp_destination(name: &str, rs: &Rsyslog, extra: &str) -> String {
    format!(
        r#"
[[siem]]
name = "{name}"
transport = "relp"
address = "127.0.0.1:{port}"
format = "cef"
ca_file = "{ca}"
client_cert = "{cert}"
client_key = "{key}"
timeout_ms = 2000
batch = 25
{extra}
"#,
        port = rs.relp_port,
        ca = rs.pki.ca().display(),
        cert = rs.pki.client_cert().display(),
        key = rs.pki.client_key().display(),
    )
}

async fn post(
    env: &Env,
    token: &str,
    signer: &linesentry_event::integrity::BatchSigner,
    events: &[SecurityEvent],
) {
    let (status, reply) = env.post(Some(token), signer.seal(events), true).await;
    assert_eq!(status, 200, "{reply}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_committed_event_reaches_rsyslog_once_after_dedup_in_commit_order_across_a_receiver_outage_and_a_collector_crash(
) {
    let mut rs = Rsyslog::start();
    let options = EnvOptions {
        extra: relp_destination("soc", &rs, ""),
        ..EnvOptions::default()
    };
    let mut env = Env::start(options.clone()).await;
    let signer = env.gateway("gw-1").await;
    let token = env.token(Role::Gateway, Some("gw-1")).await;
    let mut chain = Chain::new("gw-1");
    let mut sent: Vec<SecurityEvent> = Vec::new();
    let gw_lines = |rs: &Rsyslog| -> Vec<String> {
        rs.lines(Listener::Relp)
            .into_iter()
            .filter(|l| sd(l, "gateway") == Some("gw-1"))
            .collect()
    };

    for _ in 0..3 {
        let batch = chain.events(EventType::SetpointChanged, 20);
        post(&env, &token, &signer, &batch).await;
        sent.extend(batch);
    }
    linesentry_testkit::wait_until(Duration::from_secs(15), || {
        (gw_lines(&rs).len() >= 60).then_some(())
    })
    .expect("the first 60 events reach rsyslog");

    // The receiver goes away; ingest goes on and the outbox grows.
    rs.stop();
    for _ in 0..2 {
        let batch = chain.events(EventType::ModeChanged, 20);
        post(&env, &token, &signer, &batch).await;
        sent.extend(batch);
    }
    let viewer = env.token(Role::Viewer, None).await;
    let failing = linesentry_testkit::wait_until_async(Duration::from_secs(20), async || {
        let (_, status) = env.get(&viewer, "/api/v1/status").await;
        let soc = status["siem"]["soc"].clone();
        (soc["failing"] == true
            && soc["lag"].as_i64().unwrap_or(0) >= 40
            && soc["consecutive_failures"].as_i64().unwrap_or(0) >= 3)
            .then_some(soc)
    })
    .await
    .expect("status shows the destination failing with a lag");
    assert!(failing["last_error"].as_str().is_some(), "{failing}");
    env.wait_count(
        "SELECT count(*) FROM security_events WHERE event_type = 'siem.delivery_failed'",
        1,
    )
    .await;

    // Back, and the collector is killed while it catches up; a new one takes over.
    rs.restart();
    let batch = chain.events(EventType::SetpointChanged, 20);
    post(&env, &token, &signer, &batch).await;
    sent.extend(batch);
    env.crash();
    let mut env = Env::start(EnvOptions {
        database: Some(env.db_url.clone()),
        ..options
    })
    .await;
    let batch = chain.events(EventType::SetpointChanged, 10);
    let token = env.token(Role::Gateway, Some("gw-1")).await;
    post(&env, &token, &signer, &batch).await;
    sent.extend(batch);

    let lines = linesentry_testkit::wait_until(Duration::from_secs(30), || {
        let l = gw_lines(&rs);
        let ids: BTreeSet<&str> = l.iter().filter_map(|x| sd(x, "id")).collect();
        (ids.len() >= sent.len()).then_some(l.clone())
    })
    .unwrap_or_else(|| {
        panic!(
            "not every event arrived; rsyslog has {}",
            gw_lines(&rs).len()
        )
    });

    assert_each_once_in_seq_order(&lines, &sent);

    // The collector's own events went too: the outage and the recovery.
    let own = linesentry_testkit::wait_until(Duration::from_secs(15), || {
        let all: BTreeSet<String> = rs
            .lines(Listener::Relp)
            .iter()
            .filter_map(|l| l.split(' ').nth(5).map(str::to_owned))
            .collect();
        (all.contains("siem.delivery_failed") && all.contains("siem.recovered")).then_some(all)
    });
    assert!(
        own.is_some(),
        "siem.delivery_failed and siem.recovered exported"
    );
    let (_, status) = env.get(&viewer_token(&env).await, "/api/v1/status").await;
    assert_eq!(status["siem"]["soc"]["failing"], false, "{status}");
    env.stop().await;
}

/// Every event of `sent` is in `lines`, exactly once after de-duplication by id, and the
/// first copies come in seq order.
fn assert_each_once_in_seq_order(lines: &[String], sent: &[SecurityEvent]) {
    let mut first_seen: Vec<u64> = Vec::new();
    let mut copies: BTreeMap<String, usize> = BTreeMap::new();
    for l in lines {
        let id = sd(l, "id").unwrap().to_owned();
        let n = copies.entry(id).or_default();
        *n += 1;
        if *n == 1 {
            first_seen.push(sd(l, "seq").unwrap().parse().unwrap());
        }
        assert!(l.contains("CEF:0|linesentry|linesentry|"), "{l}");
    }
    let want: BTreeSet<String> = sent.iter().map(|e| e.id.to_string()).collect();
    let got: BTreeSet<String> = copies.keys().cloned().collect();
    assert_eq!(got, want);
    let expected_seqs: Vec<u64> = (1..=sent.len() as u64).collect();
    assert_eq!(first_seen, expected_seqs, "commit order per gateway");
}

async fn viewer_token(env: &Env) -> String {
    env.token(Role::Viewer, None).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_pick_what_each_destination_gets_and_syslog_ng_takes_the_octet_counted_tls_stream()
{
    let rs = Rsyslog::start();
    let ng = SyslogNg::start();
    let extra = format!(
        r#"
[[siem]]
name = "ng-errors"
transport = "tls"
address = "127.0.0.1:{ng_port}"
format = "ocsf"
ca_file = "{ng_ca}"
min_severity = "error"
gateways = ["gw-1", "gw-2"]

[[siem]]
name = "rs-setpoints"
transport = "tls"
framing = "lf"
address = "127.0.0.1:{rs_port}"
format = "leef"
ca_file = "{rs_ca}"
types = ["setpoint."]
gateways = ["gw-1"]
"#,
        ng_port = ng.port,
        ng_ca = ng.pki.ca().display(),
        rs_port = rs.tls_port,
        rs_ca = rs.pki.ca().display(),
    );
    let env = Env::start(EnvOptions {
        extra,
        ..EnvOptions::default()
    })
    .await;
    let mut sent = Vec::new();
    for gw in ["gw-1", "gw-2"] {
        let signer = env.gateway(gw).await;
        let token = env.token(Role::Gateway, Some(gw)).await;
        let mut chain = Chain::new(gw);
        let batch: Vec<SecurityEvent> = [
            (EventType::SetpointChanged, Severity::Warn),
            (EventType::SetpointOutOfRange, Severity::Error),
            (EventType::ProgramChanged, Severity::Critical),
            (EventType::EquipmentStatus, Severity::Info),
        ]
        .into_iter()
        .map(|(t, s)| chain.link(env::event(t, s).station("press-01")))
        .collect();
        post(&env, &token, &signer, &batch).await;
        sent.extend(batch);
    }
    let want_ng: BTreeSet<String> = sent
        .iter()
        .filter(|e| e.severity >= Severity::Error)
        .map(|e| e.id.to_string())
        .collect();
    let want_rs: BTreeSet<String> = sent
        .iter()
        .filter(|e| e.gateway_id == "gw-1" && e.event_type.starts_with("setpoint."))
        .map(|e| e.id.to_string())
        .collect();
    let ng_lines = ng.wait_lines(want_ng.len(), Duration::from_secs(15));
    let rs_lines = rs.wait_lines(Listener::Tls, want_rs.len(), Duration::from_secs(15));
    // Nothing else follows (the collector's own events are about no gateway).
    tokio::time::sleep(Duration::from_millis(800)).await;
    let ids = |lines: &[String]| -> BTreeSet<String> {
        lines
            .iter()
            .filter_map(|l| sd(l, "id").map(str::to_owned))
            .collect()
    };
    assert_eq!(ids(&ng.lines()), want_ng, "{ng_lines:?}");
    assert_eq!(ids(&rs.lines(Listener::Tls)), want_rs, "{rs_lines:?}");
    assert_eq!(ng.lines().len(), want_ng.len());
    for l in ng.lines() {
        let json = &l[l.find("] ").unwrap() + 2..];
        let v: Value = serde_json::from_str(json).unwrap();
        assert_eq!(v["metadata"]["version"], "1.8.0", "{v}");
        // setpoint.out_of_range is a Detection Finding, program.changed a state change.
        assert!(
            [2004, 5019].contains(&v["class_uid"].as_i64().unwrap()),
            "{v}"
        );
    }
    for l in rs.lines(Listener::Tls) {
        assert!(l.contains("LEEF:2.0|linesentry|"), "{l}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_test_message_reports_the_receivers_answer_and_a_wrong_ca_is_named() {
    let rs = Rsyslog::start();
    let other = linesentry_testkit::pki::Pki::named("other");
    let text = format!(
        "{}\n{}",
        relp_destination("good", &rs, ""),
        relp_destination("bad", &rs, "").replace(
            &rs.pki.ca().display().to_string(),
            &other.ca().display().to_string()
        )
    );
    let env = Env::start(EnvOptions {
        extra: text,
        ..EnvOptions::default()
    })
    .await;
    let good = env.settings.siem.iter().find(|d| d.name == "good").unwrap();
    let (message, answer) = linesentry_collector::siem::send_test(good, "collector-test")
        .await
        .unwrap();
    assert!(answer.text.contains("200 OK"), "{}", answer.text);
    assert!(message.contains("siem.test"), "{message}");
    let got = linesentry_testkit::wait_until(Duration::from_secs(10), || {
        rs.lines(Listener::Relp).contains(&message).then_some(())
    });
    assert!(got.is_some(), "the test message reached rsyslog");
    let bad = env.settings.siem.iter().find(|d| d.name == "bad").unwrap();
    let err = linesentry_collector::siem::send_test(bad, "collector-test")
        .await
        .unwrap_err();
    assert!(
        err.contains("UnknownIssuer") || err.contains("unknown issuer"),
        "{err}"
    );
}
