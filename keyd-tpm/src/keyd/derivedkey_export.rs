//! `POST /derivedkey/export {"keyHandle"}` → `{"key"}`: the 32 bytes of a derived key, as
//! identityd needs them to upload module keys to IoT Hub. The base key never leaves the TPM.

use aziot_http::{HttpError, Request, Response, StatusCode};
use aziot_key_common_http::{export_derived_key, ByteString};

use super::error::KeydError;
use super::handle::Target;
use super::keys::Keys;

pub async fn post(keys: &Keys, req: &Request) -> Result<Response, HttpError> {
    let body: export_derived_key::Request = req.json()?;
    let Target::Derived { base, data } = keys.handles.verify(&body.handle.0).await? else {
        return Err(KeydError::invalid("handle", "handle is not for a derived key").into());
    };
    let key = keys.derive(&base, data).await?;
    Ok(Response::json(
        StatusCode::OK,
        &export_derived_key::Response {
            key: ByteString(key.to_vec()),
        },
    ))
}
