//! `GET|PUT|DELETE /identities/modules/{moduleId}?type=aziot`: one module identity. GET accepts
//! `type=local` (answered 400: not supported here); PUT needs a JSON body (any) and re-derives and
//! re-uploads the keys for the module's current generation; DELETE answers 204.

use aziot_http::{Request, Response};

use super::wire::Identity;
use super::{id_type, ok_json, Ctx};
use crate::auth::Operation;
use crate::error::Error;
use crate::identities;

pub async fn get(ctx: &Ctx<'_>, req: &Request, module_id: &str) -> Result<Response, Error> {
    ctx.authorize(Operation::GetModule(module_id))?;
    id_type(req, true)?;
    let identity = identities::get(ctx.app, module_id).await?;
    ok_json(&Identity::module(identity))
}

pub async fn update(ctx: &Ctx<'_>, req: &Request, module_id: &str) -> Result<Response, Error> {
    let _: serde_json::Value = req.json().map_err(super::device::http_to_error)?;
    ctx.authorize(Operation::UpdateModule)?;
    id_type(req, false)?;
    let identity = identities::update(ctx.app, module_id).await?;
    ok_json(&Identity::module(identity))
}

pub async fn delete(ctx: &Ctx<'_>, req: &Request, module_id: &str) -> Result<Response, Error> {
    ctx.authorize(Operation::DeleteModule)?;
    id_type(req, false)?;
    identities::delete(ctx.app, module_id).await?;
    Ok(Response::no_content())
}
