//! Requests to the local daemons over their Unix sockets. A socket that is missing or refuses
//! the connection becomes exit 3 with the socket's path and what to start; a daemon that systemd
//! cannot keep running (a socket that accepts while the service behind it fails to start) is
//! exit 3 too, within about a second, naming the daemon's own last error and the command that
//! shows its log (see `unit`). Any answer, whatever its status, is the caller's to judge.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use aziot_http::{Bytes, ClientError, Method, StatusCode, UdsClient};
use serde::de::DeserializeOwned;

use crate::unit;
use crate::Failure;

/// One local daemon: what it is, where it listens and how an admin starts it.
pub struct Daemon {
    /// E.g. "the Identity Service (identityd-dps)".
    pub what: &'static str,
    /// The systemd socket unit that starts it on demand.
    pub unit: &'static str,
    client: UdsClient,
}

pub const IDENTITYD: (&str, &str) = ("the Identity Service (identityd-dps)", "aziot-identityd.socket");
pub const TPMD: (&str, &str) = ("the TPM Service (keyd-tpm)", "aziot-tpmd.socket");

/// A complete answer.
pub struct Answer {
    pub status: StatusCode,
    pub body: Bytes,
}

impl Answer {
    /// The body as `T`, or a failure that names `what` was expected.
    pub fn json<T: DeserializeOwned>(&self, daemon: &Daemon, what: &str) -> Result<T, Failure> {
        serde_json::from_slice(&self.body)
            .map_err(|e| Failure::failed(format!("{}'s answer is not {what}: {e}", daemon.what)))
    }

    /// The `{"message"}` of an error answer, else the body as text.
    pub fn message(&self) -> String {
        message(&self.body)
    }
}

impl Daemon {
    pub fn new((what, unit): (&'static str, &'static str), socket: impl Into<PathBuf>, timeout: Duration) -> Self {
        Daemon { what, unit, client: UdsClient::new(socket).with_timeout(timeout) }
    }

    pub fn socket(&self) -> &Path {
        self.client.socket_path()
    }

    /// Sends one request. Connection failures are [`crate::exit::UNREACHABLE`] failures.
    pub async fn call(&self, method: Method, path_and_query: &str, body: Option<serde_json::Value>) -> Result<Answer, Failure> {
        let body = body.map(|v| Bytes::from(v.to_string()));
        let request = self.client.request(method, path_and_query, body);
        tokio::pin!(request);
        // While the request waits, look at the service every half second: a start that fails
        // leaves the connection pending in systemd's socket until the start limit.
        let mut watch = tokio::time::interval_at(
            tokio::time::Instant::now() + Duration::from_millis(700),
            Duration::from_millis(500),
        );
        let result = loop {
            tokio::select! {
                result = &mut request => break result,
                _ = watch.tick() => {
                    if let Some(failure) = self.not_running() {
                        return Err(failure);
                    }
                }
            }
        };
        match result {
            Ok((status, body)) => Ok(Answer { status, body }),
            Err(e) => Err(self.not_running().unwrap_or_else(|| match e {
                ClientError::Connect { source, .. } => Failure::unreachable(self.unreachable(&source)),
                e @ ClientError::Timeout { .. } => Failure::failed(format!(
                    "{} did not answer: {e}; see its log ({})",
                    self.what,
                    unit::journal_hint(&self.service())
                )),
                // The connection closed without an answer: the daemon stopped or crashed.
                e @ ClientError::Http { .. } => Failure::unreachable(format!(
                    "{} closed the connection without answering ({e}); see its log ({})",
                    self.what,
                    unit::journal_hint(&self.service())
                )),
                e => Failure::failed(format!("{}: {e}", self.what)),
            })),
        }
    }

    /// When systemd says the service behind the socket is failing to start: exit 3 with the
    /// daemon's last error. None when it runs, or systemd does not manage it.
    pub fn not_running(&self) -> Option<Failure> {
        let service = self.systemd_service()?;
        let state = unit::state(&service).filter(unit::UnitState::failing)?;
        Some(Failure::unreachable(self.failing_message(&state)))
    }

    /// "keyd-tpm is failing to start: ... Its last error: ..." with where to read more.
    pub fn failing_message(&self, state: &unit::UnitState) -> String {
        let service = &state.unit;
        let error = unit::last_error(service).or_else(|| {
            state
                .status_text
                .strip_prefix("failed: ")
                .map(str::to_owned)
        });
        let error = match error {
            Some(e) => format!("Its last error: {e}"),
            None => "Its last error is in its log (run as root to see it here)".to_owned(),
        };
        format!(
            "{} is not running: {service} {}. {error}\n  Log: {}; {}",
            self.what,
            state.describe(),
            unit::journal_hint(service),
            unit::restart_hint(state, self.unit)
        )
    }

    /// Why the socket could not be reached, and the fix.
    pub fn unreachable(&self, e: &std::io::Error) -> String {
        let socket = self.socket().display();
        match e.kind() {
            std::io::ErrorKind::PermissionDenied => format!(
                "cannot reach {} at {socket}: permission denied; run as root, or as a member of the socket's group",
                self.what
            ),
            _ => format!(
                "cannot reach {} at {socket}: {e}; is it running? Start it with `systemctl start {}` (or point to its socket, see --help)",
                self.what, self.unit
            ),
        }
    }

    /// The service the socket starts: systemd's `Triggers=` of the socket unit (keyd-tpm's
    /// aziot-keyd.service behind aziot-tpmd.socket), else the socket's own name.
    pub fn service(&self) -> String {
        self.systemd_service().unwrap_or_else(|| self.unit.replace(".socket", ".service"))
    }

    /// The service behind the socket unit, if that unit is loaded and listens on the socket
    /// this client uses (so a test's private socket is never judged by the machine's units).
    fn systemd_service(&self) -> Option<String> {
        let out = std::process::Command::new("systemctl")
            .args(["show", "-p", "Triggers,Listen", self.unit])
            .stdin(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .output()
            .ok()
            .filter(|o| o.status.success())?;
        let text = String::from_utf8_lossy(&out.stdout);
        let socket = self.socket().to_string_lossy();
        let listens = text
            .lines()
            .filter_map(|l| l.strip_prefix("Listen="))
            .any(|l| l.split_whitespace().next() == Some(&*socket));
        if !listens {
            return None;
        }
        text.lines()
            .filter_map(|l| l.strip_prefix("Triggers="))
            .flat_map(str::split_whitespace)
            .find(|u| u.ends_with(".service"))
            .map(str::to_owned)
    }
}

/// The `{"message"}` of an upstream-style error body, else the body as text.
pub fn message(body: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["message"].as_str().map(str::to_owned))
        .unwrap_or_else(|| String::from_utf8_lossy(body).trim().to_owned())
}

/// Runs `future` on a current-thread runtime: the CLI makes a few requests, one at a time.
pub fn block_on<F: Future>(future: F) -> Result<F::Output, Failure> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::failed(format!("cannot start the async runtime: {e}")))?;
    Ok(runtime.block_on(future))
}

/// A socket path from a config endpoint (`unix:///path`); other schemes (systemd `fd://`) have
/// no path a client could use.
pub fn endpoint_path(endpoint: &str) -> Option<PathBuf> {
    match endpoint.parse::<aziot_http::Endpoint>() {
        Ok(aziot_http::Endpoint::Unix(path)) => Some(path),
        _ => None,
    }
}
