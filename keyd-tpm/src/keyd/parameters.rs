//! `POST /parameters/{parameterName} {"keyHandle"}` → `{"value"}`: a public parameter of a key
//! pair (see `public_params`), read from the object's public area without a TPM command.

use aziot_http::{HttpError, Request, Response, StatusCode};
use aziot_key_common_http::get_key_pair_public_parameter;

use super::error::KeydError;
use super::handle::Target;
use super::keys::Keys;
use super::public_params;

pub async fn post(keys: &Keys, req: &Request, name: &str) -> Result<Response, HttpError> {
    let body: get_key_pair_public_parameter::Request = req.json()?;
    let Target::KeyPair(id) = keys.handles.verify(&body.key_handle.0).await? else {
        return Err(KeydError::invalid("handle", "not a handle to a key pair").into());
    };
    let object = keys.key_pair(&id).await?;
    let value = public_params::parameter(&object.public_key().map_err(KeydError::from)?, name)?;
    Ok(Response::json(
        StatusCode::OK,
        &get_key_pair_public_parameter::Response { value },
    ))
}
