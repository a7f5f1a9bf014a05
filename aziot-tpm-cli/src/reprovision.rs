//! `aziot-tpm reprovision`: asks identityd to register with DPS again now (`POST
//! /identities/device/reprovision`, what `aziotctl system reprovision` sends), shows how long it
//! takes while it waits and each DPS error identityd-dps meets meanwhile (its provisioning
//! status, polled every second), then the new status and whether the hub or device ID changed.
//! The wait has a bound (`--timeout`, said on the first line); past it the command ends and
//! identityd-dps goes on in the background.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use aziot_http::{Method, StatusCode};
use serde::Serialize;
use serde_json::json;

use crate::daemon::{self, block_on, Daemon};
use crate::exit::print_json;
use crate::local::{Local, LocalArgs};
use crate::status::{self, shorten_base64, Status, IDENTITYD_API};
use crate::{Failure, Output};

/// Default bound of the wait: a registration that works takes seconds; one that does not
/// shows its error within the first seconds.
pub const DEFAULT_TIMEOUT: u64 = 120;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    local: LocalArgs,
    /// Seconds to wait for the registration. Past them the command ends (exit 3 if DPS could
    /// not be reached, else 1) and identityd-dps goes on trying in the background, within its
    /// own provisioning_timeout_sec (600 by default) per registration.
    #[arg(long, value_name = "SECONDS", default_value_t = DEFAULT_TIMEOUT)]
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
    // The request itself may take as long as identityd-dps's bound; ours is applied below.
    let local = args.local.resolve(Duration::from_secs(args.timeout.max(1) + 600));
    let text = matches!(args.output, Output::Text);
    let bound = Duration::from_secs(args.timeout.max(1));
    let result = block_on(async {
        let before = status::gather(&local).await;
        let elapsed = reprovision(&local, text, bound).await?;
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

/// Sends the request and waits for identityd's answer (at most `bound`), showing on stderr the
/// time spent and each error identityd-dps reports meanwhile.
async fn reprovision(local: &Local, progress: bool, bound: Duration) -> Result<Duration, Failure> {
    let started = Instant::now();
    if progress {
        eprintln!(
            "Reprovisioning: {} at {} registers with DPS again (waiting up to {} s; --timeout to change)...",
            local.identityd.what,
            local.identityd.socket().display(),
            bound.as_secs()
        );
    }
    let path = format!("/identities/device/reprovision?{IDENTITYD_API}");
    let call = local.identityd.call(Method::POST, &path, Some(json!({"type": "aziot"})));
    tokio::pin!(call);
    // Its own connection: the one above is busy until identityd answers.
    let watcher = Daemon::new(daemon::IDENTITYD, local.identityd.socket(), Duration::from_secs(5));
    let tty = std::io::stderr().is_terminal();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let deadline = tokio::time::sleep(bound);
    tokio::pin!(deadline);
    let mut seen_error: Option<u64> = None;
    let mut last_message = String::new();
    let mut last = Status::default();
    // Without a terminal to redraw on, one line every 10 s.
    let mut next_line = 10;
    let answer = loop {
        tokio::select! {
            answer = &mut call => break answer?,
            () = &mut deadline => {
                if progress && tty {
                    eprintln!();
                }
                return Err(gave_up(bound, &last));
            }
            _ = tick.tick() => {
                let secs = started.elapsed().as_secs();
                let mut now = Status::default();
                status::provisioning_report(&watcher, &mut now).await;
                if let Some(e) = &now.last_error {
                    let at = e.at_time.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
                    if progress && seen_error != Some(at) && e.at_time >= std::time::SystemTime::now() - started.elapsed() {
                        seen_error = Some(at);
                        if tty {
                            eprint!("\r");
                        }
                        if e.message == last_message {
                            eprintln!("  {secs:>3} s: the same error again ({})", e.cause);
                        } else {
                            eprintln!("  {secs:>3} s: {} ({})", shorten_base64(&e.message), e.cause);
                            last_message = e.message.clone();
                        }
                    }
                }
                if now.provisioning_state.is_some() {
                    last = now;
                }
                let next = last
                    .next_attempt_time
                    .and_then(|t| t.duration_since(std::time::SystemTime::now()).ok())
                    .map(|d| format!(", next try in {} s", d.as_secs() + 1))
                    .unwrap_or_default();
                if progress && tty {
                    eprint!("\r  waiting for DPS: {secs} s{next}   ");
                    let _ = std::io::stderr().flush();
                } else if progress && secs >= next_line {
                    eprintln!("  still waiting for DPS: {secs} s{next}");
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
            shorten_base64(&answer.message())
        ))),
    }
}

/// The wait is over and identityd-dps is still at it: what it last met, and when it tries next.
fn gave_up(bound: Duration, last: &Status) -> Failure {
    let mut message = format!(
        "gave up waiting after {} s (--timeout); identityd-dps goes on registering in the background",
        bound.as_secs()
    );
    if let Some(e) = &last.last_error {
        message.push_str(&format!(
            ".\nLast error ({}, at {}): {}",
            e.cause,
            e.at,
            shorten_base64(&e.message)
        ));
    }
    if let Some(next) = &last.next_attempt {
        message.push_str(&format!("\nNext try: {next}"));
    }
    message.push_str("\n`aziot-tpm status` shows how it goes.");
    let unreachable = last.last_error.as_ref().is_some_and(|e| {
        matches!(e.cause.as_str(), "dps_unreachable" | "dps_timeout" | "dps_tls" | "dps_connection_dropped")
    });
    if unreachable {
        Failure::unreachable(message)
    } else {
        Failure::failed(message)
    }
}
