//! `[[principal]]`: which Unix uid may ask for which identity. Same keys and checks as upstream,
//! so IoT Edge's config.d snippets keep working; the serialized form goes back into `prev_state`.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use super::InvalidConfig;

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct Principal {
    pub uid: u32,
    pub name: String,
    #[serde(default, rename = "idtype", skip_serializing_if = "Option::is_none")]
    pub idtype: Option<Vec<IdType>>,
    /// Options of a local identity; kept only to write it back into `prev_state`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub localid: Option<toml::Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum IdType {
    Device,
    Module,
    Local,
}

/// `[localid] domain = "..."`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct LocalId {
    pub domain: String,
}

impl Principal {
    pub fn has(&self, idtype: IdType) -> bool {
        self.idtype.as_ref().is_some_and(|t| t.contains(&idtype))
    }
}

/// Upstream's `Settings::check` for principals.
pub(super) fn check(
    principals: &[Principal],
    localid: Option<&LocalId>,
) -> Result<(), InvalidConfig> {
    let mut names = HashSet::new();
    for p in principals {
        if p.name.trim().is_empty() {
            return Err(InvalidConfig::key(
                "principal.name",
                format!("of the principal with uid {} is empty", p.uid),
            ));
        }
        if !names.insert(p.name.as_str()) {
            return Err(InvalidConfig::key(
                "principal.name",
                format!(
                    "{:?} is used by more than one [[principal]]; names must be unique",
                    p.name
                ),
            ));
        }
        if p.localid.is_some() && !p.has(IdType::Local) {
            return Err(InvalidConfig::key(
                "principal.localid",
                format!(
                    "is set for {:?}, whose idtype does not include \"local\"; add it or remove localid",
                    p.name
                ),
            ));
        }
        if p.has(IdType::Local) {
            if localid.is_none() {
                return Err(InvalidConfig::key(
                    "localid",
                    format!(
                        "is missing, but principal {:?} has idtype \"local\"; add [localid] domain = \"...\"",
                        p.name
                    ),
                ));
            }
            log::warn!(
                "principal {:?} asks for a local identity; identityd-dps does not issue local \
                 identities and answers such requests with 400",
                p.name
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::config::{parse, MINIMAL};

    use super::IdType;

    #[test]
    fn principals_parse_with_idtypes() {
        let c = parse(&format!(
            "{MINIMAL}\n[[principal]]\nuid = 1000\nname = \"edgeAgent\"\nidtype = [\"module\"]\n\
             [[principal]]\nuid = 1001\nname = \"aziot-edged\"\n"
        ))
        .unwrap();
        assert!(c.principals[0].has(IdType::Module));
        assert!(!c.principals[0].has(IdType::Device));
        assert!(c.principals[1].idtype.is_none());
    }

    #[test]
    fn duplicate_names_and_stray_localid_are_refused() {
        let e = parse(&format!(
            "{MINIMAL}\n[[principal]]\nuid = 1\nname = \"a\"\n[[principal]]\nuid = 2\nname = \"a\"\n"
        ))
        .unwrap_err();
        assert!(e.contains("unique"), "{e}");
        let e = parse(&format!(
            "{MINIMAL}\n[[principal]]\nuid = 1\nname = \"a\"\nidtype = [\"module\"]\nlocalid = {{ type = \"x509\" }}\n"
        ))
        .unwrap_err();
        assert!(e.contains("localid"), "{e}");
        let e = parse(&format!(
            "{MINIMAL}\n[[principal]]\nuid = 1\nname = \"a\"\nidtype = [\"local\"]\n"
        ))
        .unwrap_err();
        assert!(e.contains("[localid]"), "{e}");
    }
}
