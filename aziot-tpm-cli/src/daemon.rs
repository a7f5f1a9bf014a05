//! Requests to the local daemons over their Unix sockets. A socket that is missing or refuses
//! the connection becomes exit 3 with the socket's path and what to start; any answer, whatever
//! its status, is the caller's to judge.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use aziot_http::{Bytes, ClientError, Method, StatusCode, UdsClient};
use serde::de::DeserializeOwned;

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
        match self.client.request(method, path_and_query, body).await {
            Ok((status, body)) => Ok(Answer { status, body }),
            Err(ClientError::Connect { source, .. }) => Err(Failure::unreachable(self.unreachable(&source))),
            Err(e @ ClientError::Timeout { .. }) => {
                Err(Failure::failed(format!("{} did not answer: {e}; see its log (journalctl -u {})", self.what, self.service())))
            }
            Err(e) => Err(Failure::failed(format!("{}: {e}", self.what))),
        }
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

    fn service(&self) -> String {
        self.unit.replace(".socket", ".service")
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
