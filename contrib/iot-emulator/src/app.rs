//! Start-up and shutdown: PKI, identity and state from the data dir, one loopback listener for
//! DPS, one per hub and one for the admin API, and the [`ReadyInfo`] that tells clients where
//! everything is. The shared [`App`] is what every route gets.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::{mpsc, watch};

use crate::config::Config;
use crate::faults::Faults;
use crate::identity::{HubIdentity, Identity, IdentityError};
use crate::pki::{self, PkiError};
use crate::server::{self, Endpoint};
use crate::store::{Store, StoreError};

/// One emulated hub at run time.
#[derive(Debug, Clone)]
pub struct Hub {
    pub hostname: String,
    pub owner_key: Vec<u8>,
    pub latency_ms: Option<u64>,
}

/// Shared by all routes.
pub struct App {
    pub id_scope: String,
    /// `127.0.0.1:<port>`: the DPS service API's `HostName` and SAS audience.
    pub dps_host: String,
    pub service_key: Vec<u8>,
    pub admin_token: String,
    pub hubs: Vec<Hub>,
    pub store: Store,
    pub faults: Faults,
    pub assigning: Duration,
    pub retry_after: u64,
    pub webhook: cloud_http::Client,
}

impl App {
    /// The hub named `name` (case-insensitive), with its canonical hostname.
    pub fn hub_named(&self, name: &str) -> Option<&Hub> {
        self.hubs
            .iter()
            .find(|h| h.hostname.eq_ignore_ascii_case(name.trim_end_matches('/')))
    }

    pub fn hostnames(&self) -> Vec<String> {
        self.hubs.iter().map(|h| h.hostname.clone()).collect()
    }
}

/// The line the binary prints on stdout once it listens.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct ReadyInfo {
    pub dps_endpoint: String,
    pub id_scope: String,
    pub service_connection_string: String,
    pub ca_pem: PathBuf,
    pub hubs: Vec<String>,
    pub hub_connection_strings: Vec<String>,
    pub admin: AdminInfo,
    pub data_dir: PathBuf,
}

#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct AdminInfo {
    pub endpoint: String,
    pub token: String,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot create data dir {path}: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Pki(#[from] PkiError),
    #[error(transparent)]
    Identity(#[from] IdentityError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot write the initial state: {0}")]
    Persist(String),
    #[error("cannot listen on 127.0.0.1:{port} for {what}: {source}")]
    Bind {
        what: String,
        port: u16,
        source: std::io::Error,
    },
    #[error("cannot serve: {0}")]
    Serve(#[from] std::io::Error),
    #[error("TLS setup: {0}")]
    Tls(#[from] openssl::error::ErrorStack),
    #[error("webhook client: {0}")]
    Webhook(#[from] cloud_http::Error),
}

/// A running emulator; [`Running::shutdown`] stops it gracefully.
pub struct Running {
    pub ready: ReadyInfo,
    pub app: Arc<App>,
    shutdown: watch::Sender<bool>,
    done: mpsc::Receiver<()>,
}

impl Running {
    /// Stops accepting, lets in-flight requests finish (up to `grace`), and returns.
    pub async fn shutdown(mut self, grace: Duration) {
        let _ = self.shutdown.send(true);
        let _ = tokio::time::timeout(grace, self.done.recv()).await;
    }
}

fn bind(what: &str, port: u16) -> Result<TcpListener, StartError> {
    let listener =
        TcpListener::bind((Ipv4Addr::LOCALHOST, port)).map_err(|source| StartError::Bind {
            what: what.to_owned(),
            port,
            source,
        })?;
    listener
        .set_nonblocking(true)
        .map_err(|source| StartError::Bind {
            what: what.to_owned(),
            port,
            source,
        })?;
    Ok(listener)
}

fn port_of(l: &TcpListener) -> u16 {
    l.local_addr().map(|a: SocketAddr| a.port()).unwrap_or(0)
}

/// Starts the emulator on the current Tokio runtime.
pub async fn start(config: Config) -> Result<Running, StartError> {
    let dir = config.data_dir.clone();
    create_data_dir(&dir)?;
    let dir = std::fs::canonicalize(&dir).map_err(|source| StartError::DataDir {
        path: dir.clone(),
        source,
    })?;
    let pki = pki::ensure(&dir)?;
    let mut identity = Identity::load_or_new(&dir, &config.id_scope)?;

    let dps = bind("DPS", config.dps_port.unwrap_or(identity.dps_port))?;
    identity.dps_port = port_of(&dps);
    let admin = bind(
        "the admin API",
        config.admin_port.unwrap_or(identity.admin_port),
    )?;
    identity.admin_port = port_of(&admin);
    let mut hub_listeners = Vec::new();
    for hub in &identity.hubs {
        hub_listeners.push(bind(&format!("hub {}", hub.hostname), hub.port)?);
    }
    let mut new_port = config.hub_ports.iter().copied();
    while identity.hubs.len() < config.hubs.max(1) {
        let listener = bind("a new hub", new_port.next().unwrap_or(0))?;
        let port = port_of(&listener);
        identity.hubs.push(HubIdentity {
            hostname: format!("127.0.0.1:{port}"),
            port,
            owner_key: crate::ids::symmetric_key(),
        });
        hub_listeners.push(listener);
    }
    if config.hubs < identity.hubs.len() && config.hubs > 0 {
        log::warn!(
            "the data dir has {} hubs; --hubs {} only adds hubs, never removes them",
            identity.hubs.len(),
            config.hubs
        );
    }
    identity.save(&dir)?;

    let store = Store::open(&dir.join("state.json"))?;
    let hubs: Vec<Hub> = identity
        .hubs
        .iter()
        .enumerate()
        .map(|(i, h)| Hub {
            hostname: h.hostname.clone(),
            owner_key: decode_key(&h.owner_key),
            latency_ms: config.hub_latency_ms.get(&i).copied(),
        })
        .collect();
    let mut webhook = cloud_http::Client::builder()
        .trust_ca_file(&pki.ca_cert)
        .timeout(config.webhook_timeout);
    for ca in &config.trust_ca {
        webhook = webhook.trust_ca_file(ca);
    }
    let faults = Faults::default();
    for rule in config.faults.iter().cloned() {
        faults.add(rule);
    }
    let dps_host = format!("127.0.0.1:{}", identity.dps_port);
    let app = Arc::new(App {
        id_scope: identity.id_scope.clone(),
        dps_host: dps_host.clone(),
        service_key: decode_key(&identity.service_key),
        admin_token: identity.admin_token.clone(),
        hubs,
        store,
        faults,
        assigning: config.assigning,
        retry_after: config.retry_after,
        webhook: webhook.build()?,
    });
    app.store
        .update(|s| {
            for h in &app.hubs {
                s.hubs.entry(h.hostname.clone()).or_default();
            }
            Ok(())
        })
        .await
        .map_err(|e| StartError::Persist(e.to_string()))?;

    let acceptor = Arc::new(server::acceptor(&pki.server_chain, &pki.server_key)?);
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let (done_tx, done_rx) = mpsc::channel(1);
    server::spawn(
        dps,
        acceptor.clone(),
        Endpoint::Dps,
        app.clone(),
        shutdown_rx.clone(),
        done_tx.clone(),
    )?;
    server::spawn(
        admin,
        acceptor.clone(),
        Endpoint::Admin,
        app.clone(),
        shutdown_rx.clone(),
        done_tx.clone(),
    )?;
    for (i, listener) in hub_listeners.into_iter().enumerate() {
        server::spawn(
            listener,
            acceptor.clone(),
            Endpoint::Hub(i),
            app.clone(),
            shutdown_rx.clone(),
            done_tx.clone(),
        )?;
    }
    drop(done_tx);
    crate::dps::assign::resume(&app);

    let ready = ReadyInfo {
        dps_endpoint: format!("https://{dps_host}"),
        id_scope: identity.id_scope.clone(),
        service_connection_string: format!(
            "HostName={dps_host};SharedAccessKeyName=provisioningserviceowner;SharedAccessKey={}",
            identity.service_key
        ),
        ca_pem: pki.ca_cert.clone(),
        hubs: identity.hubs.iter().map(|h| h.hostname.clone()).collect(),
        hub_connection_strings: identity
            .hubs
            .iter()
            .map(|h| {
                format!(
                    "HostName={};SharedAccessKeyName=iothubowner;SharedAccessKey={}",
                    h.hostname, h.owner_key
                )
            })
            .collect(),
        admin: AdminInfo {
            endpoint: format!("https://127.0.0.1:{}", identity.admin_port),
            token: identity.admin_token.clone(),
        },
        data_dir: dir,
    };
    Ok(Running {
        ready,
        app,
        shutdown: shutdown_tx,
        done: done_rx,
    })
}

fn decode_key(b64: &str) -> Vec<u8> {
    data_encoding::BASE64
        .decode(b64.as_bytes())
        .unwrap_or_else(|_| b64.as_bytes().to_vec())
}

fn create_data_dir(dir: &Path) -> Result<(), StartError> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| StartError::DataDir {
            path: dir.to_owned(),
            source,
        })
}
