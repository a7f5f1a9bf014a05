//! What hostile or unlucky clients cost the others, measured on a release keyd-tpm (open-file
//! limit 1024, as a unit without LimitNOFILE= would give it) on its own swtpm:
//!
//! 1. Latency of a TPM Service signature and of a Keys Service HMAC by another uid, with no
//!    load, then while one uid holds 10,000 connections to keyd.sock that never finish their
//!    request; and how long the first answer takes once the flood is in.
//! 2. The daemon's resident memory idle, at its high-water mark during 10 concurrent 1 MiB
//!    `/sign` bodies (repeated), and 2 s after.
//!
//! Usage: bench-hardening KEYD_TPM_BINARY [SAMPLES]

#[allow(dead_code)] // shared with the other benchmarks, which use all of it
#[allow(dead_code)] // shared with the other benchmarks, which use all of it
mod stats;

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use stats::{us, Summary};
use testkit::{ChildGuard, Swtpm};

const FLOOD: usize = 10_000;
const OTHER_UID: u32 = 54_321;
const KEYD_API: &str = "api-version=2021-05-01";
const TPMD_API: &str = "api-version=2020-09-01";

fn main() {
    if let (Ok(socket), Ok(n)) = (std::env::var("BENCH_FLOOD_SOCKET"), std::env::var("BENCH_FLOOD_N")) {
        flood_child(&socket, n.parse().unwrap_or(FLOOD));
    }
    let mut args = std::env::args().skip(1);
    let bin = PathBuf::from(args.next().expect("usage: bench-hardening KEYD_TPM_BINARY [SAMPLES]"));
    let samples: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(300);
    let tpm = Swtpm::start();
    let dir = tempfile::tempdir().unwrap();
    let daemon = start(&bin, &tpm, dir.path());
    let (tpmd, keyd) = (dir.path().join("tpmd.sock"), dir.path().join("keyd.sock"));
    open_to_others(dir.path(), &keyd);

    let blob = {
        let keys = request(&tpmd, "GET", &format!("/get_tpm_keys?{TPMD_API}"), None);
        let b64 = |v: &Value| aziot_tpm_common::from_b64(v.as_str().unwrap()).unwrap();
        dps_attestation::build_authentication_key(&b64(&keys["endorsement_key"]), &b64(&keys["storage_root_key"]), &[1; 32]).unwrap()
    };
    request(&tpmd, "POST", &format!("/import_auth_key?{TPMD_API}"), Some(json!({ "key": aziot_tpm_common::b64(&blob) })));
    let handle = request(&keyd, "POST", &format!("/key?{KEYD_API}"), Some(json!({ "keyId": "bench", "usage": "sign" })))["keyHandle"]
        .as_str()
        .unwrap()
        .to_owned();
    let sign_body = json!({ "keyHandle": handle, "algorithm": "HMAC-SHA256", "parameters": { "message": "aGk=" } }).to_string();
    let tpmd_sign = || {
        request(&tpmd, "POST", &format!("/sign_with_auth_key?{TPMD_API}"), Some(json!({ "data": "aGk=" })));
    };
    let keyd_other = || {
        let (status, _) = raw_as(OTHER_UID, &keyd, &format!("POST /sign?{KEYD_API}"), sign_body.as_bytes());
        assert_eq!(status, 200);
    };

    println!("## keyd-tpm under a flood of {FLOOD} idle connections (open-file limit 1024)");
    let quiet_tpmd = measure(samples, tpmd_sign);
    let quiet_keyd = measure(samples / 3, keyd_other);
    let flood_started = Instant::now();
    let flood = flood_as(OTHER_UID + 1, &keyd, FLOOD);
    let opened = flood_started.elapsed();
    let first = Instant::now();
    tpmd_sign();
    let first_tpmd = first.elapsed();
    let first = Instant::now();
    keyd_other();
    let first_keyd = first.elapsed();
    let busy_tpmd = measure(samples, tpmd_sign);
    let busy_keyd = measure(samples / 3, keyd_other);
    drop(flood);
    println!("flood opened in {:.0} ms; first answers after it: tpmd {:.1} ms, keyd (other uid) {:.1} ms", ms(opened), ms(first_tpmd), ms(first_keyd));
    row("tpmd sign_with_auth_key", &quiet_tpmd, &busy_tpmd);
    row("keyd HMAC sign, other uid (includes a fork per request)", &quiet_keyd, &busy_keyd);

    println!();
    println!("## keyd-tpm resident memory around 1 MiB request bodies");
    let idle = rss_kib(daemon.id());
    let message = aziot_tpm_common::b64(&vec![7u8; 760 * 1024]);
    let big = json!({ "keyHandle": handle, "algorithm": "HMAC-SHA256", "parameters": { "message": message } }).to_string();
    let mut peak = idle;
    for _ in 0..3 {
        let threads: Vec<_> = (0..10)
            .map(|_| {
                let (keyd, big) = (keyd.clone(), big.clone());
                std::thread::spawn(move || raw(&keyd, &format!("POST /sign?{KEYD_API}"), big.as_bytes()).0)
            })
            .collect();
        while !threads.iter().all(|t| t.is_finished()) {
            peak = peak.max(rss_kib(daemon.id()));
            std::thread::sleep(Duration::from_millis(5));
        }
        for t in threads {
            assert_eq!(t.join().unwrap(), 200);
        }
    }
    std::thread::sleep(Duration::from_secs(2));
    let after = rss_kib(daemon.id());
    println!("RSS idle {:.1} MiB, peak {:.1} MiB, 2 s after {:.1} MiB (after/idle {:.2}x)", mib(idle), mib(peak), mib(after), after as f64 / idle as f64);
    println!(
        "NAME flood-tpmd-sign-p50 ours {:.0} us quiet {:.0} us ratio {:.2}",
        us(busy_tpmd.p50),
        us(quiet_tpmd.p50),
        us(busy_tpmd.p50) / us(quiet_tpmd.p50)
    );
    println!("NAME rss-after-1MiB-bodies ours {:.1} MiB idle {:.1} MiB ratio {:.2}", mib(after), mib(idle), after as f64 / idle as f64);
    drop(daemon);
}

fn row(name: &str, quiet: &Summary, busy: &Summary) {
    println!(
        "{name}: p50 {:.0} us quiet, {:.0} us flooded ({:.2}x); p99 {:.0} / {:.0} us",
        us(quiet.p50),
        us(busy.p50),
        us(busy.p50) / us(quiet.p50),
        us(quiet.p99),
        us(busy.p99)
    );
}

fn measure(n: usize, f: impl Fn()) -> Summary {
    let wall = Instant::now();
    let samples = (0..n.max(1))
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .collect();
    Summary::of(samples, wall.elapsed())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn start(bin: &Path, tpm: &Swtpm, dir: &Path) -> ChildGuard {
    std::fs::write(
        dir.join("tpmd.toml"),
        format!("tcti = \"{}\"\nhomedir = \"{}\"\n[endpoints]\naziot_tpmd = \"unix://{}\"\n", tpm.tcti(), dir.join("tpmd").display(), dir.join("tpmd.sock").display()),
    )
    .unwrap();
    std::fs::write(
        dir.join("keyd.toml"),
        format!("[aziot_keys]\nhomedir_path = \"{}\"\n[endpoints]\naziot_keyd = \"unix://{}\"\n", dir.join("keys").display(), dir.join("keyd.sock").display()),
    )
    .unwrap();
    let mut command = Command::new(bin);
    command
        .env("AZIOT_TPMD_CONFIG", dir.join("tpmd.toml"))
        .env("AZIOT_TPMD_CONFIG_DIR", dir.join("none"))
        .env("AZIOT_KEYD_CONFIG", dir.join("keyd.toml"))
        .env("AZIOT_KEYD_CONFIG_DIR", dir.join("none"))
        .env("AZIOT_LOG", "error")
        .env("TSS2_LOG", "all+none")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    use std::os::unix::process::CommandExt;
    // SAFETY: setrlimit is async-signal-safe and touches only the child.
    unsafe {
        command.pre_exec(|| {
            let l = libc::rlimit { rlim_cur: 1024, rlim_max: 1024 };
            libc::setrlimit(libc::RLIMIT_NOFILE, &l);
            Ok(())
        });
    }
    let child = ChildGuard::spawn(command).expect("start keyd-tpm");
    let started = Instant::now();
    while UnixStream::connect(dir.join("keyd.sock")).is_err() || UnixStream::connect(dir.join("tpmd.sock")).is_err() {
        assert!(started.elapsed() < Duration::from_secs(30), "keyd-tpm did not start");
        std::thread::sleep(Duration::from_millis(2));
    }
    child
}

fn open_to_others(dir: &Path, keyd: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(keyd, std::fs::Permissions::from_mode(0o666)).unwrap();
}

/// One request over a new connection; the JSON answer (panics unless 2xx).
fn request(socket: &Path, method: &str, path: &str, body: Option<Value>) -> Value {
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let (status, answer) = raw(socket, &format!("{method} {path}"), body.as_bytes());
    assert!((200..300).contains(&status), "{path}: {status} {answer}");
    serde_json::from_str(&answer).unwrap_or(Value::Null)
}

fn raw(socket: &Path, request_line: &str, body: &[u8]) -> (u16, String) {
    let mut s = UnixStream::connect(socket).unwrap();
    write!(s, "{request_line} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n", body.len()).unwrap();
    s.write_all(body).unwrap();
    let mut out = Vec::new();
    let _ = std::io::Read::read_to_end(&mut s, &mut out);
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (status, body)
}

/// The same request from a forked child running as `uid`.
fn raw_as(uid: u32, socket: &Path, request_line: &str, body: &[u8]) -> (u16, String) {
    let mut pipe = [0; 2];
    // SAFETY: pipe writes two fds.
    unsafe { libc::pipe(pipe.as_mut_ptr()) };
    // SAFETY: the child switches user, does its request with std and exits without returning.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: as above.
        unsafe {
            libc::close(pipe[0]);
            if libc::setgid(uid) != 0 || libc::setuid(uid) != 0 {
                libc::_exit(2);
            }
        }
        let (status, _) = raw(socket, request_line, body);
        // SAFETY: writing two bytes to our pipe, then exiting.
        unsafe {
            let code = status.to_be_bytes();
            libc::write(pipe[1], code.as_ptr().cast(), 2);
            libc::_exit(0);
        }
    }
    let mut code = [0u8; 2];
    // SAFETY: reading two bytes from the child's pipe and reaping it.
    unsafe {
        libc::close(pipe[1]);
        libc::read(pipe[0], code.as_mut_ptr().cast(), 2);
        libc::close(pipe[0]);
        libc::waitpid(pid, std::ptr::null_mut(), 0);
    }
    (u16::from_be_bytes(code), String::new())
}

/// A child process running as `uid` that opens `n` connections to `socket`, sends each an
/// unfinished request head, and holds them until the returned guard is dropped.
fn flood_as(uid: u32, socket: &Path, n: usize) -> ChildGuard {
    let exe = std::env::current_exe().unwrap();
    let mut command = Command::new(exe);
    command.env("BENCH_FLOOD_SOCKET", socket).env("BENCH_FLOOD_N", n.to_string()).stdout(Stdio::piped());
    use std::os::unix::process::CommandExt;
    // SAFETY: async-signal-safe calls only, in the child.
    unsafe {
        command.pre_exec(move || {
            let l = libc::rlimit { rlim_cur: 20_000, rlim_max: 20_000 };
            libc::setrlimit(libc::RLIMIT_NOFILE, &l);
            if libc::setgid(uid) != 0 || libc::setuid(uid) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = ChildGuard::spawn(command).expect("start the flood");
    let mut line = [0u8; 1];
    let stdout = child.stdout().expect("the flood's stdout");
    std::io::Read::read_exact(stdout, &mut line).expect("the flood is in");
    child
}

/// The flood child (see [`flood_as`]): holds its connections until it is killed.
fn flood_child(socket: &str, n: usize) -> ! {
    let conns: Vec<UnixStream> = (0..n)
        .filter_map(|_| {
            let mut s = UnixStream::connect(socket).ok()?;
            // Refused connections are answered and closed: the write may fail, that is fine.
            let _ = s.write_all(b"POST /sign HTTP/1.1\r\nHost: x\r\n");
            Some(s)
        })
        .collect();
    assert!(conns.len() == n, "only {} of {n} connections opened", conns.len());
    let _ = std::io::stdout().write_all(b"x");
    let _ = std::io::stdout().flush();
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok()))
        .unwrap_or(0)
}
