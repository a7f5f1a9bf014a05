//! The real aziot-edged on our stack (keyd-tpm, identityd-dps, upstream's certd) with a Docker
//! API stand-in: it gets its device identity from identityd-dps, has its Edge CA made with a key
//! pair in keyd-tpm (checked with openssl), serves its workload API, and a module token signed
//! through that API is one the emulated hub accepts.

use std::time::{Duration, Instant};

use interop::docker::DockerStandIn;
use interop::{Daemon, World};
use serde_json::json;

fn edged_config(world: &World, docker: &str) -> String {
    let run = world.path("run");
    let run = run.display();
    format!(
        "hostname = \"interop-gw\"\nhomedir = \"{home}\"\ntrust_bundle_cert = \"aziot-edged-trust-bundle\"\n\
         auto_reprovisioning_mode = \"Dynamic\"\nallow_elevated_docker_permissions = true\n\n\
         [agent]\nname = \"edgeAgent\"\ntype = \"docker\"\nimagePullPolicy = \"on-create\"\n\n\
         [agent.config]\nimage = \"mcr.microsoft.com/azureiotedge-agent:1.5\"\n\n[agent.config.createOptions]\n\n[agent.env]\n\n\
         [connect]\nworkload_uri = \"unix://{run}/workload.sock\"\nmanagement_uri = \"unix://{run}/mgmt.sock\"\n\n\
         [listen]\nworkload_uri = \"unix://{run}/workload.sock\"\nmanagement_uri = \"unix://{run}/mgmt.sock\"\n\n\
         [watchdog]\nmax_retries = \"infinite\"\n\n\
         [moby_runtime]\nuri = \"{docker}\"\nnetwork = \"azure-iot-edge\"\n\n\
         [endpoints]\naziot_certd_url = \"unix://{run}/certd.sock\"\naziot_keyd_url = \"unix://{run}/keyd.sock\"\n\
         aziot_identityd_url = \"unix://{run}/identityd.sock\"\n",
        home = world.path("state/edged").display(),
    )
}

#[test]
fn aziot_edged_gets_its_identity_edge_ca_and_module_tokens_from_our_stack() {
    let Some((up, _t)) = interop::case("aziot-edged on keyd-tpm + identityd-dps + certd, Docker stand-in", false) else { return };
    let mut world = World::new(&up);
    world.start_our_stack(true);
    let docker = DockerStandIn::start(&world.path("run/docker.sock"), vec![std::process::id()]);
    std::fs::create_dir_all(world.path("state/edged")).unwrap();
    std::fs::create_dir_all(world.path("edged.d")).unwrap();
    std::fs::write(world.path("edged.toml"), edged_config(&world, &docker.uri())).unwrap();
    world.start(Daemon::Edged);
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::os::unix::net::UnixStream::connect(world.socket("workload")).is_err() {
        assert!(Instant::now() < deadline, "no workload socket\n{}\ndocker saw: {:?}", world.logs(), docker.seen());
        std::thread::sleep(Duration::from_millis(100));
    }
    // edged creates and starts edgeAgent's container (in the stand-in) once the Edge CA exists.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !docker.seen().iter().any(|r| r == "POST /containers/edgeAgent/start") {
        assert!(Instant::now() < deadline, "edgeAgent never started\n{}\ndocker saw: {:?}", world.logs(), docker.seen());
        std::thread::sleep(Duration::from_millis(100));
    }
    let device = world.wait_provisioned();
    let (hub, device_id) = (device["hubName"].as_str().unwrap().to_owned(), device["deviceId"].as_str().unwrap().to_owned());
    let log = world.log("aziot-edged");
    assert!(log.contains(&format!("Device is {device_id} on {hub}")), "edged's device identity:\n{log}");
    assert!(log.contains("Created new Edge CA certificate") && log.contains("Starting workload API"), "{log}");

    // The Edge CA: issued by certd, its key pair made in keyd-tpm, checked with openssl.
    let r = testkit::http::request(&world.socket("certd"), "GET", "/certificates/aziot-edged-ca?api-version=2020-09-01", None).unwrap();
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let pem = r.json()["pem"].as_str().unwrap().to_owned();
    let cert = openssl::x509::X509::from_pem(pem.as_bytes()).expect("Edge CA PEM");
    let public = cert.public_key().unwrap();
    assert!(cert.verify(&public).unwrap(), "the Edge CA is signed by its own key");
    let handle = world.keyd("GET", "/keypair/aziot-edged-ca", &json!({}));
    assert_eq!(handle.status, 200, "keyd-tpm holds the Edge CA key: {}", String::from_utf8_lossy(&handle.body));
    assert!(same_public_key(&world, handle.json()["keyHandle"].as_str().unwrap(), &public), "cert and keyd-tpm's key pair differ");
    let keys: Vec<String> = std::fs::read_dir(world.path("state/keyd/keys")).unwrap().filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    assert!(keys.iter().any(|k| k.starts_with("aziotedgedca-") && k.ends_with(".tpmkey")), "a TPM-wrapped key: {keys:?}");
    assert!(!keys.iter().any(|k| k.ends_with(".key")), "no plaintext key file: {keys:?}");

    // A module token through edged's workload API (edgeAgent's container is "ours": the stand-in
    // lists this process as its pid), accepted by the hub.
    let module = "$edgeAgent";
    let spec = world.identityd_ok("GET", &format!("/identities/modules/{}?type=aziot", interop::world::enc(module)), None)["spec"].clone();
    let gen = spec["genId"].as_str().expect("genId").to_owned();
    let (to_sign, sr, se) = interop::sas::unsigned(&format!("{hub}/devices/{device_id}/modules/{module}"));
    let path = format!("/modules/{}/genid/{gen}/sign?api-version=2019-01-30", interop::world::enc(module));
    let body = json!({"keyId": "primary", "algo": "HMACSHA256", "data": aziot_tpm_common::b64(to_sign.as_bytes())});
    let r = testkit::http::json(&world.socket("workload"), "POST", &path, &body).unwrap();
    assert_eq!(r.status, 200, "workload sign: {}\n{}", String::from_utf8_lossy(&r.body), world.logs());
    let digest = aziot_tpm_common::from_b64(r.json()["digest"].as_str().unwrap()).unwrap();
    let token = interop::sas::assemble(&sr, se, &digest, None);
    let url = format!("https://{hub}/twins/{device_id}/modules/{}?api-version=2021-04-12", interop::world::enc(module));
    let (status, answer) = world.https("GET", &url, &[("Authorization", &token)], None);
    assert_eq!(status, 200, "the hub refused the token signed through the workload API: {answer}");
    // edged had identityd-dps put keys derived in keyd-tpm on the hub's $edgeAgent before starting it.
    let emulator = world.log("emulator");
    assert!(emulator.contains(&format!("\"PUT /devices/{device_id}/modules/$edgeAgent")), "{emulator}");
}

/// Whether keyd-tpm's key pair behind `handle` has `public` as its public key.
fn same_public_key(world: &World, handle: &str, public: &openssl::pkey::PKey<openssl::pkey::Public>) -> bool {
    let param = |name: &str| {
        let r = world.keyd("POST", &format!("/parameters/{name}"), &json!({"keyHandle": handle}));
        assert_eq!(r.status, 200, "{name}: {}", String::from_utf8_lossy(&r.body));
        r.json()["value"].as_str().unwrap().to_owned()
    };
    match param("algorithm").as_str() {
        "ECDSA" => {
            let point = aziot_tpm_common::from_b64(&param("ec-point")).unwrap();
            let ec = public.ec_key().unwrap();
            let mut ctx = openssl::bn::BigNumContext::new().unwrap();
            let ours = ec.public_key().to_bytes(ec.group(), openssl::ec::PointConversionForm::COMPRESSED, &mut ctx).unwrap();
            ours == point
        }
        _ => {
            let n = aziot_tpm_common::from_b64(&param("rsa-modulus")).unwrap();
            public.rsa().unwrap().n().to_vec() == n
        }
    }
}
