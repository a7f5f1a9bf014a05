//! cloud-http against real local HTTPS servers: trust only what it is told to, verify the name
//! (IP or DNS), never send plain HTTP, honour the timeout, and report dropped connections as
//! transient errors.

use std::net::Ipv4Addr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cloud_http::{Client, Error, Method, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use openssl::asn1::Asn1Time;
use openssl::bn::BigNum;
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::ssl::{SslAcceptor, SslMethod};
use openssl::x509::extension::{BasicConstraints, SubjectAlternativeName};
use openssl::x509::{X509Builder, X509NameBuilder, X509};

fn key() -> PKey<Private> {
    PKey::from_ec_key(
        EcKey::generate(&EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap()).unwrap(),
    )
    .unwrap()
}

fn cert(
    cn: &str,
    key: &PKey<Private>,
    issuer: Option<(&X509, &PKey<Private>)>,
    san: Option<(&[&str], &[&str])>,
) -> X509 {
    let mut name = X509NameBuilder::new().unwrap();
    name.append_entry_by_nid(Nid::COMMONNAME, cn).unwrap();
    let name = name.build();
    let mut b = X509Builder::new().unwrap();
    b.set_version(2).unwrap();
    b.set_serial_number(
        &BigNum::from_u32(rand_u32())
            .unwrap()
            .to_asn1_integer()
            .unwrap(),
    )
    .unwrap();
    b.set_subject_name(&name).unwrap();
    b.set_issuer_name(issuer.map(|(c, _)| c.subject_name()).unwrap_or(&name))
        .unwrap();
    b.set_pubkey(key).unwrap();
    b.set_not_before(&Asn1Time::days_from_now(0).unwrap())
        .unwrap();
    b.set_not_after(&Asn1Time::days_from_now(1).unwrap())
        .unwrap();
    match san {
        None => b
            .append_extension(BasicConstraints::new().critical().ca().build().unwrap())
            .unwrap(),
        Some((ips, dns)) => {
            let mut s = SubjectAlternativeName::new();
            ips.iter().for_each(|i| {
                s.ip(i);
            });
            dns.iter().for_each(|d| {
                s.dns(d);
            });
            let ext = s
                .build(&b.x509v3_context(issuer.map(|(c, _)| c.as_ref()), None))
                .unwrap();
            b.append_extension(ext).unwrap();
        }
    }
    b.sign(
        issuer.map(|(_, k)| k).unwrap_or(key),
        MessageDigest::sha256(),
    )
    .unwrap();
    b.build()
}

fn rand_u32() -> u32 {
    let mut b = [0u8; 4];
    openssl::rand::rand_bytes(&mut b).unwrap();
    u32::from_be_bytes(b) >> 1
}

/// How the test server behaves.
#[derive(Clone, Copy)]
enum Mode {
    /// Answers 200 with `METHOD PATH HOST BODY`.
    Echo,
    /// Completes TLS, then never answers.
    Silent,
    /// Completes TLS, reads the request, closes without answering.
    Drop,
}

struct Server {
    port: u16,
    ca_pem: Vec<u8>,
    _task: AbortOnDrop,
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);
impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn server(ips: &[&str], dns: &[&str], mode: Mode) -> Server {
    let ca_key = key();
    let ca = cert("test CA", &ca_key, None, None);
    let leaf_key = key();
    let leaf = cert("server", &leaf_key, Some((&ca, &ca_key)), Some((ips, dns)));
    let mut b = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls_server()).unwrap();
    b.set_certificate(&leaf).unwrap();
    b.set_private_key(&leaf_key).unwrap();
    let acceptor = Arc::new(b.build());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let ssl = openssl::ssl::Ssl::new(acceptor.context()).unwrap();
            tokio::spawn(async move {
                let mut stream = tokio_openssl::SslStream::new(ssl, tcp).unwrap();
                if Pin::new(&mut stream).accept().await.is_err() {
                    return;
                }
                match mode {
                    Mode::Silent => tokio::time::sleep(Duration::from_secs(60)).await,
                    Mode::Drop => {
                        let mut buf = [0u8; 1024];
                        let _ = tokio::io::AsyncReadExt::read(&mut stream, &mut buf).await;
                    }
                    Mode::Echo => {
                        let service =
                            service_fn(|req: Request<hyper::body::Incoming>| async move {
                                let head = format!(
                                    "{} {} {} ",
                                    req.method(),
                                    req.uri(),
                                    req.headers()
                                        .get("host")
                                        .and_then(|h| h.to_str().ok())
                                        .unwrap_or("-")
                                );
                                let body = req.into_body().collect().await.unwrap().to_bytes();
                                let mut out = head.into_bytes();
                                out.extend_from_slice(&body);
                                Ok::<_, std::convert::Infallible>(Response::new(Full::new(
                                    Bytes::from(out),
                                )))
                            });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    }
                }
            });
        }
    });
    Server {
        port,
        ca_pem: ca.to_pem().unwrap(),
        _task: AbortOnDrop(task),
    }
}

/// A DNS name no resolver knows: the clients pin it to loopback with `resolve`, so the tests do
/// not depend on the machine's /etc/hosts (a minimal system may not even name `localhost`).
const NAME: &str = "dps.example.test";

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
