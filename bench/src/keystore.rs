//! Benchmark of the Keys Service's key lifecycle: creating HMAC keys through `POST /key`, and
//! signing with a hot key against signing in turn with each of many stored keys (more keys than
//! the TPM has object slots, so each sign has to load its key first). Both are set against the
//! TPM commands they cannot do without, run raw through tss-esapi on the same swtpm in the same
//! run, and the fsync the key store does once per key, done after each create in the same directory:
//!
//! * create: raw `TPM2_Create` and `TPM2_Create` + `TPM2_Load` (+ `TPM2_FlushContext`);
//! * rotation: raw `TPM2_Load` + `TPM2_HMAC` + `TPM2_FlushContext` of each stored object in turn;
//! * hot: raw `TPM2_HMAC` on a loaded object.
//!
//! Usage: bench-keystore <path to keyd-tpm binary> [keys]

mod keyd_daemon;
mod stats;

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Instant;

use keyd_daemon::{call, flush_transient_objects, start_daemon, stop, stored_object, API, SRK};
use serde_json::json;
use stats::{us, Summary};
use testkit::Swtpm;
use tss_esapi::attributes::ObjectAttributesBuilder;
use tss_esapi::handles::{KeyHandle, ObjectHandle, PersistentTpmHandle, TpmHandle};
use tss_esapi::interface_types::algorithm::{HashingAlgorithm, PublicAlgorithm};
use tss_esapi::interface_types::session_handles::AuthSession;
use tss_esapi::structures::{
    Digest, KeyedHashScheme, MaxBuffer, Private, Public, PublicBuilder, PublicKeyedHashParameters,
};
use tss_esapi::tcti_ldr::TctiNameConf;

const MESSAGE: &str = "WlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWg==";

fn main() {
    let mut args = std::env::args().skip(1);
    let daemon_bin = PathBuf::from(args.next().expect("usage: bench-keystore <keyd-tpm binary> [keys]"));
    let keys: usize = args.next().map(|s| s.parse().expect("keys")).unwrap_or(1000);

    let tpm = Swtpm::start();
    let work = tempfile::tempdir().unwrap();
    let socket = work.path().join("keyd.sock");
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();

    let daemon = start_daemon(&daemon_bin, &tpm, work.path());
    let client = aziot_http::UdsClient::new(&socket);
    let keys_dir = work.path().join("keys/keys");
    let (create, fsync, handles) = runtime.block_on(create_keys(&client, keys, &keys_dir));
    // Two passes over every key: the first also verifies each handle once (a TPM HMAC; verified
    // handles are remembered), the second is what a caller rotating over its keys sees.
    runtime.block_on(sign_each(&client, &handles));
    let rotation = runtime.block_on(sign_each(&client, &handles));
    let hot = runtime.block_on(sign_each(&client, &vec![handles[0].clone(); keys]));
    stop(daemon);

    let objects: Vec<(Public, Private)> = (0..keys).map(|i| stored_object(&keys_dir, &key_id(i))).collect();
    let mut ctx = tss_esapi::Context::new(TctiNameConf::from_str(&tpm.tcti()).unwrap()).unwrap();
    flush_transient_objects(&mut ctx);
    let srk: KeyHandle = ctx
        .tr_from_tpm_public(TpmHandle::Persistent(PersistentTpmHandle::new(SRK).unwrap()))
        .unwrap()
        .into();
    let create_only = raw_create(&mut ctx, srk, keys, false);
    let raw_create_load = raw_create(&mut ctx, srk, keys, true);
    let raw_rotation = raw_signs(&mut ctx, srk, &objects, false);
    let raw_contexts = raw_context_signs(&mut ctx, srk, &objects);
    let raw_hot = raw_signs(&mut ctx, srk, &objects, true);

    println!("keyd-tpm key store benchmark (swtpm; {keys} HMAC keys created through POST /key, then HMAC-SHA256 /sign of 64 bytes with each in turn and with one; raw = tss-esapi on the same swtpm, password session, no daemon)");
    println!();
    println!("| figure | p50 µs | p99 µs | ops/s |");
    println!("|---|---|---|---|");
    for (name, s) in [
        ("keyd create (POST /key)", &create),
        ("raw TPM2_Create", &create_only),
        ("raw TPM2_Create + TPM2_Load + TPM2_FlushContext", &raw_create_load),
        ("key file write + fsync + link + directory fsync (after each create)", &fsync),
        ("keyd /sign rotating over the keys", &rotation),
        ("raw TPM2_Load + TPM2_HMAC + TPM2_FlushContext, each key in turn", &raw_rotation),
        ("raw TPM2_ContextLoad + TPM2_HMAC + TPM2_FlushContext, each key's saved context in turn", &raw_contexts),
        ("keyd /sign, one hot key", &hot),
        ("raw TPM2_HMAC, key loaded", &raw_hot),
    ] {
        println!("| {name} | {:.0} | {:.0} | {:.0} |", us(s.p50), us(s.p99), s.ops_per_sec);
    }
    let ratio = |a: &Summary, b: &Summary| us(a.p50) / us(b.p50);
    println!();
    println!("{} creates, {} signs per phase", create.count, rotation.count);
    // A create must make its key file durable; the disk's part is measured on its own (the same
    // writes and fsyncs in the same directory) and is what varies most between runs.
    let beyond_fsync = (us(create.p50) - us(fsync.p50)).max(0.0);
    println!("create vs raw Create + Load: {:.2}x; of which the fsync: {:.0} µs", ratio(&create, &raw_create_load), us(fsync.p50));
    println!("create beyond the fsync floor: {beyond_fsync:.0} µs, {:.2}x raw Create + Load", beyond_fsync / us(raw_create_load.p50));
    println!("rotation vs hot: {:.2}x (raw: {:.2}x); rotation vs raw Load + HMAC + Flush: {:.2}x", ratio(&rotation, &hot), ratio(&raw_rotation, &raw_hot), ratio(&rotation, &raw_rotation));
    println!();
    println!("FIGURE keyd-create-p50-us ours {:.0} upstream - raw {:.0}", us(create.p50), us(raw_create_load.p50));
    println!("FIGURE keyd-create-beyond-fsync-p50-us ours {beyond_fsync:.0} upstream - raw {:.0}", us(raw_create_load.p50));
    println!("FIGURE keyd-sign-rotating-{keys}-p50-us ours {:.0} upstream - raw {:.0}", us(rotation.p50), us(raw_rotation.p50));
    println!("FIGURE keyd-sign-hot-p50-us ours {:.0} upstream - raw {:.0}", us(hot.p50), us(raw_hot.p50));
}

fn key_id(i: usize) -> String {
    format!("bench-key-{i}")
}

/// `keys` creates through the API, each followed by what the key store does on disk for one new
/// key, done here in the same directory (so both see the disk in the same state: it is what
/// varies most between runs); the creates, those disk writes, and the handles.
async fn create_keys(client: &aziot_http::UdsClient, keys: usize, dir: &Path) -> (Summary, Summary, Vec<String>) {
    let mut samples = Vec::with_capacity(keys);
    let mut disk = Vec::with_capacity(keys);
    let mut handles = Vec::with_capacity(keys);
    for i in 0..keys {
        let t = Instant::now();
        let body = json!({ "keyId": key_id(i), "keyBytes": null, "usage": "sign" });
        let v = call(client, aziot_http::Method::POST, "/key", Some(&body)).await;
        samples.push(t.elapsed());
        handles.push(v["keyHandle"].as_str().expect("keyHandle").to_owned());
        disk.push(fsync_once(dir, i));
    }
    for i in 0..keys {
        let _ = std::fs::remove_file(dir.join(format!("fsync-{i}")));
    }
    // Interleaved, each phase's rate is over its own time.
    let (create_time, disk_time) = (samples.iter().sum(), disk.iter().sum());
    (Summary::of(samples, create_time), Summary::of(disk, disk_time), handles)
}

async fn sign_each(client: &aziot_http::UdsClient, handles: &[String]) -> Summary {
    let mut samples = Vec::with_capacity(handles.len());
    let started = Instant::now();
    for handle in handles {
        let body = json!({ "keyHandle": handle, "algorithm": "HMAC-SHA256", "parameters": { "message": MESSAGE } });
        let body = aziot_http::Bytes::from(body.to_string().into_bytes());
        let t = Instant::now();
        let (status, answer) =
            client.request(aziot_http::Method::POST, &format!("/sign?{API}"), Some(body)).await.expect("request");
        assert!(status.is_success(), "/sign: {status} {}", String::from_utf8_lossy(&answer));
        samples.push(t.elapsed());
    }
    Summary::of(samples, started.elapsed())
}

fn hmac_template() -> Public {
    let attributes = ObjectAttributesBuilder::new()
        .with_fixed_tpm(true)
        .with_fixed_parent(true)
        .with_sensitive_data_origin(true)
        .with_user_with_auth(true)
        .with_no_da(true)
        .with_sign_encrypt(true)
        .build()
        .unwrap();
    PublicBuilder::new()
        .with_public_algorithm(PublicAlgorithm::KeyedHash)
        .with_name_hashing_algorithm(HashingAlgorithm::Sha256)
        .with_object_attributes(attributes)
        .with_keyed_hash_parameters(PublicKeyedHashParameters::new(KeyedHashScheme::HMAC_SHA_256))
        .with_keyed_hash_unique_identifier(Digest::default())
        .build()
        .unwrap()
}

/// `n` HMAC keys created under the SRK, each also loaded and flushed if `load`.
fn raw_create(ctx: &mut tss_esapi::Context, srk: KeyHandle, n: usize, load: bool) -> Summary {
    let template = hmac_template();
    let mut samples = Vec::with_capacity(n);
    let started = Instant::now();
    for _ in 0..n {
        let t = Instant::now();
        ctx.execute_with_session(Some(AuthSession::Password), |c| {
            let created = c.create(srk, template.clone(), None, None, None, None)?;
            if load {
                let key = c.load(srk, created.out_private, created.out_public)?;
                c.flush_context(ObjectHandle::from(key))?;
            }
            Ok::<_, tss_esapi::Error>(())
        })
        .expect("raw create");
        samples.push(t.elapsed());
    }
    Summary::of(samples, started.elapsed())
}

/// One HMAC with each object in turn: loaded, used, flushed; or, if `hot`, the first object
/// loaded once and used for every sign.
fn raw_signs(ctx: &mut tss_esapi::Context, srk: KeyHandle, objects: &[(Public, Private)], hot: bool) -> Summary {
    let message = MaxBuffer::try_from(vec![0x5a; 64]).unwrap();
    let load = |ctx: &mut tss_esapi::Context, (public, private): &(Public, Private)| {
        ctx.execute_with_session(Some(AuthSession::Password), |c| c.load(srk, private.clone(), public.clone()))
            .expect("load")
    };
    let loaded = hot.then(|| load(ctx, &objects[0]));
    let mut samples = Vec::with_capacity(objects.len());
    let started = Instant::now();
    for object in objects {
        let t = Instant::now();
        let key = loaded.unwrap_or_else(|| load(ctx, object));
        ctx.execute_with_session(Some(AuthSession::Password), |c| c.hmac(key.into(), message.clone(), HashingAlgorithm::Sha256))
            .expect("hmac");
        if loaded.is_none() {
            ctx.flush_context(key.into()).expect("flush");
        }
        samples.push(t.elapsed());
    }
    let summary = Summary::of(samples, started.elapsed());
    if let Some(key) = loaded {
        ctx.flush_context(key.into()).expect("flush");
    }
    summary
}

/// As `raw_signs`, but each object loaded once beforehand and its context saved: a sign is
/// `TPM2_ContextLoad` of that context instead of `TPM2_Load` of the wrapped object.
fn raw_context_signs(ctx: &mut tss_esapi::Context, srk: KeyHandle, objects: &[(Public, Private)]) -> Summary {
    let message = MaxBuffer::try_from(vec![0x5a; 64]).unwrap();
    let saved: Vec<_> = objects
        .iter()
        .map(|(public, private)| {
            let key = ctx
                .execute_with_session(Some(AuthSession::Password), |c| c.load(srk, private.clone(), public.clone()))
                .expect("load");
            let context = ctx.context_save(key.into()).expect("context save");
            ctx.flush_context(key.into()).expect("flush");
            context
        })
        .collect();
    let mut samples = Vec::with_capacity(objects.len());
    let started = Instant::now();
    for context in saved {
        let t = Instant::now();
        let key = ctx.context_load(context).expect("context load");
        ctx.execute_with_session(Some(AuthSession::Password), |c| c.hmac(key, message.clone(), HashingAlgorithm::Sha256))
            .expect("hmac");
        ctx.flush_context(key).expect("flush");
        samples.push(t.elapsed());
    }
    Summary::of(samples, started.elapsed())
}

/// What the key store does once per new key, in its directory: a 0600 temp file written and
/// fsynced, linked into place, the directory fsynced.
fn fsync_once(dir: &Path, i: usize) -> std::time::Duration {
    let record = [b'x'; 900];
    let (temp, path) = (dir.join(format!(".fsync-{i}.tmp")), dir.join(format!("fsync-{i}")));
    let t = Instant::now();
    let directory = std::fs::File::open(dir).unwrap();
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&temp).unwrap();
    file.write_all(&record).unwrap();
    file.sync_all().unwrap();
    std::fs::hard_link(&temp, &path).unwrap();
    std::fs::remove_file(&temp).unwrap();
    directory.sync_all().unwrap();
    t.elapsed()
}
