//! `GET /identities/identity`: the caller's own identity: the device's for callers allowed to
//! read it, else (a host process) its module identity.

use aziot_http::Response;

use super::wire::Identity;
use super::{ok_json, Ctx};
use crate::auth::{Caller, Operation};
use crate::error::Error;
use crate::identities;

pub async fn get(ctx: &Ctx<'_>) -> Result<Response, Error> {
    if ctx.authorize(Operation::GetDevice).is_ok() {
        let (device, _) = ctx.app.ready_device()?;
        return ok_json(&Identity::device(&device));
    }
    let Caller::HostProcess(principal) = ctx.caller else {
        return Err(Error::Unauthorized);
    };
    ctx.authorize(Operation::GetModule(&principal.name))?;
    let identity = identities::get(ctx.app, &principal.name).await?;
    ok_json(&Identity::module(identity))
}
