//! The Modbus TCP station simulator over real sockets, read with tokio-modbus's own TCP
//! client (not the agent's poller) and decoded with the agent's codec.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use linesentry_agent::source::modbus::codec::{decode_bit, decode_registers, TagEncoding};
use linesentry_agent::source::{Profile, TagSpec};
use linesentry_agent::source::{RegisterArea, TagRole, Value};
use linesentry_sim::{self as sim, Action, Schedule, SimError, SimHandle, SimOptions};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_modbus::client::{Context, Reader, Writer};
use tokio_modbus::prelude::{ExceptionCode, ReadCode};

/// Client-side deadline of every request.
const TIMEOUT: Duration = Duration::from_millis(300);

fn profile(name: &str) -> Arc<Profile> {
    let path = Path::new(repo!())
        .join("devices")
        .join(format!("{name}.toml"));
    sim::load_profile(&path).unwrap_or_else(|e| panic!("{e}"))
}

fn tag<'p>(profile: &'p Profile, name: &str) -> &'p TagSpec {
    profile.tag(name).unwrap_or_else(|| panic!("no tag {name}"))
}

async fn start_with(name: &str, options: SimOptions) -> SimHandle {
    sim::modbus::start(profile(name), &options).await.unwrap()
}

async fn start(name: &str) -> SimHandle {
    start_with(name, SimOptions::default()).await
}

/// A simulator whose values only change when told to: one tick at the start, then none for
/// a minute.
async fn start_still(name: &str) -> SimHandle {
    let handle = start_with(
        name,
        SimOptions {
            tick: Duration::from_secs(60),
            ..SimOptions::default()
        },
    )
    .await;
    wait_until("the model ticked once", Duration::from_secs(2), || {
        sim::lock(handle.model()).ticks() > 0
    })
    .await;
    handle
}

async fn connect(handle: &SimHandle) -> Context {
    tokio_modbus::client::tcp::connect(handle.local_addr())
        .await
        .unwrap()
}

async fn wait_until(what: &str, limit: Duration, mut condition: impl FnMut() -> bool) {
    linesentry_testkit::wait_until_async(limit, async || condition().then_some(()))
        .await
        .unwrap_or_else(|| panic!("not within {limit:?}: {what}"));
}

/// What a client got for one request.
#[derive(Debug, PartialEq)]
enum Answer<T> {
    Value(T),
    Exception(ExceptionCode),
    /// The link or the frame failed (protocol or transport error).
    Failed(String),
    TimedOut,
}

impl<T> Answer<T> {
    fn value(self) -> T
    where
        T: std::fmt::Debug,
    {
        match self {
            Answer::Value(v) => v,
            other => panic!("expected a value, got {:?}", other.map(|_| ())),
        }
    }

    fn map<U>(self, f: impl FnOnce(T) -> U) -> Answer<U> {
        match self {
            Answer::Value(v) => Answer::Value(f(v)),
            Answer::Exception(e) => Answer::Exception(e),
            Answer::Failed(e) => Answer::Failed(e),
            Answer::TimedOut => Answer::TimedOut,
        }
    }
}

async fn ask<T>(request: impl std::future::Future<Output = tokio_modbus::Result<T>>) -> Answer<T> {
    match tokio::time::timeout(TIMEOUT, request).await {
        Ok(Ok(Ok(v))) => Answer::Value(v),
        Ok(Ok(Err(code))) => Answer::Exception(code),
        Ok(Err(e)) => Answer::Failed(e.to_string()),
        Err(_) => Answer::TimedOut,
    }
}

/// Reads one tag and decodes it with the agent's codec.
async fn read(ctx: &mut Context, spec: &TagSpec) -> Answer<Value> {
    let address = spec.modbus.expect("a Modbus tag");
    let (start, count) = (address.index, spec.registers());
    if address.area.is_bit() {
        let bits = match address.area {
            RegisterArea::Coil => ask(ctx.read_coils(start, 1)).await,
            _ => ask(ctx.read_discrete_inputs(start, 1)).await,
        };
        return bits.map(|b| decode_bit(&b).unwrap());
    }
    let regs = match address.area {
        RegisterArea::HoldingRegister => ask(ctx.read_holding_registers(start, count)).await,
        _ => ask(ctx.read_input_registers(start, count)).await,
    };
    let encoding = TagEncoding {
        data_type: spec.data_type,
        order: spec.order,
        length: spec.length,
        bit: address.bit,
        scale: spec.scale,
        offset: spec.offset,
    };
    regs.map(|r| decode_registers(&encoding, &r).unwrap())
}

/// The state name a status or mode value stands for.
fn state(spec: &TagSpec, value: &Value) -> String {
    let raw = match value {
        Value::Bool(b) => i64::from(*b),
        Value::Int(i) => *i,
        Value::UInt(u) => i64::try_from(*u).unwrap(),
        other => panic!("{} is not a state value: {other:?}", spec.name),
    };
    spec.state_name(raw)
        .unwrap_or_else(|| panic!("{} has no state {raw}", spec.name))
        .to_owned()
}

/// Every tag reads back as the model's value, and that value is plausible for its role.
async fn every_tag_reads_back_plausibly(name: &str) {
    let sim = start_still(name).await;
    let profile = profile(name);
    let mut ctx = connect(&sim).await;
    for spec in &profile.tags {
        let value = read(&mut ctx, spec).await.value();
        let expected = sim::lock(sim.model()).value(&spec.name).cloned();
        assert_eq!(Some(&value), expected.as_ref(), "{}", spec.name);
        match spec.role {
            TagRole::Status | TagRole::Mode if !spec.states.is_empty() => {
                state(spec, &value);
            }
            TagRole::Firmware => assert_eq!(value, Value::Text("2.4.1".into())),
            TagRole::Counter => assert!(value.as_f64().unwrap() >= 1.0, "{value}"),
            _ => {}
        }
        if let Some(limits) = spec.limits {
            let v = value.as_f64().unwrap();
            assert!(limits.contains(v), "{} = {v} outside {limits:?}", spec.name);
        }
    }
    sim.shutdown().await;
}

#[tokio::test]
async fn every_stamping_press_register_decodes_to_the_model_value_within_its_limits() {
    every_tag_reads_back_plausibly("stamping_press").await;
}

#[tokio::test]
async fn every_reflow_oven_register_decodes_to_the_model_value_within_its_limits() {
    every_tag_reads_back_plausibly("reflow_oven").await;
}

#[tokio::test]
async fn measurements_stay_within_limits_while_the_station_ticks_at_10_hz() {
    let sim = start("reflow_oven").await;
    let profile = profile("reflow_oven");
    let mut ctx = connect(&sim).await;
    let temp = tag(&profile, "zone3_temp");
    let mut seen = Vec::new();
    for _ in 0..8 {
        let v = read(&mut ctx, temp).await.value().as_f64().unwrap();
        assert!((0.0..=300.0).contains(&v), "{v}");
        seen.push(v);
        // Reads paced past the 100 ms tick, so that consecutive ones see different ticks.
        tokio::time::sleep(Duration::from_millis(120)).await;
    }
    let moved = seen.windows(2).any(|w| (w[0] - w[1]).abs() > 1e-9);
    assert!(moved, "values move: {seen:?}");
    sim.shutdown().await;
}

#[tokio::test]
async fn fault_makes_the_status_register_show_the_fault_state_until_recover() {
    for (name, status) in [
        ("stamping_press", "press_state"),
        ("reflow_oven", "oven_state"),
    ] {
        let sim = start(name).await;
        let profile = profile(name);
        let spec = tag(&profile, status);
        let mut ctx = connect(&sim).await;
        assert_ne!(state(spec, &read(&mut ctx, spec).await.value()), "fault");
        sim.apply(Action::Fault);
        assert_eq!(state(spec, &read(&mut ctx, spec).await.value()), "fault");
        sim.apply(Action::Recover);
        assert_ne!(state(spec, &read(&mut ctx, spec).await.value()), "fault");
        sim.shutdown().await;
    }
}

#[tokio::test]
async fn mode_program_switches_the_mode_register_to_program_and_mode_run_back() {
    let sim = start("stamping_press").await;
    let profile = profile("stamping_press");
    let spec = tag(&profile, "press_mode");
    let mut ctx = connect(&sim).await;
    assert_eq!(
        state(spec, &read(&mut ctx, spec).await.value()),
        "continuous"
    );
    sim.apply(Action::ModeProgram);
    assert_eq!(state(spec, &read(&mut ctx, spec).await.value()), "program");
    sim.apply(Action::ModeRun);
    assert_eq!(
        state(spec, &read(&mut ctx, spec).await.value()),
        "continuous"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn setpoint_change_changes_the_setpoint_register_and_stays_within_limits() {
    for (name, setpoint) in [
        ("stamping_press", "tonnage_setpoint"),
        ("reflow_oven", "zone1_setpoint"),
    ] {
        let sim = start(name).await;
        let profile = profile(name);
        let spec = tag(&profile, setpoint);
        let mut ctx = connect(&sim).await;
        let before = read(&mut ctx, spec).await.value().as_f64().unwrap();
        sim.apply(Action::SetpointChange);
        let after = read(&mut ctx, spec).await.value().as_f64().unwrap();
        assert!(
            (after - before).abs() > 0.01,
            "{setpoint} stayed at {before}"
        );
        assert!(spec.limits.unwrap().contains(after), "{after}");
        sim.shutdown().await;
    }
}

#[tokio::test]
async fn alarm_disable_clears_the_alarm_enable_coil() {
    let sim = start("stamping_press").await;
    let profile = profile("stamping_press");
    let spec = tag(&profile, "overload_alarm_enable");
    let mut ctx = connect(&sim).await;
    assert_eq!(read(&mut ctx, spec).await, Answer::Value(Value::Bool(true)));
    sim.apply(Action::AlarmDisable);
    assert_eq!(
        read(&mut ctx, spec).await,
        Answer::Value(Value::Bool(false))
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn freeze_stops_measurements_from_changing() {
    let sim = start_with(
        "stamping_press",
        SimOptions {
            tick: Duration::from_millis(10),
            ..SimOptions::default()
        },
    )
    .await;
    let profile = profile("stamping_press");
    let spec = tag(&profile, "peak_tonnage");
    let mut ctx = connect(&sim).await;
    sim.apply(Action::Freeze);
    let first = read(&mut ctx, spec).await.value();
    for _ in 0..5 {
        // Several 10 ms ticks pass between reads: a frozen value must not change over them.
        tokio::time::sleep(Duration::from_millis(40)).await;
        assert_eq!(read(&mut ctx, spec).await.value(), first);
    }
    sim.shutdown().await;
}

fn objects(response: &tokio_modbus::prelude::ReadDeviceIdentificationResponse) -> Vec<String> {
    response
        .device_id_objects
        .iter()
        .map(|o| o.value_as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn identity_change_and_firmware_change_change_the_device_identification() {
    let sim = start("stamping_press").await;
    let profile = profile("stamping_press");
    let mut ctx = connect(&sim).await;
    let basic = ask(ctx.read_device_identification(ReadCode::Basic, 0))
        .await
        .value();
    assert_eq!(
        objects(&basic),
        ["LineSentry Simulation", "LS-STAMPING_PRESS", "2.4.1"]
    );

    sim.apply(Action::FirmwareChange);
    let after_flash = ask(ctx.read_device_identification(ReadCode::Basic, 0))
        .await
        .value();
    assert_eq!(objects(&after_flash)[2], "2.5.0");
    let firmware = tag(&profile, "firmware");
    assert_eq!(
        read(&mut ctx, firmware).await,
        Answer::Value(Value::Text("2.5.0".into()))
    );

    sim.apply(Action::IdentityChange);
    let swapped = ask(ctx.read_device_identification(ReadCode::Regular, 0))
        .await
        .value();
    let swapped = objects(&swapped);
    assert_ne!(swapped[0], "LineSentry Simulation");
    assert_ne!(swapped[1], "LS-STAMPING_PRESS");
    assert_eq!(swapped[2], "2.5.0");
    assert_eq!(swapped.len(), 4, "regular access adds the product name");
    let one = ask(ctx.read_device_identification(ReadCode::Specific, 1))
        .await
        .value();
    assert_eq!(objects(&one), [swapped[1].clone()]);
    sim.shutdown().await;
}

#[tokio::test]
async fn a_silent_station_lets_reads_time_out_and_normal_brings_answers_back() {
    let sim = start("stamping_press").await;
    let profile = profile("stamping_press");
    let spec = tag(&profile, "press_state");
    let mut ctx = connect(&sim).await;
    assert!(matches!(read(&mut ctx, spec).await, Answer::Value(_)));
    sim.apply(Action::Silent);
    assert_eq!(read(&mut ctx, spec).await, Answer::TimedOut);
    assert_eq!(read(&mut ctx, spec).await, Answer::TimedOut);
    sim.apply(Action::Normal);
    assert!(matches!(read(&mut ctx, spec).await, Answer::Value(_)));
    sim.shutdown().await;
}

#[tokio::test]
async fn a_garbage_station_makes_the_client_fail_instead_of_returning_values() {
    let sim = start("reflow_oven").await;
    let profile = profile("reflow_oven");
    let spec = tag(&profile, "zone1_setpoint");
    sim.apply(Action::Garbage);
    for _ in 0..12 {
        // A corrupted frame may leave the client's stream unusable: one connection each.
        let mut ctx = connect(&sim).await;
        let answer = read(&mut ctx, spec).await;
        assert!(
            matches!(answer, Answer::Failed(_) | Answer::TimedOut),
            "{answer:?}"
        );
    }
    sim.apply(Action::Normal);
    let mut ctx = connect(&sim).await;
    assert!(matches!(read(&mut ctx, spec).await, Answer::Value(_)));
    sim.shutdown().await;
}

#[tokio::test]
async fn exceptions_mode_answers_every_read_with_exception_02() {
    let sim = start("stamping_press").await;
    let profile = profile("stamping_press");
    let mut ctx = connect(&sim).await;
    sim.apply(Action::Exceptions);
    for name in [
        "press_state",
        "tonnage_setpoint",
        "overload_alarm_enable",
        "key_switch",
    ] {
        assert_eq!(
            read(&mut ctx, tag(&profile, name)).await,
            Answer::Exception(ExceptionCode::IllegalDataAddress),
            "{name}"
        );
    }
    let identification = ask(ctx.read_device_identification(ReadCode::Basic, 0)).await;
    assert_eq!(
        identification.map(|_| ()),
        Answer::Exception(ExceptionCode::IllegalDataAddress)
    );
    sim.apply(Action::Normal);
    assert!(matches!(
        read(&mut ctx, tag(&profile, "press_state")).await,
        Answer::Value(_)
    ));
    sim.shutdown().await;
}

#[tokio::test]
async fn unmapped_addresses_answer_exception_02_and_writes_exception_01() {
    let sim = start("stamping_press").await;
    let mut ctx = connect(&sim).await;
    assert_eq!(
        ask(ctx.read_holding_registers(0, 1)).await,
        Answer::Exception(ExceptionCode::IllegalDataAddress)
    );
    assert_eq!(
        ask(ctx.read_input_registers(100, 125)).await,
        Answer::Exception(ExceptionCode::IllegalDataAddress)
    );
    assert_eq!(
        ask(ctx.read_holding_registers(204, 6)).await,
        Answer::Value(vec![0; 6]),
        "a gap inside the register map reads as zeros"
    );
    assert_eq!(
        ask(ctx.write_single_register(200, 1)).await,
        Answer::Exception(ExceptionCode::IllegalFunction)
    );
    assert_eq!(
        ask(ctx.write_single_coil(0, false)).await,
        Answer::Exception(ExceptionCode::IllegalFunction)
    );
    sim.shutdown().await;
}

async fn control_line(lines: &mut BufReader<TcpStream>, command: &str) -> String {
    lines
        .get_mut()
        .write_all(format!("{command}\n").as_bytes())
        .await
        .unwrap();
    let mut reply = String::new();
    tokio::time::timeout(Duration::from_secs(2), lines.read_line(&mut reply))
        .await
        .expect("a reply line")
        .unwrap();
    reply.trim_end().to_owned()
}

#[tokio::test]
async fn the_control_port_applies_fault_and_answers_ok() {
    let sim = start_with(
        "stamping_press",
        SimOptions {
            control: Some("127.0.0.1:0".parse().unwrap()),
            ..SimOptions::default()
        },
    )
    .await;
    let profile = profile("stamping_press");
    let spec = tag(&profile, "press_state");
    let control = TcpStream::connect(sim.control_addr().unwrap())
        .await
        .unwrap();
    let mut lines = BufReader::new(control);
    assert_eq!(control_line(&mut lines, "fault").await, "ok");
    let mut ctx = connect(&sim).await;
    assert_eq!(state(spec, &read(&mut ctx, spec).await.value()), "fault");
    assert_eq!(control_line(&mut lines, "  recover  ").await, "ok");
    assert_eq!(state(spec, &read(&mut ctx, spec).await.value()), "run");
    sim.shutdown().await;
}

#[tokio::test]
async fn the_control_port_answers_an_unknown_action_with_an_error_naming_the_valid_ones() {
    let sim = start_with(
        "reflow_oven",
        SimOptions {
            control: Some("127.0.0.1:0".parse().unwrap()),
            ..SimOptions::default()
        },
    )
    .await;
    let control = TcpStream::connect(sim.control_addr().unwrap())
        .await
        .unwrap();
    let mut lines = BufReader::new(control);
    let reply = control_line(&mut lines, "explode").await;
    assert!(
        reply.starts_with("error: unknown action `explode`; valid actions: fault, recover,"),
        "{reply}"
    );
    for action in Action::ALL {
        assert!(reply.contains(action.name()), "{reply}");
    }
    assert_eq!(
        control_line(&mut lines, "normal").await,
        "ok",
        "the connection stays usable"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn a_schedule_plays_its_actions_at_their_times() {
    let t0 = Instant::now();
    let sim = start_with(
        "stamping_press",
        SimOptions {
            schedule: Schedule::parse("fault@0.2,recover@0.5").unwrap(),
            ..SimOptions::default()
        },
    )
    .await;
    let profile = profile("stamping_press");
    let spec = tag(&profile, "press_state");
    let mut ctx = connect(&sim).await;
    assert_eq!(state(spec, &read(&mut ctx, spec).await.value()), "run");
    let mut fault_at = None;
    let mut recovered_at = None;
    while recovered_at.is_none() {
        assert!(
            t0.elapsed() < Duration::from_secs(3),
            "schedule did not play"
        );
        let now = state(spec, &read(&mut ctx, spec).await.value());
        match (now.as_str(), fault_at) {
            ("fault", None) => fault_at = Some(t0.elapsed()),
            ("run", Some(_)) => recovered_at = Some(t0.elapsed()),
            _ => {}
        }
        // Sampling at 10 ms: the resolution of the transition times measured here.
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (fault_at, recovered_at) = (fault_at.unwrap(), recovered_at.unwrap());
    assert!(fault_at >= Duration::from_millis(200), "{fault_at:?}");
    assert!(fault_at < Duration::from_millis(450), "{fault_at:?}");
    assert!(
        recovered_at >= Duration::from_millis(500),
        "{recovered_at:?}"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn an_opcua_profile_is_refused_by_the_modbus_simulator() {
    let err = sim::modbus::start(profile("aoi_station"), &SimOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, SimError::Protocol { .. }), "{err}");
}

#[tokio::test]
async fn shutdown_stops_the_server_and_the_control_port() {
    let sim = start_with(
        "stamping_press",
        SimOptions {
            control: Some("127.0.0.1:0".parse().unwrap()),
            ..SimOptions::default()
        },
    )
    .await;
    let (addr, control) = (sim.local_addr(), sim.control_addr().unwrap());
    let mut ctx = connect(&sim).await;
    sim.shutdown().await;
    assert!(TcpStream::connect(addr).await.is_err());
    assert!(TcpStream::connect(control).await.is_err());
    let answer = ask(ctx.read_holding_registers(200, 2)).await;
    assert!(
        matches!(answer, Answer::Failed(_) | Answer::TimedOut),
        "{answer:?}"
    );
}
