//! The asset inventory: one row per station a gateway reports on, with what its events
//! showed of it (protocol, address, vendor, product, firmware, program checksum, certificate,
//! security policy, status, mode, reachability), and the history of its changes.
//!
//! Maintained inside the ingest transaction ([`record`], called by `store::commit` with the
//! gateway events it really inserted, under the gateways' advisory locks): the rows of the
//! stations concerned are read, the events applied in timestamp order by the pure
//! [`Asset::apply`], and the rows written back with one statement, the history with another.
//!
//! Per field the asset keeps the timestamp of the event that set it (`field_times`): an
//! older event that arrives late (alerts travel ahead of older telemetry) is written to the
//! history but does not overwrite a newer value. A field replaced by a different value of
//! a *change* event (identity, firmware, program) is listed in `changed_fields`, which the
//! page highlights.
//!
//! What the agent reports today: station lists with protocol and address in
//! `agent.started` (`station_list`, when the agent sends one), identity fields in
//! `identity.changed`, firmware in `firmware.changed`, the program checksum in
//! `program.changed`, the mode in `mode.changed`, the equipment state in `equipment.status`
//! and `equipment.fault`, reachability in `device.unreachable` / `device.recovered`, the
//! security policy in `security_policy.downgraded`. A first-contact snapshot of a station
//! (`asset` object in any station event's data: the same field names) fills fields too.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use serde_json::{json, Map, Value};
use uuid::Uuid;

use super::db::DbError;
use linesentry_event::SecurityEvent;

/// The learned fields of an asset, as columns of `assets`.
pub const FIELDS: &[&str] = &[
    "protocol",
    "address",
    "vendor",
    "product",
    "product_name",
    "firmware",
    "program_checksum",
    "application_uri",
    "certificate_thumbprint",
    "security_policy",
    "status",
    "mode",
    "reachable",
];

/// Fields whose change is a security finding the page highlights.
pub const WATCHED: &[&str] = &[
    "vendor",
    "product",
    "firmware",
    "program_checksum",
    "application_uri",
    "certificate_thumbprint",
    "security_policy",
];

/// Longest value kept for a field, in characters (the full text stays in the event).
const MAX_FIELD: usize = 256;
/// Most stations one `agent.started` station list may create.
const MAX_LISTED: usize = 1000;

/// One station as the inventory knows it.
#[derive(Debug, Clone, PartialEq)]
pub struct Asset {
    pub gateway_id: String,
    pub station_id: String,
    /// Learned values by field name ([`FIELDS`]); `reachable` is `true` / `false`.
    pub fields: BTreeMap<String, String>,
    /// Event timestamp (µs) that set each field.
    pub field_times: BTreeMap<String, i64>,
    pub changed_fields: BTreeSet<String>,
    pub first_seen: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
    pub events: i64,
    pub last_change_at: Option<DateTime<Utc>>,
}

/// One row of `asset_history`.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub gateway_id: String,
    pub station_id: String,
    pub at: DateTime<Utc>,
    pub field: String,
    pub value: Option<String>,
    pub previous: Option<String>,
    pub event_id: Uuid,
    pub event_type: String,
}

/// What one event says about one field.
#[derive(Debug, Clone, PartialEq)]
struct Observation {
    field: &'static str,
    value: Option<String>,
    /// The previous value the event itself reports (a change event), if any.
    previous: Option<String>,
    /// A change event: the field is highlighted when its value is replaced.
    change: bool,
    /// Written to the history even when the value is the same (restarts, outages).
    always_history: bool,
}

fn clip(s: &str) -> String {
    s.chars()
        .filter(|c| !c.is_control() && *c != '\0')
        .take(MAX_FIELD)
        .collect()
}

/// A JSON value as a field's text: strings as they are, other values compact.
fn as_text(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::String(s) => Some(clip(s)),
        other => Some(clip(&other.to_string())),
    }
}

fn member(data: &Map<String, Value>, key: &str) -> Option<String> {
    data.get(key).and_then(as_text)
}

fn obs(field: &'static str, value: Option<String>, previous: Option<String>) -> Observation {
    Observation {
        field,
        value,
        previous,
        change: false,
        always_history: false,
    }
}

/// The field an identity member of the agent (`DeviceIdentity`) maps to.
fn identity_field(name: &str) -> Option<&'static str> {
    Some(match name {
        "vendor" => "vendor",
        "product_code" | "product" => "product",
        "product_name" => "product_name",
        "application_uri" => "application_uri",
        "certificate_thumbprint" => "certificate_thumbprint",
        "revision" | "software_version" | "firmware" => "firmware",
        "protocol" => "protocol",
        "address" | "endpoint" => "address",
        "security_policy" => "security_policy",
        "program_checksum" => "program_checksum",
        _ => return None,
    })
}

/// What a station event says about its station.
fn observations(e: &SecurityEvent) -> Vec<Observation> {
    let d = &e.event_data;
    let mut out = Vec::new();
    if let Some(snapshot) = d.get("asset").and_then(Value::as_object) {
        for (k, v) in snapshot {
            if let Some(field) = identity_field(k) {
                out.push(obs(field, as_text(v), None));
            }
        }
    }
    let changed = |field: &'static str, value: &str, previous: &str| Observation {
        field,
        value: member(d, value),
        previous: member(d, previous),
        change: true,
        always_history: false,
    };
    match e.event_type.as_str() {
        "identity.changed" => {
            if let Some(changes) = d.get("changes").and_then(Value::as_object) {
                for (name, c) in changes {
                    let Some(field) = identity_field(name) else {
                        continue;
                    };
                    out.push(Observation {
                        field,
                        value: c.get("value").and_then(as_text),
                        previous: c.get("previous").and_then(as_text),
                        change: true,
                        always_history: false,
                    });
                }
            }
        }
        "firmware.changed" => out.push(changed("firmware", "value", "previous")),
        "program.changed" => out.push(changed("program_checksum", "value", "previous")),
        "security_policy.downgraded" => {
            if d.contains_key("value") {
                out.push(changed("security_policy", "value", "previous"));
            } else {
                out.push(Observation {
                    field: "security_policy",
                    value: Some("None offered".into()),
                    previous: None,
                    change: true,
                    always_history: false,
                });
            }
        }
        "mode.changed" => {
            let (v, p) = if d.contains_key("state") {
                ("state", "previous_state")
            } else {
                ("value", "previous")
            };
            out.push(Observation {
                always_history: true,
                ..obs("mode", member(d, v), member(d, p))
            });
        }
        "equipment.status" | "equipment.fault" => {
            let v = member(d, "state").or_else(|| member(d, "value"));
            out.push(obs("status", v, None));
        }
        "device.unreachable" => out.push(Observation {
            always_history: true,
            ..obs("reachable", Some("false".into()), None)
        }),
        "device.recovered" => out.push(Observation {
            always_history: true,
            ..obs("reachable", Some("true".into()), None)
        }),
        "device.restarted" => out.push(Observation {
            always_history: true,
            ..obs("restart", member(d, "reason"), None)
        }),
        "cert.invalid" => out.push(Observation {
            always_history: true,
            ..obs("certificate_refused", member(d, "reason"), None)
        }),
        _ => {}
    }
    out
}

/// Stations an `agent.started` lists: `station_list: [{"id", "protocol", "address"}]`.
fn listed_stations(e: &SecurityEvent) -> Vec<(String, Vec<Observation>)> {
    if e.event_type != "agent.started" {
        return Vec::new();
    }
    let Some(list) = e.event_data.get("station_list").and_then(Value::as_array) else {
        return Vec::new();
    };
    list.iter()
        .take(MAX_LISTED)
        .filter_map(|s| {
            let s = s.as_object()?;
            let id = s
                .get("id")
                .or_else(|| s.get("station_id"))
                .and_then(Value::as_str)
                .map(clip)
                .filter(|id| !id.is_empty())?;
            let fields = s
                .iter()
                .filter_map(|(k, v)| Some(obs(identity_field(k)?, as_text(v), None)))
                .collect();
            Some((id, fields))
        })
        .collect()
}

impl Asset {
    /// A station first seen at `at`.
    pub fn new(gateway_id: &str, station_id: &str, at: DateTime<Utc>) -> Self {
        Self {
            gateway_id: gateway_id.to_owned(),
            station_id: station_id.to_owned(),
            fields: BTreeMap::new(),
            field_times: BTreeMap::new(),
            changed_fields: BTreeSet::new(),
            first_seen: at,
            last_seen: at,
            events: 0,
            last_change_at: None,
        }
    }

    fn seen(&mut self, at: DateTime<Utc>) {
        self.first_seen = self.first_seen.min(at);
        self.last_seen = self.last_seen.max(at);
    }

    /// Applies what `e` says of this station; appends the history rows it makes.
    fn observe(&mut self, e: &SecurityEvent, list: Vec<Observation>, history: &mut Vec<Change>) {
        let at = e.timestamp.to_datetime();
        let micros = e.timestamp.as_micros();
        for o in list {
            let current = self.fields.get(o.field).cloned();
            let newer = self.field_times.get(o.field).is_none_or(|t| micros >= *t);
            let differs = o.value.is_some() && o.value != current;
            let is_field = FIELDS.contains(&o.field);
            // The equipment state changes all day long: current value only, no history.
            let historied = o.field != "status"
                && (differs || o.always_history)
                && (o.change || o.always_history || current.is_some());
            if historied {
                history.push(Change {
                    gateway_id: self.gateway_id.clone(),
                    station_id: self.station_id.clone(),
                    at,
                    field: o.field.to_owned(),
                    value: o.value.clone(),
                    previous: o.previous.clone().or_else(|| current.clone()),
                    event_id: e.id,
                    event_type: e.event_type.clone(),
                });
            }
            if !is_field || !newer {
                continue;
            }
            if let Some(v) = o.value {
                let replaced = current.as_ref().is_some_and(|c| *c != v)
                    || (o.change && o.previous.as_ref().is_some_and(|p| *p != v));
                if replaced && o.change && WATCHED.contains(&o.field) {
                    self.changed_fields.insert(o.field.to_owned());
                    self.last_change_at = Some(self.last_change_at.map_or(at, |t| t.max(at)));
                }
                self.fields.insert(o.field.to_owned(), v);
                self.field_times.insert(o.field.to_owned(), micros);
            }
        }
    }
}

/// Applies `events` (gateway events, any order) to `assets` (the stored rows of the
/// stations concerned, keyed by gateway and station; missing ones are created). Returns the
/// history rows, in event order.
pub fn apply(
    assets: &mut BTreeMap<(String, String), Asset>,
    events: &[&SecurityEvent],
) -> Vec<Change> {
    let mut ordered: Vec<&SecurityEvent> = events.to_vec();
    ordered.sort_by_key(|e| (e.timestamp.as_micros(), e.seq));
    let mut history = Vec::new();
    for e in ordered {
        let at = e.timestamp.to_datetime();
        if let Some(station) = &e.station_id {
            let key = (e.gateway_id.clone(), station.clone());
            let asset = assets
                .entry(key)
                .or_insert_with(|| Asset::new(&e.gateway_id, station, at));
            asset.seen(at);
            asset.events += 1;
            asset.observe(e, observations(e), &mut history);
        }
        for (station, list) in listed_stations(e) {
            let key = (e.gateway_id.clone(), station.clone());
            let asset = assets
                .entry(key)
                .or_insert_with(|| Asset::new(&e.gateway_id, &station, at));
            asset.observe(e, list, &mut history);
        }
    }
    history
}

/// The stations `events` concern.
pub fn keys(events: &[&SecurityEvent]) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for e in events {
        if let Some(s) = &e.station_id {
            out.insert((e.gateway_id.clone(), s.clone()));
        }
        for (s, _) in listed_stations(e) {
            out.insert((e.gateway_id.clone(), s));
        }
    }
    out
}

const LOAD: &str =
    "SELECT a.gateway_id, a.station_id, a.protocol, a.address, a.vendor, a.product, \
     a.product_name, a.firmware, a.program_checksum, a.application_uri, a.certificate_thumbprint, \
     a.security_policy, a.status, a.mode, a.reachable, a.field_times, a.changed_fields, \
     a.first_seen, a.last_seen, a.events, a.last_change_at \
     FROM assets a JOIN unnest($1::text[], $2::text[]) AS k(g, s) \
     ON a.gateway_id = k.g AND a.station_id = k.s";

const STORE: &str = r"
INSERT INTO assets AS a (gateway_id, station_id, protocol, address, vendor, product,
    product_name, firmware, program_checksum, application_uri, certificate_thumbprint,
    security_policy, status, mode, reachable, first_seen, last_seen, events, field_times,
    changed_fields, last_change_at)
SELECT g, s, f->>'protocol', f->>'address', f->>'vendor', f->>'product', f->>'product_name',
       f->>'firmware', f->>'program_checksum', f->>'application_uri',
       f->>'certificate_thumbprint', f->>'security_policy', f->>'status', f->>'mode',
       (f->>'reachable')::boolean, fs, ls, n, ft,
       ARRAY(SELECT jsonb_array_elements_text(cf)), lc
FROM unnest($1::text[], $2::text[], $3::jsonb[], $4::timestamptz[], $5::timestamptz[],
            $6::int8[], $7::jsonb[], $8::jsonb[], $9::timestamptz[])
    AS u(g, s, f, fs, ls, n, ft, cf, lc)
ON CONFLICT (gateway_id, station_id) DO UPDATE SET
    protocol = EXCLUDED.protocol, address = EXCLUDED.address, vendor = EXCLUDED.vendor,
    product = EXCLUDED.product, product_name = EXCLUDED.product_name,
    firmware = EXCLUDED.firmware, program_checksum = EXCLUDED.program_checksum,
    application_uri = EXCLUDED.application_uri,
    certificate_thumbprint = EXCLUDED.certificate_thumbprint,
    security_policy = EXCLUDED.security_policy, status = EXCLUDED.status,
    mode = EXCLUDED.mode, reachable = EXCLUDED.reachable, first_seen = EXCLUDED.first_seen,
    last_seen = EXCLUDED.last_seen, events = EXCLUDED.events,
    field_times = EXCLUDED.field_times, changed_fields = EXCLUDED.changed_fields,
    last_change_at = EXCLUDED.last_change_at
";

const HISTORY: &str = "INSERT INTO asset_history \
     (gateway_id, station_id, at, field, value, previous, event_id, event_type) \
     SELECT * FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::text[], $5::text[], \
     $6::text[], $7::uuid[], $8::text[]) ON CONFLICT (event_id, field) DO NOTHING";

fn from_row(r: &tokio_postgres::Row) -> Asset {
    let mut fields = BTreeMap::new();
    for (i, name) in FIELDS.iter().enumerate().take(12) {
        if let Some(v) = r.get::<_, Option<String>>(i + 2) {
            fields.insert((*name).to_owned(), v);
        }
    }
    if let Some(b) = r.get::<_, Option<bool>>(14) {
        fields.insert("reachable".into(), b.to_string());
    }
    let field_times = r
        .get::<_, Value>(15)
        .as_object()
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_i64()?)))
                .collect()
        })
        .unwrap_or_default();
    Asset {
        gateway_id: r.get(0),
        station_id: r.get(1),
        fields,
        field_times,
        changed_fields: r.get::<_, Vec<String>>(16).into_iter().collect(),
        first_seen: r.get(17),
        last_seen: r.get(18),
        events: r.get(19),
        last_change_at: r.get(20),
    }
}

/// Applies the inserted gateway `events` to the inventory inside the ingest transaction.
/// Returns the number of history rows written. Not cancel-safe (the caller's transaction
/// rolls back).
pub async fn record(
    tx: &tokio_postgres::Transaction<'_>,
    events: &[&SecurityEvent],
) -> Result<usize, DbError> {
    let keys = keys(events);
    if keys.is_empty() {
        return Ok(0);
    }
    let (gws, stations): (Vec<&str>, Vec<&str>) =
        keys.iter().map(|(g, s)| (g.as_str(), s.as_str())).unzip();
    let mut assets: BTreeMap<(String, String), Asset> = tx
        .query(LOAD, &[&gws, &stations])
        .await?
        .iter()
        .map(from_row)
        .map(|a| ((a.gateway_id.clone(), a.station_id.clone()), a))
        .collect();
    let history = apply(&mut assets, events);
    let list: Vec<&Asset> = assets
        .values()
        .filter(|a| keys.contains(&(a.gateway_id.clone(), a.station_id.clone())))
        .collect();
    let g: Vec<&str> = list.iter().map(|a| a.gateway_id.as_str()).collect();
    let s: Vec<&str> = list.iter().map(|a| a.station_id.as_str()).collect();
    let f: Vec<Value> = list
        .iter()
        .map(|a| {
            Value::Object(
                a.fields
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone().into()))
                    .collect(),
            )
        })
        .collect();
    let fs: Vec<DateTime<Utc>> = list.iter().map(|a| a.first_seen).collect();
    let ls: Vec<DateTime<Utc>> = list.iter().map(|a| a.last_seen).collect();
    let n: Vec<i64> = list.iter().map(|a| a.events).collect();
    let ft: Vec<Value> = list.iter().map(|a| json!(a.field_times)).collect();
    let cf: Vec<Value> = list.iter().map(|a| json!(a.changed_fields)).collect();
    let lc: Vec<Option<DateTime<Utc>>> = list.iter().map(|a| a.last_change_at).collect();
    tx.execute(STORE, &[&g, &s, &f, &fs, &ls, &n, &ft, &cf, &lc])
        .await?;
    if !history.is_empty() {
        let col = |f: fn(&Change) -> &str| history.iter().map(f).collect::<Vec<&str>>();
        let at: Vec<DateTime<Utc>> = history.iter().map(|c| c.at).collect();
        let value: Vec<Option<&str>> = history.iter().map(|c| c.value.as_deref()).collect();
        let prev: Vec<Option<&str>> = history.iter().map(|c| c.previous.as_deref()).collect();
        let ids: Vec<Uuid> = history.iter().map(|c| c.event_id).collect();
        tx.execute(
            HISTORY,
            &[
                &col(|c| &c.gateway_id),
                &col(|c| &c.station_id),
                &at,
                &col(|c| &c.field),
                &value,
                &prev,
                &ids,
                &col(|c| &c.event_type),
            ],
        )
        .await?;
    }
    Ok(history.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use linesentry_event::{EventType, Timestamp};

    fn at(e: SecurityEvent, micros: i64) -> SecurityEvent {
        let mut e = e;
        e.timestamp = Timestamp::from_micros(micros);
        e
    }

    fn station(t: EventType) -> SecurityEvent {
        SecurityEvent::new("gw-1", t).station("plc-1")
    }

    fn run(events: &[SecurityEvent]) -> (Asset, Vec<Change>) {
        let mut assets = BTreeMap::new();
        let refs: Vec<&SecurityEvent> = events.iter().collect();
        let history = apply(&mut assets, &refs);
        let a = assets
            .remove(&("gw-1".to_owned(), "plc-1".to_owned()))
            .unwrap();
        (a, history)
    }

    #[test]
    fn a_firmware_change_sets_the_field_marks_it_changed_and_writes_its_history() {
        let base = 1_800_000_000_000_000;
        let (a, h) = run(&[
            at(
                station(EventType::EquipmentStatus).data("state", "run"),
                base,
            ),
            at(
                station(EventType::FirmwareChanged)
                    .data("value", "7.2.0-x")
                    .data("previous", "7.1.0"),
                base + 1000,
            ),
        ]);
        assert_eq!(a.fields["firmware"], "7.2.0-x");
        assert_eq!(a.fields["status"], "run");
        assert!(a.changed_fields.contains("firmware"));
        assert_eq!(a.events, 2);
        assert_eq!(h.len(), 1);
        assert_eq!(
            (
                h[0].field.as_str(),
                h[0].value.as_deref(),
                h[0].previous.as_deref()
            ),
            ("firmware", Some("7.2.0-x"), Some("7.1.0"))
        );
    }

    #[test]
    fn an_older_event_arriving_late_is_history_but_does_not_overwrite_a_newer_value() {
        let base = 1_800_000_000_000_000;
        let newer = at(
            station(EventType::ProgramChanged)
                .data("value", "B")
                .data("previous", "A"),
            base + 10,
        );
        let older = at(
            station(EventType::ProgramChanged)
                .data("value", "A")
                .data("previous", "Z"),
            base,
        );
        let mut assets = BTreeMap::new();
        apply(&mut assets, &[&newer]);
        let h = apply(&mut assets, &[&older]);
        let a = &assets[&("gw-1".to_owned(), "plc-1".to_owned())];
        assert_eq!(a.fields["program_checksum"], "B");
        assert_eq!(h.len(), 1, "the late change is still history");
        assert_eq!(a.first_seen.timestamp_micros(), base);
    }

    #[test]
    fn identity_changes_map_to_their_fields_and_mode_changes_are_history_without_highlight() {
        let (a, h) = run(&[
            station(EventType::IdentityChanged).data(
                "changes",
                json!({"vendor": {"value": "Evil", "previous": "ACME"},
                       "certificate_thumbprint": {"value": "ab", "previous": "cd"},
                       "unknown_member": {"value": 1}}),
            ),
            station(EventType::ModeChanged)
                .data("state", "PROGRAM")
                .data("previous_state", "RUN"),
        ]);
        assert_eq!(a.fields["vendor"], "Evil");
        assert_eq!(a.fields["certificate_thumbprint"], "ab");
        assert_eq!(a.fields["mode"], "PROGRAM");
        assert!(a.changed_fields.contains("vendor"));
        assert!(!a.changed_fields.contains("mode"));
        let mut fields: Vec<&str> = h.iter().map(|c| c.field.as_str()).collect();
        fields.sort_unstable();
        assert_eq!(fields, ["certificate_thumbprint", "mode", "vendor"]);
    }

    #[test]
    fn reachability_and_restarts_are_recorded_each_time() {
        let (a, h) = run(&[
            at(
                station(EventType::DeviceUnreachable).data("reason", "timeout"),
                1,
            ),
            at(station(EventType::DeviceRecovered), 2),
            at(
                station(EventType::DeviceRestarted).data("reason", "start time"),
                3,
            ),
        ]);
        assert_eq!(a.fields["reachable"], "true");
        assert_eq!(h.len(), 3);
        assert!(!a.fields.contains_key("restart"), "history only");
    }

    #[test]
    fn an_agent_start_lists_its_stations_with_protocol_and_address() {
        let e = SecurityEvent::new("gw-1", EventType::AgentStarted).data(
            "station_list",
            json!([{"id": "plc-1", "protocol": "modbus_tcp", "address": "10.0.0.5:502"},
                   {"id": ""}, "garbage", {"id": "opc-2", "protocol": "opcua",
                    "endpoint": "opc.tcp://10.0.0.6:4840"}]),
        );
        let mut assets = BTreeMap::new();
        apply(&mut assets, &[&e]);
        assert_eq!(assets.len(), 2);
        let opc = &assets[&("gw-1".to_owned(), "opc-2".to_owned())];
        assert_eq!(opc.fields["address"], "opc.tcp://10.0.0.6:4840");
        assert_eq!(opc.events, 0, "a listing is not an event of the station");
    }

    #[test]
    fn values_are_bounded_and_stripped_of_control_characters() {
        let long = "x\u{0}\n".repeat(1000);
        let (a, _) = run(&[station(EventType::FirmwareChanged).data("value", long)]);
        assert_eq!(a.fields["firmware"].chars().count(), MAX_FIELD);
        assert!(!a.fields["firmware"].contains('\0'));
    }
}
