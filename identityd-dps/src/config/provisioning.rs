//! `[provisioning]`: only DPS with TPM attestation. The table is read loosely (every source's keys
//! optional) so that a manual or symmetric-key config gets a message naming what we support
//! rather than serde's "unknown variant".

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::InvalidConfig;

/// `[provisioning]` as written.
#[derive(Debug, Deserialize)]
pub struct RawProvisioning {
    pub source: String,
    #[serde(default)]
    pub local_gateway_hostname: Option<String>,
    #[serde(default)]
    pub global_endpoint: Option<String>,
    #[serde(default)]
    pub scope_id: Option<String>,
    #[serde(default)]
    pub attestation: Option<RawAttestation>,
    #[serde(default)]
    pub payload: Option<Payload>,
}

#[derive(Debug, Deserialize)]
pub struct RawAttestation {
    pub method: String,
    #[serde(default)]
    pub registration_id: Option<String>,
}

/// `payload = { uri = "file:///..." }`: JSON sent to DPS with each registration.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct Payload {
    pub uri: String,
}

/// The validated DPS settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DpsSettings {
    /// `global_endpoint` exactly as configured (reported by `GET /identities/provisioning`).
    pub global_endpoint: String,
    /// `https://host[:port]`: upstream replaces the configured path, so only the origin counts.
    pub origin: String,
    pub scope_id: String,
    /// `None`: derived from the EK as the DPS device SDKs do.
    pub registration_id: Option<String>,
    pub payload: Option<Payload>,
    /// The payload file, from `payload.uri`.
    pub payload_path: Option<PathBuf>,
}

impl RawProvisioning {
    pub fn validate(self) -> Result<DpsSettings, InvalidConfig> {
        if self.source != "dps" {
            return Err(InvalidConfig::UnsupportedSource(self.source));
        }
        if self.local_gateway_hostname.is_some() {
            return Err(InvalidConfig::key(
                "provisioning.local_gateway_hostname",
                "is set, but DPS provisioning is not supported in nested (child device) mode, as \
                 upstream; remove it",
            ));
        }
        let attestation = self.attestation.ok_or_else(|| {
            InvalidConfig::key(
                "provisioning.attestation",
                "is missing; add [provisioning.attestation] method = \"tpm\"",
            )
        })?;
        if attestation.method != "tpm" {
            return Err(InvalidConfig::UnsupportedAttestation(attestation.method));
        }
        let global_endpoint = self.global_endpoint.ok_or_else(|| {
            InvalidConfig::key(
                "provisioning.global_endpoint",
                "is missing; set it to https://global.azure-devices-provisioning.net/",
            )
        })?;
        let origin = origin_of(&global_endpoint)?;
        let scope_id = self
            .scope_id
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .ok_or_else(|| {
                InvalidConfig::key(
                    "provisioning.scope_id",
                    "is missing; set it to the ID Scope shown on the DPS overview page",
                )
            })?;
        if let Some(id) = &attestation.registration_id {
            check_registration_id(id)?;
        }
        let payload_path = match &self.payload {
            Some(p) => Some(payload_path(&p.uri)?),
            None => None,
        };
        Ok(DpsSettings {
            global_endpoint,
            origin,
            scope_id,
            registration_id: attestation.registration_id,
            payload: self.payload,
            payload_path,
        })
    }
}

/// `https://host[:port]` of an https URL; anything else is refused.
fn origin_of(url: &str) -> Result<String, InvalidConfig> {
    let bad = |why: &str| {
        InvalidConfig::key(
            "provisioning.global_endpoint",
            format!("= {url:?} {why}; write e.g. https://global.azure-devices-provisioning.net/"),
        )
    };
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("HTTPS://"))
        .ok_or_else(|| bad("is not an https:// URL"))?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.is_empty() || authority.contains('@') || authority.contains(char::is_whitespace) {
        return Err(bad("has no valid host"));
    }
    Ok(format!("https://{authority}"))
}

/// DPS registration IDs: up to 128 characters, lowercase alphanumerics and `- . _ :`.
fn check_registration_id(id: &str) -> Result<(), InvalidConfig> {
    let key = "provisioning.attestation.registration_id";
    if id.is_empty() || id.len() > 128 {
        return Err(InvalidConfig::key(
            key,
            "must be 1 to 128 characters; remove it to use the ID derived from the TPM's EK \
             (`aziot-tpm tpm-info` prints it)",
        ));
    }
    if !id
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-._:".contains(c))
    {
        return Err(InvalidConfig::key(
            key,
            format!(
                "= {id:?} has characters DPS does not allow: use lowercase letters, digits and - . _ :"
            ),
        ));
    }
    Ok(())
}

/// The local path of a `file://` payload URI.
fn payload_path(uri: &str) -> Result<PathBuf, InvalidConfig> {
    let path = uri.strip_prefix("file://").ok_or_else(|| {
        InvalidConfig::key(
            "provisioning.payload.uri",
            format!("= {uri:?} must be a file:// URI, e.g. file:///etc/aziot/dps-payload.json"),
        )
    })?;
    let decoded: Vec<u8> = percent_encoding::percent_decode_str(path).collect();
    let path =
        PathBuf::from(<std::ffi::OsString as std::os::unix::ffi::OsStringExt>::from_vec(decoded));
    if !path.is_absolute() {
        return Err(InvalidConfig::key(
            "provisioning.payload.uri",
            format!("= {uri:?} must name an absolute path (file:///...)"),
        ));
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use crate::config::{parse, MINIMAL};

    #[test]
    fn origin_drops_the_path_like_upstream() {
        let c = parse(&MINIMAL.replace(
            "https://global.azure-devices-provisioning.net/",
            "https://127.0.0.1:8443/some/path",
        ))
        .unwrap();
        assert_eq!(c.dps.origin, "https://127.0.0.1:8443");
        assert_eq!(c.dps.global_endpoint, "https://127.0.0.1:8443/some/path");
    }

    #[test]
    fn other_sources_and_methods_are_refused_naming_what_is_supported() {
        let manual = r#"
hostname = "h"
homedir = "/x"
[provisioning]
source = "manual"
connection_string = "HostName=x;DeviceId=y;SharedAccessKey=z"
"#;
        let e = parse(manual).unwrap_err();
        assert!(e.contains("\"manual\" is not supported"), "{e}");
        assert!(
            e.contains("source = \"dps\"") && e.contains("method = \"tpm\""),
            "{e}"
        );

        let sym = MINIMAL.replace("method = \"tpm\"", "method = \"symmetric_key\"");
        let e = parse(&sym).unwrap_err();
        assert!(e.contains("\"symmetric_key\" is not supported"), "{e}");
        assert!(e.contains("method = \"tpm\""), "{e}");
    }

    #[test]
    fn plain_http_endpoint_and_missing_scope_are_refused() {
        let e = parse(&MINIMAL.replace("https://global", "http://global")).unwrap_err();
        assert!(
            e.contains("global_endpoint") && e.contains("https://"),
            "{e}"
        );
        let e = parse(&MINIMAL.replace("scope_id = \"0ne00000001\"", "")).unwrap_err();
        assert!(e.contains("scope_id"), "{e}");
    }

    #[test]
    fn registration_id_is_checked() {
        let with = |id: &str| {
            parse(&MINIMAL.replace(
                "method = \"tpm\"",
                &format!("method = \"tpm\"\nregistration_id = \"{id}\""),
            ))
        };
        assert_eq!(
            with("dev-1").unwrap().dps.registration_id.as_deref(),
            Some("dev-1")
        );
        assert!(with("Dev 1").unwrap_err().contains("registration_id"));
        assert!(with("").is_err());
    }

    #[test]
    fn payload_uri_must_be_a_file_uri() {
        let with = |uri: &str| {
            parse(&MINIMAL.replace(
                "[provisioning.attestation]",
                &format!("payload = {{ uri = \"{uri}\" }}\n[provisioning.attestation]"),
            ))
        };
        let c = with("file:///etc/aziot/my%20payload.json").unwrap();
        assert_eq!(
            c.dps.payload_path.unwrap(),
            std::path::PathBuf::from("/etc/aziot/my payload.json")
        );
        assert!(with("https://x/payload.json")
            .unwrap_err()
            .contains("file://"));
    }

    #[test]
    fn nested_mode_is_refused() {
        let e = parse(&MINIMAL.replace(
            "source = \"dps\"",
            "source = \"dps\"\nlocal_gateway_hostname = \"parent\"",
        ))
        .unwrap_err();
        assert!(e.contains("nested"), "{e}");
    }
}
