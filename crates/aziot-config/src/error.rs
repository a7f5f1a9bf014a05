//! Config errors that name the file or key to fix and how.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("unknown service {0:?}: expected one of keyd, certd, identityd, tpmd")]
    UnknownService(String),

    #[error("permission denied reading {path}: run as root or as {who}")]
    PermissionDenied { path: PathBuf, who: String },

    #[error("could not read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },

    #[error("{path} is not a directory; config.d must be a directory of *.toml files")]
    NotADirectory { path: PathBuf },

    #[error("{path} is not valid UTF-8 (after byte {valid_up_to}); save it as UTF-8")]
    NotUtf8 { path: PathBuf, valid_up_to: usize },

    #[error("{path}:{line}:{column}: invalid TOML: {message}; fix the syntax there")]
    Syntax {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },

    /// The merged config does not fit the daemon's settings. `key` is empty when
    /// the problem is at the top level (e.g. a missing required key).
    #[error("{}", describe_invalid(.key, .files, .message))]
    Invalid {
        key: String,
        files: Vec<PathBuf>,
        message: String,
    },
}

fn describe_invalid(key: &str, files: &[PathBuf], message: &str) -> String {
    let files_text = files
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ");
    match (key.is_empty(), files.is_empty()) {
        (false, false) => format!(
            "invalid config: `{key}` (set in {files_text}): {message}; fix `{key}` in that file"
        ),
        (false, true) => format!("invalid config: `{key}`: {message}; fix `{key}`"),
        (true, false) => {
            format!("invalid config (read from {files_text}): {message}; fix the config")
        }
        (true, true) => format!(
            "invalid config: {message}; no config file was found, so create the \
             daemon's config.toml (or run `aziotctl config apply`)"
        ),
    }
}
