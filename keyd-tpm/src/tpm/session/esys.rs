//! ESYS's own salted sessions, on the main context: the fallback when the TCTI admits no second
//! connection for the channel. Correct, and slow with ESYS 3.2 on OpenSSL 3 (see `channel`).

use tss_esapi::attributes::SessionAttributesBuilder;
use tss_esapi::constants::SessionType;
use tss_esapi::handles::{KeyHandle, ObjectHandle};
use tss_esapi::interface_types::algorithm::{HashingAlgorithm, PublicAlgorithm};
use tss_esapi::interface_types::ecc::EccCurve;
use tss_esapi::interface_types::resource_handles::Hierarchy;
use tss_esapi::interface_types::session_handles::AuthSession;
use tss_esapi::structures::{
    EccPoint, Public, PublicBuilder, PublicEccParametersBuilder, SymmetricDefinition,
    SymmetricDefinitionObject,
};
use tss_esapi::Context;

use super::Use;
use crate::tpm::error::{Context as _, TpmError};
use crate::tpm::store::WrappedKey;

pub fn set_attributes(ctx: &mut Context, session: AuthSession, usage: Use) -> Result<(), TpmError> {
    let (attributes, mask) = SessionAttributesBuilder::new()
        .with_continue_session(true)
        .with_decrypt(usage == Use::Decrypt)
        .with_encrypt(usage == Use::Encrypt)
        .build();
    ctx.tr_sess_set_attributes(session, attributes, mask)
        .during("Esys_TRSess_SetAttributes")
}

/// An unbound HMAC session, SHA-256, AES-128-CFB parameter encryption, salted to `key`.
pub fn start_salted(ctx: &mut Context, key: KeyHandle) -> Result<AuthSession, TpmError> {
    let session = ctx
        .execute_without_session(|c| {
            c.start_auth_session(
                Some(key),
                None,
                None,
                SessionType::Hmac,
                SymmetricDefinition::AES_128_CFB,
                HashingAlgorithm::Sha256,
            )
        })
        .during("TPM2_StartAuthSession (salted)")?
        .ok_or_else(|| TpmError::Unexpected("the TPM returned no HMAC session".into()))?;
    set_attributes(ctx, session, Use::Auth)?;
    Ok(session)
}

/// A session salted to an ephemeral primary in the null hierarchy.
pub fn bootstrap(ctx: &mut Context) -> Result<AuthSession, TpmError> {
    let primary = ctx
        .execute_with_session(Some(AuthSession::Password), |c| {
            c.create_primary(Hierarchy::Null, salt_key_template()?, None, None, None, None)
        })
        .during("TPM2_CreatePrimary (null hierarchy, session salt key)")?
        .key_handle;
    let started = start_salted(ctx, primary);
    flush(ctx, primary.into(), "the ephemeral salt key");
    started
}

/// One round trip through the session (a 1-byte TPM2_GetRandom it encrypts).
pub fn ping(ctx: &mut Context, session: Option<AuthSession>) -> bool {
    if let Some(s) = session {
        if set_attributes(ctx, s, Use::Encrypt).is_err() {
            return false;
        }
    }
    ctx.execute_with_session(session, |c| c.get_random(1)).is_ok()
}

/// A new session key under `srk` (nothing secret crosses: the TPM generates it).
pub fn create_session_key(ctx: &mut Context, srk: KeyHandle) -> Result<WrappedKey, TpmError> {
    let created = ctx
        .execute_with_session(Some(AuthSession::Password), |c| {
            c.create(srk, salt_key_template()?, None, None, None, None)
        })
        .during("TPM2_Create (session key)")?;
    Ok(WrappedKey { public: created.out_public, private: created.out_private })
}

/// ECC P-256 restricted decryption key bound to this TPM (the shape of a storage key): what
/// TPM2_StartAuthSession decrypts a salt with (ECDH), and nothing else.
pub fn salt_key_template() -> tss_esapi::Result<Public> {
    let attributes = crate::tpm::primaries::storage_key_attributes()?;
    PublicBuilder::new()
        .with_public_algorithm(PublicAlgorithm::Ecc)
        .with_name_hashing_algorithm(HashingAlgorithm::Sha256)
        .with_object_attributes(attributes)
        .with_ecc_parameters(
            PublicEccParametersBuilder::new_restricted_decryption_key(
                SymmetricDefinitionObject::AES_128_CFB,
                EccCurve::NistP256,
            )
            .build()?,
        )
        .with_ecc_unique_identifier(EccPoint::default())
        .build()
}

pub fn flush(ctx: &mut Context, handle: ObjectHandle, what: &str) {
    if let Err(e) = ctx.flush_context(handle) {
        log::warn!("could not flush {what}: {}", crate::tpm::error::describe(&e));
    }
}
