//! `POST /sign_with_auth_key {"data": b64}` → `{"digest": b64}`: HMAC-SHA256 with the auth key.

use aziot_http::{HttpError, Request, Response, StatusCode};
use aziot_tpm_common::b64;
use aziot_tpm_common::http::{SignWithAuthKeyRequest, SignWithAuthKeyResponse};

use crate::tpm::TpmHandle;

pub async fn handle(tpm: &TpmHandle, req: &Request) -> Result<Response, HttpError> {
    let body: SignWithAuthKeyRequest = req.json()?;
    let data = super::decode_field("data", &body.data)?;
    let digest = tpm.sign_with_auth_key(data).await?;
    Ok(Response::json(StatusCode::OK, &SignWithAuthKeyResponse { digest: b64(&digest) }))
}
