//! The built-in generator: plausible readings for any station profile, with no device.
//! It backs `source = "simulated"` stations and the demo. Pure: `sample` takes the time
//! and returns readings; the caller owns the clock and the schedule.
//!
//! Normal production: status mostly `run` with short setup/idle spells, measurements on a
//! bounded random walk around their setpoint, counters and part ids advancing, quality
//! mostly passing. On top, a fixed scenario plays once per `SCENARIO_TICKS` samples so the
//! demo shows what the agent is for: a setpoint tamper, a fault and its recovery, a switch
//! to PROGRAM mode and back, a program change and a burst of failed quality checks.
//!
//! [`Generator::steady`] leaves the scenario out: normal production only. The station
//! simulator (`crate::sim`) builds on it and plays its own, externally driven scenario; the
//! value helpers (`nominal`, `state_value`, `typed`, `quality_value`) are shared
//! with it so both produce the same shapes of value.

use std::sync::Arc;

use crate::source::{DataType, Quality, Reading, TagRole, Value};
use crate::source::{Profile, TagSpec};
use linesentry_event::Timestamp;

/// Length of one pass of the scenario, in samples.
pub const SCENARIO_TICKS: u64 = 120;

#[derive(Debug)]
struct GenTag {
    spec: TagSpec,
    /// Current engineering value for numeric tags.
    level: f64,
    /// The value normal operation returns to.
    nominal: f64,
}

#[derive(Debug)]
pub struct Generator {
    station_id: Arc<str>,
    tags: Vec<GenTag>,
    rng: fastrand::Rng,
    tick: u64,
    /// Offset into the scenario so stations do not all act at once.
    phase: u64,
    /// Whether the built-in scenario plays; `false` gives normal production only.
    scenario: bool,
    /// Share of quality checks that fail at random in normal production.
    defect_rate: f64,
}

impl Generator {
    pub fn new(station_id: &str, profile: &Profile, seed: u64) -> Self {
        let tags = profile
            .tags
            .iter()
            .map(|spec| {
                let nominal = nominal(spec);
                GenTag {
                    spec: spec.clone(),
                    level: nominal,
                    nominal,
                }
            })
            .collect();
        Self {
            station_id: Arc::from(station_id),
            tags,
            rng: fastrand::Rng::with_seed(seed),
            tick: 0,
            phase: seed % 17 * 3,
            scenario: true,
            defect_rate: 0.02,
        }
    }

    /// Like [`Generator::new`] but without the built-in scenario: status `run`, mode `run`,
    /// setpoints and alarm limits at nominal, the original program checksum; measurements,
    /// counters and part ids move, and about 2 % of quality checks fail at random.
    pub fn steady(station_id: &str, profile: &Profile, seed: u64) -> Self {
        Self {
            scenario: false,
            ..Self::new(station_id, profile, seed)
        }
    }

    /// The share of quality checks that fail at random (default 0.02).
    #[must_use]
    pub fn with_defect_rate(mut self, rate: f64) -> Self {
        self.defect_rate = rate.clamp(0.0, 1.0);
        self
    }

    /// One poll's readings.
    pub fn sample(&mut self, now: Timestamp) -> Vec<Reading> {
        let t = self.tick + self.phase;
        let scene = self
            .scenario
            .then_some((t % SCENARIO_TICKS, t / SCENARIO_TICKS));
        let mut out = Vec::with_capacity(self.tags.len());
        for i in 0..self.tags.len() {
            let value = self.value_of(i, scene);
            out.push(Reading {
                station_id: self.station_id.clone(),
                tag: Arc::from(self.tags[i].spec.name.as_str()),
                value,
                quality: Quality::Good,
                source_time: Some(now),
                received: now,
            });
        }
        self.tick += 1;
        out
    }

    /// The value of tag `i`; `scene` is the (step, pass) of the scenario, `None` without one.
    fn value_of(&mut self, i: usize, scene: Option<(u64, u64)>) -> Value {
        let during = |steps: std::ops::RangeInclusive<u64>| {
            scene.is_some_and(|(step, _)| steps.contains(&step))
        };
        let rng_draw = self.rng.f64();
        let tick = self.tick;
        let first_of_role = is_first_of_role(&self.tags, i);
        let t = &mut self.tags[i];
        let spec = &t.spec;
        match spec.role {
            TagRole::Status => {
                let names: &[&str] = if during(45..=49) {
                    &["fault", "error", "alarm"]
                } else if during(20..=22) {
                    &["setup", "waiting_board", "idle", "starved"]
                } else {
                    &["run", "running", "inspecting", "heating", "producing"]
                };
                first_state_of(spec, names)
            }
            TagRole::Mode => {
                let names: &[&str] = if during(60..=64) {
                    &["program", "programming", "teach", "maintenance"]
                } else {
                    &["run", "auto", "automatic", "continuous", "remote"]
                };
                first_state_of(spec, names)
            }
            TagRole::Setpoint => {
                // A tamper: one setpoint moves 8 % for a while, then is put back.
                let tampered = during(30..=70) && first_of_role;
                let v = if tampered {
                    t.nominal * 1.08
                } else {
                    t.nominal
                };
                typed(spec, v)
            }
            TagRole::AlarmLimit => typed(spec, t.nominal),
            TagRole::AlarmEnable | TagRole::ChangeWindow => {
                Value::Bool(spec.role == TagRole::AlarmEnable)
            }
            // Normal production shows no alarm.
            TagRole::AlarmActive => typed(spec, 0.0),
            TagRole::Measurement => {
                let (lo, hi) = spec.limits.map_or((t.nominal * 0.9, t.nominal * 1.1), |l| {
                    let margin = (l.max - l.min) * 0.1;
                    (l.min + margin, l.max - margin)
                });
                let span = (hi - lo).max(f64::EPSILON);
                t.level += (rng_draw - 0.5) * span * 0.008 + (t.nominal - t.level) * 0.02;
                t.level = t.level.clamp(lo, hi);
                typed(spec, t.level)
            }
            TagRole::Counter | TagRole::PartId => {
                if spec.role == TagRole::PartId || spec.data_type == DataType::String {
                    Value::Text(format!("P{:08}", tick + 1))
                } else {
                    typed(spec, (tick + 1) as f64)
                }
            }
            TagRole::QualityResult => {
                let fail = during(85..=91) || rng_draw < self.defect_rate;
                quality_value(spec, fail, rng_draw)
            }
            TagRole::ProgramChecksum => {
                let changed = scene.is_some_and(|(step, pass)| step >= 100 || pass > 0);
                typed(
                    spec,
                    if changed {
                        f64::from(0x5A17_C0DE_u32)
                    } else {
                        f64::from(0x1A2B_3C4D_u32)
                    },
                )
            }
            TagRole::Firmware => match spec.data_type {
                DataType::String => Value::Text("2.4.1".into()),
                _ => typed(spec, 241.0),
            },
        }
    }
}

fn is_first_of_role(tags: &[GenTag], i: usize) -> bool {
    tags.iter().position(|t| t.spec.role == tags[i].spec.role) == Some(i)
}

/// A quality result: a verdict of pass or fail, or a value inside (pass) or 20 % of the
/// half-range above (fail) the tag's limits. `draw` (0 to 1) places a passing value.
pub fn quality_value(spec: &TagSpec, fail: bool, draw: f64) -> Value {
    match (spec.data_type, spec.limits) {
        (DataType::Bool, _) => Value::Bool(!fail),
        (_, Some(l)) => {
            let mid = f64::midpoint(l.min, l.max);
            let half = (l.max - l.min) / 2.0;
            let v = if fail {
                l.max + half * 0.2
            } else {
                mid + half * (draw - 0.5)
            };
            typed(spec, v)
        }
        _ if !spec.states.is_empty() => state_value(spec, if fail { "fail" } else { "pass" }),
        _ => typed(spec, if fail { 0.0 } else { 1.0 }),
    }
}

/// Where a numeric tag sits in normal operation: mid-limits, else a type-plausible value.
pub fn nominal(spec: &TagSpec) -> f64 {
    match spec.limits {
        Some(l) => (f64::midpoint(l.min, l.max) * 10.0).round() / 10.0,
        None => match spec.role {
            TagRole::AlarmLimit => 900.0,
            _ => 100.0,
        },
    }
}

/// The first of `names` the tag has as a state, else what [`state_value`] picks for the first.
fn first_state_of(spec: &TagSpec, names: &[&str]) -> Value {
    let name = names
        .iter()
        .find(|n| spec.states.values().any(|s| s.eq_ignore_ascii_case(n)))
        .or(names.first())
        .copied()
        .unwrap_or("");
    state_value(spec, name)
}

/// The raw value whose state name is `name` (or a close match), else the first state.
pub(crate) fn state_value(spec: &TagSpec, name: &str) -> Value {
    let raw = spec
        .states
        .iter()
        .find(|(_, s)| s.eq_ignore_ascii_case(name))
        .or_else(|| {
            spec.states.iter().find(|(_, s)| {
                s.to_ascii_lowercase()
                    .starts_with(&name[..3.min(name.len())])
            })
        })
        .or_else(|| spec.states.iter().next())
        .map_or(0, |(k, _)| *k);
    match spec.data_type {
        DataType::Bool => Value::Bool(raw != 0),
        DataType::I16 | DataType::I32 | DataType::I64 => Value::Int(raw),
        DataType::String => Value::Text(name.to_owned()),
        _ => Value::UInt(u64::try_from(raw).unwrap_or(0)),
    }
}

/// An engineering value in the shape the tag's type decodes to.
pub fn typed(spec: &TagSpec, v: f64) -> Value {
    let scaled = (spec.scale - 1.0).abs() > f64::EPSILON || spec.offset.abs() > f64::EPSILON;
    match spec.data_type {
        DataType::F32 | DataType::F64 => Value::Float(v),
        _ if scaled => Value::Float(v),
        DataType::Bool => Value::Bool(v != 0.0),
        DataType::I16 | DataType::I32 | DataType::I64 => Value::Int(v.round() as i64),
        DataType::String => Value::Text(format!("{v}")),
        DataType::U16 | DataType::U32 | DataType::U64 => Value::UInt(v.round().max(0.0) as u64),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::PathBuf;

    use super::*;
    use crate::rules::{RuleSettings, TagRules};
    use crate::source::ByteOrder;
    use crate::source::{Limits, Protocol};

    fn spec(name: &str, role: TagRole, data_type: DataType) -> TagSpec {
        TagSpec {
            name: name.into(),
            role,
            data_type,
            order: ByteOrder::ABCD,
            length: 0,
            modbus: None,
            node_id: None,
            scale: 1.0,
            offset: 0.0,
            unit: None,
            states: BTreeMap::new(),
            limits: None,
            rules: TagRules::default(),
            server_deadband: None,
        }
    }

    fn profile() -> Profile {
        let states: BTreeMap<i64, String> = [(0, "idle"), (1, "run"), (2, "setup"), (3, "fault")]
            .map(|(k, v)| (k, v.to_owned()))
            .into();
        Profile {
            name: "p".into(),
            file: PathBuf::from("p.toml"),
            description: String::new(),
            protocol: Protocol::Modbus,
            rules: RuleSettings::default(),
            diagnostics: None,
            tags: vec![
                TagSpec {
                    states,
                    ..spec("state", TagRole::Status, DataType::U16)
                },
                TagSpec {
                    limits: Some(Limits {
                        min: 150.0,
                        max: 260.0,
                    }),
                    ..spec("temp", TagRole::Measurement, DataType::F32)
                },
                spec("verdict", TagRole::QualityResult, DataType::Bool),
            ],
        }
    }

    #[test]
    fn samples_stay_within_limits_and_types() {
        let mut g = Generator::new("s1", &profile(), 7);
        for _ in 0..500 {
            let r = g.sample(Timestamp::from_micros(0));
            assert_eq!(r.len(), 3);
            let Value::Float(t) = r[1].value else {
                panic!("{:?}", r[1].value)
            };
            assert!((150.0..=260.0).contains(&t), "{t}");
            assert!(matches!(r[0].value, Value::UInt(0..=3)));
            assert!(matches!(r[2].value, Value::Bool(_)));
        }
    }

    #[test]
    fn the_scenario_includes_a_fault_and_a_recovery() {
        let mut g = Generator::new("s1", &profile(), 0);
        let states: Vec<Value> = (0..SCENARIO_TICKS)
            .map(|_| g.sample(Timestamp::from_micros(0))[0].value.clone())
            .collect();
        let fault = states.iter().position(|v| *v == Value::UInt(3)).unwrap();
        assert!(states[fault..].contains(&Value::UInt(1)));
    }

    #[test]
    fn the_steady_generator_never_plays_the_scenario() {
        let mut g = Generator::steady("s1", &profile(), 0);
        for _ in 0..2 * SCENARIO_TICKS {
            let r = g.sample(Timestamp::from_micros(0));
            assert_eq!(r[0].value, Value::UInt(1), "status stays run");
        }
    }
}
