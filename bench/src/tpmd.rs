//! Benchmark of keyd-tpm's TPM Service API: `sign_with_auth_key` over the Unix socket against the
//! raw tss-esapi TPM2_HMAC on the same swtpm, in one run, so the ratio is meaningful on a noisy
//! machine. Also: start-to-socket-ready time and idle RSS of the daemon.
//!
//! Usage: bench-tpmd <path to keyd-tpm binary> [requests per phase]

mod stats;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use stats::{us, Summary};
use testkit::{ChildGuard, Swtpm};
use tss_esapi::handles::{PersistentTpmHandle, TpmHandle};
use tss_esapi::interface_types::algorithm::HashingAlgorithm;
use tss_esapi::interface_types::session_handles::AuthSession;
use tss_esapi::structures::MaxBuffer;
use tss_esapi::tcti_ldr::TctiNameConf;

const DATA_LEN: usize = 64;

fn main() {
    let mut args = std::env::args().skip(1);
    let daemon_bin = PathBuf::from(args.next().expect("usage: bench-tpmd <keyd-tpm binary> [requests]"));
    let n: usize = args.next().map(|s| s.parse().expect("requests")).unwrap_or(2000);

    let tpm = Swtpm::start();
    let work = tempfile::tempdir().unwrap();

    // Start-up: time until the socket accepts a connection, over a few starts.
    let mut ready = Vec::new();
    for _ in 0..5 {
        let (child, t) = start_daemon(&daemon_bin, &tpm, work.path());
        ready.push(t);
        drop(child);
    }
    let (daemon, _) = start_daemon(&daemon_bin, &tpm, work.path());
    let socket = work.path().join("tpmd.sock");

    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let key = [0x42u8; 32];
    runtime.block_on(import(&socket, &key));
    std::thread::sleep(Duration::from_millis(300));
    let idle_rss = rss_kib(daemon.id());

    let data = vec![0x5a; DATA_LEN];
    let raw = raw_hmac(&tpm, &data, n);
    let one = runtime.block_on(over_socket(&socket, &data, n, 1));
    let sixteen = runtime.block_on(over_socket(&socket, &data, n, 16));
    let raw_again = raw_hmac(&tpm, &data, n);
    let busy_rss = rss_kib(daemon.id());

    ready.sort();
    println!("keyd-tpm TPM Service benchmark (swtpm, {DATA_LEN}-byte data, {n} requests per phase)");
    println!("| what | p50 µs | p99 µs | ops/s | p50 vs raw | ops/s vs raw |");
    println!("|---|---|---|---|---|---|");
    let row = |name: &str, s: &Summary| {
        println!(
            "| {name} | {:.0} | {:.0} | {:.0} | {:+.0} µs ({:.2}×) | {:.2}× |",
            us(s.p50), us(s.p99), s.ops_per_sec, us(s.p50) - us(raw.p50), us(s.p50) / us(raw.p50), s.ops_per_sec / raw.ops_per_sec
        )
    };
    row("raw tss-esapi TPM2_HMAC (password session)", &raw);
    row("sign_with_auth_key, 1 client", &one);
    row("sign_with_auth_key, 16 clients", &sixteen);
    row("raw tss-esapi TPM2_HMAC, again after", &raw_again);
    println!();
    println!(
        "start to socket ready: median {} ms (min {} ms, max {} ms, 5 starts)",
        ready[2].as_millis(), ready[0].as_millis(), ready[4].as_millis()
    );
    println!("RSS: idle {:.1} MiB, after the load {:.1} MiB", idle_rss as f64 / 1024.0, busy_rss as f64 / 1024.0);
    println!("errors / non-200 answers under load: {}", 2 * n - one.count - sixteen.count);
}

fn start_daemon(bin: &Path, tpm: &Swtpm, dir: &Path) -> (ChildGuard, Duration) {
    let socket = dir.join("tpmd.sock");
    let config = dir.join("config.toml");
    std::fs::write(
        &config,
        format!(
            "tcti = \"{}\"\nhomedir = \"{}\"\nmax_requests = 32\n[endpoints]\naziot_tpmd = \"unix://{}\"\n",
            tpm.tcti(),
            dir.join("home").display(),
            socket.display()
        ),
    )
    .unwrap();
    let _ = std::fs::remove_file(&socket);
    let mut command = Command::new(bin);
    command
        .env("AZIOT_TPMD_CONFIG", &config)
        .env("AZIOT_TPMD_CONFIG_DIR", dir.join("none"))
        .env("AZIOT_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    let started = Instant::now();
    let child = ChildGuard::spawn(command).expect("start keyd-tpm");
    loop {
        if std::os::unix::net::UnixStream::connect(&socket).is_ok() {
            return (child, started.elapsed());
        }
        assert!(started.elapsed() < Duration::from_secs(30), "keyd-tpm did not start");
        std::thread::sleep(Duration::from_micros(200));
    }
}

async fn import(socket: &Path, key: &[u8]) {
    let client = aziot_http::UdsClient::new(socket);
    let api = format!("api-version={}", aziot_tpm_common::http::API_VERSION);
    let (_, body) = client.request(aziot_http::Method::GET, &format!("/get_tpm_keys?{api}"), None).await.unwrap();
    let keys: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let ek = aziot_tpm_common::from_b64(keys["endorsement_key"].as_str().unwrap()).unwrap();
    let srk = aziot_tpm_common::from_b64(keys["storage_root_key"].as_str().unwrap()).unwrap();
    let blob = dps_attestation::build_authentication_key(&ek, &srk, key).unwrap();
    let req = serde_json::json!({ "key": aziot_tpm_common::b64(&blob) }).to_string();
    let (status, body) = client
        .request(aziot_http::Method::POST, &format!("/import_auth_key?{api}"), Some(req.into_bytes().into()))
        .await
        .unwrap();
    assert!(status.is_success(), "import failed: {}", String::from_utf8_lossy(&body));
}

/// `n` requests spread over `clients` concurrent keep-alive connections.
async fn over_socket(socket: &Path, data: &[u8], n: usize, clients: usize) -> Summary {
    let path = format!("/sign_with_auth_key?api-version={}", aziot_tpm_common::http::API_VERSION);
    let body: aziot_http::Bytes = serde_json::json!({ "data": aziot_tpm_common::b64(data) }).to_string().into_bytes().into();
    let started = Instant::now();
    let mut tasks = Vec::new();
    let shared = Arc::new((path, body));
    for c in 0..clients {
        let socket = socket.to_owned();
        let shared = shared.clone();
        let count = n / clients + usize::from(c < n % clients);
        tasks.push(tokio::spawn(async move {
            let client = aziot_http::UdsClient::new(&socket);
            let mut samples = Vec::with_capacity(count);
            for _ in 0..count {
                let t = Instant::now();
                match client.request(aziot_http::Method::POST, &shared.0, Some(shared.1.clone())).await {
                    Ok((status, _)) if status.is_success() => samples.push(t.elapsed()),
                    Ok((status, body)) => eprintln!("non-200: {status} {}", String::from_utf8_lossy(&body)),
                    Err(e) => eprintln!("request error: {e}"),
                }
            }
            samples
        }));
    }
    let mut samples = Vec::new();
    for t in tasks {
        samples.extend(t.await.unwrap());
    }
    Summary::of(samples, started.elapsed())
}

/// The reference: the same HMAC straight through tss-esapi, password session, no daemon.
fn raw_hmac(tpm: &Swtpm, data: &[u8], n: usize) -> Summary {
    let mut ctx = tss_esapi::Context::new(TctiNameConf::from_str(&tpm.tcti()).unwrap()).unwrap();
    let key = ctx
        .tr_from_tpm_public(TpmHandle::Persistent(PersistentTpmHandle::new(0x8100_0100).unwrap()))
        .unwrap();
    let buffer = MaxBuffer::try_from(data.to_vec()).unwrap();
    let mut samples = Vec::with_capacity(n);
    let started = Instant::now();
    for _ in 0..n {
        let t = Instant::now();
        ctx.execute_with_session(Some(AuthSession::Password), |c| c.hmac(key, buffer.clone(), HashingAlgorithm::Sha256))
            .unwrap();
        samples.push(t.elapsed());
    }
    Summary::of(samples, started.elapsed())
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok()))
        .unwrap_or(0)
}
