//! Parses the DPS `authenticationKey` blob: five TPM2B fields, each a big-endian u16 size and
//! that many bytes. Every check happens here, before the TPM is touched, so a malformed blob is a
//! 400 that names the bad field and never disturbs the key already in the TPM.

use tss_esapi::structures::{
    EncryptedSecret, IdObject, KeyedHashScheme, Private, Public, PublicKeyedHashParameters,
};
use tss_esapi::traits::UnMarshall;

use super::error::TpmError;

/// The fields of a DPS `authenticationKey`, in wire order.
pub struct DpsBlob {
    /// TPM2B_ID_OBJECT: the credential (inner wrapper key) encrypted to the EK.
    pub credential_blob: IdObject,
    /// TPM2B_ENCRYPTED_SECRET: seed of the credential, RSA-OAEP to the EK.
    pub credential_secret: EncryptedSecret,
    /// TPM2B_PRIVATE: the HMAC key duplicated to the SRK.
    pub duplicate: Private,
    /// TPM2B_ENCRYPTED_SECRET: seed of the duplication, RSA-OAEP to the SRK.
    pub in_sym_seed: EncryptedSecret,
    /// TPM2B_PUBLIC: public area of the HMAC key.
    pub public: Public,
}

const FIELDS: [&str; 5] = [
    "1 (TPM2B_ID_OBJECT credentialBlob)",
    "2 (TPM2B_ENCRYPTED_SECRET secret)",
    "3 (TPM2B_PRIVATE duplicate)",
    "4 (TPM2B_ENCRYPTED_SECRET inSymSeed)",
    "5 (TPM2B_PUBLIC objectPublic)",
];

impl DpsBlob {
    pub fn parse(blob: &[u8]) -> Result<Self, TpmError> {
        let mut rest = blob;
        let mut fields: Vec<Vec<u8>> = Vec::with_capacity(5);
        for name in FIELDS {
            let (field, tail) = take_tpm2b(rest, name)?;
            fields.push(field.to_vec());
            rest = tail;
        }
        // Trailing bytes (DPS appends a u16-prefixed, usually empty, URI blob) are ignored, as
        // upstream and the device SDKs do.
        let mut it = fields.into_iter();
        let mut next = || it.next().unwrap_or_default();
        let credential_blob = IdObject::try_from(next()).map_err(|e| invalid(FIELDS[0], e))?;
        let credential_secret =
            EncryptedSecret::try_from(next()).map_err(|e| invalid(FIELDS[1], e))?;
        let duplicate = Private::try_from(next()).map_err(|e| invalid(FIELDS[2], e))?;
        let in_sym_seed = EncryptedSecret::try_from(next()).map_err(|e| invalid(FIELDS[3], e))?;
        let public_bytes = next();
        check_attributes(&public_bytes)?;
        let public = Public::unmarshall(&public_bytes).map_err(|e| invalid(FIELDS[4], e))?;
        match &public {
            Public::KeyedHash { parameters, .. }
                if *parameters == PublicKeyedHashParameters::new(KeyedHashScheme::HMAC_SHA_256) => {}
            _ => {
                return Err(TpmError::InvalidBlob(format!(
                    "field {} is not a keyedHash HMAC-SHA256 key, which is what DPS sends",
                    FIELDS[4]
                )))
            }
        }
        Ok(Self { credential_blob, credential_secret, duplicate, in_sym_seed, public })
    }
}

/// TPMA_OBJECT bits the TPM 2.0 spec reserves (0, 3, 8-9, 12-15, 20-31): a TPM answers
/// TPM_RC_RESERVED_BITS for them, so they are refused here, before the TPM is touched.
const RESERVED_OBJECT_ATTRIBUTES: u32 = 0xFFF0_F309;

/// The objectAttributes of a TPMT_PUBLIC (after its type and nameAlg) must use no reserved bit.
fn check_attributes(public: &[u8]) -> Result<(), TpmError> {
    let Some(bytes) = public.get(4..8) else {
        return Err(TpmError::InvalidBlob(format!(
            "field {} is too short ({} bytes) to hold a public area",
            FIELDS[4],
            public.len()
        )));
    };
    let attributes = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    let reserved = attributes & RESERVED_OBJECT_ATTRIBUTES;
    if reserved != 0 {
        return Err(TpmError::InvalidBlob(format!(
            "field {} sets reserved object attribute bits ({reserved:#010x} of {attributes:#010x}); DPS never sends those",
            FIELDS[4]
        )));
    }
    Ok(())
}

fn take_tpm2b<'a>(input: &'a [u8], name: &str) -> Result<(&'a [u8], &'a [u8]), TpmError> {
    if input.len() < 2 {
        return Err(TpmError::InvalidBlob(format!(
            "field {name} is missing: the blob ends before its 2-byte size"
        )));
    }
    let size = usize::from(u16::from_be_bytes([input[0], input[1]]));
    let body = &input[2..];
    if size == 0 {
        return Err(TpmError::InvalidBlob(format!("field {name} is empty")));
    }
    if body.len() < size {
        return Err(TpmError::InvalidBlob(format!(
            "field {name} is truncated: it declares {size} bytes but only {} remain",
            body.len()
        )));
    }
    Ok(body.split_at(size))
}

fn invalid(name: &str, e: tss_esapi::Error) -> TpmError {
    TpmError::InvalidBlob(format!("field {name} is not valid: {}", super::error::describe(&e)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tpm2b(bytes: &[u8]) -> Vec<u8> {
        let mut v = (bytes.len() as u16).to_be_bytes().to_vec();
        v.extend_from_slice(bytes);
        v
    }

    fn message(blob: &[u8]) -> String {
        match DpsBlob::parse(blob) {
            Err(e) => e.to_string(),
            Ok(_) => panic!("blob parsed"),
        }
    }

    #[test]
    fn empty_blob_names_the_first_field() {
        assert!(message(&[]).contains("field 1 (TPM2B_ID_OBJECT"), "{}", message(&[]));
    }

    #[test]
    fn truncated_field_says_how_much_is_missing() {
        let mut blob = tpm2b(&[1; 10]);
        blob.extend_from_slice(&[0x01, 0x02, 0xAA]);
        let m = message(&blob);
        assert!(m.contains("field 2 (TPM2B_ENCRYPTED_SECRET"), "{m}");
        assert!(m.contains("declares 258 bytes but only 1 remain"), "{m}");
    }

    mod properties {
        use super::*;
        use proptest::collection::vec;
        use proptest::prelude::*;
        use testkit::fuzz::check;

        /// Every refusal names the field (1 to 5) it is about.
        fn names_a_field(blob: &[u8]) -> Result<(), TestCaseError> {
            if let Err(e) = DpsBlob::parse(blob) {
                prop_assert!(matches!(e, TpmError::InvalidBlob(_)), "{e}");
                let e = e.to_string();
                prop_assert!(
                    (1..=5).any(|i| e.contains(&format!("field {i} ("))),
                    "names no field: {e}"
                );
            }
            Ok(())
        }

        #[test]
        fn any_bytes_are_refused_naming_a_field() {
            check("dps-blob-bytes", 1000, vec(any::<u8>(), 0..400), |blob| names_a_field(&blob));
        }

        #[test]
        fn well_framed_fields_of_any_content_are_refused_naming_a_field() {
            let field = vec(any::<u8>(), 0..120);
            let blob = (vec(field, 5..=5), vec(any::<u8>(), 0..8), any::<u16>());
            check("dps-blob-fields", 1000, blob, |(fields, tail, public_head)| {
                let mut blob = Vec::new();
                for (i, f) in fields.iter().enumerate() {
                    let mut f = f.clone();
                    // Field 5 often starts like a keyedHash public area, to get past the type.
                    if i == 4 && f.len() >= 2 && public_head % 2 == 0 {
                        f[..2].copy_from_slice(&0x0008u16.to_be_bytes());
                    }
                    blob.extend(tpm2b(&f));
                }
                blob.extend(tail);
                names_a_field(&blob)
            });
        }
    }

    #[test]
    fn reserved_attribute_bits_are_refused_naming_field_5() {
        let mut blob = Vec::new();
        for len in [10, 20, 30, 20] {
            blob.extend(tpm2b(&vec![7; len]));
        }
        // keyedHash, SHA-256, attributes with bit 0 (reserved) set.
        let mut public = vec![0x00, 0x08, 0x00, 0x0b, 0x00, 0x04, 0x04, 0x73];
        public.extend_from_slice(&[0; 8]);
        blob.extend(tpm2b(&public));
        let m = message(&blob);
        assert!(m.contains("field 5 (TPM2B_PUBLIC") && m.contains("reserved object attribute bits (0x00000001"), "{m}");
    }

    #[test]
    fn garbage_public_is_reported_as_field_5() {
        let mut blob = Vec::new();
        for len in [10, 20, 30, 20] {
            blob.extend(tpm2b(&vec![7; len]));
        }
        blob.extend(tpm2b(&[0xFF; 12]));
        let m = message(&blob);
        assert!(m.contains("field 5 (TPM2B_PUBLIC"), "{m}");
    }
}
