//! `POST /restore_auth_key` → `200 {}` (extension): puts back the auth key that the last import
//! replaced, and keeps the current one as the previous. identityd-dps calls it when a DPS
//! registration fails after the challenge key was imported, so the device keeps its hub key.
//! Any body is ignored.

use aziot_http::{HttpError, Response, StatusCode};
use aziot_tpm_common::http::EmptyResponse;

use crate::tpm::TpmHandle;

pub async fn handle(tpm: &TpmHandle) -> Result<Response, HttpError> {
    tpm.restore_auth_key().await?;
    Ok(Response::json(StatusCode::OK, &EmptyResponse {}))
}
