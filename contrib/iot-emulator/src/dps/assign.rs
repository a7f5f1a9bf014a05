//! Completes a registration operation in the background, as DPS does while it answers
//! `assigning`: wait out the configured assigning time, allocate a hub (possibly calling a
//! webhook — no lock is held meanwhile), mint a NEW hub key and the second `authenticationKey`
//! for the device's TPM, then create or update the device in the chosen hub in one state update.
//!
//! Re-registration gives the device a new key (its old one stops working) and either keeps its
//! hub or moves it (`reprovisionPolicy.updateHubAssignment`); a moved device leaves the old hub,
//! taking its modules and twin along when `migrateDeviceData` is set.

use std::sync::Arc;
use std::time::Duration;

use crate::app::App;
use crate::dps::allocate::{self, Allocation, AllocationError, DeviceContext};
use crate::error::ApiError;
use crate::model::{Device, DeviceStatus, Enrollment, SymmetricKey, Twin};
use crate::state::{Challenge, Outcome, RegistrationResult, State};

/// Restarts completion of operations left `assigning` by a previous run.
pub fn resume(app: &Arc<App>) {
    let pending: Vec<String> = app.store.read(|s| {
        s.operations
            .values()
            .filter(|o| o.outcome.is_none())
            .map(|o| o.operation_id.clone())
            .collect()
    });
    for op in pending {
        tokio::spawn(complete(app.clone(), op));
    }
}

pub async fn complete(app: Arc<App>, operation_id: String) {
    if let Err(e) = try_complete(&app, &operation_id).await {
        log::error!("completing registration operation {operation_id}: {e}");
    }
}

async fn try_complete(app: &App, operation_id: &str) -> Result<(), ApiError> {
    let Some(op) = app.store.read(|s| s.operations.get(operation_id).cloned()) else {
        return Ok(());
    };
    if op.outcome.is_some() {
        return Ok(());
    }
    let wait = op.ready_at_ms.saturating_sub(crate::time::unix_millis());
    tokio::time::sleep(Duration::from_millis(wait)).await;

    let id = op.registration_id.clone();
    let (enrollment, challenge, previous) = app.store.read(|s| {
        let reg = s.registrations.get(&id);
        (
            s.enrollments.get(&id).cloned(),
            reg.and_then(|r| r.challenge.clone()),
            reg.and_then(|r| r.result.clone())
                .filter(|r| r.status == "assigned"),
        )
    });
    let decision = match (&enrollment, &challenge) {
        (Some(e), Some(c)) => {
            decide(app, e, c, previous.as_ref(), op.device_payload.as_ref()).await
        }
        _ => Err(AllocationError {
            code: 404_201,
            message: "the enrollment or its challenge was deleted during assignment".into(),
        }),
    };
    let outcome = match decision {
        Ok((allocation, hub_key, blob)) => {
            let enrollment =
                enrollment.ok_or_else(|| ApiError::Internal("enrollment vanished".into()))?;
            let op_id = operation_id.to_owned();
            app.store
                .update(move |s| Ok(assign(s, &op_id, &enrollment, allocation, &hub_key, blob)))
                .await?
        }
        Err(e) => {
            let op_id = operation_id.to_owned();
            app.store
                .update(move |s| Ok(fail(s, &op_id, &id, e)))
                .await?
        }
    };
    log::info!(
        "registration {} {}{}",
        op.registration_id,
        outcome.result.status,
        outcome
            .result
            .assigned_hub
            .as_deref()
            .map(|h| format!(" to {h}"))
            .unwrap_or_default()
    );
    Ok(())
}

/// Allocation plus the new hub key and the blob carrying it to the device's TPM.
async fn decide(
    app: &App,
    enrollment: &Enrollment,
    challenge: &Challenge,
    previous: Option<&RegistrationResult>,
    payload: Option<&serde_json::Value>,
) -> Result<(Allocation, Vec<u8>, String), AllocationError> {
    let current_hub = previous.and_then(|p| p.assigned_hub.as_deref());
    let keep_hub = !enrollment.reprovision().update_hub_assignment
        && current_hub
            .is_some_and(|h| allocate::candidates(app, enrollment).iter().any(|c| c == h));
    let allocation = match current_hub {
        Some(hub) if keep_hub => Allocation {
            hub: hub.to_owned(),
            initial_twin: None,
            payload: None,
        },
        _ => {
            let context = DeviceContext {
                registration_id: &enrollment.registration_id,
                current_hub,
                current_device_id: previous.and_then(|p| p.device_id.as_deref()),
                endorsement_key: &challenge.endorsement_key,
                storage_root_key: &challenge.storage_root_key,
                payload,
            };
            allocate::allocate(app, enrollment, &context).await?
        }
    };
    let hub_key = crate::ids::random_bytes(32);
    let internal = |e: String| AllocationError {
        code: 500_000,
        message: e,
    };
    let ek = aziot_tpm_common::from_b64(&challenge.endorsement_key)
        .map_err(|e| internal(e.to_string()))?;
    let srk = aziot_tpm_common::from_b64(&challenge.storage_root_key)
        .map_err(|e| internal(e.to_string()))?;
    let blob = dps_attestation::build_authentication_key(&ek, &srk, &hub_key)
        .map_err(|e| internal(e.to_string()))?;
    Ok((allocation, hub_key, aziot_tpm_common::b64(&blob)))
}

fn assign(
    s: &mut State,
    op_id: &str,
    enrollment: &Enrollment,
    allocation: Allocation,
    hub_key: &[u8],
    blob: String,
) -> Outcome {
    let now = crate::time::rfc3339_now();
    let id = &enrollment.registration_id;
    let device_id = enrollment.effective_device_id();
    let reg = s.registrations.entry(id.clone()).or_default();
    let previous = reg.result.clone().filter(|r| r.status == "assigned");
    let created = previous
        .as_ref()
        .map(|p| p.created_date_time_utc.clone())
        .unwrap_or_else(|| now.clone());

    // Take the device out of its old place when it moves (hub or device ID changed).
    let old = previous
        .as_ref()
        .and_then(|p| Some((p.assigned_hub.clone()?, p.device_id.clone()?)));
    let mut carried: Option<Device> = None;
    let mut moved = false;
    if let Some((old_hub, old_id)) = &old {
        if *old_hub != allocation.hub || *old_id != device_id {
            moved = *old_hub != allocation.hub;
            carried = s.hubs.get_mut(old_hub).and_then(|d| d.remove(old_id));
        }
    }
    let migrate = enrollment.reprovision().migrate_device_data;
    let substatus = match (&previous, moved, migrate) {
        (None, _, _) | (Some(_), false, _) => "initialAssignment",
        (Some(_), true, true) => "deviceDataMigrated",
        (Some(_), true, false) => "deviceDataReset",
    };
    let twin = allocation
        .initial_twin
        .as_ref()
        .or(enrollment.initial_twin.as_ref());
    let devices = s.hubs.entry(allocation.hub.clone()).or_default();
    let existing = devices
        .remove(&device_id)
        .or(if migrate { carried } else { None });
    let mut device = existing.unwrap_or_else(|| Device {
        device_id: device_id.clone(),
        generation_id: crate::ids::generation_id(),
        etag: String::new(),
        status: DeviceStatus::Enabled,
        keys: SymmetricKey::default(),
        iot_edge: false,
        registration_id: None,
        twin: Twin::from_initial(twin),
        modules: Default::default(),
    });
    device.device_id = device_id.clone();
    device.keys = SymmetricKey {
        primary_key: Some(aziot_tpm_common::b64(hub_key)),
        secondary_key: None,
    };
    device.etag = crate::ids::etag();
    device.iot_edge = enrollment.capabilities.iot_edge;
    device.ensure_edge_modules();
    device.registration_id = Some(id.clone());
    devices.insert(device_id.clone(), device);

    let result = RegistrationResult {
        registration_id: id.clone(),
        created_date_time_utc: created,
        assigned_hub: Some(allocation.hub),
        device_id: Some(device_id),
        status: "assigned".into(),
        substatus: Some(substatus.into()),
        error_code: None,
        error_message: None,
        last_updated_date_time_utc: now,
        etag: crate::ids::etag(),
        payload: allocation.payload,
    };
    let reg = s.registrations.entry(id.clone()).or_default();
    reg.result = Some(result.clone());
    let outcome = Outcome {
        result,
        authentication_key: Some(blob),
    };
    if let Some(op) = s.operations.get_mut(op_id) {
        op.outcome = Some(outcome.clone());
    }
    outcome
}

fn fail(s: &mut State, op_id: &str, registration_id: &str, error: AllocationError) -> Outcome {
    let now = crate::time::rfc3339_now();
    let reg = s
        .registrations
        .entry(registration_id.to_owned())
        .or_default();
    reg.registration_id = registration_id.to_owned();
    let result = RegistrationResult {
        registration_id: registration_id.to_owned(),
        created_date_time_utc: reg
            .result
            .as_ref()
            .map(|r| r.created_date_time_utc.clone())
            .unwrap_or_else(|| now.clone()),
        assigned_hub: None,
        device_id: None,
        status: "failed".into(),
        substatus: None,
        error_code: Some(error.code),
        error_message: Some(error.message),
        last_updated_date_time_utc: now,
        etag: crate::ids::etag(),
        payload: None,
    };
    // The service API shows the last attempt; a device a previous success created stays in its
    // hub with its key.
    reg.result = Some(result.clone());
    let outcome = Outcome {
        result,
        authentication_key: None,
    };
    if let Some(op) = s.operations.get_mut(op_id) {
        op.outcome = Some(outcome.clone());
    }
    outcome
}
