//! `POST /import_auth_key {"key": b64}` → `200 {}`: imports a DPS authenticationKey blob.

use aziot_http::{HttpError, Request, Response, StatusCode};
use aziot_tpm_common::http::{EmptyResponse, ImportAuthKeyRequest};

use crate::tpm::TpmHandle;

pub async fn handle(tpm: &TpmHandle, req: &Request) -> Result<Response, HttpError> {
    let body: ImportAuthKeyRequest = req.json()?;
    let blob = super::decode_field("key", &body.key)?;
    tpm.import_auth_key(blob).await?;
    Ok(Response::json(StatusCode::OK, &EmptyResponse {}))
}
