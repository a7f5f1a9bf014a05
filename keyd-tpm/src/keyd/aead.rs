//! AEAD in upstream's format: AES-256-GCM with the caller's IV and AAD, ciphertext
//! `0x02 || ct || 16-byte tag`. Decryption also takes IoT Edge 1.1's `0x01 || tag || ct`.
//! The AES key is unsealed from the TPM (or derived in it) just for the call and zeroized by
//! the caller's `Zeroizing` afterwards; it never leaves this module otherwise.

use openssl::symm::{decrypt_aead, encrypt_aead, Cipher};

use super::error::KeydError;

const TAG_LEN: usize = 16;
const KEY_LEN: usize = 32;
const V1: u8 = 0x01;
const V2: u8 = 0x02;

pub fn seal(key: &[u8], iv: &[u8], aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, KeydError> {
    check(key, iv)?;
    let mut tag = [0u8; TAG_LEN];
    let ct = encrypt_aead(
        Cipher::aes_256_gcm(),
        key,
        Some(iv),
        aad,
        plaintext,
        &mut tag,
    )
    .map_err(KeydError::crypto("AES-256-GCM encryption"))?;
    let mut out = Vec::with_capacity(1 + ct.len() + TAG_LEN);
    out.push(V2);
    out.extend_from_slice(&ct);
    out.extend_from_slice(&tag);
    Ok(out)
}

pub fn open(key: &[u8], iv: &[u8], aad: &[u8], ciphertext: &[u8]) -> Result<Vec<u8>, KeydError> {
    check(key, iv)?;
    let Some((&version, rest)) = ciphertext.split_first() else {
        return Err(KeydError::invalid("ciphertext", "malformed: empty"));
    };
    if rest.len() < TAG_LEN {
        return Err(KeydError::invalid(
            "ciphertext",
            "malformed: shorter than the 16-byte tag",
        ));
    }
    let (ct, tag) = match version {
        V2 => rest.split_at(rest.len() - TAG_LEN),
        V1 => {
            let (tag, ct) = rest.split_at(TAG_LEN);
            (ct, tag)
        }
        other => {
            return Err(KeydError::invalid(
                "ciphertext",
                format!("unknown version {other:#04x}; expected 0x01 or 0x02"),
            ))
        }
    };
    decrypt_aead(Cipher::aes_256_gcm(), key, Some(iv), aad, ct, tag).map_err(|_| {
        KeydError::invalid(
            "ciphertext",
            "does not authenticate: the ciphertext, iv or aad was altered, or it was encrypted with another key",
        )
    })
}

fn check(key: &[u8], iv: &[u8]) -> Result<(), KeydError> {
    if key.len() != KEY_LEN {
        // Only reachable with a sealed object that does not hold an AES-256 key.
        return Err(KeydError::invalid(
            "handle",
            format!("the key is {} bytes, not an AES-256 key", key.len()),
        ));
    }
    if iv.is_empty() {
        return Err(KeydError::invalid(
            "iv",
            "must not be empty (AES-GCM needs an IV; 12 bytes is usual)",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: [u8; 32] = [7; 32];

    #[test]
    fn round_trip_and_layout() {
        let ct = seal(&KEY, b"0123456789ab", b"aad", b"hello").unwrap();
        assert_eq!(ct[0], 0x02);
        assert_eq!(ct.len(), 1 + 5 + 16);
        assert_eq!(open(&KEY, b"0123456789ab", b"aad", &ct).unwrap(), b"hello");
    }

    #[test]
    fn matches_plain_openssl_aes_gcm() {
        let mut tag = [0u8; 16];
        let raw = encrypt_aead(
            Cipher::aes_256_gcm(),
            &KEY,
            Some(b"iv-of-any-len"),
            b"a",
            b"msg",
            &mut tag,
        )
        .unwrap();
        let ours = seal(&KEY, b"iv-of-any-len", b"a", b"msg").unwrap();
        assert_eq!(&ours[1..4], &raw[..]);
        assert_eq!(&ours[4..], &tag);
    }

    #[test]
    fn legacy_v1_layout_is_accepted() {
        let v2 = seal(&KEY, b"iv", b"", b"legacy secret").unwrap();
        let (ct, tag) = v2[1..].split_at(v2.len() - 1 - 16);
        let mut v1 = vec![0x01];
        v1.extend_from_slice(tag);
        v1.extend_from_slice(ct);
        assert_eq!(open(&KEY, b"iv", b"", &v1).unwrap(), b"legacy secret");
    }

    #[test]
    fn tampering_wrong_aad_and_bad_shapes_are_400s() {
        let mut ct = seal(&KEY, b"iv", b"aad", b"hello").unwrap();
        assert!(open(&KEY, b"iv", b"other", &ct)
            .unwrap_err()
            .to_string()
            .contains("ciphertext"));
        ct[2] ^= 1;
        assert!(matches!(
            open(&KEY, b"iv", b"aad", &ct),
            Err(KeydError::InvalidParameter {
                name: "ciphertext",
                ..
            })
        ));
        assert!(matches!(
            open(&KEY, b"iv", b"", &[]),
            Err(KeydError::InvalidParameter {
                name: "ciphertext",
                ..
            })
        ));
        assert!(matches!(
            open(&KEY, b"iv", b"", &[2; 10]),
            Err(KeydError::InvalidParameter { .. })
        ));
        assert!(matches!(
            open(&KEY, b"iv", b"", &[3; 40]),
            Err(KeydError::InvalidParameter { .. })
        ));
        assert!(matches!(
            seal(&KEY, b"", b"", b"x"),
            Err(KeydError::InvalidParameter { name: "iv", .. })
        ));
    }
}
