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
