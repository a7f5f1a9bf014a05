//! The endorsement key (EK) and storage root key (SRK): read from their persistent handles, and
//! created and persisted only when absent. An object already at a handle is never replaced:
//! devices upgraded from older IoT Edge carry primaries made from other templates, and their
//! enrollment in DPS names that exact EK.

use tss_esapi::abstraction::ek::create_ek_public_from_default_template;
use tss_esapi::attributes::{ObjectAttributes, ObjectAttributesBuilder};
use tss_esapi::handles::{KeyHandle, ObjectHandle, PersistentTpmHandle, TpmHandle};
use tss_esapi::interface_types::algorithm::{AsymmetricAlgorithm, HashingAlgorithm, PublicAlgorithm};
use tss_esapi::interface_types::dynamic_handles::Persistent;
use tss_esapi::interface_types::key_bits::RsaKeyBits;
use tss_esapi::interface_types::resource_handles::{Hierarchy, Provision};
use tss_esapi::structures::{
    Public, PublicBuilder, PublicKeyRsa, PublicRsaParametersBuilder, RsaExponent, SymmetricDefinitionObject,
};
use tss_esapi::traits::Marshall;
use tss_esapi::Context;

use super::error::{Context as _, TpmError};
use super::session::{object_name, BusSession, Channel, Use};
use super::{hierarchy_auth_bytes, hierarchy_auth_error, TpmSettings};

/// What `ensure` found or did at one handle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Existing,
    Created,
}

/// Returns the ESYS handle of the primary at `handle`, creating and persisting it from
/// `template` under `hierarchy` if (and only if) the handle is empty.
pub fn ensure(
    ctx: &mut Context,
    bus: &mut BusSession,
    settings: &TpmSettings,
    handle: u32,
    hierarchy: Hierarchy,
    template: fn() -> tss_esapi::Result<tss_esapi::structures::Public>,
) -> Result<(KeyHandle, Origin), TpmError> {
    let origin = if super::persistent_exists(ctx, handle)? { Origin::Existing } else { Origin::Created };
    if origin == Origin::Created {
        let (hierarchy_name, password) = match hierarchy {
            Hierarchy::Endorsement => ("endorsement", &settings.endorsement_auth),
            _ => ("owner", &settings.owner_auth),
        };
        let public = template().during("building the primary key template")?;
        match bus.channel() {
            Some(ch) => create_on_channel(ch, settings, handle, hierarchy, hierarchy_name, password, &public)?,
            None => create_on_context(ctx, bus, handle, hierarchy, hierarchy_name, public)?,
        }
        log::info!("created and persisted a primary key at {handle:#010x}");
    }
    let object = ctx
        .tr_from_tpm_public(TpmHandle::Persistent(persistent(handle)?))
        .during("TPM2_ReadPublic (TR_FromTPMPublic)")?;
    Ok((KeyHandle::from(object), origin))
}

fn create_on_channel(
    ch: &mut Channel,
    settings: &TpmSettings,
    handle: u32,
    hierarchy: Hierarchy,
    hierarchy_name: &'static str,
    password: &str,
    public: &Public,
) -> Result<(), TpmError> {
    let template = public.marshall().map_err(|e| TpmError::Unexpected(format!("cannot marshal a template: {e}")))?;
    let (created, created_public) = ch
        .create_primary(hierarchy_handle(hierarchy), Some(&hierarchy_auth_bytes(password)), &template)?
        .map_err(|e| hierarchy_auth_error(e, hierarchy_name, "TPM2_CreatePrimary"))?;
    let persisted = ch
        .evict_control(&hierarchy_auth_bytes(&settings.owner_auth), created, &object_name(&created_public), handle)?
        .map_err(|e| hierarchy_auth_error(e, "owner", "TPM2_EvictControl"));
    let _ = ch.flush(created);
    persisted
}

fn create_on_context(
    ctx: &mut Context,
    bus: &BusSession,
    handle: u32,
    hierarchy: Hierarchy,
    hierarchy_name: &'static str,
    public: Public,
) -> Result<(), TpmError> {
    let target = persistent(handle)?;
    let session = bus.auth(ctx, Use::Auth)?;
    let created = ctx
        .execute_with_session(Some(session), |c| {
            c.create_primary(hierarchy, public, None, None, None, None)
        })
        .map_err(|e| hierarchy_auth_error(e, hierarchy_name, "TPM2_CreatePrimary"))?;
    let persisted = ctx
        .execute_with_session(Some(session), |c| {
            c.evict_control(
                Provision::Owner,
                ObjectHandle::from(created.key_handle),
                Persistent::Persistent(target),
            )
        })
        .map_err(|e| hierarchy_auth_error(e, "owner", "TPM2_EvictControl"));
    ctx.flush_context(ObjectHandle::from(created.key_handle))
        .during("TPM2_FlushContext")?;
    let mut persisted = persisted?;
    let _ = ctx.tr_close(&mut persisted);
    Ok(())
}

/// TPM_RH_ENDORSEMENT or TPM_RH_OWNER.
fn hierarchy_handle(hierarchy: Hierarchy) -> u32 {
    match hierarchy {
        Hierarchy::Endorsement => 0x4000_000B,
        _ => 0x4000_0001,
    }
}

pub fn persistent(handle: u32) -> Result<PersistentTpmHandle, TpmError> {
    PersistentTpmHandle::new(handle)
        .map_err(|_| TpmError::Unexpected(format!("{handle:#010x} is not a persistent handle")))
}

/// The TCG EK Credential Profile template L-1 (RSA-2048, unique = 256 zero bytes), the same as
/// `tpm2_createek -G rsa` and upstream aziot-tpmd.
pub fn ek_template() -> tss_esapi::Result<tss_esapi::structures::Public> {
    create_ek_public_from_default_template(AsymmetricAlgorithm::Rsa, None)
}

/// Upstream aziot-tpmd's SRK template: RSA-2048 restricted decryption key, AES-128-CFB, noDA,
/// userWithAuth, unique = 256 zero bytes (attributes 0x00030472).
pub fn srk_template() -> tss_esapi::Result<tss_esapi::structures::Public> {
    let attributes = storage_key_attributes()?;
    PublicBuilder::new()
        .with_public_algorithm(PublicAlgorithm::Rsa)
        .with_name_hashing_algorithm(HashingAlgorithm::Sha256)
        .with_object_attributes(attributes)
        .with_rsa_parameters(
            PublicRsaParametersBuilder::new_restricted_decryption_key(
                SymmetricDefinitionObject::AES_128_CFB,
                RsaKeyBits::Rsa2048,
                RsaExponent::default(),
            )
            .build()?,
        )
        .with_rsa_unique_identifier(PublicKeyRsa::new_empty_with_size(RsaKeyBits::Rsa2048))
        .build()
}

/// A restricted decryption key bound to this TPM, made by it, used with an empty password and
/// without lockout: the SRK's attributes, and the session key's.
pub fn storage_key_attributes() -> tss_esapi::Result<ObjectAttributes> {
    ObjectAttributesBuilder::new()
        .with_fixed_tpm(true)
        .with_fixed_parent(true)
        .with_sensitive_data_origin(true)
        .with_user_with_auth(true)
        .with_no_da(true)
        .with_restricted(true)
        .with_decrypt(true)
        .build()
}
