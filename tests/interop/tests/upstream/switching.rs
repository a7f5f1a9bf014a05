//! A device moved from upstream's identity service to ours and back on the same state (TPM,
//! key store, identityd's homedir), as docs/migration.md says: it stays provisioned without a new
//! DPS registration, and its module identities keep their generation and keys, so the tokens they
//! sign still pass. Going back with the same keys takes the copy of upstream's key files made
//! before the switch (keyd-tpm removes a plaintext key once it holds it in the TPM).

use interop::{Daemon, World};
use serde_json::json;

fn emulator_registrations(world: &World) -> usize {
    world.log("emulator").matches("assigned").count()
}

#[test]
fn switching_from_upstream_to_ours_and_back_keeps_the_modules() {
    let Some((up, _t)) = interop::case("switch upstream -> ours -> upstream, modules kept", false) else { return };
    let mut world = World::new(&up);
    world.start_upstream_stack();
    let device = world.wait_provisioned();
    let module = world.identityd_ok("POST", "/identities/modules", Some(json!({"type": "aziot", "moduleId": "kept"})))["spec"].clone();
    world.assert_hub_accepts_module_token(&module);
    let registrations = emulator_registrations(&world);

    // To ours: keyd-tpm takes over the TPM and upstream's key files, identityd-dps the homedir.
    world.stop(Daemon::UpstreamIdentityd);
    world.stop(Daemon::UpstreamKeyd);
    world.stop(Daemon::UpstreamTpmd);
    let keys = world.path("state/keyd/keys");
    let archive = world.path("keys-before-tpm");
    copy_dir(&keys, &archive);
    world.start(Daemon::KeydTpm);
    world.start(Daemon::IdentitydDps);
    let ours = world.wait_provisioned();
    assert_eq!((&ours["hubName"], &ours["deviceId"]), (&device["hubName"], &device["deviceId"]));
    let on_ours = world.identityd_ok("GET", "/identities/modules/kept?type=aziot", None)["spec"].clone();
    assert_eq!(on_ours["genId"], module["genId"], "same module identity");
    world.assert_hub_accepts_module_token(&on_ours);
    assert_eq!(emulator_registrations(&world), registrations, "no new DPS registration");

    assert!(!has_plaintext_master_key(&keys), "keyd-tpm took the master key into the TPM");

    // And back, restoring the key files as docs/migration.md says.
    world.stop(Daemon::IdentitydDps);
    world.stop(Daemon::KeydTpm);
    std::fs::remove_dir_all(&keys).unwrap();
    copy_dir(&archive, &keys);
    world.start(Daemon::UpstreamTpmd);
    world.start(Daemon::UpstreamKeyd);
    world.start(Daemon::UpstreamIdentityd);
    world.wait_provisioned();
    let back = world.identityd_ok("GET", "/identities/modules/kept?type=aziot", None)["spec"].clone();
    assert_eq!(back["genId"], module["genId"]);
    world.assert_hub_accepts_module_token(&back);
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

fn has_plaintext_master_key(keys: &std::path::Path) -> bool {
    std::fs::read_dir(keys)
        .unwrap()
        .filter_map(Result::ok)
        .any(|e| e.file_name().to_string_lossy().starts_with("aziotidentitydmasterid-") && e.file_name().to_string_lossy().ends_with(".key"))
}
