//! What an admin wants to know about the TPM: who made it, which firmware, which persistent
//! handles are taken, which EK certificates are provisioned, whether the DPS auth key is there.

use serde::Serialize;
use tss_esapi::constants::{CapabilityType, PropertyTag};
use tss_esapi::handles::{NvIndexHandle, NvIndexTpmHandle};
use tss_esapi::interface_types::resource_handles::NvAuth;
use tss_esapi::interface_types::session_handles::AuthSession;
use tss_esapi::structures::{CapabilityData, MaxNvBuffer};
use tss_esapi::Context;

use super::device::Device;
use super::error::{Context as _, TpmError};

/// NV indexes of EK certificates (TCG EK Credential Profile 2.x): the low range (RSA-2048, ECC
/// P-256) and the high range.
const EK_CERT_INDEXES: [(u32, &str); 9] = [
    (0x01c0_0002, "RSA-2048"),
    (0x01c0_000a, "ECC NIST P-256"),
    (0x01c0_0012, "RSA-2048"),
    (0x01c0_0014, "ECC NIST P-256"),
    (0x01c0_0016, "ECC NIST P-384"),
    (0x01c0_0018, "ECC NIST P-521"),
    (0x01c0_001a, "ECC SM2 P-256"),
    (0x01c0_001c, "RSA-3072"),
    (0x01c0_001e, "RSA-4096"),
];
const RSA_EK_CERT_INDEX: u32 = 0x01c0_0002;

/// One EK certificate found in NV.
#[derive(Debug, Clone, Serialize)]
pub struct EkCertificate {
    /// e.g. "0x01c00002".
    pub nv_index: String,
    /// The EK type the index is for, e.g. "RSA-2048".
    pub key: &'static str,
    /// DER, base64.
    pub certificate: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct TpmInfo {
    /// TPM_PT_MANUFACTURER as its four ASCII characters (e.g. "IFX ", "IBM ").
    pub manufacturer: String,
    /// TPM_PT_VENDOR_STRING_1..4.
    pub vendor: String,
    /// TPM_PT_FIRMWARE_VERSION_1/2 as four 16-bit parts.
    pub firmware_version: String,
    pub persistent_handles: Vec<String>,
    /// DER RSA EK certificate from NV 0x01c00002 (base64), if the manufacturer provisioned one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ek_certificate: Option<String>,
    /// Every EK certificate in NV (RSA and ECC, low and high range).
    pub ek_certificates: Vec<EkCertificate>,
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

/// Reads the TPM's identity and handles; commands that change nothing on the TPM. EK
/// certificates are read with their index's own (empty) authorization, as the TCG profile
/// provides (TPMA_NV_AUTHREAD), so no hierarchy password is involved.
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
    let ek_certificates = ek_certificates(ctx)?;
    let ek_certificate = ek_certificates
        .iter()
        .find(|c| c.nv_index == format!("{RSA_EK_CERT_INDEX:#010x}"))
        .map(|c| c.certificate.clone());
    Ok(TpmInfo {
        manufacturer,
        vendor,
        firmware_version,
        auth_key_present: persistent.contains(&auth_key_handle),
        persistent_handles: persistent.iter().map(|h| format!("{h:#010x}")).collect(),
        ek_certificate,
        ek_certificates,
        auth_key_handle: format!("{auth_key_handle:#010x}"),
    })
}

fn ek_certificates(ctx: &mut Context) -> Result<Vec<EkCertificate>, TpmError> {
    let (first, last) = (EK_CERT_INDEXES[0].0, EK_CERT_INDEXES[EK_CERT_INDEXES.len() - 1].0);
    let (data, _) = ctx
        .get_capability(CapabilityType::Handles, first, last - first + 1)
        .during("TPM2_GetCapability(handles)")?;
    let CapabilityData::Handles(defined) = data else { return Ok(Vec::new()) };
    let mut found = Vec::new();
    for (index, key) in EK_CERT_INDEXES {
        if !defined.iter().any(|h| u32::from(*h) == index) {
            continue;
        }
        match read_nv(ctx, index) {
            Ok(der) => found.push(EkCertificate {
                nv_index: format!("{index:#010x}"),
                key,
                certificate: aziot_tpm_common::b64(&der),
            }),
            Err(e) => log::warn!("the EK certificate NV index {index:#010x} exists but cannot be read: {e}"),
        }
    }
    Ok(found)
}

/// Reads a whole NV index, authorized by the index itself (AUTHREAD, empty authValue).
fn read_nv(ctx: &mut Context, index: u32) -> Result<Vec<u8>, TpmError> {
    let handle = NvIndexTpmHandle::new(index).during("NV index")?;
    let mut object = ctx
        .execute_without_session(|c| c.tr_from_tpm_public(handle.into()))
        .during("TPM2_NV_ReadPublic (TR_FromTPMPublic)")?;
    let result = read_nv_with(ctx, NvIndexHandle::from(object));
    let _ = ctx.tr_close(&mut object);
    result
}

fn read_nv_with(ctx: &mut Context, nv: NvIndexHandle) -> Result<Vec<u8>, TpmError> {
    let (public, _) = ctx.execute_without_session(|c| c.nv_read_public(nv)).during("TPM2_NV_ReadPublic")?;
    if !public.attributes().auth_read() {
        return Err(TpmError::Unexpected(
            "the index cannot be read with its own authorization (TPMA_NV_AUTHREAD is clear), which the TCG EK profile requires; \
             keyd-tpm does not send the owner password for it"
                .into(),
        ));
    }
    let size = public.data_size();
    let chunk = ctx
        .get_tpm_property(PropertyTag::NvBufferMax)
        .during("TPM2_GetCapability(properties)")?
        .map_or(MaxNvBuffer::MAX_SIZE, |n| n as usize)
        .clamp(1, MaxNvBuffer::MAX_SIZE);
    let mut out = Vec::with_capacity(size);
    while out.len() < size {
        let n = chunk.min(size - out.len());
        let part = ctx
            .execute_with_session(Some(AuthSession::Password), |c| c.nv_read(NvAuth::NvIndex(nv), nv, n as u16, out.len() as u16))
            .during("TPM2_NV_Read")?;
        out.extend_from_slice(part.value());
    }
    Ok(out)
}
