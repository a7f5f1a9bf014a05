//! keyd-tpm: runs in the foreground with no arguments, like upstream's daemons. Config from
//! `/etc/aziot/tpmd/config.toml` + `config.d` (or `AZIOT_TPMD_CONFIG[_DIR]`), logs to stderr at
//! the level in `AZIOT_LOG` (default info), exits 0 on SIGTERM/SIGINT after in-flight requests.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use aziot_http::{listen, serve, Endpoint, ServerOptions, SystemdSockets};
use keyd_tpm::config::TpmdConfig;
use keyd_tpm::tpm::TpmHandle;
use keyd_tpm::tpmd::TpmService;

/// systemd `FileDescriptorName=` of the TPM Service socket in our units.
const TPMD_FD_NAME: &str = "aziot-tpmd.socket";

fn main() -> ExitCode {
    let started = Instant::now();
    init_logging();
    match run(started) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("{e}");
            eprintln!("keyd-tpm: error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging() {
    env_logger::Builder::new()
        .parse_filters(&std::env::var("AZIOT_LOG").unwrap_or_else(|_| "info".into()))
        .format_timestamp_millis()
        .init();
}

fn run(started: Instant) -> Result<(), Box<dyn std::error::Error>> {
    let config: TpmdConfig = aziot_config::load("tpmd")?;
    let tpm = TpmHandle::start(config.tpm_settings())?;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let mut systemd = SystemdSockets::from_env()?;
        let endpoint: Endpoint = config.endpoints.aziot_tpmd.parse()?;
        let listener = listen(&endpoint, &mut systemd, TPMD_FD_NAME)?;
        log::info!(
            "TPM Service API listening on {} (ready {} ms after start)",
            config.endpoints.aziot_tpmd,
            started.elapsed().as_millis()
        );
        let options = ServerOptions {
            max_requests_per_uid: config.max_requests.max(1),
            ..ServerOptions::default()
        };
        serve(listener, Arc::new(TpmService::new(tpm)), options, shutdown_signal()).await;
        log::info!("keyd-tpm stopped");
        Ok(())
    })
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        log::error!("cannot install signal handlers; stop the daemon with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => log::info!("SIGTERM received, shutting down"),
        _ = int.recv() => log::info!("SIGINT received, shutting down"),
    }
}
