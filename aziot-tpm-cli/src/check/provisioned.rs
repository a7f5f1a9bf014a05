//! `identityd-provisioned`: judged on what identityd-dps is doing now, not on the files an earlier
//! registration left. Its provisioning status (`GET /identities/provisioning/status`) says whether
//! the device has its identity and the last DPS error; its settings are compared with the config
//! on disk, so a changed `id_scope` that was written but never took effect, or that DPS refuses,
//! fails here instead of passing on a stale `device_info`. With upstream aziot-identityd (no
//! such route) the device identity itself is asked for.

use identityd_dps::progress::{Report, State};
use serde_json::json;

use super::context::{error_message, Context, DAEMON_TIMEOUT};
use super::outcome::{CheckOutput, CheckResult};
use crate::status::{rfc3339, shorten_base64};

/// What identityd said about provisioning, fetched once by this check for the later ones.
#[derive(Debug, Clone)]
pub enum Live {
    Report(Report),
    /// Upstream aziot-identityd: provisioned or not, with its reason.
    Upstream(Result<(), String>),
}

impl Live {
    /// False when identityd says the device has no identity now (whatever device_info says).
    pub fn provisioned(&self) -> bool {
        match self {
            Live::Report(r) => r.state == State::Provisioned,
            Live::Upstream(r) => r.is_ok(),
        }
    }
}

pub async fn check(ctx: &mut Context) -> CheckOutput {
    let Some(config) = ctx.identityd.get() else {
        return CheckOutput::new(CheckResult::Skipped, json!({}));
    };
    let socket = ctx.identityd_socket();
    let path = "/identities/provisioning/status?api-version=2021-12-01";
    let live = match super::context::daemon_get(&socket, path).await {
        Err(_) => return CheckOutput::new(CheckResult::Skipped, json!({})),
        Ok((status, body)) if status.is_success() => match serde_json::from_slice::<Report>(&body) {
            Ok(report) => Live::Report(report),
            Err(e) => {
                return CheckOutput::new(
                    CheckResult::error(format!("identityd's provisioning status is not what identityd-dps sends: {e}")),
                    json!({}),
                )
            }
        },
        Ok(_) => Live::Upstream(upstream_identity(&socket).await),
    };
    ctx.live = Some(live.clone());
    let report = match live {
        Live::Upstream(Ok(())) => return CheckOutput::new(CheckResult::Ok, json!({"source": "identity"})),
        Live::Upstream(Err(why)) => {
            return CheckOutput::new(
                CheckResult::error(format!("the device is not provisioned: {why}")),
                json!({"source": "identity"}),
            )
        }
        Live::Report(report) => report,
    };
    let mut info = json!({
        "state": report.state,
        "hub": report.hub,
        "device_id": report.device_id,
        "last_error": report.last_error,
        "running_with": report.config,
    });

    // The settings it runs with against the file it would read now.
    let dps = &config.dps;
    let mut differ = Vec::new();
    if report.config.scope_id != dps.scope_id {
        differ.push(format!("id_scope {:?} (the config says {:?})", report.config.scope_id, dps.scope_id));
    }
    if report.config.global_endpoint != dps.global_endpoint {
        differ.push(format!(
            "global_endpoint {:?} (the config says {:?})",
            report.config.global_endpoint, dps.global_endpoint
        ));
    }
    if let Some(id) = &dps.registration_id {
        if report.config.registration_id.as_ref() != Some(id) {
            differ.push(format!(
                "registration_id {:?} (the config says {id:?})",
                report.config.registration_id.as_deref().unwrap_or("derived from the EK")
            ));
        }
    }
    if !differ.is_empty() {
        info["config_differs"] = json!(differ);
        return CheckOutput::new(
            CheckResult::error(format!(
                "identityd-dps runs with {}: the config on disk has not taken effect. Restart it: \
                 `aziot-tpm config apply` (which restarts the services) or `systemctl restart aziot-identityd.service`",
                differ.join(", ")
            )),
            info,
        );
    }

    let when = |ms: u64| rfc3339(std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms));
    let last = report.last_error.as_ref().map(|e| {
        format!(
            "{} ({}{}, at {})",
            shorten_base64(&e.message),
            e.cause,
            e.endpoint.as_deref().map(|p| format!(", {p}")).unwrap_or_default(),
            when(e.at_ms)
        )
    });
    let next = report
        .next_attempt_ms
        .map(|t| format!("; identityd-dps tries again at {}", when(t)))
        .unwrap_or_default();
    let result = match (report.state, last) {
        (State::Provisioned, None) => CheckResult::Ok,
        (State::Provisioned, Some(last)) => CheckResult::warning(format!(
            "the device keeps its identity (device {} on {}), but the last registration failed: {last}",
            report.device_id.as_deref().unwrap_or("?"),
            report.hub.as_deref().unwrap_or("?")
        )),
        (State::Starting | State::Registering, None) => CheckResult::warning(
            "identityd-dps is registering with DPS right now; run the check again in a few seconds",
        ),
        (_, Some(last)) => CheckResult::error(format!("the device is not provisioned: {last}{next}")),
        (State::Stopped, None) => CheckResult::error("identityd-dps is stopping"),
        (State::Waiting, None) => CheckResult::error(format!("the device is not provisioned{next}")),
    };
    CheckOutput::new(result, info)
}

/// Upstream identityd: `POST /identities/device` answers 200 once provisioned.
async fn upstream_identity(socket: &std::path::Path) -> Result<(), String> {
    let client = aziot_http::UdsClient::new(socket).with_timeout(DAEMON_TIMEOUT);
    let body = aziot_http::Bytes::from(r#"{"type":"aziot"}"#);
    match client
        .request(aziot_http::Method::POST, "/identities/device?api-version=2020-09-01", Some(body))
        .await
    {
        Ok((status, _)) if status.is_success() => Ok(()),
        Ok((status, body)) => Err(format!("identityd answered {status}: {}", error_message(&body))),
        Err(e) => Err(e.to_string()),
    }
}
