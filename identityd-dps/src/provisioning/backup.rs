//! Whether the `device_info` backup can be used at start instead of registering again. Upstream
//! trusts the file alone; then a TPM whose auth key was cleared leaves the daemon failing every
//! hub call. We also require that the backup was made for the DPS settings in force (a changed ID
//! scope or registration ID must register again) and that the TPM really holds an auth key: one
//! HMAC through `sign_with_auth_key`, which fails (keyd-tpm: 400 "no DPS auth key"; upstream
//! tpmd: 500) when the key is gone.

use aziot_http::StatusCode;

use crate::app::App;
use crate::clients::LocalError;
use crate::device::Device;
use crate::state::{DeviceInfo, PrevState};

#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Usable(Device),
    /// Register with DPS; the text says why the backup cannot be used.
    Register(String),
}

/// Decides; `Err` only when the TPM Service cannot be asked (try again later).
pub async fn check(app: &App, registration_id: &str) -> Result<Verdict, LocalError> {
    let homedir = &app.config.homedir;
    let info = match DeviceInfo::load(homedir) {
        Ok(Some(info)) => info,
        Ok(None) => return Ok(Verdict::Register("there is no device_info backup".into())),
        Err(e) => return Ok(Verdict::Register(format!("the backup is unusable: {e}"))),
    };
    match PrevState::load(homedir) {
        Ok(Some(prev)) if !prev.same_provisioning(&app.config, registration_id) => {
            return Ok(Verdict::Register(
                "the DPS settings (global_endpoint, scope_id or registration ID) changed since the device \
                 was provisioned"
                    .into(),
            ));
        }
        Ok(_) => {}
        Err(e) => log::warn!("ignoring prev_state: {e}"),
    }
    match app.tpm.sign(b"identityd-dps: is the DPS auth key present?").await {
        Ok(_) => Ok(Verdict::Usable(info.device())),
        Err(LocalError::Refused { status, message, .. })
            if status == StatusCode::BAD_REQUEST || status == StatusCode::INTERNAL_SERVER_ERROR =>
        {
            Ok(Verdict::Register(format!(
                "the TPM holds no usable DPS auth key for the backed-up device {:?} ({status}: {message})",
                info.device_id
            )))
        }
        Err(e) => Err(e),
    }
}
