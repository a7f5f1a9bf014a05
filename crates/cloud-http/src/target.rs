//! Splits a URL into what a connection needs: host (for TCP, SNI and certificate checks), port,
//! the `Host` header value and the origin-form request target.

use hyper::Uri;

use crate::Error;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    /// Host without IPv6 brackets: what TCP connects to and what the certificate must name.
    pub host: String,
    pub port: u16,
    /// `host[:port]` as written in the URL, for the `Host` header and messages.
    pub authority: String,
    /// `/path?query`, never empty.
    pub path_and_query: String,
}

impl Target {
    pub fn parse(url: &str) -> Result<Self, Error> {
        let invalid = |reason: &str| Error::InvalidUrl {
            url: url.to_owned(),
            reason: reason.to_owned(),
        };
        let uri: Uri = url
            .parse()
            .map_err(|e: hyper::http::uri::InvalidUri| invalid(&e.to_string()))?;
        match uri.scheme_str() {
            Some(s) if s.eq_ignore_ascii_case("https") => {}
            Some(_) => {
                return Err(Error::NotHttps {
                    url: url.to_owned(),
                })
            }
            None => return Err(invalid("no scheme; write https://host/path")),
        }
        let authority = uri.authority().ok_or_else(|| invalid("no host"))?;
        if authority.as_str().contains('@') {
            return Err(invalid("user info in URLs is not supported"));
        }
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        if host.is_empty() {
            return Err(invalid("empty host"));
        }
        let path_and_query = uri
            .path_and_query()
            .map(|p| p.as_str())
            .filter(|p| !p.is_empty())
            .unwrap_or("/");
        Ok(Self {
            host,
            port: authority.port_u16().unwrap_or(443),
            authority: authority.as_str().to_owned(),
            path_and_query: path_and_query.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn https_url_with_port_and_query() {
        let t = Target::parse(
            "https://127.0.0.1:8443/0ne/registrations/x/register?api-version=2021-06-01",
        )
        .unwrap();
        assert_eq!((t.host.as_str(), t.port), ("127.0.0.1", 8443));
        assert_eq!(t.authority, "127.0.0.1:8443");
        assert_eq!(
            t.path_and_query,
            "/0ne/registrations/x/register?api-version=2021-06-01"
        );
    }

    #[test]
    fn default_port_and_path() {
        let t = Target::parse("https://global.azure-devices-provisioning.net").unwrap();
        assert_eq!((t.port, t.path_and_query.as_str()), (443, "/"));
    }

    #[test]
    fn ipv6_host_loses_its_brackets() {
        let t = Target::parse("https://[::1]:9000/x").unwrap();
        assert_eq!(
            (t.host.as_str(), t.authority.as_str()),
            ("::1", "[::1]:9000")
        );
    }

    #[test]
    fn plain_http_is_refused() {
        assert!(matches!(
            Target::parse("http://127.0.0.1/"),
            Err(Error::NotHttps { .. })
        ));
        assert!(matches!(
            Target::parse("HTTP://127.0.0.1/"),
            Err(Error::NotHttps { .. })
        ));
    }

    #[test]
    fn relative_and_credentialed_urls_are_invalid() {
        assert!(matches!(
            Target::parse("/just/a/path"),
            Err(Error::InvalidUrl { .. })
        ));
        assert!(matches!(
            Target::parse("https://user:pw@host/"),
            Err(Error::InvalidUrl { .. })
        ));
    }
}
