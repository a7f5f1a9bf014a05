//! What every route shares: the TPM owner, the key store, the handle minter/verifier and the
//! authorizer, plus the lookups routes make ("the HMAC object of key X", "the AES key behind
//! this handle") with the 400s upstream gives when a key is missing or of the wrong kind.

use std::sync::Arc;

use zeroize::Zeroizing;

use crate::tpm::{KeyObject, ObjectKind, Secret, TpmHandle};

use super::authz::Authorizer;
use super::config::KeydConfig;
use super::error::KeydError;
use super::handle::{Handles, Target, HANDLE_VALIDATION_KEY_ID};
use super::preloaded::Preloaded;
use super::record::{StoredKey, SymmetricKey};
use super::store::KeyStore;

pub struct Keys {
    pub tpm: TpmHandle,
    pub store: Arc<KeyStore>,
    pub handles: Handles,
    authz: Authorizer,
}

impl Keys {
    pub fn new(tpm: TpmHandle, config: &KeydConfig) -> Self {
        for ignored in config.ignored_aziot_keys() {
            log::warn!(
                "ignoring [aziot_keys] {ignored}: keyd-tpm keeps every key in the TPM itself (TPM settings come from the tpmd config)"
            );
        }
        let homedir = config.homedir();
        let store = Arc::new(KeyStore::new(
            tpm.clone(),
            &homedir,
            Preloaded::new(&config.preloaded_keys),
        ));
        log::info!("Keys Service key store: {}", store.keys_dir().display());
        Self {
            handles: Handles::new(tpm.clone(), store.clone()),
            tpm,
            store,
            authz: Authorizer::new(&config.principal),
        }
    }

    /// 401 unless `uid` may create, load or move key `id`.
    pub fn authorize(&self, uid: u32, id: &str) -> Result<(), KeydError> {
        self.authz.authorize(uid, id)
    }

    /// The symmetric key `id`; 400 if there is none or it is a key pair.
    pub async fn symmetric(&self, id: &str) -> Result<SymmetricKey, KeydError> {
        match self.store.get(id).await?.as_deref().map(|e| &e.key) {
            Some(StoredKey::Key(key)) => Ok(key.clone()),
            Some(other) => Err(KeydError::not_found(format!(
                "key {id:?} is {}, not a symmetric key",
                other.kind_name()
            ))),
            None => Err(KeydError::not_found(format!("key {id:?} does not exist"))),
        }
    }

    /// The key pair `id`; 400 if there is none or it is a symmetric key.
    pub async fn key_pair(&self, id: &str) -> Result<Arc<KeyObject>, KeydError> {
        match self.store.get(id).await?.as_deref().map(|e| &e.key) {
            Some(StoredKey::KeyPair(object)) => Ok(object.clone()),
            Some(other) => Err(KeydError::not_found(format!(
                "key pair {id:?} is {}, not a key pair",
                other.kind_name()
            ))),
            None => Err(KeydError::not_found(format!(
                "key pair {id:?} does not exist"
            ))),
        }
    }

    /// Key pair `id` if it is of `kind`, else upstream's wrong-mechanism 400.
    pub async fn key_pair_of_kind(
        &self,
        id: &str,
        kind: ObjectKind,
    ) -> Result<Arc<KeyObject>, KeydError> {
        let object = self.key_pair(id).await?;
        if object.kind == kind {
            Ok(object)
        } else {
            Err(KeydError::wrong_mechanism())
        }
    }

    /// The HMAC object of key `id` (made for usage `sign` or `derive`).
    pub async fn hmac_object(&self, id: &str) -> Result<Arc<KeyObject>, KeydError> {
        self.symmetric(id).await?.hmac.ok_or_else(|| {
            KeydError::invalid(
                "mechanism",
                format!("key {id:?} was created with usage encrypt only; HMAC and derivation need usage sign or derive"),
            )
        })
    }

    /// HMAC-SHA256(key `base`, `data`), computed by the TPM and encrypted on the bus.
    pub async fn derive(&self, base: &str, data: Vec<u8>) -> Result<Secret, KeydError> {
        let hmac = self.hmac_object(base).await?;
        Ok(Zeroizing::new(self.tpm.hmac_secret(hmac, data).await?))
    }

    /// The AES-256 key behind a handle, for one AEAD operation: unsealed from a key made for
    /// usage `encrypt`, or derived in the TPM. Zeroized when the caller drops it.
    pub async fn aes_key(&self, target: &Target) -> Result<Secret, KeydError> {
        match target {
            Target::Key(id) => {
                let sealed = self.symmetric(id).await?.sealed.ok_or_else(|| {
                    KeydError::invalid(
                        "mechanism",
                        format!("key {id:?} was not created with usage encrypt"),
                    )
                })?;
                Ok(self.tpm.unseal(sealed).await?)
            }
            Target::Derived { base, data } => self.derive(base, data.clone()).await,
            Target::KeyPair(_) => Err(KeydError::wrong_mechanism()),
        }
    }
}

/// Longest key id, in bytes. Upstream sets none (its key file names fail past about 180
/// characters); the ids in use are names like `aziot_identityd_master_id`.
pub const MAX_ID_BYTES: usize = 1024;

/// A key id a caller names: not empty, at most [`MAX_ID_BYTES`], no NUL (upstream passes ids
/// as C strings), and not the id of the key that signs handles (a handle to it would let its
/// holder forge handles).
pub fn check_id(name: &'static str, id: &str) -> Result<(), KeydError> {
    if id.is_empty() {
        return Err(KeydError::invalid(name, "must not be empty"));
    }
    if id.len() > MAX_ID_BYTES {
        return Err(KeydError::invalid(
            name,
            format!("is {} bytes long; key ids are at most {MAX_ID_BYTES} bytes", id.len()),
        ));
    }
    if id.contains('\0') {
        return Err(KeydError::invalid(name, "must not contain a NUL character"));
    }
    if id == HANDLE_VALIDATION_KEY_ID {
        return Err(KeydError::invalid(
            name,
            format!("{id:?} is reserved for the key that signs key handles"),
        ));
    }
    Ok(())
}

/// A key id quoted in a message: in full up to 64 characters, else its start and its length.
pub fn shown(id: &str) -> String {
    if id.chars().count() <= 64 {
        format!("{id:?}")
    } else {
        let start: String = id.chars().take(48).collect();
        format!("{start:?}… ({} bytes)", id.len())
    }
}

impl Keys {
    /// The instance of key `id` (see `record`), if it exists and has one.
    pub async fn instance(&self, id: &str) -> Result<Option<super::record::Instance>, KeydError> {
        Ok(self.store.get(id).await?.and_then(|e| e.instance))
    }
}

/// 400 for operations that would change a `[preloaded_keys]` key through the API.
pub fn check_not_preloaded(keys: &Keys, name: &'static str, id: &str) -> Result<(), KeydError> {
    if keys.store.is_preloaded(id) {
        return Err(KeydError::invalid(
            name,
            format!("key {id:?} is preloaded from a file ([preloaded_keys]); replace that file and restart instead"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_callers_may_name() {
        assert!(check_id("keyId", "device-id").is_ok());
        assert!(check_id("keyId", "aziot-edged/module/m1").is_ok());
        let long = "k".repeat(MAX_ID_BYTES + 1);
        assert!(check_id("keyId", &long[1..]).is_ok());
        for bad in ["", "a\0b", HANDLE_VALIDATION_KEY_ID, &long] {
            assert!(
                matches!(
                    check_id("keyId", bad),
                    Err(KeydError::InvalidParameter { name: "keyId", .. })
                ),
                "{bad:?}"
            );
        }
    }
}
