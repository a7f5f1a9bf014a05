//! The one place where the daemon's errors become HTTP statuses: one mapping per error type.
//! Mistakes a caller can fix are 4xx with a message naming the field; TPM failures are 5xx
//! naming the command and decoded response code (never a bare "internal error"); a saturated
//! or missing TPM is 503.

use std::sync::LazyLock;
use std::time::Duration;

use aziot_http::logging::Limiter;
use aziot_http::{HttpError, StatusCode};

use crate::keyd::KeydError;
use crate::tpm::TpmError;

/// A TPM that is gone fails every request the same way: log it once, then at most every 10 s.
static TPM_FAILURES: LazyLock<Limiter> = LazyLock::new(|| Limiter::new(Duration::from_secs(10)));

/// The failures that repeat for every request while they last (the TPM is unreachable, its
/// queue is full), each counted under its own kind; others are logged each time.
fn outage_kind(e: &TpmError) -> Option<&'static str> {
    match e {
        TpmError::Open { .. } => Some("open"),
        TpmError::Busy => Some("busy"),
        TpmError::OwnerGone => Some("owner"),
        _ => None,
    }
}

impl From<TpmError> for HttpError {
    fn from(e: TpmError) -> Self {
        let status = match &e {
            TpmError::InvalidBlob(_)
            | TpmError::BlobRejected(_)
            | TpmError::NoAuthKey { .. }
            | TpmError::NoPreviousAuthKey
            | TpmError::InvalidKey(_) => StatusCode::BAD_REQUEST,
            TpmError::Busy | TpmError::OwnerGone | TpmError::Open { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            TpmError::Command(_)
            | TpmError::HierarchyAuth { .. }
            | TpmError::Store { .. }
            | TpmError::SessionKey { .. }
            | TpmError::Unexpected(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        if status.is_server_error() {
            match outage_kind(&e) {
                Some(kind) => TPM_FAILURES.log(kind, log::Level::Error, &e),
                None => log::error!("{e}"),
            }
        } else {
            log::info!("rejected request: {e}");
        }
        HttpError::new(status, e.to_string())
    }
}

/// Upstream's Keys Service statuses: invalid parameter and unknown key 400 (with the cause on
/// a `caused by:` line, as upstream's `error_to_message`), authorization 401. Key store and
/// software crypto failures are 500 naming the file or step.
impl From<KeydError> for HttpError {
    fn from(e: KeydError) -> Self {
        match e {
            KeydError::Tpm(tpm) => tpm.into(),
            KeydError::InvalidParameter { .. } | KeydError::NotFound { .. } => {
                let error = HttpError::from_chain(StatusCode::BAD_REQUEST, &e);
                log::info!("rejected request: {}", error.message.replace('\n', " "));
                error
            }
            KeydError::Unauthorized { .. } => {
                HttpError::new(StatusCode::UNAUTHORIZED, e.to_string())
            }
            KeydError::Io { .. }
            | KeydError::Corrupt { .. }
            | KeydError::Crypto { .. }
            | KeydError::NotProven { .. } => {
                log::error!("{e}");
                HttpError::from_chain(StatusCode::INTERNAL_SERVER_ERROR, &e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyd_errors_have_upstreams_statuses_and_messages() {
        let e = HttpError::from(KeydError::invalid_handle());
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert_eq!(
            e.message,
            "parameter \"handle\" has an invalid value\ncaused by: invalid handle"
        );
        let e = HttpError::from(KeydError::wrong_mechanism());
        assert_eq!(e.message, "parameter \"mechanism\" has an invalid value\ncaused by: mechanism cannot be used with this key type");
        let e = HttpError::from(KeydError::not_found("key \"x\" does not exist"));
        assert_eq!(
            (e.status, e.message.as_ref()),
            (
                StatusCode::BAD_REQUEST,
                "a parameter has an invalid value\ncaused by: key \"x\" does not exist"
            )
        );
        let e = HttpError::from(KeydError::Unauthorized {
            uid: 1000,
            id: "device-id".into(),
        });
        assert_eq!(
            (e.status, e.message.as_ref()),
            (
                StatusCode::UNAUTHORIZED,
                "user 1000 is not authorized to access the key device-id"
            )
        );
        let e = HttpError::from(KeydError::Tpm(TpmError::Busy));
        assert_eq!(e.status, StatusCode::SERVICE_UNAVAILABLE);
        let e = HttpError::from(KeydError::Corrupt {
            path: "/k/x.tpmkey".into(),
            reason: "does not parse".into(),
        });
        assert_eq!(e.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(e.message.contains("/k/x.tpmkey"), "{}", e.message);
    }
}
