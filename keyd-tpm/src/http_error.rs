//! The one place where the daemon's errors become HTTP statuses: one mapping per error type.
//! Mistakes a caller can fix are 4xx with a message naming the field; TPM failures are 5xx
//! naming the command and decoded response code (never a bare "internal error"); a saturated
//! or missing TPM is 503.

use aziot_http::{HttpError, StatusCode};

use crate::keyd::KeydError;
use crate::tpm::TpmError;

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
            | TpmError::Unexpected(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        if status.is_server_error() {
            log::error!("{e}");
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
