//! Suggested roles from a tag's name and type: what `discover` and `import` write when the
//! source says nothing about what a value means. Pure; always a suggestion, marked as one
//! in the profile, and always one the profile loader accepts for that type.

use crate::source::{DataType, TagRole};

/// A role for a tag named `name` (any spelling: `Zone1_SP`, `screw_torque_setpoint`,
/// `Cell.Alarms.TorqueAlarmEnable`) of type `data_type`, and why it was chosen. `None`
/// in the reason means no name matched and the type's default was taken.
///
/// Status and mode tags of an integer type need `states` the name cannot give; for them
/// the role is `measurement` (or `counter`) and the reason says which role the name hints.
pub fn suggest(name: &str, data_type: DataType) -> (TagRole, Option<String>) {
    let words = words(name);
    let has = |w: &str| words.iter().any(|x| x == w);
    let joined = words.concat();
    let contains = |w: &str| joined.contains(w);
    let numeric = data_type.is_numeric();
    let integer = numeric && !matches!(data_type, DataType::F32 | DataType::F64);
    let boolean = data_type == DataType::Bool;
    let text = data_type == DataType::String;
    let hint = |role: TagRole, why: &str| (role, Some(why.to_owned()));

    if (boolean || integer)
        && contains("alarm")
        && (has("enable") || has("enabled") || contains("enable"))
    {
        return hint(TagRole::AlarmEnable, "an alarm enable, from the name");
    }
    if boolean && (contains("keyswitch") || contains("maintenance")) {
        return hint(
            TagRole::ChangeWindow,
            "a maintenance key switch, from the name",
        );
    }
    if numeric
        && (contains("alarm") || contains("limit"))
        && (contains("limit") || has("high") || has("low") || has("hi") || has("lo"))
    {
        return hint(TagRole::AlarmLimit, "an alarm limit, from the name");
    }
    if numeric && (contains("setpoint") || has("sp") || has("target") || contains("override")) {
        return hint(TagRole::Setpoint, "a setpoint, from the name");
    }
    if (boolean || integer) && (contains("alarm") || contains("fault")) {
        return hint(TagRole::AlarmActive, "an alarm indication, from the name");
    }
    if text
        && (contains("firmware")
            || contains("softwareversion")
            || contains("buildinfo")
            || has("version")
            || contains("buildnumber"))
    {
        return hint(
            TagRole::Firmware,
            "a firmware or software version, from the name",
        );
    }
    if (text || integer) && (contains("checksum") || has("crc") || (has("program") && !has("mode")))
    {
        return hint(
            TagRole::ProgramChecksum,
            "a program checksum, from the name",
        );
    }
    if (boolean || numeric)
        && (contains("quality")
            || has("pass")
            || has("fail")
            || has("verdict")
            || has("ok")
            || has("nok"))
    {
        return hint(TagRole::QualityResult, "a quality verdict, from the name");
    }
    if integer
        && (contains("counter") || has("count") || has("cycles") || has("total") || has("parts"))
    {
        return hint(TagRole::Counter, "a counter, from the name");
    }
    if (text || integer)
        && (has("serial") || contains("partid") || contains("panelid") || contains("barcode"))
    {
        return hint(TagRole::PartId, "a part or panel id, from the name");
    }
    let status_like = has("state") || has("status") || contains("serverstatus");
    if has("mode") || status_like {
        let role = if has("mode") { "mode" } else { "status" };
        if boolean || text {
            let r = if has("mode") && boolean {
                TagRole::Mode
            } else {
                TagRole::Status
            };
            return hint(r, &format!("a {role}, from the name"));
        }
        return (
            TagRole::Measurement,
            Some(format!(
                "the name suggests role = \"{role}\"; an integer {role} tag needs `states` (raw value = name), add them and change the role"
            )),
        );
    }
    (
        match data_type {
            DataType::Bool => TagRole::Status,
            DataType::String => TagRole::Firmware,
            _ => TagRole::Measurement,
        },
        None,
    )
}

/// Lowercase words of a name: split at non-alphanumerics and at lower-to-upper case steps.
fn words(name: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut word = String::new();
    let mut prev_lower = false;
    for c in name.chars() {
        if !c.is_alphanumeric() {
            if !word.is_empty() {
                out.push(std::mem::take(&mut word));
            }
            prev_lower = false;
            continue;
        }
        if c.is_uppercase() && prev_lower && !word.is_empty() {
            out.push(std::mem::take(&mut word));
        }
        prev_lower = c.is_lowercase() || c.is_ascii_digit();
        word.extend(c.to_lowercase());
    }
    if !word.is_empty() {
        out.push(word);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use DataType as D;
    use TagRole as R;

    #[test]
    fn well_known_names_get_their_roles() {
        for (name, t, role) in [
            ("Zone1_SP", D::F32, R::Setpoint),
            ("screw_torque_setpoint", D::F32, R::Setpoint),
            ("Robot.SpeedOverride", D::U16, R::Setpoint),
            ("Cell.Alarms.TorqueAlarmEnable", D::Bool, R::AlarmEnable),
            ("TorqueHighLimit", D::F32, R::AlarmLimit),
            ("PressAlarm", D::Bool, R::AlarmActive),
            ("FirmwareVersion", D::String, R::Firmware),
            ("SoftwareVersion", D::String, R::Firmware),
            ("Program.Checksum", D::U32, R::ProgramChecksum),
            ("Counters.Cycles", D::U64, R::Counter),
            ("reject_count", D::U32, R::Counter),
            ("InspectionPass", D::Bool, R::QualityResult),
            ("MaintenanceKeySwitch", D::Bool, R::ChangeWindow),
            ("Zone1Temp", D::F32, R::Measurement),
            ("DoorClosed", D::Bool, R::Status),
        ] {
            assert_eq!(suggest(name, t).0, role, "{name}");
        }
    }

    #[test]
    fn an_integer_mode_or_state_is_a_measurement_with_a_note_since_it_needs_states() {
        let (role, why) = suggest("PLC.OperatingMode", D::U16);
        assert_eq!(role, R::Measurement);
        assert!(why.unwrap().contains("role = \"mode\""));
        let (role, why) = suggest("ServerStatus.State", D::I32);
        assert_eq!(role, R::Measurement);
        assert!(why.unwrap().contains("role = \"status\""));
        assert_eq!(suggest("RunMode", D::Bool).0, R::Mode);
    }

    #[test]
    fn a_name_that_says_nothing_gets_the_default_of_its_type_without_a_reason() {
        assert_eq!(suggest("x1", D::F64), (R::Measurement, None));
        assert_eq!(suggest("x1", D::Bool), (R::Status, None));
    }
}
