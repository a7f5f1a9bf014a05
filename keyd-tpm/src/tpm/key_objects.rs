//! TPM side of the Keys Service's key objects: templates, creation under the SRK, import of
//! existing private keys, and the operations, each run on an object loaded through the owner's
//! cache of loaded objects (`Device::with_loaded`).

use std::convert::TryFrom;

use openssl::bn::BigNum;
use openssl::ecdsa::EcdsaSig;
use openssl::pkey::{Id, PKey};
use tss_esapi::attributes::{ObjectAttributes, ObjectAttributesBuilder};
use tss_esapi::constants::tss::{TPM2_RH_NULL, TPM2_ST_HASHCHECK};
use tss_esapi::interface_types::algorithm::{HashingAlgorithm, PublicAlgorithm};
use tss_esapi::interface_types::ecc::EccCurve;
use tss_esapi::interface_types::key_bits::RsaKeyBits;
use tss_esapi::interface_types::session_handles::AuthSession;
use tss_esapi::structures::{
    Data, Digest, EccParameter, EccPoint, EccScheme, EncryptedSecret, HashScheme, HashcheckTicket,
    KeyedHashScheme, MaxBuffer, Private, Public, PublicBuilder, PublicEccParametersBuilder,
    PublicKeyRsa, PublicKeyedHashParameters, PublicRsaParametersBuilder, RsaDecryptionScheme,
    RsaExponent, RsaScheme, SensitiveData, Signature, SignatureScheme, SymmetricDefinitionObject,
};
use tss_esapi::traits::{Marshall, UnMarshall};
use tss_esapi::tss2_esys::TPMT_TK_HASHCHECK;
use zeroize::Zeroizing;

use super::cache::is_out_of_object_memory;
use super::device::Device;
use super::error::{Context as _, TpmError};
use super::keys::{KeyObject, KeyPairAlgorithm, ObjectKind, PublicKey, Secret};
use super::sequence::SequenceKey;
use super::session::{Answer, Channel, Use};

/// HMAC keys longer than SHA-256's block are replaced by their hash, exactly as HMAC itself
/// does, so any length can be imported and still gives the same MACs.
const HMAC_BLOCK: usize = 64;
const RSA_BYTES: usize = 256;

pub fn public_key(key: &KeyObject) -> Result<PublicKey, TpmError> {
    match unmarshal_public(&key.public)? {
        Public::Ecc { unique, .. } => Ok(PublicKey::EcP256 {
            x: unique.x().value().to_vec(),
            y: unique.y().value().to_vec(),
        }),
        Public::Rsa { unique, parameters, .. } => Ok(PublicKey::Rsa {
            modulus: unique.value().to_vec(),
            exponent: match parameters.exponent().value() {
                0 => 65537,
                e => e,
            },
        }),
        _ => Err(TpmError::InvalidKey("this key is not a key pair".into())),
    }
}

fn unmarshal_public(bytes: &[u8]) -> Result<Public, TpmError> {
    Public::unmarshall(bytes).map_err(|e| TpmError::InvalidKey(format!("stored public area does not parse: {e}")))
}

/// Attributes shared by every key object: bound to this TPM and the SRK, password (empty) auth,
/// no dictionary-attack lockout (callers are authorized by the daemon, not by a password).
fn attributes(sign: bool, decrypt: bool, generated: bool) -> Result<ObjectAttributes, TpmError> {
    ObjectAttributesBuilder::new()
        .with_fixed_tpm(generated)
        .with_fixed_parent(generated)
        .with_sensitive_data_origin(generated)
        .with_user_with_auth(true)
        .with_no_da(true)
        .with_sign_encrypt(sign)
        .with_decrypt(decrypt)
        .build()
        .during("building object attributes")
}

fn keyed_hash_template(scheme: KeyedHashScheme, sign: bool, generated: bool) -> Result<Public, TpmError> {
    PublicBuilder::new()
        .with_public_algorithm(PublicAlgorithm::KeyedHash)
        .with_name_hashing_algorithm(HashingAlgorithm::Sha256)
        .with_object_attributes(attributes(sign, false, generated)?)
        .with_keyed_hash_parameters(PublicKeyedHashParameters::new(scheme))
        .with_keyed_hash_unique_identifier(Digest::default())
        .build()
        .during("building a keyedHash template")
}

fn ecc_template(unique: EccPoint, generated: bool) -> Result<Public, TpmError> {
    PublicBuilder::new()
        .with_public_algorithm(PublicAlgorithm::Ecc)
        .with_name_hashing_algorithm(HashingAlgorithm::Sha256)
        .with_object_attributes(attributes(true, false, generated)?)
        .with_ecc_parameters(
            // The caller hashes; ECDSA signs whatever digest it is given (the TPM uses it as a
            // number, truncated to the curve order), so the scheme's hash only labels the key.
            PublicEccParametersBuilder::new_unrestricted_signing_key(
                EccScheme::EcDsa(HashScheme::new(HashingAlgorithm::Sha256)),
                EccCurve::NistP256,
            )
                .build()
                .during("building ECC parameters")?,
        )
        .with_ecc_unique_identifier(unique)
        .build()
        .during("building an ECC template")
}

fn rsa_template(modulus: PublicKeyRsa, exponent: u32, generated: bool) -> Result<Public, TpmError> {
    let exponent = RsaExponent::create(if exponent == 65537 { 0 } else { exponent })
        .during("RSA exponent")?;
    PublicBuilder::new()
        .with_public_algorithm(PublicAlgorithm::Rsa)
        .with_name_hashing_algorithm(HashingAlgorithm::Sha256)
        // sign and decrypt with scheme NULL: TPM2_RSA_Decrypt with the NULL scheme is the raw
        // private operation upstream's OpenSSL engine needs (RSA-PKCS1 / RSA-NO-PADDING).
        .with_object_attributes(attributes(true, true, generated)?)
        .with_rsa_parameters(
            PublicRsaParametersBuilder::new()
                .with_scheme(RsaScheme::Null)
                .with_key_bits(RsaKeyBits::Rsa2048)
                .with_exponent(exponent)
                .with_is_signing_key(true)
                .with_is_decryption_key(true)
                .with_restricted(false)
                .build()
                .during("building RSA parameters")?,
        )
        .with_rsa_unique_identifier(modulus)
        .build()
        .during("building an RSA template")
}

/// ECDSA on P-256 uses the leftmost 256 bits of the digest as a number (SEC 1, 4.1.3 step 5),
/// so a longer digest is cut to 32 bytes and a shorter one left-padded with zeros: the signature
/// is the same as over the original digest, and the key's SHA-256 scheme accepts it.
fn p256_digest(digest: &[u8]) -> Result<Vec<u8>, TpmError> {
    match digest.len() {
        0 => Err(TpmError::InvalidKey("the ECDSA digest is empty".into())),
        n if n >= 32 => Ok(digest[..32].to_vec()),
        n => {
            let mut padded = vec![0u8; 32 - n];
            padded.extend_from_slice(digest);
            Ok(padded)
        }
    }
}

impl Device {
    fn create(&mut self, kind: ObjectKind, public: Public, data: Option<&[u8]>) -> Result<KeyObject, TpmError> {
        let sensitive = data
            .map(|d| SensitiveData::try_from(d.to_vec()))
            .transpose()
            .map_err(|_| TpmError::InvalidKey("key material is too long for a TPM object".into()))?;
        let srk = self.srk;
        // Key bytes are the first parameter (TPM2B_SENSITIVE_CREATE): encrypted on the bus.
        if self.bus.channel().is_some() && sensitive.is_some() {
            self.make_room()?;
            let ch = self.bus.channel().ok_or_else(|| TpmError::Unexpected("no session channel".into()))?;
            let template = public.marshall().map_err(|e| TpmError::Unexpected(format!("cannot marshal a template: {e}")))?;
            let (public, private) = ch.create(&template, data)?.during("TPM2_Create")?;
            return Ok(KeyObject { kind, public, private });
        }
        let session = match sensitive {
            Some(_) => self.bus.auth(&mut self.ctx, Use::Decrypt)?,
            None => AuthSession::Password,
        };
        // The new object needs one slot while it is made: the most recently used cached objects
        // (the handle key among them) stay loaded unless the TPM has no slot left.
        self.make_room_for_one();
        let created = self
            .with_room(|ctx| {
                ctx.execute_with_session(Some(session), |c| c.create(srk, public.clone(), None, sensitive.clone(), None, None))
            })?
            .during("TPM2_Create")?;
        Ok(KeyObject {
            kind,
            public: created
                .out_public
                .marshall()
                .map_err(|e| TpmError::Unexpected(format!("cannot marshal a created key: {e}")))?,
            private: created.out_private.value().to_vec(),
        })
    }

    pub fn create_hmac_key(&mut self, bytes: Option<&[u8]>) -> Result<KeyObject, TpmError> {
        let Some(bytes) = bytes else {
            let template = keyed_hash_template(KeyedHashScheme::HMAC_SHA_256, true, true)?;
            return self.create(ObjectKind::Hmac, template, None);
        };
        if bytes.is_empty() {
            return Err(TpmError::InvalidKey("an HMAC key cannot be empty".into()));
        }
        let hashed;
        let key = if bytes.len() > HMAC_BLOCK {
            hashed = Zeroizing::new(openssl::sha::sha256(bytes));
            &hashed[..]
        } else {
            bytes
        };
        let template = keyed_hash_template(KeyedHashScheme::HMAC_SHA_256, true, false)?;
        self.create(ObjectKind::Hmac, template, Some(key))
    }

    pub fn create_sealed_key(&mut self, bytes: Option<&[u8]>) -> Result<KeyObject, TpmError> {
        let random;
        let data = match bytes {
            Some(b) if b.len() == 32 => b,
            Some(b) => {
                return Err(TpmError::InvalidKey(format!(
                    "an AEAD (AES-256) key must be 32 bytes, not {}",
                    b.len()
                )))
            }
            None => {
                // The new AES key is the response: encrypted on the bus.
                random = match self.bus.channel() {
                    Some(ch) => ch.get_random(32)?.during("TPM2_GetRandom")?,
                    None => {
                        let session = self.bus.encrypt_only(&mut self.ctx)?;
                        let bytes = self.ctx.execute_with_session(session, |c| c.get_random(32)).during("TPM2_GetRandom")?;
                        Zeroizing::new(bytes.value().to_vec())
                    }
                };
                &random[..]
            }
        };
        let template = keyed_hash_template(KeyedHashScheme::Null, false, false)?;
        self.create(ObjectKind::Sealed, template, Some(data))
    }

    pub fn create_key_pair(&mut self, algorithm: KeyPairAlgorithm) -> Result<KeyObject, TpmError> {
        match algorithm {
            KeyPairAlgorithm::EcP256 => {
                let template = ecc_template(EccPoint::default(), true)?;
                self.create(ObjectKind::EcP256, template, None)
            }
            KeyPairAlgorithm::Rsa2048 => {
                let template = rsa_template(PublicKeyRsa::default(), 65537, true)?;
                self.create(ObjectKind::Rsa2048, template, None)
            }
        }
    }

    /// TPM2_Import of a plaintext TPMT_SENSITIVE (no inner or outer wrapper): the TPM wraps the
    /// private key with the SRK and hands it back. Imported objects cannot be fixedTPM.
    pub fn import_key_pair(&mut self, pkcs8_der: &[u8]) -> Result<KeyObject, TpmError> {
        let pkey = PKey::private_key_from_der(pkcs8_der)
            .map_err(|e| TpmError::InvalidKey(format!("not a PKCS#8 private key: {e}")))?;
        let bad = |e: openssl::error::ErrorStack| TpmError::InvalidKey(format!("private key: {e}"));
        let (kind, public, sensitive_type, secret) = match pkey.id() {
            Id::EC => {
                let ec = pkey.ec_key().map_err(bad)?;
                if ec.group().curve_name() != Some(openssl::nid::Nid::X9_62_PRIME256V1) {
                    return Err(TpmError::InvalidKey("only EC keys on NIST P-256 can be taken into the TPM".into()));
                }
                let mut ctx = openssl::bn::BigNumContext::new().map_err(bad)?;
                let (mut x, mut y) = (BigNum::new().map_err(bad)?, BigNum::new().map_err(bad)?);
                ec.public_key().affine_coordinates(ec.group(), &mut x, &mut y, &mut ctx).map_err(bad)?;
                let point = EccPoint::new(
                    EccParameter::try_from(x.to_vec_padded(32).map_err(bad)?).during("ECC x")?,
                    EccParameter::try_from(y.to_vec_padded(32).map_err(bad)?).during("ECC y")?,
                );
                let d = Zeroizing::new(ec.private_key().to_vec_padded(32).map_err(bad)?);
                (ObjectKind::EcP256, ecc_template(point, false)?, 0x0023u16, d)
            }
            Id::RSA => {
                let rsa = pkey.rsa().map_err(bad)?;
                if rsa.size() as usize != RSA_BYTES {
                    return Err(TpmError::InvalidKey(format!("only RSA-2048 keys can be taken into the TPM, not RSA-{}", rsa.size() * 8)));
                }
                let exponent = u32::try_from(rsa.e().to_vec().iter().fold(0u64, |a, b| (a << 8) | u64::from(*b)))
                    .map_err(|_| TpmError::InvalidKey("RSA exponent too large".into()))?;
                let modulus = PublicKeyRsa::try_from(rsa.n().to_vec()).during("RSA modulus")?;
                let p = rsa.p().ok_or_else(|| TpmError::InvalidKey("RSA key without its primes".into()))?;
                let p = Zeroizing::new(p.to_vec_padded(RSA_BYTES as i32 / 2).map_err(bad)?);
                (ObjectKind::Rsa2048, rsa_template(modulus, exponent, false)?, 0x0001u16, p)
            }
            other => return Err(TpmError::InvalidKey(format!("unsupported private key type {other:?}"))),
        };
        // TPM2B_SENSITIVE { TPMT_SENSITIVE { type, authValue = empty, seedValue = empty, sensitive } }
        let mut sensitive = Zeroizing::new(Vec::with_capacity(secret.len() + 12));
        sensitive.extend_from_slice(&((secret.len() + 8) as u16).to_be_bytes());
        sensitive.extend_from_slice(&sensitive_type.to_be_bytes());
        sensitive.extend_from_slice(&[0, 0, 0, 0]);
        sensitive.extend_from_slice(&(secret.len() as u16).to_be_bytes());
        sensitive.extend_from_slice(&secret);
        let srk = self.srk;
        self.make_room()?;
        // Parameter encryption covers only the first parameter, and the private key is the
        // third: it travels under an inner wrapper whose key is the (encrypted) first one.
        // Without a session that key would cross in clear beside it, so the key goes bare.
        let public_bytes = public.marshall().map_err(|e| TpmError::Unexpected(format!("cannot marshal a public area: {e}")))?;
        if let Some(ch) = self.bus.channel() {
            let (key, wrapped) = inner_wrap(&public, &sensitive)?;
            let private = ch.import(key.value(), &public_bytes, &wrapped, &[], true)?.during("TPM2_Import")?;
            return Ok(KeyObject { kind, public: public_bytes, private });
        }
        let (session, inner_key, duplicate, wrapping) = if self.bus.enabled() {
            let (key, wrapped) = inner_wrap(&public, &sensitive)?;
            (self.bus.auth(&mut self.ctx, Use::Decrypt)?, Some(key), wrapped, SymmetricDefinitionObject::AES_128_CFB)
        } else {
            (AuthSession::Password, None, sensitive.to_vec(), SymmetricDefinitionObject::Null)
        };
        let duplicate = Private::try_from(duplicate).during("TPM2B_PRIVATE")?;
        let private = self
            .ctx
            .execute_with_session(Some(session), |c| {
                c.import(srk.into(), inner_key, public.clone(), duplicate, EncryptedSecret::default(), wrapping)
            })
            .during("TPM2_Import")?;
        Ok(KeyObject { kind, public: public_bytes, private: private.value().to_vec() })
    }

    pub fn key_hmac(&mut self, key: &KeyObject, data: &[u8]) -> Result<Vec<u8>, TpmError> {
        expect_kind(key, ObjectKind::Hmac, "HMAC-SHA256")?;
        if data.len() > MaxBuffer::MAX_SIZE {
            return self.long_hmac(sequence_key(key), data);
        }
        let buffer = MaxBuffer::try_from(data.to_vec()).during("TPM2B_MAX_BUFFER")?;
        self.with_loaded(key, |ctx, handle| {
            ctx.execute_with_session(Some(AuthSession::Password), |c| {
                c.hmac(handle.into(), buffer.clone(), HashingAlgorithm::Sha256)
            })
            .map(|d| d.value().to_vec())
            .during("TPM2_HMAC")
        })
    }

    /// HMAC-SHA256 whose result is itself a secret (a derived key, a handle's MAC): the
    /// response is encrypted on the bus. Data beyond one TPM buffer goes through the sequence
    /// commands, which run without a session.
    pub fn key_hmac_secret(&mut self, key: &KeyObject, data: &[u8]) -> Result<Vec<u8>, TpmError> {
        if data.len() > MaxBuffer::MAX_SIZE {
            return self.key_hmac(key, data);
        }
        expect_kind(key, ObjectKind::Hmac, "HMAC-SHA256")?;
        if self.bus.channel().is_some() {
            let mac = self.on_channel_loaded(key, "TPM2_HMAC", |ch, h, name| ch.hmac(h, name, data))?;
            return Ok(mac.to_vec());
        }
        let buffer = MaxBuffer::try_from(data.to_vec()).during("TPM2B_MAX_BUFFER")?;
        let session = self.bus.auth(&mut self.ctx, Use::Encrypt)?;
        self.with_loaded(key, |ctx, handle| {
            ctx.execute_with_session(Some(session), |c| c.hmac(handle.into(), buffer.clone(), HashingAlgorithm::Sha256))
                .map(|d| d.value().to_vec())
                .during("TPM2_HMAC")
        })
    }

    pub fn unseal(&mut self, key: &KeyObject) -> Result<Secret, TpmError> {
        expect_kind(key, ObjectKind::Sealed, "AEAD")?;
        // The AES key is the response: encrypted on the bus.
        if self.bus.channel().is_some() {
            return self.on_channel_loaded(key, "TPM2_Unseal", |ch, h, name| ch.unseal(h, name));
        }
        let session = self.bus.auth(&mut self.ctx, Use::Encrypt)?;
        self.with_loaded(key, |ctx, handle| {
            ctx.execute_with_session(Some(session), |c| c.unseal(handle.into()))
                .map(|d| Zeroizing::new(d.value().to_vec()))
                .during("TPM2_Unseal")
        })
    }

    pub fn ecdsa_sign(&mut self, key: &KeyObject, digest: &[u8]) -> Result<Vec<u8>, TpmError> {
        expect_kind(key, ObjectKind::EcP256, "ECDSA")?;
        let digest = Digest::try_from(p256_digest(digest)?).during("TPM2B_DIGEST")?;
        let ticket = HashcheckTicket::try_from(TPMT_TK_HASHCHECK {
            tag: TPM2_ST_HASHCHECK,
            hierarchy: TPM2_RH_NULL,
            digest: Default::default(),
        })
        .during("null hashcheck ticket")?;
        let signature = self.with_loaded(key, |ctx, handle| {
            ctx.execute_with_session(Some(AuthSession::Password), |c| {
                c.sign(handle, digest.clone(), SignatureScheme::Null, ticket.clone())
            })
            .during("TPM2_Sign")
        })?;
        let Signature::EcDsa(sig) = signature else {
            return Err(TpmError::Unexpected("TPM2_Sign returned a non-ECDSA signature".into()));
        };
        let der = (|| {
            let r = BigNum::from_slice(sig.signature_r().value())?;
            let s = BigNum::from_slice(sig.signature_s().value())?;
            EcdsaSig::from_private_components(r, s)?.to_der()
        })();
        der.map_err(|e| TpmError::Unexpected(format!("cannot encode the ECDSA signature: {e}")))
    }

    pub fn rsa_private(&mut self, key: &KeyObject, block: &[u8]) -> Result<Vec<u8>, TpmError> {
        expect_kind(key, ObjectKind::Rsa2048, "RSA")?;
        if block.len() != RSA_BYTES {
            return Err(TpmError::InvalidKey(format!(
                "the RSA input must be exactly {RSA_BYTES} bytes (the modulus length), not {}",
                block.len()
            )));
        }
        let input = PublicKeyRsa::try_from(block.to_vec()).during("TPM2B_PUBLIC_KEY_RSA")?;
        let out = self.with_loaded(key, |ctx, handle| {
            ctx.execute_with_session(Some(AuthSession::Password), |c| {
                c.rsa_decrypt(handle, input.clone(), RsaDecryptionScheme::Null, Data::default())
            })
            .map_err(|e| match super::error::CommandError::esapi("TPM2_RSA_Decrypt", e) {
                c if c.kind == Some(tss_esapi::constants::response_code::Tss2ResponseCodeKind::Value) => {
                    TpmError::InvalidKey("the RSA input is not smaller than the modulus".into())
                }
                c => TpmError::Command(c),
            })
        })?;
        // Left-pad to the modulus length: the result is a number and may have lost leading zeros.
        let value = out.value();
        let mut padded = vec![0u8; RSA_BYTES.saturating_sub(value.len())];
        padded.extend_from_slice(value);
        Ok(padded)
    }
}

/// What a long HMAC with an `Hmac` key object runs on: the object, loaded on the sequence
/// context under the SRK.
pub(super) fn sequence_key(key: &KeyObject) -> SequenceKey {
    SequenceKey::Object {
        srk: aziot_tpm_common::SRK_HANDLE,
        public: key.public.clone(),
        private: key.private.clone(),
    }
}

impl Device {
    /// Runs `op` on the session channel with `key` loaded there. The two connections share the
    /// TPM's few object slots when there is no resource manager: if the TPM has none left, the
    /// main context's cached objects are flushed and `op` runs once more.
    fn on_channel_loaded<T>(
        &mut self,
        key: &KeyObject,
        command: &'static str,
        op: impl Fn(&mut Channel, u32, &[u8]) -> Answer<T>,
    ) -> Result<T, TpmError> {
        for attempt in 0..2 {
            let ch = self.bus.channel().ok_or_else(|| TpmError::Unexpected("no session channel".into()))?;
            match ch.with_loaded(&key.public, &key.private, &op)? {
                Err(e) if attempt == 0 && is_out_of_object_memory(&e) => {
                    self.make_room()?;
                }
                other => return other.during(command),
            }
        }
        Err(TpmError::Unexpected(format!("{command}: no object slot on the TPM")))
    }
}

/// The inner duplication wrapper (TPM 2.0 Part 1, 23.3.2.3) of a marshalled TPM2B_SENSITIVE:
/// integrity = SHA-256(sensitive || name), then AES-128-CFB with a fresh key and a zero IV
/// over TPM2B_DIGEST(integrity) || sensitive. Returns the key and the wrapped bytes.
fn inner_wrap(public: &Public, sensitive: &[u8]) -> Result<(Data, Vec<u8>), TpmError> {
    let crypto = |e: openssl::error::ErrorStack| TpmError::Unexpected(format!("inner wrapper: {e}"));
    let marshalled = public.marshall().map_err(|e| TpmError::Unexpected(format!("cannot marshal a public area: {e}")))?;
    let mut name = 0x000bu16.to_be_bytes().to_vec();
    name.extend_from_slice(&openssl::sha::sha256(&marshalled));
    let mut hasher = openssl::sha::Sha256::new();
    hasher.update(sensitive);
    hasher.update(&name);
    let integrity = hasher.finish();
    let mut plain = Zeroizing::new(Vec::with_capacity(2 + integrity.len() + sensitive.len()));
    plain.extend_from_slice(&(integrity.len() as u16).to_be_bytes());
    plain.extend_from_slice(&integrity);
    plain.extend_from_slice(sensitive);
    let mut key = Zeroizing::new([0u8; 16]);
    openssl::rand::rand_bytes(&mut key[..]).map_err(crypto)?;
    let wrapped = openssl::symm::encrypt(openssl::symm::Cipher::aes_128_cfb128(), &key[..], Some(&[0u8; 16]), &plain)
        .map_err(crypto)?;
    Ok((Data::try_from(key.to_vec()).during("inner wrapper key")?, wrapped))
}

pub(super) fn expect_kind(key: &KeyObject, kind: ObjectKind, operation: &str) -> Result<(), TpmError> {
    if key.kind == kind {
        Ok(())
    } else {
        Err(TpmError::InvalidKey(format!("{operation} cannot be used with a {:?} key", key.kind)))
    }
}
