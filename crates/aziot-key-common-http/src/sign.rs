//! `POST /sign`: `{"keyHandle", "algorithm", "parameters"}`; the mechanism is adjacently tagged
//! and flattened into the request, as upstream does.

use serde::{Deserialize, Serialize};

use crate::{ByteString, KeyHandle};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Request {
    #[serde(rename = "keyHandle")]
    pub key_handle: KeyHandle,

    #[serde(flatten)]
    pub parameters: Parameters,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "algorithm", content = "parameters")]
pub enum Parameters {
    /// For EC key pairs; the caller hashes, the signature is a DER ECDSA-Sig-Value.
    #[serde(rename = "ECDSA")]
    Ecdsa { digest: ByteString },

    /// For symmetric and derived keys; a 32-byte MAC.
    #[serde(rename = "HMAC-SHA256")]
    HmacSha256 { message: ByteString },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Response {
    pub signature: ByteString,
}
