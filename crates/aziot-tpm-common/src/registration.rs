/// The DPS registration ID of a TPM device: lowercase RFC 4648 base32, without padding, of
/// SHA-256 over the EK's marshalled `TPM2B_PUBLIC` (its 2-byte size prefix included). This is
/// what the C and Java device SDKs compute, and what an individual enrollment must carry.
pub fn registration_id(ek_tpm2b_public: &[u8]) -> String {
    let digest = openssl::sha::sha256(ek_tpm2b_public);
    data_encoding::BASE32_NOPAD.encode(&digest).to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registration_id_is_52_lowercase_base32_chars() {
        let id = registration_id(b"any ek bytes");
        assert_eq!(id.len(), 52);
        assert!(id.chars().all(|c| c.is_ascii_lowercase() || ('2'..='7').contains(&c)));
    }

    /// A real TPM's EK and the registration ID the C device SDK derived from it, as published in
    /// Azure/azure-iot-sdk-c issue 2286.
    #[test]
    fn registration_id_matches_the_device_sdk_for_a_published_ek() {
        let ek = crate::from_b64(concat!(
            "AToAAQALAAMAsgAgg3GXZ0SEs/gakMyNRqXXJP1S124GUgtk8qHaGzMUaaoABgCAAEMAEAgAAAAAAAEAtKEADl/s",
            "NRgmYAjP6gXmbccRaJoTnVixisUaek0OwAzFGN70xt9ZOYp6fhIwfcft3fdVKOrKpXYcTe72CGNkGJGlQz5ti9n2",
            "pQ0uJhcX8aefh4Onm7lVlUCQAVp1K0r6zI8vkEXWsBIvwvxk0eMJbFaq146kbTkJHIGczb89RkFH2TX+CgXeZOG9",
            "oXQzUNwktmTUacspamune5Wywc/ce8HsDFYchyUHogFhrZ/LPnzyTDXO8sSC5z5dvsUBtUME3iRYDyKgZOfBtmRM",
            "qQewD+4iH+ZEJjtsyJiWR8hFhyKROnOuqXfNFwjd5IcNU4wtlKO0cLyXmTOfQK6Da1pr5Q==",
        ))
        .unwrap();
        assert_eq!(ek.len(), 316);
        assert_eq!(registration_id(&ek), "y5wivfciikcievvnsbpkhzcahwm4chuzx6v4hnqnlqfs3fjf6rxa");
    }

    #[test]
    fn registration_id_of_empty_input_is_base32_of_sha256_of_nothing() {
        // SHA-256("") = e3b0c442..., whose base32 (RFC 4648) starts with "4oymiquy".
        assert_eq!(
            registration_id(b""),
            "4oymiquy7qobjgx36tejs35zeqt24qpemsnzgtfeswmrw6csxbkq"
        );
    }
}
