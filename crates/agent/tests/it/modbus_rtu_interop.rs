//! Modbus RTU against an independent peer: a pymodbus serial server
//! (`crates/testkit/peers/pymodbus_rtu_server.py`, pymodbus + pyserial) on one end of a socat
//! pseudo-terminal pair; the stations open the other end by path with tokio-serial, through
//! the agent's serial-bus arbiter, exactly as they open `/dev/ttyUSB0`.
//!
//! The data is the table of the TCP interop test (`crates/agent/tests/it/support/modbus_points.rs`): every
//! type in every byte order, encoded by pymodbus and Python's `struct`, never by our codec.
//! Two unit ids answer on the one bus; each station is built through the config loader and
//! `Source::for_station`, polled, and every decoded value is compared exactly.

use crate::support::modbus_common as common;
use crate::support::modbus_points as points;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::load_stations;
use linesentry_agent::source::{DeviceIdentity, Source, SourceError, Value};
use linesentry_testkit::PythonPeer;
use points::{
    expected, points, profile, values, ChildGuard, Point, PRODUCT_CODE, REVISION, VENDOR,
};
use serde_json::json;

/// A pseudo-terminal pair linked by socat: bytes written to one end come out of the other.
/// `peer` and `agent` are symbolic links to the two `/dev/pts/N` slave ends.
struct PtyPair {
    _socat: ChildGuard,
    peer: PathBuf,
    agent: PathBuf,
}

fn pty_pair(dir: &Path) -> PtyPair {
    let (peer, agent) = (dir.join("peer-tty"), dir.join("agent-tty"));
    let end = |link: &Path| format!("pty,raw,echo=0,link={}", link.display());
    let socat = Command::new("socat")
        .args([end(&peer), end(&agent)])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("socat (Debian package socat; scripts/test installs it)");
    let socat = ChildGuard(socat);
    linesentry_testkit::wait_until(Duration::from_secs(30), || {
        (peer.exists() && agent.exists()).then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "socat did not create {} and {} within 30 s",
            peer.display(),
            agent.display()
        )
    });
    PtyPair {
        _socat: socat,
        peer,
        agent,
    }
}

fn station(id: &str, profile: &str, device: &Path, unit: u8) -> String {
    format!(
        "[[stations]]\nid = \"{id}\"\nprofile = \"{profile}\"\nsource = \"modbus_rtu\"\n\
         device = \"{}\"\nbaud = 19200\nparity = \"none\"\nunit_id = {unit}\n\
         poll_interval_ms = 1000\ntimeout_ms = 3000\n\n",
        device.display()
    )
}

fn ctx(seed: u64) -> linesentry_agent::source::SourceContext {
    linesentry_agent::source::SourceContext {
        data_dir: std::env::temp_dir(),
        gateway_id: "gw-interop".into(),
        seed,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_type_and_byte_order_decodes_exactly_what_a_pymodbus_rtu_server_encoded() {
    let points = points();
    let dir = tempfile::tempdir().unwrap();
    let pty = pty_pair(dir.path());
    let spec = json!({
        "size": 400,
        "units": [1, 2],
        "baud": 19200,
        // A pseudo-terminal refuses parity (EINVAL): none on both ends.
        "parity": "N",
        "identity": {"vendor": VENDOR, "product_code": PRODUCT_CODE, "revision": REVISION},
        "points": points.iter().map(Point::spec).collect::<Vec<_>>(),
    });
    let spec_path = dir.path().join("spec.json");
    std::fs::write(&spec_path, serde_json::to_vec_pretty(&spec).unwrap()).unwrap();
    let _server = PythonPeer::start(
        "pymodbus_rtu_server.py",
        [pty.peer.as_os_str(), spec_path.as_os_str()],
        &format!("READY {}", pty.peer.display()),
        Duration::from_secs(30),
    );

    // The same device through a one-based profile: addresses written one higher.
    let one_based: Vec<Point> = points
        .iter()
        .filter(|p| ["coil_on", "di_on", "u16_max", "f64_dcba", "text"].contains(&p.name.as_str()))
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
            ("rtu_zero", &profile("rtu_zero", false, &points)),
            ("rtu_one", &profile("rtu_one", true, &one_based)),
            ("rtu_beyond", &profile("rtu_beyond", false, &beyond)),
        ],
        &(station("unit-1", "rtu_zero", &pty.agent, 1)
            + &station("unit-2", "rtu_zero", &pty.agent, 2)
            + &station("unit-2-one-based", "rtu_one", &pty.agent, 2)
            + &station("unit-1-beyond", "rtu_beyond", &pty.agent, 1)),
    );
    let want = expected(&points);
    let identity = Some(DeviceIdentity {
        vendor: Some(VENDOR.into()),
        product_code: Some(PRODUCT_CODE.into()),
        revision: Some(REVISION.into()),
        ..DeviceIdentity::default()
    });

    // Both units share the one port through its arbiter.
    let mut units = Vec::new();
    for (i, config) in stations[..2].iter().enumerate() {
        let source = Source::for_station(config, &ctx(i as u64)).unwrap();
        assert!(matches!(source, Source::ModbusRtu(_)));
        units.push(source);
    }
    for (unit, source) in units.iter_mut().enumerate() {
        let result = source.poll().await;
        assert!(result.reachable, "unit {}: {result:?}", unit + 1);
        assert_eq!(result.errors, [], "unit {}", unit + 1);
        let got = values(&result);
        for (tag, value) in &want {
            assert_eq!(got.get(tag), Some(value), "unit {}, tag `{tag}`", unit + 1);
        }
        assert_eq!(got.len(), want.len());
        assert_eq!(result.identity, identity, "unit {}", unit + 1);
    }
    // Polled again, concurrently: the arbiter keeps one request on the line at a time.
    let (first, second) = units.split_at_mut(1);
    let (a, b) = tokio::join!(first[0].poll(), second[0].poll());
    for result in [a, b] {
        assert_eq!(result.errors, []);
        assert_eq!(values(&result), want);
    }

    let mut one = Source::for_station(&stations[2], &ctx(3)).unwrap();
    let result = one.poll().await;
    assert_eq!(result.errors, []);
    assert_eq!(values(&result), expected(&one_based));

    let mut partial = Source::for_station(&stations[3], &ctx(4)).unwrap();
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
