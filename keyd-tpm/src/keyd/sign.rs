//! `POST /sign {"keyHandle", "algorithm", "parameters"}` → `{"signature"}`. ECDSA with an EC
//! key pair (in the TPM, over the caller's digest, DER output); HMAC-SHA256 with a symmetric
//! key (in the TPM) or a derived key (derived in the TPM, then HMAC in software).

use aziot_http::{HttpError, Request, Response, StatusCode};
use aziot_key_common_http::sign::{self, Parameters};
use aziot_key_common_http::ByteString;

use crate::tpm::ObjectKind;

use super::crypto::hmac_sha256;
use super::error::KeydError;
use super::handle::Target;
use super::keys::Keys;

pub async fn post(keys: &Keys, req: &Request) -> Result<Response, HttpError> {
    let body: sign::Request = req.json()?;
    let target = keys.handles.verify(&body.key_handle.0).await?;
    let signature = match (target, body.parameters) {
        (Target::KeyPair(id), Parameters::Ecdsa { digest }) => {
            if digest.0.is_empty() {
                return Err(KeydError::invalid("digest", "must not be empty").into());
            }
            let object = keys.key_pair_of_kind(&id, ObjectKind::EcP256).await?;
            keys.tpm
                .ecdsa_sign(object, digest.into_inner())
                .await
                .map_err(KeydError::from)?
        }
        (Target::Key(id), Parameters::HmacSha256 { message }) => {
            let object = keys.hmac_object(&id).await?;
            keys.tpm
                .hmac(object, message.into_inner())
                .await
                .map_err(KeydError::from)?
        }
        (Target::Derived { base, data }, Parameters::HmacSha256 { message }) => {
            let derived = keys.derive(&base, data).await?;
            hmac_sha256(&derived, &message.0)?
        }
        _ => return Err(KeydError::wrong_mechanism().into()),
    };
    Ok(Response::json(
        StatusCode::OK,
        &sign::Response {
            signature: ByteString(signature),
        },
    ))
}
