//! One DPS registration and what follows from it: on success the new device is written to the
//! homedir; on failure after the challenge key replaced the device's key in the TPM, the previous
//! key is put back (keyd-tpm's `restore_auth_key`), or, with a TPM Service that cannot do that
//! (upstream aziot-tpmd), the error says plainly that the old hub key was lost.

use std::path::Path;

use crate::app::App;
use crate::clients::{LocalError, RestoreOutcome, TpmKeys};
use crate::device::Device;
use crate::dps::{self, Assignment, DpsError};
use crate::state::{self, DeviceInfo, PrevState, StateError};

#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    #[error("{error}{loss}")]
    Dps {
        #[source]
        error: DpsError,
        /// Empty unless the previous hub key could not be put back.
        loss: String,
    },
    #[error("DPS registration needs the TPM Service: {0}")]
    Tpm(#[source] LocalError),
    #[error("the device was provisioned but its state could not be saved: {0}")]
    State(#[source] StateError),
}

impl ProvisionError {
    /// Whether someone has to change something (enrollment, config, clock) for a retry to work.
    pub fn needs_user_action(&self) -> bool {
        match self {
            ProvisionError::Dps { error, .. } => error.needs_user_action(),
            ProvisionError::Tpm(LocalError::Unreachable { .. }) => false,
            _ => true,
        }
    }

    /// What the admin sees of it: the cause's name, the message and the endpoint.
    pub fn problem(&self, endpoint: &str) -> crate::progress::Problem {
        let cause = match self {
            ProvisionError::Dps { error, .. } => error.cause(),
            ProvisionError::Tpm(_) => "tpm_service",
            ProvisionError::State(_) => "state",
        };
        let endpoint = match self {
            ProvisionError::Dps { .. } => Some(endpoint.to_owned()),
            ProvisionError::Tpm(LocalError::Unreachable { path, .. }) => Some(path.display().to_string()),
            _ => None,
        };
        crate::progress::Problem {
            cause: cause.to_owned(),
            message: self.to_string(),
            endpoint,
            at_ms: crate::progress::now_ms(),
        }
    }

    /// The device's previous credentials no longer work.
    pub fn lost_previous_key(&self) -> bool {
        matches!(self, ProvisionError::Dps { loss, .. } if !loss.is_empty())
    }
}

/// Registers with DPS. `previous` is the device the TPM's key belonged to, if any.
pub async fn register(
    app: &App,
    registration_id: &str,
    previous: Option<&Device>,
) -> Result<Device, ProvisionError> {
    let keys: TpmKeys = app.tpm.get_tpm_keys().await.map_err(ProvisionError::Tpm)?;
    let payload = load_payload(app).map_err(|error| ProvisionError::Dps {
        error,
        loss: String::new(),
    })?;
    let request = dps::Request {
        origin: &app.config.dps.origin,
        scope_id: &app.config.dps.scope_id,
        registration_id,
        keys: &keys,
        payload: payload.as_ref(),
        bound: app.config.cloud.provisioning_timeout(),
        progress: &app.progress,
    };
    match dps::register(&app.cloud, &request).await {
        Ok(assignment) => persist(app, assignment).map_err(ProvisionError::State),
        Err(failure) => {
            let loss = if failure.auth_key_replaced {
                restore(app, previous).await
            } else {
                String::new()
            };
            Err(ProvisionError::Dps {
                error: failure.error,
                loss,
            })
        }
    }
}

/// Puts the previous auth key back; returns what was lost, if anything.
async fn restore(app: &App, previous: Option<&Device>) -> String {
    match app.tpm.restore_auth_key().await {
        Ok(RestoreOutcome::Restored) => {
            log::info!("put the device's previous IoT Hub key back into the TPM after the failed registration");
            String::new()
        }
        Ok(RestoreOutcome::NothingToRestore(why)) => {
            log::debug!("no previous auth key to restore: {why}");
            String::new()
        }
        Ok(RestoreOutcome::Unsupported) => match previous {
            Some(device) => format!(
                "\nThe DPS challenge key replaced the IoT Hub key of device {:?} in the TPM, and this TPM Service \
                 (upstream aziot-tpmd?) cannot put the old key back (no restore_auth_key): the device cannot \
                 authenticate to IoT Hub {} until a DPS registration succeeds. Use keyd-tpm to keep the key.",
                device.device_id, device.hub_name
            ),
            None => String::new(),
        },
        Err(e) => match previous {
            Some(device) => format!(
                "\nThe DPS challenge key replaced the IoT Hub key of device {:?} in the TPM and restoring the old \
                 key failed ({e}): the device cannot authenticate to IoT Hub {} until a DPS registration succeeds.",
                device.device_id, device.hub_name
            ),
            None => {
                log::warn!("could not restore the previous auth key: {e}");
                String::new()
            }
        },
    }
}

/// The payload file's JSON, read at each registration like upstream.
fn load_payload(app: &App) -> Result<Option<serde_json::Value>, DpsError> {
    let Some(path) = &app.config.dps.payload_path else {
        return Ok(None);
    };
    let bad = |reason: String| DpsError::Payload {
        path: path.display().to_string(),
        reason,
    };
    let text = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
    serde_json::from_slice(&text)
        .map(Some)
        .map_err(|e| bad(format!("not JSON: {e}")))
}

/// Writes the new device to the homedir. A different device than the backed-up one invalidates
/// `prev_state` (its modules were another device's) and the module backups.
fn persist(app: &App, assignment: Assignment) -> Result<Device, StateError> {
    let homedir: &Path = &app.config.homedir;
    let device = Device {
        gateway_host: assignment.hub.clone(),
        hub_name: assignment.hub,
        device_id: assignment.device_id,
    };
    let info = DeviceInfo::of(&device);
    let old = DeviceInfo::load(homedir).ok().flatten();
    if old.as_ref() != Some(&info) {
        PrevState::remove(homedir)?;
    }
    info.save(homedir)?;
    app.backups.set_device(&device);
    match &assignment.payload {
        Some(payload) => {
            log::info!(
                "DPS returned a payload with the assignment; saved to {}",
                homedir.join(state::DPS_PAYLOAD).display()
            );
            let json = serde_json::to_vec_pretty(payload).unwrap_or_default();
            state::write_atomic(&homedir.join(state::DPS_PAYLOAD), &json)?;
        }
        None => state::remove(&homedir.join(state::DPS_PAYLOAD))?,
    }
    Ok(device)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use aziot_http::{HttpError, Request, Response, ServerOptions};

    use super::*;

    /// Upstream aziot-tpmd: no `/restore_auth_key` route, so 404.
    struct UpstreamTpmd;

    impl aziot_http::Service for UpstreamTpmd {
        fn api_versions(&self) -> &'static [&'static str] {
            &["2020-09-01"]
        }

        async fn handle(&self, _req: Request) -> Response {
            HttpError::not_found().into_response()
        }
    }

    #[tokio::test]
    async fn upstream_tpmd_cannot_restore_and_the_error_says_what_was_lost() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("tpmd.sock");
        let listener = aziot_http::bind_unix(&sock).unwrap();
        tokio::spawn(aziot_http::serve(
            listener,
            Arc::new(UpstreamTpmd),
            ServerOptions::default(),
            std::future::pending(),
        ));
        let config = crate::config::parse(&format!(
            "{}\n[endpoints]\naziot_tpmd = \"unix://{}\"\n",
            crate::config::MINIMAL,
            sock.display()
        ))
        .unwrap();
        let (app, _rx) = App::new(config).unwrap();
        let device = Device {
            hub_name: "hub.example".into(),
            gateway_host: "hub.example".into(),
            device_id: "dev1".into(),
        };
        let loss = restore(&app, Some(&device)).await;
        assert!(loss.contains("cannot put the old key back"), "{loss}");
        assert!(
            loss.contains("\"dev1\"") && loss.contains("hub.example"),
            "{loss}"
        );
        assert_eq!(
            restore(&app, None).await,
            "",
            "nothing is lost on a first registration"
        );
    }
}
