//! What the server enforces before a service sees a request, and what services
//! get from it.

use aziot_http::{Bytes, Method, ServerOptions, StatusCode};

use crate::fixture::{get, TestServer, V};

#[tokio::test]
async fn missing_api_version_is_400_with_upstream_message() {
    let server = TestServer::start(ServerOptions::default()).await;
    let (status, body) = get(&server.client(), "/whoami").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body, r#"{"message":"api-version not specified"}"#);
}

#[tokio::test]
async fn unknown_api_version_is_400_naming_it() {
    let server = TestServer::start(ServerOptions::default()).await;
    let (status, body) = get(&server.client(), "/whoami?api-version=2099-01-01").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body, r#"{"message":"invalid api-version \"2099-01-01\""}"#);
}

#[tokio::test]
async fn service_sees_our_uid_pid_version_and_decoded_query() {
    let server = TestServer::start(ServerOptions::default()).await;
    let client = server.client();
    let who: serde_json::Value = client
        .json(
            Method::GET,
            "/whoami?api-version=2021-05-01&name=a%20b+c",
            None,
        )
        .await
        .unwrap();
    // SAFETY: getuid has no preconditions.
    let uid = unsafe { libc::getuid() };
    assert_eq!(who["uid"], uid);
    assert_eq!(who["pid"], std::process::id());
    assert_eq!(who["api_version"], "2021-05-01");
    assert_eq!(who["query"], serde_json::json!({"name": "a b c"}));
}

#[tokio::test]
async fn bad_json_is_422_with_serde_message() {
    let server = TestServer::start(ServerOptions::default()).await;
    let client = server.client();
    let (status, body) = client
        .request(
            Method::POST,
            &format!("/echo?api-version={V}"),
            Some(Bytes::from_static(b"{")),
        )
        .await
        .unwrap();
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("EOF while parsing"),
        "{body}"
    );
}

#[tokio::test]
async fn post_without_body_is_400_missing_request_body() {
    let server = TestServer::start(ServerOptions::default()).await;
    let (status, body) = server
        .client()
        .request(Method::POST, &format!("/echo?api-version={V}"), None)
        .await
        .unwrap();
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(&body[..], br#"{"message":"missing request body"}"#);
}

#[tokio::test]
async fn json_round_trip_and_routing_helpers_over_one_connection() {
    let server = TestServer::start(ServerOptions::default()).await;
    let client = server.client();
    let echoed: serde_json::Value = client
        .json(
            Method::POST,
            &format!("/echo?api-version={V}"),
            Some(&serde_json::json!({"k": [1]})),
        )
        .await
        .unwrap();
    assert_eq!(echoed, serde_json::json!({"k": [1]}));

    let captured: Vec<String> = client
        .json(
            Method::GET,
            &format!("/item/my%2Fkey?api-version={V}"),
            None,
        )
        .await
        .unwrap();
    assert_eq!(captured, ["my/key"]);

    let (status, body) = get(&client, &format!("/nope?api-version={V}")).await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::NOT_FOUND, r#"{"message":"not found"}"#)
    );

    let (status, body) = client
        .request(Method::DELETE, &format!("/whoami?api-version={V}"), None)
        .await
        .unwrap();
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(&body[..], br#"{"message":"method not allowed"}"#);

    let (status, body) = get(&client, &format!("/slow?ms=1&api-version={V}")).await;
    assert_eq!((status, body.as_str()), (StatusCode::NO_CONTENT, ""));
}
