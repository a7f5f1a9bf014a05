//! Where provisioning stands, as an admin reads it (`GET /identities/provisioning/status` and
//! the status file in the homedir): the live problem of a registration under way, its cause and
//! endpoint, and when the next DPS request is; and DPS's `Retry-After` honoured across
//! registrations, so no gap between two DPS requests is shorter than what DPS asked for.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::fixture::{Env, Options};

fn status(env: &Env) -> Value {
    let r = env.identityd("GET", "/identities/provisioning/status", None);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    r.json()
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Milliseconds since the epoch of an emulator log line's `[2026-12-06T20:57:32.960Z ...`.
fn line_ms(line: &str) -> Option<u64> {
    let stamp = line.strip_prefix('[')?.split(' ').next()?;
    let (date, time) = stamp.trim_end_matches('Z').split_once('T')?;
    let d: Vec<i64> = date.split('-').map(|p| p.parse().ok()).collect::<Option<_>>()?;
    let (hms, ms) = time.split_once('.')?;
    let t: Vec<u64> = hms.split(':').map(|p| p.parse().ok()).collect::<Option<_>>()?;
    // Days from the civil date (Howard Hinnant's algorithm).
    let (y, m) = if d[1] <= 2 { (d[0] - 1, d[1] + 9) } else { (d[0], d[1] - 3) };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + d[2] - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = (era * 146_097 + doe - 719_468) as u64;
    Some(((days * 86_400 + t[0] * 3600 + t[1] * 60 + t[2]) * 1000) + ms.parse::<u64>().ok()?)
}

#[test]
fn retry_after_bounds_every_gap_between_dps_requests_even_across_registrations() {
    // DPS throttles every register with Retry-After 3 s; a registration may last 5 s, so each
    // one fits one wait and ends when the next would pass its bound.
    let options = Options {
        emulator_args: vec!["--fault=dps/register=429,retry_after=3".into()],
        cloud: "provisioning_timeout_sec = 5".into(),
        ..Options::enrolled()
    };
    let env = Env::start(options);
    env.wait_log("more than is left of this registration", 2, Duration::from_secs(60));

    let report = status(&env);
    assert!(report["state"] == "registering" || report["state"] == "waiting", "{report}");
    assert_eq!(report["last_error"]["cause"], "dps_throttled", "{report}");
    assert_eq!(report["last_error"]["endpoint"], env.ready["dps_endpoint"].as_str().unwrap().trim_end_matches('/'), "{report}");
    let next = report["next_attempt_ms"].as_u64().expect("a next try while throttled");
    assert!(next + 500 >= now_ms() && next <= now_ms() + 3_500, "{report}");

    let log = env.emulator_log();
    let requests: Vec<u64> = log
        .lines()
        .filter(|l| l.contains("dps/register") && l.contains("429"))
        .filter_map(line_ms)
        .collect();
    assert!(requests.len() >= 4, "{log}");
    let gaps: Vec<u64> = requests.windows(2).map(|w| w[1] - w[0]).collect();
    // 3 s asked; a little timer slack below it at most.
    assert!(gaps.iter().all(|&g| g >= 2_900), "gaps between DPS requests {gaps:?} ms:\n{log}");
    let identityd = env.identityd_log();
    assert!(!identityd.contains("did not complete within"), "{identityd}");
}

#[test]
fn an_unreachable_dps_is_named_within_seconds_with_the_next_try() {
    // A DPS endpoint where nothing listens: the registration retries the connection for up to
    // provisioning_timeout_sec (600 s by default); the status says so from the first failure.
    let options = Options {
        identityd_top: String::new(),
        ..Options::enrolled()
    };
    let mut env = Env::start(options);
    env.stop_identityd();
    let config = std::fs::read_to_string(env.path("identityd.toml")).unwrap();
    let dps = env.ready["dps_endpoint"].as_str().unwrap().to_owned();
    std::fs::write(
        env.path("identityd.toml"),
        config.replace(&dps, "https://127.0.0.1:9/"),
    )
    .unwrap();
    let started = Instant::now();
    env.start_identityd_keeping_config();
    let report = loop {
        let report = status(&env);
        if report["last_error"].is_object() {
            break report;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "{report}");
        std::thread::sleep(Duration::from_millis(100));
    };
    let took = started.elapsed();
    assert_eq!(report["last_error"]["cause"], "dps_unreachable", "{report}");
    assert_eq!(report["last_error"]["endpoint"], "https://127.0.0.1:9", "{report}");
    let message = report["last_error"]["message"].as_str().unwrap();
    assert!(message.contains("127.0.0.1:9") && message.contains("refused"), "{message}");
    assert!(report["next_attempt_ms"].as_u64().is_some(), "{report}");
    assert_eq!(report["config"]["global_endpoint"], "https://127.0.0.1:9/", "{report}");

    // The file the CLI reads when the daemon is down says the same.
    let file: Value = serde_json::from_slice(
        &std::fs::read(env.homedir().join("provisioning_status.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(file["last_error"]["cause"], "dps_unreachable", "{file}");

    // A caller of the identity API learns the same instead of "retry in a few seconds".
    let r = env.identityd("POST", "/identities/device", Some(serde_json::json!({"type": "aziot"})));
    assert_eq!(r.status, 503);
    assert!(r.message().contains("refused"), "{}", r.message());
    eprintln!("first DPS error in the status after {took:?}");

    assert!(env.stop_identityd());
    let file: Value = serde_json::from_slice(
        &std::fs::read(env.homedir().join("provisioning_status.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(file["state"], "stopped", "{file}");
}
