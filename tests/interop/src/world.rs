//! One device and its cloud: a swtpm, the iot-emulator (DPS + IoT Hub), and whichever daemons a
//! test starts, upstream's or ours, all on one set of config files in one temp dir (the files
//! both implementations read: upstream ignores our extra keys, we ignore its `aziot_certd`
//! endpoint), so a test can stop one implementation and start the other on the same state.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use testkit::http::Response;
use testkit::{workspace_bin, ChildGuard, Swtpm};

use crate::sas;
use crate::upstream::Upstream;

/// Worlds alive at once: each is a swtpm, the emulator and up to five daemons, on 2 cores.
const MAX_WORLDS: usize = 3;
pub const IDENTITY_API: &str = "api-version=2021-12-01";
pub const KEYS_API: &str = "api-version=2021-05-01";
pub const PROVISION_TIMEOUT: Duration = Duration::from_secs(90);

/// The daemons a world can run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Daemon {
    /// Upstream's `aziot-keyd` (libaziot_keys, key files).
    UpstreamKeyd,
    /// Upstream's `aziot-tpmd`.
    UpstreamTpmd,
    UpstreamIdentityd,
    UpstreamCertd,
    /// Ours: the Keys Service and the TPM Service in one process.
    KeydTpm,
    IdentitydDps,
    /// IoT Edge's daemon (config `edged.toml`, written by the test).
    Edged,
}

impl Daemon {
    fn name(self) -> &'static str {
        match self {
            Daemon::UpstreamKeyd => "upstream-keyd",
            Daemon::UpstreamTpmd => "upstream-tpmd",
            Daemon::UpstreamIdentityd => "upstream-identityd",
            Daemon::UpstreamCertd => "upstream-certd",
            Daemon::KeydTpm => "keyd-tpm",
            Daemon::IdentitydDps => "identityd-dps",
            Daemon::Edged => "aziot-edged",
        }
    }

    /// The sockets it serves.
    fn sockets(self) -> &'static [&'static str] {
        match self {
            Daemon::UpstreamKeyd => &["keyd"],
            Daemon::UpstreamTpmd => &["tpmd"],
            Daemon::UpstreamIdentityd | Daemon::IdentitydDps => &["identityd"],
            Daemon::UpstreamCertd => &["certd"],
            Daemon::KeydTpm => &["keyd", "tpmd"],
            Daemon::Edged => &["workload", "mgmt"],
        }
    }
}

pub struct World {
    pub up: Upstream,
    dir: tempfile::TempDir,
    pub tpm: Swtpm,
    /// The emulator's ready line (`dps_endpoint`, `id_scope`, `ca_pem`, `hubs`, ...).
    pub ready: Value,
    pub registration_id: String,
    pub endorsement_key: String,
    emulator: Option<ChildGuard>,
    daemons: BTreeMap<Daemon, ChildGuard>,
    _slot: Slot,
}

impl World {
    /// A swtpm and the emulator, the config files written; no daemon runs yet.
    pub fn new(up: &Upstream) -> World {
        let slot = Slot::take();
        let dir = tempfile::Builder::new().prefix("interop-").tempdir().expect("temp dir");
        let tpm = Swtpm::start();
        let mut world = World {
            up: up.clone(),
            dir,
            tpm,
            ready: Value::Null,
            registration_id: String::new(),
            endorsement_key: String::new(),
            emulator: None,
            daemons: BTreeMap::new(),
            _slot: slot,
        };
        for d in ["run", "state/keyd", "state/identityd", "state/certd", "state/tpmd"] {
            std::fs::create_dir_all(world.path(d)).expect("create dirs");
        }
        world.start_emulator();
        world.write_configs();
        world
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn socket(&self, name: &str) -> PathBuf {
        self.path(&format!("run/{name}.sock"))
    }

    pub fn ca_pem(&self) -> String {
        self.ready["ca_pem"].as_str().expect("ca_pem").to_owned()
    }

    pub fn hubs(&self) -> Vec<String> {
        self.ready["hubs"].as_array().map(|a| a.iter().filter_map(|h| h.as_str().map(str::to_owned)).collect()).unwrap_or_default()
    }

    fn start_emulator(&mut self) {
        let args = ["--hubs", "1", "--assigning-ms", "500"].map(String::from);
        let (child, ready) = testkit::emulator::start(&self.path("emulator"), &args, &self.path("emulator.log"));
        self.ready = ready;
        self.emulator = Some(child);
    }

    /// One set of files that upstream's daemons and ours both run on.
    fn write_configs(&self) {
        let run = self.path("run");
        let run = run.display();
        std::fs::write(
            self.path("tpmd.toml"),
            format!(
                "tcti = \"{}\"\nhomedir = \"{}\"\n\n[endpoints]\naziot_tpmd = \"unix://{run}/tpmd.sock\"\n",
                self.tpm.tcti(),
                self.path("state/tpmd").display()
            ),
        )
        .expect("tpmd.toml");
        std::fs::write(
            self.path("keyd.toml"),
            format!(
                "[aziot_keys]\nhomedir_path = \"{}\"\n\n[endpoints]\naziot_keyd = \"unix://{run}/keyd.sock\"\n",
                self.path("state/keyd").display()
            ),
        )
        .expect("keyd.toml");
        std::fs::write(
            self.path("certd.toml"),
            format!(
                "homedir_path = \"{}\"\n\n[cert_issuance.aziot-edged-ca]\nmethod = \"self_signed\"\nexpiry_days = 90\n\n\
                 [preloaded_certs]\naziot-edged-trust-bundle = [\"aziot-edged-ca\"]\n\n[endpoints]\naziot_certd = \"unix://{run}/certd.sock\"\n\
                 aziot_keyd = \"unix://{run}/keyd.sock\"\naziot_identityd = \"unix://{run}/identityd.sock\"\n",
                self.path("state/certd").display()
            ),
        )
        .expect("certd.toml");
        for svc in ["keyd", "tpmd", "identityd", "certd"] {
            std::fs::create_dir_all(self.path(&format!("{svc}.d"))).expect("config.d");
        }
    }

    /// identityd's file without `registration_id`: identityd-dps derives it from the EK,
    /// upstream's parser refuses it.
    pub fn write_identityd_config_without_registration_id(&self) {
        self.write_identityd_config("");
        let text = read(&self.path("identityd.toml"));
        let text = text.replace(&format!("registration_id = \"{}\"\n", self.registration_id), "");
        std::fs::write(self.path("identityd.toml"), text).expect("identityd.toml");
    }

    /// identityd's file (both implementations read it), once the registration ID is known.
    pub fn write_identityd_config(&self, extra: &str) {
        let run = self.path("run");
        let run = run.display();
        std::fs::write(
            self.path("identityd.toml"),
            format!(
                "hostname = \"interop-gw\"\nhomedir = \"{home}\"\n{extra}\n\
                 [provisioning]\nsource = \"dps\"\nglobal_endpoint = \"{dps}\"\nscope_id = \"{scope}\"\n\n\
                 [provisioning.attestation]\nmethod = \"tpm\"\nregistration_id = \"{id}\"\n\n\
                 [cloud]\ntrust_bundle = \"{ca}\"\nmax_backoff_sec = 2\n\n\
                 [endpoints]\naziot_certd = \"unix://{run}/certd.sock\"\naziot_identityd = \"unix://{run}/identityd.sock\"\n\
                 aziot_keyd = \"unix://{run}/keyd.sock\"\naziot_tpmd = \"unix://{run}/tpmd.sock\"\n",
                home = self.path("state/identityd").display(),
                dps = self.ready["dps_endpoint"].as_str().unwrap_or_default(),
                scope = self.ready["id_scope"].as_str().unwrap_or_default(),
                id = self.registration_id,
                ca = self.ca_pem(),
            ),
        )
        .expect("identityd.toml");
    }

    /// Starts `daemon` and waits for its sockets.
    pub fn start(&mut self, daemon: Daemon) {
        let upstream_bin = self.up.service_links(self.dir.path());
        let (program, svc) = match daemon {
            Daemon::UpstreamKeyd => (upstream_bin.join("aziot-keyd"), vec!["KEYD"]),
            Daemon::UpstreamTpmd => (upstream_bin.join("aziot-tpmd"), vec!["TPMD"]),
            Daemon::UpstreamIdentityd => (upstream_bin.join("aziot-identityd"), vec!["IDENTITYD"]),
            Daemon::UpstreamCertd => (upstream_bin.join("aziot-certd"), vec!["CERTD"]),
            Daemon::KeydTpm => (workspace_bin("keyd-tpm"), vec!["KEYD", "TPMD"]),
            Daemon::IdentitydDps => (workspace_bin("identityd-dps"), vec!["IDENTITYD"]),
            Daemon::Edged => (self.up.bin("aziot-edged"), vec!["EDGED"]),
        };
        for s in daemon.sockets() {
            let _ = std::fs::remove_file(self.socket(s));
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path(&format!("{}.log", daemon.name())))
            .expect("log");
        let mut command = Command::new(&program);
        for upper in svc {
            let lower = upper.to_ascii_lowercase();
            command
                .env(format!("AZIOT_{upper}_CONFIG"), self.path(&format!("{lower}.toml")))
                .env(format!("AZIOT_{upper}_CONFIG_DIR"), self.path(&format!("{lower}.d")));
        }
        command
            .env("LD_LIBRARY_PATH", self.up.dir())
            .env("SSL_CERT_FILE", self.ca_pem())
            .env("AZIOT_LOG", "info")
            .env("TSS2_LOG", "all+none")
            .env_remove("LISTEN_FDS")
            .env_remove("https_proxy")
            .env_remove("HTTPS_PROXY")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log);
        let mut child = ChildGuard::spawn(command).unwrap_or_else(|e| panic!("spawn {}: {e}", program.display()));
        // Upstream's identityd opens its socket only after provisioning; edged after the Edge CA.
        if !matches!(daemon, Daemon::UpstreamIdentityd | Daemon::Edged) {
            let deadline = Instant::now() + Duration::from_secs(30);
            for s in daemon.sockets() {
                while std::os::unix::net::UnixStream::connect(self.socket(s)).is_err() {
                    assert!(child.try_wait().is_none(), "{} exited:\n{}", daemon.name(), self.log(daemon.name()));
                    assert!(Instant::now() < deadline, "{} opened no {s}.sock:\n{}", daemon.name(), self.log(daemon.name()));
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }
        self.daemons.insert(daemon, child);
    }

    /// SIGTERM, then SIGKILL after 15 s; its sockets are removed.
    pub fn stop(&mut self, daemon: Daemon) {
        if let Some(mut child) = self.daemons.remove(&daemon) {
            child.signal(libc::SIGTERM);
            if child.wait_timeout(Duration::from_secs(15)).is_none() {
                child.kill();
            }
        }
        for s in daemon.sockets() {
            let _ = std::fs::remove_file(self.socket(s));
        }
    }

    pub fn log(&self, name: &str) -> String {
        read(&self.path(&format!("{name}.log")))
    }

    /// Every log, for an assertion message.
    pub fn logs(&self) -> String {
        let mut all = String::new();
        for name in ["emulator", "upstream-keyd", "upstream-tpmd", "upstream-identityd", "upstream-certd", "keyd-tpm", "identityd-dps", "aziot-edged"] {
            let text = self.log(name);
            if !text.is_empty() {
                let tail: Vec<&str> = text.lines().rev().take(40).collect();
                all.push_str(&format!("--- {name} (last lines):\n"));
                for l in tail.iter().rev() {
                    all.push_str(l);
                    all.push('\n');
                }
            }
        }
        all
    }

    // ---- the aziot-tpm CLI ------------------------------------------------------------------

    /// `aziot-tpm ARGS` against this world's files and sockets.
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        Command::new(workspace_bin("aziot-tpm"))
            .args(args)
            .env("AZIOT_TPMD_CONFIG", self.path("tpmd.toml"))
            .env("AZIOT_TPMD_CONFIG_DIR", self.path("tpmd.d"))
            .env("AZIOT_TPMD_SOCKET", self.socket("tpmd"))
            .env("AZIOT_KEYD_CONFIG", self.path("keyd.toml"))
            .env("AZIOT_KEYD_CONFIG_DIR", self.path("keyd.d"))
            .env("AZIOT_IDENTITYD_CONFIG", self.path("identityd.toml"))
            .env("AZIOT_IDENTITYD_CONFIG_DIR", self.path("identityd.d"))
            .env("AZIOT_DPS_CONNECTION_STRING", self.ready["service_connection_string"].as_str().unwrap_or_default())
            .env_remove("https_proxy")
            .env("TSS2_LOG", "all+none")
            .output()
            .expect("run aziot-tpm")
    }

    /// Upstream's whole stack (tpmd, keyd, identityd), the device enrolled.
    pub fn start_upstream_stack(&mut self) {
        self.start(Daemon::UpstreamTpmd);
        self.start(Daemon::UpstreamKeyd);
        self.enroll();
        self.start(Daemon::UpstreamIdentityd);
    }

    /// keyd-tpm and identityd-dps (with upstream's certd, as beside IoT Edge), the device
    /// enrolled and provisioned; `registration_id` in identityd's config or derived.
    pub fn start_our_stack(&mut self, registration_id_configured: bool) -> Value {
        self.start(Daemon::KeydTpm);
        self.enroll();
        if !registration_id_configured {
            self.write_identityd_config_without_registration_id();
        }
        self.start(Daemon::UpstreamCertd);
        self.start(Daemon::IdentitydDps);
        self.wait_provisioned()
    }

    /// Reads the EK through whichever TPM Service runs, enrolls it in the emulator with
    /// `aziot-tpm enroll` (as an admin would), and writes identityd's config with its ID.
    pub fn enroll(&mut self) {
        let none = self.path("no-super-config.toml");
        let none = none.to_str().unwrap_or_default();
        let info = self.cli(&["tpm-info", "--super-config", none, "-o", "json"]);
        assert!(info.status.success(), "tpm-info: {}", String::from_utf8_lossy(&info.stderr));
        let info: Value = serde_json::from_slice(&info.stdout).expect("tpm-info JSON");
        self.registration_id = info["registration_id_from_ek"].as_str().expect("registration ID").to_owned();
        self.endorsement_key = info["endorsement_key"].as_str().expect("EK").to_owned();
        let ca = self.ca_pem();
        let out = self.cli(&["enroll", "--trust-ca", &ca, "--super-config", none, "--registration-id", &self.registration_id.clone()]);
        assert!(out.status.success(), "enroll: {}", String::from_utf8_lossy(&out.stderr));
        self.write_identityd_config("");
    }

    // ---- the daemons' APIs ----------------------------------------------------------------

    pub fn identityd(&self, method: &str, path: &str, body: Option<Value>) -> std::io::Result<Response> {
        let sep = if path.contains('?') { '&' } else { '?' };
        let path = format!("{path}{sep}{IDENTITY_API}");
        match body {
            Some(b) => testkit::http::json(&self.socket("identityd"), method, &path, &b),
            None => testkit::http::request(&self.socket("identityd"), method, &path, None),
        }
    }

    pub fn keyd(&self, method: &str, path: &str, body: &Value) -> Response {
        let path = format!("{path}?{KEYS_API}");
        testkit::http::json(&self.socket("keyd"), method, &path, body).expect("keyd request")
    }

    /// An identityd answer that must be 200: its JSON.
    pub fn identityd_ok(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let r = self.identityd(method, path, body).unwrap_or_else(|e| panic!("{method} {path}: {e}\n{}", self.logs()));
        assert_eq!(r.status, 200, "{method} {path}: {}\n{}", String::from_utf8_lossy(&r.body), self.logs());
        r.json()
    }

    /// Waits until identityd answers the device identity; returns its `spec`.
    pub fn wait_provisioned(&self) -> Value {
        let deadline = Instant::now() + PROVISION_TIMEOUT;
        loop {
            match self.identityd("POST", "/identities/device", Some(json!({"type": "aziot"}))) {
                Ok(r) if r.status == 200 => return r.json()["spec"].clone(),
                Ok(r) if r.status != 503 && r.status != 404 => {
                    panic!("device identity: {} {}\n{}", r.status, r.message(), self.logs())
                }
                _ => {}
            }
            assert!(Instant::now() < deadline, "not provisioned within {PROVISION_TIMEOUT:?}\n{}", self.logs());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until the identityd socket answers at all.
    pub fn wait_identityd(&self) {
        let deadline = Instant::now() + PROVISION_TIMEOUT;
        while std::os::unix::net::UnixStream::connect(self.socket("identityd")).is_err() {
            assert!(Instant::now() < deadline, "identityd.sock never answered\n{}", self.logs());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The module's token, signed by the Keys Service with the identity's key handle, is
    /// accepted by the hub (GET of the module's twin).
    pub fn assert_hub_accepts_module_token(&self, spec: &Value) {
        let (hub, device, module) = (
            spec["hubName"].as_str().expect("hubName"),
            spec["deviceId"].as_str().expect("deviceId"),
            spec["moduleId"].as_str().expect("moduleId"),
        );
        let handle = spec["auth"]["keyHandle"].as_str().expect("keyHandle");
        let (to_sign, sr, se) = sas::unsigned(&format!("{hub}/devices/{device}/modules/{module}"));
        let r = self.keyd(
            "POST",
            "/sign",
            &json!({"keyHandle": handle, "algorithm": "HMAC-SHA256", "parameters": {"message": aziot_tpm_common::b64(to_sign.as_bytes())}}),
        );
        assert_eq!(r.status, 200, "sign: {}", String::from_utf8_lossy(&r.body));
        let signature = aziot_tpm_common::from_b64(r.json()["signature"].as_str().expect("signature")).expect("b64");
        let token = sas::assemble(&sr, se, &signature, None);
        let url = format!("https://{hub}/twins/{device}/modules/{}?api-version=2021-04-12", enc(module));
        let (status, body) = self.https("GET", &url, &[("Authorization", &token)], None);
        assert_eq!(status, 200, "the hub refused {module}'s token: {body}\n{}", self.logs());
    }

    /// An HTTPS call trusting the emulator's CA: (status, JSON body or Null).
    pub fn https(&self, method: &str, url: &str, headers: &[(&str, &str)], body: Option<Value>) -> (u16, Value) {
        let client = cloud_http::Client::builder()
            .trust_ca_file(self.ca_pem())
            .timeout(Duration::from_secs(20))
            .build()
            .expect("client");
        let mut all: Vec<(&str, &str)> = headers.to_vec();
        if body.is_some() {
            all.push(("Content-Type", "application/json"));
        }
        let body = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
        let method = cloud_http::Method::from_bytes(method.as_bytes()).expect("method");
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let r = rt.block_on(client.request(method, url, &all, body)).expect("https request");
        (r.status.as_u16(), serde_json::from_slice(&r.body).unwrap_or(Value::Null))
    }

    /// The hub's module identities of `device` (with its owner key).
    pub fn hub_modules(&self, hub: &str, device: &str) -> Vec<Value> {
        let cs = self.ready["hub_connection_strings"][0].as_str().expect("hub connection string");
        let field = |name: &str| cs.split(';').find_map(|p| p.strip_prefix(&format!("{name}="))).unwrap_or_default().to_owned();
        let key = aziot_tpm_common::from_b64(&field("SharedAccessKey")).expect("hub key");
        let (to_sign, sr, se) = sas::unsigned(&field("HostName"));
        let token = sas::assemble(&sr, se, &sas::hmac_sha256(&key, to_sign.as_bytes()), Some(&field("SharedAccessKeyName")));
        let url = format!("https://{hub}/devices/{device}/modules?api-version=2021-04-12");
        let (status, body) = self.https("GET", &url, &[("Authorization", &token)], None);
        assert_eq!(status, 200, "{body}");
        body.as_array().cloned().unwrap_or_default()
    }
}

pub fn enc(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

pub fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

static WORLDS: (std::sync::Mutex<usize>, std::sync::Condvar) = (std::sync::Mutex::new(0), std::sync::Condvar::new());

/// A place among the [`MAX_WORLDS`] running worlds, given back on drop (after the processes).
struct Slot;

impl Slot {
    fn take() -> Slot {
        let (count, freed) = &WORLDS;
        let mut n = count.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        while *n >= MAX_WORLDS {
            n = freed.wait(n).unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        *n += 1;
        Slot
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let (count, freed) = &WORLDS;
        *count.lock().unwrap_or_else(std::sync::PoisonError::into_inner) -= 1;
        freed.notify_one();
    }
}
