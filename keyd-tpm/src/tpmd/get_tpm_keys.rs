//! `GET /get_tpm_keys`: the EK and SRK as marshalled TPM2B_PUBLIC, base64.

use aziot_http::{HttpError, Response, StatusCode};
use aziot_tpm_common::{b64, http::GetTpmKeysResponse};

use crate::tpm::TpmHandle;

pub async fn handle(tpm: &TpmHandle) -> Result<Response, HttpError> {
    let keys = tpm.get_tpm_keys().await?;
    Ok(Response::json(
        StatusCode::OK,
        &GetTpmKeysResponse {
            endorsement_key: b64(&keys.endorsement_key),
            storage_root_key: b64(&keys.storage_root_key),
        },
    ))
}
