//! Server side of Azure DPS TPM attestation, in software.
//!
//! DPS proves that a device holds the TPM whose endorsement key (EK) was enrolled by sending it an
//! `authenticationKey` blob that only that TPM can open: a fresh HMAC key, *duplicated* to the
//! device's storage root key (SRK) with an inner AES wrapper, whose inner wrapper key is in turn
//! protected with *MakeCredential* to the EK (bound to the SRK's Name). The device runs
//! ActivateCredential, Import and Load, then signs a SAS token with the imported key.
//!
//! This crate builds that blob from the EK and SRK `TPM2B_PUBLIC` bytes with OpenSSL only (no TPM
//! stack), so a DPS emulator can run on machines without libtss2. All TPM structures are
//! big-endian and follow TPM 2.0 Library Part 1 §22–24 (protected storage, duplication and
//! credential protection) and Part 2 (structure layouts).

use openssl::bn::BigNum;
use openssl::encrypt::Encrypter;
use openssl::hash::{Hasher, MessageDigest};
use openssl::pkey::PKey;
use openssl::rsa::{Padding, Rsa};
use openssl::sign::Signer;
use openssl::symm::Cipher;
use zeroize::Zeroizing;

// TPM_ALG_ID values (TPM 2.0 Part 2, table 9).
const TPM_ALG_RSA: u16 = 0x0001;
const TPM_ALG_HMAC: u16 = 0x0005;
const TPM_ALG_AES: u16 = 0x0006;
const TPM_ALG_KEYEDHASH: u16 = 0x0008;
const TPM_ALG_SHA256: u16 = 0x000b;
const TPM_ALG_NULL: u16 = 0x0010;
const TPM_ALG_RSASSA: u16 = 0x0014;
const TPM_ALG_RSAES: u16 = 0x0015;
const TPM_ALG_RSAPSS: u16 = 0x0016;
const TPM_ALG_OAEP: u16 = 0x0017;
const TPM_ALG_CFB: u16 = 0x0043;

// TPMA_OBJECT bits (TPM 2.0 Part 2, table 31).
const ATTR_USER_WITH_AUTH: u32 = 1 << 6;
const ATTR_NO_DA: u32 = 1 << 10;
const ATTR_RESTRICTED: u32 = 1 << 16;
const ATTR_DECRYPT: u32 = 1 << 17;
const ATTR_SIGN: u32 = 1 << 18;

/// Attributes of the duplicated HMAC key: userWithAuth | noDA | sign (0x00040440). No fixedTPM or
/// fixedParent, because a duplicable object must not have them.
const HMAC_KEY_ATTRIBUTES: u32 = ATTR_USER_WITH_AUTH | ATTR_NO_DA | ATTR_SIGN;

const SHA256_LEN: usize = 32;
/// AES-128 key length; both the EK and SRK protect with AES-128-CFB, and so does the inner wrapper.
const AES128_LEN: usize = 16;
/// Largest HMAC key a TPM accepts for an HMAC-SHA256 keyedHash object (the SHA-256 block size).
const MAX_HMAC_KEY_LEN: usize = 64;

/// Which input a parse error is about, so the message names the offending key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyRole {
    /// The device's endorsement key (`tpm.endorsementKey` in the registration request).
    Ek,
    /// The device's storage root key (`tpm.storageRootKey` in the registration request).
    Srk,
    /// A `TPM2B_PUBLIC` given to [`parse_rsa_public`] or [`object_name`] directly.
    Object,
}

impl std::fmt::Display for KeyRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            KeyRole::Ek => "EK",
            KeyRole::Srk => "SRK",
            KeyRole::Object => "object",
        })
    }
}

/// Everything that can go wrong; each variant names the input and field at fault so that an
/// emulator can hand the message to the operator unchanged.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The input ends before `field` is complete.
    #[error("{role} TPM2B_PUBLIC truncated at field {field}")]
    Truncated { role: KeyRole, field: &'static str },
    /// The leading u16 size does not match the number of bytes that follow it.
    #[error("{role} TPM2B_PUBLIC size prefix says {declared} bytes but {actual} bytes follow it")]
    SizeMismatch {
        role: KeyRole,
        declared: usize,
        actual: usize,
    },
    /// The TPMT_PUBLIC has bytes left over after its last field (`unique`).
    #[error("{role} TPM2B_PUBLIC has {extra} trailing bytes after field unique")]
    TrailingBytes { role: KeyRole, extra: usize },
    /// The key is not RSA (e.g. an ECC EK); DPS TPM attestation uses RSA-OAEP to the EK and SRK.
    #[error(
        "{role} is not an RSA key (type 0x{alg:04x}); DPS TPM attestation needs an RSA-2048 {role}"
    )]
    NotRsa { role: KeyRole, alg: u16 },
    /// The Name and every KDF here use SHA-256, as DPS does.
    #[error("{role} nameAlg is 0x{alg:04x}; DPS TPM attestation needs SHA-256 (0x000b)")]
    NameAlg { role: KeyRole, alg: u16 },
    /// A field is well-formed but has a value this protocol cannot work with.
    #[error("{role} field {field}: {reason}")]
    Unsupported {
        role: KeyRole,
        field: &'static str,
        reason: String,
    },
    /// The HMAC key to duplicate must be 1..=64 bytes (the TPM rejects longer HMAC-SHA256 keys).
    #[error("HMAC key is {0} bytes; it must be 1 to 64 bytes (DPS uses 32)")]
    HmacKeyLength(usize),
    /// OpenSSL failed (RSA key construction, OAEP, AES, HMAC or the random generator).
    #[error("OpenSSL failed while {doing}: {source}")]
    Crypto {
        doing: &'static str,
        #[source]
        source: openssl::error::ErrorStack,
    },
}

fn crypto(doing: &'static str) -> impl FnOnce(openssl::error::ErrorStack) -> Error {
    move |source| Error::Crypto { doing, source }
}

/// `TPMT_SYM_DEF_OBJECT` when not TPM_ALG_NULL: the object's symmetric protection algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SymmetricDef {
    pub algorithm: u16,
    pub key_bits: u16,
    pub mode: u16,
}

/// `TPMT_RSA_SCHEME` when not TPM_ALG_NULL; `hash_alg` is `None` for RSAES, which has no details.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RsaScheme {
    pub algorithm: u16,
    pub hash_alg: Option<u16>,
}

/// An RSA `TPMT_PUBLIC`, field by field, so callers can check an EK/SRK template before use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RsaPublic {
    pub name_alg: u16,
    /// `TPMA_OBJECT` bits, e.g. 0x000300b2 for the TCG EK, 0x00030472 for the aziot SRK.
    pub attributes: u32,
    pub auth_policy: Vec<u8>,
    /// `None` when the key has no symmetric algorithm (TPM_ALG_NULL), i.e. it is not a storage key.
    pub symmetric: Option<SymmetricDef>,
    /// `None` for TPM_ALG_NULL, the scheme storage keys use.
    pub scheme: Option<RsaScheme>,
    pub key_bits: u16,
    /// As marshalled: 0 means the default 65537; see [`RsaPublic::effective_exponent`].
    pub exponent: u32,
    /// Big-endian modulus from the `unique` field.
    pub modulus: Vec<u8>,
}

impl RsaPublic {
    /// The public exponent to use for encryption (TPM encodes 65537 as 0).
    pub fn effective_exponent(&self) -> u32 {
        if self.exponent == 0 {
            65537
        } else {
            self.exponent
        }
    }
}

/// Big-endian reader over a `TPMT_PUBLIC` that reports which field ran out.
struct Reader<'a> {
    data: &'a [u8],
    role: KeyRole,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], Error> {
        if self.data.len() < n {
            return Err(Error::Truncated {
                role: self.role,
                field,
            });
        }
        let (head, tail) = self.data.split_at(n);
        self.data = tail;
        Ok(head)
    }

    fn u16(&mut self, field: &'static str) -> Result<u16, Error> {
        let b = self.take(2, field)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn u32(&mut self, field: &'static str) -> Result<u32, Error> {
        let b = self.take(4, field)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn tpm2b(&mut self, field: &'static str) -> Result<&'a [u8], Error> {
        let len = self.u16(field)?;
        self.take(usize::from(len), field)
    }
}

/// Checks the TPM2B size prefix against the input length and returns the TPMT_PUBLIC inside.
fn tpmt_public(tpm2b_public: &[u8], role: KeyRole) -> Result<&[u8], Error> {
    if tpm2b_public.len() < 2 {
        return Err(Error::Truncated {
            role,
            field: "size",
        });
    }
    let declared = usize::from(u16::from_be_bytes([tpm2b_public[0], tpm2b_public[1]]));
    let body = &tpm2b_public[2..];
    if body.len() != declared {
        return Err(Error::SizeMismatch {
            role,
            declared,
            actual: body.len(),
        });
    }
    Ok(body)
}

/// Parses an RSA `TPM2B_PUBLIC` (u16 size + TPMT_PUBLIC), as DPS receives the EK and SRK.
/// Only SHA-256 nameAlg is accepted, because the Name and every KDF in the protocol use it.
pub fn parse_rsa_public(tpm2b_public: &[u8]) -> Result<RsaPublic, Error> {
    parse_rsa_public_as(tpm2b_public, KeyRole::Object)
}

fn parse_rsa_public_as(tpm2b_public: &[u8], role: KeyRole) -> Result<RsaPublic, Error> {
    let mut r = Reader {
        data: tpmt_public(tpm2b_public, role)?,
        role,
    };

    let alg = r.u16("type")?;
    if alg != TPM_ALG_RSA {
        return Err(Error::NotRsa { role, alg });
    }
    let name_alg = r.u16("nameAlg")?;
    if name_alg != TPM_ALG_SHA256 {
        return Err(Error::NameAlg {
            role,
            alg: name_alg,
        });
    }
    let attributes = r.u32("objectAttributes")?;
    let auth_policy = r.tpm2b("authPolicy")?.to_vec();

    let sym_alg = r.u16("parameters.symmetric.algorithm")?;
    let symmetric = if sym_alg == TPM_ALG_NULL {
        None
    } else {
        Some(SymmetricDef {
            algorithm: sym_alg,
            key_bits: r.u16("parameters.symmetric.keyBits")?,
            mode: r.u16("parameters.symmetric.mode")?,
        })
    };

    let scheme_alg = r.u16("parameters.scheme.scheme")?;
    let scheme = match scheme_alg {
        TPM_ALG_NULL => None,
        TPM_ALG_RSAES => Some(RsaScheme {
            algorithm: scheme_alg,
            hash_alg: None,
        }),
        TPM_ALG_RSASSA | TPM_ALG_RSAPSS | TPM_ALG_OAEP => Some(RsaScheme {
            algorithm: scheme_alg,
            hash_alg: Some(r.u16("parameters.scheme.details.hashAlg")?),
        }),
        other => {
            return Err(Error::Unsupported {
                role,
                field: "parameters.scheme.scheme",
                reason: format!("unknown RSA scheme 0x{other:04x}"),
            })
        }
    };

    let key_bits = r.u16("parameters.keyBits")?;
    let exponent = r.u32("parameters.exponent")?;
    let modulus = r.tpm2b("unique")?.to_vec();
    if !r.data.is_empty() {
        return Err(Error::TrailingBytes {
            role,
            extra: r.data.len(),
        });
    }

    Ok(RsaPublic {
        name_alg,
        attributes,
        auth_policy,
        symmetric,
        scheme,
        key_bits,
        exponent,
        modulus,
    })
}

/// TPM object Name: `0x000b || SHA-256(TPMT_PUBLIC)` (the TPM2B size prefix is not hashed).
/// DPS binds the credential to the SRK's Name, and the device's TPM recomputes it the same way.
/// Works for any object type, but only SHA-256 nameAlg is accepted.
pub fn object_name(tpm2b_public: &[u8]) -> Result<Vec<u8>, Error> {
    object_name_as(tpm2b_public, KeyRole::Object)
}

fn object_name_as(tpm2b_public: &[u8], role: KeyRole) -> Result<Vec<u8>, Error> {
    let body = tpmt_public(tpm2b_public, role)?;
    let mut r = Reader { data: body, role };
    r.u16("type")?;
    let name_alg = r.u16("nameAlg")?;
    if name_alg != TPM_ALG_SHA256 {
        return Err(Error::NameAlg {
            role,
            alg: name_alg,
        });
    }
    sha256_name(body)
}

/// `0x000b || SHA-256(tpmt_public)`.
fn sha256_name(tpmt_public: &[u8]) -> Result<Vec<u8>, Error> {
    let digest = sha256(&[tpmt_public])?;
    let mut name = TPM_ALG_SHA256.to_be_bytes().to_vec();
    name.extend_from_slice(&digest);
    Ok(name)
}

/// Checks that a key can protect secrets the way DPS needs: RSA storage key (restricted|decrypt)
/// with AES-128-CFB as its symmetric algorithm, which the TPM uses for the KDF-derived key that
/// protects the credential (EK) or the duplicate (SRK).
fn check_storage_key(key: &RsaPublic, role: KeyRole) -> Result<(), Error> {
    let unsupported = |field, reason: String| Error::Unsupported {
        role,
        field,
        reason,
    };
    if key.attributes & (ATTR_RESTRICTED | ATTR_DECRYPT) != ATTR_RESTRICTED | ATTR_DECRYPT {
        return Err(unsupported(
            "objectAttributes",
            format!(
                "0x{:08x} lacks restricted|decrypt; the {role} must be a storage (restricted decryption) key",
                key.attributes
            ),
        ));
    }
    let aes128cfb = SymmetricDef {
        algorithm: TPM_ALG_AES,
        key_bits: 128,
        mode: TPM_ALG_CFB,
    };
    if key.symmetric != Some(aes128cfb) {
        return Err(unsupported(
            "parameters.symmetric",
            format!("{:?}; DPS TPM attestation needs AES-128-CFB", key.symmetric),
        ));
    }
    if !matches!(key.key_bits, 2048 | 3072 | 4096) {
        return Err(unsupported(
            "parameters.keyBits",
            format!(
                "{} bits; DPS TPM attestation needs an RSA-2048 {role}",
                key.key_bits
            ),
        ));
    }
    if key.modulus.len() * 8 != usize::from(key.key_bits) {
        return Err(unsupported(
            "unique",
            format!(
                "modulus is {} bytes but keyBits is {}",
                key.modulus.len(),
                key.key_bits
            ),
        ));
    }
    Ok(())
}

/// KDFa from TPM 2.0 Part 1 §11.4.10.2 (SP800-108 counter mode, HMAC-SHA256). `label` is given
/// without its terminating NUL; the NUL is added here.
fn kdfa(
    key: &[u8],
    label: &[u8],
    context_u: &[u8],
    context_v: &[u8],
    bits: u32,
) -> Result<Zeroizing<Vec<u8>>, Error> {
    let bytes = (bits as usize).div_ceil(8);
    let mut out = Zeroizing::new(Vec::with_capacity(bytes + SHA256_LEN));
    let mut counter: u32 = 1;
    while out.len() < bytes {
        let block = hmac_sha256(
            key,
            &[
                &counter.to_be_bytes(),
                label,
                &[0],
                context_u,
                context_v,
                &bits.to_be_bytes(),
            ],
        )?;
        out.extend_from_slice(&block);
        counter += 1;
    }
    out.truncate(bytes);
    // Only whole-byte outputs are used here; mask leading bits as the spec says for the general case.
    if bits % 8 != 0 {
        out[0] &= 0xff >> (8 - bits % 8);
    }
    Ok(out)
}

fn sha256(parts: &[&[u8]]) -> Result<Vec<u8>, Error> {
    let mut hasher = Hasher::new(MessageDigest::sha256()).map_err(crypto("starting SHA-256"))?;
    for part in parts {
        hasher.update(part).map_err(crypto("computing SHA-256"))?;
    }
    Ok(hasher
        .finish()
        .map_err(crypto("computing SHA-256"))?
        .to_vec())
}

fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> Result<Zeroizing<Vec<u8>>, Error> {
    let pkey = PKey::hmac(key).map_err(crypto("creating an HMAC key"))?;
    let mut signer =
        Signer::new(MessageDigest::sha256(), &pkey).map_err(crypto("starting HMAC-SHA256"))?;
    for part in parts {
        signer
            .update(part)
            .map_err(crypto("computing HMAC-SHA256"))?;
    }
    Ok(Zeroizing::new(
        signer
            .sign_to_vec()
            .map_err(crypto("computing HMAC-SHA256"))?,
    ))
}

/// AES-128-CFB128 with a zero IV, as the TPM uses for every symmetric step here.
fn aes128_cfb_encrypt(key: &[u8], data: &[u8]) -> Result<Vec<u8>, Error> {
    openssl::symm::encrypt(Cipher::aes_128_cfb128(), key, Some(&[0u8; 16]), data)
        .map_err(crypto("encrypting with AES-128-CFB"))
}

/// RSA-OAEP with SHA-256 (OAEP and MGF1); `label` must include the terminating NUL.
fn rsa_oaep_encrypt(key: &RsaPublic, label: &[u8], data: &[u8]) -> Result<Vec<u8>, Error> {
    let n = BigNum::from_slice(&key.modulus).map_err(crypto("reading the RSA modulus"))?;
    let e =
        BigNum::from_u32(key.effective_exponent()).map_err(crypto("reading the RSA exponent"))?;
    let rsa = Rsa::from_public_components(n, e).map_err(crypto("building the RSA public key"))?;
    let pkey = PKey::from_rsa(rsa).map_err(crypto("building the RSA public key"))?;
    let mut enc = Encrypter::new(&pkey).map_err(crypto("starting RSA-OAEP"))?;
    enc.set_rsa_padding(Padding::PKCS1_OAEP)
        .map_err(crypto("setting OAEP padding"))?;
    enc.set_rsa_oaep_md(MessageDigest::sha256())
        .map_err(crypto("setting the OAEP hash"))?;
    enc.set_rsa_mgf1_md(MessageDigest::sha256())
        .map_err(crypto("setting the MGF1 hash"))?;
    enc.set_rsa_oaep_label(label)
        .map_err(crypto("setting the OAEP label"))?;
    let mut out = vec![
        0;
        enc.encrypt_len(data)
            .map_err(crypto("sizing the RSA-OAEP output"))?
    ];
    let len = enc
        .encrypt(data, &mut out)
        .map_err(crypto("encrypting with RSA-OAEP"))?;
    out.truncate(len);
    Ok(out)
}

fn random(len: usize) -> Result<Zeroizing<Vec<u8>>, Error> {
    let mut buf = Zeroizing::new(vec![0u8; len]);
    openssl::rand::rand_bytes(&mut buf).map_err(crypto("generating random bytes"))?;
    Ok(buf)
}

/// Appends `u16 len || data`.
fn put_tpm2b(out: &mut Vec<u8>, data: &[u8]) {
    let len = u16::try_from(data.len()).expect("TPM2B payloads built here are far below 64 KiB");
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(data);
}

fn tpm2b(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(2 + data.len());
    put_tpm2b(&mut out, data);
    out
}

/// The random values of one blob, split out so tests can fix them.
struct Secrets {
    /// MakeCredential seed, OAEP-encrypted to the EK.
    credential_seed: Zeroizing<Vec<u8>>,
    /// Inner wrapper key: the credential that ActivateCredential releases.
    inner_key: Zeroizing<Vec<u8>>,
    /// keyedHash obfuscation value (TPMT_SENSITIVE.seedValue).
    obfuscation: Zeroizing<Vec<u8>>,
    /// Duplication seed, OAEP-encrypted to the SRK.
    duplication_seed: Zeroizing<Vec<u8>>,
}

impl Secrets {
    fn random() -> Result<Self, Error> {
        Ok(Self {
            credential_seed: random(SHA256_LEN)?,
            inner_key: random(AES128_LEN)?,
            obfuscation: random(SHA256_LEN)?,
            duplication_seed: random(SHA256_LEN)?,
        })
    }
}

/// Outer protection shared by MakeCredential and Duplicate (Part 1 §22.4 and §23.3.2):
/// `u16 32 || HMAC(KDFa(seed,"INTEGRITY"), enc || name) || enc`, with
/// `enc = AES-128-CFB(KDFa(seed,"STORAGE",name), plaintext)`.
fn outer_wrap(seed: &[u8], name: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, Error> {
    let sym_key = kdfa(seed, b"STORAGE", name, &[], 128)?;
    let enc = aes128_cfb_encrypt(&sym_key, plaintext)?;
    let hmac_key = kdfa(seed, b"INTEGRITY", &[], &[], 256)?;
    let integrity = hmac_sha256(&hmac_key, &[&enc, name])?;
    let mut out = tpm2b(&integrity);
    out.extend_from_slice(&enc);
    Ok(out)
}

/// Builds the DPS `authenticationKey` blob for a device, exactly as DPS does:
/// `TPM2B_ID_OBJECT | TPM2B_ENCRYPTED_SECRET (to EK) | TPM2B_PRIVATE (duplicate) |
/// TPM2B_ENCRYPTED_SECRET (seed to SRK) | TPM2B_PUBLIC (HMAC key public) | u16 0x0000`
/// (the trailing empty "URI data" length, which device SDKs read).
///
/// Only the TPM holding the EK's private key, with the SRK given here, can import `hmac_key`
/// (1..=64 bytes; DPS uses 32). Random seeds and the inner wrapper key are fresh on every call.
/// Both keys must be RSA storage keys (restricted|decrypt, AES-128-CFB, nameAlg SHA-256), as the
/// TCG EK and the SDK/aziot SRK templates are. With RSA-2048 keys and a 32-byte HMAC key the
/// fields are 54+258+144+258+50 bytes, plus the 2-byte trailer: 766 bytes.
pub fn build_authentication_key(
    ek_tpm2b_public: &[u8],
    srk_tpm2b_public: &[u8],
    hmac_key: &[u8],
) -> Result<Vec<u8>, Error> {
    build_with(
        ek_tpm2b_public,
        srk_tpm2b_public,
        hmac_key,
        &Secrets::random()?,
    )
}

fn build_with(
    ek_tpm2b_public: &[u8],
    srk_tpm2b_public: &[u8],
    hmac_key: &[u8],
    secrets: &Secrets,
) -> Result<Vec<u8>, Error> {
    if hmac_key.is_empty() || hmac_key.len() > MAX_HMAC_KEY_LEN {
        return Err(Error::HmacKeyLength(hmac_key.len()));
    }
    let ek = parse_rsa_public_as(ek_tpm2b_public, KeyRole::Ek)?;
    check_storage_key(&ek, KeyRole::Ek)?;
    let srk = parse_rsa_public_as(srk_tpm2b_public, KeyRole::Srk)?;
    check_storage_key(&srk, KeyRole::Srk)?;
    let srk_name = object_name_as(srk_tpm2b_public, KeyRole::Srk)?;

    // 1. MakeCredential(EK, credential = inner wrapper key, objectName = Name(SRK)).
    let credential_secret = rsa_oaep_encrypt(&ek, b"IDENTITY\0", &secrets.credential_seed)?;
    let credential_plain = Zeroizing::new(tpm2b(&secrets.inner_key));
    let id_object = outer_wrap(&secrets.credential_seed, &srk_name, &credential_plain)?;

    // 2. The HMAC key as a keyedHash object: public area and its Name.
    let unique = sha256(&[&secrets.obfuscation, hmac_key])?;
    let mut key_public = Vec::with_capacity(48);
    key_public.extend_from_slice(&TPM_ALG_KEYEDHASH.to_be_bytes());
    key_public.extend_from_slice(&TPM_ALG_SHA256.to_be_bytes());
    key_public.extend_from_slice(&HMAC_KEY_ATTRIBUTES.to_be_bytes());
    put_tpm2b(&mut key_public, &[]); // authPolicy
    key_public.extend_from_slice(&TPM_ALG_HMAC.to_be_bytes()); // keyedHashDetail.scheme
    key_public.extend_from_slice(&TPM_ALG_SHA256.to_be_bytes()); // scheme.details.hmac.hashAlg
    put_tpm2b(&mut key_public, &unique);
    let key_name = sha256_name(&key_public)?;

    // 3. TPM2B_SENSITIVE { type, authValue (empty), seedValue, sensitive = the key }.
    let mut sensitive = Zeroizing::new(Vec::with_capacity(2 + 8 + SHA256_LEN + hmac_key.len()));
    sensitive.extend_from_slice(&[0, 0]); // size, patched below
    sensitive.extend_from_slice(&TPM_ALG_KEYEDHASH.to_be_bytes());
    put_tpm2b(&mut sensitive, &[]);
    put_tpm2b(&mut sensitive, &secrets.obfuscation);
    put_tpm2b(&mut sensitive, hmac_key);
    let inner_len = u16::try_from(sensitive.len() - 2).expect("sensitive area is small");
    sensitive[..2].copy_from_slice(&inner_len.to_be_bytes());

    // 4. Inner wrapper (Part 1 §23.3.2.3): AES-128-CFB(innerKey, TPM2B(SHA256(sensitive || name)) || sensitive).
    let inner_integrity = sha256(&[&sensitive, &key_name])?;
    let mut inner_plain = Zeroizing::new(tpm2b(&inner_integrity));
    inner_plain.extend_from_slice(&sensitive);
    let inner_wrapped = aes128_cfb_encrypt(&secrets.inner_key, &inner_plain)?;

    // 5. Outer wrapper to the SRK, keyed by a seed that only the SRK can decrypt.
    let duplicate = outer_wrap(&secrets.duplication_seed, &key_name, &inner_wrapped)?;
    let encrypted_seed = rsa_oaep_encrypt(&srk, b"DUPLICATE\0", &secrets.duplication_seed)?;

    let mut blob = Vec::with_capacity(
        2 + id_object.len()
            + 2
            + credential_secret.len()
            + 2
            + duplicate.len()
            + 2
            + encrypted_seed.len()
            + 2
            + key_public.len()
            + 2,
    );
    put_tpm2b(&mut blob, &id_object);
    put_tpm2b(&mut blob, &credential_secret);
    put_tpm2b(&mut blob, &duplicate);
    put_tpm2b(&mut blob, &encrypted_seed);
    put_tpm2b(&mut blob, &key_public);
    put_tpm2b(&mut blob, &[]); // encUriData: none, but SDKs always read its length
    Ok(blob)
}

#[cfg(test)]
mod tests;
