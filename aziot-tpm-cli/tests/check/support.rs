//! Helpers for the `check` tests on top of the shared device fixture: running `aziot-tpm check`
//! with every daemon's config taken from the device's temp dir, and a provisioned device.

#![allow(dead_code)]

use std::ffi::CStr;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::{Device, Run};

/// `aziot-tpm check ARGS` with the device's keyd, tpmd and identityd configs and its super-config
/// path (`<dir>/config.toml`, absent unless a test writes it).
pub fn check(device: &Device, args: &[&str]) -> Run {
    let super_config = device.path("config.toml").display().to_string();
    let mut all = vec!["check", "--super-config", &super_config];
    all.extend_from_slice(args);
    let env = config_env(device);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    device.cli_with(&all, &env)
}

/// What `aziot-tpm check` needs beyond the shared fixture's environment.
pub fn config_env(device: &Device) -> Vec<(&'static str, String)> {
    let none = device.path("none").display().to_string();
    vec![
        ("AZIOT_KEYD_CONFIG", device.path("keyd.toml").display().to_string()),
        ("AZIOT_KEYD_CONFIG_DIR", none.clone()),
        ("AZIOT_CERTD_CONFIG", device.path("certd.toml").display().to_string()),
        ("AZIOT_CERTD_CONFIG_DIR", none),
        ("NO_COLOR", "1".into()),
        ("AZIOT_TPM_EK_TRUST_BUNDLE", device.path("ek-ca.pem").display().to_string()),
    ]
}

/// swtpm (with EK certificates), keyd-tpm, the emulator and identityd-dps, the TPM enrolled with
/// `aziot-tpm enroll`, and the device provisioned (identityd's `device_info` written).
pub fn provisioned_device() -> Device {
    // A TPM as its maker ships it, with EK certificates, and their CA as the trust bundle.
    let ca = testkit::LocalCa::new();
    let mut device = Device::with_manufactured_tpm(&ca, testkit::CertDates::Current);
    std::fs::copy(ca.trust_bundle(), device.path("ek-ca.pem")).unwrap();
    device.start_keyd();
    device.start_emulator();
    device.start_identityd(None);
    device.enroll(&[]).expect(0);
    device.wait_provisioned(Duration::from_secs(60));
    let deadline = Instant::now() + Duration::from_secs(30);
    while !device.path("identityd/prev_state").exists() {
        assert!(Instant::now() < deadline, "no prev_state:\n{}", device.identityd_log());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(device.path("identityd/device_info").exists());
    device
}

/// The `result` of check `id` in `-o json` output.
pub fn result_of(json: &Value, id: &str) -> String {
    json["checks"][id]["result"]["result"]
        .as_str()
        .unwrap_or_else(|| panic!("no check {id} in {json}"))
        .to_owned()
}

/// The name of the user running the tests.
pub fn current_user() -> String {
    // SAFETY: getpwuid returns a pointer into static storage (or null); read at once, single call.
    let pwd = unsafe { libc::getpwuid(libc::geteuid()) };
    assert!(!pwd.is_null(), "the test user has no passwd entry");
    unsafe { CStr::from_ptr((*pwd).pw_name) }.to_string_lossy().into_owned()
}

/// The environment a root shell on the device would have for `aziot-tpm check` (or the
/// `aziotctl` wrapper): the fixture's config overrides plus [`config_env`].
pub fn device_env(device: &Device) -> Vec<(String, String)> {
    let path = |rel: &str| device.path(rel).display().to_string();
    let mut env = vec![
        ("AZIOT_TPMD_CONFIG".to_owned(), path("tpmd.toml")),
        ("AZIOT_TPMD_CONFIG_DIR".to_owned(), path("none")),
        ("AZIOT_IDENTITYD_CONFIG".to_owned(), path("identityd.toml")),
        ("AZIOT_IDENTITYD_CONFIG_DIR".to_owned(), path("none")),
    ];
    env.extend(config_env(device).into_iter().map(|(k, v)| (k.to_owned(), v)));
    env
}

/// Makes `<dir>/bin/aziotctl`, a symlink to `aziot-tpm` as the package installs it, and returns
/// its path.
pub fn install_wrapper(device: &Device) -> std::path::PathBuf {
    let bin = device.path("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let link = bin.join("aziotctl");
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_aziot-tpm"), &link).unwrap();
    link
}

/// Writes an executable shell script at `path`.
pub fn write_script(path: &std::path::Path, body: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, format!("#!/bin/sh\n{body}")).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}
