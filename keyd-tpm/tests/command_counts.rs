//! How many TPM commands each request costs, counted on the bus (testkit's tap records every
//! connection, so the session channel's and the sequence context's commands count too). A
//! request that sends a command it does not need fails here; each assertion names the commands
//! the request is expected to send.

mod common;

use common::{blob_for, hmac_sha256, Daemon};
use serde_json::json;
use testkit::{BusTap, Swtpm};

const KEY_A: [u8; 32] = [3; 32];
const KEY_B: [u8; 32] = [5; 32];

/// The names of the commands `request` sent, in order.
fn sent(tap: &BusTap, request: impl FnOnce()) -> Vec<String> {
    tap.clear();
    request();
    tap.commands().iter().map(|(c, _)| c.name().trim_start_matches("TPM2_").to_owned()).collect()
}

fn count(names: &[String], name: &str) -> usize {
    names.iter().filter(|n| *n == name).count()
}

fn daemon_on_tap() -> (Swtpm, BusTap, Daemon) {
    let tpm = Swtpm::start();
    let tap = BusTap::start(&tpm);
    let mut d = Daemon::start_with_result(&tpm, "");
    d.tcti = tap.tcti();
    d.spawn().expect("keyd-tpm did not start");
    (tpm, tap, d)
}

/// HMAC_Start, one SequenceUpdate per full 1024-byte buffer but the last, SequenceComplete.
const SEQUENCE_4K: [&str; 5] = ["HMAC_Start", "SequenceUpdate", "SequenceUpdate", "SequenceUpdate", "SequenceComplete"];

#[test]
fn tpmd_requests_send_only_the_commands_they_need() {
    let (mut tpm, tap, d) = daemon_on_tap();
    let blob_a = blob_for(&d, &KEY_A);
    let blob_b = blob_for(&d, &KEY_B);
    let short = b"x".repeat(64);
    let long = vec![1u8; 4096];
    let sign = |data: &[u8], key: &[u8]| sent(&tap, || assert_eq!(d.sign_ok(data), hmac_sha256(key, data)));

    // Credential and import; the new key loaded once, proven, persisted from that load and
    // flushed. No lookups of what the TPM just said: the key's name came with the Load.
    let import = sent(&tap, || assert_eq!(d.import(&blob_a).status, 200, "{}", d.log()));
    assert_eq!(
        import,
        ["StartAuthSession", "PolicySecret", "ActivateCredential", "Import", "Load", "HMAC", "EvictControl", "FlushContext"],
        "import_auth_key (first key)"
    );

    assert_eq!(sign(&short, &KEY_A), ["HMAC"], "sign 64 B");
    // The sequence context reads the auth key's handle once, then keeps it.
    assert_eq!(sign(&long, &KEY_A), [&["ReadPublic"][..], &SEQUENCE_4K].concat(), "sign 4 KiB, first");
    assert_eq!(sign(&long, &KEY_A), SEQUENCE_4K, "sign 4 KiB, warm");
    assert_eq!(sign(&long, &KEY_A), SEQUENCE_4K, "sign 4 KiB, warm");

    // Replacing a key evicts the old one by the name the daemon already knows.
    let replace = sent(&tap, || assert_eq!(d.import(&blob_b).status, 200, "{}", d.log()));
    assert_eq!(
        replace,
        ["StartAuthSession", "PolicySecret", "ActivateCredential", "Import", "Load", "HMAC", "EvictControl", "EvictControl", "FlushContext"],
        "import_auth_key (replacing a key)"
    );
    // The sequence context forgot the old key's handle and reads the new one.
    assert_eq!(sign(&long, &KEY_B), [&["ReadPublic"][..], &SEQUENCE_4K].concat(), "sign 4 KiB after a swap");
    assert_eq!(sign(&long, &KEY_B), SEQUENCE_4K, "sign 4 KiB after a swap, warm");
    assert_eq!(sign(&short, &KEY_B), ["HMAC"], "sign 64 B after a swap");

    let restore = sent(&tap, || assert_eq!(d.post("/restore_auth_key", &json!({})).status, 200, "{}", d.log()));
    assert_eq!(restore, ["Load", "HMAC", "EvictControl", "EvictControl", "FlushContext"], "restore_auth_key");
    assert_eq!(sign(&long, &KEY_A), [&["ReadPublic"][..], &SEQUENCE_4K].concat(), "sign 4 KiB after a restore");
    assert_eq!(sign(&short, &KEY_A), ["HMAC"], "sign 64 B after a restore");

    // A TPM restart reopens everything: the right key still signs, and the warm path is back.
    tpm.restart();
    assert_eq!(d.sign_ok(&long), hmac_sha256(&KEY_A, &long), "{}", d.log());
    assert_eq!(sign(&long, &KEY_A), SEQUENCE_4K, "sign 4 KiB after a TPM restart, warm");
}

#[test]
fn keyd_requests_send_only_the_commands_they_need() {
    let (_tpm, tap, d) = daemon_on_tap();
    let create = |id: &str, usage: &str| {
        let r = d.keyd_post("/key", &json!({"keyId": id, "keyBytes": null, "usage": usage}));
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        r.json()["keyHandle"].as_str().unwrap().to_owned()
    };
    let hmac_key = create("k1", "sign");
    let sign = || {
        let body = json!({"keyHandle": hmac_key, "algorithm": "HMAC-SHA256", "parameters": {"message": "AAAA"}});
        let r = d.keyd_post("/sign", &body);
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    };
    assert_eq!(sent(&tap, sign), ["Load", "HMAC"], "HMAC sign, first (the key loaded once)");
    assert_eq!(sent(&tap, sign), ["HMAC"], "HMAC sign, hot key");

    let aes_key = create("a1", "encrypt");
    let encrypt = || {
        let body = json!({ "keyHandle": aes_key, "algorithm": "AEAD", "parameters": { "iv": "MDEyMzQ1Njc4OWFi", "aad": "YWFk" }, "plaintext": "cA==" });
        let r = d.keyd_post("/encrypt", &body);
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    };
    let first = sent(&tap, encrypt);
    assert_eq!(count(&first, "Unseal"), 1, "AEAD encrypt, first: {first:?}");
    assert!(first.len() <= 3, "AEAD encrypt, first: {first:?}");
    assert_eq!(sent(&tap, encrypt), ["Unseal"], "AEAD encrypt, hot key");
    // The HMAC key was pushed out for the AES key (its context saved): loaded again, once, from
    // that context.
    assert_eq!(sent(&tap, sign), ["ContextLoad", "HMAC"], "HMAC sign, key loaded again");
    assert_eq!(sent(&tap, sign), ["HMAC"], "HMAC sign, hot again");
}
