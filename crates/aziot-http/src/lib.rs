//! HTTP/1.1-over-Unix-socket plumbing shared by our daemons (keyd and tpmd), with their log
//! format (`logging`) and systemd readiness (`notify`).
//!
//! Upstream's `http-common` defines the conventions every aziot client expects:
//! a mandatory `api-version`, `{"message": ...}` error bodies, JSON bodies parsed
//! with particular status codes, the caller's uid taken from `SO_PEERCRED`, and
//! systemd socket activation. Writing them once here keeps each daemon down to its
//! routes. Where upstream is weak (it drops the 11th concurrent connection of a uid
//! without a reply) we queue and answer `503` with a message instead.
//!
//! Typical daemon start-up:
//!
//! ```no_run
//! # async fn run<S: aziot_http::Service>(svc: std::sync::Arc<S>) -> Result<(), Box<dyn std::error::Error>> {
//! use aziot_http::{listen, serve, Endpoint, ServerOptions, SystemdSockets};
//! let mut systemd = SystemdSockets::from_env()?;
//! let endpoint: Endpoint = "unix:///run/aziot/keyd.sock".parse()?;
//! let listener = listen(&endpoint, &mut systemd, "aziot-keyd.socket", "aziotks")?;
//! serve(listener, svc, ServerOptions::default(), async { /* SIGTERM */ }).await;
//! # Ok(()) }
//! ```

mod bind;
mod body;
mod budget;
mod client;
mod deadlines;
mod dispatch;
mod endpoint;
mod error;
mod json;
mod limiter;
mod listen;
pub mod logging;
pub mod notify;
mod process;
mod query;
mod raw;
mod request;
mod response;
mod server;
mod service;
mod signal;
mod systemd;

pub use bind::{bind_unix, bind_unix_for_group, BindError};
pub use client::{ClientError, UdsClient};
pub use endpoint::{Endpoint, EndpointError};
pub use error::HttpError;
pub use listen::{listen, ListenError};
pub use request::Request;
pub use response::Response;
pub use process::{raise_open_file_limit, return_freed_memory};
pub use deadlines::Timeouts;
pub use server::{serve, ServerOptions, BODY_READ_TIMEOUT, SHUTDOWN_GRACE};
pub use service::{Service, DEFAULT_BODY_LIMIT};
pub use signal::shutdown_signal;
pub use systemd::{SystemdError, SystemdSockets};

/// Re-exported so services need no direct dependency on `http`/`bytes`.
pub use bytes::Bytes;
pub use hyper::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
