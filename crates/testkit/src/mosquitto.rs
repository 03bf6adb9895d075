//! A real Mosquitto broker for tests, a thin layer over the one launcher,
//! [`linesentry_common::local::LocalMosquitto`]: persistent sessions (saved on `stop()`),
//! restartable on the same ports, unlimited queues, a mutual-TLS listener with the test
//! [`Pki`] as asked. Subscribers are `mosquitto_sub` processes: an independent MQTT
//! implementation, with a persistent session that survives broker restarts.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use linesentry_common::local::{LocalMosquitto, MosquittoOptions, MosquittoTls};

pub use crate::free_port;
pub use crate::pki::Pki;

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
    pub port: u16,
    pub tls_port: Option<u16>,
    /// The CA of the TLS listener, its server certificate and a client certificate.
    pub pki: Pki,
    pub user: Option<(String, String)>,
    server: LocalMosquitto,
    /// The subscribers' output files.
    out: tempfile::TempDir,
}

impl Broker {
    pub fn start(options: BrokerOptions) -> Self {
        let pki = Pki::new();
        let tls = options.mtls.then(|| {
            let (cert_pem, key_pem) = pki.server_pem();
            MosquittoTls {
                ca_pem: pki.ca_pem.clone(),
                cert_pem,
                key_pem,
                require_certificate: true,
            }
        });
        let server = LocalMosquitto::start(&MosquittoOptions {
            max_inflight_messages: 0,
            max_queued_messages: 0,
            persistence: true,
            tls,
            user: options.user.clone(),
            acl: options.acl,
            max_packet_size: options.max_packet,
        })
        .unwrap_or_else(|e| panic!("cannot start a private Mosquitto for the test: {e}"));
        Self {
            port: server.port(),
            tls_port: server.tls_port(),
            pki,
            user: options.user,
            server,
            out: tempfile::tempdir().expect("create the subscribers' directory"),
        }
    }

    /// Starts the broker again (after `stop`, or stops it first), on the same ports with
    /// the same data.
    pub fn restart(&mut self) {
        if let Err(e) = self.server.restart() {
            panic!("mosquitto did not start again: {e}");
        }
    }

    /// SIGTERM and wait: the broker saves its sessions and queued messages.
    pub fn stop(&mut self) {
        self.server.stop();
    }

    /// The broker's log so far, across restarts.
    pub fn log(&self) -> String {
        self.server.log()
    }

    /// A `mosquitto_sub` on `topic` with a persistent session (`-c`), writing
    /// `topic<TAB>payload` lines to a file.
    pub fn subscribe(&self, topic: &str, client_id: &str) -> Subscriber {
        let out = self.out.path().join(format!("{client_id}.out"));
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
