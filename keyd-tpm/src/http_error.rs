//! The one place where TPM errors become HTTP statuses. Mistakes a caller can fix are 4xx with a
//! message naming the field; TPM failures are 5xx naming the command and decoded response code
//! (never a bare "internal error"); a saturated or missing TPM is 503.

use aziot_http::{HttpError, StatusCode};

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
