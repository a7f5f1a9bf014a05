//! Module identities on IoT Hub, as upstream manages them: the hub assigns each module a
//! generation ID; its SAS keys are derived in the Keys Service from the master key
//! `aziot_identityd_master_id` with `"{moduleId}:{generationId}:primary|secondary"`, uploaded to
//! the hub, and the caller gets the handle of the derived primary key to sign its own tokens. The
//! device snapshot is taken without waiting; every call here is network I/O with no lock held.

use aziot_key_common_http::{KeyHandle, KeyUsage};

use crate::app::App;
use crate::clients::LocalError;
use crate::device::Device;
use crate::error::Error;
use crate::hub::{Hub, HubError, Module};

/// The Keys Service id of the key module keys are derived from (upstream's name).
pub const MASTER_KEY_ID: &str = "aziot_identityd_master_id";

/// A module identity ready to hand out.
#[derive(Debug, Clone)]
pub struct ModuleIdentity {
    pub device: Device,
    pub module: Module,
    /// Handle of the derived primary key; `None` in listings.
    pub key_handle: Option<KeyHandle>,
}

fn check_module_id(module_id: &str) -> Result<(), Error> {
    if module_id.trim().is_empty() {
        return Err(Error::invalid("module_id", "module name cannot be empty"));
    }
    Ok(())
}

/// Turns a hub error into the API error, asking for reprovisioning if the hub rejected the device.
fn hub_error(app: &App, generation: u64, e: HubError) -> Error {
    if e.is_device_rejected() {
        app.hub_rejected(generation, e.to_string());
        Error::DeviceRejected(e)
    } else {
        Error::Hub(e)
    }
}

pub async fn create(app: &App, module_id: &str) -> Result<ModuleIdentity, Error> {
    check_module_id(module_id)?;
    let (device, generation) = app.ready_device()?;
    let hub = Hub::new(&app.cloud, &device);
    let created = hub
        .create_module(module_id)
        .await
        .map_err(|e| hub_error(app, generation, e))?;
    set_keys(app, &device, generation, created).await
}

pub async fn update(app: &App, module_id: &str) -> Result<ModuleIdentity, Error> {
    check_module_id(module_id)?;
    let (device, generation) = app.ready_device()?;
    let hub = Hub::new(&app.cloud, &device);
    let current = hub
        .get_module(module_id)
        .await
        .map_err(|e| hub_error(app, generation, e))?;
    set_keys(app, &device, generation, current).await
}

/// Derives the module's keys for its generation, uploads them, backs the module up.
async fn set_keys(
    app: &App,
    device: &Device,
    generation: u64,
    module: Module,
) -> Result<ModuleIdentity, Error> {
    let gen_id = generation_id(&module)?;
    let master = master_key(app).await?;
    let primary = derive(app, &master, &module.module_id, &gen_id, "primary").await?;
    let secondary = derive(app, &master, &module.module_id, &gen_id, "secondary").await?;
    let primary_key = app
        .keys
        .export_derived_key(&primary)
        .await
        .map_err(Error::Keys)?;
    let secondary_key = app
        .keys
        .export_derived_key(&secondary)
        .await
        .map_err(Error::Keys)?;
    let hub = Hub::new(&app.cloud, device);
    let updated = hub
        .update_module_keys(&module.module_id, &primary_key, &secondary_key)
        .await
        .map_err(|e| hub_error(app, generation, e))?;
    let module = updated.without_keys();
    app.backups.save(device, &module);
    Ok(ModuleIdentity {
        device: device.clone(),
        module,
        key_handle: Some(primary),
    })
}

/// The module with its primary key handle: from the backup first when
/// `prefer_module_identity_cache`, else from the hub with the backup as fallback when the hub
/// cannot be reached.
pub async fn get(app: &App, module_id: &str) -> Result<ModuleIdentity, Error> {
    check_module_id(module_id)?;
    let (device, generation) = app.ready_device()?;
    let cached = || app.backups.load(&device, module_id);
    let module = match (app.config.prefer_module_identity_cache, cached()) {
        (true, Some(module)) => module,
        _ => match Hub::new(&app.cloud, &device).get_module(module_id).await {
            Ok(module) => {
                let module = module.without_keys();
                app.backups.save(&device, &module);
                module
            }
            Err(HubError::ModuleNotFound {
                hub,
                module,
                detail,
            }) => {
                app.backups.remove(&device, module_id);
                return Err(Error::Hub(HubError::ModuleNotFound {
                    hub,
                    module,
                    detail,
                }));
            }
            Err(e) if e.is_unavailable() => match cached() {
                Some(module) => {
                    log::warn!("{e}; serving module {module_id:?} from its backup");
                    module
                }
                None => return Err(Error::Hub(e)),
            },
            Err(e) => return Err(hub_error(app, generation, e)),
        },
    };
    let gen_id = generation_id(&module)?;
    let master = master_key(app).await?;
    let primary = derive(app, &master, &module.module_id, &gen_id, "primary").await?;
    Ok(ModuleIdentity {
        device,
        module,
        key_handle: Some(primary),
    })
}

/// Every module of the device on the hub (without keys); the backups are refreshed.
pub async fn list(app: &App) -> Result<Vec<ModuleIdentity>, Error> {
    let (device, generation) = app.ready_device()?;
    let modules = Hub::new(&app.cloud, &device)
        .list_modules()
        .await
        .map_err(|e| hub_error(app, generation, e))?;
    Ok(modules
        .into_iter()
        .map(|m| {
            let module = m.without_keys();
            app.backups.save(&device, &module);
            ModuleIdentity {
                device: device.clone(),
                module,
                key_handle: None,
            }
        })
        .collect())
}

pub async fn delete(app: &App, module_id: &str) -> Result<(), Error> {
    check_module_id(module_id)?;
    let (device, generation) = app.ready_device()?;
    Hub::new(&app.cloud, &device)
        .delete_module(module_id)
        .await
        .map_err(|e| hub_error(app, generation, e))?;
    app.backups.remove(&device, module_id);
    Ok(())
}

fn generation_id(module: &Module) -> Result<String, Error> {
    module.generation_id.clone().filter(|g| !g.is_empty()).ok_or_else(|| {
        Error::Internal(format!(
            "module {:?} has no generationId, so its keys cannot be derived; update it (PUT) to fetch it from the hub",
            module.module_id
        ))
    })
}

/// The master identity key's handle, creating the key on first use as upstream does.
async fn master_key(app: &App) -> Result<KeyHandle, Error> {
    match app.keys.load_key(MASTER_KEY_ID).await {
        Ok(handle) => Ok(handle),
        Err(LocalError::Refused { .. }) => app
            .keys
            .create_key_if_not_exists(MASTER_KEY_ID, &[KeyUsage::Derive, KeyUsage::Sign])
            .await
            .map_err(Error::Keys),
        Err(e) => Err(Error::Keys(e)),
    }
}

async fn derive(
    app: &App,
    master: &KeyHandle,
    module_id: &str,
    gen_id: &str,
    which: &str,
) -> Result<KeyHandle, Error> {
    let data = format!("{module_id}:{gen_id}:{which}");
    app.keys
        .create_derived_key(master, data.as_bytes())
        .await
        .map_err(Error::Keys)
}
