//! A keyd-tpm daemon process for tests: its own config dir, state dir and socket in a temp dir,
//! talking to the test's own swtpm; SIGKILLed on drop.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use aziot_tpm_common::{b64, from_b64};
use testkit::http::{self, Response};
use testkit::{ChildGuard, Swtpm};

pub const API: &str = "api-version=2020-09-01";

pub struct Daemon {
    pub dir: tempfile::TempDir,
    pub tcti: String,
    pub extra_config: String,
    child: Option<ChildGuard>,
}

impl Daemon {
    /// Starts keyd-tpm against `tpm` with a fresh temp dir.
    pub fn start(tpm: &Swtpm) -> Self {
        Self::start_with(tpm, "")
    }

    /// Starts keyd-tpm with extra TOML appended to its tpmd config.
    pub fn start_with(tpm: &Swtpm, extra_config: &str) -> Self {
        let dir = tempfile::Builder::new().prefix("keyd-tpm-").tempdir().expect("temp dir");
        let mut daemon = Self { dir, tcti: tpm.tcti(), extra_config: extra_config.to_owned(), child: None };
        daemon.spawn().expect("keyd-tpm did not start");
        daemon
    }

    /// A daemon that is configured but not started (call `spawn`).
    pub fn start_with_result(tpm: &Swtpm, extra_config: &str) -> Self {
        let dir = tempfile::Builder::new().prefix("keyd-tpm-").tempdir().expect("temp dir");
        Self { dir, tcti: tpm.tcti(), extra_config: extra_config.to_owned(), child: None }
    }

    pub fn tpmd_socket(&self) -> PathBuf {
        self.dir.path().join("run/tpmd.sock")
    }

    pub fn homedir(&self) -> PathBuf {
        self.dir.path().join("home")
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
    }

    /// Runs the daemon and waits for its socket; Err carries its stderr if it exited.
    pub fn spawn(&mut self) -> Result<(), String> {
        self.write_config();
        let _ = std::fs::remove_file(self.tpmd_socket());
        let log = std::fs::File::create(self.dir.path().join("keyd-tpm.log")).unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_keyd-tpm"));
        command
            .env("AZIOT_TPMD_CONFIG", self.dir.path().join("config.toml"))
            .env("AZIOT_TPMD_CONFIG_DIR", self.dir.path().join("config.d"))
            .env("AZIOT_LOG", "debug")
            .env("TSS2_LOG", "all+none")
            .env_remove("LISTEN_FDS")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        let mut child = ChildGuard::spawn(command).map_err(|e| e.to_string())?;
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while std::time::Instant::now() < deadline {
            if self.tpmd_socket().exists() && std::os::unix::net::UnixStream::connect(self.tpmd_socket()).is_ok() {
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

pub fn path_exists(p: &Path) -> bool {
    p.exists()
}
