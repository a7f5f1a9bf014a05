//! IoT Hub's `Module` JSON, with the fields upstream identityd reads and writes (camelCase, absent
//! fields omitted). The same shape, without `authentication`, is the module backup file.

use serde::{Deserialize, Serialize};

/// The service API version for module identities.
pub const API_VERSION: &str = "2021-04-12";

#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Module {
    pub module_id: String,
    pub device_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub managed_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authentication: Option<Authentication>,
}

#[derive(Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Authentication {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub symmetric_key: Option<SymmetricKey>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x509_thumbprint: Option<serde_json::Value>,
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub auth_type: Option<String>,
}

/// Module keys, base64. Never printed.
#[derive(Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SymmetricKey {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secondary_key: Option<String>,
}

impl std::fmt::Debug for Authentication {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authentication")
            .field("type", &self.auth_type)
            .field(
                "symmetric_key",
                &self.symmetric_key.as_ref().map(|_| "<redacted>"),
            )
            .finish_non_exhaustive()
    }
}

impl Module {
    /// The module without its keys: what the backup keeps.
    pub fn without_keys(&self) -> Module {
        Module {
            authentication: None,
            ..self.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_hub_answer_and_writes_upstream_fields_only() {
        let m: Module = serde_json::from_str(
            r#"{"moduleId":"m","deviceId":"d","generationId":"637","etag":"x","connectionState":"Disconnected",
                "authentication":{"symmetricKey":{"primaryKey":"a2V5","secondaryKey":"a2V5"},"type":"sas"}}"#,
        )
        .unwrap();
        assert_eq!(m.generation_id.as_deref(), Some("637"));
        assert!(
            !format!("{m:?}").contains("a2V5"),
            "keys must not be printed"
        );
        assert_eq!(
            serde_json::to_string(&m.without_keys()).unwrap(),
            r#"{"moduleId":"m","deviceId":"d","generationId":"637"}"#
        );
    }
}
