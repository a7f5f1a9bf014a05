//! cloud-http against real local HTTPS servers: trust only what it is told to, verify the name
//! (IP or DNS), never send plain HTTP, honour the timeout, and report dropped connections as
//! transient errors.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use cloud_http::{Client, Error, Method, StatusCode};

mod common;

use common::{server, Mode, Server, NAME};

fn client_trusting(server: &Server) -> Client {
    Client::builder()
        .resolve(NAME, Ipv4Addr::LOCALHOST.into())
        .system_roots(false)
        .trust_ca_pem(server.ca_pem.clone())
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

#[tokio::test]
async fn custom_ca_is_trusted_and_the_request_arrives_whole() {
    let server = server(&["127.0.0.1"], &[NAME], Mode::Echo).await;
    let client = client_trusting(&server);
    let url = format!(
        "https://127.0.0.1:{}/0ne/registrations/r1/register?api-version=2021-06-01",
        server.port
    );
    let r = client
        .request(
            Method::PUT,
            &url,
            &[("Content-Type", "application/json")],
            "{\"a\":1}",
        )
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        r.text(),
        format!(
            "PUT /0ne/registrations/r1/register?api-version=2021-06-01 127.0.0.1:{} {{\"a\":1}}",
            server.port
        )
    );
    // The same CA from a PEM file, by DNS name.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ca.pem"), &server.ca_pem).unwrap();
    let client = Client::builder()
        .trust_ca_file(dir.path().join("ca.pem"))
        .resolve(NAME, Ipv4Addr::LOCALHOST.into())
        .build()
        .unwrap();
    let r = client
        .request(
            Method::GET,
            &format!("https://{NAME}:{}/x", server.port),
            &[],
            Vec::new(),
        )
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::OK);
}

#[tokio::test]
async fn an_untrusted_server_is_refused_with_the_reason() {
    let server = server(&["127.0.0.1"], &[], Mode::Echo).await;
    let client = Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let err = client
        .request(
            Method::GET,
            &format!("https://127.0.0.1:{}/", server.port),
            &[],
            Vec::new(),
        )
        .await
        .unwrap_err();
    match &err {
        Error::Tls { reason, .. } => assert!(
            reason.contains("certificate verification failed"),
            "{reason}"
        ),
        other => panic!("want a TLS error, got {other}"),
    }
    assert!(!err.is_transient());
}

#[tokio::test]
async fn the_certificate_must_name_the_host_connected_to() {
    // Issued for the DNS name only: connecting by IP must fail, by name must work.
    let server = server(&[], &[NAME], Mode::Echo).await;
    let client = client_trusting(&server);
    let err = client
        .request(
            Method::GET,
            &format!("https://127.0.0.1:{}/", server.port),
            &[],
            Vec::new(),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Tls { .. }), "{err}");
    let r = client
        .request(
            Method::GET,
            &format!("https://{NAME}:{}/", server.port),
            &[],
            Vec::new(),
        )
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::OK);

    // Issued for another name (and no address): the name asked for must be the one it names.
    let other = common::server(&[], &["other.example.test"], Mode::Echo).await;
    let err = client_trusting(&other)
        .request(Method::GET, &format!("https://{NAME}:{}/", other.port), &[], Vec::new())
        .await
        .unwrap_err();
    match &err {
        Error::Tls { reason, .. } => assert!(reason.contains("certificate verification failed"), "{reason}"),
        other => panic!("want a TLS error, got {other}"),
    }
}

#[tokio::test]
async fn plain_http_is_never_sent() {
    let client = Client::builder().build().unwrap();
    let err = client
        .request(Method::GET, "http://127.0.0.1:9/", &[], Vec::new())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NotHttps { .. }), "{err}");
}

#[tokio::test]
async fn a_silent_server_times_out_and_a_dropped_connection_is_transient() {
    let silent = server(&["127.0.0.1"], &[], Mode::Silent).await;
    let client = Client::builder()
        .system_roots(false)
        .trust_ca_pem(silent.ca_pem.clone())
        .timeout(Duration::from_millis(500))
        .build()
        .unwrap();
    let started = Instant::now();
    let err = client
        .request(
            Method::GET,
            &format!("https://127.0.0.1:{}/", silent.port),
            &[],
            Vec::new(),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err}");
    assert!(err.is_transient());
    assert!(started.elapsed() < Duration::from_secs(5));

    let dropping = server(&["127.0.0.1"], &[], Mode::Drop).await;
    let err = client_trusting(&dropping)
        .request(
            Method::GET,
            &format!("https://127.0.0.1:{}/", dropping.port),
            &[],
            Vec::new(),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Http { .. }), "{err}");
    assert!(err.is_transient());

    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let err = client
        .request(
            Method::GET,
            &format!("https://127.0.0.1:{port}/"),
            &[],
            Vec::new(),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Connect { .. }), "{err}");
}

#[test]
fn a_missing_or_empty_ca_bundle_fails_at_build() {
    let err = Client::builder()
        .trust_ca_file("/nonexistent/ca.pem")
        .build()
        .unwrap_err();
    assert!(matches!(err, Error::CaBundle { .. }), "{err}");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("empty.pem"), "not a certificate").unwrap();
    let err = Client::builder()
        .trust_ca_file(dir.path().join("empty.pem"))
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("empty.pem"), "{err}");
}

// ---- through a real proxy (tinyproxy) ---------------------------------------------------

use cloud_http::Proxy;
use testkit::Tinyproxy;

fn client_through(server: &Server, proxy: &str, no_proxy: &str) -> Client {
    Client::builder()
        .system_roots(false)
        .trust_ca_pem(server.ca_pem.clone())
        .timeout(Duration::from_secs(20))
        .proxy(Some(Proxy::parse(proxy, no_proxy, "https_proxy").unwrap()))
        .build()
        .unwrap()
}

#[tokio::test]
async fn a_connect_tunnel_carries_tls_end_to_end_with_the_credentials_of_the_proxy_url() {
    let server = server(&["127.0.0.1"], &[], Mode::Echo).await;
    let proxy = Tinyproxy::with_credentials("gw", "pa-ss_1");
    let url = format!("https://127.0.0.1:{}/x?y=1", server.port);
    // Percent-encoded in the URL, as a password with reserved characters must be.
    let client = client_through(&server, &proxy.url().replace("pa-ss_1", "pa%2Dss%5F1"), "");
    let r = client.request(Method::POST, &url, &[], "body").await.unwrap();
    // The server saw the origin-form request and its own Host: the proxy only relayed bytes.
    assert_eq!(r.text(), format!("POST /x?y=1 127.0.0.1:{} body", server.port));
    assert_eq!(proxy.tunnels_to(&format!("127.0.0.1:{}", server.port)), 1, "{}", proxy.log());
    assert!(!proxy.log().contains("body"), "the proxy saw the request in the clear");
}

#[tokio::test]
async fn a_proxy_wanting_credentials_or_other_ones_is_named_with_its_answer() {
    let server = server(&["127.0.0.1"], &[], Mode::Echo).await;
    let proxy = Tinyproxy::with_credentials("gw", "right");
    let url = format!("https://127.0.0.1:{}/", server.port);

    let e = client_through(&server, &proxy.url_without_credentials(), "")
        .request(Method::GET, &url, &[], Vec::new())
        .await
        .unwrap_err();
    let text = e.to_string();
    assert!(matches!(e, Error::ProxyAuth { sent_credentials: false, .. }), "{text}");
    assert!(text.contains(&proxy.url_without_credentials()) && text.contains("407"), "{text}");
    assert!(text.contains("http://user:password@host:port"), "{text}");

    let wrong = format!("http://gw:wrong@127.0.0.1:{}", proxy.port());
    let e = client_through(&server, &wrong, "").request(Method::GET, &url, &[], Vec::new()).await.unwrap_err();
    let text = e.to_string();
    assert!(matches!(e, Error::ProxyAuth { sent_credentials: true, .. }), "{text}");
    assert!(text.contains(&format!("http://gw:***@127.0.0.1:{}", proxy.port())) && !text.contains("wrong"), "{text}");
}

#[tokio::test]
async fn a_proxy_that_is_down_is_named_and_no_proxy_hosts_go_direct() {
    let server = server(&["127.0.0.1"], &[], Mode::Echo).await;
    let url = format!("https://127.0.0.1:{}/", server.port);
    let dead = format!("http://127.0.0.1:{}", testkit::free_port());
    let e = client_through(&server, &dead, "").request(Method::GET, &url, &[], Vec::new()).await.unwrap_err();
    assert!(matches!(e, Error::ProxyConnect { .. }) && e.is_transient(), "{e}");
    assert!(e.to_string().contains(&format!("cannot reach the HTTPS proxy {dead}")), "{e}");

    // Listed in no_proxy: straight to the server, the dead proxy never asked.
    let client = client_through(&server, &dead, "localhost, 127.0.0.0/8");
    assert!(client.proxy_for("127.0.0.1").is_none());
    assert_eq!(client.request(Method::GET, &url, &[], Vec::new()).await.unwrap().status, StatusCode::OK);
}

#[tokio::test]
async fn a_proxy_refusing_the_tunnel_is_named_with_its_status_line() {
    let server = server(&["127.0.0.1"], &[], Mode::Echo).await;
    let proxy = Tinyproxy::start();
    // tinyproxy answers a CONNECT to a port nothing listens on with an error page.
    let closed = testkit::free_port();
    let e = client_through(&server, &proxy.url(), "")
        .request(Method::GET, &format!("https://127.0.0.1:{closed}/"), &[], Vec::new())
        .await
        .unwrap_err();
    let text = e.to_string();
    assert!(matches!(e, Error::ProxyRefused { .. }), "{text}");
    assert!(text.contains(&proxy.url()) && text.contains(&format!("127.0.0.1:{closed}")) && text.contains("HTTP/1."), "{text}");
}
