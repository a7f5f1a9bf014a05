//! `POST /derivedkey {"baseKeyHandle", "derivationData"}` → `{"keyHandle"}`: a handle to
//! HMAC-SHA256(base key, derivationData). Nothing is computed here; the TPM derives the key
//! each time the handle is used. Unlike upstream, the base handle is checked now, so a forged
//! base or a derived-of-derived is a 400 at once rather than at first use.

use aziot_http::{HttpError, Request, Response, StatusCode};
use aziot_key_common_http::create_derived_key;

use super::error::KeydError;
use super::handle::Target;
use super::keys::Keys;

pub async fn post(keys: &Keys, req: &Request) -> Result<Response, HttpError> {
    let body: create_derived_key::Request = req.json()?;
    let base_handle = body.base_handle.0;
    let base = match keys.handles.verify(&base_handle).await? {
        Target::Key(id) => id,
        Target::Derived { .. } => {
            return Err(KeydError::invalid(
                "baseKeyHandle",
                "a derived key cannot be derived from again",
            )
            .into())
        }
        Target::KeyPair(_) => {
            return Err(KeydError::invalid(
                "baseKeyHandle",
                "a key pair cannot be the base of a derived key",
            )
            .into())
        }
    };
    keys.hmac_object(&base).await?;
    let handle = keys
        .handles
        .mint_derived(&base_handle, &base, body.derivation_data.into_inner())
        .await?;
    Ok(Response::json(
        StatusCode::OK,
        &create_derived_key::Response { handle },
    ))
}
