//! A minimal client for our own sockets (tests, benchmarks, the CLI).
//!
//! One keep-alive connection per client, reopened when the server closed it, so a
//! benchmark measures request handling rather than connection setup. Requests on
//! one client are serialized; use several clients for concurrency.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{CONTENT_TYPE, HOST};
use hyper::{Method, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use tokio::sync::Mutex;

/// Upstream's client default per attempt.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("could not connect to {path}: {source}")]
    Connect {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid request {path_and_query:?}: {source}")]
    InvalidRequest {
        path_and_query: String,
        source: hyper::http::Error,
    },
    #[error("{}", describe_http_error(path, source))]
    Http { path: PathBuf, source: hyper::Error },
    #[error("no response from {path} within {after:?}")]
    Timeout { path: PathBuf, after: Duration },
    #[error("server answered {status}: {message}")]
    Status { status: StatusCode, message: String },
    #[error("could not decode the {status} response as the expected JSON: {source}")]
    Decode {
        status: StatusCode,
        source: serde_json::Error,
    },
}

/// A socket that accepts a connection and closes it without an answer is, with socket
/// activation, a service that systemd could not start: say that rather than hyper's
/// "connection error".
fn describe_http_error(path: &Path, source: &hyper::Error) -> String {
    let reset = std::error::Error::source(source)
        .and_then(|e| e.downcast_ref::<std::io::Error>())
        .is_some_and(|e| matches!(e.kind(), std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe));
    if source.is_incomplete_message() || reset {
        format!(
            "{} accepted the connection and closed it without an answer (with socket activation: the service behind it is failing to start)",
            path.display()
        )
    } else {
        format!("HTTP error talking to {}: {source}", path.display())
    }
}

pub struct UdsClient {
    path: PathBuf,
    timeout: Duration,
    connection: Mutex<Option<SendRequest<Full<Bytes>>>>,
}

impl UdsClient {
    /// Does not connect yet; the first request does.
    pub fn new(socket_path: impl Into<PathBuf>) -> Self {
        UdsClient {
            path: socket_path.into(),
            timeout: DEFAULT_TIMEOUT,
            connection: Mutex::new(None),
        }
    }

    /// Time limit for one request, including (re)connecting (default 30 s).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    pub fn socket_path(&self) -> &Path {
        &self.path
    }

    /// Sends one request; `body`, if any, is sent as `application/json`.
    /// Any status is `Ok`: the caller decides what a 4xx means.
    pub async fn request(
        &self,
        method: Method,
        path_and_query: &str,
        body: Option<Bytes>,
    ) -> Result<(StatusCode, Bytes), ClientError> {
        let build = || {
            let mut builder = hyper::Request::builder()
                .method(method.clone())
                .uri(path_and_query)
                .header(HOST, "localhost");
            if body.is_some() {
                builder = builder.header(CONTENT_TYPE, "application/json");
            }
            builder
                .body(Full::new(body.clone().unwrap_or_default()))
                .map_err(|source| ClientError::InvalidRequest {
                    path_and_query: path_and_query.to_owned(),
                    source,
                })
        };
        let request = build()?;
        match tokio::time::timeout(self.timeout, self.send(request)).await {
            Ok(result) => result,
            Err(_elapsed) => Err(ClientError::Timeout {
                path: self.path.clone(),
                after: self.timeout,
            }),
        }
    }

    /// Sends `body` (if any) as JSON and decodes a 2xx response as `T`; any other
    /// status becomes [`ClientError::Status`] with the server's `message`.
    pub async fn json<T: serde::de::DeserializeOwned>(
        &self,
        method: Method,
        path_and_query: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<T, ClientError> {
        let body = body.map(|v| Bytes::from(v.to_string()));
        let (status, bytes) = self.request(method, path_and_query, body).await?;
        if !status.is_success() {
            return Err(ClientError::Status {
                status,
                message: error_message(&bytes),
            });
        }
        // 204 carries no JSON; let `()` and `Option<_>` decode from `null`.
        let bytes = if bytes.is_empty() {
            Bytes::from_static(b"null")
        } else {
            bytes
        };
        serde_json::from_slice(&bytes).map_err(|source| ClientError::Decode { status, source })
    }

    async fn send(
        &self,
        request: hyper::Request<Full<Bytes>>,
    ) -> Result<(StatusCode, Bytes), ClientError> {
        let mut slot = self.connection.lock().await;
        let reusable = match slot.take() {
            Some(mut sender) => sender.ready().await.is_ok().then_some(sender),
            None => None,
        };
        let (mut sender, reused) = match reusable {
            Some(sender) => (sender, true),
            None => (self.connect().await?, false),
        };
        let response = match sender.try_send_request(request).await {
            Ok(response) => response,
            // The server closed the idle connection before reading our request:
            // safe to send it again on a fresh one.
            Err(mut err) if reused && err.message().is_some() => {
                let Some(request) = err.take_message() else {
                    return Err(self.http_error(err.into_error()));
                };
                sender = self.connect().await?;
                sender
                    .send_request(request)
                    .await
                    .map_err(|e| self.http_error(e))?
            }
            Err(err) => return Err(self.http_error(err.into_error())),
        };
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| self.http_error(e))?
            .to_bytes();
        if !sender.is_closed() {
            *slot = Some(sender);
        }
        Ok((status, body))
    }

    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, ClientError> {
        let stream =
            UnixStream::connect(&self.path)
                .await
                .map_err(|source| ClientError::Connect {
                    path: self.path.clone(),
                    source,
                })?;
        let (sender, connection) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| self.http_error(e))?;
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                log::debug!("client connection ended: {err}");
            }
        });
        Ok(sender)
    }

    fn http_error(&self, source: hyper::Error) -> ClientError {
        ClientError::Http {
            path: self.path.clone(),
            source,
        }
    }
}

/// The `message` of an upstream-style error body, else the body as text.
fn error_message(body: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct ErrorBody {
        message: String,
    }
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(parsed) => parsed.message,
        Err(_) => String::from_utf8_lossy(body).into_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    #[test]
    fn error_message_prefers_the_message_field() {
        assert_eq!(error_message(br#"{"message":"not found"}"#), "not found");
        assert_eq!(error_message(b"plain"), "plain");
    }

    #[tokio::test]
    async fn a_socket_that_closes_without_an_answer_is_named_as_such() {
        let dir = tempfile::tempdir().unwrap();
        // Accepts, reads a little, closes: what a socket-activated unit whose service fails does.
        let closing = dir.path().join("closing.sock");
        let listener = tokio::net::UnixListener::bind(&closing).unwrap();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let mut buf = [0u8; 16];
                let _ = tokio::io::AsyncReadExt::read(&mut stream, &mut buf).await;
            }
        });
        // Never accepts, then goes away with the connection in its backlog.
        let backlog = dir.path().join("backlog.sock");
        let listener = std::os::unix::net::UnixListener::bind(&backlog).unwrap();
        let client = UdsClient::new(&backlog);
        let pending = tokio::spawn(async move { client.request(Method::GET, "/x", None).await });
        tokio::time::sleep(Duration::from_millis(200)).await;
        drop(listener);
        for e in [UdsClient::new(&closing).request(Method::GET, "/x", None).await.unwrap_err(), pending.await.unwrap().unwrap_err()] {
            let text = e.to_string();
            assert!(text.contains("accepted the connection and closed it without an answer"), "{text}");
            assert!(text.contains("failing to start"), "{text}");
        }
    }

    #[tokio::test]
    async fn connect_error_names_the_socket() {
        let c = UdsClient::new("/nonexistent/dir/x.sock");
        let e = c.request(Method::GET, "/x", None).await.unwrap_err();
        assert!(e.to_string().contains("/nonexistent/dir/x.sock"), "{e}");
    }

    /// A bare hyper server counting accepted connections; answers `Connection:
    /// close` on the path `/close`.
    async fn counting_server(path: &Path) -> Arc<AtomicUsize> {
        let listener = tokio::net::UnixListener::bind(path).unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&accepted);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                let svc = hyper::service::service_fn(
                    |req: hyper::Request<hyper::body::Incoming>| async move {
                        let mut res = hyper::Response::new(Full::new(Bytes::from_static(b"{}")));
                        if req.uri().path() == "/close" {
                            res.headers_mut()
                                .insert(hyper::header::CONNECTION, "close".parse().unwrap());
                        }
                        Ok::<_, std::convert::Infallible>(res)
                    },
                );
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc),
                );
            }
        });
        accepted
    }

    #[tokio::test]
    async fn reuses_one_connection_and_reconnects_after_close() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let accepted = counting_server(&path).await;
        let c = UdsClient::new(&path);
        for _ in 0..3 {
            let v: serde_json::Value = c.json(Method::GET, "/a", None).await.unwrap();
            assert_eq!(v, serde_json::json!({}));
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);

        c.request(Method::GET, "/close", None).await.unwrap();
        let (status, _) = c
            .request(Method::POST, "/a", Some(Bytes::from_static(b"{}")))
            .await
            .unwrap();
        assert_eq!(status, StatusCode::OK);
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }
}
