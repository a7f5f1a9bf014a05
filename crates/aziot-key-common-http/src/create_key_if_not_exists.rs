//! `POST /key`: generate a symmetric key unless one with this id exists (`keyBytes` absent or
//! null), or import `keyBytes`, replacing any key with this id.

use serde::{Deserialize, Serialize};

use crate::{ByteString, KeyHandle, KeyUsage};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Request {
    #[serde(rename = "keyId")]
    pub id: String,

    /// Upstream's client sends `"keyBytes": null` when generating.
    #[serde(rename = "keyBytes")]
    pub import_key_bytes: Option<ByteString>,

    /// Required, even for imports.
    #[serde(with = "crate::key_usage")]
    pub usage: Vec<KeyUsage>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Response {
    #[serde(rename = "keyHandle")]
    pub handle: KeyHandle,
}
