//! The values of `POST /parameters/{name}` for a key pair's public key, encoded as upstream
//! (and its OpenSSL engine, which rebuilds the public key from them) expects.

use crate::tpm::PublicKey;

use super::error::KeydError;

/// DER of the named-curve OID prime256v1 (1.2.840.10045.3.1.7), tag and length included.
const P256_OID_DER: [u8; 10] = [0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
const P256_COORD_LEN: usize = 32;
/// The TPM's way of saying "the default exponent".
const DEFAULT_RSA_EXPONENT: u32 = 65537;

pub fn parameter(public: &PublicKey, name: &str) -> Result<String, KeydError> {
    let b64 = |bytes: &[u8]| aziot_tpm_common::b64(bytes);
    match (name, public) {
        ("algorithm", PublicKey::EcP256 { .. }) => Ok("ECDSA".into()),
        ("algorithm", PublicKey::Rsa { .. }) => Ok("RSA".into()),
        ("ec-curve-oid", PublicKey::EcP256 { .. }) => Ok(b64(&P256_OID_DER)),
        ("ec-point", PublicKey::EcP256 { x, y }) => Ok(b64(&compressed_point(x, y)?)),
        ("rsa-modulus", PublicKey::Rsa { modulus, .. }) => Ok(b64(strip_leading_zeros(modulus))),
        ("rsa-exponent", PublicKey::Rsa { exponent, .. }) => {
            let e = if *exponent == 0 { DEFAULT_RSA_EXPONENT } else { *exponent };
            Ok(b64(strip_leading_zeros(&e.to_be_bytes())))
        }
        ("ec-curve-oid" | "ec-point" | "rsa-modulus" | "rsa-exponent", _) => Err(KeydError::invalid(
            "parameterName",
            format!("{name:?} does not apply to this key pair's algorithm"),
        )),
        _ => Err(KeydError::invalid(
            "parameterName",
            format!("unknown parameter {name:?}; expected algorithm, ec-curve-oid, ec-point, rsa-modulus or rsa-exponent"),
        )),
    }
}

/// SEC1 compressed form: `0x02 | parity(y)` then x, 32 bytes.
fn compressed_point(x: &[u8], y: &[u8]) -> Result<Vec<u8>, KeydError> {
    let x = strip_leading_zeros(x);
    let Some(&y_last) = y.last() else {
        return Err(KeydError::invalid(
            "handle",
            "the key pair's public point has no y coordinate",
        ));
    };
    if x.len() > P256_COORD_LEN {
        return Err(KeydError::invalid(
            "handle",
            "the key pair's public point is not a P-256 point",
        ));
    }
    let mut out = vec![0x02 | (y_last & 1)];
    out.resize(1 + P256_COORD_LEN - x.len(), 0);
    out.extend_from_slice(x);
    Ok(out)
}

fn strip_leading_zeros(bytes: &[u8]) -> &[u8] {
    let first = bytes
        .iter()
        .position(|&b| b != 0)
        .unwrap_or(bytes.len().saturating_sub(1));
    &bytes[first..]
}

#[cfg(test)]
mod tests {
    use super::*;
    use openssl::bn::BigNumContext;
    use openssl::ec::{EcGroup, EcKey, PointConversionForm};
    use openssl::nid::Nid;

    fn b64d(s: &str) -> Vec<u8> {
        aziot_tpm_common::from_b64(s).unwrap()
    }

    #[test]
    fn ec_point_and_oid_match_openssl() {
        let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
        let mut ctx = BigNumContext::new().unwrap();
        for _ in 0..8 {
            let key = EcKey::generate(&group).unwrap();
            let (mut x, mut y) = (
                openssl::bn::BigNum::new().unwrap(),
                openssl::bn::BigNum::new().unwrap(),
            );
            key.public_key()
                .affine_coordinates(&group, &mut x, &mut y, &mut ctx)
                .unwrap();
            let public = PublicKey::EcP256 {
                x: x.to_vec_padded(32).unwrap(),
                y: y.to_vec_padded(32).unwrap(),
            };
            let expected = key
                .public_key()
                .to_bytes(&group, PointConversionForm::COMPRESSED, &mut ctx)
                .unwrap();
            assert_eq!(b64d(&parameter(&public, "ec-point").unwrap()), expected);
        }
        let public = PublicKey::EcP256 {
            x: vec![1; 32],
            y: vec![2; 32],
        };
        let oid = b64d(&parameter(&public, "ec-curve-oid").unwrap());
        let obj = openssl::asn1::Asn1Object::from_str("1.2.840.10045.3.1.7").unwrap();
        assert_eq!(&oid[2..], obj.as_slice());
        assert_eq!(parameter(&public, "algorithm").unwrap(), "ECDSA");
    }

    #[test]
    fn rsa_values_are_big_endian() {
        let public = PublicKey::Rsa {
            modulus: vec![0xC1; 256],
            exponent: 65537,
        };
        assert_eq!(
            b64d(&parameter(&public, "rsa-exponent").unwrap()),
            [1, 0, 1]
        );
        assert_eq!(
            b64d(&parameter(&public, "rsa-modulus").unwrap()),
            vec![0xC1; 256]
        );
        assert_eq!(parameter(&public, "algorithm").unwrap(), "RSA");
        let default_e = PublicKey::Rsa {
            modulus: vec![0xC1; 256],
            exponent: 0,
        };
        assert_eq!(
            b64d(&parameter(&default_e, "rsa-exponent").unwrap()),
            [1, 0, 1]
        );
    }

    #[test]
    fn wrong_or_unknown_names_are_400s() {
        let rsa = PublicKey::Rsa {
            modulus: vec![0xC1; 256],
            exponent: 65537,
        };
        for name in ["ec-point", "ec-curve-oid", "modulus", ""] {
            assert!(
                matches!(
                    parameter(&rsa, name),
                    Err(KeydError::InvalidParameter { .. })
                ),
                "{name}"
            );
        }
    }
}
