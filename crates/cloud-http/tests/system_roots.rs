//! The system roots, read as OpenSSL's default paths name them: from a hashed certificate
//! directory (looked up per issuer, the bundle file left unread) when there is one, from
//! `SSL_CERT_FILE` when that is set. One test in its own process, since it sets the environment
//! variables OpenSSL reads.

mod common;

use std::net::Ipv4Addr;
use std::time::Duration;

use cloud_http::{Client, Error, Method};
use common::{server, Mode, Server, NAME};
use openssl::x509::X509;

/// A client with the system roots only (the default).
fn system_client() -> Client {
    Client::builder()
        .resolve(NAME, Ipv4Addr::LOCALHOST.into())
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

async fn get(client: &Client, server: &Server) -> Result<u16, Error> {
    let url = format!("https://{NAME}:{}/x", server.port);
    client.request(Method::GET, &url, &[], Vec::new()).await.map(|r| r.status.as_u16())
}

#[tokio::test]
async fn system_roots_come_from_a_hashed_directory_or_from_ssl_cert_file() {
    let a = server(&[], &[NAME], Mode::Echo).await;
    let b = server(&[], &[NAME], Mode::Echo).await;
    let dir = tempfile::tempdir().unwrap();
    let ca_a = X509::from_pem(&a.ca_pem).unwrap();
    std::fs::write(dir.path().join(format!("{:08x}.0", ca_a.subject_name_hash())), &a.ca_pem).unwrap();

    // SAFETY (set_var): this test is alone in its process, and no other thread reads the
    // environment while it changes.
    std::env::remove_var("SSL_CERT_FILE");
    std::env::set_var("SSL_CERT_DIR", dir.path());
    let client = system_client();
    assert_eq!(get(&client, &a).await.unwrap(), 200);
    match get(&client, &b).await {
        Err(Error::Tls { reason, .. }) => assert!(reason.contains("certificate verification failed"), "{reason}"),
        other => panic!("a server whose CA is not in the directory was trusted: {other:?}"),
    }

    // SSL_CERT_FILE names a bundle: it is read, as OpenSSL's default paths read it.
    let bundle = dir.path().join("bundle.pem");
    std::fs::write(&bundle, &b.ca_pem).unwrap();
    std::env::set_var("SSL_CERT_FILE", &bundle);
    let client = system_client();
    assert_eq!(get(&client, &b).await.unwrap(), 200);
}
