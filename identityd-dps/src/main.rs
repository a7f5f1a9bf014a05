//! identityd-dps: runs in the foreground with no arguments, like upstream's daemons. Config from
//! `/etc/aziot/identityd/config.toml` + `config.d` (or `AZIOT_IDENTITYD_CONFIG[_DIR]`), logs to
//! stderr at the level in `AZIOT_LOG` (default info; syslog priorities under journald), tells
//! systemd when it is ready (`Type=notify`), exits 0 on SIGTERM/SIGINT after in-flight requests.

use std::process::ExitCode;

use aziot_http::shutdown_signal;

fn main() -> ExitCode {
    aziot_http::logging::init();
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Once: stderr is the log (under systemd, the journal at priority err).
            log::error!("identityd-dps cannot start: {e}");
            aziot_http::notify::status(&format!("failed: {e}"));
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    aziot_http::return_freed_memory();
    aziot_http::raise_open_file_limit();
    let config = identityd_dps::config::load()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        // Handlers first: the socket may be seen (and the daemon told to stop) right after it is bound.
        let stop = shutdown_signal();
        identityd_dps::run(config, stop).await
    })?;
    log::info!("identityd-dps stopped");
    Ok(())
}
