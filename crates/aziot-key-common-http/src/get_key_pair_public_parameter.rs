//! `POST /parameters/{parameterName}`: a public parameter of a key pair. Names: `algorithm`
//! (`"ECDSA"` or `"RSA"`), `ec-curve-oid` (base64 DER OID), `ec-point` (base64 compressed SEC1
//! point), `rsa-modulus` and `rsa-exponent` (base64 big-endian).

use serde::{Deserialize, Serialize};

use crate::KeyHandle;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Request {
    #[serde(rename = "keyHandle")]
    pub key_handle: KeyHandle,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Response {
    pub value: String,
}
