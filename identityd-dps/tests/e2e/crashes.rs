//! identityd-dps SIGKILLed at random points while it registers with DPS (first boot and
//! on-demand reprovisioning), then started again: every time the device ends up provisioned,
//! with an identity the hub accepts, and its state files readable. `CRASH_ROUNDS` (default 30)
//! sets the rounds; scripts/crash-soak.sh runs many more.

use std::time::Duration;

use serde_json::json;

use testkit::crash::{rounds, Delays};

use crate::fixture::{Env, Options};

#[test]
fn kill_during_registration_always_ends_provisioned_after_a_restart() {
    let mut env = Env::start(Options::enrolled());
    let mut delays = Delays::new();
    let mut identity = None;
    for round in 0..rounds() {
        if identity.is_some() {
            // Provisioned: ask for a new registration, then crash in its middle.
            let r = env.identityd("POST", "/identities/device/reprovision", Some(json!({"type": "aziot"})));
            assert!(matches!(r.status, 200 | 204 | 503), "round {round}: {} {}", r.status, String::from_utf8_lossy(&r.body));
        }
        std::thread::sleep(delays.next(Duration::from_millis(1500)));
        env.kill_identityd();
        env.start_identityd();
        let device = env.wait_provisioned(Duration::from_secs(90));
        let (hub, device_id) = (device["hubName"].as_str().unwrap().to_owned(), device["deviceId"].as_str().unwrap().to_owned());
        assert_eq!(device_id, env.registration_id, "round {round}");
        let (status, body) = env.hub_as_device(&hub, &device_id, &format!("/devices/{device_id}/modules"));
        assert_eq!(status, 200, "round {round}: the hub refuses the device's token: {body}\n{}", env.identityd_log());
        let info = std::fs::read_to_string(env.homedir().join("device_info")).unwrap_or_default();
        assert!(info.contains(&format!("device_id = \"{device_id}\"")), "round {round}: device_info: {info}");
        identity = Some(device);
    }
}
