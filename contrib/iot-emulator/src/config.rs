//! What the emulator is started with. The binary fills it from the command line; tests can build
//! it directly. Ports of 0 mean "a free port", chosen at first start and then kept in the data
//! dir, so device configs and assigned hub names stay valid across restarts.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use crate::faults::FaultRule;

#[derive(Debug, Clone)]
pub struct Config {
    /// Where the CA, server certificate, identity and state live.
    pub data_dir: PathBuf,
    /// The DPS ID scope, used when the data dir is new.
    pub id_scope: String,
    /// At least this many hubs (hubs are added, never removed).
    pub hubs: usize,
    /// Ports for hubs created now, in order; missing or 0 = free port.
    pub hub_ports: Vec<u16>,
    /// DPS port; `None` = keep the data dir's (or a free one the first time).
    pub dps_port: Option<u16>,
    /// Admin API port; `None` = keep the data dir's (or a free one the first time).
    pub admin_port: Option<u16>,
    /// Configured latency per hub index, for `geoLatency` allocation.
    pub hub_latency_ms: BTreeMap<usize, u64>,
    /// How long an operation answers `assigning` before the outcome is decided.
    pub assigning: Duration,
    /// `Retry-After` seconds on 202 answers.
    pub retry_after: u64,
    /// Fault rules active from the start.
    pub faults: Vec<FaultRule>,
    /// Extra CA bundles the custom-allocation webhook client trusts (besides the system roots and
    /// the emulator's own CA).
    pub trust_ca: Vec<PathBuf>,
    pub webhook_timeout: Duration,
}

impl Config {
    /// Defaults for everything but the data dir.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            id_scope: "0ne00000001".into(),
            hubs: 2,
            hub_ports: Vec::new(),
            dps_port: None,
            admin_port: None,
            hub_latency_ms: BTreeMap::new(),
            assigning: Duration::from_millis(1500),
            retry_after: 1,
            faults: Vec::new(),
            trust_ca: Vec::new(),
            webhook_timeout: Duration::from_secs(10),
        }
    }
}
