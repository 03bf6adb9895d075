//! The one launcher of the independent Python peers (`crates/testkit/peers/*.py`): pymodbus
//! and asyncua servers that print a ready line, take commands on stdin and print as they go.
//!
//! Their stdout is read to the end on a thread of its own, whether or not the test still
//! looks at it: a peer that prints after its ready line would otherwise die of a broken pipe.

use std::ffi::OsStr;
use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

/// The path of one of the independent Python peers in `crates/testkit/peers/`.
pub fn peer_script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("peers")
        .join(name)
}

/// A running Python peer, killed when dropped.
pub struct PythonPeer {
    script: PathBuf,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    ready: String,
}

impl PythonPeer {
    /// Runs `crates/testkit/peers/<script> ARGS...` under python3 (or `$PYTHON`) and waits up
    /// to `within` for a line starting with `ready` on its stdout (kept: [`Self::ready_line`]).
    /// Panics, naming the script, when it cannot start, exits or stays silent; a missing
    /// package names the install command.
    pub fn start<A: AsRef<OsStr>>(
        script: &str,
        args: impl IntoIterator<Item = A>,
        ready: &str,
        within: Duration,
    ) -> Self {
        let script = peer_script(script);
        let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
        let mut child = Command::new(python)
            .arg(&script)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "python3 for {}: {e} (scripts/test installs it)",
                    script.display()
                )
            });
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                // Keep reading when nobody listens any more.
                let _ = tx.send(line);
            }
        });
        let stdin = child.stdin.take();
        let mut peer = Self {
            script,
            child,
            stdin,
            lines,
            ready: String::new(),
        };
        let Some(line) = peer.wait_for_line(within, |l| l.trim().starts_with(ready)) else {
            let status = peer.child.try_wait().ok().flatten();
            panic!(
                "{} did not print {ready:?} within {within:?} (exit status: {status:?}; \
                 its packages: pip install -r tests/requirements.txt)",
                peer.script.display()
            );
        };
        line.trim().clone_into(&mut peer.ready);
        peer
    }

    /// The ready line the peer printed (some peers put what they chose after the word).
    pub fn ready_line(&self) -> &str {
        &self.ready
    }

    /// Writes one command line to the peer's stdin.
    pub fn command(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("the peer's stdin is open");
        writeln!(stdin, "{line}")
            .and_then(|()| stdin.flush())
            .unwrap_or_else(|e| panic!("write {line:?} to {}: {e}", self.script.display()));
    }

    /// The next line printed that `matches`, waiting up to `within`; earlier lines are
    /// passed over. `None` on timeout or when the peer has closed its stdout.
    pub fn wait_for_line(
        &self,
        within: Duration,
        mut matches: impl FnMut(&str) -> bool,
    ) -> Option<String> {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if matches(&line) => return Some(line),
                Ok(_) => {}
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => return None,
            }
        }
    }

    /// The peer's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills the peer and waits for it to exit (its ports are free afterwards).
    pub fn stop(mut self) {
        self.kill();
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for PythonPeer {
    fn drop(&mut self) {
        self.kill();
    }
}
