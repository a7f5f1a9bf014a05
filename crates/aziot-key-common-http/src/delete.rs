//! `DELETE /key` and `DELETE /keypair` → `204`.

use serde::{Deserialize, Serialize};

use crate::KeyHandle;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Request {
    #[serde(rename = "keyHandle")]
    pub key_handle: KeyHandle,
}
