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
use std::sync::Arc;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{lifecycle, run_station, station_health, AgentError, StationOutcome};
use crate::buffer::Queue;
use crate::config::{Config, StationConfig};
use crate::event::SeverityMap;
use crate::health::{Liveness, Metrics};
use crate::source::{Source, SourceContext};

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
    /// Outcomes of stations that have stopped.
    done: StationOutcome,
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
            done: StationOutcome::default(),
        }
    }

    pub(super) fn len(&self) -> usize {
        self.running.len()
    }

    pub(super) fn start(&mut self, station: StationConfig, source: Source) {
        let stop = self.shared.polling.child_token();
        let health = station_health(&station, &self.shared.metrics, &self.shared.liveness);
        let task = tokio::spawn(run_station(
            station.clone(),
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
        let event = lifecycle(&new, "agent.config_changed")
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
    if old.buffer != new.buffer {
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
