//! `GET /trust-bundle`: upstream answers an empty certificate (a stub); so do we, for everyone.

use aziot_http::Response;

use super::wire::TrustBundle;
use super::{ok_json, Ctx};
use crate::auth::Operation;
use crate::error::Error;

pub fn get(ctx: &Ctx<'_>) -> Result<Response, Error> {
    ctx.authorize(Operation::GetTrustBundle)?;
    ok_json(&TrustBundle {
        certificate: String::new(),
    })
}
