//! Writing one daemon's `00-super.toml`: a new file made 0600 and given to the service user
//! before it replaces the old one by rename, so no reader ever sees a half-written file or one
//! with the wrong owner (upstream writes in place, then chowns and chmods).

use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::error::ApplyError;
use super::users::ServiceUser;

pub const MODE: u32 = 0o600;
const DIR_MODE: u32 = 0o700;

pub struct Planned {
    /// `keyd`, `certd`, `identityd` or `tpmd`.
    pub service: &'static str,
    /// Where it goes (under `--root` when given).
    pub path: PathBuf,
    pub content: String,
    pub owner: ServiceUser,
}

/// Writes `p`; returns whether the content differs from what was there.
pub fn write(p: &Planned) -> Result<bool, ApplyError> {
    let err = |path: &Path| {
        let path = path.to_owned();
        move |source| ApplyError::Write { path, source }
    };
    let dir = p.path.parent().unwrap_or(Path::new("/"));
    if !dir.exists() {
        // The package ships config.d; make it as upstream's package does if it is missing.
        fs::create_dir_all(dir).map_err(err(dir))?;
        std::os::unix::fs::chown(dir, Some(p.owner.uid), Some(p.owner.gid)).map_err(err(dir))?;
        fs::set_permissions(dir, fs::Permissions::from_mode(DIR_MODE)).map_err(err(dir))?;
    }
    let changed = fs::read(&p.path).map_or(true, |old| old != p.content.as_bytes());

    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        file_name(&p.path),
        std::process::id()
    ));
    let _ = fs::remove_file(&tmp);
    let result = (|| {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(MODE)
            .open(&tmp)?;
        let meta = file.metadata()?;
        if meta.uid() != p.owner.uid || meta.gid() != p.owner.gid {
            std::os::unix::fs::fchown(&file, Some(p.owner.uid), Some(p.owner.gid))?;
        }
        // Whatever the umask took away or added, the mode is exactly 0600.
        file.set_permissions(fs::Permissions::from_mode(MODE))?;
        file.write_all(p.content.as_bytes())?;
        file.sync_all()?;
        fs::rename(&tmp, &p.path)
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(err(&p.path)(e));
    }
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(changed)
}

fn file_name(path: &Path) -> String {
    path.file_name().map_or_else(
        || "00-super.toml".into(),
        |n| n.to_string_lossy().into_owned(),
    )
}

/// A warning when the service user cannot reach its file: a config.d (or its parent) it may not
/// search (e.g. a config.d left owned by another user).
pub fn unreachable_warning(path: &Path, user: &ServiceUser) -> Option<String> {
    if user.uid == 0 {
        return None;
    }
    let mut dir = path.parent();
    for _ in 0..2 {
        let d = dir?;
        let meta = fs::metadata(d).ok()?;
        let mode = meta.mode();
        let bit = if meta.uid() == user.uid {
            0o100
        } else if user.groups.contains(&meta.gid()) || meta.gid() == user.gid {
            0o010
        } else {
            0o001
        };
        if mode & bit == 0 {
            return Some(format!(
                "{user} (uid {uid}) cannot reach {file}: {dir} is mode {mode:04o}, owner uid {duid}, group gid {dgid}, \
                 so the service will not read its config; fix: chown {user} {dir} (or let a group {user} is in search it)",
                user = user.name,
                uid = user.uid,
                file = path.display(),
                dir = d.display(),
                mode = mode & 0o7777,
                duid = meta.uid(),
                dgid = meta.gid(),
            ));
        }
        dir = d.parent();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn me() -> ServiceUser {
        // SAFETY: getuid and getgid cannot fail.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        ServiceUser {
            name: "aziotks",
            uid,
            gid,
            groups: vec![gid],
        }
    }

    #[test]
    fn writes_0600_creates_config_d_and_reports_changes() {
        let root = tempfile::tempdir().unwrap();
        let p = Planned {
            service: "keyd",
            path: root.path().join("keyd/config.d/00-super.toml"),
            content: "x = 1\n".into(),
            owner: me(),
        };
        assert!(write(&p).ok().unwrap());
        let meta = fs::metadata(&p.path).unwrap();
        assert_eq!(meta.mode() & 0o777, 0o600);
        assert_eq!(
            fs::metadata(root.path().join("keyd/config.d"))
                .unwrap()
                .mode()
                & 0o777,
            0o700
        );
        assert!(!write(&p).ok().unwrap(), "same content again is no change");
        fs::set_permissions(&p.path, fs::Permissions::from_mode(0o644)).unwrap();
        write(&p).ok().unwrap();
        assert_eq!(
            fs::metadata(&p.path).unwrap().mode() & 0o777,
            0o600,
            "a loosened mode is restored"
        );
        let leftovers: Vec<_> = fs::read_dir(root.path().join("keyd/config.d"))
            .unwrap()
            .collect();
        assert_eq!(leftovers.len(), 1, "no temp file left behind");
    }

    #[test]
    fn a_config_d_the_user_cannot_search_is_reported() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("tpmd/config.d");
        fs::create_dir_all(&dir).unwrap();
        let file = dir.join("00-super.toml");
        let mut other = me();
        other.uid += 1;
        other.gid += 1;
        other.groups = vec![other.gid];
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).unwrap();
        let w = unreachable_warning(&file, &other).unwrap();
        assert!(
            w.contains("cannot reach") && w.contains("chown aziotks"),
            "{w}"
        );
        assert!(unreachable_warning(&file, &me()).is_none());
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o701)).unwrap();
        assert!(unreachable_warning(&file, &other).is_none());
    }
}
