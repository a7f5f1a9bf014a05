//! Binding a Unix socket path without clobbering anything.
//!
//! Upstream deletes whatever sits at the socket path, so a second daemon instance
//! silently steals a live daemon's socket, and a typo in the config deletes a
//! user's file. We remove only a socket nobody is listening on.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Mode of sockets we create: owner and group (the service's clients) may connect.
pub const SOCKET_MODE: u32 = 0o660;

/// `sun_path` holds 108 bytes including the terminating NUL.
const MAX_PATH_BYTES: usize = 107;

#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error(
        "socket path {path} is {len} bytes long but Unix sockets allow at most {MAX_PATH_BYTES}; \
         configure a shorter path"
    )]
    PathTooLong { path: PathBuf, len: usize },
    #[error("socket path {0} must be an absolute file path, e.g. /run/aziot/keyd.sock")]
    NotAFilePath(PathBuf),
    #[error("could not create socket directory {dir}: {source}{hint}")]
    CreateDir {
        dir: PathBuf,
        source: io::Error,
        hint: String,
    },
    #[error(
        "another process is already serving {path}; stop it first (systemctl stop the \
         service) or configure a different socket path"
    )]
    InUse { path: PathBuf },
    #[error("{path} exists and is {kind}, not a socket; move it away or configure a different socket path")]
    NotASocket { path: PathBuf, kind: &'static str },
    #[error("could not check whether {path} is in use: {source}{hint}")]
    Probe {
        path: PathBuf,
        source: io::Error,
        hint: String,
    },
    #[error("could not remove stale socket {path}: {source}{hint}")]
    RemoveStale {
        path: PathBuf,
        source: io::Error,
        hint: String,
    },
    #[error("could not bind socket {path}: {source}{hint}")]
    Bind {
        path: PathBuf,
        source: io::Error,
        hint: String,
    },
    #[error("could not set mode {mode:04o} on socket {path}: {source}")]
    Chmod { path: PathBuf, mode: u32, source: io::Error },
    #[error("bind_unix must be called from within a tokio runtime")]
    NoRuntime,
}

/// Binds `path` as [`bind_unix`] does, then gives the socket to `group`, the group whose
/// members are the API's clients (upstream's socket units use `aziottpm` for tpmd.sock,
/// `aziotks` for keyd.sock, `aziotid` for identityd.sock). If the group does not exist, or
/// this process may not give files to it, the socket becomes 0600: only its owner (and root)
/// may connect, rather than whoever shares the process's primary group — which for a daemon
/// serving two APIs is the other API's clients.
/// The group is settled before the socket's mode is set, so it is never 0660 to the
/// process's primary group, not even for a moment.
pub fn bind_unix_for_group(path: impl AsRef<Path>, group: &str) -> Result<tokio::net::UnixListener, BindError> {
    bind_tokio(path.as_ref(), Some(group))
}

/// The mode for a socket just bound at `path`: 0660 once it belongs to `group`, else 0600.
fn mode_for_group(path: &Path, group: &str) -> u32 {
    match give_to_group(path, group) {
        Ok(()) => SOCKET_MODE,
        Err(why) => {
            log::warn!(
                "{} is open to its owner only: {why}; to let the {group} group's members connect, create the group and make the service user a member",
                path.display()
            );
            0o600
        }
    }
}

/// chown(path, -1, gid of `group`).
fn give_to_group(path: &Path, group: &str) -> Result<(), String> {
    let name = std::ffi::CString::new(group).map_err(|_| format!("group name {group:?} contains NUL"))?;
    let mut grp: libc::group = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    let mut found: *mut libc::group = std::ptr::null_mut();
    // SAFETY: getgrnam_r writes into `grp` and `buf`, whose sizes we pass, and sets `found`.
    let rc = unsafe { libc::getgrnam_r(name.as_ptr(), &mut grp, buf.as_mut_ptr(), buf.len(), &mut found) };
    if rc != 0 || found.is_null() {
        return Err(format!("there is no group {group}"));
    }
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(|_| "path contains NUL".to_owned())?;
    // SAFETY: chown on a valid C string; uid -1 keeps the owner.
    if unsafe { libc::chown(c_path.as_ptr(), libc::uid_t::MAX, grp.gr_gid) } != 0 {
        return Err(format!("cannot give it to group {group}: {}", io::Error::last_os_error()));
    }
    Ok(())
}

/// Binds `path` (creating its parent directory if missing), replacing a stale
/// socket but never a live one or a non-socket, then sets mode 0660.
///
/// Must be called from within a tokio runtime.
pub fn bind_unix(path: impl AsRef<Path>) -> Result<tokio::net::UnixListener, BindError> {
    bind_tokio(path.as_ref(), None)
}

fn bind_tokio(path: &Path, group: Option<&str>) -> Result<tokio::net::UnixListener, BindError> {
    if tokio::runtime::Handle::try_current().is_err() {
        return Err(BindError::NoRuntime);
    }
    let std_listener = bind_std(path, group)?;
    let bind_err = |source| BindError::Bind {
        path: path.to_owned(),
        source,
        hint: String::new(),
    };
    std_listener.set_nonblocking(true).map_err(bind_err)?;
    tokio::net::UnixListener::from_std(std_listener).map_err(bind_err)
}

fn bind_std(path: &Path, group: Option<&str>) -> Result<std::os::unix::net::UnixListener, BindError> {
    let len = path.as_os_str().len();
    if len > MAX_PATH_BYTES {
        return Err(BindError::PathTooLong {
            path: path.to_owned(),
            len,
        });
    }
    let dir = match path.parent() {
        Some(dir) if path.is_absolute() && path.file_name().is_some() => dir,
        _ => return Err(BindError::NotAFilePath(path.to_owned())),
    };
    if let Err(source) = std::fs::create_dir_all(dir) {
        let hint = permission_hint(&source, dir);
        return Err(BindError::CreateDir {
            dir: dir.to_owned(),
            source,
            hint,
        });
    }

    clear_stale(path, dir)?;

    let listener = std::os::unix::net::UnixListener::bind(path).map_err(|source| {
        if source.kind() == io::ErrorKind::AddrInUse {
            // Lost a race with another instance between the probe and bind.
            return BindError::InUse {
                path: path.to_owned(),
            };
        }
        let hint = permission_hint(&source, dir);
        BindError::Bind {
            path: path.to_owned(),
            source,
            hint,
        }
    })?;
    let mode = group.map_or(SOCKET_MODE, |group| mode_for_group(path, group));
    if let Err(source) = std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)) {
        let _ = std::fs::remove_file(path);
        return Err(BindError::Chmod {
            path: path.to_owned(),
            mode,
            source,
        });
    }
    Ok(listener)
}

/// Removes `path` if it is a socket nobody listens on; errors if it is anything
/// else that exists.
fn clear_stale(path: &Path, dir: &Path) -> Result<(), BindError> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            let hint = permission_hint(&source, dir);
            return Err(BindError::Probe {
                path: path.to_owned(),
                source,
                hint,
            });
        }
    };
    let file_type = meta.file_type();
    if !file_type.is_socket() {
        let kind = if file_type.is_dir() {
            "a directory"
        } else if file_type.is_symlink() {
            "a symbolic link"
        } else if file_type.is_file() {
            "a regular file"
        } else {
            "a special file"
        };
        return Err(BindError::NotASocket {
            path: path.to_owned(),
            kind,
        });
    }
    match probe(path) {
        Ok(Probe::Live) => Err(BindError::InUse {
            path: path.to_owned(),
        }),
        Ok(Probe::Gone) => Ok(()),
        Ok(Probe::Stale) => match std::fs::remove_file(path) {
            Ok(()) => {
                log::info!("removed stale socket {}", path.display());
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(source) => {
                let hint = permission_hint(&source, dir);
                Err(BindError::RemoveStale {
                    path: path.to_owned(),
                    source,
                    hint,
                })
            }
        },
        Err(source) => {
            let hint = permission_hint(&source, path);
            Err(BindError::Probe {
                path: path.to_owned(),
                source,
                hint,
            })
        }
    }
}

enum Probe {
    /// Something accepted (or queued) our connection.
    Live,
    /// Connection refused: the socket file outlived its daemon.
    Stale,
    /// The file disappeared meanwhile.
    Gone,
}

/// Connects without blocking, so a live daemon with a full backlog counts as live
/// instead of hanging our start-up.
fn probe(path: &Path) -> io::Result<Probe> {
    let bytes = path.as_os_str().as_bytes();
    // SAFETY: sockaddr_un is plain old data; all-zero is a valid value.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    if bytes.len() >= addr.sun_path.len() {
        return Err(io::ErrorKind::InvalidInput.into());
    }
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (dst, src) in addr.sun_path.iter_mut().zip(bytes) {
        *dst = *src as libc::c_char;
    }
    let addr_len = std::mem::offset_of!(libc::sockaddr_un, sun_path) + bytes.len() + 1;

    // SAFETY: plain socket(2) call; the result is checked before use.
    let raw = unsafe {
        libc::socket(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            0,
        )
    };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` is a fresh fd that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: `addr` is a properly initialised sockaddr_un and `addr_len` does not
    // exceed its size (checked above).
    let rc = unsafe {
        libc::connect(
            fd.as_raw_fd(),
            std::ptr::addr_of!(addr).cast::<libc::sockaddr>(),
            addr_len as libc::socklen_t,
        )
    };
    if rc == 0 {
        return Ok(Probe::Live);
    }
    let err = io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::EAGAIN | libc::EINPROGRESS) => Ok(Probe::Live),
        Some(libc::ECONNREFUSED) => Ok(Probe::Stale),
        Some(libc::ENOENT) => Ok(Probe::Gone),
        _ => Err(err),
    }
}

fn permission_hint(err: &io::Error, path: &Path) -> String {
    if err.kind() != io::ErrorKind::PermissionDenied {
        return String::new();
    }
    // SAFETY: geteuid has no preconditions.
    let uid = unsafe { libc::geteuid() };
    format!(
        " (this process runs as uid {uid}, which may not write {}; run the daemon as its \
         service user or as root, or give that user write access to the directory)",
        path.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_missing_parent_and_sets_mode_0660() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/dir/s.sock");
        let _l = bind_std(&path, None).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o660);
    }

    #[test]
    fn a_socket_for_a_missing_group_is_0600_and_one_for_a_group_is_0660_in_that_group() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let _l = bind_std(&path, Some("no-such-group-for-this-test")).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
        // The group of this process's primary gid exists and may be given by this process.
        let gid = unsafe { libc::getgid() };
        let group = unsafe { std::ffi::CStr::from_ptr((*libc::getgrgid(gid)).gr_name) }.to_str().unwrap().to_owned();
        let path = dir.path().join("g.sock");
        let _g = bind_std(&path, Some(&group)).unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!((meta.mode() & 0o777, meta.gid()), (0o660, gid));
    }

    #[test]
    fn refuses_a_live_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let _live = bind_std(&path, None).unwrap();
        let err = bind_std(&path, None).unwrap_err();
        assert!(matches!(err, BindError::InUse { .. }));
        assert!(err.to_string().contains("already serving"));
        assert!(err.to_string().contains(&path.display().to_string()));
    }

    #[test]
    fn replaces_a_stale_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        assert!(path.exists());
        let _l = bind_std(&path, None).unwrap();
        std::os::unix::net::UnixStream::connect(&path).unwrap();
    }

    #[test]
    fn never_deletes_a_regular_file_or_directory() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("file");
        std::fs::write(&file, b"precious").unwrap();
        let err = bind_std(&file, None).unwrap_err();
        assert!(
            err.to_string().contains("is a regular file, not a socket"),
            "{err}"
        );
        assert_eq!(std::fs::read(&file).unwrap(), b"precious");

        let sub = dir.path().join("sub");
        std::fs::create_dir(&sub).unwrap();
        let err = bind_std(&sub, None).unwrap_err();
        assert!(err.to_string().contains("is a directory"), "{err}");
    }

    #[test]
    fn refuses_overlong_and_relative_paths() {
        let long = PathBuf::from(format!("/tmp/{}", "x".repeat(120)));
        assert!(matches!(
            bind_std(&long, None),
            Err(BindError::PathTooLong { .. })
        ));
        assert!(matches!(
            bind_std(Path::new("rel.sock"), None),
            Err(BindError::NotAFilePath(_))
        ));
    }

    #[test]
    fn permission_hint_names_the_path_and_the_fix() {
        let err = io::Error::from(io::ErrorKind::PermissionDenied);
        let hint = permission_hint(&err, Path::new("/run/aziot"));
        assert!(hint.contains("/run/aziot") && hint.contains("service user"));
        assert!(permission_hint(&io::ErrorKind::NotFound.into(), Path::new("/x")).is_empty());
    }
}
