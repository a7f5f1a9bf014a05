//! Fault injection does what it says: from the command line and from the admin API, per
//! endpoint, for the next N requests or with a seeded probability — 429 with Retry-After in the
//! service's error shape, 500/503, slow answers, and dropped connections.

use std::time::{Duration, Instant};

use cloud_http::{Method, StatusCode};
use serde_json::{json, Value};

use crate::fixture::{json_of, Emulator};

/// A cheap request that reaches `dps/service` (answers 404 when nothing is injected).
async fn service_get(emulator: &Emulator) -> Result<cloud_http::Response, cloud_http::Error> {
    let url = format!(
        "{}/enrollments/nobody?api-version=2021-10-01",
        emulator.dps()
    );
    emulator
        .client()
        .request(
            Method::GET,
            &url,
            &[("Authorization", &emulator.service_token())],
            Vec::new(),
        )
        .await
}

/// A request to hub 0 (401 without a token when nothing is injected).
async fn hub_get(emulator: &Emulator) -> Result<cloud_http::Response, cloud_http::Error> {
    let url = format!(
        "https://{}/devices/x?api-version=2017-11-08-preview",
        emulator.hubs()[0]
    );
    emulator
        .client()
        .request(Method::GET, &url, &[], Vec::new())
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn command_line_throttling_hits_the_next_n_requests_of_one_endpoint() {
    let emulator = Emulator::start(&["--fault", "dps/service=429,count=2,retry_after=7"]);
    // Other endpoints are untouched.
    assert_eq!(
        hub_get(&emulator).await.unwrap().status,
        StatusCode::UNAUTHORIZED
    );
    for _ in 0..2 {
        let r = service_get(&emulator).await.unwrap();
        assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(r.header("retry-after"), Some("7"));
        assert_eq!(json_of(&r)["errorCode"], 429_001, "DPS error shape");
    }
    assert_eq!(
        service_get(&emulator).await.unwrap().status,
        StatusCode::NOT_FOUND,
        "the rule ran out"
    );
    assert!(
        emulator.log().contains("[fault dps/service=429"),
        "the log line names the fault"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_api_injects_errors_delays_and_drops_per_endpoint() {
    let emulator = Emulator::start(&[]);

    let r = emulator
        .client()
        .request(
            Method::GET,
            &format!(
                "{}/faults",
                emulator.ready["admin"]["endpoint"].as_str().unwrap()
            ),
            &[],
            Vec::new(),
        )
        .await
        .unwrap();
    assert_eq!(
        r.status,
        StatusCode::UNAUTHORIZED,
        "admin API needs the token"
    );
    let r = emulator
        .admin(
            Method::POST,
            "/faults",
            Some(json!({"spec": "hub=nonsense"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);

    // 503 on every hub, twice, in IoT Hub's error shape.
    let r = emulator
        .admin(
            Method::POST,
            "/faults",
            Some(json!({"spec": "hub=503,count=2"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    for _ in 0..2 {
        let r = hub_get(&emulator).await.unwrap();
        assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(r.header("iothub-errorcode"), Some("ServiceUnavailable"));
    }
    assert_eq!(
        service_get(&emulator).await.unwrap().status,
        StatusCode::NOT_FOUND,
        "DPS was not affected"
    );
    assert_eq!(
        hub_get(&emulator).await.unwrap().status,
        StatusCode::UNAUTHORIZED
    );

    // 500 on one hub only.
    let hub1 = emulator.hubs()[1].clone();
    emulator
        .admin(
            Method::POST,
            "/faults",
            Some(json!({"spec": format!("hub/{hub1}=500,count=1")})),
        )
        .await;
    assert_eq!(
        hub_get(&emulator).await.unwrap().status,
        StatusCode::UNAUTHORIZED,
        "hub 0 untouched"
    );
    let url = format!("https://{hub1}/devices/x?api-version=2017-11-08-preview");
    let r = emulator
        .client()
        .request(Method::GET, &url, &[], Vec::new())
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR);

    // Slow: answered, but only after the delay.
    emulator
        .admin(
            Method::POST,
            "/faults",
            Some(json!({"spec": "dps=slow,delay_ms=800,count=1"})),
        )
        .await;
    let started = Instant::now();
    assert_eq!(
        service_get(&emulator).await.unwrap().status,
        StatusCode::NOT_FOUND
    );
    assert!(
        started.elapsed() >= Duration::from_millis(800),
        "{:?}",
        started.elapsed()
    );

    // Drop: the connection closes without an answer; the client sees a transient error.
    emulator
        .admin(
            Method::POST,
            "/faults",
            Some(json!({"spec": "dps/service=drop,count=1"})),
        )
        .await;
    let err = service_get(&emulator)
        .await
        .expect_err("dropped connection");
    assert!(err.is_transient(), "{err}");
    assert_eq!(
        service_get(&emulator).await.unwrap().status,
        StatusCode::NOT_FOUND
    );

    // The list shows what fired; DELETE clears.
    let listed = json_of(&emulator.admin(Method::GET, "/faults", None).await);
    let fired: Vec<u64> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["fired"].as_u64().unwrap())
        .collect();
    assert_eq!(fired, [2, 1, 1, 1]);
    assert_eq!(
        emulator.admin(Method::DELETE, "/faults", None).await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        json_of(&emulator.admin(Method::GET, "/faults", None).await),
        json!([])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeded_probability_gives_the_same_pattern_every_time() {
    let emulator = Emulator::start(&[]);
    let mut patterns: Vec<Vec<bool>> = Vec::new();
    for _ in 0..2 {
        let r = emulator
            .admin(
                Method::POST,
                "/faults",
                Some(json!({"spec": "dps/service=500,prob=0.5,seed=1234"})),
            )
            .await;
        let id = json_of(&r)["id"].as_u64().unwrap();
        let mut pattern = Vec::new();
        for _ in 0..24 {
            let status = service_get(&emulator).await.unwrap().status;
            assert!(
                status == StatusCode::INTERNAL_SERVER_ERROR || status == StatusCode::NOT_FOUND,
                "{status}"
            );
            pattern.push(status == StatusCode::INTERNAL_SERVER_ERROR);
        }
        emulator
            .admin(Method::DELETE, &format!("/faults/{id}"), None)
            .await;
        patterns.push(pattern);
    }
    assert_eq!(patterns[0], patterns[1], "same seed, same faults");
    let hits = patterns[0].iter().filter(|h| **h).count();
    assert!(
        (3..=21).contains(&hits),
        "about half of 24 requests fail: {hits}"
    );
    let _: Value = json!(hits);
}
