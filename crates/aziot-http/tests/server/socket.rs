//! Socket file handling: mode, stale sockets, live sockets.

use std::os::unix::fs::PermissionsExt;

use aziot_http::{bind_unix, BindError, ServerOptions, StatusCode};

use crate::fixture::{get, TestServer, V};

#[tokio::test]
async fn socket_is_created_with_mode_0660_in_a_new_directory() {
    let server = TestServer::start(ServerOptions::default()).await;
    let mode = std::fs::metadata(&server.path)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o660);
}

#[tokio::test]
async fn stale_socket_file_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    assert!(path.exists(), "the dead listener leaves its file behind");

    let server = TestServer::start_at(dir, path, ServerOptions::default()).await;
    let (status, _) = get(&server.client(), &format!("/whoami?api-version={V}")).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn live_socket_is_refused_and_keeps_serving() {
    let server = TestServer::start(ServerOptions::default()).await;
    let err = bind_unix(&server.path).unwrap_err();
    assert!(matches!(err, BindError::InUse { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("another process is already serving"),
        "{err}"
    );
    let (status, _) = get(&server.client(), &format!("/whoami?api-version={V}")).await;
    assert_eq!(status, StatusCode::OK);
}
