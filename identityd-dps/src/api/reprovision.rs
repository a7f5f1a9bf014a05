//! `POST /identities/device/reprovision`: register with DPS again now; 204 once it succeeded. The
//! body is optional (`aziotctl` sends `{"type":"aziot"}`). The caller waits for the registration,
//! as with upstream, but other API callers do not.

use aziot_http::{Request, Response};
use tokio::sync::oneshot;

use super::Ctx;
use crate::app::Trigger;
use crate::auth::Operation;
use crate::error::Error;

pub async fn post(ctx: &Ctx<'_>, req: &Request) -> Result<Response, Error> {
    let _: Option<serde_json::Value> = req.json_opt().map_err(super::device::http_to_error)?;
    ctx.authorize(Operation::Reprovision)?;
    let (tx, rx) = oneshot::channel();
    ctx.app.trigger(Trigger::Reprovision(tx))?;
    log::info!("reprovisioning requested through the API");
    match rx.await {
        Ok(Ok(())) => Ok(Response::no_content()),
        Ok(Err(message)) => Err(Error::Reprovision(message)),
        Err(_) => Err(Error::Internal("the provisioning task stopped".into())),
    }
}
