//! The accept loop: one task per connection, and a graceful stop.
//!
//! Shutdown follows mini-redis: stop accepting, tell every connection to finish
//! its current request and close, and return only when they have (or after
//! [`SHUTDOWN_GRACE`]), so SIGTERM never cuts a signing operation in half.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::dispatch::{dispatch, Peer};
use crate::limiter::UidLimiter;
use crate::service::Service;

/// Longest wait for the rest of a request body (upstream: 5 s) → 408.
pub const BODY_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest request body accepted → 413.
pub const MAX_BODY_BYTES: usize = 8 * 1024 * 1024;
/// How long shutdown waits for in-flight requests before closing them.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Pause after a failed `accept` (e.g. out of fds) so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServerOptions {
    /// Requests of one uid handled at once (upstream's `max_requests`, default 10).
    pub max_requests_per_uid: usize,
    /// Requests of one uid allowed to wait for a slot; beyond that → 503.
    pub max_queue: usize,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            max_requests_per_uid: 10,
            max_queue: 100,
        }
    }
}

/// Serves `service` on `listener` until `shutdown` resolves, then lets
/// in-flight requests finish (at most [`SHUTDOWN_GRACE`]) and returns.
pub async fn serve<S: Service>(
    listener: UnixListener,
    service: Arc<S>,
    options: ServerOptions,
    shutdown: impl Future<Output = ()>,
) {
    let limiter = Arc::new(UidLimiter::new(
        options.max_requests_per_uid,
        options.max_queue,
    ));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);

    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let conn = serve_connection(
                        stream,
                        Arc::clone(&service),
                        Arc::clone(&limiter),
                        stop_rx.clone(),
                    );
                    connections.spawn(conn);
                }
                Err(err) => {
                    log::warn!("accept failed: {err}; retrying in {ACCEPT_BACKOFF:?}");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            },
            Some(finished) = connections.join_next(), if !connections.is_empty() => {
                log_panic(finished);
            }
        }
    }

    drop(listener);
    stop_tx.send_replace(true);
    log::info!(
        "shutting down: waiting for {} open connection(s) to finish",
        connections.len()
    );
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while let Some(finished) = connections.join_next().await {
            log_panic(finished);
        }
    })
    .await;
    if drained.is_err() {
        log::warn!(
            "{} connection(s) still busy after {SHUTDOWN_GRACE:?}; closing them",
            connections.len()
        );
        connections.shutdown().await;
    }
}

async fn serve_connection<S: Service>(
    stream: UnixStream,
    service: Arc<S>,
    limiter: Arc<UidLimiter>,
    mut stop: watch::Receiver<bool>,
) {
    let peer = match stream.peer_cred() {
        Ok(cred) => Peer {
            uid: cred.uid(),
            pid: cred.pid(),
        },
        Err(err) => {
            log::warn!("dropping connection: cannot read the caller's credentials: {err}");
            return;
        }
    };
    let handler = hyper::service::service_fn(move |req| {
        let service = Arc::clone(&service);
        let limiter = Arc::clone(&limiter);
        async move { Ok::<_, Infallible>(dispatch(&*service, &limiter, peer, req).await) }
    });
    let conn = http1::Builder::new()
        .keep_alive(true)
        .serve_connection(TokioIo::new(stream), handler);
    tokio::pin!(conn);

    tokio::select! {
        result = conn.as_mut() => return log_connection_end(result, peer),
        // An error means the server is gone, which is a stop too.
        _ = stop.wait_for(|stopping| *stopping) => {}
    }
    conn.as_mut().graceful_shutdown();
    log_connection_end(conn.await, peer);
}

fn log_connection_end(result: Result<(), hyper::Error>, peer: Peer) {
    if let Err(err) = result {
        log::debug!("connection from uid {} ended: {err}", peer.uid);
    }
}

fn log_panic(finished: Result<(), tokio::task::JoinError>) {
    if let Err(err) = finished {
        if err.is_panic() {
            log::error!("a connection task panicked: {err}");
        }
    }
}
