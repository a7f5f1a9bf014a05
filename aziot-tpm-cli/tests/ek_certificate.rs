//! EK certificate verification in `aziot-tpm tpm-info` and `check`, with swtpm's own EK
//! certificates: `swtpm_setup --create-ek-cert` with a local CA made by `swtpm_localca`, for a
//! certificate that verifies, one that expired, one whose key is not the EK in use, and one
//! from a CA the trust bundle does not hold.

mod common;

use common::Device;
use serde_json::Value;
use testkit::{CertDates, LocalCa};

#[path = "check/support.rs"]
mod support;

fn tpm_info(device: &Device, bundle: &std::path::Path) -> Value {
    let tcti = device.tpm().tcti();
    device.cli(&["tpm-info", "--tcti", &tcti, "--ek-trust-bundle", bundle.to_str().unwrap(), "-o", "json"]).expect(0).json()
}

fn check_of(checks: &Value, index: &str) -> Value {
    checks
        .as_array()
        .and_then(|all| all.iter().find(|c| c["nv_index"] == index))
        .cloned()
        .unwrap_or_else(|| panic!("no certificate at {index} in {checks}"))
}

#[test]
fn swtpm_certificates_verify_and_name_the_ek_in_use_through_keyd_tpm_and_directly() {
    let ca = LocalCa::new();
    let mut device = Device::with_manufactured_tpm(&ca, CertDates::Current);
    let bundle = ca.trust_bundle();

    // Directly: both certificates verify; the RSA one's key is the EK at 0x81010001.
    let json = tpm_info(&device, &bundle);
    let rsa = check_of(&json["ek_certificate_checks"], "0x01c00002");
    assert_eq!((rsa["verdict"].as_str(), rsa["key_is_ek_in_use"].as_bool()), (Some("verified"), Some(true)), "{json}");
    assert_eq!(rsa["issuer"], "CN=swtpm-localca", "{rsa}");
    assert!(rsa["not_before"].as_str().is_some_and(|d| !d.is_empty()) && rsa["not_after"].as_str().is_some_and(|d| d.contains("9999")), "{rsa}");
    let ecc = check_of(&json["ek_certificate_checks"], "0x01c00016");
    assert_eq!((ecc["key"].as_str(), ecc["verdict"].as_str()), (Some("ECC NIST P-384"), Some("verified")), "{json}");

    // Through keyd-tpm, which uses the EK swtpm_setup persisted; text for people.
    device.start_keyd();
    let run = device.cli(&["tpm-info", "--ek-trust-bundle", bundle.to_str().unwrap()]);
    let text = run.expect(0).stdout();
    assert!(text.contains("Read through:     the TPM Service"), "{text}");
    assert!(
        text.contains("EK certificate:   0x01c00002 (RSA-2048): verified: issued by CN=swtpm-localca, valid ")
            && text.contains("its key is the EK at 0x81010001"),
        "{text}"
    );
    assert!(text.contains("Trust bundle:     2 CA certificate(s) from"), "{text}");

    // check: ok with the bundle, a warning that says what to do without one.
    let args = ["-o", "json", "--ek-trust-bundle", bundle.to_str().unwrap()];
    let json = support::check(&device, &args).json();
    assert_eq!(support::result_of(&json, "tpm-ek-certificate"), "ok", "{}", json["checks"]["tpm-ek-certificate"]);
    let missing = device.path("no-such-bundle.pem");
    let json = support::check(&device, &["-o", "json", "--ek-trust-bundle", missing.to_str().unwrap()]).json();
    let c = &json["checks"]["tpm-ek-certificate"];
    assert_eq!(support::result_of(&json, "tpm-ek-certificate"), "warning", "{c}");
    let details = c["result"]["details"].to_string();
    assert!(details.contains("no trust bundle at") && details.contains("--ek-trust-bundle"), "{details}");
}

#[test]
fn an_expired_certificate_is_reported_as_expired() {
    let ca = LocalCa::new();
    let device = Device::with_manufactured_tpm(&ca, CertDates::Expired);
    let json = tpm_info(&device, &ca.trust_bundle());
    let rsa = check_of(&json["ek_certificate_checks"], "0x01c00002");
    assert_eq!(rsa["verdict"], "expired", "{rsa}");
    assert_eq!(rsa["key_is_ek_in_use"], true, "{rsa}");
    let text = device.cli(&["tpm-info", "--tcti", &device.tpm().tcti(), "--ek-trust-bundle", ca.trust_bundle().to_str().unwrap()]);
    assert!(text.expect(0).stdout().contains("(RSA-2048): EXPIRED: issued by CN=swtpm-localca"), "{text:?}");
}

#[test]
fn a_certificate_for_another_key_than_the_ek_in_use_is_a_wrong_key() {
    let ca = LocalCa::new();
    let device = Device::with_manufactured_tpm(&ca, CertDates::Current);
    // Another RSA key at the EK's handle: the certificate no longer names the EK in use.
    let (tpm, dir) = (device.tpm(), device.dir.path());
    tpm.tpm2_ok("tpm2_evictcontrol", &["-C", "o", "-c", "0x81010001"], dir);
    tpm.tpm2_ok("tpm2_createprimary", &["-C", "o", "-G", "rsa2048", "-c", "other.ctx"], dir);
    tpm.tpm2_ok("tpm2_evictcontrol", &["-C", "o", "-c", "other.ctx", "0x81010001"], dir);
    let json = tpm_info(&device, &ca.trust_bundle());
    let rsa = check_of(&json["ek_certificate_checks"], "0x01c00002");
    assert_eq!((rsa["verdict"].as_str(), rsa["key_is_ek_in_use"].as_bool()), (Some("wrong_key"), Some(false)), "{rsa}");
    assert!(rsa["detail"].as_str().unwrap().contains("not the EK at 0x81010001"), "{rsa}");
}

#[test]
fn a_certificate_from_a_ca_outside_the_bundle_is_not_trusted() {
    let (ca, other) = (LocalCa::new(), LocalCa::new());
    let device = Device::with_manufactured_tpm(&ca, CertDates::Current);
    let json = tpm_info(&device, &other.trust_bundle());
    for index in ["0x01c00002", "0x01c00016"] {
        let c = check_of(&json["ek_certificate_checks"], index);
        assert_eq!(c["verdict"], "untrusted", "{c}");
        assert!(c["detail"].as_str().unwrap().contains("not issued by a CA in the trust bundle"), "{c}");
    }
    // A directory of the right CA's certificates does verify it.
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(ca.root_pem(), dir.path().join("root.pem")).unwrap();
    std::fs::copy(ca.issuer_pem(), dir.path().join("issuer.crt")).unwrap();
    let json = tpm_info(&device, dir.path());
    assert_eq!(check_of(&json["ek_certificate_checks"], "0x01c00002")["verdict"], "verified", "{json}");
}
