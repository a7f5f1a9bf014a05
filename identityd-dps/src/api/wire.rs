//! JSON of the Identity Service API, as upstream's `aziot-identity-common(-http)` spells it.

use serde::{Deserialize, Serialize};

use crate::device::Device;
use crate::identities::ModuleIdentity;

/// `Identity`: adjacently tagged `type`/`spec`.
#[derive(Debug, Serialize)]
#[serde(tag = "type", content = "spec", rename_all = "lowercase")]
pub enum Identity {
    Aziot(AziotSpec),
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AziotSpec {
    pub hub_name: String,
    pub gateway_host: String,
    pub device_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub module_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gen_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth: Option<AuthInfo>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AuthInfo {
    #[serde(rename = "type")]
    pub auth_type: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_handle: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert_id: Option<String>,
}

impl Identity {
    /// The device: authenticated by the TPM, so no key handle (as upstream).
    pub fn device(device: &Device) -> Self {
        Identity::Aziot(AziotSpec {
            hub_name: device.hub_name.clone(),
            gateway_host: device.gateway_host.clone(),
            device_id: device.device_id.clone(),
            module_id: None,
            gen_id: None,
            auth: Some(AuthInfo {
                auth_type: "tpm",
                key_handle: None,
                cert_id: None,
            }),
        })
    }

    pub fn module(m: ModuleIdentity) -> Self {
        Identity::Aziot(AziotSpec {
            hub_name: m.device.hub_name,
            gateway_host: m.device.gateway_host,
            device_id: m.module.device_id,
            module_id: Some(m.module.module_id),
            gen_id: m.module.generation_id,
            auth: m.key_handle.map(|h| AuthInfo {
                auth_type: "sas",
                key_handle: Some(h.0),
                cert_id: None,
            }),
        })
    }
}

#[derive(Debug, Serialize)]
pub struct Identities {
    pub identities: Vec<Identity>,
}

/// `POST /identities/modules` body.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateModuleRequest {
    #[serde(rename = "type")]
    pub id_type: Option<String>,
    pub module_id: String,
    #[serde(default)]
    pub local_id_opts: Option<serde_json::Value>,
}

/// `POST /identities/device` body: `{"type": "aziot"}`, the value ignored as upstream.
#[derive(Debug, Deserialize)]
pub struct DeviceRequest {
    #[serde(rename = "type", default)]
    pub _id_type: Option<String>,
}

/// `GET /identities/provisioning`: internally tagged `source`, snake_case.
#[derive(Debug, Serialize)]
#[serde(tag = "source", rename_all = "lowercase")]
pub enum ProvisioningInfo {
    Dps {
        auth: &'static str,
        endpoint: String,
        scope_id: String,
        registration_id: String,
        payload: Option<serde_json::Value>,
    },
}

#[derive(Debug, Serialize)]
pub struct TrustBundle {
    pub certificate: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::Module;
    use aziot_key_common_http::KeyHandle;

    fn device() -> Device {
        Device {
            hub_name: "hub.example".into(),
            gateway_host: "hub.example".into(),
            device_id: "dev1".into(),
        }
    }

    #[test]
    fn device_identity_matches_upstream_json() {
        let v = serde_json::to_value(Identity::device(&device())).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"type":"aziot","spec":{"hubName":"hub.example","gatewayHost":"hub.example",
                "deviceId":"dev1","auth":{"type":"tpm"}}})
        );
    }

    #[test]
    fn module_identity_has_gen_id_and_key_handle() {
        let m = ModuleIdentity {
            device: device(),
            module: Module {
                module_id: "m1".into(),
                device_id: "dev1".into(),
                managed_by: None,
                generation_id: Some("g1".into()),
                authentication: None,
            },
            key_handle: Some(KeyHandle("h".into())),
        };
        let v = serde_json::to_value(Identity::module(m)).unwrap();
        assert_eq!(v["spec"]["moduleId"], "m1");
        assert_eq!(v["spec"]["genId"], "g1");
        assert_eq!(
            v["spec"]["auth"],
            serde_json::json!({"type":"sas","keyHandle":"h"})
        );
    }

    #[test]
    fn provisioning_info_is_snake_case_with_source_tag() {
        let v = serde_json::to_value(ProvisioningInfo::Dps {
            auth: "tpm",
            endpoint: "https://x/".into(),
            scope_id: "s".into(),
            registration_id: "r".into(),
            payload: None,
        })
        .unwrap();
        assert_eq!(
            v,
            serde_json::json!({"source":"dps","auth":"tpm","endpoint":"https://x/","scope_id":"s",
                "registration_id":"r","payload":null})
        );
    }
}
