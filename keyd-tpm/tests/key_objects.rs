//! Key objects of the Keys Service in a real swtpm, through the TPM owner (below HTTP).

use std::sync::Arc;

use keyd_tpm::tpm::{KeyObject, KeyPairAlgorithm, ObjectKind, PublicKey, TpmError, TpmHandle};
use openssl::bn::{BigNum, BigNumContext};
use openssl::ec::{EcGroup, EcKey, EcPoint};
use openssl::ecdsa::EcdsaSig;
use openssl::nid::Nid;
use openssl::pkey::PKey;
use openssl::rsa::{Padding, Rsa};
use testkit::Swtpm;
use zeroize::Zeroizing;

mod common;
use common::hmac_sha256;

/// A swtpm, a TPM owner on it, and a runtime to await it.
struct Fixture {
    tpm: Swtpm,
    _state: tempfile::TempDir,
    rt: tokio::runtime::Runtime,
    h: TpmHandle,
}

impl Fixture {
    fn new() -> Self {
        // Expected TPM errors (a flushed handle after a restart) are not worth ESYS's stderr noise.
        std::env::set_var("TSS2_LOG", "all+none");
        let tpm = Swtpm::start();
        let state = tempfile::tempdir().unwrap();
        let h = TpmHandle::start(common::tpm_settings(tpm.tcti(), state.path())).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        Self { tpm, _state: state, rt, h }
    }

    fn run<T>(&self, f: impl std::future::Future<Output = T>) -> T {
        self.rt.block_on(f)
    }
}

fn secret(b: &[u8]) -> Zeroizing<Vec<u8>> {
    Zeroizing::new(b.to_vec())
}

fn ec_verifier(key: &KeyObject) -> EcKey<openssl::pkey::Public> {
    let PublicKey::EcP256 { x, y } = key.public_key().unwrap() else { panic!("not EC") };
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
    EcKey::from_public_key_affine_coordinates(&group, &BigNum::from_slice(&x).unwrap(), &BigNum::from_slice(&y).unwrap()).unwrap()
}

fn pkcs1_type1(digest_info: &[u8]) -> Vec<u8> {
    let mut block = vec![0x00, 0x01];
    block.resize(256 - digest_info.len() - 1, 0xff);
    block.push(0x00);
    block.extend_from_slice(digest_info);
    block
}

#[test]
fn hmac_keys_imported_from_bytes_match_software_hmac_for_any_length() {
    let f = Fixture::new();
    let (rt, h) = (&f, &f.h);
    for key_len in [1usize, 32, 64, 100] {
        let bytes: Vec<u8> = (0..key_len).map(|i| i as u8 ^ 0x5c).collect();
        let key = Arc::new(rt.run(h.create_hmac_key(Some(secret(&bytes)))).unwrap());
        assert_eq!(key.kind, ObjectKind::Hmac);
        for len in [0usize, 31, 1024, 1025, 5000] {
            let data = vec![0xab; len];
            assert_eq!(rt.run(h.hmac(key.clone(), data.clone())).unwrap(), hmac_sha256(&bytes, &data), "key {key_len} data {len}");
        }
    }
    // A key generated inside the TPM works, and round-trips through its stored form.
    let generated = rt.run(h.create_hmac_key(None)).unwrap();
    let restored = Arc::new(KeyObject::from_bytes(&generated.to_bytes()).unwrap());
    assert_eq!(rt.run(h.hmac(restored, b"x".to_vec())).unwrap().len(), 32);
}

#[test]
fn sealed_keys_unseal_to_their_bytes() {
    let f = Fixture::new();
    let (rt, h) = (&f, &f.h);
    let key = Arc::new(rt.run(h.create_sealed_key(Some(secret(&[7; 32])))).unwrap());
    assert_eq!(&rt.run(h.unseal(key.clone())).unwrap()[..], &[7; 32]);
    let generated = Arc::new(rt.run(h.create_sealed_key(None)).unwrap());
    let a = rt.run(h.unseal(generated.clone())).unwrap();
    assert_eq!(a.len(), 32);
    assert_eq!(rt.run(h.unseal(generated)).unwrap(), a);
    // Wrong kind for the operation is a clear client error.
    let err = rt.run(h.hmac(key, b"x".to_vec())).unwrap_err();
    assert!(matches!(err, TpmError::InvalidKey(_)), "{err}");
}

#[test]
fn ecdsa_signatures_verify_with_the_public_key() {
    let f = Fixture::new();
    let (rt, h) = (&f, &f.h);
    let key = Arc::new(rt.run(h.create_key_pair(KeyPairAlgorithm::EcP256)).unwrap());
    let verifier = ec_verifier(&key);
    for digest in [
        openssl::sha::sha256(b"message").to_vec(),
        openssl::sha::sha384(b"message").to_vec(),
        openssl::sha::sha512(b"message").to_vec(),
        openssl::sha::sha1(b"message").to_vec(),
    ] {
        let der = rt.run(h.ecdsa_sign(key.clone(), digest.clone())).unwrap();
        assert!(EcdsaSig::from_der(&der).unwrap().verify(&digest, &verifier).unwrap());
    }
    let err = rt.run(h.ecdsa_sign(key, vec![])).unwrap_err();
    assert!(err.to_string().contains("digest is empty"), "{err}");
}

#[test]
fn rsa_private_operation_is_the_inverse_of_the_public_one() {
    let f = Fixture::new();
    let (rt, h) = (&f, &f.h);
    let key = Arc::new(rt.run(h.create_key_pair(KeyPairAlgorithm::Rsa2048)).unwrap());
    let PublicKey::Rsa { modulus, exponent } = key.public_key().unwrap() else { panic!("not RSA") };
    assert_eq!((modulus.len(), exponent), (256, 65537));
    let public = Rsa::from_public_components(BigNum::from_slice(&modulus).unwrap(), BigNum::from_u32(exponent).unwrap()).unwrap();
    let block = pkcs1_type1(&[0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05, 0x00, 0x04, 0x20, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9]);
    let signature = rt.run(h.rsa_private(key.clone(), block.clone())).unwrap();
    let mut recovered = vec![0; 256];
    let n = public.public_decrypt(&signature, &mut recovered, Padding::NONE).unwrap();
    assert_eq!(&recovered[..n], &block[..]);
    assert!(rt.run(h.rsa_private(key, vec![0xff; 256])).is_err());
}

#[test]
fn existing_private_keys_are_taken_into_the_tpm() {
    let f = Fixture::new();
    let (rt, h) = (&f, &f.h);
    // EC P-256
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
    let ec = EcKey::generate(&group).unwrap();
    let der = PKey::from_ec_key(ec.clone()).unwrap().private_key_to_pkcs8().unwrap();
    let key = Arc::new(rt.run(h.import_key_pair(secret(&der))).unwrap());
    let PublicKey::EcP256 { x, y } = key.public_key().unwrap() else { panic!() };
    let mut ctx = BigNumContext::new().unwrap();
    let mut point = EcPoint::new(&group).unwrap();
    point.set_affine_coordinates_gfp(&group, &BigNum::from_slice(&x).unwrap(), &BigNum::from_slice(&y).unwrap(), &mut ctx).unwrap();
    assert!(point.eq(&group, ec.public_key(), &mut ctx).unwrap());
    let digest = openssl::sha::sha256(b"imported");
    let sig = rt.run(h.ecdsa_sign(key, digest.to_vec())).unwrap();
    assert!(EcdsaSig::from_der(&sig).unwrap().verify(&digest, &ec).unwrap());
    // RSA-2048
    let rsa = Rsa::generate(2048).unwrap();
    let der = PKey::from_rsa(rsa.clone()).unwrap().private_key_to_pkcs8().unwrap();
    let key = Arc::new(rt.run(h.import_key_pair(secret(&der))).unwrap());
    let block = pkcs1_type1(b"some digest info");
    let out = rt.run(h.rsa_private(key, block.clone())).unwrap();
    let mut expected = vec![0; 256];
    rsa.private_encrypt(&block[..], &mut expected, Padding::NONE).unwrap();
    assert_eq!(out, expected);
}

#[test]
fn many_keys_share_the_few_transient_slots_and_survive_a_swtpm_restart() {
    let mut f = Fixture::new();
    let keys: Vec<(Vec<u8>, Arc<KeyObject>)> = (0..8u8)
        .map(|i| {
            let bytes = vec![i; 32];
            let key = f.run(f.h.create_hmac_key(Some(secret(&bytes)))).unwrap();
            (bytes, Arc::new(key))
        })
        .collect();
    for round in 0..3 {
        for (bytes, key) in keys.iter().rev().chain(keys.iter()) {
            assert_eq!(f.run(f.h.hmac(key.clone(), b"m".to_vec())).unwrap(), hmac_sha256(bytes, b"m"), "round {round}");
        }
        f.tpm.restart();
    }
}
