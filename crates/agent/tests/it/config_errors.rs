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
fn malformed_toml_is_one_error_with_the_line_of_the_syntax_error() {
    let tree = Tree::new();
    let errors =
        tree.errors("[agent]\ngateway_id = \"gw-test\"\nsite = \"test-site\ndata_dir = \"data\"\n");
    assert_eq!(errors.len(), 1, "{errors}");
    let text = errors.to_string();
    assert!(text.contains("agent.toml:3: invalid TOML:"), "{text}");
}

#[test]
fn an_unknown_top_level_table_is_named_with_the_tables_expected() {
    let tree = Tree::new();
    let errors = tree.errors(&format!("{AGENT}\n[metrics]\nport = 9100\n"));
    assert_eq!(errors.len(), 1, "{errors}");
    assert_reported(
        &errors,
        "agent.toml",
        6,
        "metrics",
        "unknown key `metrics`; expected one of `agent`, `buffer`",
    );
}

#[test]
fn an_unknown_key_in_a_station_is_named_with_the_keys_expected() {
    let tree = Tree::new();
    let errors = tree.errors(&format!(
        "{AGENT}\n[[stations]]\nid = \"press-01\"\nprofile = \"press\"\nsource = \"simulated\"\npol_interval_ms = 500\n"
    ));
    assert_eq!(errors.len(), 1, "{errors}");
    assert_reported(
        &errors,
        "agent.toml",
        10,
        "stations[0].pol_interval_ms",
        "unknown key `pol_interval_ms`; expected one of",
    );
    assert!(
        errors.to_string().contains("`poll_interval_ms`"),
        "{errors}"
    );
}

#[test]
fn an_unknown_key_in_a_profile_tag_is_reported_in_the_profile_file() {
    let tree = Tree::new();
    tree.profile(
        "press",
        &PRESS.replace("address = 0\n", "address = 0\nscael = 2.0\n"),
    );
    let errors = tree.errors(&format!(
        "{AGENT}[[stations]]\nid = \"p\"\nprofile = \"press\"\nsource = \"simulated\"\n"
    ));
    assert_eq!(errors.len(), 1, "{errors}");
    assert_reported(
        &errors,
        "press.toml",
        12,
        "tags[0].scael",
        "unknown key `scael`; expected one of",
    );
}

#[test]
fn a_value_of_the_wrong_type_says_what_was_expected_and_found() {
    let tree = Tree::new();
    let errors = tree.errors(&format!(
        "{AGENT}[[stations]]\nid = \"p\"\nprofile = \"press\"\nsource = \"simulated\"\npoll_interval_ms = \"fast\"\n"
    ));
    assert_reported(
        &errors,
        "agent.toml",
        9,
        "stations[0].poll_interval_ms",
        "expected an integer, found string \"fast\"",
    );
}

#[test]
fn an_out_of_range_value_names_the_range_and_the_unit() {
    let tree = Tree::new();
    let errors = tree.errors(&format!("{AGENT}[buffer]\nquota_mib = 0\n"));
    assert_eq!(errors.len(), 1, "{errors}");
    assert_reported(
        &errors,
        "agent.toml",
        6,
        "buffer.quota_mib",
        "expected an integer between 1 and 65536 (MiB), found 0",
    );
}

#[test]
fn a_missing_required_key_points_at_its_table() {
    let tree = Tree::new();
    let errors = tree.errors("[agent]\ngateway_id = \"gw-test\"\ndata_dir = \"data\"\n");
    assert_eq!(errors.len(), 1, "{errors}");
    assert_reported(
        &errors,
        "agent.toml",
        1,
        "agent.site",
        "missing required key `site`; expected 1-64 characters",
    );
}

#[test]
fn a_missing_agent_table_is_reported() {
    let tree = Tree::new();
    let errors = tree.errors("[buffer]\nquota_mib = 8\n");
    assert!(
        errors
            .to_string()
            .contains("`agent`: missing required table `[agent]`"),
        "{errors}"
    );
}

#[test]
fn a_duplicate_station_id_names_the_first_station() {
    let tree = Tree::new();
    let station = "[[stations]]\nid = \"press-01\"\nprofile = \"press\"\nsource = \"simulated\"\n";
    let errors = tree.errors(&format!("{AGENT}{station}{station}"));
    assert_eq!(errors.len(), 1, "{errors}");
    assert_reported(
        &errors,
        "agent.toml",
        10,
        "stations[1].id",
        "duplicate station id `press-01`; first used by stations[0]",
    );
}

#[test]
fn a_missing_profile_file_names_the_path_the_os_error_and_the_profiles_available() {
    let tree = Tree::new();
    let errors = tree.errors(&format!(
        "{AGENT}[[stations]]\nid = \"p\"\nprofile = \"pres\"\nsource = \"simulated\"\n"
    ));
    assert_eq!(errors.len(), 1, "{errors}");
    assert_reported(
        &errors,
        "agent.toml",
        7,
        "stations[0].profile",
        "cannot read profile file",
    );
    let text = errors.to_string();
    assert!(text.contains("pres.toml"), "{text}");
    assert!(text.contains("No such file or directory"), "{text}");
    assert!(text.contains("`aoi`, `press`"), "{text}");
}

#[test]
fn a_profile_whose_name_differs_from_its_file_name_is_refused() {
    let tree = Tree::new();
    tree.profile(
        "oven",
        &PRESS.replace("name = \"press\"", "name = \"reflow\""),
    );
    let errors = tree.errors(&format!(
        "{AGENT}[[stations]]\nid = \"o\"\nprofile = \"oven\"\nsource = \"simulated\"\n"
    ));
    assert_eq!(errors.len(), 1, "{errors}");
    assert_reported(
        &errors,
        "oven.toml",
        2,
        "profile.name",
        "profile name `reflow` does not match its file name `oven.toml`; expected `oven`",
    );
}

#[test]
fn a_modbus_profile_on_an_opcua_station_is_a_protocol_mismatch() {
    let tree = Tree::new();
    let errors = tree.errors(&format!(
        "{AGENT}[[stations]]\nid = \"p\"\nprofile = \"press\"\nsource = \"opcua\"\nendpoint_url = \"opc.tcp://127.0.0.1:4840\"\n"
    ));
    assert_eq!(errors.len(), 1, "{errors}");
    assert_reported(
        &errors,
        "agent.toml",
        7,
        "stations[0].profile",
        "profile `press` has protocol = \"modbus\"",
    );
    assert!(
        errors
            .to_string()
            .contains("expects a profile with protocol = \"opcua\""),
        "{errors}"
    );
}

#[test]
fn a_key_for_another_source_kind_is_named() {
    let tree = Tree::new();
    let errors = tree.errors(&format!(
        "{AGENT}[[stations]]\nid = \"p\"\nprofile = \"press\"\nsource = \"modbus_tcp\"\naddress = \"127.0.0.1:5020\"\ndevice = \"/dev/ttyUSB0\"\n"
    ));
    assert_eq!(errors.len(), 1, "{errors}");
    assert_reported(
        &errors,
        "agent.toml",
        10,
        "stations[0].device",
        "`device` only applies to source = \"modbus_rtu\"; expected no `device` on a station with source = \"modbus_tcp\"",
    );
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
fn a_malformed_node_id_is_reported_with_the_expected_form() {
    let tree = Tree::new();
    tree.profile("aoi", &AOI.replace("ns=2;s=AOI.Result", "AOI.Result"));
    let errors = tree.errors(&format!(
        "{AGENT}[[stations]]\nid = \"a\"\nprofile = \"aoi\"\nsource = \"simulated\"\n"
    ));
    assert_eq!(errors.len(), 1, "{errors}");
    assert_reported(
        &errors,
        "aoi.toml",
        9,
        "tags[0].node_id",
        "expected an OPC UA node id",
    );
    assert!(
        errors.to_string().contains("found `AOI.Result`"),
        "{errors}"
    );
}

#[test]
fn a_bool_in_a_register_area_without_a_bit_is_refused() {
    let tree = Tree::new();
    tree.profile(
        "press",
        "[profile]\nname = \"press\"\nprotocol = \"modbus\"\n\n[[tags]]\nname = \"alarm_on\"\nrole = \"alarm_enable\"\ntype = \"bool\"\narea = \"holding_register\"\naddress = 12\n",
    );
    let errors = tree.errors(&format!(
        "{AGENT}[[stations]]\nid = \"p\"\nprofile = \"press\"\nsource = \"simulated\"\n"
    ));
    assert_eq!(errors.len(), 1, "{errors}");
    assert_reported(
        &errors,
        "press.toml",
        5,
        "tags[0].bit",
        "missing required key `bit` for a bool tag in a register area",
    );
}

#[test]
fn errors_in_several_sections_and_files_are_reported_together_in_file_and_line_order() {
    let tree = Tree::new();
    tree.profile("aoi", &AOI.replace("type = \"u16\"", "type = \"u17\""));
    let config = "[agent]\n\
         gateway_id = \"gw test\"\n\
         site = \"test-site\"\n\
         data_dir = \"data\"\n\
         [buffer]\n\
         quota_mib = 0\n\
         [log]\n\
         format = \"xml\"\n\
         [[stations]]\n\
         id = \"p\"\n\
         profile = \"press\"\n\
         source = \"simulated\"\n\
         colour = \"red\"\n\
         [[stations]]\n\
         id = \"a\"\n\
         profile = \"aoi\"\n\
         source = \"simulated\"\n\
         poll_interval_ms = 1\n\
         [forward.https]\n\
         url = \"http://10.0.0.5/ingest\"\n";
    let errors = tree.errors(config);
    let lines: Vec<String> = errors
        .iter()
        .map(|e| {
            format!(
                "{}:{}",
                e.file.file_name().unwrap().to_string_lossy(),
                e.line.unwrap_or(0)
            )
        })
        .collect();
    assert_eq!(
        lines,
        [
            "agent.toml:2",
            "agent.toml:6",
            "agent.toml:8",
            "agent.toml:13",
            "agent.toml:18",
            "agent.toml:20",
            "aoi.toml:8"
        ],
        "\n{errors}"
    );
    assert_reported(
        &errors,
        "agent.toml",
        2,
        "agent.gateway_id",
        "expected 1-64 characters of [A-Za-z0-9._-], found `gw test`",
    );
    assert_reported(
        &errors,
        "agent.toml",
        8,
        "log.format",
        "expected `text` or `json`, found `xml`",
    );
    assert_reported(
        &errors,
        "agent.toml",
        18,
        "stations[1].poll_interval_ms",
        "expected an integer between 10 and 3600000 (ms), found 1",
    );
    assert_reported(
        &errors,
        "agent.toml",
        20,
        "forward.https.url",
        "plain http is refused for a non-loopback host",
    );
    assert_reported(&errors, "aoi.toml", 8, "tags[0].type", "found `u17`");
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
fn alarm_links_to_a_missing_tag_or_a_tag_of_another_role_are_refused() {
    let tree = Tree::new();
    tree.profile(
        "press",
        &PRESS_ALARMS.replace(
            "alarm_high = \"die_temp_high\"\n",
            "alarm_high = \"die_temp_hi\"\nalarm_low = \"press_alarm\"\n",
        ),
    );
    let errors = tree.errors(&press_station());
    assert_eq!(errors.len(), 2, "{errors}");
    assert_reported(
        &errors,
        "press.toml",
        18,
        "tags[0].alarm_high",
        "no tag is named `die_temp_hi`; expected the name of an alarm_limit tag: `die_temp_high`",
    );
    assert_reported(
        &errors,
        "press.toml",
        19,
        "tags[0].alarm_low",
        "`press_alarm` is an alarm_active tag; expected the name of an alarm_limit tag: `die_temp_high`",
    );
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
fn trend_and_alarm_keys_out_of_range_misplaced_or_without_effect_are_each_reported() {
    let tree = Tree::new();
    tree.profile(
        "press",
        &PRESS_ALARMS
            .replace("trend_points = 7", "trend_points = 2")
            .replace("trend_margin_percent = 10.0", "trend_margin_percent = 60.0")
            .replace("alarm_grace_s = 3", "alarm_grace_s = 3601")
            .replace(
                "scale = 0.1\n\n",
                "scale = 0.1\ntrend_points = 8\nalarm_active = \"press_alarm\"\n\n",
            )
            .replace("type = \"bool\"", "type = \"f32\"")
            .replace("area = \"discrete_input\"", "area = \"input_register\""),
    );
    let errors = tree.errors(&press_station());
    assert_eq!(errors.len(), 6, "{errors}");
    assert_reported(
        &errors,
        "press.toml",
        6,
        "rules.trend_points",
        "expected an integer between 3 and 100 (values), found 2",
    );
    assert_reported(
        &errors,
        "press.toml",
        7,
        "rules.trend_margin_percent",
        "expected a finite number between 0 and 50 (% of the limits' span), found 60",
    );
    assert_reported(
        &errors,
        "press.toml",
        8,
        "rules.alarm_grace_s",
        "expected an integer between 0 and 3600 (s), found 3601",
    );
    assert_reported(
        &errors,
        "press.toml",
        28,
        "tags[1].trend_points",
        "`trend_points` only applies to numeric measurement tags with limits; expected no `trend_points` on a alarm_limit tag of type i16",
    );
    assert_reported(
        &errors,
        "press.toml",
        29,
        "tags[1].alarm_active",
        "`alarm_active` only applies to numeric measurement tags",
    );
    assert_reported(
        &errors,
        "press.toml",
        34,
        "tags[2].type",
        "an alarm_active tag is on (non-zero) or off (zero); expected type bool or an integer type, found f32",
    );
}

#[test]
fn an_alarm_output_named_without_an_alarm_limit_is_refused_as_without_effect() {
    let tree = Tree::new();
    tree.profile(
        "press",
        &PRESS_ALARMS.replace(
            "alarm_high = \"die_temp_high\"",
            "alarm_active = \"press_alarm\"",
        ),
    );
    let errors = tree.errors(&press_station());
    assert_eq!(errors.len(), 1, "{errors}");
    assert_reported(
        &errors,
        "press.toml",
        18,
        "tags[0].alarm_active",
        "`alarm_active` without `alarm_high` or `alarm_low` has no limit to watch",
    );
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
fn out_of_range_rules_values_name_the_key_the_range_and_the_unit() {
    let tree = Tree::new();
    tree.profile(
        "oven",
        &OVEN
            .replace("unreachable_after = 5", "unreachable_after = 0")
            .replace("stale_after_s = 300", "stale_after_s = -1")
            .replace("deadband_percent = 0.5", "deadband_percent = 150")
            .replace("clock_skew_ms = 2000", "clock_skew_ms = 0"),
    );
    let errors = tree.errors(&oven_station(""));
    assert_eq!(errors.len(), 4, "{errors}");
    assert_reported(
        &errors,
        "oven.toml",
        6,
        "rules.unreachable_after",
        "expected an integer between 1 and 1000 (polls), found 0",
    );
    assert_reported(
        &errors,
        "oven.toml",
        7,
        "rules.stale_after_s",
        "expected an integer between 1 and 86400 (s), found -1",
    );
    assert_reported(
        &errors,
        "oven.toml",
        8,
        "rules.deadband_percent",
        "expected a finite number between 0 and 100 (% of the limits' span), found 150",
    );
    assert_reported(
        &errors,
        "oven.toml",
        11,
        "rules.clock_skew_ms",
        "expected an integer between 1 and 3600000 (ms), found 0",
    );
}

#[test]
fn a_not_finite_deadband_percent_is_refused() {
    let tree = Tree::new();
    tree.profile(
        "oven",
        &OVEN.replace("deadband_percent = 0.5", "deadband_percent = nan"),
    );
    let errors = tree.errors(&oven_station(""));
    assert_eq!(errors.len(), 1, "{errors}");
    assert_reported(
        &errors,
        "oven.toml",
        8,
        "rules.deadband_percent",
        "expected a finite number between 0 and 100 (% of the limits' span), found NaN",
    );
}

#[test]
fn an_unknown_key_in_the_rules_table_is_named_with_the_keys_expected() {
    let tree = Tree::new();
    tree.profile(
        "oven",
        &OVEN.replace("stale_after_s = 300", "stale_after = 300"),
    );
    let errors = tree.errors(&oven_station(""));
    assert_eq!(errors.len(), 1, "{errors}");
    assert_reported(
        &errors,
        "oven.toml",
        7,
        "rules.stale_after",
        "unknown key `stale_after`; expected one of",
    );
    assert!(errors.to_string().contains("`stale_after_s`"), "{errors}");
}

#[test]
fn quality_failures_above_quality_window_is_refused_with_the_window_size() {
    let tree = Tree::new();
    tree.profile(
        "oven",
        &OVEN.replace("quality_failures = 3", "quality_failures = 12"),
    );
    let errors = tree.errors(&oven_station(""));
    assert_eq!(errors.len(), 1, "{errors}");
    assert_reported(
        &errors,
        "oven.toml",
        10,
        "rules.quality_failures",
        "expected an integer between 1 and quality_window (10)",
    );
    assert!(errors.to_string().contains("found 12"), "{errors}");
}

#[test]
fn a_deadband_on_a_non_numeric_tag_is_refused() {
    let tree = Tree::new();
    tree.profile(
        "oven",
        &OVEN.replace("debounce_ms = 1500", "deadband = 1.0"),
    );
    let errors = tree.errors(&oven_station(""));
    assert_eq!(errors.len(), 1, "{errors}");
    assert_reported(
        &errors,
        "oven.toml",
        32,
        "tags[1].deadband",
        "`deadband` only applies to numeric measurement tags; expected no `deadband` on a status tag of type bool",
    );
}

#[test]
fn tag_rule_keys_that_do_not_apply_or_are_out_of_range_are_each_reported() {
    let tree = Tree::new();
    tree.profile(
        "oven",
        &OVEN
            .replace("deadband = 2.0", "deadband = -0.5")
            .replace("heartbeat_s = 120", "deadband_percent = 1.0")
            .replace("debounce_ms = 1500", "debounce_ms = 600001")
            .replace("heartbeat_s = 900", "stale_after_s = 60"),
    );
    let errors = tree.errors(&oven_station(""));
    assert_eq!(errors.len(), 4, "{errors}");
    assert_reported(
        &errors,
        "oven.toml",
        21,
        "tags[0].deadband",
        "expected a finite number >= 0 (engineering units, °C), found -0.5",
    );
    assert_reported(
        &errors,
        "oven.toml",
        22,
        "tags[0].deadband_percent",
        "`deadband` and `deadband_percent` are both given",
    );
    assert_reported(
        &errors,
        "oven.toml",
        32,
        "tags[1].debounce_ms",
        "expected an integer between 0 and 600000 (ms), found 600001",
    );
    assert_reported(
        &errors,
        "oven.toml",
        33,
        "tags[1].stale_after_s",
        "`stale_after_s` only applies to measurement tags; expected no `stale_after_s` on a status tag",
    );
}

#[test]
fn a_change_window_time_that_is_not_rfc_3339_names_the_key_and_the_expected_form() {
    let tree = Tree::new();
    tree.profile("oven", OVEN);
    let errors = tree.errors(&oven_station(
        "change_windows = [\n  { start = \"2026-11-28T06:00:00Z\", end = \"2026-11-28T10:00:00Z\" },\n  \
         { start = \"28.11.2026 22:00\", end = \"2026-11-29T02:00:00Z\" },\n  \
         { start = 2026-11-30T06:00:00, end = 1764500000 },\n]\n",
    ));
    assert_eq!(errors.len(), 3, "{errors}");
    assert_reported(
        &errors,
        "agent.toml",
        11,
        "stations[0].change_windows[1].start",
        "expected an RFC 3339 date-time with a UTC offset such as `2026-11-28T06:00:00Z`, found `28.11.2026 22:00`",
    );
    assert_reported(
        &errors,
        "agent.toml",
        12,
        "stations[0].change_windows[2].start",
        "expected an RFC 3339 date-time with a UTC offset such as `2026-11-28T06:00:00Z`, found `2026-11-30T06:00:00` (a local date or time, which has no UTC offset; add `Z`",
    );
    assert_reported(
        &errors,
        "agent.toml",
        12,
        "stations[0].change_windows[2].end",
        "expected an RFC 3339 date-time such as `2026-11-28T06:00:00Z`, found an integer",
    );
}

#[test]
fn a_change_window_whose_start_is_not_before_its_end_is_refused() {
    let tree = Tree::new();
    tree.profile("oven", OVEN);
    let errors = tree.errors(&oven_station(
        "[[stations.change_windows]]\nstart = \"2026-11-28T10:00:00Z\"\nend = \"2026-11-28T06:00:00Z\"\n\
         [[stations.change_windows]]\nstart = \"2026-11-28T12:00:00+01:00\"\nend = \"2026-11-28T11:00:00Z\"\n",
    ));
    assert_eq!(errors.len(), 2, "{errors}");
    assert_reported(
        &errors,
        "agent.toml",
        11,
        "stations[0].change_windows[0].end",
        "expected end after start, found start = 2026-11-28T10:00:00Z and end = 2026-11-28T06:00:00Z",
    );
    assert_reported(
        &errors,
        "agent.toml",
        14,
        "stations[0].change_windows[1].end",
        "expected end after start, found start = 2026-11-28T12:00:00+01:00 and end = 2026-11-28T11:00:00Z",
    );
}

#[test]
fn a_change_window_with_an_unknown_or_missing_key_is_refused() {
    let tree = Tree::new();
    tree.profile("oven", OVEN);
    let errors = tree.errors(&oven_station(
        "change_windows = [{ start = \"2026-11-28T06:00:00Z\", until = \"2026-11-28T10:00:00Z\" }]\n",
    ));
    assert_eq!(errors.len(), 1, "{errors}");
    assert_reported(
        &errors,
        "agent.toml",
        9,
        "stations[0].change_windows[0].until",
        "unknown key `until`; expected `start` or `end`",
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
fn plain_mqtt_to_a_broker_off_this_host_is_refused_naming_the_tls_table() {
    let tree = Tree::new();
    let errors = tree.errors(&format!(
        "{AGENT}[forward.mqtt]\nhost = \"broker.plant.example\"\n"
    ));
    assert_eq!(errors.len(), 1, "{errors}");
    let text = errors.to_string();
    assert!(
        text.contains(
            "`forward.mqtt.tls`: broker `broker.plant.example` is not a loopback address"
        ),
        "{text}"
    );
}

#[test]
fn a_forward_strategy_needing_a_missing_sink_is_refused() {
    let tree = Tree::new();
    let errors = tree.errors(&format!(
        "{AGENT}[forward]\nstrategy = \"both\"\n\n[forward.mqtt]\nhost = \"127.0.0.1\"\n"
    ));
    let text = errors.to_string();
    assert!(
        text.contains("`forward.strategy`: strategy needs a [forward.https] section"),
        "{text}"
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

#[test]
fn out_of_range_acquisition_tuning_values_name_the_key_the_range_and_the_unit() {
    let tree = Tree::new();
    let errors = tree.errors(&format!(
        "{AGENT}\n[[stations]]\nid = \"press-01\"\nprofile = \"press\"\nsource = \"modbus_tcp\"\n\
         address = \"127.0.0.1:502\"\nmax_gap = 2001\nmax_read_registers = 126\nmax_read_bits = 0\n\
         breaker_failures = 0\nbreaker_open_ms = 5\nidentity_every_polls = -1\n\
         reconnect_max_ms = 100000000\n\
         \n[[stations]]\nid = \"aoi-01\"\nprofile = \"aoi\"\nsource = \"opcua\"\n\
         endpoint_url = \"opc.tcp://127.0.0.1:4840\"\nqueue_size = 0\nwatchdog_intervals = 5\n"
    ));
    let cases = [
        (
            11,
            "max_gap",
            "between 0 and 2000 (registers or bits), found 2001",
        ),
        (
            12,
            "max_read_registers",
            "between 1 and 125 (registers), found 126",
        ),
        (13, "max_read_bits", "between 1 and 2000 (bits), found 0"),
        (
            14,
            "breaker_failures",
            "between 1 and 1000 (polls), found 0",
        ),
        (
            15,
            "breaker_open_ms",
            "between 10 and 3600000 (ms), found 5",
        ),
        (
            16,
            "identity_every_polls",
            "between 0 and 1000000 (polls), found -1",
        ),
        (
            17,
            "reconnect_max_ms",
            "between 10 and 3600000 (ms), found 100000000",
        ),
    ];
    for (line, key, expect) in cases {
        assert_reported(
            &errors,
            "agent.toml",
            line,
            &format!("stations[0].{key}"),
            expect,
        );
    }
    assert_reported(
        &errors,
        "agent.toml",
        24,
        "stations[1].queue_size",
        "between 1 and 10000 (values), found 0",
    );
    assert_reported(
        &errors,
        "agent.toml",
        25,
        "stations[1].watchdog_intervals",
        "between 6 and 10000 (publishing intervals), found 5",
    );
    assert_eq!(errors.len(), cases.len() + 2, "{errors}");
}

#[test]
fn a_backoff_whose_longest_delay_is_below_its_first_is_refused_naming_both_keys() {
    let tree = Tree::new();
    let errors = tree.errors(&format!(
        "{AGENT}\n[[stations]]\nid = \"press-01\"\nprofile = \"press\"\nsource = \"modbus_tcp\"\n\
         address = \"127.0.0.1:502\"\nbreaker_open_ms = 5000\nbreaker_open_max_ms = 1000\n\
         \n[[stations]]\nid = \"aoi-01\"\nprofile = \"aoi\"\nsource = \"opcua\"\n\
         endpoint_url = \"opc.tcp://127.0.0.1:4840\"\nreconnect_max_ms = 400\n"
    ));
    assert_reported(
        &errors,
        "agent.toml",
        12,
        "stations[0].breaker_open_max_ms",
        "expected at least `breaker_open_ms` (5000 ms), found 1000 ms",
    );
    // Against the default first delay of an OPC UA station (500 ms).
    assert_reported(
        &errors,
        "agent.toml",
        19,
        "stations[1].reconnect_max_ms",
        "expected at least `reconnect_initial_ms` (500 ms), found 400 ms",
    );
    assert_eq!(errors.len(), 2, "{errors}");
}

#[test]
fn acquisition_tuning_keys_of_another_source_kind_are_named() {
    let tree = Tree::new();
    let errors = tree.errors(&format!(
        "{AGENT}\n[[stations]]\nid = \"press-01\"\nprofile = \"press\"\nsource = \"modbus_tcp\"\n\
         address = \"127.0.0.1:502\"\nqueue_size = 10\n\
         \n[[stations]]\nid = \"aoi-01\"\nprofile = \"aoi\"\nsource = \"opcua\"\n\
         endpoint_url = \"opc.tcp://127.0.0.1:4840\"\nmax_gap = 4\n\
         \n[[stations]]\nid = \"press-02\"\nprofile = \"press\"\nsource = \"modbus_rtu\"\n\
         device = \"/dev/ttyUSB0\"\nreconnect_initial_ms = 100\n"
    ));
    assert_reported(
        &errors,
        "agent.toml",
        11,
        "stations[0].queue_size",
        "`queue_size` only applies to source = \"opcua\"",
    );
    assert_reported(
        &errors,
        "agent.toml",
        18,
        "stations[1].max_gap",
        "`max_gap` only applies to source = \"modbus_tcp\" or \"modbus_rtu\"",
    );
    assert_reported(
        &errors,
        "agent.toml",
        25,
        "stations[2].reconnect_initial_ms",
        "`reconnect_initial_ms` only applies to source = \"modbus_tcp\" or \"opcua\"; expected no `reconnect_initial_ms` on a station with source = \"modbus_rtu\"",
    );
    assert_eq!(errors.len(), 3, "{errors}");
}
