//! Which registration ID DPS will see, and where it comes from. identityd (ours or upstream's)
//! sends `[provisioning.attestation] registration_id` of its own config when it is set, else
//! (identityd-dps only) the ID derived from the EK. An admin edits the super-config, so a value
//! there that is not applied yet is named too. Used by `tpm-info` (to say it) and `enroll` (to
//! enroll that ID rather than the EK-derived one).

use std::path::Path;

use serde::Serialize;

/// Where the registration ID DPS sees comes from.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum IdSource {
    /// `[provisioning.attestation] registration_id` of identityd's config (what the daemon sends).
    IdentitydConfig,
    /// Only in the super-config, not applied yet.
    SuperConfig,
    /// None configured: derived from the EK, as the DPS device SDKs and identityd-dps do.
    EndorsementKey,
}

/// The answer, with the facts an admin needs to act on it.
#[derive(Debug, Clone, Serialize)]
pub struct DpsRegistration {
    /// What DPS will see; `None` only when nothing is configured and there is no EK.
    pub registration_id: Option<String>,
    pub registration_id_source: IdSource,
    /// The file or files the configured ID was read from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub registration_id_file: Option<String>,
    /// The EK-derived ID, for comparison (and for an enrollment made without a configured ID).
    pub registration_id_from_ek: Option<String>,
    /// The super-config's ID when it differs from the applied one: `config apply` changes it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pending_registration_id: Option<String>,
    /// The ID scope and endpoint identityd is configured with, for the block to paste.
    #[serde(skip)]
    pub scope_id: Option<String>,
    #[serde(skip)]
    pub global_endpoint: Option<String>,
}

/// What the configs say; `ek` is the TPM's EK when it was read.
pub fn resolve(super_config: &Path, ek: Option<&[u8]>) -> DpsRegistration {
    let from_ek = ek.map(aziot_tpm_common::registration_id);
    let identityd = identityd_settings();
    let applied = identityd.as_ref().and_then(|d| d.registration_id.clone());
    let pending = super_config_id(super_config);
    let (registration_id, registration_id_source, registration_id_file) = match (&applied, &pending) {
        (Some(id), _) => (Some(id.clone()), IdSource::IdentitydConfig, Some(identityd_files())),
        (None, Some(id)) => (Some(id.clone()), IdSource::SuperConfig, Some(super_config.display().to_string())),
        (None, None) => (from_ek.clone(), IdSource::EndorsementKey, None),
    };
    DpsRegistration {
        pending_registration_id: pending.filter(|p| applied.as_ref().is_some_and(|a| a != p)),
        registration_id,
        registration_id_source,
        registration_id_file,
        registration_id_from_ek: from_ek,
        scope_id: identityd.as_ref().map(|d| d.scope_id.clone()),
        global_endpoint: identityd.map(|d| d.global_endpoint),
    }
}

impl DpsRegistration {
    /// One line: the ID and where it comes from.
    pub fn describe_source(&self) -> String {
        match self.registration_id_source {
            IdSource::IdentitydConfig => format!(
                "configured: [provisioning.attestation] registration_id in {}",
                self.registration_id_file.as_deref().unwrap_or("identityd's config")
            ),
            IdSource::SuperConfig => format!(
                "configured in {} but not applied yet: run `aziot-tpm config apply`",
                self.registration_id_file.as_deref().unwrap_or("the super-config")
            ),
            IdSource::EndorsementKey => {
                "derived from the EK: no registration_id is configured".to_owned()
            }
        }
    }

    /// The `[provisioning]` block for `/etc/aziot/config.toml` that both `aziot-tpm config apply`
    /// and upstream's `aziotctl`/`iotedge config apply` accept (upstream requires the ID).
    pub fn provisioning_block(&self) -> Option<String> {
        let id = self.registration_id.as_deref()?;
        let endpoint = self
            .global_endpoint
            .as_deref()
            .unwrap_or("https://global.azure-devices-provisioning.net");
        let scope = self.scope_id.as_deref().unwrap_or("<the ID scope of your DPS instance>");
        Some(format!(
            "[provisioning]\nsource = \"dps\"\nglobal_endpoint = {}\nid_scope = {}\n\n\
             [provisioning.attestation]\nmethod = \"tpm\"\nregistration_id = {}\n",
            quoted(endpoint),
            quoted(scope),
            quoted(id)
        ))
    }
}

fn quoted(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| format!("\"{s}\""))
}

struct IdentitydDps {
    registration_id: Option<String>,
    scope_id: String,
    global_endpoint: String,
}

/// identityd's DPS settings, when its config is readable and valid (root, or the aziotid user).
fn identityd_settings() -> Option<IdentitydDps> {
    let settings = aziot_config::load::<identityd_dps::config::Settings>("identityd").ok()?;
    let dps = settings.validate().ok()?.dps;
    Some(IdentitydDps {
        registration_id: dps.registration_id,
        scope_id: dps.scope_id,
        global_endpoint: dps.global_endpoint,
    })
}

fn identityd_files() -> String {
    let (file, dir) = aziot_config::Svc::Identityd.config_paths();
    format!("{} (with {}/*.toml)", file.display(), dir.display())
}

/// `[provisioning.attestation] registration_id` of the super-config, read loosely: a broken
/// super-config is `config apply`'s to report.
fn super_config_id(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let value: toml::Table = toml::from_str(&text).ok()?;
    value
        .get("provisioning")?
        .get("attestation")?
        .get("registration_id")?
        .as_str()
        .map(str::to_owned)
}
