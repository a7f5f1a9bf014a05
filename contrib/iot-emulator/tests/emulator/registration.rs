//! The whole device journey over HTTPS with a real TPM: DPS challenge, SAS, operation polling,
//! the second blob carrying the hub key, then the assigned hub accepting SAS tokens the TPM signs
//! with that key, module identities with IoT Hub's concurrency rules and their own keys,
//! re-registration invalidating the old key, and a disabled device being refused.

use cloud_http::{Method, StatusCode};
use serde_json::json;

use crate::fixture::{expiry_in, hub_call, json_of, sas_token, DpsClient, Emulator, TpmDevice};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_registration_then_the_hub_accepts_the_tpm_key_and_manages_modules() {
    let emulator = Emulator::start(&["--hubs", "2", "--assigning-ms", "1200"]);
    let device = TpmDevice::start().await;
    let id = device.registration_id();
    emulator
        .enroll(&id, &device.ek, json!({"deviceId": "Edge-1", "initialTwin": {"tags": {"site": "lab"}, "properties": {"desired": {"x": 1}}}}))
        .await;
    let dps = DpsClient::new(&emulator);

    let reg = dps.register(&device, &id, None).await;
    let s = &reg.state;
    assert_eq!(
        (
            s["registrationId"].as_str(),
            s["status"].as_str(),
            s["substatus"].as_str()
        ),
        (
            Some(id.as_str()),
            Some("assigned"),
            Some("initialAssignment")
        )
    );
    assert_eq!(reg.device_id, "Edge-1");
    assert!(
        emulator.hubs().contains(&reg.hub),
        "{} is one of {:?}",
        reg.hub,
        emulator.hubs()
    );
    for field in ["createdDateTimeUtc", "lastUpdatedDateTimeUtc", "etag"] {
        assert!(
            s[field].as_str().is_some_and(|v| !v.is_empty()),
            "{field} in {s}"
        );
    }

    // The hub knows the device and verifies the TPM's HMAC with the key of the second blob
    // (identityd lower-cases the audience, device ID included).
    let http = emulator.client();
    let device_token = device
        .token(
            &format!("{}/devices/{}", reg.hub, reg.device_id),
            expiry_in(300),
            None,
        )
        .await;
    let r = hub_call(
        &http,
        &reg.hub,
        Method::GET,
        "/devices/Edge-1",
        &device_token,
        &[],
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(json_of(&r)["capabilities"]["iotEdge"], true);
    let r = hub_call(
        &http,
        &reg.hub,
        Method::GET,
        "/twins/Edge-1",
        &device_token,
        &[],
        None,
    )
    .await;
    assert_eq!(json_of(&r)["tags"]["site"], "lab");
    assert_eq!(json_of(&r)["properties"]["desired"]["x"], 1);
    let other = emulator.hubs().into_iter().find(|h| *h != reg.hub).unwrap();
    let elsewhere = device
        .token(&format!("{other}/devices/Edge-1"), expiry_in(300), None)
        .await;
    let r = hub_call(
        &http,
        &other,
        Method::GET,
        "/devices/Edge-1",
        &elsewhere,
        &[],
        None,
    )
    .await;
    assert_eq!(
        r.status,
        StatusCode::UNAUTHORIZED,
        "the other hub has no such device"
    );
    let forged = sas_token(
        &format!("{}/devices/Edge-1", reg.hub),
        &[7; 32],
        expiry_in(300),
        None,
    );
    let r = hub_call(
        &http,
        &reg.hub,
        Method::GET,
        "/devices/Edge-1",
        &forged,
        &[],
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        r.header("iothub-errorcode"),
        Some("IotHubUnauthorizedAccess")
    );

    // An IoT Edge device gets $edgeAgent and $edgeHub from the hub, as IoT Hub does.
    let r = hub_call(&http, &reg.hub, Method::GET, "/devices/Edge-1/modules", &device_token, &[], None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let listed = json_of(&r);
    let ids: Vec<&str> = listed.as_array().unwrap().iter().filter_map(|m| m["moduleId"].as_str()).collect();
    assert_eq!(ids, ["$edgeAgent", "$edgeHub"], "{listed}");
    for m in listed.as_array().unwrap() {
        assert_eq!(m["authentication"]["type"], "sas", "{m}");
        assert!(m["authentication"]["symmetricKey"]["primaryKey"].is_string(), "{m}");
        assert!(m["generationId"].as_str().is_some_and(|g| !g.is_empty()), "{m}");
    }

    // Module identities, as identityd creates them.
    let path = "/devices/Edge-1/modules/telemetry";
    let r = hub_call(
        &http,
        &reg.hub,
        Method::PUT,
        path,
        &device_token,
        &[],
        Some(json!({"moduleId": "telemetry", "deviceId": "Edge-1"})),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let created = json_of(&r);
    let generation = created["generationId"].as_str().unwrap().to_owned();
    assert_eq!(created["authentication"]["type"], "sas");
    assert!(
        created["authentication"]["symmetricKey"]["primaryKey"].is_string(),
        "hub assigns keys"
    );
    let r = hub_call(
        &http,
        &reg.hub,
        Method::PUT,
        path,
        &device_token,
        &[],
        Some(json!({"moduleId": "telemetry"})),
    )
    .await;
    assert_eq!(
        r.status,
        StatusCode::CONFLICT,
        "create of an existing module without If-Match"
    );
    let r = hub_call(
        &http,
        &reg.hub,
        Method::PUT,
        path,
        &device_token,
        &[("If-Match", "\"stale\"")],
        Some(json!({"moduleId": "telemetry"})),
    )
    .await;
    assert_eq!(r.status, StatusCode::PRECONDITION_FAILED);
    let r = hub_call(
        &http,
        &reg.hub,
        Method::PUT,
        path,
        &device_token,
        &[("If-Match", "*")],
        Some(json!({"moduleId": "telemetry", "generationId": "1"})),
    )
    .await;
    assert_eq!(
        r.status,
        StatusCode::BAD_REQUEST,
        "generationId is immutable"
    );
    let module_key = [0x5a_u8; 32];
    let keys = json!({"primaryKey": aziot_tpm_common::b64(&module_key), "secondaryKey": aziot_tpm_common::b64(&[0xa5; 32])});
    let etag = created["etag"].as_str().unwrap();
    let r = hub_call(
        &http, &reg.hub, Method::PUT, path, &device_token, &[("If-Match", &format!("\"{etag}\""))],
        Some(json!({"moduleId": "telemetry", "deviceId": "Edge-1", "generationId": generation, "authentication": {"type": "sas", "symmetricKey": keys}})),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(json_of(&r)["generationId"], generation.as_str());
    assert_eq!(json_of(&r)["authentication"]["symmetricKey"], keys);

    // The module's own token works for the module and nothing else.
    let module_token = sas_token(
        &format!("{}/devices/Edge-1/modules/telemetry", reg.hub),
        &module_key,
        expiry_in(300),
        None,
    );
    let r = hub_call(
        &http,
        &reg.hub,
        Method::GET,
        "/twins/Edge-1/modules/telemetry",
        &module_token,
        &[],
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let r = hub_call(
        &http,
        &reg.hub,
        Method::GET,
        "/devices/Edge-1",
        &module_token,
        &[],
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let wrong = sas_token(
        &format!("{}/devices/Edge-1/modules/telemetry", reg.hub),
        &[1; 32],
        expiry_in(300),
        None,
    );
    let r = hub_call(
        &http,
        &reg.hub,
        Method::GET,
        "/twins/Edge-1/modules/telemetry",
        &wrong,
        &[],
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);

    let r = hub_call(
        &http,
        &reg.hub,
        Method::GET,
        "/devices/Edge-1/modules",
        &device_token,
        &[],
        None,
    )
    .await;
    assert_eq!(json_of(&r).as_array().map(Vec::len), Some(3), "$edgeAgent, $edgeHub and telemetry");
    let r = hub_call(
        &http,
        &reg.hub,
        Method::PUT,
        "/devices/Edge-1/modules/temp",
        &device_token,
        &[],
        Some(json!({"moduleId": "temp"})),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    let r = hub_call(
        &http,
        &reg.hub,
        Method::DELETE,
        "/devices/Edge-1/modules/temp",
        &device_token,
        &[("If-Match", "*")],
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = hub_call(
        &http,
        &reg.hub,
        Method::GET,
        "/devices/Edge-1/modules/temp",
        &device_token,
        &[],
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.header("iothub-errorcode"), Some("ModuleNotFound"));

    // The service API shows the registration.
    let r = emulator
        .service(Method::GET, &format!("/registrations/{id}"), None)
        .await;
    assert_eq!(json_of(&r)["assignedHub"], reg.hub.as_str());
    let r = emulator
        .service(Method::GET, &format!("/enrollments/{id}"), None)
        .await;
    assert_eq!(json_of(&r)["registrationState"]["deviceId"], "Edge-1");

    // Re-registration: a new hub key; tokens signed with the old one stop working, modules stay.
    let second = dps.register(&device, &id, None).await;
    assert_eq!(second.hub, reg.hub, "hashed allocation is stable");
    let r = hub_call(
        &http,
        &reg.hub,
        Method::GET,
        "/devices/Edge-1",
        &device_token,
        &[],
        None,
    )
    .await;
    assert_eq!(
        r.status,
        StatusCode::UNAUTHORIZED,
        "the old key is revoked: {}",
        r.text()
    );
    let new_token = device
        .token(
            &format!("{}/devices/Edge-1", second.hub),
            expiry_in(300),
            None,
        )
        .await;
    let r = hub_call(
        &http,
        &second.hub,
        Method::GET,
        "/devices/Edge-1/modules/telemetry",
        &new_token,
        &[],
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());

    // A disabled device is refused whatever it signs; enabling it restores access.
    let hub_index = emulator
        .hubs()
        .iter()
        .position(|h| *h == second.hub)
        .unwrap();
    let owner = emulator.hub_owner_token(hub_index);
    let r = hub_call(
        &http,
        &second.hub,
        Method::PUT,
        "/devices/Edge-1",
        &owner,
        &[("If-Match", "*")],
        Some(json!({"deviceId": "Edge-1", "status": "disabled"})),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let r = hub_call(
        &http,
        &second.hub,
        Method::GET,
        "/devices/Edge-1",
        &new_token,
        &[],
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let r = hub_call(
        &http,
        &second.hub,
        Method::PUT,
        "/devices/Edge-1",
        &owner,
        &[("If-Match", "*")],
        Some(json!({"status": "enabled"})),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    let r = hub_call(
        &http,
        &second.hub,
        Method::GET,
        "/devices/Edge-1",
        &new_token,
        &[],
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);

    // One log line per request, naming the endpoint.
    let log = emulator.log();
    assert!(
        log.contains("dps/register") && log.contains("dps/operations") && log.contains("/modules"),
        "{log}"
    );
}

/// Only an IoT Edge device has `$edgeAgent` and `$edgeHub`; a device that becomes one through
/// the registry gets them then.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_system_modules_exist_for_iot_edge_devices_only() {
    let emulator = Emulator::start(&["--hubs", "1", "--assigning-ms", "200"]);
    let device = TpmDevice::start().await;
    let id = device.registration_id();
    emulator.enroll(&id, &device.ek, json!({"deviceId": "leaf-1", "capabilities": {"iotEdge": false}})).await;
    let reg = DpsClient::new(&emulator).register(&device, &id, None).await;
    let http = emulator.client();
    let owner = emulator.hub_owner_token(0);
    let modules = |r: &cloud_http::Response| -> Vec<String> {
        json_of(r).as_array().unwrap().iter().filter_map(|m| m["moduleId"].as_str().map(str::to_owned)).collect()
    };
    let r = hub_call(&http, &reg.hub, Method::GET, "/devices/leaf-1/modules", &owner, &[], None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert!(modules(&r).is_empty(), "{}", r.text());

    let r = hub_call(
        &http, &reg.hub, Method::PUT, "/devices/leaf-1", &owner, &[("If-Match", "*")],
        Some(json!({"deviceId": "leaf-1", "capabilities": {"iotEdge": true}})),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let r = hub_call(&http, &reg.hub, Method::GET, "/devices/leaf-1/modules", &owner, &[], None).await;
    assert_eq!(modules(&r), ["$edgeAgent", "$edgeHub"]);
}
