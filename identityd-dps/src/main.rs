//! identityd-dps: runs in the foreground with no arguments, like upstream's daemons. Config from
//! `/etc/aziot/identityd/config.toml` + `config.d` (or `AZIOT_IDENTITYD_CONFIG[_DIR]`), logs to
//! stderr at the level in `AZIOT_LOG` (default info), exits 0 on SIGTERM/SIGINT after in-flight
//! requests.

use std::process::ExitCode;

use aziot_http::shutdown_signal;

fn main() -> ExitCode {
    env_logger::Builder::new()
        .parse_filters(&std::env::var("AZIOT_LOG").unwrap_or_else(|_| "info".into()))
        .format_timestamp_millis()
        .init();
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("{e}");
            eprintln!("identityd-dps: error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let config = identityd_dps::config::load()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(identityd_dps::run(config, shutdown_signal()))?;
    log::info!("identityd-dps stopped");
    Ok(())
}
