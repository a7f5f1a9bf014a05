//! Whether keyd-tpm's service user may use the TPM device node: the node exists, is a character
//! device, and its owner, group and mode give that user read and write access. Upstream's
//! packaging never grants this (its tpmd user is not in `tss`), so a fresh gateway fails at the
//! first TPM command; this check says what to change.

use aziot_tpm_common::accounts;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

/// A Unix account and all its groups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub uid: u32,
    pub groups: Vec<u32>,
}

/// Ownership and mode of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Perms {
    pub uid: u32,
    pub gid: u32,
    pub mode: u32,
}

/// Whether `user` may open a file with `perms` for reading and writing, by the POSIX rules: the
/// owner bits if the user owns it, else the group bits if one of its groups owns it, else the
/// others' bits; root may always.
pub fn can_read_write(perms: Perms, user: &User) -> bool {
    if user.uid == 0 {
        return true;
    }
    let bits = if perms.uid == user.uid {
        perms.mode >> 6
    } else if user.groups.contains(&perms.gid) {
        perms.mode >> 3
    } else {
        perms.mode
    };
    bits & 0o6 == 0o6
}

/// Looks a user up in the passwd database, with every group it belongs to.
pub fn lookup_user(name: &str) -> Result<Option<User>, String> {
    let account = accounts::lookup(name).map_err(|e| format!("cannot look up user {name:?}: {e}"))?;
    Ok(account.map(|a| User {
        name: a.name,
        uid: a.uid,
        groups: a.groups,
    }))
}

/// The name of a group, or its number.
pub fn group_name(gid: u32) -> String {
    accounts::group_name(gid).unwrap_or_else(|| gid.to_string())
}

/// The name of a user, or its number.
pub fn user_name(uid: u32) -> String {
    accounts::user_name(uid).unwrap_or_else(|| uid.to_string())
}

/// What the node looks like.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    Missing,
    NotACharDevice,
    CharDevice(Perms),
}

pub fn inspect(path: &Path) -> Result<Node, String> {
    match std::fs::metadata(path) {
        Ok(meta) if meta.file_type().is_char_device() => Ok(Node::CharDevice(Perms {
            uid: meta.uid(),
            gid: meta.gid(),
            mode: meta.mode() & 0o7777,
        })),
        Ok(_) => Ok(Node::NotACharDevice),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Node::Missing),
        Err(e) => Err(format!("cannot inspect {}: {e}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(uid: u32, groups: &[u32]) -> User {
        User {
            name: "u".into(),
            uid,
            groups: groups.to_vec(),
        }
    }

    #[test]
    fn posix_classes_decide_access() {
        let tss_0660 = Perms {
            uid: 100,
            gid: 200,
            mode: 0o660,
        };
        assert!(can_read_write(tss_0660, &user(100, &[])), "owner");
        assert!(can_read_write(tss_0660, &user(5, &[7, 200])), "group member");
        assert!(!can_read_write(tss_0660, &user(5, &[7])), "other");
        assert!(can_read_write(tss_0660, &user(0, &[])), "root");
        // The owner class applies alone: an owner without rw bits is refused even if the group has them.
        assert!(!can_read_write(
            Perms {
                uid: 5,
                gid: 200,
                mode: 0o060
            },
            &user(5, &[200])
        ));
        assert!(can_read_write(
            Perms {
                uid: 1,
                gid: 1,
                mode: 0o666
            },
            &user(5, &[])
        ));
        assert!(
            !can_read_write(
                Perms {
                    uid: 1,
                    gid: 200,
                    mode: 0o640
                },
                &user(5, &[200])
            ),
            "read-only group"
        );
    }

    #[test]
    fn nodes_are_told_apart() {
        assert!(matches!(inspect(Path::new("/dev/null")).unwrap(), Node::CharDevice(p) if p.mode & 0o666 == 0o666));
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("tpmrm0");
        std::fs::write(&file, "").unwrap();
        assert_eq!(inspect(&file).unwrap(), Node::NotACharDevice);
        assert_eq!(inspect(&dir.path().join("none")).unwrap(), Node::Missing);
    }

    #[test]
    fn users_and_groups_resolve() {
        let root = lookup_user("root").unwrap().unwrap();
        assert_eq!(root.uid, 0);
        assert!(root.groups.contains(&0));
        assert_eq!(lookup_user("no-such-user-for-aziot-tpm").unwrap(), None);
        assert_eq!(user_name(0), "root");
        assert_eq!(group_name(0), "root");
    }
}
