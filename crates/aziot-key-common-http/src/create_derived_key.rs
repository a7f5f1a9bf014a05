//! `POST /derivedkey`: a handle to HMAC-SHA256(base key, derivationData).

use serde::{Deserialize, Serialize};

use crate::{ByteString, KeyHandle};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Request {
    #[serde(rename = "baseKeyHandle")]
    pub base_handle: KeyHandle,

    #[serde(rename = "derivationData")]
    pub derivation_data: ByteString,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Response {
    #[serde(rename = "keyHandle")]
    pub handle: KeyHandle,
}
