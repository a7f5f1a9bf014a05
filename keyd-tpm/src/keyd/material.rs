//! Turning key material into TPM objects: new keys generated in the TPM, and keys that arrive
//! as bytes (`keyBytes` imports, `[preloaded_keys]` files, keys upstream's file backend left).
//! Keys read from files are proven before they replace the file: the TPM's HMAC must equal a
//! software HMAC with the original bytes, an unsealed AES key must equal them, and a key pair's
//! public key must equal the original's.

use std::sync::Arc;

use openssl::bn::{BigNum, BigNumContext};
use openssl::pkey::{Id, PKey, Private};
use zeroize::Zeroizing;

use aziot_key_common_http::KeyUsage;

use crate::tpm::{KeyObject, PublicKey, Secret, TpmError, TpmHandle};

use super::crypto::{hmac_sha256, random_bytes, same_bytes};
use super::error::KeydError;
use super::record::{StoredKey, SymmetricKey};

/// An AES-256 key, the only sealed-key size.
pub const AES_KEY_LEN: usize = 32;

/// Which TPM objects a symmetric key needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Purposes {
    pub hmac: bool,
    pub sealed: bool,
}

impl Purposes {
    /// `sign`/`derive` need the HMAC object, `encrypt` the sealed one.
    pub fn from_usage(usage: &[KeyUsage]) -> Self {
        Purposes {
            hmac: usage
                .iter()
                .any(|u| matches!(u, KeyUsage::Sign | KeyUsage::Derive)),
            sealed: usage.contains(&KeyUsage::Encrypt),
        }
    }

    /// A key from a file has no declared usage: every object its length allows.
    fn for_file_bytes(len: usize) -> Self {
        Purposes {
            hmac: true,
            sealed: len == AES_KEY_LEN,
        }
    }
}

/// Key material from outside the TPM.
pub enum Material {
    Symmetric(Secret),
    KeyPair {
        pkcs8_der: Secret,
        public: PublicKey,
    },
}

impl Material {
    /// A key file's content as upstream's file backend reads it: a PEM private key is a key
    /// pair, anything else the raw bytes of a symmetric key.
    pub fn from_file_bytes(bytes: &[u8]) -> Result<Material, String> {
        if bytes.starts_with(b"-----BEGIN") {
            let pkey = PKey::private_key_from_pem(bytes)
                .map_err(|e| format!("PEM private key does not parse: {e}"))?;
            let pkcs8_der = Zeroizing::new(
                pkey.private_key_to_pkcs8()
                    .map_err(|e| format!("cannot convert to PKCS#8: {e}"))?,
            );
            let public = public_key_of(&pkey)?;
            Ok(Material::KeyPair { pkcs8_der, public })
        } else if bytes.is_empty() {
            Err("the file is empty".into())
        } else {
            Ok(Material::Symmetric(Zeroizing::new(bytes.to_vec())))
        }
    }
}

/// A new symmetric key, generated in the TPM; when it needs both objects, they are made from
/// one secret drawn here, so sign/derive and encrypt use the same key as upstream's.
pub async fn generate_symmetric(
    tpm: &TpmHandle,
    purposes: Purposes,
) -> Result<StoredKey, KeydError> {
    let key = match (purposes.hmac, purposes.sealed) {
        (true, true) => {
            return import_symmetric(tpm, random_bytes(AES_KEY_LEN)?, purposes)
                .await
                .map(StoredKey::Key)
        }
        (false, true) => SymmetricKey {
            hmac: None,
            sealed: Some(Arc::new(tpm.create_sealed_key(None).await?)),
        },
        _ => SymmetricKey {
            hmac: Some(Arc::new(tpm.create_hmac_key(None).await?)),
            sealed: None,
        },
    };
    Ok(StoredKey::Key(key))
}

/// TPM objects made from the bytes of a symmetric key.
pub async fn import_symmetric(
    tpm: &TpmHandle,
    bytes: Secret,
    purposes: Purposes,
) -> Result<SymmetricKey, KeydError> {
    if bytes.is_empty() {
        return Err(KeydError::invalid("keyBytes", "must not be empty"));
    }
    if purposes.sealed && bytes.len() != AES_KEY_LEN {
        return Err(KeydError::invalid(
            "keyBytes",
            format!("a key with usage encrypt is an AES-256 key and must be {AES_KEY_LEN} bytes, not {}", bytes.len()),
        ));
    }
    // Keys longer than HMAC's block are hashed by the TPM side, as HMAC itself does.
    let hmac = if purposes.hmac || !purposes.sealed {
        Some(Arc::new(tpm.create_hmac_key(Some(bytes.clone())).await?))
    } else {
        None
    };
    let sealed = if purposes.sealed {
        Some(Arc::new(tpm.create_sealed_key(Some(bytes)).await?))
    } else {
        None
    };
    Ok(SymmetricKey { hmac, sealed })
}

/// Takes key material read from the file `source` into the TPM and proves the copy before
/// returning it. A key the TPM cannot hold (e.g. RSA-4096) is refused naming the file.
pub async fn take_into_tpm(
    tpm: &TpmHandle,
    material: &Material,
    source: &std::path::Path,
) -> Result<Option<StoredKey>, KeydError> {
    let stored = match material {
        Material::Symmetric(bytes) => StoredKey::Key(
            import_symmetric(tpm, bytes.clone(), Purposes::for_file_bytes(bytes.len())).await?,
        ),
        Material::KeyPair { pkcs8_der, .. } => StoredKey::KeyPair(Arc::new(
            tpm.import_key_pair(pkcs8_der.clone())
                .await
                .map_err(|e| match e {
                    TpmError::InvalidKey(why) => {
                        TpmError::InvalidKey(format!("{why} (key file {})", source.display()))
                    }
                    other => other,
                })?,
        )),
    };
    Ok(prove(tpm, &stored, material).await?.then_some(stored))
}

/// True if the TPM objects behave exactly like `material`.
pub async fn prove(
    tpm: &TpmHandle,
    stored: &StoredKey,
    material: &Material,
) -> Result<bool, KeydError> {
    match (stored, material) {
        (StoredKey::Key(key), Material::Symmetric(bytes)) => {
            if let Some(hmac) = &key.hmac {
                let probe = random_bytes(32)?.to_vec();
                let theirs = hmac_sha256(bytes, &probe)?;
                let ours = tpm.hmac(hmac.clone(), probe).await?;
                if !same_bytes(&ours, &theirs) {
                    return Ok(false);
                }
            }
            if let Some(sealed) = &key.sealed {
                let unsealed = tpm.unseal(sealed.clone()).await?;
                if !same_bytes(&unsealed, bytes) {
                    return Ok(false);
                }
            }
            Ok(key.hmac.is_some() || key.sealed.is_some())
        }
        (StoredKey::KeyPair(object), Material::KeyPair { public, .. }) => {
            Ok(same_public_key(&object.public_key()?, public))
        }
        _ => Ok(false),
    }
}

/// A TPM-made key pair from a generated algorithm choice.
pub async fn generate_key_pair(
    tpm: &TpmHandle,
    algorithm: crate::tpm::KeyPairAlgorithm,
) -> Result<StoredKey, KeydError> {
    let object: KeyObject = tpm.create_key_pair(algorithm).await?;
    Ok(StoredKey::KeyPair(Arc::new(object)))
}

fn public_key_of(pkey: &PKey<Private>) -> Result<PublicKey, String> {
    match pkey.id() {
        Id::EC => {
            let ec = pkey.ec_key().map_err(|e| e.to_string())?;
            let mut ctx = BigNumContext::new().map_err(|e| e.to_string())?;
            let (mut x, mut y) = (
                BigNum::new().map_err(|e| e.to_string())?,
                BigNum::new().map_err(|e| e.to_string())?,
            );
            ec.public_key()
                .affine_coordinates(ec.group(), &mut x, &mut y, &mut ctx)
                .map_err(|e| e.to_string())?;
            Ok(PublicKey::EcP256 {
                x: x.to_vec(),
                y: y.to_vec(),
            })
        }
        Id::RSA => {
            let rsa = pkey.rsa().map_err(|e| e.to_string())?;
            let e = rsa.e().to_vec();
            if e.len() > 4 {
                return Err("the RSA public exponent does not fit 32 bits".into());
            }
            let exponent = e.iter().fold(0u32, |acc, &b| (acc << 8) | u32::from(b));
            Ok(PublicKey::Rsa {
                modulus: rsa.n().to_vec(),
                exponent,
            })
        }
        other => Err(format!(
            "unsupported key type {other:?}; keyd-tpm takes EC P-256 and RSA-2048 key pairs"
        )),
    }
}

/// Equal public keys, ignoring leading zero bytes (TPMs pad coordinates, OpenSSL does not).
fn same_public_key(a: &PublicKey, b: &PublicKey) -> bool {
    fn trim(bytes: &[u8]) -> &[u8] {
        let first = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
        &bytes[first..]
    }
    let exponent = |e: u32| if e == 0 { 65537 } else { e };
    match (a, b) {
        (PublicKey::EcP256 { x: ax, y: ay }, PublicKey::EcP256 { x: bx, y: by }) => {
            trim(ax) == trim(bx) && trim(ay) == trim(by)
        }
        (
            PublicKey::Rsa {
                modulus: an,
                exponent: ae,
            },
            PublicKey::Rsa {
                modulus: bn,
                exponent: be,
            },
        ) => trim(an) == trim(bn) && exponent(*ae) == exponent(*be),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_decides_the_objects() {
        assert_eq!(
            Purposes::from_usage(&[KeyUsage::Derive, KeyUsage::Sign]),
            Purposes {
                hmac: true,
                sealed: false
            }
        );
        assert_eq!(
            Purposes::from_usage(&[KeyUsage::Encrypt]),
            Purposes {
                hmac: false,
                sealed: true
            }
        );
        assert_eq!(
            Purposes::from_usage(&[KeyUsage::Sign, KeyUsage::Encrypt]),
            Purposes {
                hmac: true,
                sealed: true
            }
        );
        assert_eq!(
            Purposes::for_file_bytes(32),
            Purposes {
                hmac: true,
                sealed: true
            }
        );
        assert_eq!(
            Purposes::for_file_bytes(64),
            Purposes {
                hmac: true,
                sealed: false
            }
        );
    }

    #[test]
    fn file_bytes_pem_is_a_key_pair_else_symmetric() {
        let ec = openssl::ec::EcKey::generate(
            &openssl::ec::EcGroup::from_curve_name(openssl::nid::Nid::X9_62_PRIME256V1).unwrap(),
        )
        .unwrap();
        let pkey = PKey::from_ec_key(ec).unwrap();
        let pem = pkey.private_key_to_pem_pkcs8().unwrap();
        let Material::KeyPair { pkcs8_der, public } = Material::from_file_bytes(&pem).unwrap()
        else {
            panic!()
        };
        assert_eq!(&pkcs8_der[..], &pkey.private_key_to_pkcs8().unwrap()[..]);
        assert!(matches!(public, PublicKey::EcP256 { .. }));

        let rsa_pem = PKey::from_rsa(openssl::rsa::Rsa::generate(2048).unwrap())
            .unwrap()
            .private_key_to_pem_pkcs8()
            .unwrap();
        let Material::KeyPair {
            public: PublicKey::Rsa { exponent, modulus },
            ..
        } = Material::from_file_bytes(&rsa_pem).unwrap()
        else {
            panic!()
        };
        assert_eq!((exponent, modulus.len()), (65537, 256));

        assert!(
            matches!(Material::from_file_bytes(&[7; 32]).unwrap(), Material::Symmetric(b) if b.len() == 32)
        );
        assert!(Material::from_file_bytes(b"").is_err());
        assert!(Material::from_file_bytes(b"-----BEGIN nonsense").is_err());
    }

    #[test]
    fn public_key_comparison_ignores_padding() {
        let a = PublicKey::EcP256 {
            x: vec![0, 1, 2],
            y: vec![3],
        };
        let b = PublicKey::EcP256 {
            x: vec![1, 2],
            y: vec![0, 0, 3],
        };
        assert!(same_public_key(&a, &b));
        assert!(!same_public_key(
            &a,
            &PublicKey::EcP256 {
                x: vec![1, 2],
                y: vec![4]
            }
        ));
        assert!(same_public_key(
            &PublicKey::Rsa {
                modulus: vec![9; 4],
                exponent: 0
            },
            &PublicKey::Rsa {
                modulus: vec![9; 4],
                exponent: 65537
            }
        ));
    }
}
