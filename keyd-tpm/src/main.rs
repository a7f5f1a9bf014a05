//! keyd-tpm: runs in the foreground with no arguments, like upstream's daemons, and serves both
//! the Keys Service (keyd.sock) and the TPM Service (tpmd.sock) on one TPM owner.
//!
//! Config: tpmd's from `/etc/aziot/tpmd/config.toml` + `config.d` (or `AZIOT_TPMD_CONFIG[_DIR]`),
//! which alone sets the TPM (TCTI, hierarchy passwords); keyd's from `/etc/aziot/keyd/...` (or
//! `AZIOT_KEYD_CONFIG[_DIR]`) for keys, principals and its socket. Logs go to stderr at the
//! level in `AZIOT_LOG` (default info; syslog priorities under journald); libtss2's own log is off
//! unless `TSS2_LOG` asks for it. It tells systemd when both sockets listen on an open TPM
//! (`Type=notify`). SIGTERM/SIGINT stop both sockets, let in-flight requests finish, and exit 0.
//!
//! Started as root (the packaged unit does, to read both configs), it becomes the user named by
//! `AZIOT_KEYD_TPM_USER` right after reading them; see `privileges`.

mod privileges;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use aziot_http::{listen, serve, shutdown_signal, Endpoint, ServerOptions, SystemdSockets};
use keyd_tpm::config::TpmdConfig;
use keyd_tpm::keyd::{KeyService, KeydConfig};
use keyd_tpm::tpm::TpmHandle;
use keyd_tpm::tpmd::TpmService;
use tokio::sync::watch;

/// systemd `FileDescriptorName=` of the TPM Service socket in our units.
const TPMD_FD_NAME: &str = "aziot-tpmd.socket";
/// systemd `FileDescriptorName=` of the Keys Service socket in our units.
const KEYD_FD_NAME: &str = "aziot-keyd.socket";
/// Groups of the sockets' clients, as upstream's socket units set them; used when keyd-tpm
/// binds the sockets itself. The two APIs must not share one: a Keys Service client may not
/// sign as the device.
const TPMD_GROUP: &str = "aziottpm";
const KEYD_GROUP: &str = "aziotks";

fn main() -> ExitCode {
    let started = Instant::now();
    aziot_http::logging::init();
    keyd_tpm::tpm::quiet_tss_unless_asked();
    match run(started) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Once: stderr is the log (under systemd, the journal at priority err).
            log::error!("keyd-tpm cannot start: {e}");
            aziot_http::notify::status(&format!("failed: {e}"));
            ExitCode::FAILURE
        }
    }
}

fn run(started: Instant) -> Result<(), Box<dyn std::error::Error>> {
    aziot_http::return_freed_memory();
    aziot_http::raise_open_file_limit();
    let tpmd_config: TpmdConfig = aziot_config::load("tpmd")?;
    let keyd_config: KeydConfig = aziot_config::load("keyd")?;
    // Nothing below needs more than the service user: the TPM and every file are its own.
    privileges::drop_from_env()?;
    let owner = TpmHandle::start(tpmd_config.tpm_settings())?;
    let tpm = owner.clone();

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        // Handlers first: a client may see a socket, and stop us, right after it is bound.
        let stop_signal = shutdown_signal();
        let mut systemd = SystemdSockets::from_env()?;
        // Systemd sockets are taken by FileDescriptorName. A single passed socket goes to the
        // first taker (tpmd) unless systemd named it after the other standard unit, so a unit
        // that passes only aziot-keyd.socket gets the Keys Service on it and tpmd.sock bound here.
        let tpmd_endpoint: Endpoint = tpmd_config.endpoints.aziot_tpmd.parse()?;
        let tpmd_listener = listen(&tpmd_endpoint, &mut systemd, TPMD_FD_NAME, TPMD_GROUP)?;
        let keyd_endpoint: Endpoint = keyd_config.endpoints.aziot_keyd.parse()?;
        let keyd_listener = listen(&keyd_endpoint, &mut systemd, KEYD_FD_NAME, KEYD_GROUP)?;
        let listening = format!(
            "TPM Service API on {}, Keys Service API on {}",
            tpmd_config.endpoints.aziot_tpmd, keyd_config.endpoints.aziot_keyd
        );
        log::info!("{listening} (ready {} ms after start)", started.elapsed().as_millis());
        aziot_http::notify::ready(&listening);

        let (stop_tx, stop_rx) = watch::channel(false);
        tokio::spawn(async move {
            stop_signal.await;
            stop_tx.send_replace(true);
        });
        let options = |max_requests: usize| ServerOptions {
            max_requests_per_uid: max_requests.max(1),
            ..ServerOptions::default()
        };
        let tpmd = serve(
            tpmd_listener,
            Arc::new(TpmService::new(tpm.clone())),
            options(tpmd_config.max_requests),
            stopped(stop_rx.clone()),
        );
        let keyd = serve(
            keyd_listener,
            Arc::new(KeyService::new(tpm, &keyd_config)),
            options(keyd_config.max_requests),
            stopped(stop_rx),
        );
        tokio::join!(tpmd, keyd);
        Ok::<_, Box<dyn std::error::Error>>(())
    })?;
    aziot_http::notify::stopping();
    // Wait for the TPM owner to flush what it loaded before the process exits.
    owner.shutdown();
    log::info!("keyd-tpm stopped");
    Ok(())
}

/// Resolves when the shutdown signal has been received (or its sender is gone).
async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|stopping| *stopping).await;
}
