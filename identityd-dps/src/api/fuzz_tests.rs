//! The Identity Service routes in-process on generated requests (every route, mutated JSON,
//! `type`, module ids, api-versions; callers as root, the daemon principal, a module principal
//! and an unknown uid), before provisioning and with the Keys and TPM Services absent: every
//! answer is a success, a 4xx with a message, or a 503 that says why; nothing panics or hangs.

use std::sync::Arc;

use aziot_http::{Request, Service};
use proptest::sample::select;
use proptest::test_runner::TestCaseError;
use testkit::fuzz::gen::{self, Knobs};
use testkit::fuzz::{check, judge, Problem};

use super::Api;
use crate::app::{App, Trigger};

#[path = "../../tests/e2e/fuzz_api.rs"]
#[allow(dead_code)]
mod fuzz_api;

fn api(rt: &tokio::runtime::Runtime) -> Api {
    let config = crate::config::parse(&format!(
        "{}\n[endpoints]\naziot_keyd = \"unix:///nonexistent/keyd.sock\"\naziot_tpmd = \"unix:///nonexistent/tpmd.sock\"\n\
         [[principal]]\nuid = 1000\nname = \"aziot-edged\"\n\
         [[principal]]\nuid = 1001\nname = \"fz-m1\"\nidtype = [\"module\"]\n",
        crate::config::MINIMAL
    ))
    .unwrap();
    let (app, mut triggers) = rt.block_on(async { App::new(config) }).unwrap();
    // The provisioning task's place: a reprovision is answered at once.
    rt.spawn(async move {
        while let Some(trigger) = triggers.recv().await {
            if let Trigger::Reprovision(done) = trigger {
                let _ = done.send(Err("not in this test".into()));
            }
        }
    });
    Api::new(Arc::clone(&app))
}

#[test]
fn every_route_answers_with_success_a_4xx_message_or_a_503_that_says_why() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let api = api(&rt);
    let routes = fuzz_api::identityd_api();
    let callers = select(vec![0u32, 1000, 1001, 4242]);
    check(
        "identityd-routes",
        600,
        (gen::spec(&routes, Knobs::default()), callers),
        |(spec, uid)| {
            let target = format!("{}{}", spec.path, spec.query);
            let Ok(mut req) = Request::from_wire(
                fuzz_api::VERSIONS,
                &spec.method,
                &target,
                spec.content_type(),
                spec.body.clone(),
            ) else {
                return Ok(());
            };
            req.uid = uid;
            let answer = rt.block_on(async {
                tokio::time::timeout(testkit::fuzz::HANG_LIMIT, api.handle(req)).await
            });
            let r = answer.map_err(|_| TestCaseError::fail("no answer in time"))?;
            let (status, body) = (r.status().as_u16(), r.body());
            match judge(status, body) {
                Err(Problem::ServerError) if fuzz_api::unavailable(status, body) => Ok(()),
                Err(p) => Err(TestCaseError::fail(format!(
                    "{p:?}: {status} {}",
                    String::from_utf8_lossy(body)
                ))),
                Ok(()) => Ok(()),
            }
        },
    );
}
