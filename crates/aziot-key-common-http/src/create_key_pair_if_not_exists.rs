//! `POST /keypair`: generate a key pair unless one with this id exists.

use serde::{Deserialize, Serialize};

use crate::KeyHandle;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Request {
    #[serde(rename = "keyId")]
    pub id: String,

    /// `:`-separated `ec-p256`, `rsa-2048`, `rsa-4096`, `*`; absent or null means
    /// `ec-p256:rsa-2048`. Older upstream clients spelled the field in snake_case.
    #[serde(
        rename = "preferredAlgorithms",
        alias = "preferred_algorithms",
        default
    )]
    pub preferred_algorithms: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Response {
    #[serde(rename = "keyHandle")]
    pub handle: KeyHandle,
}
