//! A stand-in for the Docker Engine API on a Unix socket, enough for aziot-edged to get past its
//! container runtime: version and info, networks, image pulls, and edgeAgent's container
//! (created, started, inspected as running, its processes listed as `pids`, so the workload API
//! takes a caller with one of those pids for that module). It runs no container; it records
//! every request it saw.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};

pub struct DockerStandIn {
    socket: PathBuf,
    seen: Arc<Mutex<Vec<String>>>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl DockerStandIn {
    /// Listens on `socket`; containers report `pids` as their processes.
    pub fn start(socket: &Path, pids: Vec<u32>) -> DockerStandIn {
        let _ = std::fs::remove_file(socket);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let listener = {
            let _guard = runtime.enter();
            tokio::net::UnixListener::bind(socket).expect("bind the docker stand-in")
        };
        let state = Arc::new(State {
            pids,
            seen: seen.clone(),
            containers: Mutex::new(Vec::new()),
        });
        runtime.spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let state = state.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| {
                        let state = state.clone();
                        async move { Ok::<_, std::convert::Infallible>(state.answer(req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        DockerStandIn {
            socket: socket.to_owned(),
            seen,
            runtime: Some(runtime),
        }
    }

    pub fn uri(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    /// `METHOD path` of every request, in order.
    pub fn seen(&self) -> Vec<String> {
        self.seen.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

impl Drop for DockerStandIn {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
        let _ = std::fs::remove_file(&self.socket);
    }
}

struct State {
    pids: Vec<u32>,
    seen: Arc<Mutex<Vec<String>>>,
    /// Names of the containers created.
    containers: Mutex<Vec<String>>,
}

impl State {
    async fn answer(&self, req: Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
        let method = req.method().to_string();
        let uri = req.uri().clone();
        let query = uri.query().unwrap_or_default().to_owned();
        // Clients prefix the API version: /v1.41/containers/json.
        let path = strip_version(uri.path()).to_owned();
        let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
        if let Ok(mut seen) = self.seen.lock() {
            seen.push(format!("{method} {path}"));
        }
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        let (status, value) = match (method.as_str(), segments.as_slice()) {
            ("GET", ["_ping"]) => return text(StatusCode::OK, "OK"),
            ("GET", ["version"]) => (
                StatusCode::OK,
                json!({"Version": "24.0.0", "ApiVersion": "1.43", "MinAPIVersion": "1.12", "Os": "linux", "Arch": "amd64", "KernelVersion": "6.1.0"}),
            ),
            ("GET", ["info"]) => (
                StatusCode::OK,
                json!({"ID": "stand-in", "Name": "stand-in", "ServerVersion": "24.0.0", "OperatingSystem": "Debian GNU/Linux 12", "OSType": "linux",
                       "Architecture": "x86_64", "NCPU": 2, "MemTotal": 1u64 << 33, "Containers": self.names().len(), "Images": 1,
                       "Driver": "overlay2", "LoggingDriver": "json-file", "CgroupDriver": "systemd", "KernelVersion": "6.1.0", "Labels": []}),
            ),
            ("GET", ["networks"]) => (StatusCode::OK, json!([{"Name": "azure-iot-edge", "Id": "net-1", "Driver": "bridge", "Scope": "local"}])),
            ("GET", ["networks", _]) => (StatusCode::OK, json!({"Name": "azure-iot-edge", "Id": "net-1", "Driver": "bridge"})),
            ("POST", ["networks", "create"]) => (StatusCode::CREATED, json!({"Id": "net-1", "Warning": ""})),
            ("POST", ["images", "create"]) => (StatusCode::OK, json!({"status": "Downloaded newer image"})),
            ("GET", ["images", "json"]) => (StatusCode::OK, json!([{"Id": "sha256:0", "RepoTags": ["mcr.microsoft.com/azureiotedge-agent:1.5"], "Created": 1_700_000_000, "Size": 0}])),
            ("GET", ["images", ..]) => (StatusCode::OK, json!({"Id": "sha256:0", "RepoTags": []})),
            ("GET", ["containers", "json"]) => (StatusCode::OK, Value::Array(self.names().iter().map(|n| self.summary(n)).collect())),
            ("POST", ["containers", "create"]) => {
                let name = query
                    .split('&')
                    .find_map(|p| p.strip_prefix("name="))
                    .unwrap_or("container")
                    .to_owned();
                if let Ok(mut c) = self.containers.lock() {
                    if !c.contains(&name) {
                        c.push(name.clone());
                    }
                }
                let _ = body;
                (StatusCode::CREATED, json!({"Id": name, "Warnings": []}))
            }
            ("POST", ["containers", _, "start" | "stop" | "restart" | "kill"]) => return text(StatusCode::NO_CONTENT, ""),
            ("GET", ["containers", name, "json"]) if self.names().iter().any(|n| n == name) => (StatusCode::OK, self.inspect(name)),
            ("GET", ["containers", name, "top"]) if self.names().iter().any(|n| n == name) => {
                let processes: Vec<Value> = self.pids.iter().map(|p| json!([p.to_string()])).collect();
                (StatusCode::OK, json!({"Titles": ["PID"], "Processes": processes}))
            }
            ("DELETE", ["containers", name]) => {
                if let Ok(mut c) = self.containers.lock() {
                    c.retain(|n| n != name);
                }
                return text(StatusCode::NO_CONTENT, "");
            }
            ("GET", ["containers", _, "logs"]) => return text(StatusCode::OK, ""),
            ("GET", ["containers", name, ..]) => {
                (StatusCode::NOT_FOUND, json!({"message": format!("No such container: {name}")}))
            }
            _ => (StatusCode::OK, json!({})),
        };
        let mut response = Response::new(Full::new(Bytes::from(value.to_string())));
        *response.status_mut() = status;
        response.headers_mut().insert("content-type", "application/json".parse().expect("header"));
        response.headers_mut().insert("api-version", "1.43".parse().expect("header"));
        response
    }

    fn names(&self) -> Vec<String> {
        self.containers.lock().map(|c| c.clone()).unwrap_or_default()
    }

    fn summary(&self, name: &str) -> Value {
        json!({"Id": name, "Names": [format!("/{name}")], "Image": "stand-in", "ImageID": "sha256:0", "Command": "",
               "Created": 1_700_000_000, "State": "running", "Status": "Up", "Labels": {"net.azure-devices.edge.owner": "Microsoft.Azure.Devices.Edge.Agent"}})
    }

    fn inspect(&self, name: &str) -> Value {
        let pid = self.pids.first().copied().unwrap_or(1);
        json!({"Id": name, "Name": format!("/{name}"), "Created": "2026-01-01T00:00:00Z", "Image": "sha256:0",
               "State": {"Status": "running", "Running": true, "Paused": false, "Restarting": false, "OOMKilled": false, "Dead": false,
                         "Pid": pid, "ExitCode": 0, "Error": "", "StartedAt": "2026-01-01T00:00:00Z", "FinishedAt": "0001-01-01T00:00:00Z"},
               "Config": {"Image": "stand-in", "Labels": {"net.azure-devices.edge.owner": "Microsoft.Azure.Devices.Edge.Agent"}, "Env": []},
               "HostConfig": {}, "NetworkSettings": {"Networks": {}}, "RestartCount": 0})
    }
}

fn strip_version(path: &str) -> &str {
    let rest = path.trim_start_matches('/');
    match rest.split_once('/') {
        Some((first, tail)) if first.starts_with('v') && first[1..].chars().all(|c| c.is_ascii_digit() || c == '.') => {
            &path[path.len() - tail.len() - 1..]
        }
        _ => path,
    }
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response
}
