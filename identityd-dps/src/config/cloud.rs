//! `[cloud]` (our extension; upstream ignores the table): which CAs to trust for DPS and IoT Hub,
//! and the timing of provisioning. A private CA bundle is what lets the device talk to a local
//! emulator or through a TLS-inspecting proxy.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::InvalidConfig;

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct CloudSettings {
    /// A PEM bundle of extra CAs trusted for DPS and IoT Hub (a path or a `file://` URI).
    #[serde(default)]
    pub trust_bundle: Option<String>,
    /// Whether the system's CA roots are trusted too.
    #[serde(default = "yes")]
    pub system_roots: bool,
    /// Lifetime of each SAS token; a fresh one is signed for every request.
    #[serde(default = "default_token_lifetime")]
    pub sas_token_lifetime_sec: u64,
    /// Overall bound of one DPS registration (challenge, assignment and polling, retries included).
    #[serde(default = "default_provisioning_timeout")]
    pub provisioning_timeout_sec: u64,
    /// Longest wait between retries of a failed cloud request or provisioning attempt.
    #[serde(default = "default_max_backoff")]
    pub max_backoff_sec: u64,
}

fn yes() -> bool {
    true
}
fn default_token_lifetime() -> u64 {
    300
}
fn default_provisioning_timeout() -> u64 {
    600
}
fn default_max_backoff() -> u64 {
    60
}

impl Default for CloudSettings {
    fn default() -> Self {
        CloudSettings {
            trust_bundle: None,
            system_roots: true,
            sas_token_lifetime_sec: default_token_lifetime(),
            provisioning_timeout_sec: default_provisioning_timeout(),
            max_backoff_sec: default_max_backoff(),
        }
    }
}

impl CloudSettings {
    pub(super) fn check(&self) -> Result<(), InvalidConfig> {
        if let Some(bundle) = &self.trust_bundle {
            if !self.trust_bundle_path().is_some_and(|p| p.is_absolute()) {
                return Err(InvalidConfig::key(
                    "cloud.trust_bundle",
                    format!(
                        "= {bundle:?} must be an absolute path or a file:/// URI of a PEM file"
                    ),
                ));
            }
        }
        if !self.system_roots && self.trust_bundle.is_none() {
            return Err(InvalidConfig::key(
                "cloud.system_roots",
                "= false with no cloud.trust_bundle would trust no CA at all; set trust_bundle",
            ));
        }
        for (key, value) in [
            ("cloud.sas_token_lifetime_sec", self.sas_token_lifetime_sec),
            (
                "cloud.provisioning_timeout_sec",
                self.provisioning_timeout_sec,
            ),
            ("cloud.max_backoff_sec", self.max_backoff_sec),
        ] {
            super::check_duration(key, value)?;
        }
        Ok(())
    }

    pub fn trust_bundle_path(&self) -> Option<PathBuf> {
        let bundle = self.trust_bundle.as_deref()?;
        Some(PathBuf::from(
            bundle.strip_prefix("file://").unwrap_or(bundle),
        ))
    }

    pub fn token_lifetime(&self) -> Duration {
        Duration::from_secs(self.sas_token_lifetime_sec)
    }

    pub fn provisioning_timeout(&self) -> Duration {
        Duration::from_secs(self.provisioning_timeout_sec)
    }

    pub fn max_backoff(&self) -> Duration {
        Duration::from_secs(self.max_backoff_sec)
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{parse, MINIMAL};

    #[test]
    fn trust_bundle_accepts_a_path_or_file_uri() {
        for value in ["/tmp/ca.pem", "file:///tmp/ca.pem"] {
            let c = parse(&format!("{MINIMAL}\n[cloud]\ntrust_bundle = \"{value}\"\n")).unwrap();
            assert_eq!(
                c.cloud.trust_bundle_path().unwrap(),
                std::path::PathBuf::from("/tmp/ca.pem")
            );
        }
        let e = parse(&format!("{MINIMAL}\n[cloud]\ntrust_bundle = \"ca.pem\"\n")).unwrap_err();
        assert!(e.contains("cloud.trust_bundle"), "{e}");
    }

    #[test]
    fn no_roots_at_all_is_refused() {
        let e = parse(&format!("{MINIMAL}\n[cloud]\nsystem_roots = false\n")).unwrap_err();
        assert!(e.contains("trust no CA"), "{e}");
    }

    #[test]
    fn timings_have_defaults_and_must_be_positive() {
        let c = parse(MINIMAL).unwrap();
        assert_eq!(c.cloud.sas_token_lifetime_sec, 300);
        assert_eq!(c.cloud.provisioning_timeout_sec, 600);
        let e = parse(&format!("{MINIMAL}\n[cloud]\nsas_token_lifetime_sec = 0\n")).unwrap_err();
        assert!(e.contains("sas_token_lifetime_sec"), "{e}");
    }
}
