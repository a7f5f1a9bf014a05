//! The request a [`Service`](crate::Service) sees: already gated on
//! `api-version`, body already read, caller identified by uid.

use std::collections::BTreeMap;

use bytes::Bytes;
use hyper::{HeaderMap, Method};

use crate::error::HttpError;

#[derive(Clone, Debug)]
pub struct Request {
    pub method: Method,
    /// The raw (still percent-encoded) path, e.g. `/keypair/my%20key`.
    pub path: String,
    /// Query parameters other than `api-version`, percent-decoded.
    pub query: BTreeMap<String, String>,
    /// The `api-version` the caller asked for; one of the service's versions.
    pub api_version: String,
    pub headers: HeaderMap,
    /// The body, or `None` when it was empty.
    pub body: Option<Bytes>,
    /// The caller's effective uid (`SO_PEERCRED`); this is what authorization uses.
    pub uid: u32,
    /// The caller's pid, when the kernel reported one.
    pub pid: Option<i32>,
}

impl Request {
    /// A request as the server would build it; for unit-testing services.
    pub fn new(method: Method, path: impl Into<String>, api_version: impl Into<String>) -> Self {
        Request {
            method,
            path: path.into(),
            query: BTreeMap::new(),
            api_version: api_version.into(),
            headers: HeaderMap::new(),
            body: None,
            uid: 0,
            pid: None,
        }
    }

    /// The request the server hands a service for `method target` (origin form, e.g.
    /// `/key/a%20b?api-version=2021-05-01`) with this `Content-Type` and body, after the same
    /// query parsing and `api-version` gate; or the error the server answers instead. For
    /// testing services in-process with what clients put on the wire.
    #[doc(hidden)]
    pub fn from_wire(
        api_versions: &[&str],
        method: &str,
        target: &str,
        content_type: Option<&str>,
        body: Option<Vec<u8>>,
    ) -> Result<Self, crate::HttpError> {
        let method = Method::from_bytes(method.as_bytes())
            .map_err(|_| crate::HttpError::bad_request("invalid HTTP method"))?;
        let uri: hyper::Uri = target
            .parse()
            .map_err(|_| crate::HttpError::bad_request("invalid request target"))?;
        let query = crate::query::parse(uri.query());
        let api_version = crate::service::check_api_version(api_versions, query.api_version)?;
        let mut headers = HeaderMap::new();
        if let Some(value) = content_type.and_then(|c| hyper::header::HeaderValue::from_str(c).ok()) {
            headers.insert(hyper::header::CONTENT_TYPE, value);
        }
        Ok(Request {
            method,
            path: uri.path().to_owned(),
            query: query.params,
            api_version,
            headers,
            body: body.filter(|b| !b.is_empty()).map(Bytes::from),
            uid: 0,
            pid: None,
        })
    }

    /// The path's segments, percent-decoded: `/a/b%2Fc/` gives `["a", "b/c", ""]`.
    pub fn segments(&self) -> Vec<String> {
        let path = self.path.strip_prefix('/').unwrap_or(&self.path);
        path.split('/').map(decode_segment).collect()
    }

    /// Matches the path against `pattern`, whose segments are literals or `{}`
    /// (any one non-empty segment). Returns the decoded `{}` segments in order, `Ok(None)`
    /// if the path does not match, and a 400 naming the segment if a `{}` segment is not
    /// UTF-8 once percent-decoded (so `%FF` and `%FE` are refused, not both read as U+FFFD).
    ///
    /// `req.match_path("/keypair/{}")` on `/keypair/my%20key` gives `["my key"]`.
    pub fn match_path(&self, pattern: &str) -> Result<Option<Vec<String>>, HttpError> {
        let Some(path) = self.path.strip_prefix('/') else { return Ok(None) };
        let pattern = pattern.strip_prefix('/').unwrap_or(pattern);
        let mut path_segments = path.split('/');
        let mut raw_captures = Vec::new();
        for expected in pattern.split('/') {
            let Some(actual) = path_segments.next() else { return Ok(None) };
            if expected == "{}" {
                if actual.is_empty() {
                    return Ok(None);
                }
                raw_captures.push(actual);
            } else if actual != expected {
                return Ok(None);
            }
        }
        if path_segments.next().is_some() {
            return Ok(None);
        }
        raw_captures.into_iter().map(decode_strict).collect::<Result<_, _>>().map(Some)
    }

    /// A query parameter (other than `api-version`).
    pub fn query(&self, name: &str) -> Option<&str> {
        self.query.get(name).map(String::as_str)
    }

    /// A header as text, if present and visible ASCII.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// A captured segment, which must decode to UTF-8.
fn decode_strict(segment: &str) -> Result<String, HttpError> {
    percent_encoding::percent_decode_str(segment)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| {
            let shown: String = segment.chars().take(64).collect();
            let more = if shown.len() < segment.len() { "…" } else { "" };
            HttpError::bad_request(format!(
                "path segment \"{shown}{more}\" is not UTF-8 once percent-decoded; ids are UTF-8 text"
            ))
        })
}

/// Path segments decode `%XX` only; `+` stays a plus (it is not form encoding).
fn decode_segment(segment: &str) -> String {
    percent_encoding::percent_decode_str(segment)
        .decode_utf8_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(path: &str) -> Request {
        Request::new(Method::GET, path, "2020-09-01")
    }

    #[test]
    fn segments_are_decoded() {
        assert_eq!(get("/a/b%2Fc/d+e").segments(), ["a", "b/c", "d+e"]);
        assert_eq!(get("/").segments(), [""]);
    }

    #[test]
    fn match_path_captures_placeholders() {
        let r = get("/keypair/my%20key");
        assert_eq!(r.match_path("/keypair/{}"), Ok(Some(vec!["my key".to_owned()])));
        assert_eq!(r.match_path("/keypair"), Ok(None));
        assert_eq!(r.match_path("/keypair/{}/x"), Ok(None));
        assert_eq!(r.match_path("/key/{}"), Ok(None));
        assert_eq!(get("/sign").match_path("/sign"), Ok(Some(vec![])));
        assert_eq!(get("/keypair/").match_path("/keypair/{}"), Ok(None));
        assert_eq!(get("/sign/").match_path("/sign"), Ok(None));
        assert_eq!(
            get("/identities/modules/m1/x").match_path("/identities/modules/{}/{}"),
            Ok(Some(vec!["m1".to_owned(), "x".to_owned()]))
        );
    }

    #[test]
    fn captures_that_are_not_utf8_are_400_not_replacement_characters() {
        for bad in ["%FF", "%FE", "%C0", "a%80b"] {
            let e = get(&format!("/key/{bad}")).match_path("/key/{}").unwrap_err();
            assert_eq!(e.status, hyper::StatusCode::BAD_REQUEST);
            assert!(e.message.contains("not UTF-8"), "{}", e.message);
        }
        // A real U+FFFD, sent encoded, is just a character.
        assert_eq!(get("/key/%EF%BF%BD").match_path("/key/{}"), Ok(Some(vec!["\u{FFFD}".to_owned()])));
    }
}
