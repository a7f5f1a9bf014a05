//! `aziot-tpm reprovision` moving a device to the hub its enrollment now names, failing on a
//! disabled enrollment without losing the device's identity, and refused to a caller without
//! the right.

mod common;

use std::time::Duration;

use common::Device;

#[test]
fn reprovision_moves_the_device_to_the_hub_its_enrollment_now_names() {
    let mut device = Device::with_tpm();
    device.start_keyd();
    device.start_emulator();
    let [first, second] = [device.hubs()[0].clone(), device.hubs()[1].clone()];
    device.enroll(&["--allocation-policy", "static", "--iot-hub", &first]).expect(0);
    device.start_identityd(None);
    let status = device.wait_provisioned(Duration::from_secs(60));
    assert_eq!(status["hub"], first.as_str());

    device.enroll(&["--iot-hub", &second]).expect(0);
    let run = device.cli(&["reprovision"]);
    let out = run.expect(0).stdout();
    assert!(out.starts_with("Reprovisioned in "), "{run:?}");
    assert!(out.contains(&format!("IoT Hub changed from {first} to {second}; device ID unchanged.")), "{run:?}");
    assert!(out.contains(&format!("IoT Hub:         {second}")), "{run:?}");
    assert!(run.stderr().contains("registers with DPS again"), "{run:?}");
    let now = device.cli(&["status", "-o", "json"]).expect(0).json();
    assert_eq!(now["hub"], second.as_str());
    assert_eq!(now["auth_key_present"], true);

    // A disabled enrollment: the registration fails, the device keeps its identity.
    device.enroll(&["--provisioning-status", "disabled"]).expect(0);
    let run = device.cli(&["reprovision", "-o", "json"]);
    let stderr = run.expect(1).stderr();
    assert!(stderr.contains("reprovisioning failed after") && stderr.contains("enable it"), "{run:?}");
    let kept = device.cli(&["status", "-o", "json"]).expect(0).json();
    assert_eq!((&kept["hub"], &kept["device_id"]), (&now["hub"], &now["device_id"]));
}

#[test]
fn reprovision_by_a_caller_without_the_right_is_refused_with_the_fix() {
    // identityd only: the caller is a principal that may read the device identity but not
    // reprovision; the check comes before any DPS or TPM call.
    let mut device = Device::nothing();
    device.start_identityd(Some("device"));
    let run = device.cli(&["reprovision"]);
    let stderr = run.expect(1).stderr();
    assert!(stderr.contains("identityd refused to reprovision (authorization error)"), "{run:?}");
    assert!(stderr.contains("run it as root"), "{run:?}");
}

#[test]
fn reprovision_shows_the_dps_error_while_it_waits_and_stops_at_its_bound() {
    // No emulator: identityd-dps's DPS is https://127.0.0.1:9, where nothing listens.
    let mut device = Device::with_tpm();
    device.start_keyd();
    device.start_identityd(None);
    let started = std::time::Instant::now();
    let run = device.cli(&["reprovision", "--timeout", "6"]);
    let took = started.elapsed();
    let stderr = run.expect(3).stderr();
    assert!(stderr.contains("(waiting up to 6 s; --timeout to change)"), "{run:?}");
    // The refused connection is shown as it happens, not when the registration gives up.
    let line = stderr.lines().find(|l| l.contains("cannot reach DPS")).unwrap_or_else(|| panic!("{run:?}"));
    assert!(line.contains("refused") && line.ends_with("(dps_unreachable)"), "{line}");
    assert!(stderr.contains("gave up waiting after 6 s (--timeout); identityd-dps goes on registering"), "{run:?}");
    assert!(stderr.contains("Last error (dps_unreachable, at ") && stderr.contains("Next try: "), "{run:?}");
    assert!(took < Duration::from_secs(30), "{took:?}");
}
