//! What DPS and IoT Hub calls share: the HTTPS client (trusting the configured CA bundle) and SAS
//! tokens signed in the TPM, a fresh one for every request.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use crate::clients::{LocalError, TpmClient};
use crate::config::Config;
use crate::sas::Unsigned;

pub struct Cloud {
    pub http: cloud_http::Client,
    pub tpm: Arc<TpmClient>,
    pub token_lifetime: Duration,
    pub max_backoff: Duration,
    /// Attempts per Hub request on network errors, 429 and 5xx (1 + `cloud_retries`).
    pub hub_attempts: u32,
    /// No DPS request before this instant: the last `Retry-After` DPS gave. Every registration
    /// waits for it, whoever started it (the retry loop, an API reprovision), so DPS's wait
    /// bounds every gap between requests.
    dps_not_before: Mutex<Option<Instant>>,
}

impl Cloud {
    pub fn new(config: &Config, tpm: Arc<TpmClient>) -> Result<Self, cloud_http::Error> {
        // https_proxy / no_proxy as upstream's identityd honours them (IoT Edge's docs set them
        // in the unit with `systemctl edit aziot-identityd`).
        let mut builder = cloud_http::Client::builder()
            .system_roots(config.cloud.system_roots)
            .timeout(config.cloud_timeout)
            .proxy_from_env();
        if let Some(bundle) = config.cloud.trust_bundle_path() {
            builder = builder.trust_ca_file(bundle);
        }
        Ok(Cloud {
            http: builder.build()?,
            tpm,
            token_lifetime: config.cloud.token_lifetime(),
            max_backoff: config.cloud.max_backoff(),
            hub_attempts: config.cloud_retries.saturating_add(1),
            dps_not_before: Mutex::new(None),
        })
    }

    /// DPS asked not to be called again for `wait`.
    pub fn dps_retry_after(&self, wait: Duration) {
        let until = Instant::now() + wait;
        let mut gate = self.lock_gate();
        if gate.is_none_or(|t| t < until) {
            *gate = Some(until);
        }
    }

    /// How long until DPS may be called again (zero if now).
    pub fn dps_wait(&self) -> Duration {
        self.lock_gate()
            .map(|t| t.saturating_duration_since(Instant::now()))
            .unwrap_or_default()
    }

    fn lock_gate(&self) -> std::sync::MutexGuard<'_, Option<Instant>> {
        self.dps_not_before
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A SAS token for `audience`, signed now with the TPM's DPS auth key.
    pub async fn sas_token(
        &self,
        audience: &str,
        key_name: Option<&'static str>,
    ) -> Result<String, LocalError> {
        let unsigned = Unsigned::new(audience, SystemTime::now(), self.token_lifetime, key_name);
        let signature = self.tpm.sign(unsigned.string_to_sign().as_bytes()).await?;
        Ok(unsigned.finish(&signature))
    }
}

/// Percent-encodes one URL path segment (registration and module IDs, ID scopes).
pub fn segment(s: &str) -> String {
    const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~')
        .remove(b'$')
        .remove(b':');
    percent_encoding::utf8_percent_encode(s, SEGMENT).to_string()
}

/// The `message` (and code) of a DPS or IoT Hub error body, whatever its spelling, else the text.
pub fn error_text(body: &[u8]) -> String {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) else {
        return String::from_utf8_lossy(body).chars().take(500).collect();
    };
    let message = ["message", "Message", "errorMessage", "ExceptionMessage"]
        .iter()
        .find_map(|k| v.get(*k).and_then(|m| m.as_str()))
        .unwrap_or_default()
        .to_owned();
    match v.get("errorCode").or_else(|| v.get("code")) {
        Some(code) => format!("{message} (errorCode {code})"),
        None if message.is_empty() => v.to_string(),
        None => message,
    }
}

/// The numeric `errorCode` of an error body, if any.
pub fn error_code(body: &[u8]) -> Option<i64> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    v.get("errorCode").or_else(|| v.get("code"))?.as_i64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_keep_edge_module_names_readable() {
        assert_eq!(segment("$edgeAgent"), "$edgeAgent");
        assert_eq!(segment("a/b c"), "a%2Fb%20c");
    }

    #[test]
    fn error_text_reads_dps_and_hub_shapes() {
        assert_eq!(
            error_text(br#"{"errorCode":401002,"message":"Unauthorized","trackingId":"x"}"#),
            "Unauthorized (errorCode 401002)"
        );
        assert_eq!(
            error_text(br#"{"Message":"ErrorCode:DeviceNotFound;gone"}"#),
            "ErrorCode:DeviceNotFound;gone"
        );
        assert_eq!(error_text(b"plain"), "plain");
        assert_eq!(error_code(br#"{"errorCode":400004}"#), Some(400004));
    }
}
