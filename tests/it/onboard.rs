//! Bringing up a new station, with the programs as processes against independent peers:
//! `linesentry import modbus` on a register map and `linesentry probe` against a pymodbus
//! server (every type and byte order, one address that answers an exception);
//! `linesentry discover opcua` against a python-asyncua server with a plant-like address
//! space (nested folders, several DataTypes, EURange, units, EnumStrings, a method, an
//! array, a property-only object, a reference cycle), on a secured endpoint after `pki
//! trust`, and with 10,000 generated variables. The profiles written are then read by the
//! agent's own sources, which must give the values the peers serve.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use linesentry_agent::config;
use linesentry_agent::source::modbus::TcpStation;
use linesentry_agent::source::opcua::{Acquisition, OpcUaSettings, OpcUaSource};
use linesentry_agent::source::{
    OpcUaIdentity, OpcUaSecurityMode, OpcUaSecurityPolicy, PollResult, Profile, SourceConfig,
    SourceTuning, StationConfig, TagRole, Value,
};
use linesentry_testkit::PythonPeer;

const BIN: &str = env!("CARGO_BIN_EXE_linesentry");

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl std::fmt::Debug for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// Runs `linesentry ARGS` to its end, killed after `within`; output through files.
fn linesentry(args: &[&str], within: Duration) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let (out, err) = (dir.path().join("out"), dir.path().join("err"));
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .expect("run linesentry");
    let deadline = Instant::now() + within;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let run = Run {
        code: status.and_then(|s| s.code()),
        stdout: std::fs::read_to_string(out).unwrap_or_default(),
        stderr: std::fs::read_to_string(err).unwrap_or_default(),
    };
    assert!(
        status.is_some(),
        "linesentry {args:?} ran past {within:?}: {run:?}"
    );
    run
}

fn utf8(p: &Path) -> &str {
    p.to_str().unwrap()
}

// ---------------------------------------------------------------------------------------
// Modbus: import a register map, probe it against pymodbus, poll it with the agent's source.

/// The register map, in a vendor's spelling: semicolons, CRLF, a BOM, aliases, one-based
/// Modicon-free numbering with an area column, a decimal comma.
const REGISTER_MAP: &str = "\u{feff}Tag Name;Register Type;Register;Data Type;Byte Order;Bit;Length;Multiplier;Units;Role;Low Limit;High Limit;States;Comment\r\n\
Machine State;Holding;1;UINT;;;;;;status;;;0=idle|1=run|2=fault;\r\n\
Die Temp;Input Register;11;REAL;CDAB;;;;°C;;0;300;;measured\r\n\
Tonnage SP;Holding;21;REAL;ABCD;;;;kN;setpoint;0;2500;;\r\n\
Stroke Count;Input Register;31;UDINT;BADC;;;;;counter;;;;\r\n\
Energy;Input Register;41;LINT;DCBA;;;;Wh;measurement;;;;\r\n\
Big Count;Input Register;51;ULINT;ABCD;;;;;counter;;;;\r\n\
Position;Input Register;61;LREAL;DCBA;;;;mm;measurement;-500;500;;\r\n\
Offset;Holding;71;INT;;;;;;measurement;;;;\r\n\
Level;Input Register;72;DINT;CDAB;;;;;measurement;;;;\r\n\
Speed;Input Register;75;UINT;;;;0,1;mm/s;measurement;0;200;;\r\n\
Hot Spot;Input Register;81;REAL;ABCD;;;;°C;measurement;0;100;;over its limit\r\n\
Broken Sensor;Input Register;83;REAL;ABCD;;;;°C;measurement;;;;NaN from the device\r\n\
Firmware;Input Register;91;STRING;;;4;;;firmware;;;;\r\n\
Alarm Enable;Coil;1;BOOL;;;;;;alarm_enable;;;;\r\n\
Guard Closed;Discrete Input;2;BOOL;;;;;;status;;;;\r\n\
Ready Bit;Holding;101;BOOL;;3;;;;status;;;;\r\n\
Missing Register;Holding;501;UINT;;;;;;counter;;;;past the device's map\r\n";

/// What the pymodbus server serves (zero-based addresses: the map above minus one).
fn modbus_spec() -> serde_json::Value {
    serde_json::json!({
        "size": 400,
        "identity": {"vendor": "linesentry tests", "product_code": "P-1", "revision": "1.0"},
        "points": [
            {"table": "holding_register", "address": 0, "type": "u16", "value": 1},
            {"table": "input_register", "address": 10, "type": "f32", "order": "CDAB", "value": 187.25},
            {"table": "holding_register", "address": 20, "type": "f32", "order": "ABCD", "value": 1250.5},
            {"table": "input_register", "address": 30, "type": "u32", "order": "BADC", "value": 3_000_000_001_u64},
            {"table": "input_register", "address": 40, "type": "i64", "order": "DCBA", "value": -9_000_000_000_i64},
            {"table": "input_register", "address": 50, "type": "u64", "order": "ABCD", "value": 18_000_000_000_000_000_000_u64},
            {"table": "input_register", "address": 60, "type": "f64", "order": "DCBA", "value": -123.456},
            {"table": "holding_register", "address": 70, "type": "i16", "value": -7},
            {"table": "input_register", "address": 71, "type": "i32", "order": "CDAB", "value": -100_000},
            {"table": "input_register", "address": 74, "type": "u16", "value": 1234},
            {"table": "input_register", "address": 80, "type": "f32", "order": "ABCD", "value": 150.0},
            {"table": "input_register", "address": 90, "type": "string", "length": 4, "value": "V2.10"},
            {"table": "coil", "address": 0, "type": "bool", "value": true},
            {"table": "discrete_input", "address": 1, "type": "bool", "value": true},
            {"table": "holding_register", "address": 100, "type": "bool", "bit": 3, "value": true},
            {"table": "input_register", "address": 82, "type": "f32", "order": "ABCD", "value": "NaN"}
        ]
    })
}

fn start_pymodbus(dir: &Path) -> (PythonPeer, u16) {
    let spec = dir.join("spec.json");
    // JSON has no NaN; Python's json module reads the bare `NaN` literal.
    let text = modbus_spec().to_string().replace("\"NaN\"", "NaN");
    std::fs::write(&spec, text).unwrap();
    let port = linesentry_testkit::free_port();
    let peer = PythonPeer::start(
        "pymodbus_server.py",
        [port.to_string().as_str(), utf8(&spec)],
        "READY",
        Duration::from_secs(30),
    );
    (peer, port)
}

/// The expected value of each tag the agent's source reads.
fn expected_modbus_values() -> Vec<(&'static str, Value)> {
    vec![
        ("machine_state", Value::UInt(1)),
        ("die_temp", Value::Float(187.25)),
        ("tonnage_sp", Value::Float(1250.5)),
        ("stroke_count", Value::UInt(3_000_000_001)),
        ("energy", Value::Int(-9_000_000_000)),
        ("big_count", Value::UInt(18_000_000_000_000_000_000)),
        ("position", Value::Float(-123.456)),
        ("offset", Value::Int(-7)),
        ("level", Value::Int(-100_000)),
        ("hot_spot", Value::Float(150.0)),
        ("firmware", Value::Text("V2.10".into())),
        ("alarm_enable", Value::Bool(true)),
        ("guard_closed", Value::Bool(true)),
        ("ready_bit", Value::Bool(true)),
    ]
}

fn station(id: &str, profile: Profile, source: SourceConfig) -> StationConfig {
    let kind = source.kind();
    StationConfig {
        id: id.into(),
        profile: Arc::new(profile),
        source,
        poll_interval: Duration::from_millis(200),
        timeout: Duration::from_secs(3),
        enabled: true,
        change_windows: Vec::new(),
        tuning: SourceTuning::defaults_for(kind),
    }
}

fn value_of<'a>(result: &'a PollResult, tag: &str) -> Option<&'a Value> {
    result
        .readings
        .iter()
        .find(|r| &*r.tag == tag)
        .map(|r| &r.value)
}

#[test]
#[allow(clippy::too_many_lines)] // one scenario, step by step
fn an_imported_register_map_is_probed_against_pymodbus_and_read_right_by_the_agent() {
    let dir = tempfile::tempdir().unwrap();
    let (_peer, port) = start_pymodbus(dir.path());
    let csv = dir.path().join("press-registers.csv");
    std::fs::write(&csv, REGISTER_MAP).unwrap();
    let profile_path = dir.path().join("press_b.toml");

    let run = linesentry(
        &[
            "import",
            "modbus",
            utf8(&csv),
            "--one-based",
            "-o",
            utf8(&profile_path),
        ],
        Duration::from_secs(10),
    );
    assert_eq!(run.code, Some(0), "{run:?}");
    assert!(run.stdout.contains("17 tags"), "{run:?}");
    assert!(
        run.stderr
            .contains("line 3: `die_temp`: role measurement suggested"),
        "the empty role is suggested and said so: {run:?}"
    );
    let run = linesentry(
        &["validate", "--profile", utf8(&profile_path)],
        Duration::from_secs(10),
    );
    assert_eq!(run.code, Some(0), "{run:?}");

    // Probe: two polls, every tag but two fine; exit 1 for those two.
    let address = format!("127.0.0.1:{port}");
    let run = linesentry(
        &[
            "probe",
            "--profile",
            utf8(&profile_path),
            "--address",
            &address,
            "-n",
            "2",
            "--interval-ms",
            "100",
        ],
        Duration::from_secs(30),
    );
    assert_eq!(run.code, Some(1), "{run:?}");
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(
        lines.iter().filter(|l| l.starts_with("poll ")).count(),
        2,
        "{run:?}"
    );
    let row = |tag: &str| -> Vec<&str> {
        lines
            .iter()
            .filter(|l| l.split_whitespace().next() == Some(tag))
            .copied()
            .collect()
    };
    for (tag, value) in expected_modbus_values() {
        let rows = row(tag);
        assert_eq!(rows.len(), 2, "{tag} once per poll: {run:?}");
        for r in rows {
            let shown = value.to_string();
            assert!(
                r.contains(&format!(" {shown} ")) || r.contains(&format!(" {shown}  ")),
                "{tag} shows {shown}: {r}"
            );
            if tag == "hot_spot" {
                assert!(r.ends_with("FAIL: outside its limits 0 .. 100"), "{r}");
            } else {
                assert!(r.ends_with(" ok"), "{r}");
            }
        }
    }
    // The raw registers are shown as received: 187.25 as f32 CDAB is 0x433b4000 word-swapped.
    assert!(row("die_temp")[0].contains("4000 433b"), "{run:?}");
    assert!(
        row("broken_sensor")[0].contains("7fc0 0000")
            && row("broken_sensor")[0].contains("FAIL: ")
            && row("broken_sensor")[0].to_lowercase().contains("nan"),
        "a NaN is shown raw and fails: {run:?}"
    );
    assert!(
        row("machine_state")[0].contains(" 1 (run) "),
        "a status shows its state name: {run:?}"
    );
    let missing = row("missing_register");
    assert!(
        missing[0].contains(
            "FAIL: device exception 0x02 (illegal data address) reading HoldingRegister 500+1"
        ),
        "{run:?}"
    );
    assert!(
        row("speed")[0].contains(" 123.4"),
        "scale 0,1 from the map: {run:?}"
    );
    assert!(
        run.stdout
            .trim_end()
            .ends_with("3 of 17 tags failed: broken_sensor, hot_spot, missing_register"),
        "{run:?}"
    );

    // The imported profile, polled by the agent's own Modbus source, gives the same values.
    let profile = config::load_profile(&profile_path).unwrap();
    assert_eq!(
        profile.tag("machine_state").unwrap().state_name(2),
        Some("fault")
    );
    assert_eq!(profile.tag("tonnage_sp").unwrap().role, TagRole::Setpoint);
    let station = station(
        "press-b",
        profile,
        SourceConfig::ModbusTcp {
            address: address.clone(),
            unit_id: 1,
        },
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    let result = rt.block_on(async {
        let mut source = TcpStation::new(&station).unwrap();
        source.poll().await
    });
    assert!(result.reachable, "{result:?}");
    for (tag, value) in expected_modbus_values() {
        let got = value_of(&result, tag);
        match (&value, got) {
            (Value::Float(want), Some(Value::Float(got))) => {
                assert!((want - got).abs() < 1e-9, "{tag}: {got} != {want}");
            }
            _ => assert_eq!(got, Some(&value), "{tag}: {result:?}"),
        }
    }
    assert!(
        matches!(value_of(&result, "speed"), Some(Value::Float(x)) if (x - 123.4).abs() < 1e-9),
        "{result:?}"
    );
}

#[test]
fn probe_of_a_configured_station_passes_when_every_tag_reads_and_an_unreachable_one_fails() {
    let dir = tempfile::tempdir().unwrap();
    let (_peer, port) = start_pymodbus(dir.path());
    let devices = dir.path().join("devices");
    std::fs::create_dir_all(&devices).unwrap();
    // Only the rows that read fine.
    let map: String = REGISTER_MAP
        .split("\r\n")
        .filter(|l| {
            !["Hot Spot", "Missing Register", "Broken Sensor"]
                .iter()
                .any(|b| l.starts_with(b))
        })
        .collect::<Vec<_>>()
        .join("\r\n");
    let csv = dir.path().join("map.csv");
    std::fs::write(&csv, map).unwrap();
    let run = linesentry(
        &[
            "import",
            "modbus",
            utf8(&csv),
            "--one-based",
            "-o",
            utf8(&devices.join("press_c.toml")),
        ],
        Duration::from_secs(10),
    );
    assert_eq!(run.code, Some(0), "{run:?}");
    let config = dir.path().join("agent.toml");
    let refused = linesentry_testkit::free_port();
    std::fs::write(
        &config,
        format!(
            "[agent]\ngateway_id = \"gw\"\nsite = \"plant\"\ndata_dir = \"data\"\nprofiles_dir = \"{}\"\n\n\
             [[stations]]\nid = \"press-c\"\nprofile = \"press_c\"\nsource = \"modbus_tcp\"\naddress = \"127.0.0.1:{port}\"\nunit_id = 1\n\n\
             [[stations]]\nid = \"press-gone\"\nprofile = \"press_c\"\nsource = \"modbus_tcp\"\naddress = \"127.0.0.1:{refused}\"\nunit_id = 1\n",
            utf8(&devices)
        ),
    )
    .unwrap();
    let run = linesentry(
        &["probe", "--config", utf8(&config), "--station", "press-c"],
        Duration::from_secs(20),
    );
    assert_eq!(run.code, Some(0), "{run:?}");
    assert!(
        run.stdout.contains("press_c: all 14 tags ok in 1 poll(s)"),
        "{run:?}"
    );

    let run = linesentry(
        &[
            "probe",
            "--config",
            utf8(&config),
            "--station",
            "press-gone",
        ],
        Duration::from_secs(20),
    );
    assert_eq!(run.code, Some(1), "{run:?}");
    assert!(
        run.stderr
            .contains(&format!("connection failed: 127.0.0.1:{refused}")),
        "{run:?}"
    );

    let run = linesentry(
        &["probe", "--config", utf8(&config), "--station", "press-x"],
        Duration::from_secs(20),
    );
    assert_eq!(run.code, Some(2), "{run:?}");
    assert!(run.stderr.contains("no station `press-x`"), "{run:?}");
    assert!(run.stderr.contains("press-c, press-gone"), "{run:?}");
}

#[test]
fn a_bad_register_map_is_reported_row_by_row_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("bad.csv");
    std::fs::write(
        &csv,
        "name,area,address,type\r\nTemp,input_register,10,f32\r\ntemp,input_register,20,u16\r\nPressure,input_register,11,u16\r\nx,holding,abc,u16\r\ny,holding,1,float32x\r\n",
    )
    .unwrap();
    let out = dir.path().join("bad.toml");
    let run = linesentry(
        &["import", "modbus", utf8(&csv), "-o", utf8(&out)],
        Duration::from_secs(10),
    );
    assert_eq!(run.code, Some(1), "{run:?}");
    let file = utf8(&csv);
    for expected in [
        format!("{file}:3:1: `name`: duplicate tag name `temp` (first on line 2)"),
        format!("{file}:4:3: `address`: `pressure` (input_register 11) overlaps `temp` on line 2"),
        format!("{file}:5:3: `address`: expected a register number, found `abc`"),
        format!("{file}:6:4: `type`: unknown type `float32x`"),
    ] {
        assert!(run.stderr.contains(&expected), "{expected}\n{run:?}");
    }
    assert!(
        run.stderr.contains("4 error(s); nothing written"),
        "{run:?}"
    );
    assert!(!out.exists());
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        1,
        "no temporary file left"
    );

    // Latin-1 from an old spreadsheet: one error naming the line.
    std::fs::write(&csv, b"name,area,address,unit\nt,input_register,1,\xB0C\n").unwrap();
    let run = linesentry(
        &["import", "modbus", utf8(&csv), "-o", utf8(&out)],
        Duration::from_secs(10),
    );
    assert_eq!(run.code, Some(1), "{run:?}");
    assert!(
        run.stderr
            .contains(&format!("{file}:2: the file is not UTF-8")),
        "{run:?}"
    );
}

// ---------------------------------------------------------------------------------------
// OPC UA: discover, then read with the agent's source and probe.

/// The plant server, its endpoint URL and its namespace index (`ns=N`).
fn start_plant(pki: &Path, bulk: usize) -> (PythonPeer, String, String) {
    let port = linesentry_testkit::free_port();
    let peer = PythonPeer::start(
        "asyncua_plant_server.py",
        [
            port.to_string().as_str(),
            utf8(pki),
            bulk.to_string().as_str(),
        ],
        "READY",
        Duration::from_secs(120),
    );
    let ns = format!(
        "ns={}",
        peer.ready_line().trim_start_matches("READY").trim()
    );
    (peer, format!("opc.tcp://127.0.0.1:{port}/plant/"), ns)
}

fn opcua_station(
    profile: Profile,
    url: &str,
    mode: OpcUaSecurityMode,
    policy: OpcUaSecurityPolicy,
) -> StationConfig {
    station(
        "oven-b",
        profile,
        SourceConfig::OpcUa {
            endpoint_url: url.into(),
            security_mode: mode,
            security_policy: policy,
            identity: OpcUaIdentity::Anonymous,
            acquisition: Acquisition::Polling,
        },
    )
}

/// Polls the agent's OPC UA source until every tag of `want` has a value, or 20 s pass.
fn read_with_agent(station: &StationConfig, data: &Path, want: &[(&str, Value)]) -> PollResult {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut settings = OpcUaSettings::new(data, "gw-onboard");
        settings.acquisition = Acquisition::Polling;
        let mut source = OpcUaSource::start(station, settings).unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let result = source.poll().await;
            if want.iter().all(|(t, _)| value_of(&result, t).is_some()) || Instant::now() > deadline
            {
                source.close().await;
                return result;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
}

#[test]
#[allow(clippy::too_many_lines)] // one scenario, step by step
fn discover_writes_a_profile_whose_tags_the_agent_reads_with_the_values_the_server_serves() {
    let dir = tempfile::tempdir().unwrap();
    let (_peer, url, ns) = start_plant(&dir.path().join("server-pki"), 0);
    let data = dir.path().join("data");
    let out = dir.path().join("oven_b.toml");
    let run = linesentry(
        &[
            "discover",
            "opcua",
            &url,
            "--data",
            utf8(&data),
            "--gateway-id",
            "gw-onboard",
            "-o",
            utf8(&out),
        ],
        Duration::from_secs(60),
    );
    assert_eq!(run.code, Some(0), "{run:?}");
    let text = std::fs::read_to_string(&out).unwrap();
    let profile = config::load_profile(&out).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let names: Vec<&str> = profile.tags.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "plant_line1_oven_operating_mode",
            "plant_line1_oven_state",
            "plant_line1_oven_board_counter",
            "plant_line1_oven_total_energy",
            "plant_line1_oven_firmware",
            "plant_line1_oven_door_closed",
            "plant_line1_oven_over_temp_alarm_enable",
            "plant_line1_oven_offset",
            "plant_line1_oven_zone1_temperature",
            "plant_line1_oven_zone1_setpoint",
        ],
        "every scalar variable once (the cycle back to Line1 is not followed twice), no \
         method, no array, no property, nothing from the Server object:\n{text}"
    );
    let tag = |n: &str| profile.tag(&format!("plant_line1_oven_{n}")).unwrap();
    let temp = tag("zone1_temperature");
    assert_eq!(
        temp.node_id,
        Some(format!("{ns};s=Plant.Line1.Oven.Zone1.Temperature"))
    );
    assert_eq!(temp.data_type.name(), "f64");
    assert_eq!(temp.unit.as_deref(), Some("°C"));
    assert_eq!(temp.limits.map(|l| (l.min, l.max)), Some((0.0, 300.0)));
    assert_eq!(temp.role, TagRole::Measurement);
    let sp = tag("zone1_setpoint");
    assert_eq!((sp.data_type.name(), sp.role), ("f32", TagRole::Setpoint));
    assert_eq!(sp.limits.map(|l| (l.min, l.max)), Some((25.0, 250.0)));
    let mode = tag("operating_mode");
    assert_eq!((mode.data_type.name(), mode.role), ("i32", TagRole::Mode));
    assert_eq!(mode.state_name(2), Some("Maintenance"));
    assert_eq!(
        tag("state").role,
        TagRole::Measurement,
        "an integer state without EnumStrings"
    );
    assert_eq!(
        (
            tag("board_counter").data_type.name(),
            tag("board_counter").role
        ),
        ("u32", TagRole::Counter)
    );
    assert_eq!(tag("total_energy").unit.as_deref(), Some("kWh"));
    assert_eq!(tag("firmware").role, TagRole::Firmware);
    assert_eq!(tag("over_temp_alarm_enable").role, TagRole::AlarmEnable);
    assert_eq!(tag("offset").data_type.name(), "i16");
    assert!(
        text.contains(&format!(
            "# skipped {ns};s=Plant.Line1.Oven.ZoneProfile (Plant/Line1/Oven/ZoneProfile): an array"
        )),
        "{text}"
    );
    assert_eq!(text.matches("# role: suggested (").count(), 10, "{text}");

    // The agent's own OPC UA source reads every discovered tag, with the server's values.
    let want = [
        ("plant_line1_oven_zone1_temperature", Value::Float(187.5)),
        ("plant_line1_oven_zone1_setpoint", Value::Float(190.0)),
        ("plant_line1_oven_operating_mode", Value::Int(1)),
        ("plant_line1_oven_state", Value::UInt(3)),
        ("plant_line1_oven_board_counter", Value::UInt(123_456)),
        ("plant_line1_oven_total_energy", Value::Int(-42)),
        ("plant_line1_oven_firmware", Value::Text("4.2.1".into())),
        ("plant_line1_oven_door_closed", Value::Bool(true)),
        ("plant_line1_oven_over_temp_alarm_enable", Value::Bool(true)),
        ("plant_line1_oven_offset", Value::Int(-7)),
    ];
    let station = opcua_station(
        profile,
        &url,
        OpcUaSecurityMode::None,
        OpcUaSecurityPolicy::None,
    );
    let result = read_with_agent(&station, &data, &want);
    for (t, v) in &want {
        assert_eq!(value_of(&result, t), Some(v), "{t}: {result:?}");
    }
    assert!(
        !result
            .errors
            .iter()
            .any(|e| e.to_string().contains("DataType")),
        "the DataType check at connect accepts every discovered type: {result:?}"
    );

    // probe says the same, and passes.
    let run = linesentry(
        &[
            "probe",
            "--profile",
            utf8(&out),
            "--endpoint",
            &url,
            "--data",
            utf8(&data),
            "--gateway-id",
            "gw-onboard",
        ],
        Duration::from_secs(30),
    );
    assert_eq!(run.code, Some(0), "{run:?}");
    assert!(run.stdout.contains("Double 187.5"), "{run:?}");
    assert!(
        run.stdout.contains("oven_b: all 10 tags ok in 1 poll(s)"),
        "{run:?}"
    );

    // A start node the server does not know: it refuses to browse it, and nothing is written.
    let nowhere = dir.path().join("nowhere.toml");
    let run = linesentry(
        &[
            "discover",
            "opcua",
            &url,
            "--data",
            utf8(&data),
            "--gateway-id",
            "gw-onboard",
            "--start",
            &format!("{ns};s=NoSuchFolder"),
            "-o",
            utf8(&nowhere),
        ],
        Duration::from_secs(30),
    );
    assert_eq!(run.code, Some(1), "{run:?}");
    assert!(
        run.stderr.contains(&format!(
            "the server refuses to browse {ns};s=NoSuchFolder: BadNodeId"
        )),
        "{run:?}"
    );
    assert!(!nowhere.exists());

    // A profile whose node or type is wrong fails probe, naming each.
    let broken = dir.path().join("oven_c.toml");
    let text = text
        .replace("name = \"oven_b\"", "name = \"oven_c\"")
        .replace(
            ";s=Plant.Line1.Oven.State\"",
            ";s=Plant.Line1.Oven.NoSuchNode\"",
        )
        .replacen("type = \"string\"", "type = \"u16\"", 1);
    std::fs::write(&broken, text).unwrap();
    let run = linesentry(
        &[
            "probe",
            "--profile",
            utf8(&broken),
            "--endpoint",
            &url,
            "--data",
            utf8(&data),
            "--gateway-id",
            "gw-onboard",
        ],
        Duration::from_secs(30),
    );
    assert_eq!(run.code, Some(1), "{run:?}");
    assert!(
        run.stdout
            .contains("FAIL: bad node id or not readable (BadNodeIdUnknown)"),
        "{run:?}"
    );
    assert!(
        run.stdout
            .contains("FAIL: type mismatch: the node's DataType is String, the profile says u16"),
        "{run:?}"
    );
}

#[test]
fn discover_on_a_secured_endpoint_fails_until_the_server_certificate_is_trusted() {
    let dir = tempfile::tempdir().unwrap();
    let server_pki = dir.path().join("server-pki");
    let (_peer, url, _ns) = start_plant(&server_pki, 0);
    let data = dir.path().join("data");
    let out = dir.path().join("oven_s.toml");
    let args = [
        "discover",
        "opcua",
        &url,
        "--data",
        utf8(&data),
        "--gateway-id",
        "gw-onboard",
        "--security-mode",
        "SignAndEncrypt",
        "--security-policy",
        "Basic256Sha256",
        "-o",
        utf8(&out),
    ];
    let run = linesentry(&args, Duration::from_secs(60));
    assert_eq!(run.code, Some(1), "{run:?}");
    assert!(run.stderr.contains("certificate rejected"), "{run:?}");
    assert!(
        run.stderr.contains("linesentry pki trust --data"),
        "{run:?}"
    );
    assert!(!out.exists());

    let cert = server_pki.join("server_cert.der");
    let run = linesentry(
        &["pki", "trust", "--data", utf8(&data), utf8(&cert)],
        Duration::from_secs(10),
    );
    assert_eq!(run.code, Some(0), "{run:?}");
    let run = linesentry(&args, Duration::from_secs(60));
    assert_eq!(run.code, Some(0), "{run:?}");
    let profile = config::load_profile(&out).unwrap();
    assert_eq!(profile.tags.len(), 10);

    // probe of the station as an agent configuration names it: same PKI, same endpoint.
    let config = dir.path().join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "[agent]\ngateway_id = \"gw-onboard\"\nsite = \"plant\"\ndata_dir = \"{}\"\nprofiles_dir = \"{}\"\n\n\
             [[stations]]\nid = \"oven-s\"\nprofile = \"oven_s\"\nsource = \"opcua\"\nendpoint_url = \"{url}\"\n\
             security_mode = \"SignAndEncrypt\"\nsecurity_policy = \"Basic256Sha256\"\n",
            utf8(&data),
            utf8(dir.path())
        ),
    )
    .unwrap();
    let run = linesentry(
        &["probe", "--config", utf8(&config), "--station", "oven-s"],
        Duration::from_secs(30),
    );
    assert_eq!(run.code, Some(0), "{run:?}");
    assert!(
        run.stdout.contains("oven_s: all 10 tags ok in 1 poll(s)"),
        "{run:?}"
    );

    // The agent reads it over the same secured endpoint.
    let want = [("plant_line1_oven_zone1_temperature", Value::Float(187.5))];
    let station = opcua_station(
        profile,
        &url,
        OpcUaSecurityMode::SignAndEncrypt,
        OpcUaSecurityPolicy::Basic256Sha256,
    );
    let result = read_with_agent(&station, &data, &want);
    assert_eq!(value_of(&result, want[0].0), Some(&want[0].1), "{result:?}");
}

#[test]
fn discover_of_an_unreachable_endpoint_or_a_bad_start_node_says_what_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let port = linesentry_testkit::free_port();
    let out = dir.path().join("x.toml");
    let url = format!("opc.tcp://127.0.0.1:{port}/nobody/");
    let run = linesentry(
        &[
            "discover",
            "opcua",
            &url,
            "--data",
            utf8(&dir.path().join("d")),
            "--gateway-id",
            "gw",
            "--timeout-ms",
            "2000",
            "-o",
            utf8(&out),
        ],
        Duration::from_secs(20),
    );
    assert_eq!(run.code, Some(1), "{run:?}");
    assert!(
        run.stderr
            .contains(&format!("linesentry discover: {url}: connection failed")),
        "{run:?}"
    );
    assert!(!out.exists());

    let run = linesentry(
        &[
            "discover",
            "opcua",
            &url,
            "--data",
            "d",
            "--gateway-id",
            "gw",
            "--start",
            "Objects",
            "-o",
            utf8(&out),
        ],
        Duration::from_secs(20),
    );
    assert_eq!(run.code, Some(1), "{run:?}");
    assert!(
        run.stderr.contains("`Objects` is not an OPC UA node id"),
        "{run:?}"
    );
}

/// The figure quoted in the README: discover against a server of 10,000 variables (in 100
/// folders of 100), on this machine. Also checks the node bound.
#[test]
fn discover_of_ten_thousand_variables_finishes_and_the_node_bound_stops_a_browse() {
    let dir = tempfile::tempdir().unwrap();
    let (_peer, url, ns) = start_plant(&dir.path().join("server-pki"), 10_000);
    let data = dir.path().join("data");
    let out = dir.path().join("bulk.toml");
    let start = format!("{ns};s=Bulk");
    let started = Instant::now();
    let run = linesentry(
        &[
            "discover",
            "opcua",
            &url,
            "--data",
            utf8(&data),
            "--gateway-id",
            "gw",
            "--start",
            &start,
            "-o",
            utf8(&out),
        ],
        Duration::from_secs(600),
    );
    let took = started.elapsed();
    assert_eq!(run.code, Some(0), "{run:?}");
    eprintln!(
        "discover of 10,000 variables (10,100 nodes): {:.1} s; {}",
        took.as_secs_f64(),
        run.stdout.trim()
    );
    let profile = config::load_profile(&out).unwrap();
    assert_eq!(profile.tags.len(), 10_000);
    let t = profile.tag("group042_value04217").unwrap();
    assert_eq!(t.node_id, Some(format!("{ns};s=Bulk.Value04217")));

    let out = dir.path().join("part.toml");
    let run = linesentry(
        &[
            "discover",
            "opcua",
            &url,
            "--data",
            utf8(&data),
            "--gateway-id",
            "gw",
            "--start",
            &start,
            "--max-nodes",
            "500",
            "-o",
            utf8(&out),
        ],
        Duration::from_secs(120),
    );
    assert_eq!(run.code, Some(0), "{run:?}");
    assert!(
        run.stdout
            .contains("INCOMPLETE: stopped at --max-nodes 500"),
        "{run:?}"
    );
    let text = std::fs::read_to_string(&out).unwrap();
    assert!(text.contains("# INCOMPLETE"), "{text}");
    assert!(config::load_profile(&out).unwrap().tags.len() < 500);
}

/// The README's "Bringing up a new station" walk-through, line by line as written: the
/// simulator on a free port instead of 5020 and the profile in a scratch directory instead
/// of `devices/`, nothing else changed.
#[cfg(feature = "sim")]
#[test]
fn the_readme_walk_through_works_as_written() {
    let readme =
        std::fs::read_to_string(linesentry_testkit::repo_root().join("README.md")).unwrap();
    let section = readme
        .split("## Bringing up a new station")
        .nth(1)
        .and_then(|s| s.split("\n## ").next())
        .expect("the README has the walk-through");
    let block: Vec<&str> = section
        .lines()
        .skip_while(|l| !l.starts_with("    linesentry sim "))
        .take_while(|l| l.starts_with("    "))
        .map(str::trim)
        .collect();
    assert!(block.len() >= 8, "{block:?}");
    let dir = tempfile::tempdir().unwrap();
    let port = linesentry_testkit::free_port().to_string();
    let profile = dir.path().join("oven_b.toml");
    let fix = |line: &str| {
        line.replace("127.0.0.1:5020", &format!("127.0.0.1:{port}"))
            .replace("devices/oven_b.toml", utf8(&profile))
            .replace(
                "docs/examples/",
                &format!("{}/docs/examples/", utf8(linesentry_testkit::repo_root())),
            )
    };
    let mut sim = None;
    let mut ran = Vec::new();
    for line in block {
        let line = fix(line.split(" # ").next().unwrap_or(line).trim());
        if line.starts_with('#') || line.is_empty() || line == "kill %1" {
            continue;
        }
        let words: Vec<&str> = line.trim_end_matches('&').split_whitespace().collect();
        match words.first().copied() {
            Some("linesentry") if words.get(1) == Some(&"sim") => {
                let mut child = Command::new(BIN)
                    .args(&words[1..])
                    .current_dir(linesentry_testkit::repo_root())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap();
                let up = linesentry_testkit::wait_until(Duration::from_secs(20), || {
                    std::net::TcpStream::connect(format!("127.0.0.1:{port}")).ok()
                });
                if up.is_none() {
                    let _ = child.kill();
                    panic!("the simulator did not listen");
                }
                sim = Some(child);
            }
            Some("linesentry") => {
                let run = linesentry(&words[1..], Duration::from_secs(30));
                assert_eq!(run.code, Some(0), "{line}\n{run:?}");
                ran.push(words[1].to_owned());
            }
            Some("grep") => {
                let text = std::fs::read_to_string(&profile).unwrap();
                assert!(text.contains("role: suggested"), "{text}");
                ran.push("grep".to_owned());
            }
            _ => panic!("a line the test does not know how to run: {line}"),
        }
    }
    if let Some(mut child) = sim {
        let _ = child.kill();
        let _ = child.wait();
    }
    assert_eq!(ran, ["import", "grep", "probe", "validate"]);
}
