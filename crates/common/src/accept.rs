//! The accept loop of every TCP listener that may speak TLS (the agent's health endpoint,
//! the collector's HTTPS server): accept, optionally bounded by a number of connections,
//! one task per connection (the mini-redis shape), a TLS handshake that must complete in
//! time and is dropped at shutdown, then the caller's handler with the stream.
//!
//! A failed `accept` (out of file descriptors and the like) is logged as a warning and
//! retried after 100 ms instead of spinning; a failed or late handshake is logged at debug
//! (a scanner or a client with the wrong CA is not the operator's problem) and ends the
//! connection.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_util::either::Either;
use tokio_util::sync::CancellationToken;

/// A connection's stream: TLS when the listener has an acceptor, plain TCP otherwise.
pub type Io = Either<TlsStream<TcpStream>, TcpStream>;

/// How a listener accepts.
#[derive(Debug, Clone, Copy)]
pub struct AcceptOptions {
    /// Connections handled at once (handshake and handler); further ones wait in the listen
    /// backlog. None: no limit.
    pub max_connections: Option<usize>,
    /// A TLS client must complete its handshake within this.
    pub handshake_timeout: Duration,
    /// Starts every log line of the loop, e.g. "health endpoint: "; may be empty.
    pub log_prefix: &'static str,
}

/// An accepted (and handshaken) connection, handed to the handler in its own task.
#[derive(Debug)]
pub struct Connection {
    pub io: Io,
    pub peer: SocketAddr,
    /// When the TCP connection was accepted (before the handshake), for lifetimes.
    pub accepted_at: tokio::time::Instant,
}

/// Accepts on `listener` until `shutdown` is cancelled; each connection gets a task that
/// handshakes TLS when `tls` is set (bounded by `handshake_timeout`, abandoned at
/// shutdown) and then runs `handle`. Returns the connections' tasks, still running, for
/// the caller to drain or abort; the listener is dropped, so no connection waits in its
/// backlog any longer.
pub async fn accept_loop<F, Fut>(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    options: AcceptOptions,
    shutdown: CancellationToken,
    handle: F,
) -> JoinSet<()>
where
    F: Fn(Connection) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let handle = Arc::new(handle);
    let AcceptOptions {
        max_connections,
        handshake_timeout,
        log_prefix: prefix,
    } = options;
    let permits = max_connections.map(|n| Arc::new(Semaphore::new(n.max(1))));
    let mut connections = JoinSet::new();
    loop {
        let permit: Option<OwnedSemaphorePermit> = match &permits {
            None => None,
            Some(permits) => tokio::select! {
                permit = permits.clone().acquire_owned() => match permit {
                    Ok(permit) => Some(permit),
                    Err(_) => break,
                },
                () = shutdown.cancelled() => break,
            },
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of descriptors and the like: wait instead of spinning.
                    tracing::warn!(error = %e, "{prefix}accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = shutdown.cancelled() => break,
        };
        let accepted_at = tokio::time::Instant::now();
        let _ = stream.set_nodelay(true);
        while connections.try_join_next().is_some() {}
        let tls = tls.clone();
        let shutdown = shutdown.clone();
        let handle = Arc::clone(&handle);
        connections.spawn(async move {
            // Held until the handshake and the handler are done.
            let _permit = permit;
            let io = match tls {
                None => Either::Right(stream),
                Some(acceptor) => {
                    let handshake = tokio::select! {
                        handshake = tokio::time::timeout(handshake_timeout, acceptor.accept(stream)) => handshake,
                        () = shutdown.cancelled() => return,
                    };
                    match handshake {
                        Ok(Ok(stream)) => Either::Left(stream),
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "{prefix}TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(%peer, "{prefix}TLS handshake timed out");
                            return;
                        }
                    }
                }
            };
            handle(Connection {
                io,
                peer,
                accepted_at,
            })
            .await;
        });
    }
    drop(listener);
    connections
}
