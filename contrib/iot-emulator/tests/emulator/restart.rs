//! State survives a restart: SIGTERM exits 0, and the same data dir brings back the same ports,
//! CA, keys, enrollments, devices (with their hub keys) and modules; an operation that was still
//! `assigning` when the emulator stopped completes after it starts again.

use cloud_http::{Method, StatusCode};
use serde_json::json;

use crate::fixture::{expiry_in, hub_call, json_of, DpsClient, Emulator, TpmDevice};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_survives_a_restart() {
    let mut emulator = Emulator::start(&["--assigning-ms", "2500"]);
    let device = TpmDevice::start().await;
    let before = emulator.ready.clone();
    let ca_before = std::fs::read(emulator.ca_pem()).unwrap();

    emulator.enroll("keeper", &device.ek, json!({})).await;
    let reg = {
        let dps = DpsClient::new(&emulator);
        dps.register(&device, "keeper", None).await
    };
    let token = device
        .token(&format!("{}/devices/keeper", reg.hub), expiry_in(600), None)
        .await;
    let r = hub_call(
        &emulator.client(),
        &reg.hub,
        Method::PUT,
        "/devices/keeper/modules/m1",
        &token,
        &[],
        Some(json!({"moduleId": "m1"})),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let generation = json_of(&r)["generationId"].clone();

    // A second registration left in the middle: challenged, accepted, still assigning.
    emulator.enroll("pending", &device.ek, json!({})).await;
    let (op, pending_token) = {
        let dps = DpsClient::new(&emulator);
        let r = dps.challenge("pending", &device.ek, &device.srk).await;
        device
            .import(json_of(&r)["authenticationKey"].as_str().unwrap())
            .await;
        let t = device
            .token(
                &dps.audience("pending"),
                expiry_in(600),
                Some("registration"),
            )
            .await;
        let r = dps
            .put_register("pending", Some(&t), json!({"registrationId": "pending"}))
            .await;
        assert_eq!(r.status, StatusCode::ACCEPTED);
        (json_of(&r)["operationId"].as_str().unwrap().to_owned(), t)
    };

    let status = emulator.stop();
    assert_eq!(
        status.code(),
        Some(0),
        "SIGTERM exits 0:\n{}",
        emulator.log()
    );
    emulator.spawn();

    for key in [
        "dps_endpoint",
        "id_scope",
        "service_connection_string",
        "hubs",
        "hub_connection_strings",
        "admin",
        "ca_pem",
    ] {
        assert_eq!(emulator.ready[key], before[key], "{key} is kept");
    }
    assert_eq!(
        std::fs::read(emulator.ca_pem()).unwrap(),
        ca_before,
        "same CA"
    );

    let r = emulator
        .service(Method::GET, "/enrollments/keeper", None)
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        json_of(&r)["registrationState"]["assignedHub"],
        reg.hub.as_str()
    );
    let http = emulator.client();
    let r = hub_call(
        &http,
        &reg.hub,
        Method::GET,
        "/devices/keeper/modules/m1",
        &token,
        &[],
        None,
    )
    .await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "the device key and its module survived: {}",
        r.text()
    );
    assert_eq!(json_of(&r)["generationId"], generation);

    let dps = DpsClient::new(&emulator);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let v = json_of(&dps.poll("pending", &op, &pending_token).await);
        if v["status"] == "assigned" {
            assert!(v["registrationState"]["tpm"]["authenticationKey"].is_string());
            break;
        }
        assert_eq!(v["status"], "assigning", "{v}");
        assert!(
            std::time::Instant::now() < deadline,
            "the interrupted operation never completed"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert!(std::fs::metadata(emulator.data_dir().join("state.json")).is_ok());
}
