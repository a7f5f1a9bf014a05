//! `aziot-tpm enroll`: creates or updates the DPS individual enrollment of a TPM device through
//! the DPS service API. An update starts from the enrollment DPS has and changes only what the
//! command line gives, sent with `If-Match` so a concurrent change is not overwritten silently.

use std::path::{Path, PathBuf};
use std::time::Duration;

use cloud_http::{Method, StatusCode};
use serde::Serialize;
use serde_json::{json, Map, Value};

use crate::daemon::block_on;
use crate::dps_service::{segment, ConnectionString, DpsError, DpsService};
use crate::exit::print_json;
use crate::registration;
use crate::tpm_read::{self, TpmArgs};
use crate::{Failure, Output};

const CONNECTION_STRING_HELP: &str = "expected HostName=<name>.azure-devices-provisioning.net;SharedAccessKeyName=<policy>;SharedAccessKey=<key>, \
     from the DPS instance's \"Shared access policies\" (e.g. provisioningserviceowner)";

#[derive(clap::Args)]
pub struct Args {
    /// The DPS service connection string (HostName=...;SharedAccessKeyName=...;SharedAccessKey=...),
    /// from the DPS instance's "Shared access policies". Prefer the environment variable
    /// AZIOT_DPS_CONNECTION_STRING: a command-line argument is visible to other users. The key is
    /// never printed.
    #[arg(long, value_name = "STRING", env = "AZIOT_DPS_CONNECTION_STRING", hide_env_values = true)]
    connection_string: Option<String>,

    /// The enrollment's registration ID [default: the one DPS will see from this device: the
    /// configured [provisioning.attestation] registration_id (identityd's config, else the
    /// super-config), else derived from this TPM's EK as identityd-dps derives it].
    #[arg(long, value_name = "ID")]
    registration_id: Option<String>,

    /// The super-config whose registration_id counts when identityd's config has none yet.
    #[arg(long, value_name = "PATH", default_value = "/etc/aziot/config.toml")]
    super_config: PathBuf,

    /// The EK to enroll, base64 TPM2B_PUBLIC as `aziot-tpm tpm-info` prints it [default: read
    /// from this TPM]. On an update without it and with --registration-id, the enrolled EK stays.
    #[arg(long, value_name = "BASE64")]
    endorsement_key: Option<String>,

    /// The IoT Hub device ID DPS creates [default on create: the registration ID].
    #[arg(long, value_name = "ID")]
    device_id: Option<String>,

    /// Whether the device is an IoT Edge device (capabilities.iotEdge) [default on create: true].
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    iot_edge: Option<bool>,

    /// Whether DPS provisions the device [default on create: enabled].
    #[arg(long, value_enum, value_name = "STATUS")]
    provisioning_status: Option<ProvisioningStatus>,

    /// How DPS picks the hub [default on create: the DPS instance's own policy].
    #[arg(long, value_enum, value_name = "POLICY")]
    allocation_policy: Option<AllocationPolicy>,

    /// A linked IoT Hub the device may be assigned to (repeat for several; `static` takes
    /// exactly one). Replaces the enrollment's list when given.
    #[arg(long = "iot-hub", value_name = "HOSTNAME")]
    iot_hubs: Vec<String>,

    /// The device twin DPS sets when it creates the device: a JSON file
    /// `{"tags": {...}, "properties": {"desired": {...}}}`.
    #[arg(long, value_name = "FILE")]
    initial_twin: Option<PathBuf>,

    /// The custom allocation webhook (an https:// URL; for --allocation-policy custom).
    #[arg(long, value_name = "URL")]
    webhook_url: Option<String>,

    /// The api-version DPS sends to the custom allocation webhook.
    #[arg(long, visible_alias = "api-version", value_name = "VERSION", default_value = "2021-10-01")]
    webhook_api_version: String,

    /// Also trust the CA certificates in this PEM file for DPS's TLS certificate (e.g. the
    /// emulator's ca.pem); repeatable. The system roots (and SSL_CERT_FILE) stay trusted.
    #[arg(long = "trust-ca", value_name = "FILE")]
    trust_ca: Vec<PathBuf>,

    /// Seconds to wait for each DPS request.
    #[arg(long, value_name = "SECONDS", default_value_t = 30)]
    timeout: u64,

    #[command(flatten)]
    tpm: TpmArgs,

    /// Output format: text for people, json for scripts.
    #[arg(short, long, value_enum, default_value_t)]
    output: Output,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum ProvisioningStatus {
    Enabled,
    Disabled,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum AllocationPolicy {
    Hashed,
    Static,
    #[value(name = "geoLatency", alias = "geolatency", alias = "geo-latency")]
    GeoLatency,
    Custom,
}

impl AllocationPolicy {
    fn wire(self) -> &'static str {
        match self {
            AllocationPolicy::Hashed => "hashed",
            AllocationPolicy::Static => "static",
            AllocationPolicy::GeoLatency => "geoLatency",
            AllocationPolicy::Custom => "custom",
        }
    }
}

#[derive(Serialize)]
struct Enrolled {
    /// `created` or `updated`.
    action: &'static str,
    dps: String,
    registration_id: String,
    /// Where the registration ID came from (the flag, identityd's config, the super-config, the EK).
    registration_id_source: String,
    /// The enrollment as DPS answered the write.
    enrollment: Value,
}

pub fn run(args: Args) -> Result<(), Failure> {
    let connection = args.connection_string.as_deref().ok_or_else(|| {
        Failure::usage(format!(
            "no DPS connection string: set AZIOT_DPS_CONNECTION_STRING or pass --connection-string; {CONNECTION_STRING_HELP}"
        ))
    })?;
    let connection: ConnectionString =
        connection.parse().map_err(|e| Failure::usage(format!("{e}; {CONNECTION_STRING_HELP}")))?;
    let initial_twin = args.initial_twin.as_deref().map(read_initial_twin).transpose()?;
    let mut ek = args.endorsement_key.as_deref().map(parse_ek).transpose()?;
    let (registration_id, registration_id_source) = match &args.registration_id {
        Some(id) => (id.clone(), "given with --registration-id".to_owned()),
        None => {
            let configured = registration::resolve(&args.super_config, None);
            match configured.registration_id.clone() {
                Some(id) => (id, configured.describe_source()),
                None => (
                    aziot_tpm_common::registration_id(ek_or_tpm(&mut ek, &args.tpm)?),
                    configured.describe_source(),
                ),
            }
        }
    };
    validate_registration_id(&registration_id)?;

    let dps = DpsService::new(connection, &args.trust_ca, Duration::from_secs(args.timeout.max(1)))?;
    let path = format!("/enrollments/{}", segment(&registration_id));
    let existing = block_on(get_existing(&dps, &path))??;
    if existing.is_none() {
        ek_or_tpm(&mut ek, &args.tpm)?;
    }
    let (action, if_match, mut body) = match existing {
        Some(current) => {
            let etag = current.get("etag").and_then(Value::as_str).unwrap_or("*").to_owned();
            ("updated", Some(etag), writable(current))
        }
        None => ("created", None, Map::new()),
    };
    apply(&args, &registration_id, ek.as_deref(), initial_twin, action == "created", &mut body);
    check_allocation(&body)?;
    let body = Value::Object(body);
    let answer = block_on(dps.request(Method::PUT, &path, if_match.as_deref(), Some(&body)))??;
    if !answer.status.is_success() {
        return Err(refused(&DpsError::from_response(&answer), "write"));
    }
    let enrollment = serde_json::from_slice(&answer.body).unwrap_or(body);
    let enrolled = Enrolled { action, dps: dps.host().to_owned(), registration_id, registration_id_source, enrollment };
    match args.output {
        Output::Json => print_json(&enrolled),
        Output::Text => print_text(&enrolled),
    }
    Ok(())
}

/// The EK given on the command line, else read from this TPM (once).
fn ek_or_tpm<'a>(ek: &'a mut Option<Vec<u8>>, tpm: &TpmArgs) -> Result<&'a [u8], Failure> {
    if ek.is_none() {
        let reading = tpm_read::read(tpm).map_err(|f| Failure {
            code: f.code,
            message: format!("{}\n(the EK is needed to enroll; pass --endorsement-key and --registration-id to enroll from another machine)", f.message),
        })?;
        *ek = Some(reading.require_ek()?.to_vec());
    }
    Ok(ek.as_deref().unwrap_or_default())
}

async fn get_existing(dps: &DpsService, path: &str) -> Result<Option<Value>, Failure> {
    let answer = dps.request(Method::GET, path, None, None).await?;
    match answer.status {
        s if s.is_success() => serde_json::from_slice(&answer.body)
            .map(Some)
            .map_err(|e| Failure::failed(format!("DPS answered the enrollment GET with something that is not JSON: {e}"))),
        StatusCode::NOT_FOUND => Ok(None),
        _ => Err(refused(&DpsError::from_response(&answer), "read")),
    }
}

/// An enrollment as DPS returned it, without the fields only DPS writes.
fn writable(current: Value) -> Map<String, Value> {
    let mut body = match current {
        Value::Object(map) => map,
        _ => Map::new(),
    };
    for read_only in ["registrationState", "createdDateTimeUtc", "lastUpdatedDateTimeUtc"] {
        body.remove(read_only);
    }
    body
}

/// Sets what the command line gives, and on create the defaults.
fn apply(args: &Args, registration_id: &str, ek: Option<&[u8]>, twin: Option<Value>, create: bool, body: &mut Map<String, Value>) {
    body.insert("registrationId".into(), registration_id.into());
    if let Some(ek) = ek {
        body.insert("attestation".into(), json!({"type": "tpm", "tpm": {"endorsementKey": aziot_tpm_common::b64(ek)}}));
    }
    if let Some(device_id) = &args.device_id {
        body.insert("deviceId".into(), device_id.as_str().into());
    }
    if let Some(iot_edge) = args.iot_edge.or(create.then_some(true)) {
        let capabilities = body.entry("capabilities").or_insert_with(|| json!({}));
        if let Value::Object(c) = capabilities {
            c.insert("iotEdge".into(), iot_edge.into());
        }
    }
    let status = match args.provisioning_status {
        Some(ProvisioningStatus::Enabled) => Some("enabled"),
        Some(ProvisioningStatus::Disabled) => Some("disabled"),
        None => create.then_some("enabled"),
    };
    if let Some(status) = status {
        body.insert("provisioningStatus".into(), status.into());
    }
    if let Some(policy) = args.allocation_policy {
        body.insert("allocationPolicy".into(), policy.wire().into());
    }
    if !args.iot_hubs.is_empty() {
        body.insert("iotHubs".into(), json!(args.iot_hubs));
    }
    if let Some(twin) = twin {
        body.insert("initialTwin".into(), twin);
    }
    if let Some(url) = &args.webhook_url {
        body.insert("customAllocationDefinition".into(), json!({"webhookUrl": url, "apiVersion": args.webhook_api_version}));
    }
}

/// What DPS would refuse anyway, said in terms of our flags.
fn check_allocation(body: &Map<String, Value>) -> Result<(), Failure> {
    let hubs = body.get("iotHubs").and_then(Value::as_array).map_or(0, Vec::len);
    match body.get("allocationPolicy").and_then(Value::as_str) {
        Some("static") if hubs != 1 => {
            Err(Failure::usage(format!("--allocation-policy static needs exactly one --iot-hub (the enrollment would have {hubs})")))
        }
        Some("custom") => {
            let url = body.get("customAllocationDefinition").and_then(|d| d.get("webhookUrl")).and_then(Value::as_str);
            match url {
                Some(u) if u.to_ascii_lowercase().starts_with("https://") => Ok(()),
                Some(u) => Err(Failure::usage(format!("--webhook-url {u:?} must be an https:// URL"))),
                None => Err(Failure::usage("--allocation-policy custom needs --webhook-url https://...")),
            }
        }
        _ => Ok(()),
    }
}

/// A DPS refusal as a failure whose message says what to do about it.
fn refused(error: &DpsError, doing: &str) -> Failure {
    let advice = match error.status {
        401 | 403 => "DPS refused the connection string's key: check SharedAccessKeyName and SharedAccessKey (a policy with \
                      enrollment write permission, e.g. provisioningserviceowner) and this machine's clock",
        409 => "an enrollment with this registration ID was created meanwhile: run the command again to update it",
        412 => "the enrollment changed while it was being updated: run the command again",
        429 => "DPS is throttling requests: wait a minute and run the command again",
        500..=599 => "DPS failed: run the command again later",
        _ => "DPS refused the enrollment",
    };
    Failure::failed(format!("{advice} ({doing} failed with {error})"))
}

fn parse_ek(b64: &str) -> Result<Vec<u8>, Failure> {
    let bad = || Failure::usage("--endorsement-key is not a base64 TPM2B_PUBLIC; copy it from `aziot-tpm tpm-info` on the device");
    let ek = aziot_tpm_common::from_b64(b64.trim()).map_err(|_| bad())?;
    let size = ek.get(..2).map(|s| usize::from(u16::from_be_bytes([s[0], s[1]])));
    if size != Some(ek.len().saturating_sub(2)) || ek.len() < 4 {
        return Err(bad());
    }
    Ok(ek)
}

/// DPS's rule: up to 128 characters of letters, digits, `-`, `.`, `_`, `:`, ending in a letter,
/// a digit or `-`.
fn validate_registration_id(id: &str) -> Result<(), Failure> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || "-._:".contains(c);
    let ends_well = id.chars().last().is_some_and(|c| c.is_ascii_alphanumeric() || c == '-');
    if id.is_empty() || id.len() > 128 || !id.chars().all(allowed) || !ends_well {
        return Err(Failure::usage(format!(
            "registration ID {id:?} is not valid for DPS: use up to 128 letters, digits, '-', '.', '_' or ':', ending in a letter, digit or '-'"
        )));
    }
    Ok(())
}

fn read_initial_twin(path: &Path) -> Result<Value, Failure> {
    let file = path.display();
    let text = std::fs::read_to_string(path).map_err(|e| Failure::usage(format!("cannot read --initial-twin {file}: {e}")))?;
    let twin: Value = serde_json::from_str(&text)
        .map_err(|e| Failure::usage(format!("--initial-twin {file} is not JSON: {e}")))?;
    let shape = "expected {\"tags\": {...}, \"properties\": {\"desired\": {...}}}";
    let Value::Object(map) = &twin else {
        return Err(Failure::usage(format!("--initial-twin {file} is not a JSON object; {shape}")));
    };
    if let Some(unknown) = map.keys().find(|k| !["tags", "properties"].contains(&k.as_str())) {
        return Err(Failure::usage(format!("--initial-twin {file} has {unknown:?}, which a twin does not have; {shape}")));
    }
    if map.get("properties").is_some_and(|p| p.get("desired").is_none()) {
        return Err(Failure::usage(format!("--initial-twin {file}: properties must hold \"desired\"; {shape}")));
    }
    Ok(twin)
}

fn print_text(e: &Enrolled) {
    let v = &e.enrollment;
    let text = |path: &[&str]| {
        let mut at = v;
        for key in path {
            at = &at[*key];
        }
        match at {
            Value::String(s) => Some(s.clone()),
            Value::Bool(b) => Some(if *b { "yes" } else { "no" }.to_owned()),
            Value::Null => None,
            other => Some(other.to_string()),
        }
    };
    let verb = if e.action == "created" { "Created" } else { "Updated" };
    println!("{verb} the individual enrollment in DPS {}", e.dps);
    println!("  Registration ID:     {} ({})", e.registration_id, e.registration_id_source);
    println!("  Device ID:           {}", text(&["deviceId"]).unwrap_or_else(|| "(the registration ID)".into()));
    let ek = text(&["attestation", "tpm", "endorsementKey"]).unwrap_or_default();
    println!("  Endorsement key:     {}", abbreviate(&ek));
    println!("  IoT Edge device:     {}", text(&["capabilities", "iotEdge"]).unwrap_or_else(|| "no".into()));
    println!("  Provisioning status: {}", text(&["provisioningStatus"]).unwrap_or_else(|| "enabled".into()));
    println!("  Allocation policy:   {}", text(&["allocationPolicy"]).unwrap_or_else(|| "(the DPS instance's default)".into()));
    let hubs: Vec<&str> = v["iotHubs"].as_array().map(|a| a.iter().filter_map(Value::as_str).collect()).unwrap_or_default();
    println!("  IoT hubs:            {}", if hubs.is_empty() { "(all linked hubs)".to_owned() } else { hubs.join(", ") });
    if let Some(url) = text(&["customAllocationDefinition", "webhookUrl"]) {
        println!("  Webhook:             {url}");
    }
    println!("  Initial twin:        {}", if v["initialTwin"].is_null() { "none" } else { "set (see -o json)" });
    if let Some(etag) = text(&["etag"]) {
        println!("  Etag:                {etag}");
    }
    if let Some(when) = text(&["lastUpdatedDateTimeUtc"]) {
        println!("  Last updated:        {when}");
    }
}

/// The first and last characters of a long base64 value.
fn abbreviate(s: &str) -> String {
    if s.len() <= 40 {
        return s.to_owned();
    }
    format!("{}...{} ({} characters)", &s[..20], &s[s.len() - 12..], s.len())
}
