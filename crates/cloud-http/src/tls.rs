//! The OpenSSL client context: which roots are trusted, TLS 1.2 as the floor. Hostname (or IP
//! address) verification is switched on per connection in `client.rs` through
//! `ConnectConfiguration::into_ssl`.

use std::path::{Path, PathBuf};

use openssl::ssl::{SslConnector, SslMethod, SslVersion};
use openssl::x509::store::X509StoreBuilder;
use openssl::x509::X509;

use crate::Error;

/// Where trusted CA certificates come from.
#[derive(Debug, Clone, Default)]
pub(crate) struct Roots {
    pub system: bool,
    pub files: Vec<PathBuf>,
    pub pems: Vec<Vec<u8>>,
}

pub(crate) fn connector(roots: &Roots) -> Result<SslConnector, Error> {
    let mut builder = SslConnector::builder(SslMethod::tls_client())?;
    builder.set_min_proto_version(Some(SslVersion::TLS1_2))?;
    let mut store = X509StoreBuilder::new()?;
    if roots.system {
        store.set_default_paths()?;
    }
    for path in &roots.files {
        let pem = std::fs::read(path).map_err(|e| ca_error(path, e.to_string()))?;
        for cert in parse_bundle(&pem).map_err(|reason| ca_error(path, reason))? {
            store.add_cert(cert)?;
        }
    }
    for (i, pem) in roots.pems.iter().enumerate() {
        let label = PathBuf::from(format!("<in-memory PEM #{i}>"));
        for cert in parse_bundle(pem).map_err(|reason| ca_error(&label, reason))? {
            store.add_cert(cert)?;
        }
    }
    builder.set_cert_store(store.build());
    Ok(builder.build())
}

fn parse_bundle(pem: &[u8]) -> Result<Vec<X509>, String> {
    let certs =
        X509::stack_from_pem(pem).map_err(|e| format!("not a PEM certificate bundle ({e})"))?;
    if certs.is_empty() {
        return Err("no certificate in the file".into());
    }
    Ok(certs)
}

fn ca_error(path: &Path, reason: String) -> Error {
    Error::CaBundle {
        path: path.to_owned(),
        reason,
    }
}
