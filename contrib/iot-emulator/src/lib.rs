//! iot-emulator: a local Azure DPS + IoT Hub that plays the cloud honestly for TPM devices.
//!
//! Upstream's mock DPS hands out a fixed key and never checks a TPM, so nothing short of an Azure
//! subscription exercised TPM provisioning. This emulator builds real `authenticationKey` blobs
//! (with `dps-attestation`) that only the enrolled TPM can import, verifies every SAS token with
//! the key it issued (constant-time), assigns devices to emulated hubs by DPS's allocation
//! policies, and serves the hub calls identityd makes. Everything is HTTPS on 127.0.0.1 with a
//! CA it creates; state persists in a data dir.
//!
//! Layout: `app` starts and stops it, `server` is the HTTPS plumbing, `dps/` and `hub/` hold one
//! file per route family, `admin` and `faults` are fault injection, `store`/`state`/`persist`
//! keep state on disk, `error` maps every failure to the right service's error shape.

pub mod admin;
pub mod app;
pub mod config;
pub mod dps;
pub mod error;
pub mod faults;
pub mod http;
pub mod hub;
pub mod identity;
pub mod ids;
pub mod model;
pub mod persist;
pub mod pki;
pub mod sas;
pub mod server;
pub mod state;
pub mod store;
pub mod time;

pub use app::{start, AdminInfo, App, ReadyInfo, Running, StartError};
pub use config::Config;
