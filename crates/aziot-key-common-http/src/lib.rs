//! Request and response bodies of the aziot Keys Service API (`/run/aziot/keyd.sock`), with
//! upstream `aziot-key-common-http`'s JSON spellings, so keyd-tpm serves and identityd-dps calls
//! exactly what upstream aziot-keyd, aziot-identityd, aziot-certd and aziot-edged exchange.
//!
//! One module per route, named as upstream names them. Byte fields are [`ByteString`]s
//! (standard base64); key handles are opaque [`KeyHandle`] strings.

mod api_version;
mod byte_string;
mod key_handle;
pub mod key_usage;

pub mod create_derived_key;
pub mod create_key_if_not_exists;
pub mod create_key_pair_if_not_exists;
pub mod decrypt;
pub mod delete;
pub mod encrypt;
pub mod export_derived_key;
pub mod get_key_pair_public_parameter;
pub mod load;
pub mod move_key_pair;
pub mod sign;

pub use api_version::{ApiVersion, ParseApiVersionError};
pub use byte_string::{decode_base64, ByteString};
pub use key_handle::KeyHandle;
pub use key_usage::KeyUsage;

/// The error body every route answers with: `{"message": "..."}`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ErrorBody {
    pub message: String,
}
