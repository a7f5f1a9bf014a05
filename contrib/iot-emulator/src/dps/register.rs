//! `PUT /{idScope}/registrations/{registrationId}/register`: TPM attestation.
//!
//! Without `Authorization` the device sends its EK and SRK; if the EK is the enrolled one, DPS
//! answers 401 with an `authenticationKey` that only that TPM can import, carrying a fresh
//! challenge HMAC key. The device then resends with a SAS token signed by that key; a valid token
//! starts an operation (202) that `assign.rs` completes in the background.

use std::sync::Arc;

use hyper::StatusCode;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::app::App;
use crate::error::ApiError;
use crate::http::{Reply, Req};
use crate::model::{Enrollment, ProvisioningStatus};
use crate::sas::SasToken;
use crate::state::{Challenge, Operation, Registration};

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RegisterBody {
    #[serde(default)]
    registration_id: Option<String>,
    #[serde(default)]
    tpm: Option<TpmBody>,
    #[serde(default)]
    payload: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct TpmBody {
    endorsement_key: String,
    #[serde(default)]
    storage_root_key: Option<String>,
}

pub async fn handle(app: &Arc<App>, req: &Req, registration_id: &str) -> Result<Reply, ApiError> {
    req.require_api_version()?;
    let body: RegisterBody = req.json()?;
    if let Some(id) = &body.registration_id {
        if id != registration_id {
            return Err(ApiError::BadRequest(format!(
                "registrationId {id:?} in the body differs from {registration_id:?} in the path"
            )));
        }
    }
    let enrollment = app
        .store
        .read(|s| s.enrollments.get(registration_id).cloned())
        .ok_or_else(|| {
            ApiError::Unauthorized(format!(
                "no individual enrollment for registration ID {registration_id:?}"
            ))
        })?;
    if enrollment.provisioning_status == ProvisioningStatus::Disabled {
        return Err(ApiError::Unauthorized(format!(
            "the enrollment for {registration_id:?} is disabled"
        )));
    }
    if let Some(tpm) = &body.tpm {
        check_ek(&enrollment, &tpm.endorsement_key)?;
    }
    match req.header("authorization") {
        None => challenge(app, registration_id, body).await,
        Some(header) => accept(app, registration_id, header, body).await,
    }
}

/// The EK sent must be byte-for-byte the enrolled one.
fn check_ek(enrollment: &Enrollment, sent_b64: &str) -> Result<Vec<u8>, ApiError> {
    let sent = super::decode_b64("tpm.endorsementKey", sent_b64)?;
    let enrolled = enrollment
        .attestation
        .tpm
        .as_ref()
        .and_then(|t| aziot_tpm_common::from_b64(&t.endorsement_key).ok())
        .ok_or_else(|| {
            ApiError::Internal("stored enrollment has no valid TPM endorsement key".into())
        })?;
    if sent == enrolled {
        Ok(sent)
    } else {
        Err(ApiError::EkMismatch)
    }
}

async fn challenge(
    app: &Arc<App>,
    registration_id: &str,
    body: RegisterBody,
) -> Result<Reply, ApiError> {
    let tpm = body.tpm.ok_or_else(|| {
        ApiError::BadRequest("a register request without Authorization must carry tpm.endorsementKey and tpm.storageRootKey".into())
    })?;
    let srk_b64 = tpm.storage_root_key.ok_or_else(|| {
        ApiError::BadRequest("tpm.storageRootKey is required to build the authenticationKey".into())
    })?;
    let ek = super::decode_b64("tpm.endorsementKey", &tpm.endorsement_key)?;
    let srk = super::decode_b64("tpm.storageRootKey", &srk_b64)?;
    let key = crate::ids::random_bytes(32);
    let blob = dps_attestation::build_authentication_key(&ek, &srk, &key).map_err(|e| {
        ApiError::BadRequest(format!(
            "cannot build an authenticationKey for this TPM: {e}"
        ))
    })?;
    let challenge = Challenge {
        key: aziot_tpm_common::b64(&key),
        endorsement_key: tpm.endorsement_key,
        storage_root_key: srk_b64,
        issued_utc: crate::time::rfc3339_now(),
    };
    let id = registration_id.to_owned();
    app.store
        .update(move |s| {
            let r = s
                .registrations
                .entry(id.clone())
                .or_insert_with(|| Registration {
                    registration_id: id,
                    ..Default::default()
                });
            r.challenge = Some(challenge);
            Ok(())
        })
        .await?;
    Ok(Reply::json(
        StatusCode::UNAUTHORIZED,
        json!({
            "message": "TPM attestation challenge: import authenticationKey and sign a SAS token with it",
            "authenticationKey": aziot_tpm_common::b64(&blob),
            "keyName": "registration",
        }),
    ))
}

/// Verifies a registration SAS token against the outstanding challenge key.
pub(super) fn verify_registration_token(
    app: &App,
    registration_id: &str,
    header: Option<&str>,
) -> Result<(), ApiError> {
    let token = SasToken::parse(header)?;
    token.require_key_name("registration")?;
    token.require_audience(&format!("{}/registrations/{registration_id}", app.id_scope))?;
    let key = app
        .store
        .read(|s| s.registrations.get(registration_id).and_then(|r| r.challenge.as_ref().map(|c| c.key.clone())))
        .ok_or_else(|| {
            ApiError::Unauthorized(format!(
                "no challenge was issued to {registration_id:?}; send the register request without Authorization first"
            ))
        })?;
    let key = aziot_tpm_common::from_b64(&key)
        .map_err(|e| ApiError::Internal(format!("stored challenge key: {e}")))?;
    token.verify(&key, crate::time::unix_now())?;
    Ok(())
}

async fn accept(
    app: &Arc<App>,
    registration_id: &str,
    header: &str,
    body: RegisterBody,
) -> Result<Reply, ApiError> {
    verify_registration_token(app, registration_id, Some(header))?;
    let operation = Operation {
        operation_id: crate::ids::operation_id(),
        registration_id: registration_id.to_owned(),
        ready_at_ms: crate::time::unix_millis()
            + u64::try_from(app.assigning.as_millis()).unwrap_or(u64::MAX),
        device_payload: body.payload,
        outcome: None,
    };
    let op_id = operation.operation_id.clone();
    app.store
        .update(move |s| {
            // Finished operations of this registration are superseded by the new one.
            s.operations.retain(|_, o| {
                o.registration_id != operation.registration_id || o.outcome.is_none()
            });
            s.operations
                .insert(operation.operation_id.clone(), operation);
            Ok(())
        })
        .await?;
    tokio::spawn(super::assign::complete(app.clone(), op_id.clone()));
    Ok(Reply::json(
        StatusCode::ACCEPTED,
        json!({"operationId": op_id, "status": "assigning"}),
    )
    .header("Retry-After", app.retry_after.to_string()))
}
