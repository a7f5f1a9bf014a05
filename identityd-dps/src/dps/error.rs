//! Why a DPS registration failed, each with what the user should do about it. A provisioning log
//! line is often all an operator gets, so every message names the registration ID and the fix.

use std::time::Duration;

use crate::clients::LocalError;

#[derive(Debug, thiserror::Error)]
pub enum DpsError {
    #[error("DPS registration needs the TPM Service, which failed: {0}")]
    Tpm(#[source] LocalError),

    #[error(
        "DPS does not accept registration ID {registration_id:?} in ID scope {scope_id:?} ({detail}). \
         Create an individual enrollment with TPM attestation for registration ID {registration_id:?} and \
         endorsement key {endorsement_key} (`aziot-tpm tpm-info` prints both; `aziot-tpm enroll` creates it \
         from a DPS connection string), or enable it if it exists"
    )]
    NotEnrolled {
        registration_id: String,
        scope_id: String,
        endorsement_key: String,
        detail: String,
    },

    #[error(
        "DPS says the endorsement key of registration ID {registration_id:?} does not match its enrollment \
         ({detail}). Update the enrollment's endorsement key to {endorsement_key} (`aziot-tpm tpm-info` prints \
         it), or check that registration_id in the config belongs to this device"
    )]
    EkMismatch {
        registration_id: String,
        endorsement_key: String,
        detail: String,
    },

    #[error(
        "DPS answered 404 to the registration of {registration_id:?} ({detail}); check the ID scope \
         {scope_id:?} (`id_scope` in /etc/aziot/config.toml, then `aziot-tpm config apply`) and \
         global_endpoint"
    )]
    NotFound {
        registration_id: String,
        scope_id: String,
        detail: String,
    },

    #[error(
        "DPS rejected the SAS token signed with the TPM's challenge key during {step} ({detail}). \
         Check that the device clock is right (the token is valid for {lifetime:?} from the device's \
         current time) and that nothing else registered this TPM at the same time"
    )]
    TokenRejected {
        step: &'static str,
        lifetime: Duration,
        detail: String,
    },

    #[error(
        "DPS registration of {registration_id:?} failed: {detail}. Check the enrollment's allocation \
         policy and that its linked IoT hubs exist and are reachable from DPS"
    )]
    Failed {
        registration_id: String,
        detail: String,
    },

    #[error(
        "the DPS enrollment or registration of {registration_id:?} is disabled ({detail}); enable it \
         in DPS, then run `aziotctl system reprovision` or restart identityd"
    )]
    Disabled {
        registration_id: String,
        detail: String,
    },

    #[error(
        "DPS left {registration_id:?} unassigned ({detail}): no IoT hub could be assigned; link an IoT \
         hub to the DPS instance and check the enrollment's allocation policy"
    )]
    Unassigned {
        registration_id: String,
        detail: String,
    },

    #[error("DPS refused the {step} request with {status}: {detail}")]
    Rejected {
        step: &'static str,
        status: u16,
        detail: String,
    },

    #[error("DPS sent an unexpected answer to the {step} request: {detail}")]
    Unexpected { step: &'static str, detail: String },

    #[error(
        "DPS registration did not complete within {bound:?} (cloud.provisioning_timeout_sec); the last \
         problem was: {last}. identityd-dps will try again later; check the network path to {endpoint}"
    )]
    GaveUp {
        bound: Duration,
        last: String,
        /// The cause of the last problem (see [`DpsError::cause`]).
        last_cause: &'static str,
        endpoint: String,
    },

    #[error(
        "DPS asked identityd-dps to wait {retry_after:?} before its next request (Retry-After, after \
         {last}), which is more than is left of this registration's {bound:?} \
         (cloud.provisioning_timeout_sec); the next registration starts when that wait is over"
    )]
    Throttled {
        retry_after: Duration,
        bound: Duration,
        last: String,
    },

    #[error("cannot talk to DPS at {endpoint}: {source}{hint}")]
    Transport {
        endpoint: String,
        #[source]
        source: cloud_http::Error,
        hint: &'static str,
    },

    #[error(
        "cannot read the DPS payload {path}: {reason}; fix provisioning.payload.uri or the file"
    )]
    Payload { path: String, reason: String },
}

impl DpsError {
    /// Whether retrying the same registration later can succeed without anyone changing anything
    /// (used only to choose how loudly to log; provisioning is retried either way).
    pub fn needs_user_action(&self) -> bool {
        !matches!(
            self,
            DpsError::GaveUp { .. }
                | DpsError::Throttled { .. }
                | DpsError::Tpm(LocalError::Unreachable { .. })
        )
    }

    /// A short, stable name of the kind of failure, for `aziot-tpm status -o json` and scripts.
    pub fn cause(&self) -> &'static str {
        match self {
            DpsError::Tpm(_) => "tpm_service",
            DpsError::NotEnrolled { .. } => "not_enrolled",
            DpsError::EkMismatch { .. } => "ek_mismatch",
            DpsError::NotFound { .. } => "dps_not_found",
            DpsError::TokenRejected { .. } => "token_rejected",
            DpsError::Failed { .. } => "registration_failed",
            DpsError::Disabled { .. } => "disabled",
            DpsError::Unassigned { .. } => "unassigned",
            DpsError::Rejected { .. } => "dps_rejected",
            DpsError::Unexpected { .. } => "dps_unexpected",
            DpsError::GaveUp { last_cause, .. } => last_cause,
            DpsError::Throttled { .. } => "dps_throttled",
            DpsError::Transport { source, .. } => transport_cause(source),
            DpsError::Payload { .. } => "payload",
        }
    }
}

/// The cause name of a network failure.
pub fn transport_cause(e: &cloud_http::Error) -> &'static str {
    match e {
        cloud_http::Error::Connect { .. } => "dps_unreachable",
        cloud_http::Error::Tls { .. } => "dps_tls",
        cloud_http::Error::Timeout { .. } => "dps_timeout",
        cloud_http::Error::Http { .. } => "dps_connection_dropped",
        _ => "dps_request",
    }
}

/// The cause name of an answer that is retried.
pub fn status_cause(status: cloud_http::StatusCode) -> &'static str {
    match status.as_u16() {
        429 => "dps_throttled",
        408 => "dps_timeout",
        _ => "dps_server_error",
    }
}

/// A TLS verification failure against a private CA is almost always a missing trust bundle.
pub fn transport_hint(e: &cloud_http::Error) -> &'static str {
    match e {
        cloud_http::Error::Tls { .. } => {
            "; if DPS uses a private CA (an emulator, a TLS-inspecting proxy), set cloud.trust_bundle"
        }
        _ => "",
    }
}
