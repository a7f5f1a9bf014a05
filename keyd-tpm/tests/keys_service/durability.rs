//! Keys under load and across restarts: many keys and concurrent clients (more objects than the
//! TPM has slots), daemon and simulator restarts, and what the key files on disk hold.

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;

use testkit::Swtpm;

use super::common::{hmac_sha256, Daemon};
use super::*;

const KEYS: usize = 200;
const CLIENTS: usize = 16;
const SIGNS_PER_CLIENT: usize = 40;

fn key_bytes(i: usize) -> Vec<u8> {
    openssl::sha::sha256(format!("key {i}").as_bytes()).to_vec()
}

#[test]
fn two_hundred_keys_used_in_random_order_by_sixteen_concurrent_clients() {
    let tpm = Swtpm::start();
    let d = Arc::new(Daemon::start(&tpm));

    // Created concurrently too: 16 clients, each importing its share.
    let handles: Vec<(usize, String)> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..CLIENTS)
            .map(|c| {
                let d = d.clone();
                s.spawn(move || {
                    (c..KEYS)
                        .step_by(CLIENTS)
                        .map(|i| {
                            (
                                i,
                                import_key(&d, &format!("key-{i}"), &key_bytes(i), "sign"),
                            )
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect()
    });
    let mut by_index = vec![String::new(); KEYS];
    for (i, h) in handles {
        by_index[i] = h;
    }
    let by_index = Arc::new(by_index);

    std::thread::scope(|s| {
        for c in 0..CLIENTS {
            let (d, handles) = (d.clone(), by_index.clone());
            s.spawn(move || {
                let mut rng = Rng::new(0x9E37_79B9_7F4A_7C15 ^ c as u64);
                for n in 0..SIGNS_PER_CLIENT {
                    let i = rng.below(KEYS);
                    let message = format!("client {c} request {n}");
                    assert_eq!(
                        sign_hmac(&d, &handles[i], message.as_bytes()),
                        hmac_sha256(&key_bytes(i), message.as_bytes()),
                        "key {i}"
                    );
                }
            });
        }
    });
    // Every key also loads by id.
    for i in (0..KEYS).step_by(37) {
        let h = handle(&ok(&d, d.keyd_get(&format!("/key/key-{i}"))));
        assert_eq!(sign_hmac(&d, &h, b"m"), hmac_sha256(&key_bytes(i), b"m"));
    }
}

#[test]
fn keys_and_handles_survive_daemon_restart_and_swtpm_restart() {
    let mut tpm = Swtpm::start();
    let mut d = Daemon::start(&tpm);
    let master = [0x5Au8; 32];
    let sym = import_key(&d, "master", &master, "derive,sign");
    let derived = derive(&d, &sym, b"m:1:primary");
    let enc = create_key(&d, "enc", "encrypt");
    let ec = create_key_pair(&d, "ec", None);
    let point = parameter(&d, &ec, "ec-point");
    let ct = encrypt(&d, &enc, b"iv", b"aad", b"kept secret");

    let check = |d: &Daemon| {
        assert_eq!(sign_hmac(d, &sym, b"m"), hmac_sha256(&master, b"m"));
        assert_eq!(export(d, &derived), hmac_sha256(&master, b"m:1:primary"));
        assert_eq!(
            unb64(
                ok(d, decrypt(d, &enc, b"iv", b"aad", &ct))["plaintext"]
                    .as_str()
                    .unwrap()
            ),
            b"kept secret"
        );
        let public = ec_public_key(d, &ec);
        let digest = openssl::sha::sha256(b"x");
        let sig = openssl::ecdsa::EcdsaSig::from_der(&sign_ecdsa(d, &ec, &digest)).unwrap();
        assert!(sig.verify(&digest, &public).unwrap());
        assert_eq!(parameter(d, &ec, "ec-point"), point);
    };
    check(&d);

    d.restart();
    check(&d);
    // Generate still finds the existing key after a restart.
    let again = create_key(&d, "enc", "encrypt");
    assert_eq!(
        unb64(
            ok(&d, decrypt(&d, &again, b"iv", b"aad", &ct))["plaintext"]
                .as_str()
                .unwrap()
        ),
        b"kept secret"
    );

    tpm.restart();
    check(&d);

    d.kill();
    d.spawn().unwrap();
    check(&d);
}

#[test]
fn key_files_hold_only_tpm_wrapped_objects() {
    let tpm = Swtpm::start();
    let d = Daemon::start(&tpm);
    let secret = *b"do-not-store-me-in-plaintext!!!!";
    import_key(&d, "device-id", &secret, "sign,encrypt");
    let dir = d.keys_dir();
    assert_eq!(
        std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
        0o700
    );
    let path = dir.join(format!(
        "{}.tpmkey",
        keyd_tpm::keyd::key_file_stem("device-id")
    ));
    let file = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let text = String::from_utf8(file.clone()).unwrap();
    assert!(
        text.contains("\"id\":\"device-id\"")
            && text.contains("\"hmac\"")
            && text.contains("\"sealed\""),
        "{text}"
    );
    assert!(
        !file.windows(secret.len()).any(|w| w == secret),
        "the key bytes are in the file"
    );
    assert!(
        !text.contains(&b64(&secret)),
        "the key bytes are in the file (base64)"
    );
    // No temp files left behind; the handle-validation key is a file too.
    let names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        names
            .iter()
            .all(|n| n.ends_with(".tpmkey") && !n.starts_with('.')),
        "{names:?}"
    );
    assert!(
        names.iter().any(|n| n.starts_with(
            "handlevalidationkey-40f1ca41fe8b50f53e10f3e3a580dcae24087f37aa498ba9903f2612b03e90ba"
        )),
        "{names:?}"
    );

    // A corrupt file is a 500 naming it, not a panic or a wrong key.
    std::fs::write(
        dir.join(format!(
            "{}.tpmkey",
            keyd_tpm::keyd::key_file_stem("broken")
        )),
        b"{not json",
    )
    .unwrap();
    let r = d.keyd_get("/key/broken");
    assert_eq!(r.status, 500);
    assert!(r.message().contains("cannot be used"), "{}", r.message());
}

#[test]
fn sigterm_flushes_every_loaded_object_before_the_process_exits() {
    let tpm = Swtpm::start();
    let mut d = Daemon::start(&tpm);
    // Keys of three kinds used once each, so the daemon holds several objects loaded.
    let hmac = import_key(&d, "flush-hmac", &key_bytes(1), "sign");
    sign_hmac(&d, &hmac, b"m");
    let ec = create_key_pair(&d, "flush-ec", Some("ec-p256"));
    sign_ecdsa(&d, &ec, &[7u8; 32]);
    let work = tempfile::tempdir().unwrap();
    let loaded = String::from_utf8_lossy(&tpm.tpm2_ok("tpm2_getcap", &["handles-transient"], work.path())).into_owned();
    assert!(loaded.contains("0x80"), "expected objects loaded while the daemon runs: {loaded}");

    assert!(d.terminate(), "keyd-tpm did not exit cleanly on SIGTERM:\n{}", d.log());
    // The process has exited; nothing it loaded may still take a slot.
    let after = String::from_utf8_lossy(&tpm.tpm2_ok("tpm2_getcap", &["handles-transient"], work.path())).into_owned();
    assert!(!after.contains("0x80"), "objects left loaded after exit: {after}\n{}", d.log());
}
