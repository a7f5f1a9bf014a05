//! From the super-config as written to settings the renderers can trust. Every refusal names
//! the TOML key, what was found and what is accepted; what is merely ignored becomes a warning.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use identityd_dps::config::MAX_DURATION_SEC;

use super::error::ApplyError;
use super::super_config::{self, Parsed, Raw};

/// Upstream's minimum (and default) `cloud_timeout_sec`.
pub const MIN_CLOUD_TIMEOUT_SEC: i64 = 70;
pub const DEFAULT_CLOUD_RETRIES: u32 = 1;
pub const DEFAULT_MAX_REQUESTS: u64 = 10;
/// The largest `aziot_max_requests.*`: the daemons read `max_requests` as a machine word
/// (`usize`), 32 bits on armhf, so a larger value would be written there and then refused.
pub const MAX_MAX_REQUESTS: i64 = u32::MAX as i64;
pub const DEFAULT_TCTI: &str = "device";
pub const DEFAULT_AUTH_KEY_INDEX: u32 = 0x00_01_00;
const MAX_AUTH_KEY_INDEX: i64 = 0x7F_FF_FF;

/// Where each daemon keeps its state; upstream forces these, whatever the super-config says.
pub const KEYD_HOMEDIR: &str = "/var/lib/aziot/keyd";
pub const CERTD_HOMEDIR: &str = "/var/lib/aziot/certd";
pub const IDENTITYD_HOMEDIR: &str = "/var/lib/aziot/identityd";

/// Top-level tables and keys of IoT Edge's super-config: `iotedge config apply` applies them.
const IOT_EDGE_KEYS: &[&str] = &[
    "agent",
    "connect",
    "listen",
    "watchdog",
    "edge_ca",
    "moby_runtime",
    "trust_bundle_cert",
    "manifest_trust_bundle_cert",
    "auto_reprovisioning_mode",
    "imported_master_encryption_key",
    "additional_info",
    "iotedge_max_requests",
    "image_garbage_collection",
    "allow_elevated_docker_permissions",
];

/// The super-config's keys that belong before any table.
const TOP_LEVEL_KEYS: &[&str] = &[
    "hostname",
    "local_gateway_hostname",
    "parent_hostname",
    "cloud_timeout_sec",
    "cloud_retries",
    "prefer_module_identity_cache",
];

pub struct Settings {
    pub hostname: String,
    pub prefer_module_identity_cache: bool,
    pub cloud_timeout_sec: u64,
    pub cloud_retries: u32,
    pub max_requests: MaxRequests,
    pub global_endpoint: String,
    pub scope_id: String,
    /// `None`: identityd-dps derives it from the EK.
    pub registration_id: Option<String>,
    pub payload_uri: Option<String>,
    pub localid_domain: Option<String>,
    pub aziot_keys: BTreeMap<String, String>,
    pub preloaded_keys: BTreeMap<String, String>,
    pub tpm: Tpm,
    pub cloud: super_config::Cloud,
}

pub struct MaxRequests {
    pub keyd: u64,
    pub certd: u64,
    pub tpmd: u64,
    pub identityd: u64,
}

/// No `Debug`: it holds the hierarchy passwords.
pub struct Tpm {
    pub tcti: String,
    pub auth_key_index: u32,
    pub endorsement: String,
    pub owner: String,
}

pub struct Validated {
    pub settings: Settings,
    pub warnings: Vec<String>,
}

/// `hostname` is the machine's when the super-config has none, as upstream does.
pub fn validate(
    path: &Path,
    parsed: Parsed,
    machine_hostname: impl FnOnce() -> Result<String, ApplyError>,
) -> Result<Validated, ApplyError> {
    let Parsed { raw, unknown } = parsed;
    let bad = |key: &str, problem: String| ApplyError::invalid(path, key, problem);
    let mut warnings = unknown_key_warnings(&unknown);

    let Raw {
        hostname,
        local_gateway_hostname,
        cloud_timeout_sec,
        cloud_retries,
        prefer_module_identity_cache,
        aziot_max_requests,
        provisioning,
        localid,
        mut aziot_keys,
        preloaded_keys,
        tpm,
        cloud,
        cert_issuance,
        preloaded_certs,
        endpoints,
    } = raw;

    let provisioning = provisioning.ok_or_else(|| {
        bad(
            "provisioning",
            "is missing: add [provisioning] source = \"dps\", global_endpoint, id_scope and \
             [provisioning.attestation] method = \"tpm\" (see docs/config.md)"
                .into(),
        )
    })?;
    let (global_endpoint, scope_id, registration_id, payload_uri) = dps(path, provisioning)?;
    if let Some(parent) = local_gateway_hostname {
        return Err(bad(
            "local_gateway_hostname",
            format!(
                "= {parent:?}: DPS provisioning is not supported in nested mode (a child device \
                 behind a parent gateway), as with upstream; remove it"
            ),
        ));
    }

    let hostname = match hostname {
        Some(h) => check_hostname(path, h)?,
        None => machine_hostname()?,
    };
    let cloud_timeout_sec = match cloud_timeout_sec {
        None => MIN_CLOUD_TIMEOUT_SEC as u64,
        Some(t) if t > MAX_DURATION_SEC as i64 => {
            return Err(bad(
                "cloud_timeout_sec",
                format!("= {t}: must be at most {MAX_DURATION_SEC} seconds (365 days)"),
            ))
        }
        Some(t) if t >= MIN_CLOUD_TIMEOUT_SEC => t as u64,
        Some(t) => {
            return Err(bad(
                "cloud_timeout_sec",
                format!("= {t}: must be at least {MIN_CLOUD_TIMEOUT_SEC} seconds (upstream's minimum, and the default)"),
            ))
        }
    };
    let cloud_retries = match cloud_retries {
        None => DEFAULT_CLOUD_RETRIES,
        Some(r) => u32::try_from(r)
            .map_err(|_| bad("cloud_retries", format!("= {r}: must be 0 or more")))?,
    };
    let max_requests = max_requests(path, aziot_max_requests.unwrap_or_default())?;

    if let Some(given) = aziot_keys
        .get("homedir_path")
        .filter(|v| *v != KEYD_HOMEDIR)
    {
        warnings.push(format!(
            "`aziot_keys.homedir_path` = {given:?} is replaced by {KEYD_HOMEDIR:?}, as upstream does; \
             set a different key store in a file under /etc/aziot/keyd/config.d/ if you must"
        ));
    }
    for key in aziot_keys.keys().filter(|k| *k != "homedir_path") {
        warnings.push(format!(
            "`aziot_keys.{key}` is passed to the Keys Service, but keyd-tpm keeps every key in the TPM \
             and ignores it (no PKCS#11 between it and the TPM)"
        ));
    }
    aziot_keys.insert("homedir_path".into(), KEYD_HOMEDIR.into());
    for (id, uri) in &preloaded_keys {
        check_preloaded_key(path, id, uri, &mut warnings)?;
    }

    let tpm = check_tpm(path, tpm)?;
    let cloud = check_cloud(path, cloud.unwrap_or_default())?;
    let localid_domain = localid.map(|l| l.domain);

    for (key, present) in [
        ("cert_issuance", cert_issuance.is_some()),
        ("preloaded_certs", preloaded_certs.is_some()),
    ] {
        if present {
            warnings.push(format!(
                "`{key}` is not applied by aziot-tpm (it configures upstream's Certificates Service); \
                 use `iotedge config apply` or aziotctl for certificates"
            ));
        }
    }
    if endpoints.is_some() {
        warnings.push(
            "`endpoints` is not applied (upstream reads it only in debug builds); set a daemon's \
             [endpoints] in a file under /etc/aziot/<daemon>/config.d/"
                .into(),
        );
    }

    Ok(Validated {
        settings: Settings {
            hostname,
            prefer_module_identity_cache: prefer_module_identity_cache.unwrap_or(false),
            cloud_timeout_sec,
            cloud_retries,
            max_requests,
            global_endpoint,
            scope_id,
            registration_id,
            payload_uri,
            localid_domain,
            aziot_keys,
            preloaded_keys,
            tpm,
            cloud,
        },
        warnings,
    })
}

fn unknown_key_warnings(unknown: &[String]) -> Vec<String> {
    let (edge, other): (Vec<&String>, Vec<&String>) = unknown
        .iter()
        .partition(|k| IOT_EDGE_KEYS.contains(&k.split(['.', '[']).next().unwrap_or_default()));
    let mut warnings: Vec<String> = other
        .iter()
        .map(|k| match k.rsplit_once('.') {
            Some((table, key)) if TOP_LEVEL_KEYS.contains(&key) => format!(
                "ignoring unknown key `{k}`: `{key}` is a top-level key, but here it follows [{table}]; \
                 move it above the first [table] header"
            ),
            _ => format!("ignoring unknown key `{k}`; check its spelling (docs/config.md lists the keys)"),
        })
        .collect();
    if !edge.is_empty() {
        let mut names: Vec<&str> = edge
            .iter()
            .map(|k| k.split(['.', '[']).next().unwrap_or_default())
            .collect();
        names.dedup();
        warnings.push(format!(
            "IoT Edge settings ({}) are left to `iotedge config apply`",
            names.join(", ")
        ));
    }
    warnings
}

type Dps = (String, String, Option<String>, Option<String>);

fn dps(path: &Path, p: super_config::Provisioning) -> Result<Dps, ApplyError> {
    let bad = |key: &str, problem: String| ApplyError::invalid(path, key, problem);
    const ONLY: &str = "aziot-tpm provisions only through DPS with TPM attestation: \
                        [provisioning] source = \"dps\" with [provisioning.attestation] method = \"tpm\"";
    match p.source.as_deref() {
        Some("dps") => {}
        Some(other) => {
            return Err(bad(
                "provisioning.source",
                format!("= {other:?} is not supported: {ONLY}; for manual or no provisioning use upstream's aziotctl and aziot-identity-service"),
            ))
        }
        None => return Err(bad("provisioning.source", format!("is missing: {ONLY}"))),
    }
    let attestation = p.attestation.ok_or_else(|| {
        bad(
            "provisioning.attestation",
            "is missing: add [provisioning.attestation] method = \"tpm\"".into(),
        )
    })?;
    match attestation.method.as_deref() {
        Some("tpm") => {}
        Some(other) => {
            return Err(bad(
                "provisioning.attestation.method",
                format!(
                    "= {other:?} is not supported: this package supports only TPM attestation (method = \"tpm\"); \
                     symmetric-key and X.509 devices need upstream's aziot-identity-service"
                ),
            ))
        }
        None => return Err(bad("provisioning.attestation.method", "is missing: set method = \"tpm\"".into())),
    }
    let endpoint = p.global_endpoint.ok_or_else(|| {
        bad(
            "provisioning.global_endpoint",
            "is missing: set it to https://global.azure-devices-provisioning.net/ (or your DPS's endpoint)".into(),
        )
    })?;
    let endpoint = normalize_https_url(&endpoint).ok_or_else(|| {
        bad(
            "provisioning.global_endpoint",
            format!("= {endpoint:?} is not an https:// URL with a host; write e.g. https://global.azure-devices-provisioning.net/"),
        )
    })?;
    let scope = match (p.id_scope, p.scope_id) {
        (Some(s), _) if s.contains('<') || s.contains('>') => {
            return Err(bad(
                "provisioning.id_scope",
                format!("= {s:?} is the template's placeholder: set it to the ID Scope shown on the DPS overview page (e.g. 0ne00000001)"),
            ))
        }
        (Some(s), _) if !s.trim().is_empty() && !s.trim().chars().all(|c| c.is_ascii_alphanumeric()) => {
            return Err(bad(
                "provisioning.id_scope",
                format!("= {s:?} is not an ID Scope (letters and digits only, e.g. 0ne00000001); copy it from the DPS overview page"),
            ))
        }
        (Some(s), _) if !s.trim().is_empty() => s.trim().to_owned(),
        (Some(_), _) => return Err(bad("provisioning.id_scope", "is empty: set it to the ID Scope shown on the DPS overview page".into())),
        (None, Some(_)) => {
            return Err(bad(
                "provisioning.scope_id",
                "is identityd's name: the super-config calls it `id_scope` (config apply writes it to identityd as scope_id); rename it".into(),
            ))
        }
        (None, None) => return Err(bad("provisioning.id_scope", "is missing: set it to the ID Scope shown on the DPS overview page (e.g. 0ne00000001)".into())),
    };
    if let Some(id) = &attestation.registration_id {
        check_registration_id(path, id)?;
    }
    let payload = match p.payload {
        None => None,
        Some(super_config::Payload { uri }) => {
            let ok = uri
                .strip_prefix("file://")
                .is_some_and(|rest| rest.starts_with('/'));
            if !ok {
                return Err(bad(
                    "provisioning.payload.uri",
                    format!("= {uri:?} must be a file:/// URI of a JSON file, e.g. file:///etc/aziot/dps-payload.json"),
                ));
            }
            Some(uri)
        }
    };
    Ok((endpoint, scope, attestation.registration_id, payload))
}

/// The URL as upstream writes it after parsing it with the `url` crate: scheme and host in
/// lower case, the default port dropped, an empty path made `/`.
pub fn normalize_https_url(url: &str) -> Option<String> {
    let url = url.trim();
    let (scheme, rest) = url.split_once("://")?;
    if !scheme.eq_ignore_ascii_case("https") {
        return None;
    }
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    if authority.is_empty() || authority.contains('@') || authority.contains(char::is_whitespace) {
        return None;
    }
    let authority = authority.to_ascii_lowercase();
    let authority = authority.strip_suffix(":443").unwrap_or(&authority);
    let tail = if tail.starts_with('/') {
        tail.to_owned()
    } else {
        format!("/{tail}")
    };
    Some(format!("https://{authority}{tail}"))
}

fn check_hostname(path: &Path, hostname: String) -> Result<String, ApplyError> {
    let ok = !hostname.is_empty()
        && hostname.len() <= 255
        && hostname
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_');
    if ok {
        Ok(hostname)
    } else {
        Err(ApplyError::invalid(
            path,
            "hostname",
            format!("= {hostname:?} is not a host name: use letters, digits, '-' and '.', or remove it to use the machine's"),
        ))
    }
}

/// DPS registration IDs: up to 128 characters, lowercase alphanumerics and `- . _ :`.
fn check_registration_id(path: &Path, id: &str) -> Result<(), ApplyError> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-._:".contains(c));
    if ok {
        return Ok(());
    }
    Err(ApplyError::invalid(
        path,
        "provisioning.attestation.registration_id",
        format!(
            "= {id:?}: DPS accepts 1 to 128 lowercase letters, digits and - . _ :; or remove it and \
             the ID derived from the TPM's EK is used (`aziot-tpm tpm-info` prints it)"
        ),
    ))
}

fn max_requests(path: &Path, m: super_config::MaxRequests) -> Result<MaxRequests, ApplyError> {
    let one = |name: &str, v: Option<i64>| {
        match v {
        None => Ok(DEFAULT_MAX_REQUESTS),
        Some(n) if (1..=MAX_MAX_REQUESTS).contains(&n) => Ok(n as u64),
        Some(n) => Err(ApplyError::invalid(
            path,
            format!("aziot_max_requests.{name}"),
            format!("= {n}: must be at least 1 and at most {MAX_MAX_REQUESTS} (concurrent requests per caller; default {DEFAULT_MAX_REQUESTS})"),
        )),
    }
    };
    Ok(MaxRequests {
        keyd: one("keyd", m.keyd)?,
        certd: one("certd", m.certd)?,
        tpmd: one("tpmd", m.tpmd)?,
        identityd: one("identityd", m.identityd)?,
    })
}

fn check_preloaded_key(
    path: &Path,
    id: &str,
    uri: &str,
    warnings: &mut Vec<String>,
) -> Result<(), ApplyError> {
    if uri
        .strip_prefix("file://")
        .is_some_and(|rest| rest.starts_with('/'))
    {
        return Ok(());
    }
    if uri.starts_with("pkcs11:") {
        warnings.push(format!(
            "`preloaded_keys.{id}` is a PKCS#11 URI: keyd-tpm keeps keys in the TPM and cannot load it \
             (it will answer 400 for that key); give a file:/// URI instead"
        ));
        return Ok(());
    }
    Err(ApplyError::invalid(
        path,
        format!("preloaded_keys.{id}"),
        format!("= {uri:?} must be a file:/// URI of the key file, e.g. file:///var/secrets/aziot/keyd/{id}"),
    ))
}

fn check_tpm(path: &Path, tpm: Option<super_config::Tpm>) -> Result<Tpm, ApplyError> {
    let Some(tpm) = tpm else {
        return Ok(Tpm {
            tcti: DEFAULT_TCTI.into(),
            auth_key_index: DEFAULT_AUTH_KEY_INDEX,
            endorsement: String::new(),
            owner: String::new(),
        });
    };
    let tcti = tpm.tcti.unwrap_or_else(|| DEFAULT_TCTI.into());
    if tcti.contains('\0') {
        return Err(ApplyError::invalid(
            path,
            "tpm.tcti",
            "contains a NUL character".to_owned(),
        ));
    }
    let auth_key_index = match tpm.auth_key_index {
        None => DEFAULT_AUTH_KEY_INDEX,
        Some(v) => auth_key_index(path, &v)?,
    };
    let auth = tpm.hierarchy_authorization.unwrap_or_default();
    for (key, value) in [("endorsement", &auth.endorsement), ("owner", &auth.owner)] {
        if value.as_deref().is_some_and(|v| v.contains('\0')) {
            return Err(ApplyError::invalid(
                path,
                format!("tpm.hierarchy_authorization.{key}"),
                "contains a NUL character".to_owned(),
            ));
        }
    }
    Ok(Tpm {
        tcti,
        auth_key_index,
        endorsement: auth.endorsement.unwrap_or_default(),
        owner: auth.owner.unwrap_or_default(),
    })
}

/// An integer in upstream's range; the quoted form upstream's template shows is accepted and
/// written back as the integer upstream's tpmd needs.
fn auth_key_index(path: &Path, value: &toml::Value) -> Result<u32, ApplyError> {
    let bad = |found: String| {
        ApplyError::invalid(
            path,
            "tpm.auth_key_index",
            format!(
                "= {found}: must be an integer in range 0x00_00_00..=0x7F_FF_FF (the auth key lives at \
                 0x81000000 + this; default 0x00_01_00); write e.g. auth_key_index = 0x00_01_00"
            ),
        )
    };
    let n = match value {
        toml::Value::Integer(i) => *i,
        toml::Value::String(s) => {
            let t = s.trim().replace('_', "");
            let parsed = match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
                Some(hex) => i64::from_str_radix(hex, 16),
                None => t.parse(),
            };
            parsed.map_err(|_| bad(format!("{s:?}")))?
        }
        other => return Err(bad(other.to_string())),
    };
    if (0..=MAX_AUTH_KEY_INDEX).contains(&n) {
        Ok(n as u32)
    } else {
        Err(bad(format!("{n:#x}")))
    }
}

/// identityd-dps's `[cloud]` rules, checked here so a mistake shows now, not at the next start.
fn check_cloud(path: &Path, cloud: super_config::Cloud) -> Result<super_config::Cloud, ApplyError> {
    if let Some(bundle) = &cloud.trust_bundle {
        let file = bundle.strip_prefix("file://").unwrap_or(bundle);
        if !file.starts_with('/') {
            return Err(ApplyError::invalid(
                path,
                "cloud.trust_bundle",
                format!("= {bundle:?} must be an absolute path or a file:/// URI of a PEM file"),
            ));
        }
    }
    if cloud.system_roots == Some(false) && cloud.trust_bundle.is_none() {
        return Err(ApplyError::invalid(
            path,
            "cloud.system_roots",
            "= false with no cloud.trust_bundle would trust no CA at all; set trust_bundle"
                .to_owned(),
        ));
    }
    for (key, value) in [
        ("sas_token_lifetime_sec", cloud.sas_token_lifetime_sec),
        ("provisioning_timeout_sec", cloud.provisioning_timeout_sec),
        ("max_backoff_sec", cloud.max_backoff_sec),
    ] {
        if let Some(v) = value.filter(|v| *v <= 0) {
            return Err(ApplyError::invalid(
                path,
                format!("cloud.{key}"),
                format!("= {v}: must be greater than 0"),
            ));
        }
        if let Some(v) = value.filter(|v| *v > MAX_DURATION_SEC as i64) {
            return Err(ApplyError::invalid(
                path,
                format!("cloud.{key}"),
                format!("= {v}: must be at most {MAX_DURATION_SEC} seconds (365 days)"),
            ));
        }
    }
    Ok(cloud)
}

/// The files the settings name, checked before anything is written, so a daemon does not die at
/// its next start on a file that is not there. Paths are under `root` (`--root`). A trust bundle
/// or payload that cannot be used is an error; a preloaded key file that is missing is a warning
/// (keyd-tpm starts without that key).
pub fn check_files(path: &Path, root: &Path, s: &Settings, warnings: &mut Vec<String>) -> Result<(), ApplyError> {
    let bad = |key: &str, problem: String| ApplyError::invalid(path, key, problem);
    // Under --root a file may be in the tree being written, or already on this machine.
    let under = |file: &str| {
        let inside = root.join(file.trim_start_matches('/'));
        if inside.exists() {
            inside
        } else {
            PathBuf::from(file)
        }
    };
    if let Some(bundle) = &s.cloud.trust_bundle {
        let file = bundle.strip_prefix("file://").unwrap_or(bundle);
        match std::fs::read(under(file)) {
            Ok(pem) if String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----") => {}
            Ok(_) => return Err(bad("cloud.trust_bundle", format!("= {bundle:?} holds no PEM certificate (-----BEGIN CERTIFICATE-----); name the CA's PEM file"))),
            Err(e) => return Err(bad("cloud.trust_bundle", format!("= {bundle:?} cannot be read ({e}); identityd-dps would not start. Put the CA's PEM file there or fix the path"))),
        }
    }
    if let Some(uri) = &s.payload_uri {
        let file = uri.trim_start_matches("file://");
        match std::fs::read(under(file)) {
            Ok(json) if serde_json::from_slice::<serde_json::Value>(&json).is_ok() => {}
            Ok(_) => return Err(bad("provisioning.payload.uri", format!("= {uri:?} is not a JSON file; every DPS registration would fail on it"))),
            Err(e) => return Err(bad("provisioning.payload.uri", format!("= {uri:?} cannot be read ({e}); every DPS registration would fail on it. Write the JSON file or fix the URI"))),
        }
    }
    for (id, uri) in &s.preloaded_keys {
        let Some(file) = uri.strip_prefix("file://") else { continue };
        if let Err(e) = std::fs::metadata(under(file)) {
            warnings.push(format!("`preloaded_keys.{id}` = {uri:?} cannot be read ({e}): keyd-tpm starts without that key"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_written_as_upstream_writes_them() {
        let n = |u| normalize_https_url(u);
        assert_eq!(
            n("https://global.azure-devices-provisioning.net").as_deref(),
            Some("https://global.azure-devices-provisioning.net/")
        );
        assert_eq!(
            n("HTTPS://Global.Example.NET:443/a?b").as_deref(),
            Some("https://global.example.net/a?b")
        );
        assert_eq!(
            n("https://127.0.0.1:8443").as_deref(),
            Some("https://127.0.0.1:8443/")
        );
        assert_eq!(n("http://x/"), None);
        assert_eq!(n("https:///path"), None);
    }

    #[test]
    fn auth_key_index_accepts_integers_and_quoted_hex_in_range() {
        let p = Path::new("c");
        assert_eq!(
            auth_key_index(p, &toml::Value::Integer(0x200)).ok(),
            Some(0x200)
        );
        assert_eq!(
            auth_key_index(p, &toml::Value::String("0x00_01_00".into())).ok(),
            Some(0x100)
        );
        let e = auth_key_index(p, &toml::Value::Integer(0x80_00_00))
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("`tpm.auth_key_index` = 0x800000") && e.contains("0x00_00_00..=0x7F_FF_FF"),
            "{e}"
        );
        assert!(auth_key_index(p, &toml::Value::Integer(-1)).is_err());
        assert!(auth_key_index(p, &toml::Value::String("lots".into())).is_err());
    }
}
