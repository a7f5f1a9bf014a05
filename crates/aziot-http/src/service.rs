//! The contract between the server plumbing and a daemon's routes.

use std::future::Future;

use hyper::Method;

use crate::error::HttpError;
use crate::request::Request;
use crate::response::Response;

/// A daemon's HTTP API.
///
/// The server has already checked `api-version` against [`api_versions`]
/// (missing or unknown → 400), read the body and identified the caller.
/// Routing, 404 `not found` and 400 `method not allowed` are the service's
/// ([`Request::match_path`], [`HttpError::not_found`] help).
///
/// [`api_versions`]: Service::api_versions
pub trait Service: Send + Sync + 'static {
    /// Every `api-version` value this service accepts on some route.
    fn api_versions(&self) -> &'static [&'static str];

    fn handle(&self, req: Request) -> impl Future<Output = Response> + Send;

    /// The largest body the route at `path` takes (bytes, before any decoding); a larger one
    /// is refused with 413 before it is read. Size it to what the route needs: every request
    /// in flight may hold this much memory.
    fn body_limit(&self, _method: &Method, _path: &str) -> usize {
        DEFAULT_BODY_LIMIT
    }
}

/// What a route takes unless its service says otherwise: ample for any JSON request of these
/// APIs that carries no bulk data.
pub const DEFAULT_BODY_LIMIT: usize = 64 * 1024;

/// Upstream's gate: the parameter is mandatory and must be a known version.
pub(crate) fn check_api_version(
    supported: &[&str],
    requested: Option<String>,
) -> Result<String, HttpError> {
    let requested = requested.ok_or_else(|| HttpError::bad_request("api-version not specified"))?;
    if supported.contains(&requested.as_str()) {
        Ok(requested)
    } else {
        // `{:?}` quotes and escapes exactly as upstream's message does.
        Err(HttpError::bad_request(format!(
            "invalid api-version {requested:?}"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_and_unknown_versions() {
        let v = ["2020-09-01"];
        assert_eq!(
            check_api_version(&v, None).unwrap_err().message,
            "api-version not specified"
        );
        assert_eq!(
            check_api_version(&v, Some("2099-01-01".into()))
                .unwrap_err()
                .message,
            "invalid api-version \"2099-01-01\""
        );
        assert_eq!(
            check_api_version(&v, Some("2020-09-01".into())).unwrap(),
            "2020-09-01"
        );
    }
}
