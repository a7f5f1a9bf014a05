//! Where this device's daemons and state are: flags and environment first, then the identityd
//! config's `homedir` and `[endpoints]` (so a device set up with other paths needs no flags),
//! then upstream's defaults. `status` and `reprovision` share these flags.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::daemon::{self, endpoint_path, Daemon};
use crate::tpm_read::DEFAULT_TPMD_SOCKET;

pub const DEFAULT_IDENTITYD_SOCKET: &str = "/run/aziot/identityd.sock";
pub const DEFAULT_IDENTITYD_HOMEDIR: &str = "/var/lib/aziot/identityd";

#[derive(clap::Args, Clone, Debug, Default)]
pub struct LocalArgs {
    /// The Identity Service socket [default: [endpoints] aziot_identityd of the identityd config,
    /// else /run/aziot/identityd.sock].
    #[arg(long, value_name = "PATH", env = "AZIOT_IDENTITYD_SOCKET")]
    pub identityd_socket: Option<PathBuf>,
    /// The TPM Service socket [default: [endpoints] aziot_tpmd of the identityd config, else
    /// /run/aziot/tpmd.sock].
    #[arg(long, value_name = "PATH", env = "AZIOT_TPMD_SOCKET")]
    pub tpmd_socket: Option<PathBuf>,
    /// identityd's state directory, where `device_info` records the assignment [default: homedir
    /// of the identityd config, else /var/lib/aziot/identityd].
    #[arg(long, value_name = "DIR", env = "AZIOT_IDENTITYD_HOMEDIR")]
    pub homedir: Option<PathBuf>,
}

/// The part of the identityd config (`/etc/aziot/identityd/config.toml` + `config.d`, or
/// `AZIOT_IDENTITYD_CONFIG[_DIR]`) that says where things are.
#[derive(Default, Deserialize)]
struct IdentitydPaths {
    homedir: Option<PathBuf>,
    #[serde(default)]
    endpoints: Endpoints,
}

#[derive(Default, Deserialize)]
struct Endpoints {
    aziot_identityd: Option<String>,
    aziot_tpmd: Option<String>,
}

/// The resolved locations.
pub struct Local {
    pub identityd: Daemon,
    pub tpmd: Daemon,
    pub homedir: PathBuf,
    /// Why the identityd config could not be read (it is 0600 for its service user), if so.
    pub config_note: Option<String>,
}

impl LocalArgs {
    /// `timeout` bounds each identityd request (reprovisioning waits for DPS).
    pub fn resolve(&self, timeout: Duration) -> Local {
        let (config, config_note) = match aziot_config::load::<IdentitydPaths>("identityd") {
            Ok(c) => (c, None),
            Err(e) => (IdentitydPaths::default(), Some(e.to_string())),
        };
        let from_config = |endpoint: &Option<String>| endpoint.as_deref().and_then(endpoint_path);
        let identityd_socket = self
            .identityd_socket
            .clone()
            .or_else(|| from_config(&config.endpoints.aziot_identityd))
            .unwrap_or_else(|| DEFAULT_IDENTITYD_SOCKET.into());
        let tpmd_socket = self
            .tpmd_socket
            .clone()
            .or_else(|| from_config(&config.endpoints.aziot_tpmd))
            .unwrap_or_else(|| DEFAULT_TPMD_SOCKET.into());
        Local {
            identityd: Daemon::new(daemon::IDENTITYD, identityd_socket, timeout),
            tpmd: Daemon::new(daemon::TPMD, tpmd_socket, Duration::from_secs(30)),
            homedir: self.homedir.clone().or(config.homedir).unwrap_or_else(|| DEFAULT_IDENTITYD_HOMEDIR.into()),
            config_note,
        }
    }
}
