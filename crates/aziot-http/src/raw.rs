//! Responses written straight to a socket, outside hyper: a refusal before any request is read
//! (over the connection budget), a 408 when a request head never completes, and the JSON body
//! given to the bare error responses hyper itself sends when it cannot parse a request.
//!
//! Every answer of our daemons carries upstream's `{"message": ...}` body, these too.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use hyper::StatusCode;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A complete `Connection: close` response with a `{"message"}` JSON body.
pub(crate) fn response(status: StatusCode, message: &str) -> Vec<u8> {
    let body = serde_json::json!({ "message": message }).to_string();
    format!(
        "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        status.as_str(),
        status.canonical_reason().unwrap_or(""),
        body.len()
    )
    .into_bytes()
}

/// What hyper's automatic answer to an unparsable request means, for the caller.
fn parse_error_message(status: u16) -> Option<&'static str> {
    match status {
        400 => Some("malformed HTTP/1.1 request: the request line or a header could not be parsed"),
        414 => Some("the request URI is too long"),
        431 => Some("the request headers are too large"),
        _ => None,
    }
}

/// If `head` is one of hyper's automatic error responses (400, 414 or 431 with an empty body,
/// which no route of ours ever sends), the same response with a `{"message"}` body.
fn with_message(head: &[u8]) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(head).ok()?;
    let status: u16 = text.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()?;
    let message = parse_error_message(status)?;
    let empty = text
        .split("\r\n")
        .any(|line| line.eq_ignore_ascii_case("content-length: 0"));
    let typed = text
        .split("\r\n")
        .any(|line| line.to_ascii_lowercase().starts_with("content-type:"));
    let status = StatusCode::from_u16(status).ok()?;
    (empty && !typed).then(|| response(status, message))
}

/// Passes a connection through, giving hyper's automatic error responses a JSON body.
///
/// hyper writes such a response as one buffer (head only: vectored writes are off), as the
/// first write after the previous response, and then closes; so each write that starts with a
/// complete head is checked, and nothing else is touched.
pub(crate) struct ErrorBodies<T> {
    io: T,
    /// Replacement bytes not yet written.
    pending: Vec<u8>,
    written: usize,
}

impl<T> ErrorBodies<T> {
    pub(crate) fn new(io: T) -> Self {
        Self { io, pending: Vec::new(), written: 0 }
    }
}

impl<T: AsyncWrite + Unpin> ErrorBodies<T> {
    fn poll_pending(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.written < self.pending.len() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &self.pending[self.written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
        }
        self.pending.clear();
        self.written = 0;
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for ErrorBodies<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for ErrorBodies<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        ready!(self.poll_pending(cx))?;
        if buf.starts_with(b"HTTP/1.1 4") {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                if let Some(replacement) = with_message(&buf[..end + 4]) {
                    self.pending = replacement;
                    self.pending.extend_from_slice(&buf[end + 4..]);
                    // The bytes are ours now; they go out with this call or the next flush.
                    let _ = self.poll_pending(cx)?;
                    return Poll::Ready(Ok(buf.len()));
                }
            }
        }
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_pending(cx))?;
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_pending(cx))?;
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn raw_response_is_complete_json() {
        let r = String::from_utf8(response(StatusCode::SERVICE_UNAVAILABLE, "busy \"now\"")).unwrap();
        let (head, body) = r.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 503 Service Unavailable\r\n"), "{head}");
        assert!(head.contains(&format!("content-length: {}", body.len())), "{head}");
        assert!(head.contains("connection: close"));
        assert_eq!(body, r#"{"message":"busy \"now\""}"#);
    }

    #[test]
    fn only_hypers_bare_error_heads_are_rewritten() {
        let bare = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\ndate: x\r\n\r\n";
        let out = String::from_utf8(with_message(bare).unwrap()).unwrap();
        assert!(out.starts_with("HTTP/1.1 400 Bad Request\r\n"));
        assert!(out.ends_with(r#"{"message":"malformed HTTP/1.1 request: the request line or a header could not be parsed"}"#), "{out}");
        assert!(with_message(b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\n\r\n").is_some());
        // Ours: a JSON body, or a status hyper never sends on its own.
        assert!(with_message(b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: 12\r\n\r\n").is_none());
        assert!(with_message(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n").is_none());
        assert!(with_message(b"HTTP/1.1 204 No Content\r\n\r\n").is_none());
    }

    #[tokio::test]
    async fn rewrites_through_a_real_stream() {
        let (a, mut b) = tokio::net::UnixStream::pair().unwrap();
        let mut w = ErrorBodies::new(a);
        let bare = b"HTTP/1.1 414 URI Too Long\r\ncontent-length: 0\r\n\r\n";
        w.write_all(bare).await.unwrap();
        w.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}").await.unwrap();
        w.shutdown().await.unwrap();
        drop(w);
        let mut out = String::new();
        b.read_to_string(&mut out).await.unwrap();
        assert!(out.starts_with("HTTP/1.1 414 URI Too Long\r\ncontent-type: application/json"), "{out}");
        assert!(out.contains(r#"{"message":"the request URI is too long"}HTTP/1.1 200 OK"#), "{out}");
    }
}
