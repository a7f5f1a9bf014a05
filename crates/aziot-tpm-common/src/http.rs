//! Request and response bodies of the TPM Service API (`/run/aziot/tpmd.sock`). Field names are
//! snake_case, byte fields standard base64, exactly as upstream aziot-tpmd.

use serde::{Deserialize, Serialize};

/// The only api-version the TPM Service API has.
pub const API_VERSION: &str = "2020-09-01";

/// `GET /get_tpm_keys` response: the EK and SRK as marshalled `TPM2B_PUBLIC` (size prefix
/// included), base64.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetTpmKeysResponse {
    pub endorsement_key: String,
    pub storage_root_key: String,
}

/// `POST /import_auth_key` request: the DPS `authenticationKey` blob, base64.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImportAuthKeyRequest {
    pub key: String,
}

/// `POST /import_auth_key` and `POST /restore_auth_key` response: an empty JSON object.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct EmptyResponse {}

/// `POST /sign_with_auth_key` request: the data to HMAC, base64.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SignWithAuthKeyRequest {
    pub data: String,
}

/// `POST /sign_with_auth_key` response: HMAC-SHA256 of the data with the auth key, base64.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SignWithAuthKeyResponse {
    pub digest: String,
}
