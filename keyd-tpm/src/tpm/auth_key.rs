//! The DPS auth key: import (TPM2_ActivateCredential + TPM2_Import), HMAC signing, and the
//! guarantees upstream lacks. A new key is loaded and proven before the old one is touched; the
//! key it replaces is kept (SRK-wrapped, in the store) so it can be restored; and a crash in the
//! middle of the swap is finished at the next start, leaving either the old or the new key.

use tss_esapi::constants::response_code::Tss2ResponseCodeKind;
use tss_esapi::constants::SessionType;
use tss_esapi::handles::{KeyHandle, ObjectHandle, SessionHandle};
use tss_esapi::interface_types::algorithm::HashingAlgorithm;
use tss_esapi::interface_types::dynamic_handles::Persistent;
use tss_esapi::handles::AuthHandle;
use tss_esapi::interface_types::resource_handles::Provision;
use tss_esapi::interface_types::session_handles::{AuthSession, PolicySession};
use tss_esapi::structures::{
    Data, Digest, MaxBuffer, Nonce, Private, SymmetricDefinition, SymmetricDefinitionObject,
};
use tss_esapi::traits::Marshall;

use super::device::{AuthKey, Device};
use super::dps_blob::DpsBlob;
use super::error::{CommandError, Context as _, TpmError};
use super::primaries::persistent;
use super::sequence::SequenceKey;
use super::store::{Slot, WrappedKey};
use super::session::{object_name, Use};
use super::{hierarchy_auth_bytes, hierarchy_auth_error};

/// Data HMAC'd once to prove a freshly loaded key works before it replaces the old one.
const PROOF_DATA: &[u8] = b"keyd-tpm: auth key self-test";

impl Device {
    /// Imports a DPS `authenticationKey` and makes it the auth key. On any error the previous
    /// auth key is still in place and usable.
    pub fn import_auth_key(&mut self, blob: &[u8]) -> Result<(), TpmError> {
        let blob = DpsBlob::parse(blob)?;
        self.make_room()?;
        let private = match self.bus.channel() {
            Some(_) => self.import_on_channel(&blob)?,
            None => self.import_on_context(&blob)?,
        };
        let key = WrappedKey { public: blob.public, private };
        self.install(key)?;
        log::info!("imported a new DPS auth key at {:#010x}", self.settings.auth_key_handle());
        Ok(())
    }

    /// ActivateCredential, then Import with the credential it returns (the inner wrapper key),
    /// on the session channel: the credential is encrypted in both directions.
    fn import_on_channel(&mut self, blob: &DpsBlob) -> Result<Private, TpmError> {
        let endorsement = hierarchy_auth_bytes(&self.settings.endorsement_auth);
        let public = blob.public.marshall().map_err(|e| TpmError::Unexpected(format!("cannot marshal a public area: {e}")))?;
        let ch = self.bus.channel().ok_or_else(no_channel)?;
        let mut step = "";
        let credential = ch
            .activate_credential(&endorsement, blob.credential_blob.value(), blob.credential_secret.value(), &mut step)?
            .map_err(|e| match step {
                "TPM2_PolicySecret" => hierarchy_auth_error(e, "endorsement", "TPM2_PolicySecret"),
                _ => rejected(step, e),
            })?;
        let private = ch
            .import(&credential, &public, blob.duplicate.value(), blob.in_sym_seed.value(), true)?
            .map_err(|e| rejected("TPM2_Import", e))?;
        Private::try_from(private).during("TPM2B_PRIVATE")
    }

    fn import_on_context(&mut self, blob: &DpsBlob) -> Result<Private, TpmError> {
        let inner_key = self.activate_credential(blob)?;
        // The inner wrapper key is the first parameter: encrypted on the bus.
        let session = self.bus.auth(&mut self.ctx, Use::Decrypt)?;
        self
            .ctx
            .execute_with_session(Some(session), |c| {
                c.import(
                    self.srk.into(),
                    Some(inner_key),
                    blob.public.clone(),
                    blob.duplicate.clone(),
                    blob.in_sym_seed.clone(),
                    SymmetricDefinitionObject::AES_128_CFB,
                )
            })
            .map_err(|e| rejected("TPM2_Import", e))
    }

    /// Puts the previously imported auth key back (and keeps the current one as previous).
    pub fn restore_auth_key(&mut self) -> Result<(), TpmError> {
        let previous = self.store.read(Slot::Previous)?.ok_or(TpmError::NoPreviousAuthKey)?;
        self.make_room()?;
        self.install(previous)?;
        log::info!("restored the previous DPS auth key at {:#010x}", self.settings.auth_key_handle());
        Ok(())
    }

    /// HMAC-SHA256 of `data` with the auth key, in the TPM.
    pub fn sign_with_auth_key(&mut self, data: &[u8]) -> Result<Vec<u8>, TpmError> {
        let handle = self.settings.auth_key_handle();
        let esys = self.auth_key.as_ref().ok_or(TpmError::NoAuthKey { handle })?.esys;
        let result = if data.len() > MaxBuffer::MAX_SIZE {
            self.long_hmac(SequenceKey::Persistent(handle), data)
        } else if let Some(ch) = self.bus.channel() {
            // By the persistent handle, password authorized (the key's authValue is empty, and
            // a SAS signature is no secret): nothing to look up first.
            ch.hmac_password(handle, data)?.during("TPM2_HMAC")
        } else {
            let esys = esys.ok_or_else(|| TpmError::Unexpected("no ESYS handle for the auth key".into()))?;
            self.esys_hmac(esys, data)
        };
        if result.is_err() {
            match self.find_auth_key()? {
                None => {
                    // Removed behind our back (e.g. tpm2_evictcontrol): say so rather than "TPM error".
                    self.forget_auth_key();
                    return Err(TpmError::NoAuthKey { handle });
                }
                // Perhaps replaced behind our back: what is there now is what we know.
                found => {
                    self.forget_auth_key();
                    self.auth_key = found;
                }
            }
        }
        result
    }

    /// Forgets the auth key as known (its ESYS handle closed).
    fn forget_auth_key(&mut self) {
        if let Some(AuthKey { esys: Some(mut object), .. }) = self.auth_key.take() {
            let _ = self.ctx.tr_close(&mut object);
        }
        self.auth_key_changing();
    }

    /// TPM2_HMAC on the main context with `key`, password authorized; `data` fits one buffer.
    fn esys_hmac(&mut self, key: ObjectHandle, data: &[u8]) -> Result<Vec<u8>, TpmError> {
        let buffer = MaxBuffer::try_from(data.to_vec()).during("building TPM2B_MAX_BUFFER")?;
        let digest = self
            .ctx
            .execute_with_session(Some(AuthSession::Password), |c| {
                c.hmac(key, buffer, HashingAlgorithm::Sha256)
            })
            .during("TPM2_HMAC")?;
        Ok(digest.value().to_vec())
    }

    /// What a long HMAC with the auth key runs on (see `sequence`); `NoAuthKey` if there is none.
    pub fn auth_key_sequence(&mut self) -> Result<SequenceKey, TpmError> {
        let handle = self.settings.auth_key_handle();
        self.auth_key.as_ref().ok_or(TpmError::NoAuthKey { handle })?;
        Ok(SequenceKey::Persistent(handle))
    }

    /// ActivateCredential with the SRK as the activated object and the EK as the decryption key
    /// (authorized by PolicySecret(endorsement)); returns the inner wrapper key of the duplicate.
    fn activate_credential(&mut self, blob: &DpsBlob) -> Result<Data, TpmError> {
        let session = self
            .ctx
            .start_auth_session(
                None,
                None,
                None,
                SessionType::Policy,
                SymmetricDefinition::AES_128_CFB,
                HashingAlgorithm::Sha256,
            )
            .during("TPM2_StartAuthSession")?
            .ok_or_else(|| TpmError::Unexpected("the TPM returned no policy session".into()))?;
        let result = self.activate_with(session, blob);
        // Policy sessions are started with continueSession: flush it whatever happened.
        if let Err(e) = self.ctx.flush_context(SessionHandle::from(session).into()) {
            log::warn!("could not flush the policy session: {}", super::error::describe(&e));
        }
        result
    }

    fn activate_with(&mut self, session: AuthSession, blob: &DpsBlob) -> Result<Data, TpmError> {
        let policy = PolicySession::try_from(session).during("policy session")?;
        let endorsement = self.bus.auth(&mut self.ctx, Use::Auth)?;
        self.ctx
            .execute_with_session(Some(endorsement), |c| {
                c.policy_secret(
                    policy,
                    AuthHandle::Endorsement,
                    Nonce::default(),
                    Digest::default(),
                    Nonce::default(),
                    None,
                )
            })
            .map_err(|e| hierarchy_auth_error(e, "endorsement", "TPM2_PolicySecret"))?;
        let (srk, ek) = (self.srk, self.ek);
        // The credential (the inner wrapper key of the duplicate) is the response: encrypted.
        let srk_session = self.bus.auth(&mut self.ctx, Use::Encrypt)?;
        let credential = self
            .ctx
            .execute_with_sessions((Some(srk_session), Some(session), None), |c| {
                c.activate_credential(
                    srk,
                    ek,
                    blob.credential_blob.clone(),
                    blob.credential_secret.clone(),
                )
            })
            .map_err(|e| rejected("TPM2_ActivateCredential", e))?;
        Data::try_from(credential.value().to_vec()).during("inner wrapper key")
    }

    /// Loads `key` under the SRK, proves it with one HMAC, then swaps it in at the persistent
    /// handle. The store records each step so `recover_auth_key` can finish an interrupted swap.
    fn install(&mut self, key: WrappedKey) -> Result<(), TpmError> {
        let loaded = self.load(&key)?;
        let result = self.prove(&loaded).and_then(|()| self.swap_in(&loaded, &key));
        self.unload(loaded);
        result
    }

    /// Loads `key` under the SRK where it will be persisted from: on the session channel (the
    /// main context's objects are not that connection's under a resource manager), or on the
    /// main context.
    fn load(&mut self, key: &WrappedKey) -> Result<Loaded, TpmError> {
        if let Some(ch) = self.bus.channel() {
            let public = key.public_bytes()?;
            let (object, name) = ch
                .load(aziot_tpm_common::SRK_HANDLE, &public, key.private.value())?
                .map_err(|e| rejected("TPM2_Load", e))?;
            return Ok(Loaded::Channel { object, name });
        }
        let srk = self.srk;
        self.ctx
            .execute_with_session(Some(AuthSession::Password), |c| {
                c.load(srk, key.private.clone(), key.public.clone())
            })
            .map(Loaded::Context)
            .map_err(|e| rejected("TPM2_Load", e))
    }

    /// One HMAC with the loaded key: it works before it replaces anything.
    fn prove(&mut self, loaded: &Loaded) -> Result<(), TpmError> {
        match loaded {
            Loaded::Channel { object, name } => {
                let ch = self.bus.channel().ok_or_else(no_channel)?;
                ch.hmac(*object, name, PROOF_DATA)?.during("TPM2_HMAC")?;
                Ok(())
            }
            Loaded::Context(handle) => self.esys_hmac((*handle).into(), PROOF_DATA).map(drop),
        }
    }

    fn unload(&mut self, loaded: Loaded) {
        let flushed = match loaded {
            Loaded::Channel { object, .. } => match self.bus.channel() {
                Some(ch) => ch.flush(object).and_then(|r| r.during("TPM2_FlushContext")),
                None => Err(no_channel()),
            },
            Loaded::Context(handle) => self.ctx.flush_context(handle.into()).during("TPM2_FlushContext"),
        };
        if let Err(e) = flushed {
            log::warn!("could not flush the loaded auth key: {e}");
        }
    }

    fn swap_in(&mut self, loaded: &Loaded, key: &WrappedKey) -> Result<(), TpmError> {
        self.store.write(Slot::Next, key)?;
        // Keep what is at the handle now as `previous`, if we know its wrapped form.
        let mut current_known = match (self.auth_key.as_ref().map(|k| k.esys), self.store.read(Slot::Current)?) {
            (Some(esys), Some(current)) => self.name_at_handle(esys)? == object_name(&current.public_bytes()?),
            _ => false,
        };
        if self.auth_key.is_some() && !current_known {
            self.forget_current()?;
        }
        if let Some(old) = self.auth_key.take() {
            let replaced_behind_our_back = self.evict(old)?;
            if replaced_behind_our_back && current_known {
                self.forget_current()?;
                current_known = false;
            }
        }
        match self.persist(loaded) {
            Ok(persisted) => self.auth_key = Some(persisted),
            Err(e) => {
                self.roll_back(current_known);
                return Err(e);
            }
        }
        self.finish_swap()
    }

    /// `next` is at the handle now: current → previous, next → current.
    fn finish_swap(&mut self) -> Result<(), TpmError> {
        if self.store.exists(Slot::Current) {
            self.store.rename(Slot::Current, Slot::Previous)?;
        }
        self.store.rename(Slot::Next, Slot::Current)
    }

    /// The new key could not be persisted after the old one was evicted: put the old one back.
    fn roll_back(&mut self, current_known: bool) {
        let _ = self.store.remove(Slot::Next);
        if !current_known {
            log::error!("the previous auth key could not be put back: no wrapped copy of it exists");
            return;
        }
        let restored = self
            .store
            .read(Slot::Current)
            .and_then(|k| k.ok_or(TpmError::NoPreviousAuthKey))
            .and_then(|k| self.load(&k))
            .and_then(|loaded| {
                let r = self.persist(&loaded);
                self.unload(loaded);
                r
            });
        match restored {
            Ok(persisted) => self.auth_key = Some(persisted),
            Err(e) => log::error!("the previous auth key could not be put back: {e}"),
        }
    }

    /// The key at the handle now is not one keyd-tpm has a wrapped copy of.
    fn forget_current(&mut self) -> Result<(), TpmError> {
        log::warn!(
            "the auth key being replaced was not imported by keyd-tpm (no wrapped copy), so it cannot be restored later"
        );
        self.store.remove(Slot::Current)
    }

    /// The name of the object at the auth key's handle. On the session channel, the one known
    /// (no TPM command; `evict` notices if it is out of date); otherwise read now through the
    /// main context's handle `esys`.
    fn name_at_handle(&mut self, esys: Option<ObjectHandle>) -> Result<Vec<u8>, TpmError> {
        let known = self.auth_key.as_ref().map(|k| k.name.clone()).unwrap_or_default();
        let (None, Some(object)) = (self.bus.channel(), esys) else { return Ok(known) };
        let public = self.read_public(KeyHandle::from(object))?;
        let tpmt = public.marshall().map_err(|e| TpmError::Unexpected(format!("cannot marshal a public area: {e}")))?;
        Ok(object_name(&tpmt))
    }

    /// Removes the persistent auth key `old`. True if the handle turned out to hold another
    /// object than the one known (replaced behind our back); that one is removed instead.
    fn evict(&mut self, old: AuthKey) -> Result<bool, TpmError> {
        self.auth_key_changing();
        let raw = self.settings.auth_key_handle();
        let owner_password = hierarchy_auth_bytes(&self.settings.owner_auth);
        if let Some(ch) = self.bus.channel() {
            // The session's HMAC covers the object's name.
            let known = old.name;
            let mut removed = ch.evict_control(&owner_password, raw, &known, raw)?;
            let mut replaced = false;
            if removed.as_ref().is_err_and(super::is_auth_failure) {
                // A wrong owner password, or an object that is not the one read: ask the TPM.
                let public = ch.read_public(raw)?.during("TPM2_ReadPublic")?;
                let name = object_name(&public);
                if name != known {
                    replaced = true;
                    removed = ch.evict_control(&owner_password, raw, &name, raw)?;
                }
            }
            removed.map_err(|e| hierarchy_auth_error(e, "owner", "TPM2_EvictControl (remove)"))?;
            // The main context may still have the object it knew at that handle: forget it there.
            if let Some(mut gone) = old.esys {
                if let Err(e) = self.ctx.tr_close(&mut gone) {
                    log::debug!("closing the evicted auth key's handle: {}", super::error::describe(&e));
                }
            }
            return Ok(replaced);
        }
        let object = old.esys.ok_or_else(|| TpmError::Unexpected("no ESYS handle for the auth key".into()))?;
        let handle = persistent(raw)?;
        let owner = self.bus.auth(&mut self.ctx, Use::Auth)?;
        self.ctx
            .execute_with_session(Some(owner), |c| {
                c.evict_control(Provision::Owner, object, Persistent::Persistent(handle))
            })
            .map_err(|e| hierarchy_auth_error(e, "owner", "TPM2_EvictControl (remove)"))?;
        Ok(false)
    }

    /// Persists the `loaded` key at the auth key handle; returns it as now known there.
    fn persist(&mut self, loaded: &Loaded) -> Result<AuthKey, TpmError> {
        self.auth_key_changing();
        let raw = self.settings.auth_key_handle();
        let owner_password = hierarchy_auth_bytes(&self.settings.owner_auth);
        match loaded {
            Loaded::Channel { object, name } => {
                let ch = self.bus.channel().ok_or_else(no_channel)?;
                ch.evict_control(&owner_password, *object, name, raw)?
                    .map_err(|e| hierarchy_auth_error(e, "owner", "TPM2_EvictControl (persist)"))?;
                Ok(AuthKey { name: name.clone(), esys: None })
            }
            Loaded::Context(object) => {
                let handle = persistent(raw)?;
                let owner = self.bus.auth(&mut self.ctx, Use::Auth)?;
                // ESYS gives the persistent object a handle of its own, name and all.
                let persisted = self
                    .ctx
                    .execute_with_session(Some(owner), |c| {
                        c.evict_control(Provision::Owner, (*object).into(), Persistent::Persistent(handle))
                    })
                    .map_err(|e| hierarchy_auth_error(e, "owner", "TPM2_EvictControl (persist)"))?;
                let name = self.ctx.tr_get_name(persisted).during("Esys_TR_GetName")?.value().to_vec();
                Ok(AuthKey { name, esys: Some(persisted) })
            }
        }
    }

    /// At start: finish or undo a swap that a crash interrupted. If `next` is at the handle, the
    /// swap is completed; if the handle is empty, `next` (already proven) is persisted; if the
    /// old key is still there, `next` is dropped.
    pub(super) fn recover_auth_key(&mut self) -> Result<(), TpmError> {
        let Some(next) = self.store.read(Slot::Next)? else { return Ok(()) };
        match self.find_auth_key()? {
            Some(found) if found.name == object_name(&next.public_bytes()?) => {
                log::warn!("finishing an auth key swap interrupted by a crash");
                self.finish_swap()
            }
            Some(_) => {
                log::warn!("an auth key import was interrupted before the swap; the previous key stays");
                self.store.remove(Slot::Next)
            }
            None => {
                log::warn!("an auth key swap was interrupted after the old key was removed; installing the new one");
                let loaded = self.load(&next)?;
                let r = self.persist(&loaded);
                self.unload(loaded);
                r?;
                // The daemon reads the handle again once the recovery is done.
                self.finish_swap()
            }
        }
    }
}

/// A new auth key loaded for its proof and its persisting.
enum Loaded {
    /// On the session channel, with its name (checked against the public area on load).
    Channel { object: u32, name: Vec<u8> },
    /// On the main context.
    Context(KeyHandle),
}

fn no_channel() -> TpmError {
    TpmError::Unexpected("no session channel".into())
}

/// A TPM refusal of the blob itself (wrong EK/SRK, tampered bytes) versus a TPM failure.
/// libtpms answers TPM_RC_FAILURE when an RSA-OAEP secret does not decrypt (a blob for another
/// EK or SRK, or a damaged seed), without entering failure mode, so that counts as a refusal.
fn rejected(command: &'static str, e: tss_esapi::Error) -> TpmError {
    let error = CommandError::esapi(command, e);
    use Tss2ResponseCodeKind as K;
    match error.kind {
        Some(
            K::Failure
            | K::Integrity | K::Value | K::Size | K::Key | K::KeySize | K::Binding | K::Scheme
            | K::Symmetric | K::Attributes | K::Type | K::Hash | K::Kdf | K::Mode | K::Policy
            | K::Handle | K::Insufficient | K::Selector | K::Curve | K::EccPoint | K::ReservedBits,
        ) => TpmError::BlobRejected(error),
        _ => TpmError::Command(error),
    }
}
