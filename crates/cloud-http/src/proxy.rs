//! An HTTPS proxy, as upstream's identityd uses one: `HTTPS_PROXY` / `https_proxy` name an HTTP
//! proxy (`http://[user:password@]host[:port]`), every connection to DPS or IoT Hub becomes a
//! `CONNECT host:port` tunnel through it, and TLS runs end to end inside the tunnel, so the proxy
//! sees neither tokens nor keys. `NO_PROXY` / `no_proxy` (which upstream ignores) lists hosts to
//! reach directly, as curl reads it.
//!
//! Hand-written rather than taken from a crate: the tunnel is one request and one status line,
//! and this way a proxy URL that does not parse is an error naming the variable (not silently a
//! direct connection), and a refusal carries the proxy's own status line.

use std::net::IpAddr;

use percent_encoding::percent_decode_str;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use zeroize::Zeroizing;

use crate::Error;

/// Largest CONNECT response head read; proxies answer with a few hundred bytes.
const MAX_HEAD: usize = 16 * 1024;

/// Where and how to reach the proxy.
#[derive(Clone)]
pub struct Proxy {
    host: String,
    port: u16,
    /// `Basic <base64(user:password)>`, when the URL carries credentials.
    authorization: Option<Zeroizing<String>>,
    /// The URL with the password masked, for messages and logs.
    shown: String,
    /// The environment variable it came from, or `"configuration"`.
    source: String,
    no_proxy: NoProxy,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Proxy({} from {})", self.shown, self.source)
    }
}

impl Proxy {
    /// The proxy `HTTPS_PROXY` (else `https_proxy`) names, with `NO_PROXY` (else `no_proxy`);
    /// `None` when neither is set or it is empty.
    pub fn from_env() -> Result<Option<Proxy>, Error> {
        let Some((var, url)) = first_env(&["HTTPS_PROXY", "https_proxy"]) else {
            return Ok(None);
        };
        let no_proxy = first_env(&["NO_PROXY", "no_proxy"]).map(|(_, v)| v).unwrap_or_default();
        Proxy::parse(&url, &no_proxy, var).map(Some)
    }

    /// A proxy from its URL (`http://[user:password@]host[:port]`, port 80 by default, as curl)
    /// and a `no_proxy` list; `source` names where the URL came from in errors.
    pub fn parse(url: &str, no_proxy: &str, source: &str) -> Result<Proxy, Error> {
        let bad = |reason: &str| Error::ProxyConfig {
            variable: source.to_owned(),
            url: mask(url),
            reason: reason.to_owned(),
        };
        let rest = match url.split_once("://") {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => rest,
            Some((scheme, _)) => {
                return Err(bad(&format!(
                    "the scheme {scheme}:// is not supported; write http://host:port (TLS to DPS and IoT Hub runs inside the proxy's tunnel)"
                )))
            }
            None => url,
        };
        let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        let (host, port) = split_host_port(hostport).ok_or_else(|| bad("no host[:port] in it"))?;
        let authorization = match userinfo {
            None => None,
            Some(info) => {
                let (user, password) = info.split_once(':').unwrap_or((info, ""));
                let decode = |s: &str| {
                    percent_decode_str(s)
                        .decode_utf8()
                        .map(|c| Zeroizing::new(c.into_owned()))
                        .map_err(|_| bad("its user name or password is not valid percent-encoded UTF-8"))
                };
                let credentials = Zeroizing::new(format!("{}:{}", *decode(user)?, *decode(password)?));
                Some(Zeroizing::new(format!(
                    "Basic {}",
                    data_encoding::BASE64.encode(credentials.as_bytes())
                )))
            }
        };
        let shown = format!("http://{}{}", userinfo.map(mask_userinfo).unwrap_or_default(), hostport);
        Ok(Proxy {
            host,
            port,
            authorization,
            shown,
            source: source.to_owned(),
            no_proxy: NoProxy::parse(no_proxy),
        })
    }

    /// Whether a connection to `host` goes through the proxy (not listed in `no_proxy`).
    pub fn applies_to(&self, host: &str) -> bool {
        !self.no_proxy.contains(host)
    }

    /// The URL with its password masked, e.g. `http://user:***@proxy:3128`.
    pub fn shown(&self) -> &str {
        &self.shown
    }

    /// The variable the URL came from.
    pub fn source(&self) -> &str {
        &self.source
    }

    pub fn has_credentials(&self) -> bool {
        self.authorization.is_some()
    }

    /// Whether the proxy opens a tunnel to `host:port` within `timeout` (for diagnostics; the
    /// tunnel is closed at once).
    pub async fn open_tunnel(&self, host: &str, port: u16, timeout: std::time::Duration) -> Result<(), Error> {
        match tokio::time::timeout(timeout, self.connect(host, port)).await {
            Ok(result) => result.map(drop),
            Err(_) => Err(Error::Timeout {
                url: format!("CONNECT {host}:{port} through {}", self.shown),
                after: timeout,
            }),
        }
    }

    /// Opens a TCP connection to the proxy and asks it for a tunnel to `host:port`.
    pub(crate) async fn connect(&self, host: &str, port: u16) -> Result<TcpStream, Error> {
        let mut tcp = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|source| Error::ProxyConnect {
                proxy: self.shown.clone(),
                source,
            })?;
        let target = if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        let mut request = Zeroizing::new(format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n"));
        if let Some(auth) = &self.authorization {
            request.push_str("Proxy-Authorization: ");
            request.push_str(auth);
            request.push_str("\r\n");
        }
        request.push_str("\r\n");
        let io = |source| Error::ProxyConnect {
            proxy: self.shown.clone(),
            source,
        };
        tcp.write_all(request.as_bytes()).await.map_err(io)?;
        let head = read_head(&mut tcp).await.map_err(io)?;
        let status_line = head.lines().next().unwrap_or("").trim().to_owned();
        let status = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse::<u16>().ok());
        match status {
            Some(200..=299) => Ok(tcp),
            // 407 is the standard answer; tinyproxy answers 401 to wrong credentials.
            Some(401 | 407) => Err(Error::ProxyAuth {
                proxy: self.shown.clone(),
                target,
                status_line,
                sent_credentials: self.authorization.is_some(),
            }),
            _ => Err(Error::ProxyRefused {
                proxy: self.shown.clone(),
                target,
                status_line: if status_line.is_empty() {
                    "no answer (the connection closed)".to_owned()
                } else {
                    status_line
                },
            }),
        }
    }
}

/// Reads the response head (through the blank line), byte by byte so nothing of the TLS stream
/// that follows is consumed.
async fn read_head(tcp: &mut TcpStream) -> std::io::Result<String> {
    let mut head = Vec::with_capacity(256);
    while !head.ends_with(b"\r\n\r\n") && !head.ends_with(b"\n\n") {
        if head.len() >= MAX_HEAD {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("its answer to CONNECT is longer than {MAX_HEAD} bytes"),
            ));
        }
        let mut byte = [0u8; 1];
        if tcp.read(&mut byte).await? == 0 {
            break;
        }
        head.push(byte[0]);
    }
    Ok(String::from_utf8_lossy(&head).into_owned())
}

fn first_env(names: &[&'static str]) -> Option<(&'static str, String)> {
    names.iter().find_map(|name| {
        std::env::var(name)
            .ok()
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
            .map(|v| (*name, v))
    })
}

/// `host[:port]` or `[v6][:port]`; port 80 when absent.
fn split_host_port(s: &str) -> Option<(String, u16)> {
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        (host, after.strip_prefix(':'))
    } else {
        match s.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        }
    };
    if host.is_empty() {
        return None;
    }
    let port = match port {
        None => 80,
        Some(p) => p.parse().ok()?,
    };
    Some((host.to_owned(), port))
}

fn mask_userinfo(info: &str) -> String {
    match info.split_once(':') {
        Some((user, _)) => format!("{user}:***@"),
        None => format!("{info}@"),
    }
}

/// The URL with any password replaced, for an error about a URL that may not parse.
fn mask(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").map_or(("", url), |(s, r)| (s, r));
    let prefix = if scheme.is_empty() { String::new() } else { format!("{scheme}://") };
    match rest.split_once('@') {
        Some((info, after)) => format!("{prefix}{}{after}", mask_userinfo(info)),
        None => url.to_owned(),
    }
}

/// `no_proxy` as curl reads it: comma-separated host names (each also matching its subdomains,
/// a leading dot optional), IP addresses, CIDR ranges, or `*` for every host.
#[derive(Clone, Debug, Default)]
struct NoProxy {
    all: bool,
    domains: Vec<String>,
    nets: Vec<(IpAddr, u8)>,
}

impl NoProxy {
    fn parse(list: &str) -> NoProxy {
        let mut no = NoProxy::default();
        for entry in list.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            if entry == "*" {
                no.all = true;
            } else if let Some(net) = parse_net(entry) {
                no.nets.push(net);
            } else {
                // A port in an entry (`host:443`) is ignored, as curl does.
                let name = entry.trim_start_matches('.');
                let name = name.rsplit_once(':').map_or(name, |(h, _)| h);
                no.domains.push(name.to_ascii_lowercase());
            }
        }
        no
    }

    fn contains(&self, host: &str) -> bool {
        if self.all {
            return true;
        }
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = host.parse::<IpAddr>() {
            return self.nets.iter().any(|(net, bits)| in_net(ip, *net, *bits));
        }
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        self.domains
            .iter()
            .any(|d| host == *d || host.ends_with(&format!(".{d}")))
    }
}

fn parse_net(entry: &str) -> Option<(IpAddr, u8)> {
    let (addr, bits) = match entry.split_once('/') {
        Some((a, b)) => (a, Some(b.parse::<u8>().ok()?)),
        None => (entry, None),
    };
    let addr: IpAddr = addr.trim_start_matches('[').trim_end_matches(']').parse().ok()?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let bits = bits.unwrap_or(max);
    (bits <= max).then_some((addr, bits))
}

fn in_net(ip: IpAddr, net: IpAddr, bits: u8) -> bool {
    let (ip, net, width) = match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(b)) => (u32::from(a) as u128, u32::from(b) as u128, 32),
        (IpAddr::V6(a), IpAddr::V6(b)) => (u128::from(a), u128::from(b), 128),
        _ => return false,
    };
    if bits == 0 {
        return true;
    }
    let shift = width - u32::from(bits);
    (ip >> shift) == (net >> shift)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_become_basic_auth_and_are_masked_when_shown() {
        let p = Proxy::parse("http://us%40er:p%3Ass@proxy.corp:3128/", "", "https_proxy").unwrap();
        assert_eq!((p.host.as_str(), p.port), ("proxy.corp", 3128));
        // base64("us@er:p:ss")
        assert_eq!(p.authorization.as_deref().map(|s| s.as_str()), Some("Basic dXNAZXI6cDpzcw=="));
        assert_eq!(p.shown(), "http://us%40er:***@proxy.corp:3128");
        assert!(!format!("{p:?}").contains("p%3Ass"));
    }

    #[test]
    fn a_bare_host_port_is_http_and_the_port_defaults_to_80() {
        let p = Proxy::parse("proxy:8080", "", "HTTPS_PROXY").unwrap();
        assert_eq!((p.host.as_str(), p.port, p.has_credentials()), ("proxy", 8080, false));
        assert_eq!(Proxy::parse("http://[::1]", "", "x").unwrap().port, 80);
    }

    #[test]
    fn a_bad_proxy_url_names_the_variable_and_hides_the_password() {
        let e = Proxy::parse("socks5://u:secret@h:1080", "", "https_proxy").unwrap_err().to_string();
        assert!(e.contains("https_proxy") && e.contains("socks5") && !e.contains("secret"), "{e}");
        let e = Proxy::parse("http://h:notaport", "", "HTTPS_PROXY").unwrap_err().to_string();
        assert!(e.contains("HTTPS_PROXY") && e.contains("host[:port]"), "{e}");
    }

    #[test]
    fn no_proxy_matches_names_subdomains_addresses_and_ranges() {
        let p = Proxy::parse("http://proxy:3128", " .Azure-Devices.net, 10.0.0.0/8, ::1, internal:443", "x").unwrap();
        assert!(!p.applies_to("my-hub.azure-devices.net"));
        assert!(!p.applies_to("azure-devices.net"));
        assert!(p.applies_to("notazure-devices.net"));
        assert!(!p.applies_to("10.1.2.3"));
        assert!(p.applies_to("11.1.2.3"));
        assert!(!p.applies_to("[::1]"));
        assert!(!p.applies_to("internal"));
        assert!(p.applies_to("global.azure-devices-provisioning.net"));
        let all = Proxy::parse("http://proxy:3128", "*", "x").unwrap();
        assert!(!all.applies_to("anything"));
    }
}
