//! Connectivity checks, made the way identityd-dps connects (directly, trusting the CAs of its
//! `[cloud]` settings): DPS answers over TLS, the IoT Hub DPS assigned (from `device_info`)
//! answers and accepts a SAS token signed by the TPM's auth key, and this host's clock agrees
//! with theirs closely enough for SAS tokens, judged from their `Date` headers.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use identityd_dps::clients::TpmClient;
use identityd_dps::config::Config as IdentitydConfig;
use identityd_dps::sas::Unsigned;
use serde_json::json;

use super::context::{ClockSample, Context};
use super::outcome::{CheckOutput, CheckResult};

/// One cloud request's deadline (identityd's own 70 s is for provisioning, not for a check).
pub const CLOUD_TIMEOUT: Duration = Duration::from_secs(15);
/// IoT Hub's REST api-version identityd-dps uses.
const HUB_API: &str = "2021-04-12";
/// Skew that earns a warning: upstream's `host-local-time` threshold, and a third of the 30 s
/// lifetime upstream aziot-identityd gives its SAS tokens.
pub const WARN_SKEW_SECS: f64 = 10.0;

/// A client as identityd-dps builds one, through the proxy `https-proxy` found.
fn client(config: &IdentitydConfig, proxy: &super::proxy::Found) -> Result<cloud_http::Client, String> {
    let proxy = proxy.clone().map_err(|e| format!("{e}; fix the proxy URL"))?;
    let mut builder = cloud_http::Client::builder()
        .system_roots(config.cloud.system_roots)
        .timeout(CLOUD_TIMEOUT)
        .proxy(proxy);
    if let Some(bundle) = config.cloud.trust_bundle_path() {
        builder = builder.trust_ca_file(bundle);
    }
    builder
        .build()
        .map_err(|e| format!("{e}; fix [cloud] trust_bundle in identityd's config"))
}

/// A request whose `Date` header becomes a clock sample.
async fn timed(
    ctx: &mut Context,
    client: &cloud_http::Client,
    server: &str,
    url: &str,
    headers: &[(&str, &str)],
) -> Result<cloud_http::Response, cloud_http::Error> {
    let sent = SystemTime::now();
    let response = client
        .request(cloud_http::Method::GET, url, headers, Vec::new())
        .await
        .inspect_err(|e| {
            if clock_suspect(e) {
                ctx.clock_suspect.push(format!("{server}: {e}"));
            }
        })?;
    let received = SystemTime::now();
    if let Some(sample) = clock_sample(server, response.header("date"), sent, received) {
        ctx.clock.push(sample);
    }
    Ok(response)
}

fn clock_sample(server: &str, date: Option<&str>, sent: SystemTime, received: SystemTime) -> Option<ClockSample> {
    let date = httpdate::parse_http_date(date?).ok()?;
    let secs = |t: SystemTime| t.duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0);
    let round_trip = (secs(received) - secs(sent)).max(0.0);
    let local_mid = secs(sent) + round_trip / 2.0;
    // The header is truncated to the second: the server's clock read somewhere in [date, date+1).
    Some(ClockSample {
        server: server.to_owned(),
        skew: secs(date) + 0.5 - local_mid,
        uncertainty: 0.5 + round_trip / 2.0,
    })
}

/// A TLS failure on a certificate's validity dates: what a clock far off looks like.
fn clock_suspect(e: &cloud_http::Error) -> bool {
    matches!(e, cloud_http::Error::Tls { reason, .. } if reason.contains("not yet valid") || reason.contains("expired"))
}

/// This host's time, for messages that suspect it.
fn local_now() -> String {
    crate::status::rfc3339(SystemTime::now())
}

fn transport_error(what: &str, e: &cloud_http::Error) -> CheckResult {
    if clock_suspect(e) {
        return CheckResult::error(format!(
            "Could not reach {what}: {e}\nThe certificate is outside its validity dates by this host's clock, which says \
             {}: if that is wrong, synchronize the clock first (`timedatectl set-ntp true`, or chrony / \
             systemd-timesyncd). Only if the time is right, suspect the certificate or a private CA ([cloud] trust_bundle).",
            local_now()
        ));
    }
    let hint = match e {
        cloud_http::Error::Tls { .. } => {
            "\nIf it is reached through a private CA (an emulator, a TLS-inspecting proxy), put that CA in a PEM file and \
             set [cloud] trust_bundle in identityd's config; if the clock is far off, certificates look expired."
        }
        cloud_http::Error::Connect { .. } | cloud_http::Error::Timeout { .. } => {
            "\nCheck DNS, routes and firewalls: outbound TCP 443 must be open, or set https_proxy for aziot-identityd \
             (systemctl edit aziot-identityd) if the gateway reaches Azure through a proxy."
        }
        _ => "",
    };
    CheckResult::error(format!("Could not reach {what}: {e}{hint}"))
}

pub async fn dps_endpoint(ctx: &mut Context) -> CheckOutput {
    let Some(config) = ctx.identityd.get() else {
        return CheckOutput::new(CheckResult::Skipped, json!({}));
    };
    let origin = config.dps.origin.clone();
    let mut info = json!({"endpoint": origin, "trust_bundle": config.cloud.trust_bundle_path()});
    let client = match client(config, &ctx.proxy) {
        Ok(c) => c,
        Err(e) => return CheckOutput::new(CheckResult::error(e), info),
    };
    let result = match timed(ctx, &client, &origin, &format!("{origin}/"), &[]).await {
        Ok(response) => {
            info["status"] = json!(response.status.as_u16());
            CheckResult::Ok
        }
        Err(e) => transport_error(&format!("DPS at {origin}"), &e),
    };
    CheckOutput::new(result, info)
}

pub async fn iothub(ctx: &mut Context) -> CheckOutput {
    let Some(config) = ctx.identityd.get() else {
        return CheckOutput::new(CheckResult::Skipped, json!({}));
    };
    let Some(hub) = ctx.iothub_hostname() else {
        let result = match &ctx.provisioning.device_info {
            Some(Err(e)) => CheckResult::error(e.clone()),
            Some(Ok(Some(old))) => CheckResult::warning(format!(
                "the device has no identity now (see identityd-provisioned), so there is no assigned IoT Hub to \
                 test; {} still names {} from an earlier registration",
                config.homedir.join("device_info").display(),
                old.hub_name
            )),
            _ => CheckResult::warning(format!(
                "the device is not provisioned yet ({} has no device_info), so there is no IoT Hub to test. \
                 identityd-dps registers with DPS when it starts: read its log, and check the enrollment",
                config.homedir.display()
            )),
        };
        return CheckOutput::new(result, json!({}));
    };
    let mut info = json!({"iothub_hostname": hub});
    let client = match client(config, &ctx.proxy) {
        Ok(c) => c,
        Err(e) => return CheckOutput::new(CheckResult::error(e), info),
    };
    // The device's own credentials, when the hub is the assigned one and the TPM can sign.
    let device = ctx.provisioning.device().filter(|d| d.hub_name == hub).cloned();
    let tpmd = config.endpoints.tpmd.clone();
    let token = match &device {
        Some(d) => Some(device_token(&tpmd, &hub, &d.device_id).await),
        None => None,
    };
    let result = match (&device, token) {
        (Some(d), Some(Ok(token))) => {
            info["device_id"] = json!(d.device_id);
            info["authenticated"] = json!(true);
            let url = format!(
                "https://{}/devices/{}/modules?api-version={HUB_API}",
                gateway_host(d),
                identityd_dps::cloud::segment(&d.device_id)
            );
            let headers = [
                ("Authorization", token.as_str()),
                ("Accept", "application/json"),
                ("User-Agent", "aziot-tpm-check"),
            ];
            match timed(ctx, &client, &hub, &url, &headers).await {
                Ok(r) => judge_hub_answer(&hub, &d.device_id, &r),
                Err(e) => transport_error(&format!("IoT Hub {hub}"), &e),
            }
        }
        (_, token) => {
            info["authenticated"] = json!(false);
            if let Some(Err(e)) = token {
                info["not_authenticated_because"] = json!(e);
            }
            match timed(ctx, &client, &hub, &format!("https://{hub}/"), &[]).await {
                Ok(_) => CheckResult::Ok,
                Err(e) => transport_error(&format!("IoT Hub {hub}"), &e),
            }
        }
    };
    CheckOutput::new(result, info)
}

/// A device SAS token for `hub`, signed through the TPM Service identityd uses.
async fn device_token(tpmd: &std::path::Path, hub: &str, device_id: &str) -> Result<String, String> {
    let unsigned = Unsigned::new(
        &format!("{hub}/devices/{device_id}"),
        SystemTime::now(),
        Duration::from_secs(300),
        None,
    );
    let tpm = TpmClient::new(tpmd);
    let signature = tpm
        .sign(unsigned.string_to_sign().as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    Ok(unsigned.finish(&signature))
}

fn judge_hub_answer(hub: &str, device_id: &str, r: &cloud_http::Response) -> CheckResult {
    let detail = identityd_dps::cloud::error_text(&r.body);
    match r.status.as_u16() {
        200..=299 => CheckResult::Ok,
        401 | 403 => CheckResult::error(format!(
            "IoT Hub {hub} rejected the SAS token of device {device_id} ({}: {detail}): the key in the TPM is not the \
             one the hub holds (the device registered again elsewhere, or the TPM lost its key), or the clock is off \
             (see clock-skew). Run `aziot-tpm reprovision`",
            r.status
        )),
        404 => CheckResult::error(format!(
            "IoT Hub {hub} does not know device {device_id} ({detail}): it was deleted or moved. Run `aziot-tpm reprovision`"
        )),
        _ => CheckResult::warning(format!("IoT Hub {hub} answered {}: {detail}", r.status)),
    }
}

/// Where the device connects: `local_gateway_hostname` of `device_info`, which for a DPS device
/// is the hub itself.
fn gateway_host(d: &identityd_dps::state::DeviceInfo) -> &str {
    if d.local_gateway_hostname.is_empty() {
        &d.hub_name
    } else {
        &d.local_gateway_hostname
    }
}

pub fn clock_skew(ctx: &Context) -> CheckOutput {
    let lifetime = ctx.identityd.get().map_or(300, |c| c.cloud.sas_token_lifetime_sec) as f64;
    let samples: Vec<_> = ctx
        .clock
        .iter()
        .map(
            |s| json!({"server": s.server, "skew_seconds": round(s.skew), "uncertainty_seconds": round(s.uncertainty)}),
        )
        .collect();
    let info = json!({"samples": samples, "warn_above_seconds": WARN_SKEW_SECS, "error_at_seconds": lifetime});
    // No server's Date could be read because TLS refused the certificates' dates: not a skip,
    // the clock is the likely cause.
    if ctx.clock.is_empty() && !ctx.clock_suspect.is_empty() {
        return CheckOutput::new(
            CheckResult::error(format!(
                "this host's clock ({}) is probably far off: TLS refused the servers' certificates as outside their \
                 validity dates ({}), so no server time could be read to compare. Synchronize it with NTP \
                 (`timedatectl set-ntp true`, or chrony / systemd-timesyncd)",
                local_now(),
                ctx.clock_suspect.join("; ")
            )),
            info,
        );
    }
    CheckOutput::new(judge_skew(&ctx.clock, lifetime), info)
}

fn round(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// Error when this host is so far behind that a token identityd-dps signs (valid `lifetime`
/// seconds) has expired on arrival; warning past [`WARN_SKEW_SECS`] either way. Only what the
/// reading cannot explain (its uncertainty) counts.
fn judge_skew(samples: &[ClockSample], lifetime: f64) -> CheckResult {
    let Some(worst) = samples.iter().max_by(|a, b| a.skew.abs().total_cmp(&b.skew.abs())) else {
        return CheckResult::Skipped;
    };
    let (skew, sure) = (worst.skew, (worst.skew.abs() - worst.uncertainty).max(0.0));
    let direction = if skew > 0.0 { "behind" } else { "ahead of" };
    let fix = "Synchronize it with NTP (`timedatectl set-ntp true`, or chrony / systemd-timesyncd).";
    if skew > 0.0 && sure >= lifetime {
        CheckResult::error(format!(
            "this host's clock is {skew:.0} s behind {}: every SAS token identityd-dps signs (valid {lifetime:.0} s) \
             has expired before DPS or IoT Hub reads it. {fix}",
            worst.server
        ))
    } else if sure > WARN_SKEW_SECS {
        CheckResult::warning(format!(
            "this host's clock is {:.0} s {direction} {}; SAS tokens tolerate little skew (upstream aziot-identityd's \
             live 30 s). {fix}",
            skew.abs(),
            worst.server
        ))
    } else {
        CheckResult::Ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(skew: f64, uncertainty: f64) -> ClockSample {
        ClockSample {
            server: "hub".into(),
            skew,
            uncertainty,
        }
    }

    #[test]
    fn skew_bounds() {
        assert_eq!(judge_skew(&[], 300.0), CheckResult::Skipped);
        assert_eq!(judge_skew(&[sample(0.4, 0.6)], 300.0), CheckResult::Ok);
        assert_eq!(
            judge_skew(&[sample(10.4, 0.6)], 300.0),
            CheckResult::Ok,
            "within the reading's uncertainty"
        );
        assert!(matches!(
            judge_skew(&[sample(-45.0, 0.6)], 300.0),
            CheckResult::Warning { .. }
        ));
        let behind = judge_skew(&[sample(2.0, 0.5), sample(400.0, 0.6)], 300.0);
        assert!(
            matches!(&behind, CheckResult::Error { details } if details[0].contains("400 s behind")),
            "{behind:?}"
        );
        // Far ahead never makes tokens expire early.
        assert!(matches!(
            judge_skew(&[sample(-4000.0, 0.6)], 300.0),
            CheckResult::Warning { .. }
        ));
    }

    #[test]
    fn date_header_gives_the_skew() {
        let sent = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let received = sent + Duration::from_millis(200);
        let s = clock_sample("dps", Some("Mon, 12 Jan 1970 13:47:30 GMT"), sent, received).unwrap();
        // 1_000_050 + 0.5 - 1_000_000.1
        assert!((s.skew - 50.4).abs() < 1e-6, "{s:?}");
        assert!((s.uncertainty - 0.6).abs() < 1e-6);
        assert!(clock_sample("dps", Some("not a date"), sent, received).is_none());
        assert!(clock_sample("dps", None, sent, received).is_none());
    }
}
