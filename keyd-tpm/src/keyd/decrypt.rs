//! `POST /decrypt {"keyHandle", "algorithm": "AEAD", "parameters", "ciphertext"}` →
//! `{"plaintext"}`, with a symmetric or derived key. RSA mechanisms are 400, as upstream.

use aziot_http::{HttpError, Request, Response, StatusCode};
use aziot_key_common_http::encrypt::Parameters;
use aziot_key_common_http::{decrypt, ByteString};

use super::aead;
use super::error::KeydError;
use super::handle::Target;
use super::keys::Keys;

pub async fn post(keys: &Keys, req: &Request) -> Result<Response, HttpError> {
    let body: decrypt::Request = req.json()?;
    let target = keys.handles.verify(&body.key_handle.0).await?;
    let plaintext = match (target, body.parameters) {
        (target @ (Target::Key(_) | Target::Derived { .. }), Parameters::Aead { iv, aad }) => {
            let key = keys.aes_key(&target).await?;
            aead::open(&key, &iv.0, &aad.0, &body.ciphertext.0)?
        }
        _ => return Err(KeydError::wrong_mechanism().into()),
    };
    Ok(Response::json(
        StatusCode::OK,
        &decrypt::Response {
            plaintext: ByteString(plaintext),
        },
    ))
}
