//! `[health]` on real files: the defaults, a protected non-loopback endpoint, and every kind
//! of mistake reported with the file, the line, the key path and what was expected.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use linesentry_agent::config::{self, Config, ConfigErrors};
use linesentry_agent::health::HealthSettings;

const AGENT: &str =
    "[agent]\ngateway_id = \"gw-test\"\nsite = \"test-site\"\ndata_dir = \"data\"\n";

/// A temporary `config/` directory to load `agent.toml` from.
struct Tree {
    dir: tempfile::TempDir,
}

impl Tree {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("config")).unwrap();
        Self { dir }
    }

    fn root(&self) -> &Path {
        self.dir.path()
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
fn assert_reported(errors: &ConfigErrors, line: usize, key: &str, expect: &str) {
    let head = format!("agent.toml:{line}: `{key}`: ");
    let found = errors.iter().map(ToString::to_string).any(|e| {
        e.find(&head)
            .is_some_and(|at| e[at + head.len()..].contains(expect))
    });
    assert!(found, "no error `{head}...{expect}...` in:\n{errors}");
}

#[test]
fn without_a_health_table_the_endpoint_is_plain_http_on_loopback_port_9464() {
    let config = Tree::new().load(AGENT).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        config.health,
        HealthSettings {
            enabled: true,
            listen: "127.0.0.1:9464".parse().unwrap(),
            tls: None,
            token: None,
            stall_after: Duration::from_secs(30),
        }
    );
    assert_eq!(config.health, HealthSettings::default());
}

#[test]
fn a_non_loopback_address_with_tls_and_a_token_loads_with_paths_resolved() {
    let tree = Tree::new();
    std::fs::write(tree.root().join("config/health-token"), "tok-41d8\n").unwrap();
    let config = tree
        .load(&format!(
            "{AGENT}[health]\nlisten = \"0.0.0.0:9464\"\nenabled = true\nstall_after_ms = 45000\n\
             tls = {{ cert_file = \"tls/health.crt\", key_file = \"/etc/linesentry/health.key\" }}\n\
             token = {{ file = \"health-token\" }}\n"
        ))
        .unwrap_or_else(|e| panic!("{e}"));
    let health = &config.health;
    assert_eq!(health.listen, "0.0.0.0:9464".parse::<SocketAddr>().unwrap());
    assert_eq!(health.stall_after, Duration::from_secs(45));
    let tls = health.tls.as_ref().unwrap();
    assert_eq!(tls.cert_file, tree.root().join("config/tls/health.crt"));
    assert_eq!(tls.key_file, Path::new("/etc/linesentry/health.key"));
    assert_eq!(health.token.as_ref().unwrap().expose(), "tok-41d8");
    assert!(!format!("{config:?}").contains("tok-41d8"));
}

#[test]
fn a_loopback_address_may_be_disabled_or_take_a_token_without_tls() {
    let tree = Tree::new();
    std::fs::write(tree.root().join("config/t"), "x\n").unwrap();
    let config = tree
        .load(&format!(
            "{AGENT}[health]\nlisten = \"[::1]:9100\"\nenabled = false\ntoken = {{ file = \"t\" }}\n"
        ))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(!config.health.enabled);
    assert_eq!(config.health.listen.port(), 9100);
    assert!(config.health.tls.is_none() && config.health.token.is_some());
}

#[test]
fn a_non_loopback_address_without_tls_and_token_is_refused_naming_both() {
    let tree = Tree::new();
    let errors = tree.errors(&format!("{AGENT}[health]\nlisten = \"0.0.0.0:9464\"\n"));
    assert_eq!(errors.len(), 1, "{errors}");
    assert_reported(
        &errors,
        6,
        "health.listen",
        "`0.0.0.0:9464` is not a loopback address",
    );
    let text = errors.to_string();
    assert!(text.contains("`tls` and `token` are missing"), "{text}");
    assert!(
        text.contains("expected a loopback address such as `127.0.0.1:9464`"),
        "{text}"
    );
}

#[test]
fn a_non_loopback_address_with_tls_but_no_token_is_refused_naming_the_token() {
    let tree = Tree::new();
    let errors = tree.errors(&format!(
        "{AGENT}[health]\nlisten = \"10.20.0.7:9464\"\n\
         tls = {{ cert_file = \"c.pem\", key_file = \"k.pem\" }}\n"
    ));
    assert_eq!(errors.len(), 1, "{errors}");
    assert_reported(&errors, 6, "health.listen", "but `token` is missing");
}

#[test]
fn a_listen_value_that_is_not_an_ip_and_port_names_the_expected_form() {
    let tree = Tree::new();
    for (bad, expect) in [
        (
            "localhost:9464",
            "expected an IP address and port such as `127.0.0.1:9464`",
        ),
        ("9464", "expected an IP address and port"),
        ("127.0.0.1:0", "expected a port between 1 and 65535"),
    ] {
        let errors = tree.errors(&format!("{AGENT}[health]\nlisten = \"{bad}\"\n"));
        assert_eq!(errors.len(), 1, "{errors}");
        assert_reported(&errors, 6, "health.listen", expect);
        assert!(errors.to_string().contains(bad), "{errors}");
    }
}

#[test]
fn an_out_of_range_stall_after_names_the_range_and_the_unit() {
    let tree = Tree::new();
    let errors = tree.errors(&format!("{AGENT}[health]\nstall_after_ms = 10\n"));
    assert_eq!(errors.len(), 1, "{errors}");
    assert_reported(
        &errors,
        6,
        "health.stall_after_ms",
        "expected an integer between 1000 and 3600000 (ms), found 10",
    );
}

#[test]
fn an_unknown_key_in_the_health_table_is_named_with_the_keys_expected() {
    let tree = Tree::new();
    let errors = tree.errors(&format!("{AGENT}[health]\nport = 9464\n"));
    assert_eq!(errors.len(), 1, "{errors}");
    assert_reported(
        &errors,
        6,
        "health.port",
        "unknown key `port`; expected one of `enabled`, `listen`, `tls`, `token`, `stall_after_ms`",
    );
}

#[test]
fn a_value_of_the_wrong_type_says_what_was_expected_and_found() {
    let tree = Tree::new();
    let errors = tree.errors(&format!("{AGENT}[health]\nenabled = \"yes\"\n"));
    assert_eq!(errors.len(), 1, "{errors}");
    assert_reported(
        &errors,
        6,
        "health.enabled",
        "expected a boolean, found string \"yes\"",
    );
}

#[test]
fn tls_without_its_key_file_names_the_missing_key_and_what_it_holds() {
    let tree = Tree::new();
    let errors = tree.errors(&format!(
        "{AGENT}[health]\ntls = {{ cert_file = \"c.pem\" }}\n"
    ));
    assert_eq!(errors.len(), 1, "{errors}");
    assert_reported(
        &errors,
        6,
        "health.tls.key_file",
        "missing required key `key_file`; expected the path of the PEM private key",
    );
}

#[test]
fn an_empty_tls_path_and_an_unknown_tls_key_are_refused() {
    let tree = Tree::new();
    let errors = tree.errors(&format!(
        "{AGENT}[health]\ntls = {{ cert_file = \"\", key_file = \"k.pem\" }}\n"
    ));
    assert_reported(
        &errors,
        6,
        "health.tls.cert_file",
        "expected the path of a PEM certificate chain",
    );
    let errors = tree.errors(&format!(
        "{AGENT}[health]\ntls = {{ cert = \"c.pem\", key_file = \"k.pem\" }}\n"
    ));
    assert_reported(&errors, 6, "health.tls.cert", "unknown key `cert`");
}

#[test]
fn a_plain_text_token_is_refused_and_never_echoed() {
    let tree = Tree::new();
    let errors = tree.errors(&format!("{AGENT}[health]\ntoken = \"hunter2\"\n"));
    assert_eq!(errors.len(), 1, "{errors}");
    assert_reported(&errors, 6, "health.token", "plain-text secrets are refused");
    assert!(!errors.to_string().contains("hunter2"), "{errors}");
}

#[test]
fn a_token_file_that_does_not_exist_names_the_key() {
    let tree = Tree::new();
    let errors = tree.errors(&format!(
        "{AGENT}[health]\ntoken = {{ file = \"no-such-token\" }}\n"
    ));
    assert_eq!(errors.len(), 1, "{errors}");
    assert_reported(&errors, 6, "health.token.file", "no-such-token");
}

#[test]
fn health_errors_come_with_errors_of_other_sections_in_line_order() {
    let tree = Tree::new();
    let errors = tree.errors(&format!(
        "{AGENT}[buffer]\nquota_mib = 0\n[health]\nlisten = \"192.168.1.5:9464\"\nstall_after_ms = 0\n"
    ));
    let lines: Vec<_> = errors.iter().map(|e| e.line).collect();
    assert_eq!(lines, vec![Some(6), Some(8), Some(9)], "{errors}");
}
