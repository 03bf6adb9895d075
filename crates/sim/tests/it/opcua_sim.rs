//! The OPC UA client against the crate's own OPC UA simulator (async-opcua server) over real
//! loopback sockets: every secure policy end to end, server restarts and long outages through
//! the same `OpcUaSource`, diagnostics, firmware and identity changes.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use linesentry_agent::source::opcua::{Acquisition, OpcUaSettings, OpcUaSource, Pki};
use linesentry_agent::source::{PollResult, SourceError, Value};
use linesentry_agent::source::{Profile, StationConfig};
use linesentry_sim::opcua::{self as sim_opcua, OpcUaSim, OpcUaSimOptions};
use linesentry_sim::{self as sim, Action, SimOptions};

fn init_logs() {
    if let Ok(filter) = std::env::var("RUST_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_test_writer()
            .try_init();
    }
}

fn profile(name: &str) -> Arc<Profile> {
    sim::load_profile(&Path::new(repo!()).join(format!("devices/{name}.toml")))
        .unwrap_or_else(|e| panic!("{e}"))
}

async fn simulator(dir: &Path, profile_name: &str) -> OpcUaSim {
    init_logs();
    let options = SimOptions {
        tick: Duration::from_millis(100),
        ..SimOptions::default()
    };
    sim_opcua::start(
        profile(profile_name),
        &options,
        &OpcUaSimOptions::new(dir.join("sim-pki")),
    )
    .await
    .unwrap()
}

/// A station of `profile_name` at `url`, loaded through `config::load` like the agent's;
/// `extra` is appended to its `[[stations]]` table (security, identity).
fn station(dir: &Path, profile_name: &str, url: &str, extra: &str) -> StationConfig {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let root = dir.join(format!(
        "cfg-{}",
        N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("password"), sim_opcua::DEFAULT_PASSWORD).unwrap();
    let devices = Path::new(repo!()).join("devices");
    let config = format!(
        "[agent]\ngateway_id = \"gw-sim\"\nsite = \"lab\"\ndata_dir = \"data\"\nprofiles_dir = {:?}\n\n\
         [[stations]]\nid = \"st-1\"\nprofile = \"{profile_name}\"\nsource = \"opcua\"\n\
         endpoint_url = \"{url}\"\npoll_interval_ms = 200\ntimeout_ms = 3000\n{extra}",
        devices.display().to_string()
    );
    let path = root.join("agent.toml");
    std::fs::write(&path, config).unwrap();
    linesentry_agent::config::load(&path)
        .unwrap_or_else(|e| panic!("{e}"))
        .stations
        .remove(0)
}

/// The simulator's password identity (the password file is written beside each config).
fn password_user() -> String {
    format!(
        "identity = {{ kind = \"username\", user = \"{}\", password = {{ file = \"password\" }} }}\n",
        sim_opcua::DEFAULT_USER
    )
}

fn security(policy: &str, mode: &str) -> String {
    format!("security_mode = \"{mode}\"\nsecurity_policy = \"{policy}\"\n")
}

fn settings(dir: &Path, acquisition: Acquisition) -> OpcUaSettings {
    let mut s = OpcUaSettings::new(dir, "gw-sim");
    s.acquisition = acquisition;
    s.reconnect_initial = Duration::from_millis(200);
    s.reconnect_max = Duration::from_secs(1);
    s
}

async fn poll_until(
    source: &mut OpcUaSource,
    limit: Duration,
    mut done: impl FnMut(&[PollResult]) -> bool,
) -> Vec<PollResult> {
    let deadline = Instant::now() + limit;
    let mut polls = Vec::new();
    loop {
        polls.push(source.poll().await);
        if done(&polls) {
            return polls;
        }
        assert!(
            Instant::now() < deadline,
            "condition not met within {limit:?}; last poll: {:?}",
            polls.last()
        );
        // Paced like a station polling every 200 ms: `done` may count polls.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn reading<'a>(polls: &'a [PollResult], tag: &str) -> Option<&'a Value> {
    polls
        .iter()
        .rev()
        .flat_map(|p| p.readings.iter().rev())
        .find(|r| r.tag.as_ref() == tag)
        .map(|r| &r.value)
}

fn count(polls: &[PollResult], tag: &str) -> usize {
    polls
        .iter()
        .flat_map(|p| &p.readings)
        .filter(|r| r.tag.as_ref() == tag)
        .count()
}

/// Every profile tag arrived with the model's type (the model conforms values to it).
fn assert_types(polls: &[PollResult], profile: &Profile) {
    for tag in &profile.tags {
        let Some(v) = reading(polls, &tag.name) else {
            panic!("no reading of `{}`", tag.name);
        };
        let ok = match tag.data_type {
            linesentry_agent::source::DataType::Bool => matches!(v, Value::Bool(_)),
            linesentry_agent::source::DataType::F32 | linesentry_agent::source::DataType::F64 => {
                matches!(v, Value::Float(_))
            }
            linesentry_agent::source::DataType::String => matches!(v, Value::Text(_)),
            linesentry_agent::source::DataType::I16
            | linesentry_agent::source::DataType::I32
            | linesentry_agent::source::DataType::I64 => matches!(v, Value::Int(_)),
            _ => matches!(v, Value::UInt(_)),
        };
        assert!(ok, "`{}` ({:?}) decoded as {v:?}", tag.name, tag.data_type);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_secure_policy_works_end_to_end_once_the_simulator_certificate_is_trusted() {
    let dir = tempfile::tempdir().unwrap();
    let sim = simulator(dir.path(), "aoi_station").await;
    let pki = Pki::in_data_dir(dir.path());
    // The operator trusts the simulator's certificate file before the first connect.
    let sim_cert = sim.pki_dir().join("own/cert.der");
    pki.trust(sim_cert.to_str().unwrap()).unwrap();
    for (policy, mode) in [
        ("Basic256Sha256", "SignAndEncrypt"),
        ("Aes128_Sha256_RsaOaep", "SignAndEncrypt"),
        ("Aes256_Sha256_RsaPss", "SignAndEncrypt"),
        ("Aes256_Sha256_RsaPss", "Sign"),
    ] {
        let station = station(
            dir.path(),
            "aoi_station",
            &sim.endpoint_url(),
            &format!("{}{}", security(policy, mode), password_user()),
        );
        let mut source =
            OpcUaSource::start(&station, settings(dir.path(), Acquisition::Subscription)).unwrap();
        let polls = poll_until(&mut source, Duration::from_secs(30), |polls| {
            station
                .profile
                .tags
                .iter()
                .all(|t| reading(polls, &t.name).is_some())
                && polls.iter().any(|p| p.identity.is_some())
        })
        .await;
        assert_types(&polls, &station.profile);
        assert!(
            polls.iter().all(|p| !p
                .errors
                .iter()
                .any(|e| matches!(e, SourceError::Certificate(_) | SourceError::Auth(_)))),
            "{policy}/{mode}: {:?}",
            polls.iter().flat_map(|p| &p.errors).collect::<Vec<_>>()
        );
        // Values equal the model's (within one tick: compare a slow-moving tag).
        let model_firmware = sim::lock(sim.model()).value("firmware").cloned();
        assert_eq!(reading(&polls, "firmware").cloned(), model_firmware);
        // The password user may read diagnostics: this session is counted.
        assert!(
            matches!(reading(&polls, "_diag.current_session_count"), Some(Value::UInt(n)) if *n >= 1),
            "{policy}/{mode}: {:?}",
            reading(&polls, "_diag.current_session_count")
        );
        let identity = polls.iter().find_map(|p| p.identity.clone()).unwrap();
        assert_eq!(identity.vendor.as_deref(), Some("LineSentry Simulation"));
        assert_eq!(
            identity.application_uri.as_deref(),
            Some("urn:linesentry:sim:aoi_station")
        );
        assert_eq!(
            identity.certificate_thumbprint,
            Some(
                pki.list()
                    .unwrap()
                    .iter()
                    .find(|c| c.path.starts_with(pki.trusted_dir()))
                    .unwrap()
                    .thumbprint
                    .clone()
            )
        );
        assert_eq!(
            reading(&polls, "_security.best_policy"),
            Some(&Value::Text("Aes256_Sha256_RsaPss".into()))
        );
        source.close().await;
    }
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_x509_user_certificate_activates_the_session_and_an_unknown_one_is_refused() {
    init_logs();
    let dir = tempfile::tempdir().unwrap();
    // Two user certificates with keys; the simulator knows only the first.
    let known = Pki::new(dir.path().join("user-known"));
    known
        .ensure_own("urn:test:user:known", "known user")
        .unwrap();
    let unknown = Pki::new(dir.path().join("user-unknown"));
    unknown
        .ensure_own("urn:test:user:unknown", "unknown user")
        .unwrap();
    let mut opcua = OpcUaSimOptions::new(dir.path().join("sim-pki"));
    opcua.x509_users = vec![known.own_certificate_path()];
    let sim = sim_opcua::start(profile("aoi_station"), &SimOptions::default(), &opcua)
        .await
        .unwrap();
    let mut s = settings(dir.path(), Acquisition::Polling);
    s.auto_accept_server_certificates = true;
    for (user, accepted) in [(&known, true), (&unknown, false)] {
        let identity = format!(
            "identity = {{ kind = \"certificate\", cert = {:?}, key = {:?} }}\n",
            user.own_certificate_path().display().to_string(),
            user.own_private_key_path().display().to_string()
        );
        let station = station(
            dir.path(),
            "aoi_station",
            &sim.endpoint_url(),
            &format!("{}{identity}", security("Basic256Sha256", "SignAndEncrypt")),
        );
        let mut source = OpcUaSource::start(&station, s.clone()).unwrap();
        let polls = poll_until(&mut source, Duration::from_secs(30), |polls| {
            reading(polls, "panels_inspected").is_some()
                || polls
                    .iter()
                    .any(|p| p.errors.iter().any(|e| matches!(e, SourceError::Auth(_))))
        })
        .await;
        assert_eq!(
            reading(&polls, "panels_inspected").is_some(),
            accepted,
            "{:?}",
            polls.iter().flat_map(|p| &p.errors).collect::<Vec<_>>()
        );
        source.close().await;
    }
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespace_indices_of_the_profile_are_served_as_written() {
    let dir = tempfile::tempdir().unwrap();
    // cell_controller's node ids are in namespace 3.
    let sim = simulator(dir.path(), "cell_controller").await;
    let station = station(dir.path(), "cell_controller", &sim.endpoint_url(), "");
    let mut source =
        OpcUaSource::start(&station, settings(dir.path(), Acquisition::Polling)).unwrap();
    let polls = poll_until(&mut source, Duration::from_secs(20), |polls| {
        station
            .profile
            .tags
            .iter()
            .all(|t| reading(polls, &t.name).is_some())
    })
    .await;
    assert_types(&polls, &station.profile);
    // Anonymous users may not read diagnostics on the simulator: reported once, not fatal.
    let refusals: Vec<_> = polls
        .iter()
        .flat_map(|p| &p.errors)
        .filter(|e| e.to_string().contains("not readable by this session"))
        .collect();
    assert_eq!(refusals.len(), 1, "{refusals:?}");
    source.close().await;
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_resumes_through_the_same_source_after_the_simulator_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let sim = simulator(dir.path(), "aoi_station").await;
    let station = station(dir.path(), "aoi_station", &sim.endpoint_url(), "");
    let mut source =
        OpcUaSource::start(&station, settings(dir.path(), Acquisition::Subscription)).unwrap();
    let before = poll_until(&mut source, Duration::from_secs(20), |polls| {
        count(polls, "panels_inspected") >= 3 && reading(polls, "_server.start_time").is_some()
    })
    .await;
    let start_before = reading(&before, "_server.start_time").cloned().unwrap();

    sim.restart().await.unwrap();

    let after = poll_until(&mut source, Duration::from_secs(30), |polls| {
        count(polls, "panels_inspected") >= 3
            && reading(polls, "_server.start_time").is_some_and(|s| *s != start_before)
    })
    .await;
    // Counters advance after the restart: fresh data, not a replay.
    let Some(Value::UInt(last_before)) = reading(&before, "panels_inspected").cloned() else {
        panic!("no counter before");
    };
    let Some(Value::UInt(last_after)) = reading(&after, "panels_inspected").cloned() else {
        panic!("no counter after");
    };
    assert!(last_after > last_before, "{last_before} -> {last_after}");
    let stats = source.stats();
    assert_eq!(
        stats.sessions_built, 1,
        "async-opcua reconnected by itself: {stats:?}"
    );
    assert!(stats.reconnects >= 1, "{stats:?}");
    assert_eq!(stats.watchdog_recreations, 0, "{stats:?}");
    source.close().await;
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_outage_rebuilds_the_session_and_its_subscription_in_the_same_source() {
    let dir = tempfile::tempdir().unwrap();
    let sim = simulator(dir.path(), "aoi_station").await;
    let station = station(dir.path(), "aoi_station", &sim.endpoint_url(), "");
    let mut s = settings(dir.path(), Acquisition::Subscription);
    // async-opcua gives up after one quick retry; the driver takes over.
    s.session_retries = 1;
    let mut source = OpcUaSource::start(&station, s).unwrap();
    poll_until(&mut source, Duration::from_secs(20), |polls| {
        count(polls, "panels_inspected") >= 2
    })
    .await;
    sim.stop_server().await;
    let outage = poll_until(&mut source, Duration::from_secs(20), |polls| {
        polls.iter().filter(|p| !p.reachable).count() >= 5
    })
    .await;
    assert!(outage
        .iter()
        .filter(|p| !p.reachable)
        .all(|p| p.readings.is_empty() && !p.errors.is_empty()));
    // The outage under test: the server stays down for 2 s before it returns.
    tokio::time::sleep(Duration::from_secs(2)).await;
    sim.start_server().await.unwrap();
    poll_until(&mut source, Duration::from_secs(30), |polls| {
        count(polls, "panels_inspected") >= 3
    })
    .await;
    let stats = source.stats();
    assert!(stats.sessions_built >= 2, "{stats:?}");
    assert!(stats.subscriptions_created >= 2, "{stats:?}");
    source.close().await;
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_firmware_change_restarts_the_simulator_with_the_new_build_info() {
    let dir = tempfile::tempdir().unwrap();
    let sim = simulator(dir.path(), "aoi_station").await;
    let station = station(dir.path(), "aoi_station", &sim.endpoint_url(), "");
    let mut source =
        OpcUaSource::start(&station, settings(dir.path(), Acquisition::Polling)).unwrap();
    let before = poll_until(&mut source, Duration::from_secs(20), |polls| {
        polls.iter().any(|p| p.identity.is_some())
    })
    .await;
    let old = before
        .iter()
        .find_map(|p| p.identity.clone())
        .unwrap()
        .revision
        .unwrap();
    sim.handle().apply(Action::FirmwareChange);
    let new = sim::lock(sim.model()).identity().revision.clone().unwrap();
    assert_ne!(old, new);
    let after = poll_until(&mut source, Duration::from_secs(30), |polls| {
        polls
            .iter()
            .filter_map(|p| p.identity.as_ref())
            .any(|i| i.revision.as_deref() == Some(new.as_str()))
    })
    .await;
    assert_eq!(
        reading(&after, "_server.build.software_version"),
        Some(&Value::Text(new.clone()))
    );
    source.close().await;
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_identity_change_shows_a_new_application_uri_and_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let sim = simulator(dir.path(), "aoi_station").await;
    let station = station(dir.path(), "aoi_station", &sim.endpoint_url(), "");
    let mut source =
        OpcUaSource::start(&station, settings(dir.path(), Acquisition::Polling)).unwrap();
    let before = poll_until(&mut source, Duration::from_secs(20), |polls| {
        polls.iter().any(|p| p.identity.is_some())
    })
    .await;
    let old = before.iter().find_map(|p| p.identity.clone()).unwrap();
    sim.handle().apply(Action::IdentityChange);
    // Endpoint discovery may show the new application URI and certificate a poll before
    // the status read brings the new BuildInfo: wait for the identity with both.
    let moved = |i: &linesentry_agent::source::DeviceIdentity| {
        i.application_uri != old.application_uri
            && i.certificate_thumbprint != old.certificate_thumbprint
            && i.vendor.is_some()
    };
    let after = poll_until(&mut source, Duration::from_secs(30), |polls| {
        polls.iter().filter_map(|p| p.identity.as_ref()).any(moved)
    })
    .await;
    let new = after
        .iter()
        .filter_map(|p| p.identity.clone())
        .find(|i| moved(i))
        .unwrap();
    assert_eq!(new.vendor.as_deref(), Some("Substitute Automation"));
    assert!(new.certificate_thumbprint.is_some());
    source.close().await;
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn link_behaviours_show_as_bad_quality_refused_values_and_an_unreachable_server() {
    let dir = tempfile::tempdir().unwrap();
    let sim = simulator(dir.path(), "aoi_station").await;
    let station = station(dir.path(), "aoi_station", &sim.endpoint_url(), "");
    let mut source =
        OpcUaSource::start(&station, settings(dir.path(), Acquisition::Polling)).unwrap();
    poll_until(&mut source, Duration::from_secs(20), |polls| {
        count(polls, "panels_inspected") > 0
    })
    .await;

    sim.handle().apply(Action::Garbage);
    poll_until(&mut source, Duration::from_secs(10), |polls| {
        polls.last().is_some_and(|p| {
            p.readings.iter().any(|r| {
                r.tag.as_ref() == "panels_inspected"
                    && r.quality == linesentry_agent::source::Quality::Bad
            })
        })
    })
    .await;

    sim.handle().apply(Action::Exceptions);
    let polls = poll_until(&mut source, Duration::from_secs(10), |polls| {
        polls.last().is_some_and(|p| {
            p.errors
                .iter()
                .any(|e| e.to_string().contains("BadOutOfService"))
        })
    })
    .await;
    let last = polls.last().unwrap();
    assert!(last.reachable);
    assert!(!last
        .readings
        .iter()
        .any(|r| r.tag.as_ref() == "panels_inspected"));

    sim.handle().apply(Action::Silent);
    poll_until(&mut source, Duration::from_secs(20), |polls| {
        polls.last().is_some_and(|p| !p.reachable)
    })
    .await;

    sim.handle().apply(Action::Normal);
    poll_until(&mut source, Duration::from_secs(30), |polls| {
        polls.last().is_some_and(|p| {
            p.reachable
                && p.readings.iter().any(|r| {
                    r.tag.as_ref() == "panels_inspected"
                        && r.quality == linesentry_agent::source::Quality::Good
                })
        })
    })
    .await;
    source.close().await;
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tag_whose_type_does_not_fit_its_nodes_data_type_is_reported_once_and_skipped_in_both_modes(
) {
    let dir = tempfile::tempdir().unwrap();
    let sim = simulator(dir.path(), "aoi_station").await;
    // A profile for the simulator's AOI nodes that declares two of them wrongly: a Float as
    // bool, a String as u16; and two widenings that are fine.
    let tag = |name: &str, ty: &str, node: &str| {
        format!("[[tags]]\nname = \"{name}\"\nrole = \"measurement\"\ntype = \"{ty}\"\nnode_id = \"ns=2;s=AOI.{node}\"\n")
    };
    let profile = [
        "[profile]\nname = \"aoi_types\"\nprotocol = \"opcua\"\n".to_owned(),
        tag("height_as_bool", "bool", "Measurement.SolderHeight"),
        tag("panel_as_u16", "u16", "PanelId"),
        tag("height_as_f64", "f64", "Measurement.SolderHeight"),
        tag("defects_as_u64", "u64", "DefectCount"),
    ]
    .concat();
    let root = dir.path().join("types");
    std::fs::create_dir_all(root.join("devices")).unwrap();
    std::fs::write(root.join("devices/aoi_types.toml"), profile).unwrap();
    let config = format!(
        "[agent]\ngateway_id = \"gw-sim\"\nsite = \"lab\"\ndata_dir = \"data\"\nprofiles_dir = \"devices\"\n\n\
         [[stations]]\nid = \"st-types\"\nprofile = \"aoi_types\"\nsource = \"opcua\"\n\
         endpoint_url = \"{}\"\npoll_interval_ms = 200\ntimeout_ms = 3000\n",
        sim.endpoint_url()
    );
    std::fs::write(root.join("agent.toml"), config).unwrap();
    let station = linesentry_agent::config::load(&root.join("agent.toml"))
        .unwrap_or_else(|e| panic!("{e}"))
        .stations
        .remove(0);
    for acquisition in [Acquisition::Polling, Acquisition::Subscription] {
        let mut source = OpcUaSource::start(&station, settings(dir.path(), acquisition)).unwrap();
        let polls = poll_until(&mut source, Duration::from_secs(20), |polls| {
            polls.len() >= 5
                && count(polls, "height_as_f64") > 0
                && count(polls, "defects_as_u64") > 0
        })
        .await;
        for (name, node_type, declared) in [
            ("height_as_bool", "Float", "bool"),
            ("panel_as_u16", "String", "u16"),
        ] {
            let reports: Vec<String> = polls
                .iter()
                .flat_map(|p| &p.errors)
                .map(ToString::to_string)
                .filter(|e| e.contains(&format!("tag `{name}`")))
                .collect();
            assert_eq!(reports.len(), 1, "{acquisition:?} {name}: {reports:?}");
            assert!(
                reports[0].contains("station `st-types`")
                    && reports[0].contains(&format!("DataType is {node_type}"))
                    && reports[0].contains(&format!("declares type `{declared}`")),
                "{acquisition:?}: {}",
                reports[0]
            );
            assert_eq!(count(&polls, name), 0, "{acquisition:?}: {name} read");
        }
        assert!(matches!(
            reading(&polls, "height_as_f64"),
            Some(Value::Float(_))
        ));
        assert!(matches!(
            reading(&polls, "defects_as_u64"),
            Some(Value::UInt(_))
        ));
        source.close().await;
    }
    sim.shutdown().await;
}
