//! Module identities: created, fetched, listed, updated and deleted on the emulator's hub, keys
//! derived in the Keys Service; the returned key handle signs a module token the hub accepts;
//! configured module principals are reconciled; callers without rights get 401.

use std::time::Duration;

use serde_json::{json, Value};

use crate::fixture::{Env, Options};

const PROVISION: Duration = Duration::from_secs(60);

/// A module token signed by the Keys Service with `key_handle`, as edgeHub would sign it.
fn module_token(env: &Env, hub: &str, device: &str, module: &str, key_handle: &str) -> String {
    env.token(&format!("{hub}/devices/{device}/modules/{module}"), |data| {
        let r = env.keyd(
            "POST",
            "/sign",
            json!({"keyHandle": key_handle, "algorithm": "HMAC-SHA256", "parameters": {"message": aziot_tpm_common::b64(data)}}),
        );
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        aziot_tpm_common::from_b64(r.json()["signature"].as_str().unwrap()).unwrap()
    })
}

fn spec(env: &Env, method: &str, path: &str, body: Option<Value>) -> Value {
    let r = env.identityd(method, path, body);
    assert_eq!(
        r.status,
        200,
        "{method} {path}: {}\n{}",
        String::from_utf8_lossy(&r.body),
        env.identityd_log()
    );
    let v = r.json();
    assert_eq!(v["type"], "aziot");
    v["spec"].clone()
}

#[test]
fn module_identity_lifecycle_with_a_token_the_hub_accepts() {
    let env = Env::start(Options::enrolled());
    let device = env.wait_provisioned(PROVISION);
    let hub = device["hubName"].as_str().unwrap().to_owned();
    let device_id = device["deviceId"].as_str().unwrap().to_owned();

    let created = spec(
        &env,
        "POST",
        "/identities/modules",
        Some(json!({"type": "aziot", "moduleId": "edgeHub"})),
    );
    assert_eq!(created["moduleId"], "edgeHub");
    assert_eq!(created["deviceId"], device_id.as_str());
    assert_eq!(created["auth"]["type"], "sas");
    let gen_id = created["genId"].as_str().unwrap().to_owned();
    let handle = created["auth"]["keyHandle"].as_str().unwrap().to_owned();

    // The hub accepts a module token signed with the handle identityd returned.
    let token = module_token(&env, &hub, &device_id, "edgeHub", &handle);
    let url = format!("https://{hub}/twins/{device_id}/modules/edgeHub?api-version=2021-04-12");
    let (status, body) = env.https("GET", &url, &[("Authorization", &token)], None);
    assert_eq!(status, 200, "{body}");

    let fetched = spec(&env, "GET", "/identities/modules/edgeHub?type=aziot", None);
    assert_eq!(fetched["genId"], gen_id.as_str());
    assert!(fetched["auth"]["keyHandle"].is_string());

    let listed = env.identityd("GET", "/identities/modules?type=aziot", None);
    assert_eq!(listed.status, 200);
    let identities = listed.json()["identities"].as_array().unwrap().clone();
    let entry = identities
        .iter()
        .find(|i| i["spec"]["moduleId"] == "edgeHub")
        .expect("listed");
    assert!(
        entry["spec"].get("auth").is_none(),
        "listings carry no keys: {entry}"
    );

    let updated = spec(
        &env,
        "PUT",
        "/identities/modules/edgeHub?type=aziot",
        Some(json!({"type": "aziot", "moduleId": "edgeHub"})),
    );
    assert_eq!(updated["genId"], gen_id.as_str());
    let token = module_token(
        &env,
        &hub,
        &device_id,
        "edgeHub",
        updated["auth"]["keyHandle"].as_str().unwrap(),
    );
    assert_eq!(
        env.https("GET", &url, &[("Authorization", &token)], None).0,
        200
    );

    let r = env.identityd("DELETE", "/identities/modules/edgeHub?type=aziot", None);
    assert_eq!(r.status, 204, "{}", String::from_utf8_lossy(&r.body));
    let r = env.identityd("GET", "/identities/modules/edgeHub?type=aziot", None);
    assert_eq!(r.status, 404, "{}", String::from_utf8_lossy(&r.body));
    assert!(r.message().contains("edgeHub"), "{}", r.message());
}

#[test]
fn configured_module_principals_are_reconciled_and_host_processes_are_limited() {
    // Root is configured as the host process of module "agent" (a principal for uid 0 takes
    // precedence over root, as upstream), so this test process has only that module's rights.
    let options = Options {
        principals: "[[principal]]\nuid = 0\nname = \"agent\"\nidtype = [\"module\"]\n".into(),
        ..Options::enrolled()
    };
    let env = Env::start(options);
    env.wait_log("module identities reconciled", 1, PROVISION);

    // Reconciliation created the configured module; its host process may read it.
    let own = spec(&env, "GET", "/identities/identity", None);
    assert_eq!(own["moduleId"], "agent");
    assert!(own["auth"]["keyHandle"].is_string());
    let own = spec(&env, "GET", "/identities/modules/agent?type=aziot", None);
    assert_eq!(own["moduleId"], "agent");

    for (method, path, body) in [
        ("POST", "/identities/device", Some(json!({"type": "aziot"}))),
        ("GET", "/identities/modules/other?type=aziot", None),
        ("GET", "/identities/modules?type=aziot", None),
        (
            "POST",
            "/identities/modules",
            Some(json!({"type": "aziot", "moduleId": "x"})),
        ),
        (
            "PUT",
            "/identities/modules/agent?type=aziot",
            Some(json!({})),
        ),
        ("DELETE", "/identities/modules/agent?type=aziot", None),
        ("POST", "/identities/device/reprovision", None),
    ] {
        let r = env.identityd(method, path, body);
        assert_eq!(
            r.status,
            401,
            "{method} {path}: {}",
            String::from_utf8_lossy(&r.body)
        );
        assert_eq!(r.message(), "authorization error");
    }
    let r = env.identityd("GET", "/trust-bundle", None);
    assert_eq!(r.status, 200);
}

fn hub_module_ids(env: &Env) -> Vec<String> {
    let r = env.identityd("GET", "/identities/modules?type=aziot", None);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let mut ids: Vec<String> = r.json()["identities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["spec"]["moduleId"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    ids
}

#[test]
fn reconciliation_follows_the_configured_principals_and_leaves_other_modules_alone() {
    let principal = |name: &str| {
        format!("[[principal]]\nuid = 4242\nname = \"{name}\"\nidtype = [\"module\"]\n")
    };
    let mut env = Env::start(Options {
        principals: principal("modA"),
        ..Options::enrolled()
    });
    env.wait_log("module identities reconciled", 1, PROVISION);
    // The hub made $edgeAgent and $edgeHub for the IoT Edge device; they are not identityd's.
    assert_eq!(hub_module_ids(&env), ["$edgeAgent", "$edgeHub", "modA"]);
    // A module edged created through the API is not identityd's to reconcile.
    spec(
        &env,
        "POST",
        "/identities/modules",
        Some(json!({"type": "aziot", "moduleId": "workload"})),
    );

    env.options.principals = principal("modB");
    env.restart_identityd();
    env.wait_log("module identities reconciled", 2, PROVISION);
    assert_eq!(hub_module_ids(&env), ["$edgeAgent", "$edgeHub", "modB", "workload"]);
    let log = env.identityd_log();
    assert!(log.contains("deleted hub module \"modA\""), "{log}");
}
