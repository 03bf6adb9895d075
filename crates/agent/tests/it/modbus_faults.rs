//! Modbus stations against misbehaving devices over real sockets and a real (pseudo) serial
//! line: one device failing must never stall another (ANCHORS.md complaints 1 and 9).
//!
//! TCP devices run in-process on loopback: tokio-modbus's own server for healthy devices,
//! raw sockets for the ones that misbehave. RTU units are answered by a slave simulator on
//! the master side of a pseudo-terminal; the stations open the slave side by path with
//! tokio-serial, exactly as they would open `/dev/ttyUSB0`.

use crate::support::modbus_common as common;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::time::Duration;

use common::{
    garbage_server, load_stations, poll_like_the_agent, refused_address, relink, silent_server,
    Fault, MapServer, RegisterMap, RtuBus, ScriptedServer, Unit,
};
use linesentry_agent::source::modbus::breaker::BreakerState;
use linesentry_agent::source::modbus::rtu::TokioSerial;
use linesentry_agent::source::modbus::{
    BusOptions, RtuBuses, RtuStation, StationOptions, TcpStation,
};
use linesentry_agent::source::StationConfig;
use linesentry_agent::source::{SourceError, Value};

/// Blocks: holding registers 0-2, holding register 40, input register 5.
const PROBE: &str = r#"
[profile]
name = "probe"
protocol = "modbus"

[[tags]]
name = "counter"
role = "counter"
type = "u32"
area = "holding_register"
address = 0

[[tags]]
name = "speed"
role = "measurement"
type = "u16"
area = "holding_register"
address = 2

[[tags]]
name = "setpoint"
role = "setpoint"
type = "u16"
area = "holding_register"
address = 40

[[tags]]
name = "level"
role = "measurement"
type = "u16"
area = "input_register"
address = 5
"#;

const PROBE_TAGS: usize = 4;

fn tcp_station(id: &str, address: &str, timeout_ms: u64) -> String {
    format!(
        "[[stations]]\nid = \"{id}\"\nprofile = \"probe\"\nsource = \"modbus_tcp\"\n\
         address = \"{address}\"\npoll_interval_ms = 50\ntimeout_ms = {timeout_ms}\n\n"
    )
}

fn tcp_stations(
    stations: &[(&str, String)],
    timeout_ms: u64,
) -> (tempfile::TempDir, Vec<StationConfig>) {
    let text: String = stations
        .iter()
        .map(|(id, address)| tcp_station(id, address, timeout_ms))
        .collect();
    load_stations(&[("probe", PROBE)], &text)
}

fn options(identity_every: u32) -> StationOptions {
    StationOptions {
        identity_every,
        ..StationOptions::default()
    }
}

fn value(result: &linesentry_agent::source::PollResult, tag: &str) -> Option<Value> {
    result
        .readings
        .iter()
        .find(|r| &*r.tag == tag)
        .map(|r| r.value.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_a_garbage_and_a_refusing_device_do_not_slow_the_healthy_ones_and_are_isolated() {
    let healthy_a = MapServer::start(RegisterMap::counting(100)).await;
    let healthy_b = MapServer::start(RegisterMap::counting(100)).await;
    let (silent, _silent_task) = silent_server().await;
    let (garbage, _garbage_task) = garbage_server().await;
    let refused = refused_address();
    let (_dir, configs) = tcp_stations(
        &[
            ("healthy-a", healthy_a.addr.to_string()),
            ("healthy-b", healthy_b.addr.to_string()),
            ("silent", silent.to_string()),
            ("garbage", garbage.to_string()),
            ("refused", refused.to_string()),
        ],
        100,
    );
    let interval = Duration::from_millis(50);
    let run = Duration::from_secs(3);
    let mut tasks = Vec::new();
    for config in &configs {
        let station = TcpStation::with_options(config, &options(60)).unwrap();
        tasks.push(tokio::spawn(poll_like_the_agent(
            station,
            interval,
            run,
            PROBE_TAGS,
            Duration::ZERO,
        )));
    }
    let mut done = Vec::new();
    for task in tasks {
        done.push(task.await.unwrap());
    }

    let expected = (run.as_millis() / interval.as_millis()) as u64;
    for (station, achieved) in &done[..2] {
        assert!(
            achieved.complete * 10 >= expected * 9,
            "a healthy station achieved {} of {expected} complete polls: {achieved:?}",
            achieved.complete
        );
        assert_eq!(station.counters().polls_failed, 0);
    }
    for (name, (station, achieved)) in ["silent", "garbage", "refused"].iter().zip(&done[2..]) {
        let c = station.counters();
        assert!(
            matches!(
                station.breaker_state(),
                BreakerState::Open { .. } | BreakerState::HalfOpen
            ),
            "{name}: {:?}",
            station.breaker_state()
        );
        assert!(c.circuit_opens >= 1, "{name}: {c:?}");
        assert!(
            (3..=6).contains(&c.connect_attempts),
            "{name}: {} connection attempts in {run:?}: {c:?}",
            c.connect_attempts
        );
        assert!(
            c.polls_skipped * 10 >= achieved.polls * 7,
            "{name}: most polls return at once while isolated: {c:?}"
        );
        assert_eq!(achieved.complete, 0);
        assert!(achieved
            .errors
            .iter()
            .any(|e| e.starts_with("isolated after repeated failures")));
    }
    let silent_c = done[2].0.counters();
    let garbage_c = done[3].0.counters();
    let refused_c = done[4].0.counters();
    assert!(silent_c.timeouts >= 3, "{silent_c:?}");
    assert!(garbage_c.transport_errors >= 3, "{garbage_c:?}");
    assert!(
        refused_c.connect_failures >= 3 && refused_c.requests == 0,
        "{refused_c:?}"
    );
}

#[tokio::test]
async fn a_device_that_drops_the_connection_mid_request_and_comes_back_delivers_data_again() {
    let registers: Vec<u16> = (0..100).collect();
    // Request 5 is the first of the second poll (poll 1: three blocks, then identification).
    let server = ScriptedServer::start(
        registers,
        HashMap::from([(5, Fault::GoAway(Duration::from_millis(600)))]),
    )
    .await;
    let (_dir, configs) = tcp_stations(&[("flaky", server.addr.to_string())], 200);
    let station = TcpStation::with_options(&configs[0], &options(60)).unwrap();
    let (station, achieved) = poll_like_the_agent(
        station,
        Duration::from_millis(50),
        Duration::from_secs(4),
        PROBE_TAGS,
        Duration::from_millis(2500),
    )
    .await;
    let last = achieved.last.clone().unwrap();
    assert!(last.reachable && last.errors.is_empty(), "{last:?}");
    assert_eq!(value(&last, "setpoint"), Some(Value::UInt(40)));
    assert!(
        achieved
            .errors
            .iter()
            .any(|e| e.contains("closed the connection")),
        "{:?}",
        achieved.errors
    );
    // About 30 polls after 2.5 s; the device is back well before.
    assert!(achieved.complete_after >= 25, "{achieved:?}");
    let c = station.counters();
    assert!(c.reconnects >= 1, "{c:?}");
    assert_eq!(
        station.breaker_state(),
        BreakerState::Closed { failures: 0 }
    );
    assert!(server.connections.load(std::sync::atomic::Ordering::SeqCst) >= 2);
}

#[tokio::test]
async fn an_answer_with_the_wrong_transaction_id_is_counted_the_link_is_renewed_and_later_polls_are_fine(
) {
    let registers: Vec<u16> = (0..100).collect();
    // Request 6 is the second block of the second poll.
    let server =
        ScriptedServer::start(registers, HashMap::from([(6, Fault::WrongTransactionId)])).await;
    let (_dir, configs) = tcp_stations(&[("mixed-up", server.addr.to_string())], 500);
    let mut station = TcpStation::with_options(&configs[0], &options(60)).unwrap();

    let first = station.poll().await;
    assert_eq!(first.readings.len(), PROBE_TAGS, "{first:?}");
    let second = station.poll().await;
    assert_eq!(
        value(&second, "counter"),
        Some(Value::UInt(1)),
        "the block read before the mix-up is kept"
    );
    assert!(value(&second, "setpoint").is_none(), "never a wrong value");
    assert!(
        matches!(&second.errors[0], SourceError::Transport(m) if m.contains("does not belong to the request")),
        "{second:?}"
    );
    assert!(!station.is_connected(), "the connection is dropped");
    for _ in 0..8 {
        let result = station.poll().await;
        assert_eq!(result.readings.len(), PROBE_TAGS, "{result:?}");
        assert_eq!(value(&result, "setpoint"), Some(Value::UInt(40)));
    }
    let c = station.counters();
    assert_eq!((c.protocol_errors, c.reconnects), (1, 1), "{c:?}");
}

#[tokio::test]
async fn a_poll_dropped_mid_request_does_not_leave_its_late_answer_for_the_next_poll() {
    let registers: Vec<u16> = (0..100).collect();
    let server = ScriptedServer::start(
        registers,
        HashMap::from([(1, Fault::Delay(Duration::from_millis(300)))]),
    )
    .await;
    let (_dir, configs) = tcp_stations(&[("slow", server.addr.to_string())], 1000);
    let mut station = TcpStation::with_options(&configs[0], &options(60)).unwrap();
    let dropped = tokio::time::timeout(Duration::from_millis(50), station.poll()).await;
    assert!(
        dropped.is_err(),
        "the first answer comes too late for the caller"
    );
    let result = station.poll().await;
    assert_eq!(
        value(&result, "counter"),
        Some(Value::UInt(1)),
        "{result:?}"
    );
    assert_eq!(value(&result, "setpoint"), Some(Value::UInt(40)));
    assert_eq!(station.counters().protocol_errors, 0);
    assert_eq!(
        server.connections.load(std::sync::atomic::Ordering::SeqCst),
        2,
        "the next poll starts on a fresh connection"
    );
}

#[tokio::test]
async fn an_exception_on_one_block_keeps_the_other_blocks_readings_and_the_device_in_service() {
    // 30 registers: the block at holding register 40 is past the end of the map.
    let server = MapServer::start(RegisterMap::counting(30)).await;
    let (_dir, configs) = tcp_stations(&[("partial", server.addr.to_string())], 500);
    let mut station = TcpStation::with_options(&configs[0], &options(60)).unwrap();
    for _ in 0..5 {
        let result = station.poll().await;
        assert!(result.reachable);
        assert_eq!(value(&result, "counter"), Some(Value::UInt(1)));
        assert_eq!(value(&result, "speed"), Some(Value::UInt(2)));
        assert_eq!(value(&result, "level"), Some(Value::UInt(1005)));
        assert_eq!(value(&result, "setpoint"), None);
        assert_eq!(
            result.errors,
            [SourceError::Exception {
                code: 2,
                name: "illegal data address".into(),
                what: "holding register 40 (tag setpoint)".into(),
            }]
        );
    }
    assert_eq!(
        station.breaker_state(),
        BreakerState::Closed { failures: 0 }
    );
    assert_eq!(station.counters().exceptions.get(&2), Some(&5));
}

#[tokio::test]
async fn a_response_of_the_wrong_length_fails_its_block_only_and_never_gives_a_wrong_value() {
    let registers: Vec<u16> = (0..100).collect();
    // Request 2 is the block at holding register 40: answered with no register at all.
    let server = ScriptedServer::start(registers, HashMap::from([(2, Fault::ShortResponse)])).await;
    let (_dir, configs) = tcp_stations(&[("short", server.addr.to_string())], 500);
    let mut station = TcpStation::with_options(&configs[0], &options(60)).unwrap();
    let result = station.poll().await;
    assert_eq!(value(&result, "counter"), Some(Value::UInt(1)));
    // The scripted device serves input registers from the same table.
    assert_eq!(value(&result, "level"), Some(Value::UInt(5)));
    assert_eq!(value(&result, "setpoint"), None);
    assert!(
        matches!(&result.errors[0], SourceError::Decode { what, .. } if what == "holding register 40 (tag setpoint)"),
        "{result:?}"
    );
    let next = station.poll().await;
    assert_eq!(value(&next, "setpoint"), Some(Value::UInt(40)));
    assert!(
        station.is_connected(),
        "a well-framed answer keeps the connection"
    );
}

#[tokio::test]
async fn identification_is_read_on_connect_then_every_n_polls_and_not_asked_of_a_device_without_it()
{
    let with = MapServer::start(RegisterMap::counting(100)).await;
    let without = MapServer::start(RegisterMap {
        identity: None,
        ..RegisterMap::counting(100)
    })
    .await;
    let (_dir, configs) = tcp_stations(
        &[
            ("with", with.addr.to_string()),
            ("without", without.addr.to_string()),
        ],
        500,
    );
    let mut a = TcpStation::with_options(&configs[0], &options(3)).unwrap();
    let mut b = TcpStation::with_options(&configs[1], &options(3)).unwrap();
    let mut identities = Vec::new();
    for _ in 0..7 {
        identities.push(a.poll().await.identity);
        b.poll().await;
    }
    let read: Vec<usize> = identities
        .iter()
        .enumerate()
        .filter_map(|(i, id)| id.as_ref().map(|_| i))
        .collect();
    assert_eq!(read, [0, 3, 6]);
    let identity = identities[0].clone().unwrap();
    assert_eq!(identity.vendor.as_deref(), Some("Acme"));
    assert_eq!(identity.product_code.as_deref(), Some("PX-1"));
    assert_eq!(identity.revision.as_deref(), Some("1.0"));
    let asked = |s: &MapServer| {
        s.identity_requests
            .load(std::sync::atomic::Ordering::SeqCst)
    };
    assert_eq!(asked(&with), 3);
    assert_eq!(
        asked(&without),
        1,
        "illegal function: not asked again on this connection"
    );
    assert_eq!(b.breaker_state(), BreakerState::Closed { failures: 0 });
}

// --- Modbus RTU -------------------------------------------------------------------------

fn rtu_stations(
    device: &str,
    units: &[u8],
    timeout_ms: u64,
) -> (tempfile::TempDir, Vec<StationConfig>) {
    let profile = PROBE.replace("area = \"input_register\"", "area = \"holding_register\"");
    let mut text = String::new();
    for unit in units {
        writeln!(
            text,
            "[[stations]]\nid = \"unit-{unit}\"\nprofile = \"probe\"\nsource = \"modbus_rtu\"\n\
             device = \"{device}\"\nbaud = 115200\nparity = \"none\"\nunit_id = {unit}\n\
             poll_interval_ms = 100\ntimeout_ms = {timeout_ms}\n"
        )
        .unwrap();
    }
    load_stations(&[("probe", &profile)], &text)
}

fn rtu_bus(units: &[u8]) -> RtuBus {
    let registers: Vec<u16> = (0..100).collect();
    RtuBus::start(
        units
            .iter()
            .map(|&u| (u, Unit::Registers(registers.clone())))
            .chain([(3, Unit::Silent)])
            .collect(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn units_on_one_serial_bus_keep_their_rate_while_a_dead_unit_is_isolated() {
    let bus = rtu_bus(&[1, 2]);
    let (_dir, configs) = rtu_stations(&bus.path.to_string_lossy(), &[1, 2, 3], 60);
    let buses = RtuBuses::new(TokioSerial, BusOptions::default());
    let interval = Duration::from_millis(100);
    let run = Duration::from_secs(4);
    let measure_from = Duration::from_secs(1);
    let mut tasks = Vec::new();
    for config in &configs {
        let station = RtuStation::on_bus(config, &buses, &options(60)).unwrap();
        tasks.push(tokio::spawn(poll_like_the_agent(
            station,
            interval,
            run,
            PROBE_TAGS,
            measure_from,
        )));
    }
    let mut done = Vec::new();
    for task in tasks {
        done.push(task.await.unwrap());
    }
    let expected = (run.saturating_sub(measure_from).as_millis() / interval.as_millis()) as u64;
    for (station, achieved) in &done[..2] {
        assert!(
            achieved.complete_after * 10 >= expected * 9,
            "unit {:?}: {} of {expected} complete polls once the dead unit was isolated: {achieved:?}",
            station.bus(),
            achieved.complete_after
        );
        assert_eq!(station.counters().polls_failed, 0);
    }
    let (dead, dead_achieved) = &done[2];
    assert!(
        matches!(
            dead.breaker_state(),
            BreakerState::Open { .. } | BreakerState::HalfOpen
        ),
        "{:?}",
        dead.breaker_state()
    );
    assert_eq!(dead_achieved.reachable, 0);
    assert!(
        (3..=6).contains(&bus.heard(3)),
        "the dead unit was asked {} times in {run:?}",
        bus.heard(3)
    );
    assert!(dead.counters().timeouts >= 3);
    assert!(
        dead.bus()
            .counters()
            .requests
            .abs_diff(bus.heard(1) + bus.heard(2) + bus.heard(3))
            <= 3
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_serial_port_disappears_every_unit_reports_it_and_all_resume_when_it_returns() {
    let link_dir = tempfile::tempdir().unwrap();
    let link = link_dir.path().join("ttyBUS");
    let mut bus = rtu_bus(&[1, 2]);
    relink(&link, &bus.path).unwrap();
    let (_dir, configs) = rtu_stations(&link.to_string_lossy(), &[1, 2], 200);
    let buses = RtuBuses::new(TokioSerial, BusOptions::default());
    let mut stations: Vec<RtuStation> = configs
        .iter()
        .map(|c| RtuStation::on_bus(c, &buses, &options(60)).unwrap())
        .collect();

    for station in &mut stations {
        let result = station.poll().await;
        assert_eq!(result.readings.len(), PROBE_TAGS, "{result:?}");
        assert!(result.identity.is_some());
    }

    bus.unplug();
    for station in &mut stations {
        let result = station.poll().await;
        assert!(!result.reachable, "{result:?}");
        match &result.errors[..] {
            [SourceError::Connect(message), ..] => {
                assert!(message.contains("ttyBUS"), "{message}");
            }
            other => panic!("expected the port named in a connect error, got {other:?}"),
        }
    }

    let replacement = rtu_bus(&[1, 2]);
    relink(&link, &replacement.path).unwrap();
    let mut back = [false, false];
    linesentry_testkit::wait_until_async(Duration::from_secs(5), async || {
        for (station, back) in stations.iter_mut().zip(back.iter_mut()) {
            let result = station.poll().await;
            if result.readings.len() == PROBE_TAGS {
                *back = true;
                assert_eq!(value(&result, "setpoint"), Some(Value::UInt(40)));
            }
        }
        back.iter().all(|b| *b).then_some(())
    })
    .await
    .unwrap_or_else(|| panic!("units did not resume on the new bus within 5 s: {back:?}"));
    let c = stations[0].bus().counters();
    assert!(c.port_failures >= 1 && c.opens >= 2, "{c:?}");
    for station in &stations {
        assert_eq!(
            station.counters().circuit_opens,
            0,
            "a bus failure is not held against the units"
        );
    }
    assert!(replacement.heard(1) >= 1 && replacement.heard(2) >= 1);
}
