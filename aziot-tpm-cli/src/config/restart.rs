//! Restarting the services the way `aziotctl config apply` does: stop the four services, start
//! the four sockets, then start identityd, which brings up the others through their sockets.
//! Then keyd is started too: both run as `Type=notify` units, so each `start` returns once the
//! daemon said it is ready (config read, TPM open, sockets listening) or failed, and
//! [`readiness`] reports each with its status line or its own last error. Units that are not
//! installed (upstream's certd on a gateway without IoT Edge) are skipped.

use std::ffi::OsStr;
use std::process::Command;
use std::time::Instant;

use serde::Serialize;

use super::error::ApplyError;
use crate::unit;

/// identityd first: it is the service that is started last, the one the others follow.
const SERVICES: [&str; 4] = ["aziot-identityd", "aziot-keyd", "aziot-certd", "aziot-tpmd"];

/// systemctl's exit status for a unit that is not loaded (LSB "not installed").
const NOT_INSTALLED: i32 = 5;

#[derive(Debug, Serialize)]
pub struct Step {
    pub action: &'static str,
    pub unit: String,
    /// `ok`, `not installed` or `failed`.
    pub result: &'static str,
    pub ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// The steps, in upstream's order (the tests check it against a stand-in systemctl).
fn plan() -> Vec<(&'static str, String)> {
    let mut steps: Vec<(&str, String)> = SERVICES
        .iter()
        .map(|s| ("stop", format!("{s}.service")))
        .collect();
    steps.extend(SERVICES.iter().map(|s| ("start", format!("{s}.socket"))));
    steps.push(("start", format!("{}.service", SERVICES[0])));
    // Not started by upstream's config apply (the socket would start it on the first request):
    // started here so that a keyd that cannot start fails now, with its error.
    steps.push(("start", "aziot-keyd.service".to_owned()));
    steps
}

/// The daemons whose readiness is reported.
const DAEMONS: [&str; 2] = ["aziot-keyd.service", "aziot-identityd.service"];

/// How a daemon came up.
#[derive(Debug, Serialize)]
pub struct Ready {
    pub unit: String,
    /// `ready` (it told systemd so), `failed`, or `unknown` (systemd does not say).
    pub state: &'static str,
    /// Its `STATUS=` line: what it is doing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// Why it did not start: its own last error, else systemctl's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Each daemon's state after `steps` ran.
pub fn readiness(steps: &[Step]) -> Vec<Ready> {
    DAEMONS
        .iter()
        .filter_map(|&daemon| {
            let start = steps.iter().rev().find(|s| s.action == "start" && s.unit == daemon)?;
            let state = unit::state(daemon);
            let status = state.as_ref().map(|s| s.status_text.clone()).filter(|t| !t.is_empty());
            Some(match start.result {
                "not installed" => return None,
                "failed" => Ready {
                    unit: daemon.to_owned(),
                    state: "failed",
                    status,
                    error: unit::last_error(daemon).or_else(|| start.message.clone()),
                },
                _ => Ready {
                    unit: daemon.to_owned(),
                    state: if state.as_ref().is_some_and(|s| s.active == "active") { "ready" } else { "unknown" },
                    status,
                    error: None,
                },
            })
        })
        .collect()
}

/// Runs every step with `systemctl` (a step that fails does not stop the others, as upstream).
pub fn restart(systemctl: &OsStr) -> Result<Vec<Step>, ApplyError> {
    let mut done = Vec::new();
    for (action, unit) in plan() {
        let started = Instant::now();
        let out = Command::new(systemctl)
            .args(["--no-ask-password", action, &unit])
            .output()
            .map_err(ApplyError::Systemctl)?;
        let ms = started.elapsed().as_millis() as u64;
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_owned();
        let (result, message) = match out.status.code() {
            Some(0) => ("ok", None),
            Some(NOT_INSTALLED) => ("not installed", None),
            _ => (
                "failed",
                Some(if stderr.is_empty() {
                    out.status.to_string()
                } else {
                    stderr
                }),
            ),
        };
        done.push(Step {
            action,
            unit,
            result,
            ms,
            message,
        });
    }
    Ok(done)
}
