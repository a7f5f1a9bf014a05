//! Raw bytes over a Unix socket and whatever comes back, for requests no well-behaved client
//! would send. Independent of the daemons' HTTP stack, like `testkit::http`.

use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

/// What one exchange ended with.
#[derive(Debug)]
pub enum Outcome {
    Answered(RawResponse),
    /// The server closed the connection without a (complete) response.
    Closed { partial: Vec<u8> },
    /// Nothing (complete) arrived before the deadline.
    Silent { partial: Vec<u8> },
}

#[derive(Debug, Clone)]
pub struct RawResponse {
    pub status: u16,
    pub head: String,
    pub body: Vec<u8>,
}

impl RawResponse {
    /// The `message` of a `{"message": "..."}` body, if that is what the body is.
    pub fn message(&self) -> Option<String> {
        let v: serde_json::Value = serde_json::from_slice(&self.body).ok()?;
        v.get("message")?.as_str().map(str::to_owned)
    }

    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Connects, writes `request` (as much as the server takes), and reads the first final
/// response, giving up at `timeout`. Interim `1xx` responses are skipped.
pub fn exchange(socket: &Path, request: &[u8], timeout: Duration) -> std::io::Result<Outcome> {
    let deadline = Instant::now() + timeout;
    let mut stream = UnixStream::connect(socket)?;
    stream.set_write_timeout(Some(timeout))?;
    // The server may answer and close before it has read everything (a 400 on a bad head, a
    // 413 on a declared size): a failed write is not the end, the answer may be waiting.
    let _ = stream.write_all(request);
    let mut raw = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        if let Some(response) = parse(&raw, false) {
            return Ok(Outcome::Answered(response));
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(Outcome::Silent { partial: raw });
        }
        stream.set_read_timeout(Some(left))?;
        match stream.read(&mut buf) {
            Ok(0) => return Ok(parse_at_eof(raw)),
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return Ok(Outcome::Silent { partial: raw })
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            // A reset after the server answered and closed while we still wrote.
            Err(_) => return Ok(parse_at_eof(raw)),
        }
    }
}

fn parse_at_eof(raw: Vec<u8>) -> Outcome {
    match parse(&raw, true) {
        Some(response) => Outcome::Answered(response),
        None => Outcome::Closed { partial: raw },
    }
}

/// The first final response in `raw`, once it is complete (`eof`: nothing more will come).
fn parse(mut raw: &[u8], eof: bool) -> Option<RawResponse> {
    loop {
        let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
        let head = String::from_utf8_lossy(&raw[..split]).into_owned();
        let rest = &raw[split + 4..];
        let status: u16 = head.split(' ').nth(1)?.parse().ok()?;
        if (100..200).contains(&status) {
            raw = rest;
            continue;
        }
        let mut length = None;
        let mut chunked = false;
        for line in head.split("\r\n").skip(1) {
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            match name.trim().to_ascii_lowercase().as_str() {
                "content-length" => length = value.trim().parse::<usize>().ok(),
                "transfer-encoding" => chunked = value.to_ascii_lowercase().contains("chunked"),
                _ => {}
            }
        }
        let body = if chunked {
            crate::http::dechunk(rest)?
        } else if status == 204 || status == 304 {
            Vec::new()
        } else {
            match length {
                Some(length) => rest.get(..length)?.to_vec(),
                // Without a length a response ends at EOF.
                None if eof => rest.to_vec(),
                None => return None,
            }
        };
        return Some(RawResponse { status, head, body });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_length_chunked_and_skips_continue() {
        let r = parse(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 2\r\n\r\n{}", false).unwrap();
        assert_eq!((r.status, r.body.as_slice()), (400, &b"{}"[..]));
        assert!(parse(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 3\r\n\r\n{}", false).is_none());
        assert!(parse(b"HTTP/1.1 400 Bad Request\r\n\r\nab", false).is_none());
        assert_eq!(parse(b"HTTP/1.1 400 Bad Request\r\n\r\nab", true).unwrap().body, b"ab");
        let r = parse(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nab\r\n0\r\n\r\n", false).unwrap();
        assert_eq!((r.status, r.body.as_slice()), (200, &b"ab"[..]));
        let r = parse(b"HTTP/1.1 204 No Content\r\n\r\n", false).unwrap();
        assert!(r.body.is_empty());
    }
}
