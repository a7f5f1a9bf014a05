//! Upstream's daemons and ours in every pairing a gateway can have: upstream's whole stack on the
//! emulator (the emulator's fidelity), upstream's identityd (and certd) on keyd-tpm, and
//! identityd-dps on upstream's tpmd and keyd. Each provisions through DPS, creates a module
//! identity and gets a module token the hub accepts.

use interop::{Daemon, World};
use serde_json::{json, Value};

/// Creates module `m` through identityd and checks its token against the hub.
fn module_works(world: &World, m: &str) -> Value {
    let created = world.identityd_ok("POST", "/identities/modules", Some(json!({"type": "aziot", "moduleId": m})));
    let spec = created["spec"].clone();
    assert_eq!((spec["moduleId"].as_str(), spec["auth"]["type"].as_str()), (Some(m), Some("sas")), "{created}");
    world.assert_hub_accepts_module_token(&spec);
    let fetched = world.identityd_ok("GET", &format!("/identities/modules/{m}?type=aziot"), None);
    assert_eq!(fetched["spec"]["genId"], spec["genId"]);
    spec
}

#[test]
fn upstreams_identityd_keyd_and_tpmd_provision_on_the_emulator() {
    let Some((up, _t)) = interop::case("upstream identityd + keyd + tpmd on the emulator", false) else { return };
    let mut world = World::new(&up);
    world.start_upstream_stack();
    let device = world.wait_provisioned();
    assert_eq!(device["deviceId"], world.registration_id.as_str(), "{device}");
    assert_eq!(device["auth"]["type"], "tpm");
    assert!(world.hubs().contains(&device["hubName"].as_str().unwrap_or_default().to_owned()));
    module_works(&world, "upstream-module");
    let log = world.log("upstream-identityd");
    assert!(log.contains("Successfully provisioned with DPS"), "{log}");
}

#[test]
fn upstreams_identityd_and_certd_run_on_keyd_tpm() {
    let Some((up, _t)) = interop::case("upstream identityd + certd on keyd-tpm", false) else { return };
    let mut world = World::new(&up);
    world.start(Daemon::KeydTpm);
    world.enroll();
    world.start(Daemon::UpstreamCertd);
    world.start(Daemon::UpstreamIdentityd);
    world.wait_provisioned();
    module_works(&world, "on-keyd-tpm");
    // The module's key was derived in the TPM: keyd-tpm holds upstream identityd's master key.
    let log = world.log("keyd-tpm");
    assert!(!log.contains("ERROR"), "{log}");
}

#[test]
fn identityd_dps_runs_on_upstreams_tpmd_and_keyd() {
    let Some((up, _t)) = interop::case("identityd-dps on upstream tpmd + keyd", false) else { return };
    let mut world = World::new(&up);
    world.start(Daemon::UpstreamTpmd);
    world.start(Daemon::UpstreamKeyd);
    world.enroll();
    world.start(Daemon::IdentitydDps);
    let device = world.wait_provisioned();
    assert_eq!(device["auth"]["type"], "tpm");
    module_works(&world, "on-upstream-keyd");
}

/// `aziot-tpm tpm-info` prints a `[provisioning]` block; upstream's `aziotctl config apply`
/// takes a super-config made of it as it is (upstream requires the registration ID).
#[test]
fn upstreams_config_apply_takes_the_block_tpm_info_prints() {
    let Some((up, _t)) = interop::case("aziotctl config apply takes tpm-info's [provisioning] block", true) else { return };
    let mut world = World::new(&up);
    world.start(Daemon::KeydTpm);
    let none = world.path("none.toml");
    let out = world.cli(&["tpm-info", "--super-config", none.to_str().unwrap(), "-o", "json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let info: Value = serde_json::from_slice(&out.stdout).unwrap();
    let block = info["provisioning_config"].as_str().unwrap().replace("<the ID scope of your DPS instance>", "0ne00000042");
    let (files, _) = crate::config_apply::apply(&up.bin("aziotctl"), &format!("hostname = \"gw\"\n{block}"));
    let identityd = &files.iter().find(|f| f.0 == "identityd").expect("identityd's file").1;
    let id = info["registration_id"].as_str().unwrap();
    assert!(identityd.contains(&format!("registration_id = \"{id}\"")) && identityd.contains("scope_id = \"0ne00000042\""), "{identityd}");
}
