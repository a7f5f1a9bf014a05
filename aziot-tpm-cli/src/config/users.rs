//! The service users the files are given to, looked up as the package created them.
//!
//! `AZIOT_TPM_USERS` replaces the lookup, for tests and package builds that run without the
//! users: `current` (every service user is the invoking user), or a comma-separated list of
//! `user=UID[:GID]` or `user=other-name` (look that name up instead).

use aziot_tpm_common::accounts;

use super::error::ApplyError;

pub const OVERRIDE_ENV: &str = "AZIOT_TPM_USERS";

/// The user keyd-tpm runs as once it has read its configs.
pub const KEYD_USER: &str = "aziotks";
/// Owner of tpmd's file, as upstream: keyd-tpm reads it as root before it drops to
/// [`KEYD_USER`], so upstream's aziot-tpmd (when its package is installed) can read it too.
pub const TPMD_USER: &str = "aziottpm";
pub const IDENTITYD_USER: &str = "aziotid";
/// Upstream's Certificates Service, which IoT Edge keeps using.
pub const CERTD_USER: &str = "aziotcs";

#[derive(Clone, Debug)]
pub struct ServiceUser {
    pub name: &'static str,
    pub uid: u32,
    pub gid: u32,
    /// Every group the user is in (for the can-it-reach-its-file check).
    pub groups: Vec<u32>,
}

pub struct Users {
    pub keyd: ServiceUser,
    pub identityd: ServiceUser,
    pub tpmd: ServiceUser,
    /// `None` when upstream's Certificates Service is not installed.
    pub certd: Option<ServiceUser>,
}

pub fn resolve() -> Result<Users, ApplyError> {
    let overrides = std::env::var(OVERRIDE_ENV)
        .ok()
        .filter(|v| !v.trim().is_empty());
    let find = |name: &'static str| find(name, overrides.as_deref());
    let required = |name: &'static str, role: &str| {
        find(name)?.ok_or_else(|| {
            ApplyError::Users(format!(
                "the service user {name} does not exist ({role} runs as {name}): the aziot-tpm package \
                 is not installed, or its installation did not finish; install it (apt install aziot-tpm) \
                 or reinstall it (apt install --reinstall aziot-tpm)"
            ))
        })
    };
    Ok(Users {
        keyd: required(KEYD_USER, "keyd-tpm, the Keys and TPM Service,")?,
        identityd: required(IDENTITYD_USER, "identityd-dps, the Identity Service,")?,
        tpmd: required(TPMD_USER, "the TPM Service's config")?,
        certd: find(CERTD_USER)?,
    })
}

fn find(name: &'static str, overrides: Option<&str>) -> Result<Option<ServiceUser>, ApplyError> {
    let user = |uid: u32, gid: u32, groups: Vec<u32>| {
        Some(ServiceUser {
            name,
            uid,
            gid,
            groups,
        })
    };
    match overrides {
        Some(o) if o.trim() == "current" => {
            // SAFETY: getuid and getgid cannot fail and touch no memory of ours.
            let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
            return Ok(user(uid, gid, vec![gid]));
        }
        Some(o) => {
            for entry in o.split(',').map(str::trim).filter(|e| !e.is_empty()) {
                let (key, value) = entry.split_once('=').ok_or_else(|| bad_override(entry))?;
                if key.trim() != name {
                    continue;
                }
                let value = value.trim();
                if value.starts_with(|c: char| c.is_ascii_digit()) {
                    let (uid, gid) = value.split_once(':').unwrap_or((value, value));
                    let uid = uid.parse().map_err(|_| bad_override(entry))?;
                    let gid = gid.parse().map_err(|_| bad_override(entry))?;
                    return Ok(user(uid, gid, vec![gid]));
                }
                return Ok(lookup(value)?.and_then(|(uid, gid, groups)| user(uid, gid, groups)));
            }
        }
        None => {}
    }
    Ok(lookup(name)?.and_then(|(uid, gid, groups)| user(uid, gid, groups)))
}

fn bad_override(entry: &str) -> ApplyError {
    ApplyError::Users(format!(
        "{OVERRIDE_ENV}: {entry:?} is not user=UID[:GID] or user=name; e.g. {OVERRIDE_ENV}=aziotks=1000:1000,aziotid=1000 or {OVERRIDE_ENV}=current"
    ))
}

/// `(uid, gid)` of `name` and all its groups, through NSS like every other tool.
fn lookup(name: &str) -> Result<Option<(u32, u32, Vec<u32>)>, ApplyError> {
    let account = accounts::lookup(name)
        .map_err(|e| ApplyError::Users(format!("cannot look up the user {name}: {e}")))?;
    Ok(account.map(|a| (a.uid, a.gid, a.groups)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_give_uids_names_or_the_current_user() {
        let u = find(KEYD_USER, Some("aziotid=7, aziotks=1234:99"))
            .ok()
            .flatten()
            .unwrap();
        assert_eq!((u.uid, u.gid), (1234, 99));
        let u = find(IDENTITYD_USER, Some("aziotid=7,aziotks=1234:99"))
            .ok()
            .flatten()
            .unwrap();
        assert_eq!((u.uid, u.gid), (7, 7));
        let u = find(KEYD_USER, Some("aziotks=root"))
            .ok()
            .flatten()
            .unwrap();
        assert_eq!(u.uid, 0);
        assert!(find(KEYD_USER, Some("aziotks=no-such-user-here"))
            .ok()
            .flatten()
            .is_none());
        // SAFETY: see `find`.
        let me = unsafe { libc::getuid() };
        assert_eq!(
            find(CERTD_USER, Some("current"))
                .ok()
                .flatten()
                .unwrap()
                .uid,
            me
        );
        let e = find(KEYD_USER, Some("aziotks")).err().unwrap().to_string();
        assert!(e.contains("user=UID[:GID]"), "{e}");
    }

    #[test]
    fn root_is_found_with_its_groups() {
        let (uid, gid, groups) = lookup("root").ok().flatten().unwrap();
        assert_eq!((uid, gid), (0, 0));
        assert!(groups.contains(&0));
        assert!(lookup("no-such-user-here").ok().unwrap().is_none());
    }
}
