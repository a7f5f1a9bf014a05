//! `aziot-tpm reprovision`: asks identityd to register with DPS again now (`POST
//! /identities/device/reprovision`, what `aziotctl system reprovision` sends), shows how long it
//! takes while it waits, then the new status and whether the hub or device ID changed.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use aziot_http::{Method, StatusCode};
use serde::Serialize;
use serde_json::json;

use crate::daemon::block_on;
use crate::exit::print_json;
use crate::local::{Local, LocalArgs};
use crate::status::{self, Status, IDENTITYD_API};
use crate::{Failure, Output};

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    local: LocalArgs,
    /// Seconds to wait for the registration (identityd-dps gives up after its own
    /// provisioning_timeout_sec, 600 by default).
    #[arg(long, value_name = "SECONDS", default_value_t = 660)]
    timeout: u64,
    /// Output format: text for people, json for scripts.
    #[arg(short, long, value_enum, default_value_t)]
    output: Output,
}

#[derive(Serialize)]
struct Reprovisioned {
    elapsed_ms: u128,
    previous_hub: Option<String>,
    previous_device_id: Option<String>,
    status: Status,
}

pub fn run(args: Args) -> Result<(), Failure> {
    let local = args.local.resolve(Duration::from_secs(args.timeout.max(1)));
    let text = matches!(args.output, Output::Text);
    let result = block_on(async {
        let before = status::gather(&local).await;
        let elapsed = reprovision(&local, text).await?;
        Ok::<_, Failure>((before, elapsed, status::gather(&local).await))
    })??;
    let (before, elapsed, after) = result;
    let report = Reprovisioned {
        elapsed_ms: elapsed.as_millis(),
        previous_hub: before.hub,
        previous_device_id: before.device_id,
        status: after,
    };
    match args.output {
        Output::Json => print_json(&report),
        Output::Text => {
            println!("Reprovisioned in {:.1} s.", elapsed.as_secs_f64());
            let changed = |old: &Option<String>, new: &Option<String>| match (old, new) {
                (Some(o), Some(n)) if o != n => format!("changed from {o} to {n}"),
                (Some(_), Some(_)) => "unchanged".to_owned(),
                _ => "(was not known before)".to_owned(),
            };
            println!("IoT Hub {}; device ID {}.", changed(&report.previous_hub, &report.status.hub),
                changed(&report.previous_device_id, &report.status.device_id));
            status::print_text(&report.status);
        }
    }
    report.status.outcome()
}

/// Sends the request and waits for identityd's answer, showing the time spent on stderr.
async fn reprovision(local: &Local, progress: bool) -> Result<Duration, Failure> {
    let started = Instant::now();
    if progress {
        eprintln!(
            "Reprovisioning: {} at {} registers with DPS again...",
            local.identityd.what,
            local.identityd.socket().display()
        );
    }
    let path = format!("/identities/device/reprovision?{IDENTITYD_API}");
    let call = local.identityd.call(Method::POST, &path, Some(json!({"type": "aziot"})));
    tokio::pin!(call);
    let tty = std::io::stderr().is_terminal();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    // Without a terminal to redraw on, one line every 10 s.
    let mut next_line = 10;
    let answer = loop {
        tokio::select! {
            answer = &mut call => break answer?,
            _ = tick.tick() => {
                let secs = started.elapsed().as_secs();
                if progress && tty {
                    eprint!("\r  waiting for DPS: {secs} s ");
                    let _ = std::io::stderr().flush();
                } else if progress && secs >= next_line {
                    eprintln!("  still waiting for DPS: {secs} s");
                    next_line = secs + 10;
                }
            }
        }
    };
    if progress && tty {
        eprintln!();
    }
    let elapsed = started.elapsed();
    match answer.status {
        s if s.is_success() => Ok(elapsed),
        StatusCode::UNAUTHORIZED => Err(Failure::failed(format!(
            "identityd refused to reprovision ({}): only root and identityd [[principal]]s without idtype may; \
             run it as root (sudo aziot-tpm reprovision)",
            answer.message()
        ))),
        other => Err(Failure::failed(format!(
            "reprovisioning failed after {:.1} s ({other}): {}",
            elapsed.as_secs_f64(),
            answer.message()
        ))),
    }
}
