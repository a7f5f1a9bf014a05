//! Clients of the two local services identityd-dps relies on: the TPM Service (tpmd.sock), which
//! holds the DPS auth key and signs with it, and the Keys Service (keyd.sock), which holds the
//! master key that module keys are derived from. Both work with keyd-tpm and with upstream
//! aziot-tpmd / aziot-keyd.
//!
//! A few connections per service, picked in turn: one `UdsClient` serializes its requests, and
//! API callers asking for module identities in parallel should not queue behind each other.

mod keys;
mod tpm;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use aziot_http::{ClientError, Method, StatusCode, UdsClient};

pub use keys::KeysClient;
pub use tpm::{RestoreOutcome, TpmClient, TpmKeys};

/// Connections kept per local service.
const CONNECTIONS: usize = 4;
/// Local services answer in milliseconds; a TPM under load in well under this.
const TIMEOUT: Duration = Duration::from_secs(30);

/// Why a call to a local service failed.
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    #[error(
        "cannot reach the {service} at {}: {source}; is it running, and may this user open its socket?",
        path.display()
    )]
    Unreachable {
        service: &'static str,
        path: PathBuf,
        #[source]
        source: ClientError,
    },
    #[error("the {service} refused {what} with {status}: {message}")]
    Refused {
        service: &'static str,
        what: &'static str,
        status: StatusCode,
        message: String,
    },
    #[error(
        "the {service} answered {what} with something that is not the expected JSON: {detail}"
    )]
    BadResponse {
        service: &'static str,
        what: &'static str,
        detail: String,
    },
}

impl LocalError {
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            LocalError::Refused { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// A small pool of keep-alive connections to one local service.
pub(crate) struct Pool {
    service: &'static str,
    path: PathBuf,
    clients: Vec<UdsClient>,
    next: AtomicUsize,
}

impl Pool {
    pub fn new(service: &'static str, path: &Path) -> Self {
        Pool {
            service,
            path: path.to_owned(),
            clients: (0..CONNECTIONS)
                .map(|_| UdsClient::new(path).with_timeout(TIMEOUT))
                .collect(),
            next: AtomicUsize::new(0),
        }
    }

    /// One JSON call; `what` names the operation in errors.
    pub async fn call<T: serde::de::DeserializeOwned>(
        &self,
        what: &'static str,
        method: Method,
        path_and_query: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<T, LocalError> {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.clients.len();
        self.clients[i]
            .json(method, path_and_query, body)
            .await
            .map_err(|source| match source {
                ClientError::Status { status, message } => LocalError::Refused {
                    service: self.service,
                    what,
                    status,
                    message,
                },
                ClientError::Decode { source, .. } => LocalError::BadResponse {
                    service: self.service,
                    what,
                    detail: source.to_string(),
                },
                source => LocalError::Unreachable {
                    service: self.service,
                    path: self.path.clone(),
                    source,
                },
            })
    }
}

/// Serializes a wire type for [`Pool::call`].
pub(crate) fn to_json<T: serde::Serialize>(value: &T) -> serde_json::Value {
    // Wire types are plain structs of strings; serialization cannot fail.
    serde_json::to_value(value).unwrap_or(serde_json::Value::Null)
}
