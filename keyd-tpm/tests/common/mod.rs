//! A keyd-tpm daemon process for tests: its own config dirs (tpmd and keyd), state dirs and
//! sockets in a temp dir, talking to the test's own swtpm; SIGKILLed on drop.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use aziot_tpm_common::{b64, from_b64};
use testkit::http::{self, Response};
use testkit::{ChildGuard, Swtpm};

pub const API: &str = "api-version=2020-09-01";
/// What upstream's Keys Service clients send today.
pub const KEYD_API: &str = "api-version=2021-05-01";

pub struct Daemon {
    pub dir: tempfile::TempDir,
    pub tcti: String,
    pub extra_config: String,
    /// Extra TOML appended to the keyd config (principals, preloaded keys).
    pub keyd_extra_config: String,
    /// RLIMIT_NOFILE (soft and hard) to start the daemon with, as a unit's `LimitNOFILE=`.
    pub open_file_limit: Option<u64>,
    child: Option<ChildGuard>,
}

impl Daemon {
    /// Starts keyd-tpm against `tpm` with a fresh temp dir.
    pub fn start(tpm: &Swtpm) -> Self {
        Self::start_with(tpm, "")
    }

    /// Starts keyd-tpm with extra TOML appended to its tpmd config.
    pub fn start_with(tpm: &Swtpm, extra_config: &str) -> Self {
        let mut daemon = Self::start_with_result(tpm, extra_config);
        daemon.spawn().expect("keyd-tpm did not start");
        daemon
    }

    /// Starts keyd-tpm with extra TOML appended to its keyd config.
    pub fn start_keyd(tpm: &Swtpm, keyd_extra_config: &str) -> Self {
        let mut daemon = Self::start_with_result(tpm, "");
        daemon.keyd_extra_config = keyd_extra_config.to_owned();
        daemon.spawn().expect("keyd-tpm did not start");
        daemon
    }

    /// A daemon that is configured but not started (call `spawn`).
    pub fn start_with_result(tpm: &Swtpm, extra_config: &str) -> Self {
        let dir = tempfile::Builder::new().prefix("keyd-tpm-").tempdir().expect("temp dir");
        Self { dir, tcti: tpm.tcti(), extra_config: extra_config.to_owned(), keyd_extra_config: String::new(), open_file_limit: None, child: None }
    }

    pub fn tpmd_socket(&self) -> PathBuf {
        self.dir.path().join("run/tpmd.sock")
    }

    pub fn homedir(&self) -> PathBuf {
        self.dir.path().join("home")
    }

    pub fn keyd_socket(&self) -> PathBuf {
        self.dir.path().join("run/keyd.sock")
    }

    /// The keyd homedir (`[aziot_keys] homedir_path`); keys live in its `keys/`.
    pub fn keyd_homedir(&self) -> PathBuf {
        self.dir.path().join("keyd-home")
    }

    pub fn keys_dir(&self) -> PathBuf {
        self.keyd_homedir().join("keys")
    }

    fn write_config(&self) {
        let config_dir = self.dir.path().join("config.d");
        std::fs::create_dir_all(&config_dir).unwrap();
        let config = format!(
            "tcti = \"{}\"\nhomedir = \"{}\"\n{}\n\n[endpoints]\naziot_tpmd = \"unix://{}\"\n",
            self.tcti,
            self.homedir().display(),
            self.extra_config,
            self.tpmd_socket().display(),
        );
        std::fs::write(self.dir.path().join("config.toml"), config).unwrap();

        std::fs::create_dir_all(self.dir.path().join("keyd.d")).unwrap();
        let keyd = format!(
            "[aziot_keys]\nhomedir_path = \"{}\"\n\n[endpoints]\naziot_keyd = \"unix://{}\"\n\n{}\n",
            self.keyd_homedir().display(),
            self.keyd_socket().display(),
            self.keyd_extra_config,
        );
        std::fs::write(self.dir.path().join("keyd.toml"), keyd).unwrap();
    }

    /// Runs the daemon and waits for its socket; Err carries its stderr if it exited.
    pub fn spawn(&mut self) -> Result<(), String> {
        self.write_config();
        let _ = std::fs::remove_file(self.tpmd_socket());
        let _ = std::fs::remove_file(self.keyd_socket());
        let log = std::fs::File::create(self.dir.path().join("keyd-tpm.log")).unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_keyd-tpm"));
        command
            .env("AZIOT_TPMD_CONFIG", self.dir.path().join("config.toml"))
            .env("AZIOT_TPMD_CONFIG_DIR", self.dir.path().join("config.d"))
            .env("AZIOT_KEYD_CONFIG", self.dir.path().join("keyd.toml"))
            .env("AZIOT_KEYD_CONFIG_DIR", self.dir.path().join("keyd.d"))
            .env("AZIOT_LOG", "debug")
            // keyd-tpm turns libtss2's log off itself unless TSS2_LOG is set.
            .env_remove("TSS2_LOG")
            .env_remove("LISTEN_FDS")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        if let Some(limit) = self.open_file_limit {
            use std::os::unix::process::CommandExt;
            // rlim_t is 32 bits on armhf.
            #[allow(clippy::useless_conversion)]
            let limit = libc::rlim_t::try_from(limit).expect("the open-file limit fits rlim_t");
            // SAFETY: setrlimit is async-signal-safe and touches only the child.
            unsafe {
                command.pre_exec(move || {
                    let l = libc::rlimit { rlim_cur: limit, rlim_max: limit };
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &l) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let mut child = ChildGuard::spawn(command).map_err(|e| e.to_string())?;
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while std::time::Instant::now() < deadline {
            let up = |p: PathBuf| std::os::unix::net::UnixStream::connect(p).is_ok();
            if up(self.tpmd_socket()) && up(self.keyd_socket()) {
                self.child = Some(child);
                return Ok(());
            }
            if child.try_wait().is_some() {
                return Err(format!("keyd-tpm exited:\n{}", self.log()));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Err(format!("keyd-tpm socket did not appear:\n{}", self.log()))
    }

    /// Whether the daemon process is still alive.
    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| c.try_wait().is_none())
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("keyd-tpm.log")).unwrap_or_default()
    }

    /// SIGTERM, then waits; returns whether it exited with status 0.
    pub fn terminate(&mut self) -> bool {
        let Some(mut child) = self.child.take() else { return false };
        child.signal(libc::SIGTERM);
        let status = child.wait_timeout(Duration::from_secs(15));
        status.map(|s| s.success()).unwrap_or(false)
    }

    /// SIGKILL (a crash).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill();
        }
    }

    pub fn restart(&mut self) {
        assert!(self.terminate(), "keyd-tpm did not exit cleanly on SIGTERM:\n{}", self.log());
        self.spawn().expect("keyd-tpm did not restart");
    }

    pub fn get(&self, path: &str) -> Response {
        http::request(&self.tpmd_socket(), "GET", &format!("{path}?{API}"), None).expect("request")
    }

    pub fn post(&self, path: &str, body: &serde_json::Value) -> Response {
        http::json(&self.tpmd_socket(), "POST", &format!("{path}?{API}"), body).expect("request")
    }

    /// (EK, SRK) as TPM2B_PUBLIC bytes.
    pub fn tpm_keys(&self) -> (Vec<u8>, Vec<u8>) {
        let r = self.get("/get_tpm_keys");
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        let v = r.json();
        (
            from_b64(v["endorsement_key"].as_str().unwrap()).unwrap(),
            from_b64(v["storage_root_key"].as_str().unwrap()).unwrap(),
        )
    }

    pub fn import(&self, blob: &[u8]) -> Response {
        self.post("/import_auth_key", &serde_json::json!({ "key": b64(blob) }))
    }

    pub fn sign(&self, data: &[u8]) -> Response {
        self.post("/sign_with_auth_key", &serde_json::json!({ "data": b64(data) }))
    }

    /// HMAC with the auth key; panics unless the daemon answers 200.
    pub fn sign_ok(&self, data: &[u8]) -> Vec<u8> {
        let r = self.sign(data);
        assert_eq!(r.status, 200, "sign failed: {}\n{}", String::from_utf8_lossy(&r.body), self.log());
        from_b64(r.json()["digest"].as_str().unwrap()).unwrap()
    }
}

/// Keys Service requests over the keyd socket (api-version 2021-05-01).
impl Daemon {
    pub fn keyd(&self, method: &str, path: &str, body: Option<&serde_json::Value>) -> Response {
        let body = body.map(|b| b.to_string());
        http::request(
            &self.keyd_socket(),
            method,
            &with_api(path),
            body.as_deref().map(str::as_bytes),
        )
        .expect("keyd request")
    }

    pub fn keyd_get(&self, path: &str) -> Response {
        self.keyd("GET", path, None)
    }

    pub fn keyd_post(&self, path: &str, body: &serde_json::Value) -> Response {
        self.keyd("POST", path, Some(body))
    }

    pub fn keyd_delete(&self, path: &str, body: &serde_json::Value) -> Response {
        self.keyd("DELETE", path, Some(body))
    }

    /// The same request made by a process running as `uid` (the daemon sees it through
    /// SO_PEERCRED). Opens the temp dir and keyd socket to other users first.
    pub fn keyd_as(
        &self,
        uid: u32,
        method: &str,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Response {
        use std::os::unix::fs::PermissionsExt;
        for dir in [self.dir.path().to_owned(), self.dir.path().join("run")] {
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        std::fs::set_permissions(self.keyd_socket(), std::fs::Permissions::from_mode(0o666))
            .unwrap();
        let body = body.map(|b| b.to_string());
        request_as_uid(
            uid,
            &self.keyd_socket(),
            method,
            &with_api(path),
            body.as_deref().map(str::as_bytes),
        )
    }
}

fn with_api(path: &str) -> String {
    let sep = if path.contains('?') { '&' } else { '?' };
    format!("{path}{sep}{KEYD_API}")
}

/// One HTTP/1.1 request from a forked child that drops to `uid` before it connects. The child
/// only makes system calls on buffers prepared before the fork (no allocation, no locks), so
/// forking the multi-threaded test process is safe.
pub fn request_as_uid(
    uid: u32,
    socket: &Path,
    method: &str,
    path_and_query: &str,
    body: Option<&[u8]>,
) -> Response {
    use std::os::unix::ffi::OsStrExt;
    let mut request =
        format!("{method} {path_and_query} HTTP/1.1\r\nHost: keyd.sock\r\nConnection: close\r\n");
    if let Some(b) = body {
        request.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            b.len()
        ));
    }
    request.push_str("\r\n");
    let mut request = request.into_bytes();
    request.extend_from_slice(body.unwrap_or_default());

    // SAFETY: sockaddr_un is plain old data; zeroed is a valid value.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let path = socket.as_os_str().as_bytes();
    assert!(path.len() < addr.sun_path.len(), "socket path too long");
    for (dst, src) in addr.sun_path.iter_mut().zip(path) {
        *dst = *src as libc::c_char;
    }
    let mut pipe = [0; 2];
    // SAFETY: pipe writes two fds into the array.
    assert_eq!(unsafe { libc::pipe(pipe.as_mut_ptr()) }, 0);
    // SAFETY: the child only calls async-signal-safe functions and _exit.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        // SAFETY: system calls on prepared buffers only; the child never returns.
        unsafe {
            libc::close(pipe[0]);
            if libc::setgroups(0, std::ptr::null()) != 0
                || libc::setgid(uid) != 0
                || libc::setuid(uid) != 0
            {
                libc::_exit(2);
            }
            let s = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0);
            let len = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
            if s < 0 || libc::connect(s, std::ptr::addr_of!(addr).cast(), len) != 0 {
                libc::_exit(3);
            }
            let mut sent = 0;
            while sent < request.len() {
                let n = libc::write(s, request.as_ptr().add(sent).cast(), request.len() - sent);
                if n <= 0 {
                    libc::_exit(4);
                }
                sent += n as usize;
            }
            let mut buf = [0u8; 4096];
            loop {
                let n = libc::read(s, buf.as_mut_ptr().cast(), buf.len());
                if n <= 0 {
                    break;
                }
                let mut off = 0;
                while off < n as usize {
                    let w = libc::write(pipe[1], buf.as_ptr().add(off).cast(), n as usize - off);
                    if w <= 0 {
                        libc::_exit(5);
                    }
                    off += w as usize;
                }
            }
            libc::_exit(0);
        }
    }
    // SAFETY: closing our copy of the write end; reading the child's output from the read end.
    let raw = unsafe {
        use std::io::Read;
        use std::os::fd::FromRawFd;
        libc::close(pipe[1]);
        let mut out = Vec::new();
        std::fs::File::from_raw_fd(pipe[0])
            .read_to_end(&mut out)
            .unwrap();
        out
    };
    let mut status = 0;
    // SAFETY: reaping our own child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "client as uid {uid} failed (status {status:#x})"
    );
    parse_response(&raw)
}

/// Status and body of a `Connection: close` response with a Content-Length.
fn parse_response(raw: &[u8]) -> Response {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("HTTP response head");
    let head = String::from_utf8_lossy(&raw[..split]);
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status code");
    let length = head.lines().find_map(|l| {
        l.to_ascii_lowercase()
            .strip_prefix("content-length:")
            .map(|v| v.trim().parse::<usize>().unwrap())
    });
    let rest = &raw[split + 4..];
    Response {
        status,
        body: rest[..length.unwrap_or(rest.len()).min(rest.len())].to_vec(),
    }
}

/// HMAC-SHA256 in software, the reference for what the TPM computes.
pub fn hmac_sha256(key: &[u8], data: &[u8]) -> Vec<u8> {
    use openssl::{hash::MessageDigest, pkey::PKey, sign::Signer};
    let key = PKey::hmac(key).unwrap();
    let mut signer = Signer::new(MessageDigest::sha256(), &key).unwrap();
    signer.update(data).unwrap();
    signer.sign_to_vec().unwrap()
}

/// A DPS authenticationKey for this daemon's TPM carrying `hmac_key`.
pub fn blob_for(daemon: &Daemon, hmac_key: &[u8]) -> Vec<u8> {
    let (ek, srk) = daemon.tpm_keys();
    dps_attestation::build_authentication_key(&ek, &srk, hmac_key).expect("build blob")
}

/// TPM owner settings for `tcti` with state in `state_dir`: auth key index 0x100, no hierarchy
/// passwords, the daemon's parameter encryption.
pub fn tpm_settings(tcti: String, state_dir: &Path) -> keyd_tpm::tpm::TpmSettings {
    keyd_tpm::tpm::TpmSettings {
        tcti,
        auth_key_index: 0x100,
        endorsement_auth: Default::default(),
        owner_auth: Default::default(),
        state_dir: state_dir.to_owned(),
        parameter_encryption: Default::default(),
    }
}

pub fn path_exists(p: &Path) -> bool {
    p.exists()
}
