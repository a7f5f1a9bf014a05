//! Reading the TPM's identity (EK, SRK, maker, handles): through the TPM Service when it runs,
//! else straight from the TPM, read-only, with the TCTI of the tpmd config. The daemon is asked
//! first because it owns the TPM; a direct read is for a stopped daemon (first install, a
//! broken config), and never creates or persists anything. Used by `tpm-info` and `enroll`.

use std::path::PathBuf;
use std::time::Duration;

use aziot_http::Method;
use aziot_tpm_common::http::{GetTpmKeysResponse, API_VERSION};
use keyd_tpm::config::TpmdConfig;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::daemon::{self, Daemon};
use crate::Failure;

pub const DEFAULT_TPMD_SOCKET: &str = "/run/aziot/tpmd.sock";

#[derive(clap::Args, Clone, Debug)]
pub struct TpmArgs {
    /// The TPM Service socket (keyd-tpm, or upstream aziot-tpmd) [default: [endpoints] aziot_tpmd
    /// of the tpmd config, else /run/aziot/tpmd.sock].
    #[arg(long = "tpmd-socket", visible_alias = "socket", value_name = "PATH", env = "AZIOT_TPMD_SOCKET")]
    pub socket: Option<PathBuf>,
    /// Read the TPM directly through this TCTI (e.g. device:/dev/tpmrm0, swtpm:host=127.0.0.1,port=2321)
    /// instead of asking the TPM Service. Without it the TPM is read directly only when the service
    /// cannot be reached, with the `tcti` of the tpmd config (/etc/aziot/tpmd/config.toml +
    /// config.d, or AZIOT_TPMD_CONFIG). A direct read changes nothing on the TPM.
    #[arg(long, value_name = "TCTI")]
    pub tcti: Option<String>,
}

/// Where the answer came from.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "source", rename_all = "snake_case")]
pub enum Source {
    /// Asked the TPM Service on its socket.
    TpmService { socket: PathBuf },
    /// Opened the TPM itself.
    Direct { tcti: String, reason: String },
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::TpmService { socket } => write!(f, "the TPM Service at {}", socket.display()),
            Source::Direct { tcti, reason } => write!(f, "the TPM directly through TCTI {tcti} ({reason})"),
        }
    }
}

pub struct Reading {
    pub source: Source,
    /// `TPM2B_PUBLIC` of the EK; `None` only from a direct read of a TPM without a persisted EK.
    pub endorsement_key: Option<Vec<u8>>,
    pub storage_root_key: Option<Vec<u8>>,
    /// keyd-tpm's `/tpm_info` fields (absent with upstream aziot-tpmd).
    pub details: Option<Map<String, Value>>,
}

impl Reading {
    /// The EK, or a failure saying that none is persisted and who creates it.
    pub fn require_ek(&self) -> Result<&[u8], Failure> {
        self.endorsement_key.as_deref().ok_or_else(|| Failure::failed(missing_primary("EK", aziot_tpm_common::EK_HANDLE)))
    }
}

/// The sentence for a primary key the TPM does not have at its persistent handle.
pub fn missing_primary(name: &str, handle: u32) -> String {
    format!(
        "the TPM has no {name} persisted at {handle:#010x}; keyd-tpm creates and persists it when it first starts \
         (systemctl start aziot-tpmd.socket), this command never changes the TPM"
    )
}

pub fn read(args: &TpmArgs) -> Result<Reading, Failure> {
    // The tpmd config (readable by root and its service user) gives the socket, and for a direct
    // read the TCTI and the auth key index.
    let config = aziot_config::load::<TpmdConfig>("tpmd");
    if let Some(tcti) = &args.tcti {
        return direct(tcti, config.as_ref().ok(), "--tcti given").map_err(Failure::unreachable);
    }
    let socket = args
        .socket
        .clone()
        .or_else(|| config.as_ref().ok().and_then(|c| daemon::endpoint_path(&c.endpoints.aziot_tpmd)))
        .unwrap_or_else(|| DEFAULT_TPMD_SOCKET.into());
    let service_error = match daemon::block_on(from_service(&socket))? {
        Ok(reading) => return Ok(reading),
        Err(failure) if failure.code == crate::exit::UNREACHABLE => failure.message,
        Err(failure) => return Err(failure),
    };
    let config = config.map_err(|e| {
        Failure::unreachable(format!(
            "{service_error}\nReading the TPM directly needs the tpmd config's TCTI, but: {e}; or pass --tcti"
        ))
    })?;
    let reason = format!("the TPM Service at {} cannot be reached", socket.display());
    direct(&config.shared.tcti, Some(&config), &reason).map_err(|direct_error| {
        Failure::unreachable(format!("{service_error}\nReading the TPM directly failed too: {direct_error}"))
    })
}

async fn from_service(socket: &std::path::Path) -> Result<Reading, Failure> {
    let tpmd = Daemon::new(daemon::TPMD, socket, Duration::from_secs(30));
    let answer = tpmd.call(Method::GET, &format!("/get_tpm_keys?api-version={API_VERSION}"), None).await?;
    if !answer.status.is_success() {
        return Err(Failure::failed(format!("{} answered {}: {}", tpmd.what, answer.status, answer.message())));
    }
    let keys: GetTpmKeysResponse = answer.json(&tpmd, "a get_tpm_keys response")?;
    let decode = |field: &str, b64: &str| {
        aziot_tpm_common::from_b64(b64)
            .map_err(|e| Failure::failed(format!("{} returned a {field} that is not base64: {e}", tpmd.what)))
    };
    let endorsement_key = decode("endorsement_key", &keys.endorsement_key)?;
    let storage_root_key = decode("storage_root_key", &keys.storage_root_key)?;
    // keyd-tpm's extension; upstream aziot-tpmd answers 404 and the details stay unknown.
    let answer = tpmd.call(Method::GET, &format!("/tpm_info?api-version={API_VERSION}"), None).await?;
    let details = answer.status.is_success().then(|| serde_json::from_slice(&answer.body).ok()).flatten();
    Ok(Reading {
        source: Source::TpmService { socket: socket.to_owned() },
        endorsement_key: Some(endorsement_key),
        storage_root_key: Some(storage_root_key),
        details,
    })
}

fn direct(tcti: &str, config: Option<&TpmdConfig>, reason: &str) -> Result<Reading, String> {
    // The TSS libraries log open failures to stderr themselves; our error says it better.
    if std::env::var_os("TSS2_LOG").is_none() {
        std::env::set_var("TSS2_LOG", "all+none");
    }
    let index = config.map_or(aziot_tpm_common::DEFAULT_AUTH_KEY_INDEX, |c| c.shared.auth_key_index);
    let found = keyd_tpm::tpm::inspect(tcti, index).map_err(|e| e.to_string())?;
    let details = serde_json::to_value(&found.info).ok().and_then(|v| match v {
        Value::Object(map) => Some(map),
        _ => None,
    });
    Ok(Reading {
        source: Source::Direct { tcti: found.tcti, reason: reason.to_owned() },
        endorsement_key: found.endorsement_key,
        storage_root_key: found.storage_root_key,
        details,
    })
}
