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
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let before = loop {
        let run = device.cli(&["status", "-o", "json"]);
        if run.json()["last_error"].is_object() || std::time::Instant::now() > deadline {
            break run;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let json = before.expect(1).json();
    assert_eq!(json["last_error"]["cause"], "not_enrolled", "{before:?}");
    assert_eq!(json["provisioned"], false);
    assert!(json["error"].as_str().is_some_and(|e| !e.is_empty()), "{before:?}");
    assert_eq!(json["auth_key_present"], false, "{before:?}");
    let text = device.cli(&["status"]);
    let out = text.expect(1).stdout();
    assert!(out.starts_with("Provisioned:     no\n"), "{text:?}");
    // The not-enrolled error once, on stdout, with the 424-character EK cut to its ends; stderr
    // only points at it.
    let ek = device.cli(&["tpm-info", "-o", "json"]).json()["endorsement_key"].as_str().unwrap().to_owned();
    assert_eq!(out.matches("DPS does not accept registration ID").count(), 1, "{text:?}");
    assert!(out.contains("Last error:      DPS does not accept") && out.contains("(424 characters)"), "{text:?}");
    assert!(out.contains("(not_enrolled, https://"), "{text:?}");
    assert!(!text.stdout().contains(&ek) && !text.stderr().contains(&ek), "{text:?}");
    assert!(text.stderr().contains("not provisioned: not enrolled (see \"Last error\")"), "{text:?}");
    assert!(!out.contains("Since:"), "no Since while not provisioned: {text:?}");
    assert!(out.contains("(id_scope "), "{text:?}");

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

#[test]
fn status_names_an_unreachable_dps_within_seconds_with_the_next_try() {
    // No emulator: identityd-dps's DPS is https://127.0.0.1:9, where nothing listens.
    let mut device = Device::with_tpm();
    device.start_keyd();
    let started = std::time::Instant::now();
    device.start_identityd(None);
    let run = loop {
        let run = device.cli(&["status"]);
        if run.stdout().contains("Last error:") {
            break run;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "no error shown: {run:?}");
        std::thread::sleep(Duration::from_millis(200));
    };
    let took = started.elapsed();
    let out = run.expect(1).stdout();
    assert!(out.contains("Last error:      cannot reach DPS at https://127.0.0.1:9") && out.contains("refused"), "{run:?}");
    assert!(out.contains("(dps_unreachable, https://127.0.0.1:9, at "), "{run:?}");
    assert!(out.contains("Provisioning:    registering with DPS (attempt 1), retrying") && out.contains("next try"), "{run:?}");
    assert!(run.stderr().contains("not provisioned: dps unreachable"), "{run:?}");
    eprintln!("status showed the DPS error {took:?} after identityd-dps started");
    let json = device.cli(&["status", "-o", "json"]).json();
    assert_eq!(json["last_error"]["cause"], "dps_unreachable", "{json}");
    assert_eq!(json["provisioning_state"], "registering", "{json}");
    assert!(json["next_attempt"].as_str().is_some_and(|t| t.ends_with('Z')), "{json}");

    // identityd-dps stops: the status file still says what it last met.
    device.stop_identityd();
    let run = device.cli(&["status"]);
    let out = run.expect(3).stdout();
    assert!(out.contains("identityd-dps is stopped [identityd-dps is not answering: this is what it last wrote"), "{run:?}");
    assert!(out.contains("Last error:      cannot reach DPS"), "{run:?}");
}
