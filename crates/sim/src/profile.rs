//! Loading one station profile file, as the simulators serve it.

use std::path::Path;
use std::sync::Arc;

use linesentry_agent::config::{self, ConfigError, ConfigErrors};
use linesentry_agent::source::Profile;

/// Reads and validates one station profile file.
///
/// Stopgap: `linesentry_agent::config` has no single-profile loader yet, so this validates the profile
/// through an in-memory one-station configuration that references it. Errors in the
/// profile name the profile file, key path and line, as `linesentry validate` does.
pub fn load_profile(path: &Path) -> Result<Arc<Profile>, ConfigErrors> {
    let problem = |message: String| {
        ConfigErrors(vec![ConfigError {
            file: path.to_owned(),
            key_path: String::new(),
            line: None,
            message,
        }])
    };
    if let Err(e) = std::fs::metadata(path) {
        return Err(problem(format!("cannot read the profile file: {e}")));
    }
    if path.extension().and_then(|e| e.to_str()) != Some("toml") {
        return Err(problem(
            "expected a profile file named `<name>.toml`".to_owned(),
        ));
    }
    let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("");
    let valid_stem = !stem.is_empty()
        && stem.len() <= 64
        && stem
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if !valid_stem {
        return Err(problem(format!(
            "the file name `{}` is not a profile name; expected 1-64 characters of [A-Za-z0-9_-] before `.toml`",
            stem.escape_debug()
        )));
    }
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    // The wrapper sits beside the profile, so `profiles_dir = "."` is the profile's directory.
    let quoted = |s: &str| toml::Value::String(s.to_owned()).to_string();
    let wrapper = format!(
        "[agent]\ngateway_id = \"sim\"\nsite = \"sim\"\ndata_dir = \"sim-data\"\nprofiles_dir = \".\"\n\n\
         [[stations]]\nid = \"sim\"\nprofile = {}\nsource = \"simulated\"\n",
        quoted(stem),
    );
    let config = config::load_str(&dir.join(".linesentry-sim.toml"), &wrapper)?;
    match config.stations.first() {
        Some(station) => Ok(Arc::clone(&station.profile)),
        None => Err(problem("the profile did not load".to_owned())),
    }
}

/// Profiles for unit tests, written as TOML and validated like shipped ones, so fixtures
/// do not depend on the fields of `Profile` and `TagSpec`.
#[cfg(test)]
pub(crate) mod test_support {
    use std::sync::Arc;

    use super::load_profile;
    use linesentry_agent::source::Profile;

    /// The profile `name` with the given `[profile]` protocol and tag tables.
    pub(crate) fn profile(name: &str, protocol: &str, tags: &str) -> Arc<Profile> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(format!("{name}.toml"));
        let text = format!(
            "[profile]\nname = \"{name}\"\ndescription = \"A {name}\"\nprotocol = \"{protocol}\"\n\n{tags}"
        );
        std::fs::write(&path, text).unwrap();
        load_profile(&path).unwrap_or_else(|e| panic!("{e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use linesentry_agent::source::Protocol;

    #[test]
    fn a_shipped_profile_loads_by_path() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../devices/stamping_press.toml");
        let profile = load_profile(&path).unwrap();
        assert_eq!(profile.name, "stamping_press");
        assert_eq!(profile.protocol, Protocol::Modbus);
        // Tests run in the package root (crates/sim), so this is a shipped file by a relative path.
        let relative = load_profile(Path::new("../../devices/reflow_oven.toml")).unwrap();
        assert_eq!(relative.name, "reflow_oven");
    }

    #[test]
    fn a_missing_or_misnamed_profile_is_an_error_naming_the_file() {
        let errors = load_profile(Path::new("/nonexistent/x.toml")).unwrap_err();
        assert!(errors.0[0]
            .to_string()
            .starts_with("/nonexistent/x.toml: cannot read"));
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
        let errors = load_profile(dir).unwrap_err();
        assert!(errors.0[0].message.contains("<name>.toml"), "{errors}");
    }

    #[test]
    fn an_invalid_profile_reports_errors_in_the_profile_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.toml");
        std::fs::write(
            &path,
            "[profile]\nname = \"bad\"\nprotocol = \"modbus\"\n\n[[tags]]\nname = \"x\"\nrole = \"status\"\ntype = \"u16\"\narea = \"input_register\"\naddress = 1\n",
        )
        .unwrap();
        let errors = load_profile(&path).unwrap_err();
        assert!(errors.iter().all(|e| e.file == path), "{errors}");
        assert!(errors.to_string().contains("states"), "{errors}");
    }
}
