//! `linesentry buffer dead-letters`: the real binary on a real store that holds dead
//! letters, listing them and moving them back into the queue.

use std::path::Path;
use std::process::{Command, Output};

use linesentry_agent::buffer::{Queue, QueueOptions};
use linesentry_event::{EventType, SecurityEvent};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_linesentry");
const GATEWAY: &str = "gw-dead-1";

fn linesentry(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .output()
        .expect("run the linesentry binary")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn open(dir: &Path) -> Queue {
    Queue::open(QueueOptions::new(dir, GATEWAY))
        .expect("open the queue")
        .0
}

/// A stopped agent's store: 10 events, of which seqs 3, 5 and 8 were rejected. Returns the
/// dead letters' seqs.
async fn store_with_dead_letters(dir: &Path) -> Vec<u64> {
    let queue = open(dir);
    let events: Vec<SecurityEvent> = (0..10)
        .map(|i| SecurityEvent::new(GATEWAY, EventType::SetpointChanged).data("n", i))
        .collect();
    let seqs = queue.append(&events).await.expect("append");
    let rejected = vec![seqs[2], seqs[4], seqs[7]];
    let items = rejected
        .iter()
        .map(|&s| {
            (
                s,
                format!("HTTP 400 Bad Request: invalid_events\tevent {s}\nbad"),
            )
        })
        .collect();
    assert_eq!(
        queue.dead_letter(items, None).await.expect("dead-letter"),
        3
    );
    queue.close().await;
    rejected
}

fn dir_arg(dir: &Path) -> &str {
    dir.to_str().expect("UTF-8 temporary path")
}

#[tokio::test]
async fn dead_letters_are_listed_one_line_each_with_seq_time_type_id_and_reason() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let dead = store_with_dead_letters(dir.path()).await;
    let out = linesentry(&["buffer", "dead-letters", "--data", dir_arg(dir.path())]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{stdout}");
    for (line, seq) in lines.iter().zip(&dead) {
        let cols: Vec<&str> = line.split('\t').collect();
        assert_eq!(cols.len(), 5, "{line}");
        assert_eq!(cols[0], seq.to_string());
        assert!(cols[1].ends_with('Z'), "an RFC 3339 time: {line}");
        assert_eq!(cols[2], "setpoint.changed");
        assert_eq!(cols[3].len(), 36, "a UUID: {line}");
        assert_eq!(
            cols[4],
            format!("HTTP 400 Bad Request: invalid_events event {seq} bad")
        );
    }
    assert!(text(&out.stderr).contains("3 dead letter(s)"));
}

#[tokio::test]
async fn json_gives_each_dead_letter_with_its_event() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let dead = store_with_dead_letters(dir.path()).await;
    let out = linesentry(&[
        "buffer",
        "dead-letters",
        "--json",
        "--data",
        dir_arg(dir.path()),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let items: Vec<Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    let seqs: Vec<u64> = items
        .iter()
        .map(|v| v["seq"].as_u64().expect("seq"))
        .collect();
    assert_eq!(seqs, dead);
    for v in &items {
        assert!(v["reason"]
            .as_str()
            .expect("reason")
            .starts_with("HTTP 400"));
        assert!(v["dead_lettered_at"].is_string());
        assert_eq!(v["event"]["gateway_id"], GATEWAY);
        assert_eq!(v["event"]["seq"], v["seq"]);
    }
}

#[tokio::test]
async fn requeue_moves_the_named_dead_letters_back_and_without_seqs_all_of_them() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let dead = store_with_dead_letters(dir.path()).await;
    let data = dir_arg(dir.path());

    let one = dead[1].to_string();
    let out = linesentry(&["buffer", "dead-letters", "--data", data, "--requeue", &one]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("requeued 1 dead letter(s)"));
    {
        let queue = open(dir.path());
        let left: Vec<u64> = queue
            .dead_letters(100)
            .expect("dead letters")
            .iter()
            .map(|d| d.seq)
            .collect();
        assert_eq!(left, vec![dead[0], dead[2]]);
        let queued: Vec<u64> = queue
            .peek(None, 100)
            .expect("peek")
            .iter()
            .map(|e| e.seq)
            .collect();
        assert_eq!(queued.len(), 8);
        assert!(queued.contains(&dead[1]), "requeued under its own seq");
        queue.close().await;
    }

    let out = linesentry(&["buffer", "dead-letters", "--data", data, "--requeue"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("requeued 2 dead letter(s)"));
    let queue = open(dir.path());
    assert!(queue.dead_letters(100).expect("dead letters").is_empty());
    assert_eq!(queue.peek(None, 100).expect("peek").len(), 10);
    queue.close().await;
}

#[tokio::test]
async fn requeue_of_a_seq_that_is_not_a_dead_letter_moves_nothing() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let dead = store_with_dead_letters(dir.path()).await;
    let out = linesentry(&[
        "buffer",
        "dead-letters",
        "--data",
        dir_arg(dir.path()),
        "--requeue",
        &dead[0].to_string(),
        "9999",
    ]);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("seq 9999") && stderr.contains("nothing was requeued"),
        "{stderr}"
    );
    let queue = open(dir.path());
    assert_eq!(queue.dead_letters(100).expect("dead letters").len(), 3);
    queue.close().await;
}

#[tokio::test]
async fn the_store_of_a_running_agent_is_neither_listed_nor_requeued() {
    let dir = tempfile::tempdir().expect("temporary directory");
    store_with_dead_letters(dir.path()).await;
    // This process holds the store, as a running agent would.
    let queue = open(dir.path());
    for args in [
        vec!["buffer", "dead-letters", "--data", dir_arg(dir.path())],
        vec![
            "buffer",
            "dead-letters",
            "--data",
            dir_arg(dir.path()),
            "--requeue",
        ],
    ] {
        let out = linesentry(&args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let stderr = text(&out.stderr);
        assert!(
            stderr.contains("is in use") && stderr.contains("stop the agent"),
            "{stderr}"
        );
    }
    assert_eq!(queue.dead_letters(100).expect("dead letters").len(), 3);
    queue.close().await;
}

#[test]
fn the_store_is_named_by_data_dir_or_config_but_not_both() {
    let out = linesentry(&["buffer", "dead-letters"]);
    assert_eq!(out.status.code(), Some(2));
    let out = linesentry(&[
        "buffer",
        "dead-letters",
        "--data",
        "/tmp",
        "--config",
        "/x.toml",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("cannot be used with"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn a_missing_store_is_reported_and_not_created() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let data = dir.path().join("nothing-here");
    let out = linesentry(&[
        "buffer",
        "dead-letters",
        "--data",
        dir_arg(&data),
        "--requeue",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("no store at"),
        "{}",
        text(&out.stderr)
    );
    assert!(!data.exists());
}

#[tokio::test]
async fn the_agent_config_names_the_store_to_list_and_requeue() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let data = dir.path().join("data");
    let dead = store_with_dead_letters(&data).await;
    let config = dir.path().join("agent.toml");
    std::fs::write(
        &config,
        format!("[agent]\ngateway_id = \"{GATEWAY}\"\nsite = \"test-site\"\ndata_dir = \"data\"\n"),
    )
    .expect("write the config");
    let config = dir_arg(&config);

    let out = linesentry(&["buffer", "dead-letters", "--config", config]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).lines().count(), dead.len());

    let out = linesentry(&["buffer", "dead-letters", "-c", config, "--requeue"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let queue = open(&data);
    assert!(queue.dead_letters(100).expect("dead letters").is_empty());
    assert_eq!(queue.peek(None, 100).expect("peek").len(), 10);
    queue.close().await;
}
