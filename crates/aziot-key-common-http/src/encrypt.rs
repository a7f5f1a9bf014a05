//! `POST /encrypt`: AEAD with symmetric or derived keys, or the raw RSA private operation with
//! an RSA key pair (how upstream's OpenSSL engine signs with RSA).

use serde::{Deserialize, Serialize};

use crate::{ByteString, KeyHandle};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Request {
    #[serde(rename = "keyHandle")]
    pub key_handle: KeyHandle,

    #[serde(flatten)]
    pub parameters: Parameters,

    pub plaintext: ByteString,
}

/// Shared with `/decrypt`. The RSA variants are unit variants: no `parameters` key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "algorithm", content = "parameters")]
pub enum Parameters {
    /// AES-256-GCM; ciphertext `0x02 || ct || 16-byte tag`.
    #[serde(rename = "AEAD")]
    Aead { iv: ByteString, aad: ByteString },

    /// PKCS#1 v1.5 type 1 padding of the input (a DigestInfo) by keyd, then the private op.
    #[serde(rename = "RSA-PKCS1")]
    RsaPkcs1,

    /// The caller sends the padded block (e.g. PSS); keyd does the private op only.
    #[serde(rename = "RSA-NO-PADDING")]
    RsaNoPadding,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Response {
    pub ciphertext: ByteString,
}
