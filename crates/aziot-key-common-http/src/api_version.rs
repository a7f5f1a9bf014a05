//! The `api-version` query parameter values of the Keys Service. Every route accepts both;
//! 2021-05-01 only added key deletion and key-pair moves to the documented API.

use std::fmt;
use std::str::FromStr;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ApiVersion {
    V2020_09_01,
    V2021_05_01,
}

impl ApiVersion {
    /// Every version, oldest first, as the server's `api-version` gate wants them.
    pub const ALL_STR: &'static [&'static str] = &["2020-09-01", "2021-05-01"];

    /// What upstream's clients (identityd, aziotctl) send today.
    pub const LATEST: ApiVersion = ApiVersion::V2021_05_01;

    pub fn as_str(self) -> &'static str {
        match self {
            ApiVersion::V2020_09_01 => "2020-09-01",
            ApiVersion::V2021_05_01 => "2021-05-01",
        }
    }
}

impl fmt::Display for ApiVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseApiVersionError(pub String);

impl fmt::Display for ParseApiVersionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid api-version {:?}", self.0)
    }
}

impl std::error::Error for ParseApiVersionError {}

impl FromStr for ApiVersion {
    type Err = ParseApiVersionError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "2020-09-01" => Ok(ApiVersion::V2020_09_01),
            "2021-05-01" => Ok(ApiVersion::V2021_05_01),
            other => Err(ParseApiVersionError(other.to_owned())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_orders() {
        for s in ApiVersion::ALL_STR {
            assert_eq!(s.parse::<ApiVersion>().unwrap().to_string(), *s);
        }
        assert!(ApiVersion::V2020_09_01 < ApiVersion::V2021_05_01);
        assert_eq!(
            "2099-01-01".parse::<ApiVersion>().unwrap_err().to_string(),
            "invalid api-version \"2099-01-01\""
        );
    }
}
