//! Upstream's release build (`aziotd`, its multi-call daemon, and the libraries it loads), run
//! beside ours in the same benchmark run.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The release dir given on the command line, if it holds `aziotd`.
pub fn dir(arg: Option<String>) -> Option<PathBuf> {
    arg.map(PathBuf::from).filter(|d| d.join("aziotd").is_file())
}

/// A command running upstream's `service` (`aziot-tpmd`, `aziot-keyd`, `aziot-identityd`)
/// from the release dir `up`. The multi-call binary picks its service by the name it runs as,
/// so it runs through a link of that name made in `scratch`.
pub fn command(up: &Path, service: &str, scratch: &Path) -> Command {
    let up = std::fs::canonicalize(up).expect("upstream's release dir");
    let link = scratch.join(service);
    if !link.exists() {
        std::os::unix::fs::symlink(up.join("aziotd"), &link).expect("link to aziotd");
    }
    let mut command = Command::new(link);
    command.env("LD_LIBRARY_PATH", &up).env_remove("LISTEN_FDS");
    command
}
