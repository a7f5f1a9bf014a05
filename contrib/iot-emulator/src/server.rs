//! The HTTPS plumbing, written once for all listeners: accept on loopback (a semaphore bounds
//! concurrent connections and the accept loop *waits* for a permit rather than dropping
//! anyone), TLS handshake, HTTP/1.1 via hyper, then per request: read the body, apply fault
//! injection, route, turn errors into the right service's shape, log one line.
//!
//! Shutdown follows mini-redis: a `watch` flag tells listeners to stop accepting and connections
//! to finish their current request; every task holds an `mpsc::Sender`, so the receiver sees the
//! channel close once all of them are gone.

use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use openssl::ssl::{SslAcceptor, SslFiletype, SslMethod};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch, Semaphore};
use tokio_openssl::SslStream;

use crate::app::App;
use crate::error::{ApiError, Family};
use crate::faults::Action;
use crate::http::{Reply, Req};

/// Largest request body accepted (enrollments and module bodies are a few KiB).
const MAX_BODY: usize = 1024 * 1024;
const MAX_CONNECTIONS: usize = 256;
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Dps,
    Hub(usize),
    Admin,
}

impl Endpoint {
    fn family(self) -> Family {
        match self {
            Endpoint::Dps => Family::Dps,
            Endpoint::Hub(_) => Family::Hub,
            Endpoint::Admin => Family::Admin,
        }
    }
}

/// The TLS server context shared by all listeners.
pub fn acceptor(chain: &Path, key: &Path) -> Result<SslAcceptor, openssl::error::ErrorStack> {
    let mut b = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls_server())?;
    b.set_certificate_chain_file(chain)?;
    b.set_private_key_file(key, SslFiletype::PEM)?;
    b.check_private_key()?;
    Ok(b.build())
}

/// Serves `listener` until shutdown.
pub fn spawn(
    listener: std::net::TcpListener,
    acceptor: Arc<SslAcceptor>,
    endpoint: Endpoint,
    app: Arc<App>,
    mut shutdown: watch::Receiver<bool>,
    done: mpsc::Sender<()>,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::from_std(listener)?;
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    tokio::spawn(async move {
        loop {
            let Ok(permit) = permits.clone().acquire_owned().await else {
                break;
            };
            let accepted = tokio::select! {
                a = listener.accept() => a,
                _ = shutdown.changed() => break,
            };
            let (tcp, peer) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    log::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let (acceptor, app, shutdown, done) = (
                acceptor.clone(),
                app.clone(),
                shutdown.clone(),
                done.clone(),
            );
            tokio::spawn(async move {
                connection(tcp, peer, &acceptor, endpoint, app, shutdown).await;
                drop(permit);
                drop(done);
            });
        }
        drop(done);
    });
    Ok(())
}

async fn connection(
    tcp: TcpStream,
    peer: SocketAddr,
    acceptor: &SslAcceptor,
    endpoint: Endpoint,
    app: Arc<App>,
    mut shutdown: watch::Receiver<bool>,
) {
    let _ = tcp.set_nodelay(true);
    let Ok(ssl) = openssl::ssl::Ssl::new(acceptor.context()) else {
        return;
    };
    let Ok(mut stream) = SslStream::new(ssl, tcp) else {
        return;
    };
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, Pin::new(&mut stream).accept()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            log::debug!("TLS handshake with {peer} failed: {e}");
            return;
        }
        Err(_) => {
            log::debug!("TLS handshake with {peer} timed out");
            return;
        }
    }
    let service = service_fn(move |request| {
        let app = app.clone();
        async move { handle(app, endpoint, peer, request).await }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(Duration::from_secs(30))
        .serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        _ = shutdown.changed() => {
            conn.as_mut().graceful_shutdown();
            conn.as_mut().await
        }
    };
    if let Err(e) = result {
        log::debug!("connection from {peer} ended: {e}");
    }
}

/// Returned to hyper to make it close the connection without answering (fault `drop`).
#[derive(Debug)]
struct Dropped;

impl std::fmt::Display for Dropped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection dropped by fault injection")
    }
}

impl std::error::Error for Dropped {}

async fn handle(
    app: Arc<App>,
    endpoint: Endpoint,
    peer: SocketAddr,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Dropped> {
    let started = Instant::now();
    let (parts, body) = request.into_parts();
    let target = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "/".into());
    let body = match Limited::new(body, MAX_BODY).collect().await {
        Ok(b) => Ok(b.to_bytes()),
        Err(e)
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            Err(ApiError::PayloadTooLarge(MAX_BODY))
        }
        Err(e) => {
            log::info!(
                "{peer} \"{} {target}\" request body not read: {e}",
                parts.method
            );
            return Err(Dropped);
        }
    };
    let req = Req {
        method: parts.method,
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().unwrap_or_default().to_owned(),
        headers: parts.headers,
        body: body.as_ref().cloned().unwrap_or_default(),
        peer,
    };
    let label = label(&app, endpoint, &req);
    let fault = match endpoint {
        Endpoint::Admin => None,
        _ => app.faults.decide(&label),
    };
    let outcome = match (&fault, body) {
        (Some((Action::Drop, spec)), _) => {
            log::info!(
                "{label} {peer} \"{} {target}\" dropped [fault {spec}] {} ms",
                req.method,
                started.elapsed().as_millis()
            );
            return Err(Dropped);
        }
        (Some((Action::Throttle { retry_after }, _)), _) => Err(ApiError::Throttled {
            retry_after: *retry_after,
        }),
        (
            Some((
                Action::Fail {
                    status,
                    retry_after,
                },
                _,
            )),
            _,
        ) => Err(ApiError::Injected {
            status: StatusCode::from_u16(*status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            retry_after: *retry_after,
        }),
        (_, Err(e)) => Err(e),
        (Some((Action::Delay(d), _)), Ok(_)) => {
            tokio::time::sleep(*d).await;
            route(&app, endpoint, &req).await
        }
        (None, Ok(_)) => route(&app, endpoint, &req).await,
    };
    let reply = outcome.unwrap_or_else(|e| {
        if matches!(e, ApiError::Internal(_) | ApiError::Persist(_)) {
            log::error!("{label} {} {target}: {e}", req.method);
        }
        e.to_reply(endpoint.family())
    });
    let note = fault
        .map(|(_, spec)| format!(" [fault {spec}]"))
        .unwrap_or_default();
    log::info!(
        "{label} {peer} \"{} {target}\" {} {} ms{note}",
        req.method,
        reply.status.as_u16(),
        started.elapsed().as_millis()
    );
    Ok(into_response(reply))
}

async fn route(app: &Arc<App>, endpoint: Endpoint, req: &Req) -> Result<Reply, ApiError> {
    match endpoint {
        Endpoint::Dps => crate::dps::route(app, req).await,
        Endpoint::Hub(i) => crate::hub::route(app, i, req).await,
        Endpoint::Admin => crate::admin::route(app, req),
    }
}

/// The endpoint label faults match on and logs show (see `faults.rs`).
fn label(app: &App, endpoint: Endpoint, req: &Req) -> String {
    let segs: Vec<&str> = req.path.split('/').filter(|s| !s.is_empty()).collect();
    match endpoint {
        Endpoint::Admin => "admin".into(),
        Endpoint::Dps => match segs.as_slice() {
            ["enrollments", ..] | ["registrations", ..] => "dps/service".into(),
            [_, "registrations", _, "register"] => "dps/register".into(),
            [_, "registrations", _, "operations", _] => "dps/operations".into(),
            _ => "dps/other".into(),
        },
        Endpoint::Hub(i) => {
            let host = app.hubs.get(i).map(|h| h.hostname.as_str()).unwrap_or("?");
            let family = match segs.as_slice() {
                [_, _, "modules", ..] => "modules",
                ["twins", ..] => "twins",
                ["devices", ..] => "devices",
                _ => "other",
            };
            format!("hub/{host}/{family}")
        }
    }
}

fn into_response(reply: Reply) -> Response<Full<Bytes>> {
    let body = reply
        .body
        .as_ref()
        .map(|v| Bytes::from(v.to_string()))
        .unwrap_or_default();
    let has_body = reply.body.is_some();
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = reply.status;
    let headers = response.headers_mut();
    if has_body {
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/json; charset=utf-8"),
        );
    }
    for (name, value) in reply.headers {
        if let (Ok(n), Ok(v)) = (
            hyper::header::HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            headers.append(n, v);
        }
    }
    response
}
