//! Keys made before a fuzz run, whose handles the fuzzer never sees: after the run each must
//! still exist and give the same results, or it counts as lost.

use serde_json::{json, Value};

use super::api::{AUTH_KEY, WITNESS_KEY, WITNESS_PAIR};
use super::common::hmac_sha256;

/// A request to the service under test: (method, path without api-version, body) → (status,
/// JSON body or Null).
pub type Call<'a> = &'a dyn Fn(&str, &str, Option<Value>) -> (u16, Value);

const KEY_BYTES: &[u8] = b"fuzz-witness-hmac-key-bytes-0001";
const PROBE: &[u8] = b"still here?";

pub struct Witness {
    key_handle: String,
    pair_handle: String,
    ec_point: Value,
}

fn handle(call: Call, method: &str, path: &str, body: Option<Value>) -> String {
    let (status, v) = call(method, path, body);
    assert_eq!(status, 200, "{method} {path}: {v}");
    v["keyHandle"].as_str().expect("keyHandle").to_owned()
}

impl Witness {
    /// Creates the witness keys through the Keys Service.
    pub fn create(keyd: Call) -> Self {
        let key_handle = handle(
            keyd,
            "POST",
            "/key",
            Some(json!({ "keyId": WITNESS_KEY, "keyBytes": b64(KEY_BYTES), "usage": "sign" })),
        );
        let pair_handle = handle(
            keyd,
            "POST",
            "/keypair",
            Some(json!({ "keyId": WITNESS_PAIR, "preferredAlgorithms": "ec-p256" })),
        );
        let (status, v) = keyd(
            "POST",
            "/parameters/ec-point",
            Some(json!({ "keyHandle": pair_handle })),
        );
        assert_eq!(status, 200, "{v}");
        Witness {
            key_handle,
            pair_handle,
            ec_point: v["value"].clone(),
        }
    }

    /// What of the witnesses no longer works, one line each.
    pub fn lost(&self, keyd: Call) -> Vec<String> {
        let mut lost = Vec::new();
        let expected = b64(&hmac_sha256(KEY_BYTES, PROBE));
        for (how, key_handle) in [
            ("the handle from before", Some(self.key_handle.clone())),
            ("a fresh handle", fresh(keyd, "/key", WITNESS_KEY)),
        ] {
            let Some(h) = key_handle else {
                lost.push(format!("{WITNESS_KEY}: GET /key/{WITNESS_KEY} no longer gives a handle"));
                continue;
            };
            let (status, v) = keyd(
                "POST",
                "/sign",
                Some(json!({ "keyHandle": h, "algorithm": "HMAC-SHA256", "parameters": { "message": b64(PROBE) } })),
            );
            if status != 200 || v["signature"] != expected {
                lost.push(format!("{WITNESS_KEY} with {how}: sign gave {status} {v}, expected {expected}"));
            }
        }
        for (how, pair_handle) in [
            ("the handle from before", Some(self.pair_handle.clone())),
            ("a fresh handle", fresh(keyd, "/keypair", WITNESS_PAIR)),
        ] {
            let Some(h) = pair_handle else {
                lost.push(format!("{WITNESS_PAIR}: GET /keypair/{WITNESS_PAIR} no longer gives a handle"));
                continue;
            };
            let (status, v) = keyd("POST", "/parameters/ec-point", Some(json!({ "keyHandle": h })));
            if status != 200 || v["value"] != self.ec_point {
                lost.push(format!("{WITNESS_PAIR} with {how}: ec-point {status} {v}, was {}", self.ec_point));
            }
            let (status, v) = keyd(
                "POST",
                "/sign",
                Some(json!({ "keyHandle": h, "algorithm": "ECDSA", "parameters": { "digest": b64(&[9; 32]) } })),
            );
            if status != 200 {
                lost.push(format!("{WITNESS_PAIR} with {how}: ECDSA sign gave {status} {v}"));
            }
        }
        lost
    }
}

fn fresh(keyd: Call, route: &str, id: &str) -> Option<String> {
    let (status, v) = keyd("GET", &format!("{route}/{id}"), None);
    (status == 200).then(|| v["keyHandle"].as_str().map(str::to_owned)).flatten()
}

/// Whether the DPS auth key still signs as [`AUTH_KEY`] (every blob the fuzzer sends carries
/// that key, so even one that imports changes nothing).
pub fn auth_key_lost(tpmd: Call) -> Option<String> {
    let (status, v) = tpmd("POST", "/sign_with_auth_key", Some(json!({ "data": b64(PROBE) })));
    let expected = b64(&hmac_sha256(AUTH_KEY, PROBE));
    (status != 200 || v["digest"] != expected)
        .then(|| format!("auth key: sign_with_auth_key gave {status} {v}, expected {expected}"))
}

pub fn b64(bytes: &[u8]) -> String {
    aziot_tpm_common::b64(bytes)
}
