//! A private mount namespace for tools with fixed paths (`aziotctl`, `iotedge`): `/etc` and
//! `/var/lib` become overlays whose changes land in this sandbox's temp dir, `/run` a fresh
//! tmpfs (with `/run/aziot` bound to a world's socket dir when given), the four aziot service
//! users exist, and a stand-in `systemctl` first on `PATH` records its calls. The host's files are
//! never touched; the namespace ends with the command. Needs root (`unshare -m`), as CI has.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The users upstream's package creates, with the uids the fixtures were made with.
pub const USERS: [(&str, u32); 4] = [("aziotks", 9901), ("aziotcs", 9902), ("aziotid", 9903), ("aziottpm", 9904)];

pub struct Sandbox {
    dir: tempfile::TempDir,
    run_aziot: Option<PathBuf>,
    users: bool,
}

impl Sandbox {
    /// Whether a mount namespace can be made here (root). Outside CI a test without one
    /// returns; in CI (`CI` set) it must be there.
    pub fn available() -> bool {
        // SAFETY: geteuid cannot fail.
        if unsafe { libc::geteuid() } == 0 {
            return true;
        }
        if std::env::var_os("CI").is_some_and(|v| !v.is_empty()) {
            panic!("the interop tests with aziotctl need root for a private mount namespace (unshare -m)");
        }
        false
    }

    pub fn new() -> Sandbox {
        let dir = tempfile::Builder::new().prefix("aziot-sandbox-").tempdir().expect("temp dir");
        for d in ["etc-up", "var-up", "usr-up", "bin"] {
            std::fs::create_dir_all(dir.path().join(d)).expect("sandbox dirs");
        }
        let sandbox = Sandbox {
            dir,
            run_aziot: None,
            users: true,
        };
        sandbox.write_tool(
            "systemctl",
            &format!(
                "#!/bin/sh\necho \"systemctl $*\" >> {log}\nexit 0\n",
                log = sandbox.path("systemctl.log").display()
            ),
        );
        sandbox
    }

    /// Binds `dir` (a world's socket dir) at `/run/aziot`.
    pub fn with_run_aziot(mut self, dir: &Path) -> Sandbox {
        self.run_aziot = Some(dir.to_owned());
        self
    }

    /// Without the service users (upstream's package not installed).
    pub fn without_users(mut self) -> Sandbox {
        self.users = false;
        self
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Installs the `aziotctl` layout of our package: `/usr/bin/aziotctl` → `aziot-tpm` (the
    /// wrapper), and with `upstream` upstream's aziotctl diverted to `/usr/bin/aziotctl.distrib`,
    /// as dpkg-divert leaves it beside upstream's package. Returns the script lines.
    pub fn aziotctl_layout(ours: &Path, upstream: Option<&Path>) -> String {
        let mut lines = format!("ln -sf '{}' /usr/bin/aziot-tpm
ln -sf /usr/bin/aziot-tpm /usr/bin/aziotctl
", ours.display());
        if let Some(up) = upstream {
            lines.push_str(&format!("cp '{}' /usr/bin/aziotctl.distrib
", up.display()));
        }
        lines
    }

    /// A file under the sandbox's `/etc` as the command left it.
    pub fn etc(&self, rel: &str) -> PathBuf {
        self.path("etc-up").join(rel)
    }

    /// A stand-in program, first on `PATH` inside the namespace.
    pub fn write_tool(&self, name: &str, script: &str) {
        let path = self.path("bin").join(name);
        std::fs::write(&path, script).expect("write tool");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod tool");
    }

    /// A link to `target` named `name`, first on `PATH` inside the namespace.
    pub fn link_tool(&self, name: &str, target: &Path) {
        let link = self.path("bin").join(name);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(target, link).expect("link tool");
    }

    /// The stand-in systemctl's calls, one per line, in order.
    pub fn systemctl_calls(&self) -> Vec<String> {
        std::fs::read_to_string(self.path("systemctl.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// Runs `script` (sh) inside the namespace and returns its output. `/etc/aziot/<svc>/config.d`
    /// and `/var/lib/aziot/<svc>` exist, as upstream's package makes them.
    pub fn run(&self, script: &str) -> Output {
        let mut users = String::new();
        if self.users {
            for (name, id) in USERS {
                users.push_str(&format!(
                    "echo '{name}:x:{id}:{id}::/var/lib/aziot:/sbin/nologin' >> /etc/passwd\n\
                     echo '{name}:x:{id}:' >> /etc/group\n"
                ));
            }
        }
        let bind_run = self
            .run_aziot
            .as_ref()
            .map(|d| format!("mount --bind '{}' /run/aziot\n", d.display()))
            .unwrap_or_default();
        let s = self.dir.path().display();
        // The overlays' upper dirs live on a tmpfs inside the namespace (an overlay cannot have
        // its upper dir on another overlay, as in a container), and are copied into the sandbox
        // dir when the script ends, for the test to read.
        let preamble = format!(
            "set -e\n\
             mkdir -p {s}/mnt && mount -t tmpfs tmpfs {s}/mnt\n\
             for d in etc var usr; do mkdir -p {s}/mnt/$d-up {s}/mnt/$d-work; done\n\
             mount -t overlay overlay -o lowerdir=/etc,upperdir={s}/mnt/etc-up,workdir={s}/mnt/etc-work /etc\n\
             mount -t overlay overlay -o lowerdir=/var/lib,upperdir={s}/mnt/var-up,workdir={s}/mnt/var-work /var/lib\n\
             mount -t overlay overlay -o lowerdir=/usr/bin,upperdir={s}/mnt/usr-up,workdir={s}/mnt/usr-work /usr/bin\n\
             for d in etc var usr; do cp -a {s}/$d-up/. {s}/mnt/$d-up/; done\n\
             mount -t tmpfs tmpfs /run\n\
             mkdir -p /run/aziot\n{bind_run}{users}\
             for svc in keyd certd identityd tpmd; do mkdir -p /etc/aziot/$svc/config.d /var/lib/aziot/$svc; done\n\
             export PATH={s}/bin:$PATH\n\
             set +e\n"
        );
        let script = format!(
            "{preamble}( {script}\n)\nstatus=$?\nfor d in etc var usr; do cp -a {s}/mnt/$d-up/. {s}/$d-up/; done\nexit $status\n"
        );
        Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c"])
            .arg(script)
            .env_remove("https_proxy")
            .output()
            .expect("run unshare (root is needed for a mount namespace)")
    }
}

impl Default for Sandbox {
    fn default() -> Self {
        Self::new()
    }
}

/// stdout and stderr, for messages.
pub fn text(out: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout:\n{}\n--- stderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}
