//! Clients that misbehave at the connection level, with raw sockets: every one of them gets an
//! answer with a `{"message"}` body (or a quiet close after keep-alive idling), and none of them
//! keeps others from being served.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use aziot_http::{ServerOptions, StatusCode, Timeouts};

use crate::fixture::{get, TestServer, V};

fn short_timeouts() -> ServerOptions {
    ServerOptions {
        timeouts: Timeouts {
            header: Duration::from_millis(300),
            idle: Duration::from_millis(600),
            write: Duration::from_secs(5),
        },
        ..ServerOptions::default()
    }
}

/// Sends `bytes`, optionally half-closes, and reads until the server closes.
fn exchange(server: &TestServer, bytes: &[u8], half_close: bool) -> String {
    let path = server.path.clone();
    let bytes = bytes.to_vec();
    std::thread::spawn(move || {
        let mut s = UnixStream::connect(&path).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        // The server may answer (431, 413) and close before it has read all we send: a
        // failed write is expected then, and the answer is still there to read.
        if s.write_all(&bytes).is_ok() && half_close {
            let _ = s.shutdown(std::net::Shutdown::Write);
        }
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        String::from_utf8_lossy(&out).into_owned()
    })
    .join()
    .unwrap()
}

fn body_of(response: &str) -> serde_json::Value {
    let (_, body) = response.split_once("\r\n\r\n").unwrap_or_else(|| panic!("no head end: {response:?}"));
    serde_json::from_str(body).unwrap_or_else(|e| panic!("body is not JSON ({e}): {response:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_followed_by_a_half_close_is_answered() {
    let server = TestServer::start(ServerOptions::default()).await;
    let request = format!("POST /echo?api-version={V} HTTP/1.1\r\nHost: x\r\nContent-Length: 7\r\n\r\n{{\"a\":1}}");
    let answer = exchange(&server, request.as_bytes(), true);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
    assert_eq!(body_of(&answer), serde_json::json!({"a": 1}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unparsable_requests_get_a_message_body() {
    let server = TestServer::start(ServerOptions::default()).await;
    let cases: [(&[u8], &str); 4] = [
        (b"GARBAGE\r\n\r\n", "400"),
        (b"GET /whoami HTTP/1.1\r\nBad Header\r\n\r\n", "400"),
        (b"GET /whoami HTTP/1.1\r\nHost: x\r\nX: \x01\r\n\r\n", "400"),
        (&[b"GET /whoami HTTP/1.1\r\nX-Big: ".as_slice(), &[b'a'; 300_000], b"\r\n\r\n"].concat(), "431"),
    ];
    for (request, status) in cases {
        let answer = exchange(&server, request, false);
        assert!(answer.starts_with(&format!("HTTP/1.1 {status}")), "{answer:?}");
        let message = body_of(&answer)["message"].as_str().unwrap_or_default().to_owned();
        assert!(!message.is_empty(), "{answer:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_that_never_completes_gets_408_and_the_connection_closes() {
    let server = TestServer::start(short_timeouts()).await;
    let started = Instant::now();
    let answer = exchange(&server, b"POST /echo HTTP/1.1\r\nHost: x\r\n", false);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?}");
    assert!(body_of(&answer)["message"].as_str().unwrap().contains("no complete request within"), "{answer}");
    assert!(started.elapsed() < Duration::from_secs(10), "closed after {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_sends_nothing_gets_408() {
    let server = TestServer::start(short_timeouts()).await;
    let answer = exchange(&server, b"", false);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_keep_alive_connection_is_closed_quietly_after_its_request() {
    let server = TestServer::start(short_timeouts()).await;
    let request = format!("GET /whoami?api-version={V} HTTP/1.1\r\nHost: x\r\n\r\n");
    let answer = exchange(&server, request.as_bytes(), false);
    // One answer, then the connection was closed by the server (read_to_end returned).
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
    assert_eq!(answer.matches("HTTP/1.1").count(), 1, "{answer:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_idle_connections_is_refused_with_503_and_others_are_served() {
    let options = ServerOptions { max_requests_per_uid: 2, max_queue: 3, ..ServerOptions::default() };
    let server = TestServer::start(options).await;
    // The uid's budget is 5 connections: the rest of the flood is refused at once.
    let idle: Vec<UnixStream> = (0..5)
        .map(|_| {
            let mut s = UnixStream::connect(&server.path).unwrap();
            s.write_all(b"POST /echo HTTP/1.1\r\nHost: x\r\n").unwrap();
            s
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let request = format!("GET /whoami?api-version={V} HTTP/1.1\r\nHost: x\r\n\r\n");
    let answer = exchange(&server, request.as_bytes(), false);
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer:?}");
    assert!(body_of(&answer)["message"].as_str().unwrap().contains("too many open connections"), "{answer}");
    drop(idle);
    // Places come back as soon as the idle connections close.
    let mut served = false;
    for _ in 0..50 {
        if get(&server.client(), &format!("/whoami?api-version={V}")).await.0 == StatusCode::OK {
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(served, "never served after the idle connections closed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_over_the_routes_limit_is_413_before_it_is_read() {
    let server = TestServer::start(ServerOptions::default()).await;
    let big = aziot_http::DEFAULT_BODY_LIMIT + 1;
    let request = format!("POST /echo?api-version={V} HTTP/1.1\r\nHost: x\r\nContent-Length: {big}\r\n\r\n");
    let answer = exchange(&server, request.as_bytes(), true);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer:?}");
    assert!(body_of(&answer)["message"].as_str().unwrap().contains("larger than the limit"), "{answer}");
}
