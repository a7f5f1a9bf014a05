//! One caller's bulk work does not starve the others: requests wait in one lane per API and
//! uid, lanes take turns at the TPM, and a long HMAC yields between slices.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use common::{blob_for, hmac_sha256, Daemon, KEYD_API};
use testkit::Swtpm;

#[test]
fn the_devices_signing_is_served_while_one_caller_runs_ten_maximal_hmacs() {
    let tpm = Swtpm::start();
    let daemon = Daemon::start(&tpm);
    assert_eq!(daemon.import(&blob_for(&daemon, &[3; 32])).status, 200);
    let r = daemon.keyd_post("/key", &serde_json::json!({ "keyId": "bulk", "keyBytes": aziot_tpm_common::b64(&[9; 32]), "usage": "sign" }));
    assert_eq!(r.status, 200);
    let handle = r.json()["keyHandle"].as_str().unwrap().to_owned();

    // Ten HMACs over as much as /sign takes (1 MiB of JSON), from one uid at once.
    let message = vec![0x5Au8; 760 * 1024];
    let body = serde_json::json!({
        "keyHandle": handle, "algorithm": "HMAC-SHA256",
        "parameters": { "message": aziot_tpm_common::b64(&message) }
    })
    .to_string();
    let finished = Arc::new(AtomicUsize::new(0));
    let bulk: Vec<_> = (0..10)
        .map(|_| {
            let (socket, body, finished) = (daemon.keyd_socket(), body.clone(), finished.clone());
            std::thread::spawn(move || {
                let r = testkit::http::request(&socket, "POST", &format!("/sign?{KEYD_API}"), Some(body.as_bytes())).unwrap();
                finished.fetch_add(1, Ordering::SeqCst);
                r
            })
        })
        .collect();
    // Wait until the TPM is busy with them (the first one has started its sequence).
    let started = Instant::now();
    while !daemon.log().contains("POST /sign") && started.elapsed().as_secs() < 30 {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }

    // Twenty signatures with the device's auth key, one after the other, all answered while
    // the bulk work is still going on (in arrival order they would come after all of it).
    for i in 0..20 {
        let data = format!("sas {i}");
        assert_eq!(daemon.sign_ok(data.as_bytes()), hmac_sha256(&[3; 32], data.as_bytes()));
    }
    let bulk_done_when_device_done = finished.load(Ordering::SeqCst);
    for t in bulk {
        let r = t.join().unwrap();
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        let signature = aziot_tpm_common::from_b64(r.json()["signature"].as_str().unwrap()).unwrap();
        assert_eq!(signature, hmac_sha256(&[9; 32], &message), "a sliced HMAC computes the same MAC");
    }
    assert!(
        bulk_done_when_device_done < 10,
        "the device's 20 signatures waited until all 10 bulk HMACs were done"
    );
}
