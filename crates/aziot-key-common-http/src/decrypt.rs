//! `POST /decrypt`: AEAD only (symmetric or derived keys).

use serde::{Deserialize, Serialize};

use crate::{ByteString, KeyHandle};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Request {
    #[serde(rename = "keyHandle")]
    pub key_handle: KeyHandle,

    #[serde(flatten)]
    pub parameters: crate::encrypt::Parameters,

    pub ciphertext: ByteString,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Response {
    pub plaintext: ByteString,
}
