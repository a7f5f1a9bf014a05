//! The DPS service API (what an operator uses to manage enrollments), authenticated with a
//! shared access policy's connection string the way Azure's service SDKs do it: a SAS token whose
//! audience is the lower-cased, URL-encoded DPS host name, signed with the policy key, with
//! `skn` naming the policy. Works against Azure and the local emulator alike.

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cloud_http::{Client, Method, Response};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde_json::Value;
use zeroize::Zeroizing;

use crate::Failure;

/// The service API version Azure's current SDKs use.
pub const API_VERSION: &str = "2021-10-01";

/// How long a token is valid; the SDKs use an hour too, which tolerates a skewed clock.
const TOKEN_LIFETIME: Duration = Duration::from_secs(3600);

/// `encodeURIComponent`, as the SDKs encode `sr` and `sig`.
const URI_COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'!')
    .remove(b'~')
    .remove(b'*')
    .remove(b'\'')
    .remove(b'(')
    .remove(b')');

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConnectionStringError {
    #[error("the connection string is empty")]
    Empty,
    #[error("the connection string has no {0}=...")]
    Missing(&'static str),
    #[error("the connection string's part {0:?} is not Name=Value")]
    NotAPair(String),
    #[error("the connection string's SharedAccessKey is not base64")]
    KeyNotBase64,
    #[error("this is a device connection string (it has DeviceId=), not a DPS service one")]
    DeviceConnectionString,
}

/// A parsed DPS service connection string. The key never leaves this struct except as an HMAC.
pub struct ConnectionString {
    pub host: String,
    pub key_name: String,
    key: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for ConnectionString {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectionString")
            .field("host", &self.host)
            .field("key_name", &self.key_name)
            .field("key", &"(redacted)")
            .finish()
    }
}

impl std::str::FromStr for ConnectionString {
    type Err = ConnectionStringError;

    /// `HostName=...;SharedAccessKeyName=...;SharedAccessKey=...`, parts in any order, names
    /// case-insensitive, values split at the first `=` (keys end in `=` padding).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.trim().is_empty() {
            return Err(ConnectionStringError::Empty);
        }
        let (mut host, mut key_name, mut key) = (None, None, None);
        for part in s.trim().split(';').filter(|p| !p.trim().is_empty()) {
            let (name, value) =
                part.split_once('=').ok_or_else(|| ConnectionStringError::NotAPair(redact(part)))?;
            match name.trim().to_ascii_lowercase().as_str() {
                "hostname" => host = Some(value.trim().to_owned()),
                "sharedaccesskeyname" => key_name = Some(value.trim().to_owned()),
                "sharedaccesskey" => key = Some(value.trim().to_owned()),
                "deviceid" | "moduleid" => return Err(ConnectionStringError::DeviceConnectionString),
                _ => {}
            }
        }
        let host = host.filter(|h| !h.is_empty()).ok_or(ConnectionStringError::Missing("HostName"))?;
        let key_name =
            key_name.filter(|k| !k.is_empty()).ok_or(ConnectionStringError::Missing("SharedAccessKeyName"))?;
        let key = key.filter(|k| !k.is_empty()).ok_or(ConnectionStringError::Missing("SharedAccessKey"))?;
        let key = aziot_tpm_common::from_b64(&key).map_err(|_| ConnectionStringError::KeyNotBase64)?;
        Ok(ConnectionString { host, key_name, key: Zeroizing::new(key) })
    }
}

/// A part of a connection string for an error message: its name only, never a value.
fn redact(part: &str) -> String {
    if part.len() > 24 {
        "(a long value)".into()
    } else {
        part.to_owned()
    }
}

impl ConnectionString {
    /// `SharedAccessSignature sr=..&sig=..&se=..&skn=..` for this DPS, valid until `now + lifetime`.
    pub fn token(&self, now: SystemTime) -> Result<String, Failure> {
        let expiry = (now + TOKEN_LIFETIME).duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        let sr = utf8_percent_encode(&self.host.to_lowercase(), URI_COMPONENT).to_string();
        let signature = hmac_sha256(&self.key, format!("{sr}\n{expiry}").as_bytes())
            .map_err(|e| Failure::failed(format!("cannot sign the SAS token: {e}")))?;
        let sig = utf8_percent_encode(&aziot_tpm_common::b64(&signature), URI_COMPONENT).to_string();
        let skn = utf8_percent_encode(&self.key_name, URI_COMPONENT);
        Ok(format!("SharedAccessSignature sr={sr}&sig={sig}&se={expiry}&skn={skn}"))
    }
}

fn hmac_sha256(key: &[u8], data: &[u8]) -> Result<Vec<u8>, openssl::error::ErrorStack> {
    let pkey = openssl::pkey::PKey::hmac(key)?;
    let mut signer = openssl::sign::Signer::new(openssl::hash::MessageDigest::sha256(), &pkey)?;
    signer.update(data)?;
    signer.sign_to_vec()
}

/// A DPS error body: `{"errorCode", "trackingId", "message", "timestampUtc"}`.
#[derive(Debug, Default, serde::Serialize)]
pub struct DpsError {
    pub status: u16,
    pub error_code: Option<Value>,
    pub message: String,
    pub tracking_id: Option<String>,
}

impl DpsError {
    pub fn from_response(response: &Response) -> Self {
        let body: Value = serde_json::from_slice(&response.body).unwrap_or(Value::Null);
        let text = |k: &str| body.get(k).and_then(Value::as_str).map(str::to_owned);
        DpsError {
            status: response.status.as_u16(),
            error_code: body.get("errorCode").cloned().or_else(|| response.header("x-ms-error-code").map(Value::from)),
            message: text("message").or_else(|| text("Message")).unwrap_or_else(|| response.text().trim().to_owned()),
            tracking_id: text("trackingId"),
        }
    }
}

impl std::fmt::Display for DpsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HTTP {}", self.status)?;
        if let Some(code) = &self.error_code {
            write!(f, ", errorCode {}", code.as_str().map(str::to_owned).unwrap_or_else(|| code.to_string()))?;
        }
        write!(f, ": {}", if self.message.is_empty() { "(no message)" } else { &self.message })?;
        if let Some(id) = &self.tracking_id {
            write!(f, " (trackingId {id})")?;
        }
        Ok(())
    }
}

/// The service API of one DPS instance.
pub struct DpsService {
    connection: ConnectionString,
    client: Client,
}

impl DpsService {
    /// `trust_ca`: extra CA bundles (e.g. the emulator's `ca.pem`), trusted with the system roots
    /// (which honour `SSL_CERT_FILE` and `SSL_CERT_DIR`).
    pub fn new(connection: ConnectionString, trust_ca: &[PathBuf], timeout: Duration) -> Result<Self, Failure> {
        let mut builder = Client::builder().timeout(timeout).proxy_from_env();
        for path in trust_ca {
            builder = builder.trust_ca_file(path);
        }
        let client = builder.build().map_err(|e| match e {
            cloud_http::Error::ProxyConfig { .. } => Failure::usage(e.to_string()),
            e => Failure::usage(format!("{e}; fix --trust-ca")),
        })?;
        Ok(DpsService { connection, client })
    }

    pub fn host(&self) -> &str {
        &self.connection.host
    }

    /// Sends one request to `path` (e.g. `/enrollments/{id}`) with a fresh token.
    pub async fn request(&self, method: Method, path: &str, if_match: Option<&str>, body: Option<&Value>) -> Result<Response, Failure> {
        let url = format!("https://{}{path}?api-version={API_VERSION}", self.connection.host);
        let token = self.connection.token(SystemTime::now())?;
        let mut headers = vec![("Authorization", token.as_str()), ("Accept", "application/json")];
        if body.is_some() {
            headers.push(("Content-Type", "application/json; charset=utf-8"));
        }
        if let Some(etag) = if_match {
            headers.push(("If-Match", etag));
        }
        let body = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
        self.client.request(method, &url, &headers, body).await.map_err(|e| {
            let hint = match e {
                cloud_http::Error::Tls { .. } => {
                    "; for a private CA (e.g. the emulator's ca.pem) pass --trust-ca FILE or set SSL_CERT_FILE"
                }
                cloud_http::Error::ProxyConnect { .. }
                | cloud_http::Error::ProxyAuth { .. }
                | cloud_http::Error::ProxyRefused { .. } => "",
                _ => "; check HostName in the connection string and the network",
            };
            Failure::unreachable(format!("cannot reach DPS at {}: {e}{hint}", self.connection.host))
        })
    }
}

/// Percent-encodes one path segment (a registration ID may hold `:`).
pub fn segment(s: &str) -> String {
    utf8_percent_encode(s, URI_COMPONENT).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const CS: &str = "HostName=My-Dps.azure-devices-provisioning.net;SharedAccessKeyName=provisioningserviceowner;SharedAccessKey=MDEyMzQ1Njc4OWFiY2RlZg==";

    #[test]
    fn parses_parts_in_any_order_and_keeps_key_padding() {
        let reordered = "SharedAccessKey=MDEyMzQ1Njc4OWFiY2RlZg==;hostname=h:1;SharedAccessKeyName=p;";
        let cs: ConnectionString = reordered.parse().unwrap();
        assert_eq!((cs.host.as_str(), cs.key_name.as_str()), ("h:1", "p"));
        assert_eq!(&cs.key[..], b"0123456789abcdef");
    }

    #[test]
    fn names_what_is_missing_or_wrong_without_the_key() {
        let err = |s: &str| s.parse::<ConnectionString>().unwrap_err();
        assert_eq!(err(""), ConnectionStringError::Empty);
        assert_eq!(err("HostName=h;SharedAccessKeyName=p"), ConnectionStringError::Missing("SharedAccessKey"));
        assert_eq!(err("HostName=h;SharedAccessKeyName=p;SharedAccessKey=%%%"), ConnectionStringError::KeyNotBase64);
        assert_eq!(err("HostName=h;DeviceId=d;SharedAccessKey=AAAA"), ConnectionStringError::DeviceConnectionString);
        assert_eq!(err("HostName=h;garbage"), ConnectionStringError::NotAPair("garbage".into()));
        let cs: ConnectionString = CS.parse().unwrap();
        assert!(!format!("{cs:?}").contains("MDEy"));
    }

    /// The token's shape as the service SDKs make it: `sr` is the lower-cased host, encoded as
    /// `encodeURIComponent` does; the signature covers `"{sr}\n{se}"` with the decoded key.
    #[test]
    fn token_is_signed_over_the_encoded_lowercase_host() {
        let cs: ConnectionString = "HostName=127.0.0.1:8443;SharedAccessKeyName=provisioningserviceowner;SharedAccessKey=MDEyMzQ1Njc4OWFiY2RlZg==".parse().unwrap();
        let now = UNIX_EPOCH + Duration::from_secs(1_000);
        let token = cs.token(now).unwrap_or_else(|f| panic!("{}", f.message));
        let se = 1_000 + 3600;
        let expected = hmac_sha256(b"0123456789abcdef", format!("127.0.0.1%3A8443\n{se}").as_bytes()).unwrap();
        let sig = utf8_percent_encode(&aziot_tpm_common::b64(&expected), URI_COMPONENT).to_string();
        assert_eq!(
            token,
            format!("SharedAccessSignature sr=127.0.0.1%3A8443&sig={sig}&se={se}&skn=provisioningserviceowner")
        );
        let upper: ConnectionString = CS.parse().unwrap();
        assert!(upper.token(now).unwrap_or_else(|f| panic!("{}", f.message)).contains("sr=my-dps.azure-devices-provisioning.net&"));
    }
}
