//! `[endpoints]`: where our socket and the Keys and TPM Services' sockets are. Upstream reads this
//! table only in debug builds; we honour it in release builds too, so the daemons can run
//! unprivileged in a temp dir (tests, the demo) without root-owned `/run/aziot`.

use std::path::PathBuf;

use aziot_http::Endpoint;
use serde::Deserialize;

use super::InvalidConfig;

pub const DEFAULT_IDENTITYD: &str = "unix:///run/aziot/identityd.sock";
pub const DEFAULT_KEYD: &str = "unix:///run/aziot/keyd.sock";
pub const DEFAULT_TPMD: &str = "unix:///run/aziot/tpmd.sock";

/// `[endpoints]` as written; `aziot_certd` is accepted and unused (no X.509 identities here).
#[derive(Debug, Default, Deserialize)]
pub struct Endpoints {
    #[serde(default)]
    pub aziot_identityd: Option<String>,
    #[serde(default)]
    pub aziot_keyd: Option<String>,
    #[serde(default)]
    pub aziot_tpmd: Option<String>,
    #[serde(default)]
    pub aziot_certd: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedEndpoints {
    /// Where we listen (a path, or a systemd socket).
    pub identityd: Endpoint,
    /// The Keys Service socket we connect to.
    pub keyd: PathBuf,
    /// The TPM Service socket we connect to.
    pub tpmd: PathBuf,
}

impl Endpoints {
    pub fn resolve(&self) -> Result<ResolvedEndpoints, InvalidConfig> {
        let identityd = self.aziot_identityd.as_deref().unwrap_or(DEFAULT_IDENTITYD);
        let identityd: Endpoint = identityd.parse().map_err(|e| {
            InvalidConfig::key("endpoints.aziot_identityd", format!("is invalid: {e}"))
        })?;
        Ok(ResolvedEndpoints {
            identityd,
            keyd: client_path(
                "endpoints.aziot_keyd",
                self.aziot_keyd.as_deref(),
                DEFAULT_KEYD,
            )?,
            tpmd: client_path(
                "endpoints.aziot_tpmd",
                self.aziot_tpmd.as_deref(),
                DEFAULT_TPMD,
            )?,
        })
    }
}

/// A socket we connect to must be a `unix://` path.
fn client_path(key: &str, value: Option<&str>, default: &str) -> Result<PathBuf, InvalidConfig> {
    let value = value.unwrap_or(default);
    match value.parse::<Endpoint>() {
        Ok(Endpoint::Unix(path)) => Ok(path),
        Ok(_) => Err(InvalidConfig::key(
            key,
            format!("= {value:?}: a service we connect to needs a unix:///path endpoint"),
        )),
        Err(e) => Err(InvalidConfig::key(key, format!("is invalid: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{parse, MINIMAL};

    #[test]
    fn endpoints_are_honoured() {
        let c = parse(&format!(
            "{MINIMAL}\n[endpoints]\naziot_identityd = \"unix:///tmp/x/identityd.sock\"\n\
             aziot_keyd = \"unix:///tmp/x/keyd.sock\"\naziot_tpmd = \"unix:///tmp/x/tpmd.sock\"\n\
             aziot_certd = \"unix:///tmp/x/certd.sock\"\n"
        ))
        .unwrap();
        assert_eq!(
            c.endpoints.identityd,
            Endpoint::Unix("/tmp/x/identityd.sock".into())
        );
        assert_eq!(c.endpoints.keyd, PathBuf::from("/tmp/x/keyd.sock"));
        assert_eq!(c.endpoints.tpmd, PathBuf::from("/tmp/x/tpmd.sock"));
    }

    #[test]
    fn client_endpoints_must_be_unix_paths() {
        let e = parse(&format!(
            "{MINIMAL}\n[endpoints]\naziot_keyd = \"fd://3\"\n"
        ))
        .unwrap_err();
        assert!(e.contains("aziot_keyd") && e.contains("unix:///"), "{e}");
        let e = parse(&format!(
            "{MINIMAL}\n[endpoints]\naziot_tpmd = \"http://x\"\n"
        ))
        .unwrap_err();
        assert!(e.contains("aziot_tpmd"), "{e}");
    }
}
