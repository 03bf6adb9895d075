//! Modbus TCP against an independent peer: a pymodbus server (`crates/testkit/peers/pymodbus_server.py`)
//! started as a child process on a free loopback port.
//!
//! The test describes the device's data as values (`points()` in `crates/agent/tests/it/support/modbus_points.rs`): it writes the
//! station profile from it and hands the same table to the server, which encodes every value
//! into registers with pymodbus's own converter and Python's `struct`, never with our codec.
//! The station is built through `linesentry_agent::config::load` and `Source::for_station`, polled
//! once, and every decoded value is compared exactly with the value in the table.

use crate::support::modbus_common as common;
use crate::support::modbus_points as points;

use std::path::Path;
use std::time::Duration;

use common::{free_port, load_stations};
use linesentry_agent::source::{DeviceIdentity, Source, SourceError, Value};
use linesentry_testkit::PythonPeer;
use points::{expected, points, profile, values, Point, PRODUCT_CODE, REVISION, VENDOR};
use serde_json::json;

/// Starts the pymodbus server with `spec` and waits for its `READY <port>` line.
fn start_pymodbus(dir: &Path, spec: &serde_json::Value) -> (PythonPeer, u16) {
    let spec_path = dir.join("spec.json");
    std::fs::write(&spec_path, serde_json::to_vec_pretty(spec).unwrap()).unwrap();
    let port = free_port();
    let guard = PythonPeer::start(
        "pymodbus_server.py",
        [port.to_string().as_ref(), spec_path.as_os_str()],
        &format!("READY {port}"),
        Duration::from_secs(30),
    );
    (guard, port)
}

fn station(id: &str, profile: &str, port: u16) -> String {
    format!(
        "[[stations]]\nid = \"{id}\"\nprofile = \"{profile}\"\nsource = \"modbus_tcp\"\n\
         address = \"127.0.0.1:{port}\"\nunit_id = 1\npoll_interval_ms = 1000\ntimeout_ms = 2000\n\n"
    )
}

#[tokio::test]
async fn every_type_and_byte_order_decodes_exactly_what_pymodbus_encoded() {
    let points = points();
    let dir = tempfile::tempdir().unwrap();
    let spec = json!({
        "size": 400,
        "identity": {"vendor": VENDOR, "product_code": PRODUCT_CODE, "revision": REVISION},
        "points": points.iter().map(Point::spec).collect::<Vec<_>>(),
    });
    let (_server, port) = start_pymodbus(dir.path(), &spec);

    // The same device through a one-based profile: addresses written one higher.
    let one_based: Vec<Point> = points
        .iter()
        .filter(|p| ["coil_on", "di_on", "u16_max", "f64_cdab", "text"].contains(&p.name.as_str()))
        .cloned()
        .collect();
    // A tag past the end of the server's map: exception 02 for its block only.
    let beyond = vec![
        Point::new(
            "u16_max",
            "holding_register",
            1,
            "u16",
            json!(65_535),
            Value::UInt(65_535),
        ),
        Point::new(
            "missing",
            "holding_register",
            1000,
            "u16",
            json!(0),
            Value::UInt(0),
        ),
    ];
    let (_config_dir, stations) = load_stations(
        &[
            ("interop_zero", &profile("interop_zero", false, &points)),
            ("interop_one", &profile("interop_one", true, &one_based)),
            ("interop_beyond", &profile("interop_beyond", false, &beyond)),
        ],
        &(station("zero", "interop_zero", port)
            + &station("one", "interop_one", port)
            + &station("beyond", "interop_beyond", port)),
    );

    let mut zero = Source::for_station(&stations[0], &ctx(1)).unwrap();
    assert!(matches!(zero, Source::ModbusTcp(_)));
    let result = zero.poll().await;
    assert!(result.reachable);
    assert_eq!(result.errors, []);
    let got = values(&result);
    let want = expected(&points);
    for (tag, value) in &want {
        assert_eq!(got.get(tag), Some(value), "tag `{tag}`");
    }
    assert_eq!(got.len(), want.len());
    assert_eq!(
        result.identity,
        Some(DeviceIdentity {
            vendor: Some(VENDOR.into()),
            product_code: Some(PRODUCT_CODE.into()),
            revision: Some(REVISION.into()),
            ..DeviceIdentity::default()
        })
    );
    // The second poll reads the same values; the identity is not read again so soon.
    let again = zero.poll().await;
    assert_eq!(values(&again), got);
    assert_eq!(again.identity, None);

    let mut one = Source::for_station(&stations[1], &ctx(2)).unwrap();
    let result = one.poll().await;
    assert_eq!(result.errors, []);
    assert_eq!(values(&result), expected(&one_based));

    let mut partial = Source::for_station(&stations[2], &ctx(3)).unwrap();
    let result = partial.poll().await;
    assert!(result.reachable);
    assert_eq!(values(&result), expected(&beyond[..1]));
    assert_eq!(
        result.errors,
        [SourceError::Exception {
            code: 2,
            name: "illegal data address".into(),
            what: "holding register 1000 (tag missing)".into(),
        }]
    );
}

fn ctx(seed: u64) -> linesentry_agent::source::SourceContext {
    linesentry_agent::source::SourceContext {
        data_dir: std::env::temp_dir(),
        gateway_id: "gw-interop".into(),
        seed,
    }
}

#[tokio::test]
async fn a_stations_coalescing_and_identification_keys_change_what_it_asks_the_device() {
    let points = points();
    let dir = tempfile::tempdir().unwrap();
    let spec = json!({
        "size": 400,
        "identity": {"vendor": VENDOR, "product_code": PRODUCT_CODE, "revision": REVISION},
        "points": points.iter().map(Point::spec).collect::<Vec<_>>(),
    });
    let (_server, port) = start_pymodbus(dir.path(), &spec);
    // Requests of at most 8 registers, no gap bridged, identification on every poll.
    let tuned = station("tuned", "interop", port).replace(
        "timeout_ms = 2000\n",
        "timeout_ms = 2000\nmax_read_registers = 8\nmax_gap = 0\nidentity_every_polls = 1\n",
    );
    let (_config_dir, stations) = load_stations(
        &[("interop", &profile("interop", false, &points))],
        &(station("default", "interop", port) + &tuned),
    );
    let requests = |source: &Source| match source {
        Source::ModbusTcp(station) => station.counters().requests,
        other => panic!("{other:?}"),
    };

    let mut default = Source::for_station(&stations[0], &ctx(5)).unwrap();
    let mut tuned = Source::for_station(&stations[1], &ctx(6)).unwrap();
    let want = expected(&points);
    let mut asked = Vec::new();
    for source in [&mut default, &mut tuned] {
        let first = source.poll().await;
        assert_eq!(first.errors, []);
        assert_eq!(values(&first), want);
        assert!(first.identity.is_some());
        let after_first = requests(source);
        let second = source.poll().await;
        assert_eq!(values(&second), want);
        asked.push((after_first, requests(source) - after_first, second.identity));
    }
    let (default_first, default_second, default_identity) = asked[0].clone();
    let (tuned_first, tuned_second, tuned_identity) = asked[1].clone();
    // Without gaps and with short requests the same tags take many more requests.
    assert!(
        tuned_first > 2 * default_first,
        "tuned {tuned_first} requests, default {default_first}"
    );
    // The default station reads the identification again only after 60 polls.
    assert_eq!(default_second, default_first - 1);
    assert_eq!(default_identity, None);
    assert_eq!(tuned_second, tuned_first);
    assert!(tuned_identity.is_some());
}

/// The station's FC 08 / FC 11 requests against pymodbus's implementation of both functions:
/// every counter decodes to what pymodbus serves, and after another client clears them
/// (FC 08 sub-function 0x0A, as an attacker would) the rules raise one counters reset.
#[tokio::test]
async fn diagnostic_counters_decode_what_pymodbus_serves_and_a_clear_is_a_counters_reset() {
    use linesentry_agent::rules::StationRules;
    use linesentry_agent::source::modbus::diag::{diagnostics_request, SUB_CLEAR_COUNTERS};
    use linesentry_event::SeverityMap;
    use tokio_modbus::client::Client as _;

    let points = points();
    let dir = tempfile::tempdir().unwrap();
    let preset = [
        ("BusMessage", "bus_message_count", 4660),
        ("BusCommunicationError", "bus_comm_error_count", 2),
        ("BusExceptionError", "bus_exception_error_count", 3),
        ("DeviceMessage", "server_message_count", 4321),
        ("DeviceNoResponse", "server_no_response_count", 5),
        ("Event", "comm_event_count", 777),
    ];
    let spec = json!({
        "size": 400,
        "identity": {"vendor": VENDOR, "product_code": PRODUCT_CODE, "revision": REVISION},
        "points": points.iter().map(Point::spec).collect::<Vec<_>>(),
        "diagnostics": preset.iter().map(|(py, _, v)| ((*py).to_owned(), json!(v)))
            .collect::<serde_json::Map<_, _>>(),
    });
    let (_server, port) = start_pymodbus(dir.path(), &spec);
    let text = format!(
        "{}\n[diagnostics]\nevery_s = 1\n",
        profile("interop_diag", false, &points)
    );
    let (_config_dir, stations) = load_stations(
        &[("interop_diag", &text)],
        &station("diag", "interop_diag", port),
    );
    let mut source = Source::for_station(&stations[0], &ctx(7)).unwrap();
    let diag = |result: &linesentry_agent::source::PollResult| {
        values(result)
            .into_iter()
            .filter_map(|(tag, v)| Some((tag.strip_prefix("_modbus.diag.")?.to_owned(), v)))
            .collect::<std::collections::BTreeMap<_, _>>()
    };

    let first = source.poll().await;
    assert_eq!(first.errors, []);
    let want: std::collections::BTreeMap<String, Value> = preset
        .iter()
        .map(|(_, name, v)| ((*name).to_owned(), Value::UInt(*v)))
        .collect();
    assert_eq!(diag(&first), want);

    // Another client clears the counters.
    let mut intruder = tokio_modbus::client::tcp::connect(([127, 0, 0, 1], port).into())
        .await
        .unwrap();
    let echo = intruder
        .call(diagnostics_request(SUB_CLEAR_COUNTERS, 0))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        echo,
        tokio_modbus::Response::Custom(0x08, vec![0x00, 0x0A, 0x00, 0x00].into())
    );
    // The profile reads diagnostic counters every second: the next poll past that re-reads
    // them (the source runs on the real clock against a real peer).
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let second = source.poll().await;
    assert_eq!(second.errors, []);
    assert!(
        diag(&second).values().all(|v| *v == Value::UInt(0)),
        "{:?}",
        diag(&second)
    );
    assert_eq!(diag(&second).len(), preset.len());

    let mut rules = StationRules::new(
        "gw-interop".into(),
        "diag".into(),
        std::sync::Arc::new(SeverityMap::default()),
        linesentry_agent::runtime::rule_tags(&stations[0].profile),
    );
    let now = linesentry_event::Timestamp::now();
    let loud = |events: Vec<linesentry_event::SecurityEvent>| -> Vec<_> {
        events
            .into_iter()
            .filter(|e| e.severity >= linesentry_event::Severity::Warn)
            .collect()
    };
    assert!(loud(rules.observe(&first, now)).is_empty());
    let events = loud(rules.observe(&second, now));
    let kinds: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(kinds, ["diag.counters_reset"]);
    assert_eq!(
        events[0].event_data["counters"]["bus_message_count"]["previous"],
        4660
    );
}
