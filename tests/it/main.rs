//! End-to-end tests of the programs: `linesentry` and `linesentry-collector` started as
//! processes, against simulators, brokers and databases on loopback.

mod agent_health;
mod cli;
#[cfg(feature = "collector")]
mod collector_cli;
#[cfg(feature = "collector")]
mod collector_demo;
mod dead_letters_cli;
mod deploy;
#[cfg(feature = "collector")]
mod first_install;
mod forward_mqtt;
mod onboard;
mod opcua_cli;
mod reload;
#[cfg(feature = "sim")]
mod scenarios;
mod startup;
