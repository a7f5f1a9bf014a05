//! The session cryptography of TPM 2.0 Part 1 (§11.4.9 KDFa, §11.4.10.3 KDFe, §19.6 HMAC
//! sessions, §21.3 CFB parameter encryption), SHA-256 and AES-128 only. Built on OpenSSL's
//! one-shot SHA-256 and AES-CFB, which cost a few microseconds; ESYS 3.2 creates a fresh OpenSSL
//! library context for every hash it takes, about a millisecond each (see `channel`).

use openssl::symm::{Cipher, Crypter, Mode};
use openssl::sha::Sha256;
use zeroize::Zeroizing;

use crate::tpm::error::TpmError;

pub const DIGEST: usize = 32;
const BLOCK: usize = 64;

pub fn sha256(parts: &[&[u8]]) -> [u8; DIGEST] {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
    }
    h.finish()
}

/// HMAC-SHA256 (RFC 2104) of the concatenation of `parts`.
pub fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; DIGEST] {
    let mut block = Zeroizing::new([0u8; BLOCK]);
    if key.len() > BLOCK {
        block[..DIGEST].copy_from_slice(&sha256(&[key]));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let mut pad = Zeroizing::new([0u8; BLOCK]);
    for (p, k) in pad.iter_mut().zip(block.iter()) {
        *p = k ^ 0x36;
    }
    let mut inner = Sha256::new();
    inner.update(&pad[..]);
    for p in parts {
        inner.update(p);
    }
    let inner = Zeroizing::new(inner.finish());
    for (p, k) in pad.iter_mut().zip(block.iter()) {
        *p = k ^ 0x5c;
    }
    sha256(&[&pad[..], &inner[..]])
}

/// KDFa(SHA-256, key, label, contextU, contextV, bits): SP 800-108 counter mode with HMAC; the
/// label is taken with its terminating NUL, as the TPM does.
pub fn kdfa(key: &[u8], label: &str, context_u: &[u8], context_v: &[u8], bytes: usize) -> Zeroizing<Vec<u8>> {
    let bits = ((bytes * 8) as u32).to_be_bytes();
    let mut out = Zeroizing::new(Vec::with_capacity(bytes + DIGEST));
    let mut counter = 1u32;
    while out.len() < bytes {
        let block = hmac(key, &[&counter.to_be_bytes(), label.as_bytes(), &[0], context_u, context_v, &bits]);
        out.extend_from_slice(&block);
        counter += 1;
    }
    out.truncate(bytes);
    out
}

/// KDFe(SHA-256, Z, label, partyUInfo, partyVInfo, 256 bits): the one-pass concatenation KDF
/// of SP 800-56A that turns an ECDH secret into a salt.
pub fn kdfe(z: &[u8], label: &str, party_u: &[u8], party_v: &[u8]) -> Zeroizing<[u8; DIGEST]> {
    Zeroizing::new(sha256(&[&1u32.to_be_bytes(), z, label.as_bytes(), &[0], party_u, party_v]))
}

/// AES-128-CFB over `data` in place: the TPM's parameter encryption (full-block feedback).
pub fn cfb(encrypt: bool, key: &[u8], iv: &[u8], data: &mut [u8]) -> Result<(), TpmError> {
    let fail = |e: openssl::error::ErrorStack| TpmError::Unexpected(format!("AES-128-CFB: {e}"));
    let mode = if encrypt { Mode::Encrypt } else { Mode::Decrypt };
    let mut c = Crypter::new(Cipher::aes_128_cfb128(), mode, key, Some(iv)).map_err(fail)?;
    let mut out = Zeroizing::new(vec![0u8; data.len() + 16]);
    let n = c.update(data, &mut out).map_err(fail)?;
    let m = c.finalize(&mut out[n..]).map_err(fail)?;
    if n + m != data.len() {
        return Err(TpmError::Unexpected("AES-128-CFB changed the length".into()));
    }
    data.copy_from_slice(&out[..data.len()]);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }

    #[test]
    fn hmac_matches_rfc_4231() {
        // Test case 2 and test case 6 (a key longer than the block).
        assert_eq!(
            hmac(b"Jefe", &[b"what do ya want ", b"for nothing?"]).to_vec(),
            hex("5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")
        );
        assert_eq!(
            hmac(&[0xaa; 131], &[b"Test Using Larger Than Block-Size Key - Hash Key First"]).to_vec(),
            hex("60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54")
        );
    }

    #[test]
    fn kdfa_is_hmac_in_counter_mode() {
        let key = [7u8; 32];
        let two = kdfa(&key, "CFB", b"u", b"v", 40);
        let first = hmac(&key, &[&1u32.to_be_bytes(), b"CFB\0", b"u", b"v", &320u32.to_be_bytes()]);
        let second = hmac(&key, &[&2u32.to_be_bytes(), b"CFB\0", b"u", b"v", &320u32.to_be_bytes()]);
        assert_eq!(&two[..32], &first);
        assert_eq!(&two[32..], &second[..8]);
    }

    #[test]
    fn cfb_round_trips_any_length() {
        let (key, iv) = ([1u8; 16], [2u8; 16]);
        let mut data = b"not a multiple of the block size".to_vec();
        data.push(b'!');
        let plain = data.clone();
        cfb(true, &key, &iv, &mut data).unwrap();
        assert_ne!(data, plain);
        cfb(false, &key, &iv, &mut data).unwrap();
        assert_eq!(data, plain);
    }
}
