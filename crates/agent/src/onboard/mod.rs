//! Onboarding a station: the tools that write and check a profile (`devices/<name>.toml`)
//! before any station names it.
//!
//! * [`import`]: a Modbus register map in CSV (vendor spreadsheets) to a profile; pure.
//! * [`discover`]: browse an OPC UA server with a station's security options and write a
//!   profile skeleton; the browse is I/O, the skeleton ([`discover::render`]) is pure.
//! * [`probe`]: read every tag of a profile once or N times from the live device and say,
//!   tag by tag, what came back and what is wrong; the verdicts ([`probe::judge`]) are pure.
//!
//! Every profile these tools write is first validated by the normal profile loader
//! ([`crate::config::parse_profile`]) and then written to a temporary file beside the
//! target and renamed over it ([`write_profile`]), so a failed run never leaves half a
//! profile behind. Every device call runs under a timeout.

pub mod csv;
pub mod discover;
pub mod import;
pub mod probe;
pub mod roles;
mod session;

pub use session::OpcUaTarget;

use std::io::Write as _;
use std::path::{Path, PathBuf};

use crate::config::{parse_profile, ConfigErrors};
use crate::source::Profile;

/// Why a generated profile was not written.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The profile does not pass the loader's checks: a bug of the generator or a name the
    /// loader refuses; every error named.
    #[error("the generated profile does not validate:\n{0}")]
    Invalid(ConfigErrors),
    #[error("cannot write {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Validates `text` as the profile file `path` and writes it there atomically (a temporary
/// file in the same directory, fsynced, then renamed). Nothing is written when it does
/// not validate.
pub fn write_profile(path: &Path, text: &str) -> Result<Profile, WriteError> {
    let profile = parse_profile(path, text).map_err(WriteError::Invalid)?;
    let io = |source| WriteError::Io {
        path: path.to_owned(),
        source,
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut file = tempfile::Builder::new()
        .prefix(".linesentry-profile-")
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(io)?;
    file.write_all(text.as_bytes()).map_err(io)?;
    file.as_file().sync_all().map_err(io)?;
    file.persist(path).map_err(|e| io(e.error))?;
    Ok(profile)
}

/// A profile name from a file stem or free text: lowercase letters, digits and `_`,
/// everything else folded to one `_`; at most 64 characters; `None` when nothing is left.
pub fn snake_name(text: &str) -> Option<String> {
    let mut out = String::with_capacity(text.len());
    let mut prev_lower = false;
    for c in text.chars() {
        if c.is_ascii_alphanumeric() {
            // CamelCase words become snake_case words: ScrewTorque -> screw_torque.
            if c.is_ascii_uppercase() && prev_lower && !out.ends_with('_') {
                out.push('_');
            }
            prev_lower = c.is_ascii_lowercase() || c.is_ascii_digit();
            out.push(c.to_ascii_lowercase());
        } else {
            prev_lower = false;
            if !out.is_empty() && !out.ends_with('_') {
                out.push('_');
            }
        }
    }
    while out.ends_with('_') {
        out.pop();
    }
    out.truncate(64);
    while out.ends_with('_') {
        out.pop();
    }
    (!out.is_empty()).then_some(out)
}

/// A TOML string literal (quoted, escaped).
pub(crate) fn toml_str(text: &str) -> String {
    toml::Value::String(text.to_owned()).to_string()
}

/// A TOML float literal that reads back as the same f64 (`1.0`, not `1`).
pub(crate) fn toml_float(x: f64) -> String {
    let text = format!("{x:?}");
    if text.contains(['.', 'e', 'E']) || !x.is_finite() {
        text
    } else {
        format!("{text}.0")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_become_snake_case_and_vendor_punctuation_folds_to_one_underscore() {
        assert_eq!(
            snake_name("Zone 1 Temp (°C)").as_deref(),
            Some("zone_1_temp_c")
        );
        assert_eq!(snake_name("ScrewTorque").as_deref(), Some("screw_torque"));
        assert_eq!(
            snake_name("PLC.OperatingMode").as_deref(),
            Some("plc_operating_mode")
        );
        assert_eq!(snake_name("--").as_deref(), None);
        assert_eq!(snake_name(&"x".repeat(80)).map(|s| s.len()), Some(64));
    }

    #[test]
    fn floats_are_written_so_toml_reads_a_float_back() {
        assert_eq!(toml_float(1.0), "1.0");
        assert_eq!(toml_float(0.1), "0.1");
        assert_eq!(toml_float(-2.5e300), "-2.5e300");
        let back: f64 = toml::from_str::<toml::Table>(&format!("x = {}", toml_float(0.1)))
            .ok()
            .and_then(|t| t.get("x").and_then(toml::Value::as_float))
            .unwrap_or_default();
        assert!((back - 0.1).abs() < f64::EPSILON);
    }

    #[test]
    fn a_profile_that_does_not_validate_is_not_written_and_the_old_file_stays() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("press.toml");
        std::fs::write(&path, "old").unwrap();
        let err = write_profile(&path, "[profile]\nname = \"press\"\n").unwrap_err();
        assert!(matches!(err, WriteError::Invalid(_)), "{err}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "old");
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(left.len(), 1, "no temporary file is left behind");

        let good = "[profile]\nname = \"press\"\nprotocol = \"modbus\"\n[[tags]]\nname = \"c\"\nrole = \"counter\"\ntype = \"u16\"\narea = \"input_register\"\naddress = 1\n";
        let profile = write_profile(&path, good).unwrap();
        assert_eq!(profile.tags.len(), 1);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), good);
    }
}
