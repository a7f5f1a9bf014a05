//! identityd's settings, read from upstream aziot-identityd's files
//! (`/etc/aziot/identityd/config.toml` + `config.d/*.toml`, or `AZIOT_IDENTITYD_CONFIG[_DIR]`), so
//! what `aziotctl config apply` writes works unchanged.
//!
//! Two steps: serde reads the files into [`Settings`], shaped like upstream's (unknown keys are
//! accepted and logged by `aziot-config`), then [`Settings::validate`] turns them into a
//! [`Config`] the daemon can trust, refusing what we do not support with a message that says what
//! is supported. Our extensions live in the `[cloud]` table, which upstream ignores.

mod cloud;
mod endpoints;
mod principal;
mod provisioning;

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

pub use cloud::CloudSettings;
pub use endpoints::{Endpoints, ResolvedEndpoints};
pub use principal::{IdType, LocalId, Principal};
pub use provisioning::{DpsSettings, Payload, RawAttestation, RawProvisioning};

/// Upstream's default (and minimum in the super-config) per-request cloud timeout.
pub const DEFAULT_CLOUD_TIMEOUT_SEC: u64 = 70;
pub const DEFAULT_CLOUD_RETRIES: u32 = 1;
pub const DEFAULT_MAX_REQUESTS: usize = 10;
/// The longest any timeout, backoff or token lifetime may be: 365 days. Larger values would
/// overflow the clock where the daemon adds them to "now" (and mean nothing for a cloud call).
pub const MAX_DURATION_SEC: u64 = 365 * 24 * 3600;

/// `key = value` must be 1..=[`MAX_DURATION_SEC`] seconds.
pub fn check_duration(key: &str, value: u64) -> Result<(), InvalidConfig> {
    if value == 0 {
        return Err(InvalidConfig::key(key, "must be greater than 0"));
    }
    if value > MAX_DURATION_SEC {
        return Err(InvalidConfig::key(
            key,
            format!("= {value} is too long: it must be at most {MAX_DURATION_SEC} seconds (365 days)"),
        ));
    }
    Ok(())
}

/// The config files as written, in upstream's shape plus our `[cloud]` table.
#[derive(Debug, Deserialize)]
pub struct Settings {
    pub hostname: String,
    pub homedir: PathBuf,
    #[serde(default)]
    pub prefer_module_identity_cache: bool,
    #[serde(default = "default_max_requests")]
    pub max_requests: usize,
    #[serde(default = "default_cloud_timeout")]
    pub cloud_timeout_sec: u64,
    #[serde(default = "default_cloud_retries")]
    pub cloud_retries: u32,
    pub provisioning: RawProvisioning,
    #[serde(default)]
    pub principal: Vec<Principal>,
    #[serde(default)]
    pub localid: Option<LocalId>,
    #[serde(default)]
    pub endpoints: Endpoints,
    #[serde(default)]
    pub cloud: CloudSettings,
}

fn default_max_requests() -> usize {
    DEFAULT_MAX_REQUESTS
}
fn default_cloud_timeout() -> u64 {
    DEFAULT_CLOUD_TIMEOUT_SEC
}
fn default_cloud_retries() -> u32 {
    DEFAULT_CLOUD_RETRIES
}

/// Settings checked once at start; everything the daemon reads afterwards.
#[derive(Debug, Clone)]
pub struct Config {
    pub hostname: String,
    pub homedir: PathBuf,
    pub prefer_module_identity_cache: bool,
    pub max_requests: usize,
    pub cloud_timeout: Duration,
    pub cloud_retries: u32,
    pub dps: DpsSettings,
    pub principals: Vec<Principal>,
    pub localid: Option<LocalId>,
    pub endpoints: ResolvedEndpoints,
    pub cloud: CloudSettings,
}

/// A setting we cannot run with; the message names the key and the fix.
#[derive(Debug, thiserror::Error)]
pub enum InvalidConfig {
    #[error("`{key}` {problem}")]
    Key { key: String, problem: String },
    #[error(
        "[provisioning] source = {0:?} is not supported by identityd-dps: it provisions only through \
         DPS with TPM attestation ([provisioning] source = \"dps\" with [provisioning.attestation] \
         method = \"tpm\"); use upstream aziot-identityd for manual or no provisioning"
    )]
    UnsupportedSource(String),
    #[error(
        "[provisioning.attestation] method = {0:?} is not supported by identityd-dps: it supports only \
         method = \"tpm\" (DPS TPM attestation); use upstream aziot-identityd for symmetric_key or x509"
    )]
    UnsupportedAttestation(String),
}

impl InvalidConfig {
    pub(crate) fn key(key: impl Into<String>, problem: impl Into<String>) -> Self {
        InvalidConfig::Key {
            key: key.into(),
            problem: problem.into(),
        }
    }
}

impl Settings {
    pub fn validate(self) -> Result<Config, InvalidConfig> {
        if self.hostname.trim().is_empty() {
            return Err(InvalidConfig::key(
                "hostname",
                "is empty; set it to the device's host name",
            ));
        }
        if self.homedir.as_os_str().is_empty() {
            return Err(InvalidConfig::key(
                "homedir",
                "is empty; set it to identityd's state directory, e.g. /var/lib/aziot/identityd",
            ));
        }
        check_duration("cloud_timeout_sec", self.cloud_timeout_sec)?;
        let dps = self.provisioning.validate()?;
        principal::check(&self.principal, self.localid.as_ref())?;
        let endpoints = self.endpoints.resolve()?;
        self.cloud.check()?;
        Ok(Config {
            hostname: self.hostname,
            homedir: self.homedir,
            prefer_module_identity_cache: self.prefer_module_identity_cache,
            max_requests: self.max_requests.max(1),
            cloud_timeout: Duration::from_secs(self.cloud_timeout_sec),
            cloud_retries: self.cloud_retries,
            dps,
            principals: self.principal,
            localid: self.localid,
            endpoints,
            cloud: self.cloud,
        })
    }
}

/// Loads and validates the config from upstream's paths (honouring the env overrides).
pub fn load() -> Result<Config, Box<dyn std::error::Error + Send + Sync>> {
    let settings: Settings = aziot_config::load("identityd")?;
    Ok(settings.validate()?)
}

#[cfg(test)]
pub(crate) fn parse(toml_text: &str) -> Result<Config, String> {
    let settings: Settings = toml::from_str(toml_text).map_err(|e| e.to_string())?;
    settings.validate().map_err(|e| e.to_string())
}

#[cfg(test)]
pub(crate) const MINIMAL: &str = r#"
hostname = "gateway"
homedir = "/var/lib/aziot/identityd"
[provisioning]
source = "dps"
global_endpoint = "https://global.azure-devices-provisioning.net/"
scope_id = "0ne00000001"
[provisioning.attestation]
method = "tpm"
"#;

#[cfg(test)]
mod fuzz_tests;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimal_dps_tpm_config_gets_upstream_defaults() {
        let c = parse(MINIMAL).unwrap();
        assert_eq!(c.hostname, "gateway");
        assert_eq!(c.cloud_timeout, Duration::from_secs(70));
        assert_eq!(c.cloud_retries, 1);
        assert_eq!(c.max_requests, 10);
        assert!(!c.prefer_module_identity_cache);
        assert_eq!(c.dps.scope_id, "0ne00000001");
        assert_eq!(c.dps.registration_id, None);
        assert_eq!(
            c.endpoints.keyd,
            PathBuf::from("/run/aziot/keyd.sock"),
            "default keyd socket"
        );
        assert!(c.cloud.system_roots);
        assert!(c.principals.is_empty());
    }

    #[test]
    fn aziotctl_apply_output_parses() {
        // What `aziotctl config apply` writes for dps-tpm (upstream test fixture shape).
        let c = parse(
            r#"
hostname = "my-device"
homedir = "/var/lib/aziot/identityd"
prefer_module_identity_cache = false

[provisioning]
source = "dps"
global_endpoint = "https://global.azure-devices-provisioning.net/"
scope_id = "0ab1234C5D6"

[provisioning.attestation]
method = "tpm"
registration_id = "my-device"

[[principal]]
uid = 1001
name = "aziot-edged"
"#,
        )
        .unwrap();
        assert_eq!(c.dps.registration_id.as_deref(), Some("my-device"));
        assert_eq!(c.principals.len(), 1);
    }

    #[test]
    fn a_timeout_past_a_year_is_refused_naming_the_limit() {
        let e = parse(&format!("cloud_timeout_sec = 9223372036854775807\n{MINIMAL}")).unwrap_err();
        assert!(e.contains("cloud_timeout_sec") && e.contains("at most 31536000"), "{e}");
        let e = parse(&format!("{MINIMAL}\n[cloud]\nprovisioning_timeout_sec = 31536001\n")).unwrap_err();
        assert!(e.contains("cloud.provisioning_timeout_sec"), "{e}");
        assert!(parse(&format!("cloud_timeout_sec = 31536000\n{MINIMAL}")).is_ok());
    }

    #[test]
    fn missing_hostname_and_zero_timeout_are_refused() {
        let e = parse(&MINIMAL.replace("hostname = \"gateway\"", "")).unwrap_err();
        assert!(e.contains("hostname"), "{e}");
        let e = parse(&format!("cloud_timeout_sec = 0\n{MINIMAL}")).unwrap_err();
        assert!(e.contains("cloud_timeout_sec"), "{e}");
    }
}
