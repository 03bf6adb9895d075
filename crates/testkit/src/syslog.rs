//! Real syslog receivers for the SIEM tests, each started in the foreground on free loopback
//! ports with certificates from a test [`Pki`], writing every message it receives, raw, one
//! per line, to a file the tests read; stopped (SIGTERM, then waited for) on drop.
//!
//! - [`Rsyslog`]: `rsyslogd -n` (Debian `rsyslog`, `rsyslog-gnutls`, `rsyslog-relp`) with a
//!   TLS listener (imtcp, gtls driver, RFC 5425; it takes octet counting and LF framing), a
//!   plain TCP listener, a UDP listener and a RELP listener over TLS that requires a client
//!   certificate of the test CA;
//! - [`SyslogNg`]: `syslog-ng -F` from the Debian package `syslog-ng-core`, which conflicts
//!   with `rsyslog`, so `scripts/test` unpacks it (`dpkg -x`) into `target/peers/syslog-ng`
//!   (or `$LINESENTRY_SYSLOG_NG`); its `syslog()` source over TLS accepts only octet counting.

use std::fmt::Write as _;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub use crate::pki::Pki;

/// Which of rsyslog's listeners a line came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    Tls,
    Tcp,
    Udp,
    Relp,
}

impl Listener {
    fn file(self) -> &'static str {
        match self {
            Listener::Tls => "tls.log",
            Listener::Tcp => "tcp.log",
            Listener::Udp => "udp.log",
            Listener::Relp => "relp.log",
        }
    }
}

/// Options of the rsyslog receiver.
#[derive(Debug, Clone)]
pub struct RsyslogOptions {
    /// rsyslog's `maxMessageSize` (global), bytes; longer messages are cut by rsyslog.
    pub max_message: usize,
    /// imrelp's `maxDataSize`: a RELP frame with more data is refused.
    pub relp_max_data: Option<usize>,
}

impl Default for RsyslogOptions {
    fn default() -> Self {
        Self {
            max_message: 64 * 1024,
            relp_max_data: None,
        }
    }
}

/// A private rsyslogd.
pub struct Rsyslog {
    pub tls_port: u16,
    pub tcp_port: u16,
    pub udp_port: u16,
    pub relp_port: u16,
    /// The CA that signed the listeners' certificate, and a client certificate (`gw-test`).
    pub pki: Pki,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Rsyslog {
    pub fn start() -> Self {
        Self::start_with(&RsyslogOptions::default())
    }

    pub fn start_with(options: &RsyslogOptions) -> Self {
        let pki = Pki::new();
        let dir = tempfile::tempdir().expect("create the rsyslog directory");
        let (tls_port, tcp_port, udp_port, relp_port) = (
            crate::free_port(),
            crate::free_port(),
            crate::free_port(),
            crate::free_port(),
        );
        let d = dir.path().display().to_string();
        let p = |f: &str| pki.path(f).display().to_string();
        let mut conf = String::new();
        let _ = writeln!(
            conf,
            r#"global(workDirectory="{d}" maxMessageSize="{max}"
  DefaultNetstreamDriverCAFile="{ca}" DefaultNetstreamDriverCertFile="{cert}" DefaultNetstreamDriverKeyFile="{key}")
module(load="imtcp")
module(load="imudp")
module(load="imrelp")
template(name="raw" type="string" string="%rawmsg%\n")
input(type="imtcp" port="{tls_port}" address="127.0.0.1" ruleset="tls"
  streamDriver.name="gtls" streamDriver.mode="1" streamDriver.authMode="anon")
input(type="imtcp" port="{tcp_port}" address="127.0.0.1" ruleset="tcp")
input(type="imudp" port="{udp_port}" address="127.0.0.1" ruleset="udp")
input(type="imrelp" port="{relp_port}" address="127.0.0.1" ruleset="relp" tls="on"
  tls.caCert="{ca}" tls.myCert="{cert}" tls.myPrivKey="{key}" tls.authMode="certvalid"{relp_max})
ruleset(name="tls") {{ action(type="omfile" file="{d}/tls.log" template="raw") }}
ruleset(name="tcp") {{ action(type="omfile" file="{d}/tcp.log" template="raw") }}
ruleset(name="udp") {{ action(type="omfile" file="{d}/udp.log" template="raw") }}
ruleset(name="relp") {{ action(type="omfile" file="{d}/relp.log" template="raw") }}"#,
            max = options.max_message,
            ca = p("ca.pem"),
            cert = p("server.pem"),
            key = p("server.key"),
            relp_max = options
                .relp_max_data
                .map(|n| format!(r#" maxDataSize="{n}""#))
                .unwrap_or_default(),
        );
        std::fs::write(dir.path().join("rsyslog.conf"), conf).expect("write rsyslog.conf");
        let mut r = Self {
            tls_port,
            tcp_port,
            udp_port,
            relp_port,
            pki,
            dir,
            child: None,
        };
        r.restart();
        r
    }

    fn binary() -> PathBuf {
        let p = PathBuf::from("/usr/sbin/rsyslogd");
        assert!(
            p.exists(),
            "rsyslogd is needed: run scripts/test or apt-get install rsyslog rsyslog-gnutls rsyslog-relp"
        );
        p
    }

    /// Starts rsyslogd (stopping it first if it runs), on the same ports, appending to the
    /// same files; returns once every TCP listener accepts connections.
    pub fn restart(&mut self) {
        self.stop();
        let d = self.dir.path();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(d.join("rsyslogd.out"))
            .expect("open rsyslogd.out");
        let child = Command::new(Self::binary())
            .arg("-n")
            .arg("-f")
            .arg(d.join("rsyslog.conf"))
            .arg("-i")
            .arg(d.join("rsyslogd.pid"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone a file handle"))
            .stderr(log)
            .spawn()
            .expect("start rsyslogd");
        self.child = Some(child);
        for port in [self.tls_port, self.tcp_port, self.relp_port] {
            let up = crate::wait_until(Duration::from_secs(10), || {
                TcpStream::connect(("127.0.0.1", port)).ok()
            });
            assert!(
                up.is_some(),
                "rsyslogd did not listen on {port}:\n{}",
                self.log()
            );
        }
    }

    /// SIGTERM and wait: rsyslog flushes its files.
    pub fn stop(&mut self) {
        if let Some(child) = self.child.take() {
            stop_child(child);
        }
    }

    /// SIGKILL: a receiver that vanishes.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// What rsyslogd printed, across restarts.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("rsyslogd.out")).unwrap_or_default()
    }

    /// The messages received on `listener` so far, one per line.
    pub fn lines(&self, listener: Listener) -> Vec<String> {
        read_lines(&self.dir.path().join(listener.file()))
    }

    /// Waits until `listener` received at least `n` messages; returns them all. Panics with
    /// what arrived and rsyslog's log after `timeout`.
    pub fn wait_lines(&self, listener: Listener, n: usize, timeout: Duration) -> Vec<String> {
        crate::wait_until(timeout, || {
            let l = self.lines(listener);
            (l.len() >= n).then_some(l)
        })
        .unwrap_or_else(|| {
            panic!(
                "rsyslog got {} of {n} messages on {listener:?}\nlog:\n{}",
                self.lines(listener).len(),
                self.log()
            )
        })
    }
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        self.stop();
    }
}

fn stop_child(mut child: Child) {
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let done = crate::wait_until(Duration::from_secs(10), || child.try_wait().ok().flatten());
    if done.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
}

fn read_lines(path: &Path) -> Vec<String> {
    std::fs::read(path)
        .map(|b| {
            String::from_utf8_lossy(&b)
                .lines()
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// A private syslog-ng with one RFC 5425 TLS listener (`syslog()` source, octet counting).
pub struct SyslogNg {
    pub port: u16,
    pub pki: Pki,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl SyslogNg {
    /// Where `scripts/test` unpacked `syslog-ng-core`.
    pub fn root() -> PathBuf {
        std::env::var_os("LINESENTRY_SYSLOG_NG").map_or_else(
            || crate::repo_root().join("target/peers/syslog-ng"),
            PathBuf::from,
        )
    }

    pub fn start() -> Self {
        let root = Self::root();
        let binary = root.join("usr/sbin/syslog-ng");
        assert!(
            binary.exists(),
            "syslog-ng is needed at {}: run scripts/test, which unpacks the Debian package syslog-ng-core there",
            binary.display()
        );
        let pki = Pki::new();
        let dir = tempfile::tempdir().expect("create the syslog-ng directory");
        let port = crate::free_port();
        let d = dir.path().display().to_string();
        let conf = format!(
            r#"@version: 3.38
options {{ chain_hostnames(no); stats_freq(0); log_msg_size(65536); }};
source s {{ syslog(ip(127.0.0.1) port({port}) transport("tls") flags(store-raw-message)
  tls(key-file("{key}") cert-file("{cert}") peer-verify(optional-untrusted))); }};
source internal_s {{ internal(); }};
destination d {{ file("{d}/received.log" template("$RAWMSG\n")); }};
destination internal_d {{ file("{d}/internal.log"); }};
log {{ source(s); destination(d); }};
log {{ source(internal_s); destination(internal_d); }};
"#,
            key = pki.path("server.key").display(),
            cert = pki.path("server.pem").display(),
        );
        std::fs::write(dir.path().join("syslog-ng.conf"), conf).expect("write syslog-ng.conf");
        let log = std::fs::File::create(dir.path().join("syslog-ng.out")).expect("syslog-ng.out");
        let child = Command::new(&binary)
            .env("LD_LIBRARY_PATH", root.join("usr/lib/syslog-ng"))
            .arg("-F")
            .arg("-f")
            .arg(dir.path().join("syslog-ng.conf"))
            .arg(format!(
                "--module-path={}",
                root.join("usr/lib/syslog-ng/3.38").display()
            ))
            .arg("-R")
            .arg(dir.path().join("persist"))
            .arg("-p")
            .arg(dir.path().join("pid"))
            .arg("-c")
            .arg(dir.path().join("ctl"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone a file handle"))
            .stderr(log)
            .spawn()
            .expect("start syslog-ng");
        let s = Self {
            port,
            pki,
            dir,
            child: Some(child),
        };
        let up = crate::wait_until(Duration::from_secs(10), || {
            TcpStream::connect(("127.0.0.1", port)).ok()
        });
        assert!(up.is_some(), "syslog-ng did not listen:\n{}", s.log());
        s
    }

    /// syslog-ng's output and its internal messages (framing errors land there).
    pub fn log(&self) -> String {
        let read = |f: &str| std::fs::read_to_string(self.dir.path().join(f)).unwrap_or_default();
        read("syslog-ng.out") + &read("internal.log")
    }

    pub fn lines(&self) -> Vec<String> {
        read_lines(&self.dir.path().join("received.log"))
    }

    pub fn wait_lines(&self, n: usize, timeout: Duration) -> Vec<String> {
        crate::wait_until(timeout, || {
            let l = self.lines();
            (l.len() >= n).then_some(l)
        })
        .unwrap_or_else(|| {
            panic!(
                "syslog-ng got {} of {n} messages\nlog:\n{}",
                self.lines().len(),
                self.log()
            )
        })
    }
}

impl Drop for SyslogNg {
    fn drop(&mut self) {
        if let Some(child) = self.child.take() {
            stop_child(child);
        }
    }
}
