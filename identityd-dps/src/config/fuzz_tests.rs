//! identityd's config reader on generated files: every key of upstream's shape and ours, values
//! of the right type or not, in range or not. Nothing panics; what validates can be run (its
//! durations fit a clock); a registration ID is taken exactly when DPS would take it.

use std::time::{Instant, SystemTime};

use proptest::collection::vec;
use proptest::prelude::*;
use testkit::fuzz::check;
use testkit::fuzz::gen::odd_string;
use testkit::fuzz::toml_gen::{int, maybe, set, string, typed};
use toml::{Table, Value};

use super::parse;

fn registration_id() -> BoxedStrategy<Value> {
    prop_oneof![
        3 => "[a-z0-9._:-]{1,128}".prop_map(Value::String),
        1 => "[A-Za-z0-9 ._:/-]{0,140}".prop_map(Value::String),
        1 => string(),
    ]
    .boxed()
}

fn settings() -> BoxedStrategy<Table> {
    let endpoint = prop_oneof![
        Just("https://global.azure-devices-provisioning.net/".to_owned()),
        Just("https://127.0.0.1:8443/x".to_owned()),
        Just("http://x/".to_owned()),
        Just("https://".to_owned()),
        Just("https://a@b/".to_owned()),
        odd_string(30),
    ]
    .prop_map(Value::String)
    .boxed();
    let socket = prop_oneof![
        Just("unix:///run/x.sock".to_owned()),
        Just("fd://3".to_owned()),
        Just("fd://name".to_owned()),
        odd_string(30),
    ]
    .prop_map(Value::String)
    .boxed();
    let principal = (int(), string(), maybe(vec(select_idtype(), 0..3).prop_map(Value::Array).boxed()))
        .prop_map(|(uid, name, idtype)| {
            let mut t = Table::new();
            t.insert("uid".into(), uid);
            t.insert("name".into(), name);
            if let Some(i) = idtype {
                t.insert("idtype".into(), i);
            }
            Value::Table(t)
        });
    let fields = (
        (
            maybe(typed(string())),
            maybe(typed(string())),
            maybe(typed(int())),
            maybe(typed(int())),
            maybe(typed(int())),
            maybe(typed(prop_oneof![Just("dps"), Just("manual")].prop_map(|s| Value::String(s.into())).boxed())),
        ),
        (
            maybe(typed(endpoint)),
            maybe(typed(string())),
            maybe(typed(prop_oneof![Just("tpm"), Just("x509")].prop_map(|s| Value::String(s.into())).boxed())),
            maybe(typed(registration_id())),
            maybe(typed(prop_oneof![Just("file:///etc/p.json".to_owned()), odd_string(20)].prop_map(Value::String).boxed())),
        ),
        (
            maybe(typed(socket.clone())),
            maybe(typed(socket)),
            maybe(vec(principal, 0..3).prop_map(Value::Array).boxed()),
            maybe(typed(prop_oneof![Just("/etc/ca.pem".to_owned()), odd_string(20)].prop_map(Value::String).boxed())),
            maybe(typed(any::<bool>().prop_map(Value::Boolean).boxed())),
        ),
        (maybe(typed(int())), maybe(typed(int())), maybe(typed(int()))),
    );
    fields
        .prop_map(|((host, home, timeout, retries, max_requests, source), (ep, scope, method, reg, payload), (keyd, ident, principals, bundle, roots), (lifetime, prov, backoff))| {
            let mut t: Table = toml::from_str(super::MINIMAL).unwrap();
            set(&mut t, &["hostname"], host);
            set(&mut t, &["homedir"], home);
            set(&mut t, &["cloud_timeout_sec"], timeout);
            set(&mut t, &["cloud_retries"], retries);
            set(&mut t, &["max_requests"], max_requests);
            set(&mut t, &["provisioning", "source"], source);
            set(&mut t, &["provisioning", "global_endpoint"], ep);
            set(&mut t, &["provisioning", "scope_id"], scope);
            set(&mut t, &["provisioning", "attestation", "method"], method);
            set(&mut t, &["provisioning", "attestation", "registration_id"], reg);
            set(&mut t, &["provisioning", "payload", "uri"], payload);
            set(&mut t, &["endpoints", "aziot_keyd"], keyd);
            set(&mut t, &["endpoints", "aziot_identityd"], ident);
            set(&mut t, &["principal"], principals);
            set(&mut t, &["cloud", "trust_bundle"], bundle);
            set(&mut t, &["cloud", "system_roots"], roots);
            set(&mut t, &["cloud", "sas_token_lifetime_sec"], lifetime);
            set(&mut t, &["cloud", "provisioning_timeout_sec"], prov);
            set(&mut t, &["cloud", "max_backoff_sec"], backoff);
            t
        })
        .boxed()
}

fn select_idtype() -> BoxedStrategy<Value> {
    prop_oneof![
        Just("device"),
        Just("module"),
        Just("local"),
        Just("other"),
    ]
    .prop_map(|s| Value::String(s.into()))
    .boxed()
}

/// DPS's rule for registration IDs.
fn dps_takes(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-._:".contains(c))
}

#[test]
fn settings_validate_into_a_config_that_runs_or_name_what_is_wrong() {
    check("identityd-config", 400, settings(), |table| {
        let text = toml::to_string(&table).unwrap();
        let parsed = parse(&text);
        if let Ok(c) = &parsed {
            let now = Instant::now();
            for (key, d) in [
                ("cloud_timeout_sec", c.cloud_timeout),
                ("cloud.provisioning_timeout_sec", c.cloud.provisioning_timeout()),
                ("cloud.max_backoff_sec", c.cloud.max_backoff()),
                ("cloud.sas_token_lifetime_sec", c.cloud.token_lifetime()),
            ] {
                prop_assert!(now.checked_add(d).is_some(), "{key} = {d:?} validates but overflows a deadline");
                prop_assert!(SystemTime::now().checked_add(d).is_some(), "{key} = {d:?} overflows the clock");
            }
        }
        // With everything else as in MINIMAL, a registration ID is taken iff DPS takes it.
        let reg = table
            .get("provisioning")
            .and_then(|p| p.get("attestation"))
            .and_then(|a| a.get("registration_id"));
        if let Some(Value::String(id)) = reg {
            let mut alone: Table = toml::from_str(super::MINIMAL).unwrap();
            set(&mut alone, &["provisioning", "attestation", "registration_id"], Some(Value::String(id.clone())));
            let r = parse(&toml::to_string(&alone).unwrap());
            prop_assert_eq!(r.is_ok(), dps_takes(id), "{:?}: {:?}", id, r.err());
        }
        if let Err(e) = &parsed {
            prop_assert!(!e.trim().is_empty());
        }
        Ok(())
    });
}

#[test]
fn every_duration_that_validates_fits_a_deadline() {
    let keys = prop_oneof![
        Just(&["cloud_timeout_sec"][..]),
        Just(&["cloud", "provisioning_timeout_sec"][..]),
        Just(&["cloud", "max_backoff_sec"][..]),
        Just(&["cloud", "sas_token_lifetime_sec"][..]),
    ];
    let values = prop_oneof![0i64..1_000_000, any::<i64>(), Just(i64::MAX)];
    check("identityd-config-durations", 500, (keys, values), |(key, value)| {
        let mut t: Table = toml::from_str(super::MINIMAL).unwrap();
        set(&mut t, key, Some(Value::Integer(value)));
        if let Ok(c) = parse(&toml::to_string(&t).unwrap()) {
            for d in [
                c.cloud_timeout,
                c.cloud.provisioning_timeout(),
                c.cloud.max_backoff(),
                c.cloud.token_lifetime(),
            ] {
                prop_assert!(
                    Instant::now().checked_add(d).is_some() && SystemTime::now().checked_add(d).is_some(),
                    "{} = {value} validates, but {d:?} from now overflows the clock",
                    key.join(".")
                );
            }
        }
        Ok(())
    });
}
