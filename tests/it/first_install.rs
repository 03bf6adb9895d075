//! The README's first install of a gateway (section "Deployment"), run line by line as
//! written: the agent's config names a gateway token file that cannot exist yet, `identity`
//! prints the key anyway, the collector registers it and issues the token, the token goes
//! into its file, `validate` passes, and the agent (what `systemctl reload` applies) delivers
//! signed events that the collector verifies.
//!
//! The block is read from README.md, so reordering or adding a step there without this test
//! knowing fails here. `/etc/linesentry` and `/var/lib/linesentry` stand for directories of
//! this test; `sudo -u linesentry` runs the command as the test's own user.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use linesentry_testkit::collector as env;

const AGENT: &str = env!("CARGO_BIN_EXE_linesentry");
const COLLECTOR: &str = env!("CARGO_BIN_EXE_linesentry-collector");
const GATEWAY: &str = "gw-install";

/// The README's first-install block: the indented lines from the `sudoedit` of agent.toml on.
fn readme_steps() -> Vec<String> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md is readable");
    let lines: Vec<&str> = readme.lines().collect();
    let start = lines
        .iter()
        .position(|l| l.starts_with("    sudoedit /etc/linesentry/agent.toml"))
        .expect(
            "README: the first-install block starts with `sudoedit /etc/linesentry/agent.toml`",
        );
    lines[start..]
        .iter()
        .take_while(|l| l.starts_with("    "))
        .map(|l| l.trim().to_owned())
        .collect()
}

/// The README's `[forward.https]` example of the first install, with `url` pointed at
/// `url` (the example's collector is not here).
fn readme_forward_https(url: &str) -> String {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md is readable");
    let lines: Vec<&str> = readme.lines().collect();
    let start = lines
        .iter()
        .position(|l| *l == "    [forward.https]")
        .expect("README: the first install shows a `[forward.https]` example");
    let mut text = String::new();
    for line in lines[start..].iter().take_while(|l| l.starts_with("    ")) {
        let line = line.trim();
        if line.starts_with("url = ") {
            text.push_str("url = \"");
            text.push_str(url);
            text.push_str("\"\n");
        } else {
            text.push_str(line);
            text.push('\n');
        }
    }
    assert!(text.contains("bearer_token"), "{text}");
    text
}

/// A child process killed if the test ends before it was stopped.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

impl Running {
    /// SIGTERM, then the exit status within 20 s.
    async fn stop(&mut self, what: &str) -> std::process::ExitStatus {
        let ok = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status()
            .expect("kill")
            .success();
        assert!(ok, "kill -TERM {what}");
        linesentry_testkit::wait_until_async(Duration::from_secs(20), async || {
            self.0.try_wait().expect("try_wait")
        })
        .await
        .unwrap_or_else(|| panic!("{what} did not stop within 20 s of SIGTERM"))
    }
}

fn run(program: &str, args: &[String]) -> Output {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {}: {}\nstdout:\n{}\nstderr:\n{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

// One story, step by step as the README tells it; split up it would no longer read as one.
#[allow(clippy::too_many_lines)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_first_install_of_a_gateway_runs_in_the_order_written() {
    let db = env::database().await;
    let dir = tempfile::tempdir().expect("temporary directory");
    let etc = dir.path().join("etc"); // /etc/linesentry
    let state = dir.path().join("state"); // /var/lib/linesentry
    std::fs::create_dir_all(&etc).expect("mkdir etc");
    let port = linesentry_testkit::free_port();

    // The collector already runs (its own install is docs/COLLECTOR.md).
    let collector_config = etc.join("collector.toml");
    std::fs::write(
        &collector_config,
        format!(
            "[collector]\nid = \"collector-install\"\n[database]\nurl = \"{db}\"\n\
             [http]\nlisten = \"127.0.0.1:{port}\"\nplain = true\n"
        ),
    )
    .expect("write collector.toml");
    let mut collector = Running(
        Command::new(COLLECTOR)
            .args(["--log-level", "warn", "run", "--config"])
            .arg(&collector_config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the collector"),
    );
    linesentry_testkit::wait_until_async(Duration::from_secs(30), async || {
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .ok()
    })
    .await
    .expect("the collector listens within 30 s");

    let agent_config = etc.join("agent.toml");
    let token_file = etc.join("secrets/gateway-token");
    let devices = Path::new(env!("CARGO_MANIFEST_DIR")).join("devices");
    let mut vars: BTreeMap<&str, String> = BTreeMap::from([("gateway_id", GATEWAY.to_owned())]);
    let local = |word: &str| -> PathBuf {
        if let Some(rest) = word.strip_prefix("/etc/linesentry/") {
            etc.join(rest)
        } else if let Some(rest) = word.strip_prefix("/var/lib/linesentry") {
            state.join(rest.trim_start_matches('/'))
        } else {
            PathBuf::from(word)
        }
    };
    let mut agent: Option<Running> = None;
    let mut done: Vec<String> = Vec::new();
    for line in readme_steps() {
        let line = line
            .split(" #")
            .next()
            .unwrap_or_default()
            .trim()
            .to_owned();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut words: Vec<String> = line
            .split_whitespace()
            .map(|w| {
                let w = match w.strip_prefix('<').and_then(|w| w.strip_suffix('>')) {
                    Some(name) => vars.get(name).cloned().unwrap_or_else(|| w.to_owned()),
                    None => w.to_owned(),
                };
                local(&w).display().to_string()
            })
            .collect();
        if words.starts_with(&["sudo".into(), "-u".into(), "linesentry".into()]) {
            words.drain(..3);
        }
        let step = match words.as_slice() {
            [sudoedit, path, ..] if sudoedit == "sudoedit" => format!(
                "sudoedit {}",
                Path::new(path)
                    .file_name()
                    .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
            ),
            _ => words[..2.min(words.len())].join(" "),
        };
        match (words[0].as_str(), words.get(1).map(String::as_str)) {
            ("sudoedit", Some(path)) if Path::new(path) == agent_config => {
                // The README's HTTPS forwarding, whose token the collector has not issued
                // yet, with its paths under this test's directories.
                let https = readme_forward_https(&format!("http://127.0.0.1:{port}/api/v1/ingest"))
                    .replace("/etc/linesentry/", &format!("{}/", etc.display()));
                std::fs::write(
                    &agent_config,
                    format!(
                        "[agent]\ngateway_id = \"{GATEWAY}\"\nsite = \"plant-test\"\n\
                         data_dir = \"{}\"\nprofiles_dir = \"{}\"\n\n{https}\n\
                         [health]\nenabled = false\n",
                        state.display(),
                        devices.display(),
                    ),
                )
                .expect("write agent.toml");
            }
            ("linesentry", Some("identity")) => {
                assert!(
                    !token_file.exists(),
                    "identity runs before the token exists"
                );
                let out = stdout(&run(AGENT, &words[1..]));
                let key = out
                    .lines()
                    .find_map(|l| l.strip_prefix("public_key:"))
                    .unwrap_or_else(|| panic!("identity prints `public_key: ...`: {out}"))
                    .trim()
                    .to_owned();
                assert!(out.contains(&format!("gateway_id: {GATEWAY}")), "{out}");
                vars.insert("public_key", key);
            }
            ("linesentry-collector", Some("gateway")) => {
                let out = run(COLLECTOR, &words[1..]);
                assert!(stdout(&out).contains(GATEWAY), "{}", stdout(&out));
            }
            ("linesentry-collector", Some("token")) => {
                let token = stdout(&run(COLLECTOR, &words[1..])).trim().to_owned();
                assert!(token.starts_with("lsc_"), "{token}");
                vars.insert("token", token);
            }
            ("sudo", Some("install")) => {
                // `install -D -m 0640 -g linesentry /dev/null FILE`: an empty file (the
                // group is the service's; here the test user's own).
                let file = PathBuf::from(words.last().expect("install names a file"));
                assert_eq!(file, token_file, "{line}");
                std::fs::create_dir_all(file.parent().expect("a directory")).expect("mkdir");
                std::fs::write(&file, "").expect("create the token file");
            }
            ("sudoedit", Some(path)) if Path::new(path) == token_file => {
                let token = vars.get("token").expect("the token was issued before");
                std::fs::write(&token_file, format!("{token}\n")).expect("write the token");
            }
            ("linesentry", Some("validate")) => {
                let out = stdout(&run(AGENT, &words[1..]));
                assert!(out.contains(": ok (gateway gw-install"), "{out}");
            }
            ("systemctl", Some("reload")) => {
                // The unit, given the new config: `linesentry run`.
                agent = Some(Running(
                    Command::new(AGENT)
                        .args(["--log-level", "warn", "run", "--config"])
                        .arg(&agent_config)
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .spawn()
                        .expect("start the agent"),
                ));
            }
            // Trusting an OPC UA server's certificate needs that server, and the journal
            // is systemd's: neither is here.
            ("linesentry", Some("pki")) | ("journalctl", _) => {}
            _ => panic!("a README first-install step this test does not know: {line}"),
        }
        done.push(step);
    }
    assert_eq!(
        done,
        [
            "sudoedit agent.toml",
            "linesentry identity",
            "linesentry-collector gateway",
            "linesentry-collector token",
            "sudo install",
            "sudoedit gateway-token",
            "linesentry validate",
            "systemctl reload",
            "linesentry pki",
            "journalctl -u",
        ],
        "the README's steps, in its order"
    );

    // The agent's events arrive at the collector signed with the registered key, verified.
    let db = env::sql(&db).await;
    let verified = linesentry_testkit::wait_until_async(Duration::from_secs(30), async || {
        let n: i64 = db
            .query_one(
                "SELECT count(*) FROM security_events WHERE gateway_id = $1 \
                 AND event_type = 'agent.started' AND verification = 'verified'",
                &[&GATEWAY],
            )
            .await
            .expect("count")
            .get(0);
        (n > 0).then_some(n)
    })
    .await;
    let mut agent = agent.expect("the README starts the agent");
    assert_eq!(verified, Some(1), "agent.started delivered and verified");
    assert!(agent.stop("the agent").await.success());
    assert!(collector.stop("the collector").await.success());
}
