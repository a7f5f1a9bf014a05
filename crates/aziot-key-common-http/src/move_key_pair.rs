//! `POST /keypair/{keyPairId}` with `{"from": "<source id>"}` → `204`: the key pair `from`
//! becomes `keyPairId`, replacing any key pair with that id.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Request {
    pub from: String,
}
