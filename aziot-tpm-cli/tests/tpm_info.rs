//! `aziot-tpm tpm-info` against a real keyd-tpm on a real swtpm.

use std::process::{Command, Stdio};
use std::time::Duration;

use testkit::{workspace_bin, ChildGuard, Swtpm};

fn keyd_tpm(tpm: &Swtpm, dir: &std::path::Path) -> ChildGuard {
    let config = dir.join("tpmd.toml");
    std::fs::write(
        &config,
        format!(
            "tcti = \"{}\"\nhomedir = \"{}\"\n[endpoints]\naziot_tpmd = \"unix://{}\"\n",
            tpm.tcti(),
            dir.join("home").display(),
            dir.join("tpmd.sock").display()
        ),
    )
    .unwrap();
    let mut command = Command::new(workspace_bin("keyd-tpm"));
    command
        .env("AZIOT_TPMD_CONFIG", &config)
        .env("AZIOT_TPMD_CONFIG_DIR", dir.join("none"))
        .env("AZIOT_KEYD_CONFIG", dir.join("keyd.toml"))
        .env("AZIOT_KEYD_CONFIG_DIR", dir.join("none"))
        .env("TSS2_LOG", "all+none")
        .stderr(Stdio::null());
    std::fs::write(
        dir.join("keyd.toml"),
        format!("[aziot_keys]\nhomedir_path = \"{}\"\n[endpoints]\naziot_keyd = \"unix://{}\"\n", dir.join("keys").display(), dir.join("keyd.sock").display()),
    )
    .unwrap();
    let child = ChildGuard::spawn(command).unwrap();
    assert!(testkit::wait_for_path(&dir.join("tpmd.sock"), Duration::from_secs(20)), "keyd-tpm did not start");
    child
}

fn tpm_info(socket: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_aziot-tpm"))
        .arg("tpm-info")
        .arg("--socket")
        .arg(socket)
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn tpm_info_prints_what_an_enrollment_needs_as_text_and_json() {
    let tpm = Swtpm::start();
    let dir = tempfile::tempdir().unwrap();
    let _daemon = keyd_tpm(&tpm, dir.path());
    let socket = dir.path().join("tpmd.sock");

    let out = tpm_info(&socket, &["-o", "json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let ek = aziot_tpm_common::from_b64(json["endorsement_key"].as_str().unwrap()).unwrap();
    assert_eq!(json["registration_id"], aziot_tpm_common::registration_id(&ek));
    assert_eq!(json["manufacturer"], "IBM");
    assert_eq!(json["auth_key_present"], false);

    let out = tpm_info(&socket, &[]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&format!("Registration ID:  {}", json["registration_id"].as_str().unwrap())), "{text}");
    assert!(text.contains("DPS auth key:     absent at 0x81000100"), "{text}");
}

#[test]
fn tpm_info_without_a_daemon_exits_3_and_says_what_to_check() {
    let dir = tempfile::tempdir().unwrap();
    let out = tpm_info(&dir.path().join("nothing.sock"), &[]);
    assert_eq!(out.status.code(), Some(3));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cannot reach the TPM service") && stderr.contains("keyd-tpm"), "{stderr}");
}
