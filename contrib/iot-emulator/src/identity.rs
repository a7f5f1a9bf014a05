//! The emulator's persistent identity (`emulator.json`, mode 0600): ID scope, the DPS service
//! policy key, the hubs (hostname, port, `iothubowner` key), its ports and the admin token.
//! Created at first start and reused, so everything handed to clients stays valid.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::persist::write_atomic;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Identity {
    pub id_scope: String,
    /// `provisioningserviceowner` key, base64.
    pub service_key: String,
    pub admin_token: String,
    #[serde(default)]
    pub dps_port: u16,
    #[serde(default)]
    pub admin_port: u16,
    #[serde(default)]
    pub hubs: Vec<HubIdentity>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HubIdentity {
    /// What DPS reports as `assignedHub` and clients connect to: `127.0.0.1:<port>`.
    pub hostname: String,
    pub port: u16,
    /// `iothubowner` key, base64.
    pub owner_key: String,
}

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a valid emulator identity: {source}")]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl Identity {
    pub fn path(data_dir: &Path) -> PathBuf {
        data_dir.join("emulator.json")
    }

    /// Loads the identity, or makes a new one (not yet saved) with `id_scope`.
    pub fn load_or_new(data_dir: &Path, id_scope: &str) -> Result<Self, IdentityError> {
        let path = Self::path(data_dir);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|source| IdentityError::Parse { path, source }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self {
                id_scope: id_scope.to_owned(),
                service_key: crate::ids::symmetric_key(),
                admin_token: data_encoding::HEXLOWER.encode(&crate::ids::random_bytes(16)),
                dps_port: 0,
                admin_port: 0,
                hubs: Vec::new(),
            }),
            Err(source) => Err(IdentityError::Read { path, source }),
        }
    }

    pub fn save(&self, data_dir: &Path) -> Result<(), IdentityError> {
        let path = Self::path(data_dir);
        let bytes = serde_json::to_vec_pretty(self).map_err(|e| IdentityError::Write {
            path: path.clone(),
            source: std::io::Error::other(e),
        })?;
        write_atomic(&path, &bytes, 0o600).map_err(|source| IdentityError::Write { path, source })
    }
}
