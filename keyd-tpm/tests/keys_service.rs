//! The Keys Service API of keyd-tpm, end to end: a real swtpm per test, the daemon as a
//! process, requests over its keyd socket with testkit's plain HTTP client (or, for other
//! uids, from a forked child that dropped privileges). Split by concern under `keys_service/`.

mod common;

#[path = "keys_service/authz.rs"]
mod authz;
#[path = "keys_service/durability.rs"]
mod durability;
#[path = "keys_service/errors.rs"]
mod errors;
#[path = "keys_service/fixtures.rs"]
mod fixtures;
#[path = "keys_service/handles.rs"]
mod handles;
#[path = "keys_service/key_pairs.rs"]
mod key_pairs;
#[path = "keys_service/migration.rs"]
mod migration;
#[path = "keys_service/symmetric.rs"]
mod symmetric;

use common::Daemon;
use serde_json::{json, Value};
use testkit::http::Response;

pub fn b64(bytes: &[u8]) -> String {
    aziot_tpm_common::b64(bytes)
}

pub fn unb64(s: &str) -> Vec<u8> {
    aziot_tpm_common::from_b64(s).unwrap_or_else(|e| panic!("{s:?} is not base64: {e}"))
}

/// The JSON body of a 200, or a panic with the body and the daemon log.
pub fn ok(d: &Daemon, r: Response) -> Value {
    assert_eq!(
        r.status,
        200,
        "expected 200, got {}: {}\n{}",
        r.status,
        String::from_utf8_lossy(&r.body),
        d.log()
    );
    r.json()
}

/// Asserts status and exact `{"message"}`.
pub fn assert_error(r: &Response, status: u16, message: &str) {
    assert_eq!(
        (r.status, r.message().as_str()),
        (status, message),
        "{}",
        String::from_utf8_lossy(&r.body)
    );
}

pub fn handle(v: &Value) -> String {
    v["keyHandle"].as_str().expect("keyHandle").to_owned()
}

pub fn create_key(d: &Daemon, id: &str, usage: &str) -> String {
    handle(&ok(
        d,
        d.keyd_post(
            "/key",
            &json!({ "keyId": id, "keyBytes": null, "usage": usage }),
        ),
    ))
}

pub fn import_key(d: &Daemon, id: &str, bytes: &[u8], usage: &str) -> String {
    handle(&ok(
        d,
        d.keyd_post(
            "/key",
            &json!({ "keyId": id, "keyBytes": b64(bytes), "usage": usage }),
        ),
    ))
}

pub fn create_key_pair(d: &Daemon, id: &str, preferred: Option<&str>) -> String {
    handle(&ok(
        d,
        d.keyd_post(
            "/keypair",
            &json!({ "keyId": id, "preferredAlgorithms": preferred }),
        ),
    ))
}

pub fn sign_request(handle: &str, message: &[u8]) -> Value {
    json!({ "keyHandle": handle, "algorithm": "HMAC-SHA256", "parameters": { "message": b64(message) } })
}

pub fn sign_hmac(d: &Daemon, handle: &str, message: &[u8]) -> Vec<u8> {
    unb64(
        ok(d, d.keyd_post("/sign", &sign_request(handle, message)))["signature"]
            .as_str()
            .unwrap(),
    )
}

pub fn derive(d: &Daemon, base: &str, data: &[u8]) -> String {
    handle(&ok(
        d,
        d.keyd_post(
            "/derivedkey",
            &json!({ "baseKeyHandle": base, "derivationData": b64(data) }),
        ),
    ))
}

pub fn export(d: &Daemon, handle: &str) -> Vec<u8> {
    unb64(
        ok(
            d,
            d.keyd_post("/derivedkey/export", &json!({ "keyHandle": handle })),
        )["key"]
            .as_str()
            .unwrap(),
    )
}

pub fn parameter(d: &Daemon, handle: &str, name: &str) -> String {
    ok(
        d,
        d.keyd_post(
            &format!("/parameters/{name}"),
            &json!({ "keyHandle": handle }),
        ),
    )["value"]
        .as_str()
        .unwrap()
        .to_owned()
}

pub fn aead(handle: &str, iv: &[u8], aad: &[u8], field: &str, data: &[u8]) -> Value {
    json!({ "keyHandle": handle, "algorithm": "AEAD", "parameters": { "iv": b64(iv), "aad": b64(aad) }, field: b64(data) })
}

pub fn encrypt(d: &Daemon, handle: &str, iv: &[u8], aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
    unb64(
        ok(
            d,
            d.keyd_post("/encrypt", &aead(handle, iv, aad, "plaintext", plaintext)),
        )["ciphertext"]
            .as_str()
            .unwrap(),
    )
}

pub fn decrypt(d: &Daemon, handle: &str, iv: &[u8], aad: &[u8], ciphertext: &[u8]) -> Response {
    d.keyd_post("/decrypt", &aead(handle, iv, aad, "ciphertext", ciphertext))
}

/// ECDSA over `digest` with a key pair handle; the DER signature.
pub fn sign_ecdsa(d: &Daemon, handle: &str, digest: &[u8]) -> Vec<u8> {
    let body = json!({ "keyHandle": handle, "algorithm": "ECDSA", "parameters": { "digest": b64(digest) } });
    unb64(
        ok(d, d.keyd_post("/sign", &body))["signature"]
            .as_str()
            .unwrap(),
    )
}

/// The RSA private operation through `/encrypt` with `algorithm` RSA-PKCS1 or RSA-NO-PADDING.
pub fn rsa_private(d: &Daemon, handle: &str, algorithm: &str, input: &[u8]) -> Response {
    d.keyd_post(
        "/encrypt",
        &json!({ "keyHandle": handle, "algorithm": algorithm, "plaintext": b64(input) }),
    )
}

/// The EC public key a handle's `/parameters` describe, checked against its curve OID.
pub fn ec_public_key(d: &Daemon, handle: &str) -> openssl::ec::EcKey<openssl::pkey::Public> {
    use openssl::ec::{EcGroup, EcKey, EcPoint};
    assert_eq!(parameter(d, handle, "algorithm"), "ECDSA");
    assert_eq!(
        unb64(&parameter(d, handle, "ec-curve-oid")),
        [0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07]
    );
    let point = unb64(&parameter(d, handle, "ec-point"));
    assert_eq!(point.len(), 33, "ec-point must be the compressed SEC1 form");
    let group = EcGroup::from_curve_name(openssl::nid::Nid::X9_62_PRIME256V1).unwrap();
    let mut ctx = openssl::bn::BigNumContext::new().unwrap();
    let point = EcPoint::from_bytes(&group, &point, &mut ctx).unwrap();
    EcKey::from_public_key(&group, &point).unwrap()
}

/// The RSA public key a handle's `/parameters` describe.
pub fn rsa_public_key(d: &Daemon, handle: &str) -> openssl::rsa::Rsa<openssl::pkey::Public> {
    use openssl::bn::BigNum;
    assert_eq!(parameter(d, handle, "algorithm"), "RSA");
    let n = BigNum::from_slice(&unb64(&parameter(d, handle, "rsa-modulus"))).unwrap();
    let e = BigNum::from_slice(&unb64(&parameter(d, handle, "rsa-exponent"))).unwrap();
    openssl::rsa::Rsa::from_public_components(n, e).unwrap()
}

/// DER DigestInfo of SHA-256(message), what RSA-PKCS1 signs.
pub fn sha256_digest_info(message: &[u8]) -> Vec<u8> {
    let mut info = vec![
        0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01,
        0x05, 0x00, 0x04, 0x20,
    ];
    info.extend_from_slice(&openssl::sha::sha256(message));
    info
}

/// A small deterministic PRNG for "random order" (xorshift64*).
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed | 1)
    }

    pub fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n as u64) as usize
    }
}
