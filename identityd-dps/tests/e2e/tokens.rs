//! SAS tokens and connection strings, written independently of identityd-dps's own code so the
//! tests check it against a second implementation.

pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

pub fn enc(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

pub fn hmac_sha256(key: &[u8], data: &[u8]) -> Vec<u8> {
    use openssl::{hash::MessageDigest, pkey::PKey, sign::Signer};
    let key = PKey::hmac(key).unwrap();
    let mut signer = Signer::new(MessageDigest::sha256(), &key).unwrap();
    signer.update(data).unwrap();
    signer.sign_to_vec().unwrap()
}

/// (HostName, SharedAccessKeyName, key bytes) of a connection string.
pub fn parse_connection_string(cs: &str) -> (String, String, Vec<u8>) {
    let field = |name: &str| {
        cs.split(';')
            .find_map(|p| p.strip_prefix(&format!("{name}=")))
            .unwrap_or_else(|| panic!("{name} missing in {cs}"))
            .to_owned()
    };
    let key = aziot_tpm_common::from_b64(&field("SharedAccessKey")).unwrap();
    (field("HostName"), field("SharedAccessKeyName"), key)
}

pub fn owner_token(host: &str, key_name: &str, key: &[u8]) -> String {
    let sr = enc(&host.to_lowercase());
    let se = now() + 3600;
    let sig = hmac_sha256(key, format!("{sr}\n{se}").as_bytes());
    format!(
        "SharedAccessSignature sr={sr}&sig={}&se={se}&skn={key_name}",
        enc(&aziot_tpm_common::b64(&sig))
    )
}
