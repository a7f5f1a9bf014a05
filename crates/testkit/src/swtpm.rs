use std::net::{Ipv4Addr, TcpStream};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::ek_ca::{CertDates, LocalCa};
use crate::process::ChildGuard;

/// An isolated swtpm (TPM 2.0 simulator) for one test: its own state dir, its own port pair,
/// run in the foreground as our child and killed on drop. A fresh state dir means fresh seeds,
/// so every instance has its own EK and SRK.
pub struct Swtpm {
    state: tempfile::TempDir,
    port: u16,
    child: Option<ChildGuard>,
}

impl Swtpm {
    /// Starts a swtpm on a fresh state dir and free ports; panics with swtpm's error if it cannot.
    pub fn start() -> Self {
        Self::start_in(Self::state_dir_new())
    }

    /// Starts a swtpm manufactured by `ca` (see [`LocalCa::manufacture`]): RSA and ECC EKs
    /// persisted, their certificates in NV, valid as `dates` says.
    pub fn start_manufactured(ca: &LocalCa, dates: CertDates) -> Self {
        let state = Self::state_dir_new();
        ca.manufacture(state.path(), dates);
        Self::start_in(state)
    }

    fn state_dir_new() -> tempfile::TempDir {
        tempfile::Builder::new()
            .prefix("swtpm-")
            .tempdir()
            .expect("create swtpm state dir")
    }

    fn start_in(state: tempfile::TempDir) -> Self {
        let mut last_error = String::new();
        for _ in 0..20 {
            let port = crate::free_port_pair();
            match spawn(state.path(), port) {
                Ok(child) => return Self { state, port, child: Some(child) },
                Err(e) => last_error = e,
            }
        }
        panic!("could not start swtpm: {last_error}");
    }

    /// The TCTI string for tss-esapi and tpm2-tools.
    pub fn tcti(&self) -> String {
        format!("swtpm:host=127.0.0.1,port={}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn state_dir(&self) -> &Path {
        self.state.path()
    }

    /// Stops the simulator's process (SIGSTOP) until the guard is dropped (SIGCONT): a TPM
    /// that answers as late as the test wants, with nothing lost.
    pub fn pause(&self) -> Paused {
        let pid = self.child.as_ref().map(|c| c.id()).expect("swtpm is running");
        Paused::signal(pid)
    }

    /// Kills the simulator; its state stays on disk.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill();
        }
    }

    /// Starts it again on the same state dir and ports (persistent handles survive).
    pub fn restart(&mut self) {
        self.stop();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match spawn(self.state.path(), self.port) {
                Ok(child) => {
                    self.child = Some(child);
                    return;
                }
                Err(e) if Instant::now() > deadline => panic!("swtpm restart failed: {e}"),
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    /// Runs a tpm2-tools command (e.g. `tpm2("tpm2_getcap", &["handles-persistent"], dir)`)
    /// against this TPM, in `cwd`, and returns its output.
    pub fn tpm2(&self, tool: &str, args: &[&str], cwd: &Path) -> Output {
        let mut command = Command::new(tool);
        crate::process::no_inherited_fds(&mut command)
            .args(args)
            .current_dir(cwd)
            .env("TPM2TOOLS_TCTI", self.tcti())
            .env("TSS2_LOG", "all+none")
            .output()
            .unwrap_or_else(|e| panic!("cannot run {tool} ({e}); install tpm2-tools"))
    }

    /// Persists, with tpm2-tools (a TPM client independent of ours), the TCG default EK at
    /// 0x81010001 and upstream aziot's SRK at 0x81000001, as a device SDK would find them.
    /// Leaves `ek.pub`, `srk.pub` (TPM2B_PUBLIC with its size prefix) and `srk.name` in `cwd` and
    /// returns the two public areas.
    pub fn tpm2_provision_ek_srk(&self, cwd: &Path) -> (Vec<u8>, Vec<u8>) {
        // TCG default EK (RSA-2048, AES-128-CFB, 256 zero bytes unique), created straight into
        // the persistent handle; `-u` writes the TPM2B_PUBLIC with its size prefix.
        self.tpm2_ok("tpm2_createek", &["-c", "0x81010001", "-G", "rsa", "-u", "ek.pub"], cwd);
        // aziot SRK: `-u` takes a little-endian u16 length, then the unique bytes (256 zeros).
        let mut unique = 256u16.to_le_bytes().to_vec();
        unique.extend_from_slice(&[0; 256]);
        std::fs::write(cwd.join("srk.unique"), unique).expect("write srk.unique");
        self.tpm2_ok(
            "tpm2_createprimary",
            &[
                "-C",
                "o",
                "-G",
                "rsa2048:null:aes128cfb",
                "-a",
                "fixedtpm|fixedparent|sensitivedataorigin|userwithauth|noda|restricted|decrypt",
                "-u",
                "srk.unique",
                "-c",
                "srk.ctx",
            ],
            cwd,
        );
        self.tpm2_ok("tpm2_evictcontrol", &["-C", "o", "-c", "srk.ctx", "0x81000001"], cwd);
        self.tpm2_ok("tpm2_flushcontext", &["-t"], cwd);
        self.tpm2_ok(
            "tpm2_readpublic",
            &["-c", "0x81000001", "-f", "tss", "-o", "srk.pub", "-n", "srk.name"],
            cwd,
        );
        let read = |name: &str| std::fs::read(cwd.join(name)).expect("tpm2-tools output");
        (read("ek.pub"), read("srk.pub"))
    }

    /// Like [`Swtpm::tpm2`] but panics, with the tool's stderr, unless it succeeds.
    pub fn tpm2_ok(&self, tool: &str, args: &[&str], cwd: &Path) -> Vec<u8> {
        let out = self.tpm2(tool, args, cwd);
        assert!(
            out.status.success(),
            "{tool} {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }
}

impl Drop for Swtpm {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Runs swtpm in the foreground on `dir` with ports (port, port+1) and waits until it listens.
fn spawn(dir: &Path, port: u16) -> Result<ChildGuard, String> {
    let mut command = Command::new("swtpm");
    command
        .arg("socket")
        .arg("--tpm2")
        .arg("--tpmstate")
        .arg(format!("dir={}", dir.display()))
        .arg("--server")
        .arg(format!("type=tcp,port={port},bindaddr=127.0.0.1"))
        .arg("--ctrl")
        .arg(format!("type=tcp,port={},bindaddr=127.0.0.1", port + 1))
        .arg("--flags")
        .arg("not-need-init,startup-clear")
        .arg("--log")
        .arg(format!("file={}", dir.join("swtpm.log").display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = ChildGuard::spawn(command).map_err(|e| {
        format!("cannot run swtpm ({e}); install it with: apt-get install swtpm swtpm-tools")
    })?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        // Both ports: the swtpm TCTI talks to the control port (P+1) while it initializes, and
        // swtpm opens the two one after the other.
        let listening = |p: u16| TcpStream::connect((Ipv4Addr::LOCALHOST, p)).is_ok();
        if listening(port) && listening(port + 1) {
            return Ok(child);
        }
        if let Some(status) = child.try_wait() {
            let mut stderr = String::new();
            if let Some(mut err) = child.into_inner().stderr.take() {
                use std::io::Read;
                let _ = err.read_to_string(&mut stderr);
            }
            return Err(format!("swtpm exited with {status}: {stderr}"));
        }
        if Instant::now() > deadline {
            return Err("swtpm did not listen within 10 s".into());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A paused swtpm (see [`Swtpm::pause`]); it runs again when this is dropped.
pub struct Paused(libc::pid_t);

impl Paused {
    fn signal(pid: u32) -> Self {
        let pid = libc::pid_t::try_from(pid).expect("pid");
        // SAFETY: kill has no memory preconditions; the pid is our own running child.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0, "SIGSTOP swtpm");
        Paused(pid)
    }
}

impl Drop for Paused {
    fn drop(&mut self) {
        // SAFETY: as above.
        unsafe { libc::kill(self.0, libc::SIGCONT) };
    }
}
