//! One error type for the whole client. Each variant says which step failed and for which URL,
//! because a provisioning log line is often all an operator gets.

use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The URL does not parse, or has no host.
    #[error("invalid URL {url:?}: {reason}")]
    InvalidUrl { url: String, reason: String },

    /// The URL's scheme is not `https`; this client never sends a request in the clear.
    #[error("refusing to send a request to {url:?}: only https:// URLs are allowed")]
    NotHttps { url: String },

    /// A header name or value given by the caller is not valid HTTP.
    #[error("invalid header {name:?}: {reason}")]
    InvalidHeader { name: String, reason: String },

    /// A trusted CA bundle could not be read or holds no PEM certificate.
    #[error("cannot load trusted CA bundle {path}: {reason}")]
    CaBundle { path: PathBuf, reason: String },

    /// OpenSSL refused the TLS configuration (not a server problem).
    #[error("TLS configuration: {0}")]
    TlsConfig(#[from] openssl::error::ErrorStack),

    /// TCP connect failed.
    #[error("cannot connect to {authority}: {source}")]
    Connect {
        authority: String,
        source: std::io::Error,
    },

    /// The TLS handshake failed; `reason` holds OpenSSL's certificate verdict when that was the
    /// cause (e.g. "self-signed certificate in certificate chain", "hostname mismatch").
    #[error("TLS handshake with {authority} failed: {reason}")]
    Tls { authority: String, reason: String },

    /// HTTP framing or connection error after the handshake (including a dropped connection).
    #[error("HTTP error talking to {authority}: {source}")]
    Http {
        authority: String,
        source: hyper::Error,
    },

    /// The response body exceeded [`crate::MAX_BODY`].
    #[error("response body from {authority} is larger than {limit} bytes")]
    BodyTooLarge { authority: String, limit: usize },

    /// `HTTPS_PROXY` / `https_proxy` does not name a usable HTTP proxy.
    #[error("{variable}={url:?} is not a usable proxy: {reason}")]
    ProxyConfig {
        variable: String,
        url: String,
        reason: String,
    },

    /// The proxy could not be reached, or dropped the connection during CONNECT.
    #[error("cannot reach the HTTPS proxy {proxy}: {source}; check https_proxy (or set no_proxy for hosts reached directly)")]
    ProxyConnect {
        proxy: String,
        source: std::io::Error,
    },

    /// The proxy wants credentials, or other ones than those in the proxy URL.
    #[error(
        "the HTTPS proxy {proxy} refused to open a tunnel to {target}: {status_line}; {}",
        if *sent_credentials { "it does not accept the user name and password in https_proxy" } else { "it wants a user name and password: write them into https_proxy as http://user:password@host:port" }
    )]
    ProxyAuth {
        proxy: String,
        target: String,
        status_line: String,
        sent_credentials: bool,
    },

    /// The proxy answered CONNECT with something other than success.
    #[error("the HTTPS proxy {proxy} refused to open a tunnel to {target}: {status_line}; the proxy must allow CONNECT to that host and port")]
    ProxyRefused {
        proxy: String,
        target: String,
        status_line: String,
    },

    /// The whole exchange took longer than the client's timeout.
    #[error("no complete response from {url} within {after:?}")]
    Timeout { url: String, after: Duration },
}

impl Error {
    /// True for failures worth retrying later: connect errors, dropped connections and timeouts
    /// (not bad URLs, TLS trust failures or configuration errors).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Error::Connect { .. }
                | Error::Http { .. }
                | Error::Timeout { .. }
                | Error::ProxyConnect { .. }
                | Error::ProxyRefused { .. }
        )
    }
}
