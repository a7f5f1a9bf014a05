//! Handles: upstream's format, and nothing but a handle this daemon minted is accepted; a
//! rejected handle never gets its operation run.

use serde_json::{json, Value};
use testkit::Swtpm;

use super::common::Daemon;
use super::*;

const INVALID: &str = "parameter \"handle\" has an invalid value\ncaused by: invalid handle";

fn parts(handle: &str) -> (String, String) {
    let (sr, sig) = handle.split_once('&').unwrap();
    (
        sr.strip_prefix("sr=").unwrap().to_owned(),
        sig.strip_prefix("sig=").unwrap().to_owned(),
    )
}

#[test]
fn handles_have_upstreams_format() {
    let tpm = Swtpm::start();
    let d = Daemon::start(&tpm);
    let key = create_key(&d, "k", "derive,sign");
    let pair = create_key_pair(&d, "p", None);
    let derived = derive(&d, &key, b"m:1:primary");

    let sr_of = |h: &str| -> Value {
        let (sr, sig) = parts(h);
        assert_eq!(unb64(&sig).len(), 32, "sig is an HMAC-SHA256");
        let text = String::from_utf8(unb64(&sr)).unwrap();
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            serde_json::to_string(&v).unwrap().len(),
            text.len(),
            "SR is compact JSON"
        );
        assert_eq!(unb64(v["nonce"].as_str().unwrap()).len(), 64);
        v
    };
    assert_eq!(sr_of(&key)["key_id"], json!({ "Key": "k" }));
    assert_eq!(sr_of(&pair)["key_id"], json!({ "KeyPair": "p" }));
    let d_sr = sr_of(&derived);
    assert_eq!(d_sr["key_id"]["Derived"][0], json!(key));
    assert_eq!(d_sr["key_id"]["Derived"][1], json!(b"m:1:primary".to_vec()));
    assert!(String::from_utf8(unb64(&parts(&derived).0))
        .unwrap()
        .starts_with("{\"key_id\":{\"Derived\":[\"sr="));
}

#[test]
fn forged_truncated_and_foreign_handles_are_rejected_and_nothing_runs() {
    let tpm = Swtpm::start();
    let d = Daemon::start(&tpm);
    let victim = create_key(&d, "victim", "sign");
    let other = create_key(&d, "other", "sign");
    let (sr, sig) = parts(&victim);
    let (other_sr, _) = parts(&other);

    let mut flipped = unb64(&sig);
    flipped[0] ^= 1;
    // An SR naming another key with the victim's signature.
    let swapped_sr = String::from_utf8(unb64(&sr))
        .unwrap()
        .replace("\"victim\"", "\"other\"");
    let forged = [
        format!("sr={sr}&sig={}", b64(&flipped)),
        format!("sr={other_sr}&sig={sig}"),
        format!("sr={}&sig={sig}", b64(swapped_sr.as_bytes())),
        victim[..victim.len() - 8].to_owned(),
        format!("sr={sr}"),
        format!("sig={sig}"),
        "".to_owned(),
        "garbage".to_owned(),
        format!("sr={sr}&sig="),
    ];
    for h in &forged {
        assert_error(&d.keyd_post("/sign", &sign_request(h, b"m")), 400, INVALID);
        assert_error(
            &d.keyd_delete("/key", &json!({ "keyHandle": h })),
            400,
            INVALID,
        );
        assert_error(
            &d.keyd_post(
                "/derivedkey",
                &json!({ "baseKeyHandle": h, "derivationData": "AA==" }),
            ),
            400,
            INVALID,
        );
    }
    // The key was not deleted by any of them.
    assert_eq!(sign_hmac(&d, &victim, b"m").len(), 32);

    // A handle from another keyd-tpm (another TPM, another handle-validation key).
    let tpm2 = Swtpm::start();
    let d2 = Daemon::start(&tpm2);
    let foreign = create_key(&d2, "victim", "sign");
    assert_error(
        &d.keyd_post("/sign", &sign_request(&foreign, b"m")),
        400,
        INVALID,
    );
    assert_error(
        &d.keyd_delete("/key", &json!({ "keyHandle": foreign })),
        400,
        INVALID,
    );
    assert_eq!(sign_hmac(&d, &victim, b"m").len(), 32);

    // A derived handle whose base was swapped for another key's handle.
    let derived = derive(&d, &victim, b"x");
    let (dsr, dsig) = parts(&derived);
    let swapped = String::from_utf8(unb64(&dsr))
        .unwrap()
        .replace(&victim, &other);
    let forged_base = format!("sr={}&sig={dsig}", b64(swapped.as_bytes()));
    assert_error(
        &d.keyd_post("/sign", &sign_request(&forged_base, b"m")),
        400,
        INVALID,
    );
    assert_error(
        &d.keyd_post("/derivedkey/export", &json!({ "keyHandle": forged_base })),
        400,
        INVALID,
    );
}

const STALE: &str = "has been deleted or replaced since; load or create the key again for a new handle";

fn sign_status(d: &Daemon, handle: &str) -> (u16, String) {
    let r = d.keyd_post("/sign", &sign_request(handle, b"m"));
    (r.status, if r.status == 200 { String::new() } else { r.message() })
}

/// Many clients creating the same new key, or the same new key pair, at once: each creator
/// makes a TPM object and mints a handle while writing it, but one write wins. Every client
/// gets a handle that works, to the one key that was stored (the same HMAC for all, or ECDSA
/// signatures under the one published public key), and one key file is left per id.
#[test]
fn clients_creating_one_key_at_once_all_get_working_handles_to_the_one_stored() {
    let tpm = Swtpm::start();
    let d = Daemon::start(&tpm);
    for round in 0..3 {
        let (key_id, pair_id) = (format!("raced-{round}"), format!("raced-pair-{round}"));
        let (keys, pairs): (Vec<String>, Vec<String>) = std::thread::scope(|s| {
            let keys: Vec<_> = (0..6).map(|_| s.spawn(|| create_key(&d, &key_id, "sign"))).collect();
            let pairs: Vec<_> = (0..6).map(|_| s.spawn(|| create_key_pair(&d, &pair_id, Some("ec-p256")))).collect();
            (keys.into_iter().map(|t| t.join().unwrap()).collect(), pairs.into_iter().map(|t| t.join().unwrap()).collect())
        });
        let macs: Vec<Vec<u8>> = keys.iter().map(|h| sign_hmac(&d, h, b"which key")).collect();
        assert!(macs.iter().all(|m| m == &macs[0]), "round {round}: the handles sign with different keys");
        let loaded = handle(&ok(&d, d.keyd_get(&format!("/key/{key_id}"))));
        assert_eq!(sign_hmac(&d, &loaded, b"which key"), macs[0], "round {round}");
        let public = parameter(&d, &pairs[0], "ec-point");
        for h in &pairs {
            assert_eq!(parameter(&d, h, "ec-point"), public, "round {round}");
            let r = d.keyd_post("/sign", &json!({ "keyHandle": h, "algorithm": "ECDSA", "parameters": { "digest": b64(&[7; 32]) } }));
            assert_eq!(r.status, 200, "round {round}: {}", String::from_utf8_lossy(&r.body));
        }
    }
    let files: Vec<String> = std::fs::read_dir(d.keys_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("raced"))
        .collect();
    assert_eq!(files.len(), 6, "{files:?}");
}

#[test]
fn a_handle_does_not_outlive_its_key_deleted_and_made_again() {
    let tpm = Swtpm::start();
    let d = Daemon::start(&tpm);
    let old = create_key(&d, "recreated", "derive,sign");
    let old_derived = derive(&d, &old, b"module:1:primary");
    assert_eq!(sign_status(&d, &old_derived).0, 200);
    assert_eq!(d.keyd_delete("/key", &json!({ "keyHandle": old })).status, 204);
    let new = create_key(&d, "recreated", "derive,sign");
    for stale in [&old, &old_derived] {
        let (status, message) = sign_status(&d, stale);
        assert_eq!(status, 400, "{message}");
        assert!(message.contains("the key \"recreated\" this handle was issued for") && message.contains(STALE), "{message}");
    }
    // Deleting with the stale handle does not delete the new key.
    assert_eq!(d.keyd_delete("/key", &json!({ "keyHandle": old })).status, 400);
    assert_eq!(sign_status(&d, &new).0, 200);
    assert_eq!(sign_status(&d, &derive(&d, &new, b"module:1:primary")).0, 200);
}

#[test]
fn an_import_or_a_move_over_a_key_retires_the_handles_to_what_was_there() {
    let tpm = Swtpm::start();
    let d = Daemon::start(&tpm);
    let before = import_key(&d, "imported", &[1; 32], "sign");
    let after = import_key(&d, "imported", &[2; 32], "sign");
    assert_eq!(sign_status(&d, &before).0, 400);
    assert_eq!(sign_status(&d, &after).0, 200);

    let ecdsa = |d: &Daemon, h: &str| {
        let body = json!({ "keyHandle": h, "algorithm": "ECDSA", "parameters": { "digest": b64(&[5; 32]) } });
        d.keyd_post("/sign", &body).status
    };
    let target_before = create_key_pair(&d, "cert-key", Some("ec-p256"));
    create_key_pair(&d, "cert-key-next", Some("ec-p256"));
    let r = d.keyd_post("/keypair/cert-key", &json!({ "from": "cert-key-next" }));
    assert_eq!(r.status, 204, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(ecdsa(&d, &target_before), 400, "a handle to the key that was replaced by the move");
    let moved = handle(&ok(&d, d.keyd_get("/keypair/cert-key")));
    assert_eq!(ecdsa(&d, &moved), 200);
    // Handles keep working across a restart (the instance is in the key's file).
    let mut d = d;
    d.restart();
    assert_eq!(ecdsa(&d, &moved), 200);
    assert_eq!(ecdsa(&d, &target_before), 400);
}
