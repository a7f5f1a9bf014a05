//! `POST /identities/device {"type":"aziot"}`: the device identity (`auth.type = "tpm"`).

use aziot_http::{Request, Response};

use super::wire::{DeviceRequest, Identity};
use super::{ok_json, Ctx};
use crate::auth::Operation;
use crate::error::Error;

pub async fn post(ctx: &Ctx<'_>, req: &Request) -> Result<Response, Error> {
    let _: DeviceRequest = req.json().map_err(http_to_error)?;
    ctx.authorize(Operation::GetDevice)?;
    let (device, _) = ctx.app.ready_device()?;
    ok_json(&Identity::device(&device))
}

/// Body errors keep the server plumbing's status and message (400 missing body, 422 bad JSON).
pub(super) fn http_to_error(e: aziot_http::HttpError) -> Error {
    Error::Body(e)
}
