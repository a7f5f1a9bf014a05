//! identityd-dps behind an HTTPS proxy (a real tinyproxy on loopback), as gateways in factories
//! sit: `https_proxy` with credentials; DPS registration and the hub's module calls go through
//! CONNECT tunnels with TLS inside; a proxy that wants other credentials is named in the error.

use std::time::Duration;

use serde_json::json;
use testkit::Tinyproxy;

use crate::fixture::{Env, Options};

fn behind(proxy_url: &str) -> Options {
    Options {
        identityd_env: vec![("https_proxy".into(), proxy_url.into())],
        ..Options::enrolled()
    }
}

#[test]
fn provisioning_and_module_identities_go_through_the_proxy_with_its_credentials() {
    let proxy = Tinyproxy::with_credentials("gateway", "pa-ss_1");
    let env = Env::start(behind(&proxy.url()));
    let device = env.wait_provisioned(Duration::from_secs(60));
    let hub = device["hubName"].as_str().unwrap().to_owned();
    let created = env.identityd("POST", "/identities/modules", Some(json!({"type": "aziot", "moduleId": "edgeAgent2"})));
    assert_eq!(created.status, 200, "{}", env.identityd_log());

    let dps = env.ready["dps_endpoint"].as_str().unwrap().trim_start_matches("https://").to_owned();
    assert!(proxy.tunnels_to(&dps) >= 2, "DPS register and poll through the proxy:\n{}", proxy.log());
    assert!(proxy.tunnels_to(&hub) >= 1, "hub calls through the proxy:\n{}", proxy.log());
    let log = env.identityd_log();
    let shown = format!("http://gateway:***@127.0.0.1:{}", proxy.port());
    assert!(log.contains(&format!("using the HTTPS proxy {shown} (from https_proxy)")), "{log}");
    assert!(!log.contains("pa-ss_1"), "the proxy password is in the log");
}

#[test]
fn a_proxy_that_wants_other_credentials_is_named_in_the_provisioning_error() {
    let proxy = Tinyproxy::with_credentials("gateway", "right");
    let wrong = format!("http://gateway:wrong@127.0.0.1:{}", proxy.port());
    let env = Env::start(behind(&wrong));
    let named = format!("the HTTPS proxy http://gateway:***@127.0.0.1:{} refused to open a tunnel", proxy.port());
    env.wait_log(&named, 1, Duration::from_secs(30));
    let log = env.identityd_log();
    assert!(log.contains("does not accept the user name and password in https_proxy"), "{log}");
    assert!(!log.contains("wrong"), "the proxy password is in the log");
    let r = env.identityd("POST", "/identities/device", Some(json!({"type": "aziot"})));
    assert_eq!(r.status, 503, "not provisioned: {}", r.message());
}

#[test]
fn hosts_in_no_proxy_are_reached_directly() {
    // The proxy URL names a port where nothing listens: only a direct connection can work.
    let dead = format!("http://127.0.0.1:{}", testkit::free_port());
    let options = Options {
        identityd_env: vec![("https_proxy".into(), dead), ("no_proxy".into(), "127.0.0.1".into())],
        ..Options::enrolled()
    };
    let env = Env::start(options);
    env.wait_provisioned(Duration::from_secs(60));
}
