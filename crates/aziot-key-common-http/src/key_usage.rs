//! The `usage` field of `POST /key`: a comma-separated subset of `derive`, `encrypt`, `sign`
//! (e.g. `"derive,sign"`). Upstream's deserializer requires the field and rejects an empty
//! string or an unknown word, so a typo is a 422 rather than a key made for the wrong purpose.

use std::fmt;

use serde::{Deserialize, Deserializer, Serializer};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KeyUsage {
    Derive,
    Encrypt,
    Sign,
}

impl KeyUsage {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyUsage::Derive => "derive",
            KeyUsage::Encrypt => "encrypt",
            KeyUsage::Sign => "sign",
        }
    }

    fn parse(word: &str) -> Option<Self> {
        match word {
            "derive" => Some(KeyUsage::Derive),
            "encrypt" => Some(KeyUsage::Encrypt),
            "sign" => Some(KeyUsage::Sign),
            _ => None,
        }
    }
}

impl fmt::Display for KeyUsage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `#[serde(with = "key_usage")]` for a `Vec<KeyUsage>` field.
pub fn serialize<S: Serializer>(usage: &[KeyUsage], s: S) -> Result<S::Ok, S::Error> {
    let words: Vec<&str> = usage.iter().map(|u| u.as_str()).collect();
    s.serialize_str(&words.join(","))
}

pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<KeyUsage>, D::Error> {
    let s = String::deserialize(d)?;
    s.split(',')
        .map(|word| {
            KeyUsage::parse(word).ok_or_else(|| {
                serde::de::Error::custom(format!(
                    "invalid usage {word:?}: expected a comma-separated list of derive, encrypt, sign"
                ))
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Serialize, serde::Deserialize)]
    struct T {
        #[serde(with = "super")]
        usage: Vec<KeyUsage>,
    }

    #[test]
    fn comma_separated_words() {
        let t: T = serde_json::from_str(r#"{"usage":"derive,sign"}"#).unwrap();
        assert_eq!(t.usage, [KeyUsage::Derive, KeyUsage::Sign]);
        assert_eq!(
            serde_json::to_string(&t).unwrap(),
            r#"{"usage":"derive,sign"}"#
        );
    }

    #[test]
    fn empty_unknown_or_missing_is_rejected() {
        for body in [
            r#"{"usage":""}"#,
            r#"{"usage":"sign,verify"}"#,
            r#"{"usage":"sign, derive"}"#,
            "{}",
        ] {
            assert!(serde_json::from_str::<T>(body).is_err(), "{body}");
        }
    }
}
