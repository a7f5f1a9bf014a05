//! `aziot-tpm tpm-info`: the EK, SRK and registration ID an enrollment needs, plus the TPM's
//! maker, firmware, persistent handles and EK certificates, each verified (`ek_cert`); from
//! keyd-tpm, or from the TPM itself when the daemon is not running.

use std::path::PathBuf;

use serde::Serialize;
use serde_json::{Map, Value};

use crate::ek_cert::{self, TrustArgs, Verification};
use crate::exit::print_json;
use crate::registration::{self, DpsRegistration};
use crate::tpm_read::{self, missing_primary, Source, TpmArgs};
use crate::{Failure, Output};

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    tpm: TpmArgs,
    #[command(flatten)]
    trust: TrustArgs,
    /// The super-config whose registration_id counts when identityd's config has none yet.
    #[arg(long, value_name = "PATH", default_value = "/etc/aziot/config.toml")]
    super_config: PathBuf,
    /// Output format: text for people, json for scripts.
    #[arg(short, long, value_enum, default_value_t)]
    output: Output,
}

#[derive(Serialize)]
struct TpmInfo {
    /// The registration ID DPS will see, where it comes from, and the EK-derived one.
    #[serde(flatten)]
    registration: DpsRegistration,
    /// The `[provisioning]` block for the super-config, which upstream's tools accept too.
    provisioning_config: Option<String>,
    endorsement_key: Option<String>,
    storage_root_key: Option<String>,
    /// How the TPM was read: `tpm_service` (with `socket`) or `direct` (with `tcti`, `reason`).
    #[serde(flatten)]
    source: Source,
    /// From keyd-tpm's `/tpm_info` or the direct read; absent with upstream aziot-tpmd.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    details: Option<Map<String, Value>>,
    /// Each EK certificate in NV verified against the trust bundle (`ek_trust_bundle`).
    ek_certificate_checks: Vec<Verification>,
    ek_trust_bundle: String,
}

pub fn run(args: Args) -> Result<(), Failure> {
    let reading = tpm_read::read(&args.tpm)?;
    let registration = registration::resolve(&args.super_config, reading.endorsement_key.as_deref());
    let found = reading.details.as_ref().map(ek_cert::found_in).unwrap_or_default();
    let bundle = ek_cert::Bundle::load(&args.trust.bundle);
    let info = TpmInfo {
        ek_certificate_checks: ek_cert::verify_all(&found, reading.endorsement_key.as_deref(), &bundle),
        ek_trust_bundle: bundle.describe(),
        provisioning_config: registration.provisioning_block(),
        registration,
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
    let r = &info.registration;
    println!(
        "Registration ID:  {} ({})",
        r.registration_id.as_deref().unwrap_or("unknown: no EK"),
        r.describe_source()
    );
    if let Some(from_ek) = r.registration_id_from_ek.as_ref().filter(|id| r.registration_id.as_ref() != Some(id)) {
        println!("EK-derived ID:    {from_ek} (what identityd-dps would use without a configured one)");
    }
    if let Some(pending) = &r.pending_registration_id {
        println!("Pending:          {pending} in the super-config (run `aziot-tpm config apply` to use it)");
    }
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
        let checks: Vec<String> = info.ek_certificate_checks.iter().map(ek_cert::line).collect();
        match checks.split_first() {
            None => println!("EK certificate:   none in NV"),
            Some((first, rest)) => {
                println!("EK certificate:   {first}");
                for more in rest {
                    println!("                  {more}");
                }
                println!("Trust bundle:     {}", info.ek_trust_bundle);
            }
        }
    }
    println!("Read through:     {}", info.source);
    if let Some(block) = &info.provisioning_config {
        println!(
            "\nFor /etc/aziot/config.toml (aziot-tpm config apply, aziotctl config apply and iotedge config apply all accept it):\n\n{block}"
        );
    }
}
