//! Benchmark of keyd-tpm's Keys Service: `/sign` HMAC-SHA256, `/sign` ECDSA P-256 and RSA-2048
//! (RSA-PKCS1 through `/encrypt`) over the Unix socket, against the same TPM command run raw
//! through tss-esapi on the same swtpm with the very same key object (read from the daemon's
//! key store and loaded under the SRK), in one run, so the ratios mean something on a noisy
//! machine. The raw phases run while the daemon is stopped, so both use the TPM's few object
//! slots alone; a second raw phase after the socket phases brackets the drift.
//!
//! Given upstream's release dir, upstream's aziot-keyd (its file-key engine, libaziot_keys.so)
//! answers the same requests in the same run, one client, with keys it made itself.
//!
//! Usage: bench-keyd <path to keyd-tpm binary> [requests per phase] [upstream release dir]

mod keyd_daemon;
mod stats;
mod upstream;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Instant;

use serde_json::{json, Value};
use keyd_daemon::{call, flush_transient_objects, start_daemon, stop, stored_object, wait_for, API, SRK};
use stats::{cpu_time, us, Summary};
use testkit::{ChildGuard, Swtpm};
use tss_esapi::constants::tss::{TPM2_RH_NULL, TPM2_ST_HASHCHECK};
use tss_esapi::handles::{KeyHandle, PersistentTpmHandle, TpmHandle};
use tss_esapi::interface_types::algorithm::HashingAlgorithm;
use tss_esapi::interface_types::session_handles::AuthSession;
use tss_esapi::structures::{
    Data, Digest, HashcheckTicket, MaxBuffer, Private, Public, PublicKeyRsa,
    RsaDecryptionScheme, SignatureScheme,
};
use tss_esapi::tcti_ldr::TctiNameConf;
use tss_esapi::tss2_esys::TPMT_TK_HASHCHECK;

const MESSAGE_LEN: usize = 64;

/// The three operations: how to ask keyd-tpm, and how to run the same TPM command raw.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Op {
    Hmac,
    Ecdsa,
    Rsa,
}

impl Op {
    const ALL: [Op; 3] = [Op::Hmac, Op::Ecdsa, Op::Rsa];

    fn name(self) -> &'static str {
        match self {
            Op::Hmac => "HMAC-SHA256 (/sign, 64-byte message)",
            Op::Ecdsa => "ECDSA P-256 (/sign, SHA-256 digest)",
            Op::Rsa => "RSA-2048 (/encrypt RSA-PKCS1, DigestInfo)",
        }
    }

    fn key_id(self) -> &'static str {
        match self {
            Op::Hmac => "bench-hmac",
            Op::Ecdsa => "bench-ecdsa",
            Op::Rsa => "bench-rsa",
        }
    }

    /// (path, body) of the request for `handle`.
    fn request(self, handle: &str) -> (&'static str, Value) {
        let b64 = aziot_tpm_common::b64;
        match self {
            Op::Hmac => (
                "/sign",
                json!({ "keyHandle": handle, "algorithm": "HMAC-SHA256", "parameters": { "message": b64(&[0x5a; MESSAGE_LEN]) } }),
            ),
            Op::Ecdsa => (
                "/sign",
                json!({ "keyHandle": handle, "algorithm": "ECDSA", "parameters": { "digest": b64(&[0x5a; 32]) } }),
            ),
            Op::Rsa => (
                "/encrypt",
                json!({ "keyHandle": handle, "algorithm": "RSA-PKCS1", "plaintext": b64(&digest_info()) }),
            ),
        }
    }
}

fn digest_info() -> Vec<u8> {
    let mut info = vec![
        0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01,
        0x05, 0x00, 0x04, 0x20,
    ];
    info.extend_from_slice(&[0x5a; 32]);
    info
}

fn main() {
    let mut args = std::env::args().skip(1);
    let daemon_bin = PathBuf::from(
        args.next()
            .expect("usage: bench-keyd <keyd-tpm binary> [requests]"),
    );
    let n: usize = args
        .next()
        .map(|s| s.parse().expect("requests"))
        .unwrap_or(1000);
    let upstream_dir = upstream::dir(args.next());

    let tpm = Swtpm::start();
    let work = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let socket = work.path().join("keyd.sock");

    // Create the keys through the API, then read the objects the daemon stored.
    let daemon = start_daemon(&daemon_bin, &tpm, work.path());
    runtime.block_on(create_keys(&socket));
    stop(daemon);
    let objects: Vec<(Public, Private)> = Op::ALL
        .iter()
        .map(|op| stored_object(&work.path().join("keys/keys"), op.key_id()))
        .collect();

    let raw: Vec<Summary> = Op::ALL
        .iter()
        .zip(&objects)
        .map(|(op, object)| raw_phase(&tpm, *op, object, n))
        .collect();

    let daemon = start_daemon(&daemon_bin, &tpm, work.path());
    let handles = runtime.block_on(load_handles(&socket));
    let mut over_socket = Vec::new();
    let mut cpu_per_request = Vec::new();
    for (op, handle) in Op::ALL.iter().zip(&handles) {
        let cpu_before = cpu_time(daemon.id());
        let one = runtime.block_on(socket_phase(&socket, *op, handle, n, 1));
        let sixteen = runtime.block_on(socket_phase(&socket, *op, handle, n, 16));
        cpu_per_request
            .push((cpu_time(daemon.id()) - cpu_before) / (one.count + sixteen.count).max(1) as f64);
        over_socket.push((one, sixteen));
    }
    let rss = rss_kib(daemon.id());
    stop(daemon);
    let raw_again: Vec<Summary> = Op::ALL
        .iter()
        .zip(&objects)
        .map(|(op, object)| raw_phase(&tpm, *op, object, n))
        .collect();

    // Upstream's keyd: its own dir and keys (files, no TPM), one client per operation.
    let upstream: Option<Vec<Summary>> = upstream_dir.map(|up| {
        let dir = tempfile::tempdir().unwrap();
        let daemon = start_upstream(&up, dir.path());
        let socket = dir.path().join("keyd.sock");
        runtime.block_on(create_keys(&socket));
        let handles = runtime.block_on(load_handles(&socket));
        let phases = Op::ALL
            .iter()
            .zip(&handles)
            .map(|(op, handle)| runtime.block_on(socket_phase(&socket, *op, handle, n, 1)))
            .collect();
        stop(daemon);
        phases
    });

    println!("keyd-tpm Keys Service benchmark (swtpm, {n} requests per phase; raw = the same TPM command on the same key object through tss-esapi, password session, no daemon)");
    println!("Ratios are against the better of the two raw phases (lower p50, higher ops/s), so noise counts against keyd-tpm.");
    println!();
    println!("| operation | path | p50 µs | p99 µs | ops/s | p50 vs raw | ops/s vs raw |");
    println!("|---|---|---|---|---|---|---|");
    let mut errors = 0;
    for (i, op) in Op::ALL.iter().enumerate() {
        let (best_p50, best_ops) = (
            raw[i].p50.min(raw_again[i].p50),
            raw[i].ops_per_sec.max(raw_again[i].ops_per_sec),
        );
        let row = |name: &str, s: &Summary| {
            println!(
                "| {} | {name} | {:.0} | {:.0} | {:.0} | {:+.0} µs ({:.2}×) | {:.2}× |",
                op.name(),
                us(s.p50),
                us(s.p99),
                s.ops_per_sec,
                us(s.p50) - us(best_p50),
                us(s.p50) / us(best_p50),
                s.ops_per_sec / best_ops
            )
        };
        row("raw tss-esapi", &raw[i]);
        row("keyd.sock, 1 client", &over_socket[i].0);
        row("keyd.sock, 16 clients", &over_socket[i].1);
        row("raw tss-esapi, again after", &raw_again[i]);
        if let Some(up) = &upstream {
            row("upstream aziot-keyd (file keys), 1 client", &up[i]);
        }
        errors += 2 * n - over_socket[i].0.count - over_socket[i].1.count;
    }
    println!();
    for (op, cpu) in Op::ALL.iter().zip(&cpu_per_request) {
        println!(
            "keyd-tpm CPU time per request, {}: {:.0} µs (user + system, all its threads)",
            op.name(),
            cpu * 1e6
        );
    }
    println!(
        "RSS of keyd-tpm after the load: {:.1} MiB",
        rss as f64 / 1024.0
    );
    println!("errors / non-200 answers under load: {errors}");
    println!();
    for (i, figure) in ["keyd-sign-HMAC", "keyd-sign-ECDSA-P256", "keyd-RSA-2048"].iter().enumerate() {
        let best_raw = raw[i].p50.min(raw_again[i].p50);
        let up = upstream.as_ref().map(|u| format!("{:.0}", us(u[i].p50))).unwrap_or_else(|| "-".into());
        println!("FIGURE {figure}-p50-us ours {:.0} upstream {up} raw {:.0}", us(over_socket[i].0.p50), us(best_raw));
    }
}

/// Upstream's aziot-keyd from its release dir `up`, with its state and socket in `dir`.
fn start_upstream(up: &Path, dir: &Path) -> ChildGuard {
    let config = dir.join("keyd.toml");
    let socket = dir.join("keyd.sock");
    std::fs::create_dir_all(dir.join("keys")).unwrap();
    std::fs::write(
        &config,
        format!(
            "[aziot_keys]\nhomedir_path = \"{}\"\n[endpoints]\naziot_keyd = \"unix://{}\"\n",
            dir.join("keys").display(),
            socket.display()
        ),
    )
    .unwrap();
    let mut command = upstream::command(up, "aziot-keyd", dir);
    command
        .env("AZIOT_KEYD_CONFIG", &config)
        .env("AZIOT_KEYD_CONFIG_DIR", dir.join("none"))
        .env("AZIOT_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    let child = ChildGuard::spawn(command).expect("start upstream aziot-keyd");
    wait_for(&socket, "upstream aziot-keyd");
    child
}

async fn create_keys(socket: &Path) {
    let client = aziot_http::UdsClient::new(socket);
    let post = aziot_http::Method::POST;
    call(
        &client,
        post.clone(),
        "/key",
        Some(&json!({ "keyId": Op::Hmac.key_id(), "keyBytes": null, "usage": "sign" })),
    )
    .await;
    call(
        &client,
        post.clone(),
        "/keypair",
        Some(&json!({ "keyId": Op::Ecdsa.key_id(), "preferredAlgorithms": "ec-p256" })),
    )
    .await;
    call(
        &client,
        post,
        "/keypair",
        Some(&json!({ "keyId": Op::Rsa.key_id(), "preferredAlgorithms": "rsa-2048" })),
    )
    .await;
}

async fn load_handles(socket: &Path) -> Vec<String> {
    let client = aziot_http::UdsClient::new(socket);
    let mut handles = Vec::new();
    for (op, kind) in [
        (Op::Hmac, "key"),
        (Op::Ecdsa, "keypair"),
        (Op::Rsa, "keypair"),
    ] {
        let v = call(
            &client,
            aziot_http::Method::GET,
            &format!("/{kind}/{}", op.key_id()),
            None,
        )
        .await;
        handles.push(v["keyHandle"].as_str().expect("keyHandle").to_owned());
    }
    handles
}

/// `n` requests spread over `clients` concurrent keep-alive connections.
async fn socket_phase(socket: &Path, op: Op, handle: &str, n: usize, clients: usize) -> Summary {
    let (path, body) = op.request(handle);
    let shared = Arc::new((
        format!("{path}?{API}"),
        aziot_http::Bytes::from(body.to_string().into_bytes()),
    ));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let (socket, shared) = (socket.to_owned(), shared.clone());
        let count = n / clients + usize::from(c < n % clients);
        tasks.push(tokio::spawn(async move {
            let client = aziot_http::UdsClient::new(&socket);
            let mut samples = Vec::with_capacity(count);
            for _ in 0..count {
                let t = Instant::now();
                match client
                    .request(aziot_http::Method::POST, &shared.0, Some(shared.1.clone()))
                    .await
                {
                    Ok((status, _)) if status.is_success() => samples.push(t.elapsed()),
                    Ok((status, body)) => {
                        eprintln!("non-200: {status} {}", String::from_utf8_lossy(&body))
                    }
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

/// The reference: the same command straight through tss-esapi, the key loaded once.
fn raw_phase(tpm: &Swtpm, op: Op, (public, private): &(Public, Private), n: usize) -> Summary {
    let mut ctx = tss_esapi::Context::new(TctiNameConf::from_str(&tpm.tcti()).unwrap()).unwrap();
    flush_transient_objects(&mut ctx);
    let srk = ctx
        .tr_from_tpm_public(TpmHandle::Persistent(
            PersistentTpmHandle::new(SRK).unwrap(),
        ))
        .unwrap();
    let key: KeyHandle = ctx
        .execute_with_session(Some(AuthSession::Password), |c| {
            c.load(srk.into(), private.clone(), public.clone())
        })
        .expect("load the key object");
    let message = MaxBuffer::try_from(vec![0x5a; MESSAGE_LEN]).unwrap();
    let digest = Digest::try_from(vec![0x5a; 32]).unwrap();
    let ticket = HashcheckTicket::try_from(TPMT_TK_HASHCHECK {
        tag: TPM2_ST_HASHCHECK,
        hierarchy: TPM2_RH_NULL,
        digest: Default::default(),
    })
    .unwrap();
    let mut block = vec![0x00, 0x01];
    block.resize(256 - digest_info().len() - 1, 0xFF);
    block.push(0x00);
    block.extend_from_slice(&digest_info());
    let block = PublicKeyRsa::try_from(block).unwrap();

    let mut samples = Vec::with_capacity(n);
    let started = Instant::now();
    for _ in 0..n {
        let t = Instant::now();
        let result = ctx.execute_with_session(Some(AuthSession::Password), |c| match op {
            Op::Hmac => c
                .hmac(key.into(), message.clone(), HashingAlgorithm::Sha256)
                .map(drop),
            Op::Ecdsa => c
                .sign(key, digest.clone(), SignatureScheme::Null, ticket.clone())
                .map(drop),
            Op::Rsa => c
                .rsa_decrypt(
                    key,
                    block.clone(),
                    RsaDecryptionScheme::Null,
                    Data::default(),
                )
                .map(drop),
        });
        result.expect("raw TPM command");
        samples.push(t.elapsed());
    }
    let summary = Summary::of(samples, started.elapsed());
    ctx.flush_context(key.into()).unwrap();
    summary
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}
