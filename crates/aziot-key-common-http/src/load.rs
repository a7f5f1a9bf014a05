//! `GET /key/{keyId}` and `GET /keypair/{keyPairId}`: a handle to an existing key.

use serde::{Deserialize, Serialize};

use crate::KeyHandle;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Response {
    #[serde(rename = "keyHandle")]
    pub handle: KeyHandle,
}
