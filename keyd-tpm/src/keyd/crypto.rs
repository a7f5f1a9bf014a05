//! The few software crypto steps the Keys Service does outside the TPM: HMAC with a derived
//! key (the TPM computed the derived key), random bytes for nonces and for secrets that must
//! become two TPM objects, and constant-time comparison.

use openssl::hash::MessageDigest;
use openssl::pkey::PKey;
use openssl::sign::Signer;
use zeroize::Zeroizing;

use super::error::KeydError;

pub fn hmac_sha256(key: &[u8], data: &[u8]) -> Result<Vec<u8>, KeydError> {
    let key = PKey::hmac(key).map_err(KeydError::crypto("HMAC-SHA256 key setup"))?;
    let mut signer =
        Signer::new(MessageDigest::sha256(), &key).map_err(KeydError::crypto("HMAC-SHA256"))?;
    signer
        .update(data)
        .map_err(KeydError::crypto("HMAC-SHA256"))?;
    signer
        .sign_to_vec()
        .map_err(KeydError::crypto("HMAC-SHA256"))
}

pub fn random_bytes(len: usize) -> Result<Zeroizing<Vec<u8>>, KeydError> {
    let mut bytes = Zeroizing::new(vec![0u8; len]);
    openssl::rand::rand_bytes(&mut bytes).map_err(KeydError::crypto("random bytes"))?;
    Ok(bytes)
}

/// Constant-time equality; false for different lengths.
pub fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && openssl::memcmp::eq(a, b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc4231_case_2() {
        let mac = hmac_sha256(b"Jefe", b"what do ya want for nothing?").unwrap();
        assert_eq!(
            mac,
            [
                0x5b, 0xdc, 0xc1, 0x46, 0xbf, 0x60, 0x75, 0x4e, 0x6a, 0x04, 0x24, 0x26, 0x08, 0x95,
                0x75, 0xc7, 0x5a, 0x00, 0x3f, 0x08, 0x9d, 0x27, 0x39, 0x83, 0x9d, 0xec, 0x58, 0xb9,
                0x64, 0xec, 0x38, 0x43
            ]
        );
    }

    #[test]
    fn same_bytes_handles_lengths() {
        assert!(same_bytes(b"ab", b"ab"));
        assert!(!same_bytes(b"ab", b"abc"));
        assert!(!same_bytes(b"ab", b"ac"));
    }
}
