//! One emulated IoT Hub per listener. Each hub serves the REST calls identityd makes (devices,
//! module identities, twins) and authenticates them the way IoT Hub does: a SAS token signed with
//! the device's current key (the hub key DPS delivered in the second blob), a module's key, or the
//! hub's `iothubowner` policy key.

mod auth;
mod devices;
mod modules;
mod twins;

use std::sync::Arc;

use crate::app::App;
use crate::error::ApiError;
use crate::http::{Reply, Req};

pub use auth::Principal;

pub async fn route(app: &Arc<App>, hub_index: usize, req: &Req) -> Result<Reply, ApiError> {
    let hub = app
        .hubs
        .get(hub_index)
        .ok_or_else(|| ApiError::Internal(format!("no hub #{hub_index}")))?
        .hostname
        .clone();
    req.require_api_version()?;
    let principal = auth::authenticate(app, &hub, req)?;
    let segs = req.segments()?;
    let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
    match segs.as_slice() {
        ["devices"] => devices::list(app, &hub, req, &principal),
        ["devices", d] => devices::route(app, &hub, req, &principal, d).await,
        ["devices", d, "modules"] => modules::list(app, &hub, req, &principal, d),
        ["devices", d, "modules", m] => modules::route(app, &hub, req, &principal, d, m).await,
        ["twins", d] => twins::device(app, &hub, req, &principal, d),
        ["twins", d, "modules", m] => twins::module(app, &hub, req, &principal, d, m),
        _ => Err(ApiError::NoRoute(req.path.clone())),
    }
}
