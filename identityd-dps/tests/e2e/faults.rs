//! A cloud that throttles, fails and drops connections, and a registration that outlasts its
//! tokens: provisioning still completes, honouring Retry-After, and no expired token is sent.

use std::time::{Duration, Instant};

use crate::fixture::{Env, Options};

const PROVISION: Duration = Duration::from_secs(90);

#[test]
fn throttling_server_errors_and_dropped_connections_are_retried() {
    let options = Options {
        emulator_args: [
            "--fault=dps/register=429,count=1,retry_after=3",
            "--fault=dps/register=drop,count=1",
            "--fault=dps/operations=503,count=2",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect(),
        ..Options::enrolled()
    };
    let started = Instant::now();
    let env = Env::start(options);
    env.wait_provisioned(PROVISION);
    let elapsed = started.elapsed();
    let faults = env.faults();
    for rule in faults.as_array().unwrap() {
        assert_eq!(rule["remaining"], 0, "every fault fired: {faults}");
    }
    // The 429 asked for 3 s: the retry waited for it.
    assert!(elapsed >= Duration::from_secs(3), "{elapsed:?}");
    let log = env.identityd_log();
    assert!(
        log.contains("429") && log.contains("retrying in 3.0 s"),
        "{log}"
    );
    assert!(log.contains("503"), "{log}");
}

#[test]
fn polling_that_outlasts_the_token_lifetime_never_sends_an_expired_token() {
    // Tokens live 4 s; the registration stays "assigning" for 12 s. A token reused across polls
    // (as upstream does) would be refused with 401 by the emulator.
    let options = Options {
        emulator_args: vec!["--assigning-ms=12000".into()],
        cloud: "sas_token_lifetime_sec = 4".into(),
        ..Options::enrolled()
    };
    let env = Env::start(options);
    env.wait_provisioned(PROVISION);
    let emulator = env.emulator_log();
    assert!(!emulator.contains("expired"), "{emulator}");
    let log = env.identityd_log();
    assert!(
        !log.contains("rejected the SAS token") && !log.contains("provisioning failed"),
        "{log}"
    );
    assert_eq!(log.matches("DPS assigned").count(), 1, "{log}");
}

#[test]
fn a_registration_that_cannot_complete_gives_up_within_its_bound_with_a_clear_error() {
    let options = Options {
        emulator_args: vec!["--fault=dps/operations=503".into()],
        cloud: "provisioning_timeout_sec = 4".into(),
        ..Options::enrolled()
    };
    let env = Env::start(options);
    env.wait_log("did not complete within 4s", 1, Duration::from_secs(30));
    let r = env.identityd(
        "POST",
        "/identities/device",
        Some(serde_json::json!({"type": "aziot"})),
    );
    assert_eq!(r.status, 503);
    assert!(
        r.message().contains("did not complete within"),
        "{}",
        r.message()
    );
    // Once DPS recovers, the retried registration succeeds.
    env.clear_faults();
    env.wait_provisioned(PROVISION);
}

#[test]
fn the_api_answers_at_once_while_dps_is_slow() {
    let options = Options {
        emulator_args: vec!["--fault=dps/register=slow,count=1,delay_ms=5000".into()],
        ..Options::enrolled()
    };
    let env = Env::start(options);
    for (method, path) in [
        ("GET", "/trust-bundle"),
        ("GET", "/identities/provisioning"),
        ("GET", "/identities/identity"),
    ] {
        let started = Instant::now();
        let r = env.identityd(method, path, None);
        let took = started.elapsed();
        assert!(
            took < Duration::from_millis(500),
            "{method} {path} took {took:?}"
        );
        assert!(
            r.status == 200 || r.status == 503,
            "{method} {path}: {}",
            r.status
        );
    }
    let r = env.identityd(
        "POST",
        "/identities/device",
        Some(serde_json::json!({"type": "aziot"})),
    );
    assert_eq!(r.status, 503);
    assert!(r.message().contains("being provisioned"), "{}", r.message());
    env.wait_provisioned(PROVISION);
}
