//! Why `config apply` stopped, in words that name the file, the key and the fix.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("cannot read the super-config {path}: {source}{}", read_hint(.source))]
    ReadConfig {
        path: PathBuf,
        source: std::io::Error,
    },

    /// Bad TOML, or a value of the wrong type: the position comes from the parser.
    #[error("{path}:{line}:{column}: {message}")]
    Toml {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },

    /// A value we refuse; `problem` says what was found and what is accepted.
    #[error("{path}: `{key}` {problem}")]
    Invalid {
        path: PathBuf,
        key: String,
        problem: String,
    },

    #[error(
        "cannot work out `hostname`: {0}; set hostname = \"...\" at the top of the super-config"
    )]
    Hostname(std::io::Error),

    #[error("{0}")]
    Users(String),

    #[error("cannot write {path}: {source}{}", write_hint(.source))]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },

    #[error("cannot run systemctl to restart the services: {0}; the files are written, restart the services yourself or pass --no-restart")]
    Systemctl(std::io::Error),
}

fn read_hint(e: &std::io::Error) -> &'static str {
    match e.kind() {
        std::io::ErrorKind::NotFound => {
            "; write it first (start from /usr/share/aziot-tpm/config.toml.template, or see docs/config.md), or name another file with -c"
        }
        std::io::ErrorKind::PermissionDenied => "; run as root (sudo aziot-tpm config apply)",
        _ => "",
    }
}

fn write_hint(e: &std::io::Error) -> &'static str {
    match e.kind() {
        std::io::ErrorKind::PermissionDenied => {
            "; the service users' files can only be written and given away by root: run sudo aziot-tpm config apply"
        }
        _ => "",
    }
}

impl ApplyError {
    pub fn invalid(
        path: &std::path::Path,
        key: impl Into<String>,
        problem: impl Into<String>,
    ) -> Self {
        ApplyError::Invalid {
            path: path.to_owned(),
            key: key.into(),
            problem: problem.into(),
        }
    }
}
