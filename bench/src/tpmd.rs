//! Benchmark of keyd-tpm's TPM Service API: `sign_with_auth_key` (64 B and 4 KiB) and
//! `import_auth_key` over the Unix socket against the raw TPM commands through tss-esapi on the
//! same swtpm (TPM2_HMAC; HMAC_Start + SequenceUpdate + SequenceComplete), in one run, so the
//! ratio is meaningful on a noisy machine; and, given upstream's release build, upstream's
//! aziot-tpmd measured the same way in the same run on a swtpm of its own. Also: start-to-socket-
//! ready time and idle RSS of the daemon. Ends with `FIGURE name ours X upstream Y raw Z` lines
//! (`-` where a column does not apply) that bench/run.sh collects.
//!
//! Usage: bench-tpmd <path to keyd-tpm binary> [requests per phase] [upstream release dir]

mod stats;
mod upstream;

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

/// Imports timed per implementation (the median is reported).
const IMPORTS: usize = 9;

fn main() {
    let mut args = std::env::args().skip(1);
    let daemon_bin = PathBuf::from(args.next().expect("usage: bench-tpmd <keyd-tpm binary> [requests] [upstream dir]"));
    let n: usize = args.next().map(|s| s.parse().expect("requests")).unwrap_or(2000);
    let upstream_dir = upstream::dir(args.next());

    let tpm = Swtpm::start();
    let work = tempfile::tempdir().unwrap();

    // Start-up: time until the socket accepts a connection, over a few starts.
    let mut ready = Vec::new();
    for _ in 0..5 {
        let (child, t) = start_daemon(&Impl::Ours(daemon_bin.clone()), &tpm, work.path());
        ready.push(t);
        drop(child);
    }
    let (daemon, _) = start_daemon(&Impl::Ours(daemon_bin.clone()), &tpm, work.path());
    let socket = work.path().join("tpmd.sock");

    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let import_times = runtime.block_on(imports(&socket));
    std::thread::sleep(Duration::from_millis(300));
    let idle_rss = rss_kib(daemon.id());

    let data = vec![0x5a; DATA_LEN];
    let long = vec![0x5a; LONG_LEN];
    let raw = raw_hmac(&tpm, &data, n);
    let raw_long = raw_sequence_hmac(&tpm, &long, n / 4);
    let one = runtime.block_on(over_socket(&socket, &data, n, 1));
    let sixteen = runtime.block_on(over_socket(&socket, &data, n, 16));
    let one_long = runtime.block_on(over_socket(&socket, &long, n / 4, 1));
    let floor = runtime.block_on(http_floor(&socket, n));
    let raw_again = raw_hmac(&tpm, &data, n);
    let raw_long_again = raw_sequence_hmac(&tpm, &long, n / 4);
    let busy_rss = rss_kib(daemon.id());
    drop(daemon);
    // The same sign through keyd-tpm's TPM owner in this process, with the daemon stopped: what
    // a request costs without HTTP.
    let in_process = owner_signs(&work.path().join("config.toml"), &data, n);
    let in_process_long = owner_signs(&work.path().join("config.toml"), &long, n / 4);

    // Upstream on a swtpm of its own, the same requests.
    let upstream = upstream_dir.map(|dir| {
        let tpm = Swtpm::start();
        let work = tempfile::tempdir().unwrap();
        // Upstream's tpmd expects the EK and SRK to be there (a device's provisioning made them).
        tpm.tpm2_provision_ek_srk(work.path());
        let (child, _) = start_daemon(&Impl::Upstream(dir), &tpm, work.path());
        let socket = work.path().join("tpmd.sock");
        let import_times = runtime.block_on(imports(&socket));
        let one = runtime.block_on(over_socket(&socket, &data, n, 1));
        let one_long = runtime.block_on(over_socket(&socket, &long, n / 4, 1));
        let floor = runtime.block_on(http_floor(&socket, n));
        drop(child);
        UpstreamRun { import: median(import_times), one, one_long, floor }
    });

    let best = |a: &Summary, b: &Summary| if a.p50 <= b.p50 { (a.p50, a.p99) } else { (b.p50, b.p99) };
    let (raw_p50, raw_p99) = best(&raw, &raw_again);
    let (raw_long_p50, _) = best(&raw_long, &raw_long_again);
    ready.sort();
    println!("keyd-tpm TPM Service benchmark (swtpm, {DATA_LEN}-byte data, {n} requests per phase; {LONG_LEN}-byte data, {} requests)", n / 4);
    println!("Ratios are against the better of the two raw phases, so noise counts against keyd-tpm.");
    println!("| what | p50 µs | p99 µs | ops/s | p50 vs raw |");
    println!("|---|---|---|---|---|");
    let row = |name: &str, s: &Summary, raw_p50: Duration| {
        println!(
            "| {name} | {:.0} | {:.0} | {:.0} | {:+.0} µs ({:.2}×) |",
            us(s.p50), us(s.p99), s.ops_per_sec, us(s.p50) - us(raw_p50), us(s.p50) / us(raw_p50)
        )
    };
    row("raw tss-esapi TPM2_HMAC (password session)", &raw, raw_p50);
    row("sign_with_auth_key, 1 client", &one, raw_p50);
    row("raw tss-esapi TPM2_HMAC, again after", &raw_again, raw_p50);
    row(&format!("raw HMAC sequence, {LONG_LEN} B (HMAC_Start, 3 SequenceUpdate, SequenceComplete)"), &raw_long, raw_long_p50);
    row(&format!("sign_with_auth_key {LONG_LEN} B, 1 client"), &one_long, raw_long_p50);
    row(&format!("raw HMAC sequence, {LONG_LEN} B, again after"), &raw_long_again, raw_long_p50);
    row("sign through keyd-tpm's TPM owner in-process (no HTTP)", &in_process, raw_p50);
    row(&format!("sign {LONG_LEN} B through keyd-tpm's TPM owner in-process (no HTTP)"), &in_process_long, raw_long_p50);
    row("HTTP round trip that touches no TPM (unknown path: 404), 1 client", &floor, raw_p50);
    if let Some(up) = &upstream {
        row("upstream aziot-tpmd sign_with_auth_key, 1 client", &up.one, raw_p50);
        row(&format!("upstream aziot-tpmd sign_with_auth_key {LONG_LEN} B, 1 client"), &up.one_long, raw_long_p50);
        row("upstream aziot-tpmd HTTP round trip that touches no TPM (404), 1 client", &up.floor, raw_p50);
    }
    println!(
        "sign_with_auth_key, 16 clients (queued behind one TPM: throughput only): {:.0} ops/s, {:.2}× raw's",
        sixteen.ops_per_sec,
        sixteen.ops_per_sec / raw.ops_per_sec.max(raw_again.ops_per_sec)
    );
    println!();
    let ours_import = median(import_times);
    println!(
        "import_auth_key (median of {IMPORTS}): ours {:.1} ms{}",
        ms(ours_import),
        upstream.as_ref().map(|u| format!(", upstream {:.1} ms", ms(u.import))).unwrap_or_default()
    );
    println!(
        "start to socket ready: median {} ms (min {} ms, max {} ms, 5 starts)",
        ready[2].as_millis(), ready[0].as_millis(), ready[4].as_millis()
    );
    println!("RSS: idle {:.1} MiB, after the load {:.1} MiB", idle_rss as f64 / 1024.0, busy_rss as f64 / 1024.0);
    println!("errors / non-200 answers under load: {}", 2 * n + n / 4 - one.count - sixteen.count - one_long.count);
    println!();
    let up = |f: &dyn Fn(&UpstreamRun) -> f64| upstream.as_ref().map(|u| format!("{:.0}", f(u))).unwrap_or_else(|| "-".into());
    println!("FIGURE tpmd-sign-64B-p50-us ours {:.0} upstream {} raw {:.0}", us(one.p50), up(&|u| us(u.one.p50)), us(raw_p50));
    println!("FIGURE tpmd-sign-64B-p99-us ours {:.0} upstream {} raw {:.0}", us(one.p99), up(&|u| us(u.one.p99)), us(raw_p99));
    println!("FIGURE tpmd-http-404-p50-us ours {:.0} upstream {} raw -", us(floor.p50), up(&|u| us(u.floor.p50)));
    println!("FIGURE tpmd-sign-in-process-p50-us ours {:.0} upstream - raw {:.0}", us(in_process.p50), us(raw_p50));
    println!("FIGURE tpmd-sign-4KiB-in-process-p50-us ours {:.0} upstream - raw {:.0}", us(in_process_long.p50), us(raw_long_p50));
    println!("FIGURE tpmd-sign-4KiB-p50-us ours {:.0} upstream {} raw {:.0}", us(one_long.p50), up(&|u| us(u.one_long.p50)), us(raw_long_p50));
    let up_import = upstream.as_ref().map(|u| format!("{:.1}", ms(u.import))).unwrap_or_else(|| "-".into());
    println!("FIGURE tpmd-import_auth_key-ms ours {:.1} upstream {up_import} raw -", ms(ours_import));
}

const LONG_LEN: usize = 4096;

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Which daemon a phase runs.
/// Upstream's aziot-tpmd measured the same way: its median import and its one-client phases.
struct UpstreamRun {
    import: Duration,
    one: Summary,
    one_long: Summary,
    floor: Summary,
}

enum Impl {
    Ours(PathBuf),
    /// Upstream's release dir (`aziotd` and the libraries it loads).
    Upstream(PathBuf),
}

fn start_daemon(which: &Impl, tpm: &Swtpm, dir: &Path) -> (ChildGuard, Duration) {
    let socket = dir.join("tpmd.sock");
    let config = dir.join("config.toml");
    // max_requests is ours: upstream's parser would not know it.
    let ours_only = if matches!(which, Impl::Ours(_)) { "max_requests = 32\n" } else { "" };
    std::fs::create_dir_all(dir.join("home")).unwrap();
    std::fs::write(
        &config,
        format!(
            "tcti = \"{}\"\nhomedir = \"{}\"\n{ours_only}[endpoints]\naziot_tpmd = \"unix://{}\"\n",
            tpm.tcti(),
            dir.join("home").display(),
            socket.display()
        ),
    )
    .unwrap();
    let _ = std::fs::remove_file(&socket);
    let mut command = match which {
        Impl::Ours(bin) => Command::new(bin),
        Impl::Upstream(up) => upstream::command(up, "aziot-tpmd", dir),
    };
    command
        .env("AZIOT_TPMD_CONFIG", &config)
        .env("AZIOT_TPMD_CONFIG_DIR", dir.join("none"))
        .env("AZIOT_LOG", "warn")
        .env_remove("LISTEN_FDS")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    let started = Instant::now();
    let child = ChildGuard::spawn(command).expect("start the TPM Service");
    loop {
        if std::os::unix::net::UnixStream::connect(&socket).is_ok() {
            return (child, started.elapsed());
        }
        assert!(started.elapsed() < Duration::from_secs(30), "the TPM Service did not start");
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// `IMPORTS` imports of DPS blobs (each key replacing the last), timed; the last key stays.
async fn imports(socket: &Path) -> Vec<Duration> {
    let client = aziot_http::UdsClient::new(socket);
    let api = format!("api-version={}", aziot_tpm_common::http::API_VERSION);
    let (_, body) = client.request(aziot_http::Method::GET, &format!("/get_tpm_keys?{api}"), None).await.unwrap();
    let keys: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let ek = aziot_tpm_common::from_b64(keys["endorsement_key"].as_str().unwrap()).unwrap();
    let srk = aziot_tpm_common::from_b64(keys["storage_root_key"].as_str().unwrap()).unwrap();
    let mut times = Vec::new();
    for i in 0..IMPORTS {
        let blob = dps_attestation::build_authentication_key(&ek, &srk, &[0x42 ^ i as u8; 32]).unwrap();
        let req = serde_json::json!({ "key": aziot_tpm_common::b64(&blob) }).to_string();
        let t = Instant::now();
        let (status, body) = client
            .request(aziot_http::Method::POST, &format!("/import_auth_key?{api}"), Some(req.into_bytes().into()))
            .await
            .unwrap();
        times.push(t.elapsed());
        assert!(status.is_success(), "import failed: {}", String::from_utf8_lossy(&body));
    }
    times
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

/// `n` requests for a path no route serves (404), one client: the HTTP round trip over the
/// socket that every request pays, with no TPM command in it.
async fn http_floor(socket: &Path, n: usize) -> Summary {
    let path = format!("/no_such_route?api-version={}", aziot_tpm_common::http::API_VERSION);
    let client = aziot_http::UdsClient::new(socket);
    let started = Instant::now();
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        match client.request(aziot_http::Method::GET, &path, None).await {
            Ok((status, _)) if status == 404 => samples.push(t.elapsed()),
            Ok((status, body)) => eprintln!("expected 404: {status} {}", String::from_utf8_lossy(&body)),
            Err(e) => eprintln!("request error: {e}"),
        }
    }
    Summary::of(samples, started.elapsed())
}

/// `n` signs through keyd-tpm's TPM owner in this process (a current-thread runtime, as a
/// caller on one HTTP worker would be), with the TPM settings the daemon read from `config`.
fn owner_signs(config: &Path, data: &[u8], n: usize) -> Summary {
    let text = std::fs::read_to_string(config).expect("read the daemon's config");
    let settings = toml::from_str::<keyd_tpm::config::TpmdConfig>(&text).expect("parse the daemon's config").tpm_settings();
    let owner = keyd_tpm::tpm::TpmHandle::start(settings).expect("open the TPM in-process");
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let mut samples = Vec::with_capacity(n);
    let started = Instant::now();
    for _ in 0..n {
        let t = Instant::now();
        runtime.block_on(owner.sign_with_auth_key(data.to_vec())).expect("in-process sign");
        samples.push(t.elapsed());
    }
    let summary = Summary::of(samples, started.elapsed());
    owner.shutdown();
    summary
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

/// The reference for data beyond one TPM buffer: HMAC_Start, SequenceUpdate per 1024 bytes but
/// the last, SequenceComplete, straight through ESYS (tss-esapi 7.7 has no wrappers for them),
/// password sessions, no daemon.
fn raw_sequence_hmac(tpm: &Swtpm, data: &[u8], n: usize) -> Summary {
    use std::ptr::null_mut;
    use tss_esapi::constants::tss::TPM2_ALG_SHA256;
    use tss_esapi::tss2_esys::*;
    const CHUNK: usize = 1024;
    let conf = std::ffi::CString::new(tpm.tcti()).unwrap();
    let (mut tcti, mut esys) = (null_mut(), null_mut());
    let buffer = |chunk: &[u8]| {
        let mut b = TPM2B_MAX_BUFFER { size: chunk.len() as u16, ..Default::default() };
        b.buffer[..chunk.len()].copy_from_slice(chunk);
        b
    };
    let (updates, last) = data.split_at(data.len() - ((data.len() - 1) % CHUNK + 1));
    let updates: Vec<TPM2B_MAX_BUFFER> = updates.chunks(CHUNK).map(buffer).collect();
    let last = buffer(last);
    let mut samples = Vec::with_capacity(n);
    let started;
    // SAFETY: plain ESYS calls on a context made here and finalized at the end; every pointer
    // passed is valid for the call, and what ESYS allocates is freed.
    unsafe {
        assert_eq!(Tss2_TctiLdr_Initialize(conf.as_ptr(), &mut tcti), 0);
        assert_eq!(Esys_Initialize(&mut esys, tcti, null_mut()), 0);
        let mut key: ESYS_TR = ESYS_TR_NONE;
        assert_eq!(Esys_TR_FromTPMPublic(esys, 0x8100_0100, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, &mut key), 0);
        let auth = TPM2B_AUTH::default();
        started = Instant::now();
        for _ in 0..n {
            let t = Instant::now();
            let mut seq: ESYS_TR = ESYS_TR_NONE;
            assert_eq!(Esys_HMAC_Start(esys, key, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE, &auth, TPM2_ALG_SHA256, &mut seq), 0);
            for u in &updates {
                assert_eq!(Esys_SequenceUpdate(esys, seq, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE, u), 0);
            }
            let (mut digest, mut ticket): (*mut TPM2B_DIGEST, *mut TPMT_TK_HASHCHECK) = (null_mut(), null_mut());
            assert_eq!(
                Esys_SequenceComplete(esys, seq, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE, &last, ESYS_TR_RH_NULL, &mut digest, &mut ticket),
                0
            );
            Esys_Free(digest.cast());
            Esys_Free(ticket.cast());
            samples.push(t.elapsed());
        }
        Esys_Finalize(&mut esys);
        Tss2_TctiLdr_Finalize(&mut tcti);
    }
    Summary::of(samples, started.elapsed())
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok()))
        .unwrap_or(0)
}
