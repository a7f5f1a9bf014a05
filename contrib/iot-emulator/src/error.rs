//! Every failure a route can report, and the one place that turns it into an HTTP response in
//! the shape of the service the client is talking to: DPS's `ProvisioningServiceErrorDetails`
//! (`errorCode`, `trackingId`, `message`, `timestampUtc`, header `x-ms-error-code`), IoT Hub's
//! `{"Message":"ErrorCode:<Name>;<text>","ExceptionMessage":...}` (header `iothub-errorcode`),
//! or a plain `{"message"}` for the admin API.

use hyper::StatusCode;
use serde_json::json;

use crate::http::Reply;
use crate::sas::SasError;

/// What a resource is, for 404/409/412 messages and Hub error names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    Enrollment,
    Registration,
    Operation,
    Device,
    Module,
    Fault,
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request is malformed; the message names the field and the fix.
    #[error("{0}")]
    BadRequest(String),
    /// The `tpm.endorsementKey` sent differs from the enrolled one.
    #[error("Endorsement key is invalid, or does not match the Enrollment.")]
    EkMismatch,
    /// No credentials, bad credentials, or not allowed for this resource.
    #[error("{0}")]
    Unauthorized(String),
    #[error("{what:?} {id:?} not found")]
    NotFound { what: Resource, id: String },
    #[error("{what:?} {id:?} already exists")]
    Conflict { what: Resource, id: String },
    #[error("If-Match {given:?} does not match the current etag of {what:?} {id:?}")]
    PreconditionFailed {
        what: Resource,
        id: String,
        given: String,
    },
    #[error("method {0} is not allowed on this path")]
    MethodNotAllowed(String),
    #[error("no route for {0}")]
    NoRoute(String),
    #[error("request body is larger than {0} bytes")]
    PayloadTooLarge(usize),
    /// Injected throttling (fault injection).
    #[error("Throttled by the emulator's fault injection; retry after {retry_after} s")]
    Throttled { retry_after: u64 },
    /// Injected 500/503 (fault injection).
    #[error("Injected failure {status} (emulator fault injection)")]
    Injected {
        status: StatusCode,
        retry_after: Option<u64>,
    },
    /// State could not be written to the data dir.
    #[error("cannot persist state: {0}")]
    Persist(String),
    /// A bug or an environment failure (RNG, OpenSSL) on our side.
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<SasError> for ApiError {
    fn from(e: SasError) -> Self {
        ApiError::Unauthorized(e.to_string())
    }
}

/// Which service's error shape to answer with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Dps,
    Hub,
    Admin,
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) | ApiError::EkMismatch => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::NotFound { .. } | ApiError::NoRoute(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict { .. } => StatusCode::CONFLICT,
            ApiError::PreconditionFailed { .. } => StatusCode::PRECONDITION_FAILED,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Throttled { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Injected { status, .. } => *status,
            ApiError::Persist(_) | ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// DPS `errorCode`. 400004, 401002, 404201 and 429001 are codes real DPS/IoT Hub return;
    /// the others are the HTTP status times 1000, which clients only use for logging.
    pub fn dps_code(&self) -> u32 {
        match self {
            ApiError::EkMismatch => 400_004,
            ApiError::Unauthorized(_) => 401_002,
            ApiError::NotFound {
                what: Resource::Enrollment,
                ..
            } => 404_201,
            ApiError::NotFound {
                what: Resource::Registration,
                ..
            } => 404_202,
            ApiError::PreconditionFailed { .. } => 412_001,
            ApiError::Throttled { .. } => 429_001,
            other => u32::from(other.status().as_u16()) * 1000,
        }
    }

    /// IoT Hub `ErrorCode` name and number (from the service SDKs' `ErrorCode` enum).
    pub fn hub_code(&self) -> (&'static str, u32) {
        match self {
            ApiError::BadRequest(_) | ApiError::EkMismatch => ("ArgumentInvalid", 400_004),
            ApiError::Unauthorized(_) => ("IotHubUnauthorizedAccess", 401_002),
            ApiError::NotFound {
                what: Resource::Module,
                ..
            } => ("ModuleNotFound", 404_010),
            ApiError::NotFound { .. } | ApiError::NoRoute(_) => ("DeviceNotFound", 404_001),
            ApiError::Conflict {
                what: Resource::Module,
                ..
            } => ("ModuleAlreadyExistsOnDevice", 409_301),
            ApiError::Conflict { .. } => ("DeviceAlreadyExists", 409_001),
            ApiError::PreconditionFailed { .. } => ("PreconditionFailed", 412_001),
            ApiError::MethodNotAllowed(_) => ("MethodNotAllowed", 405_000),
            ApiError::PayloadTooLarge(_) => ("MessageTooLarge", 413_000),
            ApiError::Throttled { .. } => ("ThrottlingException", 429_001),
            ApiError::Injected { status, .. } if *status == StatusCode::SERVICE_UNAVAILABLE => {
                ("ServiceUnavailable", 503_000)
            }
            ApiError::Injected { .. } | ApiError::Persist(_) | ApiError::Internal(_) => {
                ("ServerError", 500_000)
            }
        }
    }

    fn retry_after(&self) -> Option<u64> {
        match self {
            ApiError::Throttled { retry_after } => Some(*retry_after),
            ApiError::Injected { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// The response for this error in `family`'s shape.
    pub fn to_reply(&self, family: Family) -> Reply {
        let status = self.status();
        let message = self.to_string();
        let tracking_id = crate::ids::tracking_id();
        let now = crate::time::rfc3339_now();
        let mut reply = match family {
            Family::Dps => {
                let code = self.dps_code();
                Reply::json(
                    status,
                    json!({"errorCode": code, "trackingId": tracking_id, "message": message, "timestampUtc": now, "info": {}}),
                )
                .header("x-ms-error-code", code.to_string())
            }
            Family::Hub => {
                let (name, code) = self.hub_code();
                Reply::json(
                    status,
                    json!({
                        "Message": format!("ErrorCode:{name};{message}"),
                        "ExceptionMessage": format!("Tracking ID:{tracking_id}-TimeStamp:{now}"),
                        "errorCode": code,
                    }),
                )
                .header("iothub-errorcode", name.to_owned())
            }
            Family::Admin => Reply::json(status, json!({"message": message})),
        };
        if let Some(seconds) = self.retry_after() {
            reply = reply.header("Retry-After", seconds.to_string());
        }
        reply
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dps_shape_has_code_tracking_id_and_header() {
        let reply = ApiError::EkMismatch.to_reply(Family::Dps);
        assert_eq!(reply.status, StatusCode::BAD_REQUEST);
        let body = reply.body.unwrap();
        assert_eq!(body["errorCode"], 400_004);
        assert!(body["trackingId"].as_str().is_some_and(|t| !t.is_empty()));
        assert!(reply
            .headers
            .iter()
            .any(|(k, v)| k == "x-ms-error-code" && v == "400004"));
    }

    #[test]
    fn hub_shape_names_the_error_code() {
        let reply = ApiError::NotFound {
            what: Resource::Module,
            id: "m".into(),
        }
        .to_reply(Family::Hub);
        assert!(reply.body.unwrap()["Message"]
            .as_str()
            .unwrap()
            .starts_with("ErrorCode:ModuleNotFound;"));
    }

    #[test]
    fn throttling_carries_retry_after() {
        let reply = ApiError::Throttled { retry_after: 7 }.to_reply(Family::Dps);
        assert_eq!(reply.status, StatusCode::TOO_MANY_REQUESTS);
        assert!(reply
            .headers
            .iter()
            .any(|(k, v)| k == "Retry-After" && v == "7"));
    }
}
