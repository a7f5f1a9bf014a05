//! Shared Access Signature tokens for DPS (`skn=registration`) and IoT Hub, built the way upstream
//! identityd builds them so the cloud sees the same bytes: the audience lower-cased and
//! percent-encoded with `/` and `:` left readable, string-to-sign `"{sr}\n{expiry}"`, the
//! signature base64 and form-encoded. The HMAC itself happens in the TPM (`sign_with_auth_key`);
//! this module only shapes the text. Unlike upstream, callers mint a fresh token for every request,
//! so a slow registration never sends an expired one.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use percent_encoding::{utf8_percent_encode, AsciiSet, CONTROLS, NON_ALPHANUMERIC};

/// Upstream's path-segment set plus `=`; `/` and `:` stay literal.
const RESOURCE_ENCODE: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'<')
    .add(b'>')
    .add(b'`')
    .add(b'?')
    .add(b'{')
    .add(b'}')
    .add(b'%')
    .add(b'=');

/// The key name DPS expects on registration tokens.
pub const DPS_KEY_NAME: &str = "registration";

/// What to sign for one token, and how to finish it once signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsigned {
    resource_uri: String,
    expiry: u64,
    key_name: Option<&'static str>,
}

impl Unsigned {
    /// A token for `audience` (e.g. `{scope}/registrations/{id}` or `{hub}/devices/{device}`)
    /// valid for `lifetime` from `now`.
    pub fn new(
        audience: &str,
        now: SystemTime,
        lifetime: Duration,
        key_name: Option<&'static str>,
    ) -> Self {
        let until = now.duration_since(UNIX_EPOCH).unwrap_or_default() + lifetime;
        // Rounded up, so the token is valid for the whole lifetime.
        let expiry = until.as_secs() + u64::from(until.subsec_nanos() > 0);
        Unsigned {
            resource_uri: utf8_percent_encode(&audience.to_lowercase(), RESOURCE_ENCODE)
                .to_string(),
            expiry,
            key_name,
        }
    }

    /// The bytes the HMAC is computed over.
    pub fn string_to_sign(&self) -> String {
        format!("{}\n{}", self.resource_uri, self.expiry)
    }

    /// The `Authorization` header value, given the HMAC-SHA256 of [`string_to_sign`].
    ///
    /// [`string_to_sign`]: Unsigned::string_to_sign
    pub fn finish(&self, signature: &[u8]) -> String {
        let sig = data_encoding::BASE64.encode(signature);
        let sig = utf8_percent_encode(&sig, NON_ALPHANUMERIC);
        let mut token = format!(
            "SharedAccessSignature sr={}&sig={sig}&se={}",
            self.resource_uri, self.expiry
        );
        if let Some(skn) = self.key_name {
            token.push_str("&skn=");
            token.push_str(skn);
        }
        token
    }

    pub fn expiry(&self) -> u64 {
        self.expiry
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn dps_token_matches_upstream_shape() {
        let t = Unsigned::new(
            "0ne00000001/registrations/MyDevice",
            at(1_000),
            Duration::from_secs(30),
            Some(DPS_KEY_NAME),
        );
        assert_eq!(
            t.string_to_sign(),
            "0ne00000001/registrations/mydevice\n1030"
        );
        let header = t.finish(&[0xfb, 0xff, 0xfe]);
        assert_eq!(
            header,
            "SharedAccessSignature sr=0ne00000001/registrations/mydevice&sig=%2B%2F%2F%2B&se=1030&skn=registration"
        );
    }

    #[test]
    fn hub_token_keeps_colon_and_slash_and_encodes_equals() {
        let t = Unsigned::new(
            "127.0.0.1:8443/devices/dev=1",
            at(0),
            Duration::from_secs(300),
            None,
        );
        assert_eq!(t.string_to_sign(), "127.0.0.1:8443/devices/dev%3D1\n300");
        assert!(!t.finish(b"x").contains("skn="));
    }

    #[test]
    fn tokens_made_later_expire_later() {
        let a = Unsigned::new("a/b", at(100), Duration::from_secs(60), None);
        let b = Unsigned::new("a/b", at(130), Duration::from_secs(60), None);
        assert_eq!(b.expiry() - a.expiry(), 30);
    }
}
