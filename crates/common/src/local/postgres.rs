//! A private PostgreSQL cluster: initdb in a private directory, a free loopback port.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::{free_port, io_err, log_tail, private_dir, wait_for_ports, LocalError, RunAs, Watched};

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
            run_as.write(&cert, tls.cert_pem.as_bytes(), 0o644)?;
            run_as.write(&key, tls.key_pem.as_bytes(), 0o600)?;
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
            if wait_for_ports(&[port], &mut server, Duration::from_secs(30))
                && Self::ready(&bin, port)
            {
                return Ok(Self { server, port, dir });
            }
            last = log_tail(&log);
            if !server.exited() {
                // Up but not answering: give up rather than leak it.
                server.stop(false);
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
}

impl Drop for LocalPostgres {
    fn drop(&mut self) {
        self.server.stop(false);
    }
}
