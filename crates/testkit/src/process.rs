use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// A child process that is killed (SIGKILL) and reaped when dropped, and that the kernel kills
/// if the parent dies first.
#[derive(Debug)]
pub struct ChildGuard {
    child: Option<Child>,
}

impl ChildGuard {
    pub fn spawn(mut command: Command) -> std::io::Result<Self> {
        no_inherited_fds(&mut command);
        // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
        unsafe {
            command.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        Ok(Self { child: Some(command.spawn()?) })
    }

    pub fn id(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    /// Sends a signal (e.g. `libc::SIGTERM`) without waiting.
    pub fn signal(&self, signal: i32) {
        if let Some(child) = &self.child {
            // SAFETY: plain kill(2) on our own child's pid.
            unsafe { libc::kill(child.id() as libc::pid_t, signal) };
        }
    }

    /// Returns the exit status if the process has ended.
    pub fn try_wait(&mut self) -> Option<std::process::ExitStatus> {
        self.child.as_mut().and_then(|c| c.try_wait().ok().flatten())
    }

    /// Waits up to `timeout` for the process to end by itself.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Kills and reaps the process now.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The child's stdout, if it was spawned with `Stdio::piped()`.
    pub fn stdout(&mut self) -> Option<&mut std::process::ChildStdout> {
        self.child.as_mut().and_then(|c| c.stdout.as_mut())
    }

    /// Takes the child out of the guard (the caller then owns its lifetime).
    pub fn into_inner(mut self) -> Child {
        self.child.take().expect("child already taken")
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Keeps the child from inheriting descriptors beyond stdin, stdout and stderr. The TSS's TCTI
/// libraries open their sockets without close-on-exec; a child spawned while another test's TPM
/// connection is open would hold that connection, and swtpm, which serves one connection at a
/// time, would wait on it for as long as the child lives.
pub fn no_inherited_fds(command: &mut Command) -> &mut Command {
    // SAFETY: only system calls, no allocation: async-signal-safe.
    unsafe {
        command.pre_exec(|| {
            // close_range(3, ~0, CLOSE_RANGE_CLOEXEC): the descriptors close at exec, std's own
            // exec-status pipe keeps working until then.
            if libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 4u32) != 0 {
                for fd in 3..4096 {
                    libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
                }
            }
            Ok(())
        });
    }
    command
}

/// Waits until `path` exists, up to `timeout`; false if it never appeared.
pub fn wait_for_path(path: &Path, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if path.exists() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    path.exists()
}
