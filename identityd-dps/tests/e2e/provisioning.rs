//! First boot, restarts, a lost TPM key, a device the hub stops accepting, on-demand reprovision.

use std::time::Duration;

use serde_json::json;

use crate::fixture::{Env, Options};

const PROVISION: Duration = Duration::from_secs(60);

#[test]
fn first_boot_provisions_and_the_hub_accepts_the_devices_token() {
    let env = Env::start(Options::enrolled());
    let device = env.wait_provisioned(PROVISION);
    let hub = device["hubName"].as_str().unwrap().to_owned();
    let device_id = device["deviceId"].as_str().unwrap().to_owned();
    assert!(env.hubs().contains(&hub), "{device}");
    assert_eq!(
        device_id, env.registration_id,
        "the default device ID is the registration ID"
    );
    assert_eq!(device["gatewayHost"], device["hubName"]);
    assert_eq!(device["auth"], json!({"type": "tpm"}));

    // The key DPS delivered is in the TPM: the hub accepts a token it signs.
    let (status, body) =
        env.hub_as_device(&hub, &device_id, &format!("/devices/{device_id}/modules"));
    assert_eq!(status, 200, "{body}");

    // Upstream's backup files.
    let info = std::fs::read_to_string(env.homedir().join("device_info")).unwrap();
    assert!(info.contains(&format!("hub_name = \"{hub}\"")), "{info}");
    assert!(
        info.contains(&format!("device_id = \"{device_id}\"")),
        "{info}"
    );
    env.wait_log("module identities reconciled", 1, PROVISION);
    let prev = std::fs::read_to_string(env.homedir().join("prev_state")).unwrap();
    assert!(
        prev.contains("method = \"tpm\"") && prev.contains(&env.registration_id),
        "{prev}"
    );

    // GET /identities/identity for root is the device; provisioning info names the derived ID.
    let r = env.identityd("GET", "/identities/identity", None);
    assert_eq!(r.json()["spec"]["deviceId"], device_id.as_str());
    let r = env.identityd("GET", "/identities/provisioning", None);
    assert_eq!(r.json()["registration_id"], env.registration_id.as_str());
    assert_eq!(r.json()["auth"], "tpm");
}

#[test]
fn restart_uses_the_backup_without_contacting_dps() {
    let mut env = Env::start(Options::enrolled());
    let first = env.wait_provisioned(PROVISION);
    env.wait_log("module identities reconciled", 1, PROVISION);
    // From now on every DPS request fails: a restart must not need DPS.
    env.add_fault("dps=500");
    env.restart_identityd();
    let again = env.wait_provisioned(Duration::from_secs(20));
    assert_eq!(first, again);
    assert!(
        env.identityd_log().contains("using the backup of device"),
        "{}",
        env.identityd_log()
    );
    assert_eq!(
        env.faults()[0]["fired"],
        0,
        "DPS was contacted: {}",
        env.faults()
    );
}

#[test]
fn a_missing_tpm_auth_key_is_detected_at_start_and_the_device_reprovisions() {
    let mut env = Env::start(Options::enrolled());
    env.wait_provisioned(PROVISION);
    assert!(env.stop_identityd());
    // The TPM loses the key (e.g. cleared), and keyd-tpm its wrapped copies.
    env.stop_keyd();
    env.tpm.tpm2_ok(
        "tpm2_evictcontrol",
        &["-C", "o", "-c", "0x81000100"],
        env.dir.path(),
    );
    for f in ["auth-key.current", "auth-key.previous", "auth-key.next"] {
        let _ = std::fs::remove_file(env.path("tpmd").join(f));
    }
    env.start_keyd();
    assert_eq!(
        env.tpmd("POST", "/sign_with_auth_key", Some(json!({"data": "AA=="})))
            .status,
        400
    );

    env.start_identityd();
    let device = env.wait_provisioned(PROVISION);
    let log = env.identityd_log();
    assert!(
        log.contains("the TPM holds no usable DPS auth key"),
        "{log}"
    );
    env.wait_log("DPS assigned", 2, PROVISION);
    let hub = device["hubName"].as_str().unwrap();
    let id = device["deviceId"].as_str().unwrap();
    assert_eq!(
        env.hub_as_device(hub, id, &format!("/devices/{id}/modules"))
            .0,
        200
    );
}

#[test]
fn a_device_the_hub_rejects_reprovisions_on_the_next_401() {
    let env = Env::start(Options::enrolled());
    let device = env.wait_provisioned(PROVISION);
    env.wait_log("module identities reconciled", 1, PROVISION);
    let hub = device["hubName"].as_str().unwrap().to_owned();
    let id = device["deviceId"].as_str().unwrap().to_owned();
    let index = env.hub_index(&hub);

    let (status, v) = env.hub_owner(
        index,
        "PUT",
        &format!("/devices/{id}"),
        Some(json!({"deviceId": id, "status": "disabled"})),
    );
    assert_eq!(status, 200, "{v}");
    let r = env.identityd("GET", "/identities/modules?type=aziot", None);
    assert_eq!(r.status, 503, "{}", String::from_utf8_lossy(&r.body));
    assert!(
        r.message().contains("rejected the credentials"),
        "{}",
        r.message()
    );
    env.wait_log("DPS assigned", 2, PROVISION);

    // Once the operator enables the device again, the freshly provisioned key works.
    let (status, v) = env.hub_owner(
        index,
        "PUT",
        &format!("/devices/{id}"),
        Some(json!({"deviceId": id, "status": "enabled"})),
    );
    assert_eq!(status, 200, "{v}");
    let deadline = std::time::Instant::now() + PROVISION;
    loop {
        let r = env.identityd("GET", "/identities/modules?type=aziot", None);
        if r.status == 200 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{} {}\n{}",
            r.status,
            r.message(),
            env.identityd_log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn reprovision_on_request_answers_204_and_the_new_key_works() {
    let env = Env::start(Options::enrolled());
    let device = env.wait_provisioned(PROVISION);
    let r = env.identityd(
        "POST",
        "/identities/device/reprovision",
        Some(json!({"type": "aziot"})),
    );
    assert_eq!(r.status, 204, "{}", String::from_utf8_lossy(&r.body));
    env.wait_log("DPS assigned", 2, Duration::from_secs(5));
    let again = env.wait_provisioned(PROVISION);
    assert_eq!(device, again);
    let hub = again["hubName"].as_str().unwrap();
    let id = again["deviceId"].as_str().unwrap();
    assert_eq!(
        env.hub_as_device(hub, id, &format!("/devices/{id}/modules"))
            .0,
        200
    );
}

#[test]
fn a_failed_reprovision_restores_the_previous_hub_key() {
    let env = Env::start(Options::enrolled());
    let device = env.wait_provisioned(PROVISION);
    env.wait_log("module identities reconciled", 1, PROVISION);
    // The next registration passes the TPM challenge (the challenge key replaces the hub key in
    // the TPM), then fails: the enrollment now allocates through a webhook that is down.
    env.enroll(json!({
        "allocationPolicy": "custom",
        "customAllocationDefinition": {"webhookUrl": "https://127.0.0.1:9/allocate", "apiVersion": "2021-10-01"},
    }));
    let r = env.identityd("POST", "/identities/device/reprovision", None);
    assert_eq!(r.status, 404, "{}", String::from_utf8_lossy(&r.body));
    let message = r.message();
    assert!(
        message.contains("reprovisioning failed") && message.contains("status failed"),
        "{message}"
    );
    assert!(
        message.contains("allocation policy"),
        "the message says what to check: {message}"
    );
    assert!(
        env.identityd_log()
            .contains("put the device's previous IoT Hub key back"),
        "{}",
        env.identityd_log()
    );
    // The device keeps its identity and its old key still works with the hub.
    let again = env.wait_provisioned(Duration::from_secs(5));
    assert_eq!(device, again);
    let hub = again["hubName"].as_str().unwrap();
    let id = again["deviceId"].as_str().unwrap();
    assert_eq!(
        env.hub_as_device(hub, id, &format!("/devices/{id}/modules"))
            .0,
        200
    );
    assert_eq!(
        env.identityd("GET", "/identities/modules?type=aziot", None)
            .status,
        200
    );
}

#[test]
fn a_device_without_enrollment_is_told_what_to_enroll_and_provisions_once_enrolled() {
    let env = Env::start(Options::default());
    let deadline = std::time::Instant::now() + PROVISION;
    let message = loop {
        let r = env.identityd("POST", "/identities/device", Some(json!({"type": "aziot"})));
        assert_eq!(r.status, 503);
        if r.message().contains("attempt") {
            break r.message();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{}",
            env.identityd_log()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(message.contains(&env.registration_id), "{message}");
    assert!(message.contains(&env.endorsement_key), "{message}");
    assert!(message.contains("aziot-tpm tpm-info"), "{message}");

    env.enroll(json!({}));
    env.wait_provisioned(PROVISION);
}
