//! Merging the sources and turning the result into the daemon's settings type,
//! keeping track of key paths for errors and for unknown-key warnings.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

use crate::error::ConfigError;
use crate::key_path::{self, KeyPath};
use crate::merge::merge;
use crate::read::Source;

#[derive(Debug)]
pub(crate) struct Loaded<T> {
    pub value: T,
    pub unknown_keys: Vec<UnknownKey>,
}

/// A key present in the config that the settings type does not use. Upstream
/// ignores these silently; a typo then looks like a setting that did nothing.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct UnknownKey {
    pub key: String,
    pub files: Vec<PathBuf>,
}

impl fmt::Display for UnknownKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ignoring unknown config key `{}`", self.key)?;
        if !self.files.is_empty() {
            let files: Vec<&Path> = self.files.iter().map(PathBuf::as_path).collect();
            write!(f, " (in {})", key_path::list(&files))?;
        }
        write!(f, "; check its spelling")
    }
}

pub(crate) fn deserialize<T: DeserializeOwned>(
    sources: &[Source],
) -> Result<Loaded<T>, ConfigError> {
    let mut merged = toml::Value::Table(toml::Table::new());
    for source in sources {
        merge(&mut merged, source.value.clone());
    }

    let mut ignored = Vec::new();
    let mut on_ignored =
        |path: serde_ignored::Path<'_>| ignored.push(KeyPath::from_ignored_path(&path));
    let result: Result<T, _> =
        serde_path_to_error::deserialize(serde_ignored::Deserializer::new(merged, &mut on_ignored));

    let value = result.map_err(|err| {
        let key = KeyPath::from_error_path(err.path());
        let files = key.files(sources);
        ConfigError::Invalid {
            key: if key.is_root() {
                String::new()
            } else {
                key.to_string()
            },
            files: key_path::owned(&files),
            message: err.inner().message().trim_end().to_owned(),
        }
    })?;

    let unknown_keys = ignored
        .into_iter()
        .map(|key| UnknownKey {
            files: key_path::owned(&key.files(sources)),
            key: key.to_string(),
        })
        .collect();
    Ok(Loaded {
        value,
        unknown_keys,
    })
}
