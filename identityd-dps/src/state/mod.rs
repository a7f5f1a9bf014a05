//! identityd's state in its homedir, in upstream's formats so a device can move between upstream
//! aziot-identityd and identityd-dps in either direction:
//!
//! * `device_info`: the hub and device ID DPS assigned (TOML), the backup used at start instead of
//!   registering again;
//! * `prev_state`: the settings of the last successful reconciliation (TOML in upstream's
//!   `Settings` shape), whose module principals tell which hub modules identityd created;
//! * `modules/<sha256(hub)>-<sha256(device)>/<alnum(module)>-<sha256(module)>`: each module's
//!   identity without keys (JSON), served when the hub cannot be reached.
//!
//! Plus one file of ours, `dps_payload.json`: the payload DPS returned with the last assignment
//! (e.g. from a custom allocation webhook).
//!
//! Files are written atomically (temp file, fsync, rename) with mode 0600.

mod device_info;
mod modules;
pub(crate) mod prev_state;

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

pub use device_info::DeviceInfo;
pub use modules::ModuleBackups;
pub use prev_state::PrevState;

pub const DEVICE_INFO: &str = "device_info";
pub const PREV_STATE: &str = "prev_state";
pub const DPS_PAYLOAD: &str = "dps_payload.json";

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not valid: {reason}")]
    Invalid { path: PathBuf, reason: String },
}

/// Writes `bytes` to `path` so that a crash leaves the old or the new content, never a mix.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StateError> {
    let err = |source| StateError::Write {
        path: path.to_owned(),
        source,
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(err)?;
    let mut tmp_name = path.file_name().unwrap_or_default().to_owned();
    tmp_name.push(".tmp");
    let tmp = dir.join(tmp_name);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(err)?;
    file.write_all(bytes).map_err(err)?;
    file.sync_all().map_err(err)?;
    drop(file);
    std::fs::rename(&tmp, path).map_err(err)?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Removes a file; absent is fine.
pub fn remove(path: &Path) -> Result<(), StateError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(StateError::Write {
            path: path.to_owned(),
            source,
        }),
    }
}

/// Reads a file as text; `None` when absent.
pub fn read_optional(path: &Path) -> Result<Option<String>, StateError> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(StateError::Read {
            path: path.to_owned(),
            source,
        }),
    }
}

/// Lowercase hex SHA-256, as upstream names backup files.
pub(crate) fn sha256_hex(s: &str) -> String {
    data_encoding::HEXLOWER.encode(&openssl::sha::sha256(s.as_bytes()))
}

/// Parses the text of a TOML state file read from `path`.
pub fn parse_toml<T: serde::de::DeserializeOwned>(
    path: PathBuf,
    text: &str,
) -> Result<T, StateError> {
    toml::from_str(text).map_err(|e| StateError::Invalid {
        path,
        reason: e.to_string(),
    })
}

/// Writes `value` as TOML to `path`, atomically.
pub fn save_toml<T: serde::Serialize>(path: &Path, value: &T) -> Result<(), StateError> {
    let text = toml::to_string(value).map_err(|e| StateError::Invalid {
        path: path.to_owned(),
        reason: e.to_string(),
    })?;
    write_atomic(path, text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn atomic_write_replaces_content_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub/f");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(!dir.path().join("sub/f.tmp").exists());
        remove(&p).unwrap();
        remove(&p).unwrap();
        assert_eq!(read_optional(&p).unwrap(), None);
    }
}
