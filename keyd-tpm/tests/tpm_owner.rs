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
