//! Benchmark of identityd-dps against the local DPS + IoT Hub emulator (no injected delay: the
//! emulator assigns at once and sends `Retry-After: 0`), with keyd-tpm on a swtpm:
//!
//! * wall time of a full first-boot provisioning (daemon start → `POST /identities/device` 200:
//!   TPM challenge, two imports, polling), against upstream's built-in minimum (it sleeps 5 s
//!   before the first poll, so no upstream first boot takes less than that);
//! * restart from the `device_info` backup (no DPS);
//! * module identity create and get latency over identityd.sock (each a round trip to the hub
//!   plus key derivation in the Keys Service).
//!
//! Given upstream's release dir, upstream's aziot-identityd makes the same first boots and
//! restarts in the same run, on the same keyd-tpm (a drop-in for upstream's keyd and tpmd), so
//! only the identity services differ. Both trust the emulator's CA alone (upstream through
//! `SSL_CERT_FILE`, ours with `system_roots = false`); a second set of our first boots trusts
//! the system's roots too, which costs what this machine's environment makes it cost: with
//! `SSL_CERT_FILE` set, OpenSSL parses every root in that file at the first connection.
//!
//! Usage: bench-identityd <keyd-tpm> <iot-emulator> <identityd-dps> [first boots] [modules] [upstream dir]

#[allow(dead_code)] // shared with the other benchmarks
mod stats;
mod upstream;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use stats::{cpu_time, Summary};
use testkit::{ChildGuard, Swtpm};

/// Upstream identityd sleeps this long before its first DPS poll.
const UPSTREAM_FIRST_POLL: Duration = Duration::from_secs(5);

fn main() {
    let mut args = std::env::args().skip(1);
    let usage = "usage: bench-identityd <keyd-tpm> <iot-emulator> <identityd-dps> [first boots] [modules] [upstream dir]";
    let keyd_bin = PathBuf::from(args.next().expect(usage));
    let emulator_bin = PathBuf::from(args.next().expect(usage));
    let identityd_bin = PathBuf::from(args.next().expect(usage));
    let boots: usize = args.next().map(|s| s.parse().expect("first boots")).unwrap_or(5);
    let modules: usize = args.next().map(|s| s.parse().expect("modules")).unwrap_or(20);
    let upstream_dir = upstream::dir(args.next());

    let tpm = Swtpm::start();
    let work = tempfile::tempdir().unwrap();
    let dir = work.path();
    let _keyd = start_keyd(&keyd_bin, &tpm, dir);
    let (_emulator, ready) = start_emulator(&emulator_bin, dir);
    let registration_id = enroll(dir, &ready);
    // Upstream is given the emulator's CA as its whole trust store (SSL_CERT_FILE), so ours
    // trusts that CA alone too; a second set of boots adds the system's roots (our default).
    let ours = Identityd::Ours { bin: identityd_bin.clone(), system_roots: false };
    let (first_boot, first_boot_cpu, restart, restart_cpu) = boots_and_restarts(&ours, dir, &ready, &registration_id, boots);
    let with_system = Identityd::Ours { bin: identityd_bin.clone(), system_roots: true };
    let (_, system_boot_cpu, _, _) = boots_and_restarts(&with_system, dir, &ready, &registration_id, boots);
    let upstream = upstream_dir.map(|up| boots_and_restarts(&Identityd::Upstream(up), dir, &ready, &registration_id, boots));

    let (identityd, _) = start_identityd(&ours, dir, &ready, &registration_id);
    let socket = dir.join("identityd.sock");
    let mut create = Vec::new();
    let started = Instant::now();
    for i in 0..modules {
        let t = Instant::now();
        let r = call(&socket, "POST", "/identities/modules", Some(json!({"type": "aziot", "moduleId": format!("bench{i}")})));
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        create.push(t.elapsed());
    }
    let create_wall = started.elapsed();
    let mut get = Vec::new();
    let started = Instant::now();
    for round in 0..5 {
        for i in 0..modules {
            let t = Instant::now();
            let r = call(&socket, "GET", &format!("/identities/modules/bench{i}?type=aziot"), None);
            assert_eq!(r.status, 200, "round {round}: {}", String::from_utf8_lossy(&r.body));
            get.push(t.elapsed());
        }
    }
    let get_wall = started.elapsed();
    stop(identityd);

    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let median = |mut v: Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    let boot = median(first_boot.clone());
    println!("identityd-dps benchmark (swtpm, keyd-tpm, iot-emulator with no injected delay; {boots} boots, {modules} modules)");
    println!("| what | median ms | min ms | max ms |");
    println!("|---|---|---|---|");
    let mut rows = vec![
        ("first-boot provisioning (start → device identity)", &first_boot),
        ("identityd-dps CPU time by then (first boot)", &first_boot_cpu),
        ("restart from backup (no DPS)", &restart),
        ("identityd-dps CPU time by then (restart)", &restart_cpu),
        ("identityd-dps CPU time by then (first boot, the system's roots trusted too)", &system_boot_cpu),
    ];
    if let Some((boot, boot_cpu, again, again_cpu)) = &upstream {
        rows.extend([
            ("upstream aziot-identityd first boot (start → device identity)", boot),
            ("upstream aziot-identityd CPU time by then (first boot)", boot_cpu),
            ("upstream aziot-identityd restart", again),
            ("upstream aziot-identityd CPU time by then (restart)", again_cpu),
        ]);
    }
    for (name, samples) in rows {
        let min = samples.iter().min().copied().unwrap_or_default();
        let max = samples.iter().max().copied().unwrap_or_default();
        println!("| {name} | {:.0} | {:.0} | {:.0} |", ms(median(samples.clone())), ms(min), ms(max));
    }
    println!();
    println!("| module identity | p50 ms | p99 ms | ops/s |");
    println!("|---|---|---|---|");
    for (name, samples, wall) in [("create (POST /identities/modules)", create, create_wall), ("get (GET /identities/modules/{m})", get, get_wall)] {
        let s = Summary::of(samples, wall);
        println!("| {name} | {:.1} | {:.1} | {:.0} |", ms(s.p50), ms(s.p99), s.ops_per_sec);
    }
    println!();
    println!(
        "upstream identityd's first boot cannot take less than its fixed {:.0} s sleep before the first poll: \
         ours took {:.0} ms ({:.1}x less than that floor alone)",
        UPSTREAM_FIRST_POLL.as_secs_f64(),
        ms(boot),
        UPSTREAM_FIRST_POLL.as_secs_f64() / boot.as_secs_f64()
    );
    println!();
    let up = |pick: &dyn Fn(&Samples) -> &Vec<Duration>| {
        upstream.as_ref().map(|u| format!("{:.0}", ms(median(pick(u).clone())))).unwrap_or_else(|| "-".into())
    };
    println!("FIGURE identityd-first-boot-ms ours {:.0} upstream {} raw -", ms(boot), up(&|u| &u.0));
    println!("FIGURE identityd-restart-from-backup-ms ours {:.0} upstream {} raw -", ms(median(restart.clone())), up(&|u| &u.2));
    println!("FIGURE identityd-cpu-first-boot-ms ours {:.0} upstream {} raw -", ms(median(first_boot_cpu)), up(&|u| &u.1));
    println!("FIGURE identityd-cpu-first-boot-system-roots-ms ours {:.0} upstream - raw -", ms(median(system_boot_cpu)));
    println!("FIGURE identityd-cpu-restart-ms ours {:.0} upstream {} raw -", ms(median(restart_cpu)), up(&|u| &u.3));
}

/// First boots and restarts: wall times to the device identity, and CPU times by then.
type Samples = (Vec<Duration>, Vec<Duration>, Vec<Duration>, Vec<Duration>);

/// `boots` first boots (an empty homedir each time), then `boots` restarts on the last one's
/// state; the wall time to the device identity and the daemon's CPU time (user + system) then.
fn boots_and_restarts(which: &Identityd, dir: &Path, ready: &Value, registration_id: &str, boots: usize) -> Samples {
    let mut samples: Samples = Default::default();
    for first in [true, false] {
        for _ in 0..boots {
            if first {
                let _ = std::fs::remove_dir_all(which.homedir(dir));
            }
            let (child, t) = start_identityd(which, dir, ready, registration_id);
            let cpu = Duration::from_secs_f64(cpu_time(child.id()));
            let (wall, cpus) = if first { (&mut samples.0, &mut samples.1) } else { (&mut samples.2, &mut samples.3) };
            wall.push(t);
            cpus.push(cpu);
            stop(child);
        }
    }
    samples
}

/// Which identity service runs.
enum Identityd {
    /// Ours, trusting the system's roots too (`system_roots = true`, as this machine's
    /// environment gives them) or, like upstream here, only the emulator's CA.
    Ours { bin: PathBuf, system_roots: bool },
    /// Upstream's release dir (`aziotd` and the libraries it loads).
    Upstream(PathBuf),
}

impl Identityd {
    fn homedir(&self, dir: &Path) -> PathBuf {
        match self {
            Identityd::Ours { .. } => dir.join("identityd"),
            Identityd::Upstream(_) => dir.join("upstream-identityd"),
        }
    }
}

fn call(socket: &Path, method: &str, path: &str, body: Option<Value>) -> testkit::http::Response {
    let sep = if path.contains('?') { '&' } else { '?' };
    let path = format!("{path}{sep}api-version=2021-12-01");
    match body {
        Some(b) => testkit::http::json(socket, method, &path, &b).unwrap(),
        None => testkit::http::request(socket, method, &path, None).unwrap(),
    }
}

fn wait_socket(path: &Path, child: &mut ChildGuard, what: &str) {
    let started = Instant::now();
    while std::os::unix::net::UnixStream::connect(path).is_err() {
        assert!(child.try_wait().is_none(), "{what} exited");
        assert!(started.elapsed() < Duration::from_secs(30), "{what} did not start");
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn start_keyd(bin: &Path, tpm: &Swtpm, dir: &Path) -> ChildGuard {
    std::fs::write(
        dir.join("tpmd.toml"),
        format!(
            "tcti = \"{}\"\nhomedir = \"{}\"\n[endpoints]\naziot_tpmd = \"unix://{}\"\n",
            tpm.tcti(),
            dir.join("tpmd").display(),
            dir.join("tpmd.sock").display()
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("keyd.toml"),
        format!(
            "[aziot_keys]\nhomedir_path = \"{}\"\n[endpoints]\naziot_keyd = \"unix://{}\"\n",
            dir.join("keyd").display(),
            dir.join("keyd.sock").display()
        ),
    )
    .unwrap();
    let mut command = Command::new(bin);
    command
        .env("AZIOT_TPMD_CONFIG", dir.join("tpmd.toml"))
        .env("AZIOT_TPMD_CONFIG_DIR", dir.join("none"))
        .env("AZIOT_KEYD_CONFIG", dir.join("keyd.toml"))
        .env("AZIOT_KEYD_CONFIG_DIR", dir.join("none"))
        .env("AZIOT_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    let mut child = ChildGuard::spawn(command).expect("start keyd-tpm");
    wait_socket(&dir.join("tpmd.sock"), &mut child, "keyd-tpm");
    wait_socket(&dir.join("keyd.sock"), &mut child, "keyd-tpm");
    child
}

fn start_emulator(bin: &Path, dir: &Path) -> (ChildGuard, Value) {
    let out = dir.join("emulator.out");
    let mut command = Command::new(bin);
    command
        .arg("--data-dir")
        .arg(dir.join("emulator"))
        .args(["--assigning-ms", "0", "--retry-after", "0"])
        .env("EMULATOR_LOG", "warn")
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(Stdio::inherit());
    let mut child = ChildGuard::spawn(command).expect("start iot-emulator");
    let started = Instant::now();
    loop {
        let text = std::fs::read_to_string(&out).unwrap_or_default();
        if let Some(Ok(v)) = text.lines().next().map(serde_json::from_str::<Value>) {
            return (child, v);
        }
        assert!(child.try_wait().is_none(), "iot-emulator exited");
        assert!(started.elapsed() < Duration::from_secs(30), "iot-emulator printed no ready line");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn enc(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// Enrolls the TPM's EK through the emulator's DPS service API; returns the registration ID.
fn enroll(dir: &Path, ready: &Value) -> String {
    let keys = testkit::http::request(&dir.join("tpmd.sock"), "GET", "/get_tpm_keys?api-version=2020-09-01", None).unwrap();
    let ek = keys.json()["endorsement_key"].as_str().unwrap().to_owned();
    let registration_id = aziot_tpm_common::registration_id(&aziot_tpm_common::from_b64(&ek).unwrap());
    let cs = ready["service_connection_string"].as_str().unwrap();
    let field = |name: &str| cs.split(';').find_map(|p| p.strip_prefix(&format!("{name}="))).unwrap().to_owned();
    let key = aziot_tpm_common::from_b64(&field("SharedAccessKey")).unwrap();
    let sr = enc(&field("HostName").to_lowercase());
    let se = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() + 3600;
    let pkey = openssl::pkey::PKey::hmac(&key).unwrap();
    let mut signer = openssl::sign::Signer::new(openssl::hash::MessageDigest::sha256(), &pkey).unwrap();
    signer.update(format!("{sr}\n{se}").as_bytes()).unwrap();
    let sig = aziot_tpm_common::b64(&signer.sign_to_vec().unwrap());
    let token = format!("SharedAccessSignature sr={sr}&sig={}&se={se}&skn={}", enc(&sig), field("SharedAccessKeyName"));
    let body = json!({
        "registrationId": registration_id,
        "attestation": {"type": "tpm", "tpm": {"endorsementKey": ek}},
        "capabilities": {"iotEdge": true},
    });
    let url = format!("{}/enrollments/{registration_id}?api-version=2021-10-01", ready["dps_endpoint"].as_str().unwrap());
    let client = cloud_http::Client::builder().trust_ca_file(ready["ca_pem"].as_str().unwrap()).build().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let r = rt
        .block_on(client.request(
            cloud_http::Method::PUT,
            &url,
            &[("Authorization", token.as_str()), ("Content-Type", "application/json")],
            body.to_string().into_bytes(),
        ))
        .unwrap();
    assert!(r.status.is_success(), "enrollment failed: {} {}", r.status, r.text());
    registration_id
}

/// Starts the identity service and returns it with the time until the device identity is
/// served. Upstream's opens its socket only once provisioned, trusts only OpenSSL's default
/// store (SSL_CERT_FILE) and needs `registration_id`; the same file serves both.
fn start_identityd(which: &Identityd, dir: &Path, ready: &Value, registration_id: &str) -> (ChildGuard, Duration) {
    std::fs::write(
        dir.join("identityd.toml"),
        format!(
            "hostname = \"bench\"\nhomedir = \"{home}\"\n[provisioning]\nsource = \"dps\"\nglobal_endpoint = \"{dps}\"\n\
             scope_id = \"{scope}\"\n[provisioning.attestation]\nmethod = \"tpm\"\nregistration_id = \"{registration_id}\"\n\
             [cloud]\ntrust_bundle = \"{ca}\"\nsystem_roots = {system_roots}\n\
             [endpoints]\naziot_identityd = \"unix://{d}/identityd.sock\"\naziot_keyd = \"unix://{d}/keyd.sock\"\n\
             aziot_tpmd = \"unix://{d}/tpmd.sock\"\naziot_certd = \"unix://{d}/certd.sock\"\n",
            home = which.homedir(dir).display(),
            dps = ready["dps_endpoint"].as_str().unwrap(),
            scope = ready["id_scope"].as_str().unwrap(),
            ca = ready["ca_pem"].as_str().unwrap(),
            d = dir.display(),
            system_roots = matches!(which, Identityd::Ours { system_roots: true, .. }),
        ),
    )
    .unwrap();
    let socket = dir.join("identityd.sock");
    let _ = std::fs::remove_file(&socket);
    std::fs::create_dir_all(which.homedir(dir)).unwrap();
    let mut command = match which {
        Identityd::Ours { bin, .. } => Command::new(bin),
        Identityd::Upstream(up) => {
            let mut c = upstream::command(up, "aziot-identityd", dir);
            c.env("SSL_CERT_FILE", ready["ca_pem"].as_str().unwrap());
            c
        }
    };
    command
        .env("AZIOT_IDENTITYD_CONFIG", dir.join("identityd.toml"))
        .env("AZIOT_IDENTITYD_CONFIG_DIR", dir.join("none"))
        .env("AZIOT_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    let started = Instant::now();
    let mut child = ChildGuard::spawn(command).expect("start the identity service");
    wait_socket(&socket, &mut child, "the identity service");
    loop {
        let r = call(&socket, "POST", "/identities/device", Some(json!({"type": "aziot"})));
        if r.status == 200 {
            return (child, started.elapsed());
        }
        assert!(matches!(r.status, 503 | 404), "{} {}", r.status, String::from_utf8_lossy(&r.body));
        assert!(started.elapsed() < Duration::from_secs(60), "not provisioned: {}", r.message());
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn stop(mut child: ChildGuard) {
    child.signal(libc::SIGTERM);
    child.wait_timeout(Duration::from_secs(20));
}
