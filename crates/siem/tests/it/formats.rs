//! Every catalogue type in every format: it encodes, carries its class id, ids, seq,
//! gateway, station, chain and ATT&CK ids where each format puts them.

use linesentry_event::{EventType, SecurityEvent};
use linesentry_siem::{
    cef, class_of, ecs, leef, ocsf, severity, syslog, Family, Provenance, UNKNOWN_CLASS_ID,
};
use serde_json::Value;

use crate::parse;
use crate::samples::{every_type, exporter, provenance, unknown_type_event, PREV_HASH};

fn attack_of(e: &SecurityEvent) -> String {
    e.kind()
        .and_then(EventType::entry)
        .map(|c| c.attack.join(","))
        .unwrap_or_default()
}

#[test]
fn every_type_encodes_as_cef_with_its_class_id_and_labelled_fields() {
    for e in every_type() {
        let line = cef::encode(&e, &exporter(), &provenance());
        let p = parse::cef(&line);
        let t = e.kind().unwrap();
        assert_eq!(
            p.header[..4],
            ["CEF:0", "linesentry", "linesentry", "0.1.0"]
        );
        assert_eq!(p.header[4], class_of(t).id.to_string(), "{line}");
        assert_eq!(p.header[5], class_of(t).title);
        assert_eq!(p.header[6], severity::cef(e.severity).to_string());
        assert_eq!(p.ext["externalId"], e.id.to_string());
        assert_eq!(p.ext["rt"], (e.timestamp.as_micros() / 1000).to_string());
        assert_eq!(p.ext["end"], p.ext["rt"]);
        assert_eq!(p.ext["act"], e.event_type);
        assert_eq!(p.labelled("attack"), Some(attack_of(&e).as_str()));
        assert_eq!(p.labelled("gateway"), Some("gw-line3-01"));
        assert_eq!(p.labelled("station"), e.station_id.as_deref());
        assert_eq!(p.labelled("seq"), Some(e.seq.to_string().as_str()));
        assert_eq!(p.labelled("chain"), Some("verified"));
        assert_eq!(p.labelled("prev_hash"), e.prev_hash.as_deref());
        assert_eq!(
            p.labelled("signature"),
            Some("3f2a9c0d1e4b5a67:c2lnbmF0dXJlLWJ5dGVz")
        );
        let data: Value = serde_json::from_str(&p.ext["msg"]).unwrap();
        assert_eq!(data["tag"], "t1");
    }
}

#[test]
fn every_type_encodes_as_leef_2_with_its_event_id_and_attributes() {
    for e in every_type() {
        let line = leef::encode(&e, &exporter(), &provenance());
        let p = parse::leef(&line);
        let t = e.kind().unwrap();
        assert_eq!(
            p.header,
            [
                "LEEF:2.0",
                "linesentry",
                "linesentry",
                "0.1.0",
                &class_of(t).id.to_string(),
                "^"
            ]
        );
        assert_eq!(p.attrs["eventId"], e.id.to_string());
        assert_eq!(p.attrs["cat"], e.event_type);
        assert_eq!(p.attrs["seq"], e.seq.to_string());
        assert_eq!(p.attrs["gateway"], e.gateway_id);
        assert_eq!(p.attrs.get("station"), e.station_id.as_ref());
        assert_eq!(p.attrs["chain"], "verified");
        assert_eq!(p.attrs["devTimeFormat"], leef::DEV_TIME_FORMAT);
        let sev: u8 = p.attrs["sev"].parse().unwrap();
        assert!((1..=10).contains(&sev));
        let attack = attack_of(&e);
        assert_eq!(p.attrs.get("attack").map_or("", String::as_str), attack);
        // devTime in the announced format, UTC
        let dt = chrono::DateTime::parse_from_str(&p.attrs["devTime"], "%Y-%m-%dT%H:%M:%S%.3f%z")
            .unwrap();
        assert_eq!(dt.timestamp_millis(), e.timestamp.as_micros() / 1000);
    }
}

#[test]
fn every_type_frames_as_rfc5424_with_structured_data_and_pri() {
    let opts = syslog::SyslogOptions::default();
    for e in every_type() {
        let body = cef::encode(&e, &exporter(), &provenance());
        let m = syslog::frame(&e, &body, &opts, &provenance()).unwrap();
        let p = parse::syslog(&m);
        assert_eq!(p.pri, 16 * 8 + u16::from(severity::syslog(e.severity)));
        assert_eq!(p.fields[1], "gw-line3-01");
        assert_eq!(p.fields[2], "linesentry");
        assert_eq!(p.fields[3], "-");
        assert_eq!(p.fields[4], e.event_type);
        assert_eq!(p.sd_id, "linesentry@32473");
        assert_eq!(p.params["id"], e.id.to_string());
        assert_eq!(p.params["seq"], e.seq.to_string());
        assert_eq!(p.params["gateway"], "gw-line3-01");
        assert_eq!(p.params.get("station"), e.station_id.as_ref());
        assert_eq!(p.msg, body);
        let framed = syslog::octet_counted(&m);
        assert_eq!(framed, format!("{} {m}", m.len()));
        assert!(syslog::lf_framed(&m).unwrap().ends_with("]\n") || !body.is_empty());
    }
}

#[test]
fn every_type_is_an_ocsf_1_8_event_of_its_familys_class() {
    for e in every_type() {
        let v = ocsf::to_value(&e, &exporter(), &provenance());
        let c = class_of(e.kind().unwrap());
        let class = ocsf::class_for(c.family);
        assert_eq!(v["class_uid"], class.uid);
        assert_eq!(v["category_uid"], class.category_uid);
        assert_eq!(
            v["type_uid"].as_u64().unwrap(),
            u64::from(class.uid) * 100 + v["activity_id"].as_u64().unwrap()
        );
        assert_eq!(v["metadata"]["version"], "1.8.0");
        assert_eq!(v["metadata"]["uid"], e.id.to_string());
        assert_eq!(v["metadata"]["sequence"], e.seq);
        assert_eq!(v["metadata"]["product"]["name"], "linesentry");
        assert_eq!(v["time"], e.timestamp.as_micros() / 1000);
        assert_eq!(v["severity_id"], severity::ocsf(e.severity).0);
        assert_eq!(v["unmapped"]["linesentry"]["seq"], e.seq);
        assert_eq!(v["unmapped"]["linesentry"]["chain"], "verified");
        assert_eq!(
            v["unmapped"]["linesentry"]["signature"]["key_id"],
            "3f2a9c0d1e4b5a67"
        );
        match e.prev_hash {
            Some(_) => assert_eq!(v["unmapped"]["linesentry"]["prev_hash"], PREV_HASH),
            None => assert!(v["unmapped"]["linesentry"]["prev_hash"].is_null()),
        }
        if c.family == Family::Detection {
            assert_eq!(v["finding_info"]["uid"], e.id.to_string());
            assert_eq!(v["finding_info"]["types"][0], e.event_type);
            let ids: Vec<&str> = v["finding_info"]["attacks"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|x| x["technique"]["uid"].as_str().unwrap())
                        .collect()
                })
                .unwrap_or_default();
            assert_eq!(ids.join(","), attack_of(&e));
        }
        if c.origin == linesentry_siem::Origin::Agent {
            assert_eq!(
                v["device"]["type_id"], 7,
                "agent events come from an IOT gateway"
            );
            assert_eq!(v["device"]["hostname"], "gw-line3-01");
        }
    }
}

#[test]
fn the_catalogue_uses_every_ocsf_class_of_the_dictionary() {
    let mut uids: Vec<u32> = EventType::ALL
        .iter()
        .map(|t| ocsf::class_for(class_of(*t).family).uid)
        .collect();
    uids.sort_unstable();
    uids.dedup();
    assert_eq!(uids, [1008, 2004, 3002, 5019, 6003]);
    assert_eq!(
        ocsf::class_for(class_of(EventType::SetpointChanged).family).uid,
        5019
    );
    assert_eq!(
        ocsf::class_for(class_of(EventType::AuthFailed).family).uid,
        3002
    );
    assert_eq!(
        ocsf::class_for(class_of(EventType::ApiAccess).family).uid,
        6003
    );
    assert_eq!(
        ocsf::class_for(class_of(EventType::AgentStarted).family).uid,
        1008
    );
}

#[test]
fn every_type_is_an_ecs_document_with_action_severity_and_labels() {
    for e in every_type() {
        let v = ecs::to_value(&e, &exporter(), &provenance());
        assert_eq!(v["ecs"]["version"], ecs::VERSION);
        assert_eq!(v["@timestamp"], e.timestamp.to_string());
        assert_eq!(v["event"]["action"], e.event_type);
        assert_eq!(v["event"]["id"], e.id.to_string());
        assert_eq!(v["event"]["severity"], severity::cef(e.severity));
        assert!(v["event"]["category"].is_array() && v["event"]["type"].is_array());
        assert_eq!(v["observer"]["hostname"], "collector-1");
        assert_eq!(v["host"]["hostname"], "gw-line3-01");
        assert_eq!(v["labels"]["gateway"], "gw-line3-01");
        assert_eq!(v["labels"]["seq"], e.seq.to_string());
        let attack = attack_of(&e);
        let ids: Vec<&str> = v["threat"]["technique"]["id"]
            .as_array()
            .map(|a| a.iter().map(|x| x.as_str().unwrap()).collect())
            .unwrap_or_default();
        assert_eq!(ids.join(","), attack);
        assert!(v["labels"]
            .as_object()
            .unwrap()
            .values()
            .all(Value::is_string));
    }
}

#[test]
fn a_type_this_build_does_not_know_still_encodes_in_every_format_under_the_unknown_class() {
    let event = unknown_type_event();
    let cef_line = parse::cef(&cef::encode(&event, &exporter(), &Provenance::default()));
    assert_eq!(cef_line.header[4], UNKNOWN_CLASS_ID.to_string());
    assert_eq!(cef_line.header[5], "future.thing_we_do_not_know");
    assert_eq!(cef_line.labelled("chain"), Some("unchecked"));
    let leef_line = parse::leef(&leef::encode(&event, &exporter(), &Provenance::default()));
    assert_eq!(leef_line.header[4], UNKNOWN_CLASS_ID.to_string());
    let ocsf_doc = ocsf::to_value(&event, &exporter(), &Provenance::default());
    assert_eq!(ocsf_doc["class_uid"], 2004);
    assert_eq!(
        ocsf_doc["finding_info"]["types"][0],
        "future.thing_we_do_not_know"
    );
    let ecs_doc = ecs::to_value(&event, &exporter(), &Provenance::default());
    assert_eq!(ecs_doc["event"]["code"], UNKNOWN_CLASS_ID.to_string());
}
