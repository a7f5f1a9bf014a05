//! Reading a request body whole, bounded in time and size, so a slow or huge
//! upload cannot pin a connection or memory.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::body::Body;
use hyper::header::CONTENT_LENGTH;
use hyper::HeaderMap;

use crate::error::HttpError;

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
    if declared.is_some_and(|len| len > max_bytes as u64) {
        return Err(too_large());
    }

    let collected = tokio::time::timeout(timeout, Limited::new(body, max_bytes).collect()).await;
    match collected {
        Err(_elapsed) => Err(HttpError::request_timeout(format!(
            "timed out after {} s reading the request body",
            timeout.as_secs_f32()
        ))),
        Ok(Err(err)) if err.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Ok(Err(err)) => Err(HttpError::bad_request(format!(
            "could not read the request body: {err}"
        ))),
        Ok(Ok(collected)) => {
            let bytes = collected.to_bytes();
            Ok((!bytes.is_empty()).then_some(bytes))
        }
    }
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
