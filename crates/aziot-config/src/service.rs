//! Which daemon we load for, and where its files live by default.

use std::path::PathBuf;
use std::str::FromStr;

use crate::error::ConfigError;

/// One of upstream's four daemons.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Svc {
    Keyd,
    Certd,
    Identityd,
    Tpmd,
}

impl FromStr for Svc {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "keyd" => Ok(Svc::Keyd),
            "certd" => Ok(Svc::Certd),
            "identityd" => Ok(Svc::Identityd),
            "tpmd" => Ok(Svc::Tpmd),
            _ => Err(ConfigError::UnknownService(s.to_owned())),
        }
    }
}

impl Svc {
    pub fn name(self) -> &'static str {
        match self {
            Svc::Keyd => "keyd",
            Svc::Certd => "certd",
            Svc::Identityd => "identityd",
            Svc::Tpmd => "tpmd",
        }
    }

    /// The Unix user the packaged service runs as.
    pub fn user(self) -> &'static str {
        match self {
            Svc::Keyd => "aziotks",
            Svc::Certd => "aziotcs",
            Svc::Identityd => "aziotid",
            Svc::Tpmd => "aziottpm",
        }
    }

    /// `(file, dir)` after applying `AZIOT_<SVC>_CONFIG` / `AZIOT_<SVC>_CONFIG_DIR`.
    pub fn config_paths(self) -> (PathBuf, PathBuf) {
        let upper = self.name().to_ascii_uppercase();
        let from_env = |var: String, default: String| {
            std::env::var_os(var)
                .filter(|v| !v.is_empty())
                .map_or_else(|| PathBuf::from(default), PathBuf::from)
        };
        let name = self.name();
        (
            from_env(
                format!("AZIOT_{upper}_CONFIG"),
                format!("/etc/aziot/{name}/config.toml"),
            ),
            from_env(
                format!("AZIOT_{upper}_CONFIG_DIR"),
                format!("/etc/aziot/{name}/config.d"),
            ),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn knows_the_four_daemons() {
        for (name, user) in [
            ("keyd", "aziotks"),
            ("certd", "aziotcs"),
            ("identityd", "aziotid"),
            ("tpmd", "aziottpm"),
        ] {
            let svc: Svc = name.parse().unwrap();
            assert_eq!(svc.name(), name);
            assert_eq!(svc.user(), user);
        }
        let err = "edged".parse::<Svc>().unwrap_err();
        assert!(
            err.to_string().contains("keyd, certd, identityd, tpmd"),
            "{err}"
        );
    }

    #[test]
    fn env_overrides_and_defaults() {
        // Only this test touches AZIOT_CERTD_*.
        std::env::set_var("AZIOT_CERTD_CONFIG", "/tmp/c.toml");
        std::env::remove_var("AZIOT_CERTD_CONFIG_DIR");
        let (file, dir) = Svc::Certd.config_paths();
        assert_eq!(file, PathBuf::from("/tmp/c.toml"));
        assert_eq!(dir, PathBuf::from("/etc/aziot/certd/config.d"));
        std::env::remove_var("AZIOT_CERTD_CONFIG");
        assert_eq!(
            Svc::Certd.config_paths().0,
            PathBuf::from("/etc/aziot/certd/config.toml")
        );
    }
}
