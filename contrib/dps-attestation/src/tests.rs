use super::*;

use openssl::encrypt::Decrypter;
use openssl::pkey::Private;

/// TCG EK policy: PolicySecret(TPM_RH_ENDORSEMENT).
const EK_POLICY: [u8; 32] = [
    0x83, 0x71, 0x97, 0x67, 0x44, 0x84, 0xb3, 0xf8, 0x1a, 0x90, 0xcc, 0x8d, 0x46, 0xa5, 0xd7, 0x24,
    0xfd, 0x52, 0xd7, 0x6e, 0x06, 0x52, 0x0b, 0x64, 0xf2, 0xa1, 0xda, 0x1b, 0x33, 0x14, 0x69, 0xaa,
];

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// TPM2B_PUBLIC of an RSA storage key (AES-128-CFB, scheme NULL, exponent 0).
fn rsa_storage_public(attributes: u32, policy: &[u8], modulus: &[u8]) -> Vec<u8> {
    let mut t = Vec::new();
    t.extend_from_slice(&TPM_ALG_RSA.to_be_bytes());
    t.extend_from_slice(&TPM_ALG_SHA256.to_be_bytes());
    t.extend_from_slice(&attributes.to_be_bytes());
    put_tpm2b(&mut t, policy);
    t.extend_from_slice(&hex("0006 0080 0043 0010"));
    t.extend_from_slice(&u16::try_from(modulus.len() * 8).unwrap().to_be_bytes());
    t.extend_from_slice(&0u32.to_be_bytes());
    put_tpm2b(&mut t, modulus);
    tpm2b(&t)
}

/// An EK (TCG template shape) and an SRK (aziot template shape) with software private keys.
fn keys() -> (Rsa<Private>, Vec<u8>, Rsa<Private>, Vec<u8>) {
    let e = BigNum::from_u32(65537).unwrap();
    let ek = Rsa::generate_with_e(2048, &e).unwrap();
    let srk = Rsa::generate_with_e(2048, &e).unwrap();
    let ek_pub = rsa_storage_public(0x000300b2, &EK_POLICY, &ek.n().to_vec_padded(256).unwrap());
    let srk_pub = rsa_storage_public(0x00030472, &[], &srk.n().to_vec_padded(256).unwrap());
    (ek, ek_pub, srk, srk_pub)
}

fn fixed_secrets() -> Secrets {
    Secrets {
        credential_seed: Zeroizing::new(vec![0x11; 32]),
        inner_key: Zeroizing::new(vec![0x22; 16]),
        obfuscation: Zeroizing::new(vec![0x33; 32]),
        duplication_seed: Zeroizing::new(vec![0x44; 32]),
    }
}

/// Splits `u16 len || data` fields off the front of `blob`.
fn split_tpm2b(mut blob: &[u8], count: usize) -> (Vec<&[u8]>, &[u8]) {
    let mut fields = Vec::new();
    for _ in 0..count {
        let len = usize::from(u16::from_be_bytes([blob[0], blob[1]]));
        fields.push(&blob[2..2 + len]);
        blob = &blob[2 + len..];
    }
    (fields, blob)
}

fn oaep_decrypt(key: &Rsa<Private>, label: &[u8], data: &[u8]) -> Vec<u8> {
    let pkey = PKey::from_rsa(key.clone()).unwrap();
    let mut dec = Decrypter::new(&pkey).unwrap();
    dec.set_rsa_padding(Padding::PKCS1_OAEP).unwrap();
    dec.set_rsa_oaep_md(MessageDigest::sha256()).unwrap();
    dec.set_rsa_mgf1_md(MessageDigest::sha256()).unwrap();
    dec.set_rsa_oaep_label(label).unwrap();
    let mut out = vec![0; dec.decrypt_len(data).unwrap()];
    let len = dec.decrypt(data, &mut out).unwrap();
    out.truncate(len);
    out
}

fn cfb_decrypt(key: &[u8], data: &[u8]) -> Vec<u8> {
    openssl::symm::decrypt(Cipher::aes_128_cfb128(), key, Some(&[0u8; 16]), data).unwrap()
}

/// Software version of the TPM's outer unwrap: checks the HMAC, returns the plaintext.
fn outer_unwrap(seed: &[u8], name: &[u8], wrapped: &[u8]) -> Vec<u8> {
    let (fields, enc) = split_tpm2b(wrapped, 1);
    let hmac_key = kdfa(seed, b"INTEGRITY", &[], &[], 256).unwrap();
    assert_eq!(
        fields[0],
        &hmac_sha256(&hmac_key, &[enc, name]).unwrap()[..],
        "outer HMAC"
    );
    cfb_decrypt(&kdfa(seed, b"STORAGE", name, &[], 128).unwrap(), enc)
}

// Vectors computed independently with Python's hmac/hashlib:
//   def kdfa(key, label, u, v, bits):
//       out, i = b"", 1
//       while len(out) * 8 < bits:
//           out += hmac.new(key, struct.pack(">I", i) + label + b"\0" + u + v + struct.pack(">I", bits),
//                           hashlib.sha256).digest(); i += 1
//       return out[:(bits + 7) // 8]
#[test]
fn kdfa_matches_independent_vectors() {
    let key: Vec<u8> = (0u8..32).collect();
    let name = [&[0x00, 0x0b][..], &[0xaa; 32]].concat();
    // kdfa(bytes(range(32)), b"STORAGE", b"\x00\x0b" + b"\xaa" * 32, b"", 128)
    assert_eq!(
        *kdfa(&key, b"STORAGE", &name, &[], 128).unwrap(),
        hex("0415b32b6f43896a87e7b29be8f2ac14")
    );
    // kdfa(bytes(range(32)), b"INTEGRITY", b"", b"", 256)
    assert_eq!(
        *kdfa(&key, b"INTEGRITY", &[], &[], 256).unwrap(),
        hex("bacf689f634ece301e1f1b15b072d9c87db6a69585db42b1a0cb8f73ebe2692e")
    );
    // kdfa(b"seed", b"TEST", b"ctxU", b"ctxV", 520): three HMAC blocks, truncated to 65 bytes.
    assert_eq!(
        *kdfa(b"seed", b"TEST", b"ctxU", b"ctxV", 520).unwrap(),
        hex(
            "a821d570a82a7cebe78e253ca9e313e3585367551f34bee6290eb1eb1e13cce6
             42ca167a13ae946ebc0a2f445e10a71fe54fb24a77f165a00b3a2c1c338043f0ae"
        )
    );
}

#[test]
fn name_and_parse_of_srk_shaped_public() {
    let modulus: Vec<u8> = (0..256).map(|i| i as u8).collect();
    let srk = rsa_storage_public(0x00030472, &[], &modulus);
    assert_eq!(srk.len(), 284);
    assert_eq!(
        &srk[..26],
        &hex("011a 0001 000b 00030472 0000 0006 0080 0043 0010 0800 00000000")[..]
    );
    // Python: "000b" + hashlib.sha256(srk[2:]).hexdigest()
    assert_eq!(
        object_name(&srk).unwrap(),
        hex("000b d05b04817d65941bb538758090886050e0f4b0eea85d3968f11ef7e5d4fa1394")
    );

    let parsed = parse_rsa_public(&srk).unwrap();
    assert_eq!(
        parsed,
        RsaPublic {
            name_alg: 0x000b,
            attributes: 0x00030472,
            auth_policy: vec![],
            symmetric: Some(SymmetricDef {
                algorithm: 0x0006,
                key_bits: 128,
                mode: 0x0043
            }),
            scheme: None,
            key_bits: 2048,
            exponent: 0,
            modulus,
        }
    );
    assert_eq!(parsed.effective_exponent(), 65537);
}

#[test]
fn parses_signing_schemes_and_no_symmetric() {
    // RSASSA-SHA256 signing key: symmetric NULL, scheme with hashAlg, exponent 3, 1024-bit.
    let mut t = hex("0001 000b 00040072 0000 0010 0014 000b 0400 00000003");
    put_tpm2b(&mut t, &[0xcc; 128]);
    let p = parse_rsa_public(&tpm2b(&t)).unwrap();
    assert_eq!(p.symmetric, None);
    assert_eq!(
        p.scheme,
        Some(RsaScheme {
            algorithm: TPM_ALG_RSASSA,
            hash_alg: Some(TPM_ALG_SHA256)
        })
    );
    assert_eq!(p.effective_exponent(), 3);
    // RSAES has no details field.
    let mut t = hex("0001 000b 00020072 0000 0010 0015 0800 00000000");
    put_tpm2b(&mut t, &[0xcc; 256]);
    let p = parse_rsa_public(&tpm2b(&t)).unwrap();
    assert_eq!(
        p.scheme,
        Some(RsaScheme {
            algorithm: TPM_ALG_RSAES,
            hash_alg: None
        })
    );
}

#[test]
fn parser_reports_truncation_at_each_field() {
    let srk = rsa_storage_public(0x00030472, &[], &[0xab; 256]);
    let body = &srk[2..];
    let cases = [
        (0, "type"),
        (1, "type"),
        (3, "nameAlg"),
        (7, "objectAttributes"),
        (9, "authPolicy"),
        (11, "parameters.symmetric.algorithm"),
        (13, "parameters.symmetric.keyBits"),
        (15, "parameters.symmetric.mode"),
        (17, "parameters.scheme.scheme"),
        (19, "parameters.keyBits"),
        (23, "parameters.exponent"),
        (25, "unique"),
        (body.len() - 1, "unique"),
    ];
    for (len, field) in cases {
        let err = parse_rsa_public(&tpm2b(&body[..len])).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("object TPM2B_PUBLIC truncated at field {field}"),
            "len {len}"
        );
    }
    assert_eq!(
        parse_rsa_public(&[0x01]).unwrap_err().to_string(),
        "object TPM2B_PUBLIC truncated at field size"
    );
    // Through the blob builder the message names the key.
    let (_, ek, _, _) = keys();
    let err = build_authentication_key(&ek, &tpm2b(&body[..100]), &[1; 32]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "SRK TPM2B_PUBLIC truncated at field unique"
    );
}

#[test]
fn parser_rejects_size_mismatch_and_trailing_bytes() {
    let srk = rsa_storage_public(0x00030472, &[], &[0xab; 256]);

    let mut longer = srk.clone();
    longer.push(0);
    let err = parse_rsa_public(&longer).unwrap_err();
    assert_eq!(
        err.to_string(),
        "object TPM2B_PUBLIC size prefix says 282 bytes but 283 bytes follow it"
    );
    assert_eq!(
        object_name(&longer).unwrap_err().to_string(),
        err.to_string()
    );

    let err = parse_rsa_public(&srk[..srk.len() - 1]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "object TPM2B_PUBLIC size prefix says 282 bytes but 281 bytes follow it"
    );

    // Size prefix covers extra bytes inside the TPM2B: garbage after the last TPMT_PUBLIC field.
    let mut body = srk[2..].to_vec();
    body.extend_from_slice(&[0, 0, 0]);
    let err = parse_rsa_public(&tpm2b(&body)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "object TPM2B_PUBLIC has 3 trailing bytes after field unique"
    );
}

#[test]
fn parser_rejects_non_rsa_and_other_name_algs() {
    // An ECC (0x0023) EK, as `tpm2_createek -G ecc` makes.
    let ecc = tpm2b(&hex(
        "0023 000b 000300b2 0000 0006 0080 0043 0010 0003 0010 0000 0000",
    ));
    let (_, _, _, srk) = keys();
    let err = build_authentication_key(&ecc, &srk, &[1; 32]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "EK is not an RSA key (type 0x0023); DPS TPM attestation needs an RSA-2048 EK"
    );
    assert!(matches!(
        err,
        Error::NotRsa {
            role: KeyRole::Ek,
            alg: 0x0023
        }
    ));
    // object_name works for any type.
    assert_eq!(object_name(&ecc).unwrap().len(), 34);

    let mut sha1 = srk.clone();
    sha1[4..6].copy_from_slice(&0x0004u16.to_be_bytes());
    assert_eq!(
        parse_rsa_public(&sha1).unwrap_err().to_string(),
        "object nameAlg is 0x0004; DPS TPM attestation needs SHA-256 (0x000b)"
    );
    assert!(matches!(
        object_name(&sha1).unwrap_err(),
        Error::NameAlg { alg: 0x0004, .. }
    ));
}

#[test]
fn builder_rejects_keys_that_cannot_protect_secrets() {
    let (_, ek, _, srk) = keys();
    // A signing key (no restricted|decrypt) as SRK.
    let mut t = hex("0001 000b 00040072 0000 0010 0010 0800 00000000");
    put_tpm2b(&mut t, &[0xcc; 256]);
    let err = build_authentication_key(&ek, &tpm2b(&t), &[1; 32]).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("SRK field objectAttributes: 0x00040072 lacks restricted|decrypt"),
        "{err}"
    );
    // AES-256 instead of AES-128.
    let mut aes256 = srk.clone();
    aes256[14..16].copy_from_slice(&256u16.to_be_bytes());
    let err = build_authentication_key(&ek, &aes256, &[1; 32]).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("SRK field parameters.symmetric:"),
        "{err}"
    );
    // keyBits disagrees with the modulus.
    let mut bits = ek.clone();
    let off = 2 + 2 + 2 + 4 + 2 + 32 + 6 + 2;
    bits[off..off + 2].copy_from_slice(&3072u16.to_be_bytes());
    let err = build_authentication_key(&bits, &srk, &[1; 32]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "EK field unique: modulus is 256 bytes but keyBits is 3072"
    );
}

#[test]
fn hmac_key_length_limits() {
    let (_, ek, _, srk) = keys();
    assert_eq!(
        build_authentication_key(&ek, &srk, &[])
            .unwrap_err()
            .to_string(),
        "HMAC key is 0 bytes; it must be 1 to 64 bytes (DPS uses 32)"
    );
    assert!(matches!(
        build_authentication_key(&ek, &srk, &[0; 65]),
        Err(Error::HmacKeyLength(65))
    ));
    for len in [1usize, 32, 64] {
        // Sizes: every field but the duplicate and public is fixed; those grow with the key.
        let blob = build_authentication_key(&ek, &srk, &vec![7; len]).unwrap();
        assert_eq!(blob.len(), 766 - 32 + len, "key length {len}");
    }
}

#[test]
fn blob_layout_for_32_byte_key() {
    let (_, ek, _, srk) = keys();
    let blob = build_authentication_key(&ek, &srk, &[0x5a; 32]).unwrap();
    // The five TPM structures are 764 bytes (the size quoted in tpm-notes §4); the empty
    // URI-data length DPS appends makes the blob 766.
    let (fields, rest) = split_tpm2b(&blob, 6);
    let lens: Vec<usize> = fields.iter().map(|f| f.len() + 2).collect();
    assert_eq!(lens, [54, 258, 144, 258, 50, 2]);
    assert_eq!(lens[..5].iter().sum::<usize>(), 764);
    assert_eq!(blob.len(), 766);
    assert_eq!(&blob[764..], &[0, 0]);
    assert!(rest.is_empty());
    // TPM2B_PUBLIC of the HMAC key: keyedHash, SHA-256, 0x00040440, no policy, HMAC-SHA256.
    assert_eq!(
        &fields[4][..16],
        &hex("0008 000b 00040440 0000 0005 000b 0020")[..]
    );
    // Fresh randomness on every call.
    let again = build_authentication_key(&ek, &srk, &[0x5a; 32]).unwrap();
    assert_ne!(blob, again);
    assert_eq!(blob[..4], again[..4]);
}

/// Opens the blob in software, the way the TPM's ActivateCredential and Import do, and checks
/// that every layer decrypts and authenticates to what went in.
#[test]
fn blob_opens_with_the_private_keys() {
    let (ek_priv, ek, srk_priv, srk) = keys();
    let secrets = fixed_secrets();
    let hmac_key = [0x5a; 32];
    let blob = build_with(&ek, &srk, &hmac_key, &secrets).unwrap();
    let (f, _) = split_tpm2b(&blob, 6);
    let (id_object, secret, duplicate, seed, public) = (f[0], f[1], f[2], f[3], f[4]);

    // ActivateCredential: EK decrypts the seed; objectName is the SRK's Name.
    let cred_seed = oaep_decrypt(&ek_priv, b"IDENTITY\0", secret);
    assert_eq!(cred_seed, *secrets.credential_seed);
    let cred = outer_unwrap(&cred_seed, &object_name(&srk).unwrap(), id_object);
    assert_eq!(cred, tpm2b(&secrets.inner_key));
    // Wrong label: the TPM would fail the same way.
    let pkey = PKey::from_rsa(ek_priv.clone()).unwrap();
    let mut dec = Decrypter::new(&pkey).unwrap();
    dec.set_rsa_padding(Padding::PKCS1_OAEP).unwrap();
    dec.set_rsa_oaep_md(MessageDigest::sha256()).unwrap();
    dec.set_rsa_mgf1_md(MessageDigest::sha256()).unwrap();
    dec.set_rsa_oaep_label(b"DUPLICATE\0").unwrap();
    let mut out = vec![0; 256];
    assert!(dec.decrypt(secret, &mut out).is_err());

    // Import: SRK decrypts the seed; outer then inner unwrap.
    let public_tpm2b = tpm2b(public);
    let key_name = object_name(&public_tpm2b).unwrap();
    let dup_seed = oaep_decrypt(&srk_priv, b"DUPLICATE\0", seed);
    let inner = outer_unwrap(&dup_seed, &key_name, duplicate);
    let plain = cfb_decrypt(&cred[2..], &inner);
    let (f2, rest) = split_tpm2b(&plain, 2);
    assert!(rest.is_empty());
    let sensitive_tpm2b = tpm2b(f2[1]);
    assert_eq!(
        f2[0],
        &sha256(&[&sensitive_tpm2b, &key_name]).unwrap()[..],
        "inner integrity"
    );
    assert_eq!(&f2[1][..2], &TPM_ALG_KEYEDHASH.to_be_bytes());
    let (s, rest) = split_tpm2b(&f2[1][2..], 3);
    assert!(rest.is_empty());
    assert_eq!(
        (s[0], s[1], s[2]),
        (&[][..], &secrets.obfuscation[..], &hmac_key[..])
    );
    // unique binds the public area to the sensitive one.
    assert_eq!(
        &public[16..],
        &sha256(&[&secrets.obfuscation, &hmac_key]).unwrap()[..]
    );
}
