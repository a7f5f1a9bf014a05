//! keyd-tpm's TPM settings, read from upstream aziot-tpmd's config files
//! (`/etc/aziot/tpmd/config.toml` + `config.d/*.toml`, or `AZIOT_TPMD_CONFIG[_DIR]`), so what
//! `aziotctl config apply` writes works unchanged. We honour `[endpoints]` in release builds too
//! (upstream only in debug builds), so tests and the demo can run unprivileged in a temp dir, and
//! add `homedir` for the wrapped copies of imported auth keys.

use std::path::PathBuf;

use serde::{Deserialize, Deserializer};
use zeroize::Zeroizing;

use crate::tpm::TpmSettings;

pub const DEFAULT_TPMD_ENDPOINT: &str = "unix:///run/aziot/tpmd.sock";
pub const DEFAULT_TPMD_HOMEDIR: &str = "/var/lib/aziot/tpmd";
const MAX_AUTH_KEY_INDEX: u32 = 0x7F_FF_FF;

#[derive(Debug, Deserialize)]
pub struct TpmdConfig {
    /// Concurrent requests per caller uid before further ones queue (upstream's name).
    #[serde(default = "default_max_requests")]
    pub max_requests: usize,
    #[serde(flatten)]
    pub shared: SharedTpmConfig,
    #[serde(default = "default_homedir")]
    pub homedir: PathBuf,
    #[serde(default)]
    pub endpoints: TpmdEndpoints,
}

/// The part upstream shares between the tpmd config and the super-config's `[tpm]` table.
#[derive(Debug, Deserialize)]
pub struct SharedTpmConfig {
    /// A string, or the array of byte values upstream's `config apply` writes.
    #[serde(default = "default_tcti", deserialize_with = "tcti")]
    pub tcti: String,
    #[serde(default = "default_auth_key_index", deserialize_with = "auth_key_index")]
    pub auth_key_index: u32,
    #[serde(default)]
    pub hierarchy_authorization: HierarchyAuthorization,
}

#[derive(Default, Deserialize)]
pub struct HierarchyAuthorization {
    /// Each a string or an array of byte values, like `tcti`.
    #[serde(default, deserialize_with = "endorsement")]
    pub endorsement: Zeroizing<String>,
    #[serde(default, deserialize_with = "owner")]
    pub owner: Zeroizing<String>,
}

impl std::fmt::Debug for HierarchyAuthorization {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HierarchyAuthorization { .. redacted .. }")
    }
}

#[derive(Debug, Deserialize)]
pub struct TpmdEndpoints {
    #[serde(default = "default_endpoint")]
    pub aziot_tpmd: String,
}

impl Default for TpmdEndpoints {
    fn default() -> Self {
        Self { aziot_tpmd: default_endpoint() }
    }
}

fn default_max_requests() -> usize {
    10
}
fn default_tcti() -> String {
    "device".into()
}
fn default_auth_key_index() -> u32 {
    aziot_tpm_common::DEFAULT_AUTH_KEY_INDEX
}
fn default_homedir() -> PathBuf {
    DEFAULT_TPMD_HOMEDIR.into()
}
fn default_endpoint() -> String {
    DEFAULT_TPMD_ENDPOINT.into()
}

fn tcti<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    aziot_config::forms::text_or_bytes(d, "tcti").map(|t| t.to_string())
}
fn endorsement<'de, D: Deserializer<'de>>(d: D) -> Result<Zeroizing<String>, D::Error> {
    aziot_config::forms::text_or_bytes(d, "hierarchy_authorization.endorsement")
}
fn owner<'de, D: Deserializer<'de>>(d: D) -> Result<Zeroizing<String>, D::Error> {
    aziot_config::forms::text_or_bytes(d, "hierarchy_authorization.owner")
}

/// Upstream wants a TOML integer (`auth_key_index = 0x00_01_00`) while its own template shows a
/// quoted string; we accept both, and check the range upstream checks.
fn auth_key_index<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum IntOrString {
        Int(i64),
        Str(String),
    }
    let value = match IntOrString::deserialize(d)? {
        IntOrString::Int(i) => i,
        IntOrString::Str(s) => {
            let t = s.trim().replace('_', "");
            let parsed = match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
                Some(hex) => i64::from_str_radix(hex, 16),
                None => t.parse(),
            };
            parsed.map_err(|_| {
                serde::de::Error::custom(format!("auth_key_index \"{s}\" is not a number; write e.g. auth_key_index = 0x00_01_00"))
            })?
        }
    };
    u32::try_from(value)
        .ok()
        .filter(|v| *v <= MAX_AUTH_KEY_INDEX)
        .ok_or_else(|| {
            serde::de::Error::custom(format!(
                "auth_key_index {value:#x} is out of range: it must be an integer in range 0x00_00_00..=0x7F_FF_FF"
            ))
        })
}

impl TpmdConfig {
    pub fn tpm_settings(&self) -> TpmSettings {
        TpmSettings {
            tcti: self.shared.tcti.clone(),
            auth_key_index: self.shared.auth_key_index,
            endorsement_auth: self.shared.hierarchy_authorization.endorsement.clone(),
            owner_auth: self.shared.hierarchy_authorization.owner.clone(),
            state_dir: self.homedir.clone(),
            parameter_encryption: Default::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<TpmdConfig, toml::de::Error> {
        toml::from_str(s)
    }

    #[test]
    fn empty_config_gives_upstream_defaults() {
        let c = parse("").unwrap();
        assert_eq!(c.shared.tcti, "device");
        assert_eq!(c.shared.auth_key_index, 0x100);
        assert_eq!(c.max_requests, 10);
        assert_eq!(c.endpoints.aziot_tpmd, DEFAULT_TPMD_ENDPOINT);
        assert!(c.shared.hierarchy_authorization.endorsement.is_empty());
    }

    #[test]
    fn auth_key_index_accepts_integer_and_quoted_hex() {
        assert_eq!(parse("auth_key_index = 0x00_02_00").unwrap().shared.auth_key_index, 0x200);
        assert_eq!(parse("auth_key_index = \"0x00_01_00\"").unwrap().shared.auth_key_index, 0x100);
    }

    #[test]
    fn auth_key_index_out_of_range_says_the_range() {
        let e = parse("auth_key_index = 0x80_00_00").unwrap_err().to_string();
        assert!(e.contains("0x00_00_00..=0x7F_FF_FF"), "{e}");
    }

    /// What upstream's `aziotctl config apply` 1.6.0 wrote for `[tpm]` with a swtpm TCTI, an
    /// auth key index and both hierarchy passwords.
    const UPSTREAM_RICH_TPMD: &str = include_str!("../../tests/fixtures/upstream-config-apply/rich/tpmd/00-super.toml");

    #[test]
    fn upstreams_byte_array_form_reads_as_the_strings_it_encodes() {
        let c = parse(UPSTREAM_RICH_TPMD).unwrap();
        assert_eq!(c.shared.tcti, "swtpm:host=127.0.0.1,port=2321");
        assert_eq!(c.shared.auth_key_index, 257);
        assert_eq!(c.max_requests, 5);
        assert_eq!(&*c.shared.hierarchy_authorization.endorsement, "e-pass");
        assert_eq!(&*c.shared.hierarchy_authorization.owner, "o-pass");
        let strings = parse("tcti = \"swtpm:host=127.0.0.1,port=2321\"\n[hierarchy_authorization]\nowner = \"o-pass\"").unwrap();
        assert_eq!(strings.shared.tcti, c.shared.tcti);
        assert_eq!(&*strings.shared.hierarchy_authorization.owner, "o-pass");
    }

    #[test]
    fn a_bad_byte_value_names_its_key_despite_the_flattened_table() {
        let e = parse("tcti = [115, 999]").unwrap_err().to_string();
        assert!(e.contains("`tcti`") && e.contains("999"), "{e}");
        let e = parse("[hierarchy_authorization]\nowner = [0]").unwrap_err().to_string();
        assert!(e.contains("`hierarchy_authorization.owner`"), "{e}");
    }

    #[test]
    fn debug_never_prints_hierarchy_passwords() {
        let c = parse("[hierarchy_authorization]\nowner = \"s3cret\"").unwrap();
        assert!(!format!("{c:?}").contains("s3cret"));
        assert!(!format!("{:?}", c.tpm_settings()).contains("s3cret"));
    }
}
