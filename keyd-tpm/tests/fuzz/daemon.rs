//! keyd-tpm as a process on its own swtpm, sent generated requests as raw bytes over keyd.sock
//! and tpmd.sock: mutated JSON, ids and handles, mutated DPS blobs and, with
//! `malformed_http`, broken request lines, headers and framing. Counts every answer that breaks
//! a property; checks after the run that the daemon is alive and the witnesses still work.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use testkit::fuzz::gen::{self, Knobs};
use testkit::fuzz::http::{exchange, Outcome};
use testkit::fuzz::{cases, Generator, Tally};
use testkit::Swtpm;

use super::api::{keyd_api, tpmd_api, IdLength, Known, AUTH_KEY};
use super::common::{blob_for, Daemon};
use super::routes::victims;
use super::witness::{auth_key_lost, Witness};

/// A complete request not answered by then is a hang (generous: other tests share the CPU).
const ANSWER: Duration = Duration::from_secs(30);
/// How long to wait on a request sent incomplete on purpose before giving up on it.
const INCOMPLETE: Duration = Duration::from_millis(150);
/// A liveness probe every this many cases.
const PROBE_EVERY: u64 = 100;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Socket {
    Keyd,
    Tpmd,
}

fn call(socket: &Path, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let sep = if path.contains('?') { '&' } else { '?' };
    let version = if socket.ends_with("keyd.sock") { "2021-05-01" } else { "2020-09-01" };
    let path = format!("{path}{sep}api-version={version}");
    let r = match body {
        Some(b) => testkit::http::json(socket, method, &path, &b),
        None => testkit::http::request(socket, method, &path, None),
    };
    match r {
        Ok(r) => (r.status, serde_json::from_slice(&r.body).unwrap_or(Value::Null)),
        Err(e) => (0, Value::String(e.to_string())),
    }
}

/// Whether a well-formed request is answered, in time.
fn alive(d: &mut Daemon) -> Result<(), String> {
    if !d.is_running() {
        return Err(format!("keyd-tpm exited:\n{}", tail(&d.log())));
    }
    for socket in [d.keyd_socket(), d.tpmd_socket()] {
        let probe: &[u8] = if socket.ends_with("keyd.sock") {
            b"GET /key/v-key?api-version=2021-05-01 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        } else {
            b"GET /get_tpm_keys?api-version=2020-09-01 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        };
        match exchange(&socket, probe, ANSWER) {
            Ok(Outcome::Answered(r)) if r.status < 500 => {}
            other => return Err(format!("probe of {} failed: {other:?}", socket.display())),
        }
    }
    Ok(())
}

fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

fn run(target: &str, ci_cases: u32, socket: Socket, knobs: Knobs, length: IdLength, reserved_bits: bool) {
    let tpm = Swtpm::start();
    let mut d = Daemon::start(&tpm);
    let keyd_sock = d.keyd_socket();
    let tpmd_sock = d.tpmd_socket();
    let keyd = |m: &str, p: &str, b: Option<Value>| call(&keyd_sock, m, p, b);
    let tpmd = |m: &str, p: &str, b: Option<Value>| call(&tpmd_sock, m, p, b);
    let witness = Witness::create(&keyd);
    let blob = blob_for(&d, AUTH_KEY);
    let r = d.import(&blob);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let known = Known { handles: victims(&keyd), blob };
    let api = match socket {
        Socket::Keyd => keyd_api(&known, length),
        Socket::Tpmd => tpmd_api(&known, reserved_bits),
    };
    let target_sock = match socket {
        Socket::Keyd => keyd_sock.clone(),
        Socket::Tpmd => tpmd_sock.clone(),
    };
    let mut generator = Generator::new(gen::case(&api, knobs));
    let mut tally = Tally::new(target);
    tally.with_seed(generator.seed);
    for i in 0..u64::from(cases(ci_cases)) {
        let case = generator.next_value();
        tally.cases += 1;
        let wait = if case.complete { ANSWER } else { INCOMPLETE };
        let before = tally.violations();
        tally.assess(&case, exchange(&target_sock, &case.bytes, wait), |_| false);
        if tally.violations() > before || i % PROBE_EVERY == PROBE_EVERY - 1 {
            if let Err(e) = alive(&mut d) {
                tally.hangs += u64::from(d.is_running());
                tally.crashes += u64::from(!d.is_running());
                tally.example(format!("{e}\n  after request [{}]: {}", case.what, case.preview()));
                break;
            }
        }
    }
    if let Err(e) = alive(&mut d) {
        tally.crashes += 1;
        tally.example(e);
    }
    tally.count_panics("keyd-tpm", &d.log());
    if d.is_running() {
        let mut lost = witness.lost(&keyd);
        lost.extend(auth_key_lost(&tpmd));
        tally.keys_lost = lost.len() as u64;
        for l in lost {
            tally.example(l);
        }
    }
    tally.finish();
}

#[test]
fn keyd_sock_survives_hostile_requests() {
    run("keyd.sock", 400, Socket::Keyd, Knobs::default(), IdLength::Safe, false);
}

#[test]
fn tpmd_sock_survives_hostile_requests() {
    run("tpmd.sock", 300, Socket::Tpmd, Knobs::default(), IdLength::Safe, false);
}

#[test]
fn keyd_sock_survives_malformed_http() {
    run("keyd.sock-malformed-http", 400, Socket::Keyd, Knobs { malformed_http: true }, IdLength::Safe, false);
}

#[test]
fn tpmd_sock_survives_malformed_http() {
    run("tpmd.sock-malformed-http", 300, Socket::Tpmd, Knobs { malformed_http: true }, IdLength::Safe, false);
}

#[test]
fn keyd_sock_takes_ids_of_any_length() {
    run("keyd.sock-long-ids", 200, Socket::Keyd, Knobs::default(), IdLength::Any, false);
}

#[test]
fn tpmd_sock_refuses_reserved_attribute_bits() {
    run("tpmd.sock-reserved-bits", 200, Socket::Tpmd, Knobs::default(), IdLength::Safe, true);
}
