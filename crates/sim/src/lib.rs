//! Station simulators: a profile served over its real protocol, with scenarios, so the agent
//! (or any client) can be tried and tested without hardware.
//!
//! # Layout
//!
//! Protocol-neutral, pure ([`model`], [`scenario`]):
//! - [`StationModel`]: one station's tag values, with normal production dynamics and the
//!   state a scenario changes (forced status and mode, pinned setpoints, alarm limits and
//!   alarm-enable bits, program checksum, firmware, identity, quality bursts, frozen values,
//!   a drifting measurement, silenced alarm outputs, [`LinkBehaviour`]). `tick(now)` advances one sample; `value(tag)` reads.
//! - [`Action`]: the named changes (`fault`, `mode_program`, `silent`, ...), applied with
//!   [`Action::apply`]; [`Schedule`] / [`SchedulePlayer`]: actions at times after the start.
//!
//! Protocol-neutral runtime (this file): a [`SharedModel`] (the model behind a mutex, held
//! only for short, non-async sections), a ticker task that ticks it every
//! [`SimOptions::tick`] and plays the schedule, the line-based control port, and
//! [`SimHandle`], which a test or the CLI holds to apply actions and to shut down.
//!
//! Protocol front ends, one file each, only translate requests against the shared model:
//! - [`modbus`]: Modbus TCP ([`modbus::start`]).
//! - [`opcua`]: OPC UA, an async-opcua server on the same model and scenario engine.
//!
//! # Writing a front end
//!
//! ```text
//! let model: SharedModel = Arc::new(Mutex::new(StationModel::new(profile, options.seed)));
//! let listener = TcpListener::bind(options.listen).await?;          // front end's socket
//! let cancel = CancellationToken::new();
//! let mut handle = SimHandle::launch(Arc::clone(&model), listener.local_addr()?, options,
//!                                    cancel.clone()).await?;         // ticker + control port
//! handle.track(tokio::spawn(serve(listener, model, cancel)));       // the protocol server
//! ```
//!
//! The server reads values with [`lock`]`(&model).value_at(i)` per request, answers
//! according to [`StationModel::link`], reports [`StationModel::identity`], and stops when
//! `cancel` fires. Every per-connection task it spawns must end on `cancel` as well.
//!
//! # Control port
//!
//! `--control ADDR` accepts TCP connections (at most [`MAX_CONTROL_CONNECTIONS`] at once;
//! more are closed at once). Each line is one action name; the answer is one line, `ok` or
//! `error: unknown action `x`; valid actions: ...`. Blank lines are ignored; a line over
//! [`MAX_CONTROL_LINE`] bytes is answered with an error and the connection closed.
//!
//! Every action applied (from the schedule, the control port or [`SimHandle::apply`]) is
//! logged at INFO with its origin and outcome.

pub mod diag;
pub mod modbus;
pub mod model;
pub mod opcua;
pub mod profile;
pub mod scenario;

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use thiserror::Error;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use linesentry_agent::source::Protocol;
use linesentry_event::Timestamp;

pub use model::{LinkBehaviour, ModelError, SecurityOffer, StationModel};
pub use profile::load_profile;
pub use scenario::{
    Action, Outcome, Schedule, ScheduleError, SchedulePlayer, ScheduledAction, UnknownAction,
};

/// A model shared by the ticker, the control port and a protocol server.
pub type SharedModel = Arc<Mutex<StationModel>>;

/// Default tick period: 10 Hz.
pub const DEFAULT_TICK: Duration = Duration::from_millis(100);
/// Control connections served at once.
pub const MAX_CONTROL_CONNECTIONS: usize = 8;
/// Longest control line, in bytes, newline excluded.
pub const MAX_CONTROL_LINE: usize = 256;

/// Locks a shared model. A panic while it was held leaves a consistent model (every model
/// method finishes its changes before returning), so a poisoned lock is taken over.
pub fn lock(model: &SharedModel) -> MutexGuard<'_, StationModel> {
    model.lock().unwrap_or_else(PoisonError::into_inner)
}

/// How to run a simulator.
#[derive(Debug, Clone)]
pub struct SimOptions {
    /// Where the protocol server listens; port 0 picks a free port.
    pub listen: SocketAddr,
    /// Where the line-based control port listens, if anywhere.
    pub control: Option<SocketAddr>,
    /// Period of the model's ticks; at least 1 ms.
    pub tick: Duration,
    /// Actions to play, at times after the start.
    pub schedule: Schedule,
    /// Seed of the model's random dynamics.
    pub seed: u64,
}

impl Default for SimOptions {
    /// Loopback on a free port, no control port, 10 Hz, no schedule, seed 0.
    fn default() -> Self {
        SimOptions {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            control: None,
            tick: DEFAULT_TICK,
            schedule: Schedule::default(),
            seed: 0,
        }
    }
}

/// Why a simulator did not start.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum SimError {
    #[error("cannot listen on {addr} for the {what}: {source}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    #[error(
        "profile `{profile}` has protocol = \"{found}\"; this simulator serves {expected} profiles"
    )]
    Protocol {
        profile: String,
        found: Protocol,
        expected: Protocol,
    },
    #[error("tick period {0:?} is too short, expected at least 1 ms")]
    Tick(Duration),
}

/// A running simulator. Dropping it stops it without waiting; [`SimHandle::shutdown`]
/// stops it and waits for its tasks.
#[derive(Debug)]
pub struct SimHandle {
    local_addr: SocketAddr,
    control_addr: Option<SocketAddr>,
    model: SharedModel,
    cancel: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

impl SimHandle {
    /// For protocol front ends: binds the control port (if `options.control`), starts the
    /// ticker (which plays `options.schedule` from now) and the control port, all stopping
    /// on `cancel`. The front end then spawns its server and hands it to
    /// [`SimHandle::track`]. `local_addr` is the front end's bound address.
    pub async fn launch(
        model: SharedModel,
        local_addr: SocketAddr,
        options: &SimOptions,
        cancel: CancellationToken,
    ) -> Result<SimHandle, SimError> {
        if options.tick < Duration::from_millis(1) {
            return Err(SimError::Tick(options.tick));
        }
        let control = match options.control {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .map_err(|source| SimError::Bind {
                        what: "control port",
                        addr,
                        source,
                    })?,
            ),
            None => None,
        };
        let control_addr = match &control {
            Some(listener) => Some(listener.local_addr().map_err(|source| SimError::Bind {
                what: "control port",
                addr: options.control.unwrap_or(local_addr),
                source,
            })?),
            None => None,
        };
        let mut tasks = vec![tokio::spawn(run_ticker(
            Arc::clone(&model),
            options.tick,
            options.schedule.clone(),
            cancel.clone(),
        ))];
        if let Some(listener) = control {
            tasks.push(tokio::spawn(run_control(
                listener,
                Arc::clone(&model),
                cancel.clone(),
            )));
        }
        Ok(SimHandle {
            local_addr,
            control_addr,
            model,
            cancel,
            tasks,
        })
    }

    /// Adds a task that [`SimHandle::shutdown`] waits for; it must end on the cancel token.
    pub fn track(&mut self, task: JoinHandle<()>) {
        self.tasks.push(task);
    }

    /// The protocol server's bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The control port's bound address, if there is one.
    pub fn control_addr(&self) -> Option<SocketAddr> {
        self.control_addr
    }

    /// The simulated station, to inspect or change directly (keep the lock short).
    pub fn model(&self) -> &SharedModel {
        &self.model
    }

    /// Applies `action` now, logs it and returns what it did.
    pub fn apply(&self, action: Action) -> Outcome {
        apply_logged(&self.model, action, "api")
    }

    /// Stops serving and waits until every task has ended. Not cancel-safe: dropping the
    /// future part-way leaves the tasks stopping on their own.
    pub async fn shutdown(mut self) {
        self.cancel.cancel();
        for task in std::mem::take(&mut self.tasks) {
            if let Err(e) = task.await {
                if e.is_panic() {
                    tracing::warn!(error = %e, "a simulator task panicked");
                }
            }
        }
    }
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// Applies `action` under the lock and logs it with its origin (`api`, `control`,
/// `schedule`).
fn apply_logged(model: &SharedModel, action: Action, origin: &str) -> Outcome {
    let outcome = action.apply(&mut lock(model));
    match &outcome {
        Outcome::Applied(what) => {
            tracing::info!(action = %action, origin, effect = %what, "scenario action applied");
        }
        Outcome::NoEffect(why) => {
            tracing::warn!(action = %action, origin, reason = %why, "scenario action had no effect");
        }
    }
    outcome
}

/// Ticks the model every `period` and applies schedule items when due (on time, not on the
/// next tick). Ends on `cancel`.
async fn run_ticker(
    model: SharedModel,
    period: Duration,
    schedule: Schedule,
    cancel: CancellationToken,
) {
    let start = Instant::now();
    let mut player = schedule.player();
    let mut interval = tokio::time::interval(period);
    interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        let next_item = player.next_at().map(|at| start + at);
        tokio::select! {
            () = cancel.cancelled() => break,
            _ = interval.tick() => lock(&model).tick(Timestamp::now()),
            () = sleep_until(next_item) => {}
        }
        for item in player.due(start.elapsed()) {
            apply_logged(&model, item.action, "schedule");
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Accepts control connections until `cancel`, then waits for them to end.
async fn run_control(listener: TcpListener, model: SharedModel, cancel: CancellationToken) {
    let permits = Arc::new(Semaphore::new(MAX_CONTROL_CONNECTIONS));
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            () = cancel.cancelled() => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => match Arc::clone(&permits).try_acquire_owned() {
                    Ok(permit) => {
                        connections.spawn(serve_control(
                            stream,
                            peer,
                            Arc::clone(&model),
                            cancel.clone(),
                            permit,
                        ));
                    }
                    Err(_) => {
                        tracing::warn!(%peer, limit = MAX_CONTROL_CONNECTIONS, "control connection refused: too many open");
                    }
                },
                Err(e) => {
                    // Out of descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "control port accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
    while connections.join_next().await.is_some() {}
}

/// One control connection: a line in, a line out, until EOF, an I/O error or `cancel`.
async fn serve_control(
    stream: TcpStream,
    peer: SocketAddr,
    model: SharedModel,
    cancel: CancellationToken,
    _permit: OwnedSemaphorePermit,
) {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    loop {
        let mut line = Vec::new();
        let mut limited = (&mut reader).take((MAX_CONTROL_LINE + 1) as u64);
        let read = tokio::select! {
            () = cancel.cancelled() => break,
            read = limited.read_until(b'\n', &mut line) => read,
        };
        match read {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let too_long = !line.ends_with(b"\n") && line.len() > MAX_CONTROL_LINE;
        let text = String::from_utf8_lossy(&line);
        let command = text.trim();
        if command.is_empty() && !too_long {
            continue;
        }
        let reply = if too_long {
            format!("error: line longer than {MAX_CONTROL_LINE} bytes\n")
        } else {
            match command.parse::<Action>() {
                Ok(action) => {
                    apply_logged(&model, action, "control");
                    "ok\n".to_owned()
                }
                Err(e) => {
                    tracing::debug!(%peer, error = %e, "control command refused");
                    format!("error: {e}\n")
                }
            }
        };
        let written = tokio::select! {
            () = cancel.cancelled() => break,
            written = write.write_all(reply.as_bytes()) => written,
        };
        if written.is_err() || too_long {
            break;
        }
    }
}
