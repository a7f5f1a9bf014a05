//! Listener addresses as written in config files (`unix:///…`, `fd://N`, `fd://name`).
//!
//! Upstream accepts the same three schemes (plus `http://` in debug builds only;
//! release builds refuse it, and so do we: these APIs authorize by peer uid, which
//! TCP cannot provide).

use std::ffi::OsStr;
use std::fmt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::io::RawFd;
use std::path::PathBuf;
use std::str::FromStr;

/// Where a daemon listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// `unix:///abs/path`: bind (or reuse a systemd socket for) this path.
    Unix(PathBuf),
    /// `fd://N`: the systemd-passed file descriptor with this number.
    Fd(RawFd),
    /// `fd://name`: the systemd-passed socket with this `FileDescriptorName=`.
    FdName(String),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EndpointError {
    #[error(
        "invalid endpoint {0:?}: expected unix:///absolute/path, fd://N or fd://<socket name>"
    )]
    UnknownScheme(String),
    #[error(
        "invalid endpoint {0:?}: http:// listeners are not supported (callers are \
         authorized by their Unix uid); use unix:///run/aziot/<service>.sock"
    )]
    Http(String),
    #[error("invalid endpoint {0:?}: the socket path must be absolute, e.g. unix:///run/aziot/keyd.sock")]
    RelativePath(String),
    #[error(
        "invalid endpoint {0:?}: fd:// needs a file descriptor number or a systemd socket name"
    )]
    EmptyFd(String),
    #[error("invalid endpoint {0:?}: a socket name may not contain '/', ':' or whitespace")]
    BadFdName(String),
}

impl FromStr for Endpoint {
    type Err = EndpointError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(rest) = s.strip_prefix("unix://") {
            if !rest.starts_with('/') {
                return Err(EndpointError::RelativePath(s.to_owned()));
            }
            let decoded: Vec<u8> = percent_encoding::percent_decode_str(rest).collect();
            Ok(Endpoint::Unix(PathBuf::from(OsStr::from_bytes(&decoded))))
        } else if let Some(rest) = s.strip_prefix("fd://") {
            let rest = rest.strip_suffix('/').unwrap_or(rest);
            if rest.is_empty() {
                return Err(EndpointError::EmptyFd(s.to_owned()));
            }
            if rest.bytes().all(|b| b.is_ascii_digit()) {
                return rest
                    .parse::<RawFd>()
                    .map(Endpoint::Fd)
                    .map_err(|_| EndpointError::EmptyFd(s.to_owned()));
            }
            if rest.contains(['/', ':']) || rest.chars().any(char::is_whitespace) {
                return Err(EndpointError::BadFdName(s.to_owned()));
            }
            Ok(Endpoint::FdName(rest.to_owned()))
        } else if s.starts_with("http://") || s.starts_with("https://") {
            Err(EndpointError::Http(s.to_owned()))
        } else {
            Err(EndpointError::UnknownScheme(s.to_owned()))
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Unix(path) => write!(f, "unix://{}", path.display()),
            Endpoint::Fd(fd) => write!(f, "fd://{fd}"),
            Endpoint::FdName(name) => write!(f, "fd://{name}"),
        }
    }
}

impl<'de> serde::Deserialize<'de> for Endpoint {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl serde::Serialize for Endpoint {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_three_schemes() {
        assert_eq!(
            "unix:///run/aziot/keyd.sock".parse(),
            Ok(Endpoint::Unix("/run/aziot/keyd.sock".into()))
        );
        assert_eq!("fd://3".parse(), Ok(Endpoint::Fd(3)));
        assert_eq!(
            "fd://aziot-keyd.socket".parse(),
            Ok(Endpoint::FdName("aziot-keyd.socket".into()))
        );
    }

    #[test]
    fn unix_path_is_percent_decoded() {
        assert_eq!(
            "unix:///tmp/my%20dir/s.sock".parse(),
            Ok(Endpoint::Unix("/tmp/my dir/s.sock".into()))
        );
    }

    #[test]
    fn refuses_http_relative_and_unknown() {
        let http = "http://localhost:8080".parse::<Endpoint>().unwrap_err();
        assert!(matches!(http, EndpointError::Http(_)));
        assert!(http.to_string().contains("not supported"));
        assert!(matches!(
            "unix://run/keyd.sock".parse::<Endpoint>(),
            Err(EndpointError::RelativePath(_))
        ));
        assert!(matches!(
            "/run/keyd.sock".parse::<Endpoint>(),
            Err(EndpointError::UnknownScheme(_))
        ));
        assert!(matches!(
            "fd://".parse::<Endpoint>(),
            Err(EndpointError::EmptyFd(_))
        ));
        assert!(matches!(
            "fd://99999999999".parse::<Endpoint>(),
            Err(EndpointError::EmptyFd(_))
        ));
        assert!(matches!(
            "fd://a:b".parse::<Endpoint>(),
            Err(EndpointError::BadFdName(_))
        ));
    }

    #[test]
    fn display_round_trips() {
        for s in ["unix:///run/aziot/tpmd.sock", "fd://4", "fd://tpmd"] {
            assert_eq!(s.parse::<Endpoint>().unwrap().to_string(), s);
        }
    }

    #[test]
    fn deserializes_from_a_string() {
        #[derive(serde::Deserialize)]
        struct C {
            ep: Endpoint,
        }
        let c: C = serde_json::from_str(r#"{"ep":"fd://3"}"#).unwrap();
        assert_eq!(c.ep, Endpoint::Fd(3));
        let e = serde_json::from_str::<C>(r#"{"ep":"tcp://x"}"#)
            .err()
            .unwrap();
        assert!(e.to_string().contains("expected unix:///absolute/path"));
    }
}
