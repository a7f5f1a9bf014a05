//! Value forms upstream's config types accept beyond the obvious one.
//!
//! Upstream keeps `tcti` and the hierarchy passwords as `std::ffi::CString`, which serde reads
//! from a string *or* a sequence of byte values, and which upstream's own `config apply`
//! (`aziotctl` and `iotedge`) writes as the latter: `tcti = [115, 119, 116, ...]`. A daemon that
//! reads only strings dies on the file upstream's tool wrote. These readers take both forms and,
//! since a flattened table loses serde's key path, name the key in their own errors.

use std::fmt;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use zeroize::{Zeroize, Zeroizing};

/// Text given as a TOML string or as an array of byte values (UTF-8, no NUL, as upstream's
/// `CString` requires). `key` names the setting in errors.
pub fn text_or_bytes<'de, D: Deserializer<'de>>(
    deserializer: D,
    key: &'static str,
) -> Result<Zeroizing<String>, D::Error> {
    deserializer.deserialize_any(TextOrBytes { key })
}

struct TextOrBytes {
    key: &'static str,
}

impl TextOrBytes {
    fn finish<E: de::Error>(&self, mut bytes: Vec<u8>) -> Result<Zeroizing<String>, E> {
        if bytes.contains(&0) {
            bytes.zeroize();
            return Err(E::custom(format!(
                "`{}` contains a NUL byte, which a TPM setting cannot hold",
                self.key
            )));
        }
        match String::from_utf8(bytes) {
            Ok(s) => Ok(Zeroizing::new(s)),
            Err(e) => {
                e.into_bytes().zeroize();
                Err(E::custom(format!("`{}` is not valid UTF-8", self.key)))
            }
        }
    }
}

impl<'de> Visitor<'de> for TextOrBytes {
    type Value = Zeroizing<String>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "`{}` as a string, or as an array of byte values (0 to 255) the way `config apply` writes it",
            self.key
        )
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        self.finish(v.as_bytes().to_vec())
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        self.finish(v.into_bytes())
    }

    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Self::Value, E> {
        self.finish(v.to_vec())
    }

    fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Self::Value, E> {
        self.finish(v)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut bytes = Zeroizing::new(Vec::with_capacity(seq.size_hint().unwrap_or(0)));
        while let Some(value) = seq.next_element::<i64>()? {
            let byte = u8::try_from(value).map_err(|_| {
                de::Error::custom(format!(
                    "`{}` has {value} in its array of byte values; each must be 0 to 255",
                    self.key
                ))
            })?;
            bytes.push(byte);
        }
        self.finish(std::mem::take(&mut *bytes))
    }
}

/// `[115, 119, ...]`: how upstream's `config apply` (toml 0.5 serializing a `CString`) writes
/// `text`.
pub fn byte_array(text: &str) -> String {
    let items: Vec<String> = text.bytes().map(|b| b.to_string()).collect();
    format!("[{}]", items.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Deserialize)]
    struct T {
        #[serde(deserialize_with = "tcti")]
        tcti: Zeroizing<String>,
    }

    fn tcti<'de, D: Deserializer<'de>>(d: D) -> Result<Zeroizing<String>, D::Error> {
        text_or_bytes(d, "tcti")
    }

    fn parse(s: &str) -> Result<String, String> {
        toml::from_str::<T>(s)
            .map(|t| t.tcti.to_string())
            .map_err(|e| e.message().to_owned())
    }

    #[test]
    fn a_string_and_its_byte_array_read_the_same() {
        let text = "swtpm:host=127.0.0.1,port=2321";
        assert_eq!(parse(&format!("tcti = {:?}", text)).unwrap(), text);
        assert_eq!(parse(&format!("tcti = {}", byte_array(text))).unwrap(), text);
    }

    #[test]
    fn byte_array_is_what_upstream_writes() {
        assert_eq!(byte_array("e-pass"), "[101, 45, 112, 97, 115, 115]");
        assert_eq!(byte_array(""), "[]");
    }

    #[test]
    fn bad_values_name_the_key_and_the_problem() {
        let e = parse("tcti = [115, 300]").unwrap_err();
        assert!(e.contains("`tcti`") && e.contains("300") && e.contains("0 to 255"), "{e}");
        let e = parse("tcti = [115, 0]").unwrap_err();
        assert!(e.contains("`tcti`") && e.contains("NUL"), "{e}");
        let e = parse("tcti = [255]").unwrap_err();
        assert!(e.contains("`tcti`") && e.contains("UTF-8"), "{e}");
        let e = parse("tcti = 5").unwrap_err();
        assert!(e.contains("`tcti` as a string, or as an array of byte values"), "{e}");
        let e = parse("tcti = [\"a\"]").unwrap_err();
        assert!(e.contains("string \"a\""), "{e}");
    }
}
