//! The emulator's own PKI: a CA created on first start, and a server certificate it issues for
//! the names clients connect to (IP 127.0.0.1, DNS localhost). Clients trust `ca.pem` and
//! nothing else changes on their side, which is how a device is pointed at the emulator.
//!
//! The CA key stays in the data dir (mode 0600). The server certificate is reissued at start when
//! it is missing, expires within 30 days, or was not issued by the current CA.

use std::path::{Path, PathBuf};

use openssl::asn1::{Asn1Integer, Asn1Time};
use openssl::bn::{BigNum, MsbOption};
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::x509::extension::{
    AuthorityKeyIdentifier, BasicConstraints, ExtendedKeyUsage, KeyUsage, SubjectAlternativeName,
    SubjectKeyIdentifier,
};
use openssl::x509::{X509Builder, X509NameBuilder, X509};

use crate::persist::write_atomic;

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("OpenSSL: {0}")]
    OpenSsl(#[from] openssl::error::ErrorStack),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// A CA: certificate and key.
pub struct Ca {
    pub cert: X509,
    pub key: PKey<Private>,
}

/// Paths of the PKI files in the data dir.
pub struct PkiFiles {
    pub ca_cert: PathBuf,
    pub server_chain: PathBuf,
    pub server_key: PathBuf,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> PkiError + '_ {
    move |source| PkiError::Io {
        path: path.to_owned(),
        source,
    }
}

fn new_key() -> Result<PKey<Private>, PkiError> {
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1)?;
    Ok(PKey::from_ec_key(EcKey::generate(&group)?)?)
}

fn serial() -> Result<Asn1Integer, PkiError> {
    let mut bn = BigNum::new()?;
    bn.rand(127, MsbOption::MAYBE_ZERO, false)?;
    Ok(bn.to_asn1_integer()?)
}

fn name(cn: &str) -> Result<openssl::x509::X509Name, PkiError> {
    let mut name = X509NameBuilder::new()?;
    name.append_entry_by_nid(Nid::COMMONNAME, cn)?;
    Ok(name.build())
}

fn builder(cn: &str, days: u32, key: &PKey<Private>) -> Result<X509Builder, PkiError> {
    let name = name(cn)?;
    let mut b = X509Builder::new()?;
    b.set_version(2)?;
    let serial = serial()?;
    b.set_serial_number(&serial)?;
    b.set_subject_name(&name)?;
    b.set_pubkey(key)?;
    // Backdated an hour so a client whose clock lags slightly still accepts it.
    let not_before = i64::try_from(crate::time::unix_now()).unwrap_or(0) - 3600;
    // time_t is 32 bits on armhf.
    #[allow(clippy::useless_conversion)]
    let not_before = Asn1Time::from_unix(not_before.try_into().unwrap_or(0))?;
    b.set_not_before(&not_before)?;
    let not_after = Asn1Time::days_from_now(days)?;
    b.set_not_after(&not_after)?;
    Ok(b)
}

impl Ca {
    /// A new self-signed CA (EC P-256, 10 years).
    pub fn create(cn: &str) -> Result<Self, PkiError> {
        let key = new_key()?;
        let mut b = builder(cn, 3650, &key)?;
        let issuer = name(cn)?;
        b.set_issuer_name(&issuer)?;
        let ext = BasicConstraints::new().critical().ca().build()?;
        b.append_extension(ext)?;
        b.append_extension(
            KeyUsage::new()
                .critical()
                .key_cert_sign()
                .crl_sign()
                .build()?,
        )?;
        let ski = SubjectKeyIdentifier::new().build(&b.x509v3_context(None, None))?;
        b.append_extension(ski)?;
        b.sign(&key, MessageDigest::sha256())?;
        Ok(Self {
            cert: b.build(),
            key,
        })
    }

    /// Issues a TLS server certificate (EC P-256, 2 years) for `ips` and `dns` names.
    pub fn issue_server(
        &self,
        ips: &[&str],
        dns: &[&str],
    ) -> Result<(X509, PKey<Private>), PkiError> {
        let key = new_key()?;
        let cn = dns
            .first()
            .or(ips.first())
            .copied()
            .unwrap_or("iot-emulator");
        let mut b = builder(cn, 730, &key)?;
        b.set_issuer_name(self.cert.subject_name())?;
        b.append_extension(BasicConstraints::new().critical().build()?)?;
        b.append_extension(
            KeyUsage::new()
                .critical()
                .digital_signature()
                .key_agreement()
                .build()?,
        )?;
        b.append_extension(ExtendedKeyUsage::new().server_auth().build()?)?;
        let mut san = SubjectAlternativeName::new();
        for ip in ips {
            san.ip(ip);
        }
        for name in dns {
            san.dns(name);
        }
        let san = san.build(&b.x509v3_context(Some(&self.cert), None))?;
        b.append_extension(san)?;
        let ski = SubjectKeyIdentifier::new().build(&b.x509v3_context(Some(&self.cert), None))?;
        b.append_extension(ski)?;
        let aki = AuthorityKeyIdentifier::new()
            .keyid(true)
            .build(&b.x509v3_context(Some(&self.cert), None))?;
        b.append_extension(aki)?;
        b.sign(&self.key, MessageDigest::sha256())?;
        Ok((b.build(), key))
    }
}

/// Loads the CA and server certificate from `dir`, creating or reissuing what is missing or
/// stale. Returns the file paths (the server chain is leaf + CA).
pub fn ensure(dir: &Path) -> Result<PkiFiles, PkiError> {
    let files = PkiFiles {
        ca_cert: dir.join("ca.pem"),
        server_chain: dir.join("server.pem"),
        server_key: dir.join("server.key"),
    };
    let ca_key_path = dir.join("ca.key");
    let ca = if files.ca_cert.exists() && ca_key_path.exists() {
        let cert = X509::from_pem(&std::fs::read(&files.ca_cert).map_err(io(&files.ca_cert))?)?;
        let key =
            PKey::private_key_from_pem(&std::fs::read(&ca_key_path).map_err(io(&ca_key_path))?)?;
        Ca { cert, key }
    } else {
        let ca = Ca::create(&format!(
            "iot-emulator CA {}",
            &data_encoding::HEXLOWER.encode(&crate::ids::random_bytes(4))
        ))?;
        write_atomic(&ca_key_path, &ca.key.private_key_to_pem_pkcs8()?, 0o600)
            .map_err(io(&ca_key_path))?;
        write_atomic(&files.ca_cert, &ca.cert.to_pem()?, 0o644).map_err(io(&files.ca_cert))?;
        log::info!("created a new CA: {}", files.ca_cert.display());
        ca
    };
    if !server_cert_usable(&files, &ca)? {
        let (cert, key) = ca.issue_server(&["127.0.0.1", "::1"], &["localhost"])?;
        let mut chain = cert.to_pem()?;
        chain.extend_from_slice(&ca.cert.to_pem()?);
        write_atomic(&files.server_key, &key.private_key_to_pem_pkcs8()?, 0o600)
            .map_err(io(&files.server_key))?;
        write_atomic(&files.server_chain, &chain, 0o644).map_err(io(&files.server_chain))?;
        log::info!(
            "issued a new server certificate: {}",
            files.server_chain.display()
        );
    }
    Ok(files)
}

fn server_cert_usable(files: &PkiFiles, ca: &Ca) -> Result<bool, PkiError> {
    if !files.server_chain.exists() || !files.server_key.exists() {
        return Ok(false);
    }
    let certs = X509::stack_from_pem(
        &std::fs::read(&files.server_chain).map_err(io(&files.server_chain))?,
    )?;
    let Some(leaf) = certs.first() else {
        return Ok(false);
    };
    let soon = Asn1Time::days_from_now(30)?;
    let ca_key = ca.cert.public_key()?;
    let signed_by_ca = leaf.verify(&ca_key)?;
    Ok(signed_by_ca && leaf.not_after() > soon)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_cert_chains_to_the_ca_and_is_kept_across_starts() {
        let dir = tempfile::tempdir().unwrap();
        let first = ensure(dir.path()).unwrap();
        let chain1 = std::fs::read(&first.server_chain).unwrap();
        let ca = X509::from_pem(&std::fs::read(&first.ca_cert).unwrap()).unwrap();
        let leaf = X509::stack_from_pem(&chain1).unwrap().remove(0);
        assert!(leaf.verify(&ca.public_key().unwrap()).unwrap());
        let sans: Vec<String> = leaf
            .subject_alt_names()
            .unwrap()
            .iter()
            .map(|n| {
                n.dnsname()
                    .map(str::to_owned)
                    .unwrap_or_else(|| format!("{:?}", n.ipaddress().unwrap()))
            })
            .collect();
        assert!(
            sans.contains(&"localhost".to_owned()) && sans.contains(&"[127, 0, 0, 1]".to_owned()),
            "{sans:?}"
        );
        let second = ensure(dir.path()).unwrap();
        assert_eq!(std::fs::read(&second.server_chain).unwrap(), chain1);
    }
}
