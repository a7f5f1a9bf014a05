//! The Identity Service API as the fuzz generators see it: every route, its JSON (mutated),
//! the `type` parameter and module ids. Shared by the in-process suite (`src/api/fuzz_tests.rs`)
//! and the daemon suite (`fuzz.rs`).

use proptest::prelude::*;
use proptest::sample::select;
use serde_json::{json, Value};
use testkit::fuzz::gen::{body_bytes, json_value, mutate_json, odd_string, Api, Route};

pub const VERSIONS: &[&str] = &["2020-09-01", "2021-12-01", "2022-08-01"];
/// Modules the fuzzer creates and deletes freely.
pub const VICTIM_MODULES: &[&str] = &["fz-m1", "fz-m2", "$edgeAgent", "fz-m3"];
/// A module made before a run; the fuzzer never names it.
pub const WITNESS_MODULE: &str = "fuzz-witness-module";

pub fn module_ids() -> BoxedStrategy<String> {
    prop_oneof![
        5 => select(VICTIM_MODULES).prop_map(str::to_owned),
        3 => odd_string(200),
    ]
    .boxed()
}

fn body(template: BoxedStrategy<Value>) -> BoxedStrategy<Option<Vec<u8>>> {
    body_bytes(mutate_json(template))
}

pub fn identityd_api() -> Api {
    let id_type = prop_oneof![
        6 => Just(Value::String("aziot".into())),
        1 => Just(Value::String("local".into())),
        1 => Just(Value::Null),
        1 => odd_string(12).prop_map(Value::String),
    ];
    let device = id_type.clone().prop_map(|t| json!({ "type": t })).boxed();
    let create = (id_type.clone(), module_ids(), prop_oneof![4 => Just(None), 1 => json_value().prop_map(Some)])
        .prop_map(|(t, id, local)| {
            let mut v = json!({ "type": t, "moduleId": id });
            if let Some(l) = local {
                v["localIdOpts"] = l;
            }
            v
        })
        .boxed();
    let update = (id_type, module_ids())
        .prop_map(|(t, id)| json!({ "type": t, "moduleId": id }))
        .boxed();
    const AZIOT: &[(&str, &str)] = &[("type", "aziot")];
    Api {
        api_versions: VERSIONS,
        ids: module_ids(),
        routes: vec![
            Route::bodiless("GET", "/identities/identity"),
            Route::new("POST", "/identities/device", body(device.clone())),
            Route::bodiless("GET", "/identities/provisioning"),
            Route::new("POST", "/identities/device/reprovision", body(device)),
            Route::bodiless("GET", "/identities/modules").with_query(AZIOT),
            Route::new("POST", "/identities/modules", body(create)),
            Route::bodiless("GET", "/identities/modules/{}").with_query(AZIOT),
            Route::new("PUT", "/identities/modules/{}", body(update)).with_query(AZIOT),
            Route::bodiless("DELETE", "/identities/modules/{}").with_query(AZIOT),
            Route::bodiless("GET", "/trust-bundle"),
        ],
    }
}

/// Whether `status` is an answer identityd-dps may give to a request it cannot serve yet: a 503
/// that says why (not provisioned, the hub or the Keys Service unreachable). Any other 5xx is a
/// failure.
pub fn unavailable(status: u16, body: &[u8]) -> bool {
    status == 503
        && serde_json::from_slice::<Value>(body)
            .ok()
            .and_then(|v| v.get("message")?.as_str().map(|m| !m.is_empty()))
            .unwrap_or(false)
}
