//! The files `config apply` writes run our daemons: keyd-tpm on the applied keyd and tpmd files,
//! identityd-dps on the applied identityd file, against a real swtpm. Each daemon reads its
//! config.d as in production; this test adds only `90-test.toml` (its temp paths and sockets),
//! which the config.d merge reads after `00-super.toml`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use testkit::{workspace_bin, ChildGuard, Swtpm};

struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn config_d(&self, service: &str) -> PathBuf {
        self.path(&format!("root/etc/aziot/{service}/config.d"))
    }

    fn socket(&self, name: &str) -> PathBuf {
        self.path(&format!("run/{name}.sock"))
    }

    /// `service` from the applied config.d, with `AZIOT_<SVC>_CONFIG` pointing nowhere.
    fn start(&self, bin: &str, services: &[&str], sockets: &[&str]) -> ChildGuard {
        let mut command = Command::new(workspace_bin(bin));
        for service in services {
            let upper = service.to_ascii_uppercase();
            command
                .env(
                    format!("AZIOT_{upper}_CONFIG"),
                    self.path("no-such-config.toml"),
                )
                .env(format!("AZIOT_{upper}_CONFIG_DIR"), self.config_d(service));
        }
        let log = std::fs::File::create(self.path(&format!("{bin}.log"))).unwrap();
        command
            .env("AZIOT_LOG", "info")
            .env("TSS2_LOG", "all+none")
            .env_remove("LISTEN_FDS")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        let mut child = ChildGuard::spawn(command).unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        for socket in sockets {
            while std::os::unix::net::UnixStream::connect(self.socket(socket)).is_err() {
                let log =
                    std::fs::read_to_string(self.path(&format!("{bin}.log"))).unwrap_or_default();
                assert!(child.try_wait().is_none(), "{bin} exited:\n{log}");
                assert!(
                    Instant::now() < deadline,
                    "{bin} did not open {socket}.sock:\n{log}"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        child
    }

    fn call(&self, socket: &str, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let socket = self.socket(socket);
        let r = match body {
            Some(b) => testkit::http::json(&socket, method, path, &b),
            None => testkit::http::request(&socket, method, path, None),
        }
        .unwrap();
        (
            r.status,
            serde_json::from_slice(&r.body).unwrap_or(Value::Null),
        )
    }
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

#[test]
fn keyd_tpm_and_identityd_dps_run_on_the_applied_files() {
    let tpm = Swtpm::start();
    let env = Env {
        dir: tempfile::tempdir().unwrap(),
    };
    for home in ["keyd", "tpmd", "identityd", "run"] {
        std::fs::create_dir_all(env.path(home)).unwrap();
    }
    write(&env.path("payload.json"), r#"{"site": "test-bench"}"#);
    write(
        &env.path("root/etc/aziot/config.toml"),
        &format!(
            "hostname = \"gateway-under-test\"\n\n\
             [provisioning]\nsource = \"dps\"\nglobal_endpoint = \"https://127.0.0.1:9\"\nid_scope = \"0ne00C0FFEE\"\n\
             payload = {{ uri = \"file://{payload}\" }}\n\n\
             [provisioning.attestation]\nmethod = \"tpm\"\n\n\
             [tpm]\ntcti = \"{tcti}\"\nauth_key_index = 0x00_02_00\n\n\
             [cloud]\nprovisioning_timeout_sec = 5\nmax_backoff_sec = 1\n",
            payload = env.path("payload.json").display(),
            tcti = tpm.tcti(),
        ),
    );
    let out = Command::new(env!("CARGO_BIN_EXE_aziot-tpm"))
        .args(["config", "apply", "--root"])
        .arg(env.path("root"))
        .env("AZIOT_TPM_USERS", "current")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let run = env.path("run");
    let run = run.display();
    write(
        &env.config_d("tpmd").join("90-test.toml"),
        &format!(
            "homedir = \"{}\"\n[endpoints]\naziot_tpmd = \"unix://{run}/tpmd.sock\"\n",
            env.path("tpmd").display()
        ),
    );
    write(
        &env.config_d("keyd").join("90-test.toml"),
        &format!(
            "[aziot_keys]\nhomedir_path = \"{}\"\n[endpoints]\naziot_keyd = \"unix://{run}/keyd.sock\"\n",
            env.path("keyd").display()
        ),
    );
    write(
        &env.config_d("identityd").join("90-test.toml"),
        &format!(
            "homedir = \"{}\"\n[endpoints]\naziot_identityd = \"unix://{run}/identityd.sock\"\n\
             aziot_keyd = \"unix://{run}/keyd.sock\"\naziot_tpmd = \"unix://{run}/tpmd.sock\"\n",
            env.path("identityd").display()
        ),
    );

    let _keyd = env.start("keyd-tpm", &["tpmd", "keyd"], &["tpmd", "keyd"]);
    // tpmd's file: the swtpm TCTI and auth_key_index from [tpm].
    let (status, info) = env.call("tpmd", "GET", "/tpm_info?api-version=2020-09-01", None);
    assert_eq!(status, 200, "{info}");
    assert_eq!(info["auth_key_handle"], "0x81000200", "{info}");
    let (_, keys) = env.call("tpmd", "GET", "/get_tpm_keys?api-version=2020-09-01", None);
    let ek = aziot_tpm_common::from_b64(keys["endorsement_key"].as_str().unwrap()).unwrap();

    // keyd's file: the key store works, and the principal keyd-tpm merges from config.d is
    // identityd's user with its master key (keyd-tpm lets its own uid, which is ours here, do
    // anything, so the principal is checked through keyd-tpm's own config type).
    let body = json!({"keyId": "aziot_identityd_master_id", "usage": "derive,sign"});
    let (status, body) = env.call("keyd", "POST", "/key?api-version=2020-09-01", Some(body));
    assert_eq!(status, 200, "{body}");
    let keyd: keyd_tpm::keyd::KeydConfig =
        aziot_config::load_from(env.path("no-such-config.toml"), env.config_d("keyd")).unwrap();
    // SAFETY: getuid cannot fail.
    let me = unsafe { libc::getuid() };
    assert_eq!(keyd.principal.len(), 1);
    assert_eq!(
        (keyd.principal[0].uid, keyd.principal[0].keys.clone()),
        (me, vec!["aziot_identityd_master_id".to_owned()])
    );
    assert_eq!(
        keyd.homedir(),
        env.path("keyd"),
        "90-test.toml overrides the applied homedir_path"
    );

    // identityd's file: DPS settings as applied, the registration ID derived from the EK
    // through the TPM Service, the payload file read.
    let _identityd = env.start("identityd-dps", &["identityd"], &["identityd"]);
    let (status, provisioning) = env.call(
        "identityd",
        "GET",
        "/identities/provisioning?api-version=2021-12-01",
        None,
    );
    assert_eq!(status, 200, "{provisioning}");
    assert_eq!(
        provisioning,
        json!({
            "source": "dps",
            "auth": "tpm",
            "endpoint": "https://127.0.0.1:9/",
            "scope_id": "0ne00C0FFEE",
            "registration_id": aziot_tpm_common::registration_id(&ek),
            "payload": {"site": "test-bench"},
        })
    );
}
