//! The one error type handlers return, rendered once as upstream's
//! `{"message": "..."}` body.

use std::borrow::Cow;

use hyper::StatusCode;

use crate::response::Response;

/// An HTTP error response: a status and the message the caller will read.
///
/// Messages should say what was wrong and how to fix it; reserve `internal` for
/// failures the caller cannot do anything about.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{status}: {message}")]
pub struct HttpError {
    pub status: StatusCode,
    pub message: Cow<'static, str>,
}

impl HttpError {
    pub fn new(status: StatusCode, message: impl Into<Cow<'static, str>>) -> Self {
        HttpError {
            status,
            message: message.into(),
        }
    }

    /// Like upstream's `error_to_message`: the error and its causes joined by
    /// `"\ncaused by: "`, for client errors whose chain helps the caller.
    pub fn from_chain(status: StatusCode, err: &(dyn std::error::Error + 'static)) -> Self {
        let mut message = err.to_string();
        let mut source = err.source();
        while let Some(cause) = source {
            message.push_str("\ncaused by: ");
            message.push_str(&cause.to_string());
            source = cause.source();
        }
        Self::new(status, message)
    }

    /// 400.
    pub fn bad_request(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    /// 400 `missing request body`, upstream's answer to a POST without a body.
    pub fn missing_body() -> Self {
        Self::bad_request("missing request body")
    }

    /// 400 `method not allowed`: upstream answers 400, not 405, for a known
    /// path with an unsupported method.
    pub fn method_not_allowed() -> Self {
        Self::bad_request("method not allowed")
    }

    /// 401.
    pub fn unauthorized(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, message)
    }

    /// 403.
    pub fn forbidden(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::FORBIDDEN, message)
    }

    /// 404 `not found`, upstream's answer for an unknown path.
    pub fn not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "not found")
    }

    /// 404 with a specific message (e.g. which key does not exist).
    pub fn not_found_with(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    /// 408.
    pub fn request_timeout(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::REQUEST_TIMEOUT, message)
    }

    /// 413.
    pub fn payload_too_large(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, message)
    }

    /// 415.
    pub fn unsupported_media_type(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, message)
    }

    /// 422: the body is JSON but not the shape this route expects.
    pub fn unprocessable(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, message)
    }

    /// 500.
    pub fn internal(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }

    /// 503: try again later (busy, or a dependency such as the TPM is not ready).
    pub fn unavailable(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, message)
    }

    /// `{"message": ...}` with this status.
    pub fn into_response(self) -> Response {
        #[derive(serde::Serialize)]
        struct ErrorBody<'a> {
            message: &'a str,
        }
        Response::json(
            self.status,
            &ErrorBody {
                message: &self.message,
            },
        )
    }
}

impl From<HttpError> for Response {
    fn from(err: HttpError) -> Self {
        err.into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_upstream_error_body() {
        let r = HttpError::bad_request("api-version not specified").into_response();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        assert_eq!(&r.body()[..], br#"{"message":"api-version not specified"}"#);
        assert_eq!(r.headers()[hyper::header::CONTENT_TYPE], "application/json");
    }

    #[test]
    fn escapes_message_as_json() {
        let r = HttpError::internal("a \"quoted\"\nline").into_response();
        assert_eq!(&r.body()[..], br#"{"message":"a \"quoted\"\nline"}"#);
    }

    #[test]
    fn chain_joins_causes_like_upstream() {
        #[derive(Debug, thiserror::Error)]
        #[error("outer")]
        struct Outer(#[source] std::io::Error);
        let err = Outer(std::io::Error::other("inner"));
        let e = HttpError::from_chain(StatusCode::BAD_REQUEST, &err);
        assert_eq!(e.message, "outer\ncaused by: inner");
    }

    #[test]
    fn fixed_messages_match_upstream() {
        assert_eq!(HttpError::not_found().message, "not found");
        assert_eq!(
            HttpError::method_not_allowed().status,
            StatusCode::BAD_REQUEST
        );
        assert_eq!(HttpError::missing_body().message, "missing request body");
    }
}
