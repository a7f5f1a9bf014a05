//! keyd-tpm started as root with `AZIOT_KEYD_TPM_USER` reads both configs as root, then runs as
//! that user with its groups and no capabilities, as the packaged unit runs it (`setpriv` gives it
//! the unit's capability bounding set and no-new-privileges). The switch needs
//! root, so those tests say "skipped" and pass when run unprivileged (CI runs as root). They use
//! `nobody`, which every Debian system has, so the host's users are never changed.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use aziot_tpm_common::{b64, from_b64};
use testkit::http;
use testkit::{ChildGuard, Swtpm};

const API: &str = "api-version=2020-09-01";
const KEYD_API: &str = "api-version=2021-05-01";
const NOBODY: u32 = 65534;
/// Owners of the two configs: any uids other than root's and nobody's (they need not exist).
const TPMD_OWNER: u32 = 4242;
const KEYD_OWNER: u32 = 4343;
/// What the packaged unit leaves keyd-tpm (CapabilityBoundingSet=, NoNewPrivileges=yes).
const UNIT_PRIVILEGES: [&str; 4] = [
    "--bounding-set=-all,+dac_read_search,+setuid,+setgid",
    "--inh-caps=-all",
    "--ambient-caps=-all",
    "--no-new-privs",
];

fn is_root() -> bool {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// A root-only config dir and state dirs and a socket dir owned by `nobody`, in a temp dir.
struct Layout {
    dir: tempfile::TempDir,
}

impl Layout {
    fn new(tcti: &str) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("keyd-tpm-priv-")
            .tempdir()
            .unwrap();
        // nobody may pass through the temp dir, but not list it.
        set_mode(dir.path(), 0o711);
        let layout = Self { dir };
        let etc = layout.path("etc");
        std::fs::create_dir(&etc).unwrap();
        set_mode(&etc, 0o700);
        for owned in ["run", "tpmd-home", "keyd-home"] {
            let p = layout.path(owned);
            std::fs::create_dir(&p).unwrap();
            set_mode(&p, 0o700);
            if is_root() {
                chown(&p, NOBODY, NOBODY);
            }
        }
        let tpmd = format!(
            "tcti = \"{tcti}\"\nhomedir = \"{}\"\n\n[endpoints]\naziot_tpmd = \"unix://{}\"\n",
            layout.path("tpmd-home").display(),
            layout.tpmd_socket().display()
        );
        let keyd = format!(
            "[aziot_keys]\nhomedir_path = \"{}\"\n\n[endpoints]\naziot_keyd = \"unix://{}\"\n",
            layout.path("keyd-home").display(),
            layout.keyd_socket().display()
        );
        // Each config private to its own user, as upstream's packaging and `config apply` leave
        // them (tpmd's: aziottpm, keyd's: aziotks); root needs CAP_DAC_READ_SEARCH to read them.
        for (name, text, owner) in [
            ("tpmd.toml", tpmd, TPMD_OWNER),
            ("keyd.toml", keyd, KEYD_OWNER),
        ] {
            let p = etc.join(name);
            std::fs::write(&p, text).unwrap();
            set_mode(&p, 0o600);
            if is_root() {
                chown(&p, owner, owner);
            }
        }
        layout
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn tpmd_socket(&self) -> PathBuf {
        self.path("run/tpmd.sock")
    }

    fn keyd_socket(&self) -> PathBuf {
        self.path("run/keyd.sock")
    }

    fn command(&self, user: &str) -> Command {
        self.command_via(user, &[])
    }

    /// keyd-tpm run by `setpriv` with `privileges` (setpriv options), or directly if none.
    fn command_via(&self, user: &str, privileges: &[&str]) -> Command {
        let keyd_tpm = env!("CARGO_BIN_EXE_keyd-tpm");
        let mut command = if privileges.is_empty() {
            Command::new(keyd_tpm)
        } else {
            let mut setpriv = Command::new("setpriv");
            setpriv.args(privileges).arg("--").arg(keyd_tpm);
            setpriv
        };
        command
            .env("AZIOT_TPMD_CONFIG", self.path("etc/tpmd.toml"))
            .env("AZIOT_TPMD_CONFIG_DIR", self.path("etc/tpmd.d"))
            .env("AZIOT_KEYD_CONFIG", self.path("etc/keyd.toml"))
            .env("AZIOT_KEYD_CONFIG_DIR", self.path("etc/keyd.d"))
            .env("AZIOT_KEYD_TPM_USER", user)
            .env("AZIOT_LOG", "info")
            .env("TSS2_LOG", "all+none")
            .env_remove("LISTEN_FDS")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        command
    }
}

fn set_mode(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn chown(p: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::chown(p, Some(uid), Some(gid)).unwrap();
}

/// The `Key:` line of /proc/<pid>/status, whitespace-normalized.
fn status_line(pid: u32, key: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}:")))
        .unwrap_or_else(|| panic!("no {key} in /proc/{pid}/status"));
    line.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn wait_for_sockets(child: &mut ChildGuard, sockets: &[PathBuf]) -> Result<(), String> {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while std::time::Instant::now() < deadline {
        if sockets
            .iter()
            .all(|s| std::os::unix::net::UnixStream::connect(s).is_ok())
        {
            return Ok(());
        }
        if child.try_wait().is_some() {
            return Err("keyd-tpm exited".into());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Err("keyd-tpm sockets did not appear".into())
}

/// Runs `command` to its end and returns (exit code, stderr).
fn run_to_end(command: Command) -> (Option<i32>, String) {
    let child = ChildGuard::spawn(command).unwrap().into_inner();
    let out = child.wait_with_output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn started_as_root_it_serves_as_the_named_user_with_its_groups_and_no_capabilities() {
    if !is_root() {
        eprintln!("skipped: switching users needs root");
        return;
    }
    let tpm = Swtpm::start();
    let layout = Layout::new(&tpm.tcti());
    let mut child = ChildGuard::spawn(layout.command_via("nobody", &UNIT_PRIVILEGES)).unwrap();
    let sockets = [layout.tpmd_socket(), layout.keyd_socket()];
    if let Err(e) = wait_for_sockets(&mut child, &sockets) {
        let out = child.into_inner().wait_with_output().unwrap();
        panic!("{e}:\n{}", String::from_utf8_lossy(&out.stderr));
    }
    let pid = child.id();

    // Every uid and gid is nobody's, the groups are nobody's own, and no capability is left.
    assert_eq!(status_line(pid, "Uid"), "65534 65534 65534 65534");
    assert_eq!(status_line(pid, "Gid"), "65534 65534 65534 65534");
    let groups = Command::new("id").args(["-G", "nobody"]).output().unwrap();
    let mut expected: Vec<String> = String::from_utf8_lossy(&groups.stdout)
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    let mut actual: Vec<String> = status_line(pid, "Groups")
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    expected.sort();
    actual.sort();
    assert_eq!(actual, expected, "supplementary groups");
    for caps in ["CapPrm", "CapEff", "CapAmb"] {
        assert_eq!(status_line(pid, caps), "0000000000000000", "{caps}");
    }

    // It read both configs (0600, two other owners) with no more than the unit's capabilities:
    // the TCTI and paths below came from them. The TPM works, and what it writes is nobody's.
    let r = http::request(
        &layout.tpmd_socket(),
        "GET",
        &format!("/get_tpm_keys?{API}"),
        None,
    )
    .unwrap();
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let v = r.json();
    let ek = from_b64(v["endorsement_key"].as_str().unwrap()).unwrap();
    let srk = from_b64(v["storage_root_key"].as_str().unwrap()).unwrap();
    let blob = dps_attestation::build_authentication_key(&ek, &srk, &[7u8; 32]).unwrap();
    let body = serde_json::json!({ "key": b64(&blob) });
    let r = http::json(
        &layout.tpmd_socket(),
        "POST",
        &format!("/import_auth_key?{API}"),
        &body,
    )
    .unwrap();
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let body = serde_json::json!({ "keyId": "privileges-test", "keyBytes": null, "usage": "sign" });
    let r = http::json(
        &layout.keyd_socket(),
        "POST",
        &format!("/key?{KEYD_API}"),
        &body,
    )
    .unwrap();
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));

    let mut written = Vec::new();
    for home in ["tpmd-home", "keyd-home"] {
        for entry in walk(&layout.path(home)) {
            written.push((entry.clone(), std::fs::metadata(&entry).unwrap().uid()));
        }
    }
    assert!(
        written
            .iter()
            .any(|(p, _)| p.starts_with(layout.path("tpmd-home"))),
        "no auth key file: {written:?}"
    );
    assert!(
        written
            .iter()
            .any(|(p, _)| p.starts_with(layout.path("keyd-home"))),
        "no key file: {written:?}"
    );
    assert!(written.iter().all(|(_, uid)| *uid == NOBODY), "{written:?}");

    child.signal(libc::SIGTERM);
    let status = child
        .wait_timeout(Duration::from_secs(15))
        .expect("keyd-tpm did not stop on SIGTERM");
    assert!(status.success(), "{status:?}");
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        }
        out.push(path);
    }
    out
}

#[test]
fn an_unknown_user_stops_it_before_the_tpm_is_opened() {
    // No TPM at all: the error must come from the user lookup, right after the configs.
    let layout = Layout::new("swtpm:host=127.0.0.1,port=1");
    let (code, stderr) = run_to_end(layout.command("no-such-user-aziot-tpm"));
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains(
            "AZIOT_KEYD_TPM_USER=\"no-such-user-aziot-tpm\" names a user that does not exist"
        ),
        "{stderr}"
    );
    assert!(
        !stderr.contains("swtpm"),
        "the TPM was tried before the user: {stderr}"
    );
}

#[test]
fn root_as_the_target_user_is_refused() {
    let layout = Layout::new("swtpm:host=127.0.0.1,port=1");
    let (code, stderr) = run_to_end(layout.command("root"));
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("is root (uid 0)"), "{stderr}");
}

#[test]
fn started_unprivileged_as_another_user_it_says_to_start_it_as_root() {
    if !is_root() {
        eprintln!("skipped: starting a process as nobody needs root");
        return;
    }
    let layout = Layout::new("swtpm:host=127.0.0.1,port=1");
    // nobody may read this copy of the configs: the failure must be the switch, not the read.
    let etc = layout.path("etc");
    set_mode(&etc, 0o755);
    for f in ["tpmd.toml", "keyd.toml"] {
        set_mode(&etc.join(f), 0o644);
    }
    let mut command = layout.command("daemon");
    // SAFETY: only async-signal-safe syscalls between fork and exec.
    unsafe {
        command.pre_exec(|| {
            if libc::setgroups(0, std::ptr::null()) != 0
                || libc::setgid(NOBODY) != 0
                || libc::setuid(NOBODY) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let (code, stderr) = run_to_end(command);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("was started as uid 65534, not as root, so it cannot become daemon"),
        "{stderr}"
    );
}
