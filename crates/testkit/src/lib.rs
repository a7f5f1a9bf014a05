//! Fixtures for tests that run real parts. Every fixture owns its processes and temp dirs and
//! kills/removes them on drop, so tests run in parallel and leave nothing behind; children also
//! get SIGKILL from the kernel if the test process itself dies (PR_SET_PDEATHSIG).

pub mod http;
mod process;
mod swtpm;

pub use process::{wait_for_path, ChildGuard};
pub use swtpm::Swtpm;

use std::net::{Ipv4Addr, TcpListener};

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free loopback port")
}

/// Two consecutive free TCP ports (P, P+1) on 127.0.0.1; swtpm's control port must be P+1.
pub fn free_port_pair() -> u16 {
    for _ in 0..200 {
        let first = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0");
        let port = first.local_addr().expect("local_addr").port();
        if port < u16::MAX && TcpListener::bind((Ipv4Addr::LOCALHOST, port + 1)).is_ok() {
            return port;
        }
    }
    panic!("no pair of consecutive free loopback ports found")
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
