//! A test service and a running server that stops when dropped.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use aziot_http::{
    bind_unix, serve, HttpError, Method, Request, Response, ServerOptions, Service, StatusCode,
    UdsClient,
};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub const V: &str = "2020-09-01";

#[derive(Default)]
pub struct TestService {
    in_flight: AtomicUsize,
    pub max_in_flight: AtomicUsize,
}

impl Service for TestService {
    fn api_versions(&self) -> &'static [&'static str] {
        &["2020-09-01", "2021-05-01"]
    }

    async fn handle(&self, req: Request) -> Response {
        match self.route(req).await {
            Ok(response) => response,
            Err(err) => err.into_response(),
        }
    }
}

impl TestService {
    async fn route(&self, req: Request) -> Result<Response, HttpError> {
        if req.match_path("/whoami")?.is_some() {
            return match req.method {
                Method::GET => Ok(Response::json(
                    StatusCode::OK,
                    &serde_json::json!({
                        "uid": req.uid,
                        "pid": req.pid,
                        "api_version": req.api_version,
                        "query": req.query,
                    }),
                )),
                _ => Err(HttpError::method_not_allowed()),
            };
        }
        if req.match_path("/echo")?.is_some() {
            let body: serde_json::Value = req.json()?;
            return Ok(Response::json(StatusCode::OK, &body));
        }
        if let Some(captures) = req.match_path("/item/{}")? {
            return Ok(Response::json(StatusCode::OK, &captures));
        }
        if req.match_path("/slow")?.is_some() {
            let ms = req.query("ms").and_then(|v| v.parse().ok()).unwrap_or(100);
            let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            self.max_in_flight.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
            return Ok(Response::no_content());
        }
        Err(HttpError::not_found())
    }
}

pub struct TestServer {
    /// Keeps the socket directory alive as long as the server.
    _dir: tempfile::TempDir,
    pub path: PathBuf,
    pub service: Arc<TestService>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl TestServer {
    pub async fn start(options: ServerOptions) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("run/test.sock");
        Self::start_at(dir, path, options).await
    }

    pub async fn start_at(dir: tempfile::TempDir, path: PathBuf, options: ServerOptions) -> Self {
        let listener = bind_unix(&path).expect("bind");
        let service = Arc::new(TestService::default());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(serve(listener, Arc::clone(&service), options, async {
            let _ = stopped.await;
        }));
        TestServer {
            _dir: dir,
            path,
            service,
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub fn client(&self) -> UdsClient {
        UdsClient::new(&self.path).with_timeout(Duration::from_secs(20))
    }

    /// Signals shutdown and returns the serve task to await.
    pub fn begin_shutdown(&mut self) -> JoinHandle<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.take().expect("not yet shut down")
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// GET with the given path and query, returning status and body text.
pub async fn get(client: &UdsClient, path_and_query: &str) -> (StatusCode, String) {
    let (status, body) = client
        .request(Method::GET, path_and_query, None)
        .await
        .expect("request");
    (status, String::from_utf8_lossy(&body).into_owned())
}
