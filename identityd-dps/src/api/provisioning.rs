//! `GET /identities/provisioning` (api-version 2021-12-01 and later): how the device provisions.
//! Anyone may ask, as upstream. The registration ID is the configured one or the one derived from
//! the EK; the payload is the configured payload file's JSON.
//!
//! `GET /identities/provisioning/status` (our extension, any api-version): where provisioning
//! stands, with the last DPS or IoT Hub error and when the next try is (see `progress`). Open to
//! anyone who may connect, like the route above: it says nothing the enrollment does not.

use aziot_http::Response;

use super::wire::ProvisioningInfo;
use super::{ok_json, Ctx};
use crate::error::Error;

pub async fn get(ctx: &Ctx<'_>) -> Result<Response, Error> {
    let app = ctx.app;
    let registration_id = match app.known_registration_id() {
        Some(id) => id,
        None => app.registration_id().await.map_err(Error::Tpm)?,
    };
    let payload = match &app.config.dps.payload_path {
        Some(path) => std::fs::read(path)
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok()),
        None => None,
    };
    ok_json(&ProvisioningInfo::Dps {
        auth: "tpm",
        endpoint: app.config.dps.global_endpoint.clone(),
        scope_id: app.config.dps.scope_id.clone(),
        registration_id,
        payload,
    })
}

pub fn status(ctx: &Ctx<'_>) -> Result<Response, Error> {
    ok_json(&ctx.app.progress.snapshot())
}
