//! SAS tokens as the hub SDKs make them (written here, not taken from our daemons, so a token
//! the hub accepts is checked against a second implementation).

use openssl::hash::MessageDigest;
use openssl::pkey::PKey;
use openssl::sign::Signer;
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};

pub fn hmac_sha256(key: &[u8], data: &[u8]) -> Vec<u8> {
    let key = PKey::hmac(key).expect("hmac key");
    let mut signer = Signer::new(MessageDigest::sha256(), &key).expect("signer");
    signer.update(data).expect("update");
    signer.sign_to_vec().expect("sign")
}

pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `(string to sign, token without signature)` for `audience`, valid for an hour.
pub fn unsigned(audience: &str) -> (String, String, u64) {
    let sr = utf8_percent_encode(&audience.to_lowercase(), NON_ALPHANUMERIC).to_string();
    let se = now() + 3600;
    (format!("{sr}\n{se}"), sr, se)
}

/// The token, given the HMAC of the string to sign.
pub fn assemble(sr: &str, se: u64, signature: &[u8], key_name: Option<&str>) -> String {
    let sig = utf8_percent_encode(&aziot_tpm_common::b64(signature), NON_ALPHANUMERIC).to_string();
    let skn = key_name.map(|k| format!("&skn={k}")).unwrap_or_default();
    format!("SharedAccessSignature sr={sr}&sig={sig}&se={se}{skn}")
}
