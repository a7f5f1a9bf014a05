//! `GET /{idScope}/registrations/{registrationId}/operations/{operationId}`: polled with the same
//! SAS token as the register call. `assigning` (202 + Retry-After) until `assign.rs` has decided,
//! then 200 with `assigned` or `failed` and the `registrationState`, including the second
//! `authenticationKey` (the device's IoT Hub key) for an assignment.

use hyper::StatusCode;
use serde_json::json;

use crate::app::App;
use crate::error::{ApiError, Resource};
use crate::http::{Reply, Req};

pub fn handle(
    app: &App,
    req: &Req,
    registration_id: &str,
    operation_id: &str,
) -> Result<Reply, ApiError> {
    req.require_api_version()?;
    super::register::verify_registration_token(app, registration_id, req.header("authorization"))?;
    let operation = app
        .store
        .read(|s| s.operations.get(operation_id).cloned())
        .filter(|o| o.registration_id == registration_id)
        .ok_or_else(|| ApiError::NotFound {
            what: Resource::Operation,
            id: operation_id.to_owned(),
        })?;
    let Some(outcome) = operation.outcome else {
        return Ok(Reply::json(
            StatusCode::ACCEPTED,
            json!({
                "operationId": operation_id,
                "status": "assigning",
                "registrationState": {"registrationId": registration_id, "status": "assigning"},
            }),
        )
        .header("Retry-After", app.retry_after.to_string()));
    };
    let mut state =
        serde_json::to_value(&outcome.result).map_err(|e| ApiError::Internal(e.to_string()))?;
    if let Some(key) = &outcome.authentication_key {
        state["tpm"] = json!({"authenticationKey": key});
    }
    Ok(Reply::ok(
        json!({"operationId": operation_id, "status": outcome.result.status, "registrationState": state}),
    ))
}
