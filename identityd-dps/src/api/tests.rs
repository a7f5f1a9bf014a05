//! Route-level tests without a socket: authorization, `type` handling, api-version gating, and the
//! answers given while the device is not provisioned. The clients point at sockets that do not
//! exist, so any route that would reach a service answers fast with an error.

use std::sync::Arc;

use aziot_http::{Bytes, Method, Request, Service, StatusCode};

use super::Api;
use crate::app::App;
use crate::device::{Device, Status};

fn api(extra: &str) -> (Api, Arc<App>) {
    let config = crate::config::parse(&format!(
        "{extra}{}\n[endpoints]\naziot_keyd = \"unix:///nonexistent/keyd.sock\"\naziot_tpmd = \"unix:///nonexistent/tpmd.sock\"\n\
         [[principal]]\nuid = 1000\nname = \"aziot-edged\"\n\
         [[principal]]\nuid = 1001\nname = \"edgeAgent\"\nidtype = [\"module\"]\n",
        crate::config::MINIMAL.replace(
            "method = \"tpm\"",
            "method = \"tpm\"\nregistration_id = \"reg-1\""
        )
    ))
    .unwrap();
    let (app, _rx) = App::new(config).unwrap();
    (Api::new(Arc::clone(&app)), app)
}

fn request(
    method: Method,
    path_and_query: &str,
    version: &str,
    uid: u32,
    body: Option<&str>,
) -> Request {
    let (path, query) = path_and_query
        .split_once('?')
        .unwrap_or((path_and_query, ""));
    let mut r = Request::new(method, path, version);
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        r.query.insert(k.into(), v.into());
    }
    r.uid = uid;
    r.body = body.map(|b| Bytes::from(b.to_owned()));
    r
}

async fn call(api: &Api, r: Request) -> (StatusCode, serde_json::Value) {
    let response = api.handle(r).await;
    let body = if response.body().is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_slice(response.body()).unwrap()
    };
    (response.status(), body)
}

fn ready(app: &App) {
    app.set_status(Status::Ready {
        device: Device {
            hub_name: "hub.example".into(),
            gateway_host: "hub.example".into(),
            device_id: "dev1".into(),
        },
        generation: 1,
    });
}

#[tokio::test]
async fn device_identity_is_tpm_and_needs_authorization() {
    let (api, app) = api("");
    ready(&app);
    let (status, body) = call(
        &api,
        request(
            Method::POST,
            "/identities/device",
            "2020-09-01",
            1000,
            Some(r#"{"type":"aziot"}"#),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["spec"]["auth"]["type"], "tpm");
    assert_eq!(body["spec"]["deviceId"], "dev1");

    let (status, body) = call(
        &api,
        request(
            Method::POST,
            "/identities/device",
            "2020-09-01",
            1001,
            Some("{}"),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["message"], "authorization error");
    let (status, _) = call(
        &api,
        request(
            Method::POST,
            "/identities/device",
            "2020-09-01",
            4242,
            Some("{}"),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let (status, body) = call(
        &api,
        request(Method::POST, "/identities/device", "2020-09-01", 1000, None),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["message"], "missing request body");
}

#[tokio::test]
async fn callers_before_provisioning_get_a_503_that_says_why() {
    let (api, app) = api("");
    let (status, body) = call(
        &api,
        request(Method::GET, "/identities/identity", "2020-09-01", 0, None),
    )
    .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("being provisioned"),
        "{body}"
    );

    app.set_status(Status::Provisioning {
        attempt: 3,
        last_error: Some("DPS does not accept registration ID".into()),
    });
    let (status, body) = call(
        &api,
        request(
            Method::GET,
            "/identities/modules/m1?type=aziot",
            "2020-09-01",
            1000,
            None,
        ),
    )
    .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains("attempt 3") && message.contains("DPS does not accept"),
        "{message}"
    );
}

#[tokio::test]
async fn type_query_parameter_follows_upstream() {
    let (api, app) = api("");
    ready(&app);
    let (status, body) = call(
        &api,
        request(Method::GET, "/identities/modules", "2020-09-01", 1000, None),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        body["message"],
        "parameter \"type\" has an invalid value\ncaused by: missing parameter"
    );
    let (status, body) = call(
        &api,
        request(
            Method::GET,
            "/identities/modules?type=x509",
            "2020-09-01",
            1000,
            None,
        ),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body["message"]
        .as_str()
        .unwrap()
        .contains("invalid type: x509"));
    let (status, body) = call(
        &api,
        request(
            Method::GET,
            "/identities/modules/m1?type=local",
            "2020-09-01",
            1000,
            None,
        ),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("local identities"),
        "{body}"
    );
    let (status, _) = call(
        &api,
        request(
            Method::GET,
            "/identities/modules?type=local",
            "2020-09-01",
            1000,
            None,
        ),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "list accepts only aziot");
    let (status, body) = call(
        &api,
        request(
            Method::POST,
            "/identities/modules",
            "2020-09-01",
            1000,
            Some(r#"{"type":"local","moduleId":"m"}"#),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("local identities"),
        "{body}"
    );
}

#[tokio::test]
async fn host_processes_may_only_read_their_own_module() {
    let (api, app) = api("");
    ready(&app);
    for (method, path, body) in [
        (Method::GET, "/identities/modules/edgeHub?type=aziot", None),
        (Method::GET, "/identities/modules?type=aziot", None),
        (
            Method::POST,
            "/identities/modules",
            Some(r#"{"type":"aziot","moduleId":"x"}"#),
        ),
        (
            Method::PUT,
            "/identities/modules/edgeAgent?type=aziot",
            Some("{}"),
        ),
        (
            Method::DELETE,
            "/identities/modules/edgeAgent?type=aziot",
            None,
        ),
        (Method::POST, "/identities/device/reprovision", None),
    ] {
        let (status, _) = call(
            &api,
            request(method.clone(), path, "2021-12-01", 1001, body),
        )
        .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {path}");
    }
    let (status, body) = call(
        &api,
        request(Method::GET, "/trust-bundle", "2020-09-01", 4242, None),
    )
    .await;
    assert_eq!(
        (status, body),
        (StatusCode::OK, serde_json::json!({"certificate": ""}))
    );
}

#[tokio::test]
async fn provisioning_info_needs_2021_12_01_and_no_authorization() {
    let (api, _app) = api("");
    let (status, body) = call(
        &api,
        request(
            Method::GET,
            "/identities/provisioning",
            "2021-12-01",
            4242,
            None,
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body,
        serde_json::json!({"source":"dps","auth":"tpm","endpoint":"https://global.azure-devices-provisioning.net/",
            "scope_id":"0ne00000001","registration_id":"reg-1","payload":null})
    );
    let (status, _) = call(
        &api,
        request(
            Method::GET,
            "/identities/provisioning",
            "2020-09-01",
            0,
            None,
        ),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn unknown_paths_and_methods() {
    let (api, _app) = api("");
    let (status, body) = call(&api, request(Method::GET, "/nope", "2020-09-01", 0, None)).await;
    assert_eq!(
        (status, body["message"].as_str()),
        (StatusCode::NOT_FOUND, Some("not found"))
    );
    let (status, body) = call(
        &api,
        request(Method::DELETE, "/identities/device", "2020-09-01", 0, None),
    )
    .await;
    assert_eq!(
        (status, body["message"].as_str()),
        (StatusCode::BAD_REQUEST, Some("method not allowed"))
    );
    let (status, _) = call(
        &api,
        request(
            Method::PUT,
            "/identities/modules/m?type=aziot",
            "2020-09-01",
            0,
            None,
        ),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "PUT needs a JSON body"
    );
}

#[tokio::test]
async fn keys_service_down_is_a_503_naming_the_socket() {
    let (_, app) = api("prefer_module_identity_cache = true\n");
    ready(&app);
    // The module is in the backup, so no hub call is needed; the Keys Service is unreachable.
    let device = app.status().device().cloned().unwrap();
    let module: crate::hub::Module = serde_json::from_value(
        serde_json::json!({"moduleId": "m1", "deviceId": "dev1", "generationId": "g"}),
    )
    .unwrap();
    let homedir = tempfile::tempdir().unwrap();
    let backups = crate::state::ModuleBackups::new(homedir.path());
    backups.save(&device, &module);
    let mut config = app.config.clone();
    config.homedir = homedir.path().to_owned();
    let (app, _rx) = App::new(config).unwrap();
    ready(&app);
    let api = Api::new(app);
    let (status, body) = call(
        &api,
        request(
            Method::GET,
            "/identities/modules/m1?type=aziot",
            "2020-09-01",
            1000,
            None,
        ),
    )
    .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("/nonexistent/keyd.sock"),
        "{body}"
    );
}
