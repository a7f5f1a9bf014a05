//! Unix accounts through NSS, as every other tool sees them: a user's uid, primary gid and all
//! its groups (as initgroups(3) would set them), and names for ids. keyd-tpm uses it to become
//! its service user, `aziot-tpm` to give config files to their owners and to check who may open
//! the TPM device node.

use std::ffi::{CStr, CString};
use std::io;

/// A user and every group it is in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Account {
    pub name: String,
    pub uid: u32,
    /// Primary group.
    pub gid: u32,
    /// The primary group plus every group that lists the user as a member.
    pub groups: Vec<u32>,
}

/// Looks `name` up; `Ok(None)` if there is no such user. A name with a NUL byte is an
/// `InvalidInput` error.
pub fn lookup(name: &str) -> io::Result<Option<Account>> {
    let c_name = CString::new(name).map_err(|_| {
        io::Error::new(io::ErrorKind::InvalidInput, format!("user name {name:?} contains a NUL byte"))
    })?;
    // SAFETY: getpwnam_r writes only into the entry and the buffer whose length it is given.
    let found = lookup_r(|pwd, buf, len, result| unsafe {
        libc::getpwnam_r(c_name.as_ptr(), pwd, buf, len, result)
    })?;
    let Some((pwd, _buf)) = found else {
        return Ok(None);
    };
    let (uid, gid) = (pwd.pw_uid, pwd.pw_gid);
    Ok(Some(Account {
        name: name.to_owned(),
        uid,
        gid,
        groups: group_list(&c_name, gid)?,
    }))
}

/// The name of group `gid`, if it has one.
pub fn group_name(gid: u32) -> Option<String> {
    // SAFETY: getgrgid_r writes only into the entry and the buffer whose length it is given.
    let (grp, _buf) =
        lookup_r(|grp, buf, len, result| unsafe { libc::getgrgid_r(gid, grp, buf, len, result) })
            .ok()??;
    // SAFETY: on success gr_name points to a NUL-terminated string inside `_buf`, still alive.
    Some(unsafe { CStr::from_ptr(grp.gr_name) }.to_string_lossy().into_owned())
}

/// The name of user `uid`, if it has one.
pub fn user_name(uid: u32) -> Option<String> {
    // SAFETY: getpwuid_r writes only into the entry and the buffer whose length it is given.
    let (pwd, _buf) =
        lookup_r(|pwd, buf, len, result| unsafe { libc::getpwuid_r(uid, pwd, buf, len, result) })
            .ok()??;
    // SAFETY: on success pw_name points to a NUL-terminated string inside `_buf`, still alive.
    Some(unsafe { CStr::from_ptr(pwd.pw_name) }.to_string_lossy().into_owned())
}

/// Runs a reentrant `get*_r` lookup into a zeroed `T` and a buffer it may point into (returned
/// with it, so the pointers stay valid), growing the buffer on ERANGE. `Ok(None)`: no entry.
fn lookup_r<T>(
    mut call: impl FnMut(*mut T, *mut libc::c_char, usize, *mut *mut T) -> libc::c_int,
) -> io::Result<Option<(T, Vec<libc::c_char>)>> {
    let mut buf = vec![0 as libc::c_char; 4096];
    loop {
        // SAFETY: an all-zero passwd/group is a valid out-parameter (null pointers, ids 0).
        let mut entry: T = unsafe { std::mem::zeroed() };
        let mut result: *mut T = std::ptr::null_mut();
        match call(&mut entry, buf.as_mut_ptr(), buf.len(), &mut result) {
            0 if result.is_null() => return Ok(None),
            0 => return Ok(Some((entry, buf))),
            libc::ERANGE if buf.len() < 1 << 20 => buf.resize(buf.len() * 4, 0),
            // "Not found" is also reported as one of these by some NSS modules.
            libc::ENOENT | libc::ESRCH | libc::EBADF | libc::EPERM => return Ok(None),
            rc => return Err(io::Error::from_raw_os_error(rc)),
        }
    }
}

fn group_list(name: &CStr, gid: libc::gid_t) -> io::Result<Vec<u32>> {
    let mut capacity: libc::c_int = 32;
    loop {
        let mut groups: Vec<libc::gid_t> = vec![0; capacity as usize];
        let mut count = capacity;
        // SAFETY: `groups` holds `count` entries; glibc writes at most that many and sets
        // `count` to the number needed when they do not fit.
        let rc = unsafe { libc::getgrouplist(name.as_ptr(), gid, groups.as_mut_ptr(), &mut count) };
        if rc >= 0 {
            groups.truncate(count.max(0) as usize);
            return Ok(groups);
        }
        if capacity >= 65_536 {
            return Err(io::Error::other("the user is in more than 65536 groups"));
        }
        capacity = count.max(capacity * 2);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_is_found_with_its_primary_group_and_names_resolve() {
        let root = lookup("root").unwrap().expect("root exists");
        assert_eq!((root.uid, root.gid), (0, 0));
        assert!(root.groups.contains(&0), "{:?}", root.groups);
        assert_eq!(user_name(0).as_deref(), Some("root"));
        assert_eq!(group_name(0).as_deref(), Some("root"));
    }

    #[test]
    fn unknown_users_are_none_and_nul_is_an_error() {
        assert_eq!(lookup("no-such-user-aziot-tpm-test").unwrap(), None);
        assert_eq!(
            lookup("a\0b").unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
        assert_eq!(user_name(4_000_000_000), None);
    }
}
