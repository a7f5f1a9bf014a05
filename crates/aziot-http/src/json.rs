//! JSON request bodies with upstream's status codes, so clients written against
//! upstream see the same 400/415/422 answers from us.

use hyper::header::CONTENT_TYPE;
use hyper::Method;
use serde::de::DeserializeOwned;

use crate::error::HttpError;
use crate::request::Request;

impl Request {
    /// The body as `T`.
    ///
    /// POST, DELETE (and anything but PUT): no body → 400 `missing request body`;
    /// `Content-Type` absent or `application/json` → parsed, failure → 422 with
    /// serde's message; any other content type → treated as no body.
    /// PUT: a non-JSON content type → 415; the body is always parsed, so an
    /// empty one → 422.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, HttpError> {
        if self.method == Method::PUT {
            if !self.content_type_is_json() {
                return Err(HttpError::unsupported_media_type(
                    "request body must be application/json",
                ));
            }
            return parse(self.body.as_deref().unwrap_or_default());
        }
        self.json_opt()?.ok_or_else(HttpError::missing_body)
    }

    /// Like [`json`](Self::json) for POST/DELETE, but a missing body is `None`
    /// (for routes where the body is optional).
    pub fn json_opt<T: DeserializeOwned>(&self) -> Result<Option<T>, HttpError> {
        match &self.body {
            Some(body) if !body.is_empty() && self.content_type_is_json() => parse(body).map(Some),
            _ => Ok(None),
        }
    }

    fn content_type_is_json(&self) -> bool {
        let Some(value) = self.headers.get(CONTENT_TYPE) else {
            return true;
        };
        // Like upstream: an unreadable header counts as absent.
        let Ok(value) = value.to_str() else {
            return true;
        };
        let essence = value.split(';').next().unwrap_or_default().trim();
        essence.eq_ignore_ascii_case("application/json")
    }
}

fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, HttpError> {
    serde_json::from_slice(body).map_err(|err| HttpError::unprocessable(err.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use hyper::header::HeaderValue;
    use hyper::StatusCode;

    #[derive(Debug, serde::Deserialize, PartialEq)]
    struct Body {
        a: u32,
    }

    fn req(method: Method, body: &'static str, ctype: Option<&'static str>) -> Request {
        let mut r = Request::new(method, "/x", "v");
        r.body = (!body.is_empty()).then(|| Bytes::from_static(body.as_bytes()));
        if let Some(ctype) = ctype {
            r.headers
                .insert(CONTENT_TYPE, HeaderValue::from_static(ctype));
        }
        r
    }

    #[test]
    fn post_parses_json_with_or_without_content_type() {
        for ctype in [
            None,
            Some("application/json"),
            Some("application/json; charset=utf-8"),
        ] {
            let r = req(Method::POST, r#"{"a":1}"#, ctype);
            assert_eq!(r.json::<Body>(), Ok(Body { a: 1 }));
        }
    }

    #[test]
    fn post_without_body_is_400() {
        let e = req(Method::POST, "", None).json::<Body>().unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert_eq!(e.message, "missing request body");
        assert_eq!(req(Method::DELETE, "", None).json_opt::<Body>(), Ok(None));
    }

    #[test]
    fn post_with_other_content_type_is_treated_as_absent() {
        let e = req(Method::POST, r#"{"a":1}"#, Some("text/plain"))
            .json::<Body>()
            .unwrap_err();
        assert_eq!(e, HttpError::missing_body());
    }

    #[test]
    fn bad_json_is_422_with_serde_message() {
        let e = req(Method::POST, r#"{"a":"x"}"#, None)
            .json::<Body>()
            .unwrap_err();
        assert_eq!(e.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(
            e.message
                .contains("invalid type: string \"x\", expected u32"),
            "{}",
            e.message
        );
    }

    #[test]
    fn put_rules() {
        let e = req(Method::PUT, r#"{"a":1}"#, Some("text/plain"))
            .json::<Body>()
            .unwrap_err();
        assert_eq!(e.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
        let e = req(Method::PUT, "", None).json::<Body>().unwrap_err();
        assert_eq!(e.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(
            req(Method::PUT, r#"{"a":2}"#, None).json::<Body>(),
            Ok(Body { a: 2 })
        );
    }
}
