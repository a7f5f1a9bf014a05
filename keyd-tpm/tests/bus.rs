//! What crosses the TPM bus. keyd-tpm talks to swtpm through testkit's tap, which records the
//! command channel in both directions; the tests then search the recording for every secret
//! they handed the daemon or got from it, and look at the session area of each command that
//! carries one. The second test runs the same operations with parameter encryption off and finds
//! the same secrets, so the search itself is shown to work.

mod common;

use std::sync::Arc;

use common::{blob_for, hmac_sha256, tpm_settings, Daemon};
use keyd_tpm::tpm::{ParameterEncryption, TpmHandle, TpmSettings};
use openssl::ec::{EcGroup, EcKey};
use openssl::nid::Nid;
use openssl::pkey::PKey;
use serde_json::json;
use testkit::{BusTap, Swtpm, TpmCommand};
use zeroize::Zeroizing;

const OWNER_PASSWORD: &str = "owner-pw-3f9a1c7e5b";
const ENDORSEMENT_PASSWORD: &str = "endorsement-pw-8d2e6b0a4c";
const HMAC_KEY: [u8; 32] = *b"bus-test HMAC key bytes 0123456!";
const AES_KEY: [u8; 32] = *b"bus-test AES-256 key bytes 98765";
const DPS_KEY: [u8; 32] = *b"bus-test DPS auth key bytes 4242";

const TPM_RH_OWNER: u32 = 0x4000_0001;
const TPM_RH_ENDORSEMENT: u32 = 0x4000_000B;
const TPM_RH_NULL: u32 = 0x4000_0007;

fn b64(b: &[u8]) -> String {
    aziot_tpm_common::b64(b)
}

fn unb64(s: &serde_json::Value) -> Vec<u8> {
    aziot_tpm_common::from_b64(s.as_str().expect("a base64 string")).expect("base64")
}

/// A swtpm whose owner and endorsement hierarchies have passwords, set around the tap.
fn tpm_with_passwords() -> (Swtpm, tempfile::TempDir) {
    let tpm = Swtpm::start();
    let work = tempfile::tempdir().unwrap();
    tpm.tpm2_ok("tpm2_changeauth", &["-c", "o", OWNER_PASSWORD], work.path());
    tpm.tpm2_ok("tpm2_changeauth", &["-c", "e", ENDORSEMENT_PASSWORD], work.path());
    (tpm, work)
}

fn ec_key() -> (PKey<openssl::pkey::Private>, Vec<u8>) {
    let ec = EcKey::generate(&EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap()).unwrap();
    let scalar = ec.private_key().to_vec_padded(32).unwrap();
    (PKey::from_ec_key(ec).unwrap(), scalar)
}

/// Where each secret was seen on the bus; empty when none was.
fn sightings(tap: &BusTap, secrets: &[(&str, &[u8])]) -> Vec<String> {
    secrets
        .iter()
        .filter(|(_, bytes)| !tap.find(bytes).is_empty())
        .map(|(name, bytes)| format!("{name} in {:?}", tap.find(bytes)))
        .collect()
}

/// The size of TPM2_Create's inSensitive (4 when it carries neither auth nor data).
fn create_sensitive_size(c: &TpmCommand) -> usize {
    usize::from(u16::from_be_bytes([c.parameters[0], c.parameters[1]]))
}

/// TPM2B at the start of a parameter area (a response's after its parameterSize).
fn first_tpm2b(bytes: &[u8]) -> &[u8] {
    let size = usize::from(u16::from_be_bytes([bytes[0], bytes[1]]));
    &bytes[2..2 + size]
}

/// ActivateCredential's certInfo (the credential, as the TPM sent it) and the encryptionKey
/// Import then received: the same 16 bytes unless each crossed encrypted under its own nonces.
fn credential_and_import_key(tap: &BusTap) -> (Vec<u8>, Vec<u8>) {
    let commands = tap.commands();
    let (_, response) = commands.iter().find(|(c, _)| c.code == 0x147).expect("an ActivateCredential");
    // Response: header (10), parameterSize (4), certInfo.
    let credential = first_tpm2b(&response[14..]).to_vec();
    let (import, _) = commands.iter().rev().find(|(c, _)| c.code == 0x156).expect("an Import");
    (credential, first_tpm2b(&import.parameters).to_vec())
}

#[test]
fn no_secret_crosses_the_bus_and_each_secret_bearing_command_is_encrypted() {
    std::env::set_var("TSS2_LOG", "all+none");
    let (tpm, work) = tpm_with_passwords();
    let (ec, ec_scalar) = ec_key();
    let pem = work.path().join("edge-ca.pem");
    std::fs::write(&pem, ec.private_key_to_pem_pkcs8().unwrap()).unwrap();

    let tap = BusTap::start(&tpm);
    let mut d = Daemon::start_with_result(
        &tpm,
        &format!("[hierarchy_authorization]\nowner = \"{OWNER_PASSWORD}\"\nendorsement = \"{ENDORSEMENT_PASSWORD}\""),
    );
    d.tcti = tap.tcti();
    d.keyd_extra_config = format!("[preloaded_keys]\nedge-ca = \"file://{}\"\n", pem.display());
    d.spawn().expect("keyd-tpm through the tap");

    // Key bytes into TPM2_Create: an HMAC key, an AES key, one secret for both.
    let hmac = d.keyd_post("/key", &json!({ "keyId": "imported-hmac", "keyBytes": b64(&HMAC_KEY), "usage": "sign" }));
    let hmac = hmac.json()["keyHandle"].as_str().expect("imported HMAC key").to_owned();
    let aes = d.keyd_post("/key", &json!({ "keyId": "imported-aes", "keyBytes": b64(&AES_KEY), "usage": "encrypt" }));
    let aes = aes.json()["keyHandle"].as_str().expect("imported AES key").to_owned();
    let sign = d.keyd_post("/sign", &json!({ "keyHandle": hmac, "algorithm": "HMAC-SHA256", "parameters": { "message": b64(b"m") } }));
    assert_eq!(unb64(&sign.json()["signature"]), hmac_sha256(&HMAC_KEY, b"m"));
    // The AES key out of TPM2_Unseal, at each AEAD operation.
    let aead = |handle: &str| {
        let body = json!({ "keyHandle": handle, "algorithm": "AEAD", "parameters": { "iv": b64(b"0123456789ab"), "aad": b64(b"aad") }, "plaintext": b64(b"p") });
        let r = d.keyd_post("/encrypt", &body);
        assert_eq!(r.status, 200, "{}\n{}", String::from_utf8_lossy(&r.body), d.log());
    };
    aead(&aes);
    // A new AES key from TPM2_GetRandom, then unsealed.
    let generated = d.keyd_post("/key", &json!({ "keyId": "generated-aes", "keyBytes": null, "usage": "encrypt" }));
    aead(generated.json()["keyHandle"].as_str().expect("generated AES key"));
    // A derived key (TPM2_HMAC result), exported.
    let derived = d.keyd_post("/derivedkey", &json!({ "baseKeyHandle": hmac, "derivationData": b64(b"module:1:primary") }));
    let derived_handle = derived.json()["keyHandle"].as_str().expect("derived key").to_owned();
    let exported = unb64(&d.keyd_post("/derivedkey/export", &json!({ "keyHandle": derived_handle })).json()["key"]);
    assert_eq!(exported, hmac_sha256(&HMAC_KEY, b"module:1:primary"));
    // A private key into TPM2_Import (a preloaded PKCS#8 file, taken in at first use).
    let ca = d.keyd_get("/keypair/edge-ca");
    assert_eq!(ca.status, 200, "{}\n{}", String::from_utf8_lossy(&ca.body), d.log());
    // A DPS blob: PolicySecret(endorsement), ActivateCredential, Import, EvictControl(owner).
    assert_eq!(d.import(&blob_for(&d, &DPS_KEY)).status, 200, "{}", d.log());
    assert_eq!(d.sign_ok(b"sas"), hmac_sha256(&DPS_KEY, b"sas"));
    assert_eq!(d.get("/tpm_info").status, 200);

    assert_protected(
        &tap,
        &[
            ("the owner password", OWNER_PASSWORD.as_bytes()),
            ("the endorsement password", ENDORSEMENT_PASSWORD.as_bytes()),
            ("the imported HMAC key", &HMAC_KEY),
            ("the imported AES key", &AES_KEY),
            ("the derived key", &exported),
            ("the imported EC private key", &ec_scalar),
            ("the DPS auth key", &DPS_KEY),
        ],
    );
}

/// No secret in the recording, the DPS credential encrypted both ways, and every command that
/// carries a secret or a hierarchy's authorization has the session it needs.
fn assert_protected(tap: &BusTap, secrets: &[(&str, &[u8])]) {
    let seen = sightings(tap, secrets);
    assert!(seen.is_empty(), "secrets on the bus: {seen:?}");
    let (credential, import_key) = credential_and_import_key(tap);
    assert_ne!(credential, import_key, "the DPS credential crossed the bus in clear");

    let commands = tap.commands();
    let mut checked = std::collections::BTreeMap::<String, usize>::new();
    for (c, _) in &commands {
        let first = c.sessions.first();
        let hierarchy = c.handles.first().is_some_and(|h| [TPM_RH_OWNER, TPM_RH_ENDORSEMENT].contains(h));
        let (needs, ok) = match c.code {
            // inSensitive with key bytes (generated keys carry an empty one).
            0x153 if create_sensitive_size(c) > 4 => ("decrypt", first.is_some_and(|s| s.decrypt())),
            0x156 => ("decrypt", first.is_some_and(|s| s.decrypt())),
            0x167 => ("decrypt", c.sessions.iter().any(|s| s.decrypt())),
            0x15E | 0x147 => ("encrypt", c.sessions.iter().any(|s| s.encrypt())),
            0x17B => ("encrypt", c.sessions.iter().any(|s| s.encrypt())),
            _ if hierarchy && !c.sessions.is_empty() => ("an HMAC session", first.is_some_and(|s| !s.is_password())),
            _ => continue,
        };
        assert!(ok, "{} without {needs}: {c:?}", c.name());
        *checked.entry(c.name()).or_default() += 1;
    }
    for name in ["TPM2_Create", "TPM2_Import", "TPM2_Unseal", "TPM2_ActivateCredential", "TPM2_GetRandom", "TPM2_CreatePrimary", "TPM2_EvictControl", "TPM2_PolicySecret"] {
        assert!(checked.contains_key(name), "no {name} was recorded; checked {checked:?}");
    }
    // Every HMAC session was salted (to a key, with a salt). The policy session that
    // ActivateCredential's EK needs carries no HMAC and encrypts nothing.
    let mut hmac_sessions = 0;
    for (c, _) in commands.iter().filter(|(c, _)| c.code == 0x176) {
        let p = &c.parameters;
        let nonce = usize::from(u16::from_be_bytes([p[0], p[1]]));
        let salt = usize::from(u16::from_be_bytes([p[2 + nonce], p[3 + nonce]]));
        let session_type = p[4 + nonce + salt];
        if session_type == 0x00 {
            hmac_sessions += 1;
            assert!(c.handles[0] != TPM_RH_NULL && salt > 0, "an unsalted HMAC session: {c:?}");
        }
    }
    assert!(hmac_sessions > 0, "no HMAC session was started");
}

/// The secret-bearing operations through the TPM owner (below HTTP) with `mode`, on a fresh
/// TPM with hierarchy passwords, through a tap; returns the tap and the secrets involved.
fn through_the_owner(mode: ParameterEncryption) -> (BusTap, Vec<(&'static str, Vec<u8>)>, Swtpm) {
    std::env::set_var("TSS2_LOG", "all+none");
    let (tpm, _work) = tpm_with_passwords();
    let tap = BusTap::start(&tpm);
    let state = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let h = TpmHandle::start(TpmSettings {
        endorsement_auth: Zeroizing::new(ENDORSEMENT_PASSWORD.into()),
        owner_auth: Zeroizing::new(OWNER_PASSWORD.into()),
        parameter_encryption: mode,
        ..tpm_settings(tap.tcti(), state.path())
    })
    .unwrap();
    let secret = |b: &[u8]| Zeroizing::new(b.to_vec());
    let hmac = Arc::new(rt.block_on(h.create_hmac_key(Some(secret(&HMAC_KEY)))).unwrap());
    let derived = rt.block_on(h.hmac_secret(hmac, b"module:1:primary".to_vec())).unwrap();
    assert_eq!(derived, hmac_sha256(&HMAC_KEY, b"module:1:primary"));
    let sealed = Arc::new(rt.block_on(h.create_sealed_key(Some(secret(&AES_KEY)))).unwrap());
    assert_eq!(&rt.block_on(h.unseal(sealed)).unwrap()[..], &AES_KEY);
    let generated = Arc::new(rt.block_on(h.create_sealed_key(None)).unwrap());
    let generated = rt.block_on(h.unseal(generated)).unwrap().to_vec();
    let (ec, ec_scalar) = ec_key();
    rt.block_on(h.import_key_pair(secret(&ec.private_key_to_pkcs8().unwrap()))).unwrap();
    let keys = rt.block_on(h.get_tpm_keys()).unwrap();
    let blob = dps_attestation::build_authentication_key(&keys.endorsement_key, &keys.storage_root_key, &DPS_KEY).unwrap();
    rt.block_on(h.import_auth_key(blob)).unwrap();
    assert_eq!(rt.block_on(h.sign_with_auth_key(b"sas".to_vec())).unwrap(), hmac_sha256(&DPS_KEY, b"sas"));
    h.shutdown();
    let secrets = vec![
        ("the owner password", OWNER_PASSWORD.as_bytes().to_vec()),
        ("the endorsement password", ENDORSEMENT_PASSWORD.as_bytes().to_vec()),
        ("the imported HMAC key", HMAC_KEY.to_vec()),
        ("the imported AES key", AES_KEY.to_vec()),
        ("the derived key", derived),
        ("a generated AES key", generated),
        ("the imported EC private key", ec_scalar),
    ];
    (tap, secrets, tpm)
}

fn borrowed<'a>(secrets: &'a [(&'static str, Vec<u8>)]) -> Vec<(&'static str, &'a [u8])> {
    secrets.iter().map(|(n, b)| (*n, &b[..])).collect()
}

#[test]
fn esys_sessions_protect_the_same_commands_when_there_is_no_second_connection() {
    let (tap, secrets, _tpm) = through_the_owner(ParameterEncryption::Esys);
    assert_protected(&tap, &borrowed(&secrets));
}

#[test]
fn the_session_channel_protects_them_below_http_too() {
    let (tap, secrets, _tpm) = through_the_owner(ParameterEncryption::Channel);
    assert_protected(&tap, &borrowed(&secrets));
}

#[test]
fn without_parameter_encryption_the_same_secrets_are_on_the_bus() {
    let (tap, secrets, _tpm) = through_the_owner(ParameterEncryption::Off);
    let seen = sightings(&tap, &borrowed(&secrets));
    assert_eq!(seen.len(), secrets.len(), "expected every secret in clear, saw only: {seen:?}");
    let (credential, import_key) = credential_and_import_key(&tap);
    assert_eq!(credential, import_key, "the DPS credential should cross in clear without encryption");
}

#[test]
fn the_session_is_started_again_after_a_tpm_restart() {
    std::env::set_var("TSS2_LOG", "all+none");
    let mut tpm = Swtpm::start();
    let tap = BusTap::start(&tpm);
    let state = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let h = TpmHandle::start(tpm_settings(tap.tcti(), state.path())).unwrap();
    let sealed = Arc::new(rt.block_on(h.create_sealed_key(Some(Zeroizing::new(AES_KEY.to_vec())))).unwrap());
    assert_eq!(&rt.block_on(h.unseal(sealed.clone())).unwrap()[..], &AES_KEY);
    // A TPM reset: the simulator comes back with no sessions and no transient objects.
    tpm.restart();
    tap.clear();
    assert_eq!(&rt.block_on(h.unseal(sealed)).unwrap()[..], &AES_KEY);
    let commands = tap.commands();
    assert!(commands.iter().any(|(c, _)| c.code == 0x176 && c.handles[0] != TPM_RH_NULL), "no new salted session");
    let unseals: Vec<_> = commands.iter().filter(|(c, r)| c.code == 0x15E && r.get(6..10) == Some(&[0; 4])).collect();
    assert!(!unseals.is_empty() && unseals.iter().all(|(c, _)| c.sessions.iter().any(|s| s.encrypt())), "{unseals:?}");
    assert!(tap.find(&AES_KEY).is_empty(), "the AES key crossed in clear after the restart");
    h.shutdown();
}

#[test]
fn a_session_key_that_does_not_load_under_this_srk_stops_the_daemon() {
    let (first, second) = (Swtpm::start(), Swtpm::start());
    let mut a = Daemon::start(&first);
    let key = std::fs::read(a.homedir().join("session-key")).expect("the session key file");
    a.kill();
    // Another TPM's session key in place of this one's, under an SRK that did not change.
    let mut b = Daemon::start(&second);
    b.tpm_keys();
    assert!(b.terminate(), "{}", b.log());
    std::fs::write(b.homedir().join("session-key"), &key).unwrap();
    let err = b.spawn().unwrap_err();
    assert!(err.contains("session key") && err.contains("does not load under the SRK"), "{err}");
    assert!(err.contains("remove") && err.contains(&b.homedir().join("session-key").display().to_string()), "{err}");
    // As the message says: once it is removed, a new one is made.
    std::fs::remove_file(b.homedir().join("session-key")).unwrap();
    b.spawn().expect("keyd-tpm with a new session key");
    assert_ne!(std::fs::read(b.homedir().join("session-key")).unwrap(), key);
}

#[test]
fn after_a_tpm_clear_a_new_session_key_is_made_under_the_new_srk() {
    let tpm = Swtpm::start();
    let mut d = Daemon::start(&tpm);
    let old = std::fs::read(d.homedir().join("session-key")).expect("the session key file");
    d.tpm_keys();
    assert!(d.terminate(), "{}", d.log());
    // TPM2_Clear: new storage seed, persistent objects under the owner hierarchy evicted.
    tpm.tpm2_ok("tpm2_clear", &["-c", "p"], d.dir.path());
    d.spawn().expect("keyd-tpm after a clear");
    assert!(d.log().contains("was the TPM cleared?"), "{}", d.log());
    assert_ne!(std::fs::read(d.homedir().join("session-key")).unwrap(), old);
    // And the new session works: an AEAD key is made and used.
    let r = d.keyd_post("/key", &json!({ "keyId": "after-clear", "keyBytes": null, "usage": "encrypt" }));
    assert_eq!(r.status, 200, "{}\n{}", String::from_utf8_lossy(&r.body), d.log());
}

/// The TPM commands the tap saw since it was last cleared, by name.
fn command_names(tap: &BusTap) -> Vec<String> {
    tap.commands().iter().map(|(c, _)| c.name()).collect()
}

#[test]
fn signing_in_turn_with_more_keys_than_slots_reloads_saved_contexts_and_a_create_keeps_the_handle_key() {
    std::env::set_var("TSS2_LOG", "all+none");
    let tpm = Swtpm::start();
    let tap = BusTap::start(&tpm);
    let mut d = Daemon::start(&tpm);
    d.tcti = tap.tcti();
    d.spawn().expect("keyd-tpm through the tap");

    // Five imported HMAC keys, more than keyd-tpm keeps loaded: each sign in turn needs its key
    // loaded again.
    let keys: Vec<(Vec<u8>, String)> = (0..5u8)
        .map(|i| {
            let bytes = vec![0x40 + i; 32];
            let r = d.keyd_post("/key", &json!({ "keyId": format!("turn-{i}"), "keyBytes": b64(&bytes), "usage": "sign" }));
            assert_eq!(r.status, 200, "{:?}", String::from_utf8_lossy(&r.body));
            (bytes, r.json()["keyHandle"].as_str().unwrap().to_owned())
        })
        .collect();
    let sign_each = |round: u8| {
        for (bytes, handle) in &keys {
            let message = [round; 48];
            let r = d.keyd_post(
                "/sign",
                &json!({ "keyHandle": handle, "algorithm": "HMAC-SHA256", "parameters": { "message": b64(&message) } }),
            );
            assert_eq!(r.status, 200, "{:?}", String::from_utf8_lossy(&r.body));
            assert_eq!(unb64(&r.json()["signature"]), hmac_sha256(bytes, &message), "round {round}");
        }
    };
    sign_each(0);
    sign_each(1);
    tap.clear();
    sign_each(2);
    let names = command_names(&tap);
    let count = |name: &str| names.iter().filter(|n| *n == name).count();
    assert_eq!(count("TPM2_HMAC"), keys.len(), "{names:?}");
    assert_eq!(count("TPM2_Load"), 0, "keys flushed before were loaded from their wrapped objects again: {names:?}");
    assert!(count("TPM2_ContextLoad") >= keys.len() - 2, "{names:?}");
    assert_eq!(count("TPM2_ContextSave"), 0, "contexts are saved once, at a key's first flush: {names:?}");

    // New keys: after the first, each is TPM2_Create and the handle's MAC, the handle key kept
    // loaded (a create used to flush every loaded object first).
    for i in 0..3 {
        tap.clear();
        let r = d.keyd_post("/key", &json!({ "keyId": format!("made-here-{i}"), "keyBytes": null, "usage": "sign" }));
        assert_eq!(r.status, 200, "{:?}", String::from_utf8_lossy(&r.body));
        let names = command_names(&tap);
        if i > 0 {
            assert_eq!(names, ["TPM2_Create", "TPM2_HMAC"], "create {i}");
        }
    }
}
