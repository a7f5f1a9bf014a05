//! Upstream's status codes and messages for what callers get wrong: api-version, bodies,
//! routes and methods, unknown keys, mechanisms that do not fit the key.

use serde_json::json;
use testkit::{http, Swtpm};

use super::common::Daemon;
use super::*;

const WRONG_MECHANISM: &str = "parameter \"mechanism\" has an invalid value\ncaused by: mechanism cannot be used with this key type";

#[test]
fn api_version_bodies_routes_and_methods() {
    let tpm = Swtpm::start();
    let d = Daemon::start(&tpm);
    let sock = d.keyd_socket();
    let raw = |method: &str, path: &str, body: Option<&str>| {
        http::request(&sock, method, path, body.map(str::as_bytes)).unwrap()
    };

    assert_error(
        &raw("GET", "/key/x", None),
        400,
        "api-version not specified",
    );
    assert_error(
        &raw("GET", "/key/x?api-version=2099-01-01", None),
        400,
        "invalid api-version \"2099-01-01\"",
    );
    // Both versions are served.
    let body = r#"{"keyId":"v","keyBytes":null,"usage":"sign"}"#;
    assert_eq!(
        raw("POST", "/key?api-version=2020-09-01", Some(body)).status,
        200
    );
    assert_eq!(
        raw("POST", "/key?api-version=2021-05-01", Some(body)).status,
        200
    );

    assert_eq!(
        raw("POST", "/key?api-version=2021-05-01", Some("{not json")).status,
        422
    );
    let r = d.keyd_post("/key", &json!({ "keyId": "k" }));
    assert_eq!(r.status, 422);
    assert!(r.message().contains("usage"), "{}", r.message());
    for usage in ["", "sign,verify"] {
        assert_eq!(
            d.keyd_post("/key", &json!({ "keyId": "k", "usage": usage }))
                .status,
            422,
            "{usage:?}"
        );
    }
    assert_eq!(
        d.keyd_post(
            "/sign",
            &json!({ "keyHandle": "h", "algorithm": "RSA-PSS" })
        )
        .status,
        422
    );
    assert_error(&d.keyd("POST", "/sign", None), 400, "missing request body");

    assert_error(&d.keyd_get("/nope"), 404, "not found");
    assert_error(&d.keyd_get("/key/"), 404, "not found");
    assert_error(&d.keyd_get("/sign"), 400, "method not allowed");
    assert_error(
        &d.keyd("PUT", "/key", Some(&json!({}))),
        400,
        "method not allowed",
    );
    assert_error(
        &d.keyd("DELETE", "/key/x", Some(&json!({}))),
        400,
        "method not allowed",
    );
}

#[test]
fn unknown_keys_wrong_kinds_and_reserved_ids() {
    let tpm = Swtpm::start();
    let d = Daemon::start(&tpm);
    assert_error(
        &d.keyd_get("/key/missing"),
        400,
        "a parameter has an invalid value\ncaused by: key \"missing\" does not exist",
    );
    assert_error(
        &d.keyd_get("/keypair/missing"),
        400,
        "a parameter has an invalid value\ncaused by: key pair \"missing\" does not exist",
    );
    create_key_pair(&d, "pair", None);
    create_key(&d, "sym", "sign");
    assert_eq!(d.keyd_get("/key/pair").status, 400);
    assert_eq!(d.keyd_get("/keypair/sym").status, 400);
    assert_eq!(
        d.keyd_post("/key", &json!({ "keyId": "pair", "usage": "sign" }))
            .status,
        400
    );
    assert_eq!(
        d.keyd_post("/keypair", &json!({ "keyId": "sym" })).status,
        400
    );
    // Percent-encoded ids.
    create_key(&d, "a/b c", "sign");
    assert_eq!(d.keyd_get("/key/a%2Fb%20c").status, 200);

    let reserved = "parameter \"id\" has an invalid value\ncaused by: \"handle-validation-key\" is reserved for the key that signs key handles";
    assert_error(&d.keyd_get("/key/handle-validation-key"), 400, reserved);
    let r = d.keyd_post(
        "/key",
        &json!({ "keyId": "handle-validation-key", "keyBytes": b64(&[1; 32]), "usage": "sign" }),
    );
    assert_eq!(r.status, 400);
    assert_eq!(
        d.keyd_post("/key", &json!({ "keyId": "", "usage": "sign" }))
            .status,
        400
    );
}

#[test]
fn mechanisms_that_do_not_fit_the_key() {
    let tpm = Swtpm::start();
    let d = Daemon::start(&tpm);
    let sym = create_key(&d, "sym", "sign,derive");
    let enc = create_key(&d, "enc", "encrypt");
    let ec = create_key_pair(&d, "ec", None);
    let derived = derive(&d, &sym, b"data");
    let ecdsa = |h: &str| json!({ "keyHandle": h, "algorithm": "ECDSA", "parameters": { "digest": b64(&[1; 32]) } });
    let pkcs1 =
        |h: &str| json!({ "keyHandle": h, "algorithm": "RSA-PKCS1", "plaintext": b64(&[1; 32]) });

    assert_error(&d.keyd_post("/sign", &ecdsa(&sym)), 400, WRONG_MECHANISM);
    assert_error(
        &d.keyd_post("/sign", &ecdsa(&derived)),
        400,
        WRONG_MECHANISM,
    );
    assert_error(
        &d.keyd_post("/sign", &sign_request(&ec, b"m")),
        400,
        WRONG_MECHANISM,
    );
    assert_error(
        &d.keyd_post("/encrypt", &aead(&ec, b"iv", b"", "plaintext", b"m")),
        400,
        WRONG_MECHANISM,
    );
    assert_error(&d.keyd_post("/encrypt", &pkcs1(&sym)), 400, WRONG_MECHANISM);
    assert_error(&d.keyd_post("/encrypt", &pkcs1(&ec)), 400, WRONG_MECHANISM);
    assert_error(
        &d.keyd_post("/decrypt", &aead(&ec, b"iv", b"", "ciphertext", &[2; 20])),
        400,
        WRONG_MECHANISM,
    );
    // Usage decides the TPM objects: an encrypt-only key does not sign, a sign key does not encrypt.
    assert_error(
        &d.keyd_post("/sign", &sign_request(&enc, b"m")),
        400,
        "parameter \"mechanism\" has an invalid value\ncaused by: key \"enc\" was created with usage encrypt only; HMAC and derivation need usage sign or derive",
    );
    assert_error(
        &d.keyd_post("/encrypt", &aead(&sym, b"iv", b"", "plaintext", b"m")),
        400,
        "parameter \"mechanism\" has an invalid value\ncaused by: key \"sym\" was not created with usage encrypt",
    );
    assert_eq!(
        d.keyd_post(
            "/derivedkey",
            &json!({ "baseKeyHandle": enc, "derivationData": "AA==" })
        )
        .status,
        400
    );
    assert_eq!(
        d.keyd_post("/encrypt", &aead(&enc, b"", b"", "plaintext", b"m"))
            .status,
        400
    );
    let r = d.keyd_post(
        "/key",
        &json!({ "keyId": "short", "keyBytes": b64(&[1; 16]), "usage": "encrypt" }),
    );
    assert_eq!(r.status, 400);
    assert!(r.message().contains("must be 32 bytes"), "{}", r.message());

    // Derivation: not from a derived key or a key pair; export only derived keys.
    assert_error(
        &d.keyd_post("/derivedkey", &json!({ "baseKeyHandle": derived, "derivationData": "AA==" })),
        400,
        "parameter \"baseKeyHandle\" has an invalid value\ncaused by: a derived key cannot be derived from again",
    );
    assert_eq!(
        d.keyd_post(
            "/derivedkey",
            &json!({ "baseKeyHandle": ec, "derivationData": "AA==" })
        )
        .status,
        400
    );
    assert_error(
        &d.keyd_post("/derivedkey/export", &json!({ "keyHandle": sym })),
        400,
        "parameter \"handle\" has an invalid value\ncaused by: handle is not for a derived key",
    );
    // Parameters are for key pairs.
    assert_error(
        &d.keyd_post("/parameters/algorithm", &json!({ "keyHandle": sym })),
        400,
        "parameter \"handle\" has an invalid value\ncaused by: not a handle to a key pair",
    );
    assert_eq!(
        d.keyd_post("/parameters/unknown", &json!({ "keyHandle": ec }))
            .status,
        400
    );
}

#[test]
fn long_ids_work_up_to_the_limit_and_beyond_it_are_a_short_400() {
    let tpm = testkit::Swtpm::start();
    let d = Daemon::start(&tpm);
    for len in [180, 184, 255, 1024] {
        let id = "a".repeat(len);
        let h = create_key(&d, &id, "sign");
        assert_eq!(d.keyd_post("/sign", &sign_request(&h, b"m")).status, 200, "id of {len}");
        assert_eq!(d.keyd_get(&format!("/key/{id}")).status, 200, "load id of {len}");
    }
    // Ids that differ past the part kept in file names are different keys.
    let a = create_key(&d, &format!("{}x", "a".repeat(1000)), "sign");
    let b = create_key(&d, &format!("{}y", "a".repeat(1000)), "sign");
    assert_ne!(sign_hmac(&d, &a, b"m"), sign_hmac(&d, &b, b"m"));
    // Unknown long ids are "does not exist", not a file system error.
    let r = d.keyd_get(&format!("/key/{}", "u".repeat(900)));
    assert_eq!(r.status, 400);
    assert!(r.message().contains("does not exist"), "{}", r.message());
    // Over the limit: 400 that says so, without echoing the id or any path.
    let r = d.keyd_post("/key", &json!({ "keyId": "z".repeat(5000), "usage": "sign" }));
    assert_error(&r, 400, "parameter \"keyId\" has an invalid value\ncaused by: is 5000 bytes long; key ids are at most 1024 bytes");
}

#[test]
fn ids_that_are_not_utf8_are_refused_not_folded_into_one_key() {
    let tpm = testkit::Swtpm::start();
    let d = Daemon::start(&tpm);
    for bad in ["%FF", "%FE", "%C0", "%80abc"] {
        let r = d.keyd_get(&format!("/key/{bad}"));
        assert_eq!(r.status, 400, "{bad}");
        assert!(r.message().contains("is not UTF-8 once percent-decoded"), "{bad}: {}", r.message());
        let r = d.keyd_post(&format!("/keypair/{bad}"), &json!({ "from": "x" }));
        assert_eq!(r.status, 400, "{bad}");
    }
    // U+FFFD itself is an ordinary id.
    create_key(&d, "\u{FFFD}", "sign");
    assert_eq!(d.keyd_get("/key/%EF%BF%BD").status, 200);
}
