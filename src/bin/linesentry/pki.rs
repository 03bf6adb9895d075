//! `linesentry pki list|trust|reject`: the OPC UA certificates of an agent, in
//! `<data_dir>/pki`. Works on a running agent: the next connection attempt sees the change.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;
use linesentry_agent::source::opcua::{CertInfo, Pki};

#[derive(Debug, Subcommand)]
pub(crate) enum PkiCommand {
    /// The agent's own certificate, trusted and rejected server certificates.
    List {
        /// The agent's data directory (agent.data_dir).
        #[arg(long)]
        data: PathBuf,
    },
    /// Trust a server certificate: a file, or the thumbprint of one in `rejected/`.
    Trust {
        /// The agent's data directory (agent.data_dir).
        #[arg(long)]
        data: PathBuf,
        /// A DER or PEM certificate file, or a SHA-1 thumbprint (40 hex digits).
        certificate: String,
    },
    /// Stop trusting a server certificate: move it to `rejected/`.
    Reject {
        /// The agent's data directory (agent.data_dir).
        #[arg(long)]
        data: PathBuf,
        /// SHA-1 thumbprint (40 hex digits).
        thumbprint: String,
    },
}

pub(crate) fn run(command: PkiCommand) -> ExitCode {
    let result = match command {
        PkiCommand::List { data } => Pki::in_data_dir(&data).list().map(|certs| {
            if certs.is_empty() {
                println!(
                    "no certificates in {}",
                    Pki::in_data_dir(&data).root().display()
                );
            }
            for cert in &certs {
                print_cert(cert);
            }
        }),
        PkiCommand::Trust { data, certificate } => Pki::in_data_dir(&data)
            .trust(&certificate)
            .map(|cert| print_cert(&cert)),
        PkiCommand::Reject { data, thumbprint } => Pki::in_data_dir(&data)
            .reject(&thumbprint)
            .map(|cert| print_cert(&cert)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("linesentry pki: {e}");
            ExitCode::FAILURE
        }
    }
}

/// One line per certificate: state, thumbprint, validity, subject, file.
fn print_cert(cert: &CertInfo) {
    let day = |t: Option<chrono::DateTime<chrono::Utc>>| {
        t.map_or_else(|| "?".to_owned(), |t| t.format("%Y-%m-%d").to_string())
    };
    let expired = if cert.is_expired_at(chrono::Utc::now()) {
        " EXPIRED"
    } else {
        ""
    };
    println!(
        "{:<8} {}  valid {} .. {}{expired}  {}  ({})",
        cert.state,
        cert.thumbprint,
        day(cert.not_before),
        day(cert.not_after),
        cert.subject,
        cert.path.display()
    );
}
