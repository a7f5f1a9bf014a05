//! A local HTTPS server with a CA of its own, for the tests.

#![allow(dead_code)]

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
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

pub fn key() -> PKey<Private> {
    PKey::from_ec_key(
        EcKey::generate(&EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap()).unwrap(),
    )
    .unwrap()
}

pub fn cert(
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
pub enum Mode {
    /// Answers 200 with `METHOD PATH HOST BODY`.
    Echo,
    /// Completes TLS, then never answers.
    Silent,
    /// Completes TLS, reads the request, closes without answering.
    Drop,
}

pub struct Server {
    pub port: u16,
    pub ca_pem: Vec<u8>,
    _task: AbortOnDrop,
}

pub struct AbortOnDrop(tokio::task::JoinHandle<()>);
impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

pub async fn server(ips: &[&str], dns: &[&str], mode: Mode) -> Server {
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
pub const NAME: &str = "dps.example.test";

