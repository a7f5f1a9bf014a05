//! The OpenSSL client context: which roots are trusted, TLS 1.2 as the floor, peer and host
//! name (or IP address) verification, made when the first connection needs it; and the `Ssl`
//! of each connection.
//!
//! It is the context openssl's `SslConnector` makes (the same options, mode, cipher list and
//! per-connection SNI and host check), built here because `SslConnector::builder` always loads
//! OpenSSL's default verify paths, which parses every root of the system bundle (about 25 ms of
//! CPU) into a store this client then replaces with its own.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use std::ffi::{c_char, CStr};

use openssl::ssl::{
    Ssl, SslContext, SslContextBuilder, SslFiletype, SslMethod, SslMode, SslOptions, SslVerifyMode, SslVersion,
};
use openssl::x509::store::{X509Lookup, X509StoreBuilder};
use openssl::x509::verify::X509CheckFlags;
use openssl::x509::X509;

use crate::Error;

/// Where trusted CA certificates come from.
#[derive(Debug, Clone, Default)]
pub(crate) struct Roots {
    pub system: bool,
    pub files: Vec<PathBuf>,
    pub pems: Vec<Vec<u8>>,
}

/// The trusted roots, read: the configured bundles parsed (so a bad one fails at start), the
/// system store and the OpenSSL context left for the first connection. A start that needs no
/// TLS (identityd restarting from its backup) never pays for them.
pub(crate) struct Trust {
    system: bool,
    certs: Vec<X509>,
    context: OnceLock<SslContext>,
}

impl Trust {
    pub fn load(roots: &Roots) -> Result<Self, Error> {
        let mut certs = Vec::new();
        for path in &roots.files {
            let pem = std::fs::read(path).map_err(|e| ca_error(path, e.to_string()))?;
            certs.extend(parse_bundle(&pem).map_err(|reason| ca_error(path, reason))?);
        }
        for (i, pem) in roots.pems.iter().enumerate() {
            let label = PathBuf::from(format!("<in-memory PEM #{i}>"));
            certs.extend(parse_bundle(pem).map_err(|reason| ca_error(&label, reason))?);
        }
        Ok(Self { system: roots.system, certs, context: OnceLock::new() })
    }

    /// A connection's TLS state for `host` (a DNS name or an IP address): the peer's chain is
    /// verified against the roots and must name `host`; a DNS name is sent as SNI.
    pub fn ssl(&self, host: &str) -> Result<Ssl, Error> {
        let mut ssl = Ssl::new(self.context()?)?;
        let ip = host.parse::<IpAddr>().ok();
        if ip.is_none() {
            ssl.set_hostname(host)?;
        }
        let param = ssl.param_mut();
        param.set_hostflags(X509CheckFlags::NO_PARTIAL_WILDCARDS);
        match ip {
            Some(ip) => param.set_ip(ip)?,
            None => param.set_host(host)?,
        }
        Ok(ssl)
    }

    /// The OpenSSL client context, made at the first call.
    fn context(&self) -> Result<&SslContext, Error> {
        if let Some(context) = self.context.get() {
            return Ok(context);
        }
        let made = context(self.system, &self.certs)?;
        // Two first requests at once may both make one; either serves.
        Ok(self.context.get_or_init(|| made))
    }
}

fn context(system: bool, certs: &[X509]) -> Result<SslContext, Error> {
    let mut builder = SslContextBuilder::new(SslMethod::tls_client())?;
    let mut options = SslOptions::ALL
        | SslOptions::NO_COMPRESSION
        | SslOptions::NO_SSLV2
        | SslOptions::NO_SSLV3
        | SslOptions::SINGLE_DH_USE
        | SslOptions::SINGLE_ECDH_USE;
    options &= !SslOptions::DONT_INSERT_EMPTY_FRAGMENTS;
    builder.set_options(options);
    builder.set_mode(
        SslMode::AUTO_RETRY | SslMode::ACCEPT_MOVING_WRITE_BUFFER | SslMode::ENABLE_PARTIAL_WRITE | SslMode::RELEASE_BUFFERS,
    );
    builder.set_cipher_list("DEFAULT:!aNULL:!eNULL:!MD5:!3DES:!DES:!RC4:!IDEA:!SEED:!aDSS:!SRP:!PSK")?;
    builder.set_verify(SslVerifyMode::PEER);
    builder.set_min_proto_version(Some(SslVersion::TLS1_2))?;
    let mut store = X509StoreBuilder::new()?;
    if system {
        add_system_roots(&mut store)?;
    }
    for cert in certs {
        store.add_cert(cert.clone())?;
    }
    builder.set_cert_store(store.build());
    Ok(builder.build())
}

/// The system's roots, as OpenSSL's default paths give them, but read lazily where that costs
/// nothing: when the default certificate directory (or `SSL_CERT_DIR`) holds hashed links, as
/// Debian's `update-ca-certificates` makes, the store looks each issuer up there during
/// verification and the bundle file (every root, parsed at once) is left alone.
/// Otherwise, or when `SSL_CERT_FILE` names a file, it is OpenSSL's `set_default_paths`.
fn add_system_roots(store: &mut X509StoreBuilder) -> Result<(), Error> {
    // SAFETY: these OpenSSL functions take nothing and return static C strings.
    let (file_env, dir_env, default_dir) = unsafe {
        (
            c_string(openssl_sys::X509_get_default_cert_file_env()),
            c_string(openssl_sys::X509_get_default_cert_dir_env()),
            c_string(openssl_sys::X509_get_default_cert_dir()),
        )
    };
    let env = |name: &str| (!name.is_empty()).then(|| std::env::var_os(name)).flatten();
    let dirs = env(&dir_env).unwrap_or_else(|| default_dir.into());
    if env(&file_env).is_some() || !std::env::split_paths(&dirs).any(|d| has_hashed_links(&d)) {
        store.set_default_paths()?;
        return Ok(());
    }
    store
        .add_lookup(X509Lookup::hash_dir())?
        .add_dir(&dirs.to_string_lossy(), SslFiletype::PEM)?;
    Ok(())
}

/// # Safety
/// `p` is null or points to a NUL-terminated string.
unsafe fn c_string(p: *const c_char) -> String {
    if p.is_null() {
        return String::new();
    }
    // SAFETY: as the caller promises.
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

/// Whether `dir` holds at least one `HHHHHHHH.N` link (a certificate by subject hash).
fn has_hashed_links(dir: &Path) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else { return false };
    entries.flatten().any(|e| {
        let name = e.file_name();
        let name = name.to_string_lossy();
        name.split_once('.').is_some_and(|(hash, n)| {
            hash.len() == 8 && hash.bytes().all(|b| b.is_ascii_hexdigit()) && !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())
        })
    })
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
