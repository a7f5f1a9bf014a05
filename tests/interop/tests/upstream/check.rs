//! `aziotctl check` and the real `iotedge check` on a device that runs our daemons, with our
//! package's `aziotctl` in both layouts: beside upstream's package (upstream's aziotctl diverted
//! to `aziotctl.distrib`, our wrapper merging both checks) and without it. Every upstream check
//! runs, or upstream's reason is shown; no check appears twice.

use interop::sandbox::{text, Sandbox};
use interop::{Upstream, World};
use serde_json::Value;

/// A provisioned device on our daemons (and upstream's certd, as beside IoT Edge).
pub fn device(up: &Upstream, registration_id_configured: bool) -> World {
    let mut world = World::new(up);
    world.start_our_stack(registration_id_configured);
    world
}

/// A sandbox with the world's configs at `/etc/aziot/<svc>/config.toml`, its sockets at
/// `/run/aziot`, and our aziotctl layout (with or without upstream's); returns it and the lines
/// that set it up.
pub fn installed(world: &World, with_upstream: bool) -> (Sandbox, String) {
    let sandbox = Sandbox::new().with_run_aziot(&world.path("run"));
    let mut setup = String::new();
    for svc in ["keyd", "tpmd", "identityd", "certd"] {
        setup.push_str(&format!("cp '{}' /etc/aziot/{svc}/config.toml\n", world.path(&format!("{svc}.toml")).display()));
    }
    let upstream = with_upstream.then(|| world.up.bin("aziotctl"));
    setup.push_str(&Sandbox::aziotctl_layout(&testkit::workspace_bin("aziot-tpm"), upstream.as_deref()));
    setup.push_str(&format!("export SSL_CERT_FILE='{}'\n", world.ca_pem()));
    (sandbox, setup)
}

fn check_json(world: &World, with_upstream: bool) -> Value {
    let (sandbox, setup) = installed(world, with_upstream);
    let out = sandbox.run(&format!("{setup}aziotctl check -o json --dont-run 'aziot-version host-local-time'\n"));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", text(&out)))
}

fn result(json: &Value, id: &str) -> String {
    json["checks"][id]["result"]["result"].as_str().unwrap_or("absent").to_owned()
}

const UPSTREAM_CHECKS: [&str; 16] = [
    "keyd-config-well-formed", "certd-config-well-formed", "tpmd-config-well-formed", "identityd-config-well-formed",
    "configs-up-to-date", "hostname", "identity-certificate-expiry", "keyd-running", "certd-running", "tpmd-running",
    "identityd-running", "certs-preloaded", "key-pairs-read", "host-connect-iothub-amqp", "host-connect-iothub-https",
    "host-connect-iothub-mqtt",
];

#[test]
fn aziotctl_check_beside_upstream_runs_every_upstream_check_and_ours_once() {
    let Some((up, _t)) = interop::case("aziotctl check beside upstream's package (merged)", true) else { return };
    let world = device(&up, true);
    let json = check_json(&world, true);
    let checks = json["checks"].as_object().expect("checks");
    for id in UPSTREAM_CHECKS {
        assert!(checks.contains_key(id), "upstream's {id} is missing: {json:#}");
        assert_ne!(result(&json, id), "skipped", "{id} was skipped: {json:#}");
    }
    for id in ["tpm-tcti-opens", "tpm-ek-srk", "tpm-auth-key", "tpm-hierarchy-auth", "iothub-reachable", "clock-skew"] {
        assert_eq!(result(&json, id), "ok", "{id}: {json:#}");
    }
    // One DPS TLS check: ours stands where upstream's was.
    assert_eq!(result(&json, "dps-endpoint-tls"), "ok");
    assert!(!checks.contains_key("host-connect-dps-endpoint"), "two DPS TLS checks: {json:#}");
    for id in ["keyd-config-well-formed", "identityd-config-well-formed", "certd-config-well-formed", "tpmd-running", "keyd-running", "identityd-running"] {
        assert_eq!(result(&json, id), "ok", "{id}: {json:#}");
    }
}

#[test]
fn aziotctl_check_without_upstream_shows_ours_and_says_why_upstreams_are_absent() {
    let Some((up, _t)) = interop::case("aziotctl check without upstream's package", true) else { return };
    let world = device(&up, true);
    let json = check_json(&world, false);
    assert_eq!(result(&json, "aziot-identity-service-checks"), "ignored");
    let reason = json["checks"]["aziot-identity-service-checks"]["additional_info"]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("aziotctl.distrib"), "{reason}");
    for id in ["keyd-config-well-formed", "identityd-running", "tpm-ek-srk", "dps-endpoint-tls", "iothub-reachable"] {
        assert_eq!(result(&json, id), "ok", "{id}: {json:#}");
    }
    assert!(!json["checks"].as_object().unwrap().contains_key("hostname"), "upstream's checks did not run");
}

/// identityd-dps runs without `registration_id`, upstream's parser refuses that: the refusal is
/// shown (with the fix) where upstream's dependent checks would otherwise vanish into "skipped".
#[test]
fn aziotctl_check_on_a_config_without_registration_id_names_why_upstream_skips() {
    let Some((up, _t)) = interop::case("aziotctl check, config without registration_id", true) else { return };
    let world = device(&up, false);
    let json = check_json(&world, true);
    assert_eq!(result(&json, "identityd-config-well-formed"), "warning", "{json:#}");
    let details = json["checks"]["identityd-config-well-formed"]["result"]["details"].to_string();
    assert!(details.contains("registration_id") && details.contains("aziot-tpm tpm-info"), "{details}");
    assert!(details.contains("skips the checks"), "{details}");
    let skipped: Vec<&String> = json["checks"].as_object().unwrap().iter().filter(|(_, c)| c["result"]["result"] == "skipped").map(|(id, _)| id).collect();
    assert!(!skipped.is_empty(), "upstream skips what depends on its identityd config: {json:#}");
}

/// The real `iotedge check` (which runs `aziotctl check -o=json-stream`) with our aziotctl:
/// upstream's and our checks in its "(aziot-identity-service)" sections, in both layouts.
#[test]
fn iotedge_check_shows_the_tpm_checks_through_our_aziotctl_in_both_layouts() {
    let Some((up, _t)) = interop::case("iotedge check with our aziotctl, both layouts", true) else { return };
    let world = device(&up, true);
    for with_upstream in [true, false] {
        let (sandbox, setup) = installed(&world, with_upstream);
        let out = sandbox.run(&format!(
            "{setup}cp '{iotedge}' /usr/bin/iotedge\niotedge check --dont-run 'aziot-version host-local-time' -o json\n",
            iotedge = up.bin("iotedge").display()
        ));
        let json: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", text(&out)));
        let layout = if with_upstream { "with upstream" } else { "without upstream" };
        let checks = json["checks"].as_object().unwrap_or_else(|| panic!("{layout}: {json:#}"));
        for id in ["tpm-ek-srk", "tpm-auth-key", "iothub-reachable", "identityd-running"] {
            assert_eq!(checks.get(id).map(|c| c["result"]["result"].clone()), Some("ok".into()), "{layout}: {id}: {json:#}");
        }
        assert_eq!(checks.contains_key("hostname"), with_upstream, "{layout}: upstream's checks: {json:#}");
        assert!(!(checks.contains_key("host-connect-dps-endpoint") && checks.contains_key("dps-endpoint-tls")), "{layout}: {json:#}");
    }
}
