//! `POST /encrypt {"keyHandle", "algorithm", "parameters"?, "plaintext"}` → `{"ciphertext"}`.
//! `AEAD` with a symmetric or derived key (see `aead`); `RSA-PKCS1` / `RSA-NO-PADDING` with an
//! RSA key pair: the raw private operation in the TPM, after type 1 padding for `RSA-PKCS1`.
//! This is how upstream's OpenSSL engine makes RSA signatures, so it is no encryption at all.

use aziot_http::{HttpError, Request, Response, StatusCode};
use aziot_key_common_http::encrypt::{self, Parameters};
use aziot_key_common_http::ByteString;

use crate::tpm::{KeyObject, ObjectKind, PublicKey};

use super::error::KeydError;
use super::handle::Target;
use super::keys::Keys;
use super::{aead, pkcs1};

pub async fn post(keys: &Keys, req: &Request) -> Result<Response, HttpError> {
    let body: encrypt::Request = req.json()?;
    let target = keys.handles.verify(&body.key_handle.0).await?;
    let plaintext = body.plaintext.into_inner();
    let ciphertext = match (target, body.parameters) {
        (target @ (Target::Key(_) | Target::Derived { .. }), Parameters::Aead { iv, aad }) => {
            let key = keys.aes_key(&target).await?;
            aead::seal(&key, &iv.0, &aad.0, &plaintext)?
        }
        (Target::KeyPair(id), mechanism @ (Parameters::RsaPkcs1 | Parameters::RsaNoPadding)) => {
            let object = keys.key_pair_of_kind(&id, ObjectKind::Rsa2048).await?;
            let modulus = modulus(&object)?;
            let block = if mechanism == Parameters::RsaPkcs1 {
                pkcs1::pad_type1(&plaintext, modulus.len())?
            } else {
                check_raw_block(&plaintext, &modulus)?;
                plaintext
            };
            keys.tpm
                .rsa_private(object, block)
                .await
                .map_err(KeydError::from)?
        }
        _ => return Err(KeydError::wrong_mechanism().into()),
    };
    Ok(Response::json(
        StatusCode::OK,
        &encrypt::Response {
            ciphertext: ByteString(ciphertext),
        },
    ))
}

fn modulus(object: &KeyObject) -> Result<Vec<u8>, KeydError> {
    match object.public_key()? {
        PublicKey::Rsa { modulus, .. } => Ok(modulus),
        PublicKey::EcP256 { .. } => Err(KeydError::wrong_mechanism()),
    }
}

/// `RSA-NO-PADDING` input must be a full block below the modulus, as `RSA_NO_PADDING` wants.
fn check_raw_block(block: &[u8], modulus: &[u8]) -> Result<(), KeydError> {
    if block.len() != modulus.len() {
        return Err(KeydError::invalid(
            "plaintext",
            format!(
                "RSA-NO-PADDING takes exactly {} bytes (the modulus length), not {}",
                modulus.len(),
                block.len()
            ),
        ));
    }
    // Equal lengths, big-endian: byte order is numeric order.
    if block >= modulus {
        return Err(KeydError::invalid(
            "plaintext",
            "the block is not smaller than the RSA modulus",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_blocks_must_be_full_and_below_the_modulus() {
        let n = [0xC0, 0, 0, 1];
        assert!(check_raw_block(&[0xBF, 0xFF, 0xFF, 0xFF], &n).is_ok());
        assert!(check_raw_block(&[0xC0, 0, 0, 1], &n).is_err());
        assert!(check_raw_block(&[0xC1, 0, 0, 0], &n).is_err());
        assert!(check_raw_block(&[0, 1], &n).is_err());
    }
}
