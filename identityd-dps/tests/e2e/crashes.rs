//! identityd-dps SIGKILLed at random points while it registers with DPS (first boot and
//! on-demand reprovisioning), then started again: every time the device ends up provisioned,
//! with an identity the hub accepts, and its state files readable. `CRASH_ROUNDS` (default 30)
//! sets the rounds; scripts/crash-soak.sh runs many more.

use std::time::Duration;

use serde_json::json;

use crate::fixture::{Env, Options};

fn rounds() -> usize {
    std::env::var("CRASH_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(30)
}

/// Milliseconds in 0..max, spread by a seeded xorshift (the seed is printed to replay a failure).
struct Delays(u64);

impl Delays {
    fn new() -> Self {
        let seed = std::env::var("CRASH_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or_else(|| {
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(1)
        }) | 1;
        eprintln!("crash delays: CRASH_SEED={seed}");
        Self(seed)
    }

    fn next(&mut self, max_ms: u64) -> Duration {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        Duration::from_millis(self.0 % max_ms)
    }
}

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
        std::thread::sleep(delays.next(1500));
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
