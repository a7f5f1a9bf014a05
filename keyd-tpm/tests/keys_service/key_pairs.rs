//! Key pairs: ECDSA and the RSA private operation in the TPM, checked with OpenSSL against the
//! public key `/parameters` describes; preferredAlgorithms; move; delete.

use openssl::ecdsa::EcdsaSig;
use openssl::hash::MessageDigest;
use openssl::pkey::PKey;
use openssl::rsa::Padding;
use openssl::sign::Verifier;
use serde_json::json;
use testkit::Swtpm;

use super::common::Daemon;
use super::*;

#[test]
fn ecdsa_signatures_verify_against_the_published_public_key() {
    let tpm = Swtpm::start();
    let d = Daemon::start(&tpm);
    let h = create_key_pair(&d, "aziot-edged-ca", None);
    let public = ec_public_key(&d, &h);
    for message in [&b"tbs certificate"[..], b"", b"another"] {
        let digest = openssl::sha::sha256(message);
        let der = sign_ecdsa(&d, &h, &digest);
        let sig = EcdsaSig::from_der(&der).expect("signature is DER ECDSA-Sig-Value");
        assert!(
            sig.verify(&digest, &public).unwrap(),
            "signature does not verify"
        );
    }
    // A SHA-384 digest is used as P-256 ECDSA uses it (its leftmost 256 bits).
    let digest = openssl::sha::sha384(b"m");
    let sig = EcdsaSig::from_der(&sign_ecdsa(&d, &h, &digest)).unwrap();
    assert!(sig.verify(&digest, &public).unwrap());
    // OpenSSL's own verifier, over the message.
    let der = sign_ecdsa(&d, &h, &openssl::sha::sha256(b"hello"));
    let pkey = PKey::from_ec_key(public).unwrap();
    let mut verifier = Verifier::new(MessageDigest::sha256(), &pkey).unwrap();
    verifier.update(b"hello").unwrap();
    assert!(verifier.verify(&der).unwrap());
    // Wrong parameters for an EC key.
    for name in ["rsa-modulus", "rsa-exponent", "nope"] {
        assert_eq!(
            d.keyd_post(&format!("/parameters/{name}"), &json!({ "keyHandle": h }))
                .status,
            400,
            "{name}"
        );
    }
}

#[test]
fn rsa_pkcs1_and_no_padding_through_encrypt_verify_with_openssl() {
    let tpm = Swtpm::start();
    let d = Daemon::start(&tpm);
    let h = create_key_pair(&d, "device-id", Some("rsa-2048:*"));
    let rsa = rsa_public_key(&d, &h);
    assert_eq!(rsa.size(), 256);
    assert_eq!(unb64(&parameter(&d, &h, "rsa-exponent")), [1, 0, 1]);
    let pkey = PKey::from_rsa(rsa.clone()).unwrap();

    // RSA-PKCS1 over a DigestInfo is a PKCS#1 v1.5 signature.
    let r = rsa_private(&d, &h, "RSA-PKCS1", &sha256_digest_info(b"tbs"));
    let signature = unb64(ok(&d, r)["ciphertext"].as_str().unwrap());
    let mut verifier = Verifier::new(MessageDigest::sha256(), &pkey).unwrap();
    verifier.update(b"tbs").unwrap();
    assert!(
        verifier.verify(&signature).unwrap(),
        "RSA-PKCS1 result is not a valid signature"
    );

    // RSA-NO-PADDING: the caller's block as is (here the same type 1 padding → same result).
    let mut block = vec![0x00, 0x01];
    block.resize(256 - 19 - 32 - 1, 0xFF);
    block.push(0x00);
    block.extend_from_slice(&sha256_digest_info(b"tbs"));
    let raw = unb64(
        ok(&d, rsa_private(&d, &h, "RSA-NO-PADDING", &block))["ciphertext"]
            .as_str()
            .unwrap(),
    );
    assert_eq!(raw, signature);
    let mut recovered = vec![0; 256];
    rsa.public_decrypt(&raw, &mut recovered, Padding::NONE)
        .unwrap();
    assert_eq!(recovered, block);

    // Not a full block, not below the modulus, too long for PKCS1: 400s.
    assert_eq!(
        rsa_private(&d, &h, "RSA-NO-PADDING", &block[1..]).status,
        400
    );
    assert_eq!(
        rsa_private(&d, &h, "RSA-NO-PADDING", &[0xFF; 256]).status,
        400
    );
    assert_eq!(rsa_private(&d, &h, "RSA-PKCS1", &[0; 246]).status, 400);
    // /decrypt has no RSA, ECDSA is not for RSA keys.
    let r = d.keyd_post(
        "/decrypt",
        &json!({ "keyHandle": h, "algorithm": "RSA-PKCS1", "ciphertext": b64(&signature) }),
    );
    assert_error(&r, 400, "parameter \"mechanism\" has an invalid value\ncaused by: mechanism cannot be used with this key type");
    let r = d.keyd_post(
        "/sign",
        &json!({ "keyHandle": h, "algorithm": "ECDSA", "parameters": { "digest": b64(&[1; 32]) } }),
    );
    assert_error(&r, 400, "parameter \"mechanism\" has an invalid value\ncaused by: mechanism cannot be used with this key type");
}

#[test]
fn preferred_algorithms_pick_the_first_the_tpm_can_make() {
    let tpm = Swtpm::start();
    let d = Daemon::start(&tpm);
    for (id, preferred, algorithm) in [
        ("a", None, "ECDSA"),
        ("b", Some("*"), "ECDSA"),
        ("c", Some("rsa-2048:*"), "RSA"),
        ("d", Some("rsa-4096:ec-p256"), "ECDSA"),
        ("e", Some("unknown:ec-p256"), "ECDSA"),
    ] {
        let h = create_key_pair(&d, id, preferred);
        assert_eq!(parameter(&d, &h, "algorithm"), algorithm, "{preferred:?}");
    }
    // An existing key pair is returned whatever the preference.
    let h = create_key_pair(&d, "c", Some("ec-p256"));
    assert_eq!(parameter(&d, &h, "algorithm"), "RSA");
    let r = d.keyd_post(
        "/keypair",
        &json!({ "keyId": "f", "preferredAlgorithms": "rsa-4096" }),
    );
    assert_eq!(r.status, 400);
    assert!(
        r.message()
            .starts_with("parameter \"preferredAlgorithms\" has an invalid value"),
        "{}",
        r.message()
    );
}

#[test]
fn move_replaces_the_target_and_removes_the_source() {
    let tpm = Swtpm::start();
    let d = Daemon::start(&tpm);
    let temp = create_key_pair(&d, "device-id-temp", None);
    let point = parameter(&d, &temp, "ec-point");
    create_key_pair(&d, "device-id", None);
    let r = d.keyd_post("/keypair/device-id", &json!({ "from": "device-id-temp" }));
    assert_eq!(r.status, 204, "{}", String::from_utf8_lossy(&r.body));
    let moved = handle(&ok(&d, d.keyd_get("/keypair/device-id")));
    assert_eq!(parameter(&d, &moved, "ec-point"), point);
    assert_error(
        &d.keyd_get("/keypair/device-id-temp"),
        400,
        "a parameter has an invalid value\ncaused by: key pair \"device-id-temp\" does not exist",
    );
    // Same source and destination; a move through /key; a missing source.
    assert_error(
        &d.keyd_post("/keypair/x", &json!({ "from": "x" })),
        400,
        "source and destination for move are identical",
    );
    assert_error(
        &d.keyd_post("/key/x", &json!({ "from": "y" })),
        400,
        "invalid type \"key\"",
    );
    assert_error(
        &d.keyd_post("/key/x", &json!({ "from": "x" })),
        400,
        "source and destination for move are identical",
    );
    assert_eq!(
        d.keyd_post("/keypair/y", &json!({ "from": "missing" }))
            .status,
        400
    );
}

#[test]
fn deleted_key_pairs_are_gone() {
    let tpm = Swtpm::start();
    let d = Daemon::start(&tpm);
    let h = create_key_pair(&d, "p", None);
    assert_error(
        &d.keyd_delete("/key", &json!({ "keyHandle": h })),
        400,
        "parameter \"handle\" has an invalid value\ncaused by: not a handle to a symmetric key; key pairs are deleted with DELETE /keypair",
    );
    assert_eq!(
        d.keyd_delete("/keypair", &json!({ "keyHandle": h })).status,
        204
    );
    assert_eq!(d.keyd_get("/keypair/p").status, 400);
    assert_eq!(
        d.keyd_post("/parameters/algorithm", &json!({ "keyHandle": h }))
            .status,
        400
    );
}
