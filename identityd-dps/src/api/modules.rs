//! `GET /identities/modules?type=aziot` (list, without keys) and `POST /identities/modules`
//! (create, `type` from the body as upstream).

use aziot_http::{Request, Response};

use super::wire::{CreateModuleRequest, Identities, Identity};
use super::{check_type, id_type, ok_json, Ctx};
use crate::auth::Operation;
use crate::error::Error;
use crate::identities;

pub async fn list(ctx: &Ctx<'_>, req: &Request) -> Result<Response, Error> {
    ctx.authorize(Operation::GetAllHubModules)?;
    id_type(req, false)?;
    let identities = identities::list(ctx.app).await?;
    ok_json(&Identities {
        identities: identities.into_iter().map(Identity::module).collect(),
    })
}

pub async fn create(ctx: &Ctx<'_>, req: &Request) -> Result<Response, Error> {
    let body: CreateModuleRequest = req.json().map_err(super::device::http_to_error)?;
    ctx.authorize(Operation::CreateModule)?;
    check_type(body.id_type.as_deref(), true)?;
    if body.local_id_opts.is_some() {
        return Err(Error::LocalUnsupported);
    }
    let identity = identities::create(ctx.app, &body.module_id).await?;
    ok_json(&Identity::module(identity))
}
