//! Each allocation policy decides the hub the way DPS documents it: `hashed` (evenly weighted,
//! stable per registration ID), `static`, `geoLatency` (configured latencies), and `custom`
//! (a webhook served by the test over HTTPS on loopback, with its own CA).

use std::pin::Pin;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use iot_emulator::pki::Ca;
use openssl::ssl::{SslAcceptor, SslMethod};
use serde_json::{json, Value};

use crate::fixture::{DpsClient, Emulator, TpmDevice};

fn start_args(extra: &[String]) -> Vec<String> {
    let mut args: Vec<String> = [
        "--hubs",
        "3",
        "--assigning-ms",
        "100",
        "--hub-latency",
        "0=50",
        "--hub-latency",
        "1=5",
        "--hub-latency",
        "2=20",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend_from_slice(extra);
    args
}

/// The hub index the documented hashing picks, computed independently.
fn expected_hashed(hubs: &[String], registration_id: &str) -> String {
    let d = openssl::sha::sha256(registration_id.as_bytes());
    let n = u64::from_be_bytes(d[..8].try_into().unwrap());
    hubs[(n % hubs.len() as u64) as usize].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hashed_static_and_geo_latency_pick_the_documented_hub() {
    let args = start_args(&[]);
    let emulator = Emulator::start(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let hubs = emulator.hubs();
    assert_eq!(hubs.len(), 3);
    let device = TpmDevice::start().await;
    let dps = DpsClient::new(&emulator);

    // hashed: spread over the hubs, and the same hub again on re-registration.
    let mut seen = std::collections::BTreeSet::new();
    for i in 0..5 {
        let id = format!("hashed-{i}");
        emulator
            .enroll(&id, &device.ek, json!({"allocationPolicy": "hashed"}))
            .await;
        let reg = dps.register(&device, &id, None).await;
        assert_eq!(reg.hub, expected_hashed(&hubs, &id), "{id}");
        seen.insert(reg.hub);
    }
    assert!(seen.len() >= 2, "five devices all on one hub: {seen:?}");
    let again = dps.register(&device, "hashed-0", None).await;
    assert_eq!(again.hub, expected_hashed(&hubs, "hashed-0"));
    // hashed among the enrollment's hubs only.
    emulator
        .enroll(
            "hashed-limited",
            &device.ek,
            json!({"iotHubs": [hubs[0], hubs[2]]}),
        )
        .await;
    let reg = dps.register(&device, "hashed-limited", None).await;
    assert_eq!(
        reg.hub,
        expected_hashed(&[hubs[0].clone(), hubs[2].clone()], "hashed-limited")
    );

    // static: the one hub named.
    emulator
        .enroll(
            "static-1",
            &device.ek,
            json!({"allocationPolicy": "static", "iotHubs": [hubs[2]]}),
        )
        .await;
    assert_eq!(dps.register(&device, "static-1", None).await.hub, hubs[2]);

    // geoLatency: lowest configured latency (hub 1: 5 ms), or the best among the enrollment's.
    emulator
        .enroll(
            "geo-1",
            &device.ek,
            json!({"allocationPolicy": "geoLatency"}),
        )
        .await;
    assert_eq!(dps.register(&device, "geo-1", None).await.hub, hubs[1]);
    emulator
        .enroll(
            "geo-2",
            &device.ek,
            json!({"allocationPolicy": "geoLatency", "iotHubs": [hubs[0], hubs[2]]}),
        )
        .await;
    assert_eq!(dps.register(&device, "geo-2", None).await.hub, hubs[2]);

    // Enrollments naming an unknown hub, or static without exactly one hub, are refused up front.
    let bad = json!({"registrationId": "bad", "attestation": {"type": "tpm", "tpm": {"endorsementKey": aziot_tpm_common::b64(&device.ek)}}, "iotHubs": ["nowhere.example:1"]});
    let r = emulator
        .service(cloud_http::Method::PUT, "/enrollments/bad", Some(bad))
        .await;
    assert_eq!(
        r.status,
        cloud_http::StatusCode::BAD_REQUEST,
        "{}",
        r.text()
    );
    let bad = json!({"attestation": {"type": "tpm", "tpm": {"endorsementKey": aziot_tpm_common::b64(&device.ek)}}, "allocationPolicy": "static"});
    let r = emulator
        .service(cloud_http::Method::PUT, "/enrollments/bad", Some(bad))
        .await;
    assert_eq!(
        r.status,
        cloud_http::StatusCode::BAD_REQUEST,
        "{}",
        r.text()
    );
}

/// A custom-allocation webhook over HTTPS: records requests, answers with `answer`.
struct Webhook {
    url: String,
    ca_pem: std::path::PathBuf,
    requests: Arc<Mutex<Vec<Value>>>,
    answer: Arc<Mutex<Value>>,
    _dir: tempfile::TempDir,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Webhook {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn webhook() -> Webhook {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::create("webhook test CA").unwrap();
    let (cert, key) = ca.issue_server(&["127.0.0.1"], &[]).unwrap();
    let ca_pem = dir.path().join("webhook-ca.pem");
    std::fs::write(&ca_pem, ca.cert.to_pem().unwrap()).unwrap();
    let mut b = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls_server()).unwrap();
    b.set_certificate(&cert).unwrap();
    b.set_private_key(&key).unwrap();
    let acceptor = Arc::new(b.build());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "https://127.0.0.1:{}/api/allocate?code=secret",
        listener.local_addr().unwrap().port()
    );
    let requests = Arc::new(Mutex::new(Vec::new()));
    let answer = Arc::new(Mutex::new(json!({})));
    let (req_log, ans) = (requests.clone(), answer.clone());
    let task = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let ssl = openssl::ssl::Ssl::new(acceptor.context()).unwrap();
            let (req_log, ans) = (req_log.clone(), ans.clone());
            tokio::spawn(async move {
                let mut stream = tokio_openssl::SslStream::new(ssl, tcp).unwrap();
                if Pin::new(&mut stream).accept().await.is_err() {
                    return;
                }
                let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                    let (req_log, ans) = (req_log.clone(), ans.clone());
                    async move {
                        assert_eq!(req.method(), hyper::Method::POST);
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        req_log
                            .lock()
                            .unwrap()
                            .push(serde_json::from_slice(&body).unwrap_or(Value::Null));
                        let answer = ans.lock().unwrap().to_string();
                        Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from(
                            answer,
                        ))))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Webhook {
        url,
        ca_pem,
        requests,
        answer,
        _dir: dir,
        task,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_allocation_uses_the_webhooks_hub_twin_and_payload() {
    let hook = webhook().await;
    let args = start_args(&["--trust-ca".into(), hook.ca_pem.display().to_string()]);
    let emulator = Emulator::start(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let hubs = emulator.hubs();
    let device = TpmDevice::start().await;
    let dps = DpsClient::new(&emulator);

    *hook.answer.lock().unwrap() = json!({
        "iotHubHostName": hubs[2],
        "initialTwin": {"tags": {"from": "webhook"}, "properties": {"desired": {}}},
        "payload": {"gateway": "gw-7"},
    });
    emulator
        .enroll("custom-1", &device.ek, json!({"allocationPolicy": "custom", "iotHubs": [hubs[1], hubs[2]], "customAllocationDefinition": {"webhookUrl": hook.url, "apiVersion": "2021-10-01"}}))
        .await;
    let reg = dps
        .register(&device, "custom-1", Some(json!({"modelId": "dtmi:test;1"})))
        .await;
    assert_eq!(reg.hub, hubs[2]);
    assert_eq!(
        reg.state["payload"],
        json!({"gateway": "gw-7"}),
        "the webhook's payload reaches the device"
    );

    let sent = hook
        .requests
        .lock()
        .unwrap()
        .last()
        .cloned()
        .expect("webhook called");
    assert_eq!(sent["individualEnrollment"]["registrationId"], "custom-1");
    assert_eq!(sent["deviceRuntimeContext"]["registrationId"], "custom-1");
    assert_eq!(
        sent["deviceRuntimeContext"]["payload"],
        json!({"modelId": "dtmi:test;1"})
    );
    assert_eq!(
        sent["deviceRuntimeContext"]["tpm"]["endorsementKey"],
        aziot_tpm_common::b64(&device.ek)
    );
    assert_eq!(sent["linkedHubs"], json!([hubs[1], hubs[2]]));

    // The twin the webhook asked for is the device's initial twin.
    let token = device
        .token(
            &format!("{}/devices/custom-1", reg.hub),
            crate::fixture::expiry_in(60),
            None,
        )
        .await;
    let r = crate::fixture::hub_call(
        &emulator.client(),
        &reg.hub,
        cloud_http::Method::GET,
        "/twins/custom-1",
        &token,
        &[],
        None,
    )
    .await;
    assert_eq!(crate::fixture::json_of(&r)["tags"]["from"], "webhook");

    // A webhook choosing a hub that is not linked fails the registration, DPS-style.
    *hook.answer.lock().unwrap() = json!({"iotHubHostName": hubs[0]});
    emulator
        .enroll("custom-2", &device.ek, json!({"allocationPolicy": "custom", "iotHubs": [hubs[1], hubs[2]], "customAllocationDefinition": {"webhookUrl": hook.url}}))
        .await;
    let failed = dps.register_expecting_failure(&device, "custom-2").await;
    assert_eq!(failed["status"], "failed", "{failed}");
    assert!(
        failed["registrationState"]["errorCode"].as_u64().is_some(),
        "{failed}"
    );
    assert!(
        failed["registrationState"]["errorMessage"]
            .as_str()
            .unwrap()
            .contains("not one of the linked hubs"),
        "{failed}"
    );
}
