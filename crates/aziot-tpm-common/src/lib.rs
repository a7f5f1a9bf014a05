//! Shared, dependency-light pieces of the TPM side of aziot: the JSON shapes of the TPM Service
//! API (upstream's `aziot-tpm-common-http`, byte for byte) and the registration ID that the DPS
//! device SDKs derive from the EK.

pub mod accounts;
pub mod http;
mod registration;

pub use registration::registration_id;

/// Persistent handle of the endorsement key (TCG provisioning guidance, upstream aziot-tpmd).
pub const EK_HANDLE: u32 = 0x8101_0001;
/// Persistent handle of the storage root key.
pub const SRK_HANDLE: u32 = 0x8100_0001;
/// Base of the DPS auth key handle; the configured `auth_key_index` is added to it.
pub const AUTH_KEY_HANDLE_BASE: u32 = 0x8100_0000;
/// Upstream's default `auth_key_index`, giving the auth key handle 0x81000100.
pub const DEFAULT_AUTH_KEY_INDEX: u32 = 0x00_01_00;

/// Standard base64 with padding, as upstream's `http_common::ByteString` uses.
pub fn b64(bytes: &[u8]) -> String {
    data_encoding::BASE64.encode(bytes)
}

/// Decodes a byte field: standard base64, padding optional, the same rule as the Keys
/// Service's byte fields (upstream decodes both APIs' fields alike).
pub fn from_b64(s: &str) -> Result<Vec<u8>, data_encoding::DecodeError> {
    aziot_key_common_http::decode_base64(s)
}
