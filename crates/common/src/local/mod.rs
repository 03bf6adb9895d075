//! Private Mosquitto ([`LocalMosquitto`]) and PostgreSQL ([`LocalPostgres`]) servers on free
//! loopback ports, for the collector's `demo` and `bench` and for the tests of every crate.
//! Never the machine's own services: each instance has its own directory under the temp dir
//! and its own ports. The one launcher of each server: the testkit's harnesses are thin
//! layers over these.
//!
//! Each server runs under a small `sh` watchdog, in a process group of its own, whose stdin
//! is a pipe held by this process. Dropping the handle closes the pipe; so does this process
//! dying for any reason (a panicking test, SIGKILL). Either way the watchdog stops the server
//! and removes its directory, so a handle kept in a `static` (shared by every test of one
//! binary) leaves nothing behind either. A stop that is to be followed by a restart tells
//! the watchdog to keep the directory (data, persistence, log).
//!
//! PostgreSQL refuses to run as root: as root, both servers run as `nobody`.
//!
//! Std only (and `sh`, `id`, the servers' own programs): the agent's field build links this
//! crate, and this module adds no dependency to it.

mod mosquitto;
mod postgres;

pub use mosquitto::{LocalMosquitto, MosquittoOptions, MosquittoTls};
pub use postgres::{postgres_bin_dir, LocalPostgres, PostgresOptions, PostgresTls};

use std::fmt;
use std::fs;
use std::io::{self, Write as _};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

/// Why a local server did not start.
#[derive(Debug)]
#[non_exhaustive]
pub enum LocalError {
    /// The server's programs are not installed.
    NotInstalled { what: &'static str, hint: String },
    /// A file or process operation around the server failed.
    Io { what: String, source: io::Error },
    /// The server ran but did not come up (its log's tail in `detail`).
    Start { what: &'static str, detail: String },
}

impl fmt::Display for LocalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotInstalled { what, hint } => write!(f, "{what} not found: {hint}"),
            Self::Io { what, source } => write!(f, "{what}: {source}"),
            Self::Start { what, detail } => write!(f, "{what} did not start: {detail}"),
        }
    }
}

impl std::error::Error for LocalError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> LocalError {
    let what = what.into();
    move |source| LocalError::Io { what, source }
}

/// The account servers run as: `nobody` when this process is root, else this process's own.
#[derive(Debug, Clone, Copy)]
struct RunAs {
    ids: Option<(u32, u32)>,
}

impl RunAs {
    fn detect() -> Self {
        // `id -u` instead of libc: this crate has no unsafe code.
        let root = Command::new("id")
            .arg("-u")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .is_some_and(|s| s.trim() == "0");
        Self {
            ids: root.then_some((65534, 65534)),
        }
    }

    fn apply(self, cmd: &mut Command) -> &mut Command {
        if let Some((uid, gid)) = self.ids {
            // std drops supplementary groups when it changes uid as root.
            cmd.uid(uid).gid(gid);
        }
        cmd
    }

    fn own(self, path: &Path) -> Result<(), LocalError> {
        if let Some((uid, gid)) = self.ids {
            std::os::unix::fs::chown(path, Some(uid), Some(gid))
                .map_err(io_err(format!("chown {}", path.display())))?;
        }
        Ok(())
    }

    /// Writes `contents` to `path` with `mode`, owned by the server's account.
    fn write(self, path: &Path, contents: &[u8], mode: u32) -> Result<(), LocalError> {
        fs::write(path, contents).map_err(io_err(format!("write {}", path.display())))?;
        fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(mode))
            .map_err(io_err(format!("chmod {}", path.display())))?;
        self.own(path)
    }
}

/// A free TCP port on 127.0.0.1 (free when asked; the caller retries if it is taken since).
pub fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()?
        .port())
}

/// A new directory `<temp dir>/<prefix><pid>-<random>`, owned by the server's account. Not
/// removed on drop: the watchdog removes it.
fn private_dir(prefix: &str, run_as: RunAs) -> Result<PathBuf, LocalError> {
    let base = std::env::temp_dir();
    let mut last = None;
    for _ in 0..16 {
        let dir = base.join(format!(
            "{prefix}{}-{:08x}",
            std::process::id(),
            fastrand::u32(..)
        ));
        match fs::create_dir(&dir) {
            Ok(()) => {
                run_as.own(&dir)?;
                return Ok(dir);
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => return Err(io_err(format!("create {}", dir.display()))(e)),
        }
    }
    Err(io_err("temp dir")(last.unwrap_or_else(|| {
        io::Error::other("no free name for a temp dir")
    })))
}

/// A server process under its watchdog.
#[derive(Debug)]
struct Watched {
    child: Child,
    stdin: Option<ChildStdin>,
}

impl Watched {
    /// Runs `program args...` under the watchdog, as `run_as`, appending its output to `log`.
    /// `stop_signal` is what the watchdog sends when told to stop or when the pipe closes;
    /// it then removes `dir`, unless told `keep`.
    fn spawn(
        program: &Path,
        args: &[String],
        dir: &Path,
        log: &Path,
        stop_signal: &str,
        run_as: RunAs,
    ) -> Result<Self, LocalError> {
        let script = format!(
            "\"$0\" \"$@\" >>'{log}' 2>&1 & pid=$!\n\
             read command\n\
             kill -{stop_signal} $pid 2>/dev/null\n\
             wait $pid\n\
             [ \"$command\" = keep ] || rm -rf '{dir}'\n",
            log = log.display(),
            dir = dir.display(),
        );
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(script)
            .arg(program)
            .args(args)
            // A group of its own: Ctrl-C in a terminal reaches this process, which stops
            // the server through the pipe, and not the watchdog, which would die before
            // cleaning up.
            .process_group(0)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        run_as.apply(&mut cmd);
        let mut child = cmd.spawn().map_err(io_err("sh"))?;
        let stdin = child.stdin.take();
        Ok(Self { child, stdin })
    }

    fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    /// Stops the server and waits (bounded) for the watchdog; the directory is removed
    /// unless `keep_dir`.
    fn stop(&mut self, keep_dir: bool) {
        if let Some(mut stdin) = self.stdin.take() {
            let line: &[u8] = if keep_dir { b"keep\n" } else { b"\n" };
            let _ = stdin.write_all(line);
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if self.exited() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until every one of `ports` accepts a connection; false when the server exits or
/// `timeout` passes first.
fn wait_for_ports(ports: &[u16], server: &mut Watched, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    let up = |port: u16| {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
    };
    while Instant::now() < deadline {
        if ports.iter().all(|&p| up(p)) {
            return true;
        }
        if server.exited() {
            return false;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    false
}

fn log_tail(path: &Path) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}
