//! Allocation policies: which linked hub a registration lands on.
//!
//! * `hashed` — evenly weighted: SHA-256 of the registration ID picks one of the candidate hubs,
//!   so a device keeps its hub across re-registrations while a fleet spreads evenly.
//! * `geoLatency` — the candidate with the lowest configured latency (`--hub-latency`); ties,
//!   and hubs with no latency configured, fall back to hashing among the best.
//! * `static` — the one hub the enrollment names.
//! * `custom` — POSTs DPS's custom-allocation request to the enrollment's webhook and takes its
//!   `iotHubHostName`, `initialTwin` and `payload`.
//!
//! Candidates are the enrollment's `iotHubs` or, when it lists none, every emulated hub. The
//! policy defaults to `hashed`, like a DPS instance's default.

use serde::Deserialize;
use serde_json::{json, Value};

use crate::app::App;
use crate::model::{AllocationPolicy, Enrollment};

/// Where to put the device, and what a custom webhook added.
#[derive(Debug, Clone, PartialEq)]
pub struct Allocation {
    pub hub: String,
    pub initial_twin: Option<Value>,
    pub payload: Option<Value>,
}

/// Why allocation failed; becomes a `failed` registration with this code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct AllocationError {
    pub code: u32,
    pub message: String,
}

/// DPS's `400208`: no linked hub usable for this enrollment.
const NO_HUB: u32 = 400_208;
/// Emulator code for a webhook that failed or answered nonsense.
const CUSTOM_FAILED: u32 = 400_301;

fn fail(code: u32, message: impl Into<String>) -> AllocationError {
    AllocationError {
        code,
        message: message.into(),
    }
}

/// What DPS knows about the device at registration time, for the webhook.
pub struct DeviceContext<'a> {
    pub registration_id: &'a str,
    pub current_hub: Option<&'a str>,
    pub current_device_id: Option<&'a str>,
    pub endorsement_key: &'a str,
    pub storage_root_key: &'a str,
    pub payload: Option<&'a Value>,
}

/// Candidate hubs in canonical spelling, in the emulator's order.
pub fn candidates(app: &App, enrollment: &Enrollment) -> Vec<String> {
    if enrollment.iot_hubs.is_empty() {
        app.hostnames()
    } else {
        app.hubs
            .iter()
            .filter(|h| {
                enrollment
                    .iot_hubs
                    .iter()
                    .any(|n| n.eq_ignore_ascii_case(&h.hostname))
            })
            .map(|h| h.hostname.clone())
            .collect()
    }
}

pub async fn allocate(
    app: &App,
    enrollment: &Enrollment,
    device: &DeviceContext<'_>,
) -> Result<Allocation, AllocationError> {
    let candidates = candidates(app, enrollment);
    if candidates.is_empty() {
        return Err(fail(
            NO_HUB,
            "no linked IoT hub is available for this enrollment",
        ));
    }
    let plain = |hub: String| Allocation {
        hub,
        initial_twin: None,
        payload: None,
    };
    match enrollment
        .allocation_policy
        .unwrap_or(AllocationPolicy::Hashed)
    {
        AllocationPolicy::Hashed => Ok(plain(hashed(&candidates, device.registration_id))),
        AllocationPolicy::GeoLatency => {
            let latency = |h: &String| {
                app.hub_named(h)
                    .and_then(|h| h.latency_ms)
                    .unwrap_or(u64::MAX)
            };
            let best = candidates.iter().map(latency).min().unwrap_or(u64::MAX);
            let tied: Vec<String> = candidates
                .iter()
                .filter(|h| latency(h) == best)
                .cloned()
                .collect();
            Ok(plain(hashed(&tied, device.registration_id)))
        }
        AllocationPolicy::Static => {
            let named: Vec<&String> = enrollment
                .iot_hubs
                .iter()
                .chain(enrollment.iot_hub_host_name.as_ref())
                .collect();
            match named.as_slice() {
                [one] => app
                    .hub_named(one)
                    .map(|h| plain(h.hostname.clone()))
                    .ok_or_else(|| fail(NO_HUB, format!("static hub {one:?} is not linked"))),
                _ => Err(fail(
                    NO_HUB,
                    "static allocation needs exactly one hub in iotHubs",
                )),
            }
        }
        AllocationPolicy::Custom => custom(app, enrollment, device, &candidates).await,
    }
}

/// Evenly weighted choice by the registration ID's SHA-256.
pub fn hashed(candidates: &[String], registration_id: &str) -> String {
    let digest = openssl::sha::sha256(registration_id.as_bytes());
    let n = u64::from_be_bytes([
        digest[0], digest[1], digest[2], digest[3], digest[4], digest[5], digest[6], digest[7],
    ]);
    let len = u64::try_from(candidates.len().max(1)).unwrap_or(1);
    let index = usize::try_from(n % len).unwrap_or(0);
    candidates.get(index).cloned().unwrap_or_default()
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct WebhookResponse {
    iot_hub_host_name: Option<String>,
    #[serde(default)]
    initial_twin: Option<Value>,
    #[serde(default)]
    payload: Option<Value>,
}

async fn custom(
    app: &App,
    enrollment: &Enrollment,
    device: &DeviceContext<'_>,
    linked: &[String],
) -> Result<Allocation, AllocationError> {
    let url = enrollment
        .custom_allocation_definition
        .as_ref()
        .map(|d| d.webhook_url.clone())
        .ok_or_else(|| {
            fail(
                CUSTOM_FAILED,
                "custom allocation without customAllocationDefinition.webhookUrl",
            )
        })?;
    let mut context = json!({
        "registrationId": device.registration_id,
        "tpm": {"endorsementKey": device.endorsement_key, "storageRootKey": device.storage_root_key},
    });
    if let Some(hub) = device.current_hub {
        context["currentIotHubHostName"] = json!(hub);
    }
    if let Some(id) = device.current_device_id {
        context["currentDeviceId"] = json!(id);
    }
    if let Some(p) = device.payload {
        context["payload"] = p.clone();
    }
    let request = json!({
        "individualEnrollment": enrollment,
        "deviceRuntimeContext": context,
        "linkedHubs": linked,
    });
    let response = app
        .webhook
        .request(
            cloud_http::Method::POST,
            &url,
            &[
                ("Content-Type", "application/json"),
                ("Accept", "application/json"),
            ],
            request.to_string(),
        )
        .await
        .map_err(|e| {
            fail(
                CUSTOM_FAILED,
                format!("custom allocation webhook failed: {e}"),
            )
        })?;
    if !response.status.is_success() {
        return Err(fail(
            CUSTOM_FAILED,
            format!(
                "custom allocation webhook answered {}: {}",
                response.status,
                response.text()
            ),
        ));
    }
    let answer: WebhookResponse = serde_json::from_slice(&response.body).map_err(|e| {
        fail(
            CUSTOM_FAILED,
            format!("custom allocation webhook answer is not the expected JSON: {e}"),
        )
    })?;
    let hub = answer.iot_hub_host_name.ok_or_else(|| {
        fail(
            CUSTOM_FAILED,
            "custom allocation webhook answer has no iotHubHostName",
        )
    })?;
    let hub = linked
        .iter()
        .find(|h| h.eq_ignore_ascii_case(&hub))
        .cloned()
        .ok_or_else(|| fail(CUSTOM_FAILED, format!("custom allocation webhook chose {hub:?}, which is not one of the linked hubs {linked:?}")))?;
    Ok(Allocation {
        hub,
        initial_twin: answer.initial_twin,
        payload: answer.payload,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashed_is_stable_and_spreads() {
        let hubs: Vec<String> = (0..3).map(|i| format!("127.0.0.1:{}", 4000 + i)).collect();
        assert_eq!(hashed(&hubs, "device-1"), hashed(&hubs, "device-1"));
        let mut counts = [0usize; 3];
        for i in 0..3000 {
            let h = hashed(&hubs, &format!("device-{i}"));
            counts[hubs.iter().position(|x| *x == h).unwrap()] += 1;
        }
        assert!(
            counts.iter().all(|c| (850..=1150).contains(c)),
            "{counts:?}"
        );
    }
}
