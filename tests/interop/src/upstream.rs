//! Where upstream's binaries are: `../shared/upstream` relative to the project's root, or
//! `AZIOT_UPSTREAM_DIR`.

use std::path::{Path, PathBuf};

#[derive(Clone, Debug)]
pub struct Upstream {
    dir: PathBuf,
}

impl Upstream {
    /// The binaries, or `None` when they are absent (outside CI). In CI (`CI` set) their absence
    /// fails the test: the drop-in claim must be tested there.
    pub fn find() -> Option<Upstream> {
        let dir = std::env::var_os("AZIOT_UPSTREAM_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/upstream"));
        if dir.join("aziotd").is_file() {
            return Some(Upstream {
                dir: std::fs::canonicalize(&dir).unwrap_or(dir),
            });
        }
        if std::env::var_os("CI").is_some_and(|v| !v.is_empty()) {
            panic!(
                "upstream's binaries are not at {} (set AZIOT_UPSTREAM_DIR); CI must run the interop tests",
                dir.display()
            );
        }
        None
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `aziotd`, `aziotctl`, `aziot-edged`, `iotedge`.
    pub fn bin(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// A dir of symlinks `aziot-{keyd,tpmd,identityd,certd}` → `aziotd`: the multi-call binary
    /// picks its service by the name it is run as.
    pub fn service_links(&self, into: &Path) -> PathBuf {
        let bin = into.join("upstream-bin");
        std::fs::create_dir_all(&bin).expect("create upstream-bin");
        for service in ["keyd", "tpmd", "identityd", "certd"] {
            let link = bin.join(format!("aziot-{service}"));
            if !link.exists() {
                std::os::unix::fs::symlink(self.bin("aziotd"), &link).expect("symlink aziotd");
            }
        }
        bin
    }
}
