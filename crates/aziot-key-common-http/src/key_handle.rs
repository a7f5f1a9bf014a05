//! An opaque key handle string, as keyd mints it. Clients only round-trip it.

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct KeyHandle(pub String);

impl From<String> for KeyHandle {
    fn from(s: String) -> Self {
        KeyHandle(s)
    }
}

impl AsRef<str> for KeyHandle {
    fn as_ref(&self) -> &str {
        &self.0
    }
}
