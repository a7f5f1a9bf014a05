//! A read-only look at a TPM that keyd-tpm is not running on, for `aziot-tpm tpm-info` when the
//! daemon is stopped. Unlike `Device::open` it creates and persists nothing, flushes nothing and
//! recovers nothing: an admin asking questions must not change the TPM.

use tss_esapi::handles::{KeyHandle, TpmHandle};
use tss_esapi::Context;

use super::device::{open_context, tpm2b_public};
use super::error::{Context as _, TpmError};
use super::info::{self, TpmInfo};
use super::primaries;

/// What a direct read found.
#[derive(Debug, Clone)]
pub struct Inspection {
    /// The TCTI used, normalized (`device` → `device:/dev/tpmrm0`).
    pub tcti: String,
    /// The EK at 0x81010001 as `TPM2B_PUBLIC`, if one is persisted there.
    pub endorsement_key: Option<Vec<u8>>,
    /// The SRK at 0x81000001 as `TPM2B_PUBLIC`, if one is persisted there.
    pub storage_root_key: Option<Vec<u8>>,
    pub info: TpmInfo,
}

/// Opens the TPM on `tcti` and reads the EK, SRK and [`TpmInfo`]. No hierarchy password is
/// used: EK certificates are read with their NV index's own authorization.
pub fn inspect(tcti: &str, auth_key_index: u32) -> Result<Inspection, TpmError> {
    let (mut ctx, tcti) = open_context(tcti, "", "")?;
    let endorsement_key = read_persistent(&mut ctx, aziot_tpm_common::EK_HANDLE)?;
    let storage_root_key = read_persistent(&mut ctx, aziot_tpm_common::SRK_HANDLE)?;
    let info = info::read(&mut ctx, aziot_tpm_common::AUTH_KEY_HANDLE_BASE + auth_key_index)?;
    Ok(Inspection { tcti, endorsement_key, storage_root_key, info })
}

fn read_persistent(ctx: &mut Context, handle: u32) -> Result<Option<Vec<u8>>, TpmError> {
    if !super::persistent_exists(ctx, handle)? {
        return Ok(None);
    }
    let object = ctx
        .tr_from_tpm_public(TpmHandle::Persistent(primaries::persistent(handle)?))
        .during("TPM2_ReadPublic (TR_FromTPMPublic)")?;
    tpm2b_public(ctx, KeyHandle::from(object)).map(Some)
}
