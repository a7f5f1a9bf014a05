//! identityd-dps as a process, provisioned against the emulator, sent generated requests as raw
//! bytes over identityd.sock (every route, mutated JSON, `type`, module ids, api-versions and,
//! with `malformed_http`, broken HTTP). Every answer must be a success, a 4xx with a message or
//! a 503 that says why; the daemon must not crash or hang; a module identity made before the
//! run must be the same after it, and its key must still sign.

use std::time::Duration;

use serde_json::{json, Value};
use testkit::fuzz::gen::{self, Knobs};
use testkit::fuzz::http::{exchange, Outcome};
use testkit::fuzz::{cases, Generator, Tally};

use crate::fixture::{Env, Options, API};
use crate::fuzz_api::{identityd_api, unavailable, WITNESS_MODULE};

const ANSWER: Duration = Duration::from_secs(30);
const INCOMPLETE: Duration = Duration::from_millis(150);
const PROBE_EVERY: u64 = 100;
const REPROVISION: &str = "/identities/device/reprovision";

/// The witness module's generation ID and the signature its key makes of a probe.
fn witness(env: &Env) -> Result<(Value, Value), String> {
    let r = env.identityd("GET", &format!("/identities/modules/{WITNESS_MODULE}?type=aziot"), None);
    if r.status != 200 {
        return Err(format!("GET the witness module: {} {}", r.status, String::from_utf8_lossy(&r.body)));
    }
    let spec = r.json()["spec"].clone();
    let handle = spec["auth"]["keyHandle"].as_str().unwrap_or_default().to_owned();
    let s = env.keyd(
        "POST",
        "/sign",
        json!({ "keyHandle": handle, "algorithm": "HMAC-SHA256", "parameters": { "message": "cHJvYmU=" } }),
    );
    if s.status != 200 {
        return Err(format!("sign with the witness module's key: {} {}", s.status, String::from_utf8_lossy(&s.body)));
    }
    Ok((spec["genId"].clone(), s.json()["signature"].clone()))
}

fn alive(env: &mut Env) -> Result<(), String> {
    if !env.identityd_running() {
        return Err("identityd-dps exited".into());
    }
    let probe = format!("GET /identities/identity?{API} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    match exchange(&env.identityd_socket(), probe.as_bytes(), ANSWER) {
        Ok(Outcome::Answered(r)) if r.status == 200 || unavailable(r.status, &r.body) => Ok(()),
        other => Err(format!("probe failed: {other:?}")),
    }
}

fn run(target: &str, ci_cases: u32, knobs: Knobs) {
    let mut env = Env::start(Options::enrolled());
    let device = env.wait_provisioned(Duration::from_secs(90));
    let r = env.identityd("POST", "/identities/modules", Some(json!({ "type": "aziot", "moduleId": WITNESS_MODULE })));
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let before = witness(&env).expect("witness");

    let mut generator = Generator::new(gen::spec(&identityd_api(), knobs));
    let mut tally = Tally::new(target);
    tally.with_seed(generator.seed);
    let socket = env.identityd_socket();
    let mut i = 0u64;
    while i < u64::from(cases(ci_cases)) {
        let spec = generator.next_value();
        // A valid reprovision re-registers with DPS (seconds each): not what this measures.
        if spec.path == REPROVISION && spec.method == "POST" {
            continue;
        }
        i += 1;
        let case = gen::write(spec);
        tally.cases += 1;
        let wait = if case.complete { ANSWER } else { INCOMPLETE };
        let violations = tally.violations();
        tally.assess(&case, exchange(&socket, &case.bytes, wait), |r| unavailable(r.status, &r.body));
        if tally.violations() > violations || i % PROBE_EVERY == 0 {
            if let Err(e) = alive(&mut env) {
                let running = env.identityd_running();
                tally.crashes += u64::from(!running);
                tally.hangs += u64::from(running);
                tally.example(format!("{e}\n  after [{}]: {}", case.what, case.preview()));
                break;
            }
        }
    }
    if let Err(e) = alive(&mut env) {
        tally.crashes += 1;
        tally.example(e);
    }
    tally.count_panics("identityd-dps", &env.identityd_log());
    if env.identityd_running() {
        match witness(&env) {
            Ok(after) if after == before => {}
            other => {
                tally.keys_lost += 1;
                tally.example(format!("the witness module changed: before {before:?}, after {other:?}"));
            }
        }
        let r = env.identityd("POST", "/identities/device", Some(json!({ "type": "aziot" })));
        if r.status != 200 || r.json()["spec"]["deviceId"] != device["deviceId"] {
            tally.keys_lost += 1;
            tally.example(format!("the device identity changed: {} {}", r.status, String::from_utf8_lossy(&r.body)));
        }
    }
    tally.finish();
}

#[test]
fn identityd_sock_survives_hostile_requests() {
    run("identityd.sock", 300, Knobs::default());
}

#[test]
fn identityd_sock_survives_malformed_http() {
    run("identityd.sock-malformed-http", 300, Knobs { malformed_http: true });
}
