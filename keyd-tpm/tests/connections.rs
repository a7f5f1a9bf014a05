//! keyd-tpm under clients that misbehave at the connection level: a flood of connections that
//! never finish their request, requests followed by a half-close, bodies over a route's limit.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use common::{blob_for, Daemon, API, KEYD_API};
use testkit::Swtpm;

/// A uid with no account and no principal: it may use handles it is given, nothing else.
const OTHER_UID: u32 = 54_321;

fn raise_own_fd_limit(want: u64) {
    // rlim_t is 32 bits on armhf.
    #[allow(clippy::useless_conversion)]
    let want = libc::rlim_t::try_from(want).unwrap_or(libc::RLIM_INFINITY);
    let mut l = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit on a struct we own.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut l);
        l.rlim_cur = l.rlim_max.min(want.max(l.rlim_cur));
        libc::setrlimit(libc::RLIMIT_NOFILE, &l);
    }
}

fn hmac_handle(daemon: &Daemon, id: &str) -> String {
    let r = daemon.keyd_post("/key", &serde_json::json!({ "keyId": id, "usage": "sign" }));
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    r.json()["keyHandle"].as_str().unwrap().to_owned()
}

fn sign_body(handle: &str) -> Vec<u8> {
    serde_json::json!({ "keyHandle": handle, "algorithm": "HMAC-SHA256", "parameters": { "message": "aGk=" } })
        .to_string()
        .into_bytes()
}

#[test]
fn ten_thousand_idle_connections_do_not_keep_anyone_else_from_the_tpm() {
    let tpm = Swtpm::start();
    let mut daemon = Daemon::start_with_result(&tpm, "");
    // What the packaged units gave keyd-tpm before they set LimitNOFILE=.
    daemon.open_file_limit = Some(1024);
    daemon.spawn().expect("keyd-tpm starts");
    assert_eq!(daemon.import(&blob_for(&daemon, &[7; 32])).status, 200);
    let handle = hmac_handle(&daemon, "flood-test");

    // The flood: 10,000 connections as root to keyd.sock, each with an unfinished request.
    raise_own_fd_limit(12_000);
    let flood_started = Instant::now();
    let flood: Vec<UnixStream> = (0..10_000)
        .map(|i| {
            let mut s = UnixStream::connect(daemon.keyd_socket())
                .unwrap_or_else(|e| panic!("connection {i}: {e}\n{}", daemon.log()));
            // A refused connection may already be closed: the write can fail, the 503 is there.
            let _ = s.write_all(b"POST /sign HTTP/1.1\r\nHost: x\r\n");
            s
        })
        .collect();
    eprintln!("10,000 connections opened in {:?}", flood_started.elapsed());

    // Another uid on the same socket, and the TPM Service on the other one, are served.
    let body: serde_json::Value = serde_json::from_slice(&sign_body(&handle)).unwrap();
    let r = daemon.keyd_as(OTHER_UID, "POST", "/sign", Some(&body));
    assert_eq!(r.status, 200, "another uid on keyd.sock: {}\n{}", String::from_utf8_lossy(&r.body), tail(&daemon));
    let signed = daemon.sign(b"during the flood");
    assert_eq!(signed.status, 200, "tpmd.sock: {}\n{}", String::from_utf8_lossy(&signed.body), tail(&daemon));
    // The flooding uid itself is answered too, with the reason.
    let own = testkit::http::request(&daemon.keyd_socket(), "POST", &format!("/sign?{KEYD_API}"), Some(&sign_body(&handle))).unwrap();
    assert_eq!(own.status, 503, "{}", String::from_utf8_lossy(&own.body));
    assert!(own.message().contains("too many open connections from uid 0"), "{}", own.message());

    // Nearly all of the flood was refused at once with a message, not left hanging.
    let refused = flood
        .iter()
        .filter(|s| {
            s.set_read_timeout(Some(Duration::from_millis(10))).unwrap();
            let mut buf = [0u8; 512];
            let mut s = *s;
            matches!(s.read(&mut buf), Ok(n) if n > 0 && buf[..n].starts_with(b"HTTP/1.1 503"))
        })
        .count();
    assert!(refused >= 9_000, "only {refused} of 10,000 flood connections were refused with 503");
    drop(flood);
    let log = daemon.log();
    assert!(log.matches("accept failed").count() <= 1, "{}", tail(&daemon));
    assert!(log.matches("refused").count() <= 5, "refusals are logged once per interval:\n{}", tail(&daemon));
}

#[test]
fn a_create_request_followed_by_a_half_close_creates_the_key() {
    let tpm = Swtpm::start();
    let daemon = Daemon::start(&tpm);
    for i in 0..10 {
        let body = serde_json::json!({ "keyId": format!("half-closed-{i}"), "usage": "sign" }).to_string();
        let mut s = UnixStream::connect(daemon.keyd_socket()).unwrap();
        write!(s, "POST /key?{KEYD_API} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len()).unwrap();
        s.shutdown(std::net::Shutdown::Write).unwrap();
        let mut answer = String::new();
        s.read_to_string(&mut answer).unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert_eq!(daemon.keyd_get(&format!("/key/half-closed-{i}")).status, 200);
    }
}

#[test]
fn bodies_over_a_routes_limit_are_413_and_the_daemon_stays_small() {
    let tpm = Swtpm::start();
    let daemon = Daemon::start(&tpm);
    let handle = hmac_handle(&daemon, "limits");
    // /sign takes up to 1 MiB: 700 KiB of message signs.
    let message = aziot_tpm_common::b64(&vec![1u8; 700 * 1024]);
    let body = serde_json::json!({ "keyHandle": handle, "algorithm": "HMAC-SHA256", "parameters": { "message": message } });
    assert_eq!(daemon.keyd_post("/sign", &body).status, 200);
    // 2 MiB is refused before it is read.
    let message = aziot_tpm_common::b64(&vec![1u8; 1536 * 1024]);
    let body = serde_json::json!({ "keyHandle": handle, "algorithm": "HMAC-SHA256", "parameters": { "message": message } });
    let r = daemon.keyd_post("/sign", &body);
    assert_eq!(r.status, 413, "{}", String::from_utf8_lossy(&r.body));
    assert!(r.message().contains("larger than the limit of 1048576 bytes"), "{}", r.message());
    // Routes without bulk data take 64 KiB; a 100 KiB key id is refused the same way.
    let r = daemon.keyd_post("/key", &serde_json::json!({ "keyId": "k".repeat(100 * 1024), "usage": "sign" }));
    assert_eq!(r.status, 413);
    let r = daemon.post("/import_auth_key", &serde_json::json!({ "key": "A".repeat(100 * 1024) }));
    assert_eq!(r.status, 413, "tpmd: {}", String::from_utf8_lossy(&r.body));
    let _ = API;
}

fn tail(daemon: &Daemon) -> String {
    let log = daemon.log();
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// Whether a process with uid `uid` and primary group `gid` (no others) can connect to `socket`.
fn can_connect_as(uid: u32, gid: u32, socket: &std::path::Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(socket.as_os_str().as_bytes()).unwrap();
    // SAFETY: the child only makes system calls on memory prepared before the fork, then exits.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0);
    if pid == 0 {
        // SAFETY: as above.
        unsafe {
            if libc::setgroups(0, std::ptr::null()) != 0 || libc::setgid(gid) != 0 || libc::setuid(uid) != 0 {
                libc::_exit(2);
            }
            let s = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0);
            let mut addr: libc::sockaddr_un = std::mem::zeroed();
            addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
            for (dst, src) in addr.sun_path.iter_mut().zip(path.as_bytes()) {
                *dst = *src as libc::c_char;
            }
            let len = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
            let connected = libc::connect(s, std::ptr::addr_of!(addr).cast(), len) == 0;
            libc::_exit(if connected { 0 } else { 3 });
        }
    }
    let mut status = 0;
    // SAFETY: reaping our own child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) != 2, "child could not switch user");
    libc::WEXITSTATUS(status) == 0
}

#[test]
fn sockets_bound_by_the_daemon_are_not_open_to_its_primary_group() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let tpm = Swtpm::start();
    let daemon = Daemon::start(&tpm);
    for dir in [daemon.dir.path().to_owned(), daemon.dir.path().join("run")] {
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    // keyd-tpm runs as root here; a process in its primary group (gid 0) that is not root, as
    // a Keys Service client sharing keyd-tpm's group would be, must not reach the TPM Service.
    for socket in [daemon.tpmd_socket(), daemon.keyd_socket()] {
        let meta = std::fs::metadata(&socket).unwrap();
        assert_ne!((meta.gid(), meta.mode() & 0o070), (0, 0o060), "{} is open to group root", socket.display());
        assert!(!can_connect_as(OTHER_UID, 0, &socket), "uid {OTHER_UID} in group root reached {}", socket.display());
    }
    assert!(daemon.log().contains("is open to its owner only"), "{}", tail(&daemon));
}
