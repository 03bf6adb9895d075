//! Private PostgreSQL and Mosquitto instances on free loopback ports, for the demo, the
//! benchmark and the tests. Never the machine's own services: each instance has its own
//! data directory under the temp dir and its own port.
//!
//! Each server runs under a small `sh` watchdog, in a process group of its own, whose stdin
//! is a pipe held by this process.
//! Dropping the handle closes the pipe; so does this process dying for any reason (a
//! panicking test, SIGKILL). Either way the watchdog stops the server and removes its
//! directory, so a handle kept in a `static` (shared by every test of one binary) leaves
//! nothing behind either.
//!
//! PostgreSQL refuses to run as root: as root, both servers run as `nobody`.

use std::fs;
use std::io::{self, Write as _};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

/// Why a local server did not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LocalError {
    #[error("{what} not found: {hint}")]
    NotInstalled { what: &'static str, hint: String },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
    #[error("{what} did not start: {detail}")]
    Start { what: &'static str, detail: String },
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
}

/// A free TCP port on 127.0.0.1 (free when asked; the caller retries if it is taken since).
pub fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()?
        .port())
}

fn private_dir(prefix: &str, run_as: RunAs) -> Result<PathBuf, LocalError> {
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .map_err(io_err("temp dir"))?
        .keep();
    run_as.own(&dir)?;
    Ok(dir)
}

/// A server process under its watchdog.
#[derive(Debug)]
struct Watched {
    child: Child,
    stdin: Option<ChildStdin>,
}

impl Watched {
    /// Runs `program args...` under the watchdog, as `run_as`, logging to `log`.
    /// `stop_signal` is what the watchdog sends when the pipe closes.
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
             read _ignored\n\
             kill -{stop_signal} $pid 2>/dev/null\n\
             wait $pid\n\
             rm -rf '{dir}'\n",
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

    /// Stops the server and waits (bounded) for the watchdog to clean up.
    fn stop(&mut self) {
        if let Some(mut stdin) = self.stdin.take() {
            let _ = stdin.write_all(b"\n");
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

fn wait_for_port(port: u16, server: &mut Watched, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
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

/// Options of a private PostgreSQL cluster.
#[derive(Debug, Clone, Default)]
pub struct PostgresOptions {
    /// fsync and synchronous commit on (the benchmark) or off (tests: faster, same SQL).
    pub durable: bool,
    /// Extra `-c name=value` settings.
    pub settings: Vec<(String, String)>,
    /// `ssl = on` with this certificate; clients may still connect without TLS.
    pub tls: Option<PostgresTls>,
}

/// The server certificate of a private cluster, PEM.
#[derive(Clone)]
pub struct PostgresTls {
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for PostgresTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresTls").finish_non_exhaustive()
    }
}

/// A private PostgreSQL cluster: superuser `postgres`, trust authentication, loopback TCP
/// only, no Unix socket; TLS as well with [`PostgresOptions::tls`].
#[derive(Debug)]
pub struct LocalPostgres {
    server: Watched,
    port: u16,
    dir: PathBuf,
}

/// Where PostgreSQL's server binaries are: `$LINESENTRY_PG_BIN`, `pg_config --bindir`, or
/// the newest `/usr/lib/postgresql/*/bin`.
pub fn postgres_bin_dir() -> Result<PathBuf, LocalError> {
    if let Some(dir) = std::env::var_os("LINESENTRY_PG_BIN") {
        return Ok(PathBuf::from(dir));
    }
    let has_server = |d: &Path| d.join("postgres").is_file() && d.join("initdb").is_file();
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if has_server(&dir) {
            return Ok(dir);
        }
    }
    let mut found: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            has_server(&bin).then_some((version, bin))
        })
        .collect();
    found.sort();
    found
        .pop()
        .map(|(_, dir)| dir)
        .ok_or_else(|| LocalError::NotInstalled {
            what: "PostgreSQL server",
            hint: "install the Debian package `postgresql`, or set LINESENTRY_PG_BIN".into(),
        })
}

impl LocalPostgres {
    /// initdb and start a cluster on a free port; waits until it accepts connections.
    pub fn start(options: &PostgresOptions) -> Result<Self, LocalError> {
        let bin = postgres_bin_dir()?;
        let run_as = RunAs::detect();
        let dir = private_dir("linesentry-pg-", run_as)?;
        let data = dir.join("data");
        let log = dir.join("postgres.log");
        fs::write(&log, b"").map_err(io_err("postgres log"))?;
        run_as.own(&log)?;
        let mut initdb = Command::new(bin.join("initdb"));
        initdb
            .args(["-D"])
            .arg(&data)
            .args([
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-locale",
                "--no-sync",
            ])
            .stdin(Stdio::null());
        run_as.apply(&mut initdb);
        let out = initdb.output().map_err(io_err("initdb"))?;
        if !out.status.success() {
            let _ = fs::remove_dir_all(&dir);
            return Err(LocalError::Start {
                what: "initdb",
                detail: String::from_utf8_lossy(&out.stderr).into_owned(),
            });
        }
        let mut tls_settings: Vec<(String, String)> = Vec::new();
        if let Some(tls) = &options.tls {
            // PostgreSQL refuses a key that others may read.
            let cert = dir.join("server.crt");
            let key = dir.join("server.key");
            for (path, pem, mode) in [(&cert, &tls.cert_pem, 0o644), (&key, &tls.key_pem, 0o600)] {
                fs::write(path, pem).map_err(io_err(format!("write {}", path.display())))?;
                fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(mode))
                    .map_err(io_err(format!("chmod {}", path.display())))?;
                run_as.own(path)?;
            }
            tls_settings = vec![
                ("ssl".into(), "on".into()),
                ("ssl_cert_file".into(), cert.display().to_string()),
                ("ssl_key_file".into(), key.display().to_string()),
            ];
        }
        let mut last = String::new();
        for _ in 0..5 {
            let port = free_port().map_err(io_err("free port"))?;
            let mut args: Vec<String> = vec![
                "-D".into(),
                data.display().to_string(),
                "-p".into(),
                port.to_string(),
            ];
            let mut settings: Vec<(String, String)> = vec![
                ("listen_addresses".into(), "127.0.0.1".into()),
                ("unix_socket_directories".into(), String::new()),
                ("max_connections".into(), "200".into()),
                ("timezone".into(), "UTC".into()),
            ];
            if !options.durable {
                settings.extend([
                    ("fsync".into(), "off".into()),
                    ("synchronous_commit".into(), "off".into()),
                    ("full_page_writes".into(), "off".into()),
                ]);
            }
            settings.extend(tls_settings.iter().cloned());
            settings.extend(options.settings.iter().cloned());
            for (k, v) in settings {
                args.push("-c".into());
                args.push(format!("{k}={v}"));
            }
            let mut server =
                Watched::spawn(&bin.join("postgres"), &args, &dir, &log, "INT", run_as)?;
            if wait_for_port(port, &mut server, Duration::from_secs(30)) && Self::ready(&bin, port)
            {
                return Ok(Self { server, port, dir });
            }
            last = log_tail(&log);
            if !server.exited() {
                // Up but not answering: give up rather than leak it.
                server.stop();
                return Err(LocalError::Start {
                    what: "postgres",
                    detail: last,
                });
            }
        }
        let _ = fs::remove_dir_all(&dir);
        Err(LocalError::Start {
            what: "postgres",
            detail: last,
        })
    }

    fn ready(bin: &Path, port: u16) -> bool {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            let ok = Command::new(bin.join("pg_isready"))
                .args(["-q", "-h", "127.0.0.1", "-p", &port.to_string()])
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Connection URL of database `db` as the superuser.
    pub fn url(&self, db: &str) -> String {
        format!("postgresql://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// The cluster's directory (data and log); removed when the cluster stops.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Creates database `name` (letters, digits and `_` only) with `psql`-free SQL.
    pub async fn create_database(&self, name: &str) -> Result<(), LocalError> {
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(LocalError::Start {
                what: "createdb",
                detail: format!("database name `{name}`: letters, digits and `_` only"),
            });
        }
        let (client, conn) = tokio_postgres::connect(&self.url("postgres"), tokio_postgres::NoTls)
            .await
            .map_err(|e| LocalError::Start {
                what: "createdb",
                detail: e.to_string(),
            })?;
        let task = tokio::spawn(conn);
        // An identifier cannot be a bind parameter; `name` was checked above.
        let result = client
            .batch_execute(&format!("CREATE DATABASE \"{name}\""))
            .await;
        drop(client);
        let _ = task.await;
        result.map_err(|e| LocalError::Start {
            what: "createdb",
            detail: e.to_string(),
        })
    }
}

impl Drop for LocalPostgres {
    fn drop(&mut self) {
        self.server.stop();
    }
}

/// Options of a private Mosquitto broker.
#[derive(Debug, Clone)]
pub struct MosquittoOptions {
    /// `max_inflight_messages`: QoS 1 messages the broker sends a client before it waits for
    /// PUBACKs (MQTT 3.1.1 clients; v5 clients set their own receive maximum).
    pub max_inflight_messages: u32,
    /// `max_queued_messages` per client beyond the in-flight window.
    pub max_queued_messages: u32,
    /// Extra lines for mosquitto.conf (TLS listeners, ACLs).
    pub extra: Vec<String>,
}

impl Default for MosquittoOptions {
    fn default() -> Self {
        Self {
            max_inflight_messages: 100,
            max_queued_messages: 100_000,
            extra: Vec::new(),
        }
    }
}

/// A private Mosquitto broker: one anonymous plain listener on 127.0.0.1, no persistence
/// (sessions live as long as the broker).
#[derive(Debug)]
pub struct LocalMosquitto {
    server: Watched,
    port: u16,
    dir: PathBuf,
    options: MosquittoOptions,
}

fn mosquitto_binary() -> Result<PathBuf, LocalError> {
    if let Some(p) = std::env::var_os("LINESENTRY_MOSQUITTO") {
        return Ok(PathBuf::from(p));
    }
    [
        "/usr/sbin/mosquitto",
        "/usr/local/sbin/mosquitto",
        "/usr/bin/mosquitto",
    ]
    .into_iter()
    .map(PathBuf::from)
    .find(|p| p.is_file())
    .ok_or_else(|| LocalError::NotInstalled {
        what: "mosquitto",
        hint: "install the Debian package `mosquitto`, or set LINESENTRY_MOSQUITTO".into(),
    })
}

impl LocalMosquitto {
    pub fn start(options: &MosquittoOptions) -> Result<Self, LocalError> {
        let run_as = RunAs::detect();
        let dir = private_dir("linesentry-mqtt-", run_as)?;
        let mut last = String::new();
        for _ in 0..5 {
            let port = free_port().map_err(io_err("free port"))?;
            match Self::spawn_on(&dir, port, options, run_as) {
                Ok(server) => {
                    return Ok(Self {
                        server,
                        port,
                        dir,
                        options: options.clone(),
                    })
                }
                Err(detail) => last = detail,
            }
        }
        let _ = fs::remove_dir_all(&dir);
        Err(LocalError::Start {
            what: "mosquitto",
            detail: last,
        })
    }

    fn spawn_on(
        dir: &Path,
        port: u16,
        options: &MosquittoOptions,
        run_as: RunAs,
    ) -> Result<Watched, String> {
        // The watchdog of a stopped broker removed the directory (see `restart`).
        fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        run_as.own(dir).map_err(|e| e.to_string())?;
        let conf = dir.join("mosquitto.conf");
        let log = dir.join("mosquitto.log");
        let mut text = format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n\
             max_inflight_messages {}\nmax_queued_messages {}\n\
             log_dest stderr\nlog_type error\nlog_type warning\nlog_type notice\n",
            options.max_inflight_messages, options.max_queued_messages
        );
        for line in &options.extra {
            text.push_str(line);
            text.push('\n');
        }
        fs::write(&conf, text).map_err(|e| e.to_string())?;
        if !log.exists() {
            fs::write(&log, b"").map_err(|e| e.to_string())?;
        }
        for p in [&conf, &log] {
            run_as.own(p).map_err(|e| e.to_string())?;
        }
        let binary = mosquitto_binary().map_err(|e| e.to_string())?;
        let mut server = Watched::spawn(
            &binary,
            &["-c".into(), conf.display().to_string()],
            dir,
            &log,
            "TERM",
            run_as,
        )
        .map_err(|e| e.to_string())?;
        if wait_for_port(port, &mut server, Duration::from_secs(10)) {
            Ok(server)
        } else {
            // Read before stopping: the watchdog removes the directory.
            let tail = log_tail(&log);
            server.stop();
            Err(tail)
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    /// Stops the broker (every session is lost: no persistence) and starts it again on the
    /// same port.
    pub fn restart(&mut self) -> Result<(), LocalError> {
        self.server.stop();
        let run_as = RunAs::detect();
        let mut last = String::new();
        for _ in 0..50 {
            match Self::spawn_on(&self.dir, self.port, &self.options, run_as) {
                Ok(server) => {
                    self.server = server;
                    return Ok(());
                }
                Err(detail) => last = detail,
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(LocalError::Start {
            what: "mosquitto",
            detail: last,
        })
    }

    /// The broker's log so far (errors, warnings, notices).
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("mosquitto.log")).unwrap_or_default()
    }
}

impl Drop for LocalMosquitto {
    fn drop(&mut self) {
        self.server.stop();
    }
}
