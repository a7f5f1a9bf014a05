//! What an admin wants to know about the TPM: who made it, which firmware, which persistent
//! handles are taken, whether an EK certificate is provisioned, whether the DPS auth key is there.

use serde::Serialize;
use tss_esapi::abstraction::nv;
use tss_esapi::constants::{CapabilityType, PropertyTag};
use tss_esapi::handles::NvIndexTpmHandle;
use tss_esapi::interface_types::resource_handles::NvAuth;
use tss_esapi::interface_types::session_handles::AuthSession;
use tss_esapi::structures::CapabilityData;
use tss_esapi::Context;

use super::device::Device;
use super::error::{Context as _, TpmError};

/// NV index of the RSA-2048 EK certificate (TCG EK Credential Profile).
const EK_CERT_NV_INDEX: u32 = 0x01c0_0002;

#[derive(Debug, Clone, Serialize)]
pub struct TpmInfo {
    /// TPM_PT_MANUFACTURER as its four ASCII characters (e.g. "IFX ", "IBM ").
    pub manufacturer: String,
    /// TPM_PT_VENDOR_STRING_1..4.
    pub vendor: String,
    /// TPM_PT_FIRMWARE_VERSION_1/2 as four 16-bit parts.
    pub firmware_version: String,
    pub persistent_handles: Vec<String>,
    /// DER EK certificate from NV, if the manufacturer provisioned one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ek_certificate: Option<String>,
    pub auth_key_handle: String,
    pub auth_key_present: bool,
}

fn ascii(words: &[u32]) -> String {
    words
        .iter()
        .flat_map(|w| w.to_be_bytes())
        .filter(|b| *b != 0)
        .map(char::from)
        .collect::<String>()
        .trim_end()
        .to_owned()
}

impl Device {
    pub fn info(&mut self) -> Result<TpmInfo, TpmError> {
        read(&mut self.ctx, self.settings.auth_key_handle())
    }
}

/// Reads the TPM's identity and handles; commands that change nothing on the TPM.
pub(super) fn read(ctx: &mut Context, auth_key_handle: u32) -> Result<TpmInfo, TpmError> {
    let mut property = |tag| -> Result<u32, TpmError> {
        Ok(ctx.get_tpm_property(tag).during("TPM2_GetCapability(properties)")?.unwrap_or(0))
    };
    let manufacturer = ascii(&[property(PropertyTag::Manufacturer)?]);
    let vendor = ascii(&[
        property(PropertyTag::VendorString1)?,
        property(PropertyTag::VendorString2)?,
        property(PropertyTag::VendorString3)?,
        property(PropertyTag::VendorString4)?,
    ]);
    let (fw1, fw2) = (property(PropertyTag::FirmwareVersion1)?, property(PropertyTag::FirmwareVersion2)?);
    let firmware_version = format!("{}.{}.{}.{}", fw1 >> 16, fw1 & 0xffff, fw2 >> 16, fw2 & 0xffff);

    let (data, _) = ctx
        .get_capability(CapabilityType::Handles, 0x8100_0000, 64)
        .during("TPM2_GetCapability(handles)")?;
    let persistent: Vec<u32> = match data {
        CapabilityData::Handles(list) => list.iter().map(|h| u32::from(*h)).collect(),
        _ => Vec::new(),
    };
    let ek_certificate = ek_certificate(ctx)?.map(|der| aziot_tpm_common::b64(&der));
    Ok(TpmInfo {
        manufacturer,
        vendor,
        firmware_version,
        auth_key_present: persistent.contains(&auth_key_handle),
        persistent_handles: persistent.iter().map(|h| format!("{h:#010x}")).collect(),
        ek_certificate,
        auth_key_handle: format!("{auth_key_handle:#010x}"),
    })
}

fn ek_certificate(ctx: &mut Context) -> Result<Option<Vec<u8>>, TpmError> {
    let (data, _) = ctx
        .get_capability(CapabilityType::Handles, EK_CERT_NV_INDEX, 1)
        .during("TPM2_GetCapability(handles)")?;
    let present = matches!(data, CapabilityData::Handles(list) if list.iter().any(|h| u32::from(*h) == EK_CERT_NV_INDEX));
    if !present {
        return Ok(None);
    }
    let index = NvIndexTpmHandle::new(EK_CERT_NV_INDEX).during("EK certificate NV index")?;
    let read = ctx
        .execute_with_session(Some(AuthSession::Password), |c| nv::read_full(c, NvAuth::Owner, index));
    match read {
        Ok(der) => Ok(Some(der)),
        Err(e) => {
            log::warn!("the EK certificate NV index exists but cannot be read: {}", super::error::describe(&e));
            Ok(None)
        }
    }
}
