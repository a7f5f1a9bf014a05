//! Time limits on a connection, so a client that connects and never finishes cannot hold a
//! descriptor (and a share of its uid's connection budget) for ever:
//!
//! - a request head must arrive whole within `header` of its first byte, and the first request
//!   within `header` of the connect: else the client gets a 408 with a message and the
//!   connection closes;
//! - a keep-alive connection may sit idle between requests for `idle`, then closes quietly (as
//!   any HTTP/1.1 server may; clients open a new connection);
//! - a response the client does not read for `write` ends the connection.
//!
//! While a request is being served nothing here runs: the body has its own time limit (see
//! `body`), and the TPM queue is bounded elsewhere. hyper has only a header timer that starts
//! at the first byte, so this wraps the socket and ends the stream (EOF) when a limit passes.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::StatusCode;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use crate::raw;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// A request head, from its first byte (the first request: from the connect) → 408.
    pub header: Duration,
    /// Between requests on a keep-alive connection → closed.
    pub idle: Duration,
    /// A response the client does not take → closed.
    pub write: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        // `idle` above the 90 s pool timeout of hyper's client, so clients close first.
        Timeouts { header: Duration::from_secs(10), idle: Duration::from_secs(120), write: Duration::from_secs(30) }
    }
}

/// Where a connection is between requests; shared by the socket wrapper and the service
/// closure, which marks each request's start and end.
#[derive(Debug)]
pub(crate) struct Activity(Mutex<State>);

#[derive(Clone, Copy, Debug)]
struct State {
    serving: bool,
    served: u64,
    /// When the connection started waiting for its next request.
    waiting_since: Instant,
    /// First byte of the next request head, if one has arrived.
    head_started: Option<Instant>,
}

impl Activity {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Activity(Mutex::new(State {
            serving: false,
            served: 0,
            waiting_since: Instant::now(),
            head_started: None,
        })))
    }

    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        f(&mut self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// A request head was parsed and handed to the service.
    pub(crate) fn begin(&self) {
        self.with(|s| {
            s.serving = true;
            s.head_started = None;
        });
    }

    /// The service answered; the connection waits for the next request.
    pub(crate) fn end(&self) {
        self.with(|s| {
            s.serving = false;
            s.served += 1;
            s.waiting_since = Instant::now();
        });
    }

    fn bytes_arrived(&self) {
        self.with(|s| {
            if !s.serving && s.head_started.is_none() {
                s.head_started = Some(Instant::now());
            }
        });
    }

    /// When the wait for the next request ends, and whether the client gets a 408 then; `None`
    /// while a request is being served.
    fn read_deadline(&self, t: &Timeouts) -> Option<(Instant, bool)> {
        self.with(|s| {
            if s.serving {
                None
            } else if let Some(started) = s.head_started {
                Some((started + t.header, true))
            } else if s.served == 0 {
                Some((s.waiting_since + t.header, true))
            } else {
                Some((s.waiting_since + t.idle, false))
            }
        })
    }
}

pub(crate) struct Deadlines<T> {
    io: T,
    activity: Arc<Activity>,
    timeouts: Timeouts,
    read_timer: Pin<Box<Sleep>>,
    write_timer: Option<Pin<Box<Sleep>>>,
    /// Set once a read limit passed: every later read is EOF.
    expired: bool,
}

impl<T> Deadlines<T> {
    pub(crate) fn new(io: T, activity: Arc<Activity>, timeouts: Timeouts) -> Self {
        Self {
            io,
            activity,
            timeouts,
            read_timer: Box::pin(tokio::time::sleep(timeouts.header)),
            write_timer: None,
            expired: false,
        }
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncRead for Deadlines<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if self.expired {
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        match Pin::new(&mut self.io).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    self.activity.bytes_arrived();
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                let Some((deadline, answer)) = self.activity.read_deadline(&self.timeouts) else {
                    return Poll::Pending;
                };
                if self.read_timer.deadline() != deadline {
                    self.read_timer.as_mut().reset(deadline);
                }
                if self.read_timer.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                self.expired = true;
                if answer {
                    let secs = self.timeouts.header.as_secs();
                    let message = format!("no complete request within {secs} s; closing the connection");
                    log::debug!("{message}");
                    // Best effort, as a courtesy: the client may be gone or not reading.
                    let bytes = raw::response(StatusCode::REQUEST_TIMEOUT, &message);
                    let _ = Pin::new(&mut self.io).poll_write(cx, &bytes);
                }
                Poll::Ready(Ok(()))
            }
        }
    }
}

impl<T: AsyncWrite + Unpin> Deadlines<T> {
    fn watch_write<R>(&mut self, cx: &mut Context<'_>, result: Poll<io::Result<R>>) -> Poll<io::Result<R>> {
        if result.is_ready() {
            self.write_timer = None;
            return result;
        }
        let limit = self.timeouts.write;
        let timer = self.write_timer.get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        match timer.as_mut().poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("the client did not read the response within {} s", limit.as_secs()),
            ))),
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Deadlines<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.io).poll_write(cx, buf);
        self.watch_write(cx, result)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let result = Pin::new(&mut self.io).poll_flush(cx);
        self.watch_write(cx, result)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn short() -> Timeouts {
        Timeouts {
            header: Duration::from_millis(100),
            idle: Duration::from_millis(300),
            write: Duration::from_millis(100),
        }
    }

    #[tokio::test]
    async fn an_unfinished_head_gets_408_then_eof() {
        let (server, mut client) = tokio::net::UnixStream::pair().unwrap();
        let mut conn = Deadlines::new(server, Activity::new(), short());
        client.write_all(b"POST /sign HTTP/1.1\r\nHost: x\r\n").await.unwrap();
        let mut buf = [0u8; 256];
        let n = conn.read(&mut buf).await.unwrap();
        assert!(n > 0);
        let started = Instant::now();
        assert_eq!(conn.read(&mut buf).await.unwrap(), 0, "EOF after the header limit");
        assert!(started.elapsed() >= Duration::from_millis(90));
        let mut answer = vec![0u8; 512];
        let n = client.read(&mut answer).await.unwrap();
        let answer = String::from_utf8_lossy(&answer[..n]);
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        assert!(answer.contains("no complete request within"), "{answer}");
    }

    #[tokio::test]
    async fn an_idle_keep_alive_connection_closes_quietly_after_idle() {
        let (server, mut client) = tokio::net::UnixStream::pair().unwrap();
        let activity = Activity::new();
        let mut conn = Deadlines::new(server, activity.clone(), short());
        activity.begin();
        activity.end();
        let started = Instant::now();
        let mut buf = [0u8; 16];
        assert_eq!(conn.read(&mut buf).await.unwrap(), 0);
        assert!(started.elapsed() >= Duration::from_millis(290), "idle limit, not header limit");
        drop(conn);
        let mut rest = Vec::new();
        client.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty(), "nothing written on an idle close");
    }

    #[tokio::test]
    async fn no_limit_while_a_request_is_served() {
        let (server, _client) = tokio::net::UnixStream::pair().unwrap();
        let activity = Activity::new();
        let mut conn = Deadlines::new(server, activity.clone(), short());
        activity.begin();
        let mut buf = [0u8; 16];
        let waited = tokio::time::timeout(Duration::from_millis(400), conn.read(&mut buf)).await;
        assert!(waited.is_err(), "a read during a request must not time out here");
    }
}
