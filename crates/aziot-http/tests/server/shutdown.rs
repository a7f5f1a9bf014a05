//! Graceful shutdown lets in-flight requests finish, then stops listening.

use std::time::{Duration, Instant};

use aziot_http::{ServerOptions, StatusCode};

use crate::fixture::{get, TestServer, V};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_waits_for_an_in_flight_request() {
    let mut server = TestServer::start(ServerOptions::default()).await;
    let client = server.client();
    let slow =
        tokio::spawn(async move { get(&client, &format!("/slow?ms=600&api-version={V}")).await });
    tokio::time::sleep(Duration::from_millis(150)).await;

    let started = Instant::now();
    let serve_task = server.begin_shutdown();
    serve_task.await.expect("serve returns");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(300),
        "serve returned after only {waited:?}"
    );
    assert!(waited < Duration::from_secs(5), "took {waited:?}");

    let (status, _) = slow.await.unwrap();
    assert_eq!(status, StatusCode::NO_CONTENT);

    let refused = server
        .client()
        .request(aziot_http::Method::GET, "/whoami", None)
        .await;
    assert!(refused.is_err(), "no longer accepting after shutdown");
}

#[tokio::test]
async fn idle_keep_alive_connections_do_not_delay_shutdown() {
    let mut server = TestServer::start(ServerOptions::default()).await;
    let client = server.client();
    let (status, _) = get(&client, &format!("/whoami?api-version={V}")).await;
    assert_eq!(status, StatusCode::OK);

    let started = Instant::now();
    server.begin_shutdown().await.expect("serve returns");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
}
