//! Wire types shared by routes and state: the DPS individual enrollment (as the DPS service API
//! defines it; unknown fields are ignored, read-only ones overwritten) and the IoT Hub device and
//! module records. They are stored as they are served, so the state file reads like the API.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

fn is_false(b: &bool) -> bool {
    !*b
}

fn default_true() -> bool {
    true
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Enrollment {
    #[serde(default)]
    pub registration_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_id: Option<String>,
    pub attestation: Attestation,
    #[serde(default)]
    pub capabilities: Capabilities,
    #[serde(default)]
    pub provisioning_status: ProvisioningStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allocation_policy: Option<AllocationPolicy>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub iot_hubs: Vec<String>,
    /// Deprecated single-hub form of `iotHubs`, still accepted for `static`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iot_hub_host_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_twin: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_allocation_definition: Option<CustomAllocationDefinition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reprovision_policy: Option<ReprovisionPolicy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub optional_device_information: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_date_time_utc: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_updated_date_time_utc: Option<String>,
}

impl Enrollment {
    /// The device ID DPS creates: the enrollment's, or the registration ID.
    pub fn effective_device_id(&self) -> String {
        self.device_id
            .clone()
            .filter(|d| !d.is_empty())
            .unwrap_or_else(|| self.registration_id.clone())
    }

    pub fn reprovision(&self) -> ReprovisionPolicy {
        self.reprovision_policy.clone().unwrap_or_default()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Attestation {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tpm: Option<TpmAttestation>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TpmAttestation {
    pub endorsement_key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_root_key: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Capabilities {
    #[serde(default)]
    pub iot_edge: bool,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ProvisioningStatus {
    #[default]
    Enabled,
    Disabled,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum AllocationPolicy {
    Hashed,
    GeoLatency,
    Static,
    Custom,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CustomAllocationDefinition {
    pub webhook_url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReprovisionPolicy {
    #[serde(default = "default_true")]
    pub update_hub_assignment: bool,
    #[serde(default = "default_true")]
    pub migrate_device_data: bool,
}

impl Default for ReprovisionPolicy {
    fn default() -> Self {
        Self {
            update_hub_assignment: true,
            migrate_device_data: true,
        }
    }
}

/// `{"primaryKey","secondaryKey"}`, base64.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct SymmetricKey {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secondary_key: Option<String>,
}

impl SymmetricKey {
    /// The decoded keys that are set (a token may be signed with either).
    pub fn decoded(&self) -> Vec<Vec<u8>> {
        [&self.primary_key, &self.secondary_key]
            .into_iter()
            .flatten()
            .filter_map(|k| data_encoding::BASE64.decode(k.as_bytes()).ok())
            .collect()
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum DeviceStatus {
    #[default]
    Enabled,
    Disabled,
}

/// A twin's user-settable part, from `initialTwin` (`{"tags":{}, "properties":{"desired":{}}}`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Twin {
    #[serde(default)]
    pub tags: Value,
    #[serde(default)]
    pub desired: Value,
}

impl Twin {
    pub fn from_initial(initial: Option<&Value>) -> Self {
        let Some(v) = initial else {
            return Self::default();
        };
        Self {
            tags: v.get("tags").cloned().unwrap_or(Value::Null),
            desired: v
                .get("properties")
                .and_then(|p| p.get("desired"))
                .cloned()
                .unwrap_or(Value::Null),
        }
    }
}

/// A device identity in one hub.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Device {
    pub device_id: String,
    pub generation_id: String,
    pub etag: String,
    #[serde(default)]
    pub status: DeviceStatus,
    pub keys: SymmetricKey,
    #[serde(default, skip_serializing_if = "is_false")]
    pub iot_edge: bool,
    /// The DPS registration that created it, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registration_id: Option<String>,
    #[serde(default)]
    pub twin: Twin,
    #[serde(default)]
    pub modules: BTreeMap<String, Module>,
}

/// The module identities IoT Hub creates for an IoT Edge device (aziot-edged's watchdog and
/// edgeAgent expect them to exist).
pub const EDGE_SYSTEM_MODULES: [&str; 2] = ["$edgeAgent", "$edgeHub"];

impl Device {
    /// As IoT Hub does when a device is or becomes an IoT Edge device: `$edgeAgent` and
    /// `$edgeHub` exist, with SAS keys of their own. Existing ones are kept as they are.
    pub fn ensure_edge_modules(&mut self) {
        if !self.iot_edge {
            return;
        }
        for id in EDGE_SYSTEM_MODULES {
            if !self.modules.contains_key(id) {
                let module = Module {
                    module_id: id.to_owned(),
                    device_id: self.device_id.clone(),
                    managed_by: None,
                    generation_id: crate::ids::generation_id(),
                    etag: crate::ids::etag(),
                    auth_type: "sas".into(),
                    keys: SymmetricKey {
                        primary_key: Some(crate::ids::symmetric_key()),
                        secondary_key: Some(crate::ids::symmetric_key()),
                    },
                };
                self.modules.insert(id.to_owned(), module);
            }
        }
    }
}

/// A module identity of a device.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Module {
    pub module_id: String,
    pub device_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub managed_by: Option<String>,
    pub generation_id: String,
    pub etag: String,
    /// `sas`, `selfSigned`, `certificateAuthority` or `none`.
    pub auth_type: String,
    #[serde(default)]
    pub keys: SymmetricKey,
}
