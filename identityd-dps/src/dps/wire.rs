//! JSON of the DPS device API (api-version 2021-06-01), as the device SDKs and upstream read it.
//! Every field is optional here so that a surprising answer becomes a message, not a parse error.

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub const API_VERSION: &str = "2021-06-01";

/// `PUT .../register` body. The `tpm` object is sent on both requests, as the device SDKs do.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RegisterRequest<'a> {
    pub registration_id: &'a str,
    pub tpm: TpmAttestation,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload: Option<&'a Value>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TpmAttestation {
    pub endorsement_key: String,
    pub storage_root_key: String,
}

/// The 401 answer to the first request: the TPM challenge.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Challenge {
    #[serde(default)]
    pub authentication_key: Option<String>,
}

/// `RegistrationOperationStatus`: the answer to the second request and to each poll.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OperationStatus {
    #[serde(default)]
    pub operation_id: Option<String>,
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub registration_state: Option<RegistrationState>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RegistrationState {
    #[serde(default)]
    pub assigned_hub: Option<String>,
    #[serde(default)]
    pub device_id: Option<String>,
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub substatus: Option<String>,
    #[serde(default)]
    pub error_code: Option<Value>,
    #[serde(default)]
    pub error_message: Option<String>,
    #[serde(default)]
    pub tpm: Option<Challenge>,
    #[serde(default)]
    pub payload: Option<Value>,
}

impl OperationStatus {
    /// The status, from the top level or, failing that, the registration state.
    pub fn status(&self) -> Option<&str> {
        self.status
            .as_deref()
            .or_else(|| self.registration_state.as_ref()?.status.as_deref())
    }
}
