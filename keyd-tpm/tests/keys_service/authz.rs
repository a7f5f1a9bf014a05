//! Authorization by caller uid: `[[principal]]` patterns on create, load and move; handles are
//! capabilities that work for any caller.

use serde_json::json;
use testkit::Swtpm;

use super::common::{hmac_sha256, Daemon};
use super::*;

const NOBODY: u32 = 65534;

#[test]
fn unauthorized_uid_gets_401_on_create_load_and_move() {
    let tpm = Swtpm::start();
    let principals = format!("[[principal]]\nuid = {NOBODY}\nkeys = [\"nobody-*\"]\n\n[[principal]]\nuid = {NOBODY}\nkeys = [\"shared?\"]\n");
    let d = Daemon::start_keyd(&tpm, &principals);
    create_key(&d, "root-key", "sign");
    create_key_pair(&d, "root-pair", None);

    let as_nobody = |method: &str, path: &str, body: Option<serde_json::Value>| {
        d.keyd_as(NOBODY, method, path, body.as_ref())
    };
    let denied = |id: &str| format!("user {NOBODY} is not authorized to access the key {id}");

    // Allowed by either of the merged principal blocks.
    assert_eq!(
        as_nobody(
            "POST",
            "/key",
            Some(json!({ "keyId": "nobody-1", "usage": "sign" }))
        )
        .status,
        200
    );
    assert_eq!(
        as_nobody(
            "POST",
            "/key",
            Some(json!({ "keyId": "shared1", "usage": "sign" }))
        )
        .status,
        200
    );
    assert_eq!(
        as_nobody("POST", "/keypair", Some(json!({ "keyId": "nobody-pair" }))).status,
        200
    );
    assert_eq!(as_nobody("GET", "/key/nobody-1", None).status, 200);

    // Create, load, move of ids outside the patterns.
    assert_error(
        &as_nobody(
            "POST",
            "/key",
            Some(json!({ "keyId": "root-key", "usage": "sign" })),
        ),
        401,
        &denied("root-key"),
    );
    assert_error(
        &as_nobody(
            "POST",
            "/key",
            Some(json!({ "keyId": "shared12", "usage": "sign" })),
        ),
        401,
        &denied("shared12"),
    );
    assert_error(
        &as_nobody("POST", "/keypair", Some(json!({ "keyId": "x" }))),
        401,
        &denied("x"),
    );
    assert_error(
        &as_nobody("GET", "/key/root-key", None),
        401,
        &denied("root-key"),
    );
    assert_error(
        &as_nobody("GET", "/keypair/root-pair", None),
        401,
        &denied("root-pair"),
    );
    assert_error(
        &as_nobody(
            "POST",
            "/keypair/nobody-2",
            Some(json!({ "from": "root-pair" })),
        ),
        401,
        &denied("root-pair"),
    );
    assert_error(
        &as_nobody(
            "POST",
            "/keypair/root-pair",
            Some(json!({ "from": "nobody-pair" })),
        ),
        401,
        &denied("root-pair"),
    );
    // Nothing was moved or replaced.
    assert_eq!(d.keyd_get("/keypair/root-pair").status, 200);
    assert_eq!(d.keyd_get("/keypair/nobody-pair").status, 200);
    // Its own move works.
    assert_eq!(
        as_nobody(
            "POST",
            "/keypair/nobody-3",
            Some(json!({ "from": "nobody-pair" }))
        )
        .status,
        204
    );
}

#[test]
fn a_derived_handle_obtained_by_one_uid_works_for_another() {
    let tpm = Swtpm::start();
    let d = Daemon::start(&tpm);
    let master = [0x77u8; 32];
    // identityd (root here) derives a module key and hands the handle to aziot-edged.
    let base = import_key(&d, "aziot_identityd_master_id", &master, "derive,sign");
    let module = derive(&d, &base, b"edgeHub:42:primary");
    let r = d.keyd_as(
        NOBODY,
        "POST",
        "/sign",
        Some(&sign_request(&module, b"sas string")),
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let expected = hmac_sha256(&hmac_sha256(&master, b"edgeHub:42:primary"), b"sas string");
    assert_eq!(unb64(r.json()["signature"].as_str().unwrap()), expected);
    // Even though that uid may not load the master key itself.
    assert_eq!(
        d.keyd_as(NOBODY, "GET", "/key/aziot_identityd_master_id", None)
            .status,
        401
    );
}
