//! The provisioning task: the only place that registers with DPS, so registrations never overlap,
//! and the API never waits for one (it reads the status snapshot instead).
//!
//! * At start: use the `device_info` backup when it is valid (see [`backup`]), else register;
//!   failures are retried with backoff until they succeed (an operator may enroll the device
//!   later), while the API answers 503 with the last error.
//! * `POST /identities/device/reprovision`: register now and answer with the outcome. If it fails
//!   and the previous hub key was kept (restored), the device goes on with its old identity.
//! * IoT Hub rejected the device's credentials: register again, at most with backoff when it
//!   keeps happening, so a hub that rejects every new registration does not cause a storm.
//!
//! After each provisioning, module reconciliation runs in its own task.

mod backup;
mod register;

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::app::{App, Trigger};
use crate::backoff::Backoff;
use crate::device::{Device, Status};

pub use register::ProvisionError;

/// Automatic reprovisions closer together than this back off.
const AUTO_WINDOW: Duration = Duration::from_secs(600);

type Waiter = oneshot::Sender<Result<(), String>>;

struct Supervisor {
    app: Arc<App>,
    rx: mpsc::Receiver<Trigger>,
    generation: u64,
    /// The device whose key the TPM holds, if any.
    current: Option<Device>,
    waiters: Vec<Waiter>,
    reconcile: Option<JoinHandle<()>>,
    last_auto: Option<Instant>,
    auto_backoff: Backoff,
}

/// Runs until the trigger channel closes (the daemon is stopping).
pub async fn run(app: Arc<App>, rx: mpsc::Receiver<Trigger>) {
    let max = app.config.cloud.max_backoff();
    let mut s = Supervisor {
        app,
        rx,
        generation: 0,
        current: None,
        waiters: Vec::new(),
        reconcile: None,
        last_auto: None,
        auto_backoff: Backoff::new(Duration::from_secs(5), max.max(Duration::from_secs(5))),
    };
    let mut use_backup = true;
    let mut fallback = false;
    loop {
        if !s.provision(use_backup, fallback).await {
            return;
        }
        use_backup = false;
        match s.serve().await {
            Some(keep_old_on_failure) => fallback = keep_old_on_failure,
            None => return,
        }
    }
}

impl Supervisor {
    /// Provisions until there is a device (or, with `fallback`, gives the old one back after a
    /// failure that kept its key). False when the daemon is stopping.
    async fn provision(&mut self, use_backup: bool, fallback: bool) -> bool {
        let mut backoff = Backoff::new(Duration::from_secs(1), self.app.config.cloud.max_backoff());
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            self.app.progress.registering(attempt);
            match self.attempt(use_backup).await {
                Ok(device) => {
                    self.become_ready(device);
                    self.answer(Ok(()));
                    return true;
                }
                Err(e) => {
                    let message = e.to_string();
                    self.answer(Err(message.clone()));
                    let problem = e.problem(&self.app.config.dps.origin);
                    // Never sooner than DPS asked (Retry-After), whatever the backoff says.
                    let wait = backoff.next_delay().max(self.app.cloud.dps_wait());
                    match (&self.current, fallback && !e.lost_previous_key()) {
                        (Some(device), true) => {
                            log::error!(
                                "reprovisioning failed, keeping device {:?} on {}: {message}",
                                device.device_id,
                                device.hub_name
                            );
                            self.app.progress.failed(problem, None, Some(device));
                            let device = device.clone();
                            self.app.set_status(Status::Ready {
                                device: device.clone(),
                                generation: self.generation,
                            });
                            self.reconcile = Some(tokio::spawn(crate::reconcile::run(
                                Arc::clone(&self.app),
                                device,
                            )));
                            return true;
                        }
                        _ => {
                            if e.lost_previous_key() {
                                self.current = None;
                                let _ = crate::state::DeviceInfo::remove(&self.app.config.homedir);
                            }
                            self.app.set_status(Status::Provisioning {
                                attempt,
                                last_error: Some(message.clone()),
                            });
                            self.app.progress.failed(problem, Some(wait), None);
                        }
                    }
                    let level = if e.needs_user_action() {
                        log::Level::Error
                    } else {
                        log::Level::Warn
                    };
                    log::log!(
                        level,
                        "provisioning failed: {message}\nretrying in {:.0} s",
                        wait.as_secs_f32()
                    );
                    if !self.wait_or_request(wait).await {
                        return false;
                    }
                }
            }
        }
    }

    async fn attempt(&self, use_backup: bool) -> Result<Device, ProvisionError> {
        let app = &self.app;
        let registration_id = app.registration_id().await.map_err(ProvisionError::Tpm)?;
        if use_backup {
            match backup::check(app, &registration_id)
                .await
                .map_err(ProvisionError::Tpm)?
            {
                backup::Verdict::Usable(device) => {
                    log::info!(
                        "using the backup of device {:?} on {} without contacting DPS",
                        device.device_id,
                        device.hub_name
                    );
                    app.backups.set_device(&device);
                    return Ok(device);
                }
                backup::Verdict::Register(why) => log::info!("registering with DPS: {why}"),
            }
        }
        register::register(app, &registration_id, self.current.as_ref()).await
    }

    fn become_ready(&mut self, device: Device) {
        self.app.progress.provisioned(&device);
        self.generation += 1;
        self.current = Some(device.clone());
        self.app.set_status(Status::Ready {
            device: device.clone(),
            generation: self.generation,
        });
        if let Some(task) = self.reconcile.take() {
            task.abort();
        }
        self.reconcile = Some(tokio::spawn(crate::reconcile::run(
            Arc::clone(&self.app),
            device,
        )));
    }

    fn answer(&mut self, result: Result<(), String>) {
        for waiter in self.waiters.drain(..) {
            let _ = waiter.send(result.clone());
        }
    }

    /// Waits for a reason to register again. `Some(true)`: requested through the API (fall back
    /// to the old device on failure); `Some(false)`: IoT Hub rejected the device; `None`: stop.
    async fn serve(&mut self) -> Option<bool> {
        loop {
            match self.rx.recv().await? {
                Trigger::Reprovision(reply) => {
                    self.waiters.push(reply);
                    self.start_reprovision("requested through the API");
                    return Some(true);
                }
                Trigger::HubRejected { generation, reason } if generation == self.generation => {
                    log::warn!("{reason}; registering with DPS again");
                    self.app.progress.problem(crate::progress::Problem {
                        cause: "hub_rejected".into(),
                        message: reason.clone(),
                        endpoint: self.current.as_ref().map(|d| d.hub_name.clone()),
                        at_ms: crate::progress::now_ms(),
                    });
                    self.start_reprovision("IoT Hub rejected the device's credentials");
                    let wait = self.auto_delay();
                    if !wait.is_zero() {
                        log::warn!(
                            "the device was reprovisioned recently; waiting {:.0} s before registering again",
                            wait.as_secs_f32()
                        );
                        if !self.wait_or_request(wait).await {
                            return None;
                        }
                    }
                    return Some(false);
                }
                Trigger::HubRejected { .. } => {
                    log::debug!("ignoring a hub rejection of an older registration")
                }
            }
        }
    }

    fn start_reprovision(&mut self, reason: &str) {
        if let Some(task) = self.reconcile.take() {
            task.abort();
        }
        if let Some(device) = &self.current {
            self.app.set_status(Status::Reprovisioning {
                device: device.clone(),
                reason: reason.to_owned(),
            });
        }
    }

    /// No delay for the first automatic reprovision in a while; backoff for repeated ones.
    fn auto_delay(&mut self) -> Duration {
        let now = Instant::now();
        let recent = self
            .last_auto
            .is_some_and(|t| now.duration_since(t) < AUTO_WINDOW);
        self.last_auto = Some(now);
        if recent {
            self.auto_backoff.next_delay()
        } else {
            self.auto_backoff.reset();
            Duration::ZERO
        }
    }

    /// Sleeps `wait`, cut short by an API reprovision request (whose caller then waits for the
    /// next attempt). False when the daemon is stopping.
    async fn wait_or_request(&mut self, wait: Duration) -> bool {
        let sleep = tokio::time::sleep(wait);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                () = &mut sleep => return true,
                trigger = self.rx.recv() => match trigger {
                    None => return false,
                    Some(Trigger::Reprovision(reply)) => {
                        self.waiters.push(reply);
                        return true;
                    }
                    Some(Trigger::HubRejected { .. }) => {}
                },
            }
        }
    }
}
