//! A device and its cloud as real processes in one temp dir: a swtpm, keyd-tpm (TPM and Keys
//! Services), the iot-emulator (DPS + IoT Hubs over HTTPS) and identityd-dps, each started on
//! demand and killed on drop; and `aziot-tpm` run against them through the same config files
//! and environment variables an admin's shell would have.

#![allow(dead_code)]

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use testkit::{workspace_bin, ChildGuard, Swtpm};

/// A real TPM's EK (published in Azure/azure-iot-sdk-c issue 2286), for enrollments made on a
/// machine without the device's TPM.
pub const PUBLISHED_EK: &str = concat!(
    "AToAAQALAAMAsgAgg3GXZ0SEs/gakMyNRqXXJP1S124GUgtk8qHaGzMUaaoABgCAAEMAEAgAAAAAAAEAtKEADl/s",
    "NRgmYAjP6gXmbccRaJoTnVixisUaek0OwAzFGN70xt9ZOYp6fhIwfcft3fdVKOrKpXYcTe72CGNkGJGlQz5ti9n2",
    "pQ0uJhcX8aefh4Onm7lVlUCQAVp1K0r6zI8vkEXWsBIvwvxk0eMJbFaq146kbTkJHIGczb89RkFH2TX+CgXeZOG9",
    "oXQzUNwktmTUacspamune5Wywc/ce8HsDFYchyUHogFhrZ/LPnzyTDXO8sSC5z5dvsUBtUME3iRYDyKgZOfBtmRM",
    "qQewD+4iH+ZEJjtsyJiWR8hFhyKROnOuqXfNFwjd5IcNU4wtlKO0cLyXmTOfQK6Da1pr5Q==",
);
pub const PUBLISHED_REGISTRATION_ID: &str = "y5wivfciikcievvnsbpkhzcahwm4chuzx6v4hnqnlqfs3fjf6rxa";

pub struct Device {
    pub dir: tempfile::TempDir,
    pub tpm: Option<Swtpm>,
    keyd: Option<ChildGuard>,
    emulator: Option<ChildGuard>,
    identityd: Option<ChildGuard>,
    /// The emulator's ready line (Null until it runs).
    pub ready: Value,
}

impl Device {
    /// An empty temp dir: no TPM, no daemon.
    pub fn nothing() -> Device {
        let dir = tempfile::Builder::new().prefix("aziot-tpm-cli-").tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("run")).unwrap();
        Device { dir, tpm: None, keyd: None, emulator: None, identityd: None, ready: Value::Null }
    }

    /// A fresh swtpm (no EK or SRK persisted yet) and the tpmd config pointing at it.
    pub fn with_tpm() -> Device {
        let mut device = Device::nothing();
        device.tpm = Some(Swtpm::start());
        device.write_tpmd_config(&device.tpm().tcti());
        device
    }

    /// A swtpm as its maker ships it (EKs persisted, certificates from `ca` in NV, see
    /// `testkit::LocalCa`), and the tpmd config pointing at it.
    pub fn with_manufactured_tpm(ca: &testkit::LocalCa, dates: testkit::CertDates) -> Device {
        let mut device = Device::nothing();
        device.tpm = Some(Swtpm::start_manufactured(ca, dates));
        device.write_tpmd_config(&device.tpm().tcti());
        device
    }

    pub fn tpm(&self) -> &Swtpm {
        self.tpm.as_ref().expect("started with_tpm")
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn tpmd_socket(&self) -> PathBuf {
        self.path("run/tpmd.sock")
    }

    pub fn identityd_socket(&self) -> PathBuf {
        self.path("run/identityd.sock")
    }

    pub fn write_tpmd_config(&self, tcti: &str) {
        let config = format!(
            "tcti = \"{tcti}\"\nhomedir = \"{}\"\n[endpoints]\naziot_tpmd = \"unix://{}\"\n",
            self.path("tpmd").display(),
            self.tpmd_socket().display()
        );
        std::fs::write(self.path("tpmd.toml"), config).unwrap();
    }

    // ---- keyd-tpm ------------------------------------------------------------------------

    /// Starts keyd-tpm, which creates and persists the EK and SRK on a fresh TPM.
    pub fn start_keyd(&mut self) {
        std::fs::write(
            self.path("keyd.toml"),
            format!(
                "[aziot_keys]\nhomedir_path = \"{}\"\n[endpoints]\naziot_keyd = \"unix://{}\"\n",
                self.path("keyd").display(),
                self.path("run/keyd.sock").display()
            ),
        )
        .unwrap();
        let mut command = Command::new(workspace_bin("keyd-tpm"));
        command
            .env("AZIOT_TPMD_CONFIG", self.path("tpmd.toml"))
            .env("AZIOT_TPMD_CONFIG_DIR", self.path("none"))
            .env("AZIOT_KEYD_CONFIG", self.path("keyd.toml"))
            .env("AZIOT_KEYD_CONFIG_DIR", self.path("none"))
            .env("TSS2_LOG", "all+none")
            .env_remove("LISTEN_FDS");
        let log = self.path("keyd-tpm.log");
        let child = spawn(command, &log, &[&self.tpmd_socket(), &self.path("run/keyd.sock")]);
        self.keyd = Some(child);
    }

    /// Stops keyd-tpm; its sockets are gone afterwards.
    pub fn stop_keyd(&mut self) {
        let sockets = [self.tpmd_socket(), self.path("run/keyd.sock")];
        stop(&mut self.keyd, &sockets);
    }

    // ---- the emulator --------------------------------------------------------------------

    pub fn start_emulator(&mut self) {
        let out = self.path("emulator.out");
        let mut command = Command::new(workspace_bin("iot-emulator"));
        command
            .arg("--data-dir")
            .arg(self.path("emulator"))
            .args(["--assigning-ms", "200"])
            .stdout(std::fs::File::create(&out).unwrap());
        let mut child = spawn(command, &self.path("emulator.log"), &[]);
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.ready.is_null() {
            if let Some(Ok(v)) = read(&out).lines().next().map(serde_json::from_str::<Value>) {
                self.ready = v;
                break;
            }
            assert!(child.try_wait().is_none(), "iot-emulator exited:\n{}", read(&self.path("emulator.log")));
            assert!(Instant::now() < deadline, "iot-emulator printed no ready line");
            std::thread::sleep(Duration::from_millis(20));
        }
        self.emulator = Some(child);
    }

    pub fn ready(&self, key: &str) -> String {
        self.ready[key].as_str().unwrap_or_else(|| panic!("no {key} in {}", self.ready)).to_owned()
    }

    pub fn hubs(&self) -> Vec<String> {
        self.ready["hubs"].as_array().unwrap().iter().map(|h| h.as_str().unwrap().to_owned()).collect()
    }

    /// The enrollment as the emulator stored it (its state file, written before it answers).
    pub fn stored_enrollment(&self, registration_id: &str) -> Value {
        let state: Value = serde_json::from_str(&read(&self.path("emulator/state.json"))).unwrap();
        state["enrollments"][registration_id].clone()
    }

    // ---- identityd-dps -------------------------------------------------------------------

    /// Starts identityd-dps against this device's keyd-tpm and the emulator (or, without one, an
    /// address where no DPS listens), with the test's uid as the principal `cli` of `idtype`
    /// (`None`: may do everything).
    pub fn start_identityd(&mut self, idtype: Option<&str>) {
        self.start_identityd_registering_as(idtype, None);
    }

    /// `start_identityd` with `[provisioning.attestation] registration_id` set (`None`: derived
    /// from the EK).
    pub fn start_identityd_registering_as(&mut self, idtype: Option<&str>, registration_id: Option<&str>) {
        self.write_identityd_config(idtype, registration_id);
        self.start_identityd_keeping_config();
    }

    /// Starts identityd-dps with identityd.toml as it is (a test may have edited it).
    pub fn start_identityd_keeping_config(&mut self) {
        let mut command = Command::new(workspace_bin("identityd-dps"));
        command
            .env("AZIOT_IDENTITYD_CONFIG", self.path("identityd.toml"))
            .env("AZIOT_IDENTITYD_CONFIG_DIR", self.path("none"))
            .env_remove("LISTEN_FDS");
        let child = spawn(command, &self.path("identityd.log"), &[&self.identityd_socket()]);
        self.identityd = Some(child);
    }

    /// identityd's config as `start_identityd_registering_as` runs it, without starting it.
    pub fn write_identityd_config(&self, idtype: Option<&str>, registration_id: Option<&str>) {
        let uid = std::fs::metadata(self.dir.path()).unwrap().uid();
        let (dps, scope) = match self.ready.is_null() {
            true => ("https://127.0.0.1:9".to_owned(), "0ne00000001".to_owned()),
            false => (self.ready("dps_endpoint"), self.ready("id_scope")),
        };
        let trust = match self.ready.is_null() {
            true => String::new(),
            false => format!("trust_bundle = \"{}\"\n", self.ready("ca_pem")),
        };
        let idtype = idtype.map(|t| format!("idtype = [\"{t}\"]\n")).unwrap_or_default();
        let run = self.path("run");
        let config = format!(
            "hostname = \"cli-test\"\nhomedir = \"{home}\"\n\
             [provisioning]\nsource = \"dps\"\nglobal_endpoint = \"{dps}\"\nscope_id = \"{scope}\"\n\
             [provisioning.attestation]\nmethod = \"tpm\"\n{registration_id}\
             [cloud]\n{trust}max_backoff_sec = 1\n\
             [endpoints]\naziot_identityd = \"unix://{run}/identityd.sock\"\naziot_keyd = \"unix://{run}/keyd.sock\"\n\
             aziot_tpmd = \"unix://{run}/tpmd.sock\"\n\
             [[principal]]\nuid = {uid}\nname = \"cli\"\n{idtype}",
            home = self.path("identityd").display(),
            run = run.display(),
            registration_id = registration_id.map(|id| format!("registration_id = \"{id}\"\n")).unwrap_or_default(),
        );
        std::fs::write(self.path("identityd.toml"), config).unwrap();
    }

    pub fn stop_identityd(&mut self) {
        let sockets = [self.identityd_socket()];
        stop(&mut self.identityd, &sockets);
    }

    pub fn identityd_log(&self) -> String {
        read(&self.path("identityd.log"))
    }

    // ---- aziot-tpm -----------------------------------------------------------------------

    /// Runs `aziot-tpm` with this device's config files and sockets in its environment (and the
    /// emulator's service connection string, when the emulator runs).
    pub fn cli(&self, args: &[&str]) -> Run {
        self.cli_with(args, &[])
    }

    pub fn cli_with(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        let mut command = Command::new(env!("CARGO_BIN_EXE_aziot-tpm"));
        command
            .args(args)
            .env("AZIOT_TPMD_CONFIG", self.path("tpmd.toml"))
            .env("AZIOT_TPMD_CONFIG_DIR", self.path("none"))
            .env("AZIOT_TPMD_SOCKET", self.tpmd_socket())
            .env("AZIOT_IDENTITYD_CONFIG", self.path("identityd.toml"))
            .env("AZIOT_IDENTITYD_CONFIG_DIR", self.path("none"))
            .env_remove("AZIOT_IDENTITYD_SOCKET")
            .env_remove("AZIOT_IDENTITYD_HOMEDIR")
            .env_remove("AZIOT_DPS_CONNECTION_STRING")
            .env_remove("SSL_CERT_FILE")
            .env_remove("AZIOT_TPM_EK_TRUST_BUNDLE")
            .env_remove("https_proxy")
            .env_remove("HTTPS_PROXY")
            .env_remove("TSS2_LOG");
        if !self.ready.is_null() {
            command.env("AZIOT_DPS_CONNECTION_STRING", self.ready("service_connection_string"));
        }
        for (k, v) in env {
            command.env(k, v);
        }
        Run(command.output().unwrap())
    }

    /// `aziot-tpm enroll` against the emulator, trusting its CA, with `args`.
    pub fn enroll(&self, args: &[&str]) -> Run {
        let ca = self.ready("ca_pem");
        let mut all = vec!["enroll", "--trust-ca", &ca];
        all.extend_from_slice(args);
        self.cli(&all)
    }

    /// Polls `aziot-tpm status -o json` until it exits 0; returns its JSON.
    pub fn wait_provisioned(&self, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let run = self.cli(&["status", "-o", "json"]);
            if run.code() == 0 {
                return run.json();
            }
            assert!(
                Instant::now() < deadline,
                "not provisioned after {timeout:?}: {run:?}\n--- identityd log:\n{}",
                self.identityd_log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// A finished `aziot-tpm` run.
pub struct Run(pub Output);

impl Run {
    pub fn code(&self) -> i32 {
        self.0.status.code().unwrap_or(-1)
    }

    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.0.stdout).into_owned()
    }

    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.0.stderr).into_owned()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.0.stdout).unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self:?}"))
    }

    /// Asserts the exit code, showing both streams if it differs.
    pub fn expect(&self, code: i32) -> &Self {
        assert_eq!(self.code(), code, "{self:?}");
        self
    }
}

impl std::fmt::Debug for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exit {}\n--- stdout:\n{}--- stderr:\n{}", self.code(), self.stdout(), self.stderr())
    }
}

/// Spawns `command` with stderr to `log`, and waits until every socket in `sockets` accepts.
fn spawn(mut command: Command, log: &Path, sockets: &[&Path]) -> ChildGuard {
    command
        .env("AZIOT_LOG", "info")
        .stdin(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap());
    if !sockets.is_empty() {
        command.stdout(Stdio::null());
    }
    let mut child = ChildGuard::spawn(command).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    for socket in sockets {
        while std::os::unix::net::UnixStream::connect(socket).is_err() {
            assert!(child.try_wait().is_none(), "process for {} exited:\n{}", socket.display(), read(log));
            assert!(Instant::now() < deadline, "{} did not appear:\n{}", socket.display(), read(log));
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    child
}

/// SIGTERM, a wait for a clean exit, and the sockets removed so a client sees "no such file".
fn stop(child: &mut Option<ChildGuard>, sockets: &[PathBuf]) {
    if let Some(mut c) = child.take() {
        c.signal(15);
        c.wait_timeout(Duration::from_secs(20));
    }
    for socket in sockets {
        let _ = std::fs::remove_file(socket);
    }
}

pub fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}
