//! `aziot-tpm status`: is this device provisioned, to which hub and as which device, since when,
//! and is the DPS auth key in the TPM; when it is not, where provisioning stands: the last DPS or
//! IoT Hub error (cause, endpoint, when) and when the next try is. Asks identityd (device
//! identity, provisioning settings, identityd-dps's provisioning status) and the TPM Service
//! (auth key), and reads identityd's `device_info`, whose modification time is when the current
//! assignment was recorded. When identityd does not answer, its `provisioning_status.json` says
//! what it last knew. A daemon that cannot be reached is reported with its socket and what to
//! start (or, under systemd, why it is failing to start), after whatever the others said.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use identityd_dps::progress::{Report, STATUS_FILE};

use aziot_http::{Method, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::daemon::Daemon;
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
    /// identityd-dps's provisioning state: `starting`, `registering`, `waiting`, `provisioned`,
    /// `stopped` (null with upstream identityd, which does not say).
    pub provisioning_state: Option<String>,
    /// The provisioning attempt under way or last failed.
    pub attempt: Option<u32>,
    /// The last DPS or IoT Hub error.
    pub last_error: Option<LastError>,
    /// When the next DPS request is due, RFC 3339 UTC.
    pub next_attempt: Option<String>,
    #[serde(skip)]
    pub next_attempt_time: Option<SystemTime>,
    /// Where the provisioning state comes from: `identityd`, or `status_file` (identityd did not
    /// answer: what it last wrote, as of `status_as_of`).
    pub status_source: Option<String>,
    pub status_as_of: Option<String>,
    /// identityd would not show the device identity to this user.
    #[serde(skip)]
    pub refused: bool,
    /// Daemons that could not be reached, each with its socket and what to start.
    pub unreachable: Vec<String>,
    /// Anything else worth knowing (unreadable files, older daemons).
    pub notes: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct LastError {
    pub cause: String,
    pub message: String,
    pub endpoint: Option<String>,
    /// RFC 3339 UTC.
    pub at: String,
    #[serde(skip)]
    pub at_time: SystemTime,
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
        // The whole error is in the output already; say which line, not the error again.
        let why = match (&self.last_error, &self.error) {
            (_, Some(e)) if self.refused => e.clone(),
            (Some(e), _) => format!("{} (see \"Last error\")", e.cause.replace('_', " ")),
            (None, Some(e)) if self.provisioning_state.is_none() => e.clone(),
            _ => "identityd has no device identity yet".to_owned(),
        };
        Err(Failure::failed(format!("the device is not provisioned: {why}")))
    }

    /// Takes identityd-dps's provisioning report.
    fn set_report(&mut self, report: &Report, source: &str) {
        let time = |ms: u64| UNIX_EPOCH + Duration::from_millis(ms);
        self.provisioning_state = Some(
            serde_json::to_value(report.state)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default(),
        );
        self.attempt = (report.attempt > 0).then_some(report.attempt);
        self.last_error = report.last_error.as_ref().map(|p| LastError {
            cause: p.cause.clone(),
            message: p.message.clone(),
            endpoint: p.endpoint.clone(),
            at: rfc3339(time(p.at_ms)),
            at_time: time(p.at_ms),
        });
        self.next_attempt_time = report.next_attempt_ms.map(time);
        self.next_attempt = self.next_attempt_time.map(rfc3339);
        self.status_source = Some(source.to_owned());
        self.status_as_of = Some(rfc3339(time(report.updated_ms)));
        if self.registration_id.is_none() {
            self.registration_id = report.config.registration_id.clone();
        }
        if self.dps_endpoint.is_none() {
            self.dps_endpoint = Some(report.config.global_endpoint.clone());
            self.id_scope = Some(report.config.scope_id.clone());
        }
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
        Ok(Err(why)) => {
            status.refused = why.starts_with("identityd refused");
            status.error = Some(why);
        }
        Err(failure) => status.unreachable.push(failure.message),
    }
    if status.unreachable.is_empty() {
        // identityd-dps's report has the settings (the registration ID once derived); only
        // upstream's identityd needs the route that may wait on the TPM Service for it.
        provisioning_report(&local.identityd, &mut status).await;
        if status.provisioning_state.is_none() {
            provisioning_info(local, &mut status).await;
        }
    } else {
        report_file(&local.homedir, &mut status);
    }
    auth_key(local, &mut status).await;
    device_info(&local.homedir, &mut status);
    status
}

/// identityd-dps's `GET /identities/provisioning/status` (our extension; upstream has none).
pub async fn provisioning_report(identityd: &Daemon, status: &mut Status) {
    if let Some(report) = fetch_report(identityd).await {
        status.set_report(&report, "identityd");
    }
}

/// The provisioning report, if identityd-dps answers with one.
pub async fn fetch_report(identityd: &Daemon) -> Option<Report> {
    let path = format!("/identities/provisioning/status?{IDENTITYD_API}");
    let answer = identityd.call(Method::GET, &path, None).await.ok()?;
    answer
        .status
        .is_success()
        .then(|| serde_json::from_slice(&answer.body).ok())
        .flatten()
}

/// What identityd-dps last wrote to its status file, when it does not answer.
fn report_file(homedir: &Path, status: &mut Status) {
    let path = homedir.join(STATUS_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => match serde_json::from_slice::<Report>(&bytes) {
            Ok(report) => status.set_report(&report, "status_file"),
            Err(e) => status.notes.push(format!("{} is not a provisioning status: {e}", path.display())),
        },
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => status
            .notes
            .push(format!("cannot read {}: permission denied; run as root to see identityd's last provisioning status", path.display())),
        Err(_) => {}
    }
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
        // With identityd-dps's report, the reason is on the lines below.
        (false, true) if s.refused => format!("unknown: {}", or(&s.error, "")),
        (false, true) if s.provisioning_state.is_some() => "no".to_owned(),
        (false, true) => format!("no: {}", shorten_base64(&or(&s.error, "no device identity"))),
        (false, false) => "unknown (see below)".to_owned(),
    };
    println!("Provisioned:     {provisioned}");
    if let Some(line) = provisioning_line(s) {
        println!("Provisioning:    {line}");
    }
    if let Some(e) = &s.last_error {
        println!("Last error:      {}", shorten_base64(&e.message));
        let endpoint = e.endpoint.as_deref().map(|p| format!(", {p}")).unwrap_or_default();
        println!("                 ({}{endpoint}, at {}, {})", e.cause, e.at, ago(e.at_time));
    }
    if s.hub.is_some() || s.provisioned {
        let recorded = if s.provisioned { "" } else { " (last recorded)" };
        println!("IoT Hub:         {}{recorded}", or(&s.hub, "?"));
        println!("Device ID:       {}{recorded}", or(&s.device_id, "?"));
    }
    // Since when it has this identity: only meaningful while it has it.
    if let (true, Some(since), Some(time)) = (s.provisioned, &s.since, s.since_time) {
        println!("Since:           {since} ({})", ago(time));
    }
    if let Some(id) = &s.registration_id {
        println!("Registration ID: {id}");
    }
    if let Some(endpoint) = &s.dps_endpoint {
        println!("DPS:             {endpoint} (id_scope {})", or(&s.id_scope, "?"));
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

/// "waiting: attempt 3 failed; next try in 6 s (at ...)", or None with nothing to say.
fn provisioning_line(s: &Status) -> Option<String> {
    let state = s.provisioning_state.as_deref()?;
    let attempt = s.attempt.map(|a| format!("attempt {a}")).unwrap_or_default();
    let next = match (&s.next_attempt, s.next_attempt_time) {
        (Some(at), Some(t)) => format!("; next try {} ({at})", until(t)),
        _ => String::new(),
    };
    let mut line = match state {
        "provisioned" if s.last_error.is_none() => return None,
        "provisioned" => "the last reprovisioning failed; the device keeps its identity".to_owned(),
        "registering" if s.last_error.is_some() => format!("registering with DPS ({attempt}), retrying after the error below{next}"),
        "registering" => format!("registering with DPS ({attempt})"),
        "waiting" => format!("{attempt} failed{next}"),
        "starting" => "identityd-dps is starting".to_owned(),
        "stopped" => "identityd-dps is stopped".to_owned(),
        other => other.to_owned(),
    };
    if s.status_source.as_deref() == Some("status_file") {
        line = format!("{line} [identityd-dps is not answering: this is what it last wrote, at {}]", s.status_as_of.as_deref().unwrap_or("?"));
    }
    Some(line)
}

/// A long base64 run (a 424-character EK) cut to its ends; `aziot-tpm tpm-info` prints it whole.
pub fn shorten_base64(text: &str) -> String {
    text.split(' ')
        .map(|word| {
            let core = word.trim_end_matches(|c: char| ".,;:)".contains(c));
            let b64 = |c: char| c.is_ascii_alphanumeric() || "+/=".contains(c);
            if core.len() > 64 && core.chars().all(b64) {
                let tail = &word[core.len()..];
                format!("{}...{} ({} characters){tail}", &core[..12], &core[core.len() - 8..], core.len())
            } else {
                word.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// "in 5 s", "in 3 min", "now" for a time in the past.
fn until(t: SystemTime) -> String {
    match t.duration_since(SystemTime::now()) {
        Ok(d) if d.as_secs() < 120 => format!("in {} s", d.as_secs() + u64::from(d.subsec_millis() > 0)),
        Ok(d) => format!("in {} min", d.as_secs() / 60),
        Err(_) => "now".to_owned(),
    }
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
    fn long_base64_is_cut_to_its_ends() {
        let ek = "A".repeat(420) + "Qg==";
        let text = format!("enroll endorsement key {ek} (`aziot-tpm tpm-info` prints both); or");
        let short = shorten_base64(&text);
        assert!(short.contains("AAAAAAAAAAAA...AAAAQg== (424 characters) (`aziot-tpm"), "{short}");
        assert_eq!(shorten_base64("short words stay"), "short words stay");
        assert_eq!(shorten_base64(&format!("{ek}.")), "AAAAAAAAAAAA...AAAAQg== (424 characters).");
    }

    #[test]
    fn rfc3339_of_known_instants() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(UNIX_EPOCH + Duration::from_secs(951_782_400)), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(UNIX_EPOCH + Duration::from_secs(1_735_689_599)), "2024-12-31T23:59:59Z");
    }
}
