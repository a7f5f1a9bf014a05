//! Crashes at random points, for real: keyd-tpm is SIGKILLed while it works (importing a DPS
//! auth key, creating, importing, moving and deleting keys), restarted on the same swtpm, and
//! then must hold what it promised: the auth key is the old or the new one, every key whose
//! create was answered 200 still signs, and nothing is left loaded in the TPM (swtpm has no
//! resource manager, so a leaked session or object stays until the TPM is reset).
//!
//! `CRASH_ROUNDS` (default 30) sets the rounds per test; scripts/crash-soak.sh runs many more.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{blob_for, hmac_sha256, Daemon};
use testkit::crash::{rounds, Delays};
use testkit::Swtpm;

/// What the TPM holds besides persistent objects: transient objects, loaded and saved sessions.
fn leftovers(tpm: &Swtpm, cwd: &std::path::Path) -> String {
    ["handles-transient", "handles-loaded-session", "handles-saved-session"]
        .iter()
        .map(|cap| String::from_utf8_lossy(&tpm.tpm2_ok("tpm2_getcap", &[cap], cwd)).trim().to_owned())
        .filter(|listed| !listed.is_empty())
        .collect::<Vec<_>>()
        .join("\n")
}

/// Runs `work` in a loop on another thread until told to stop; the daemon is killed under it.
fn busy<F: Fn() + Send + 'static>(work: F) -> (Arc<AtomicBool>, std::thread::JoinHandle<()>) {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let thread = std::thread::spawn(move || {
        while !flag.load(Ordering::Relaxed) {
            work();
        }
    });
    (stop, thread)
}

#[test]
fn kill_during_auth_key_import_keeps_old_or_new_key_and_leaks_nothing() {
    let tpm = Swtpm::start();
    let mut daemon = Daemon::start(&tpm);
    let keys: [[u8; 32]; 2] = [[0x11; 32], [0x22; 32]];
    let blobs: Vec<Vec<u8>> = keys.iter().map(|k| blob_for(&daemon, k)).collect();
    assert_eq!(daemon.import(&blobs[0]).status, 200);
    let mut delays = Delays::new();
    let data = b"crash-test";
    for round in 0..rounds() {
        let socket = daemon.tpmd_socket();
        let blobs_for_thread = blobs.clone();
        let (stop, thread) = busy(move || {
            for blob in &blobs_for_thread {
                let body = serde_json::json!({ "key": aziot_tpm_common::b64(blob) });
                let _ = testkit::http::json(&socket, "POST", &format!("/import_auth_key?{}", common::API), &body);
            }
        });
        std::thread::sleep(delays.next(Duration::from_millis(60)));
        daemon.kill();
        stop.store(true, Ordering::Relaxed);
        thread.join().unwrap();

        daemon.spawn().expect("keyd-tpm restarts after a crash");
        let signed = daemon.sign_ok(data);
        assert!(
            keys.iter().any(|k| hmac_sha256(k, data) == signed),
            "round {round}: the auth key is neither the old nor the new one\n{}",
            daemon.log()
        );
        // The next import works (a leaked session would make it fail with 0x903).
        let next = &blobs[round % 2];
        let r = daemon.import(next);
        assert_eq!(r.status, 200, "round {round}: {}\n{}", String::from_utf8_lossy(&r.body), daemon.log());
        assert_eq!(daemon.sign_ok(data), hmac_sha256(&keys[round % 2], data));
        assert_nothing_left(&tpm, &mut daemon, round);
    }
}

/// Stops the daemon cleanly (it flushes what it holds itself), checks that the TPM holds no
/// transient object or session, which would be a leftover of the crashed process that the
/// start-up flush missed, and starts the daemon again.
fn assert_nothing_left(tpm: &Swtpm, daemon: &mut Daemon, round: usize) {
    assert!(daemon.terminate(), "round {round}: keyd-tpm did not stop cleanly\n{}", daemon.log());
    let left = leftovers(tpm, daemon.dir.path());
    assert!(left.is_empty(), "round {round}: left in the TPM after a clean stop:\n{left}\n{}", daemon.log());
    daemon.spawn().expect("keyd-tpm starts again");
}

/// Keys whose create/import/move was answered and that were not deleted since: each entry is
/// the ids the key may be found under (a move not yet answered may have happened or not).
#[derive(Default)]
struct Promised {
    keys: Vec<(Vec<String>, Kind)>,
}

#[derive(Clone, Copy, Debug)]
enum Kind {
    Symmetric,
    KeyPair,
}

#[test]
fn kill_during_key_create_import_move_delete_loses_no_answered_key() {
    let tpm = Swtpm::start();
    let mut daemon = Daemon::start(&tpm);
    let promised = Arc::new(Mutex::new(Promised::default()));
    let mut delays = Delays::new();
    let counter = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    for round in 0..rounds() {
        let socket = daemon.keyd_socket();
        let (p, n) = (promised.clone(), counter.clone());
        let (stop, thread) = busy(move || churn(&socket, &p, &n));
        std::thread::sleep(delays.next(Duration::from_millis(150)));
        daemon.kill();
        stop.store(true, Ordering::Relaxed);
        thread.join().unwrap();

        daemon.spawn().expect("keyd-tpm restarts after a crash");
        let keys = promised.lock().unwrap().keys.clone();
        for (ids, kind) in &keys {
            assert!(
                ids.iter().any(|id| signs(&daemon, id, *kind)),
                "round {round}: key {ids:?} ({kind:?}) was answered but does not sign after the crash\n{}",
                daemon.log()
            );
        }
        assert_nothing_left(&tpm, &mut daemon, round);
    }
    assert!(!promised.lock().unwrap().keys.is_empty(), "no key operation ever completed");
}

/// One pass of key work: create a symmetric key, import one, create a key pair, move it, and
/// delete an older key; records each answered change in `promised`.
fn churn(socket: &std::path::Path, promised: &Mutex<Promised>, counter: &std::sync::atomic::AtomicUsize) {
    let n = counter.fetch_add(1, Ordering::Relaxed);
    let post = |path: &str, body: serde_json::Value| {
        testkit::http::json(socket, "POST", &format!("{path}?{}", common::KEYD_API), &body).ok()
    };
    let ok = |r: &Option<testkit::http::Response>| r.as_ref().is_some_and(|r| r.status == 200 || r.status == 204);
    let record = |id: String, kind| promised.lock().unwrap().keys.push((vec![id], kind));

    let sym = format!("sym-{n}");
    if ok(&post("/key", serde_json::json!({ "keyId": sym, "usage": "sign" }))) {
        record(sym, Kind::Symmetric);
    }
    let imported = format!("imp-{n}");
    let bytes = aziot_tpm_common::b64(&[n as u8; 32]);
    if ok(&post("/key", serde_json::json!({ "keyId": imported, "keyBytes": bytes, "usage": "sign" }))) {
        record(imported, Kind::Symmetric);
    }
    let pair = format!("pair-{n}");
    if ok(&post("/keypair", serde_json::json!({ "keyId": pair, "preferredAlgorithms": "ec-p256" }))) {
        let moved = format!("moved-{n}");
        // While the move is not answered, the key is under its old id or its new one; after,
        // under the new one.
        promised.lock().unwrap().keys.push((vec![pair.clone(), moved.clone()], Kind::KeyPair));
        if ok(&post(&format!("/keypair/{moved}"), serde_json::json!({ "from": pair }))) {
            let mut p = promised.lock().unwrap();
            p.keys.retain(|(ids, _)| ids[0] != pair);
            p.keys.push((vec![moved], Kind::KeyPair));
        }
    }
    // Delete an older symmetric key; it is no longer promised once the delete is sent.
    let victim = promised
        .lock()
        .unwrap()
        .keys
        .iter()
        .find(|(ids, _)| ids[0].starts_with("sym-"))
        .map(|(ids, _)| ids[0].clone());
    if let Some(victim) = victim {
        let load = testkit::http::request(socket, "GET", &format!("/key/{victim}?{}", common::KEYD_API), None).ok();
        if let Some(handle) = load.filter(|r| r.status == 200).map(|r| r.json()["keyHandle"].as_str().unwrap_or_default().to_owned()) {
            promised.lock().unwrap().keys.retain(|(ids, _)| ids[0] != victim);
            let body = serde_json::json!({ "keyHandle": handle });
            let _ = testkit::http::json(socket, "DELETE", &format!("/key?{}", common::KEYD_API), &body);
        }
    }
}

/// Whether key `id` loads and signs (HMAC for symmetric keys, ECDSA for key pairs).
fn signs(daemon: &Daemon, id: &str, kind: Kind) -> bool {
    let (path, body): (String, serde_json::Value) = match kind {
        Kind::Symmetric => (format!("/key/{id}"), serde_json::json!({ "algorithm": "HMAC-SHA256", "parameters": { "message": "aGk=" } })),
        Kind::KeyPair => (
            format!("/keypair/{id}"),
            serde_json::json!({ "algorithm": "ECDSA", "parameters": { "digest": aziot_tpm_common::b64(&[7; 32]) } }),
        ),
    };
    let load = daemon.keyd_get(&path);
    if load.status != 200 {
        eprintln!("load {id}: {} {}", load.status, String::from_utf8_lossy(&load.body));
        return false;
    }
    let mut body = body;
    body["keyHandle"] = load.json()["keyHandle"].clone();
    let r = daemon.keyd_post("/sign", &body);
    if r.status != 200 {
        eprintln!("sign {id}: {} {}", r.status, String::from_utf8_lossy(&r.body));
    }
    r.status == 200
}
