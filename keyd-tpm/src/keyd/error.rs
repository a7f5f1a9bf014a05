//! Errors of the Keys Service. Variants follow upstream's status classes (invalid parameter
//! and unknown key are 400, authorization 401); the one mapping to HTTP is in
//! `crate::http_error`. Client mistakes carry a `caused by:` line that names the fix.

use std::path::PathBuf;

use crate::tpm::TpmError;

/// The detail under an error, shown to the caller as `caused by: ...`.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Cause(pub String);

#[derive(Debug, thiserror::Error)]
pub enum KeydError {
    /// A request field, the handle or the mechanism is wrong (400).
    #[error("parameter {name:?} has an invalid value")]
    InvalidParameter {
        name: &'static str,
        #[source]
        cause: Cause,
    },

    /// No key with this id (400, as upstream: its backends report it as an invalid parameter).
    #[error("a parameter has an invalid value")]
    NotFound {
        #[source]
        cause: Cause,
    },

    /// The caller's uid may not create, load or move this key id (401).
    #[error("user {uid} is not authorized to access the key {id}")]
    Unauthorized { uid: u32, id: String },

    #[error(transparent)]
    Tpm(#[from] TpmError),

    /// Reading or writing the key store failed.
    #[error("key store {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A file in the key store does not hold what it should.
    #[error("stored key {path} cannot be used: {reason}")]
    Corrupt { path: PathBuf, reason: String },

    /// A software crypto step (AES-GCM, HMAC, random bytes, PEM parsing) failed.
    #[error("{op} failed: {source}")]
    Crypto {
        op: &'static str,
        #[source]
        source: openssl::error::ErrorStack,
    },

    /// A key taken into the TPM does not behave like the original; the original is kept.
    #[error("the TPM copy of key {id:?} does not match its original {path}; the original file is kept and the key is not used")]
    NotProven { id: String, path: PathBuf },
}

impl KeydError {
    pub fn invalid(name: &'static str, cause: impl Into<String>) -> Self {
        KeydError::InvalidParameter {
            name,
            cause: Cause(cause.into()),
        }
    }

    pub fn not_found(cause: impl Into<String>) -> Self {
        KeydError::NotFound {
            cause: Cause(cause.into()),
        }
    }

    /// Upstream's answer to a forged, truncated or foreign handle.
    pub fn invalid_handle() -> Self {
        Self::invalid("handle", "invalid handle")
    }

    /// Upstream's answer to a mechanism the key cannot do.
    pub fn wrong_mechanism() -> Self {
        Self::invalid("mechanism", "mechanism cannot be used with this key type")
    }

    pub fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> KeydError {
        let path = path.into();
        move |source| KeydError::Io { path, source }
    }

    pub fn crypto(op: &'static str) -> impl FnOnce(openssl::error::ErrorStack) -> KeydError {
        move |source| KeydError::Crypto { op, source }
    }
}
