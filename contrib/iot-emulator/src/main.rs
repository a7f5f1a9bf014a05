//! The `iot-emulator` binary: parses the command line, starts the emulator, prints ONE JSON
//! ready line on stdout (what scripts and tests parse), logs to stderr, and exits 0 on SIGTERM
//! or Ctrl-C after letting in-flight requests finish.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use iot_emulator::faults::FaultRule;
use iot_emulator::Config;

/// A local DPS + IoT Hub emulator that performs real TPM attestation (HTTPS on 127.0.0.1).
#[derive(Debug, Parser)]
#[command(name = "iot-emulator", version)]
struct Cli {
    /// Where the CA, certificates, ports, keys and state are kept (created if missing).
    #[arg(long, env = "EMULATOR_DATA_DIR")]
    data_dir: PathBuf,
    /// DPS ID scope of a new data dir.
    #[arg(long, default_value = "0ne00000001")]
    id_scope: String,
    /// Number of emulated hubs (hubs are added to a data dir, never removed).
    #[arg(long, default_value_t = 2)]
    hubs: usize,
    /// Port for a new hub (repeat, in order); 0 or missing = a free port.
    #[arg(long = "hub-port")]
    hub_ports: Vec<u16>,
    /// DPS port; default: the data dir's, or a free one on first start.
    #[arg(long)]
    dps_port: Option<u16>,
    /// Admin API port; default: the data dir's, or a free one on first start.
    #[arg(long)]
    admin_port: Option<u16>,
    /// Latency of hub INDEX (0-based) for geoLatency allocation, as INDEX=MS (repeat).
    #[arg(long = "hub-latency", value_parser = parse_latency)]
    hub_latency: Vec<(usize, u64)>,
    /// How long registration operations stay "assigning", in milliseconds.
    #[arg(long, default_value_t = 1500)]
    assigning_ms: u64,
    /// Retry-After seconds on 202 answers.
    #[arg(long, default_value_t = 1)]
    retry_after: u64,
    /// Fault rule ENDPOINT=KIND[,count=N][,prob=P][,seed=S][,retry_after=S][,delay_ms=MS] (repeat).
    #[arg(long = "fault", value_parser = parse_fault)]
    faults: Vec<FaultRule>,
    /// Extra CA bundle (PEM) trusted when calling custom-allocation webhooks (repeat).
    #[arg(long = "trust-ca")]
    trust_ca: Vec<PathBuf>,
    /// Timeout for custom-allocation webhook calls, in milliseconds.
    #[arg(long, default_value_t = 10_000)]
    webhook_timeout_ms: u64,
}

fn parse_latency(s: &str) -> Result<(usize, u64), String> {
    let (i, ms) = s.split_once('=').ok_or("expected INDEX=MS")?;
    Ok((
        i.trim().parse().map_err(|_| "INDEX must be a number")?,
        ms.trim().parse().map_err(|_| "MS must be a number")?,
    ))
}

fn parse_fault(s: &str) -> Result<FaultRule, String> {
    FaultRule::parse(s).map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    let filter = std::env::var("EMULATOR_LOG")
        .or_else(|_| std::env::var("AZIOT_LOG"))
        .unwrap_or_else(|_| "info".into());
    env_logger::Builder::new()
        .parse_filters(&filter)
        .target(env_logger::Target::Stderr)
        .format_timestamp_millis()
        .init();
    let cli = Cli::parse();
    let mut config = Config::new(cli.data_dir);
    config.id_scope = cli.id_scope;
    config.hubs = cli.hubs;
    config.hub_ports = cli.hub_ports;
    config.dps_port = cli.dps_port;
    config.admin_port = cli.admin_port;
    config.hub_latency_ms = cli.hub_latency.into_iter().collect::<BTreeMap<_, _>>();
    config.assigning = Duration::from_millis(cli.assigning_ms);
    config.retry_after = cli.retry_after;
    config.faults = cli.faults;
    config.trust_ca = cli.trust_ca;
    config.webhook_timeout = Duration::from_millis(cli.webhook_timeout_ms);

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("iot-emulator: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run(config))
}

async fn run(config: Config) -> ExitCode {
    let running = match iot_emulator::start(config).await {
        Ok(r) => r,
        Err(e) => {
            log::error!("cannot start: {e}");
            eprintln!("iot-emulator: {e}");
            return ExitCode::FAILURE;
        }
    };
    let line = serde_json::to_string(&running.ready).unwrap_or_default();
    let mut stdout = std::io::stdout().lock();
    if writeln!(stdout, "{line}")
        .and_then(|_| stdout.flush())
        .is_err()
    {
        log::warn!("could not write the ready line to stdout");
    }
    drop(stdout);
    log::info!(
        "ready: DPS {} (ID scope {}), hubs {:?}, admin {}, CA {}",
        running.ready.dps_endpoint,
        running.ready.id_scope,
        running.ready.hubs,
        running.ready.admin.endpoint,
        running.ready.ca_pem.display()
    );
    wait_for_signal().await;
    log::info!("shutting down");
    running.shutdown(Duration::from_secs(10)).await;
    ExitCode::SUCCESS
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
