//! Becoming the service user once both configs are read.
//!
//! keyd-tpm serves two upstream daemons' APIs, so it reads two upstream configs, each private to
//! its own user: tpmd's (owner `aziottpm`, mode 0600) and keyd's (owner `aziotks`, 0600).
//! `aziotctl config apply` and `iotedge config apply` rewrite them with those owners every time,
//! so no single unprivileged user can be relied on to read both. The packaged unit therefore
//! starts keyd-tpm as root with only `CAP_DAC_READ_SEARCH`, `CAP_SETUID` and `CAP_SETGID` in its
//! bounding set; after the configs are read, keyd-tpm becomes the user named by
//! `AZIOT_KEYD_TPM_USER` (the unit says `aziotks`) with that user's groups from the group
//! database (`tss` gives `/dev/tpmrm0`). Changing every uid away from 0 makes the kernel clear
//! the permitted and effective capabilities; we check that it did. The TPM is opened, and every
//! key or state file written, only after that.
//!
//! Must run before the process starts any thread.

use aziot_tpm_common::accounts;
use std::fmt;
use std::io;

/// The environment variable naming the user to become.
pub const USER_VAR: &str = "AZIOT_KEYD_TPM_USER";

#[derive(Debug, thiserror::Error)]
pub enum PrivilegeError {
    #[error("{USER_VAR}={name:?} is not a valid user name; set it to the service user (the packaged unit uses aziotks)")]
    InvalidName { name: String },
    #[error("{USER_VAR}={name:?} names a user that does not exist; create it (installing the aziot-tpm package creates aziotks) or name an existing user")]
    UnknownUser { name: String },
    #[error("{USER_VAR}={name:?} is root (uid 0); name the unprivileged service user (aziotks), or unset it to stay as started")]
    TargetIsRoot { name: String },
    #[error("{USER_VAR}={name:?}: keyd-tpm was started as uid {uid}, not as root, so it cannot become {name}; start it as root (the packaged unit does) or as {name} itself")]
    NotRoot { name: String, uid: u32 },
    #[error("cannot look up user {name:?} in the user database: {source}")]
    Lookup { name: String, source: io::Error },
    #[error("cannot become user {name:?}: {call} failed: {source}; the unit must keep CAP_SETUID and CAP_SETGID in CapabilityBoundingSet= and allow @setuid in SystemCallFilter=")]
    Switch {
        name: String,
        call: &'static str,
        source: io::Error,
    },
    #[error(
        "after becoming user {name:?} the process {what}; refusing to run with privileges left"
    )]
    StillPrivileged { name: String, what: String },
}

/// Who the process runs as after the switch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub name: String,
    pub uid: libc::uid_t,
    pub gid: libc::gid_t,
    pub groups: Vec<libc::gid_t>,
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let groups: Vec<String> = self
            .groups
            .iter()
            .map(|g| match accounts::group_name(*g) {
                Some(name) => format!("{name}({g})"),
                None => g.to_string(),
            })
            .collect();
        write!(
            f,
            "{} (uid {}, gid {}, groups {})",
            self.name,
            self.uid,
            self.gid,
            groups.join(",")
        )
    }
}

/// Becomes the user named by `AZIOT_KEYD_TPM_USER`, if it is set; logs what it did.
pub fn drop_from_env() -> Result<(), PrivilegeError> {
    let name = std::env::var(USER_VAR).unwrap_or_default();
    if name.is_empty() {
        // SAFETY: geteuid cannot fail and touches no memory.
        if unsafe { libc::geteuid() } == 0 {
            log::warn!(
                "running as root with every capability the service manager left; set {USER_VAR}=aziotks to run as the service user (the packaged unit does)"
            );
        }
        return Ok(());
    }
    let identity = become_user(&name)?;
    log::info!("configs read; now running as {identity}, with no capabilities");
    Ok(())
}

/// Switches every uid and gid of the process to `name`'s, with `name`'s supplementary groups,
/// and checks that no capability is left. A no-op when the process already runs as `name`.
pub fn become_user(name: &str) -> Result<Identity, PrivilegeError> {
    let target = resolve(name)?;
    if target.uid == 0 {
        return Err(PrivilegeError::TargetIsRoot {
            name: name.to_owned(),
        });
    }
    let (ruid, euid, suid) = resuid();
    if [ruid, euid, suid] == [target.uid; 3] {
        verify(&target)?;
        return Ok(target);
    }
    if euid != 0 {
        return Err(PrivilegeError::NotRoot {
            name: name.to_owned(),
            uid: euid,
        });
    }
    let failed = |call| {
        let source = io::Error::last_os_error();
        PrivilegeError::Switch {
            name: name.to_owned(),
            call,
            source,
        }
    };
    // SAFETY: plain syscalls on this process; `groups` outlives the call.
    unsafe {
        // Capabilities must not survive the uid change (the default; make sure).
        if libc::prctl(libc::PR_SET_KEEPCAPS, 0, 0, 0, 0) != 0 {
            return Err(failed("prctl(PR_SET_KEEPCAPS)"));
        }
        if libc::setgroups(target.groups.len(), target.groups.as_ptr()) != 0 {
            return Err(failed("setgroups"));
        }
        if libc::setresgid(target.gid, target.gid, target.gid) != 0 {
            return Err(failed("setresgid"));
        }
        if libc::setresuid(target.uid, target.uid, target.uid) != 0 {
            return Err(failed("setresuid"));
        }
    }
    verify(&target)?;
    Ok(target)
}

/// Looks `name` up in the user and group databases.
pub fn resolve(name: &str) -> Result<Identity, PrivilegeError> {
    if name.contains('\0') {
        return Err(PrivilegeError::InvalidName {
            name: name.to_owned(),
        });
    }
    let account = accounts::lookup(name)
        .map_err(|source| PrivilegeError::Lookup {
            name: name.to_owned(),
            source,
        })?
        .ok_or_else(|| PrivilegeError::UnknownUser {
            name: name.to_owned(),
        })?;
    Ok(Identity {
        name: account.name,
        uid: account.uid,
        gid: account.gid,
        groups: account.groups,
    })
}

/// Checks the ids took and that no capability is permitted or effective.
fn verify(target: &Identity) -> Result<(), PrivilegeError> {
    let still = |what: String| PrivilegeError::StillPrivileged {
        name: target.name.clone(),
        what,
    };
    let (ruid, euid, suid) = resuid();
    if [ruid, euid, suid] != [target.uid; 3] {
        return Err(still(format!(
            "has uids {ruid}/{euid}/{suid}, not {}",
            target.uid
        )));
    }
    let (rgid, egid, sgid) = resgid();
    if [rgid, egid, sgid] != [target.gid; 3] {
        return Err(still(format!(
            "has gids {rgid}/{egid}/{sgid}, not {}",
            target.gid
        )));
    }
    let caps = capabilities().map_err(|e| still(format!("cannot read its capabilities ({e})")))?;
    if caps != (0, 0) {
        return Err(still(format!(
            "still has capabilities (permitted {:#x}, effective {:#x})",
            caps.0, caps.1
        )));
    }
    Ok(())
}

fn resuid() -> (libc::uid_t, libc::uid_t, libc::uid_t) {
    let (mut r, mut e, mut s) = (0, 0, 0);
    // SAFETY: three valid out-pointers; getresuid cannot fail with them.
    unsafe { libc::getresuid(&mut r, &mut e, &mut s) };
    (r, e, s)
}

fn resgid() -> (libc::gid_t, libc::gid_t, libc::gid_t) {
    let (mut r, mut e, mut s) = (0, 0, 0);
    // SAFETY: three valid out-pointers; getresgid cannot fail with them.
    unsafe { libc::getresgid(&mut r, &mut e, &mut s) };
    (r, e, s)
}

/// (permitted, effective) capability sets of this thread, all 64 bits, from capget(2).
fn capabilities() -> io::Result<(u64, u64)> {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: libc::c_int,
    }
    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;
    let mut header = Header {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let mut data = [Data::default(); 2];
    // SAFETY: version 3 of capget writes exactly two Data structs.
    let rc = unsafe { libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    let join = |low: u32, high: u32| u64::from(low) | (u64::from(high) << 32);
    Ok((
        join(data[0].permitted, data[1].permitted),
        join(data[0].effective, data[1].effective),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_resolves_and_is_refused_as_a_target() {
        let root = resolve("root").unwrap();
        assert_eq!((root.uid, root.gid), (0, 0));
        assert!(root.groups.contains(&0), "{root:?}");
        let e = become_user("root").unwrap_err().to_string();
        assert!(e.contains(USER_VAR) && e.contains("aziotks"), "{e}");
    }

    #[test]
    fn an_unknown_user_names_the_variable_and_the_fix() {
        let e = become_user("no-such-user-aziot-tpm")
            .unwrap_err()
            .to_string();
        assert!(e.contains(USER_VAR) && e.contains("does not exist"), "{e}");
    }

    #[test]
    fn a_name_with_nul_is_invalid() {
        let e = resolve("a\0b").unwrap_err();
        assert!(matches!(e, PrivilegeError::InvalidName { .. }), "{e}");
    }

    #[test]
    fn groups_include_the_primary_group() {
        let root = resolve("root").unwrap();
        assert_eq!(root.groups.first(), Some(&root.gid));
        assert!(
            root.to_string()
                .starts_with("root (uid 0, gid 0, groups root(0)"),
            "{root}"
        );
    }

    #[test]
    fn capabilities_can_be_read() {
        let (permitted, effective) = capabilities().unwrap();
        // Whatever this test runs as, effective is a subset of permitted.
        assert_eq!(effective & !permitted, 0);
    }

    #[test]
    fn becoming_the_current_user_is_a_no_op_when_not_root() {
        let (_, euid, _) = resuid();
        if euid == 0 {
            return; // as root this would switch for real; tests/privileges.rs covers that
        }
        let name = current_user_name(euid);
        let e = become_user("root").unwrap_err();
        assert!(matches!(e, PrivilegeError::TargetIsRoot { .. }));
        if let Some(name) = name {
            assert_eq!(become_user(&name).unwrap().uid, euid);
        }
    }

    fn current_user_name(uid: libc::uid_t) -> Option<String> {
        accounts::user_name(uid)
    }
}
