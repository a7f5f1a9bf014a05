//! Key handles in upstream's format, so handles stay opaque strings to every client and
//! handles upstream minted stay valid after migration:
//!
//! `sr=<base64 SR>&sig=<base64 HMAC-SHA256(handle-validation-key, SR)>`, where SR is the
//! compact JSON `{"key_id":{"Key":"<id>"}|{"KeyPair":"<id>"}|{"Derived":["<base handle>",[bytes]]},
//! "nonce":"<base64 of 64 random bytes>"}`.
//!
//! The nonce of a handle to a key that has an instance (see `record`) starts with [`BOUND`]
//! and the key's 16 instance bytes, then random bytes: a handle names one key, not just an id,
//! so after the key is deleted, or replaced by an import or a move, its old handles are
//! refused rather than used with the new key. Handles upstream minted (random nonces) stay
//! valid for the keys migrated from it, which have no instance.
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
use super::record::{Instance, StoredKey};
use super::store::KeyStore;

/// Id of the key that signs handles (upstream's name; its file migrates like any key).
pub const HANDLE_VALIDATION_KEY_ID: &str = "handle-validation-key";

const NONCE_LEN: usize = 64;
/// Marks a nonce that carries its key's instance.
const BOUND: &[u8; 4] = b"kti1";
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

    /// A handle to symmetric key `id` whose instance is `instance`.
    pub async fn mint_key(&self, id: &str, instance: Option<Instance>) -> Result<KeyHandle, KeydError> {
        self.mint_bound(KeyId::Key(id.to_owned()), Target::Key(id.to_owned()), instance)
            .await
    }

    /// A handle to key pair `id` whose instance is `instance`.
    pub async fn mint_key_pair(&self, id: &str, instance: Option<Instance>) -> Result<KeyHandle, KeydError> {
        self.mint_bound(
            KeyId::KeyPair(id.to_owned()),
            Target::KeyPair(id.to_owned()),
            instance,
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
        // The base handle inside is what binds it to its key; remembered with its instance.
        let base_instance = self.checked(base_handle).await?.instance;
        let nonce = random_bytes(NONCE_LEN)?;
        let checked = Checked { target, instance: base_instance };
        self.mint(KeyId::Derived(base_handle.to_owned(), data), checked, nonce).await
    }

    async fn mint_bound(&self, key_id: KeyId, target: Target, instance: Option<Instance>) -> Result<KeyHandle, KeydError> {
        let mut nonce = random_bytes(NONCE_LEN)?;
        if let Some(instance) = instance {
            nonce[..BOUND.len()].copy_from_slice(BOUND);
            nonce[BOUND.len()..BOUND.len() + instance.len()].copy_from_slice(&instance);
        }
        self.mint(key_id, Checked { target, instance }, nonce).await
    }

    async fn mint(&self, key_id: KeyId, checked: Checked, nonce: crate::tpm::Secret) -> Result<KeyHandle, KeydError> {
        let sr = Sr {
            key_id,
            nonce: b64(&nonce),
        };
        // Serializing strings and byte vectors to JSON cannot fail.
        let sr = serde_json::to_string(&sr).unwrap_or_default();
        let sig = self
            .tpm
            .hmac_secret(self.validation_key().await?, sr.clone().into_bytes())
            .await?;
        let handle = format!("sr={}&sig={}", b64(sr.as_bytes()), b64(&sig));
        self.remember(&handle, &checked);
        Ok(KeyHandle(handle))
    }

    /// What `handle` names, if keyd minted it and its key is still the one it was minted for;
    /// 400 `invalid handle` otherwise.
    pub async fn verify(&self, handle: &str) -> Result<Target, KeydError> {
        let checked = self.checked(handle).await?;
        self.check_instance(&checked).await?;
        Ok(checked.target)
    }

    /// The handle's MAC and content, checked in the TPM once and then remembered. A derived
    /// handle carries its base handle's result: the base key id and instance.
    fn checked<'a>(&'a self, handle: &'a str) -> BoxFuture<'a, Result<Checked, KeydError>> {
        Box::pin(async move {
            if let Some(checked) = self.recall(handle) {
                return Ok(checked);
            }
            let (sr, sig) = split(handle).ok_or_else(KeydError::invalid_handle)?;
            let parsed: Sr = serde_json::from_str(&sr).map_err(|_| KeydError::invalid_handle())?;
            let mac = self
                .tpm
                .hmac_secret(self.validation_key().await?, sr.into_bytes())
                .await?;
            if !same_bytes(&mac, &sig) {
                log::info!("rejected a handle whose signature does not verify");
                return Err(KeydError::invalid_handle());
            }
            let checked = match parsed.key_id {
                KeyId::Key(id) => Checked { target: Target::Key(id), instance: bound_instance(&parsed.nonce) },
                KeyId::KeyPair(id) => Checked { target: Target::KeyPair(id), instance: bound_instance(&parsed.nonce) },
                KeyId::Derived(base, data) => {
                    let base = self.checked(&base).await?;
                    match base.target {
                        Target::Key(id) => Checked { target: Target::Derived { base: id, data }, instance: base.instance },
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
                    }
                }
            };
            self.remember(handle, &checked);
            Ok(checked)
        })
    }

    /// Refuses a handle to a key that was deleted and made again, or replaced, since the handle
    /// was minted (for a derived handle: its base key). A key without an instance accepts any
    /// handle to its id, as upstream's keys do.
    async fn check_instance(&self, verified: &Checked) -> Result<(), KeydError> {
        let (Target::Key(id) | Target::KeyPair(id) | Target::Derived { base: id, .. }) = &verified.target;
        let Some(entry) = self.store.get(id).await? else { return Ok(()) };
        match entry.instance {
            Some(current) if verified.instance != Some(current) => Err(KeydError::invalid(
                "handle",
                format!(
                    "the key {} this handle was issued for has been deleted or replaced since; load or create the key again for a new handle",
                    super::keys::shown(id)
                ),
            )),
            _ => Ok(()),
        }
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
                match &key.key {
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

    fn recall(&self, handle: &str) -> Option<Checked> {
        self.verified
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(handle)
    }

    fn remember(&self, handle: &str, verified: &Checked) {
        if handle.len() <= MAX_CACHED_HANDLE_LEN {
            self.verified
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(handle, verified.clone());
        }
    }
}

/// A handle whose MAC verified: what it names, and the key instance its nonce carries (for a
/// derived handle, its base handle's).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Checked {
    target: Target,
    instance: Option<Instance>,
}

/// The instance a nonce carries, if it was minted bound to one.
fn bound_instance(nonce: &str) -> Option<Instance> {
    let bytes = from_b64(nonce).ok()?;
    let rest = bytes.strip_prefix(BOUND.as_slice())?;
    Instance::try_from(rest.get(..16)?).ok()
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
    targets: HashMap<Arc<str>, Checked>,
    order: VecDeque<Arc<str>>,
}

impl Verified {
    fn get(&self, handle: &str) -> Option<Checked> {
        self.targets.get(handle).cloned()
    }

    fn insert(&mut self, handle: &str, target: Checked) {
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
        let key = |i: usize| Checked { target: Target::Key(i.to_string()), instance: None };
        for i in 0..VERIFIED_CAPACITY + 10 {
            v.insert(&format!("h{i}"), key(i));
        }
        assert_eq!(v.targets.len(), VERIFIED_CAPACITY);
        assert!(v.get("h0").is_none());
        assert_eq!(v.get(&format!("h{}", VERIFIED_CAPACITY + 9)), Some(key(VERIFIED_CAPACITY + 9)));
    }

    #[test]
    fn bound_nonces_carry_the_instance_and_random_ones_do_not() {
        let mut nonce = vec![0u8; NONCE_LEN];
        nonce[..4].copy_from_slice(BOUND);
        nonce[4..20].copy_from_slice(&[7; 16]);
        assert_eq!(bound_instance(&b64(&nonce)), Some([7; 16]));
        assert_eq!(bound_instance(&b64(&[1; NONCE_LEN])), None);
        assert_eq!(bound_instance("not base64!"), None);
    }
}
