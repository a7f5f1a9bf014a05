//! Every body in `tests/fixtures/` is in upstream's exact shape (compact, upstream's field order).
//! Each must parse as its type and serialize back to the same bytes, so keyd-tpm accepts what
//! upstream clients send and identityd-dps sends what upstream keyd accepts.

use aziot_key_common_http::*;
use serde::{de::DeserializeOwned, Serialize};

fn fixture(name: &str) -> String {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{path}: {e}"))
        .trim_end()
        .to_owned()
}

/// Parses the fixture as `T`, checks it serializes back byte for byte, returns it.
fn round_trip<T: DeserializeOwned + Serialize>(name: &str) -> T {
    let text = fixture(name);
    let value: T = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(
        serde_json::to_string(&value).unwrap(),
        text,
        "{name} does not serialize back"
    );
    value
}

#[test]
fn create_key_requests() {
    let r: create_key_if_not_exists::Request = round_trip("create_key_generate.json");
    assert_eq!(r.id, "aziot_identityd_master_id");
    assert!(r.import_key_bytes.is_none());
    assert_eq!(r.usage, [KeyUsage::Derive, KeyUsage::Sign]);

    let r: create_key_if_not_exists::Request = round_trip("create_key_import.json");
    assert_eq!(r.import_key_bytes.unwrap().0, (0..64).collect::<Vec<u8>>());
    assert_eq!(r.usage, [KeyUsage::Sign]);

    let r: create_key_if_not_exists::Request = round_trip("create_key_encrypt.json");
    assert_eq!(r.usage, [KeyUsage::Encrypt]);
}

#[test]
fn create_key_without_usage_is_rejected_like_upstream() {
    let e =
        serde_json::from_str::<create_key_if_not_exists::Request>(r#"{"keyId":"k"}"#).unwrap_err();
    assert!(e.to_string().contains("missing field `usage`"), "{e}");
}

#[test]
fn key_pair_requests() {
    let r: create_key_pair_if_not_exists::Request = round_trip("create_key_pair_preferred.json");
    assert_eq!(r.preferred_algorithms.as_deref(), Some("rsa-2048:*"));
    let r: create_key_pair_if_not_exists::Request = round_trip("create_key_pair_default.json");
    assert_eq!(r.preferred_algorithms, None);
    let r: create_key_pair_if_not_exists::Request =
        serde_json::from_str(r#"{"keyId":"k"}"#).unwrap();
    assert_eq!(r.preferred_algorithms, None);
    let r: create_key_pair_if_not_exists::Request =
        serde_json::from_str(r#"{"keyId":"k","preferred_algorithms":"ec-p256"}"#).unwrap();
    assert_eq!(r.preferred_algorithms.as_deref(), Some("ec-p256"));

    let r: move_key_pair::Request = round_trip("move_key_pair.json");
    assert_eq!(r.from, "device-id-temp");
}

#[test]
fn handle_only_requests() {
    let _: delete::Request = round_trip("delete.json");
    let _: get_key_pair_public_parameter::Request =
        round_trip("get_key_pair_public_parameter.json");
    let _: export_derived_key::Request = round_trip("export_derived_key.json");
    let r: create_derived_key::Request = round_trip("create_derived_key.json");
    assert_eq!(r.derivation_data.0, b"edgeAgent:637:primary");
}

#[test]
fn sign_requests() {
    let r: sign::Request = round_trip("sign_hmac.json");
    assert!(matches!(r.parameters, sign::Parameters::HmacSha256 { .. }));
    let r: sign::Request = round_trip("sign_ecdsa.json");
    let sign::Parameters::Ecdsa { digest } = r.parameters else {
        panic!("not ECDSA")
    };
    assert_eq!(digest.0.len(), 32);
}

#[test]
fn encrypt_and_decrypt_requests() {
    let r: encrypt::Request = round_trip("encrypt_aead.json");
    let encrypt::Parameters::Aead { iv, aad } = r.parameters else {
        panic!("not AEAD")
    };
    assert_eq!((iv.0.len(), aad.0.as_slice()), (12, &b"edgeAgent637"[..]));
    assert_eq!(r.plaintext.0, b"module secret");

    let r: encrypt::Request = round_trip("encrypt_rsa_pkcs1.json");
    assert_eq!(r.parameters, encrypt::Parameters::RsaPkcs1);
    let r: encrypt::Request = round_trip("encrypt_rsa_no_padding.json");
    assert_eq!(r.parameters, encrypt::Parameters::RsaNoPadding);
    assert_eq!(r.plaintext.0.len(), 256);

    let r: decrypt::Request = round_trip("decrypt_aead.json");
    assert!(matches!(r.parameters, encrypt::Parameters::Aead { .. }));
}

#[test]
fn unit_mechanisms_accept_null_parameters() {
    let r: encrypt::Request = serde_json::from_str(
        r#"{"keyHandle":"h","algorithm":"RSA-PKCS1","parameters":null,"plaintext":"AA=="}"#,
    )
    .unwrap();
    assert_eq!(r.parameters, encrypt::Parameters::RsaPkcs1);
}

#[test]
fn unknown_mechanism_is_a_parse_error() {
    for body in [
        r#"{"keyHandle":"h","algorithm":"RSA-PSS","parameters":{"digest":"AA=="}}"#,
        r#"{"keyHandle":"h","algorithm":"ECDSA"}"#,
        r#"{"keyHandle":"h","parameters":{"message":"AA=="}}"#,
    ] {
        assert!(
            serde_json::from_str::<sign::Request>(body).is_err(),
            "{body}"
        );
    }
}

#[test]
fn responses() {
    let r: create_key_if_not_exists::Response = round_trip("response_key_handle.json");
    assert!(r.handle.0.starts_with("sr=") && r.handle.0.contains("&sig="));
    let _: create_key_pair_if_not_exists::Response = round_trip("response_key_handle.json");
    let _: load::Response = round_trip("response_key_handle.json");
    let _: create_derived_key::Response = round_trip("response_key_handle.json");
    let r: get_key_pair_public_parameter::Response = round_trip("response_value.json");
    assert_eq!(r.value, "ECDSA");
    let _: export_derived_key::Response = round_trip("response_export.json");
    let _: sign::Response = round_trip("response_sign.json");
    let _: encrypt::Response = round_trip("response_encrypt.json");
    let _: decrypt::Response = round_trip("response_decrypt.json");
    let e: ErrorBody = round_trip("response_error.json");
    assert!(e.message.starts_with("parameter \"handle\""));
}
