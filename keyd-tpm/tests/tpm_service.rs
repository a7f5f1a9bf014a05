//! The TPM Service API of keyd-tpm, end to end: a real swtpm per test, the daemon as a process,
//! requests over its Unix socket, DPS blobs built by the contrib attestation crate.

mod common;

use common::{blob_for, hmac_sha256, Daemon, API};
use testkit::http;
use testkit::Swtpm;

const KEY_A: [u8; 32] = [0xA5; 32];
const KEY_B: [u8; 32] = *b"0123456789abcdef0123456789ABCDEF";

fn persistent_handles(tpm: &Swtpm, cwd: &std::path::Path) -> String {
    String::from_utf8_lossy(&tpm.tpm2_ok("tpm2_getcap", &["handles-persistent"], cwd)).into_owned()
}

#[test]
fn ek_and_srk_are_created_on_a_fresh_tpm_and_identical_across_restarts() {
    let tpm = Swtpm::start();
    let mut daemon = Daemon::start(&tpm);
    let (ek, srk) = daemon.tpm_keys();
    // TPM2B_PUBLIC with its size prefix: the TCG EK template and upstream's SRK template.
    assert_eq!(ek.len(), 316);
    assert_eq!(&ek[..10], &[0x01, 0x3a, 0x00, 0x01, 0x00, 0x0b, 0x00, 0x03, 0x00, 0xb2]);
    assert_eq!(srk.len(), 284);
    assert_eq!(
        &srk[..22],
        &[0x01, 0x1a, 0x00, 0x01, 0x00, 0x0b, 0x00, 0x03, 0x04, 0x72, 0x00, 0x00, 0x00, 0x06, 0x00, 0x80, 0x00, 0x43, 0x00, 0x10, 0x08, 0x00]
    );
    let handles = persistent_handles(&tpm, daemon.dir.path());
    assert!(handles.contains("0x81010001") && handles.contains("0x81000001"), "{handles}");

    daemon.restart();
    assert_eq!(daemon.tpm_keys(), (ek, srk));
}

#[test]
fn get_tpm_keys_returns_exactly_what_readpublic_returns() {
    let tpm = Swtpm::start();
    let daemon = Daemon::start(&tpm);
    let (ek, srk) = daemon.tpm_keys();
    let dir = daemon.dir.path();
    for (handle, ours) in [("0x81010001", &ek), ("0x81000001", &srk)] {
        tpm.tpm2_ok("tpm2_readpublic", &["-c", handle, "-o", "pub.tss", "-f", "tss"], dir);
        let theirs = std::fs::read(dir.join("pub.tss")).unwrap();
        assert_eq!(&theirs, ours, "ReadPublic of {handle} differs");
    }
}

#[test]
fn an_ek_already_persisted_with_another_template_is_reused() {
    let tpm = Swtpm::start();
    let work = tempfile::tempdir().unwrap();
    let dir = work.path();
    // A primary from tpm2-tools' default endorsement template (not the TCG EK template).
    tpm.tpm2_ok("tpm2_createprimary", &["-C", "e", "-G", "rsa2048", "-c", "ek.ctx"], dir);
    tpm.tpm2_ok("tpm2_evictcontrol", &["-C", "o", "-c", "ek.ctx", "0x81010001"], dir);
    tpm.tpm2_ok("tpm2_readpublic", &["-c", "0x81010001", "-o", "ek.tss", "-f", "tss"], dir);
    let before = std::fs::read(dir.join("ek.tss")).unwrap();

    let daemon = Daemon::start(&tpm);
    let (ek, _) = daemon.tpm_keys();
    assert_eq!(ek, before, "the daemon replaced or ignored the existing EK");
    assert!(daemon.log().contains("EK at 0x81010001 (existing)"), "{}", daemon.log());
}

#[test]
fn imported_key_signs_like_the_original_key_for_every_length() {
    let tpm = Swtpm::start();
    let daemon = Daemon::start(&tpm);
    let r = daemon.import(&blob_for(&daemon, &KEY_A));
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.body, b"{}");
    for len in [0usize, 1, 1023, 1024, 1025, 65536] {
        let data: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
        assert_eq!(daemon.sign_ok(&data), hmac_sha256(&KEY_A, &data), "length {len}");
    }
    assert!(persistent_handles(&tpm, daemon.dir.path()).contains("0x81000100"));
}

#[test]
fn a_second_import_replaces_the_first_and_restore_brings_it_back() {
    let tpm = Swtpm::start();
    let daemon = Daemon::start(&tpm);
    assert_eq!(daemon.import(&blob_for(&daemon, &KEY_A)).status, 200);
    // As in a DPS registration: the challenge key signs once before the hub key replaces it.
    assert_eq!(daemon.sign_ok(b"challenge"), hmac_sha256(&KEY_A, b"challenge"));
    assert_eq!(daemon.import(&blob_for(&daemon, &KEY_B)).status, 200, "{}", daemon.log());
    assert_eq!(daemon.sign_ok(b"m"), hmac_sha256(&KEY_B, b"m"));

    let r = daemon.post("/restore_auth_key", &serde_json::json!({}));
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(daemon.sign_ok(b"m"), hmac_sha256(&KEY_A, b"m"));
    // Restoring again swaps back: the key it replaced became the previous one.
    assert_eq!(daemon.post("/restore_auth_key", &serde_json::json!({})).status, 200);
    assert_eq!(daemon.sign_ok(b"m"), hmac_sha256(&KEY_B, b"m"));
}

#[test]
fn an_auth_key_replaced_behind_our_back_is_replaced_by_the_next_import() {
    let tpm = Swtpm::start();
    let daemon = Daemon::start(&tpm);
    assert_eq!(daemon.import(&blob_for(&daemon, &KEY_A)).status, 200);
    assert_eq!(daemon.sign_ok(&[7; 4096]), hmac_sha256(&KEY_A, &[7; 4096]));
    // Another TPM client puts a key of its own at the handle while the daemon runs.
    let dir = daemon.dir.path();
    tpm.tpm2_ok("tpm2_createprimary", &["-C", "o", "-G", "ecc", "-c", "foreign.ctx"], dir);
    tpm.tpm2_ok("tpm2_evictcontrol", &["-C", "o", "-c", "0x81000100"], dir);
    tpm.tpm2_ok("tpm2_evictcontrol", &["-C", "o", "-c", "foreign.ctx", "0x81000100"], dir);
    tpm.tpm2_ok("tpm2_flushcontext", &["-t"], dir);

    let r = daemon.import(&blob_for(&daemon, &KEY_B));
    assert_eq!(r.status, 200, "{}\n{}", String::from_utf8_lossy(&r.body), daemon.log());
    assert_eq!(daemon.sign_ok(b"m"), hmac_sha256(&KEY_B, b"m"));
    assert_eq!(daemon.sign_ok(&[7; 4096]), hmac_sha256(&KEY_B, &[7; 4096]));
    assert!(daemon.log().contains("was not imported by keyd-tpm"), "{}", daemon.log());
    // What it replaced was the foreign key, which keyd-tpm has no copy of: nothing to restore.
    assert_eq!(daemon.post("/restore_auth_key", &serde_json::json!({})).status, 400);
    assert_eq!(daemon.sign_ok(b"m"), hmac_sha256(&KEY_B, b"m"));
}

#[test]
fn restore_without_a_previous_key_is_a_clear_400() {
    let tpm = Swtpm::start();
    let daemon = Daemon::start(&tpm);
    let r = daemon.post("/restore_auth_key", &serde_json::json!({}));
    assert_eq!(r.status, 400);
    assert!(r.message().contains("no previous auth key"), "{}", r.message());
}

/// The five TPM2B fields of a blob as (offset of the size, total length).
fn fields(blob: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut at = 0;
    for _ in 0..5 {
        let size = usize::from(u16::from_be_bytes([blob[at], blob[at + 1]]));
        out.push((at, size + 2));
        at += size + 2;
    }
    out
}

#[test]
fn a_corrupt_blob_is_rejected_and_the_previous_key_keeps_working() {
    let tpm = Swtpm::start();
    let daemon = Daemon::start(&tpm);
    assert_eq!(daemon.import(&blob_for(&daemon, &KEY_A)).status, 200);
    let good = blob_for(&daemon, &KEY_B);
    for (i, (start, len)) in fields(&good).into_iter().enumerate() {
        let field = i + 1;
        // Truncated inside the field.
        let truncated = &good[..start + len / 2];
        let r = daemon.import(truncated);
        assert_eq!(r.status, 400, "truncated field {field}: {}", String::from_utf8_lossy(&r.body));
        assert!(r.message().contains(&format!("field {field} ")), "truncated field {field}: {}", r.message());
        // One bit flipped in the middle of the field's body.
        let mut flipped = good.clone();
        flipped[start + 2 + (len - 2) / 2] ^= 0x01;
        let r = daemon.import(&flipped);
        assert_eq!(r.status, 400, "flipped field {field}: {}", String::from_utf8_lossy(&r.body));
        assert!(!r.message().is_empty());
        assert_eq!(daemon.sign_ok(b"still me"), hmac_sha256(&KEY_A, b"still me"), "after field {field}");
    }
    // A blob made for another TPM's EK and SRK.
    let other_tpm = Swtpm::start();
    let other = Daemon::start(&other_tpm);
    let r = daemon.import(&blob_for(&other, &KEY_B));
    assert_eq!(r.status, 400, "{}", String::from_utf8_lossy(&r.body));
    assert!(r.message().contains("not made for this TPM"), "{}", r.message());
    assert_eq!(daemon.sign_ok(b"still me"), hmac_sha256(&KEY_A, b"still me"));
}

#[test]
fn bad_requests_get_upstream_status_codes_and_clear_messages() {
    let tpm = Swtpm::start();
    let daemon = Daemon::start(&tpm);
    let sock = daemon.tpmd_socket();
    let r = http::request(&sock, "GET", "/get_tpm_keys", None).unwrap();
    assert_eq!((r.status, r.message().as_str()), (400, "api-version not specified"));
    let r = http::request(&sock, "GET", "/get_tpm_keys?api-version=1999-01-01", None).unwrap();
    assert_eq!((r.status, r.message().as_str()), (400, "invalid api-version \"1999-01-01\""));
    let r = http::request(&sock, "GET", &format!("/nope?{API}"), None).unwrap();
    assert_eq!(r.status, 404);
    let r = http::request(&sock, "POST", &format!("/import_auth_key?{API}"), Some(b"{not json")).unwrap();
    assert_eq!(r.status, 422);
    let r = http::request(&sock, "POST", &format!("/import_auth_key?{API}"), None).unwrap();
    assert_eq!((r.status, r.message().as_str()), (400, "missing request body"));
    let r = daemon.post("/import_auth_key", &serde_json::json!({ "key": "***" }));
    assert_eq!(r.status, 400);
    assert!(r.message().contains("base64"), "{}", r.message());
    let r = daemon.sign(b"no key yet");
    assert_eq!(r.status, 400);
    assert!(r.message().contains("no DPS auth key"), "{}", r.message());
}

#[test]
fn the_daemon_survives_a_swtpm_restart() {
    let mut tpm = Swtpm::start();
    let daemon = Daemon::start(&tpm);
    assert_eq!(daemon.import(&blob_for(&daemon, &KEY_A)).status, 200);
    tpm.restart();
    assert_eq!(daemon.sign_ok(b"after restart"), hmac_sha256(&KEY_A, b"after restart"));
    // And while it is down, a clear error rather than a hang, then recovery.
    tpm.stop();
    let r = daemon.sign(b"down");
    assert!(r.status >= 500, "{}", String::from_utf8_lossy(&r.body));
    tpm.restart();
    assert_eq!(daemon.sign_ok(b"up again"), hmac_sha256(&KEY_A, b"up again"));
}

#[test]
fn a_tpm_outage_is_one_error_line_not_two_per_request() {
    let mut tpm = Swtpm::start();
    let daemon = Daemon::start(&tpm);
    assert_eq!(daemon.import(&blob_for(&daemon, &KEY_A)).status, 200);
    tpm.stop();
    let before = daemon.log().lines().count();
    for _ in 0..12 {
        let r = daemon.sign(b"down");
        assert_eq!(r.status, 503, "{}", String::from_utf8_lossy(&r.body));
    }
    let log = daemon.log();
    let during: Vec<&str> = log.lines().skip(before).collect();
    let errors: Vec<&&str> = during.iter().filter(|l| l.contains("ERROR")).collect();
    // The first failure is logged, the repeats within 10 s are counted for later; libtss2's
    // own WARNING/ERROR lines stay off without TSS2_LOG.
    assert_eq!(errors.len(), 1, "{}", during.join("\n"));
    assert!(errors[0].contains("cannot open the TPM"), "{}", errors[0]);
    assert!(!log.contains("tcti:") || !log.contains("ERROR:"), "libtss2 lines in:\n{log}");
    tpm.restart();
    assert_eq!(daemon.sign_ok(b"up again"), hmac_sha256(&KEY_A, b"up again"));
}

#[test]
fn auth_key_index_from_config_picks_the_persistent_handle() {
    let tpm = Swtpm::start();
    let daemon = Daemon::start_with(&tpm, "auth_key_index = 0x00_02_00");
    assert_eq!(daemon.import(&blob_for(&daemon, &KEY_A)).status, 200);
    let handles = persistent_handles(&tpm, daemon.dir.path());
    assert!(handles.contains("0x81000200") && !handles.contains("0x81000100"), "{handles}");
}

/// A daemon that imported A then B and was killed while swapping A back in: A sits in the
/// store as the proven "next" key, B still at the persistent handle.
fn crashed_while_swapping_a_back(tpm: &Swtpm) -> (Daemon, std::path::PathBuf) {
    let mut daemon = Daemon::start(tpm);
    assert_eq!(daemon.import(&blob_for(&daemon, &KEY_A)).status, 200);
    assert_eq!(daemon.import(&blob_for(&daemon, &KEY_B)).status, 200);
    daemon.kill();
    let home = daemon.homedir();
    std::fs::copy(home.join("auth-key.previous"), home.join("auth-key.next")).unwrap();
    (daemon, home)
}

#[test]
fn a_swap_interrupted_after_the_old_key_was_evicted_installs_the_new_key_at_start() {
    let tpm = Swtpm::start();
    let (mut daemon, home) = crashed_while_swapping_a_back(&tpm);
    // The crash came after B was evicted: the handle is empty.
    tpm.tpm2_ok("tpm2_evictcontrol", &["-C", "o", "-c", "0x81000100"], daemon.dir.path());
    daemon.spawn().unwrap();
    assert_eq!(daemon.sign_ok(b"m"), hmac_sha256(&KEY_A, b"m"));
    assert!(!home.join("auth-key.next").exists());
}

#[test]
fn a_swap_interrupted_before_the_old_key_was_evicted_keeps_the_old_key() {
    let tpm = Swtpm::start();
    let (mut daemon, home) = crashed_while_swapping_a_back(&tpm);
    daemon.spawn().unwrap();
    assert_eq!(daemon.sign_ok(b"m"), hmac_sha256(&KEY_B, b"m"));
    assert!(!home.join("auth-key.next").exists());
    // The store still knows A as the previous key.
    assert_eq!(daemon.post("/restore_auth_key", &serde_json::json!({})).status, 200);
    assert_eq!(daemon.sign_ok(b"m"), hmac_sha256(&KEY_A, b"m"));
}

#[test]
fn a_missing_tpm_is_a_clear_startup_error() {
    let mut tpm = Swtpm::start();
    tpm.stop();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(&config, format!("tcti = \"{}\"\nhomedir = \"{}\"\n[endpoints]\naziot_tpmd = \"unix://{}\"\n", tpm.tcti(), dir.path().join("home").display(), dir.path().join("tpmd.sock").display())).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_keyd-tpm"))
        .env("AZIOT_TPMD_CONFIG", &config)
        .env("AZIOT_TPMD_CONFIG_DIR", dir.path().join("none"))
        .env("TSS2_LOG", "all+none")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cannot open the TPM") && stderr.contains(&tpm.tcti()), "{stderr}");
    assert!(!dir.path().join("tpmd.sock").exists());
}

#[test]
fn leftover_transient_objects_are_flushed_at_start() {
    let tpm = Swtpm::start();
    let work = tempfile::tempdir().unwrap();
    // tpm2-tools without a resource manager leaves its primary loaded in a transient slot.
    tpm.tpm2_ok("tpm2_createprimary", &["-C", "o", "-G", "ecc", "-c", "leftover.ctx"], work.path());
    let before = String::from_utf8_lossy(&tpm.tpm2_ok("tpm2_getcap", &["handles-transient"], work.path())).into_owned();
    assert!(before.contains("0x80"), "expected a leftover transient object: {before}");
    let daemon = Daemon::start(&tpm);
    let after = String::from_utf8_lossy(&tpm.tpm2_ok("tpm2_getcap", &["handles-transient"], work.path())).into_owned();
    assert!(!after.contains("0x80"), "leftovers still loaded: {after}");
    assert!(daemon.log().contains("flushed"), "{}", daemon.log());
}

#[test]
fn hierarchy_passwords_from_config_are_used_and_a_wrong_one_is_named() {
    let tpm = Swtpm::start();
    let work = tempfile::tempdir().unwrap();
    tpm.tpm2_ok("tpm2_changeauth", &["-c", "o", "owner-secret"], work.path());
    tpm.tpm2_ok("tpm2_changeauth", &["-c", "e", "endorsement-secret"], work.path());

    // Wrong owner password: a clear startup error that points at the config key.
    let mut wrong = Daemon::start_with_result(&tpm, "[hierarchy_authorization]\nowner = \"nope\"\nendorsement = \"endorsement-secret\"");
    let err = wrong.spawn().unwrap_err();
    assert!(err.contains("hierarchy_authorization") && err.contains("owner"), "{err}");
    assert!(!err.contains("nope"), "the password leaked into the log: {err}");

    let daemon = Daemon::start_with(
        &tpm,
        "[hierarchy_authorization]\nowner = \"owner-secret\"\nendorsement = \"endorsement-secret\"",
    );
    assert_eq!(daemon.import(&blob_for(&daemon, &KEY_A)).status, 200, "{}", daemon.log());
    assert_eq!(daemon.sign_ok(b"m"), hmac_sha256(&KEY_A, b"m"));
    assert!(!daemon.log().contains("owner-secret"));
}

#[test]
fn tpm_info_reports_the_tpm_and_whether_the_auth_key_is_there() {
    let tpm = Swtpm::start();
    let daemon = Daemon::start(&tpm);
    let r = daemon.get("/tpm_info");
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let info = r.json();
    assert_eq!(info["manufacturer"], "IBM", "{info}");
    let handles = info["persistent_handles"].as_array().unwrap();
    assert!(handles.contains(&"0x81010001".into()) && handles.contains(&"0x81000001".into()), "{info}");
    assert_eq!(info["auth_key_present"], false);
    assert_eq!(info["auth_key_handle"], "0x81000100");
    assert_eq!(daemon.import(&blob_for(&daemon, &KEY_A)).status, 200);
    assert_eq!(daemon.get("/tpm_info").json()["auth_key_present"], true);
}

/// Upstream's `config apply` writes `tcti` and the hierarchy passwords as arrays of byte values
/// (`tests/fixtures/upstream-config-apply/rich/tpmd/00-super.toml`); keyd-tpm runs on that form.
#[test]
fn the_byte_array_form_upstreams_config_apply_writes_opens_the_tpm_with_its_passwords() {
    let tpm = Swtpm::start();
    let work = tempfile::tempdir().unwrap();
    tpm.tpm2_ok("tpm2_changeauth", &["-c", "o", "o-pass"], work.path());
    tpm.tpm2_ok("tpm2_changeauth", &["-c", "e", "e-pass"], work.path());
    let bytes = |s: &str| format!("[{}]", s.bytes().map(|b| b.to_string()).collect::<Vec<_>>().join(", "));

    let mut daemon = Daemon::start_with_result(&tpm, "");
    // The base file names no usable TPM: only the snippet's byte-array tcti can open it.
    daemon.tcti = "device:/nonexistent/tpmrm0".into();
    let snippet_dir = daemon.dir.path().join("config.d");
    std::fs::create_dir_all(&snippet_dir).unwrap();
    std::fs::write(
        snippet_dir.join("00-super.toml"),
        format!(
            "max_requests = 5\ntcti = {}\n\n[hierarchy_authorization]\nendorsement = {}\nowner = {}\n",
            bytes(&tpm.tcti()),
            bytes("e-pass"),
            bytes("o-pass")
        ),
    )
    .unwrap();
    daemon.spawn().unwrap();
    assert_eq!(daemon.import(&blob_for(&daemon, &KEY_A)).status, 200, "{}", daemon.log());
    assert_eq!(daemon.sign_ok(b"m"), hmac_sha256(&KEY_A, b"m"));
}

/// Where field 5's objectAttributes end in a DPS blob: after four TPM2B fields, field 5's size,
/// its type and nameAlg.
fn attributes_last_byte(blob: &[u8]) -> usize {
    let mut at = 0;
    for _ in 0..4 {
        at += 2 + usize::from(u16::from_be_bytes([blob[at], blob[at + 1]]));
    }
    at + 2 + 4 + 3
}

#[test]
fn a_blob_with_reserved_attribute_bits_is_a_400_and_the_key_stays() {
    let tpm = Swtpm::start();
    let daemon = Daemon::start(&tpm);
    assert_eq!(daemon.import(&blob_for(&daemon, &KEY_A)).status, 200);
    let mut blob = blob_for(&daemon, &KEY_B);
    let at = attributes_last_byte(&blob);
    blob[at] ^= 1;
    let r = daemon.import(&blob);
    assert_eq!(r.status, 400, "{}", String::from_utf8_lossy(&r.body));
    assert!(r.message().contains("reserved object attribute bits"), "{}", r.message());
    assert_eq!(daemon.sign_ok(b"x"), hmac_sha256(&KEY_A, b"x"));
}

#[test]
fn byte_fields_take_base64_with_or_without_padding_as_upstream() {
    let tpm = Swtpm::start();
    let daemon = Daemon::start(&tpm);
    assert_eq!(daemon.import(&blob_for(&daemon, &KEY_A)).status, 200);
    // "ab" is YWI= padded; upstream's decoder takes YWI too, as the Keys Service does.
    for data in ["YWI=", "YWI"] {
        let r = daemon.post("/sign_with_auth_key", &serde_json::json!({ "data": data }));
        assert_eq!(r.status, 200, "{data}: {}", String::from_utf8_lossy(&r.body));
        let digest = aziot_tpm_common::from_b64(r.json()["digest"].as_str().unwrap()).unwrap();
        assert_eq!(digest, hmac_sha256(&KEY_A, b"ab"));
    }
    let r = daemon.post("/sign_with_auth_key", &serde_json::json!({ "data": "Y@I=" }));
    assert_eq!(r.status, 400);
    assert!(r.message().contains("parameter \"data\" is not valid standard base64"), "{}", r.message());
}
