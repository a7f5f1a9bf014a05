//! Who may create, load and move which key: `[[principal]] uid = N, keys = [...]` as upstream,
//! with blocks of one uid merged and `*`/`?` wildcards. Root and keyd-tpm's own uid may do
//! anything. Other operations take a handle, which is the capability (identityd hands derived
//! handles to aziot-edged, which signs with them), so they are not checked here.

use std::collections::HashMap;

use super::config::Principal;
use super::error::KeydError;

pub struct Authorizer {
    patterns: HashMap<u32, Vec<String>>,
    own_uid: u32,
}

impl Authorizer {
    pub fn new(principals: &[Principal]) -> Self {
        // SAFETY: geteuid has no preconditions and cannot fail.
        let own_uid = unsafe { libc::geteuid() };
        Self::with_own_uid(principals, own_uid)
    }

    fn with_own_uid(principals: &[Principal], own_uid: u32) -> Self {
        let mut patterns: HashMap<u32, Vec<String>> = HashMap::new();
        for p in principals {
            patterns
                .entry(p.uid)
                .or_default()
                .extend(p.keys.iter().cloned());
        }
        Self { patterns, own_uid }
    }

    pub fn authorize(&self, uid: u32, id: &str) -> Result<(), KeydError> {
        if uid == 0 || uid == self.own_uid {
            return Ok(());
        }
        let allowed = self
            .patterns
            .get(&uid)
            .is_some_and(|patterns| patterns.iter().any(|p| wildcard_match(p, id)));
        if allowed {
            Ok(())
        } else {
            log::info!("uid {uid} refused access to key {id:?}");
            Err(KeydError::Unauthorized {
                uid,
                id: id.to_owned(),
            })
        }
    }
}

/// `*` matches any run of characters (also none), `?` exactly one; everything else itself.
/// Greedy with one backtrack point, so linear-ish and never exponential.
fn wildcard_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    // Position of the last `*` seen and the text position it currently absorbs up to.
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        match p.get(pi) {
            Some('*') => {
                star = Some((pi, ti));
                pi += 1;
            }
            Some(&c) if c == '?' || c == t[ti] => {
                pi += 1;
                ti += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    pi = sp + 1;
                    ti = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal(uid: u32, keys: &[&str]) -> Principal {
        Principal {
            uid,
            keys: keys.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn wildcards_like_upstream() {
        for (p, t) in [
            ("device-id", "device-id"),
            ("*", ""),
            ("*", "anything"),
            ("aziot-edged/module/*", "aziot-edged/module/m1"),
            ("device-id?", "device-id2"),
            ("a*b*c", "aXXbYYc"),
            ("a*b*c", "abbbc"),
            ("*-temp", "device-id-temp"),
            ("??", "ab"),
        ] {
            assert!(wildcard_match(p, t), "{p} should match {t}");
        }
        for (p, t) in [
            ("device-id", "device-id-temp"),
            ("device-id?", "device-id"),
            ("a*b*c", "aXXbYY"),
            ("??", "abc"),
            ("", "x"),
            ("?", ""),
        ] {
            assert!(!wildcard_match(p, t), "{p} should not match {t}");
        }
    }

    #[test]
    fn root_and_own_uid_always_pass() {
        let a = Authorizer::with_own_uid(&[], 995);
        assert!(a.authorize(0, "anything").is_ok());
        assert!(a.authorize(995, "anything").is_ok());
        assert!(a.authorize(1000, "anything").is_err());
    }

    #[test]
    fn blocks_of_one_uid_are_merged() {
        let a = Authorizer::with_own_uid(
            &[
                principal(993, &["aziot_identityd_master_id"]),
                principal(992, &["aziot-edged-ca"]),
                principal(993, &["device-id*"]),
            ],
            995,
        );
        assert!(a.authorize(993, "aziot_identityd_master_id").is_ok());
        assert!(a.authorize(993, "device-id-temp").is_ok());
        assert!(a.authorize(992, "device-id").is_err());
        let e = a.authorize(992, "device-id").unwrap_err().to_string();
        assert_eq!(e, "user 992 is not authorized to access the key device-id");
    }
}
