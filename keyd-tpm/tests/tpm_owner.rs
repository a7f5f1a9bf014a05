//! The TPM owner against a real swtpm, below the HTTP layer.

use keyd_tpm::tpm::{TpmError, TpmHandle};
use testkit::Swtpm;

mod common;

fn settings(tpm: &Swtpm, state: &std::path::Path) -> keyd_tpm::tpm::TpmSettings {
    common::tpm_settings(tpm.tcti(), state)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

/// A TPM owner on a swtpm of its own with `key` imported as the DPS auth key, its state dir,
/// and a two-worker runtime to call it from.
fn owner_with_auth_key(key: &[u8; 32]) -> (Swtpm, tempfile::TempDir, tokio::runtime::Runtime, TpmHandle) {
    let tpm = Swtpm::start();
    let state = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let h = TpmHandle::start(settings(&tpm, state.path())).unwrap();
    let keys = rt.block_on(h.get_tpm_keys()).unwrap();
    let blob = dps_attestation::build_authentication_key(&keys.endorsement_key, &keys.storage_root_key, key).unwrap();
    rt.block_on(h.import_auth_key(blob)).unwrap();
    (tpm, state, rt, h)
}

/// Shuts the owner down and checks that it left no transient object in the TPM.
fn shut_down_leaving_no_transient_objects(h: TpmHandle, tpm: &Swtpm, state: &std::path::Path) {
    h.shutdown();
    let out = tpm.tpm2_ok("tpm2_getcap", &["handles-transient"], state);
    assert!(String::from_utf8_lossy(&out).trim().is_empty(), "{}", String::from_utf8_lossy(&out));
}

#[test]
fn ek_and_srk_are_created_once_and_persisted() {
    let tpm = Swtpm::start();
    let state = tempfile::tempdir().unwrap();
    let rt = runtime();
    let first = rt.block_on(TpmHandle::start(settings(&tpm, state.path())).unwrap().get_tpm_keys()).unwrap();
    assert_eq!(&first.endorsement_key[..8], &[0x01, 0x3a, 0x00, 0x01, 0x00, 0x0b, 0x00, 0x03]);
    assert_eq!(first.endorsement_key.len(), 316);
    assert_eq!(first.storage_root_key.len(), 284);
    let out = tpm.tpm2_ok("tpm2_getcap", &["handles-persistent"], state.path());
    let listed = String::from_utf8_lossy(&out);
    assert!(listed.contains("0x81010001") && listed.contains("0x81000001"), "{listed}");
    let second = rt.block_on(TpmHandle::start(settings(&tpm, state.path())).unwrap().get_tpm_keys()).unwrap();
    assert_eq!(first, second);
}

#[test]
fn sign_without_auth_key_names_the_handle() {
    let tpm = Swtpm::start();
    let state = tempfile::tempdir().unwrap();
    let rt = runtime();
    let handle = TpmHandle::start(settings(&tpm, state.path())).unwrap();
    let err = rt.block_on(handle.sign_with_auth_key(b"x".to_vec())).unwrap_err();
    assert!(matches!(err, TpmError::NoAuthKey { handle: 0x8100_0100 }), "{err}");
    assert!(err.to_string().contains("0x81000100"), "{err}");
}

/// Import, replace, restore and sign, short and long, in each way the owner can protect the bus:
/// each persists and evicts the auth key its own way (the session channel by name, ESYS by its
/// handles, or password sessions).
#[test]
fn auth_keys_swap_and_restore_in_every_parameter_encryption_mode() {
    use keyd_tpm::tpm::ParameterEncryption::{Channel, Esys, Off};
    let rt = runtime();
    for mode in [Channel, Esys, Off] {
        let tpm = Swtpm::start();
        let state = tempfile::tempdir().unwrap();
        let h = TpmHandle::start(keyd_tpm::tpm::TpmSettings { parameter_encryption: mode, ..settings(&tpm, state.path()) }).unwrap();
        let keys = rt.block_on(h.get_tpm_keys()).unwrap();
        let blob = |k: &[u8]| dps_attestation::build_authentication_key(&keys.endorsement_key, &keys.storage_root_key, k).unwrap();
        let sign = |data: &[u8]| rt.block_on(h.sign_with_auth_key(data.to_vec())).unwrap();
        let long = vec![9u8; 3000];
        let (a, b) = ([1u8; 32], [2u8; 32]);
        rt.block_on(h.import_auth_key(blob(&a))).unwrap();
        assert_eq!(sign(b"m"), common::hmac_sha256(&a, b"m"), "{mode:?}");
        assert_eq!(sign(&long), common::hmac_sha256(&a, &long), "{mode:?}");
        rt.block_on(h.import_auth_key(blob(&b))).unwrap();
        assert_eq!(sign(b"m"), common::hmac_sha256(&b, b"m"), "{mode:?}");
        assert_eq!(sign(&long), common::hmac_sha256(&b, &long), "{mode:?}");
        rt.block_on(h.restore_auth_key()).unwrap();
        assert_eq!(sign(b"m"), common::hmac_sha256(&a, b"m"), "{mode:?}");
        assert_eq!(sign(&long), common::hmac_sha256(&a, &long), "{mode:?}");
        rt.block_on(h.restore_auth_key()).unwrap();
        assert_eq!(sign(b"m"), common::hmac_sha256(&b, b"m"), "{mode:?}");
        h.shutdown();
        // A new owner finds the key the last one left.
        let h = TpmHandle::start(keyd_tpm::tpm::TpmSettings { parameter_encryption: mode, ..settings(&tpm, state.path()) }).unwrap();
        assert_eq!(rt.block_on(h.sign_with_auth_key(b"m".to_vec())).unwrap(), common::hmac_sha256(&b, b"m"), "{mode:?}");
        h.shutdown();
    }
}

/// An HMAC over a few TPM buffers (4 KiB: HMAC_Start, three SequenceUpdates, SequenceComplete)
/// is a quick job too: the first goes to the owner thread, later ones on an idle TPM run on the
/// caller's thread. One byte more and it always runs in slices on the owner thread, which are not
/// counted as quick runs. Every answer matches HMAC-SHA256 computed in software.
#[test]
fn short_sequences_run_on_the_callers_thread_and_longer_ones_in_slices() {
    let key = [9u8; 32];
    let (tpm, state, rt, h) = owner_with_auth_key(&key);
    let sign = |data: &[u8]| rt.block_on(h.sign_with_auth_key(data.to_vec())).unwrap();

    let start = h.quick_runs();
    assert_eq!(sign(&[1; 4096]), common::hmac_sha256(&key, &[1; 4096]));
    let after_first = h.quick_runs();
    assert_eq!((after_first.inline, after_first.queued), (start.inline, start.queued + 1), "the first 4 KiB sign goes to the owner thread");
    for i in 0..10u8 {
        let data = vec![i; 1025 + usize::from(i) * 300];
        assert_eq!(sign(&data), common::hmac_sha256(&key, &data));
    }
    let idle = h.quick_runs();
    let (inline, queued) = (idle.inline - after_first.inline, idle.queued - after_first.queued);
    assert_eq!(inline + queued, 10);
    assert!(inline >= 5, "short sequences on an idle TPM run on the caller's thread: {inline} of 10");

    for len in [4097, 64 << 10] {
        let data = vec![5u8; len];
        assert_eq!(sign(&data), common::hmac_sha256(&key, &data), "{len} bytes");
    }
    assert_eq!(h.quick_runs(), idle, "sequences over 4 KiB run in slices, not as quick jobs");
    shut_down_leaving_no_transient_objects(h, &tpm, state.path());
}

/// A short sequence that once took longer than the inline limit (the TPM paused for 30 ms in
/// the middle of it) sends the next one to the owner thread, in slices; a quick run there counts
/// as the kind's last run, so later ones run on the caller's thread again.
#[test]
fn a_short_sequence_slowed_once_runs_on_the_callers_thread_again_once_it_is_quick() {
    let key = [11u8; 32];
    let (tpm, state, rt, h) = owner_with_auth_key(&key);
    let data = vec![4u8; 3000];
    let expected = common::hmac_sha256(&key, &data);
    let sign = || rt.block_on(h.sign_with_auth_key(data.clone())).unwrap();
    assert_eq!(sign(), expected);
    assert_eq!(sign(), expected);

    let slow = {
        let paused = tpm.pause();
        let h = h.clone();
        let data = data.clone();
        let signing = rt.spawn(async move { h.sign_with_auth_key(data).await });
        std::thread::sleep(std::time::Duration::from_millis(30));
        drop(paused);
        rt.block_on(signing).unwrap().unwrap()
    };
    assert_eq!(slow, expected);
    let after_slow = h.quick_runs();
    assert_eq!(sign(), expected);
    let after_next = h.quick_runs();
    assert_eq!(
        (after_next.inline, after_next.queued),
        (after_slow.inline, after_slow.queued + 1),
        "the sign after a slow one goes to the owner thread"
    );
    // On a loaded machine a sliced run may be slow too; a quick one must come within a few.
    let mut tries = 0;
    while h.quick_runs().inline == after_next.inline {
        tries += 1;
        assert!(tries <= 20, "short sequences never ran on the caller's thread again: {:?}", h.quick_runs());
        assert_eq!(sign(), expected);
    }
    shut_down_leaving_no_transient_objects(h, &tpm, state.path());
}

/// Where jobs run: a one-command sign on an idle TPM runs on the caller's own thread once its
/// kind has been seen to be quick; the first of its kind, and every one that finds other work
/// under way (here another caller's long HMAC, sliced on the owner thread), waits for the owner thread. The
/// answers are the same either way.
#[test]
fn quick_jobs_run_on_the_callers_thread_only_when_the_tpm_is_idle() {
    let key = [7u8; 32];
    let (tpm, state, rt, h) = owner_with_auth_key(&key);
    let sign = |data: &[u8]| rt.block_on(h.sign_with_auth_key(data.to_vec())).unwrap();

    let start = h.quick_runs();
    assert_eq!(sign(b"first"), common::hmac_sha256(&key, b"first"));
    let after_first = h.quick_runs();
    assert_eq!((after_first.inline, after_first.queued), (start.inline, start.queued + 1), "the first sign of its kind goes to the owner thread");
    for i in 0..20u8 {
        assert_eq!(sign(&[i; 40]), common::hmac_sha256(&key, &[i; 40]));
    }
    let idle = h.quick_runs();
    // A sign that took longer than the inline limit (a loaded machine) sends the next one to the
    // owner thread, which measures again; most still run on the caller's thread.
    let (inline, queued) = (idle.inline - after_first.inline, idle.queued - after_first.queued);
    assert_eq!(inline + queued, 20);
    assert!(inline >= 10, "signs on an idle TPM run on the caller's thread: {inline} of 20");

    let long = vec![3u8; 2 << 20];
    let expected_long = common::hmac_sha256(&key, &long);
    let busy = {
        let h = h.clone();
        // Another caller's lane: jobs of one lane run in order, so ours would wait it out.
        rt.spawn(keyd_tpm::tpm::in_lane(keyd_tpm::tpm::Lane::Tpmd(4242), async move { h.sign_with_auth_key(long).await }))
    };
    // The spawned task may submit the long HMAC only after the first signs here (a loaded
    // machine): those may run on this thread. From the first sign that is queued on, the long
    // HMAC is under way, and every sign until it ends must be queued too.
    let mut signed_while_busy = 0u64;
    let mut since = None;
    while !busy.is_finished() {
        let before = h.quick_runs();
        assert_eq!(sign(b"meanwhile"), common::hmac_sha256(&key, b"meanwhile"));
        if since.is_none() && h.quick_runs().queued > before.queued {
            since = Some(before);
        }
        if since.is_some() {
            signed_while_busy += 1;
        }
    }
    assert_eq!(rt.block_on(busy).unwrap().unwrap(), expected_long);
    let after = h.quick_runs();
    let since = since.expect("no sign was queued behind the long HMAC");
    assert!(signed_while_busy >= 3, "the long HMAC ended before the signs could be tried ({signed_while_busy})");
    // The last sign may have started just as the long HMAC finished.
    assert!(after.queued - since.queued >= signed_while_busy - 1, "{signed_while_busy} signs during the long HMAC, {after:?} after {since:?} (idle: {idle:?})");
    shut_down_leaving_no_transient_objects(h, &tpm, state.path());
}
