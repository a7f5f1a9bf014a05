//! The accept loop: one task per connection, and a graceful stop.
//!
//! Shutdown follows mini-redis: stop accepting, tell every connection to finish
//! its current request and close, and return only when they have (or after
//! [`SHUTDOWN_GRACE`]), so SIGTERM never cuts a signing operation in half.
//!
//! Every connection is admitted against a budget first (see `budget`): over it, the client
//! gets a 503 with a message and the connection closes; within it, time limits apply between
//! requests (see `deadlines`). A client may half-close its side after sending a request and
//! still gets its answer.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::server::conn::http1;
use hyper::StatusCode;
use hyper_util::rt::TokioIo;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

use crate::budget::{Admission, Budget, Refusal};
use crate::deadlines::{Activity, Deadlines, Timeouts};
use crate::dispatch::{dispatch, Peer};
use crate::limiter::UidLimiter;
use crate::raw::{self, ErrorBodies};
use crate::service::Service;

/// Longest wait for the rest of a request body (upstream: 5 s) → 408.
pub const BODY_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// How long shutdown waits for in-flight requests before closing them.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// Largest request head (request line and headers) → 431.
const MAX_HEAD_BYTES: usize = 64 * 1024;

/// Pause after a failed `accept` (other than running out of descriptors) so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// How long a refused connection may take to send its request before it is closed.
const LINGER: Duration = Duration::from_secs(1);
/// Refused connections allowed to linger at once (see [`refuse`]); counted in the descriptors
/// the budget keeps aside.
pub(crate) const MAX_LINGERING: usize = 128;
/// At most one log line per this interval for refused connections and failed accepts.
const LOG_EVERY: Duration = Duration::from_secs(10);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServerOptions {
    /// Requests of one uid handled at once (upstream's `max_requests`, default 10).
    pub max_requests_per_uid: usize,
    /// Requests of one uid allowed to wait for a slot; beyond that → 503. A uid may also
    /// hold at most `max_requests_per_uid + max_queue` connections open on this socket.
    pub max_queue: usize,
    pub timeouts: Timeouts,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            max_requests_per_uid: 10,
            max_queue: 100,
            timeouts: Timeouts::default(),
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
    let budget = Budget::new(options.max_requests_per_uid.max(1) + options.max_queue);
    let lingering = Arc::new(Semaphore::new(MAX_LINGERING));
    let mut spare = SpareFd::open();
    let mut refusals = Tally::default();
    let mut accept_errors = Tally::default();
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);

    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => match admit(&budget, &stream) {
                    Ok((peer, admission)) => {
                        let conn = serve_connection(
                            stream,
                            peer,
                            admission,
                            Arc::clone(&service),
                            Arc::clone(&limiter),
                            stop_rx.clone(),
                            options.timeouts,
                        );
                        connections.spawn(conn);
                    }
                    Err(Some(refusal)) => {
                        let message = refusal.message();
                        refuse(stream, &message, &lingering);
                        refusals.count(|n| log::warn!("refused {n} connection(s) in the last {}s: {message}", LOG_EVERY.as_secs()));
                    }
                    Err(None) => {}
                },
                Err(err) if out_of_descriptors(&err) => {
                    // Take one waiting connection with the spare descriptor and answer it, so
                    // clients learn why and the loop does not spin on a full backlog.
                    spare.release();
                    if let Ok(Ok((stream, _))) = tokio::time::timeout(Duration::from_millis(10), listener.accept()).await {
                        refuse(stream, &Refusal::Descriptors.message(), &lingering);
                    }
                    spare = SpareFd::open();
                    accept_errors.count(|n| log::error!("accept failed {n} time(s) in the last {}s: {err}; raise LimitNOFILE= in the unit", LOG_EVERY.as_secs()));
                }
                Err(err) => {
                    accept_errors.count(|n| log::warn!("accept failed {n} time(s) in the last {}s: {err}", LOG_EVERY.as_secs()));
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

/// The caller's credentials and a place in the budget; `Err(None)` when the kernel cannot say
/// who the caller is (the connection is then just closed).
fn admit(budget: &Arc<Budget>, stream: &UnixStream) -> Result<(Peer, Admission), Option<Refusal>> {
    let cred = stream.peer_cred().map_err(|err| {
        log::warn!("dropping connection: cannot read the caller's credentials: {err}");
        None
    })?;
    let peer = Peer { uid: cred.uid(), pid: cred.pid() };
    let admission = budget.admit(peer.uid).map_err(Some)?;
    Ok((peer, admission))
}

/// Answers 503 with `message` and closes. The client is given up to [`LINGER`] to send its
/// request first: closing before it has written would make its write fail (EPIPE), and it
/// would never read the answer. At most [`MAX_LINGERING`] refused connections wait so at once;
/// beyond that (a flood) they are answered and closed at once.
fn refuse(stream: UnixStream, message: &str, lingering: &Arc<Semaphore>) {
    let answer = raw::response(StatusCode::SERVICE_UNAVAILABLE, message);
    let Ok(permit) = Arc::clone(lingering).try_acquire_owned() else {
        // No time to wait: answer, and take what the client has sent so far so that it reads
        // the answer before it notices the close.
        use std::io::{Read, Write};
        if let Ok(mut stream) = stream.into_std() {
            let _ = stream.write_all(&answer);
            let mut sink = [0u8; 4096];
            while matches!(stream.read(&mut sink), Ok(n) if n > 0) {}
        }
        return;
    };
    tokio::spawn(async move {
        let _permit = permit;
        let _ = tokio::time::timeout(LINGER, answer_and_drain(stream, answer)).await;
    });
}

async fn answer_and_drain(mut stream: UnixStream, answer: Vec<u8>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    // Until the end of the request head, or the client stops sending.
    while !seen.windows(4).any(|w| w == b"\r\n\r\n") && seen.len() < MAX_HEAD_BYTES {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
        }
    }
    let _ = stream.write_all(&answer).await;
    let _ = stream.shutdown().await;
    // Whatever else it sent (a body), so the close is not a reset.
    while matches!(stream.read(&mut buf).await, Ok(n) if n > 0) {}
}

fn out_of_descriptors(err: &std::io::Error) -> bool {
    matches!(err.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
}

/// One descriptor held in reserve, given up to accept (and answer) a connection when the
/// process has run out.
struct SpareFd(Option<std::fs::File>);

impl SpareFd {
    fn open() -> Self {
        SpareFd(std::fs::File::open("/dev/null").ok())
    }

    fn release(&mut self) {
        self.0 = None;
    }
}

/// Counts events and logs at most once per [`LOG_EVERY`], so a flood is one line, not thousands.
#[derive(Default)]
struct Tally {
    since: Option<Instant>,
    count: u64,
}

impl Tally {
    fn count(&mut self, log: impl FnOnce(u64)) {
        self.count += 1;
        let now = Instant::now();
        match self.since {
            Some(since) if now.duration_since(since) < LOG_EVERY => {}
            _ => {
                log(self.count);
                self.since = Some(now);
                self.count = 0;
            }
        }
    }
}

async fn serve_connection<S: Service>(
    stream: UnixStream,
    peer: Peer,
    admission: Admission,
    service: Arc<S>,
    limiter: Arc<UidLimiter>,
    mut stop: watch::Receiver<bool>,
    timeouts: Timeouts,
) {
    let activity = Activity::new();
    let io = Deadlines::new(ErrorBodies::new(stream), Arc::clone(&activity), timeouts);
    let handler = hyper::service::service_fn(move |req| {
        let service = Arc::clone(&service);
        let limiter = Arc::clone(&limiter);
        let activity = Arc::clone(&activity);
        activity.begin();
        async move {
            let response = dispatch(&*service, &limiter, peer, req).await;
            activity.end();
            Ok::<_, Infallible>(response)
        }
    });
    let conn = http1::Builder::new()
        .keep_alive(true)
        .half_close(true)
        .max_buf_size(MAX_HEAD_BYTES)
        .serve_connection(TokioIo::new(io), handler);
    tokio::pin!(conn);

    tokio::select! {
        result = conn.as_mut() => {
            log_connection_end(result, peer);
            drop(admission);
            return;
        }
        // An error means the server is gone, which is a stop too.
        _ = stop.wait_for(|stopping| *stopping) => {}
    }
    conn.as_mut().graceful_shutdown();
    log_connection_end(conn.await, peer);
    drop(admission);
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
