//! The super-config `/etc/aziot/config.toml` as written, in upstream's shape. Every key is read
//! loosely (optional, strings for enums) so that `validate` can refuse a value with a sentence
//! naming what is supported, rather than serde's "unknown variant".

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use super::error::ApplyError;

/// No `Debug`: `[tpm]` holds the hierarchy passwords.
#[derive(Default, Deserialize)]
pub struct Raw {
    pub hostname: Option<String>,
    /// Upstream's name; IoT Edge's super-config calls it `parent_hostname`.
    #[serde(alias = "parent_hostname")]
    pub local_gateway_hostname: Option<String>,
    pub cloud_timeout_sec: Option<i64>,
    pub cloud_retries: Option<i64>,
    pub prefer_module_identity_cache: Option<bool>,
    pub aziot_max_requests: Option<MaxRequests>,
    pub provisioning: Option<Provisioning>,
    pub localid: Option<LocalId>,
    #[serde(default)]
    pub aziot_keys: BTreeMap<String, String>,
    #[serde(default)]
    pub preloaded_keys: BTreeMap<String, String>,
    pub tpm: Option<Tpm>,
    /// Our extension: identityd-dps's `[cloud]` table, copied to identityd's file.
    pub cloud: Option<Cloud>,
    /// Upstream keys this command does not apply (certd's issuance, debug endpoints).
    pub cert_issuance: Option<toml::Value>,
    pub preloaded_certs: Option<toml::Value>,
    pub endpoints: Option<toml::Value>,
}

#[derive(Debug, Default, Deserialize)]
pub struct MaxRequests {
    pub keyd: Option<i64>,
    pub certd: Option<i64>,
    pub tpmd: Option<i64>,
    pub identityd: Option<i64>,
}

#[derive(Debug, Deserialize)]
pub struct Provisioning {
    pub source: Option<String>,
    pub global_endpoint: Option<String>,
    pub id_scope: Option<String>,
    /// The per-daemon name; caught to say that the super-config calls it `id_scope`.
    pub scope_id: Option<toml::Value>,
    pub payload: Option<Payload>,
    pub attestation: Option<Attestation>,
}

#[derive(Debug, Deserialize)]
pub struct Payload {
    pub uri: String,
}

#[derive(Debug, Deserialize)]
pub struct Attestation {
    pub method: Option<String>,
    pub registration_id: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct LocalId {
    pub domain: String,
}

/// Upstream's tpmd `SharedConfig`: `tcti` and the passwords are C strings there, so each may be
/// a string or an array of byte values (what upstream's `config apply` writes into tpmd's file).
#[derive(Deserialize)]
pub struct Tpm {
    #[serde(default, deserialize_with = "tcti")]
    pub tcti: Option<String>,
    /// An integer, or the quoted hex upstream's own template shows; checked in `validate`.
    pub auth_key_index: Option<toml::Value>,
    pub hierarchy_authorization: Option<HierarchyAuthorization>,
}

#[derive(Default, Deserialize)]
pub struct HierarchyAuthorization {
    #[serde(default, deserialize_with = "endorsement")]
    pub endorsement: Option<String>,
    #[serde(default, deserialize_with = "owner")]
    pub owner: Option<String>,
}

fn tcti<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    aziot_config::forms::text_or_bytes(d, "tpm.tcti").map(|t| Some(t.to_string()))
}
fn endorsement<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    aziot_config::forms::text_or_bytes(d, "tpm.hierarchy_authorization.endorsement")
        .map(|t| Some(t.to_string()))
}
fn owner<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    aziot_config::forms::text_or_bytes(d, "tpm.hierarchy_authorization.owner").map(|t| Some(t.to_string()))
}

#[derive(Debug, Default, Deserialize)]
pub struct Cloud {
    pub trust_bundle: Option<String>,
    pub system_roots: Option<bool>,
    pub sas_token_lifetime_sec: Option<i64>,
    pub provisioning_timeout_sec: Option<i64>,
    pub max_backoff_sec: Option<i64>,
}

/// What was read, and the keys no field took (as TOML paths).
pub struct Parsed {
    pub raw: Raw,
    pub unknown: Vec<String>,
}

pub fn parse(path: &Path, text: &str) -> Result<Parsed, ApplyError> {
    let mut unknown = Vec::new();
    let deserializer = toml::Deserializer::new(text);
    let mut on_unknown = |p: serde_ignored::Path<'_>| unknown.push(dotted(&p));
    let ignoring = serde_ignored::Deserializer::new(deserializer, &mut on_unknown);
    let raw: Raw = serde_path_to_error::deserialize(ignoring).map_err(|e| {
        let key = e.path().to_string();
        let inner = e.into_inner();
        let (line, column) = inner.span().map_or((0, 0), |s| line_column(text, s.start));
        let message = inner.message().trim_end().replace('\n', ": ");
        let message = if key.is_empty() || key == "." {
            format!("invalid TOML: {message}; fix the syntax there")
        } else {
            format!("`{key}`: {message}; fix `{key}` there")
        };
        ApplyError::Toml {
            path: path.to_owned(),
            line,
            column,
            message,
        }
    })?;
    Ok(Parsed { raw, unknown })
}

/// `a.b[0].c` from serde_ignored's path (which marks every `Option` with a `?` segment).
fn dotted(path: &serde_ignored::Path<'_>) -> String {
    use serde_ignored::Path;
    match path {
        Path::Root => String::new(),
        Path::Seq { parent, index } => format!("{}[{index}]", dotted(parent)),
        Path::Map { parent, key } => {
            let parent = dotted(parent);
            if parent.is_empty() {
                key.clone()
            } else {
                format!("{parent}.{key}")
            }
        }
        Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => dotted(parent),
    }
}

/// 1-based line and column (in characters) of byte `offset`.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(text: &str) -> Result<Parsed, String> {
        parse(Path::new("config.toml"), text).map_err(|e| e.to_string())
    }

    #[test]
    fn bad_toml_names_line_and_column() {
        let e = parse_str("hostname = \"x\"\n[provisioning\nsource = \"dps\"\n")
            .err()
            .unwrap();
        assert!(e.starts_with("config.toml:2:"), "{e}");
        assert!(e.contains("invalid TOML"), "{e}");
    }

    #[test]
    fn a_value_of_the_wrong_type_names_the_key_and_position() {
        let e = parse_str("cloud_timeout_sec = \"70\"\n").err().unwrap();
        assert!(e.starts_with("config.toml:1:21:"), "{e}");
        assert!(e.contains("`cloud_timeout_sec`"), "{e}");
        let e =
            parse_str("[provisioning]\nsource = \"dps\"\n[provisioning.attestation]\nmethod = 5\n")
                .err()
                .unwrap();
        assert!(
            e.starts_with("config.toml:4:10:") && e.contains("`provisioning.attestation.method`"),
            "{e}"
        );
    }

    #[test]
    fn unknown_keys_are_collected_as_toml_paths() {
        let p = parse_str(
            "hostnme = \"x\"\n[provisioning]\nsource = \"dps\"\nalways_reprovision_on_startup = true\n\
             [provisioning.attestation]\nmethod = \"tpm\"\nregistraton_id = \"a\"\n[agent]\nname = \"edgeAgent\"\n",
        )
        .ok()
        .unwrap();
        assert_eq!(
            p.unknown,
            [
                "hostnme",
                "provisioning.always_reprovision_on_startup",
                "provisioning.attestation.registraton_id",
                "agent"
            ]
        );
    }

    #[test]
    fn tpm_strings_may_be_given_as_byte_arrays_as_in_upstreams_tpmd_file() {
        let p = parse_str(
            "[tpm]\ntcti = [100, 101, 118]\n[tpm.hierarchy_authorization]\nowner = \"o\"\nendorsement = [101]\n",
        )
        .ok()
        .unwrap();
        let tpm = p.raw.tpm.unwrap();
        let auth = tpm.hierarchy_authorization.unwrap();
        assert_eq!(tpm.tcti.as_deref(), Some("dev"));
        assert_eq!((auth.owner.as_deref(), auth.endorsement.as_deref()), (Some("o"), Some("e")));
    }

    #[test]
    fn parent_hostname_is_iot_edges_name_for_local_gateway_hostname() {
        let p = parse_str("parent_hostname = \"parent\"\n").ok().unwrap();
        assert_eq!(p.raw.local_gateway_hostname.as_deref(), Some("parent"));
    }
}
