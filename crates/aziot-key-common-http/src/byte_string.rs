//! Byte fields: standard base64 with padding on the wire, as upstream's
//! `http_common::ByteString`. Decoding also takes unpadded input, as upstream's decoder
//! (base64 0.13) does; [`decode_base64`] is that one rule, for every API's byte fields.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[derive(Clone, Default, PartialEq, Eq)]
pub struct ByteString(pub Vec<u8>);

impl ByteString {
    pub fn into_inner(self) -> Vec<u8> {
        self.0
    }
}

impl From<Vec<u8>> for ByteString {
    fn from(bytes: Vec<u8>) -> Self {
        ByteString(bytes)
    }
}

impl From<&[u8]> for ByteString {
    fn from(bytes: &[u8]) -> Self {
        ByteString(bytes.to_vec())
    }
}

impl AsRef<[u8]> for ByteString {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

/// Only the length: byte fields carry key bytes and plaintexts.
impl fmt::Debug for ByteString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ByteString({} bytes)", self.0.len())
    }
}

impl Serialize for ByteString {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&data_encoding::BASE64.encode(&self.0))
    }
}

impl<'de> Deserialize<'de> for ByteString {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        decode_base64(&s).map(ByteString).map_err(|e| {
            serde::de::Error::custom(format!(
                "invalid base64 ({e}); byte fields are standard base64"
            ))
        })
    }
}

/// Standard base64, padding optional (trailing bits must be zero, as upstream's decoder wants).
pub fn decode_base64(s: &str) -> Result<Vec<u8>, data_encoding::DecodeError> {
    data_encoding::BASE64.decode(s.as_bytes()).or_else(|e| {
        data_encoding::BASE64_NOPAD
            .decode(s.as_bytes())
            .map_err(|_| e)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_base64_with_padding() {
        let b = ByteString(b"ab".to_vec());
        assert_eq!(serde_json::to_string(&b).unwrap(), r#""YWI=""#);
        assert_eq!(serde_json::from_str::<ByteString>(r#""YWI=""#).unwrap(), b);
        assert_eq!(serde_json::from_str::<ByteString>(r#""YWI""#).unwrap(), b);
        assert_eq!(
            serde_json::from_str::<ByteString>(r#""""#).unwrap(),
            ByteString(vec![])
        );
    }

    #[test]
    fn invalid_base64_is_a_serde_error() {
        let e = serde_json::from_str::<ByteString>(r#""@@@""#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("invalid base64"), "{e}");
    }

    #[test]
    fn debug_hides_the_bytes() {
        assert_eq!(
            format!("{:?}", ByteString(vec![1, 2, 3])),
            "ByteString(3 bytes)"
        );
    }
}
