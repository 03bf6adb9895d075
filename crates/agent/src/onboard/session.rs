//! One short OPC UA session for the onboarding tools, made as a station makes its own: the
//! agent's PKI (`<data_dir>/pki`, own certificate created once, servers trusted only from
//! `trusted/`), endpoint discovery, the configured policy and mode and nothing weaker, the
//! configured identity. No reconnects: a tool run either gets its session or says why.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use opcua::client::{Client, ClientBuilder, ClientEndpoint, Session};
use opcua::types::StatusCode;
use tokio::task::JoinHandle;

use crate::source::opcua::convert;
use crate::source::opcua::Pki;
use crate::source::{OpcUaIdentity, OpcUaSecurityMode, OpcUaSecurityPolicy, SourceError};

/// Where and how to connect: the keys of an OPC UA `[[stations]]` entry plus the agent's
/// data directory and gateway id (its PKI and application URI).
#[derive(Debug, Clone)]
pub struct OpcUaTarget {
    pub endpoint_url: String,
    pub security_mode: OpcUaSecurityMode,
    pub security_policy: OpcUaSecurityPolicy,
    pub identity: OpcUaIdentity,
    pub data_dir: PathBuf,
    pub gateway_id: String,
    /// Bound of every service call and of the connection itself.
    pub timeout: Duration,
}

/// A connected session; [`Connected::close`] ends it.
pub(crate) struct Connected {
    pub(crate) session: Arc<Session>,
    event_loop: JoinHandle<StatusCode>,
    pub(crate) timeout: Duration,
}

impl std::fmt::Debug for Connected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connected")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl Connected {
    /// A service call under the session's timeout, its failure classified.
    pub(crate) async fn call<T>(
        &self,
        fut: impl std::future::Future<Output = Result<T, opcua::types::Error>>,
    ) -> Result<T, SourceError> {
        match tokio::time::timeout(self.timeout, fut).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(convert::classify(e.status(), &e.to_string())),
            Err(_) => Err(SourceError::Timeout(
                u64::try_from(self.timeout.as_millis()).unwrap_or(u64::MAX),
            )),
        }
    }

    /// Closes the session (within the timeout) and stops its event loop.
    pub(crate) async fn close(self) {
        let _ = tokio::time::timeout(self.timeout, self.session.disconnect()).await;
        self.event_loop.abort();
    }
}

/// Connects to `target`. A server certificate that is not trusted yet lands in
/// `pki/rejected` and the error says how to trust it.
pub(crate) async fn connect(target: &OpcUaTarget) -> Result<Connected, SourceError> {
    let pki = Pki::in_data_dir(&target.data_dir);
    let uri = format!("urn:linesentry:{}", target.gateway_id);
    let name = format!("linesentry {}", target.gateway_id);
    pki.ensure_own(&uri, &name)
        .map_err(|e| SourceError::Certificate(e.to_string()))?;
    let policy = convert::security_policy(target.security_policy);
    let mode = convert::security_mode(target.security_mode);
    let client = build_client(target, &pki, &uri, &name)?;
    let url = target.endpoint_url.as_str();
    let endpoints =
        match tokio::time::timeout(target.timeout, client.get_server_endpoints_from_url(url)).await
        {
            Ok(Ok(endpoints)) => endpoints,
            Ok(Err(e)) => {
                return Err(SourceError::Connect(format!(
                    "{url}: {} ({e})",
                    convert::status_name(e.status())
                )))
            }
            Err(_) => {
                return Err(SourceError::Connect(format!(
                    "{url}: no answer within {} ms",
                    target.timeout.as_millis()
                )))
            }
        };
    let Some(endpoint) = Client::find_matching_endpoint(&endpoints, url, policy, mode) else {
        let offered: Vec<String> = endpoints
            .iter()
            .map(|e| {
                format!(
                    "{}/{:?}",
                    convert::short_policy(e.security_policy_uri.as_ref()),
                    e.security_mode
                )
            })
            .collect();
        return Err(SourceError::Other(format!(
            "{url} offers no endpoint with security policy {policy} and mode {mode:?}; it offers: {}",
            offered.join(", ")
        )));
    };
    let thumbprint = convert::certificate_thumbprint(&endpoint.server_certificate);
    let identity = crate::source::opcua::identity_token(&target.identity)?;
    let (session, event_loop) = client
        .session_builder()
        .connect_to_endpoint_directly(endpoint)
        .and_then(|b| {
            b.user_identity_token(identity)
                .build(client.certificate_store().clone())
        })
        .map_err(|e| convert::classify(e.status(), &e.to_string()))?;
    let mut event_loop = event_loop.spawn();
    let connected = tokio::select! {
        up = tokio::time::timeout(target.timeout, session.wait_for_connection()) => match up {
            Ok(true) => Ok(()),
            Ok(false) => Err(SourceError::Connect(format!("{url}: the session did not come up"))),
            Err(_) => Err(SourceError::Timeout(u64::try_from(target.timeout.as_millis()).unwrap_or(u64::MAX))),
        },
        status = &mut event_loop => {
            let status = status.unwrap_or(StatusCode::BadUnexpectedError);
            Err(convert::classify(status, "the server refused the session"))
        }
    };
    if let Err(error) = connected {
        event_loop.abort();
        return Err(explain(
            error,
            &pki,
            thumbprint.as_deref(),
            &target.data_dir,
        ));
    }
    Ok(Connected {
        session,
        event_loop,
        timeout: target.timeout,
    })
}

/// A certificate error with the server certificate's thumbprint and the command that
/// trusts it.
fn explain(
    error: SourceError,
    pki: &Pki,
    thumbprint: Option<&str>,
    data_dir: &std::path::Path,
) -> SourceError {
    let (SourceError::Certificate(text), Some(thumbprint)) = (&error, thumbprint) else {
        return error;
    };
    match pki.rejected_path(thumbprint) {
        Some(path) => SourceError::Certificate(format!(
            "{text}; server certificate {thumbprint} is not trusted, it waits in {}; trust it with `linesentry pki trust --data {} {thumbprint}`",
            path.display(),
            data_dir.display()
        )),
        None => SourceError::Certificate(format!("{text}; server certificate {thumbprint}")),
    }
}

fn build_client(
    target: &OpcUaTarget,
    pki: &Pki,
    uri: &str,
    name: &str,
) -> Result<Client, SourceError> {
    let endpoint = ClientEndpoint {
        security_policy: convert::security_policy(target.security_policy)
            .to_str()
            .to_owned(),
        security_mode: convert::security_mode(target.security_mode).into(),
        ..ClientEndpoint::new(target.endpoint_url.clone())
    };
    ClientBuilder::new()
        .endpoint("target", endpoint)
        .default_endpoint("target")
        .application_name(name.to_owned())
        .application_uri(uri.to_owned())
        .product_uri("urn:linesentry")
        .pki_dir(pki.root())
        .create_sample_keypair(false)
        .trust_server_certs(false)
        .verify_server_certs(true)
        .session_name(format!("{name} onboarding"))
        .session_retry_limit(0)
        .request_timeout(target.timeout)
        // Browse and Read answers about a large address space are large: accept up to
        // 4 MiB (the default, 5 chunks, failed a 16-node Browse of folders of 100).
        .max_chunk_count(64)
        .max_message_size(64 * 65_535)
        .client()
        .map_err(|errors| {
            SourceError::Other(format!("OPC UA client settings: {}", errors.join("; ")))
        })
}
