//! `POST /derivedkey/export`: the bytes of a derived key (identityd uploads module keys to
//! IoT Hub this way).

use serde::{Deserialize, Serialize};

use crate::{ByteString, KeyHandle};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Request {
    #[serde(rename = "keyHandle")]
    pub handle: KeyHandle,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Response {
    pub key: ByteString,
}
