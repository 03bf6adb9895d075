use std::net::TcpStream;

use linesentry_common::local::{LocalMosquitto, LocalPostgres, MosquittoOptions, PostgresOptions};

#[test]
fn a_stopped_broker_keeps_its_directory_restarts_on_its_port_and_leaves_nothing_when_dropped() {
    let mut broker = LocalMosquitto::start(&MosquittoOptions {
        persistence: true,
        ..MosquittoOptions::default()
    })
    .expect("a private Mosquitto");
    let dir = broker.dir().to_owned();
    let port = broker.port();
    assert!(dir.join("mosquitto.conf").is_file());
    broker.stop();
    assert!(
        TcpStream::connect(broker.addr()).is_err(),
        "stopped broker still listens"
    );
    assert!(
        dir.is_dir(),
        "a stopped broker's directory is kept for the restart"
    );
    let before = broker.log();
    broker.restart().expect("the broker starts again");
    assert_eq!(broker.port(), port);
    TcpStream::connect(broker.addr()).expect("the restarted broker listens on its port");
    assert!(
        broker.log().starts_with(&before),
        "the log goes on across the restart: {}",
        broker.log()
    );
    drop(broker);
    assert!(!dir.exists(), "the watchdog removes the directory on drop");
}

#[test]
fn a_dropped_postgres_cluster_leaves_nothing_behind() {
    let pg = LocalPostgres::start(&PostgresOptions::default()).expect("a private PostgreSQL");
    let dir = pg.dir().to_owned();
    TcpStream::connect(("127.0.0.1", pg.port())).expect("the cluster listens");
    drop(pg);
    assert!(
        !dir.exists(),
        "the watchdog removes the cluster's directory on drop"
    );
}
