//! `aziot-tpm tpm-info`: the EK, SRK and registration ID an enrollment needs, plus the TPM's
//! maker, firmware, persistent handles and EK certificate; from keyd-tpm, or from the TPM itself
//! when the daemon is not running.

use serde::Serialize;
use serde_json::{Map, Value};

use crate::exit::print_json;
use crate::tpm_read::{self, missing_primary, Source, TpmArgs};
use crate::{Failure, Output};

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    tpm: TpmArgs,
    /// Output format: text for people, json for scripts.
    #[arg(short, long, value_enum, default_value_t)]
    output: Output,
}

#[derive(Serialize)]
struct TpmInfo {
    registration_id: Option<String>,
    endorsement_key: Option<String>,
    storage_root_key: Option<String>,
    /// How the TPM was read: `tpm_service` (with `socket`) or `direct` (with `tcti`, `reason`).
    #[serde(flatten)]
    source: Source,
    /// From keyd-tpm's `/tpm_info` or the direct read; absent with upstream aziot-tpmd.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    details: Option<Map<String, Value>>,
}

pub fn run(args: Args) -> Result<(), Failure> {
    let reading = tpm_read::read(&args.tpm)?;
    let info = TpmInfo {
        registration_id: reading.endorsement_key.as_deref().map(aziot_tpm_common::registration_id),
        endorsement_key: reading.endorsement_key.as_deref().map(aziot_tpm_common::b64),
        storage_root_key: reading.storage_root_key.as_deref().map(aziot_tpm_common::b64),
        source: reading.source.clone(),
        details: reading.details.clone(),
    };
    match args.output {
        Output::Json => print_json(&info),
        Output::Text => print_text(&info),
    }
    // Without an EK there is nothing to enroll: say so, after printing what there is.
    reading.require_ek()?;
    Ok(())
}

fn print_text(info: &TpmInfo) {
    let absent = |name: &str, handle: u32| format!("none ({})", missing_primary(name, handle));
    println!("Registration ID:  {}", info.registration_id.as_deref().unwrap_or("unknown: no EK"));
    println!(
        "Endorsement key:  {}",
        info.endorsement_key.clone().unwrap_or_else(|| absent("EK", aziot_tpm_common::EK_HANDLE))
    );
    println!(
        "Storage root key: {}",
        info.storage_root_key.clone().unwrap_or_else(|| absent("SRK", aziot_tpm_common::SRK_HANDLE))
    );
    if let Some(d) = &info.details {
        let text = |k: &str| d.get(k).and_then(|v| v.as_str()).unwrap_or("?").to_owned();
        println!("TPM:              {} {} (firmware {})", text("manufacturer"), text("vendor"), text("firmware_version"));
        let handles: Vec<String> = d
            .get("persistent_handles")
            .and_then(|v| v.as_array())
            .map(|a| a.iter().filter_map(|h| h.as_str().map(str::to_owned)).collect())
            .unwrap_or_default();
        println!("Persistent:       {}", if handles.is_empty() { "none".to_owned() } else { handles.join(" ") });
        let present = d.get("auth_key_present").and_then(|v| v.as_bool()).unwrap_or(false);
        println!("DPS auth key:     {} at {}", if present { "present" } else { "absent" }, text("auth_key_handle"));
        println!("EK certificate:   {}", if d.contains_key("ek_certificate") { "present (see -o json)" } else { "none in NV" });
    }
    println!("Read through:     {}", info.source);
}
