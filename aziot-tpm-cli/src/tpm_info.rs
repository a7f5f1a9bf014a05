//! `aziot-tpm tpm-info`: the EK, SRK and registration ID, from keyd-tpm's TPM Service API.

use std::path::PathBuf;

use aziot_tpm_common::http::{GetTpmKeysResponse, API_VERSION};
use serde::Serialize;

use crate::{Failure, Output};

#[derive(clap::Args)]
pub struct Args {
    /// The TPM Service socket.
    #[arg(long, default_value = "/run/aziot/tpmd.sock", env = "AZIOT_TPMD_SOCKET")]
    socket: PathBuf,
    /// Output format: text for people, json for scripts.
    #[arg(short, long, value_enum, default_value_t)]
    output: Output,
}

#[derive(Serialize)]
struct TpmInfo {
    registration_id: String,
    endorsement_key: String,
    storage_root_key: String,
    /// From keyd-tpm's `/tpm_info` extension; absent with upstream aziot-tpmd.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    details: Option<serde_json::Map<String, serde_json::Value>>,
}

pub fn run(args: Args) -> Result<(), Failure> {
    let (keys, details) = fetch(&args.socket)?;
    let ek = aziot_tpm_common::from_b64(&keys.endorsement_key).map_err(|e| Failure {
        code: 1,
        message: format!("the TPM service returned an EK that is not base64: {e}"),
    })?;
    let info = TpmInfo {
        registration_id: aziot_tpm_common::registration_id(&ek),
        endorsement_key: keys.endorsement_key,
        storage_root_key: keys.storage_root_key,
        details,
    };
    match args.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&info).unwrap_or_default()),
        Output::Text => {
            println!("Registration ID:  {}", info.registration_id);
            println!("Endorsement key:  {}", info.endorsement_key);
            println!("Storage root key: {}", info.storage_root_key);
            if let Some(d) = &info.details {
                let text = |k: &str| d.get(k).and_then(|v| v.as_str()).unwrap_or("?").to_owned();
                println!("TPM:              {} {} (firmware {})", text("manufacturer"), text("vendor"), text("firmware_version"));
                let handles: Vec<String> = d
                    .get("persistent_handles")
                    .and_then(|v| v.as_array())
                    .map(|a| a.iter().filter_map(|h| h.as_str().map(str::to_owned)).collect())
                    .unwrap_or_default();
                println!("Persistent:       {}", handles.join(" "));
                let present = d.get("auth_key_present").and_then(|v| v.as_bool()).unwrap_or(false);
                println!("DPS auth key:     {} at {}", if present { "present" } else { "absent" }, text("auth_key_handle"));
                println!("EK certificate:   {}", if d.contains_key("ek_certificate") { "present (see -o json)" } else { "none in NV" });
            }
        }
    }
    Ok(())
}

fn fetch(socket: &std::path::Path) -> Result<(GetTpmKeysResponse, Option<serde_json::Map<String, serde_json::Value>>), Failure> {
    let unreachable = |e: String| Failure {
        code: 3,
        message: format!("cannot reach the TPM service at {}: {e}; is keyd-tpm running (systemctl status aziot-keyd)?", socket.display()),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| unreachable(e.to_string()))?;
    runtime.block_on(async {
        let client = aziot_http::UdsClient::new(socket);
        let get = |route: &'static str| {
            let client = &client;
            async move {
                let path = format!("{route}?api-version={API_VERSION}");
                client.request(aziot_http::Method::GET, &path, None).await.map_err(|e| unreachable(e.to_string()))
            }
        };
        let (status, body) = get("/get_tpm_keys").await?;
        if !status.is_success() {
            return Err(Failure { code: 1, message: format!("the TPM service answered {status}: {}", message(&body)) });
        }
        let keys = serde_json::from_slice(&body).map_err(|e| Failure {
            code: 1,
            message: format!("the TPM service's answer is not a get_tpm_keys response: {e}"),
        })?;
        // keyd-tpm's extension; upstream aziot-tpmd answers 404 and we print what we have.
        let (status, body) = get("/tpm_info").await?;
        let details = status.is_success().then(|| serde_json::from_slice(&body).ok()).flatten();
        Ok((keys, details))
    })
}

fn message(body: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["message"].as_str().map(str::to_owned))
        .unwrap_or_else(|| String::from_utf8_lossy(body).into_owned())
}
