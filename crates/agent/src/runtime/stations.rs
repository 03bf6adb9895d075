//! The running stations, and configuration reload (SIGHUP).
//!
//! A reload reads and validates the configuration file again. If it has any error, nothing
//! changes and the errors are logged. Otherwise every new or changed station's source is
//! built first (so a bad one refuses the whole reload), then stations that were removed or
//! changed stop (each finishes its in-flight append: nothing buffered is lost), changed and
//! added ones start (with their stored baselines), and the others keep polling untouched.
//! `agent.config_changed` records the old and new digests and what happened. Settings that
//! cannot change while running (`[agent]`, `[buffer]`, `[forward]`, `[health]`, `[log]`)
//! are named in the event and the log as needing a restart.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{lifecycle, rule_tags, run_station, station_health, AgentError, StationOutcome};
use crate::buffer::{Queue, QueueOptions};
use crate::config::Config;
use crate::health::{Liveness, Metrics};
use crate::rules::RuleTags;
use crate::source::{Profile, StationConfig};
use crate::source::{Source, SourceContext};
use linesentry_event::{EventType, SeverityMap};

struct Running {
    config: StationConfig,
    stop: CancellationToken,
    task: JoinHandle<StationOutcome>,
}

/// What the stations share.
pub(super) struct Shared {
    pub(super) gateway: Arc<str>,
    pub(super) queue: Queue,
    pub(super) metrics: Metrics,
    pub(super) liveness: Liveness,
    /// Parent of every station's token: cancelled at shutdown.
    pub(super) polling: CancellationToken,
}

pub(super) struct Stations {
    running: BTreeMap<String, Running>,
    shared: Shared,
    severities: Arc<SeverityMap>,
    rule_tags: SharedTags,
    /// Outcomes of stations that have stopped.
    done: StationOutcome,
}

/// The rules' view of each profile in use, made once and shared by the stations of that
/// profile: fifty stations of one 100-tag profile hold one copy of its tags, not fifty.
#[derive(Default)]
struct SharedTags(Vec<(Arc<Profile>, Arc<RuleTags>)>);

impl SharedTags {
    /// The rule tags of `profile`: those made for the same profile (the same content: a
    /// reload loads every profile anew), or new ones. Entries whose profile `in_use` says
    /// no running station has are let go first.
    fn get(
        &mut self,
        profile: &Arc<Profile>,
        in_use: impl Fn(&Arc<Profile>) -> bool,
    ) -> Arc<RuleTags> {
        self.0.retain(|(p, _)| in_use(p));
        if let Some((_, tags)) = self.0.iter().find(|(p, _)| same_profile(p, profile)) {
            return tags.clone();
        }
        let tags = Arc::new(RuleTags::new(rule_tags(profile)));
        self.0.push((profile.clone(), tags.clone()));
        tags
    }
}

fn same_profile(a: &Arc<Profile>, b: &Arc<Profile>) -> bool {
    Arc::ptr_eq(a, b) || **a == **b
}

/// Builds the sources of `stations` (enabled ones), in order; the first failure refuses all.
pub(super) fn build_sources<'a>(
    config: &Config,
    stations: impl Iterator<Item = &'a StationConfig>,
) -> Result<Vec<(StationConfig, Source)>, AgentError> {
    let mut out = Vec::new();
    for station in stations {
        let seed = config
            .stations
            .iter()
            .position(|s| s.id == station.id)
            .unwrap_or(0) as u64
            + 1;
        let source = Source::for_station(
            station,
            &SourceContext {
                data_dir: config.agent.data_dir.clone(),
                gateway_id: config.agent.gateway_id.clone(),
                seed,
            },
        )
        .map_err(|reason| AgentError::Source {
            station: station.id.clone(),
            reason,
        })?;
        out.push((station.clone(), source));
    }
    Ok(out)
}

impl Stations {
    pub(super) fn new(shared: Shared, severities: Arc<SeverityMap>) -> Self {
        Self {
            running: BTreeMap::new(),
            shared,
            severities,
            rule_tags: SharedTags::default(),
            done: StationOutcome::default(),
        }
    }

    pub(super) fn len(&self) -> usize {
        self.running.len()
    }

    pub(super) fn start(&mut self, station: StationConfig, source: Source) {
        let stop = self.shared.polling.child_token();
        let health = station_health(&station, &self.shared.metrics, &self.shared.liveness);
        let running = &self.running;
        let tags = self.rule_tags.get(&station.profile, |p| {
            running.values().any(|r| same_profile(&r.config.profile, p))
        });
        let task = tokio::spawn(run_station(
            (station.clone(), tags),
            source,
            self.shared.gateway.clone(),
            self.severities.clone(),
            self.shared.queue.clone(),
            stop.clone(),
            health,
        ));
        self.running.insert(
            station.id.clone(),
            Running {
                config: station,
                stop,
                task,
            },
        );
    }

    async fn stop(&mut self, id: &str) {
        if let Some(r) = self.running.remove(id) {
            r.stop.cancel();
            match r.task.await {
                Ok(outcome) => self.done.add(&outcome),
                Err(e) => tracing::error!(station = id, error = %e, "station task failed"),
            }
        }
    }

    /// Stops every station (each finishes its append) and returns the totals of the run.
    pub(super) async fn stop_all(mut self) -> StationOutcome {
        let ids: Vec<String> = self.running.keys().cloned().collect();
        for id in &ids {
            if let Some(r) = self.running.get(id) {
                r.stop.cancel();
            }
        }
        for id in ids {
            self.stop(&id).await;
        }
        self.done
    }

    /// Applies a new configuration to the stations; see the module doc. `current` becomes
    /// `new` when the reload is applied.
    pub(super) async fn reload(&mut self, current: &mut Config, new: Config) {
        let wanted: BTreeMap<&str, &StationConfig> = new
            .stations
            .iter()
            .filter(|s| s.enabled)
            .map(|s| (s.id.as_str(), s))
            .collect();
        let severity_changed = new.severity != current.severity;
        let mut restart: Vec<String> = Vec::new();
        let mut add: Vec<String> = Vec::new();
        for (id, station) in &wanted {
            match self.running.get(*id) {
                Some(r) if r.config == **station && !severity_changed => {}
                Some(_) => restart.push((*id).to_owned()),
                None => add.push((*id).to_owned()),
            }
        }
        let remove: Vec<String> = self
            .running
            .keys()
            .filter(|id| !wanted.contains_key(id.as_str()))
            .cloned()
            .collect();
        let starting = restart
            .iter()
            .chain(&add)
            .filter_map(|id| wanted.get(id.as_str()).copied());
        let sources = match build_sources(&new, starting) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "configuration reload refused; the running configuration stays");
                return;
            }
        };
        let needs_restart = sections_needing_restart(current, &new);
        for id in restart.iter().chain(&remove) {
            self.stop(id).await;
        }
        self.severities = Arc::new(new.severity.clone());
        for (station, source) in sources {
            self.start(station, source);
        }
        let unchanged = self.running.len() - restart.len() - add.len();
        tracing::info!(old = %&current.digest[..12], new = %&new.digest[..12], restarted = ?restart,
            added = ?add, removed = ?remove, unchanged, needs_restart = ?needs_restart,
            "configuration reloaded");
        if !needs_restart.is_empty() {
            tracing::warn!(sections = ?needs_restart,
                "these settings changed but apply only after a restart of the agent");
        }
        let event = lifecycle(&new, EventType::AgentConfigChanged)
            .data("previous_digest", current.digest.clone())
            .data("restarted", restart)
            .data("added", add)
            .data("removed", remove)
            .data("unchanged", unchanged)
            .data("needs_restart", needs_restart);
        if let Err(e) = self.shared.queue.append(&[event]).await {
            tracing::error!(error = %e, "could not record agent.config_changed");
        }
        *current = new;
    }
}

/// Sections whose changes a reload cannot apply.
fn sections_needing_restart(old: &Config, new: &Config) -> Vec<&'static str> {
    let mut out = Vec::new();
    if old.agent != new.agent {
        out.push("agent");
    }
    // The queue's `dir` and `gateway_id` come from `[agent]`, already compared above.
    let buffer = |c: &Config| QueueOptions {
        dir: PathBuf::new(),
        gateway_id: String::new(),
        ..c.buffer.clone()
    };
    if buffer(old) != buffer(new) {
        out.push("buffer");
    }
    if old.forward != new.forward {
        out.push("forward");
    }
    if old.health != new.health {
        out.push("health");
    }
    if old.log != new.log {
        out.push("log");
    }
    out
}

impl StationOutcome {
    fn add(&mut self, other: &StationOutcome) {
        self.readings += other.readings;
        self.events += other.events;
        self.dropped_unconfirmed += other.dropped_unconfirmed;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(profiles: &[&str]) -> Config {
        use std::fmt::Write as _;
        let mut text = String::from(
            "[agent]\ngateway_id = \"gw-1\"\nsite = \"s\"\ndata_dir = \"data\"\nprofiles_dir = \"devices\"\n",
        );
        for (i, profile) in profiles.iter().enumerate() {
            let _ = write!(
                text,
                "\n[[stations]]\nid = \"st-{i}\"\nprofile = \"{profile}\"\nsource = \"modbus_tcp\"\naddress = \"127.0.0.1:{}\"\n",
                15_020 + i
            );
        }
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../agent.toml");
        crate::config::load_str(&path, &text).unwrap()
    }

    #[test]
    fn stations_of_one_profile_share_its_rule_tags() {
        let first = config(&["stamping_press", "stamping_press", "reflow_oven"]);
        let mut shared = SharedTags::default();
        let tags: Vec<Arc<RuleTags>> = first
            .stations
            .iter()
            .map(|s| shared.get(&s.profile, |_| true))
            .collect();
        assert!(Arc::ptr_eq(&tags[0], &tags[1]));
        assert!(!Arc::ptr_eq(&tags[0], &tags[2]));
        assert_eq!(tags[0].len(), first.stations[0].profile.tags.len());

        // A reload loads the profiles anew: the same content keeps the same tags.
        let reloaded = config(&["stamping_press"]);
        let again = shared.get(&reloaded.stations[0].profile, |_| true);
        assert!(Arc::ptr_eq(&again, &tags[0]));

        // Tags of profiles no station runs any more are let go.
        let oven = &first.stations[2].profile;
        let fresh = shared.get(&reloaded.stations[0].profile, |p| !same_profile(p, oven));
        assert!(Arc::ptr_eq(&fresh, &tags[0]));
        assert_eq!(shared.0.len(), 1);
        let fresh = shared.get(oven, |_| false);
        assert!(!Arc::ptr_eq(&fresh, &tags[2]));
        assert_eq!(shared.0.len(), 1);
    }
}
