//! `aziot-tpm tpm-info` through a real keyd-tpm on a real swtpm, and straight on the TPM when
//! the daemon is not running.

mod common;

use common::Device;

#[test]
fn tpm_info_prints_what_an_enrollment_needs_as_text_and_json() {
    let mut device = Device::with_tpm();
    device.start_keyd();

    let run = device.cli(&["tpm-info", "-o", "json"]);
    let json = run.expect(0).json();
    let ek = aziot_tpm_common::from_b64(json["endorsement_key"].as_str().unwrap()).unwrap();
    assert_eq!(json["registration_id"], aziot_tpm_common::registration_id(&ek));
    assert_eq!(json["manufacturer"], "IBM");
    assert_eq!(json["auth_key_present"], false);
    assert_eq!((json["source"].as_str(), json["socket"].as_str()), (Some("tpm_service"), device.tpmd_socket().to_str()));

    // `--socket`, the flag's first name, still works.
    let socket = device.tpmd_socket();
    let run = device.cli(&["tpm-info", "--socket", socket.to_str().unwrap()]);
    let text = run.expect(0).stdout();
    assert!(text.contains(&format!("Registration ID:  {}", json["registration_id"].as_str().unwrap())), "{text}");
    assert!(text.contains("DPS auth key:     absent at 0x81000100"), "{text}");
    assert!(text.contains(&format!("Read through:     the TPM Service at {}", socket.display())), "{text}");
}

#[test]
fn tpm_info_reads_the_tpm_directly_when_the_daemon_is_stopped() {
    let mut device = Device::with_tpm();
    device.start_keyd();
    let through_daemon = device.cli(&["tpm-info", "-o", "json"]).expect(0).json();
    device.stop_keyd();

    let run = device.cli(&["tpm-info", "-o", "json"]);
    let direct = run.expect(0).json();
    assert_eq!(direct["source"], "direct");
    assert_eq!(direct["tcti"], device.tpm().tcti().as_str(), "the TCTI of the tpmd config");
    for key in ["registration_id", "endorsement_key", "storage_root_key", "manufacturer", "firmware_version", "persistent_handles"] {
        assert_eq!(direct[key], through_daemon[key], "{key}");
    }
    let text = device.cli(&["tpm-info"]).expect(0).stdout();
    assert!(text.contains("Read through:     the TPM directly through TCTI swtpm:"), "{text}");
    assert!(text.contains("cannot be reached"), "{text}");
}

#[test]
fn tpm_info_on_a_fresh_tpm_says_who_creates_the_ek_and_creates_nothing() {
    let device = Device::with_tpm();
    let tcti = device.tpm().tcti();
    let run = device.cli(&["tpm-info", "--tcti", &tcti]);
    let out = run.expect(1).stdout();
    assert!(out.contains("Endorsement key:  none (the TPM has no EK persisted at 0x81010001; keyd-tpm creates"), "{run:?}");
    assert!(out.contains("Persistent:       none"), "{run:?}");
    assert!(run.stderr().contains("never changes the TPM"), "{run:?}");
    // Checked with tpm2-tools: still nothing persisted.
    let handles = device.tpm().tpm2_ok("tpm2_getcap", &["handles-persistent"], device.dir.path());
    assert!(handles.is_empty(), "{}", String::from_utf8_lossy(&handles));
}

#[test]
fn tpm_info_without_daemon_or_tpm_exits_3_and_says_what_to_check() {
    let device = Device::nothing();
    device.write_tpmd_config("swtpm:host=127.0.0.1,port=9");
    let run = device.cli(&["tpm-info"]);
    let stderr = run.expect(3).stderr();
    assert!(stderr.contains("cannot reach the TPM Service (keyd-tpm)") && stderr.contains("aziot-tpmd.socket"), "{run:?}");
    assert!(stderr.contains("Reading the TPM directly failed too") && stderr.contains("is the TPM simulator running"), "{run:?}");
}
