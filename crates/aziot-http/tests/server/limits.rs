//! Per-uid concurrency: over the limit we queue; past the queue we say 503.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use aziot_http::{ServerOptions, StatusCode};

use crate::fixture::{get, TestServer, V};

/// Fires `n` concurrent slow requests, each on its own connection.
async fn burst(server: &TestServer, n: usize) -> Vec<(StatusCode, String)> {
    let clients: Vec<_> = (0..n).map(|_| Arc::new(server.client())).collect();
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|c| {
            tokio::spawn(async move { get(&c, &format!("/slow?ms=100&api-version={V}")).await })
        })
        .collect();
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await.expect("request task"));
    }
    results
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_concurrent_requests_with_limit_two_all_succeed() {
    let server = TestServer::start(ServerOptions {
        max_requests_per_uid: 2,
        max_queue: 100,
        ..ServerOptions::default()
    })
    .await;
    let results = burst(&server, 20).await;
    assert!(
        results.iter().all(|(s, _)| *s == StatusCode::NO_CONTENT),
        "{results:?}"
    );
    let max = server.service.max_in_flight.load(Ordering::SeqCst);
    assert!(max <= 2, "saw {max} requests in flight");
    assert_eq!(max, 2, "the two slots should both have been used");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_no_queue_excess_requests_get_503_with_a_message() {
    let server = TestServer::start(ServerOptions {
        max_requests_per_uid: 2,
        max_queue: 0,
        ..ServerOptions::default()
    })
    .await;
    let results = burst(&server, 20).await;
    // SAFETY: getuid has no preconditions.
    let uid = unsafe { libc::getuid() };
    // Refused at the request limit, or already at the connection budget (limit + queue).
    let expected = [
        format!(r#"{{"message":"too many concurrent requests from uid {uid} (limit 2); retry later"}}"#),
        format!(r#"{{"message":"too many open connections from uid {uid} (limit 2); close idle connections or retry later"}}"#),
    ];
    let ok = results
        .iter()
        .filter(|(s, _)| *s == StatusCode::NO_CONTENT)
        .count();
    let busy: Vec<_> = results
        .iter()
        .filter(|(s, _)| *s == StatusCode::SERVICE_UNAVAILABLE)
        .collect();
    assert_eq!(
        ok + busy.len(),
        20,
        "every request got an answer: {results:?}"
    );
    assert!(ok >= 2, "{results:?}");
    assert!(!busy.is_empty(), "{results:?}");
    assert!(busy.iter().all(|(_, body)| expected.contains(body)), "{busy:?}");
}
