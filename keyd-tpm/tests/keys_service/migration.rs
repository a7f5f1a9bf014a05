//! Keys that upstream's file backend left, and `[preloaded_keys]` files: taken into the TPM on
//! first use, proven, and (for upstream's files) the plaintext removed; handles upstream minted
//! keep working.

use openssl::ec::{EcGroup, EcKey};
use openssl::nid::Nid;
use openssl::pkey::PKey;
use serde_json::json;
use testkit::Swtpm;

use super::common::{hmac_sha256, Daemon};
use super::*;

/// Upstream's file names, as its docs and the reference list them.
const MASTER_FILE: &str =
    "aziotidentitydmasterid-91b92c2c06a5a5dda5fbc9c48b4d428d930b9c1b8b2956a1044ccbc7a266afc9.key";
const HVK_FILE: &str =
    "handlevalidationkey-40f1ca41fe8b50f53e10f3e3a580dcae24087f37aa498ba9903f2612b03e90ba.key";

fn upstream_file(d: &Daemon, id: &str) -> std::path::PathBuf {
    d.keys_dir()
        .join(format!("{}.key", keyd_tpm::keyd::key_file_stem(id)))
}

/// A handle exactly as upstream aziot-keyd mints it, with its handle-validation key.
fn upstream_handle(hvk: &[u8], key_id: serde_json::Value) -> String {
    let sr = serde_json::to_string(&json!({ "key_id": key_id, "nonce": b64(&[9; 64]) })).unwrap();
    format!(
        "sr={}&sig={}",
        b64(sr.as_bytes()),
        b64(&hmac_sha256(hvk, sr.as_bytes()))
    )
}

#[test]
fn upstream_master_key_migrates_and_module_keys_stay_the_same() {
    let tpm = Swtpm::start();
    let d = Daemon::start(&tpm);
    std::fs::create_dir_all(d.keys_dir()).unwrap();
    let master: Vec<u8> = (100..132).collect();
    let hvk = [0xC3u8; 32];
    std::fs::write(d.keys_dir().join(MASTER_FILE), &master).unwrap();
    std::fs::write(d.keys_dir().join(HVK_FILE), hvk).unwrap();
    assert_eq!(
        upstream_file(&d, "aziot_identityd_master_id"),
        d.keys_dir().join(MASTER_FILE)
    );

    // A module handle identityd got from upstream keyd before the switch still signs.
    let old_master = upstream_handle(&hvk, json!({ "Key": "aziot_identityd_master_id" }));
    let old_module = upstream_handle(
        &hvk,
        json!({ "Derived": [old_master, b"edgeAgent:7:primary".to_vec()] }),
    );
    let module_key = hmac_sha256(&master, b"edgeAgent:7:primary");
    assert_eq!(
        sign_hmac(&d, &old_module, b"sas"),
        hmac_sha256(&module_key, b"sas")
    );

    // identityd's flow: load the master key, derive, export.
    let h = handle(&ok(&d, d.keyd_get("/key/aziot_identityd_master_id")));
    for which in ["primary", "secondary"] {
        let data = format!("edgeAgent:7:{which}");
        assert_eq!(
            export(&d, &derive(&d, &h, data.as_bytes())),
            hmac_sha256(&master, data.as_bytes())
        );
    }
    // 32 raw bytes serve AEAD too, as upstream's file keys did.
    let ct = encrypt(&d, &h, b"iv", b"", b"x");
    assert_eq!(
        unb64(
            ok(&d, decrypt(&d, &h, b"iv", b"", &ct))["plaintext"]
                .as_str()
                .unwrap()
        ),
        b"x"
    );

    // The plaintext files are gone, TPM-wrapped records replace them.
    for file in [MASTER_FILE, HVK_FILE] {
        assert!(!d.keys_dir().join(file).exists(), "{file} still there");
        assert!(d.keys_dir().join(file.replace(".key", ".tpmkey")).exists());
    }
    assert!(
        d.log()
            .contains("took upstream's plaintext key \"aziot_identityd_master_id\""),
        "{}",
        d.log()
    );

    // And stay the same keys after a restart.
    let mut d = d;
    d.restart();
    assert_eq!(
        sign_hmac(&d, &old_module, b"sas"),
        hmac_sha256(&module_key, b"sas")
    );
    assert_eq!(sign_hmac(&d, &h, b"m"), hmac_sha256(&master, b"m"));
}

#[test]
fn upstream_key_pairs_migrate_with_the_same_public_key() {
    let tpm = Swtpm::start();
    let d = Daemon::start(&tpm);
    std::fs::create_dir_all(d.keys_dir()).unwrap();
    let ec = PKey::from_ec_key(
        EcKey::generate(&EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap()).unwrap(),
    )
    .unwrap();
    let rsa = PKey::from_rsa(openssl::rsa::Rsa::generate(2048).unwrap()).unwrap();
    std::fs::write(
        upstream_file(&d, "aziot-edged-ca"),
        ec.private_key_to_pem_pkcs8().unwrap(),
    )
    .unwrap();
    std::fs::write(
        upstream_file(&d, "device-id"),
        rsa.private_key_to_pem_pkcs8().unwrap(),
    )
    .unwrap();

    let h = handle(&ok(&d, d.keyd_get("/keypair/aziot-edged-ca")));
    let published = ec_public_key(&d, &h);
    assert!(published
        .public_key()
        .eq(
            published.group(),
            ec.ec_key().unwrap().public_key(),
            &mut openssl::bn::BigNumContext::new().unwrap()
        )
        .unwrap());
    let digest = openssl::sha::sha256(b"tbs");
    let sig = openssl::ecdsa::EcdsaSig::from_der(&sign_ecdsa(&d, &h, &digest)).unwrap();
    assert!(sig.verify(&digest, &ec.ec_key().unwrap()).unwrap());
    assert!(!upstream_file(&d, "aziot-edged-ca").exists());

    let h = handle(&ok(&d, d.keyd_get("/keypair/device-id")));
    assert_eq!(
        rsa_public_key(&d, &h).n().to_vec(),
        rsa.rsa().unwrap().n().to_vec()
    );
    let signature = unb64(
        ok(
            &d,
            rsa_private(&d, &h, "RSA-PKCS1", &sha256_digest_info(b"tbs")),
        )["ciphertext"]
            .as_str()
            .unwrap(),
    );
    let mut signer =
        openssl::sign::Signer::new(openssl::hash::MessageDigest::sha256(), &rsa).unwrap();
    signer.update(b"tbs").unwrap();
    assert_eq!(
        signature,
        signer.sign_to_vec().unwrap(),
        "PKCS#1 v1.5 signatures are deterministic"
    );
    assert!(!upstream_file(&d, "device-id").exists());
}

#[test]
fn preloaded_file_keys_are_used_in_place_and_other_schemes_are_a_clear_400() {
    let tpm = Swtpm::start();
    let files = tempfile::tempdir().unwrap();
    let sas_key: Vec<u8> = (0..64).map(|i| i as u8 ^ 0x5C).collect();
    let ec = PKey::from_ec_key(
        EcKey::generate(&EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap()).unwrap(),
    )
    .unwrap();
    let (sas_path, ca_path) = (
        files.path().join("device-id"),
        files.path().join("edge ca.pem"),
    );
    std::fs::write(&sas_path, &sas_key).unwrap();
    std::fs::write(&ca_path, ec.private_key_to_pem_pkcs8().unwrap()).unwrap();
    let config = format!(
        "[preloaded_keys]\ndevice-id = \"file://{}\"\naziot-edged-ca = \"file://{}\"\nhsm = \"pkcs11:slot-id=0;object=k?pin-value=1234\"\n",
        sas_path.display(),
        ca_path.display().to_string().replace(' ', "%20"),
    );
    let d = Daemon::start_keyd(&tpm, &config);

    let h = handle(&ok(&d, d.keyd_get("/key/device-id")));
    assert_eq!(sign_hmac(&d, &h, b"sas"), hmac_sha256(&sas_key, b"sas"));
    // Generate finds the preloaded key; import, delete and moves are refused.
    let again = create_key(&d, "device-id", "sign");
    assert_eq!(sign_hmac(&d, &again, b"sas"), hmac_sha256(&sas_key, b"sas"));
    let r = d.keyd_post(
        "/key",
        &json!({ "keyId": "device-id", "keyBytes": b64(&[1; 32]), "usage": "sign" }),
    );
    assert_eq!(r.status, 400);
    assert!(r.message().contains("preloaded"), "{}", r.message());
    assert_eq!(
        d.keyd_delete("/key", &json!({ "keyHandle": h })).status,
        400
    );
    assert!(sas_path.exists(), "the operator's file must stay");

    let ca = handle(&ok(&d, d.keyd_get("/keypair/aziot-edged-ca")));
    let digest = openssl::sha::sha256(b"cert");
    let sig = openssl::ecdsa::EcdsaSig::from_der(&sign_ecdsa(&d, &ca, &digest)).unwrap();
    assert!(sig.verify(&digest, &ec.ec_key().unwrap()).unwrap());
    assert_eq!(
        d.keyd_post("/keypair/elsewhere", &json!({ "from": "aziot-edged-ca" }))
            .status,
        400
    );
    assert!(ca_path.exists());

    let r = d.keyd_get("/key/hsm");
    assert_eq!(r.status, 400);
    assert!(
        r.message().contains("pkcs11: scheme is not supported"),
        "{}",
        r.message()
    );
    assert!(
        d.log().contains("pkcs11:"),
        "the bad scheme is reported at start:\n{}",
        d.log()
    );
}

#[test]
fn an_upstream_key_pair_the_tpm_cannot_hold_is_refused_naming_its_file_and_kept() {
    let tpm = Swtpm::start();
    let d = Daemon::start(&tpm);
    std::fs::create_dir_all(d.keys_dir()).unwrap();
    // RSA-3072: a real key upstream's file backend can hold, which this TPM cannot.
    let rsa = PKey::from_rsa(openssl::rsa::Rsa::generate(3072).unwrap()).unwrap();
    let file = upstream_file(&d, "big-rsa");
    std::fs::write(&file, rsa.private_key_to_pem_pkcs8().unwrap()).unwrap();

    let r = d.keyd_get("/keypair/big-rsa");
    let message = r.message();
    assert_eq!(r.status, 400, "{message}");
    assert!(
        message.contains("RSA-3072") && message.contains(&file.display().to_string()),
        "{message}"
    );
    assert!(file.exists(), "the operator's only copy must stay");
}
