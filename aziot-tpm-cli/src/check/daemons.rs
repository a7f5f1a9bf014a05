//! Are the daemons there: each socket (from the daemons' own `[endpoints]`, else upstream's
//! default path) must answer an HTTP request, not merely accept a connection: with systemd socket
//! activation the socket accepts even when the service cannot start, which is all upstream's
//! `*-running` checks test. The TPM Service's answers are kept for the TPM checks.

use std::path::Path;

use aziot_tpm_common::http::{GetTpmKeysResponse, API_VERSION as TPMD_API};
use serde_json::json;

use super::context::{daemon_get, error_message, Context, TpmdAnswer};
use super::outcome::{CheckOutput, CheckResult};

const KEYD_API: &str = "2021-05-01";
const IDENTITYD_API: &str = "2020-09-01";

fn unreachable(daemon: &str, what: &str, e: &str) -> CheckResult {
    CheckResult::error(format!(
        "{daemon} does not answer: {e}\nIs {what} running? Look at `systemctl status` of its socket and service, and at its log (journalctl)."
    ))
}

/// A warning when identityd-dps would call a socket other than the one the daemon listens on.
fn mismatch(result: CheckResult, daemon: &str, listens: &Path, identityd_uses: Option<&Path>) -> CheckResult {
    match identityd_uses {
        Some(used) if used != listens && result == CheckResult::Ok => CheckResult::warning(format!(
            "{daemon} listens on {}, but identityd's [endpoints] makes it call {}; set the same socket in both configs",
            listens.display(),
            used.display()
        )),
        _ => result,
    }
}

pub async fn keyd(ctx: &Context) -> CheckOutput {
    let socket = ctx.keyd_socket();
    let result = match daemon_get(&socket, &format!("/?api-version={KEYD_API}")).await {
        Ok(_) => CheckResult::Ok,
        Err(e) => unreachable("keyd", "keyd-tpm", &e),
    };
    let used = ctx.identityd.get().map(|c| c.endpoints.keyd.as_path());
    CheckOutput::new(mismatch(result, "keyd", &socket, used), json!({"socket": socket}))
}

pub async fn tpmd(ctx: &mut Context) -> CheckOutput {
    let socket = ctx.tpmd_socket();
    let info = json!({"socket": socket});
    let keys = match daemon_get(&socket, &format!("/get_tpm_keys?api-version={TPMD_API}")).await {
        Err(e) => return CheckOutput::new(unreachable("tpmd", "keyd-tpm (the TPM Service)", &e), info),
        Ok((status, body)) if status.is_success() => decode_keys(&body),
        // It runs; what the TPM itself says is the TCTI check's business.
        Ok((status, body)) => Err(format!("the TPM Service answered {status}: {}", error_message(&body))),
    };
    let tpm_info = match daemon_get(&socket, &format!("/tpm_info?api-version={TPMD_API}")).await {
        Ok((status, body)) if status.is_success() => {
            Some(serde_json::from_slice(&body).map_err(|e| format!("/tpm_info is not JSON: {e}")))
        }
        Ok((status, _)) if status.as_u16() == 404 => None,
        Ok((status, body)) => Some(Err(format!(
            "the TPM Service answered {status}: {}",
            error_message(&body)
        ))),
        Err(e) => Some(Err(e)),
    };
    ctx.tpmd_answer = Some(TpmdAnswer { keys, info: tpm_info });
    let used = ctx.identityd.get().map(|c| c.endpoints.tpmd.as_path());
    CheckOutput::new(mismatch(CheckResult::Ok, "tpmd", &socket, used), info)
}

fn decode_keys(body: &[u8]) -> Result<(Vec<u8>, Vec<u8>), String> {
    let keys: GetTpmKeysResponse = serde_json::from_slice(body)
        .map_err(|e| format!("/get_tpm_keys answered something else than the EK and SRK: {e}"))?;
    let decode = |field: &str, v: &str| {
        aziot_tpm_common::from_b64(v).map_err(|e| format!("/get_tpm_keys returned a {field} that is not base64: {e}"))
    };
    Ok((
        decode("endorsement_key", &keys.endorsement_key)?,
        decode("storage_root_key", &keys.storage_root_key)?,
    ))
}

pub async fn identityd(ctx: &Context) -> CheckOutput {
    let socket = ctx.identityd_socket();
    // Anyone may read the trust bundle: a harmless request every identityd answers.
    let result = match daemon_get(&socket, &format!("/trust-bundle?api-version={IDENTITYD_API}")).await {
        Ok(_) => CheckResult::Ok,
        Err(e) => unreachable("identityd", "identityd-dps", &e),
    };
    CheckOutput::new(result, json!({"socket": socket}))
}
