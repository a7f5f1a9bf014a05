//! Everything the emulator remembers, as one serializable value: enrollments, per-registration
//! DPS records (the outstanding challenge and the last result), registration operations, and the
//! devices of each hub. `store.rs` persists it; routes change it only through `Store::update`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::model::{Device, Enrollment};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct State {
    #[serde(default)]
    pub enrollments: BTreeMap<String, Enrollment>,
    #[serde(default)]
    pub registrations: BTreeMap<String, Registration>,
    #[serde(default)]
    pub operations: BTreeMap<String, Operation>,
    /// Hub hostname → device ID → device.
    #[serde(default)]
    pub hubs: BTreeMap<String, BTreeMap<String, Device>>,
}

impl State {
    /// The device with `device_id` in `hub`, compared case-insensitively (identityd lower-cases
    /// the whole SAS audience, device ID included).
    pub fn device(&self, hub: &str, device_id: &str) -> Option<&Device> {
        let devices = self.hubs.get(hub)?;
        devices.get(device_id).or_else(|| {
            devices
                .values()
                .find(|d| d.device_id.eq_ignore_ascii_case(device_id))
        })
    }

    pub fn device_mut(&mut self, hub: &str, device_id: &str) -> Option<&mut Device> {
        let devices = self.hubs.get_mut(hub)?;
        let key = devices
            .keys()
            .find(|k| k.as_str() == device_id)
            .or_else(|| devices.keys().find(|k| k.eq_ignore_ascii_case(device_id)))?
            .clone();
        devices.get_mut(&key)
    }
}

/// DPS's memory of one registration ID.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Registration {
    pub registration_id: String,
    /// The last challenge issued (401 with authenticationKey); SAS tokens must verify with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub challenge: Option<Challenge>,
    /// The last outcome, as the service API's `DeviceRegistrationState`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<RegistrationResult>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Challenge {
    /// The challenge HMAC key, base64.
    pub key: String,
    /// The EK and SRK (`TPM2B_PUBLIC`, base64) the blob was built for; the second blob (the hub
    /// key) goes to the same TPM.
    pub endorsement_key: String,
    pub storage_root_key: String,
    pub issued_utc: String,
}

/// DPS `DeviceRegistrationState` minus the TPM blob.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RegistrationResult {
    pub registration_id: String,
    pub created_date_time_utc: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assigned_hub: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_id: Option<String>,
    /// `assigned` or `failed`.
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub substatus: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_code: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_message: Option<String>,
    pub last_updated_date_time_utc: String,
    pub etag: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<Value>,
}

/// One `register` call accepted with 202, completed in the background.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Operation {
    pub operation_id: String,
    pub registration_id: String,
    /// Unix ms before which polls answer `assigning`.
    pub ready_at_ms: u64,
    /// The device's `payload`, for custom allocation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_payload: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<Outcome>,
}

/// How an operation ended: the registration state shown to the device, and for an assignment
/// the second `authenticationKey` (base64).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Outcome {
    pub result: RegistrationResult,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authentication_key: Option<String>,
}
