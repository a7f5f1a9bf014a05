//! What parameter encryption costs. Every TPM operation that carries a secret is run through
//! keyd-tpm's TPM owner (the same code the daemon runs, without HTTP) on one swtpm, with
//! parameter encryption on and off, in alternating phases of the same run (off, on, off, on), so
//! the difference is the salted session and the AES-128-CFB it adds. An operation the session
//! does not touch (HMAC signing) is measured alongside as a control.
//!
//! Usage: bench-session [operations per phase]

#[allow(dead_code)]
mod stats;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use keyd_tpm::tpm::{KeyObject, ParameterEncryption, TpmHandle, TpmSettings};
use stats::{us, Summary};
use testkit::Swtpm;
use zeroize::Zeroizing;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Op {
    CreateFromBytes,
    CreateAes,
    Unseal,
    HmacSecret,
    ImportKeyPair,
    ImportAuthKey,
    HmacSign,
}

impl Op {
    const ALL: [Op; 7] = [
        Op::CreateFromBytes,
        Op::CreateAes,
        Op::Unseal,
        Op::HmacSecret,
        Op::ImportKeyPair,
        Op::ImportAuthKey,
        Op::HmacSign,
    ];

    fn name(self) -> &'static str {
        match self {
            Op::CreateFromBytes => "HMAC key from keyBytes (TPM2_Create, key bytes in)",
            Op::CreateAes => "new AES key (TPM2_GetRandom out, TPM2_Create in)",
            Op::Unseal => "AES key for an AEAD call (TPM2_Unseal out)",
            Op::HmacSecret => "derived key / handle MAC (TPM2_HMAC out)",
            Op::ImportKeyPair => "EC P-256 PKCS#8 import (TPM2_Import, inner wrapper)",
            Op::ImportAuthKey => "DPS auth key import (PolicySecret, ActivateCredential out, Import in, EvictControl ×2)",
            Op::HmacSign => "control, unchanged: HMAC sign (TPM2_HMAC, password session)",
        }
    }

    /// The DPS import persists and evicts keys: fewer rounds.
    fn share(self) -> usize {
        match self {
            Op::ImportAuthKey => 10,
            Op::ImportKeyPair => 2,
            _ => 1,
        }
    }
}

struct Inputs {
    hmac: Arc<KeyObject>,
    sealed: Arc<KeyObject>,
    pkcs8: Vec<u8>,
    blob: Vec<u8>,
}

fn settings(tpm: &Swtpm, state: &std::path::Path, mode: ParameterEncryption) -> TpmSettings {
    TpmSettings {
        tcti: tpm.tcti(),
        auth_key_index: 0x100,
        endorsement_auth: Zeroizing::new("bench-endorsement".into()),
        owner_auth: Zeroizing::new("bench-owner".into()),
        state_dir: state.to_owned(),
        parameter_encryption: mode,
    }
}

fn block<T>(rt: &tokio::runtime::Runtime, f: impl Future<Output = T>) -> T {
    rt.block_on(f)
}

fn run_once(rt: &tokio::runtime::Runtime, h: &TpmHandle, op: Op, inputs: &Inputs) {
    let secret = |b: &[u8]| Zeroizing::new(b.to_vec());
    let ok = match op {
        Op::CreateFromBytes => block(rt, h.create_hmac_key(Some(secret(&[0x5a; 32])))).map(drop),
        Op::CreateAes => block(rt, h.create_sealed_key(None)).map(drop),
        Op::Unseal => block(rt, h.unseal(inputs.sealed.clone())).map(drop),
        Op::HmacSecret => block(rt, h.hmac_secret(inputs.hmac.clone(), b"edgeAgent:1:primary".to_vec())).map(drop),
        Op::ImportKeyPair => block(rt, h.import_key_pair(secret(&inputs.pkcs8))).map(drop),
        Op::ImportAuthKey => block(rt, h.import_auth_key(inputs.blob.clone())),
        Op::HmacSign => block(rt, h.hmac(inputs.hmac.clone(), b"sr=hub/devices/d\n1700000000".to_vec())).map(drop),
    };
    if let Err(e) = ok {
        panic!("{}: {e}", op.name());
    }
}

fn phase(rt: &tokio::runtime::Runtime, h: &TpmHandle, op: Op, inputs: &Inputs, n: usize) -> Summary {
    // Warm up: the key object loaded, the session's first use behind us.
    run_once(rt, h, op, inputs);
    let mut samples = Vec::with_capacity(n);
    let wall = Instant::now();
    for _ in 0..n {
        let t = Instant::now();
        run_once(rt, h, op, inputs);
        samples.push(t.elapsed());
    }
    Summary::of(samples, wall.elapsed())
}

fn main() {
    std::env::set_var("TSS2_LOG", "all+none");
    let n: usize = std::env::args().nth(1).map(|s| s.parse().expect("operations per phase")).unwrap_or(200);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let tpm = Swtpm::start();
    let work = tempfile::tempdir().unwrap();
    tpm.tpm2_ok("tpm2_changeauth", &["-c", "o", "bench-owner"], work.path());
    tpm.tpm2_ok("tpm2_changeauth", &["-c", "e", "bench-endorsement"], work.path());
    let state = work.path().join("tpmd");

    // Inputs, made once: the objects are the same whichever way they were made.
    let h = TpmHandle::start(settings(&tpm, &state, ParameterEncryption::Channel)).expect("open the TPM");
    let hmac = Arc::new(block(&rt, h.create_hmac_key(Some(Zeroizing::new(vec![0x11; 32])))).unwrap());
    let sealed = Arc::new(block(&rt, h.create_sealed_key(None)).unwrap());
    let keys = block(&rt, h.get_tpm_keys()).unwrap();
    h.shutdown();
    let ec = openssl::ec::EcKey::generate(
        &openssl::ec::EcGroup::from_curve_name(openssl::nid::Nid::X9_62_PRIME256V1).unwrap(),
    )
    .unwrap();
    let pkcs8 = openssl::pkey::PKey::from_ec_key(ec).unwrap().private_key_to_pkcs8().unwrap();
    let blob = dps_attestation::build_authentication_key(&keys.endorsement_key, &keys.storage_root_key, &[0x42; 32]).unwrap();
    let inputs = Inputs { hmac, sealed, pkcs8, blob };

    // Alternating phases: off, channel, ESYS sessions, twice. One owner at a time on the TPM.
    use ParameterEncryption::{Channel, Esys, Off};
    let order = [Off, Channel, Esys, Off, Channel, Esys];
    let mut results: Vec<(ParameterEncryption, Vec<Summary>, Duration)> = Vec::new();
    for mode in order {
        let opened = Instant::now();
        let h = TpmHandle::start(settings(&tpm, &state, mode)).expect("open the TPM");
        let open = opened.elapsed();
        let summaries = Op::ALL.iter().map(|op| phase(&rt, &h, *op, &inputs, (n / op.share()).max(5))).collect();
        h.shutdown();
        results.push((mode, summaries, open));
    }

    println!(
        "Parameter encryption on swtpm: keyd-tpm's TPM owner running the same operations with password sessions (off), with keyd-tpm's session \
         channel (on, the default) and with ESYS's own sessions (esys, the fallback), phases off/on/esys/off/on/esys in one run, {n} operations \
         per phase (DPS import {}, PKCS#8 import {})",
        (n / 10).max(5),
        (n / 2).max(5)
    );
    println!("Added = the better of a mode's two p50s minus the better of the two 'off' p50s.");
    println!();
    println!("| operation | off p50 µs | on p50 µs | esys p50 µs | on p99 µs | added by on | on / off | added by esys |");
    println!("|---|---|---|---|---|---|---|---|");
    let of = |mode: ParameterEncryption, i: usize| -> Vec<&Summary> {
        results.iter().filter(|(m, _, _)| *m == mode).map(|(_, s, _)| &s[i]).collect()
    };
    let best = |s: &[&Summary]| s.iter().map(|x| x.p50).min().unwrap_or_default();
    let pair = |s: &[&Summary]| format!("{:.0} / {:.0}", us(s[0].p50), us(s[1].p50));
    for (i, op) in Op::ALL.iter().enumerate() {
        let (off, on, esys) = (of(Off, i), of(Channel, i), of(Esys, i));
        let (b_off, b_on, b_esys) = (us(best(&off)), us(best(&on)), us(best(&esys)));
        println!(
            "| {} | {} | {} | {} | {:.0} | {:+.0} µs | {:.2}× | {:+.0} µs |",
            op.name(),
            pair(&off),
            pair(&on),
            pair(&esys),
            on.iter().map(|x| us(x.p99)).fold(0.0, f64::max),
            b_on - b_off,
            b_on / b_off,
            b_esys - b_off,
        );
    }
    println!();
    let opens: Vec<String> = results
        .iter()
        .map(|(m, _, d)| format!("{m:?} {:.1} ms", d.as_secs_f64() * 1e3))
        .collect();
    println!("Opening the TPM (once per daemon start or TPM reset; on/esys load the session key and start the salted session): {}", opens.join(", "));
    let count: usize = results.iter().map(|(_, s, _)| s.iter().map(|x| x.count).sum::<usize>()).sum();
    println!("{count} operations measured.");
}
