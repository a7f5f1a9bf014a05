//! Shared Access Signature tokens, the only credential DPS and IoT Hub accept here.
//!
//! A token is `SharedAccessSignature sr=<resource>&sig=<b64 HMAC>&se=<unix expiry>[&skn=<policy>]`
//! (fields in any order). The signature is HMAC-SHA256 over `"{sr}\n{se}"` *exactly as the
//! client wrote them* (so `sr` still URL-encoded), which is what every SDK and upstream identityd
//! sign. Audiences are compared after URL-decoding and lower-casing, because identityd lower-cases
//! the whole audience and SDKs differ in which characters they encode. Signatures are compared in
//! constant time (`openssl::memcmp::eq`).

use openssl::hash::MessageDigest;
use openssl::pkey::PKey;
use openssl::sign::Signer;
use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

/// Why a token was refused; the message goes back to the client in a 401.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SasError {
    #[error("no Authorization header")]
    Missing,
    #[error("Authorization is not a SharedAccessSignature token")]
    NotSas,
    #[error("SAS token has no {0} field")]
    MissingField(&'static str),
    #[error("SAS token field {field} is malformed: {reason}")]
    Malformed { field: &'static str, reason: String },
    #[error(
        "SAS token expired at {} ({} s before the emulator's clock, {}); is the device's clock behind?",
        crate::time::rfc3339(expiry * 1000),
        now.saturating_sub(*expiry),
        crate::time::rfc3339(now * 1000)
    )]
    Expired { expiry: u64, now: u64 },
    #[error("SAS token audience {got:?} does not match {want:?}")]
    Audience { got: String, want: String },
    #[error("SAS token key name {got:?} is not {want:?}")]
    KeyName { got: String, want: String },
    #[error("SAS token signature does not match")]
    Signature,
}

/// A parsed token. `sr_raw`/`se_raw` are kept as sent, because that is what was signed.
#[derive(Debug, Clone)]
pub struct SasToken {
    pub sr_raw: String,
    /// `sr` URL-decoded and lower-cased: the audience to compare.
    pub audience: String,
    pub se_raw: String,
    pub expiry: u64,
    pub signature: Vec<u8>,
    pub key_name: Option<String>,
}

impl SasToken {
    /// Parses an `Authorization` header value.
    pub fn parse(header: Option<&str>) -> Result<Self, SasError> {
        let header = header.ok_or(SasError::Missing)?.trim();
        let rest = header
            .strip_prefix("SharedAccessSignature ")
            .ok_or(SasError::NotSas)?;
        let (mut sr, mut sig, mut se, mut skn) = (None, None, None, None);
        for pair in rest.trim().split('&') {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            match k {
                "sr" => sr = Some(v),
                "sig" => sig = Some(v),
                "se" => se = Some(v),
                "skn" => skn = Some(v),
                _ => {}
            }
        }
        let sr_raw = sr.ok_or(SasError::MissingField("sr"))?;
        let sig = sig.ok_or(SasError::MissingField("sig"))?;
        let se_raw = se.ok_or(SasError::MissingField("se"))?;
        let malformed = |field, reason: String| SasError::Malformed { field, reason };
        let audience = url_decode(sr_raw)
            .map_err(|e| malformed("sr", e))?
            .to_ascii_lowercase();
        let expiry = se_raw
            .parse::<u64>()
            .map_err(|e| malformed("se", e.to_string()))?;
        let sig_b64 = url_decode(sig).map_err(|e| malformed("sig", e))?;
        let signature = data_encoding::BASE64
            .decode(sig_b64.as_bytes())
            .map_err(|e| malformed("sig", format!("not base64: {e}")))?;
        let key_name = match skn {
            Some(v) => Some(url_decode(v).map_err(|e| malformed("skn", e))?),
            None => None,
        };
        Ok(Self {
            sr_raw: sr_raw.to_owned(),
            audience,
            se_raw: se_raw.to_owned(),
            expiry,
            signature,
            key_name,
        })
    }

    /// Checks expiry against `now` and the signature against `key` (raw HMAC key bytes).
    pub fn verify(&self, key: &[u8], now: u64) -> Result<(), SasError> {
        if self.expiry <= now {
            return Err(SasError::Expired {
                expiry: self.expiry,
                now,
            });
        }
        let expected = hmac_sha256(key, format!("{}\n{}", self.sr_raw, self.se_raw).as_bytes())
            .map_err(|_| SasError::Signature)?;
        if expected.len() == self.signature.len() && openssl::memcmp::eq(&expected, &self.signature)
        {
            Ok(())
        } else {
            Err(SasError::Signature)
        }
    }

    /// Requires the audience to be exactly `want` (compared lower-cased).
    pub fn require_audience(&self, want: &str) -> Result<(), SasError> {
        let want = want.to_ascii_lowercase();
        if self.audience.trim_end_matches('/') == want {
            Ok(())
        } else {
            Err(SasError::Audience {
                got: self.audience.clone(),
                want,
            })
        }
    }

    /// Requires the `skn` field to be `want`.
    pub fn require_key_name(&self, want: &str) -> Result<(), SasError> {
        match &self.key_name {
            Some(k) if k == want => Ok(()),
            other => Err(SasError::KeyName {
                got: other.clone().unwrap_or_default(),
                want: want.to_owned(),
            }),
        }
    }
}

/// HMAC-SHA256. OpenSSL refuses only degenerate keys (e.g. empty), which then verify nothing.
pub fn hmac_sha256(key: &[u8], data: &[u8]) -> Result<Vec<u8>, openssl::error::ErrorStack> {
    let pkey = PKey::hmac(key)?;
    let mut signer = Signer::new(MessageDigest::sha256(), &pkey)?;
    signer.update(data)?;
    signer.sign_to_vec()
}

/// Characters left unencoded in `sr`, as identityd does (`/` and `:` stay readable).
const SR_ENCODE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'/')
    .remove(b':');

/// Builds a token for `audience` (lower-cased and URL-encoded the way identityd does), signed with
/// `key`, valid until `expiry`. Used by the docs' examples, the tests and the emulator's own
/// connection strings.
pub fn make_token(audience: &str, key: &[u8], expiry: u64, key_name: Option<&str>) -> String {
    let sr = utf8_percent_encode(&audience.to_ascii_lowercase(), SR_ENCODE).to_string();
    let sig = hmac_sha256(key, format!("{sr}\n{expiry}").as_bytes()).unwrap_or_default();
    let sig =
        utf8_percent_encode(&data_encoding::BASE64.encode(&sig), NON_ALPHANUMERIC).to_string();
    let mut token = format!("SharedAccessSignature sr={sr}&sig={sig}&se={expiry}");
    if let Some(skn) = key_name {
        token.push_str("&skn=");
        token.push_str(skn);
    }
    token
}

/// Percent-decoding without form semantics: a raw `+` stays `+` (base64 signatures contain it
/// and some clients do not encode it).
fn url_decode(s: &str) -> Result<String, String> {
    percent_decode_str(s)
        .decode_utf8()
        .map(|c| c.into_owned())
        .map_err(|e| format!("bad percent-encoding: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";

    #[test]
    fn made_token_verifies() {
        let t = make_token(
            "0ne00000001/registrations/Dev-1",
            KEY,
            2_000_000_000,
            Some("registration"),
        );
        let parsed = SasToken::parse(Some(&t)).unwrap();
        assert_eq!(parsed.audience, "0ne00000001/registrations/dev-1");
        assert_eq!(parsed.key_name.as_deref(), Some("registration"));
        parsed.verify(KEY, 1_900_000_000).unwrap();
        parsed
            .require_audience("0ne00000001/registrations/dev-1")
            .unwrap();
    }

    #[test]
    fn fully_encoded_sr_verifies_as_sent() {
        // The C SDK encodes '/' as %2F; the signature covers the encoded form.
        let sr = "0ne00000001%2Fregistrations%2Fdev";
        let sig = data_encoding::BASE64
            .encode(&hmac_sha256(KEY, format!("{sr}\n99").as_bytes()).unwrap());
        let header = format!(
            "SharedAccessSignature sig={}&se=99&skn=registration&sr={sr}",
            sig.replace('+', "%2B")
                .replace('/', "%2F")
                .replace('=', "%3D")
        );
        let parsed = SasToken::parse(Some(&header)).unwrap();
        parsed.verify(KEY, 1).unwrap();
        parsed
            .require_audience("0ne00000001/registrations/dev")
            .unwrap();
    }

    #[test]
    fn expired_wrong_key_and_tampered_tokens_fail() {
        let t = SasToken::parse(Some(&make_token("a/b", KEY, 100, None))).unwrap();
        assert_eq!(
            t.verify(KEY, 100),
            Err(SasError::Expired {
                expiry: 100,
                now: 100
            })
        );
        assert_eq!(t.verify(b"another key", 1), Err(SasError::Signature));
        let mut tampered = t.clone();
        tampered.signature[0] ^= 1;
        assert_eq!(tampered.verify(KEY, 1), Err(SasError::Signature));
        tampered.signature.pop();
        assert_eq!(tampered.verify(KEY, 1), Err(SasError::Signature));
    }

    #[test]
    fn malformed_headers_are_named() {
        assert_eq!(SasToken::parse(None).unwrap_err(), SasError::Missing);
        assert_eq!(
            SasToken::parse(Some("Bearer x")).unwrap_err(),
            SasError::NotSas
        );
        assert_eq!(
            SasToken::parse(Some("SharedAccessSignature sr=a&se=1")).unwrap_err(),
            SasError::MissingField("sig")
        );
        assert!(matches!(
            SasToken::parse(Some("SharedAccessSignature sr=a&sig=AA%3D%3D&se=soon")).unwrap_err(),
            SasError::Malformed { field: "se", .. }
        ));
    }
}
