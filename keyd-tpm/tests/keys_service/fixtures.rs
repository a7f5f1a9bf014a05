//! Request bodies in upstream's exact shape (the wire-types crate's fixtures, as upstream's
//! clients send them) are accepted, with the fixture handles swapped for real ones.

use serde_json::{json, Value};
use testkit::Swtpm;

use super::common::Daemon;
use super::*;

fn fixture(name: &str) -> Value {
    let path = format!(
        "{}/../crates/aziot-key-common-http/tests/fixtures/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}")))
        .unwrap()
}

/// The fixture with its handle fields replaced.
fn with_handle(name: &str, field: &str, handle: &str) -> Value {
    let mut v = fixture(name);
    v[field] = json!(handle);
    v
}

fn send(d: &Daemon, method: &str, path: &str, body: &Value, status: u16) -> Value {
    let r = d.keyd(method, path, Some(body));
    assert_eq!(
        r.status,
        status,
        "{method} {path} {body}: {}",
        String::from_utf8_lossy(&r.body)
    );
    if r.body.is_empty() {
        Value::Null
    } else {
        r.json()
    }
}

/// The keys of a response object, sorted.
fn keys_of(v: &Value) -> Vec<&str> {
    let mut k: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    k.sort_unstable();
    k
}

#[test]
fn upstream_request_fixtures_are_accepted() {
    let tpm = Swtpm::start();
    let d = Daemon::start(&tpm);

    let master = send(
        &d,
        "POST",
        "/key",
        &fixture("create_key_generate.json"),
        200,
    );
    assert_eq!(keys_of(&master), ["keyHandle"]);
    let master = handle(&master);
    let enc = handle(&send(
        &d,
        "POST",
        "/key",
        &fixture("create_key_encrypt.json"),
        200,
    ));
    let rsa = handle(&send(
        &d,
        "POST",
        "/keypair",
        &fixture("create_key_pair_preferred.json"),
        200,
    ));
    assert_eq!(parameter(&d, &rsa, "algorithm"), "RSA");
    let temp = handle(&send(
        &d,
        "POST",
        "/keypair",
        &fixture("create_key_pair_default.json"),
        200,
    ));
    assert_eq!(parameter(&d, &temp, "algorithm"), "ECDSA");
    send(
        &d,
        "POST",
        "/keypair/device-id",
        &fixture("move_key_pair.json"),
        204,
    );
    let ec = handle(&ok(&d, d.keyd_get("/keypair/device-id")));

    let value = send(
        &d,
        "POST",
        "/parameters/algorithm",
        &with_handle("get_key_pair_public_parameter.json", "keyHandle", &rsa),
        200,
    );
    assert_eq!(value, json!({ "value": "RSA" }));
    let derived = send(
        &d,
        "POST",
        "/derivedkey",
        &with_handle("create_derived_key.json", "baseKeyHandle", &master),
        200,
    );
    let derived = handle(&derived);
    let exported = send(
        &d,
        "POST",
        "/derivedkey/export",
        &with_handle("export_derived_key.json", "keyHandle", &derived),
        200,
    );
    assert_eq!(keys_of(&exported), ["key"]);
    assert_eq!(unb64(exported["key"].as_str().unwrap()).len(), 32);
    let sig = send(
        &d,
        "POST",
        "/sign",
        &with_handle("sign_hmac.json", "keyHandle", &derived),
        200,
    );
    assert_eq!(keys_of(&sig), ["signature"]);
    send(
        &d,
        "POST",
        "/sign",
        &with_handle("sign_ecdsa.json", "keyHandle", &ec),
        200,
    );
    // Import replaces the key pair `device-id` with a SAS key, as upstream's import does.
    send(&d, "POST", "/key", &fixture("create_key_import.json"), 200);
    assert_eq!(d.keyd_get("/keypair/device-id").status, 400);
    send(
        &d,
        "POST",
        "/encrypt",
        &with_handle("encrypt_rsa_pkcs1.json", "keyHandle", &rsa),
        200,
    );
    send(
        &d,
        "POST",
        "/encrypt",
        &with_handle("encrypt_rsa_no_padding.json", "keyHandle", &rsa),
        200,
    );
    let ct = send(
        &d,
        "POST",
        "/encrypt",
        &with_handle("encrypt_aead.json", "keyHandle", &enc),
        200,
    );
    assert_eq!(keys_of(&ct), ["ciphertext"]);
    let mut body = with_handle("decrypt_aead.json", "keyHandle", &enc);
    body["ciphertext"] = ct["ciphertext"].clone();
    let pt = send(&d, "POST", "/decrypt", &body, 200);
    assert_eq!(pt, json!({ "plaintext": b64(b"module secret") }));
    send(
        &d,
        "DELETE",
        "/key",
        &with_handle("delete.json", "keyHandle", &master),
        204,
    );

    // Error bodies have upstream's shape.
    let r = d.keyd_post(
        "/sign",
        &with_handle("sign_hmac.json", "keyHandle", "sr=x&sig=y"),
    );
    assert_eq!(keys_of(&r.json()), ["message"]);
}
