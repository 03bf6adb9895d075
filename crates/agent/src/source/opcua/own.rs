//! The sessions this process holds on each OPC UA server, so the rules can tell the
//! gateway's own stations from someone else's clients in the server's session count
//! (`_agent.own_session_count` next to `_diag.current_session_count`).
//!
//! A server is known by the host and port of its endpoint URL (lowercase): two stations
//! that reach one server under two names are counted apart, which can only make the own
//! count smaller, so it never hides a foreign session that would otherwise be seen.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

fn table() -> &'static Mutex<HashMap<String, u64>> {
    static TABLE: OnceLock<Mutex<HashMap<String, u64>>> = OnceLock::new();
    TABLE.get_or_init(Mutex::default)
}

/// The server part of an endpoint URL: `opc.tcp://Host:4840/path` -> `host:4840`.
pub(super) fn server_key(endpoint_url: &str) -> String {
    let rest = endpoint_url
        .split_once("://")
        .map_or(endpoint_url, |(_, r)| r);
    rest.split('/').next().unwrap_or(rest).to_ascii_lowercase()
}

/// One session of this process on a server, counted while it lives.
#[derive(Debug)]
pub(super) struct OwnSession {
    key: String,
}

impl OwnSession {
    pub(super) fn register(endpoint_url: &str) -> Self {
        let key = server_key(endpoint_url);
        *lock().entry(key.clone()).or_insert(0) += 1;
        Self { key }
    }
}

impl Drop for OwnSession {
    fn drop(&mut self) {
        let mut table = lock();
        if let Some(n) = table.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                table.remove(&self.key);
            }
        }
    }
}

fn lock() -> std::sync::MutexGuard<'static, HashMap<String, u64>> {
    // Plain counters: a panic elsewhere while holding the lock leaves them usable.
    table()
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Sessions this process holds on the server of `endpoint_url`.
pub(super) fn count(endpoint_url: &str) -> u64 {
    lock().get(&server_key(endpoint_url)).copied().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_are_counted_per_server_while_they_live() {
        let url = "opc.tcp://Own-Test-Host:48401/a";
        assert_eq!(count(url), 0);
        let a = OwnSession::register(url);
        let b = OwnSession::register("opc.tcp://own-test-host:48401/b/");
        let other = OwnSession::register("opc.tcp://own-test-host:48402/");
        assert_eq!(count(url), 2, "same host and port, another path");
        drop(a);
        assert_eq!(count(url), 1);
        drop((b, other));
        assert_eq!(count(url), 0);
    }

    #[test]
    fn the_server_key_is_host_and_port() {
        assert_eq!(server_key("opc.tcp://PLC-1:4840/UA/Server"), "plc-1:4840");
        assert_eq!(server_key("plc-1:4840"), "plc-1:4840");
    }
}
