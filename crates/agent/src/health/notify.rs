//! systemd notification: `READY=1` once the agent runs, `WATCHDOG=1` while it is healthy,
//! `STOPPING=1` when it drains.
//!
//! The messages are `sd_notify::NotifyState`s; they are sent by [`Notifier`] itself rather
//! than by `sd_notify::notify`, which reads `NOTIFY_SOCKET` on every call: a notifier that
//! holds its socket path can be pointed at a test socket without touching the process
//! environment, and it also reaches abstract sockets (`@name`), which `sd_notify` does not.
//! Sends never block (a full socket buffer is an error, logged by the caller).
//!
//! Without `NOTIFY_SOCKET` (started by hand, or by a unit that is not `Type=notify`) every
//! call is a silent no-op, and without `WATCHDOG_USEC` there is no watchdog to feed.
//!
//! The watchdog ([`watchdog`]) pings every half interval, and only while
//! [`Liveness::check`] is ok: a hung poller, a hung forwarder or failing store commits let
//! the interval run out, and systemd restarts the agent (`Restart=on-failure` or `always`).

use std::io;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use sd_notify::NotifyState;
use tokio_util::sync::CancellationToken;

use super::Liveness;

/// Where notifications go; [`Notifier::disabled`] sends nothing. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Notifier {
    target: Option<Target>,
}

#[derive(Debug, Clone)]
enum Target {
    Path(PathBuf),
    /// `NOTIFY_SOCKET=@name`: a Linux abstract socket.
    Abstract(Vec<u8>),
}

impl Notifier {
    /// The socket of `NOTIFY_SOCKET`, or disabled when it is unset or empty.
    pub fn from_env() -> Self {
        use std::os::unix::ffi::OsStrExt as _;
        match std::env::var_os("NOTIFY_SOCKET") {
            Some(socket) if !socket.is_empty() => {
                let bytes = socket.as_bytes();
                match bytes.strip_prefix(b"@") {
                    Some(name) => Self {
                        target: Some(Target::Abstract(name.to_vec())),
                    },
                    None => Self::to_socket(socket),
                }
            }
            _ => Self::disabled(),
        }
    }

    /// Notifications to the datagram socket at `path`.
    pub fn to_socket(path: impl Into<PathBuf>) -> Self {
        Self {
            target: Some(Target::Path(path.into())),
        }
    }

    /// A notifier that sends nothing.
    pub fn disabled() -> Self {
        Self { target: None }
    }

    pub fn is_enabled(&self) -> bool {
        self.target.is_some()
    }

    /// `READY=1` with a status line (`systemctl status` shows it).
    pub fn ready(&self, status: &str) -> io::Result<()> {
        self.send(&[NotifyState::Ready, NotifyState::Status(&one_line(status))])
    }

    /// A new status line.
    pub fn status(&self, status: &str) -> io::Result<()> {
        self.send(&[NotifyState::Status(&one_line(status))])
    }

    /// `STOPPING=1` with a status line.
    pub fn stopping(&self, status: &str) -> io::Result<()> {
        self.send(&[
            NotifyState::Stopping,
            NotifyState::Status(&one_line(status)),
        ])
    }

    /// One `WATCHDOG=1` ping. [`watchdog`] sends these only while healthy.
    pub fn ping(&self) -> io::Result<()> {
        self.send(&[NotifyState::Watchdog])
    }

    fn send(&self, states: &[NotifyState<'_>]) -> io::Result<()> {
        use std::fmt::Write as _;
        use std::os::unix::net::UnixDatagram;
        let Some(target) = &self.target else {
            return Ok(());
        };
        let mut message = String::new();
        for state in states {
            let _ = writeln!(message, "{state}");
        }
        let socket = UnixDatagram::unbound()?;
        socket.set_nonblocking(true)?;
        let sent = match target {
            Target::Path(path) => socket.send_to(message.as_bytes(), path)?,
            Target::Abstract(name) => send_abstract(&socket, message.as_bytes(), name)?,
        };
        if sent == message.len() {
            Ok(())
        } else {
            Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "notification truncated",
            ))
        }
    }
}

#[cfg(target_os = "linux")]
fn send_abstract(
    socket: &std::os::unix::net::UnixDatagram,
    message: &[u8],
    name: &[u8],
) -> io::Result<usize> {
    use std::os::linux::net::SocketAddrExt as _;
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
    socket.send_to_addr(message, &addr)
}

#[cfg(not(target_os = "linux"))]
fn send_abstract(
    _socket: &std::os::unix::net::UnixDatagram,
    _message: &[u8],
    _name: &[u8],
) -> io::Result<usize> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "abstract notify sockets exist on Linux only",
    ))
}

/// A status line must stay one line of the notification.
fn one_line(status: &str) -> String {
    status.replace(['\n', '\r'], " ")
}

/// The watchdog interval systemd set for this process (`WATCHDOG_USEC`, honouring
/// `WATCHDOG_PID`), if any.
pub fn watchdog_interval() -> Option<Duration> {
    sd_notify::watchdog_enabled().filter(|d| !d.is_zero())
}

/// Feeds the systemd watchdog every `interval / 2` while `liveness` is ok; returns when
/// `shutdown` is cancelled. While not ok it sends no ping, logs the reasons once and puts
/// them in the status line; when health returns, pings resume. Cancel-safe.
pub async fn watchdog(
    notifier: Notifier,
    interval: Duration,
    liveness: Liveness,
    shutdown: CancellationToken,
) {
    if !notifier.is_enabled() {
        return;
    }
    let period = (interval / 2).max(Duration::from_millis(1));
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut healthy = true;
    let mut ping_failing = false;
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            () = shutdown.cancelled() => return,
        }
        let health = liveness.check(Instant::now());
        if health.ok {
            if !healthy {
                tracing::info!("healthy again; feeding the systemd watchdog");
                let _ = notifier.status("running");
                healthy = true;
            }
            match notifier.ping() {
                Ok(()) => ping_failing = false,
                Err(e) if !ping_failing => {
                    ping_failing = true;
                    tracing::warn!(error = %e, "cannot send the systemd watchdog ping");
                }
                Err(_) => {}
            }
        } else if healthy {
            healthy = false;
            let reasons = health.reasons.join("; ");
            tracing::warn!(%reasons, interval_ms = interval.as_millis() as u64,
                "not healthy: withholding the systemd watchdog ping, systemd will restart the agent if it lasts");
            let _ = notifier.status(&format!("unhealthy: {reasons}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_disabled_notifier_sends_nothing_and_succeeds() {
        let notifier = Notifier::disabled();
        assert!(!notifier.is_enabled());
        notifier.ready("running").unwrap();
        notifier.ping().unwrap();
        notifier.stopping("draining").unwrap();
    }

    #[test]
    fn messages_are_newline_separated_states_and_statuses_stay_on_one_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let socket = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
        let notifier = Notifier::to_socket(&path);
        notifier.ready("polling\n4 stations").unwrap();
        notifier.stopping("draining").unwrap();
        let mut buf = [0u8; 256];
        let n = socket.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1\nSTATUS=polling 4 stations\n");
        let n = socket.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"STOPPING=1\nSTATUS=draining\n");
    }

    #[test]
    fn a_missing_socket_is_an_error_not_a_hang() {
        let dir = tempfile::tempdir().unwrap();
        let notifier = Notifier::to_socket(dir.path().join("absent.sock"));
        assert!(notifier.ping().is_err());
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn an_abstract_socket_name_is_reached() {
        use std::os::linux::net::SocketAddrExt as _;
        let name = format!("linesentry-test-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let socket = std::os::unix::net::UnixDatagram::bind_addr(&addr).unwrap();
        let notifier = Notifier {
            target: Some(Target::Abstract(name.into_bytes())),
        };
        notifier.ping().unwrap();
        let mut buf = [0u8; 64];
        let n = socket.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"WATCHDOG=1\n");
    }
}
