//! An HTTPS-only client for the cloud side of provisioning: the DPS device and service APIs, IoT
//! Hub, and the emulator's webhooks.
//!
//! Why not a general-purpose client: every request here carries a SAS token, so the client must
//! never fall back to plain HTTP, must verify the server against roots the operator chose (a
//! private CA bundle for an emulator or a TLS-inspecting proxy, with or without the system roots),
//! and must give up after one deadline that covers connect, handshake, request and body, so a
//! provisioning loop can decide what to do next. It is built on hyper 1's connection API and
//! OpenSSL (through `tokio-openssl`), one connection per request: DPS and Hub calls are rare, and
//! a fresh connection never reuses a socket the server already dropped. Behind an HTTPS proxy
//! (`https_proxy`, see [`Proxy`]) each connection is a CONNECT tunnel with TLS inside it.
//!
//! ```no_run
//! # async fn demo() -> Result<(), cloud_http::Error> {
//! let client = cloud_http::Client::builder()
//!     .trust_ca_file("/var/lib/iot-emulator/ca.pem")
//!     .timeout(std::time::Duration::from_secs(10))
//!     .build()?;
//! let response = client
//!     .request(cloud_http::Method::GET, "https://127.0.0.1:8443/healthz", &[("Accept", "application/json")], Vec::new())
//!     .await?;
//! println!("{} {:?}", response.status, response.body);
//! # Ok(()) }
//! ```

mod client;
mod error;
mod proxy;
mod target;
mod tls;

pub use client::{Client, ClientBuilder, Response, DEFAULT_TIMEOUT, MAX_BODY};
pub use error::Error;
pub use proxy::Proxy;
pub use hyper::header::{HeaderMap, HeaderName, HeaderValue};
pub use hyper::{Method, StatusCode};
