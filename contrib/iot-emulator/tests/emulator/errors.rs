//! Refusals come back in DPS's error shape (`errorCode`, `message`, `trackingId`,
//! `x-ms-error-code`): unknown and disabled enrollments, an EK that is not the enrolled one,
//! expired, tampered or misaddressed SAS tokens; and the service API's own checks.

use cloud_http::{Method, Response, StatusCode};
use serde_json::json;

use crate::fixture::{expiry_in, json_of, sas_token, DpsClient, Emulator, TpmDevice};

/// Asserts a DPS error and returns its message.
fn dps_error(r: &Response, status: StatusCode, code: u64) -> String {
    assert_eq!(r.status, status, "{}", r.text());
    let v = json_of(r);
    assert_eq!(v["errorCode"].as_u64(), Some(code), "{v}");
    assert!(
        v["trackingId"].as_str().is_some_and(|t| !t.is_empty()),
        "{v}"
    );
    assert_eq!(r.header("x-ms-error-code"), Some(code.to_string().as_str()));
    v["message"].as_str().unwrap().to_owned()
}

/// The same token with one bit of its signature flipped.
fn tamper_signature(token: &str) -> String {
    let (head, tail) = token.split_once("sig=").unwrap();
    let (sig, rest) = tail.split_once('&').unwrap();
    let decoded = percent_encoding::percent_decode_str(sig)
        .decode_utf8()
        .unwrap();
    let mut raw = aziot_tpm_common::from_b64(&decoded).unwrap();
    raw[0] ^= 1;
    format!(
        "{head}sig={}&{rest}",
        crate::fixture::encode(&aziot_tpm_common::b64(&raw), false)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_api_refusals_have_dps_error_shape() {
    let emulator = Emulator::start(&[]);
    let device = TpmDevice::start().await;
    let dps = DpsClient::new(&emulator);
    let id = device.registration_id();

    // No enrollment at all.
    let r = dps.challenge(&id, &device.ek, &device.srk).await;
    let msg = dps_error(&r, StatusCode::UNAUTHORIZED, 401_002);
    assert!(msg.contains("no individual enrollment"), "{msg}");

    // Enrolled with another EK (one modulus byte differs): 400004.
    let mut other_ek = device.ek.clone();
    let last = other_ek.len() - 1;
    other_ek[last] ^= 0xff;
    emulator.enroll(&id, &other_ek, json!({})).await;
    let r = dps.challenge(&id, &device.ek, &device.srk).await;
    let msg = dps_error(&r, StatusCode::BAD_REQUEST, 400_004);
    assert!(msg.contains("Endorsement key"), "{msg}");

    // Right EK, disabled enrollment.
    emulator
        .enroll(&id, &device.ek, json!({"provisioningStatus": "disabled"}))
        .await;
    let r = dps.challenge(&id, &device.ek, &device.srk).await;
    let msg = dps_error(&r, StatusCode::UNAUTHORIZED, 401_002);
    assert!(msg.contains("disabled"), "{msg}");

    // Enabled: the challenge works; SAS tokens are then checked strictly.
    emulator.enroll(&id, &device.ek, json!({})).await;
    let r = dps.challenge(&id, &device.ek, &device.srk).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    device
        .import(json_of(&r)["authenticationKey"].as_str().unwrap())
        .await;
    let body = json!({"registrationId": id});
    let audience = dps.audience(&id);

    let expired = device
        .token(&audience, expiry_in(-5), Some("registration"))
        .await;
    let msg = dps_error(
        &dps.put_register(&id, Some(&expired), body.clone()).await,
        StatusCode::UNAUTHORIZED,
        401_002,
    );
    assert!(msg.contains("expired"), "{msg}");

    let good = device
        .token(&audience, expiry_in(60), Some("registration"))
        .await;
    let tampered = tamper_signature(&good);
    let msg = dps_error(
        &dps.put_register(&id, Some(&tampered), body.clone()).await,
        StatusCode::UNAUTHORIZED,
        401_002,
    );
    assert!(msg.contains("signature"), "{msg}");

    let software = sas_token(&audience, &[9; 32], expiry_in(60), Some("registration"));
    dps_error(
        &dps.put_register(&id, Some(&software), body.clone()).await,
        StatusCode::UNAUTHORIZED,
        401_002,
    );

    let wrong_name = device.token(&audience, expiry_in(60), Some("owner")).await;
    dps_error(
        &dps.put_register(&id, Some(&wrong_name), body.clone()).await,
        StatusCode::UNAUTHORIZED,
        401_002,
    );

    let wrong_audience = device
        .token(
            &format!("{}/registrations/someone-else", emulator.id_scope()),
            expiry_in(60),
            Some("registration"),
        )
        .await;
    let msg = dps_error(
        &dps.put_register(&id, Some(&wrong_audience), body.clone())
            .await,
        StatusCode::UNAUTHORIZED,
        401_002,
    );
    assert!(msg.contains("audience"), "{msg}");

    // A token for a registration that was never challenged.
    emulator
        .enroll("never-challenged", &device.ek, json!({}))
        .await;
    let other = device
        .token(
            &dps.audience("never-challenged"),
            expiry_in(60),
            Some("registration"),
        )
        .await;
    let msg = dps_error(
        &dps.put_register("never-challenged", Some(&other), json!({}))
            .await,
        StatusCode::UNAUTHORIZED,
        401_002,
    );
    assert!(msg.contains("no challenge"), "{msg}");

    // The untouched token still works, and polling an unknown operation is a 404.
    let r = dps.put_register(&id, Some(&good), body).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text());
    let r = dps.poll(&id, "4.nope", &good).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = dps
        .poll(
            &id,
            json_of(&dps.put_register(&id, Some(&good), json!({})).await)["operationId"]
                .as_str()
                .unwrap(),
            &tampered,
        )
        .await;
    assert_eq!(
        r.status,
        StatusCode::UNAUTHORIZED,
        "polls are authenticated too"
    );

    // Unknown ID scope and missing api-version.
    let url = format!(
        "{}/0neWRONG/registrations/{id}/register?api-version=2021-06-01",
        emulator.dps()
    );
    let r = dps
        .http
        .request(Method::PUT, &url, &[], "{}")
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let url = format!(
        "{}/{}/registrations/{id}/register",
        emulator.dps(),
        emulator.id_scope()
    );
    let r = dps
        .http
        .request(Method::PUT, &url, &[], "{}")
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_api_checks_auth_input_and_etags() {
    let emulator = Emulator::start(&[]);
    let http = emulator.client();
    let url = format!(
        "{}/enrollments/dev-1?api-version=2021-10-01",
        emulator.dps()
    );

    let r = http
        .request(Method::GET, &url, &[], Vec::new())
        .await
        .unwrap();
    dps_error(&r, StatusCode::UNAUTHORIZED, 401_002);
    let host = emulator.dps().trim_start_matches("https://").to_owned();
    let forged = sas_token(
        &host,
        &[1; 32],
        expiry_in(60),
        Some("provisioningserviceowner"),
    );
    let r = http
        .request(Method::GET, &url, &[("Authorization", &forged)], Vec::new())
        .await
        .unwrap();
    dps_error(&r, StatusCode::UNAUTHORIZED, 401_002);

    let r = emulator
        .service(Method::GET, "/enrollments/dev-1", None)
        .await;
    dps_error(&r, StatusCode::NOT_FOUND, 404_201);

    let x509 = json!({"attestation": {"type": "x509"}});
    let msg = dps_error(
        &emulator
            .service(Method::PUT, "/enrollments/dev-1", Some(x509))
            .await,
        StatusCode::BAD_REQUEST,
        400_000,
    );
    assert!(msg.contains("TPM attestation only"), "{msg}");
    let junk = json!({"attestation": {"type": "tpm", "tpm": {"endorsementKey": "AAECAw=="}}});
    let msg = dps_error(
        &emulator
            .service(Method::PUT, "/enrollments/dev-1", Some(junk))
            .await,
        StatusCode::BAD_REQUEST,
        400_000,
    );
    assert!(msg.contains("endorsementKey"), "{msg}");

    // A syntactically valid EK (an RSA TPM2B_PUBLIC) from a fresh swtpm.
    let device = TpmDevice::start().await;
    let created = emulator
        .enroll("dev-1", &device.ek, json!({"deviceId": "d1"}))
        .await;
    assert_eq!(created["provisioningStatus"], "enabled");
    assert_eq!(created["capabilities"]["iotEdge"], true);
    let etag = created["etag"].as_str().unwrap().to_owned();

    let mut update = created.clone();
    update["provisioningStatus"] = json!("disabled");
    let r = http
        .request(
            Method::PUT,
            &url,
            &[
                ("Authorization", &emulator.service_token()),
                ("If-Match", "\"not-it\""),
            ],
            update.to_string(),
        )
        .await
        .unwrap();
    dps_error(&r, StatusCode::PRECONDITION_FAILED, 412_001);
    let r = http
        .request(
            Method::PUT,
            &url,
            &[
                ("Authorization", &emulator.service_token()),
                ("If-Match", &format!("\"{etag}\"")),
            ],
            update.to_string(),
        )
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(json_of(&r)["provisioningStatus"], "disabled");
    assert_ne!(json_of(&r)["etag"], etag.as_str());

    for i in 2..5 {
        emulator
            .enroll(&format!("dev-{i}"), &device.ek, json!({}))
            .await;
    }
    let query = format!(
        "{}/enrollments/query?api-version=2021-10-01",
        emulator.dps()
    );
    let mut ids = Vec::new();
    let mut continuation: Option<String> = None;
    loop {
        let token = emulator.service_token();
        let mut headers = vec![
            ("Authorization", token.as_str()),
            ("x-ms-max-item-count", "3"),
        ];
        if let Some(c) = &continuation {
            headers.push(("x-ms-continuation", c));
        }
        let r = http
            .request(
                Method::POST,
                &query,
                &headers,
                json!({"query": "*"}).to_string(),
            )
            .await
            .unwrap();
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        ids.extend(
            json_of(&r)
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["registrationId"].as_str().unwrap().to_owned()),
        );
        continuation = r.header("x-ms-continuation").map(str::to_owned);
        if continuation.is_none() {
            break;
        }
    }
    assert_eq!(ids, ["dev-1", "dev-2", "dev-3", "dev-4"]);

    let r = emulator
        .service(Method::DELETE, "/enrollments/dev-1", None)
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = emulator
        .service(Method::GET, "/enrollments/dev-1", None)
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}
