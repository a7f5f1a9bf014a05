//! Key objects of the Keys Service: every key is a TPM object created under the SRK. What the
//! store keeps is a [`KeyObject`]: the public area and the private area wrapped by the SRK, so a
//! file is useless without this TPM. Operations load the object (an LRU of loaded objects lives
//! in the owner, see `cache`) and run in the TPM; only AEAD unseals its AES key, into memory that
//! is zeroized after the operation.

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::error::TpmError;

/// What a key object is, which decides the operations it allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ObjectKind {
    /// keyedHash HMAC-SHA256 signing key: `sign`, `derive`.
    Hmac,
    /// keyedHash sealed data holding a 32-byte AES-256 key: `encrypt` (AEAD).
    Sealed,
    /// ECC NIST P-256 signing key: ECDSA.
    EcP256,
    /// RSA-2048 key for raw private operations (RSA-PKCS1 / RSA-NO-PADDING through /encrypt).
    Rsa2048,
}

/// Key pair algorithms that can be generated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyPairAlgorithm {
    EcP256,
    Rsa2048,
}

/// An SRK-wrapped key object: everything needed to load it again, and nothing usable elsewhere.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyObject {
    pub kind: ObjectKind,
    /// Marshalled TPMT_PUBLIC.
    #[serde(with = "b64")]
    pub public: Vec<u8>,
    /// TPM2B_PRIVATE contents as TPM2_Create/TPM2_Import returned them.
    #[serde(with = "b64")]
    pub private: Vec<u8>,
}

/// The public half of a key pair, read from the object's public area (no TPM needed).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PublicKey {
    EcP256 { x: Vec<u8>, y: Vec<u8> },
    Rsa { modulus: Vec<u8>, exponent: u32 },
}

impl KeyObject {
    /// Serialized form for the key store.
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, TpmError> {
        serde_json::from_slice(bytes)
            .map_err(|e| TpmError::InvalidKey(format!("stored key object does not parse: {e}")))
    }

    /// The public key of a key pair.
    pub fn public_key(&self) -> Result<PublicKey, TpmError> {
        super::key_objects::public_key(self)
    }
}

mod b64 {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&aziot_tpm_common::b64(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        aziot_tpm_common::from_b64(&s).map_err(serde::de::Error::custom)
    }
}

/// Key material handed to the TPM to become an object (imported keys, upstream migration).
pub type Secret = Zeroizing<Vec<u8>>;
