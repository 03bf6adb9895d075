//! `linesentry discover opcua ENDPOINT`: browse an OPC UA server's address space and write
//! a profile skeleton.
//!
//! The session is a station's ([`super::session`]): the agent's PKI and trust flow, the
//! configured policy, mode and identity. The browse is breadth-first from a start node
//! (default Objects, `i=85`) along hierarchical references, returning Objects and Variables
//! only (methods, types and views are never followed), up to a depth and a node count;
//! every node is visited once, so reference cycles end. The Server object (`i=2253`) is left
//! out unless asked for: the agent reads server status, build info and diagnostics on its
//! own (reserved tags). A Variable's properties (`HasProperty`) are not tags; its
//! `EURange`, `EngineeringUnits` and `EnumStrings` become the tag's limits, unit and states.
//! Then the DataType and ValueRank of every variable are read, in batches, each call under
//! the timeout.
//!
//! [`render`] turns what was found into the profile text (pure): one tag per scalar variable
//! whose DataType maps to a profile type (`convert::natural_type`, so the DataType check at
//! connect accepts it), named after its browse path, with a role suggested from its name and
//! type and marked as a suggestion; every variable left out is listed in a comment with
//! the reason.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt::Write as _;

use opcua::types::{
    AttributeId, BrowseDescription, BrowseDirection, BrowseResult, ByteString, EUInformation,
    ExtensionObject, Identifier, NodeClass, NodeId, Range, ReadValueId, TimestampsToReturn,
    Variant,
};

use super::session::{self, Connected, OpcUaTarget};
use super::{roles, snake_name, toml_float, toml_str};
use crate::source::opcua::convert;
use crate::source::{DataType, SourceError, TagRole};

/// What to browse and how much.
#[derive(Debug, Clone)]
pub struct DiscoverOptions {
    /// Node id text of the start node.
    pub start: String,
    /// Levels below the start node.
    pub max_depth: u32,
    /// Nodes visited before the browse stops (the profile then says it is incomplete).
    pub max_nodes: usize,
    /// Browse paths (`Cell/Process/ScrewTorque`) to keep: `*` matches any text; empty keeps
    /// all. Case-insensitive.
    pub include: Vec<String>,
    /// Browse paths to leave out, as `include`.
    pub exclude: Vec<String>,
    /// Browse into Variables too (their components), not just Objects.
    pub expand_variables: bool,
    /// Browse the Server object (`i=2253`) as well.
    pub include_server: bool,
}

impl Default for DiscoverOptions {
    fn default() -> Self {
        Self {
            start: "i=85".into(),
            max_depth: 10,
            max_nodes: 50_000,
            include: Vec::new(),
            exclude: Vec::new(),
            expand_variables: true,
            include_server: false,
        }
    }
}

/// Why discovery failed.
#[derive(Debug, thiserror::Error)]
pub enum DiscoverError {
    #[error("`{0}` is not an OPC UA node id (such as `i=85` or `ns=2;s=Line1`)")]
    StartNode(String),
    #[error("{0}")]
    Source(#[from] SourceError),
    #[error("the server refuses to browse {node}: {status}")]
    Refused { node: String, status: String },
}

/// One variable found.
#[derive(Debug, Clone, PartialEq)]
pub struct Variable {
    pub node_id: String,
    /// Browse names from below the start node, joined with `/`.
    pub path: String,
    /// The DataType attribute, `None` when it could not be read.
    pub data_type: Option<NodeId>,
    /// -1 scalar; 0 and above arrays.
    pub value_rank: i32,
    pub unit: Option<String>,
    /// EURange, low and high.
    pub range: Option<(f64, f64)>,
    /// EnumStrings: value i is named `enum_strings[i]`.
    pub enum_strings: Vec<String>,
}

/// What a browse found.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Found {
    pub variables: Vec<Variable>,
    /// Nodes visited (objects and variables).
    pub visited: usize,
    /// The node bound stopped the browse.
    pub truncated: bool,
    /// References to nodes already visited (cycles, several parents).
    pub revisits: usize,
    /// Nodes the server refused to browse or read (node id, status).
    pub refused: Vec<(String, String)>,
}

/// Progress of a running browse, for a terminal's progress line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    pub visited: usize,
    pub variables: usize,
    pub queued: usize,
}

/// Nodes per Browse request, references per node and answer (more come through
/// continuation points), and nodes per Read request: each answer stays well under the
/// message size the client accepts.
const BROWSE_BATCH: usize = 16;
const MAX_REFERENCES: u32 = 250;
const READ_BATCH: usize = 500;
const HAS_PROPERTY: u32 = 46;
const HIERARCHICAL: u32 = 33;
const SERVER_OBJECT: u32 = 2253;

/// Connects, browses and reads what the profile needs; calls `progress` after every batch.
pub async fn discover(
    target: &OpcUaTarget,
    options: &DiscoverOptions,
    progress: &mut (dyn FnMut(Progress) + Send),
) -> Result<Found, DiscoverError> {
    let start = convert::parse_node_id(&options.start)
        .map_err(|_| DiscoverError::StartNode(options.start.clone()))?;
    let connected = session::connect(target).await?;
    let result = browse_all(&connected, &start, options, progress).await;
    connected.close().await;
    result
}

struct Pending {
    node: NodeId,
    path: String,
    depth: u32,
    is_variable: bool,
    /// Follow its components, not just its properties.
    expand: bool,
}

#[allow(clippy::too_many_lines)] // one breadth-first loop; its steps share the queue and the found set
async fn browse_all(
    s: &Connected,
    start: &NodeId,
    options: &DiscoverOptions,
    progress: &mut (dyn FnMut(Progress) + Send),
) -> Result<Found, DiscoverError> {
    let mut found = Found::default();
    let mut seen: HashSet<NodeId> = HashSet::from([start.clone()]);
    let mut queue = VecDeque::from([Pending {
        node: start.clone(),
        path: String::new(),
        depth: 0,
        is_variable: false,
        expand: true,
    }]);
    // Variable node -> index in found.variables; its properties -> (variable, name).
    let mut index: HashMap<NodeId, usize> = HashMap::new();
    let mut properties: Vec<(usize, String, NodeId)> = Vec::new();
    let mut first = true;
    'outer: while !queue.is_empty() {
        let batch: Vec<Pending> = queue.drain(..queue.len().min(BROWSE_BATCH)).collect();
        let descriptions: Vec<BrowseDescription> = batch
            .iter()
            .map(|p| BrowseDescription {
                node_id: p.node.clone(),
                browse_direction: BrowseDirection::Forward,
                reference_type_id: NodeId::new(0, HIERARCHICAL),
                include_subtypes: true,
                // Objects and Variables only: methods, types and views are not tags.
                node_class_mask: 1 | 2,
                result_mask: 0x3F,
            })
            .collect();
        let results = s
            .call(s.session.browse(&descriptions, MAX_REFERENCES, None))
            .await?;
        for (parent, result) in batch.iter().zip(results) {
            let references = match all_references(s, result).await {
                Ok(r) => r,
                Err(status) => {
                    if first {
                        return Err(DiscoverError::Refused {
                            node: parent.node.to_string(),
                            status,
                        });
                    }
                    found.refused.push((parent.node.to_string(), status));
                    continue;
                }
            };
            for r in references {
                if r.node_id.server_index != 0 {
                    continue; // on another server
                }
                let node = r.node_id.node_id.clone();
                let name = r.browse_name.name.as_ref().to_owned();
                let is_property = r.reference_type_id == NodeId::new(0, HAS_PROPERTY);
                if parent.is_variable && is_property {
                    if let Some(&v) = index.get(&parent.node) {
                        properties.push((v, name, node));
                    }
                    continue;
                }
                if is_property || (parent.is_variable && !parent.expand) {
                    // An object's properties are not tags either; a variable beyond the
                    // depth (or with --no-expand-variables) is browsed for properties only.
                    continue;
                }
                if !seen.insert(node.clone()) {
                    found.revisits += 1;
                    continue;
                }
                if !options.include_server && node == NodeId::new(0, SERVER_OBJECT) {
                    continue;
                }
                if found.visited >= options.max_nodes {
                    found.truncated = true;
                    break 'outer;
                }
                found.visited += 1;
                let path = if parent.path.is_empty() {
                    name
                } else {
                    format!("{}/{name}", parent.path)
                };
                let is_variable = r.node_class == NodeClass::Variable;
                if is_variable {
                    index.insert(node.clone(), found.variables.len());
                    found.variables.push(Variable {
                        node_id: node.to_string(),
                        path: path.clone(),
                        data_type: None,
                        value_rank: -1,
                        unit: None,
                        range: None,
                        enum_strings: Vec::new(),
                    });
                }
                // Variables are browsed for their properties even past the depth limit.
                let within = parent.depth < options.max_depth;
                if within || is_variable {
                    queue.push_back(Pending {
                        node,
                        path,
                        depth: parent.depth + 1,
                        is_variable,
                        expand: within && (!is_variable || options.expand_variables),
                    });
                }
            }
            first = false;
        }
        progress(Progress {
            visited: found.visited,
            variables: found.variables.len(),
            queued: queue.len(),
        });
    }
    read_attributes(s, &mut found, &properties).await?;
    Ok(found)
}

/// Every reference of one browse result, following continuation points.
async fn all_references(
    s: &Connected,
    mut result: BrowseResult,
) -> Result<Vec<opcua::types::ReferenceDescription>, String> {
    let mut out = Vec::new();
    loop {
        if result.status_code.is_bad() {
            return Err(convert::status_name(result.status_code).to_owned());
        }
        out.extend(result.references.take().unwrap_or_default());
        let point: ByteString = result.continuation_point.clone();
        if point.is_null_or_empty() {
            return Ok(out);
        }
        let next = s
            .call(s.session.browse_next(false, &[point]))
            .await
            .map_err(|e| e.to_string())?;
        let Some(next) = next.into_iter().next() else {
            return Ok(out);
        };
        result = next;
    }
}

/// DataType and ValueRank of every variable, and the values of their EURange,
/// EngineeringUnits and EnumStrings properties.
async fn read_attributes(
    s: &Connected,
    found: &mut Found,
    properties: &[(usize, String, NodeId)],
) -> Result<(), DiscoverError> {
    let mut reads: Vec<(usize, u8, ReadValueId)> = Vec::new();
    for (i, v) in found.variables.iter().enumerate() {
        let Ok(node) = convert::parse_node_id(&v.node_id) else {
            continue;
        };
        for (kind, attribute) in [(0u8, AttributeId::DataType), (1, AttributeId::ValueRank)] {
            reads.push((
                i,
                kind,
                ReadValueId {
                    attribute_id: attribute as u32,
                    ..ReadValueId::from(node.clone())
                },
            ));
        }
    }
    for (i, name, node) in properties {
        let kind = match name.as_str() {
            "EURange" => 2,
            "EngineeringUnits" => 3,
            "EnumStrings" => 4,
            _ => continue,
        };
        reads.push((*i, kind, ReadValueId::from(node.clone())));
    }
    for chunk in reads.chunks(READ_BATCH) {
        let ids: Vec<ReadValueId> = chunk.iter().map(|(_, _, r)| r.clone()).collect();
        let values = s
            .call(s.session.read(&ids, TimestampsToReturn::Neither, 0.0))
            .await?;
        for ((i, kind, _), dv) in chunk.iter().zip(values) {
            let Some(v) = found.variables.get_mut(*i) else {
                continue;
            };
            if dv.status.is_some_and(|s| s.is_bad()) {
                if *kind == 0 {
                    found.refused.push((
                        v.node_id.clone(),
                        dv.status.map_or("", convert::status_name).to_owned(),
                    ));
                }
                continue;
            }
            let Some(value) = dv.value else { continue };
            match (kind, value) {
                (0, Variant::NodeId(id)) => v.data_type = Some(*id),
                (1, Variant::Int32(rank)) => v.value_rank = rank,
                (2, Variant::ExtensionObject(obj)) => v.range = range(&obj),
                (3, Variant::ExtensionObject(obj)) => {
                    v.unit = obj
                        .inner_as::<EUInformation>()
                        .map(|eu| eu.display_name.text.as_ref().to_owned())
                        .filter(|t| !t.is_empty());
                }
                (4, Variant::Array(array)) => {
                    v.enum_strings = array
                        .values
                        .iter()
                        .map(|item| match item {
                            Variant::LocalizedText(t) => t.text.as_ref().to_owned(),
                            Variant::String(t) => t.as_ref().to_owned(),
                            other => format!("{other:?}"),
                        })
                        .collect();
                }
                _ => {}
            }
        }
    }
    Ok(())
}

fn range(obj: &ExtensionObject) -> Option<(f64, f64)> {
    let r = obj.inner_as::<Range>()?;
    (r.low.is_finite() && r.high.is_finite() && r.low < r.high).then_some((r.low, r.high))
}

/// The profile type that reads a node of this DataType as it is, or why none does.
pub fn profile_type(data_type: Option<&NodeId>, value_rank: i32) -> Result<DataType, String> {
    if value_rank >= 0 {
        return Err(format!(
            "an array (ValueRank {value_rank}); the agent reads scalars"
        ));
    }
    let Some(id) = data_type else {
        return Err("its DataType could not be read".into());
    };
    let Some(name) = convert::data_type_name(id) else {
        let shown = match (&id.identifier, id.namespace) {
            (Identifier::Numeric(n), 0) => format!("i={n}"),
            _ => id.to_string(),
        };
        return Err(format!(
            "DataType {shown} (a structure, a vendor type or an abstract type) is not one the agent reads"
        ));
    };
    let text = match name {
        // Abstract types: each value comes as a concrete one; take the widest.
        "Number" => "f64",
        "Integer" => "i64",
        "UInteger" => "u64",
        other => convert::natural_type(other),
    };
    let parsed = serde_json::from_value::<DataType>(serde_json::Value::String(text.to_owned()))
        .map_err(|e| e.to_string())?;
    // The check a station runs at connect must accept what is written here.
    convert::check_data_type(id, parsed)
        .map_err(|n| format!("DataType {n} has no profile type that fits"))?;
    Ok(parsed)
}

/// Whether `path` passes the include and exclude globs.
pub fn selected(path: &str, options: &DiscoverOptions) -> bool {
    let path = path.to_lowercase();
    let matches = |glob: &String| glob_match(&glob.to_lowercase(), &path);
    (options.include.is_empty() || options.include.iter().any(matches))
        && !options.exclude.iter().any(matches)
}

/// `*` matches any run of characters (slashes too); everything else itself.
fn glob_match(glob: &str, text: &str) -> bool {
    let parts: Vec<&str> = glob.split('*').collect();
    let [first, middle @ .., last] = parts.as_slice() else {
        return glob == text;
    };
    if parts.len() == 1 {
        return glob == text;
    }
    let Some(mut rest) = text.strip_prefix(first) else {
        return false;
    };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

/// The profile text for what was found: `name` is the profile name (the file stem),
/// `endpoint` goes into the description.
#[allow(clippy::too_many_lines)] // the profile top to bottom, one key per line
pub fn render(name: &str, endpoint: &str, found: &Found, options: &DiscoverOptions) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# Discovered by `linesentry discover opcua {endpoint}` from {}: {} nodes visited, {} variables.",
        options.start,
        found.visited,
        found.variables.len()
    );
    if found.truncated {
        let _ = writeln!(
            out,
            "# INCOMPLETE: the browse stopped at --max-nodes {}; narrow it with --start, --include or --depth.",
            options.max_nodes
        );
    }
    let _ = writeln!(
        out,
        "# Roles are suggestions (marked below): check each, then linesentry probe and linesentry validate --profile.\n"
    );
    let _ = writeln!(out, "[profile]");
    let _ = writeln!(out, "name = {}", toml_str(name));
    let _ = writeln!(
        out,
        "description = {}",
        toml_str(&format!("Discovered from {endpoint}"))
    );
    let _ = writeln!(out, "protocol = \"opcua\"");
    let mut names: HashSet<String> = HashSet::new();
    let mut skipped = Vec::new();
    for v in &found.variables {
        if !selected(&v.path, options) {
            continue;
        }
        let data_type = match profile_type(v.data_type.as_ref(), v.value_rank) {
            Ok(t) => t,
            Err(why) => {
                skipped.push(format!("# skipped {} ({}): {why}", v.node_id, v.path));
                continue;
            }
        };
        let tag_name = unique_name(&v.path, &mut names);
        let integer = data_type.is_numeric() && !matches!(data_type, DataType::F32 | DataType::F64);
        let (mut role, mut why) = roles::suggest(&v.path, data_type);
        let states: Vec<(usize, &String)> = if integer || data_type == DataType::Bool {
            v.enum_strings
                .iter()
                .enumerate()
                .filter(|(i, s)| !s.is_empty() && (data_type != DataType::Bool || *i < 2))
                .collect()
        } else {
            Vec::new()
        };
        if integer && !states.is_empty() && role == TagRole::Measurement {
            let mode = v.path.to_lowercase().contains("mode");
            role = if mode { TagRole::Mode } else { TagRole::Status };
            why = Some(format!(
                "a {} with EnumStrings, from the name and the node",
                if mode { "mode" } else { "status" }
            ));
        }
        out.push('\n');
        let _ = writeln!(out, "# {}", v.path);
        let _ = writeln!(
            out,
            "# role: suggested ({}); check it",
            why.unwrap_or_else(|| format!("the default for a {} node", data_type.name()))
        );
        let _ = writeln!(out, "[[tags]]");
        let _ = writeln!(out, "name = {}", toml_str(&tag_name));
        let _ = writeln!(out, "role = \"{role}\"");
        let _ = writeln!(out, "type = \"{}\"", data_type.name());
        let _ = writeln!(out, "node_id = {}", toml_str(&v.node_id));
        if let Some(unit) = &v.unit {
            let _ = writeln!(out, "unit = {}", toml_str(unit));
        }
        if let (true, Some((lo, hi))) = (data_type.is_numeric(), v.range) {
            let _ = writeln!(
                out,
                "limits = {{ min = {}, max = {} }}",
                toml_float(lo),
                toml_float(hi)
            );
        }
        if !states.is_empty() {
            let items: Vec<String> = states
                .iter()
                .map(|(i, s)| format!("{i} = {}", toml_str(s)))
                .collect();
            let _ = writeln!(out, "states = {{ {} }}", items.join(", "));
        }
    }
    if !skipped.is_empty() {
        out.push('\n');
        for line in skipped {
            out.push_str(&line);
            out.push('\n');
        }
    }
    for (node, status) in &found.refused {
        let _ = writeln!(out, "# refused by the server: {node}: {status}");
    }
    out
}

/// A tag name from a browse path, unique among `taken` (`_2`, `_3`, ... when not).
fn unique_name(path: &str, taken: &mut HashSet<String>) -> String {
    let base = snake_name(path).unwrap_or_else(|| "tag".to_owned());
    let mut name = base.clone();
    let mut n = 2;
    while taken.contains(&name) {
        let suffix = format!("_{n}");
        let mut stem = base.clone();
        stem.truncate(64 - suffix.len());
        name = format!("{}{suffix}", stem.trim_end_matches('_'));
        n += 1;
    }
    taken.insert(name.clone());
    name
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_profile;
    use std::path::Path;

    fn var(path: &str, node: &str, type_id: u32) -> Variable {
        Variable {
            node_id: node.into(),
            path: path.into(),
            data_type: Some(NodeId::new(0, type_id)),
            value_rank: -1,
            unit: None,
            range: None,
            enum_strings: Vec::new(),
        }
    }

    #[test]
    fn data_types_map_to_profile_types_the_connect_check_accepts() {
        for (id, t) in [
            (1, DataType::Bool),
            (4, DataType::I16),
            (5, DataType::U16),
            (6, DataType::I32),
            (7, DataType::U32),
            (8, DataType::I64),
            (9, DataType::U64),
            (10, DataType::F32),
            (11, DataType::F64),
            (12, DataType::String),
            (13, DataType::String),
            (26, DataType::F64),
            (29, DataType::U16),
        ] {
            assert_eq!(profile_type(Some(&NodeId::new(0, id)), -1), Ok(t), "i={id}");
        }
        assert!(profile_type(Some(&NodeId::new(0, 11)), 1)
            .unwrap_err()
            .contains("array"));
        assert!(profile_type(Some(&NodeId::new(0, 884)), -1)
            .unwrap_err()
            .contains("DataType i=884"));
        assert!(profile_type(Some(&NodeId::new(2, "MyStruct")), -1).is_err());
        assert!(profile_type(None, -1).is_err());
    }

    #[test]
    fn globs_match_whole_paths_case_insensitively() {
        let o = |include: &[&str], exclude: &[&str]| DiscoverOptions {
            include: include.iter().map(ToString::to_string).collect(),
            exclude: exclude.iter().map(ToString::to_string).collect(),
            ..DiscoverOptions::default()
        };
        assert!(selected("Cell/Process/Torque", &o(&[], &[])));
        assert!(selected("Cell/Process/Torque", &o(&["cell/*"], &[])));
        assert!(!selected("Robot/Speed", &o(&["cell/*"], &[])));
        assert!(!selected(
            "Cell/Process/Torque",
            &o(&["cell/*"], &["*torque"])
        ));
        assert!(selected("Cell/Process/Torque", &o(&["*/process/*"], &[])));
        assert!(!selected("Cell/Process", &o(&["*/process/*"], &[])));
        assert!(glob_match("a*b*c", "axxbyyc") && !glob_match("a*b*c", "axxbyy"));
    }

    #[test]
    fn the_skeleton_validates_with_units_limits_states_and_marked_suggestions() {
        let mut temp = var("Oven/Zone1/Temperature", "ns=2;s=Oven.Zone1.Temp", 11);
        temp.unit = Some("°C".into());
        temp.range = Some((0.0, 300.0));
        let mut mode = var("Oven/OperatingMode", "ns=2;i=17", 6);
        mode.enum_strings = vec!["Manual".into(), "Auto".into(), "Maintenance".into()];
        let mut array = var("Oven/Profile", "ns=2;s=Oven.Profile", 11);
        array.value_rank = 1;
        let found = Found {
            variables: vec![
                temp,
                var("Oven/Zone1/Setpoint", "ns=2;s=Oven.Zone1.SP", 10),
                mode,
                var("Oven/State", "ns=2;s=Oven.State", 5),
                var("Oven/Counters/Boards", "ns=2;s=Oven.Boards", 7),
                var("Oven/Firmware", "ns=2;s=Oven.Fw", 12),
                array,
                var("Oven/Recipe", "ns=2;s=Oven.Recipe", 22),
            ],
            visited: 12,
            ..Found::default()
        };
        let text = render(
            "oven",
            "opc.tcp://plc:4840",
            &found,
            &DiscoverOptions::default(),
        );
        let profile = parse_profile(Path::new("/d/oven.toml"), &text)
            .unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(profile.tags.len(), 6, "{text}");
        let t = profile.tag("oven_zone1_temperature").unwrap();
        assert_eq!(
            (t.data_type, t.unit.as_deref()),
            (DataType::F64, Some("°C"))
        );
        assert_eq!(t.limits.map(|l| (l.min, l.max)), Some((0.0, 300.0)));
        assert_eq!(t.node_id.as_deref(), Some("ns=2;s=Oven.Zone1.Temp"));
        assert_eq!(
            profile.tag("oven_zone1_setpoint").unwrap().role,
            TagRole::Setpoint
        );
        let m = profile.tag("oven_operating_mode").unwrap();
        assert_eq!(
            (m.role, m.state_name(2)),
            (TagRole::Mode, Some("Maintenance"))
        );
        assert_eq!(
            profile.tag("oven_state").unwrap().role,
            TagRole::Measurement
        );
        assert!(
            text.contains("the name suggests role = \"status\""),
            "{text}"
        );
        assert_eq!(
            profile.tag("oven_counters_boards").unwrap().role,
            TagRole::Counter
        );
        assert_eq!(
            profile.tag("oven_firmware").unwrap().role,
            TagRole::Firmware
        );
        assert!(
            text.contains("# skipped ns=2;s=Oven.Profile (Oven/Profile): an array"),
            "{text}"
        );
        assert!(
            text.contains("# skipped ns=2;s=Oven.Recipe (Oven/Recipe): DataType i=22"),
            "{text}"
        );
        assert_eq!(text.matches("# role: suggested (").count(), 6, "{text}");
    }

    #[test]
    fn paths_that_fold_to_the_same_name_get_numbered_and_a_truncated_browse_says_so() {
        let found = Found {
            variables: vec![
                var("Line/Speed", "ns=2;i=1", 11),
                var("Line.Speed", "ns=2;i=2", 11),
                var("line speed", "ns=2;i=3", 11),
            ],
            visited: 3,
            truncated: true,
            ..Found::default()
        };
        let text = render(
            "line",
            "opc.tcp://x:4840",
            &found,
            &DiscoverOptions::default(),
        );
        let profile = parse_profile(Path::new("/d/line.toml"), &text).unwrap();
        let names: Vec<&str> = profile.tags.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["line_speed", "line_speed_2", "line_speed_3"]);
        assert!(text.contains("# INCOMPLETE: the browse stopped at --max-nodes 50000"));
    }
}
