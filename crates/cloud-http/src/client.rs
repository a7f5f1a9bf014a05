//! The client: a TLS context and a timeout, and `request`, which opens one connection, sends one
//! request and reads the whole response within that timeout.

use std::net::IpAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{HeaderMap, HeaderName, HeaderValue, HOST};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_openssl::SslStream;

use crate::proxy::Proxy;
use crate::target::Target;
use crate::tls::{Roots, Trust};
use crate::Error;

/// Upstream identityd's `cloud_timeout_sec` default: long enough for a slow DPS.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(70);

/// Largest response body read; DPS and Hub answers are a few KiB.
pub const MAX_BODY: usize = 4 * 1024 * 1024;

/// A complete response.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Response {
    /// A header's value if present and valid UTF-8.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The body as text, lossily (for messages and logs).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Builds a [`Client`]. By default the system roots are trusted and the timeout is
/// [`DEFAULT_TIMEOUT`].
#[derive(Debug, Clone)]
pub struct ClientBuilder {
    roots: Roots,
    timeout: Duration,
    resolve: Vec<(String, IpAddr)>,
    proxy: ProxySetting,
}

#[derive(Debug, Clone)]
enum ProxySetting {
    None,
    FromEnv,
    Given(Proxy),
}

impl Default for ClientBuilder {
    fn default() -> Self {
        Self {
            roots: Roots {
                system: true,
                ..Roots::default()
            },
            timeout: DEFAULT_TIMEOUT,
            resolve: Vec::new(),
            proxy: ProxySetting::None,
        }
    }
}

impl ClientBuilder {
    /// Also trust the CA certificates in this PEM file (a bundle may hold several).
    pub fn trust_ca_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.roots.files.push(path.into());
        self
    }

    /// Also trust the CA certificates in this PEM text.
    pub fn trust_ca_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.roots.pems.push(pem.into());
        self
    }

    /// Whether the system's default roots are trusted too (default true). With `false`, only the
    /// CAs given with `trust_ca_*` are.
    pub fn system_roots(mut self, on: bool) -> Self {
        self.roots.system = on;
        self
    }

    /// Deadline for each request: connect, TLS handshake, sending and reading the whole body.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Connects to `addr` whenever a URL names `host` (curl's `--resolve`), instead of asking the
    /// system resolver; the certificate is still verified against `host`. For a DPS or hub
    /// reached by a name that DNS does not know (a lab, the emulator under a DNS name).
    pub fn resolve(mut self, host: &str, addr: IpAddr) -> Self {
        self.resolve.push((host.to_ascii_lowercase(), addr));
        self
    }

    /// Go through the HTTPS proxy that `HTTPS_PROXY` / `https_proxy` name (with `NO_PROXY` /
    /// `no_proxy`), as upstream's identityd does; read when `build` is called.
    pub fn proxy_from_env(mut self) -> Self {
        self.proxy = ProxySetting::FromEnv;
        self
    }

    /// Go through this proxy (`None`: connect directly).
    pub fn proxy(mut self, proxy: Option<Proxy>) -> Self {
        self.proxy = proxy.map_or(ProxySetting::None, ProxySetting::Given);
        self
    }

    /// Loads the CA bundles and reads the proxy setting now, so a bad path or proxy URL fails at
    /// start rather than at the first request. The system store is read at the first request.
    pub fn build(self) -> Result<Client, Error> {
        let proxy = match self.proxy {
            ProxySetting::None => None,
            ProxySetting::FromEnv => Proxy::from_env()?,
            ProxySetting::Given(p) => Some(p),
        };
        if let Some(p) = &proxy {
            log::info!("using the HTTPS proxy {} (from {})", p.shown(), p.source());
        }
        Ok(Client {
            trust: Arc::new(Trust::load(&self.roots)?),
            timeout: self.timeout,
            resolve: Arc::new(self.resolve),
            proxy: proxy.map(Arc::new),
        })
    }
}

/// An HTTPS client. Cheap to clone; clones share the TLS context.
#[derive(Clone)]
pub struct Client {
    trust: Arc<Trust>,
    timeout: Duration,
    resolve: Arc<Vec<(String, IpAddr)>>,
    proxy: Option<Arc<Proxy>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("timeout", &self.timeout)
            .field("proxy", &self.proxy)
            .finish_non_exhaustive()
    }
}

impl Client {
    pub fn builder() -> ClientBuilder {
        ClientBuilder::default()
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The proxy connections to `host` go through, if any.
    pub fn proxy_for(&self, host: &str) -> Option<&Proxy> {
        self.proxy.as_deref().filter(|p| p.applies_to(host))
    }

    /// Sends `method url` with `headers` (name, value) and `body` (empty for none) over a new TLS
    /// connection and returns the whole response. A `Host` header is added from the URL unless
    /// given; `Content-Length` is set by hyper. Any status is a response, not an error.
    pub async fn request(
        &self,
        method: Method,
        url: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Result<Response, Error> {
        let target = Target::parse(url)?;
        let request = build_request(method, &target, headers, body.into())?;
        match tokio::time::timeout(self.timeout, self.exchange(&target, request)).await {
            Ok(result) => result,
            Err(_) => Err(Error::Timeout {
                url: url.to_owned(),
                after: self.timeout,
            }),
        }
    }

    async fn exchange(
        &self,
        target: &Target,
        request: Request<Full<Bytes>>,
    ) -> Result<Response, Error> {
        let authority = target.authority.clone();
        let tcp = match self.proxy_for(&target.host) {
            // The proxy resolves the name; a `resolve` pin does not apply through it.
            Some(proxy) => proxy.connect(&target.host, target.port).await?,
            None => {
                let pinned = self
                    .resolve
                    .iter()
                    .find(|(host, _)| host.eq_ignore_ascii_case(&target.host))
                    .map(|(_, addr)| *addr);
                let connected = match pinned {
                    Some(addr) => TcpStream::connect((addr, target.port)).await,
                    None => TcpStream::connect((target.host.as_str(), target.port)).await,
                };
                connected.map_err(|source| Error::Connect {
                    authority: authority.clone(),
                    source,
                })?
            }
        };
        let _ = tcp.set_nodelay(true);

        // Host name verification, by IP address when the host is one, and SNI for DNS names.
        let ssl = self.trust.ssl(&target.host)?;
        let mut stream = SslStream::new(ssl, tcp)?;
        if let Err(e) = Pin::new(&mut stream).connect().await {
            let verify = stream.ssl().verify_result();
            let reason = if verify.as_raw() != 0 {
                format!("certificate verification failed: {}", verify.error_string())
            } else {
                e.to_string()
            };
            return Err(Error::Tls { authority, reason });
        }

        let http_error = |source| Error::Http {
            authority: authority.clone(),
            source,
        };
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(http_error)?;
        // The connection task ends when `sender` is dropped (or the server closes); abort it too if
        // this future is dropped by the timeout, so no socket outlives the request.
        let driver = AbortOnDrop(tokio::spawn(async move {
            if let Err(e) = connection.await {
                log::debug!("connection ended with an error: {e}");
            }
        }));

        let response = sender.send_request(request).await.map_err(http_error)?;
        let (parts, body) = response.into_parts();
        let body = Limited::new(body, MAX_BODY)
            .collect()
            .await
            .map_err(|e| match e.downcast::<hyper::Error>() {
                Ok(source) => Error::Http {
                    authority: authority.clone(),
                    source: *source,
                },
                Err(_) => Error::BodyTooLarge {
                    authority: authority.clone(),
                    limit: MAX_BODY,
                },
            })?;
        drop(sender);
        drop(driver);
        Ok(Response {
            status: parts.status,
            headers: parts.headers,
            body: body.to_bytes(),
        })
    }
}

fn build_request(
    method: Method,
    target: &Target,
    headers: &[(&str, &str)],
    body: Bytes,
) -> Result<Request<Full<Bytes>>, Error> {
    let mut request = Request::new(Full::new(body));
    *request.method_mut() = method;
    *request.uri_mut() =
        target
            .path_and_query
            .parse()
            .map_err(|e: hyper::http::uri::InvalidUri| Error::InvalidUrl {
                url: target.path_and_query.clone(),
                reason: e.to_string(),
            })?;
    let map = request.headers_mut();
    for (name, value) in headers {
        let invalid = |reason: String| Error::InvalidHeader {
            name: (*name).to_owned(),
            reason,
        };
        let header_name =
            HeaderName::from_bytes(name.as_bytes()).map_err(|e| invalid(e.to_string()))?;
        let header_value = HeaderValue::from_str(value).map_err(|e| invalid(e.to_string()))?;
        map.append(header_name, header_value);
    }
    if !map.contains_key(HOST) {
        let host = HeaderValue::from_str(&target.authority).map_err(|e| Error::InvalidUrl {
            url: target.authority.clone(),
            reason: e.to_string(),
        })?;
        map.insert(HOST, host);
    }
    Ok(request)
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
