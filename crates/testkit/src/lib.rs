//! Fixtures for tests that run real parts. Every fixture owns its processes and temp dirs and
//! kills/removes them on drop, so tests run in parallel and leave nothing behind; children also
//! get SIGKILL from the kernel if the test process itself dies (PR_SET_PDEATHSIG).

mod bus_tap;
mod ek_ca;
#[cfg(feature = "fuzz")]
pub mod fuzz;
pub mod emulator;
pub mod crash;
pub mod http;
mod process;
mod proxy;
mod swtpm;

pub use bus_tap::{BusTap, Direction, Exchange, SessionArea, TpmCommand};
pub use ek_ca::{CertDates, LocalCa};
pub use process::{no_inherited_fds, wait_for_path, ChildGuard};
pub use proxy::Tinyproxy;
pub use swtpm::{Paused, Swtpm};

use std::net::{Ipv4Addr, TcpListener};

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free loopback port")
}

/// Two consecutive free TCP ports (P, P+1) on 127.0.0.1; swtpm's control port must be P+1.
///
/// Drawn at random from below the kernel's ephemeral range: the swtpm TCTI opens a connection
/// per command, so a busy test run uses thousands of ephemeral ports, and a simulator listening
/// on one of them could not be restarted on the same port while a client socket holds it.
pub fn free_port_pair() -> u16 {
    let (low, high) = (10_000u32, ephemeral_range_start().saturating_sub(2).max(10_002));
    let mut seed = random_seed();
    for _ in 0..500 {
        // xorshift64: enough to spread parallel tests over the range.
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let port = (low + (seed % u64::from(high - low)) as u32) as u16;
        let first = TcpListener::bind((Ipv4Addr::LOCALHOST, port));
        if first.is_ok() && TcpListener::bind((Ipv4Addr::LOCALHOST, port + 1)).is_ok() {
            return port;
        }
    }
    panic!("no pair of consecutive free loopback ports found below {high}")
}

/// First port of the kernel's ephemeral range (Linux default 32768).
fn ephemeral_range_start() -> u32 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768)
}

/// Differs between processes and calls: the clock, the pid and a per-process counter.
fn random_seed() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static CALLS: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let calls = CALLS.fetch_add(1, Ordering::Relaxed);
    (nanos ^ (u64::from(std::process::id()) << 32) ^ calls.wrapping_mul(0x9E37_79B9_7F4A_7C15)) | 1
}

/// Path of a binary built by this workspace (another package's `[[bin]]`), next to the running
/// test executable (`target/<profile>/deps/..`). `scripts/test.sh` builds the whole workspace
/// before it runs the tests; a missing binary panics with that hint.
pub fn workspace_bin(name: &str) -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("test executable is not in target/<profile>/deps");
    let path = profile_dir.join(name);
    assert!(
        path.exists(),
        "{} is not built; run `cargo build --workspace` first (scripts/test.sh does)",
        path.display()
    );
    path
}
