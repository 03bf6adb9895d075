//! The collector's integration tests, one binary, over real PostgreSQL, Mosquitto and
//! Chromium servers started by `linesentry_testkit`.

mod collector_alerts;
mod collector_console;
mod collector_db_tls;
mod collector_ingest;
mod collector_mqtt;
mod collector_page;
mod collector_query;
mod collector_siem;
mod collector_stream;
mod forward_https_collector;
