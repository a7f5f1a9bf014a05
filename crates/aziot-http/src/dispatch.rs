//! One request's path through the server: api-version gate, per-uid slot, body,
//! then the service. Each step answers with upstream's status and message.

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Body;

use crate::body;
use crate::limiter::UidLimiter;
use crate::query;
use crate::request::Request;
use crate::response::Response;
use crate::server::BODY_READ_TIMEOUT;
use crate::service::{check_api_version, Service};

/// Who is on the other end of the connection (`SO_PEERCRED`).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Peer {
    pub uid: u32,
    pub pid: Option<i32>,
}

pub(crate) async fn dispatch<S, B>(
    service: &S,
    limiter: &UidLimiter,
    peer: Peer,
    req: hyper::Request<B>,
) -> hyper::Response<Full<Bytes>>
where
    S: Service,
    B: Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let uid = peer.uid;
    log::debug!("<-- {} {} (uid {uid})", req.method(), req.uri());
    let response = handle(service, limiter, peer, req).await;
    log::debug!("--> {} (uid {uid})", response.status());
    response.into_hyper()
}

async fn handle<S, B>(
    service: &S,
    limiter: &UidLimiter,
    peer: Peer,
    req: hyper::Request<B>,
) -> Response
where
    S: Service,
    B: Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (parts, body) = req.into_parts();
    let query = query::parse(parts.uri.query());
    let api_version = match check_api_version(service.api_versions(), query.api_version) {
        Ok(version) => version,
        Err(err) => return err.into_response(),
    };
    // Held until the service has answered.
    let _permit = match limiter.acquire(peer.uid).await {
        Ok(permit) => permit,
        Err(err) => return err.into_response(),
    };
    let limit = service.body_limit(&parts.method, parts.uri.path());
    let body = match body::read(&parts.headers, body, BODY_READ_TIMEOUT, limit).await {
        Ok(body) => body,
        Err(err) => return err.into_response(),
    };
    let request = Request {
        method: parts.method,
        path: parts.uri.path().to_owned(),
        query: query.params,
        api_version,
        headers: parts.headers,
        body,
        uid: peer.uid,
        pid: peer.pid,
    };
    service.handle(request).await
}
