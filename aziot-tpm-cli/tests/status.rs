//! `aziot-tpm status` on a device that is not enrolled yet, then provisioned, then with its
//! daemons stopped one by one.

mod common;

use std::time::Duration;

use common::Device;

#[test]
fn status_follows_the_device_from_unenrolled_to_provisioned_and_names_a_stopped_daemon() {
    let mut device = Device::with_tpm();
    device.start_keyd();
    device.start_emulator();
    device.start_identityd(None);

    // Not enrolled: identityd keeps trying, status says why and exits 1.
    let before = device.cli(&["status", "-o", "json"]);
    let json = before.expect(1).json();
    assert_eq!(json["provisioned"], false);
    assert!(json["error"].as_str().is_some_and(|e| !e.is_empty()), "{before:?}");
    assert_eq!(json["auth_key_present"], false, "{before:?}");
    let text = device.cli(&["status"]);
    assert!(text.expect(1).stdout().starts_with("Provisioned:     no: "), "{text:?}");

    device.enroll(&[]).expect(0);
    let status = device.wait_provisioned(Duration::from_secs(60));
    let registration_id = status["registration_id"].as_str().unwrap();
    assert!(device.hubs().contains(&status["hub"].as_str().unwrap().to_owned()), "{status}");
    assert_eq!(status["device_id"], registration_id, "DPS's default device ID");
    assert_eq!(status["auth_key_present"], true);
    assert_eq!(status["auth_key_handle"], "0x81000100");
    assert_eq!(status["dps_endpoint"], device.ready("dps_endpoint").as_str());
    let since = status["since"].as_str().unwrap();
    assert!(since.len() == 20 && since.ends_with('Z'), "{since}");
    let text = device.cli(&["status"]);
    let out = text.expect(0).stdout();
    assert!(out.contains("Provisioned:     yes") && out.contains(&format!("Since:           {since} (")), "{out}");
    assert!(out.contains("DPS auth key:    present in the TPM at 0x81000100"), "{out}");

    // The TPM loses the auth key (cleared, and keyd-tpm's wrapped copies gone): exit 1, and why.
    device.stop_keyd();
    device.tpm().tpm2_ok("tpm2_evictcontrol", &["-C", "o", "-c", "0x81000100"], device.dir.path());
    for copy in std::fs::read_dir(device.path("tpmd")).unwrap().flatten() {
        if copy.file_name().to_string_lossy().starts_with("auth-key") {
            std::fs::remove_file(copy.path()).unwrap();
        }
    }
    device.start_keyd();
    let run = device.cli(&["status"]);
    assert!(run.expect(1).stdout().contains("DPS auth key:    absent (expected at 0x81000100)"), "{run:?}");
    assert!(run.stderr().contains("the TPM has no DPS auth key") && run.stderr().contains("aziot-tpm reprovision"), "{run:?}");

    // The TPM Service stops: exit 3 naming its socket and unit; identityd still answers.
    device.stop_keyd();
    let run = device.cli(&["status"]);
    let stderr = run.expect(3).stderr();
    assert!(stderr.contains(&device.tpmd_socket().display().to_string()) && stderr.contains("aziot-tpmd.socket"), "{run:?}");
    assert!(run.stdout().contains("Provisioned:     yes"), "{run:?}");

    // identityd stops too: exit 3 for it, and the last assignment from device_info.
    device.stop_identityd();
    let run = device.cli(&["status", "-o", "json"]);
    let stderr = run.expect(3).stderr();
    assert!(stderr.contains(&device.identityd_socket().display().to_string()) && stderr.contains("aziot-identityd.socket"), "{run:?}");
    let json = run.json();
    assert_eq!((json["provisioned"].as_bool(), &json["hub"]), (Some(false), &status["hub"]));
    assert_eq!(json["unreachable"].as_array().map(Vec::len), Some(2), "{run:?}");
}

#[test]
fn status_with_no_daemon_at_all_exits_3_and_says_what_to_start() {
    let device = Device::nothing();
    let socket = device.identityd_socket();
    let home = device.path("identityd");
    let run = device.cli(&["status", "--identityd-socket", socket.to_str().unwrap(), "--homedir", home.to_str().unwrap()]);
    let stderr = run.expect(3).stderr();
    assert!(stderr.contains("cannot reach the Identity Service (identityd-dps)"), "{run:?}");
    assert!(stderr.contains("systemctl start aziot-identityd.socket"), "{run:?}");
    assert!(stderr.contains("cannot reach the TPM Service (keyd-tpm)"), "{run:?}");
    assert!(run.stdout().contains("Provisioned:     unknown"), "{run:?}");
}
