//! One device and its cloud, all real processes on loopback: a swtpm, keyd-tpm (Keys and TPM
//! Services), the iot-emulator (DPS + IoT Hubs over HTTPS) and identityd-dps, each with its config
//! and state in one temp dir, killed on drop. The device is enrolled in the emulator with the EK
//! read from its TPM, as an operator would.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use testkit::http::Response;
use testkit::{workspace_bin, ChildGuard, Swtpm};

pub use crate::tokens::{enc, now};
use crate::tokens::{owner_token, parse_connection_string};

pub const API: &str = "api-version=2021-12-01";

/// Environments alive at once: each is four processes and a swtpm, and testkit picks swtpm's
/// port pair among the ephemeral ports our own HTTPS connections also use, so too many at once
/// on a small CI machine makes both slow and flaky.
const MAX_ENVS: usize = 5;

static ENVS: (std::sync::Mutex<usize>, std::sync::Condvar) =
    (std::sync::Mutex::new(0), std::sync::Condvar::new());

/// A place among the [`MAX_ENVS`] running environments, given back on drop.
struct Slot;

impl Slot {
    fn take() -> Slot {
        let (count, freed) = &ENVS;
        let mut n = count
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        while *n >= MAX_ENVS {
            n = freed
                .wait(n)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        *n += 1;
        Slot
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let (count, freed) = &ENVS;
        *count
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) -= 1;
        freed.notify_one();
    }
}

/// testkit's swtpm start can fail to find a free port pair under load; try again.
fn start_swtpm() -> Swtpm {
    for _ in 0..4 {
        if let Ok(tpm) = std::panic::catch_unwind(Swtpm::start) {
            return tpm;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Swtpm::start()
}

/// How the environment is set up.
#[derive(Default, Clone)]
pub struct Options {
    /// Extra `iot-emulator` arguments (faults, timings).
    pub emulator_args: Vec<String>,
    /// Top-level identityd TOML (before any table).
    pub identityd_top: String,
    /// Extra keys of identityd's `[cloud]` table.
    pub cloud: String,
    /// `[[principal]]` tables for identityd.
    pub principals: String,
    /// Extra fields of the enrollment (merged into the PUT body); `None`: do not enroll.
    pub enrollment: Option<Value>,
    /// JSON written to a payload file referenced by `provisioning.payload`.
    pub payload: Option<Value>,
    /// Environment variables for identityd-dps (e.g. `https_proxy`).
    pub identityd_env: Vec<(String, String)>,
}

impl Options {
    pub fn enrolled() -> Self {
        Options {
            enrollment: Some(json!({})),
            ..Options::default()
        }
    }
}

pub struct Env {
    pub dir: tempfile::TempDir,
    pub tpm: Swtpm,
    pub options: Options,
    pub ready: Value,
    pub registration_id: String,
    pub endorsement_key: String,
    keyd: Option<ChildGuard>,
    emulator: Option<ChildGuard>,
    identityd: Option<ChildGuard>,
    identityd_runs: usize,
    /// Dropped last: the processes above are gone before the slot is given back.
    _slot: Slot,
}

impl Env {
    /// Starts the TPM, keyd-tpm and the emulator, enrolls the device (if asked), and starts
    /// identityd-dps (without waiting for provisioning).
    pub fn start(options: Options) -> Env {
        let slot = Slot::take();
        let dir = tempfile::Builder::new()
            .prefix("identityd-e2e-")
            .tempdir()
            .unwrap();
        let tpm = start_swtpm();
        let mut env = Env {
            dir,
            tpm,
            options,
            ready: Value::Null,
            registration_id: String::new(),
            endorsement_key: String::new(),
            keyd: None,
            emulator: None,
            identityd: None,
            identityd_runs: 0,
            _slot: slot,
        };
        env.start_keyd();
        env.start_emulator();
        let keys = env.tpmd("GET", "/get_tpm_keys", None);
        assert_eq!(keys.status, 200, "{}", String::from_utf8_lossy(&keys.body));
        env.endorsement_key = keys.json()["endorsement_key"].as_str().unwrap().to_owned();
        let ek = aziot_tpm_common::from_b64(&env.endorsement_key).unwrap();
        env.registration_id = aziot_tpm_common::registration_id(&ek);
        if let Some(extra) = env.options.enrollment.clone() {
            env.enroll(extra);
        }
        env.start_identityd();
        env
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn identityd_socket(&self) -> PathBuf {
        self.path("run/identityd.sock")
    }

    pub fn homedir(&self) -> PathBuf {
        self.path("identityd")
    }

    // ---- keyd-tpm -------------------------------------------------------------------------

    pub fn start_keyd(&mut self) {
        std::fs::create_dir_all(self.path("run")).unwrap();
        std::fs::write(
            self.path("tpmd.toml"),
            format!(
                "tcti = \"{}\"\nhomedir = \"{}\"\n[endpoints]\naziot_tpmd = \"unix://{}\"\n",
                self.tpm.tcti(),
                self.path("tpmd").display(),
                self.path("run/tpmd.sock").display()
            ),
        )
        .unwrap();
        std::fs::write(
            self.path("keyd.toml"),
            format!(
                "[aziot_keys]\nhomedir_path = \"{}\"\n[endpoints]\naziot_keyd = \"unix://{}\"\n",
                self.path("keyd").display(),
                self.path("run/keyd.sock").display()
            ),
        )
        .unwrap();
        for sock in ["run/tpmd.sock", "run/keyd.sock"] {
            let _ = std::fs::remove_file(self.path(sock));
        }
        let log = std::fs::File::create(self.path("keyd-tpm.log")).unwrap();
        let mut command = Command::new(workspace_bin("keyd-tpm"));
        command
            .env("AZIOT_TPMD_CONFIG", self.path("tpmd.toml"))
            .env("AZIOT_TPMD_CONFIG_DIR", self.path("tpmd.d"))
            .env("AZIOT_KEYD_CONFIG", self.path("keyd.toml"))
            .env("AZIOT_KEYD_CONFIG_DIR", self.path("keyd.d"))
            .env("AZIOT_LOG", "info")
            .env("TSS2_LOG", "all+none")
            .env_remove("LISTEN_FDS")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        let mut child = ChildGuard::spawn(command).unwrap();
        for sock in ["run/tpmd.sock", "run/keyd.sock"] {
            wait_socket(&self.path(sock), &mut child, || {
                read(&self.path("keyd-tpm.log"))
            });
        }
        self.keyd = Some(child);
    }

    pub fn stop_keyd(&mut self) {
        if let Some(mut child) = self.keyd.take() {
            child.signal(libc::SIGTERM);
            child.wait_timeout(Duration::from_secs(15));
        }
    }

    pub fn tpmd(&self, method: &str, path: &str, body: Option<Value>) -> Response {
        let path = format!("{path}?api-version=2020-09-01");
        let sock = self.path("run/tpmd.sock");
        match body {
            Some(b) => testkit::http::json(&sock, method, &path, &b).unwrap(),
            None => testkit::http::request(&sock, method, &path, None).unwrap(),
        }
    }

    pub fn keyd(&self, method: &str, path: &str, body: Value) -> Response {
        let path = format!("{path}?api-version=2021-05-01");
        testkit::http::json(&self.path("run/keyd.sock"), method, &path, &body).unwrap()
    }

    // ---- the emulator ---------------------------------------------------------------------

    fn start_emulator(&mut self) {
        let (child, ready) = testkit::emulator::start(
            &self.path("emulator"),
            &self.options.emulator_args,
            &self.path("emulator.log"),
        );
        self.ready = ready;
        self.emulator = Some(child);
    }

    pub fn ca_pem(&self) -> String {
        self.ready["ca_pem"].as_str().unwrap().to_owned()
    }

    pub fn hubs(&self) -> Vec<String> {
        self.ready["hubs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h.as_str().unwrap().to_owned())
            .collect()
    }

    pub fn emulator_log(&self) -> String {
        read(&self.path("emulator.log"))
    }

    /// An HTTPS call trusting the emulator's CA: (status, JSON body or Null).
    pub fn https(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: Option<Value>,
    ) -> (u16, Value) {
        let client = cloud_http::Client::builder()
            .trust_ca_file(self.ca_pem())
            .timeout(Duration::from_secs(20))
            .build()
            .unwrap();
        let mut all: Vec<(&str, &str)> = headers.to_vec();
        if body.is_some() {
            all.push(("Content-Type", "application/json"));
        }
        let body = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
        let method = cloud_http::Method::from_bytes(method.as_bytes()).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let r = rt
            .block_on(client.request(method, url, &all, body))
            .unwrap();
        let v = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
        (r.status.as_u16(), v)
    }

    /// A call to the DPS service API with the `provisioningserviceowner` key.
    pub fn dps_service(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let (host, key_name, key) =
            parse_connection_string(self.ready["service_connection_string"].as_str().unwrap());
        let token = owner_token(&host, &key_name, &key);
        let url = format!(
            "{}{path}?api-version=2021-10-01",
            self.ready["dps_endpoint"].as_str().unwrap()
        );
        self.https(method, &url, &[("Authorization", &token)], body)
    }

    /// A call to hub `index` with its `iothubowner` key.
    pub fn hub_owner(
        &self,
        index: usize,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let cs = self.ready["hub_connection_strings"][index]
            .as_str()
            .unwrap()
            .to_owned();
        let (host, key_name, key) = parse_connection_string(&cs);
        let token = owner_token(&host, &key_name, &key);
        let url = format!("https://{host}{path}?api-version=2021-04-12");
        self.https(
            method,
            &url,
            &[("Authorization", &token), ("If-Match", "*")],
            body,
        )
    }

    pub fn hub_index(&self, hub: &str) -> usize {
        self.hubs()
            .iter()
            .position(|h| h == hub)
            .expect("an emulated hub")
    }

    pub fn enroll(&self, extra: Value) {
        let mut body = json!({
            "registrationId": self.registration_id,
            "attestation": {"type": "tpm", "tpm": {"endorsementKey": self.endorsement_key}},
            "capabilities": {"iotEdge": true},
        });
        if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
            for (k, v) in e {
                b.insert(k.clone(), v.clone());
            }
        }
        let (status, v) = self.dps_service(
            "PUT",
            &format!("/enrollments/{}", self.registration_id),
            Some(body),
        );
        assert!(
            status == 200 || status == 201,
            "enrollment failed: {status} {v}"
        );
    }

    pub fn add_fault(&self, spec: &str) {
        let url = format!(
            "{}/faults",
            self.ready["admin"]["endpoint"].as_str().unwrap()
        );
        let auth = format!("Bearer {}", self.ready["admin"]["token"].as_str().unwrap());
        let (status, v) = self.https(
            "POST",
            &url,
            &[("Authorization", &auth)],
            Some(json!({"spec": spec})),
        );
        assert_eq!(status, 201, "{v}");
    }

    pub fn clear_faults(&self) {
        let url = format!(
            "{}/faults",
            self.ready["admin"]["endpoint"].as_str().unwrap()
        );
        let auth = format!("Bearer {}", self.ready["admin"]["token"].as_str().unwrap());
        self.https("DELETE", &url, &[("Authorization", &auth)], None);
    }

    pub fn faults(&self) -> Value {
        let url = format!(
            "{}/faults",
            self.ready["admin"]["endpoint"].as_str().unwrap()
        );
        let auth = format!("Bearer {}", self.ready["admin"]["token"].as_str().unwrap());
        self.https("GET", &url, &[("Authorization", &auth)], None).1
    }

    /// Calls `hub` as the device, with a SAS token signed by the TPM's auth key (through tpmd).
    pub fn hub_as_device(&self, hub: &str, device_id: &str, path: &str) -> (u16, Value) {
        let audience = format!("{hub}/devices/{device_id}");
        let token = self.token(&audience, |data| {
            let r = self.tpmd(
                "POST",
                "/sign_with_auth_key",
                Some(json!({"data": aziot_tpm_common::b64(data)})),
            );
            assert_eq!(r.status, 200);
            aziot_tpm_common::from_b64(r.json()["digest"].as_str().unwrap()).unwrap()
        });
        self.https(
            "GET",
            &format!("https://{hub}{path}?api-version=2021-04-12"),
            &[("Authorization", &token)],
            None,
        )
    }

    /// A hub SAS token for `audience`, signed by `sign`.
    pub fn token(&self, audience: &str, sign: impl Fn(&[u8]) -> Vec<u8>) -> String {
        let sr = enc(&audience.to_lowercase());
        let se = now() + 300;
        let sig = sign(format!("{sr}\n{se}").as_bytes());
        format!(
            "SharedAccessSignature sr={sr}&sig={}&se={se}",
            enc(&aziot_tpm_common::b64(&sig))
        )
    }

    // ---- identityd-dps --------------------------------------------------------------------

    pub fn write_identityd_config(&self) {
        let o = &self.options;
        let payload = match &o.payload {
            Some(p) => {
                std::fs::write(self.path("payload.json"), p.to_string()).unwrap();
                format!(
                    "payload = {{ uri = \"file://{}\" }}\n",
                    self.path("payload.json").display()
                )
            }
            None => String::new(),
        };
        let config = format!(
            "hostname = \"e2e-device\"\nhomedir = \"{home}\"\n{top}\n\
             [provisioning]\nsource = \"dps\"\nglobal_endpoint = \"{dps}\"\nscope_id = \"{scope}\"\n{payload}\
             [provisioning.attestation]\nmethod = \"tpm\"\n\
             [cloud]\ntrust_bundle = \"{ca}\"\nmax_backoff_sec = 2\n{cloud}\n\
             [endpoints]\naziot_identityd = \"unix://{run}/identityd.sock\"\naziot_keyd = \"unix://{run}/keyd.sock\"\n\
             aziot_tpmd = \"unix://{run}/tpmd.sock\"\n{principals}\n",
            home = self.homedir().display(),
            top = o.identityd_top,
            dps = self.ready["dps_endpoint"].as_str().unwrap(),
            scope = self.ready["id_scope"].as_str().unwrap(),
            ca = self.ca_pem(),
            cloud = o.cloud,
            run = self.path("run").display(),
            principals = o.principals,
        );
        std::fs::write(self.path("identityd.toml"), config).unwrap();
    }

    pub fn start_identityd(&mut self) {
        self.write_identityd_config();
        self.start_identityd_keeping_config();
    }

    /// Starts identityd-dps with identityd.toml as it is (a test may have edited it).
    pub fn start_identityd_keeping_config(&mut self) {
        self.identityd_runs += 1;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path("identityd.log"))
            .unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_identityd-dps"));
        command
            .env("AZIOT_IDENTITYD_CONFIG", self.path("identityd.toml"))
            .env("AZIOT_IDENTITYD_CONFIG_DIR", self.path("identityd.d"))
            .env("AZIOT_LOG", "info")
            .env_remove("LISTEN_FDS")
            .env_remove("https_proxy")
            .env_remove("HTTPS_PROXY")
            .envs(self.options.identityd_env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        let mut child = ChildGuard::spawn(command).unwrap();
        wait_socket(&self.identityd_socket(), &mut child, || {
            self.identityd_log()
        });
        self.identityd = Some(child);
    }

    /// SIGTERM; true if it exited 0.
    pub fn stop_identityd(&mut self) -> bool {
        let Some(mut child) = self.identityd.take() else {
            return false;
        };
        child.signal(libc::SIGTERM);
        child
            .wait_timeout(Duration::from_secs(20))
            .is_some_and(|s| s.success())
    }

    /// SIGKILL (a crash): no chance to finish anything.
    pub fn kill_identityd(&mut self) {
        if let Some(mut child) = self.identityd.take() {
            child.kill();
        }
    }

    pub fn restart_identityd(&mut self) {
        assert!(
            self.stop_identityd(),
            "identityd-dps did not exit 0 on SIGTERM:\n{}",
            self.identityd_log()
        );
        self.start_identityd();
    }

    /// Whether the identityd-dps process is alive.
    pub fn identityd_running(&mut self) -> bool {
        self.identityd
            .as_mut()
            .is_some_and(|c| c.try_wait().is_none())
    }

    pub fn identityd_log(&self) -> String {
        read(&self.path("identityd.log"))
    }

    pub fn identityd(&self, method: &str, path: &str, body: Option<Value>) -> Response {
        let sep = if path.contains('?') { '&' } else { '?' };
        let path = format!("{path}{sep}{API}");
        let sock = self.identityd_socket();
        match body {
            Some(b) => testkit::http::json(&sock, method, &path, &b).unwrap(),
            None => testkit::http::request(&sock, method, &path, None).unwrap(),
        }
    }

    /// Waits until `POST /identities/device` answers 200; returns the identity's `spec`.
    pub fn wait_provisioned(&self, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let r = self.identityd("POST", "/identities/device", Some(json!({"type": "aziot"})));
            if r.status == 200 {
                return r.json()["spec"].clone();
            }
            assert_eq!(r.status, 503, "{}", String::from_utf8_lossy(&r.body));
            assert!(
                Instant::now() < deadline,
                "not provisioned after {timeout:?}: {}\n--- identityd log:\n{}\n--- emulator log:\n{}",
                r.message(),
                self.identityd_log(),
                self.emulator_log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until the identityd log contains `needle` `count` times.
    pub fn wait_log(&self, needle: &str, count: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.identityd_log().matches(needle).count() < count {
            assert!(
                Instant::now() < deadline,
                "{needle:?} not logged {count} times within {timeout:?}:\n{}",
                self.identityd_log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn wait_socket(path: &Path, child: &mut ChildGuard, log: impl Fn() -> String) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return;
        }
        assert!(
            child.try_wait().is_none(),
            "process for {} exited:\n{}",
            path.display(),
            log()
        );
        assert!(
            Instant::now() < deadline,
            "{} did not appear:\n{}",
            path.display(),
            log()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

pub fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}
