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
}

pub fn run(args: Args) -> Result<(), Failure> {
    let keys = fetch(&args.socket)?;
    let ek = aziot_tpm_common::from_b64(&keys.endorsement_key).map_err(|e| Failure {
        code: 1,
        message: format!("the TPM service returned an EK that is not base64: {e}"),
    })?;
    let info = TpmInfo {
        registration_id: aziot_tpm_common::registration_id(&ek),
        endorsement_key: keys.endorsement_key,
        storage_root_key: keys.storage_root_key,
    };
    match args.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&info).unwrap_or_default()),
        Output::Text => {
            println!("Registration ID:  {}", info.registration_id);
            println!("Endorsement key:  {}", info.endorsement_key);
            println!("Storage root key: {}", info.storage_root_key);
        }
    }
    Ok(())
}

fn fetch(socket: &std::path::Path) -> Result<GetTpmKeysResponse, Failure> {
    let unreachable = |e: String| Failure {
        code: 3,
        message: format!("cannot reach the TPM service at {}: {e}; is keyd-tpm running (systemctl status keyd-tpm)?", socket.display()),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| unreachable(e.to_string()))?;
    runtime.block_on(async {
        let client = aziot_http::UdsClient::new(socket);
        let path = format!("/get_tpm_keys?api-version={API_VERSION}");
        let (status, body) = client
            .request(aziot_http::Method::GET, &path, None)
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        if !status.is_success() {
            let message = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["message"].as_str().map(str::to_owned))
                .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
            return Err(Failure { code: 1, message: format!("the TPM service answered {status}: {message}") });
        }
        serde_json::from_slice(&body).map_err(|e| Failure {
            code: 1,
            message: format!("the TPM service's answer is not a get_tpm_keys response: {e}"),
        })
    })
}
