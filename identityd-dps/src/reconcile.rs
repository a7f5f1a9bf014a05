//! Reconciliation of the configured module principals with the hub, upstream's rules: a hub module
//! that identityd created before (a module principal in `prev_state`, for the same device) and is
//! no longer configured is deleted; a configured one it did not create is deleted and recreated
//! (so its keys are ours); a configured one missing is created. Modules in neither set
//! (`$edgeAgent`, workloads that edged manages) are left alone. `prev_state` is written once the
//! hub agrees with the config.
//!
//! It runs in its own task after each provisioning: when the hub is unreachable the daemon keeps
//! serving from its backups and tries again with backoff; when the hub rejects the device, the
//! provisioning task is asked to register again.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use crate::app::App;
use crate::backoff::Backoff;
use crate::device::Device;
use crate::error::Error;
use crate::identities;
use crate::state::{prev_state::module_names, DeviceInfo, PrevState};

pub async fn run(app: Arc<App>, device: Device) {
    let mut backoff = Backoff::new(Duration::from_secs(2), app.config.cloud.max_backoff());
    loop {
        match once(&app, &device).await {
            Ok(()) => return,
            // identities:: already asked for reprovisioning.
            Err(Error::DeviceRejected(e)) => {
                log::warn!("module reconciliation stopped: {e}");
                return;
            }
            Err(Error::NotReady(_)) => return,
            Err(e) => {
                let wait = backoff.next_delay();
                log::warn!(
                    "module reconciliation with IoT Hub failed: {e}; serving identities from the backups and \
                     retrying in {:.0} s",
                    wait.as_secs_f32()
                );
                tokio::time::sleep(wait).await;
            }
        }
        if app.status().device() != Some(&device) {
            return;
        }
    }
}

async fn once(app: &App, device: &Device) -> Result<(), Error> {
    let homedir = &app.config.homedir;
    let desired: BTreeSet<String> = module_names(&app.config.principals).into_iter().collect();
    let previous = previous_modules(app, device);

    let on_hub = identities::list(app).await?;
    let mut to_create = desired.clone();
    for identity in on_hub {
        let m = identity.module.module_id;
        match (desired.contains(&m), previous.contains(&m)) {
            (false, true) => {
                identities::delete(app, &m).await?;
                log::info!("deleted hub module {m:?}: its principal was removed from the config");
            }
            (true, true) => {
                to_create.remove(&m);
            }
            (true, false) => {
                identities::delete(app, &m).await?;
                log::info!("hub module {m:?} was not created by identityd; recreating it");
            }
            (false, false) => {}
        }
    }
    for m in &to_create {
        identities::create(app, m).await?;
        log::info!("created hub module {m:?} for its [[principal]]");
    }

    let registration_id = app
        .registration_id()
        .await
        .map_err(|e| Error::Internal(format!("cannot save prev_state: {e}")))?;
    PrevState::of(&app.config, &registration_id)
        .save(homedir)
        .map_err(|e| Error::Internal(e.to_string()))?;
    log::info!(
        "module identities reconciled with IoT Hub {}",
        device.hub_name
    );
    Ok(())
}

/// The module principals of `prev_state`, if it was written for this same device.
fn previous_modules(app: &App, device: &Device) -> BTreeSet<String> {
    let homedir = &app.config.homedir;
    match DeviceInfo::load(homedir) {
        Ok(Some(info)) if info.device() == *device => {}
        _ => return BTreeSet::new(),
    }
    match PrevState::load(homedir) {
        Ok(Some(prev)) => prev.module_names().into_iter().collect(),
        Ok(None) => BTreeSet::new(),
        Err(e) => {
            log::warn!("ignoring prev_state: {e}");
            BTreeSet::new()
        }
    }
}
