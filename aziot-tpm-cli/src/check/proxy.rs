//! The HTTPS proxy identityd-dps goes through, found where an admin sets it, and whether it
//! answers. IoT Edge's docs set `https_proxy` in the daemon's unit (`systemctl edit
//! aziot-identityd`), not in the admin's shell, so after `--proxy-uri` (what `iotedge check`
//! passes) and this process's own environment, the unit's `Environment=` is read too.

use std::process::Command;

use cloud_http::Proxy;
use serde_json::json;

use super::context::Context;
use super::outcome::{CheckOutput, CheckResult};

/// identityd's unit: the package names ours after upstream's.
const IDENTITYD_UNIT: &str = "aziot-identityd.service";

/// The proxy found, and where; `Err` when a setting does not parse.
pub type Found = Result<Option<Proxy>, String>;

pub fn find(proxy_uri: Option<&str>) -> Found {
    if let Some(uri) = proxy_uri {
        return Proxy::parse(uri, &env_no_proxy(), "--proxy-uri").map(Some).map_err(|e| e.to_string());
    }
    match Proxy::from_env() {
        Ok(Some(p)) => return Ok(Some(p)),
        Ok(None) => {}
        Err(e) => return Err(e.to_string()),
    }
    let Some(environment) = unit_environment(IDENTITYD_UNIT) else {
        return Ok(None);
    };
    let get = |names: &[&str]| {
        names.iter().find_map(|n| {
            environment
                .iter()
                .find_map(|(k, v)| (k == n && !v.is_empty()).then(|| (n.to_string(), v.clone())))
        })
    };
    let Some((var, url)) = get(&["HTTPS_PROXY", "https_proxy"]) else {
        return Ok(None);
    };
    let no_proxy = get(&["NO_PROXY", "no_proxy"]).map(|(_, v)| v).unwrap_or_default();
    Proxy::parse(&url, &no_proxy, &format!("{var} of {IDENTITYD_UNIT}"))
        .map(Some)
        .map_err(|e| e.to_string())
}

fn env_no_proxy() -> String {
    ["NO_PROXY", "no_proxy"]
        .iter()
        .find_map(|n| std::env::var(n).ok())
        .unwrap_or_default()
}

/// `systemctl show -p Environment` of `unit` as pairs; `None` without systemd.
fn unit_environment(unit: &str) -> Option<Vec<(String, String)>> {
    let out = Command::new("systemctl")
        .args(["show", "--property=Environment", "--value", unit])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout);
    Some(
        text.split_whitespace()
            .filter_map(|pair| pair.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.trim_matches('"').to_owned()))
            .collect(),
    )
}

/// `https-proxy`: ignored without a proxy; else the proxy must open a tunnel to DPS.
pub async fn answers(ctx: &mut Context) -> CheckOutput {
    let proxy = match &ctx.proxy {
        Ok(None) => {
            return CheckOutput::new(
                CheckResult::Ignored,
                json!({"reason": "no https_proxy is set (here or in aziot-identityd.service): DPS and IoT Hub are reached directly"}),
            )
        }
        Ok(Some(p)) => p.clone(),
        Err(e) => {
            return CheckOutput::new(
                CheckResult::error(format!("{e}; fix the proxy URL where it is set (systemctl edit {IDENTITYD_UNIT})")),
                json!({}),
            )
        }
    };
    let mut info = json!({"proxy": proxy.shown(), "from": proxy.source(), "credentials": proxy.has_credentials()});
    let Some(config) = ctx.identityd.get() else {
        return CheckOutput::new(CheckResult::Skipped, info);
    };
    let (host, port) = origin_host_port(&config.dps.origin);
    info["target"] = json!(format!("{host}:{port}"));
    if !proxy.applies_to(&host) {
        info["bypassed"] = json!(true);
        return CheckOutput::new(CheckResult::Ok, info);
    }
    let result = match proxy.open_tunnel(&host, port, super::cloud::CLOUD_TIMEOUT).await {
        Ok(()) => CheckResult::Ok,
        Err(e) => CheckResult::error(e.to_string()),
    };
    CheckOutput::new(result, info)
}

/// `https://host[:port]` → (host, port).
fn origin_host_port(origin: &str) -> (String, u16) {
    let rest = origin.split_once("://").map_or(origin, |(_, r)| r);
    let authority = rest.split('/').next().unwrap_or(rest);
    if let Some(v6) = authority.strip_prefix('[') {
        let (host, after) = v6.split_once(']').unwrap_or((v6, ""));
        return (host.to_owned(), after.trim_start_matches(':').parse().unwrap_or(443));
    }
    match authority.rsplit_once(':') {
        Some((h, p)) => (h.to_owned(), p.parse().unwrap_or(443)),
        None => (authority.to_owned(), 443),
    }
}
