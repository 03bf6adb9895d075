//! A real Mosquitto broker for tests: its own config, data and certificates in a temp dir,
//! on free loopback ports, stopped (SIGTERM, so it saves its persistence) on drop or on
//! `stop()`, restartable on the same ports. Subscribers are `mosquitto_sub` processes: an
//! independent MQTT implementation, with a persistent session that survives broker restarts.
#![allow(dead_code)]
// The broker's config file is assembled line by line; readability wins here.
#![allow(clippy::format_push_string, clippy::needless_pass_by_value)]

use std::io::Write;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub use crate::free_port;

/// Test PKI: a CA, a server certificate for 127.0.0.1/localhost, and a client certificate.
pub struct Pki {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

impl Pki {
    pub fn create(dir: &Path) -> Self {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
        let ca_key = KeyPair::generate().expect("generate the test CA key");
        let mut ca_params =
            CertificateParams::new(Vec::<String>::new()).expect("test CA parameters");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "linesentry test CA");
        let ca = ca_params
            .self_signed(&ca_key)
            .expect("self-sign the test CA");
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let leaf = |names: Vec<String>, cn: &str| {
            let key = KeyPair::generate().expect("generate a test key");
            let mut params = CertificateParams::new(names).expect("test certificate parameters");
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, cn);
            let cert = params
                .signed_by(&key, &issuer)
                .expect("sign a test certificate");
            (cert.pem(), key.serialize_pem())
        };
        let (server_pem, server_key) = leaf(vec!["localhost".into(), "127.0.0.1".into()], "broker");
        let (client_pem, client_key) = leaf(vec!["gw-test".into()], "gw-test");
        let write = |name: &str, text: &str| {
            let p = dir.join(name);
            std::fs::write(&p, text).expect("write a test PKI file");
            p
        };
        Self {
            ca: write("ca.pem", &ca.pem()),
            server_cert: write("server.pem", &server_pem),
            server_key: write("server.key", &server_key),
            client_cert: write("client.pem", &client_pem),
            client_key: write("client.key", &client_key),
        }
    }
}

/// What the broker offers.
#[derive(Default)]
pub struct BrokerOptions {
    /// A TLS listener requiring a client certificate signed by the test CA.
    pub mtls: bool,
    /// Require this user name and password (on every listener).
    pub user: Option<(String, String)>,
    /// Refuse packets larger than this (mosquitto's message_size_limit is for payloads).
    pub max_packet: Option<usize>,
    /// Contents of an ACL file (`pattern` lines apply to every client).
    pub acl: Option<String>,
}

pub struct Broker {
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub tls_port: Option<u16>,
    pub pki: Pki,
    pub user: Option<(String, String)>,
    conf: PathBuf,
    child: Option<Child>,
}

impl Broker {
    pub fn start(options: BrokerOptions) -> Self {
        let dir = tempfile::tempdir().expect("create the broker directory");
        let pki = Pki::create(dir.path());
        let port = free_port();
        let tls_port = options.mtls.then(free_port);
        let mut conf = String::new();
        conf.push_str("per_listener_settings false\n");
        // Run as whoever runs the tests: as root, mosquitto would switch to the `mosquitto`
        // user, which cannot write its persistence file into our temp dir.
        let me = Command::new("id")
            .arg("-un")
            .output()
            .expect("run `id -un`");
        conf.push_str(&format!(
            "user {}\n",
            String::from_utf8_lossy(&me.stdout).trim()
        ));
        conf.push_str(&format!(
            "persistence true\npersistence_location {}/\nautosave_interval 1\n",
            dir.path().display()
        ));
        // `subscribe` logs `<client id> <qos> <topic>` per subscription, which
        // [`Broker::subscribe`] waits for.
        conf.push_str("log_dest stderr\nlog_type error\nlog_type warning\nlog_type subscribe\n");
        conf.push_str("max_queued_messages 0\nmax_inflight_messages 0\n");
        if let Some(max) = options.max_packet {
            conf.push_str(&format!("max_packet_size {max}\n"));
        }
        match &options.user {
            Some((user, password)) => {
                let file = dir.path().join("passwd");
                std::fs::write(&file, "").expect("write the password file");
                let status = Command::new("mosquitto_passwd")
                    .args(["-b"])
                    .arg(&file)
                    .args([user, password])
                    .status()
                    .expect("mosquitto_passwd (Debian package mosquitto)");
                assert!(status.success());
                conf.push_str(&format!(
                    "allow_anonymous false\npassword_file {}\n",
                    file.display()
                ));
            }
            None => conf.push_str("allow_anonymous true\n"),
        }
        if let Some(acl) = &options.acl {
            let file = dir.path().join("acl");
            std::fs::write(&file, acl).expect("write the ACL file");
            conf.push_str(&format!("acl_file {}\n", file.display()));
        }
        conf.push_str(&format!("listener {port} 127.0.0.1\n"));
        if let Some(tls) = tls_port {
            conf.push_str(&format!(
                "listener {tls} 127.0.0.1\ncafile {}\ncertfile {}\nkeyfile {}\nrequire_certificate true\n",
                pki.ca.display(),
                pki.server_cert.display(),
                pki.server_key.display()
            ));
        }
        let conf_path = dir.path().join("mosquitto.conf");
        std::fs::File::create(&conf_path)
            .expect("create mosquitto.conf")
            .write_all(conf.as_bytes())
            .expect("write mosquitto.conf");
        let mut broker = Self {
            dir,
            port,
            tls_port,
            pki,
            user: options.user.clone(),
            conf: conf_path,
            child: None,
        };
        broker.restart();
        broker
    }

    /// Starts the broker again (after `stop`), on the same ports with the same data.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "broker already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("broker.log"))
            .expect("open broker.log");
        let child = Command::new(mosquitto_binary())
            .arg("-c")
            .arg(&self.conf)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("mosquitto (Debian package mosquitto) must be installed");
        self.child = Some(child);
        crate::wait_until(Duration::from_secs(10), || {
            TcpStream::connect(("127.0.0.1", self.port)).ok()
        })
        .unwrap_or_else(|| {
            panic!(
                "mosquitto did not listen on {} within 10 s: {}",
                self.port,
                self.log()
            )
        });
    }

    /// SIGTERM and wait: the broker saves its sessions and queued messages.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let _ = child.wait();
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("broker.log")).unwrap_or_default()
    }

    /// A `mosquitto_sub` on `topic` with a persistent session (`-c`), writing
    /// `topic<TAB>payload` lines to a file.
    pub fn subscribe(&self, topic: &str, client_id: &str) -> Subscriber {
        let out = self.dir.path().join(format!("{client_id}.out"));
        // The log survives restarts, so a subscription of this client counts once it is new.
        let subscribed = format!(" {client_id} 1 {topic}");
        let logged = || {
            self.log()
                .lines()
                .filter(|l| l.ends_with(&subscribed))
                .count()
        };
        let before = logged();
        let mut cmd = Command::new("mosquitto_sub");
        cmd.args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-t", topic, "-q", "1", "-c", "-i", client_id])
            .args(["-F", "%t\t%p"]);
        if let Some((user, password)) = &self.user {
            cmd.args(["-u", user, "-P", password]);
        }
        let child = cmd
            .stdout(std::fs::File::create(&out).expect("create the subscriber output file"))
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto_sub (Debian package mosquitto-clients)");
        // Subscribed once the broker logs the subscription; from then on the persistent
        // session queues whatever arrives.
        crate::wait_until(Duration::from_secs(10), || {
            (logged() > before).then_some(())
        })
        .unwrap_or_else(|| {
            panic!(
                "mosquitto did not log the subscription of {client_id} to {topic} within 10 s: {}",
                self.log()
            )
        });
        Subscriber {
            child: Some(child),
            out,
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

pub struct Subscriber {
    child: Option<Child>,
    pub out: PathBuf,
}

impl Subscriber {
    /// The (topic, payload) lines received so far.
    pub fn messages(&self) -> Vec<(String, String)> {
        std::fs::read_to_string(&self.out)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split_once('\t'))
            .map(|(t, p)| (t.to_owned(), p.to_owned()))
            .collect()
    }

    /// Waits until `done(messages)` holds, at most `timeout`.
    pub fn wait_for(
        &self,
        timeout: Duration,
        done: impl Fn(&[(String, String)]) -> bool,
    ) -> Vec<(String, String)> {
        crate::wait_until(timeout, || Some(self.messages()).filter(|m| done(m)))
            .unwrap_or_else(|| self.messages())
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Debian installs the broker in /usr/sbin, which is not on every user's PATH.
fn mosquitto_binary() -> &'static str {
    if std::path::Path::new("/usr/sbin/mosquitto").exists() {
        "/usr/sbin/mosquitto"
    } else {
        "mosquitto"
    }
}
