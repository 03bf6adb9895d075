//! Another Modbus TCP client on a device the agent watches: the scans and floods the agent
//! must see in the device's own diagnostic counters, although its own reads keep getting
//! normal answers.

use std::net::SocketAddr;
use std::time::Duration;

use tokio_modbus::client::{tcp, Reader as _};
use tokio_modbus::Slave;

/// What the intruder got back.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    pub answered: u64,
    pub exceptions: u64,
    /// Transport errors and requests unanswered within [`ANSWER_WITHIN`].
    pub failed: u64,
}

/// How long the intruder waits for each answer.
pub const ANSWER_WITHIN: Duration = Duration::from_secs(1);

type Answer = Result<Result<Vec<u16>, tokio_modbus::ExceptionCode>, tokio_modbus::Error>;

impl Tally {
    fn count(&mut self, answer: &Result<Answer, tokio::time::error::Elapsed>) {
        match answer {
            Ok(Ok(Ok(_))) => self.answered += 1,
            Ok(Ok(Err(_))) => self.exceptions += 1,
            Ok(Err(_)) | Err(_) => self.failed += 1,
        }
    }
}

/// Probes `count` holding-register addresses from 60000 up, one request every `pace`, as an
/// address scan does: a device with a smaller map answers each with exception 02.
pub async fn scan(device: SocketAddr, unit: u8, count: u16, pace: Duration) -> Tally {
    let mut tally = Tally::default();
    let Ok(mut ctx) = tcp::connect_slave(device, Slave(unit)).await else {
        tally.failed = u64::from(count);
        return tally;
    };
    for i in 0..count {
        let answer =
            tokio::time::timeout(ANSWER_WITHIN, ctx.read_holding_registers(60_000 + i, 1)).await;
        tally.count(&answer);
        tokio::time::sleep(pace).await;
    }
    tally
}

/// Sends `count` reads of holding register `address` (one the device has) as fast as the
/// device answers: a flood.
pub async fn flood(device: SocketAddr, unit: u8, address: u16, count: u32) -> Tally {
    let mut tally = Tally::default();
    let Ok(mut ctx) = tcp::connect_slave(device, Slave(unit)).await else {
        tally.failed = u64::from(count);
        return tally;
    };
    for _ in 0..count {
        tally.count(
            &tokio::time::timeout(ANSWER_WITHIN, ctx.read_holding_registers(address, 1)).await,
        );
    }
    tally
}
