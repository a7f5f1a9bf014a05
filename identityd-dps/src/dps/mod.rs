//! DPS registration with TPM attestation, over HTTPS:
//!
//! 1. `PUT register` with the EK and SRK, no credentials → `401 {authenticationKey}`: a challenge
//!    HMAC key that only this TPM can import (ActivateCredential + Import in the TPM Service).
//! 2. `PUT register` again with a SAS token signed by that key → `202 {operationId}`.
//! 3. Poll the operation, each time with a freshly signed token, waiting what `Retry-After` says,
//!    until it is `assigned` → import `registrationState.tpm.authenticationKey`, the device's IoT
//!    Hub key, which replaces the challenge key.
//!
//! Throttling (429), server errors (5xx) and network errors are retried with exponential backoff
//! and jitter (or the server's `Retry-After`), all within one overall bound. Every DPS status has
//! its own error with the fix. Restoring the previous key after a failure is the caller's job,
//! told by [`Failure::auth_key_replaced`].

mod error;
pub(crate) use error::transport_hint;
use error::{status_cause, transport_cause};
mod wire;

use std::time::{Duration, Instant};

use cloud_http::{Method, StatusCode};
use serde_json::Value;

use crate::backoff::{self, Backoff};
use crate::clients::TpmKeys;
use crate::cloud::{error_code, error_text, segment, Cloud};
use crate::progress::{now_ms, Problem, Progress};
use crate::sas::DPS_KEY_NAME;

pub use error::DpsError;
use wire::{Challenge, OperationStatus, RegisterRequest, TpmAttestation};

/// First delay of the backoff between retries of a failed request.
const INITIAL_BACKOFF: Duration = Duration::from_secs(1);
/// Poll delay when DPS gives no `Retry-After`, and the most we wait between polls.
const DEFAULT_POLL: Duration = Duration::from_secs(1);
const MAX_POLL: Duration = Duration::from_secs(300);
/// The floor under DPS's `Retry-After` between polls: none before the first poll (a DPS that
/// answers `Retry-After: 0` has the answer ready), then 100 ms doubling up to 500 ms (the C SDK's
/// floor), so a DPS that keeps saying 0 is polled at most five times in its first second.
const FIRST_POLL_FLOOR: Duration = Duration::from_millis(100);
const POLL_FLOOR: Duration = Duration::from_millis(500);

/// How long to wait before poll number `n` (0 for the first) when DPS said `retry_after`.
fn poll_delay(retry_after: Option<Duration>, n: u32) -> Duration {
    let floor = match n {
        0 => Duration::ZERO,
        n => FIRST_POLL_FLOOR.saturating_mul(1 << (n - 1).min(8)).min(POLL_FLOOR),
    };
    retry_after.unwrap_or(DEFAULT_POLL).clamp(floor, MAX_POLL)
}

/// What to register.
pub struct Request<'a> {
    pub origin: &'a str,
    pub scope_id: &'a str,
    pub registration_id: &'a str,
    pub keys: &'a TpmKeys,
    pub payload: Option<&'a Value>,
    /// Overall bound of the registration (counted once DPS's last `Retry-After` has passed).
    pub bound: Duration,
    /// Where each retried problem is reported as it happens.
    pub progress: &'a Progress,
}

/// Where DPS put the device.
#[derive(Debug, Clone, PartialEq)]
pub struct Assignment {
    pub hub: String,
    pub device_id: String,
    /// `registrationState.payload`, e.g. from a custom allocation webhook.
    pub payload: Option<Value>,
}

#[derive(Debug)]
pub struct Failure {
    pub error: DpsError,
    /// The challenge key replaced the previous auth key in the TPM and the hub key never did.
    pub auth_key_replaced: bool,
}

/// Runs the whole registration.
pub async fn register(cloud: &Cloud, req: &Request<'_>) -> Result<Assignment, Failure> {
    let gate = cloud.dps_wait();
    if !gate.is_zero() {
        log::info!(
            "waiting {:.1} s before registering, as DPS asked (Retry-After)",
            gate.as_secs_f32()
        );
        tokio::time::sleep(gate).await;
    }
    let mut run = Run {
        cloud,
        req,
        deadline: Instant::now() + req.bound,
        backoff: Backoff::new(INITIAL_BACKOFF, cloud.max_backoff),
        last_problem: String::from("none"),
        last_cause: "dps_request",
        auth_key_replaced: false,
    };
    match run.steps().await {
        Ok(assignment) => Ok(assignment),
        Err(error) => Err(Failure {
            error,
            auth_key_replaced: run.auth_key_replaced,
        }),
    }
}

struct Run<'a> {
    cloud: &'a Cloud,
    req: &'a Request<'a>,
    deadline: Instant,
    backoff: Backoff,
    last_problem: String,
    last_cause: &'static str,
    auth_key_replaced: bool,
}

impl Run<'_> {
    async fn steps(&mut self) -> Result<Assignment, DpsError> {
        let register_url = format!(
            "{}/{}/registrations/{}/register?api-version={}",
            self.req.origin,
            segment(self.req.scope_id),
            segment(self.req.registration_id),
            wire::API_VERSION
        );
        let body = serde_json::to_vec(&RegisterRequest {
            registration_id: self.req.registration_id,
            tpm: TpmAttestation {
                endorsement_key: aziot_tpm_common::b64(&self.req.keys.endorsement_key),
                storage_root_key: aziot_tpm_common::b64(&self.req.keys.storage_root_key),
            },
            payload: self.req.payload,
        })
        .map_err(|e| self.unexpected("register", e.to_string()))?;

        log::info!(
            "registering {:?} with DPS at {} (ID scope {})",
            self.req.registration_id,
            self.req.origin,
            self.req.scope_id
        );
        let challenge = self
            .send("register", Method::PUT, &register_url, &body, false)
            .await?;
        let blob = self.challenge_key(&challenge)?;
        self.cloud
            .tpm
            .import_auth_key(&blob)
            .await
            .map_err(DpsError::Tpm)?;
        self.auth_key_replaced = true;
        log::info!("imported the DPS challenge key into the TPM");

        let accepted = self
            .send(
                "authenticated register",
                Method::PUT,
                &register_url,
                &body,
                true,
            )
            .await?;
        let mut status = self.operation("authenticated register", &accepted)?;
        let operation_id = status.operation_id.clone().ok_or_else(|| {
            self.unexpected(
                "authenticated register",
                "no operationId in the answer".into(),
            )
        })?;
        let poll_url = format!(
            "{}/{}/registrations/{}/operations/{}?api-version={}",
            self.req.origin,
            segment(self.req.scope_id),
            segment(self.req.registration_id),
            segment(&operation_id),
            wire::API_VERSION
        );
        let mut response = accepted;
        let mut polls = 0;
        loop {
            match status.status() {
                Some("assigning") | None if response.status == StatusCode::ACCEPTED => {}
                Some("assigning") => {}
                Some("assigned") => return self.assigned(status).await,
                Some(other) => return Err(self.terminal(other, &status)),
                None => {
                    return Err(
                        self.unexpected("operation status", "the answer has no status".into())
                    );
                }
            }
            let wait = poll_delay(backoff::parse_retry_after(response.header("retry-after")), polls);
            polls += 1;
            self.last_problem = format!("registration still assigning (operation {operation_id})");
            self.last_cause = "dps_assigning";
            if !backoff::sleep_within(wait, self.deadline).await {
                return Err(self.gave_up());
            }
            response = self
                .send("operation status", Method::GET, &poll_url, &[], true)
                .await?;
            status = self.operation("operation status", &response)?;
        }
    }

    /// The blob from the first answer, or the error that explains why there is none.
    fn challenge_key(&self, response: &cloud_http::Response) -> Result<Vec<u8>, DpsError> {
        let step = "register";
        match response.status {
            StatusCode::UNAUTHORIZED => {
                let key = serde_json::from_slice::<Challenge>(&response.body)
                    .ok()
                    .and_then(|c| c.authentication_key);
                match key {
                    Some(key) => aziot_tpm_common::from_b64(&key).map_err(|e| {
                        self.unexpected(step, format!("authenticationKey is not base64: {e}"))
                    }),
                    None => Err(DpsError::NotEnrolled {
                        registration_id: self.req.registration_id.to_owned(),
                        scope_id: self.req.scope_id.to_owned(),
                        endorsement_key: aziot_tpm_common::b64(&self.req.keys.endorsement_key),
                        detail: format!("401: {}", error_text(&response.body)),
                    }),
                }
            }
            s if s.is_success() => Err(self.unexpected(
                step,
                format!(
                    "{s} without a TPM challenge; DPS must answer 401 with an authenticationKey"
                ),
            )),
            _ => Err(self.rejected(step, response)),
        }
    }

    /// Parses an answer that should carry a `RegistrationOperationStatus`.
    fn operation(
        &self,
        step: &'static str,
        response: &cloud_http::Response,
    ) -> Result<OperationStatus, DpsError> {
        match response.status {
            StatusCode::OK | StatusCode::ACCEPTED => serde_json::from_slice(&response.body)
                .map_err(|e| {
                    self.unexpected(step, format!("the body is not a registration status: {e}"))
                }),
            StatusCode::UNAUTHORIZED => Err(DpsError::TokenRejected {
                step,
                lifetime: self.cloud.token_lifetime,
                detail: error_text(&response.body),
            }),
            _ => Err(self.rejected(step, response)),
        }
    }

    async fn assigned(&mut self, status: OperationStatus) -> Result<Assignment, DpsError> {
        let state = status.registration_state.unwrap_or_default();
        let step = "operation status";
        let hub = state
            .assigned_hub
            .filter(|h| !h.is_empty())
            .ok_or_else(|| self.unexpected(step, "status assigned without assignedHub".into()))?;
        let device_id = state
            .device_id
            .filter(|d| !d.is_empty())
            .ok_or_else(|| self.unexpected(step, "status assigned without deviceId".into()))?;
        match state.tpm.and_then(|t| t.authentication_key) {
            Some(key) => {
                let blob = aziot_tpm_common::from_b64(&key)
                    .map_err(|e| self.unexpected(step, format!("tpm.authenticationKey is not base64: {e}")))?;
                self.cloud.tpm.import_auth_key(&blob).await.map_err(DpsError::Tpm)?;
                self.auth_key_replaced = false;
                log::info!("imported the device's IoT Hub key into the TPM");
            }
            None => log::warn!(
                "DPS assigned the device without a tpm.authenticationKey; keeping the challenge key as \
                 the device key"
            ),
        }
        log::info!(
            "DPS assigned {:?} to hub {hub} as device {device_id:?}{}",
            self.req.registration_id,
            state
                .substatus
                .map(|s| format!(" ({s})"))
                .unwrap_or_default()
        );
        Ok(Assignment {
            hub,
            device_id,
            payload: state.payload,
        })
    }

    /// A final status other than `assigned`.
    fn terminal(&self, status: &str, op: &OperationStatus) -> DpsError {
        let state = op.registration_state.as_ref();
        let mut detail = format!("status {status}");
        if let Some(code) = state.and_then(|s| s.error_code.as_ref()) {
            detail.push_str(&format!(", errorCode {code}"));
        }
        if let Some(message) = state.and_then(|s| s.error_message.as_deref()) {
            detail.push_str(&format!(": {message}"));
        }
        let registration_id = self.req.registration_id.to_owned();
        match status {
            "failed" => DpsError::Failed {
                registration_id,
                detail,
            },
            "disabled" | "blacklisted" => DpsError::Disabled {
                registration_id,
                detail,
            },
            "unassigned" => DpsError::Unassigned {
                registration_id,
                detail,
            },
            _ => self.unexpected("operation status", format!("unknown status: {detail}")),
        }
    }

    fn rejected(&self, step: &'static str, response: &cloud_http::Response) -> DpsError {
        let detail = error_text(&response.body);
        match (response.status, error_code(&response.body)) {
            (StatusCode::BAD_REQUEST, Some(400_004)) => DpsError::EkMismatch {
                registration_id: self.req.registration_id.to_owned(),
                endorsement_key: aziot_tpm_common::b64(&self.req.keys.endorsement_key),
                detail,
            },
            (StatusCode::NOT_FOUND, _) if step == "register" => DpsError::NotFound {
                registration_id: self.req.registration_id.to_owned(),
                scope_id: self.req.scope_id.to_owned(),
                detail,
            },
            (StatusCode::FORBIDDEN, _) => DpsError::Disabled {
                registration_id: self.req.registration_id.to_owned(),
                detail: format!("403: {detail}"),
            },
            (status, _) => DpsError::Rejected {
                step,
                status: status.as_u16(),
                detail,
            },
        }
    }

    fn unexpected(&self, step: &'static str, detail: String) -> DpsError {
        DpsError::Unexpected { step, detail }
    }

    fn gave_up(&self) -> DpsError {
        DpsError::GaveUp {
            bound: self.req.bound,
            last: self.last_problem.clone(),
            last_cause: self.last_cause,
            endpoint: self.req.origin.to_owned(),
        }
    }

    /// Sends one request, signing a fresh token when `authenticated`, and retries throttling,
    /// server errors and network errors until the deadline. Any other answer is returned.
    async fn send(
        &mut self,
        step: &'static str,
        method: Method,
        url: &str,
        body: &[u8],
        authenticated: bool,
    ) -> Result<cloud_http::Response, DpsError> {
        loop {
            let mut headers = vec![
                ("Accept", "application/json".to_owned()),
                ("Content-Type", "application/json; charset=utf-8".to_owned()),
                ("User-Agent", "identityd-dps".to_owned()),
            ];
            if authenticated {
                let token = self
                    .cloud
                    .sas_token(
                        &format!(
                            "{}/registrations/{}",
                            self.req.scope_id, self.req.registration_id
                        ),
                        Some(DPS_KEY_NAME),
                    )
                    .await
                    .map_err(DpsError::Tpm)?;
                headers.push(("Authorization", token));
            }
            let headers: Vec<(&str, &str)> =
                headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let retry_after = match self
                .cloud
                .http
                .request(method.clone(), url, &headers, body.to_vec())
                .await
            {
                Ok(r) if is_transient(r.status) => {
                    self.last_problem = format!(
                        "DPS answered the {step} request with {}: {}",
                        r.status,
                        error_text(&r.body)
                    );
                    self.last_cause = status_cause(r.status);
                    backoff::parse_retry_after(r.header("retry-after"))
                }
                Ok(r) => {
                    self.backoff.reset();
                    return Ok(r);
                }
                Err(e) if e.is_transient() => {
                    self.last_problem =
                        format!("cannot reach DPS at {} ({step}): {e}", self.req.origin);
                    self.last_cause = transport_cause(&e);
                    None
                }
                Err(source) => {
                    let hint = error::transport_hint(&source);
                    return Err(DpsError::Transport {
                        endpoint: self.req.origin.to_owned(),
                        source,
                        hint,
                    });
                }
            };
            if let Some(wait) = retry_after {
                self.cloud.dps_retry_after(wait);
            }
            let wait = backoff::delay(&mut self.backoff, retry_after);
            self.req.progress.retrying(
                Problem {
                    cause: self.last_cause.to_owned(),
                    message: self.last_problem.clone(),
                    endpoint: Some(self.req.origin.to_owned()),
                    at_ms: now_ms(),
                },
                wait,
            );
            if Instant::now() + wait > self.deadline {
                // DPS's wait is not cut short: this registration ends, the next starts after it.
                return Err(match retry_after {
                    Some(retry_after) => DpsError::Throttled {
                        retry_after,
                        bound: self.req.bound,
                        last: self.last_problem.clone(),
                    },
                    None => self.gave_up(),
                });
            }
            log::warn!(
                "{}; retrying in {:.1} s",
                self.last_problem,
                wait.as_secs_f32()
            );
            tokio::time::sleep(wait).await;
        }
    }
}

/// Answers worth trying again: throttling, timeouts and server errors.
pub(crate) fn is_transient(status: StatusCode) -> bool {
    status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::REQUEST_TIMEOUT
        || status.is_server_error()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn polls_honour_retry_after_zero_once_then_back_off_to_the_floor() {
        let zero = Some(Duration::ZERO);
        let waits: Vec<u128> = (0..7).map(|n| poll_delay(zero, n).as_millis()).collect();
        assert_eq!(waits, [0, 100, 200, 400, 500, 500, 500]);
        // What DPS asks for above the floor is kept, and capped.
        assert_eq!(poll_delay(Some(Duration::from_secs(3)), 0), Duration::from_secs(3));
        assert_eq!(poll_delay(Some(Duration::from_secs(3)), 9), Duration::from_secs(3));
        assert_eq!(poll_delay(Some(Duration::from_secs(3600)), 0), MAX_POLL);
        // No Retry-After: 1 s, as before.
        assert_eq!(poll_delay(None, 0), DEFAULT_POLL);
        assert_eq!(poll_delay(zero, u32::MAX), POLL_FLOOR);
    }

    #[test]
    fn transient_statuses() {
        for s in [429, 408, 500, 502, 503, 504] {
            assert!(is_transient(StatusCode::from_u16(s).unwrap()), "{s}");
        }
        for s in [200, 202, 400, 401, 403, 404, 409] {
            assert!(!is_transient(StatusCode::from_u16(s).unwrap()), "{s}");
        }
    }

    #[test]
    fn status_falls_back_to_registration_state() {
        let s: OperationStatus = serde_json::from_str(
            r#"{"operationId":"o","registrationState":{"status":"assigned"}}"#,
        )
        .unwrap();
        assert_eq!(s.status(), Some("assigned"));
        let s: OperationStatus =
            serde_json::from_str(r#"{"operationId":"o","status":"assigning"}"#).unwrap();
        assert_eq!(s.status(), Some("assigning"));
    }
}
