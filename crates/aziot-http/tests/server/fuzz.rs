//! The HTTP layer on generated requests, in-process on a real socket, each answer checked
//! against what the request said: JSON bodies come back as sent whatever the framing (length,
//! chunked in any split, `Expect: 100-continue`); path segments arrive percent-decoded; query
//! parameters arrive form-decoded, the last of a repeated name winning. And any damaged request
//! (routes, api-versions, bodies; with `malformed_http` the HTTP syntax too) is answered with a
//! 4xx and a `{"message"}`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use aziot_http::ServerOptions;
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use serde_json::Value;
use testkit::fuzz::gen::{self, b64, body_bytes, json_value, text, Api, Knobs, Route};
use testkit::fuzz::http::{exchange, Outcome, RawResponse};
use testkit::fuzz::{check, judge};

use crate::fixture::{TestServer, V};

const ANSWER: Duration = Duration::from_secs(15);

/// A server on its own runtime, for blocking clients in the test thread.
struct Running {
    rt: tokio::runtime::Runtime,
    server: Option<TestServer>,
    path: PathBuf,
}

impl Running {
    fn start() -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let server = rt.block_on(TestServer::start(ServerOptions::default()));
        let path = server.path.clone();
        Running { rt, server: Some(server), path }
    }

    fn send(&self, bytes: &[u8]) -> Result<RawResponse, TestCaseError> {
        match exchange(&self.path, bytes, ANSWER) {
            Ok(Outcome::Answered(r)) => Ok(r),
            other => Err(TestCaseError::fail(format!("no answer: {other:?}"))),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _guard = self.rt.enter();
        drop(self.server.take());
    }
}

/// A body framed by length or in chunks of the given sizes.
fn framed(head: &str, body: &[u8], chunks: &Option<Vec<usize>>) -> Vec<u8> {
    let mut out = head.as_bytes().to_vec();
    match chunks {
        None => {
            out.extend(format!("Content-Length: {}\r\n\r\n", body.len()).into_bytes());
            out.extend_from_slice(body);
        }
        Some(sizes) => {
            out.extend(b"Transfer-Encoding: chunked\r\n\r\n");
            let mut rest = body;
            let mut sizes = sizes.iter().cycle();
            while !rest.is_empty() {
                let n = (*sizes.next().unwrap_or(&rest.len())).clamp(1, rest.len());
                out.extend(format!("{n:x}\r\n").into_bytes());
                out.extend_from_slice(&rest[..n]);
                out.extend(b"\r\n");
                rest = &rest[n..];
            }
            out.extend(b"0\r\n\r\n");
        }
    }
    out
}

#[test]
fn json_bodies_arrive_as_sent_in_any_framing() {
    let server = Running::start();
    let framing = prop_oneof![Just(None), vec(1usize..40, 1..5).prop_map(Some)];
    let content_type = prop_oneof![Just("application/json"), Just("application/json; charset=utf-8"), Just("Application/JSON")];
    check(
        "http-echo",
        300,
        (json_value().prop_map(without_floats), framing, content_type, any::<bool>()),
        |(value, framing, ct, expect)| {
            let expect = if expect { "Expect: 100-continue\r\n" } else { "" };
            let head = format!("POST /echo?api-version={V} HTTP/1.1\r\nHost: x\r\nContent-Type: {ct}\r\n{expect}");
            let sent = value.to_string();
            let r = server.send(&framed(&head, sent.as_bytes(), &framing))?;
            prop_assert_eq!(r.status, 200, "{}", r.body_text());
            let back: Value = serde_json::from_slice(&r.body).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(back, value);
            Ok(())
        },
    );
}

/// `v` with its floats made integers: serde_json's float parsing is not exact to the last digit
/// (the service parses and writes again), and that is not what this tests.
fn without_floats(v: Value) -> Value {
    match v {
        Value::Number(n) if n.is_f64() => Value::from(n.as_f64().unwrap_or_default() as i64),
        Value::Array(a) => Value::Array(a.into_iter().map(without_floats).collect()),
        Value::Object(o) => Value::Object(o.into_iter().map(|(k, v)| (k, without_floats(v))).collect()),
        other => other,
    }
}

/// `%XX` for every byte but unreserved ones (or for all of them).
fn encode(bytes: &[u8], all: bool) -> String {
    bytes
        .iter()
        .map(|&b| {
            if !all && (b.is_ascii_alphanumeric() || b"-._~".contains(&b)) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[test]
fn path_segments_arrive_percent_decoded() {
    let server = Running::start();
    check("http-path", 300, (vec(any::<u8>(), 1..60), any::<bool>()), |(bytes, all)| {
        let segment = encode(&bytes, all);
        let r = server.send(format!("GET /item/{segment}?api-version={V} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())?;
        match String::from_utf8(bytes) {
            // A segment that decodes to UTF-8 arrives as that text.
            Ok(text) => {
                prop_assert_eq!(r.status, 200, "{}", r.body_text());
                let captures: Vec<String> = serde_json::from_slice(&r.body).unwrap();
                prop_assert_eq!(captures, vec![text]);
            }
            // Any other is refused, not folded into U+FFFD (which would make ids collide).
            Err(_) => {
                prop_assert_eq!(r.status, 400, "{}", r.body_text());
                prop_assert!(r.body_text().contains("is not UTF-8 once percent-decoded"), "{}", r.body_text());
            }
        }
        Ok(())
    });
}

#[test]
fn query_parameters_arrive_form_decoded_last_one_winning() {
    let server = Running::start();
    let pairs = vec((prop_oneof![Just("a".to_owned()), text(6)], text(10)), 0..6);
    check("http-query", 300, (pairs, any::<bool>()), |(pairs, plus)| {
        let mut query = vec![format!("api-version={V}")];
        let mut expected = BTreeMap::new();
        for (name, value) in &pairs {
            if name.is_empty() || name == "api-version" {
                continue;
            }
            // A space may be written `+` (form encoding) or `%20`.
            let v = if plus { encode(value.as_bytes(), false).replace("%20", "+") } else { encode(value.as_bytes(), false) };
            query.push(format!("{}={v}", encode(name.as_bytes(), false)));
            expected.insert(name.clone(), Value::String(value.clone()));
        }
        let r = server.send(format!("GET /whoami?{} HTTP/1.1\r\nHost: x\r\n\r\n", query.join("&")).as_bytes())?;
        prop_assert_eq!(r.status, 200, "{}", r.body_text());
        let who: Value = serde_json::from_slice(&r.body).unwrap();
        prop_assert_eq!(&who["query"], &Value::Object(expected.into_iter().collect()));
        prop_assert_eq!(&who["api_version"], V);
        Ok(())
    });
}

fn test_api() -> Api {
    let echo = body_bytes(json_value());
    Api {
        api_versions: &["2020-09-01", "2021-05-01"],
        ids: gen::odd_string(80),
        routes: vec![
            Route::bodiless("GET", "/whoami"),
            Route::new("POST", "/echo", echo.clone()),
            Route::new("PUT", "/echo", echo),
            Route::bodiless("GET", "/item/{}"),
            Route::new(
                "POST",
                "/item/{}",
                text(40).prop_map(|t| Some(b64(t.as_bytes()).into_bytes())).boxed(),
            ),
        ],
    }
}

fn hostile(target: &str, knobs: Knobs) {
    let server = Running::start();
    check(target, 500, gen::case(&test_api(), knobs), |case| {
        let wait = if case.complete { ANSWER } else { Duration::from_millis(100) };
        match exchange(&server.path, &case.bytes, wait) {
            Ok(Outcome::Answered(r)) => judge(r.status, &r.body)
                .map_err(|p| TestCaseError::fail(format!("{p:?}: {} {:?} {}", r.status, r.head, r.body_text()))),
            Ok(other) if case.complete => Err(TestCaseError::fail(format!("complete request not answered: {other:?}"))),
            Ok(_) => Ok(()),
            Err(e) => Err(TestCaseError::fail(format!("cannot connect: {e}"))),
        }
    });
}

#[test]
fn damaged_requests_get_a_4xx_with_a_message() {
    hostile("http-hostile", Knobs::default());
}

#[test]
fn malformed_http_gets_a_4xx_with_a_message() {
    hostile("http-malformed", Knobs { malformed_http: true });
}
