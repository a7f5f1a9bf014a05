//! Where provisioning stands, as an admin needs to see it: the state, the attempt, the last DPS or
//! IoT Hub error (its cause, the endpoint, when), and when the next try is. The provisioning task
//! updates it at every step, including each retry inside one registration, so `aziot-tpm status`
//! and `reprovision` show a refused connection within seconds rather than when the registration
//! gives up. Each update is also
//!
//! * served on identityd.sock: `GET /identities/provisioning/status` (our extension; see
//!   docs/identityd-dps.md);
//! * written to `provisioning_status.json` in the homedir, so the CLI can tell what happened
//!   last even when the daemon is down or failing to start;
//! * sent to systemd as `STATUS=`, the line `systemctl status` shows.
//!
//! Nothing is locked across I/O: the report is cloned out of its mutex before it is written.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::device::Device;

/// The status file's name in the homedir.
pub const STATUS_FILE: &str = "provisioning_status.json";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Started; nothing tried yet.
    Starting,
    /// A DPS registration is under way.
    Registering,
    /// The last attempt failed; the next one is at `next_attempt_ms`.
    Waiting,
    /// The device has its identity.
    Provisioned,
    /// The daemon stopped (written on a clean stop).
    Stopped,
}

/// The last problem, as specific as it is known.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    /// A short, stable name of the kind of failure (`dps_unreachable`, `not_enrolled`, ...).
    pub cause: String,
    /// The whole message, with the fix.
    pub message: String,
    /// The URL origin or socket it concerns.
    pub endpoint: Option<String>,
    /// When it happened (milliseconds since the Unix epoch).
    pub at_ms: u64,
}

/// The settings identityd-dps runs with (its config as read at start).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InUse {
    pub global_endpoint: String,
    pub scope_id: String,
    /// The configured one, or the one derived from the EK once known.
    pub registration_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    pub state: State,
    /// Provisioning attempts since start (or since the last success).
    pub attempt: u32,
    /// When `state` began.
    pub since_ms: u64,
    pub hub: Option<String>,
    pub device_id: Option<String>,
    pub last_error: Option<Problem>,
    /// When the next DPS request is due, while waiting (a backoff, or DPS's `Retry-After`).
    pub next_attempt_ms: Option<u64>,
    pub config: InUse,
    pub pid: u32,
    pub started_ms: u64,
    pub updated_ms: u64,
}

pub struct Progress {
    report: Mutex<Report>,
    file: PathBuf,
    /// Serializes writes of the file, so an older report never lands after a newer one.
    writing: Mutex<()>,
}

impl Progress {
    pub fn new(homedir: &Path, config: InUse) -> Self {
        let now = now_ms();
        Progress {
            report: Mutex::new(Report {
                state: State::Starting,
                attempt: 0,
                since_ms: now,
                hub: None,
                device_id: None,
                last_error: None,
                next_attempt_ms: None,
                config,
                pid: std::process::id(),
                started_ms: now,
                updated_ms: now,
            }),
            file: homedir.join(STATUS_FILE),
            writing: Mutex::new(()),
        }
    }

    pub fn snapshot(&self) -> Report {
        self.lock().clone()
    }

    /// Records that provisioning attempt `attempt` starts now.
    pub fn registering(&self, attempt: u32) {
        self.update(|r| {
            r.set_state(State::Registering);
            r.attempt = attempt;
            r.next_attempt_ms = None;
        });
    }

    /// A problem inside a registration that is retried after `retry_in` (still registering).
    pub fn retrying(&self, problem: Problem, retry_in: Duration) {
        self.update(|r| {
            r.last_error = Some(problem);
            r.next_attempt_ms = Some(now_ms() + retry_in.as_millis() as u64);
        });
    }

    /// The attempt failed; the next is in `retry_in`. With `keep`, the device keeps the identity
    /// it had (a failed reprovision that restored the previous key).
    pub fn failed(&self, problem: Problem, retry_in: Option<Duration>, keep: Option<&Device>) {
        self.update(|r| {
            r.last_error = Some(problem);
            r.next_attempt_ms = retry_in.map(|d| now_ms() + d.as_millis() as u64);
            match keep {
                Some(device) => {
                    r.set_state(State::Provisioned);
                    r.hub = Some(device.hub_name.clone());
                    r.device_id = Some(device.device_id.clone());
                }
                None => {
                    r.set_state(State::Waiting);
                    r.hub = None;
                    r.device_id = None;
                }
            }
        });
    }

    pub fn provisioned(&self, device: &Device) {
        self.update(|r| {
            r.set_state(State::Provisioned);
            r.hub = Some(device.hub_name.clone());
            r.device_id = Some(device.device_id.clone());
            r.last_error = None;
            r.next_attempt_ms = None;
            r.attempt = 0;
        });
    }

    /// A problem outside a registration (IoT Hub rejected the device), kept as the last error.
    pub fn problem(&self, problem: Problem) {
        self.update(|r| r.last_error = Some(problem));
    }

    pub fn registration_id_known(&self, id: &str) {
        if self.lock().config.registration_id.as_deref() != Some(id) {
            self.update(|r| r.config.registration_id = Some(id.to_owned()));
        }
    }

    pub fn stopped(&self) {
        self.update(|r| {
            r.set_state(State::Stopped);
            r.next_attempt_ms = None;
        });
    }

    fn update(&self, change: impl FnOnce(&mut Report)) {
        let report = {
            let mut r = self.lock();
            change(&mut r);
            r.updated_ms = now_ms();
            r.clone()
        };
        aziot_http::notify::status(&report.summary(now_ms()));
        let _writing = self
            .writing
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let json = serde_json::to_vec_pretty(&report).unwrap_or_default();
        if let Err(e) = crate::state::write_atomic(&self.file, &json) {
            log::debug!("cannot write {}: {e}", self.file.display());
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Report> {
        self.report
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Report {
    fn set_state(&mut self, state: State) {
        if self.state != state {
            self.state = state;
            self.since_ms = now_ms();
        }
    }

    /// One line for systemd's `STATUS=` and 503 answers.
    pub fn summary(&self, now_ms: u64) -> String {
        let next = self
            .next_attempt_ms
            .map(|t| format!("; next try in {} s", t.saturating_sub(now_ms).div_ceil(1000)))
            .unwrap_or_default();
        let error = self
            .last_error
            .as_ref()
            .map(|p| format!(": {}", p.message))
            .unwrap_or_default();
        match self.state {
            State::Starting => "starting".into(),
            State::Registering if self.last_error.is_some() => {
                format!("registering with DPS (attempt {}), retrying{next}{error}", self.attempt)
            }
            State::Registering => format!("registering with DPS (attempt {})", self.attempt),
            State::Waiting => format!("not provisioned, attempt {} failed{next}{error}", self.attempt),
            State::Provisioned => format!(
                "provisioned: device {} on {}",
                self.device_id.as_deref().unwrap_or("?"),
                self.hub.as_deref().unwrap_or("?")
            ),
            State::Stopped => "stopped".into(),
        }
    }
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn in_use() -> InUse {
        InUse {
            global_endpoint: "https://dps.example".into(),
            scope_id: "0ne00000001".into(),
            registration_id: None,
        }
    }

    fn problem(cause: &str) -> Problem {
        Problem {
            cause: cause.into(),
            message: format!("{cause} happened"),
            endpoint: Some("https://dps.example".into()),
            at_ms: now_ms(),
        }
    }

    #[test]
    fn each_step_is_in_the_status_file_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let progress = Progress::new(dir.path(), in_use());
        let read = || -> Report {
            serde_json::from_slice(&std::fs::read(dir.path().join(STATUS_FILE)).unwrap()).unwrap()
        };
        progress.registering(1);
        assert_eq!(read().state, State::Registering);
        progress.retrying(problem("dps_unreachable"), Duration::from_secs(4));
        let r = read();
        assert_eq!(r.state, State::Registering);
        assert_eq!(r.last_error.as_ref().unwrap().cause, "dps_unreachable");
        let next = r.next_attempt_ms.unwrap().saturating_sub(now_ms());
        assert!((3_000..=4_000).contains(&next), "{next}");
        assert!(r.summary(now_ms()).contains("dps_unreachable happened"), "{}", r.summary(now_ms()));

        progress.failed(problem("not_found"), Some(Duration::from_secs(8)), None);
        assert_eq!(read().state, State::Waiting);
        assert_eq!(read(), progress.snapshot());

        let device = Device {
            hub_name: "hub".into(),
            gateway_host: "hub".into(),
            device_id: "dev".into(),
        };
        progress.provisioned(&device);
        let r = read();
        assert_eq!((r.state, &r.last_error, r.next_attempt_ms), (State::Provisioned, &None, None));
        assert_eq!(r.summary(0), "provisioned: device dev on hub");

        progress.failed(problem("dps_throttled"), Some(Duration::from_secs(30)), Some(&device));
        let r = read();
        assert_eq!(r.state, State::Provisioned, "a failed reprovision keeps the old identity");
        assert_eq!(r.device_id.as_deref(), Some("dev"));
        assert!(r.last_error.is_some());
    }
}
