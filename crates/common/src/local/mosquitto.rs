//! A private Mosquitto broker: a plain listener on 127.0.0.1 and, as asked, a TLS listener,
//! persistence, a password, an ACL; restartable on the same ports.

use std::fmt::Write as _;
use std::fs;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use super::{free_port, io_err, log_tail, private_dir, wait_for_ports, LocalError, RunAs, Watched};

/// Options of a private Mosquitto broker.
#[derive(Debug, Clone)]
pub struct MosquittoOptions {
    /// `max_inflight_messages`: QoS 1 messages the broker sends a client before it waits for
    /// PUBACKs (MQTT 3.1.1 clients; v5 clients set their own receive maximum); 0: no limit.
    pub max_inflight_messages: u32,
    /// `max_queued_messages` per client beyond the in-flight window; 0: no limit.
    pub max_queued_messages: u32,
    /// Save sessions and queued messages (every second and on stop), so persistent
    /// sessions survive [`LocalMosquitto::stop`] and [`LocalMosquitto::restart`]. Without,
    /// a restart loses every session.
    pub persistence: bool,
    /// A second listener, with TLS.
    pub tls: Option<MosquittoTls>,
    /// Require this user name and password on every listener (needs `mosquitto_passwd`);
    /// None: anonymous clients are allowed.
    pub user: Option<(String, String)>,
    /// Contents of an ACL file (`pattern` lines apply to every client).
    pub acl: Option<String>,
    /// `max_packet_size`: refuse packets larger than this (`message_size_limit` is for
    /// payloads).
    pub max_packet_size: Option<usize>,
}

impl Default for MosquittoOptions {
    fn default() -> Self {
        Self {
            max_inflight_messages: 100,
            max_queued_messages: 100_000,
            persistence: false,
            tls: None,
            user: None,
            acl: None,
            max_packet_size: None,
        }
    }
}

/// The TLS listener's certificates, PEM; the broker keeps copies in its own directory.
#[derive(Clone)]
pub struct MosquittoTls {
    /// The CA that client certificates must chain to (`cafile`).
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
    /// Refuse clients without a certificate signed by `ca_pem` (mutual TLS).
    pub require_certificate: bool,
}

impl std::fmt::Debug for MosquittoTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MosquittoTls")
            .field("require_certificate", &self.require_certificate)
            .finish_non_exhaustive()
    }
}

/// A private Mosquitto broker. Its log ([`LocalMosquitto::log`]) has errors, warnings,
/// notices (connections) and subscriptions (`<client id> <qos> <topic>`), and survives
/// restarts.
#[derive(Debug)]
pub struct LocalMosquitto {
    server: Option<Watched>,
    port: u16,
    tls_port: Option<u16>,
    dir: PathBuf,
    run_as: RunAs,
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

const CONF: &str = "mosquitto.conf";
const LOG: &str = "mosquitto.log";

impl LocalMosquitto {
    /// Starts a broker on free ports; waits until every listener accepts connections.
    pub fn start(options: &MosquittoOptions) -> Result<Self, LocalError> {
        let run_as = RunAs::detect();
        let dir = private_dir("linesentry-mqtt-", run_as)?;
        let prepared = Self::prepare(&dir, options, run_as);
        let files = match prepared {
            Ok(files) => files,
            Err(e) => {
                let _ = fs::remove_dir_all(&dir);
                return Err(e);
            }
        };
        let mut last = String::new();
        for _ in 0..5 {
            let port = free_port().map_err(io_err("free port"))?;
            let tls_port = match options.tls {
                Some(_) => Some(free_port().map_err(io_err("free port"))?),
                None => None,
            };
            let conf = config(&dir, port, tls_port, options, &files);
            let started = run_as
                .write(&dir.join(CONF), conf.as_bytes(), 0o644)
                .and_then(|()| spawn(&dir, port, tls_port, run_as));
            match started {
                Ok(server) => {
                    return Ok(Self {
                        server: Some(server),
                        port,
                        tls_port,
                        dir,
                        run_as,
                    })
                }
                Err(e) => last = e.to_string(),
            }
        }
        let _ = fs::remove_dir_all(&dir);
        Err(LocalError::Start {
            what: "mosquitto",
            detail: last,
        })
    }

    /// Writes the files the configuration names (certificates, password, ACL) and the log.
    fn prepare(dir: &Path, options: &MosquittoOptions, run_as: RunAs) -> Result<Files, LocalError> {
        let mut files = Files::default();
        run_as.write(&dir.join(LOG), b"", 0o644)?;
        if let Some(tls) = &options.tls {
            let (ca, cert, key) = (
                dir.join("ca.pem"),
                dir.join("server.pem"),
                dir.join("server.key"),
            );
            run_as.write(&ca, tls.ca_pem.as_bytes(), 0o644)?;
            run_as.write(&cert, tls.cert_pem.as_bytes(), 0o644)?;
            run_as.write(&key, tls.key_pem.as_bytes(), 0o600)?;
            files.tls = Some((ca, cert, key));
        }
        if let Some((user, password)) = &options.user {
            let file = dir.join("passwd");
            fs::write(&file, "").map_err(io_err("write the password file"))?;
            let out = Command::new("mosquitto_passwd")
                .arg("-b")
                .arg(&file)
                .args([user, password])
                .stdin(Stdio::null())
                .output()
                .map_err(|e| LocalError::NotInstalled {
                    what: "mosquitto_passwd",
                    hint: format!("{e}; install the Debian package `mosquitto`"),
                })?;
            if !out.status.success() {
                return Err(LocalError::Start {
                    what: "mosquitto_passwd",
                    detail: String::from_utf8_lossy(&out.stderr).into_owned(),
                });
            }
            run_as.own(&file)?;
            files.password = Some(file);
        }
        if let Some(acl) = &options.acl {
            let file = dir.join("acl");
            run_as.write(&file, acl.as_bytes(), 0o644)?;
            files.acl = Some(file);
        }
        Ok(files)
    }

    /// The plain listener's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The plain listener's address.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    /// The TLS listener's port, with [`MosquittoOptions::tls`].
    pub fn tls_port(&self) -> Option<u16> {
        self.tls_port
    }

    /// The broker's directory (configuration, certificates, persistence, log); removed when
    /// the handle is dropped.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Stops the broker (SIGTERM, and waits): it saves its sessions and queued messages
    /// with [`MosquittoOptions::persistence`]. [`LocalMosquitto::restart`] starts it again.
    pub fn stop(&mut self) {
        if let Some(mut server) = self.server.take() {
            server.stop(true);
        }
    }

    /// Stops the broker if it runs and starts it again on the same ports, with the same
    /// data: persistent sessions survive with [`MosquittoOptions::persistence`], every
    /// session is lost without.
    pub fn restart(&mut self) -> Result<(), LocalError> {
        self.stop();
        let mut last = None;
        // The ports of the stopped broker may take a moment to be free again.
        for _ in 0..50 {
            match spawn(&self.dir, self.port, self.tls_port, self.run_as) {
                Ok(server) => {
                    self.server = Some(server);
                    return Ok(());
                }
                Err(e) => last = Some(e),
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(last.unwrap_or(LocalError::Start {
            what: "mosquitto",
            detail: String::new(),
        }))
    }

    /// The broker's log so far, across restarts.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join(LOG)).unwrap_or_default()
    }
}

impl Drop for LocalMosquitto {
    fn drop(&mut self) {
        match self.server.take() {
            Some(mut server) => server.stop(false),
            // Stopped: its watchdog kept the directory.
            None => {
                let _ = fs::remove_dir_all(&self.dir);
            }
        }
    }
}

/// Starts the server in `dir` (configuration written) and waits for its listeners.
fn spawn(
    dir: &Path,
    port: u16,
    tls_port: Option<u16>,
    run_as: RunAs,
) -> Result<Watched, LocalError> {
    let binary = mosquitto_binary()?;
    let log = dir.join(LOG);
    let mut server = Watched::spawn(
        &binary,
        &["-c".into(), dir.join(CONF).display().to_string()],
        dir,
        &log,
        "TERM",
        run_as,
    )?;
    let ports: Vec<u16> = std::iter::once(port).chain(tls_port).collect();
    if wait_for_ports(&ports, &mut server, Duration::from_secs(10)) {
        Ok(server)
    } else {
        let tail = log_tail(&log);
        // Kept: the caller tries again in the same directory.
        server.stop(true);
        Err(LocalError::Start {
            what: "mosquitto",
            detail: tail,
        })
    }
}

/// The files a broker's configuration names.
#[derive(Debug, Default)]
struct Files {
    /// CA, certificate, key.
    tls: Option<(PathBuf, PathBuf, PathBuf)>,
    password: Option<PathBuf>,
    acl: Option<PathBuf>,
}

fn config(
    dir: &Path,
    port: u16,
    tls_port: Option<u16>,
    options: &MosquittoOptions,
    files: &Files,
) -> String {
    // Global settings first: with `per_listener_settings false` they apply to every listener.
    let mut text = String::from("per_listener_settings false\n");
    if options.persistence {
        let _ = write!(
            text,
            "persistence true\npersistence_location {}/\nautosave_interval 1\n",
            dir.display()
        );
    } else {
        text.push_str("persistence false\n");
    }
    let _ = write!(
        text,
        "max_inflight_messages {}\nmax_queued_messages {}\n",
        options.max_inflight_messages, options.max_queued_messages
    );
    if let Some(max) = options.max_packet_size {
        let _ = writeln!(text, "max_packet_size {max}");
    }
    // `subscribe` logs `<client id> <qos> <topic>` per subscription; `notice` the connections.
    text.push_str(
        "log_dest stderr\nlog_type error\nlog_type warning\nlog_type notice\nlog_type subscribe\n",
    );
    match &files.password {
        Some(file) => {
            let _ = write!(
                text,
                "allow_anonymous false\npassword_file {}\n",
                file.display()
            );
        }
        None => text.push_str("allow_anonymous true\n"),
    }
    if let Some(file) = &files.acl {
        let _ = writeln!(text, "acl_file {}", file.display());
    }
    let _ = writeln!(text, "listener {port} 127.0.0.1");
    if let (Some(tls_port), Some((ca, cert, key))) = (tls_port, &files.tls) {
        let _ = write!(
            text,
            "listener {tls_port} 127.0.0.1\ncafile {}\ncertfile {}\nkeyfile {}\n",
            ca.display(),
            cert.display(),
            key.display()
        );
        if options.tls.as_ref().is_some_and(|t| t.require_certificate) {
            text.push_str("require_certificate true\n");
        }
    }
    text
}
