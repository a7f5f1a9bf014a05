//! EK certificates: what proves that the EK a device enrolls with belongs to a genuine TPM. Each
//! certificate the TPM maker put in NV (RSA at 0x01c00002, ECC at 0x01c0000a or in the high range)
//! is verified against a trust bundle of TPM makers' CAs, and the RSA one's public key must be the
//! EK in use at 0x81010001 (the one DPS attests). `tpm-info` shows the verdicts, `check` warns on
//! any but "verified".

use std::path::{Path, PathBuf};

use openssl::stack::Stack;
use openssl::x509::store::{X509Store, X509StoreBuilder};
use openssl::x509::verify::X509VerifyFlags;
use openssl::x509::{X509NameRef, X509StoreContext, X509VerifyResult, X509};
use serde::Serialize;
use serde_json::{Map, Value};
use tss_esapi::structures::Public;
use tss_esapi::traits::UnMarshall;

pub const DEFAULT_TRUST_BUNDLE: &str = "/etc/aziot/tpm/ek-ca.pem";

/// Where the TPM makers' CA certificates are.
#[derive(clap::Args, Clone, Debug)]
pub struct TrustArgs {
    /// The TPM makers' CA certificates that EK certificates are verified against: a PEM file with
    /// any number of certificates, or a directory of PEM or DER files (.pem, .crt, .cer, .der).
    /// Roots and intermediates both count as trusted.
    #[arg(
        long = "ek-trust-bundle",
        value_name = "PATH",
        env = "AZIOT_TPM_EK_TRUST_BUNDLE",
        default_value = DEFAULT_TRUST_BUNDLE
    )]
    pub bundle: PathBuf,
}

/// The outcome for one certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Issued by a CA in the bundle, valid now, and (RSA) its key is the EK in use.
    Verified,
    /// Issued by a CA in the bundle, but its key is not the EK at 0x81010001.
    WrongKey,
    Expired,
    NotYetValid,
    /// No CA in the bundle issued it, or its signature does not verify.
    Untrusted,
    /// There is no trust bundle to verify against.
    NoTrustBundle,
    /// The NV index holds something that is not a certificate.
    Malformed,
}

/// What `tpm-info` and `check` report about one EK certificate.
#[derive(Debug, Clone, Serialize)]
pub struct Verification {
    pub nv_index: String,
    /// The EK type the index is for, e.g. "RSA-2048".
    pub key: String,
    pub subject: Option<String>,
    pub issuer: Option<String>,
    pub serial: Option<String>,
    pub not_before: Option<String>,
    pub not_after: Option<String>,
    /// Whether its public key is the EK in use; `None` when that cannot be told (an ECC
    /// certificate: keyd-tpm's EK is RSA; or no EK persisted).
    pub key_is_ek_in_use: Option<bool>,
    pub verdict: Verdict,
    /// A sentence that says why.
    pub detail: String,
}

/// The trust bundle as loaded.
pub enum Bundle {
    Loaded { store: X509Store, path: PathBuf, count: usize },
    Missing(PathBuf),
    Invalid(String),
}

impl Bundle {
    pub fn load(path: &Path) -> Self {
        let files = if path.is_dir() {
            match std::fs::read_dir(path) {
                Ok(entries) => {
                    let mut files: Vec<PathBuf> = entries
                        .filter_map(|e| e.ok().map(|e| e.path()))
                        .filter(|p| {
                            p.extension()
                                .and_then(|e| e.to_str())
                                .is_some_and(|e| ["pem", "crt", "cer", "der"].contains(&e.to_ascii_lowercase().as_str()))
                        })
                        .collect();
                    files.sort();
                    files
                }
                Err(e) => return Bundle::Invalid(format!("cannot read the EK trust bundle directory {}: {e}", path.display())),
            }
        } else if path.exists() {
            vec![path.to_owned()]
        } else {
            return Bundle::Missing(path.to_owned());
        };
        let mut certs = Vec::new();
        for file in &files {
            let bytes = match std::fs::read(file) {
                Ok(b) => b,
                Err(e) => return Bundle::Invalid(format!("cannot read {}: {e}", file.display())),
            };
            match X509::stack_from_pem(&bytes).ok().filter(|s| !s.is_empty()).or_else(|| X509::from_der(&bytes).ok().map(|c| vec![c])) {
                Some(found) => certs.extend(found),
                None => return Bundle::Invalid(format!("{} holds no PEM or DER certificate", file.display())),
            }
        }
        if certs.is_empty() {
            return Bundle::Invalid(format!("the EK trust bundle {} holds no certificate", path.display()));
        }
        let built = (|| {
            let mut builder = X509StoreBuilder::new()?;
            // Every certificate in the bundle is an anchor: a maker's intermediate alone will do.
            builder.set_flags(X509VerifyFlags::PARTIAL_CHAIN)?;
            for c in &certs {
                builder.add_cert(c.clone())?;
            }
            Ok::<_, openssl::error::ErrorStack>(builder.build())
        })();
        match built {
            Ok(store) => Bundle::Loaded { store, path: path.to_owned(), count: certs.len() },
            Err(e) => Bundle::Invalid(format!("the EK trust bundle {} cannot be used: {e}", path.display())),
        }
    }

    /// "N certificates from PATH", or why there are none.
    pub fn describe(&self) -> String {
        match self {
            Bundle::Loaded { path, count, .. } => format!("{count} CA certificate(s) from {}", path.display()),
            Bundle::Missing(path) => format!("no trust bundle at {}", path.display()),
            Bundle::Invalid(e) => e.clone(),
        }
    }
}

/// One certificate as read from NV.
#[derive(Debug, Clone)]
pub struct Found {
    pub nv_index: String,
    pub key: String,
    pub der: Vec<u8>,
}

/// The EK certificates in keyd-tpm's `/tpm_info` answer (or the direct read's), which lists
/// them under `ek_certificates`.
pub fn found_in(details: &Map<String, Value>) -> Vec<Found> {
    let text = |c: &Value, k: &str| c.get(k).and_then(Value::as_str).unwrap_or_default().to_owned();
    details
        .get("ek_certificates")
        .and_then(Value::as_array)
        .map(|all| {
            all.iter()
                .filter_map(|c| {
                    let der = aziot_tpm_common::from_b64(c.get("certificate")?.as_str()?).ok()?;
                    Some(Found { nv_index: text(c, "nv_index"), key: text(c, "key"), der })
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Verifies each certificate against `bundle`, and the RSA ones' keys against `ek` (the EK in
/// use, TPM2B_PUBLIC).
pub fn verify_all(found: &[Found], ek: Option<&[u8]>, bundle: &Bundle) -> Vec<Verification> {
    found.iter().map(|f| verify(f, ek, bundle)).collect()
}

fn verify(found: &Found, ek: Option<&[u8]>, bundle: &Bundle) -> Verification {
    let mut v = Verification {
        nv_index: found.nv_index.clone(),
        key: found.key.clone(),
        subject: None,
        issuer: None,
        serial: None,
        not_before: None,
        not_after: None,
        key_is_ek_in_use: None,
        verdict: Verdict::Malformed,
        detail: String::new(),
    };
    let cert = match X509::from_der(&found.der) {
        Ok(c) => c,
        Err(e) => {
            v.detail = format!("NV index {} does not hold a DER certificate: {e}", found.nv_index);
            return v;
        }
    };
    v.subject = Some(name(cert.subject_name()));
    v.issuer = Some(name(cert.issuer_name()));
    v.serial = cert.serial_number().to_bn().ok().and_then(|b| b.to_hex_str().ok()).map(|s| s.to_string());
    v.not_before = Some(cert.not_before().to_string());
    v.not_after = Some(cert.not_after().to_string());
    v.key_is_ek_in_use = if found.key.starts_with("RSA") { ek.map(|ek| same_rsa_key(&cert, ek)) } else { None };

    let chain = match bundle {
        Bundle::Loaded { store, .. } => chain_result(store, &cert),
        _ => Err((Verdict::NoTrustBundle, format!("not verified: {}", bundle.describe()))),
    };
    (v.verdict, v.detail) = match (chain, v.key_is_ek_in_use) {
        (Err((verdict, why)), _) => (verdict, why),
        (Ok(()), Some(false)) => (
            Verdict::WrongKey,
            format!(
                "issued by a trusted CA, but its key is not the EK at {:#010x}: the EK in use is not the one the TPM maker certified (replaced with tpm2-tools, another TPM's certificate, or something on the bus answering in the TPM's place)",
                aziot_tpm_common::EK_HANDLE
            ),
        ),
        (Ok(()), Some(true)) => (Verdict::Verified, format!("its key is the EK at {:#010x}", aziot_tpm_common::EK_HANDLE)),
        (Ok(()), None) if found.key.starts_with("RSA") => {
            (Verdict::Verified, format!("no EK is persisted at {:#010x} to compare its key with", aziot_tpm_common::EK_HANDLE))
        }
        (Ok(()), None) => (Verdict::Verified, "the certificate of an ECC EK (keyd-tpm and DPS use the RSA EK)".to_owned()),
    };
    v
}

fn chain_result(store: &X509Store, cert: &X509) -> Result<(), (Verdict, String)> {
    let untrusted = Stack::new().map_err(|e| (Verdict::Untrusted, format!("cannot verify: {e}")))?;
    let mut ctx = X509StoreContext::new().map_err(|e| (Verdict::Untrusted, format!("cannot verify: {e}")))?;
    let outcome = ctx.init(store, cert, &untrusted, |c| Ok((c.verify_cert()?, c.error())));
    match outcome {
        Ok((true, _)) => Ok(()),
        Ok((false, error)) => Err(classify(error)),
        Err(e) => Err((Verdict::Untrusted, format!("cannot verify: {e}"))),
    }
}

fn classify(error: X509VerifyResult) -> (Verdict, String) {
    // X509_V_ERR_CERT_NOT_YET_VALID, X509_V_ERR_CERT_HAS_EXPIRED and the same for the issuer.
    let verdict = match error.as_raw() {
        9 | 11 => Verdict::NotYetValid,
        10 | 12 => Verdict::Expired,
        _ => Verdict::Untrusted,
    };
    let detail = match verdict {
        Verdict::Expired => format!("expired ({})", error.error_string()),
        Verdict::NotYetValid => format!("not valid yet ({}); is this machine's clock right?", error.error_string()),
        _ => format!(
            "not issued by a CA in the trust bundle ({}); add the TPM maker's EK CA certificates to the bundle",
            error.error_string()
        ),
    };
    (verdict, detail)
}

/// Whether the certificate's RSA key is the EK's (modulus and exponent).
fn same_rsa_key(cert: &X509, ek_tpm2b: &[u8]) -> bool {
    let Some(Public::Rsa { unique, parameters, .. }) = ek_tpm2b.get(2..).and_then(|b| Public::unmarshall(b).ok()) else {
        return false;
    };
    let Ok(rsa) = cert.public_key().and_then(|k| k.rsa()) else { return false };
    let exponent = match parameters.exponent().value() {
        0 => 65537,
        e => e,
    };
    let strip = |b: &[u8]| b.iter().skip_while(|x| **x == 0).copied().collect::<Vec<u8>>();
    strip(&rsa.n().to_vec()) == strip(unique.value()) && rsa.e().to_vec() == strip(&exponent.to_be_bytes())
}

/// "CN=…, O=…" in the order the certificate has, or the SAN-style empty name as "(empty)".
fn name(n: &X509NameRef) -> String {
    let parts: Vec<String> = n
        .entries()
        .map(|e| {
            let key = e.object().nid().short_name().map(str::to_owned).unwrap_or_else(|_| e.object().to_string());
            let value = e.data().to_string().unwrap_or_default();
            format!("{key}={value}")
        })
        .collect();
    if parts.is_empty() {
        "(empty)".to_owned()
    } else {
        parts.join(", ")
    }
}

/// One line for people: "0x01c00002 (RSA-2048): verified: issued by CN=…, valid … to …; …".
pub fn line(v: &Verification) -> String {
    match (&v.issuer, &v.not_before, &v.not_after) {
        (Some(issuer), Some(from), Some(to)) => {
            format!("{} ({}): {}: issued by {issuer}, valid {from} to {to}; {}", v.nv_index, v.key, v.verdict.text(), v.detail)
        }
        _ => format!("{} ({}): {}: {}", v.nv_index, v.key, v.verdict.text(), v.detail),
    }
}

impl Verdict {
    pub fn text(self) -> &'static str {
        match self {
            Verdict::Verified => "verified",
            Verdict::WrongKey => "WRONG KEY",
            Verdict::Expired => "EXPIRED",
            Verdict::NotYetValid => "NOT YET VALID",
            Verdict::Untrusted => "NOT TRUSTED",
            Verdict::NoTrustBundle => "not verified",
            Verdict::Malformed => "MALFORMED",
        }
    }
}
