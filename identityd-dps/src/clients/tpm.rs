//! The TPM Service API (api-version 2020-09-01), plus keyd-tpm's `POST /restore_auth_key`.

use std::path::Path;

use aziot_http::{Method, StatusCode};
use aziot_tpm_common::http::{
    EmptyResponse, GetTpmKeysResponse, ImportAuthKeyRequest, SignWithAuthKeyRequest,
    SignWithAuthKeyResponse,
};
use aziot_tpm_common::{b64, from_b64};

use super::{to_json, LocalError, Pool};

const SERVICE: &str = "TPM Service";

fn path(route: &str) -> String {
    format!(
        "{route}?api-version={}",
        aziot_tpm_common::http::API_VERSION
    )
}

pub struct TpmClient {
    pool: Pool,
}

/// The EK and SRK as marshalled `TPM2B_PUBLIC`, what DPS wants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TpmKeys {
    pub endorsement_key: Vec<u8>,
    pub storage_root_key: Vec<u8>,
}

/// What `restore_auth_key` achieved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RestoreOutcome {
    /// The auth key the last import replaced is back.
    Restored,
    /// The TPM Service keeps no previous key (nothing was replaced, e.g. a first registration).
    NothingToRestore(String),
    /// The TPM Service has no such route (upstream aziot-tpmd).
    Unsupported,
}

impl TpmClient {
    pub fn new(socket: &Path) -> Self {
        TpmClient {
            pool: Pool::new(SERVICE, socket),
        }
    }

    pub async fn get_tpm_keys(&self) -> Result<TpmKeys, LocalError> {
        let what = "get_tpm_keys";
        let r: GetTpmKeysResponse = self
            .pool
            .call(what, Method::GET, &path("/get_tpm_keys"), None)
            .await?;
        let decode = |field: &str, v: &str| {
            from_b64(v).map_err(|e| LocalError::BadResponse {
                service: SERVICE,
                what,
                detail: format!("{field} is not base64: {e}"),
            })
        };
        Ok(TpmKeys {
            endorsement_key: decode("endorsement_key", &r.endorsement_key)?,
            storage_root_key: decode("storage_root_key", &r.storage_root_key)?,
        })
    }

    pub async fn import_auth_key(&self, blob: &[u8]) -> Result<(), LocalError> {
        let body = to_json(&ImportAuthKeyRequest { key: b64(blob) });
        let _: EmptyResponse = self
            .pool
            .call(
                "import_auth_key",
                Method::POST,
                &path("/import_auth_key"),
                Some(&body),
            )
            .await?;
        Ok(())
    }

    /// HMAC-SHA256 of `data` with the DPS auth key, computed in the TPM.
    pub async fn sign(&self, data: &[u8]) -> Result<Vec<u8>, LocalError> {
        let what = "sign_with_auth_key";
        let body = to_json(&SignWithAuthKeyRequest { data: b64(data) });
        let r: SignWithAuthKeyResponse = self
            .pool
            .call(
                what,
                Method::POST,
                &path("/sign_with_auth_key"),
                Some(&body),
            )
            .await?;
        from_b64(&r.digest).map_err(|e| LocalError::BadResponse {
            service: SERVICE,
            what,
            detail: format!("digest is not base64: {e}"),
        })
    }

    pub async fn restore_auth_key(&self) -> Result<RestoreOutcome, LocalError> {
        let body = serde_json::json!({});
        let result: Result<EmptyResponse, _> = self
            .pool
            .call(
                "restore_auth_key",
                Method::POST,
                &path("/restore_auth_key"),
                Some(&body),
            )
            .await;
        match result {
            Ok(_) => Ok(RestoreOutcome::Restored),
            Err(LocalError::Refused {
                status: StatusCode::NOT_FOUND,
                ..
            }) => Ok(RestoreOutcome::Unsupported),
            Err(LocalError::Refused {
                status: StatusCode::BAD_REQUEST,
                message,
                ..
            }) => Ok(RestoreOutcome::NothingToRestore(message)),
            Err(e) => Err(e),
        }
    }
}
