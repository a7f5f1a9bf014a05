//! The request and reply types routes work with: a fully read request (bodies here are small
//! JSON) and a JSON reply, so route code never touches hyper.

use std::net::SocketAddr;

use bytes::Bytes;
use hyper::header::HeaderMap;
use hyper::{Method, StatusCode};
use percent_encoding::percent_decode_str;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::ApiError;

/// A request whose body has been read.
#[derive(Debug)]
pub struct Req {
    pub method: Method,
    /// The path as sent (still percent-encoded).
    pub path: String,
    pub query: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub peer: SocketAddr,
}

impl Req {
    /// Path segments, percent-decoded (`$edgeAgent` arrives encoded by some clients).
    pub fn segments(&self) -> Result<Vec<String>, ApiError> {
        self.path
            .split('/')
            .filter(|s| !s.is_empty())
            .map(|s| {
                percent_decode_str(s)
                    .decode_utf8()
                    .map(|c| c.into_owned())
                    .map_err(|_| {
                        ApiError::BadRequest(format!(
                            "path segment {s:?} is not valid percent-encoded UTF-8"
                        ))
                    })
            })
            .collect()
    }

    pub fn query_param(&self, name: &str) -> Option<String> {
        self.query.split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (k == name).then(|| percent_decode_str(v).decode_utf8_lossy().into_owned())
        })
    }

    /// Requires `api-version` in the query, as DPS and IoT Hub do (any value is accepted).
    pub fn require_api_version(&self) -> Result<String, ApiError> {
        self.query_param("api-version")
            .filter(|v| !v.is_empty())
            .ok_or_else(|| {
                ApiError::BadRequest(
                    "the api-version query parameter is required (e.g. ?api-version=2021-06-01)"
                        .into(),
                )
            })
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The body as JSON of type `T`; the error names what serde could not accept.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, ApiError> {
        if self.body.is_empty() {
            return Err(ApiError::BadRequest(
                "request body is empty; a JSON object is required".into(),
            ));
        }
        serde_json::from_slice(&self.body).map_err(|e| {
            ApiError::BadRequest(format!("request body is not the expected JSON: {e}"))
        })
    }

    /// `If-Match` without quotes or `W/` prefix; `None` if absent.
    pub fn if_match(&self) -> Option<String> {
        self.header("if-match").map(normalize_etag)
    }
}

/// Strips the weak marker and quotes from an etag so `"x"`, `W/"x"` and `x` compare equal.
pub fn normalize_etag(s: &str) -> String {
    s.trim()
        .trim_start_matches("W/")
        .trim_matches('"')
        .to_owned()
}

/// True if `if_match` (already normalized) allows changing a resource whose etag is `current`.
pub fn etag_matches(if_match: &str, current: &str) -> bool {
    if_match == "*" || if_match == normalize_etag(current)
}

/// A JSON reply (or an empty one).
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: Vec<(String, String)>,
    pub body: Option<Value>,
}

impl Reply {
    pub fn json(status: StatusCode, body: Value) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: Some(body),
        }
    }

    pub fn ok(body: Value) -> Self {
        Self::json(StatusCode::OK, body)
    }

    pub fn empty(status: StatusCode) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: None,
        }
    }

    pub fn header(mut self, name: &str, value: String) -> Self {
        self.headers.push((name.to_owned(), value));
        self
    }
}
