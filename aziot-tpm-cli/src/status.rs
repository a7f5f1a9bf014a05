//! `aziot-tpm status`: is this device provisioned, to which hub and as which device, since when,
//! and is the DPS auth key in the TPM. Asks identityd (device identity, provisioning settings)
//! and the TPM Service (auth key), and reads identityd's `device_info`, whose modification time
//! is when the current assignment was recorded. A daemon that cannot be reached is reported with
//! its socket and what to start, after whatever the others said.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aziot_http::{Method, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::exit::print_json;
use crate::local::{Local, LocalArgs};
use crate::{Failure, Output};

/// The Identity Service api-version aziotctl uses.
pub const IDENTITYD_API: &str = "api-version=2021-12-01";

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    local: LocalArgs,
    /// Output format: text for people, json for scripts.
    #[arg(short, long, value_enum, default_value_t)]
    output: Output,
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct Status {
    pub provisioned: bool,
    pub hub: Option<String>,
    pub device_id: Option<String>,
    /// When identityd recorded this assignment (`device_info`'s modification time), RFC 3339 UTC.
    pub since: Option<String>,
    #[serde(skip)]
    pub since_time: Option<SystemTime>,
    pub registration_id: Option<String>,
    pub dps_endpoint: Option<String>,
    pub id_scope: Option<String>,
    pub auth_key_present: Option<bool>,
    pub auth_key_handle: Option<String>,
    /// Why the device is not provisioned (identityd's words), when it is not.
    pub error: Option<String>,
    /// Daemons that could not be reached, each with its socket and what to start.
    pub unreachable: Vec<String>,
    /// Anything else worth knowing (unreadable files, older daemons).
    pub notes: Vec<String>,
}

pub fn run(args: Args) -> Result<(), Failure> {
    let local = args.local.resolve(Duration::from_secs(30));
    let status = crate::daemon::block_on(gather(&local))?;
    match args.output {
        Output::Json => print_json(&status),
        Output::Text => print_text(&status),
    }
    status.outcome()
}

impl Status {
    /// Exit 0 when provisioned (with the auth key in the TPM, when the TPM Service says), 3 when
    /// a daemon is unreachable, else 1.
    pub fn outcome(&self) -> Result<(), Failure> {
        if !self.unreachable.is_empty() {
            return Err(Failure::unreachable(self.unreachable.join("\n")));
        }
        if self.provisioned && self.auth_key_present == Some(false) {
            return Err(Failure::failed(
                "identityd has an assignment but the TPM has no DPS auth key, so the device cannot sign in to its hub; \
                 run `aziot-tpm reprovision` (or restart identityd: it registers again when the key is gone)",
            ));
        }
        if self.provisioned {
            return Ok(());
        }
        Err(Failure::failed(format!(
            "the device is not provisioned: {}",
            self.error.as_deref().unwrap_or("identityd has no device identity")
        )))
    }
}

pub async fn gather(local: &Local) -> Status {
    let mut status = Status::default();
    if let Some(note) = &local.config_note {
        status.notes.push(format!("identityd config not read ({note}); default paths used"));
    }
    match device_identity(local).await {
        Ok(Ok(spec)) => {
            status.provisioned = true;
            status.hub = spec["hubName"].as_str().map(str::to_owned);
            status.device_id = spec["deviceId"].as_str().map(str::to_owned);
        }
        Ok(Err(why)) => status.error = Some(why),
        Err(failure) => status.unreachable.push(failure.message),
    }
    if status.unreachable.is_empty() {
        provisioning_info(local, &mut status).await;
    }
    auth_key(local, &mut status).await;
    device_info(&local.homedir, &mut status);
    status
}

/// `Ok(Ok(spec))` when identityd has the device identity, `Ok(Err(why))` when it answered
/// without one, `Err` when it cannot be reached.
async fn device_identity(local: &Local) -> Result<Result<Value, String>, Failure> {
    let identityd = &local.identityd;
    let path = format!("/identities/device?{IDENTITYD_API}");
    let answer = identityd.call(Method::POST, &path, Some(json!({"type": "aziot"}))).await?;
    Ok(match answer.status {
        StatusCode::OK => match answer.json::<Value>(identityd, "an identity") {
            Ok(identity) => Ok(identity["spec"].clone()),
            Err(f) => Err(f.message),
        },
        StatusCode::UNAUTHORIZED => Err(format!(
            "identityd refused to show the device identity ({}): run as root, or as a user listed as an \
             identityd [[principal]]",
            answer.message()
        )),
        other => Err(format!("identityd answered {other}: {}", answer.message())),
    })
}

/// `GET /identities/provisioning` (open to anyone): the DPS settings and registration ID.
async fn provisioning_info(local: &Local, status: &mut Status) {
    let path = format!("/identities/provisioning?{IDENTITYD_API}");
    match local.identityd.call(Method::GET, &path, None).await {
        Ok(answer) if answer.status.is_success() => {
            let info: Value = answer.json(&local.identityd, "provisioning info").unwrap_or_default();
            let text = |k: &str| info[k].as_str().map(str::to_owned);
            status.registration_id = text("registration_id");
            status.dps_endpoint = text("endpoint");
            status.id_scope = text("scope_id");
        }
        Ok(answer) => status.notes.push(format!("provisioning info unavailable: {}", answer.message())),
        Err(failure) => status.unreachable.push(failure.message),
    }
}

/// keyd-tpm's `GET /tpm_info`: is the DPS auth key persisted.
async fn auth_key(local: &Local, status: &mut Status) {
    let path = format!("/tpm_info?api-version={}", aziot_tpm_common::http::API_VERSION);
    match local.tpmd.call(Method::GET, &path, None).await {
        Ok(answer) if answer.status.is_success() => {
            let info: Value = answer.json(&local.tpmd, "TPM info").unwrap_or_default();
            status.auth_key_present = info["auth_key_present"].as_bool();
            status.auth_key_handle = info["auth_key_handle"].as_str().map(str::to_owned);
        }
        Ok(answer) if answer.status == StatusCode::NOT_FOUND => status
            .notes
            .push("the TPM Service has no /tpm_info (upstream aziot-tpmd): whether the auth key is present is unknown".into()),
        Ok(answer) => status.notes.push(format!("the TPM Service answered {}: {}", answer.status, answer.message())),
        Err(failure) => status.unreachable.push(failure.message),
    }
}

/// identityd's record of the assignment: its time, and the hub and device when identityd
/// itself could not say.
fn device_info(homedir: &Path, status: &mut Status) {
    #[derive(Deserialize)]
    struct DeviceInfo {
        hub_name: Option<String>,
        device_id: Option<String>,
    }
    let path = homedir.join("device_info");
    let read = std::fs::metadata(&path).and_then(|m| Ok((m.modified()?, std::fs::read_to_string(&path)?)));
    match read {
        Ok((modified, text)) => {
            status.since_time = Some(modified);
            status.since = Some(rfc3339(modified));
            if status.hub.is_none() && !status.unreachable.is_empty() {
                if let Ok(info) = toml::from_str::<DeviceInfo>(&text) {
                    status.hub = info.hub_name;
                    status.device_id = info.device_id;
                    status.notes.push(format!("hub and device ID are the last assignment recorded in {}", path.display()));
                }
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => status
            .notes
            .push(format!("cannot read {}: permission denied; run as root to see since when", path.display())),
        Err(e) => status.notes.push(format!("cannot read {}: {e}", path.display())),
    }
}

pub fn print_text(s: &Status) {
    let or = |v: &Option<String>, missing: &str| v.clone().unwrap_or_else(|| missing.to_owned());
    let provisioned = match (s.provisioned, s.unreachable.is_empty()) {
        (true, _) => "yes".to_owned(),
        (false, true) => format!("no: {}", or(&s.error, "no device identity")),
        (false, false) => "unknown (see below)".to_owned(),
    };
    println!("Provisioned:     {provisioned}");
    if s.hub.is_some() || s.provisioned {
        println!("IoT Hub:         {}", or(&s.hub, "?"));
        println!("Device ID:       {}", or(&s.device_id, "?"));
    }
    if let (Some(since), Some(time)) = (&s.since, s.since_time) {
        println!("Since:           {since} ({})", ago(time));
    }
    if let Some(id) = &s.registration_id {
        println!("Registration ID: {id}");
    }
    if let Some(endpoint) = &s.dps_endpoint {
        println!("DPS:             {endpoint} (ID scope {})", or(&s.id_scope, "?"));
    }
    let auth_key = match s.auth_key_present {
        Some(true) => format!("present in the TPM at {}", or(&s.auth_key_handle, "?")),
        Some(false) => format!("absent (expected at {})", or(&s.auth_key_handle, "?")),
        None => "unknown".to_owned(),
    };
    println!("DPS auth key:    {auth_key}");
    for note in &s.notes {
        println!("Note:            {note}");
    }
}

/// RFC 3339 in UTC, to the second.
pub fn rfc3339(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rest) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", rest / 3600, rest % 3600 / 60, rest % 60)
}

/// "5 s ago", "3 min ago", "2 h ago", "4 days ago".
fn ago(t: SystemTime) -> String {
    let secs = SystemTime::now().duration_since(t).map_or(0, |d| d.as_secs());
    match secs {
        0..=119 => format!("{secs} s ago"),
        120..=7_199 => format!("{} min ago", secs / 60),
        7_200..=172_799 => format!("{} h ago", secs / 3600),
        _ => format!("{} days ago", secs / 86_400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_of_known_instants() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(UNIX_EPOCH + Duration::from_secs(951_782_400)), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(UNIX_EPOCH + Duration::from_secs(1_735_689_599)), "2024-12-31T23:59:59Z");
    }
}
