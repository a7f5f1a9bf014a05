//! `prev_state`: the settings of the last successful reconciliation, written in upstream's
//! `Settings` TOML shape (so upstream identityd and `aziotctl check` read it), and read loosely
//! (upstream may have written sources we do not support).
//!
//! Two uses: its module principals are the modules identityd created on the hub (reconciliation
//! deletes those no longer configured), and its provisioning settings tell whether the device
//! backup was made for the DPS settings in force (a changed ID scope must not reuse the backup).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::StateError;
use crate::config::{
    Config, IdType, LocalId, Payload, Principal, DEFAULT_CLOUD_RETRIES, DEFAULT_CLOUD_TIMEOUT_SEC,
};

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct PrevState {
    #[serde(default)]
    pub hostname: String,
    #[serde(default)]
    pub homedir: PathBuf,
    #[serde(default, skip_serializing_if = "is_false")]
    pub prefer_module_identity_cache: bool,
    #[serde(
        default = "default_timeout",
        skip_serializing_if = "is_default_timeout"
    )]
    pub cloud_timeout_sec: u64,
    #[serde(
        default = "default_retries",
        skip_serializing_if = "is_default_retries"
    )]
    pub cloud_retries: u32,
    pub provisioning: PrevProvisioning,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub principal: Vec<Principal>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub localid: Option<LocalId>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct PrevProvisioning {
    pub source: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub global_endpoint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<Payload>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attestation: Option<PrevAttestation>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct PrevAttestation {
    pub method: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registration_id: Option<String>,
}

fn is_false(b: &bool) -> bool {
    !*b
}
fn default_timeout() -> u64 {
    DEFAULT_CLOUD_TIMEOUT_SEC
}
fn default_retries() -> u32 {
    DEFAULT_CLOUD_RETRIES
}
fn is_default_timeout(v: &u64) -> bool {
    *v == DEFAULT_CLOUD_TIMEOUT_SEC
}
fn is_default_retries(v: &u32) -> bool {
    *v == DEFAULT_CLOUD_RETRIES
}

impl PrevState {
    /// The settings in force, with the registration ID actually used (upstream requires one).
    pub fn of(config: &Config, registration_id: &str) -> Self {
        PrevState {
            hostname: config.hostname.clone(),
            homedir: config.homedir.clone(),
            prefer_module_identity_cache: config.prefer_module_identity_cache,
            cloud_timeout_sec: config.cloud_timeout.as_secs(),
            cloud_retries: config.cloud_retries,
            provisioning: PrevProvisioning {
                source: "dps".into(),
                global_endpoint: Some(config.dps.global_endpoint.clone()),
                scope_id: Some(config.dps.scope_id.clone()),
                payload: config.dps.payload.clone(),
                attestation: Some(PrevAttestation {
                    method: "tpm".into(),
                    registration_id: Some(registration_id.to_owned()),
                }),
            },
            principal: config.principals.clone(),
            localid: config.localid.clone(),
        }
    }

    /// Whether a device provisioned under `self` was provisioned with the same DPS settings.
    pub fn same_provisioning(&self, config: &Config, registration_id: &str) -> bool {
        let p = &self.provisioning;
        let attestation = p.attestation.as_ref();
        p.source == "dps"
            && p.global_endpoint.as_deref().map(normalize)
                == Some(normalize(&config.dps.global_endpoint))
            && p.scope_id.as_deref() == Some(config.dps.scope_id.as_str())
            && attestation.is_some_and(|a| a.method == "tpm")
            && attestation.and_then(|a| a.registration_id.as_deref()) == Some(registration_id)
    }

    /// Names of the principals with a hub module identity.
    pub fn module_names(&self) -> Vec<String> {
        module_names(&self.principal)
    }

    pub fn load(homedir: &Path) -> Result<Option<Self>, StateError> {
        let path = homedir.join(super::PREV_STATE);
        let Some(text) = super::read_optional(&path)? else {
            return Ok(None);
        };
        super::parse_toml(path, &text).map(Some)
    }

    pub fn save(&self, homedir: &Path) -> Result<(), StateError> {
        super::save_toml(&homedir.join(super::PREV_STATE), self)
    }

    pub fn remove(homedir: &Path) -> Result<(), StateError> {
        super::remove(&homedir.join(super::PREV_STATE))
    }
}

/// Upstream re-serializes the endpoint as a URL, which adds a trailing `/` to a bare origin.
fn normalize(url: &str) -> &str {
    url.trim_end_matches('/')
}

/// Names of the principals that have a hub module identity (idtype contains `module`).
pub fn module_names(principals: &[Principal]) -> Vec<String> {
    principals
        .iter()
        .filter(|p| p.has(IdType::Module))
        .map(|p| p.name.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        crate::config::parse(&format!(
            "{}\n[[principal]]\nuid = 1000\nname = \"mod1\"\nidtype = [\"module\"]\n",
            crate::config::MINIMAL
        ))
        .unwrap()
    }

    #[test]
    fn written_in_upstreams_settings_shape() {
        let c = config();
        let text = toml::to_string(&PrevState::of(&c, "reg1")).unwrap();
        assert!(text.contains("hostname = \"gateway\""), "{text}");
        assert!(text.contains("[provisioning]\nsource = \"dps\""), "{text}");
        assert!(
            text.contains(
                "[provisioning.attestation]\nmethod = \"tpm\"\nregistration_id = \"reg1\""
            ),
            "{text}"
        );
        assert!(
            text.contains("[[principal]]\nuid = 1000\nname = \"mod1\"\nidtype = [\"module\"]"),
            "{text}"
        );
        assert!(
            !text.contains("cloud_timeout_sec"),
            "defaults are omitted like upstream: {text}"
        );
    }

    #[test]
    fn round_trips_and_detects_changed_provisioning() {
        let dir = tempfile::tempdir().unwrap();
        let c = config();
        PrevState::of(&c, "reg1").save(dir.path()).unwrap();
        let prev = PrevState::load(dir.path()).unwrap().unwrap();
        assert!(prev.same_provisioning(&c, "reg1"));
        assert!(!prev.same_provisioning(&c, "reg2"));
        let mut other = c.clone();
        other.dps.scope_id = "0ne99999999".into();
        assert!(!prev.same_provisioning(&other, "reg1"));
        assert_eq!(prev.module_names(), ["mod1"]);
    }

    #[test]
    fn reads_an_upstream_manual_prev_state() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("prev_state"),
            "hostname = \"h\"\nhomedir = \"/var/lib/aziot/identityd\"\n[provisioning]\nsource = \"manual\"\n\
             iothub_hostname = \"hub\"\ndevice_id = \"d\"\n[provisioning.authentication]\nmethod = \"sas\"\n\
             device_id_pk = \"device-id\"\n",
        )
        .unwrap();
        let prev = PrevState::load(dir.path()).unwrap().unwrap();
        assert!(!prev.same_provisioning(&config(), "reg1"));
    }
}
