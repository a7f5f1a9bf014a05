//! IoT Hub's module identity API, authenticated as the device with a SAS token signed in the TPM
//! (a fresh token per request). Errors are classified for the caller: the hub rejecting the
//! *device* (401, or 404 DeviceNotFound) means the device must reprovision; throttling, server and
//! network errors are retried a few times and then reported as "unavailable", which lets the
//! daemon keep serving from its backups.

mod wire;

use std::time::{Duration, Instant};

use cloud_http::{Method, StatusCode};
use zeroize::Zeroizing;

use crate::backoff::{self, Backoff};
use crate::clients::LocalError;
use crate::cloud::{error_text, segment, Cloud};
use crate::device::Device;

pub use wire::{Authentication, Module, SymmetricKey};

#[derive(Debug, thiserror::Error)]
pub enum HubError {
    #[error(
        "IoT Hub {hub} rejected the credentials of device {device_id:?} ({status}: {detail}); the device \
         must be provisioned again through DPS"
    )]
    DeviceRejected {
        hub: String,
        device_id: String,
        status: u16,
        detail: String,
    },
    #[error("module {module:?} does not exist on IoT Hub {hub} ({detail})")]
    ModuleNotFound {
        hub: String,
        module: String,
        detail: String,
    },
    #[error("IoT Hub {hub} refused to {op} ({status}: {detail})")]
    Rejected {
        hub: String,
        op: String,
        status: u16,
        detail: String,
    },
    #[error("IoT Hub {hub} is unavailable; could not {op} after {attempts} attempt(s): {last}")]
    Unavailable {
        hub: String,
        op: String,
        attempts: u32,
        last: String,
    },
    #[error("cannot talk to IoT Hub {hub}: {source}{hint}")]
    Transport {
        hub: String,
        #[source]
        source: cloud_http::Error,
        hint: &'static str,
    },
    #[error("cannot sign the SAS token for IoT Hub: {0}")]
    Sign(#[source] LocalError),
    #[error("IoT Hub {hub} sent an unexpected answer to {op}: {detail}")]
    Unexpected {
        hub: String,
        op: String,
        detail: String,
    },
}

impl HubError {
    /// The hub no longer accepts the device: reprovisioning is the fix.
    pub fn is_device_rejected(&self) -> bool {
        matches!(self, HubError::DeviceRejected { .. })
    }

    /// The hub could not be reached or is overloaded: the backup may be served instead.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, HubError::Unavailable { .. })
    }
}

/// Module identity calls for one device.
pub struct Hub<'a> {
    cloud: &'a Cloud,
    device: &'a Device,
}

impl<'a> Hub<'a> {
    pub fn new(cloud: &'a Cloud, device: &'a Device) -> Self {
        Hub { cloud, device }
    }

    pub async fn list_modules(&self) -> Result<Vec<Module>, HubError> {
        let op = "list modules".to_owned();
        let r = self.call(&op, Method::GET, "", &[], None).await?;
        self.expect_ok(&op, &r, &[StatusCode::OK])?;
        self.parse(&op, &r)
    }

    pub async fn get_module(&self, module_id: &str) -> Result<Module, HubError> {
        let op = format!("get module {module_id:?}");
        let r = self.call(&op, Method::GET, module_id, &[], None).await?;
        self.check_module(module_id, &r)?;
        self.expect_ok(&op, &r, &[StatusCode::OK])?;
        self.parse(&op, &r)
    }

    /// Creates the module without keys; the hub assigns its generation ID.
    pub async fn create_module(&self, module_id: &str) -> Result<Module, HubError> {
        let op = format!("create module {module_id:?}");
        let body = serde_json::json!({"moduleId": module_id, "deviceId": self.device.device_id})
            .to_string();
        let r = self
            .call(&op, Method::PUT, module_id, body.as_bytes(), None)
            .await?;
        self.expect_ok(&op, &r, &[StatusCode::OK, StatusCode::CREATED])?;
        self.parse(&op, &r)
    }

    /// Sets the module's SAS keys (`If-Match: *`).
    pub async fn update_module_keys(
        &self,
        module_id: &str,
        primary: &[u8],
        secondary: &[u8],
    ) -> Result<Module, HubError> {
        let op = format!("update module {module_id:?}");
        let module = Module {
            module_id: module_id.to_owned(),
            device_id: self.device.device_id.clone(),
            managed_by: None,
            generation_id: None,
            authentication: Some(Authentication {
                symmetric_key: Some(SymmetricKey {
                    primary_key: Some(aziot_tpm_common::b64(primary)),
                    secondary_key: Some(aziot_tpm_common::b64(secondary)),
                }),
                x509_thumbprint: None,
                auth_type: Some("sas".into()),
            }),
        };
        let body = Zeroizing::new(
            serde_json::to_vec(&module).map_err(|e| self.unexpected(&op, e.to_string()))?,
        );
        drop(module);
        let r = self
            .call(&op, Method::PUT, module_id, &body, Some("*"))
            .await?;
        self.check_module(module_id, &r)?;
        self.expect_ok(&op, &r, &[StatusCode::OK, StatusCode::CREATED])?;
        self.parse(&op, &r)
    }

    pub async fn delete_module(&self, module_id: &str) -> Result<(), HubError> {
        let op = format!("delete module {module_id:?}");
        let r = self
            .call(&op, Method::DELETE, module_id, &[], Some("*"))
            .await?;
        self.check_module(module_id, &r)?;
        self.expect_ok(&op, &r, &[StatusCode::NO_CONTENT, StatusCode::OK])
    }

    /// One request with retries of transient failures; returns any other answer, except that a
    /// rejection of the device itself is turned into [`HubError::DeviceRejected`] here.
    async fn call(
        &self,
        op: &str,
        method: Method,
        module_id: &str,
        body: &[u8],
        if_match: Option<&str>,
    ) -> Result<cloud_http::Response, HubError> {
        let mut url = format!(
            "https://{}/devices/{}/modules",
            self.device.gateway_host,
            segment(&self.device.device_id)
        );
        if !module_id.is_empty() {
            url.push('/');
            url.push_str(&segment(module_id));
        }
        url.push_str(&format!("?api-version={}", wire::API_VERSION));
        let audience = format!("{}/devices/{}", self.device.hub_name, self.device.device_id);
        let deadline = Instant::now() + self.cloud.http.timeout();
        let mut backoff = Backoff::new(Duration::from_millis(500), self.cloud.max_backoff);
        let mut attempts = 0;
        loop {
            attempts += 1;
            let token = self
                .cloud
                .sas_token(&audience, None)
                .await
                .map_err(HubError::Sign)?;
            let mut headers = vec![
                ("Authorization", token.as_str()),
                ("Accept", "application/json"),
                ("User-Agent", "identityd-dps"),
            ];
            if !body.is_empty() {
                headers.push(("Content-Type", "application/json; charset=utf-8"));
            }
            if let Some(etag) = if_match {
                headers.push(("If-Match", etag));
            }
            let (last, retry_after) = match self
                .cloud
                .http
                .request(method.clone(), &url, &headers, body.to_vec())
                .await
            {
                Ok(r) if crate::dps::is_transient(r.status) => (
                    format!("{} {}", r.status, error_text(&r.body)),
                    backoff::parse_retry_after(r.header("retry-after")),
                ),
                Ok(r) => {
                    if let Some(e) = self.device_rejection(&r) {
                        return Err(e);
                    }
                    return Ok(r);
                }
                Err(e) if e.is_transient() => (e.to_string(), None),
                Err(source) => {
                    let hint = crate::dps::transport_hint(&source);
                    return Err(HubError::Transport {
                        hub: self.device.hub_name.clone(),
                        source,
                        hint,
                    });
                }
            };
            let wait = backoff::delay(&mut backoff, retry_after);
            let unavailable = || HubError::Unavailable {
                hub: self.device.hub_name.clone(),
                op: op.to_owned(),
                attempts,
                last: last.clone(),
            };
            if attempts >= self.cloud.hub_attempts {
                return Err(unavailable());
            }
            log::warn!(
                "IoT Hub: {op}: {last}; retrying in {:.1} s",
                wait.as_secs_f32()
            );
            if !backoff::sleep_within(wait, deadline).await {
                return Err(unavailable());
            }
        }
    }

    /// 401 (any route) or 404 DeviceNotFound: the hub does not know this device any more.
    fn device_rejection(&self, r: &cloud_http::Response) -> Option<HubError> {
        let rejected = match r.status {
            StatusCode::UNAUTHORIZED => true,
            StatusCode::NOT_FOUND => error_name(r).as_deref() == Some("DeviceNotFound"),
            _ => false,
        };
        rejected.then(|| HubError::DeviceRejected {
            hub: self.device.hub_name.clone(),
            device_id: self.device.device_id.clone(),
            status: r.status.as_u16(),
            detail: error_text(&r.body),
        })
    }

    fn check_module(&self, module_id: &str, r: &cloud_http::Response) -> Result<(), HubError> {
        if r.status == StatusCode::NOT_FOUND {
            return Err(HubError::ModuleNotFound {
                hub: self.device.hub_name.clone(),
                module: module_id.to_owned(),
                detail: error_text(&r.body),
            });
        }
        Ok(())
    }

    fn expect_ok(
        &self,
        op: &str,
        r: &cloud_http::Response,
        ok: &[StatusCode],
    ) -> Result<(), HubError> {
        if ok.contains(&r.status) {
            return Ok(());
        }
        Err(HubError::Rejected {
            hub: self.device.hub_name.clone(),
            op: op.to_owned(),
            status: r.status.as_u16(),
            detail: error_text(&r.body),
        })
    }

    fn parse<T: serde::de::DeserializeOwned>(
        &self,
        op: &str,
        r: &cloud_http::Response,
    ) -> Result<T, HubError> {
        serde_json::from_slice(&r.body)
            .map_err(|e| self.unexpected(op, format!("not the expected JSON: {e}")))
    }

    fn unexpected(&self, op: &str, detail: String) -> HubError {
        HubError::Unexpected {
            hub: self.device.hub_name.clone(),
            op: op.to_owned(),
            detail,
        }
    }
}

/// IoT Hub's error name: the `iothub-errorcode` header, else `ErrorCode:<Name>;` in the message,
/// else the numeric code's meaning.
fn error_name(r: &cloud_http::Response) -> Option<String> {
    if let Some(name) = r.header("iothub-errorcode") {
        return Some(name.trim().to_owned());
    }
    let text = error_text(&r.body);
    if let Some(rest) = text.split("ErrorCode:").nth(1) {
        return rest.split([';', ' ', ',']).next().map(str::to_owned);
    }
    match crate::cloud::error_code(&r.body) {
        Some(404_001) => Some("DeviceNotFound".into()),
        Some(404_010) => Some("ModuleNotFound".into()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(status: u16, headers: &[(&str, &str)], body: &str) -> cloud_http::Response {
        let mut map = cloud_http::HeaderMap::new();
        for (k, v) in headers {
            map.insert(
                cloud_http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                cloud_http::HeaderValue::from_str(v).unwrap(),
            );
        }
        cloud_http::Response {
            status: StatusCode::from_u16(status).unwrap(),
            headers: map,
            body: body.to_owned().into_bytes().into(),
        }
    }

    #[test]
    fn error_names_come_from_header_message_or_code() {
        assert_eq!(
            error_name(&response(
                404,
                &[("iothub-errorcode", "ModuleNotFound")],
                "{}"
            ))
            .as_deref(),
            Some("ModuleNotFound")
        );
        assert_eq!(
            error_name(&response(
                404,
                &[],
                r#"{"Message":"ErrorCode:DeviceNotFound;no such device"}"#
            ))
            .as_deref(),
            Some("DeviceNotFound")
        );
        assert_eq!(
            error_name(&response(404, &[], r#"{"errorCode":404001,"message":"x"}"#)).as_deref(),
            Some("DeviceNotFound")
        );
        assert_eq!(error_name(&response(404, &[], "nope")), None);
    }
}
