//! The errors an Identity Service request can end with, and the one place they become HTTP
//! statuses. Upstream's mapping is kept where clients may rely on it (401 `authorization error`,
//! 400 for bad parameters, 404 for cloud and Keys Service failures, with the cause chain); what
//! upstream never answers — "not provisioned yet", "reprovisioning", "hub unavailable" — is a 503
//! that says when to come back.

use aziot_http::{HttpError, StatusCode};

use crate::clients::LocalError;
use crate::hub::HubError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("authorization error")]
    Unauthorized,

    #[error("parameter {name:?} has an invalid value\ncaused by: {reason}")]
    InvalidParameter { name: &'static str, reason: String },

    #[error(
        "local identities (type=local) are not supported by identityd-dps; ask for type=aziot, or run \
         upstream aziot-identityd with certd for local identities"
    )]
    LocalUnsupported,

    /// No device to serve yet; the text says why and when to retry.
    #[error("{0}")]
    NotReady(String),

    #[error("{0}\ncaused by: identityd-dps is provisioning the device again through DPS; retry in a few seconds")]
    DeviceRejected(#[source] HubError),

    #[error("{0}")]
    Hub(#[source] HubError),

    #[error("could not derive the module's keys through the Keys Service: {0}")]
    Keys(#[source] LocalError),

    #[error("the TPM Service is needed for this and failed: {0}")]
    Tpm(#[source] LocalError),

    /// A request body the server plumbing refused (400 missing body, 415, 422 bad JSON).
    #[error("{}", .0.message)]
    Body(HttpError),

    #[error("reprovisioning failed: {0}")]
    Reprovision(String),

    #[error("{0}")]
    Internal(String),
}

impl Error {
    pub fn invalid(name: &'static str, reason: impl Into<String>) -> Self {
        Error::InvalidParameter {
            name,
            reason: reason.into(),
        }
    }

    fn status(&self) -> StatusCode {
        match self {
            Error::Unauthorized => StatusCode::UNAUTHORIZED,
            Error::InvalidParameter { .. } | Error::LocalUnsupported => StatusCode::BAD_REQUEST,
            Error::NotReady(_) | Error::DeviceRejected(_) => StatusCode::SERVICE_UNAVAILABLE,
            Error::Hub(e) if e.is_unavailable() => StatusCode::SERVICE_UNAVAILABLE,
            Error::Hub(HubError::Sign(LocalError::Unreachable { .. })) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Error::Keys(LocalError::Unreachable { .. })
            | Error::Tpm(LocalError::Unreachable { .. }) => StatusCode::SERVICE_UNAVAILABLE,
            Error::Tpm(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Error::Body(e) => e.status,
            Error::Hub(_) | Error::Keys(_) | Error::Reprovision(_) => StatusCode::NOT_FOUND,
            Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl From<Error> for HttpError {
    fn from(e: Error) -> Self {
        let status = e.status();
        match &e {
            // Expected while provisioning; the provisioning task logs the cause itself.
            Error::NotReady(_) | Error::DeviceRejected(_) => log::debug!("{e}"),
            _ if status.is_server_error() => log::warn!("{e}"),
            _ => log::info!("request failed: {e}"),
        }
        match e {
            Error::Body(body) => body,
            // Every message already carries its causes, in one readable line each.
            e => HttpError::new(status, e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_follow_upstream_where_it_has_one() {
        let s = |e: Error| HttpError::from(e).status;
        assert_eq!(s(Error::Unauthorized), StatusCode::UNAUTHORIZED);
        assert_eq!(
            HttpError::from(Error::Unauthorized).message,
            "authorization error"
        );
        assert_eq!(
            s(Error::invalid("type", "missing parameter")),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(s(Error::LocalUnsupported), StatusCode::BAD_REQUEST);
        assert_eq!(
            s(Error::NotReady("x".into())),
            StatusCode::SERVICE_UNAVAILABLE
        );
        let missing = HubError::ModuleNotFound {
            hub: "h".into(),
            module: "m".into(),
            detail: "d".into(),
        };
        assert_eq!(s(Error::Hub(missing)), StatusCode::NOT_FOUND);
        let down = HubError::Unavailable {
            hub: "h".into(),
            op: "list modules".into(),
            attempts: 2,
            last: "503".into(),
        };
        assert_eq!(s(Error::Hub(down)), StatusCode::SERVICE_UNAVAILABLE);
    }

    #[test]
    fn invalid_parameter_reads_like_upstream() {
        let e = HttpError::from(Error::invalid("type", "missing parameter"));
        assert_eq!(
            e.message,
            "parameter \"type\" has an invalid value\ncaused by: missing parameter"
        );
    }
}
