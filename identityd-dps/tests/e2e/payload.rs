//! The configured DPS payload reaches a custom allocation webhook, and the webhook's payload
//! reaches the device (saved as `dps_payload.json` in identityd's homedir).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::mpsc;
use std::time::Duration;

use openssl::ssl::{SslAcceptor, SslFiletype, SslMethod};
use serde_json::{json, Value};

use crate::fixture::{Env, Options};

/// An HTTPS webhook on loopback, with the emulator's own server certificate (which the emulator
/// trusts); answers every allocation with `hub` and a payload echoing the device's.
fn webhook(env: &Env, hub: String) -> (String, mpsc::Receiver<Value>) {
    let data = env.path("emulator");
    let mut acceptor = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls()).unwrap();
    acceptor
        .set_private_key_file(data.join("server.key"), SslFiletype::PEM)
        .unwrap();
    acceptor
        .set_certificate_chain_file(data.join("server.pem"))
        .unwrap();
    let acceptor = acceptor.build();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!(
        "https://127.0.0.1:{}/allocate",
        listener.local_addr().unwrap().port()
    );
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let Ok(mut tls) = acceptor.accept(stream) else {
                continue;
            };
            let mut reader = BufReader::new(&mut tls);
            let mut length = 0;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; length];
            let _ = reader.read_exact(&mut body);
            let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            let device_payload = request["deviceRuntimeContext"]["payload"].clone();
            let _ = tx.send(request);
            let answer = json!({"iotHubHostName": hub, "payload": {"fromWebhook": true, "echo": device_payload}}).to_string();
            let _ = write!(
                tls,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{answer}",
                answer.len()
            );
        }
    });
    (url, rx)
}

#[test]
fn a_custom_allocation_payload_reaches_the_device() {
    let options = Options {
        payload: Some(json!({"modelId": "dtmi:example:gateway;1"})),
        ..Options::default()
    };
    let env = Env::start(options);
    let hub = env.hubs()[1].clone();
    let (url, requests) = webhook(&env, hub.clone());
    env.enroll(json!({
        "allocationPolicy": "custom",
        "customAllocationDefinition": {"webhookUrl": url, "apiVersion": "2021-10-01"},
    }));
    let device = env.wait_provisioned(Duration::from_secs(90));
    assert_eq!(device["hubName"], hub.as_str(), "the webhook chose the hub");

    let request = requests
        .recv_timeout(Duration::from_secs(5))
        .expect("the webhook was called");
    assert_eq!(
        request["deviceRuntimeContext"]["payload"],
        json!({"modelId": "dtmi:example:gateway;1"})
    );

    let saved: Value = serde_json::from_str(
        &std::fs::read_to_string(env.homedir().join("dps_payload.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        saved,
        json!({"fromWebhook": true, "echo": {"modelId": "dtmi:example:gateway;1"}})
    );

    let info = env
        .identityd("GET", "/identities/provisioning", None)
        .json();
    assert_eq!(
        info["payload"],
        json!({"modelId": "dtmi:example:gateway;1"})
    );
}
