//! `[preloaded_keys]`: key ids the operator supplies as files (`id = "file:///path"`), e.g.
//! `device-id` for manual SAS provisioning or `aziot-edged-ca` for an explicit Edge CA. The
//! file stays the operator's: it is read and taken into the TPM (and proven) the first time the
//! key is used in each run, never written or removed, so replacing the file and restarting
//! replaces the key. Such keys cannot be imported over, moved or deleted through the API.
//! Upstream's other scheme, `pkcs11:`, points at a token we do not use; it is reported at start
//! and as a 400 naming the scheme.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use crate::tpm::TpmHandle;

use super::error::KeydError;
use super::files::KeysDir;
use super::material::{take_into_tpm, Material};
use super::record::StoredKey;

#[derive(Clone, Debug, PartialEq, Eq)]
enum Location {
    File(PathBuf),
    Unsupported(String),
}

pub struct Preloaded {
    keys: BTreeMap<String, Location>,
}

impl Preloaded {
    pub fn new(config: &BTreeMap<String, String>) -> Self {
        let keys = config
            .iter()
            .map(|(id, uri)| {
                let location = parse_uri(id, uri);
                if let Location::Unsupported(why) = &location {
                    log::error!("[preloaded_keys] {why}");
                }
                (id.clone(), location)
            })
            .collect();
        Self { keys }
    }

    pub fn contains(&self, id: &str) -> bool {
        self.keys.contains_key(id)
    }

    /// Key `id` made from its file, or `None` if `id` is not preloaded.
    pub async fn load(&self, tpm: &TpmHandle, id: &str) -> Result<Option<StoredKey>, KeydError> {
        let path = match self.keys.get(id) {
            None => return Ok(None),
            Some(Location::Unsupported(why)) => return Err(KeydError::invalid("id", why.clone())),
            Some(Location::File(path)) => path,
        };
        let bytes = KeysDir::read(path)?.ok_or_else(|| {
            KeydError::not_found(format!(
                "preloaded key {id:?}: {} does not exist",
                path.display()
            ))
        })?;
        let material = Material::from_file_bytes(&bytes).map_err(|reason| KeydError::Corrupt {
            path: path.clone(),
            reason,
        })?;
        drop(bytes);
        let stored = take_into_tpm(tpm, &material, path)
            .await?
            .ok_or_else(|| KeydError::NotProven {
                id: id.to_owned(),
                path: path.clone(),
            })?;
        log::info!(
            "preloaded key {id:?} taken into the TPM from {}",
            path.display()
        );
        Ok(Some(stored))
    }
}

/// `file:///abs/path`, `file://localhost/abs/path` or `file:/abs/path`, percent-decoded.
fn parse_uri(id: &str, uri: &str) -> Location {
    let unsupported = |what: &str| {
        Location::Unsupported(format!(
            "preloaded key {id:?} is at {uri:?}: {what}; keyd-tpm takes preloaded keys only from file:///absolute/path URIs"
        ))
    };
    let Some((scheme, rest)) = uri.split_once(':') else {
        return unsupported("not a URI");
    };
    if !scheme.eq_ignore_ascii_case("file") {
        return unsupported(&format!("the {scheme}: scheme is not supported (keys live in the TPM itself, not behind PKCS#11)"));
    }
    let path = match rest.strip_prefix("//") {
        Some(authority_and_path) => match authority_and_path.find('/') {
            Some(0) => authority_and_path,
            Some(i) if authority_and_path[..i].eq_ignore_ascii_case("localhost") => {
                &authority_and_path[i..]
            }
            _ => return unsupported("a file URI on another host"),
        },
        None if rest.starts_with('/') => rest,
        None => return unsupported("the path is not absolute"),
    };
    let decoded: Vec<u8> = percent_encoding::percent_decode_str(path).collect();
    Location::File(PathBuf::from(OsStr::from_bytes(&decoded)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_uris() {
        let file = |p: &str| Location::File(PathBuf::from(p));
        assert_eq!(
            parse_uri("k", "file:///var/secrets/aziot/keyd/device-id"),
            file("/var/secrets/aziot/keyd/device-id")
        );
        assert_eq!(
            parse_uri("k", "file://localhost/etc/k%20ey.pem"),
            file("/etc/k ey.pem")
        );
        assert_eq!(parse_uri("k", "FILE:/etc/k"), file("/etc/k"));
    }

    #[test]
    fn other_schemes_and_forms_name_the_problem() {
        for (uri, words) in [
            (
                "pkcs11:slot-id=0;object=device%20id?pin-value=1234",
                "pkcs11: scheme",
            ),
            ("file://otherhost/etc/k", "another host"),
            ("file:relative/k", "not absolute"),
            ("/etc/k", "not a URI"),
        ] {
            let Location::Unsupported(why) = parse_uri("device-id", uri) else {
                panic!("{uri} accepted")
            };
            assert!(
                why.contains(words) && why.contains("\"device-id\""),
                "{why}"
            );
        }
    }
}
