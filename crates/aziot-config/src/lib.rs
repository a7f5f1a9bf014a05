//! Per-daemon configuration loading, as upstream's `config-common` does it.
//!
//! `aziotctl config apply` writes `/etc/aziot/<svc>/config.toml`, while other
//! packages (IoT Edge, our installer) drop snippets into `config.d/`, e.g. extra
//! `[[principal]]` entries. Merging them the way upstream does (tables merged,
//! arrays concatenated, scalars overridden, files in sorted order) keeps those
//! snippets working unchanged. Unlike upstream we say which file and key is wrong
//! and warn about keys we ignore.

mod error;
pub mod forms;
mod key_path;
mod merge;
mod read;
mod service;
mod typed;

use std::path::Path;

use serde::de::DeserializeOwned;

pub use error::ConfigError;
pub use service::Svc;

/// Loads the config of daemon `svc` (`keyd`, `tpmd`, `identityd` or `certd`):
/// `$AZIOT_<SVC>_CONFIG` (default `/etc/aziot/<svc>/config.toml`) merged with
/// the `*.toml` files in `$AZIOT_<SVC>_CONFIG_DIR` (default
/// `/etc/aziot/<svc>/config.d`).
pub fn load<T: DeserializeOwned>(svc: &str) -> Result<T, ConfigError> {
    let svc: Svc = svc.parse()?;
    let (file, dir) = svc.config_paths();
    load_paths(&file, &dir, Some(svc.user()))
}

/// Loads `file` (missing → empty) merged with `dir/*.toml` (missing → none).
pub fn load_from<T: DeserializeOwned>(
    file: impl AsRef<Path>,
    dir: impl AsRef<Path>,
) -> Result<T, ConfigError> {
    load_paths(file.as_ref(), dir.as_ref(), None)
}

fn load_paths<T: DeserializeOwned>(
    file: &Path,
    dir: &Path,
    user: Option<&'static str>,
) -> Result<T, ConfigError> {
    let sources = read::read_sources(file, dir, user)?;
    let loaded = typed::deserialize::<T>(&sources)?;
    for unknown in &loaded.unknown_keys {
        log::warn!("{unknown}");
    }
    Ok(loaded.value)
}

#[cfg(test)]
mod tests;
