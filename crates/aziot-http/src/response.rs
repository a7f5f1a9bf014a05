//! What a service returns: status, headers and a fully buffered body.
//!
//! Every response of these APIs is small JSON, so buffering keeps the type plain
//! and lets services be unit-tested without a socket.

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderMap, HeaderValue, CONTENT_TYPE};
use hyper::StatusCode;

#[derive(Clone, Debug)]
pub struct Response {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Response {
    pub fn new(status: StatusCode, headers: HeaderMap, body: Bytes) -> Self {
        Response {
            status,
            headers,
            body,
        }
    }

    /// Compact JSON with `Content-Type: application/json`. A value serde cannot
    /// encode (only possible with non-string map keys) becomes a 500 naming why.
    pub fn json<T: serde::Serialize + ?Sized>(status: StatusCode, value: &T) -> Self {
        let (status, body) = match serde_json::to_vec(value) {
            Ok(body) => (status, body),
            Err(err) => {
                log::error!("could not serialize response body: {err}");
                let msg = serde_json::json!({
                    "message": format!("internal error: could not serialize response: {err}")
                });
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    msg.to_string().into_bytes(),
                )
            }
        };
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        Response::new(status, headers, Bytes::from(body))
    }

    /// `204 No Content` with an empty body.
    pub fn no_content() -> Self {
        Response::new(StatusCode::NO_CONTENT, HeaderMap::new(), Bytes::new())
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }

    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    pub fn headers_mut(&mut self) -> &mut HeaderMap {
        &mut self.headers
    }

    pub fn body(&self) -> &Bytes {
        &self.body
    }

    pub(crate) fn into_hyper(self) -> hyper::Response<Full<Bytes>> {
        let mut response = hyper::Response::new(Full::new(self.body));
        *response.status_mut() = self.status;
        *response.headers_mut() = self.headers;
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_is_compact_with_content_type() {
        let r = Response::json(StatusCode::OK, &serde_json::json!({"a": [1, 2], "b": "c"}));
        assert_eq!(&r.body()[..], br#"{"a":[1,2],"b":"c"}"#);
        assert_eq!(r.headers()[CONTENT_TYPE], "application/json");
    }

    #[test]
    fn no_content_is_empty() {
        let r = Response::no_content();
        assert_eq!(r.status(), StatusCode::NO_CONTENT);
        assert!(r.body().is_empty());
        assert!(r.headers().is_empty());
    }

    #[test]
    fn unserializable_value_is_a_500_with_reason() {
        let mut m = std::collections::HashMap::new();
        m.insert(vec![1u8], 1);
        let r = Response::json(StatusCode::OK, &m);
        assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(std::str::from_utf8(r.body())
            .unwrap()
            .contains("could not serialize"));
    }
}
