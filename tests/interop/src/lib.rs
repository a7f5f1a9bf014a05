//! Fixtures for the interop tests: upstream's release binaries (`../shared/upstream`, beside the
//! project), a device world (swtpm, the emulator, any mix of upstream's and our daemons, each in
//! a temp dir and killed on drop), and a private mount namespace for the tools that use the
//! fixed paths `/etc/aziot` and `/run/aziot`.
//!
//! When the binaries are not there (a plain clone), [`Upstream::find`] returns `None` and each
//! test returns at once; `scripts/test.sh` says so in one line. With `CI` set they must be there.

pub mod docker;
pub mod sandbox;
pub mod sas;
pub mod upstream;
pub mod world;

pub use sandbox::Sandbox;
pub use upstream::Upstream;
pub use world::{Daemon, World};

/// The start of every case: upstream's binaries (and, for `needs_namespace`, a mount
/// namespace), and the case's timer; `None` when they are not here (outside CI), so the case
/// returns.
pub fn case(name: &'static str, needs_namespace: bool) -> Option<(Upstream, Timed)> {
    let up = Upstream::find()?;
    if needs_namespace && !Sandbox::available() {
        return None;
    }
    Some((up, Timed::start(name)))
}

/// Each test prints its name and run time (shown with `--nocapture`, e.g. by
/// `tests/interop/run.sh`), so a report can list every case with its time.
pub struct Timed {
    name: &'static str,
    started: std::time::Instant,
}

impl Timed {
    pub fn start(name: &'static str) -> Timed {
        Timed {
            name,
            started: std::time::Instant::now(),
        }
    }
}

impl Drop for Timed {
    fn drop(&mut self) {
        let verdict = if std::thread::panicking() { "FAILED" } else { "ok" };
        eprintln!(
            "interop case {}: {verdict} in {:.1} s",
            self.name,
            self.started.elapsed().as_secs_f64()
        );
    }
}
