//! What the checks share: the three daemons' configs (loaded once, the way the daemons load
//! them), the provisioning state in identityd's homedir, where the sockets are, and facts that
//! one check learns and later ones use (the TPM Service's answers, the TPM's handles, the cloud's
//! clock). Loading does not depend on which checks run, so `--dont-run` of a config check does not
//! turn the checks after it into "skipped".

use std::path::{Path, PathBuf};
use std::time::Duration;

use aziot_config::ConfigError;
use aziot_http::{Endpoint, Method, StatusCode, UdsClient};
use identityd_dps::config::Config as IdentitydConfig;
use identityd_dps::state::{DeviceInfo, PrevState};
use keyd_tpm::config::TpmdConfig;
use keyd_tpm::keyd::config::KeydConfig;

use super::tpm_direct::TpmFacts;

/// How long a daemon gets to answer one request.
pub const DAEMON_TIMEOUT: Duration = Duration::from_secs(10);

pub const DEFAULT_KEYD_SOCKET: &str = "/run/aziot/keyd.sock";
pub const DEFAULT_TPMD_SOCKET: &str = "/run/aziot/tpmd.sock";
pub const DEFAULT_IDENTITYD_SOCKET: &str = "/run/aziot/identityd.sock";

/// Settings of the run that are not configs.
#[derive(Debug, Clone)]
pub struct Options {
    /// `--iothub-hostname`: test this hub instead of the assigned one.
    pub iothub_hostname: Option<String>,
    /// The super-config whose mtime `configs-up-to-date` compares.
    pub super_config: PathBuf,
    /// The user keyd-tpm runs as (owner of the TPM device node access).
    pub tpm_user: String,
    /// `--proxy-uri`: the HTTPS proxy to test and connect through.
    pub proxy_uri: Option<String>,
    /// The TPM makers' CA certificates EK certificates are verified against.
    pub ek_trust_bundle: PathBuf,
}

/// A daemon's config as loading it went.
#[derive(Debug)]
pub enum Loaded<T> {
    Ok(T),
    /// The file cannot be read by this user: every later check would be guesswork.
    Denied(String),
    Invalid(String),
}

impl<T> Loaded<T> {
    pub fn get(&self) -> Option<&T> {
        match self {
            Loaded::Ok(v) => Some(v),
            _ => None,
        }
    }

    fn from_result<E: std::fmt::Display>(r: Result<T, ConfigOrInvalid<E>>) -> Self {
        match r {
            Ok(v) => Loaded::Ok(v),
            Err(ConfigOrInvalid::Config(e @ ConfigError::PermissionDenied { .. })) => Loaded::Denied(e.to_string()),
            Err(ConfigOrInvalid::Config(e)) => Loaded::Invalid(e.to_string()),
            Err(ConfigOrInvalid::Invalid(e)) => Loaded::Invalid(e.to_string()),
        }
    }
}

enum ConfigOrInvalid<E> {
    Config(ConfigError),
    Invalid(E),
}

/// What identityd left in its homedir.
#[derive(Debug, Default)]
pub struct Provisioning {
    /// `device_info`: `Ok(None)` when the device is not provisioned yet.
    pub device_info: Option<Result<Option<DeviceInfo>, String>>,
    /// The registration ID of the last successful registration (`prev_state`).
    pub registered_id: Option<String>,
}

impl Provisioning {
    pub fn device(&self) -> Option<&DeviceInfo> {
        self.device_info.as_ref()?.as_ref().ok()?.as_ref()
    }
}

/// What the TPM Service answered during `tpmd-running`.
#[derive(Debug)]
pub struct TpmdAnswer {
    /// `GET /get_tpm_keys`: the EK and SRK, or the service's error message.
    pub keys: Result<(Vec<u8>, Vec<u8>), String>,
    /// `GET /tpm_info` (keyd-tpm's extension): `None` from upstream aziot-tpmd (404).
    pub info: Option<Result<serde_json::Value, String>>,
}

/// One reading of a cloud server's clock.
#[derive(Debug, Clone)]
pub struct ClockSample {
    pub server: String,
    /// Server time minus local time, in seconds (positive: this host is behind).
    pub skew: f64,
    /// How far off the reading can be: the `Date` header's one-second resolution plus half the
    /// round trip.
    pub uncertainty: f64,
}

pub struct Context {
    pub opts: Options,
    pub keyd: Loaded<KeydConfig>,
    pub tpmd: Loaded<TpmdConfig>,
    pub identityd: Loaded<IdentitydConfig>,
    pub provisioning: Provisioning,
    pub tpmd_answer: Option<TpmdAnswer>,
    /// Filled by `tpm-tcti-opens`: `Err` says why the TPM could not be read.
    pub tpm: Option<Result<TpmFacts, String>>,
    pub clock: Vec<ClockSample>,
    /// TLS failures on certificate dates (server: error): the clock is suspect.
    pub clock_suspect: Vec<String>,
    /// The HTTPS proxy identityd-dps goes through (see `proxy.rs`); the cloud checks use it too.
    pub proxy: super::proxy::Found,
    /// What identityd says about provisioning now (filled by `identityd-provisioned`).
    pub live: Option<super::provisioned::Live>,
}

impl Context {
    pub fn load(opts: Options) -> Self {
        let keyd =
            Loaded::from_result(aziot_config::load::<KeydConfig>("keyd").map_err(ConfigOrInvalid::<String>::Config));
        let tpmd =
            Loaded::from_result(aziot_config::load::<TpmdConfig>("tpmd").map_err(ConfigOrInvalid::<String>::Config));
        let identityd = Loaded::from_result(
            aziot_config::load::<identityd_dps::config::Settings>("identityd")
                .map_err(ConfigOrInvalid::Config)
                .and_then(|s| s.validate().map_err(ConfigOrInvalid::Invalid)),
        );
        let provisioning = match identityd.get() {
            Some(config) => load_provisioning(&config.homedir),
            None => Provisioning::default(),
        };
        let proxy = super::proxy::find(opts.proxy_uri.as_deref());
        Context {
            proxy,
            opts,
            keyd,
            tpmd,
            identityd,
            provisioning,
            tpmd_answer: None,
            tpm: None,
            clock: Vec::new(),
            clock_suspect: Vec::new(),
            live: None,
        }
    }

    pub fn keyd_socket(&self) -> PathBuf {
        unix_path(
            self.keyd.get().map(|c| c.endpoints.aziot_keyd.as_str()),
            DEFAULT_KEYD_SOCKET,
        )
    }

    pub fn tpmd_socket(&self) -> PathBuf {
        unix_path(
            self.tpmd.get().map(|c| c.endpoints.aziot_tpmd.as_str()),
            DEFAULT_TPMD_SOCKET,
        )
    }

    pub fn identityd_socket(&self) -> PathBuf {
        match self.identityd.get().map(|c| &c.endpoints.identityd) {
            Some(Endpoint::Unix(path)) => path.clone(),
            _ => DEFAULT_IDENTITYD_SOCKET.into(),
        }
    }

    /// The auth key's persistent handle (0x81000000 + `auth_key_index`).
    pub fn auth_key_handle(&self) -> Option<u32> {
        let index = self.tpmd.get()?.shared.auth_key_index;
        Some(aziot_tpm_common::AUTH_KEY_HANDLE_BASE + index)
    }

    /// The hub to test: `--iothub-hostname`, else the one DPS assigned (unless identityd says
    /// the device has no identity now: `device_info` may be an earlier registration's).
    pub fn iothub_hostname(&self) -> Option<String> {
        self.opts.iothub_hostname.clone().or_else(|| {
            self.provisioning
                .device()
                .filter(|_| self.live.as_ref().is_none_or(super::provisioned::Live::provisioned))
                .map(|d| d.hub_name.clone())
        })
    }
}

fn load_provisioning(homedir: &Path) -> Provisioning {
    let denied = |e: &dyn std::fmt::Display| {
        format!(
            "cannot read identityd's provisioning state in {}: {e}; run this command as root",
            homedir.display()
        )
    };
    let device_info = DeviceInfo::load(homedir).map_err(|e| match &e {
        identityd_dps::state::StateError::Read { .. } => denied(&e),
        _ => format!("{e}; remove it and restart identityd to provision again"),
    });
    let registered_id = PrevState::load(homedir)
        .ok()
        .flatten()
        .and_then(|p| p.provisioning.attestation)
        .and_then(|a| a.registration_id);
    Provisioning {
        device_info: Some(device_info),
        registered_id,
    }
}

/// The path of a `unix://` endpoint; anything else (a systemd `fd://` socket) means the default path.
fn unix_path(endpoint: Option<&str>, default: &str) -> PathBuf {
    match endpoint.and_then(|e| e.parse::<Endpoint>().ok()) {
        Some(Endpoint::Unix(path)) => path,
        _ => PathBuf::from(default),
    }
}

/// One GET to a daemon; any HTTP answer is `Ok`.
pub async fn daemon_get(socket: &Path, path_and_query: &str) -> Result<(StatusCode, Vec<u8>), String> {
    let client = UdsClient::new(socket).with_timeout(DAEMON_TIMEOUT);
    client
        .request(Method::GET, path_and_query, None)
        .await
        .map(|(status, body)| (status, body.to_vec()))
        .map_err(|e| e.to_string())
}

/// The `message` of a daemon's error body, else the body.
pub fn error_message(body: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["message"].as_str().map(str::to_owned))
        .unwrap_or_else(|| String::from_utf8_lossy(body).chars().take(300).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fd_endpoints_mean_the_default_socket() {
        assert_eq!(
            unix_path(Some("unix:///tmp/x.sock"), "/d"),
            PathBuf::from("/tmp/x.sock")
        );
        assert_eq!(unix_path(Some("fd://aziot-tpmd.socket"), "/d"), PathBuf::from("/d"));
        assert_eq!(unix_path(None, "/d"), PathBuf::from("/d"));
    }

    #[test]
    fn error_message_prefers_the_json_message() {
        assert_eq!(error_message(br#"{"message":"no TPM"}"#), "no TPM");
        assert_eq!(error_message(b"plain"), "plain");
    }
}
