//! The Keys Service's settings, read from upstream aziot-keyd's config files
//! (`/etc/aziot/keyd/config.toml` + `config.d/*.toml`, or `AZIOT_KEYD_CONFIG[_DIR]`), so what
//! `aziotctl config apply` and IoT Edge's principal snippets write works unchanged.
//!
//! Where keyd's and tpmd's settings meet: the TPM itself (TCTI, hierarchy passwords) is set
//! **only** in the tpmd config, which keyd-tpm loads first; both APIs use that one TPM owner.
//! Upstream's `[aziot_keys]` PKCS#11 entries (`pkcs11_lib_path`, `pkcs11_base_slot`) configure
//! a path to the TPM we do not need, so they are ignored with a warning. As for tpmd,
//! `[endpoints]` is honoured in release builds too.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

pub const DEFAULT_KEYD_ENDPOINT: &str = "unix:///run/aziot/keyd.sock";
pub const DEFAULT_KEYD_HOMEDIR: &str = "/var/lib/aziot/keyd";

/// The `[aziot_keys]` entry naming the key store directory (upstream's name).
const HOMEDIR_PATH: &str = "homedir_path";

#[derive(Debug, Deserialize)]
pub struct KeydConfig {
    /// Concurrent requests per caller uid before further ones queue (upstream's name).
    #[serde(default = "default_max_requests")]
    pub max_requests: usize,

    /// Upstream's libaziot-keys parameters; only `homedir_path` means something here.
    #[serde(default)]
    pub aziot_keys: BTreeMap<String, String>,

    /// Key id → URI of a key the operator supplies (`file:///path`).
    #[serde(default)]
    pub preloaded_keys: BTreeMap<String, String>,

    /// Who may create, load and move which key ids; blocks for one uid are merged.
    #[serde(default)]
    pub principal: Vec<Principal>,

    #[serde(default)]
    pub endpoints: KeydEndpoints,
}

#[derive(Clone, Debug, Deserialize)]
pub struct Principal {
    pub uid: u32,
    /// Key id patterns: `*` matches any run of characters, `?` exactly one.
    pub keys: Vec<String>,
}

#[derive(Debug, Deserialize)]
pub struct KeydEndpoints {
    #[serde(default = "default_endpoint")]
    pub aziot_keyd: String,
}

impl Default for KeydEndpoints {
    fn default() -> Self {
        Self {
            aziot_keyd: default_endpoint(),
        }
    }
}

fn default_max_requests() -> usize {
    10
}

fn default_endpoint() -> String {
    DEFAULT_KEYD_ENDPOINT.into()
}

impl KeydConfig {
    /// The key store's home: `[aziot_keys] homedir_path`, default `/var/lib/aziot/keyd`.
    pub fn homedir(&self) -> PathBuf {
        self.aziot_keys
            .get(HOMEDIR_PATH)
            .map_or_else(|| DEFAULT_KEYD_HOMEDIR.into(), PathBuf::from)
    }

    /// `[aziot_keys]` entries that have no effect here, to warn about at start.
    pub fn ignored_aziot_keys(&self) -> Vec<&str> {
        self.aziot_keys
            .keys()
            .map(String::as_str)
            .filter(|k| *k != HOMEDIR_PATH)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> KeydConfig {
        toml::from_str(s).unwrap()
    }

    #[test]
    fn empty_config_gives_upstream_defaults() {
        let c = parse("");
        assert_eq!(c.max_requests, 10);
        assert_eq!(c.endpoints.aziot_keyd, DEFAULT_KEYD_ENDPOINT);
        assert_eq!(c.homedir(), PathBuf::from(DEFAULT_KEYD_HOMEDIR));
        assert!(c.principal.is_empty() && c.preloaded_keys.is_empty());
    }

    #[test]
    fn what_aziotctl_config_apply_writes_parses() {
        let c = parse(
            r#"
[aziot_keys]
homedir_path = "/var/lib/aziot/keyd"
pkcs11_lib_path = "/usr/lib/libtpm2_pkcs11.so"

[preloaded_keys]
device-id = "file:///var/secrets/aziot/keyd/device-id"

[[principal]]
uid = 993
keys = ["aziot_identityd_master_id", "device-id"]

[[principal]]
uid = 992
keys = ["aziot-edged-ca", "iotedge_master_encryption_id"]
"#,
        );
        assert_eq!(c.homedir(), PathBuf::from("/var/lib/aziot/keyd"));
        assert_eq!(c.ignored_aziot_keys(), ["pkcs11_lib_path"]);
        assert_eq!(
            c.preloaded_keys["device-id"],
            "file:///var/secrets/aziot/keyd/device-id"
        );
        assert_eq!(c.principal.len(), 2);
        assert_eq!(c.principal[1].keys[1], "iotedge_master_encryption_id");
    }

    #[test]
    fn a_principal_without_keys_is_an_error_naming_the_field() {
        let e = toml::from_str::<KeydConfig>("[[principal]]\nuid = 5\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("keys"), "{e}");
    }
}
