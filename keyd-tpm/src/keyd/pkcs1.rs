//! PKCS#1 v1.5 type 1 (signature) padding, which keyd applies for `RSA-PKCS1` before the TPM's
//! raw private operation, as upstream's `RSA_private_encrypt(RSA_PKCS1_PADDING)` does:
//! `0x00 || 0x01 || 0xFF... (at least 8) || 0x00 || input`.

use super::error::KeydError;

const MIN_PADDING: usize = 8;

/// Pads `input` (normally a DigestInfo) to `k` bytes, the modulus length.
pub fn pad_type1(input: &[u8], k: usize) -> Result<Vec<u8>, KeydError> {
    let max = k.saturating_sub(3 + MIN_PADDING);
    if input.len() > max {
        return Err(KeydError::invalid(
            "plaintext",
            format!(
                "{} bytes is too long for RSA-PKCS1 with a {k}-byte modulus (at most {max})",
                input.len()
            ),
        ));
    }
    let mut block = Vec::with_capacity(k);
    block.extend_from_slice(&[0x00, 0x01]);
    block.resize(k - input.len() - 1, 0xFF);
    block.push(0x00);
    block.extend_from_slice(input);
    Ok(block)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout() {
        let b = pad_type1(b"abc", 16).unwrap();
        assert_eq!(
            b,
            [
                0, 1, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0, b'a', b'b',
                b'c'
            ]
        );
    }

    #[test]
    fn matches_openssl_private_encrypt() {
        use openssl::rsa::{Padding, Rsa};
        let rsa = Rsa::generate(2048).unwrap();
        let input = b"a DigestInfo would go here";
        let mut theirs = vec![0; 256];
        let n = rsa
            .private_encrypt(input, &mut theirs, Padding::PKCS1)
            .unwrap();
        let mut ours = vec![0; 256];
        let block = pad_type1(input, 256).unwrap();
        rsa.private_encrypt(&block, &mut ours, Padding::NONE)
            .unwrap();
        assert_eq!(ours, theirs[..n]);
    }

    #[test]
    fn too_long_input_names_the_limit() {
        assert!(pad_type1(&[0; 245], 256).is_ok());
        let e = pad_type1(&[0; 246], 256).unwrap_err();
        assert!(matches!(
            e,
            KeydError::InvalidParameter {
                name: "plaintext",
                ..
            }
        ));
    }
}
