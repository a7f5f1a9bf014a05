//! Key handles in upstream's format, so handles stay opaque strings to every client and
//! handles upstream minted stay valid after migration:
//!
//! `sr=<base64 SR>&sig=<base64 HMAC-SHA256(handle-validation-key, SR)>`, where SR is the
//! compact JSON `{"key_id":{"Key":"<id>"}|{"KeyPair":"<id>"}|{"Derived":["<base handle>",[bytes]]},
//! "nonce":"<base64 of 64 random bytes>"}`.
//!
//! The MAC key is an HMAC object in the TPM with id `handle-validation-key`, created on first
//! use; every mint and every first verification is one TPM HMAC, compared in constant time.
//! Verified handles are remembered in a bounded map, so a handle used again costs no TPM round
//! trip (a handle never changes meaning: the id it names is fixed by the MAC). A handle that
//! does not verify is a 400 and nothing else happens.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use aziot_key_common_http::KeyHandle;
use aziot_tpm_common::{b64, from_b64};

use crate::tpm::{KeyObject, TpmHandle};

use super::crypto::{random_bytes, same_bytes};
use super::error::KeydError;
use super::material::{generate_symmetric, Purposes};
use super::record::StoredKey;
use super::store::KeyStore;

/// Id of the key that signs handles (upstream's name; its file migrates like any key).
pub const HANDLE_VALIDATION_KEY_ID: &str = "handle-validation-key";

const NONCE_LEN: usize = 64;
const MAC_LEN: usize = 32;
/// Verified handles remembered; each is a few hundred bytes.
const VERIFIED_CAPACITY: usize = 2048;
/// Longer handle strings are verified every time rather than remembered.
const MAX_CACHED_HANDLE_LEN: usize = 8 * 1024;

/// What a handle names, in upstream's serde shape (externally tagged).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum KeyId {
    KeyPair(String),
    Key(String),
    /// Base key handle (itself verified on use) and derivation data.
    Derived(String, Vec<u8>),
}

#[derive(Serialize, Deserialize)]
struct Sr {
    key_id: KeyId,
    nonce: String,
}

/// A verified handle, a derived key's base already resolved to its key id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    Key(String),
    KeyPair(String),
    Derived { base: String, data: Vec<u8> },
}

pub struct Handles {
    tpm: TpmHandle,
    store: Arc<KeyStore>,
    validation_key: tokio::sync::OnceCell<Arc<KeyObject>>,
    verified: Mutex<Verified>,
}

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

impl Handles {
    pub fn new(tpm: TpmHandle, store: Arc<KeyStore>) -> Self {
        Self {
            tpm,
            store,
            validation_key: tokio::sync::OnceCell::new(),
            verified: Mutex::new(Verified::default()),
        }
    }

    pub async fn mint_key(&self, id: &str) -> Result<KeyHandle, KeydError> {
        self.mint(KeyId::Key(id.to_owned()), Target::Key(id.to_owned()))
            .await
    }

    pub async fn mint_key_pair(&self, id: &str) -> Result<KeyHandle, KeydError> {
        self.mint(
            KeyId::KeyPair(id.to_owned()),
            Target::KeyPair(id.to_owned()),
        )
        .await
    }

    /// A derived-key handle over an already verified base handle of key `base_id`.
    pub async fn mint_derived(
        &self,
        base_handle: &str,
        base_id: &str,
        data: Vec<u8>,
    ) -> Result<KeyHandle, KeydError> {
        let target = Target::Derived {
            base: base_id.to_owned(),
            data: data.clone(),
        };
        self.mint(KeyId::Derived(base_handle.to_owned(), data), target)
            .await
    }

    async fn mint(&self, key_id: KeyId, target: Target) -> Result<KeyHandle, KeydError> {
        let sr = Sr {
            key_id,
            nonce: b64(&random_bytes(NONCE_LEN)?),
        };
        // Serializing strings and byte vectors to JSON cannot fail.
        let sr = serde_json::to_string(&sr).unwrap_or_default();
        let sig = self
            .tpm
            .hmac(self.validation_key().await?, sr.clone().into_bytes())
            .await?;
        let handle = format!("sr={}&sig={}", b64(sr.as_bytes()), b64(&sig));
        self.remember(&handle, &target);
        Ok(KeyHandle(handle))
    }

    /// What `handle` names, if keyd minted it; 400 `invalid handle` otherwise.
    pub fn verify<'a>(&'a self, handle: &'a str) -> BoxFuture<'a, Result<Target, KeydError>> {
        Box::pin(async move {
            if let Some(target) = self.recall(handle) {
                return Ok(target);
            }
            let (sr, sig) = split(handle).ok_or_else(KeydError::invalid_handle)?;
            let parsed: Sr = serde_json::from_str(&sr).map_err(|_| KeydError::invalid_handle())?;
            let mac = self
                .tpm
                .hmac(self.validation_key().await?, sr.into_bytes())
                .await?;
            if !same_bytes(&mac, &sig) {
                log::info!("rejected a handle whose signature does not verify");
                return Err(KeydError::invalid_handle());
            }
            let target = match parsed.key_id {
                KeyId::Key(id) => Target::Key(id),
                KeyId::KeyPair(id) => Target::KeyPair(id),
                KeyId::Derived(base, data) => match self.verify(&base).await? {
                    Target::Key(base) => Target::Derived { base, data },
                    Target::KeyPair(_) => {
                        return Err(KeydError::invalid(
                            "handle",
                            "a key pair cannot be the base of a derived key",
                        ))
                    }
                    Target::Derived { .. } => {
                        return Err(KeydError::invalid(
                            "handle",
                            "a derived key cannot be derived from again",
                        ))
                    }
                },
            };
            self.remember(handle, &target);
            Ok(target)
        })
    }

    async fn validation_key(&self) -> Result<Arc<KeyObject>, KeydError> {
        self.validation_key
            .get_or_try_init(|| async {
                let signing = Purposes {
                    hmac: true,
                    sealed: false,
                };
                let key = self
                    .store
                    .get_or_create(HANDLE_VALIDATION_KEY_ID, || {
                        generate_symmetric(&self.tpm, signing)
                    })
                    .await?;
                match &*key {
                    StoredKey::Key(k) => k.hmac.clone().ok_or_else(|| KeydError::Corrupt {
                        path: self.store.keys_dir().to_owned(),
                        reason: format!("key {HANDLE_VALIDATION_KEY_ID:?} has no HMAC object"),
                    }),
                    StoredKey::KeyPair(_) => Err(KeydError::Corrupt {
                        path: self.store.keys_dir().to_owned(),
                        reason: format!("key {HANDLE_VALIDATION_KEY_ID:?} is a key pair"),
                    }),
                }
            })
            .await
            .cloned()
    }

    fn recall(&self, handle: &str) -> Option<Target> {
        self.verified
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(handle)
    }

    fn remember(&self, handle: &str, target: &Target) {
        if handle.len() <= MAX_CACHED_HANDLE_LEN {
            self.verified
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(handle, target.clone());
        }
    }
}

/// The SR text and the signature bytes of a handle string; `None` if it is not one.
fn split(handle: &str) -> Option<(String, Vec<u8>)> {
    let (mut sr, mut sig) = (None, None);
    for part in handle.split('&') {
        if let Some(v) = part.strip_prefix("sr=") {
            sr = Some(v);
        } else if let Some(v) = part.strip_prefix("sig=") {
            sig = Some(v);
        }
    }
    let sr = String::from_utf8(from_b64(sr?).ok()?).ok()?;
    let sig = from_b64(sig?).ok()?;
    (sig.len() == MAC_LEN).then_some((sr, sig))
}

/// Verified handles, first in first out.
#[derive(Default)]
struct Verified {
    targets: HashMap<Arc<str>, Target>,
    order: VecDeque<Arc<str>>,
}

impl Verified {
    fn get(&self, handle: &str) -> Option<Target> {
        self.targets.get(handle).cloned()
    }

    fn insert(&mut self, handle: &str, target: Target) {
        if self.targets.contains_key(handle) {
            return;
        }
        while self.order.len() >= VERIFIED_CAPACITY {
            if let Some(old) = self.order.pop_front() {
                self.targets.remove(&old);
            }
        }
        let handle: Arc<str> = handle.into();
        self.order.push_back(handle.clone());
        self.targets.insert(handle, target);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sr_has_upstreams_exact_shape() {
        let sr = |key_id| {
            serde_json::to_string(&Sr {
                key_id,
                nonce: "N".into(),
            })
            .unwrap()
        };
        assert_eq!(
            sr(KeyId::Key("k".into())),
            r#"{"key_id":{"Key":"k"},"nonce":"N"}"#
        );
        assert_eq!(
            sr(KeyId::KeyPair("p".into())),
            r#"{"key_id":{"KeyPair":"p"},"nonce":"N"}"#
        );
        assert_eq!(
            sr(KeyId::Derived("sr=a&sig=b".into(), vec![1, 2, 255])),
            r#"{"key_id":{"Derived":["sr=a&sig=b",[1,2,255]]},"nonce":"N"}"#
        );
    }

    #[test]
    fn upstream_handles_parse() {
        // A derived handle as upstream mints it (from the wire-types crate's fixtures).
        let fixture = format!(
            "{}/../crates/aziot-key-common-http/tests/fixtures/export_derived_key.json",
            env!("CARGO_MANIFEST_DIR")
        );
        let body: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(fixture).unwrap()).unwrap();
        let (sr, sig) = split(body["keyHandle"].as_str().unwrap()).unwrap();
        assert_eq!(sig.len(), 32);
        let sr: Sr = serde_json::from_str(&sr).unwrap();
        let KeyId::Derived(base, data) = sr.key_id else {
            panic!("not derived")
        };
        assert_eq!(data, b"edgeAgent:637:primary");
        let (base_sr, _) = split(&base).unwrap();
        let base: Sr = serde_json::from_str(&base_sr).unwrap();
        assert_eq!(base.key_id, KeyId::Key("aziot_identityd_master_id".into()));
    }

    #[test]
    fn malformed_handles_do_not_split() {
        let sr = b64(br#"{"key_id":{"Key":"k"},"nonce":"N"}"#);
        let sig = b64(&[0; 32]);
        assert!(split(&format!("sr={sr}&sig={sig}")).is_some());
        for bad in [
            String::new(),
            format!("sr={sr}"),
            format!("sig={sig}"),
            format!("sr={sr}&sig={}", b64(&[0; 31])),
            format!("sr=!!&sig={sig}"),
            format!("sr={}&sig={sig}", b64(&[0xff, 0xfe])),
            format!("sr={sr}&sig={}", &sig[..sig.len() - 4]),
        ] {
            assert!(split(&bad).is_none(), "{bad}");
        }
    }

    mod properties {
        use super::super::*;
        use proptest::collection::vec;
        use proptest::prelude::*;
        use testkit::fuzz::check;
        use testkit::fuzz::gen::text;

        #[test]
        fn split_takes_any_sr_and_a_32_byte_sig_and_nothing_else() {
            let parts = (text(80), vec(any::<u8>(), 0..40), "[a-z]{0,3}=?[ -~]{0,8}");
            check("handle-split", 1000, parts, |(sr, sig, extra)| {
                let handle = format!("sr={}&sig={}&{extra}", b64(sr.as_bytes()), b64(&sig));
                let split = split(&handle);
                if sig.len() == MAC_LEN && !extra.starts_with("sr=") && !extra.starts_with("sig=") {
                    prop_assert_eq!(split, Some((sr, sig)));
                } else if sig.len() != MAC_LEN && !extra.starts_with("sig=") {
                    prop_assert_eq!(split, None);
                }
                Ok(())
            });
        }

        #[test]
        fn split_never_panics_on_any_string() {
            check("handle-split-any", 1000, text(200), |s| {
                let _ = split(&s);
                let _ = serde_json::from_str::<Sr>(&s);
                Ok(())
            });
        }

        fn key_id() -> impl Strategy<Value = KeyId> {
            prop_oneof![
                text(40).prop_map(KeyId::Key),
                text(40).prop_map(KeyId::KeyPair),
                ("[ -~]{0,60}", vec(any::<u8>(), 0..40)).prop_map(|(h, d)| KeyId::Derived(h, d)),
            ]
        }

        #[test]
        fn sr_round_trips_every_key_id() {
            check("handle-sr", 1000, (key_id(), "[A-Za-z0-9+/=]{0,88}"), |(key_id, nonce)| {
                let text = serde_json::to_string(&Sr { key_id: key_id.clone(), nonce: nonce.clone() }).unwrap();
                let back: Sr = serde_json::from_str(&text).unwrap();
                prop_assert_eq!(back.key_id, key_id);
                prop_assert_eq!(back.nonce, nonce);
                Ok(())
            });
        }
    }

    #[test]
    fn verified_map_is_bounded() {
        let mut v = Verified::default();
        for i in 0..VERIFIED_CAPACITY + 10 {
            v.insert(&format!("h{i}"), Target::Key(i.to_string()));
        }
        assert_eq!(v.targets.len(), VERIFIED_CAPACITY);
        assert!(v.get("h0").is_none());
        assert_eq!(
            v.get(&format!("h{}", VERIFIED_CAPACITY + 9)),
            Some(Target::Key((VERIFIED_CAPACITY + 9).to_string()))
        );
    }
}
