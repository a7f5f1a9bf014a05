//! Symmetric keys: generate-if-absent, import-overwrites, HMAC in the TPM, derived keys and
//! module-key derivation as identityd does it, AEAD, delete.

use serde_json::json;
use testkit::Swtpm;

use super::common::{hmac_sha256, Daemon};
use super::*;

#[test]
fn generate_returns_the_existing_key_and_signs_in_the_tpm() {
    let tpm = Swtpm::start();
    let d = Daemon::start(&tpm);
    let first = create_key(&d, "gen", "sign");
    let again = create_key(&d, "gen", "derive,sign");
    assert_ne!(first, again, "every handle carries a fresh nonce");
    let mac = sign_hmac(&d, &first, b"message");
    assert_eq!(mac.len(), 32);
    assert_eq!(
        sign_hmac(&d, &again, b"message"),
        mac,
        "generate must not replace an existing key"
    );
    let loaded = handle(&ok(&d, d.keyd_get("/key/gen")));
    assert_eq!(sign_hmac(&d, &loaded, b"message"), mac);
}

#[test]
fn imported_key_signs_like_software_hmac_and_import_overwrites() {
    let tpm = Swtpm::start();
    let d = Daemon::start(&tpm);
    let (a, b) = (
        [0xA5u8; 32],
        *b"0123456789abcdef0123456789ABCDEF0123456789abcdef0123456789ABCDEF",
    );
    let handle = import_key(&d, "device-id", &a, "sign");
    for len in [0usize, 1, 64, 1024, 1025, 70_000] {
        let message: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
        assert_eq!(
            sign_hmac(&d, &handle, &message),
            hmac_sha256(&a, &message),
            "length {len}"
        );
    }
    // Import replaces the key: the new handle signs with the new key, and the old handle,
    // which was for the replaced key, is refused rather than used with the new one.
    let new = import_key(&d, "device-id", &b, "sign");
    assert_eq!(sign_hmac(&d, &new, b"m"), hmac_sha256(&b, b"m"));
    assert_eq!(d.keyd_post("/sign", &sign_request(&handle, b"m")).status, 400);
    // Keys longer than HMAC's block behave as HMAC defines.
    let long = [0x3Cu8; 100];
    let h = import_key(&d, "long", &long, "sign");
    assert_eq!(sign_hmac(&d, &h, b"m"), hmac_sha256(&long, b"m"));
}

#[test]
fn derived_key_is_hmac_of_the_base_and_module_keys_match_software() {
    let tpm = Swtpm::start();
    let d = Daemon::start(&tpm);
    let master: Vec<u8> = (0..32).map(|i| i * 3 + 1).collect();
    let base = import_key(&d, "aziot_identityd_master_id", &master, "derive,sign");
    for (module, generation) in [
        ("edgeAgent", "637896542123456789"),
        ("edgeHub", "1"),
        ("m/odd id", "x"),
    ] {
        for which in ["primary", "secondary"] {
            let data = format!("{module}:{generation}:{which}");
            let expected = hmac_sha256(&master, data.as_bytes());
            let derived = derive(&d, &base, data.as_bytes());
            assert_eq!(export(&d, &derived), expected, "{data}");
            // Signing with the derived handle is HMAC with the derived key, as upstream.
            let sas = b"myhub.azure-devices.net%2Fdevices%2Fd1%2Fmodules%2FedgeAgent\n1700000000";
            assert_eq!(sign_hmac(&d, &derived, sas), hmac_sha256(&expected, sas));
        }
    }
}

#[test]
fn aead_round_trips_and_detects_tampering_and_wrong_aad() {
    let tpm = Swtpm::start();
    let d = Daemon::start(&tpm);
    let key = create_key(&d, "iotedge_master_encryption_id", "encrypt");
    let (iv, aad) = (b"0123456789ab", b"edgeAgent637");
    let ct = encrypt(&d, &key, iv, aad, b"module secret");
    assert_eq!(ct[0], 0x02);
    assert_eq!(ct.len(), 1 + 13 + 16);
    let r = decrypt(&d, &key, iv, aad, &ct);
    assert_eq!(
        unb64(ok(&d, r)["plaintext"].as_str().unwrap()),
        b"module secret"
    );

    let altered = "parameter \"ciphertext\" has an invalid value\ncaused by: does not authenticate: the ciphertext, iv or aad was altered, or it was encrypted with another key";
    assert_error(&decrypt(&d, &key, iv, b"edgeHub637", &ct), 400, altered);
    assert_error(&decrypt(&d, &key, b"another iv..", aad, &ct), 400, altered);
    for i in [1, ct.len() / 2, ct.len() - 1] {
        let mut bad = ct.clone();
        bad[i] ^= 0x01;
        assert_error(&decrypt(&d, &key, iv, aad, &bad), 400, altered);
    }
    // Another key cannot decrypt it.
    let other = create_key(&d, "other", "encrypt");
    assert_error(&decrypt(&d, &other, iv, aad, &ct), 400, altered);
    // IoT Edge 1.1's layout, 0x01 || tag || ct, is accepted.
    let mut v1 = vec![0x01];
    v1.extend_from_slice(&ct[ct.len() - 16..]);
    v1.extend_from_slice(&ct[1..ct.len() - 16]);
    assert_eq!(
        unb64(
            ok(&d, decrypt(&d, &key, iv, aad, &v1))["plaintext"]
                .as_str()
                .unwrap()
        ),
        b"module secret"
    );
}

#[test]
fn one_key_for_sign_and_encrypt_and_aead_with_derived_keys() {
    let tpm = Swtpm::start();
    let d = Daemon::start(&tpm);
    let both = create_key(&d, "both", "sign,encrypt,derive");
    let mac = sign_hmac(&d, &both, b"m");
    let ct = encrypt(&d, &both, b"iv", b"", b"secret");
    assert_eq!(
        unb64(
            ok(&d, decrypt(&d, &both, b"iv", b"", &ct))["plaintext"]
                .as_str()
                .unwrap()
        ),
        b"secret"
    );
    assert_eq!(sign_hmac(&d, &both, b"m"), mac);

    // An imported key with both usages: AES-GCM with the same bytes as the HMAC key.
    let bytes = [0x11u8; 32];
    let imported = import_key(&d, "imported-both", &bytes, "sign,encrypt");
    assert_eq!(sign_hmac(&d, &imported, b"m"), hmac_sha256(&bytes, b"m"));
    let ct = encrypt(&d, &imported, b"iv", b"aad", b"x");
    let mut tag = [0u8; 16];
    let expected = openssl::symm::encrypt_aead(
        openssl::symm::Cipher::aes_256_gcm(),
        &bytes,
        Some(b"iv"),
        b"aad",
        b"x",
        &mut tag,
    )
    .unwrap();
    assert_eq!(&ct[1..2], &expected[..]);
    assert_eq!(&ct[2..], &tag);

    // AEAD with a derived key uses the derived bytes.
    let master = [0x42u8; 32];
    let base = import_key(&d, "master", &master, "derive");
    let derived = derive(&d, &base, b"module:1:primary");
    let ct = encrypt(&d, &derived, b"iv", b"aad", b"derived secret");
    let dk = hmac_sha256(&master, b"module:1:primary");
    let pt = openssl::symm::decrypt_aead(
        openssl::symm::Cipher::aes_256_gcm(),
        &dk,
        Some(b"iv"),
        b"aad",
        &ct[1..ct.len() - 16],
        &ct[ct.len() - 16..],
    )
    .unwrap();
    assert_eq!(pt, b"derived secret");
    assert_eq!(
        unb64(
            ok(&d, decrypt(&d, &derived, b"iv", b"aad", &ct))["plaintext"]
                .as_str()
                .unwrap()
        ),
        b"derived secret"
    );
}

#[test]
fn deleted_keys_are_gone() {
    let tpm = Swtpm::start();
    let d = Daemon::start(&tpm);
    let h = create_key(&d, "temp", "sign");
    let r = d.keyd_delete("/key", &json!({ "keyHandle": h }));
    assert_eq!(r.status, 204, "{}", String::from_utf8_lossy(&r.body));
    assert!(r.body.is_empty());
    assert_error(
        &d.keyd_get("/key/temp"),
        400,
        "a parameter has an invalid value\ncaused by: key \"temp\" does not exist",
    );
    assert_error(
        &d.keyd_post("/sign", &sign_request(&h, b"m")),
        400,
        "a parameter has an invalid value\ncaused by: key \"temp\" does not exist",
    );
    // Deleting again is fine, and generating makes a new key.
    assert_eq!(
        d.keyd_delete("/key", &json!({ "keyHandle": h })).status,
        204
    );
    let h2 = create_key(&d, "temp", "sign");
    assert_eq!(sign_hmac(&d, &h2, b"m").len(), 32);
}
