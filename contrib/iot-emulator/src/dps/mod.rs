//! The DPS side: the device API (`register`, `operations`) that runs TPM attestation, and the
//! service API (`enrollments`, `registrations`) that operators use with the connection string the
//! emulator prints. One file per route family; allocation and the background completion of an
//! operation have their own files.

pub mod allocate;
pub mod assign;
mod enrollments;
mod operations;
mod register;
mod registrations;

use std::sync::Arc;

use hyper::Method;

use crate::app::App;
use crate::error::ApiError;
use crate::http::{Reply, Req};
use crate::sas::SasToken;

/// The policy name of the service API's connection string.
pub const SERVICE_POLICY: &str = "provisioningserviceowner";

pub async fn route(app: &Arc<App>, req: &Req) -> Result<Reply, ApiError> {
    let segs = req.segments()?;
    let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
    match segs.as_slice() {
        ["enrollments", rest @ ..] => {
            authorize_service(app, req)?;
            enrollments::route(app, req, rest).await
        }
        ["registrations", rest @ ..] => {
            authorize_service(app, req)?;
            registrations::route(app, req, rest).await
        }
        [scope, "registrations", id, "register"] => {
            check_scope(app, scope)?;
            match req.method {
                Method::PUT => register::handle(app, req, id).await,
                ref m => Err(ApiError::MethodNotAllowed(m.to_string())),
            }
        }
        [scope, "registrations", id, "operations", op] => {
            check_scope(app, scope)?;
            match req.method {
                Method::GET => operations::handle(app, req, id, op),
                ref m => Err(ApiError::MethodNotAllowed(m.to_string())),
            }
        }
        _ => Err(ApiError::NoRoute(req.path.clone())),
    }
}

fn check_scope(app: &App, scope: &str) -> Result<(), ApiError> {
    if scope.eq_ignore_ascii_case(&app.id_scope) {
        Ok(())
    } else {
        Err(ApiError::NoRoute(format!(
            "ID scope {scope:?} (this emulator's ID scope is {})",
            app.id_scope
        )))
    }
}

/// Service API callers present a SAS token for the DPS host signed with the
/// `provisioningserviceowner` key.
fn authorize_service(app: &App, req: &Req) -> Result<(), ApiError> {
    let token = SasToken::parse(req.header("authorization"))?;
    token.require_key_name(SERVICE_POLICY)?;
    token.require_audience(&app.dps_host)?;
    token.verify(&app.service_key, crate::time::unix_now())?;
    Ok(())
}

/// Decodes a base64 field, naming it in the error.
pub(crate) fn decode_b64(field: &str, value: &str) -> Result<Vec<u8>, ApiError> {
    aziot_tpm_common::from_b64(value)
        .map_err(|e| ApiError::BadRequest(format!("{field} is not standard base64: {e}")))
}
