//! TLS to PostgreSQL: the test cluster runs with `ssl = on` and a certificate for 127.0.0.1
//! from a CA of its own (crates/testkit/src/collector.rs); the collector connects with
//! `verify-full`, `require` or refuses, as `database.sslmode` says.

use linesentry_testkit::collector as env;

use env::{Chain, Env, EnvOptions, Pki};
use linesentry_collector::auth::Role;
use linesentry_collector::Collector;
use linesentry_event::EventType;

fn with_database(database_toml: &str, database: Option<String>) -> EnvOptions {
    EnvOptions {
        database_toml: database_toml.into(),
        database,
        ..EnvOptions::default()
    }
}

/// Starts a collector that is expected to fail; returns its error.
async fn start_error(options: &EnvOptions) -> String {
    env::install_crypto();
    let pki = Pki::new();
    std::fs::write(pki.path("postgres-ca.pem"), env::postgres_ca_pem()).unwrap();
    let url = match &options.database {
        Some(u) => u.clone(),
        None => env::database().await,
    };
    let settings = Env::settings(options, &url, &pki);
    match Collector::start(settings).await {
        Ok(c) => {
            c.shutdown().await;
            panic!("the collector started")
        }
        Err(e) => e.to_string(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_verify_full_every_database_connection_is_tls_and_a_batch_is_committed() {
    let env = Env::start(with_database(
        "sslmode = \"verify-full\"\nca_file = \"postgres-ca.pem\"",
        None,
    ))
    .await;
    let signer = env.gateway("gw-tls").await;
    let token = env.token(Role::Gateway, Some("gw-tls")).await;
    let events = Chain::new("gw-tls").events(EventType::SetpointChanged, 5);
    let (status, reply) = env.post(Some(&token), signer.seal(&events), true).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["accepted"], 5);

    let db = env.db().await;
    let stored: i64 = db
        .query_one(
            "SELECT count(*) FROM security_events WHERE gateway_id = 'gw-tls' AND verification = 'verified'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(stored, 5);
    // The collector's own connections to this database, as the server sees them.
    let rows = db
        .query(
            "SELECT s.ssl, s.version FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid)
             WHERE a.datname = current_database() AND a.application_name = 'linesentry-collector'",
            &[],
        )
        .await
        .unwrap();
    assert!(!rows.is_empty(), "no collector connection seen");
    for r in &rows {
        assert!(r.get::<_, bool>(0), "a collector connection without TLS");
        let version: Option<String> = r.get(1);
        assert!(
            matches!(version.as_deref(), Some("TLSv1.3" | "TLSv1.2")),
            "{version:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ca_that_did_not_sign_the_server_certificate_is_a_clear_error_naming_the_database_host() {
    // ca.pem is the HTTPS listener's CA, not the database's.
    let options = with_database("sslmode = \"verify-full\"\nca_file = \"ca.pem\"", None);
    let error = start_error(&options).await;
    let port = env::postgres().port();
    assert!(
        error.contains(&format!("127.0.0.1:{port}")),
        "no host in: {error}"
    );
    assert!(error.contains("verify-full"), "{error}");
    assert!(error.contains("invalid peer certificate"), "{error}");
    assert!(error.contains("database.ca_file"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_full_checks_the_host_name_and_require_with_a_ca_checks_only_the_chain() {
    // The server's certificate names 127.0.0.1, not localhost.
    let url = env::database().await.replace("@127.0.0.1:", "@localhost:");
    let error = start_error(&with_database(
        "sslmode = \"verify-full\"\nca_file = \"postgres-ca.pem\"",
        Some(url.clone()),
    ))
    .await;
    assert!(error.contains("localhost:"), "{error}");
    assert!(error.contains("not valid for name"), "{error}");

    let env = Env::start(with_database(
        "sslmode = \"require\"\nca_file = \"postgres-ca.pem\"",
        Some(url),
    ))
    .await;
    let (status, _) = env
        .get(&env.token(Role::Viewer, None).await, "/api/v1/status")
        .await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_logs_in_where_pg_hba_asks_for_one_and_its_absence_is_refused() {
    use linesentry_common::local::{LocalPostgres, PostgresOptions, PostgresTls};
    use std::os::unix::fs::PermissionsExt as _;
    env::install_crypto();
    // A cluster of its own: certificate login for `collector`, trust for the superuser.
    let pki = Pki::new();
    let (cert_pem, key_pem) = pki.issue(&["127.0.0.1"], false);
    let (client_cert, client_key) = pki.issue(&["collector"], true);
    std::fs::write(pki.path("client.pem"), client_cert).unwrap();
    std::fs::write(pki.path("client.key"), client_key).unwrap();
    std::fs::write(
        pki.path("pg_hba.conf"),
        "hostssl all collector 127.0.0.1/32 cert\nhost all postgres 127.0.0.1/32 trust\n",
    )
    .unwrap();
    // The server runs as nobody when the tests run as root.
    for (p, mode) in [
        (pki.dir.path().to_owned(), 0o755),
        (pki.path("ca.pem"), 0o644),
        (pki.path("pg_hba.conf"), 0o644),
    ] {
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    let pg = LocalPostgres::start(&PostgresOptions {
        tls: Some(PostgresTls { cert_pem, key_pem }),
        settings: vec![
            (
                "ssl_ca_file".into(),
                pki.path("ca.pem").display().to_string(),
            ),
            (
                "hba_file".into(),
                pki.path("pg_hba.conf").display().to_string(),
            ),
        ],
        ..PostgresOptions::default()
    })
    .expect("a PostgreSQL with certificate login");
    let admin = env::sql(&pg.url("postgres")).await;
    // Two statements: CREATE DATABASE cannot share a transaction block.
    for sql in [
        "CREATE ROLE collector LOGIN SUPERUSER",
        "CREATE DATABASE certdb OWNER collector",
    ] {
        admin.batch_execute(sql).await.unwrap();
    }
    let url = format!("postgresql://collector@127.0.0.1:{}/certdb", pg.port());
    let tls = format!(
        "sslmode = \"verify-full\"\nca_file = \"{}\"",
        pki.path("ca.pem").display()
    );

    let error = start_error(&with_database(&tls, Some(url.clone()))).await;
    assert!(
        error.contains(&format!("127.0.0.1:{}", pg.port())),
        "{error}"
    );
    assert!(error.contains("certificate"), "{error}");

    let with_cert = format!(
        "{tls}\nclient_cert = \"{}\"\nclient_key = \"{}\"",
        pki.path("client.pem").display(),
        pki.path("client.key").display()
    );
    let env = Env::start(with_database(&with_cert, Some(url))).await;
    let (status, _) = env
        .get(&env.token(Role::Viewer, None).await, "/api/v1/status")
        .await;
    assert_eq!(status, 200);
    // Looked at as the superuser: `collector` may log in with its certificate only.
    let row = admin
        .query_one(
            "SELECT s.client_dn FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid)
             WHERE a.application_name = 'linesentry-collector' AND a.usename = 'collector' LIMIT 1",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        row.get::<_, Option<String>>(0).as_deref(),
        Some("/CN=collector")
    );
}
