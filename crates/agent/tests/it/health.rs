//! The health endpoint over real sockets (plain HTTP on loopback, TLS with a bearer token),
//! fed by a real queue, and the systemd notifications over a real datagram socket.

use std::net::SocketAddr;
use std::os::unix::net::UnixDatagram;
use std::sync::Arc;
use std::time::{Duration, Instant};

use linesentry_agent::buffer::{Queue, QueueOptions};
use linesentry_agent::health::{
    self, notify::Notifier, FailureKind, HealthError, Liveness, Metrics, Server, ServerLimits,
};
use linesentry_agent::health::{HealthSettings, HealthTls};
use linesentry_common::Secret;
use linesentry_event::{EventType, SecurityEvent, Severity, Timestamp};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

fn loopback() -> HealthSettings {
    HealthSettings {
        listen: "127.0.0.1:0".parse().unwrap(),
        ..HealthSettings::default()
    }
}

/// A served endpoint; cancelled when dropped.
struct Endpoint {
    addr: SocketAddr,
    shutdown: CancellationToken,
    task: Option<JoinHandle<()>>,
}

impl Endpoint {
    async fn start(
        settings: &HealthSettings,
        limits: ServerLimits,
        metrics: &Metrics,
        liveness: &Liveness,
    ) -> Self {
        let server = Server::bind(settings).await.unwrap().with_limits(limits);
        let addr = server.local_addr();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(server.run(metrics.clone(), liveness.clone(), shutdown.clone()));
        Self {
            addr,
            shutdown,
            task: Some(task),
        }
    }

    fn url(&self, scheme: &str, path: &str) -> String {
        format!("{scheme}://{}{path}", self.addr)
    }

    /// Cancels and waits for `run` to return, at most `within`.
    async fn stop(mut self, within: Duration) {
        self.shutdown.cancel();
        let task = self.task.take().unwrap();
        tokio::time::timeout(within, task)
            .await
            .expect("run did not return after shutdown")
            .unwrap();
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A client that trusts exactly `roots` (none for plain HTTP), ring as the provider.
fn client(roots: &[rustls::pki_types::CertificateDer<'static>]) -> reqwest::Client {
    let mut store = rustls::RootCertStore::empty();
    for cert in roots {
        store.add(cert.clone()).unwrap();
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(store)
    .with_no_client_auth();
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

async fn get(client: &reqwest::Client, url: &str) -> (u16, String, String) {
    let response = client.get(url).send().await.unwrap();
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (status, content_type, response.text().await.unwrap())
}

fn open_queue(dir: &std::path::Path) -> Queue {
    Queue::open(QueueOptions::new(dir, "gw-test")).unwrap().0
}

/// The value of the sample line that starts with `prefix` (name and labels), as written.
fn sample<'t>(text: &'t str, prefix: &str) -> &'t str {
    let line = text
        .lines()
        .find(|l| l.starts_with(prefix) && l[prefix.len()..].starts_with(' '))
        .unwrap_or_else(|| panic!("no sample `{prefix}` in:\n{text}"));
    &line[prefix.len() + 1..]
}

#[tokio::test]
async fn healthz_says_ok_and_metrics_carry_the_registry_and_the_queue_over_plain_http() {
    let dir = tempfile::tempdir().unwrap();
    let queue = open_queue(dir.path());
    let ninety_s_ago = Timestamp::from_micros(Timestamp::now().as_micros() - 90_000_000);
    queue
        .append(&[SecurityEvent::new("gw-test", EventType::EquipmentStatus)
            .severity(Severity::Info)
            .at(ninety_s_ago)])
        .await
        .unwrap();
    let metrics = Metrics::new();
    let liveness = Liveness::new(Duration::from_secs(30));
    assert!(metrics.observe_queue(&queue) && liveness.observe_queue(&queue));
    let press = metrics.station("press-1");
    press.record_poll(Duration::from_millis(7), 0, 12, 1);
    let mqtt = metrics.sink("mqtt");
    mqtt.forwarded(40);
    mqtt.failure(FailureKind::Rejected);
    let _beat = liveness.register("station/press-1", Duration::from_secs(60));
    let endpoint = Endpoint::start(&loopback(), ServerLimits::default(), &metrics, &liveness).await;
    let http = client(&[]);

    let (status, content_type, body) = get(&http, &endpoint.url("http", "/healthz")).await;
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    assert!(content_type.starts_with("text/plain"), "{content_type}");

    let (status, content_type, text) = get(&http, &endpoint.url("http", "/metrics")).await;
    assert_eq!(status, 200);
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    assert!(text.contains("# TYPE linesentry_station_polls_total counter\n"));
    assert_eq!(
        sample(
            &text,
            "linesentry_station_readings_total{station=\"press-1\"}"
        ),
        "12"
    );
    assert_eq!(
        sample(
            &text,
            "linesentry_station_poll_duration_seconds_bucket{station=\"press-1\",le=\"0.01\"}"
        ),
        "1"
    );
    assert_eq!(
        sample(&text, "linesentry_forward_events_total{sink=\"mqtt\"}"),
        "40"
    );
    assert_eq!(
        sample(
            &text,
            "linesentry_forward_failures_total{sink=\"mqtt\",reason=\"rejected\"}"
        ),
        "1"
    );
    assert_eq!(sample(&text, "linesentry_queue_events"), "1");
    assert_ne!(sample(&text, "linesentry_queue_bytes"), "0");
    assert_eq!(
        sample(&text, "linesentry_queue_quota_bytes"),
        QueueOptions::new(dir.path(), "x").quota_bytes.to_string()
    );
    let age: f64 = sample(&text, "linesentry_queue_oldest_age_seconds")
        .parse()
        .unwrap();
    assert!((89.0..120.0).contains(&age), "{age}");
    assert_eq!(sample(&text, "linesentry_queue_failed_commits_total"), "0");
    assert_eq!(sample(&text, "linesentry_queue_dead_letters"), "0");
    assert_eq!(sample(&text, "linesentry_health_ok"), "1");
    assert_eq!(
        sample(
            &text,
            "linesentry_component_max_silence_seconds{component=\"station/press-1\"}"
        ),
        "60"
    );
    endpoint.stop(Duration::from_secs(5)).await;
    queue.close().await;
}

#[tokio::test]
async fn a_stalled_component_turns_healthz_into_503_naming_it_until_it_beats_again() {
    let metrics = Metrics::new();
    let liveness = Liveness::new(Duration::from_secs(30));
    let press = liveness.register("station/press-1", Duration::from_millis(100));
    let _mqtt = liveness.register("forward/mqtt", Duration::from_secs(60));
    let endpoint = Endpoint::start(&loopback(), ServerLimits::default(), &metrics, &liveness).await;
    let http = client(&[]);
    // Once the 100 ms heartbeat deadline has passed, /healthz turns 503.
    linesentry_testkit::wait_until_async(Duration::from_secs(5), async || {
        let (status, _, _) = get(&http, &endpoint.url("http", "/healthz")).await;
        (status == 503).then_some(())
    })
    .await
    .unwrap_or_else(|| panic!("/healthz did not turn 503 within 5 s of the stall"));

    let (status, _, body) = get(&http, &endpoint.url("http", "/healthz")).await;
    assert_eq!(status, 503, "{body}");
    let lines: Vec<&str> = body.lines().collect();
    assert_eq!(lines.len(), 1, "{body}");
    assert!(
        lines[0].starts_with("station/press-1: no heartbeat for "),
        "{body}"
    );
    let (status, _, text) = get(&http, &endpoint.url("http", "/metrics")).await;
    assert_eq!(status, 200);
    assert_eq!(sample(&text, "linesentry_health_ok"), "0");

    press.beat();
    let (status, _, body) = get(&http, &endpoint.url("http", "/healthz")).await;
    assert_eq!((status, body.as_str()), (200, "ok\n"));
}

#[tokio::test]
async fn any_other_path_or_method_gets_404() {
    let metrics = Metrics::new();
    let liveness = Liveness::new(Duration::from_secs(30));
    let endpoint = Endpoint::start(&loopback(), ServerLimits::default(), &metrics, &liveness).await;
    let http = client(&[]);
    for path in ["/", "/metrics/", "/healthz/x", "/debug/pprof"] {
        let (status, _, _) = get(&http, &endpoint.url("http", path)).await;
        assert_eq!(status, 404, "{path}");
    }
    let response = http
        .post(endpoint.url("http", "/metrics"))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 404);
}

#[tokio::test]
async fn over_tls_a_missing_or_wrong_bearer_token_gets_401_and_the_right_one_gets_in() {
    let dir = tempfile::tempdir().unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
    let cert_file = dir.path().join("health.crt");
    let key_file = dir.path().join("health.key");
    std::fs::write(&cert_file, cert.cert.pem()).unwrap();
    std::fs::write(&key_file, cert.signing_key.serialize_pem()).unwrap();
    let settings = HealthSettings {
        tls: Some(HealthTls {
            cert_file,
            key_file,
        }),
        token: Some(Secret::new("tok-5e1f")),
        ..loopback()
    };
    let metrics = Metrics::new();
    metrics.station("press-1");
    let liveness = Liveness::new(Duration::from_secs(30));
    let endpoint = Endpoint::start(&settings, ServerLimits::default(), &metrics, &liveness).await;
    let https = client(&[cert.cert.der().clone()]);

    for path in ["/healthz", "/metrics", "/nowhere"] {
        let url = endpoint.url("https", path);
        let missing = https.get(&url).send().await.unwrap();
        assert_eq!(missing.status().as_u16(), 401, "{path}");
        assert_eq!(
            missing.headers()["www-authenticate"],
            "Bearer realm=\"linesentry\""
        );
        let wrong = https.get(&url).bearer_auth("tok-5e1").send().await.unwrap();
        assert_eq!(wrong.status().as_u16(), 401, "{path}");
        let text = wrong.text().await.unwrap();
        assert!(!text.contains("tok-5e1f"), "{text}");
    }
    let ok = https
        .get(endpoint.url("https", "/healthz"))
        .bearer_auth("tok-5e1f")
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status().as_u16(), 200);
    let metrics_text = https
        .get(endpoint.url("https", "/metrics"))
        .bearer_auth("tok-5e1f")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics_text.contains("linesentry_station_polls_total{station=\"press-1\"} 0\n"));

    // Plain HTTP to the TLS port gets no HTTP answer.
    let plain = client(&[])
        .get(endpoint.url("http", "/healthz"))
        .send()
        .await;
    assert!(plain.is_err(), "{plain:?}");
}

#[tokio::test]
async fn clients_that_send_nothing_are_dropped_and_do_not_keep_others_out() {
    let metrics = Metrics::new();
    let liveness = Liveness::new(Duration::from_secs(30));
    let limits = ServerLimits {
        max_connections: 2,
        header_read_timeout: Duration::from_millis(200),
        connection_lifetime: Duration::from_secs(1),
        close_grace: Duration::from_millis(200),
        ..ServerLimits::default()
    };
    let endpoint = Endpoint::start(&loopback(), limits, &metrics, &liveness).await;
    let mut idle = Vec::new();
    for _ in 0..2 {
        idle.push(TcpStream::connect(endpoint.addr).await.unwrap());
    }
    // Both slots are taken by silent clients; the next request is served once they are cut.
    let started = Instant::now();
    let (status, _, _) = get(&client(&[]), &endpoint.url("http", "/healthz")).await;
    assert_eq!(status, 200);
    assert!(started.elapsed() < Duration::from_secs(5));
    for mut stream in idle {
        let mut buf = [0u8; 256];
        let read = tokio::time::timeout(Duration::from_secs(3), stream.read(&mut buf))
            .await
            .expect("an idle connection was kept open");
        // Closed: end of stream, a reset, or at most an error response before the end.
        if let Ok(n) = read {
            if n > 0 {
                let rest = tokio::time::timeout(Duration::from_secs(3), async {
                    let mut sink = Vec::new();
                    stream.read_to_end(&mut sink).await
                })
                .await;
                assert!(rest.is_ok(), "the connection stayed open after answering");
            }
        }
    }
}

#[tokio::test]
async fn a_request_head_larger_than_the_limit_is_refused() {
    let metrics = Metrics::new();
    let liveness = Liveness::new(Duration::from_secs(30));
    let endpoint = Endpoint::start(&loopback(), ServerLimits::default(), &metrics, &liveness).await;
    let mut stream = TcpStream::connect(endpoint.addr).await.unwrap();
    let huge = "a".repeat(64 * 1024);
    let request = format!("GET /healthz HTTP/1.1\r\nHost: x\r\nX-Pad: {huge}\r\n\r\n");
    // The server may close while we are still writing.
    let _ = stream.write_all(request.as_bytes()).await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer))
        .await
        .expect("the connection was not closed");
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 431"),
        "{answer}"
    );
}

#[tokio::test]
async fn run_returns_soon_after_shutdown_even_with_a_connection_open() {
    let metrics = Metrics::new();
    let liveness = Liveness::new(Duration::from_secs(30));
    let limits = ServerLimits {
        close_grace: Duration::from_millis(300),
        ..ServerLimits::default()
    };
    let endpoint = Endpoint::start(&loopback(), limits, &metrics, &liveness).await;
    let _idle = TcpStream::connect(endpoint.addr).await.unwrap();
    // Nothing observable says the server has taken the idle connection in: give it 50 ms.
    tokio::time::sleep(Duration::from_millis(50)).await;
    endpoint.stop(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn a_non_loopback_address_without_tls_and_token_is_refused_at_bind() {
    for (tls, token) in [(false, false), (true, false), (false, true)] {
        let settings = HealthSettings {
            listen: "0.0.0.0:0".parse().unwrap(),
            tls: tls.then(|| HealthTls {
                cert_file: "c.pem".into(),
                key_file: "k.pem".into(),
            }),
            token: token.then(|| Secret::new("t")),
            ..HealthSettings::default()
        };
        let err = Server::bind(&settings).await.unwrap_err();
        assert!(matches!(err, HealthError::Unprotected { .. }), "{err}");
    }
}

#[tokio::test]
async fn a_missing_certificate_file_is_named_at_bind() {
    let dir = tempfile::tempdir().unwrap();
    let settings = HealthSettings {
        tls: Some(HealthTls {
            cert_file: dir.path().join("absent.crt"),
            key_file: dir.path().join("absent.key"),
        }),
        ..loopback()
    };
    let err = Server::bind(&settings).await.unwrap_err();
    assert!(err.to_string().contains("absent.crt"), "{err}");
}

#[tokio::test]
async fn serve_with_the_endpoint_disabled_binds_nothing_and_returns_on_shutdown() {
    let settings = HealthSettings {
        enabled: false,
        // A port that would be refused if it were bound.
        listen: "127.0.0.1:1".parse().unwrap(),
        ..HealthSettings::default()
    };
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(health::serve(
        settings,
        Metrics::new(),
        Liveness::new(Duration::from_secs(30)),
        shutdown.clone(),
    ));
    // Not returning before the shutdown can only be observed over a while.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!task.is_finished());
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(2), task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

/// Reads datagrams from `socket` until `until` matches one or `within` passes.
fn receive_until(
    socket: &UnixDatagram,
    within: Duration,
    mut until: impl FnMut(&str) -> bool,
) -> Vec<String> {
    let deadline = Instant::now() + within;
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        socket
            .set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .unwrap();
        let Ok(n) = socket.recv(&mut buf) else { break };
        let message = String::from_utf8_lossy(&buf[..n]).into_owned();
        let done = until(&message);
        seen.push(message);
        if done {
            break;
        }
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_arrives_and_watchdog_pings_stop_while_a_component_is_stalled() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&path).unwrap();
    let notifier = Notifier::to_socket(&path);
    notifier.ready("polling 1 station").unwrap();
    let ready = receive_until(&socket, Duration::from_secs(1), |_| true);
    assert_eq!(ready, ["READY=1\nSTATUS=polling 1 station\n"]);

    let liveness = Liveness::new(Duration::from_secs(30));
    let press = liveness.register("station/press-1", Duration::from_millis(300));
    let shutdown = CancellationToken::new();
    let watchdog = tokio::spawn(health::notify::watchdog(
        notifier.clone(),
        Duration::from_millis(100),
        liveness.clone(),
        shutdown.clone(),
    ));
    // A beating component: pings arrive every half interval.
    let beating = CancellationToken::new();
    let beater = tokio::spawn({
        let beating = beating.clone();
        async move {
            while !beating.is_cancelled() {
                press.beat();
                // A heartbeat at a known rate, well inside the 300 ms deadline.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            press
        }
    });
    let socket = tokio::task::spawn_blocking(move || {
        let mut pings = 0;
        receive_until(&socket, Duration::from_secs(5), |m| {
            pings += usize::from(m == "WATCHDOG=1\n");
            pings >= 3
        });
        assert!(pings >= 3, "{pings} pings while healthy");
        socket
    })
    .await
    .unwrap();

    // The component stops beating: once the stall is reported, no ping follows.
    beating.cancel();
    let press = beater.await.unwrap();
    let socket = tokio::task::spawn_blocking(move || {
        let seen = receive_until(&socket, Duration::from_secs(5), |m| {
            m.starts_with("STATUS=unhealthy")
        });
        let status = seen.last().expect("no status after the stall");
        assert!(
            status.starts_with("STATUS=unhealthy: station/press-1: no heartbeat for "),
            "{seen:?}"
        );
        let after = receive_until(&socket, Duration::from_millis(600), |_| false);
        assert!(after.is_empty(), "sent while stalled: {after:?}");
        socket
    })
    .await
    .unwrap();

    // It beats again: pings resume.
    press.beat();
    let beater = tokio::spawn(async move {
        loop {
            press.beat();
            // A heartbeat at a known rate, well inside the 300 ms deadline.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    let seen = tokio::task::spawn_blocking(move || {
        receive_until(&socket, Duration::from_secs(5), |m| m == "WATCHDOG=1\n")
    })
    .await
    .unwrap();
    assert_eq!(
        seen.last().map(String::as_str),
        Some("WATCHDOG=1\n"),
        "{seen:?}"
    );
    assert!(seen.contains(&"STATUS=running\n".to_owned()), "{seen:?}");
    beater.abort();

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(2), watchdog)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn without_a_notify_socket_the_watchdog_returns_at_once() {
    let liveness = Liveness::new(Duration::from_secs(30));
    tokio::time::timeout(
        Duration::from_secs(1),
        health::notify::watchdog(
            Notifier::disabled(),
            Duration::from_millis(10),
            liveness,
            CancellationToken::new(),
        ),
    )
    .await
    .unwrap();
}
