//! `aziot-tpm enroll` against the emulator's DPS service API, with the EK read from a real TPM.

mod common;

use common::{Device, PUBLISHED_EK, PUBLISHED_REGISTRATION_ID};
use serde_json::json;

#[test]
fn enroll_creates_the_enrollment_then_updates_only_what_is_given() {
    let mut device = Device::with_tpm();
    device.start_keyd();
    device.start_emulator();
    let hub = device.hubs()[1].clone();
    let twin = device.path("twin.json");
    std::fs::write(&twin, json!({"tags": {"site": "plant-7"}, "properties": {"desired": {"mode": "edge"}}}).to_string())
        .unwrap();

    let created = device.enroll(&[
        "--device-id", "gateway-1", "--allocation-policy", "static", "--iot-hub", &hub,
        "--initial-twin", twin.to_str().unwrap(), "-o", "json",
    ]);
    let created = created.expect(0).json();
    let tpm = device.cli(&["tpm-info", "-o", "json"]).expect(0).json();
    let id = tpm["registration_id"].as_str().unwrap();
    assert_eq!(created["action"], "created");
    assert_eq!(created["registration_id"], id, "the registration ID is derived from the TPM's EK");
    let stored = device.stored_enrollment(id);
    assert_eq!(stored["attestation"]["tpm"]["endorsementKey"], tpm["endorsement_key"]);
    assert_eq!(stored["deviceId"], "gateway-1");
    assert_eq!(stored["capabilities"]["iotEdge"], true, "a gateway is an IoT Edge device by default");
    assert_eq!(stored["provisioningStatus"], "enabled");
    assert_eq!((stored["allocationPolicy"].as_str(), &stored["iotHubs"]), (Some("static"), &json!([hub])));
    assert_eq!(stored["initialTwin"]["tags"]["site"], "plant-7");
    let first_etag = stored["etag"].clone();

    let updated = device.enroll(&["--provisioning-status", "disabled", "--iot-edge", "false"]);
    let text = updated.expect(0).stdout();
    assert!(text.contains("Updated the individual enrollment"), "{text}");
    assert!(text.contains("Provisioning status: disabled") && text.contains("IoT Edge device:     no"), "{text}");
    let stored = device.stored_enrollment(id);
    assert_eq!(stored["provisioningStatus"], "disabled");
    assert_eq!(stored["capabilities"]["iotEdge"], false);
    assert_eq!(stored["deviceId"], "gateway-1", "what the update does not name stays");
    assert_eq!(stored["iotHubs"], json!([hub]));
    assert_eq!(stored["initialTwin"]["tags"]["site"], "plant-7");
    assert_ne!(stored["etag"], first_etag);

    // From a machine without the device's TPM: EK and registration ID given, no TPM needed.
    device.stop_keyd();
    let remote = device.enroll(&["--registration-id", PUBLISHED_REGISTRATION_ID, "--endorsement-key", PUBLISHED_EK, "--tcti", "swtpm:host=127.0.0.1,port=9"]);
    remote.expect(0);
    assert_eq!(device.stored_enrollment(PUBLISHED_REGISTRATION_ID)["attestation"]["tpm"]["endorsementKey"], PUBLISHED_EK);
}

#[test]
fn a_bad_connection_string_or_flag_is_a_usage_error_that_never_shows_the_key() {
    let device = Device::nothing();
    let secret = "c2VjcmV0LWtleS1tYXRlcmlhbA==";
    let enroll_as = |cs: Option<&str>, registration_id: &str, ek: &str| {
        let args = ["enroll", "--registration-id", registration_id, "--endorsement-key", ek];
        let env: Vec<(&str, &str)> = cs.map(|c| ("AZIOT_DPS_CONNECTION_STRING", c)).into_iter().collect();
        device.cli_with(&args, &env)
    };
    let enroll = |cs: Option<&str>| enroll_as(cs, "dev-1", PUBLISHED_EK);

    let run = enroll(None);
    assert!(run.expect(2).stderr().contains("AZIOT_DPS_CONNECTION_STRING"), "{run:?}");
    for (cs, says) in [
        (format!("HostName=dps.example;SharedAccessKeyName=owner;Key={secret}"), "no SharedAccessKey="),
        (format!("HostName=hub.example;DeviceId=d1;SharedAccessKey={secret}"), "device connection string"),
        ("HostName=dps.example;SharedAccessKeyName=owner;SharedAccessKey=not base64!".to_owned(), "not base64"),
    ] {
        let run = enroll(Some(&cs));
        let stderr = run.expect(2).stderr();
        assert!(stderr.contains(says) && stderr.contains("Shared access policies"), "{run:?}");
        assert!(!stderr.contains(secret) && !run.stdout().contains(secret), "the key leaked: {run:?}");
    }
    let good = format!("HostName=127.0.0.1:9;SharedAccessKeyName=owner;SharedAccessKey={secret}");
    let run = enroll_as(Some(&good), "Bad/ID", PUBLISHED_EK);
    assert!(run.expect(2).stderr().contains("not valid for DPS"), "{run:?}");
    let run = enroll_as(Some(&good), "dev-1", "AAAA");
    assert!(run.expect(2).stderr().contains("not a base64 TPM2B_PUBLIC"), "{run:?}");
    // Nothing listens there: DPS unreachable is exit 3 and names the host.
    let run = enroll(Some(&good));
    assert!(run.expect(3).stderr().contains("cannot reach DPS at 127.0.0.1:9"), "{run:?}");
}

#[test]
fn dps_refusals_show_the_error_code_message_and_tracking_id() {
    let mut device = Device::nothing();
    device.start_emulator();
    let ca = device.ready("ca_pem");
    let base = ["enroll", "--registration-id", PUBLISHED_REGISTRATION_ID, "--endorsement-key", PUBLISHED_EK];

    // A hub DPS does not link: DPS's own 400 with its code, message and tracking ID.
    let mut args = base.to_vec();
    args.extend(["--trust-ca", &ca, "--iot-hub", "127.0.0.1:1"]);
    let run = device.cli(&args);
    let stderr = run.expect(1).stderr();
    assert!(stderr.contains("DPS refused the enrollment") && stderr.contains("HTTP 400, errorCode 400000"), "{run:?}");
    assert!(stderr.contains("is not linked") && stderr.contains("trackingId"), "{run:?}");

    // The right host with a wrong key: 401, and the advice names the key and the clock.
    let cs = device.ready("service_connection_string");
    let wrong = format!("{};SharedAccessKey=d3Jvbmcga2V5", cs.split(";SharedAccessKey=").next().unwrap());
    let mut args = base.to_vec();
    args.extend(["--trust-ca", &ca]);
    let run = device.cli_with(&args, &[("AZIOT_DPS_CONNECTION_STRING", &wrong)]);
    let stderr = run.expect(1).stderr();
    assert!(stderr.contains("HTTP 401, errorCode 401002") && stderr.contains("SharedAccessKey"), "{run:?}");
    assert!(stderr.contains("clock"), "{run:?}");

    // Without trusting the emulator's CA the TLS handshake fails: exit 3, and the fix.
    let run = device.cli(&base);
    assert!(run.expect(3).stderr().contains("--trust-ca"), "{run:?}");
    assert!(device.stored_enrollment(PUBLISHED_REGISTRATION_ID).is_null());
}

/// A configured `registration_id` is what identityd sends, so it is what `enroll` enrolls; the
/// device then provisions under it.
#[test]
fn enroll_uses_the_configured_registration_id_and_the_device_provisions_under_it() {
    let mut device = Device::with_tpm();
    device.start_keyd();
    device.start_emulator();
    device.write_identityd_config(None, Some("gw-configured"));
    let none = device.path("none.toml");
    let run = device.enroll(&["--super-config", none.to_str().unwrap()]);
    let text = run.expect(0).stdout();
    assert!(text.contains("Registration ID:     gw-configured (configured: [provisioning.attestation] registration_id in"), "{text}");
    let tpm = device.cli(&["tpm-info", "-o", "json"]).expect(0).json();
    assert_eq!(device.stored_enrollment("gw-configured")["attestation"]["tpm"]["endorsementKey"], tpm["endorsement_key"]);

    device.start_identityd_registering_as(None, Some("gw-configured"));
    let status = device.wait_provisioned(std::time::Duration::from_secs(60));
    assert_eq!(status["registration_id"], "gw-configured", "{status}");
}

/// `https_proxy` as identityd-dps reads it: the DPS service API is reached through the tunnel,
/// and a proxy that is not there is named in the error.
#[test]
fn enroll_goes_through_the_https_proxy_and_names_one_that_does_not_answer() {
    let mut device = Device::with_tpm();
    device.start_keyd();
    device.start_emulator();
    let proxy = testkit::Tinyproxy::start();
    let ca = device.ready("ca_pem");
    let run = device.cli_with(&["enroll", "--trust-ca", &ca], &[("https_proxy", &proxy.url())]);
    run.expect(0);
    let dps = device.ready("service_connection_string");
    let host = dps.split(';').find_map(|p| p.strip_prefix("HostName=")).unwrap().to_owned();
    assert!(proxy.tunnels_to(&host) >= 2, "GET and PUT through the proxy:\n{}", proxy.log());

    let dead = format!("http://127.0.0.1:{}", testkit::free_port());
    let run = device.cli_with(&["enroll", "--trust-ca", &ca], &[("https_proxy", &dead)]);
    assert_eq!(run.code(), 3, "{}", run.stderr());
    assert!(run.stderr().contains(&format!("cannot reach the HTTPS proxy {dead}")), "{}", run.stderr());
}
