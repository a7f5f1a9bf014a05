//! What the store keeps for a key id, in memory ([`StoredKey`]) and in its `.tpmkey` file.
//!
//! A symmetric key is one or two TPM objects made from the same secret: an HMAC key for
//! `sign`/`derive` and a sealed AES-256 key for `encrypt` (AEAD). A key pair is one object.
//! The file is JSON naming the id (so a file cannot be taken for another key) and the objects
//! as the TPM returned them, wrapped by the SRK: useless without this TPM. It also carries
//! the key's instance: 16 random bytes given when the key was created or imported (a move
//! keeps them), which its handles carry, so that a handle outlives neither a delete nor a
//! replacement of its key. Records written before instances existed have none.

use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::tpm::{KeyObject, ObjectKind};

use super::error::KeydError;

const FORMAT: u32 = 1;

/// What tells one key apart from an earlier or later key of the same id.
pub type Instance = [u8; 16];

/// A new random instance.
pub fn new_instance() -> Result<Instance, KeydError> {
    let mut instance = [0u8; 16];
    openssl::rand::rand_bytes(&mut instance).map_err(KeydError::crypto("random instance"))?;
    Ok(instance)
}

/// The TPM objects of one key id.
#[derive(Clone, Debug)]
pub enum StoredKey {
    Key(SymmetricKey),
    KeyPair(Arc<KeyObject>),
}

#[derive(Clone, Debug)]
pub struct SymmetricKey {
    /// HMAC-SHA256 keyedHash object: `sign`, `derive`.
    pub hmac: Option<Arc<KeyObject>>,
    /// Sealed AES-256 key: `encrypt`.
    pub sealed: Option<Arc<KeyObject>>,
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
enum Record {
    Key {
        format: u32,
        id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        instance: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        hmac: Option<KeyObject>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sealed: Option<KeyObject>,
    },
    KeyPair {
        format: u32,
        id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        instance: Option<String>,
        object: KeyObject,
    },
}

impl StoredKey {
    pub fn kind_name(&self) -> &'static str {
        match self {
            StoredKey::Key(_) => "a symmetric key",
            StoredKey::KeyPair(_) => "a key pair",
        }
    }

    pub fn encode(&self, id: &str, instance: Option<&Instance>) -> Vec<u8> {
        let instance = instance.map(|i| aziot_tpm_common::b64(i));
        let record = match self {
            StoredKey::Key(k) => Record::Key {
                format: FORMAT,
                id: id.to_owned(),
                instance,
                hmac: k.hmac.as_deref().cloned(),
                sealed: k.sealed.as_deref().cloned(),
            },
            StoredKey::KeyPair(o) => Record::KeyPair {
                format: FORMAT,
                id: id.to_owned(),
                instance,
                object: (**o).clone(),
            },
        };
        // Serializing strings and byte vectors into JSON cannot fail.
        serde_json::to_vec(&record).unwrap_or_default()
    }

    /// Parses a `.tpmkey` file, checking it is for `id` and holds objects of the right kinds;
    /// the key and its instance.
    pub fn decode(bytes: &[u8], id: &str, path: &Path) -> Result<(Self, Option<Instance>), KeydError> {
        let corrupt = |reason: String| KeydError::Corrupt {
            path: path.to_owned(),
            reason,
        };
        let record: Record =
            serde_json::from_slice(bytes).map_err(|e| corrupt(format!("does not parse: {e}")))?;
        let (format, file_id, instance) = match &record {
            Record::Key { format, id, instance, .. } | Record::KeyPair { format, id, instance, .. } => {
                (*format, id.as_str(), instance.as_deref())
            }
        };
        let instance = match instance {
            None => None,
            Some(text) => Some(
                aziot_tpm_common::from_b64(text)
                    .ok()
                    .and_then(|bytes| Instance::try_from(bytes.as_slice()).ok())
                    .ok_or_else(|| corrupt("its instance is not 16 bytes of base64".into()))?,
            ),
        };
        if format != FORMAT {
            return Err(corrupt(format!(
                "format {format} is not one this keyd-tpm reads ({FORMAT})"
            )));
        }
        if file_id != id {
            return Err(corrupt(format!("it holds key {file_id:?}, not {id:?}")));
        }
        let expect = |object: Option<KeyObject>, kinds: &[ObjectKind], slot: &str| match object {
            Some(o) if kinds.contains(&o.kind) => Ok(Some(Arc::new(o))),
            Some(o) => Err(corrupt(format!(
                "its {slot} object is of kind {:?}",
                o.kind
            ))),
            None => Ok(None),
        };
        match record {
            Record::Key { hmac, sealed, .. } => {
                let key = SymmetricKey {
                    hmac: expect(hmac, &[ObjectKind::Hmac], "hmac")?,
                    sealed: expect(sealed, &[ObjectKind::Sealed], "sealed")?,
                };
                if key.hmac.is_none() && key.sealed.is_none() {
                    return Err(corrupt("it holds no key object".into()));
                }
                Ok((StoredKey::Key(key), instance))
            }
            Record::KeyPair { object, .. } => {
                let object = expect(
                    Some(object),
                    &[ObjectKind::EcP256, ObjectKind::Rsa2048],
                    "key pair",
                )?;
                object
                    .map(|o| (StoredKey::KeyPair(o), instance))
                    .ok_or_else(|| corrupt("it holds no key object".into()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(kind: ObjectKind) -> Arc<KeyObject> {
        Arc::new(KeyObject {
            kind,
            public: vec![1, 2, 3],
            private: vec![4, 5],
        })
    }

    #[test]
    fn round_trips_and_checks_the_id() {
        let path = Path::new("/x");
        let key = StoredKey::Key(SymmetricKey {
            hmac: Some(object(ObjectKind::Hmac)),
            sealed: Some(object(ObjectKind::Sealed)),
        });
        let bytes = key.encode("k", Some(&[9; 16]));
        let (StoredKey::Key(back), Some([9, ..])) = StoredKey::decode(&bytes, "k", path).unwrap() else {
            panic!()
        };
        assert_eq!(back.hmac.unwrap().public, [1, 2, 3]);
        assert_eq!(back.sealed.unwrap().kind, ObjectKind::Sealed);
        assert!(StoredKey::decode(&bytes, "other", path)
            .unwrap_err()
            .to_string()
            .contains("not \"other\""));

        let pair = StoredKey::KeyPair(object(ObjectKind::EcP256));
        let text = String::from_utf8(pair.encode("p", None)).unwrap();
        assert!(
            text.starts_with(
                r#"{"type":"key-pair","format":1,"id":"p","object":{"kind":"ec-p256""#
            ),
            "{text}"
        );
        assert!(matches!(
            StoredKey::decode(text.as_bytes(), "p", path).unwrap(),
            (StoredKey::KeyPair(_), None)
        ));
    }

    #[test]
    fn wrong_kinds_empty_keys_and_garbage_are_corrupt() {
        let path = Path::new("/x");
        let swapped = StoredKey::Key(SymmetricKey {
            hmac: Some(object(ObjectKind::Sealed)),
            sealed: None,
        });
        assert!(StoredKey::decode(&swapped.encode("k", None), "k", path).is_err());
        let empty = StoredKey::Key(SymmetricKey {
            hmac: None,
            sealed: None,
        });
        assert!(StoredKey::decode(&empty.encode("k", None), "k", path).is_err());
        let hmac_pair = StoredKey::KeyPair(object(ObjectKind::Hmac));
        assert!(StoredKey::decode(&hmac_pair.encode("k", None), "k", path).is_err());
        assert!(matches!(
            StoredKey::decode(b"\x00garbage", "k", path),
            Err(KeydError::Corrupt { .. })
        ));
    }
}
