//! systemd socket activation (`LISTEN_FDS`/`LISTEN_PID`/`LISTEN_FDNAMES`).
//!
//! With activation, systemd owns the socket path, its mode and its group, and
//! clients can connect before the daemon has started. One of our processes may be
//! handed several sockets (keyd.sock and tpmd.sock), so sockets are looked up by
//! name; a single passed socket goes to whoever asks first, as upstream does, unless
//! systemd named it after another standard aziot socket unit.

use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixListener;
use std::sync::atomic::{AtomicBool, Ordering};

const SD_LISTEN_FDS_START: RawFd = 3;

/// The environment can be consumed once per process: two owners of one fd would
/// close it twice.
static CONSUMED: AtomicBool = AtomicBool::new(false);

#[derive(Debug, thiserror::Error)]
pub enum SystemdError {
    #[error(
        "invalid {var}={value:?} in the environment (set by systemd socket activation): {reason}"
    )]
    InvalidVar {
        var: &'static str,
        value: String,
        reason: &'static str,
    },
    #[error("systemd passed fd {fd} (LISTEN_FDS) but it is not open: {source}")]
    BadFd { fd: RawFd, source: std::io::Error },
}

/// Sockets passed by systemd, each handed out at most once.
#[derive(Debug, Default)]
pub struct SystemdSockets {
    /// Index `i` is fd `3 + i`; `None` once taken.
    fds: Vec<Option<OwnedFd>>,
    /// `LISTEN_FDNAMES` entries; empty when systemd gave none (or a wrong count).
    names: Vec<String>,
}

impl SystemdSockets {
    /// Takes ownership of the sockets systemd passed to this process and removes
    /// the `LISTEN_*` variables so children do not inherit them.
    ///
    /// Call early in `main`, before other threads read the environment. A second
    /// call returns no sockets.
    pub fn from_env() -> Result<Self, SystemdError> {
        if CONSUMED.swap(true, Ordering::SeqCst) {
            return Ok(Self::default());
        }
        let pid = std::env::var("LISTEN_PID").ok();
        let fds = std::env::var("LISTEN_FDS").ok();
        let names = std::env::var("LISTEN_FDNAMES").ok();
        for var in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] {
            std::env::remove_var(var);
        }
        // SAFETY: getpid has no preconditions.
        let our_pid = unsafe { libc::getpid() };
        Self::from_vars(pid.as_deref(), fds.as_deref(), names.as_deref(), our_pid)
    }

    fn from_vars(
        pid: Option<&str>,
        fds: Option<&str>,
        names: Option<&str>,
        our_pid: libc::pid_t,
    ) -> Result<Self, SystemdError> {
        let (Some(pid), Some(fds)) = (pid, fds) else {
            return Ok(Self::default());
        };
        let pid: libc::pid_t = pid.trim().parse().map_err(|_| SystemdError::InvalidVar {
            var: "LISTEN_PID",
            value: pid.to_owned(),
            reason: "not a process id",
        })?;
        if pid != our_pid {
            log::debug!("ignoring LISTEN_FDS: LISTEN_PID={pid} is not our pid {our_pid}");
            return Ok(Self::default());
        }
        let count: RawFd = fds.trim().parse().map_err(|_| SystemdError::InvalidVar {
            var: "LISTEN_FDS",
            value: fds.to_owned(),
            reason: "not a number",
        })?;
        if !(0..=1024).contains(&count) {
            return Err(SystemdError::InvalidVar {
                var: "LISTEN_FDS",
                value: fds.to_owned(),
                reason: "out of range",
            });
        }

        let mut owned = Vec::with_capacity(count as usize);
        for fd in SD_LISTEN_FDS_START..SD_LISTEN_FDS_START + count {
            set_cloexec(fd).map_err(|source| SystemdError::BadFd { fd, source })?;
            // SAFETY: the socket activation protocol hands these open fds to this
            // process (LISTEN_PID matched, fcntl just proved they are open), and
            // CONSUMED guarantees we create a single owner for each.
            owned.push(Some(unsafe { OwnedFd::from_raw_fd(fd) }));
        }

        let names: Vec<String> = match names {
            Some(names) if count > 0 => names.split(':').map(str::to_owned).collect(),
            _ => Vec::new(),
        };
        let names = if names.len() == owned.len() {
            names
        } else {
            if !names.is_empty() {
                log::warn!(
                    "ignoring LISTEN_FDNAMES: it has {} names but LISTEN_FDS={count}",
                    names.len()
                );
            }
            Vec::new()
        };
        Ok(Self { fds: owned, names })
    }

    /// Number of sockets systemd passed (taken or not).
    pub fn len(&self) -> usize {
        self.fds.len()
    }

    pub fn is_empty(&self) -> bool {
        self.fds.is_empty()
    }

    /// The socket named `name` in `LISTEN_FDNAMES`. When exactly one socket was passed it goes
    /// to the first caller whatever its name (upstream's rule, so custom units keep working),
    /// except when systemd named it after another of the standard aziot socket units
    /// (`aziot-*.socket`): a process serving keyd.sock and tpmd.sock must not answer one API on
    /// the other's socket because its unit passed only one of them.
    pub fn take(&mut self, name: &str) -> Option<UnixListener> {
        let index = if self.fds.len() == 1 {
            match self.names.first() {
                Some(passed) if passed != name && is_standard_unit_name(passed) => return None,
                _ => 0,
            }
        } else {
            self.names.iter().position(|n| n == name)?
        };
        self.take_index(index)
    }

    /// The socket passed as file descriptor `fd` (for `fd://N` endpoints).
    pub fn take_fd(&mut self, fd: RawFd) -> Option<UnixListener> {
        let index = usize::try_from(fd.checked_sub(SD_LISTEN_FDS_START)?).ok()?;
        self.take_index(index)
    }

    /// Describes what was passed, for error messages.
    pub fn describe(&self) -> String {
        if self.fds.is_empty() {
            return "systemd passed no sockets (LISTEN_FDS unset or for another process)".into();
        }
        let names = if self.names.is_empty() {
            "no LISTEN_FDNAMES".to_owned()
        } else {
            format!("LISTEN_FDNAMES={}", self.names.join(":"))
        };
        format!("systemd passed {} socket(s), {names}", self.fds.len())
    }

    fn take_index(&mut self, index: usize) -> Option<UnixListener> {
        self.fds.get_mut(index)?.take().map(UnixListener::from)
    }
}

/// `aziot-keyd.socket`, `aziot-tpmd.socket`, ...: the default `FileDescriptorName=` of the
/// standard units.
fn is_standard_unit_name(name: &str) -> bool {
    name.starts_with("aziot-") && name.ends_with(".socket")
}

fn set_cloexec(fd: RawFd) -> std::io::Result<()> {
    // SAFETY: F_GETFD/F_SETFD only read and write the descriptor flags of `fd`; an
    // invalid fd yields EBADF, which we report.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFD);
        if flags < 0 || libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC) < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    /// Builds a `SystemdSockets` without touching fds 3.. of the test process.
    fn fake(n: usize, names: &[&str]) -> (SystemdSockets, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let fds = (0..n)
            .map(|i| {
                let l = UnixListener::bind(dir.path().join(format!("{i}.sock"))).unwrap();
                Some(OwnedFd::from(l))
            })
            .collect();
        let names = names.iter().map(|s| s.to_string()).collect();
        (SystemdSockets { fds, names }, dir)
    }

    #[test]
    fn single_socket_goes_to_first_caller_whatever_the_name() {
        let (mut s, _d) = fake(1, &["something-else"]);
        assert!(s.take("keyd").is_some());
        assert!(s.take("keyd").is_none());
        assert!(s.take("something-else").is_none());
    }

    #[test]
    fn a_single_standard_socket_is_not_taken_for_another_api() {
        // keyd-tpm asks for tpmd first; a unit that passed only keyd.sock must not get the TPM
        // Service on it.
        let (mut s, _d) = fake(1, &["aziot-keyd.socket"]);
        assert!(s.take("aziot-tpmd.socket").is_none());
        assert!(s.take("aziot-keyd.socket").is_some());
    }

    #[test]
    fn several_sockets_are_taken_by_name() {
        let (mut s, d) = fake(2, &["keyd", "tpmd"]);
        let tpmd = s.take("tpmd").unwrap();
        assert_eq!(
            tpmd.local_addr().unwrap().as_pathname(),
            Some(d.path().join("1.sock").as_path())
        );
        assert!(s.take("nope").is_none());
        assert!(s.take("keyd").is_some());
        assert!(s.take("keyd").is_none());
    }

    #[test]
    fn several_sockets_without_names_cannot_be_chosen_by_name() {
        let (mut s, _d) = fake(2, &[]);
        assert!(s.take("keyd").is_none());
        assert!(s.take_fd(4).is_some());
        assert!(s.take_fd(4).is_none());
        assert!(s.take_fd(2).is_none());
        assert!(s.take_fd(5).is_none());
    }

    #[test]
    fn other_pid_or_no_vars_means_no_sockets() {
        let s = SystemdSockets::from_vars(None, None, None, 1).unwrap();
        assert!(s.is_empty());
        let s = SystemdSockets::from_vars(Some("2"), Some("1"), None, 1).unwrap();
        assert!(s.is_empty());
    }

    #[test]
    fn garbage_vars_are_errors_naming_the_variable() {
        let e = SystemdSockets::from_vars(Some("x"), Some("1"), None, 1).unwrap_err();
        assert!(e.to_string().contains("LISTEN_PID"), "{e}");
        let e = SystemdSockets::from_vars(Some("1"), Some("many"), None, 1).unwrap_err();
        assert!(e.to_string().contains("LISTEN_FDS"), "{e}");
    }

    #[test]
    fn cloexec_is_set_and_closed_fds_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        let l = UnixListener::bind(dir.path().join("s")).unwrap();
        let fd = l.as_raw_fd();
        // SAFETY: fd is open (owned by `l`).
        unsafe { libc::fcntl(fd, libc::F_SETFD, 0) };
        set_cloexec(fd).unwrap();
        // SAFETY: as above.
        let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
        assert_ne!(flags & libc::FD_CLOEXEC, 0);
        // Far above any fd this process opens, so never valid.
        assert!(set_cloexec(1_000_000).is_err());
    }
}
