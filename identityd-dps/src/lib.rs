//! identityd-dps: provisions the device through DPS with TPM attestation and serves the aziot
//! Identity Service API (identityd.sock) that aziot-edged, edgeAgent and edgeHub use, wire-
//! compatible with upstream aziot-identityd. It never touches the TPM: the DPS auth key lives in
//! the TPM Service (keyd-tpm or upstream aziot-tpmd), module keys in the Keys Service.
//!
//! Layout: `config` reads upstream's files; `dps` and `hub` talk to the cloud with `sas` tokens
//! signed through `clients`; `state` keeps upstream's backup files; `provisioning` is the one task
//! that registers; `identities` and `reconcile` manage module identities; `api` serves the routes
//! with `auth` deciding who may do what, and `error` is where failures become statuses.

pub mod api;
pub mod app;
pub mod auth;
pub mod backoff;
pub mod clients;
pub mod cloud;
pub mod config;
pub mod device;
pub mod dps;
pub mod error;
pub mod hub;
pub mod identities;
pub mod progress;
pub mod provisioning;
pub mod reconcile;
pub mod sas;
pub mod state;

use std::future::Future;
use std::os::unix::fs::DirBuilderExt;
use std::sync::Arc;

use aziot_http::{listen, serve, ServerOptions, SystemdSockets};

/// systemd `FileDescriptorName=` of upstream's identityd socket unit.
const FD_NAME: &str = "aziot-identityd.socket";
/// The group of identityd.sock's clients (upstream's socket unit), when we bind it ourselves.
const SOCKET_GROUP: &str = "aziotid";

/// Starts provisioning in the background and serves the API until `shutdown` resolves.
pub async fn run(
    config: config::Config,
    shutdown: impl Future<Output = ()>,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    // Upstream's packaging makes the homedir 0700; do the same when we create it.
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&config.homedir)
        .map_err(|e| {
            format!(
                "cannot create homedir {}: {e}; create it or fix `homedir`",
                config.homedir.display()
            )
        })?;
    let mut systemd = SystemdSockets::from_env()?;
    let listener = listen(&config.endpoints.identityd, &mut systemd, FD_NAME, SOCKET_GROUP)?;
    let options = ServerOptions {
        max_requests_per_uid: config.max_requests,
        ..ServerOptions::default()
    };
    let endpoint = config.endpoints.identityd.clone();
    let (app, triggers) = app::App::new(config)?;
    let provisioning = tokio::spawn(provisioning::run(Arc::clone(&app), triggers));
    log::info!("Identity Service API listening on {endpoint}");
    aziot_http::notify::ready(&format!("Identity Service API on {endpoint}; provisioning through DPS"));
    serve(listener, Arc::new(api::Api::new(Arc::clone(&app))), options, shutdown).await;
    aziot_http::notify::stopping();
    provisioning.abort();
    app.progress.stopped();
    Ok(())
}
