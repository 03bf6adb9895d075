//! `linesentry demo`: the agent against station simulators over real loopback sockets.
//!
//! Every enabled Modbus TCP or OPC UA station of the demo config gets a simulator of its
//! profile on a free loopback port, and the station is pointed at it; each simulator plays
//! a scenario so the run shows what the agent is for. The OPC UA simulators' certificates are
//! put in the agent's trust list, which in production an operator does with `linesentry pki
//! trust`. Nothing leaves the machine.

use std::path::Path;

use linesentry_agent::config::Config;
use linesentry_agent::source::opcua::Pki;
use linesentry_agent::source::SourceConfig;
use linesentry_sim as sim;
use linesentry_sim::opcua::{OpcUaSim, OpcUaSimOptions};
use linesentry_sim::{Schedule, SimHandle, SimOptions};

/// Scenario per profile, in seconds after the start.
fn scenario(profile: &str) -> &'static str {
    match profile {
        "stamping_press" => {
            "setpoint_change@5,fault@10,recover@14,mode_program@18,mode_run@22,silent@26,normal@33"
        }
        "reflow_oven" => "program_change@7,alarm_disable@12,alarm_enable@16,quality_burst@20",
        "aoi_station" => "quality_burst@8,firmware_change@24",
        "cell_controller" => "mode_program@11,mode_run@16,identity_change@30",
        _ => "",
    }
}

/// The running simulators; shut them down after the agent.
#[derive(Default)]
pub(crate) struct Simulators {
    modbus: Vec<SimHandle>,
    opcua: Vec<OpcUaSim>,
}

impl Simulators {
    /// Starts a simulator for every Modbus TCP and OPC UA station and points it there.
    pub(crate) async fn start(config: &mut Config) -> Result<Self, String> {
        let mut sims = Simulators::default();
        let data_dir = config.agent.data_dir.clone();
        for (i, station) in config.stations.iter_mut().enumerate() {
            if !station.enabled {
                continue;
            }
            let schedule = Schedule::parse(scenario(&station.profile.name))
                .map_err(|e| format!("demo scenario of {}: {e}", station.profile.name))?;
            let options = SimOptions {
                schedule,
                seed: i as u64 + 1,
                ..SimOptions::default()
            };
            match &mut station.source {
                SourceConfig::ModbusTcp { address, .. } => {
                    let handle = sim::modbus::start(station.profile.clone(), &options)
                        .await
                        .map_err(|e| format!("simulator for {}: {e}", station.id))?;
                    *address = handle.local_addr().to_string();
                    tracing::info!(station = %station.id, %address, "demo: Modbus TCP simulator");
                    sims.modbus.push(handle);
                }
                SourceConfig::OpcUa { endpoint_url, .. } => {
                    let pki = data_dir.join("demo-sim-pki").join(&station.id);
                    let sim = sim::opcua::start(
                        station.profile.clone(),
                        &options,
                        &OpcUaSimOptions::new(pki),
                    )
                    .await
                    .map_err(|e| format!("simulator for {}: {e}", station.id))?;
                    *endpoint_url = sim.endpoint_url();
                    trust_simulator(&data_dir, sim.pki_dir())?;
                    tracing::info!(station = %station.id, url = %endpoint_url, "demo: OPC UA simulator");
                    sims.opcua.push(sim);
                }
                _ => {}
            }
        }
        Ok(sims)
    }

    pub(crate) async fn shutdown(self) {
        for handle in self.modbus {
            handle.shutdown().await;
        }
        for sim in self.opcua {
            sim.shutdown().await;
        }
    }
}

/// Puts the simulator's certificate in the agent's trust list (`<data_dir>/pki/trusted`),
/// as `linesentry pki trust <file>` does.
fn trust_simulator(data_dir: &Path, sim_pki: &Path) -> Result<(), String> {
    let cert = sim_pki.join("own").join("cert.der");
    Pki::in_data_dir(data_dir)
        .trust(&cert.to_string_lossy())
        .map(|_| ())
        .map_err(|e| format!("cannot trust {}: {e}", cert.display()))
}
