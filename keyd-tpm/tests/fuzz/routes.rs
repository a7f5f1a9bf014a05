//! The Keys Service and TPM Service routes called in-process on a real swtpm, past the HTTP
//! layer: routing, every route's JSON, ids, handles and DPS blobs, as fast as the TPM allows.


use aziot_http::{Bytes, Method, Request, Service};
use keyd_tpm::keyd::{KeyService, KeydConfig};
use keyd_tpm::tpm::{TpmHandle, TpmSettings};
use keyd_tpm::tpmd::TpmService;
use proptest::test_runner::TestCaseError;
use serde_json::{json, Value};
use testkit::fuzz::gen::{self, Knobs, Spec};
use testkit::fuzz::{check, check_then, judge, Tally};
use testkit::Swtpm;

use super::api::{keyd_api, tpmd_api, IdLength, Known, AUTH_KEY, KEYD_VERSIONS, TPMD_VERSIONS};
use super::witness::{auth_key_lost, Witness};

/// One TPM owner serving both APIs in this process.
pub struct InProcess {
    _tpm: Swtpm,
    _dir: tempfile::TempDir,
    rt: tokio::runtime::Runtime,
    pub keyd: KeyService,
    pub tpmd: TpmService,
    pub known: Known,
}

impl InProcess {
    pub fn start() -> Self {
        // The TSS logs every refused command to stderr; refusals are what these tests make.
        std::env::set_var("TSS2_LOG", "all+none");
        let tpm = Swtpm::start();
        let dir = tempfile::tempdir().unwrap();
        let handle = TpmHandle::start(TpmSettings {
            tcti: tpm.tcti(),
            auth_key_index: 0x100,
            endorsement_auth: Default::default(),
            owner_auth: Default::default(),
            state_dir: dir.path().join("tpmd"),
            parameter_encryption: Default::default(),
        })
        .expect("TPM owner");
        let config: KeydConfig = toml::from_str(&format!(
            "[aziot_keys]\nhomedir_path = \"{}\"\n",
            dir.path().join("keyd").display()
        ))
        .unwrap();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let keys = rt.block_on(handle.get_tpm_keys()).unwrap();
        let blob = dps_attestation::build_authentication_key(
            &keys.endorsement_key,
            &keys.storage_root_key,
            AUTH_KEY,
        )
        .expect("build blob");
        let mut env = InProcess {
            keyd: KeyService::new(handle.clone(), &config),
            tpmd: TpmService::new(handle),
            rt,
            _tpm: tpm,
            _dir: dir,
            known: Known { handles: Vec::new(), blob },
        };
        let handles = victims(&|m, p, b| env.call_keyd(m, p, b));
        env.known.handles = handles;
        let (status, v) = env.call_tpmd("POST", "/import_auth_key", Some(json!({ "key": aziot_tpm_common::b64(&env.known.blob) })));
        assert_eq!(status, 200, "{v}");
        env
    }

    fn call(&self, svc: &impl Service, versions: &[&str], method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = Request::new(Method::from_bytes(method.as_bytes()).unwrap(), path, versions[versions.len() - 1]);
        req.body = body.map(|b| Bytes::from(b.to_string()));
        let r = self.rt.block_on(svc.handle(req));
        (r.status().as_u16(), serde_json::from_slice(r.body()).unwrap_or(Value::Null))
    }

    pub fn call_keyd(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        self.call(&self.keyd, KEYD_VERSIONS, method, path, body)
    }

    pub fn call_tpmd(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        self.call(&self.tpmd, TPMD_VERSIONS, method, path, body)
    }

    /// Runs `spec` as the server would after its gate; `None` if the server would not have
    /// passed it on (an unknown api-version or a method that is not a token).
    fn run(&self, svc: &impl Service, versions: &[&str], spec: &Spec) -> Option<(u16, Vec<u8>)> {
        let req = request(spec, versions)?;
        let answer = self
            .rt
            .block_on(async { tokio::time::timeout(testkit::fuzz::HANG_LIMIT, svc.handle(req)).await });
        Some(match answer {
            Ok(r) => (r.status().as_u16(), r.body().to_vec()),
            Err(_) => (0, Vec::new()),
        })
    }
}

/// Victim keys of every kind, and their handles.
pub fn victims(keyd: super::witness::Call) -> Vec<String> {
    let mut handles = Vec::new();
    let mut take = |(status, v): (u16, Value)| {
        assert_eq!(status, 200, "{v}");
        let h = v["keyHandle"].as_str().unwrap().to_owned();
        handles.push(h.clone());
        h
    };
    take(keyd("POST", "/key", Some(json!({ "keyId": "v-key", "usage": "sign" }))));
    let base = take(keyd("POST", "/key", Some(json!({ "keyId": "v-derive", "usage": "derive,sign" }))));
    take(keyd("POST", "/key", Some(json!({ "keyId": "v-aead", "usage": "encrypt" }))));
    take(keyd("POST", "/keypair", Some(json!({ "keyId": "v-pair", "preferredAlgorithms": "ec-p256" }))));
    take(keyd("POST", "/derivedkey", Some(json!({ "baseKeyHandle": base, "derivationData": "bW9kdWxl" }))));
    handles
}

/// The `Request` the server would hand the service for `spec`, or `None` where its gate
/// would have answered (an api-version it does not serve, a target that is not a URI).
pub fn request(spec: &Spec, versions: &[&str]) -> Option<Request> {
    let target = format!("{}{}", spec.path, spec.query);
    Request::from_wire(versions, &spec.method, &target, spec.content_type(), spec.body.clone()).ok()
}

fn verdict(answer: Option<(u16, Vec<u8>)>) -> Result<(), TestCaseError> {
    let Some((status, body)) = answer else { return Ok(()) };
    if status == 0 {
        return Err(TestCaseError::fail(format!("no answer within {:?}", testkit::fuzz::HANG_LIMIT)));
    }
    judge(status, &body).map_err(|p| {
        TestCaseError::fail(format!("{p:?}: {status} {}", String::from_utf8_lossy(&body)))
    })
}

/// Counts what of `lost` went missing.
fn count_lost(tally: &mut Tally, lost: Vec<String>) {
    tally.keys_lost = lost.len() as u64;
    for l in lost {
        tally.example(l);
    }
}

#[test]
fn keys_service_routes_answer_every_request_with_a_4xx_message_or_success() {
    let env = InProcess::start();
    let witness = Witness::create(&|m, p, b| env.call_keyd(m, p, b));
    let api = keyd_api(&env.known, IdLength::Safe);
    check_then(
        "keyd-routes",
        300,
        gen::spec(&api, Knobs::default()),
        |spec| verdict(env.run(&env.keyd, KEYD_VERSIONS, &spec)),
        |tally| count_lost(tally, witness.lost(&|m, p, b| env.call_keyd(m, p, b))),
    );
}

#[test]
fn keys_service_routes_take_ids_of_any_length() {
    let env = InProcess::start();
    let api = keyd_api(&env.known, IdLength::Any);
    check("keyd-routes-long-ids", 200, gen::spec(&api, Knobs::default()), |spec| {
        verdict(env.run(&env.keyd, KEYD_VERSIONS, &spec))
    });
}

#[test]
fn tpm_service_routes_refuse_mutated_blobs_with_a_4xx_message() {
    let env = InProcess::start();
    let api = tpmd_api(&env.known, false);
    check_then(
        "tpmd-routes",
        400,
        gen::spec(&api, Knobs::default()),
        |spec| verdict(env.run(&env.tpmd, TPMD_VERSIONS, &spec)),
        |tally| {
            let lost = auth_key_lost(&|m, p, b| env.call_tpmd(m, p, b));
            count_lost(tally, lost.into_iter().collect());
        },
    );
}

#[test]
fn tpm_service_routes_refuse_reserved_attribute_bits() {
    let env = InProcess::start();
    let api = tpmd_api(&env.known, true);
    check("tpmd-routes-reserved-bits", 200, gen::spec(&api, Knobs::default()), |spec| {
        verdict(env.run(&env.tpmd, TPMD_VERSIONS, &spec))
    });
}
