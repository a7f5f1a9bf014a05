//! keyd-tpm as a process for the Keys Service benchmarks: started on a swtpm with its own
//! configs and sockets in a temp dir, called over keyd.sock, and the key objects it stored read
//! back for the raw reference.

#![allow(dead_code)] // each benchmark binary uses its own part

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use testkit::{ChildGuard, Swtpm};
use tss_esapi::constants::CapabilityType;
use tss_esapi::handles::TpmHandle;
use tss_esapi::structures::{CapabilityData, Private, Public};
use tss_esapi::traits::UnMarshall;

pub const API: &str = "api-version=2021-05-01";
pub const SRK: u32 = 0x8100_0001;

pub fn start_daemon(bin: &Path, tpm: &Swtpm, dir: &Path) -> ChildGuard {
    let (tpmd_config, keyd_config) = (dir.join("tpmd.toml"), dir.join("keyd.toml"));
    let (tpmd_socket, keyd_socket) = (dir.join("tpmd.sock"), dir.join("keyd.sock"));
    std::fs::write(
        &tpmd_config,
        format!(
            "tcti = \"{}\"\nhomedir = \"{}\"\n[endpoints]\naziot_tpmd = \"unix://{}\"\n",
            tpm.tcti(),
            dir.join("tpmd").display(),
            tpmd_socket.display()
        ),
    )
    .unwrap();
    std::fs::write(
        &keyd_config,
        format!(
            "max_requests = 32\n[aziot_keys]\nhomedir_path = \"{}\"\n[endpoints]\naziot_keyd = \"unix://{}\"\n",
            dir.join("keys").display(),
            keyd_socket.display()
        ),
    )
    .unwrap();
    let mut command = Command::new(bin);
    command
        .env("AZIOT_TPMD_CONFIG", &tpmd_config)
        .env("AZIOT_TPMD_CONFIG_DIR", dir.join("none"))
        .env("AZIOT_KEYD_CONFIG", &keyd_config)
        .env("AZIOT_KEYD_CONFIG_DIR", dir.join("none"))
        .env("AZIOT_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    let child = ChildGuard::spawn(command).expect("start keyd-tpm");
    wait_for(&keyd_socket, "keyd-tpm");
    child
}

/// Until `socket` accepts a connection (30 s at most).
pub fn wait_for(socket: &Path, what: &str) {
    let started = Instant::now();
    while std::os::unix::net::UnixStream::connect(socket).is_err() {
        assert!(started.elapsed() < Duration::from_secs(30), "{what} did not start");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// SIGTERM and wait, so the daemon flushes the objects it had loaded.
pub fn stop(mut daemon: ChildGuard) {
    daemon.signal(libc::SIGTERM);
    assert!(
        daemon.wait_timeout(Duration::from_secs(15)).is_some(),
        "keyd-tpm did not stop on SIGTERM"
    );
}

pub async fn call(
    client: &aziot_http::UdsClient,
    method: aziot_http::Method,
    path: &str,
    body: Option<&Value>,
) -> Value {
    let body = body.map(|b| aziot_http::Bytes::from(b.to_string().into_bytes()));
    let (status, body) = client
        .request(method, &format!("{path}?{API}"), body)
        .await
        .expect("request");
    assert!(
        status.is_success(),
        "{path}: {status} {}",
        String::from_utf8_lossy(&body)
    );
    serde_json::from_slice(&body).unwrap_or(Value::Null)
}

/// The public and private areas of `id`'s TPM object, from the daemon's `.tpmkey` file.
pub fn stored_object(keys_dir: &Path, id: &str) -> (Public, Private) {
    let stem: String = id.chars().filter(char::is_ascii_alphanumeric).collect();
    let path = std::fs::read_dir(keys_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            name.starts_with(&format!("{stem}-")) && name.ends_with(".tpmkey")
        })
        .unwrap_or_else(|| panic!("no key file for {id} in {}", keys_dir.display()));
    let record: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let object = if record["type"] == "key" {
        &record["hmac"]
    } else {
        &record["object"]
    };
    let field =
        |name: &str| aziot_tpm_common::from_b64(object[name].as_str().expect(name)).unwrap();
    (
        Public::unmarshall(&field("public")).unwrap(),
        Private::try_from(field("private")).unwrap(),
    )
}

/// Flushes transient objects a stopped daemon left loaded (it flushes them on exit only if its
/// TPM owner thread finishes before the process does), so the raw phase has the TPM's slots.
pub fn flush_transient_objects(ctx: &mut tss_esapi::Context) {
    const TRANSIENT_FIRST: u32 = 0x8000_0000;
    let Ok((CapabilityData::Handles(list), _)) =
        ctx.get_capability(CapabilityType::Handles, TRANSIENT_FIRST, 64)
    else {
        return;
    };
    for raw in list
        .iter()
        .map(|h| u32::from(*h))
        .filter(|raw| raw >> 24 == TRANSIENT_FIRST >> 24)
    {
        if let Ok(object) = TpmHandle::try_from(raw).and_then(|h| ctx.tr_from_tpm_public(h)) {
            let _ = ctx.flush_context(object);
        }
    }
}
