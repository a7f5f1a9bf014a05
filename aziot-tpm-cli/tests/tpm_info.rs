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

#[test]
fn tpm_info_says_which_registration_id_dps_sees_and_where_it_comes_from() {
    let mut device = Device::with_tpm();
    device.start_keyd();
    let super_config = device.path("config.toml");
    let args = ["tpm-info", "--super-config", super_config.to_str().unwrap(), "-o", "json"];

    // Nothing configured: the EK-derived ID, and a [provisioning] block carrying it.
    let json = device.cli(&args).expect(0).json();
    let derived = json["registration_id_from_ek"].as_str().unwrap().to_owned();
    assert_eq!((json["registration_id"].as_str(), json["registration_id_source"].as_str()), (Some(&*derived), Some("endorsement_key")));
    let block = json["provisioning_config"].as_str().unwrap();
    assert!(block.contains(&format!("registration_id = \"{derived}\"")) && block.contains("method = \"tpm\""), "{block}");

    // Only in the super-config: that ID, said to be not applied yet.
    std::fs::write(&super_config, "[provisioning]\nsource = \"dps\"\n[provisioning.attestation]\nmethod = \"tpm\"\nregistration_id = \"gw-next\"\n").unwrap();
    let json = device.cli(&args).expect(0).json();
    assert_eq!((json["registration_id"].as_str(), json["registration_id_source"].as_str()), (Some("gw-next"), Some("super_config")));
    let text = device.cli(&args[..3]).expect(0).stdout();
    assert!(text.contains("Registration ID:  gw-next (configured in") && text.contains("not applied yet"), "{text}");
    assert!(text.contains(&format!("EK-derived ID:    {derived}")), "{text}");

    // In identityd's config: that is what identityd sends; the super-config's differs and is pending.
    device.write_identityd_config(None, Some("gw-applied"));
    let json = device.cli(&args).expect(0).json();
    assert_eq!((json["registration_id"].as_str(), json["registration_id_source"].as_str()), (Some("gw-applied"), Some("identityd_config")));
    assert_eq!(json["pending_registration_id"], "gw-next");
    assert!(json["registration_id_file"].as_str().unwrap().contains("identityd.toml"), "{json}");
    let block = json["provisioning_config"].as_str().unwrap();
    assert!(block.contains("registration_id = \"gw-applied\"") && block.contains("id_scope = \"0ne00000001\""), "{block}");
    let text = device.cli(&args[..3]).expect(0).stdout();
    assert!(text.contains("Registration ID:  gw-applied (configured: [provisioning.attestation] registration_id in"), "{text}");
    assert!(text.contains("Pending:          gw-next"), "{text}");
    assert!(text.contains("For /etc/aziot/config.toml") && text.contains("[provisioning.attestation]"), "{text}");
}

/// The block tpm-info prints is a super-config `config apply` takes as it is.
#[test]
fn the_printed_provisioning_block_applies() {
    let mut device = Device::with_tpm();
    device.start_keyd();
    let none = device.path("none.toml");
    let json = device.cli(&["tpm-info", "--super-config", none.to_str().unwrap(), "-o", "json"]).expect(0).json();
    let block = json["provisioning_config"].as_str().unwrap().replace("<the ID scope of your DPS instance>", "0ne00000042");
    let root = device.path("root");
    std::fs::create_dir_all(root.join("etc/aziot")).unwrap();
    std::fs::write(root.join("etc/aziot/config.toml"), format!("hostname = \"gw\"\n{block}")).unwrap();
    let run = device.cli_with(&["config", "apply", "--root", root.to_str().unwrap()], &[("AZIOT_TPM_USERS", "current")]);
    run.expect(0);
    let identityd = std::fs::read_to_string(root.join("etc/aziot/identityd/config.d/00-super.toml")).unwrap();
    let id = json["registration_id"].as_str().unwrap();
    assert!(identityd.contains(&format!("registration_id = \"{id}\"")) && identityd.contains("scope_id = \"0ne00000042\""), "{identityd}");
}
