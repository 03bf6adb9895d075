//! `config::load` on real files: every kind of mistake is reported with the file, the line,
//! the key path and what was expected, all of them at once; the shipped configurations load.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use linesentry_agent::config::{self, Config, ConfigErrors};
use linesentry_agent::source::{OpcUaIdentity, SourceConfig};

/// Tests that read or write environment variables hold this, so that `setenv` never races
/// with `getenv`.
static ENV: Mutex<()> = Mutex::new(());

fn env_lock() -> MutexGuard<'static, ()> {
    ENV.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

const AGENT: &str =
    "[agent]\ngateway_id = \"gw-test\"\nsite = \"test-site\"\ndata_dir = \"data\"\n";

const PRESS: &str = r#"[profile]
name = "press"
description = "test press"
protocol = "modbus"

[[tags]]
name = "state"
role = "status"
type = "u16"
area = "holding_register"
address = 0
states = { 0 = "idle", 1 = "run" }
"#;

const AOI: &str = r#"[profile]
name = "aoi"
protocol = "opcua"

[[tags]]
name = "result"
role = "quality_result"
type = "u16"
node_id = "ns=2;s=AOI.Result"
"#;

/// A temporary `config/` + `devices/` tree holding the `press` (modbus) and `aoi` (opcua)
/// profiles.
struct Tree {
    dir: tempfile::TempDir,
}

impl Tree {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("config")).unwrap();
        std::fs::create_dir(dir.path().join("devices")).unwrap();
        let tree = Self { dir };
        tree.profile("press", PRESS);
        tree.profile("aoi", AOI);
        tree
    }

    fn root(&self) -> &Path {
        self.dir.path()
    }

    fn profile(&self, name: &str, text: &str) {
        std::fs::write(self.root().join(format!("devices/{name}.toml")), text).unwrap();
    }

    fn load(&self, config: &str) -> Result<Config, ConfigErrors> {
        let path = self.root().join("config/agent.toml");
        std::fs::write(&path, config).unwrap();
        config::load(&path)
    }

    fn errors(&self, config: &str) -> ConfigErrors {
        match self.load(config) {
            Ok(c) => panic!("expected errors, loaded {c:#?}"),
            Err(errors) => errors,
        }
    }
}

/// Asserts that one error reads `{file}:{line}: `{key}`: ...{expect}...`.
#[track_caller]
fn assert_reported(errors: &ConfigErrors, file: &str, line: usize, key: &str, expect: &str) {
    let head = format!("{file}:{line}: `{key}`: ");
    let found = errors.iter().map(ToString::to_string).any(|e| {
        e.find(&head)
            .is_some_and(|at| e[at + head.len()..].contains(expect))
    });
    assert!(found, "no error `{head}...{expect}...` in:\n{errors}");
}

fn repo() -> PathBuf {
    PathBuf::from(repo!())
}

#[test]
fn a_plain_text_secret_is_refused_and_never_echoed() {
    let tree = Tree::new();
    let errors = tree.errors(&format!(
        "{AGENT}[forward.mqtt]\nhost = \"127.0.0.1\"\nusername = \"gw\"\npassword = \"hunter2\"\n"
    ));
    assert_eq!(errors.len(), 1, "{errors}");
    assert_reported(
        &errors,
        "agent.toml",
        8,
        "forward.mqtt.password",
        "plain-text secrets are refused",
    );
    let text = errors.to_string();
    assert!(text.contains("{ env = \"VAR\" }"), "{text}");
    assert!(!text.contains("hunter2"), "{text}");
}

#[test]
fn a_secret_from_an_unset_environment_variable_names_the_variable_and_the_key() {
    let _env = env_lock();
    let tree = Tree::new();
    let errors = tree.errors(&format!(
        "{AGENT}[[stations]]\nid = \"a\"\nprofile = \"aoi\"\nsource = \"opcua\"\nendpoint_url = \"opc.tcp://127.0.0.1:4840\"\n\
         identity = {{ kind = \"username\", user = \"op\", password = {{ env = \"LINESENTRY_TEST_NEVER_SET\" }} }}\n"
    ));
    assert_eq!(errors.len(), 1, "{errors}");
    assert_reported(
        &errors,
        "agent.toml",
        10,
        "stations[0].identity.password.env",
        "environment variable `LINESENTRY_TEST_NEVER_SET` is not set",
    );
}

#[test]
fn an_unreadable_config_file_names_the_path_and_the_os_error() {
    let tree = Tree::new();
    let path = tree.root().join("config/missing.toml");
    let errors = config::load(&path).unwrap_err();
    assert_eq!(errors.len(), 1);
    let text = errors.to_string();
    assert!(text.contains("missing.toml"), "{text}");
    assert!(text.contains("No such file or directory"), "{text}");
}

// --- rule tuning: `[rules]`, per-tag rule keys, station change windows ---------------------

/// A profile tuning its rules station-wide and per tag (line numbers matter to the tests).
const OVEN: &str = r#"[profile]
name = "oven"
protocol = "modbus"

[rules]
unreachable_after = 5
stale_after_s = 300
deadband_percent = 0.5
quality_window = 10
quality_failures = 3
clock_skew_ms = 2000

[[tags]]
name = "zone1_temp"
role = "measurement"
type = "f32"
area = "input_register"
address = 0
unit = "°C"
limits = { min = 0.0, max = 300.0 }
deadband = 2.0
heartbeat_s = 120
stale_after_s = 600

[[tags]]
name = "hood_closed"
role = "status"
type = "bool"
area = "discrete_input"
address = 0
states = { 0 = "open", 1 = "closed" }
debounce_ms = 1500
heartbeat_s = 900
"#;

/// One simulated station on the `oven` profile, then `extra` lines in that station (from
/// line 9 of the file on).
fn oven_station(extra: &str) -> String {
    format!("{AGENT}[[stations]]\nid = \"oven-01\"\nprofile = \"oven\"\nsource = \"simulated\"\n{extra}")
}

#[test]
fn rules_values_of_a_profile_arrive_in_profile_rules_and_tag_rules() {
    use linesentry_agent::rules::RuleSettings;
    use std::time::Duration;

    let tree = Tree::new();
    tree.profile("oven", OVEN);
    let config = tree
        .load(&format!(
            "{}[[stations]]\nid = \"p\"\nprofile = \"press\"\nsource = \"simulated\"\n",
            oven_station("")
        ))
        .unwrap_or_else(|e| panic!("{e}"));
    let oven = &config.stations[0].profile;
    let expected = RuleSettings {
        unreachable_after: 5,
        stale_after: Duration::from_secs(300),
        deadband_percent: 0.5,
        quality_window: 10,
        quality_failures: 3,
        clock_skew: Duration::from_secs(2),
        ..RuleSettings::default()
    };
    assert_eq!(oven.rules, expected);

    let temp = oven.tag("zone1_temp").unwrap();
    assert_eq!(temp.rules.deadband_abs, Some(2.0));
    assert_eq!(temp.rules.deadband_percent, None);
    assert_eq!(temp.rules.heartbeat, Some(Duration::from_secs(120)));
    assert_eq!(temp.rules.stale_after, Some(Duration::from_secs(600)));
    assert_eq!(temp.rules.debounce, Duration::ZERO);
    let hood = oven.tag("hood_closed").unwrap();
    assert_eq!(hood.rules.debounce, Duration::from_millis(1500));
    assert_eq!(hood.rules.heartbeat, Some(Duration::from_secs(900)));

    // The agent hands the tag rules to the rules engine as they are.
    let tags = linesentry_agent::runtime::rule_tags(&config.stations[0].profile);
    assert_eq!(tags[0].rules, temp.rules);
    assert_eq!(tags[1].rules, hood.rules);

    // A profile without `[rules]` gets the catalogue's defaults, and tags without rule keys
    // fall back to them.
    let press = &config.stations[1].profile;
    assert_eq!(press.rules, RuleSettings::default());
    assert_eq!(
        press.tags[0].rules,
        linesentry_agent::rules::TagRules::default()
    );
}

/// A press whose die temperature alarms above a limit tag on its one alarm output, with the
/// trend rule tuned (line numbers matter to the tests).
const PRESS_ALARMS: &str = r#"[profile]
name = "press"
protocol = "modbus"

[rules]
trend_points = 7
trend_margin_percent = 10.0
alarm_grace_s = 3

[[tags]]
name = "die_temp"
role = "measurement"
type = "i16"
area = "input_register"
address = 0
scale = 0.1
limits = { min = 20.0, max = 250.0 }
alarm_high = "die_temp_high"
trend_points = 8

[[tags]]
name = "die_temp_high"
role = "alarm_limit"
type = "i16"
area = "holding_register"
address = 0
scale = 0.1

[[tags]]
name = "press_alarm"
role = "alarm_active"
type = "bool"
area = "discrete_input"
address = 0
"#;

fn press_station() -> String {
    format!("{AGENT}[[stations]]\nid = \"press-01\"\nprofile = \"press\"\nsource = \"simulated\"\n")
}

#[test]
fn trend_and_alarm_keys_arrive_in_rule_settings_and_tag_rules_with_the_only_alarm_output() {
    use std::time::Duration;

    let tree = Tree::new();
    tree.profile("press", PRESS_ALARMS);
    let config = tree
        .load(&press_station())
        .unwrap_or_else(|e| panic!("{e}"));
    let press = &config.stations[0].profile;
    assert_eq!(press.rules.trend_points, 7);
    assert!((press.rules.trend_margin_percent - 10.0).abs() < f64::EPSILON);
    assert_eq!(press.rules.alarm_grace, Duration::from_secs(3));
    let temp = press.tag("die_temp").unwrap();
    assert_eq!(temp.rules.trend_points, Some(8));
    assert_eq!(temp.rules.trend_margin_percent, None);
    assert_eq!(temp.rules.alarm_high.as_deref(), Some("die_temp_high"));
    assert_eq!(temp.rules.alarm_low, None);
    assert_eq!(
        temp.rules.alarm_active.as_deref(),
        Some("press_alarm"),
        "the profile's only alarm output"
    );
    let tags = linesentry_agent::runtime::rule_tags(&config.stations[0].profile);
    assert_eq!(tags[0].rules, temp.rules);
}

#[test]
fn an_alarm_limit_needs_an_alarm_output_and_one_named_when_there_are_several() {
    let tree = Tree::new();
    tree.profile(
        "press",
        &PRESS_ALARMS.replace("role = \"alarm_active\"", "role = \"alarm_enable\""),
    );
    let errors = tree.errors(&press_station());
    assert_eq!(errors.len(), 1, "{errors}");
    assert_reported(
        &errors,
        "press.toml",
        18,
        "tags[0].alarm_high",
        "an alarm limit needs an alarm indication to check; expected a tag with role = \"alarm_active\" in the profile",
    );

    let second = "\n[[tags]]\nname = \"horn\"\nrole = \"alarm_active\"\ntype = \"u16\"\narea = \"input_register\"\naddress = 5\n";
    tree.profile("press", &format!("{PRESS_ALARMS}{second}"));
    let errors = tree.errors(&press_station());
    assert_eq!(errors.len(), 1, "{errors}");
    assert_reported(
        &errors,
        "press.toml",
        10,
        "tags[0].alarm_active",
        "missing key `alarm_active`: the profile has several alarm_active tags; expected one of `press_alarm`, `horn`",
    );
    // Naming one settles it.
    tree.profile(
        "press",
        &format!("{PRESS_ALARMS}{second}").replace(
            "trend_points = 8\n",
            "trend_points = 8\nalarm_active = \"horn\"\n",
        ),
    );
    let config = tree
        .load(&press_station())
        .unwrap_or_else(|e| panic!("{e}"));
    let temp = config.stations[0].profile.tag("die_temp").unwrap();
    assert_eq!(temp.rules.alarm_active.as_deref(), Some("horn"));
}

#[test]
fn a_stations_change_windows_arrive_in_its_config_and_in_its_rule_settings() {
    use linesentry_event::Timestamp;

    let at = |text: &str| {
        Timestamp::from_micros(
            chrono::DateTime::parse_from_rfc3339(text)
                .unwrap()
                .timestamp_micros(),
        )
    };
    let tree = Tree::new();
    tree.profile("oven", OVEN);
    let config = tree
        .load(&oven_station(
            "change_windows = [\n  { start = \"2026-11-28T06:00:00Z\", end = \"2026-11-28T10:00:00Z\" },\n  \
             { start = 2026-12-05T22:00:00+01:00, end = 2026-12-06T02:00:00+01:00 },\n]\n",
        ))
        .unwrap_or_else(|e| panic!("{e}"));
    let station = &config.stations[0];
    let windows: Vec<_> = station
        .change_windows
        .iter()
        .map(|w| (w.start, w.end))
        .collect();
    assert_eq!(
        windows,
        [
            (at("2026-11-28T06:00:00Z"), at("2026-11-28T10:00:00Z")),
            (at("2026-12-05T21:00:00Z"), at("2026-12-06T01:00:00Z")),
        ]
    );
    let settings = station.rule_settings();
    assert_eq!(settings.change_windows, station.change_windows);
    assert!(settings.change_windows[0].contains(at("2026-11-28T09:59:59Z")));
    assert!(!settings.change_windows[0].contains(at("2026-11-28T10:00:00Z")));
    assert_eq!(settings.unreachable_after, 5, "the profile's [rules] stay");
    assert!(
        station.profile.rules.change_windows.is_empty(),
        "the station's windows stay out of the shared profile"
    );
}

#[test]
fn the_demo_config_loads_with_two_modbus_and_two_opc_ua_stations_and_console_output() {
    let config = config::load(&repo().join("config/demo.toml")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.agent.gateway_id, "gw-demo-01");
    assert_eq!(config.agent.site, "demo-plant");
    assert!(
        config
            .agent
            .data_dir
            .ends_with("config/../target/demo-data"),
        "{:?}",
        config.agent.data_dir
    );
    let profiles: Vec<&str> = config
        .stations
        .iter()
        .map(|s| s.profile.name.as_str())
        .collect();
    assert_eq!(
        profiles,
        [
            "stamping_press",
            "reflow_oven",
            "aoi_station",
            "cell_controller"
        ]
    );
    let kinds: Vec<&str> = config.stations.iter().map(|s| s.source.kind()).collect();
    assert_eq!(kinds, ["modbus_tcp", "modbus_tcp", "opcua", "opcua"]);
    assert!(config.forward.console);
    assert!(config.forward.mqtt.is_none() && config.forward.https.is_none());
    assert_eq!(config.digest.len(), 64);
}

#[test]
fn the_shipped_oven_profile_tunes_its_rules_and_the_other_profiles_keep_the_defaults() {
    use linesentry_agent::rules::RuleSettings;
    use std::time::Duration;

    let config = config::load(&repo().join("config/demo.toml")).unwrap_or_else(|e| panic!("{e}"));
    for station in &config.stations {
        let profile = &station.profile;
        assert!(station.change_windows.is_empty(), "{}", station.id);
        if profile.name != "reflow_oven" {
            assert_eq!(profile.rules, RuleSettings::default(), "{}", profile.name);
            continue;
        }
        assert_eq!(
            profile.rules,
            RuleSettings {
                unreachable_after: 5,
                unreachable_escalate_after: Duration::from_secs(900),
                stale_after: Duration::from_secs(300),
                ..RuleSettings::default()
            }
        );
        let hood = profile.tag("hood_closed").unwrap();
        assert_eq!(hood.rules.debounce, Duration::from_millis(1500));
        let belt = profile.tag("conveyor_speed").unwrap();
        assert_eq!(belt.rules.deadband_abs, Some(2.0));
        let interlock = profile.tag("door_interlock_enable").unwrap();
        assert_eq!(interlock.rules.debounce, Duration::ZERO);
    }
}

/// Copies `config/example.toml` and `devices/` into a temporary tree with the secret file
/// the example references.
fn example_tree() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("config/secrets")).unwrap();
    std::fs::create_dir(dir.path().join("devices")).unwrap();
    std::fs::copy(
        repo().join("config/example.toml"),
        dir.path().join("config/example.toml"),
    )
    .unwrap();
    for entry in std::fs::read_dir(repo().join("devices")).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(
            &path,
            dir.path().join("devices").join(path.file_name().unwrap()),
        )
        .unwrap();
    }
    std::fs::write(
        dir.path().join("config/secrets/mqtt-password"),
        "mqtt-pass-from-file\n",
    )
    .unwrap();
    dir
}

#[test]
fn the_example_config_loads_when_its_secrets_exist() {
    let _env = env_lock();
    let dir = example_tree();
    std::env::set_var("LINESENTRY_OPCUA_PASSWORD", "opcua-pass-from-env");
    std::env::set_var("LINESENTRY_HTTPS_TOKEN", "token-from-env");
    let loaded = config::load(&dir.path().join("config/example.toml"));
    std::env::remove_var("LINESENTRY_OPCUA_PASSWORD");
    std::env::remove_var("LINESENTRY_HTTPS_TOKEN");
    let config = loaded.unwrap_or_else(|e| panic!("{e}"));

    assert_eq!(config.stations.len(), 5);
    let aoi = config.stations.iter().find(|s| s.id == "aoi-01").unwrap();
    let SourceConfig::OpcUa {
        identity: OpcUaIdentity::UserName { user, password },
        ..
    } = &aoi.source
    else {
        panic!("{:?}", aoi.source);
    };
    assert_eq!(
        (user.as_str(), password.expose()),
        ("linesentry", "opcua-pass-from-env")
    );
    let oven = config.stations.iter().find(|s| s.id == "oven-01").unwrap();
    assert_eq!(oven.change_windows.len(), 2);
    assert_eq!(oven.rule_settings().change_windows, oven.change_windows);
    let mqtt = config.forward.mqtt.as_ref().unwrap();
    assert_eq!(mqtt.port, 8883);
    assert!(mqtt.tls.as_ref().unwrap().client_key.is_some());
    assert_eq!(
        mqtt.password.as_ref().unwrap().expose(),
        "mqtt-pass-from-file"
    );
    let https = config.forward.https.as_ref().unwrap();
    assert_eq!(
        https.bearer_token.as_ref().unwrap().expose(),
        "token-from-env"
    );

    let debug = format!("{config:?}");
    for secret in [
        "opcua-pass-from-env",
        "mqtt-pass-from-file",
        "token-from-env",
    ] {
        assert!(!debug.contains(secret), "{secret} leaked into Debug");
    }
}

#[test]
fn the_example_config_without_its_secrets_lists_each_missing_one() {
    let _env = env_lock();
    let dir = example_tree();
    std::fs::remove_file(dir.path().join("config/secrets/mqtt-password")).unwrap();
    let errors = config::load(&dir.path().join("config/example.toml")).unwrap_err();
    let text = errors.to_string();
    assert_eq!(errors.len(), 3, "{text}");
    assert!(text.contains("LINESENTRY_OPCUA_PASSWORD"), "{text}");
    assert!(text.contains("LINESENTRY_HTTPS_TOKEN"), "{text}");
    assert!(text.contains("mqtt-password"), "{text}");
}

#[test]
fn debug_of_a_config_holding_secrets_never_shows_their_values() {
    let tree = Tree::new();
    std::fs::write(tree.root().join("config/pw"), "correct-horse-battery\n").unwrap();
    std::fs::write(tree.root().join("config/token"), "tok-3f9a7c\n").unwrap();
    let config = tree
        .load(&format!(
            "{AGENT}[[stations]]\nid = \"a\"\nprofile = \"aoi\"\nsource = \"opcua\"\nendpoint_url = \"opc.tcp://127.0.0.1:4840\"\n\
             security_mode = \"SignAndEncrypt\"\nsecurity_policy = \"Basic256Sha256\"\n\
             identity = {{ kind = \"username\", user = \"op\", password = {{ file = \"pw\" }} }}\n\
             [forward.mqtt]\nhost = \"127.0.0.1\"\nusername = \"gw\"\npassword = {{ file = \"pw\" }}\n\
             [forward.https]\nurl = \"https://collector.example/v1\"\nbearer_token = {{ file = \"token\" }}\n"
        ))
        .unwrap_or_else(|e| panic!("{e}"));
    let debug = format!("{config:?} {config:#?}");
    assert!(!debug.contains("correct-horse-battery"), "{debug}");
    assert!(!debug.contains("tok-3f9a7c"), "{debug}");
    assert!(debug.contains("***"));
}

#[test]
fn the_digest_covers_the_referenced_profiles() {
    let tree = Tree::new();
    let text =
        format!("{AGENT}[[stations]]\nid = \"p\"\nprofile = \"press\"\nsource = \"simulated\"\n");
    let before = tree.load(&text).unwrap().digest;
    assert_eq!(tree.load(&text).unwrap().digest, before);
    tree.profile("press", &PRESS.replace("test press", "test press, revised"));
    let revised = tree.load(&text).unwrap().digest;
    assert_ne!(revised, before);
    tree.profile("aoi", &AOI.replace("AOI.Result", "AOI.Verdict"));
    assert_eq!(
        tree.load(&text).unwrap().digest,
        revised,
        "an unreferenced profile counted"
    );
}

/// The registers of `value` as the codec lays them out in `order`, as hex words.
fn layout_words(
    data_type: linesentry_agent::source::DataType,
    order: linesentry_agent::source::ByteOrder,
    value: &linesentry_agent::source::Value,
) -> Vec<u16> {
    use linesentry_agent::source::modbus::codec::{encode_value, TagEncoding};
    encode_value(&TagEncoding::new(data_type).with_order(order), value).unwrap()
}

#[test]
fn the_config_reference_says_what_each_byte_order_means_for_32_and_64_bit_values_as_the_codec_does()
{
    use linesentry_agent::source::{ByteOrder, DataType, Value};
    let text = std::fs::read_to_string(repo().join("config/example.toml")).unwrap();
    let hex = |regs: &[u16]| {
        regs.iter()
            .map(|r| format!("{r:04X}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    // Byte letters: the value 0x41 42 43 .. reads as "AB CD ..".
    let letters = |regs: &[u16]| {
        regs.iter()
            .map(|r| String::from_utf8_lossy(&r.to_be_bytes()).into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    };
    for order in [
        ByteOrder::ABCD,
        ByteOrder::CDAB,
        ByteOrder::BADC,
        ByteOrder::DCBA,
    ] {
        let row = text
            .lines()
            .find(|l| l.starts_with(&format!("#   {order:?} ")))
            .unwrap_or_else(|| panic!("no table row for {order:?} in config/example.toml"));
        let bits32 = letters(&layout_words(
            DataType::U32,
            order,
            &Value::UInt(0x4142_4344),
        ));
        let bits64 = letters(&layout_words(
            DataType::U64,
            order,
            &Value::UInt(0x4142_4344_4546_4748),
        ));
        assert!(
            row.contains(&format!(" {bits32} ")) && row.ends_with(&format!(" {bits64}")),
            "{order:?}: expected 32-bit {bits32} and 64-bit {bits64} in `{row}`"
        );
        for data_type in [DataType::F32, DataType::F64] {
            let words = hex(&layout_words(data_type, order, &Value::Float(123.456)));
            let example = format!("{order:?} {words}");
            let flat = text.replace("\n# ", " ");
            assert!(
                flat.contains(&example),
                "no worked example `{example}` in config/example.toml"
            );
        }
    }
}

mod never_panics {
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        /// Any edit of the demo configuration yields a config or errors, never a panic.
        #[test]
        fn mangled_demo_config_yields_errors_not_panics(
            at in 0usize..2000,
            cut in 0usize..40,
            insert in "[\\[\\]{}=\"'.,#a-z0-9 \\n-]{0,12}",
        ) {
            let path = super::repo().join("config/demo.toml");
            let text = std::fs::read_to_string(&path).unwrap();
            let mut start = at.min(text.len());
            while !text.is_char_boundary(start) {
                start -= 1;
            }
            let mut end = (start + cut).min(text.len());
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            let mangled = format!("{}{insert}{}", &text[..start], &text[end..]);
            if let Err(errors) = linesentry_agent::config::load_str(&path, &mangled) {
                prop_assert!(!errors.is_empty());
            }
        }
    }
}

#[test]
fn an_opc_ua_station_chooses_polling_or_subscriptions_and_nothing_else() {
    let tree = Tree::new();
    let station = |acquisition: &str| {
        format!(
            "{AGENT}\n[[stations]]\nid = \"aoi-01\"\nprofile = \"aoi\"\nsource = \"opcua\"\nendpoint_url = \"opc.tcp://127.0.0.1:4840\"\n{acquisition}\n"
        )
    };
    let polling = tree.load(&station("acquisition = \"polling\"")).unwrap();
    assert!(matches!(
        polling.stations[0].source,
        SourceConfig::OpcUa {
            acquisition: linesentry_agent::source::opcua::Acquisition::Polling,
            ..
        }
    ));
    let default = tree.load(&station("")).unwrap();
    assert!(matches!(
        default.stations[0].source,
        SourceConfig::OpcUa {
            acquisition: linesentry_agent::source::opcua::Acquisition::Subscription,
            ..
        }
    ));
    let errors = tree.errors(&station("acquisition = \"push\""));
    assert_reported(
        &errors,
        "agent.toml",
        11,
        "stations[0].acquisition",
        "expected `subscription` or `polling`, found `push`",
    );
    let errors = tree.errors(&format!(
        "{AGENT}\n[[stations]]\nid = \"press-01\"\nprofile = \"press\"\nsource = \"modbus_tcp\"\naddress = \"127.0.0.1:502\"\nacquisition = \"polling\"\n"
    ));
    assert!(errors.to_string().contains("acquisition"), "{errors}");
}

#[test]
fn a_server_deadband_belongs_to_numeric_opc_ua_tags_and_takes_one_kind() {
    let tree = Tree::new();
    let station = format!(
        "{AGENT}\n[[stations]]\nid = \"aoi-01\"\nprofile = \"aoi\"\nsource = \"opcua\"\nendpoint_url = \"opc.tcp://127.0.0.1:4840\"\n"
    );
    let with = |deadband: &str| format!("{AOI}server_deadband = {deadband}\n");
    tree.profile("aoi", &with("{ absolute = 0.5 }"));
    let config = tree.load(&station).unwrap();
    assert_eq!(
        config.stations[0].profile.tags[0].server_deadband,
        Some(linesentry_agent::source::opcua::Deadband::Absolute(0.5))
    );
    tree.profile("aoi", &with("{ absolute = 0.5, percent = 2.0 }"));
    let errors = tree.errors(&station);
    assert!(
        errors
            .to_string()
            .contains("exactly one of `absolute` or `percent`"),
        "{errors}"
    );
    tree.profile("aoi", &with("{ percent = 150.0 }"));
    let errors = tree.errors(&station);
    assert!(
        errors
            .to_string()
            .contains("tags[0].server_deadband.percent"),
        "{errors}"
    );
    tree.profile(
        "press",
        &format!("{PRESS}server_deadband = {{ absolute = 1.0 }}\n"),
    );
    let errors = tree.errors(&format!(
        "{AGENT}\n[[stations]]\nid = \"press-01\"\nprofile = \"press\"\nsource = \"simulated\"\n"
    ));
    assert!(
        errors
            .to_string()
            .contains("only applies to opcua profiles"),
        "{errors}"
    );
}

#[test]
fn modbus_and_opc_ua_acquisition_tuning_keys_arrive_in_the_station_config() {
    use linesentry_agent::source::SourceTuning;
    use std::time::Duration;
    let tree = Tree::new();
    let config = tree
        .load(&format!(
            "{AGENT}\n[[stations]]\nid = \"press-01\"\nprofile = \"press\"\nsource = \"modbus_tcp\"\n\
             address = \"127.0.0.1:502\"\nmax_gap = 0\nmax_read_registers = 60\nmax_read_bits = 800\n\
             breaker_failures = 5\nbreaker_open_ms = 250\nbreaker_open_max_ms = 4000\n\
             identity_every_polls = 0\nreconnect_initial_ms = 50\nreconnect_max_ms = 5000\n\
             \n[[stations]]\nid = \"aoi-01\"\nprofile = \"aoi\"\nsource = \"opcua\"\n\
             endpoint_url = \"opc.tcp://127.0.0.1:4840\"\nqueue_size = 100\nwatchdog_intervals = 8\n\
             reconnect_max_ms = 2000\n\
             \n[[stations]]\nid = \"press-02\"\nprofile = \"press\"\nsource = \"modbus_rtu\"\n\
             device = \"/dev/ttyUSB0\"\nbreaker_failures = 2\n"
        ))
        .unwrap_or_else(|e| panic!("{e}"));
    let press = &config.stations[0].tuning;
    assert_eq!(
        (
            press.plan.max_gap,
            press.plan.max_registers,
            press.plan.max_bits
        ),
        (0, 60, 800)
    );
    assert_eq!(press.breaker_failures, 5);
    assert_eq!(
        (press.breaker_open, press.breaker_open_max),
        (Duration::from_millis(250), Duration::from_secs(4))
    );
    assert_eq!(press.identity_every, 0);
    assert_eq!(
        (press.reconnect_initial, press.reconnect_max),
        (Duration::from_millis(50), Duration::from_secs(5))
    );
    // Keys not given keep their defaults; OPC UA starts its reconnects at 500 ms.
    let aoi = &config.stations[1].tuning;
    assert_eq!((aoi.queue_size, aoi.watchdog_intervals), (100, 8));
    assert_eq!(
        (aoi.reconnect_initial, aoi.reconnect_max),
        (Duration::from_millis(500), Duration::from_secs(2))
    );
    assert_eq!(aoi.plan, SourceTuning::defaults_for("opcua").plan);
    let rtu = &config.stations[2].tuning;
    assert_eq!(
        *rtu,
        SourceTuning {
            breaker_failures: 2,
            ..SourceTuning::defaults_for("modbus_rtu")
        }
    );
    // What the Modbus station is built with.
    let options = linesentry_agent::source::modbus::StationOptions::from_tuning(press);
    assert_eq!(options.breaker.failure_threshold, 5);
    assert_eq!(options.reconnect.max, Duration::from_secs(5));
    assert_eq!(options.limits.max_registers, 60);
}

// --- fixture cases: `tests/fixtures/config_errors/<case>/` ----------------------------------

/// The cases whose point is "this file gives exactly these errors", one directory each:
/// `agent.toml`, optionally `devices/*.toml` (beside the `press` and `aoi` profiles above,
/// which a case's own file of the same name replaces), and `expected.txt`, the exact lines the
/// loader prints, file names relative to the case directory. `LINESENTRY_BLESS=1` (re)writes
/// every `expected.txt` from what the loader prints now: review the diff before committing.
const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/config_errors");

/// Loads one case in a fresh tree; the errors as printed, paths relative to the case.
fn fixture_output(case: &Path) -> String {
    let tree = Tree::new();
    let devices = case.join("devices");
    if devices.is_dir() {
        for entry in std::fs::read_dir(&devices).unwrap() {
            let path = entry.unwrap().path();
            std::fs::copy(
                &path,
                tree.root().join("devices").join(path.file_name().unwrap()),
            )
            .unwrap();
        }
    }
    let config = std::fs::read_to_string(case.join("agent.toml"))
        .unwrap_or_else(|e| panic!("{}: {e}", case.join("agent.toml").display()));
    let root = tree.root().display().to_string();
    let text = tree.errors(&config).to_string();
    let mut out = text
        .replace(&format!("{root}/config/../devices"), "devices")
        .replace(&format!("{root}/devices"), "devices")
        .replace(&format!("{root}/config/"), "");
    out.push('\n');
    out
}

/// A unified-style line diff of `expected` and `actual` (longest common subsequence).
fn line_diff(expected: &str, actual: &str) -> String {
    use std::fmt::Write as _;

    let a: Vec<&str> = expected.lines().collect();
    let b: Vec<&str> = actual.lines().collect();
    let mut lcs = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let mut out = String::from("--- expected.txt\n+++ actual\n");
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            let _ = writeln!(out, " {}", a[i]);
            i += 1;
            j += 1;
        } else if i < a.len() && (j == b.len() || lcs[i + 1][j] >= lcs[i][j + 1]) {
            let _ = writeln!(out, "-{}", a[i]);
            i += 1;
        } else {
            let _ = writeln!(out, "+{}", b[j]);
            j += 1;
        }
    }
    out
}

/// Runs every case directory under `dir` through `output` and compares with its
/// `expected.txt` (`LINESENTRY_BLESS=1` rewrites them); at least `min` cases.
fn check_fixture_cases(dir: &str, min: usize, output: impl Fn(&Path) -> String) {
    let bless = std::env::var_os("LINESENTRY_BLESS").is_some_and(|v| v == "1");
    let mut cases: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    cases.sort();
    assert!(cases.len() >= min, "fixture cases missing: {cases:?}");
    let mut failed = Vec::new();
    for case in &cases {
        let name = case.file_name().unwrap().to_string_lossy().into_owned();
        let actual = output(case);
        let expected_path = case.join("expected.txt");
        if bless {
            std::fs::write(&expected_path, &actual).unwrap();
            continue;
        }
        let expected = std::fs::read_to_string(&expected_path).unwrap_or_default();
        if expected != actual {
            eprintln!("case {name}:\n{}", line_diff(&expected, &actual));
            failed.push(name);
        }
    }
    assert!(
        failed.is_empty(),
        "{} of {} cases differ (diffs above; LINESENTRY_BLESS=1 rewrites expected.txt): {failed:?}",
        failed.len(),
        cases.len()
    );
}

#[test]
fn every_fixture_case_gives_exactly_its_expected_errors() {
    check_fixture_cases(FIXTURES, 30, fixture_output);
}

// --- profile fixture cases: `tests/fixtures/profile_errors/<case>/` -------------------------

/// A profile validated on its own (`linesentry validate --profile`), one directory per case:
/// the case's one `<name>.toml` and `expected.txt`, the exact lines the loader prints, the
/// file name relative to the case directory. `LINESENTRY_BLESS=1` rewrites `expected.txt`.
const PROFILE_FIXTURES: &str =
    concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/profile_errors");

fn profile_fixture_output(case: &Path) -> String {
    let files: Vec<PathBuf> = std::fs::read_dir(case)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    assert_eq!(
        files.len(),
        1,
        "{}: expected one profile file",
        case.display()
    );
    let text = match config::load_profile(&files[0]) {
        Ok(p) => panic!("{}: expected errors, loaded {p:#?}", case.display()),
        Err(errors) => errors.to_string(),
    };
    let mut out = text.replace(&format!("{}/", case.display()), "");
    out.push('\n');
    out
}

#[test]
fn every_profile_fixture_case_gives_exactly_its_expected_errors() {
    check_fixture_cases(PROFILE_FIXTURES, 5, profile_fixture_output);
}

#[test]
fn every_shipped_profile_validates_on_its_own() {
    for entry in std::fs::read_dir(repo().join("devices")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let profile = config::load_profile(&path).unwrap_or_else(|e| panic!("{e}"));
            assert!(!profile.tags.is_empty(), "{}", path.display());
        }
    }
}
