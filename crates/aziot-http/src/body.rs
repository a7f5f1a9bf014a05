//! Reading a request body whole, bounded in time and size, so a slow or huge
//! upload cannot pin a connection or memory.
//!
//! A body over the limit is answered 413, but read to its end first (and thrown away as it
//! comes, up to [`DRAIN_LIMIT`]): a client that is still writing when the server closes gets a
//! broken pipe instead of the answer.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use hyper::body::Body;
use hyper::header::CONTENT_LENGTH;
use hyper::HeaderMap;

use crate::error::HttpError;

/// How much of a too-large body is read and discarded before the 413; beyond it the
/// connection is closed after the answer.
const DRAIN_LIMIT: u64 = 16 * 1024 * 1024;

/// The body, `None` when empty.
pub(crate) async fn read<B>(
    headers: &HeaderMap,
    body: B,
    timeout: Duration,
    max_bytes: usize,
) -> Result<Option<Bytes>, HttpError>
where
    B: Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let too_large = || {
        HttpError::payload_too_large(format!(
            "request body is larger than the limit of {max_bytes} bytes"
        ))
    };
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > DRAIN_LIMIT) {
        return Err(too_large());
    }
    if declared.is_some_and(|len| len > max_bytes as u64) {
        // Known to be too large: read it away, however that ends, and say so.
        let _ = tokio::time::timeout(timeout, collect(body, 0)).await;
        return Err(too_large());
    }

    match tokio::time::timeout(timeout, collect(body, max_bytes)).await {
        Err(_elapsed) => Err(HttpError::request_timeout(format!(
            "timed out after {} s reading the request body",
            timeout.as_secs_f32()
        ))),
        Ok(Err(err)) => Err(HttpError::bad_request(format!(
            "could not read the request body: {err}"
        ))),
        Ok(Ok(Collected::TooLarge)) => Err(too_large()),
        Ok(Ok(Collected::Whole(bytes))) => Ok((!bytes.is_empty()).then_some(bytes)),
    }
}

enum Collected {
    Whole(Bytes),
    /// More than the limit arrived; what came was discarded.
    TooLarge,
}

/// Reads the body to its end, keeping it only while it is within `max_bytes` (0: keep none).
async fn collect<B>(body: B, max_bytes: usize) -> Result<Collected, Box<dyn std::error::Error + Send + Sync>>
where
    B: Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut body = std::pin::pin!(body);
    let mut kept = BytesMut::new();
    let mut seen: u64 = 0;
    let mut over = max_bytes == 0;
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame.map_err(Into::into)?.into_data() else { continue };
        seen += data.len() as u64;
        if seen > DRAIN_LIMIT {
            break;
        }
        if !over && kept.len() + data.len() > max_bytes {
            over = true;
            kept = BytesMut::new();
        }
        if !over {
            kept.extend_from_slice(&data);
        }
    }
    Ok(if over { Collected::TooLarge } else { Collected::Whole(kept.freeze()) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::Full;
    use hyper::body::Frame;
    use hyper::StatusCode;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    const T: Duration = Duration::from_secs(5);

    #[tokio::test]
    async fn empty_body_is_none() {
        let b = read(&HeaderMap::new(), Full::new(Bytes::new()), T, 10).await;
        assert_eq!(b, Ok(None));
    }

    #[tokio::test]
    async fn small_body_is_returned() {
        let b = read(
            &HeaderMap::new(),
            Full::new(Bytes::from_static(b"abc")),
            T,
            10,
        )
        .await;
        assert_eq!(b, Ok(Some(Bytes::from_static(b"abc"))));
    }

    #[tokio::test]
    async fn oversized_body_is_413() {
        let e = read(
            &HeaderMap::new(),
            Full::new(Bytes::from(vec![0u8; 11])),
            T,
            10,
        )
        .await
        .unwrap_err();
        assert_eq!(e.status, StatusCode::PAYLOAD_TOO_LARGE);

        let mut h = HeaderMap::new();
        h.insert(CONTENT_LENGTH, "1000".parse().unwrap());
        let e = read(&h, Full::new(Bytes::new()), T, 10).await.unwrap_err();
        assert_eq!(e.status, StatusCode::PAYLOAD_TOO_LARGE);
    }

    #[tokio::test]
    async fn stalled_body_is_408() {
        let short = Duration::from_millis(50);
        let e = read(&HeaderMap::new(), Stalled, short, 10)
            .await
            .unwrap_err();
        assert_eq!(e.status, StatusCode::REQUEST_TIMEOUT);
        assert!(e.message.contains("timed out"), "{}", e.message);
    }

    /// A body whose first frame never arrives.
    struct Stalled;

    impl Body for Stalled {
        type Data = Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            Poll::Pending
        }
    }
}
