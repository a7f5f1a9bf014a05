//! Everything the API handlers and the provisioning task share. Nothing here is locked across a
//! network or socket call: the status is a `watch` snapshot, the clients are cheap to share, and
//! provisioning is asked for through a channel.

use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, oneshot, watch};

use crate::clients::{KeysClient, LocalError, TpmClient};
use crate::cloud::Cloud;
use crate::config::Config;
use crate::device::{Device, Status};
use crate::error::Error;
use crate::progress::{InUse, Progress};
use crate::state::ModuleBackups;

/// What the provisioning task is asked to do.
#[derive(Debug)]
pub enum Trigger {
    /// `POST /identities/device/reprovision`: register again now and report the outcome.
    Reprovision(oneshot::Sender<Result<(), String>>),
    /// IoT Hub rejected the device's credentials while it was in this generation.
    HubRejected { generation: u64, reason: String },
}

pub struct App {
    pub config: Config,
    pub tpm: Arc<TpmClient>,
    pub keys: KeysClient,
    pub cloud: Cloud,
    pub backups: ModuleBackups,
    /// Where provisioning stands, for admins (the API extension, the status file, systemd).
    pub progress: Progress,
    status: watch::Sender<Status>,
    triggers: mpsc::Sender<Trigger>,
    /// The registration ID derived from the EK, once known (when not configured).
    derived_registration_id: Mutex<Option<String>>,
}

impl App {
    /// The app and the receiving end of its provisioning triggers.
    pub fn new(config: Config) -> Result<(Arc<Self>, mpsc::Receiver<Trigger>), cloud_http::Error> {
        let tpm = Arc::new(TpmClient::new(&config.endpoints.tpmd));
        let keys = KeysClient::new(&config.endpoints.keyd);
        let cloud = Cloud::new(&config, Arc::clone(&tpm))?;
        let backups = ModuleBackups::new(&config.homedir);
        let progress = Progress::new(
            &config.homedir,
            InUse {
                global_endpoint: config.dps.global_endpoint.clone(),
                scope_id: config.dps.scope_id.clone(),
                registration_id: config.dps.registration_id.clone(),
            },
        );
        let (status, _) = watch::channel(Status::Provisioning {
            attempt: 0,
            last_error: None,
        });
        let (triggers, rx) = mpsc::channel(64);
        let app = App {
            config,
            tpm,
            keys,
            cloud,
            backups,
            progress,
            status,
            triggers,
            derived_registration_id: Mutex::new(None),
        };
        Ok((Arc::new(app), rx))
    }

    pub fn status(&self) -> Status {
        self.status.borrow().clone()
    }

    pub fn set_status(&self, status: Status) {
        self.status.send_replace(status);
    }

    pub fn watch_status(&self) -> watch::Receiver<Status> {
        self.status.subscribe()
    }

    /// The provisioned device and its generation, or why there is none (with the live problem
    /// of the registration under way, when there is one).
    pub fn ready_device(&self) -> Result<(Device, u64), Error> {
        let reason = match &*self.status.borrow() {
            Status::Ready { device, generation } => return Ok((device.clone(), *generation)),
            other => other.unavailable_reason(),
        };
        let report = self.progress.snapshot();
        match (&report.state, &report.last_error) {
            (crate::progress::State::Registering, Some(_)) => Err(Error::NotReady(format!(
                "the device is not provisioned yet: {}",
                report.summary(crate::progress::now_ms())
            ))),
            _ => Err(Error::NotReady(reason)),
        }
    }

    pub fn trigger(&self, trigger: Trigger) -> Result<(), Error> {
        self.triggers.try_send(trigger).map_err(|e| {
            Error::Internal(format!(
                "the provisioning task is not accepting requests: {e}"
            ))
        })
    }

    /// Tells the provisioning task that IoT Hub rejected the device (duplicates are dropped).
    pub fn hub_rejected(&self, generation: u64, reason: String) {
        if self
            .triggers
            .try_send(Trigger::HubRejected { generation, reason })
            .is_err()
        {
            log::debug!("provisioning task busy; a reprovision is already queued");
        }
    }

    /// The registration ID: configured, or derived from the EK (asked of the TPM Service once).
    pub async fn registration_id(&self) -> Result<String, LocalError> {
        if let Some(id) = &self.config.dps.registration_id {
            return Ok(id.clone());
        }
        if let Some(id) = self.lock_derived().clone() {
            return Ok(id);
        }
        let keys = self.tpm.get_tpm_keys().await?;
        let id = aziot_tpm_common::registration_id(&keys.endorsement_key);
        *self.lock_derived() = Some(id.clone());
        self.progress.registration_id_known(&id);
        Ok(id)
    }

    /// The derived registration ID if already known, without asking the TPM.
    pub fn known_registration_id(&self) -> Option<String> {
        self.config
            .dps
            .registration_id
            .clone()
            .or_else(|| self.lock_derived().clone())
    }

    fn lock_derived(&self) -> std::sync::MutexGuard<'_, Option<String>> {
        self.derived_registration_id
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
