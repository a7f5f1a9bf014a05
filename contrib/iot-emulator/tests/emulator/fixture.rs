//! Fixtures: the emulator process, a TPM device (swtpm + keyd-tpm's `TpmHandle`), a small DPS
//! client that registers like identityd does, and SAS tokens built independently of the emulator.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use aziot_tpm_common::{b64, from_b64};
use cloud_http::{Method, Response, StatusCode};
use keyd_tpm::tpm::{TpmHandle, TpmSettings};
use openssl::hash::MessageDigest;
use openssl::pkey::PKey;
use openssl::sign::Signer;
use serde_json::{json, Value};
use testkit::{ChildGuard, Swtpm};

pub const DPS_API: &str = "api-version=2021-06-01";
pub const SERVICE_API: &str = "api-version=2021-10-01";
pub const HUB_API: &str = "api-version=2017-11-08-preview";

/// The `iot-emulator` binary running on a temp data dir.
pub struct Emulator {
    pub dir: tempfile::TempDir,
    pub args: Vec<String>,
    pub ready: Value,
    child: Option<ChildGuard>,
    runs: usize,
}

impl Emulator {
    pub fn start(args: &[&str]) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("iot-emulator-")
            .tempdir()
            .expect("temp dir");
        let mut emulator = Self {
            dir,
            args: args.iter().map(|s| s.to_string()).collect(),
            ready: Value::Null,
            child: None,
            runs: 0,
        };
        emulator.spawn();
        emulator
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn log(&self) -> String {
        (0..self.runs)
            .map(|i| {
                std::fs::read_to_string(self.dir.path().join(format!("emulator.{i}.log")))
                    .unwrap_or_default()
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Runs the binary and waits for its JSON ready line.
    pub fn spawn(&mut self) {
        let run = self.runs;
        self.runs += 1;
        let out_path = self.dir.path().join(format!("ready.{run}.json"));
        let out = std::fs::File::create(&out_path).unwrap();
        let log =
            std::fs::File::create(self.dir.path().join(format!("emulator.{run}.log"))).unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_iot-emulator"));
        command
            .arg("--data-dir")
            .arg(self.data_dir())
            .args(&self.args)
            .env("EMULATOR_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(log);
        let mut child = ChildGuard::spawn(command).expect("run iot-emulator");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let text = std::fs::read_to_string(&out_path).unwrap_or_default();
            if let Some(line) = text.lines().next().filter(|_| text.contains('\n')) {
                self.ready = serde_json::from_str(line)
                    .unwrap_or_else(|e| panic!("ready line is not JSON ({e}): {line}"));
                break;
            }
            if let Some(status) = child.try_wait() {
                panic!(
                    "iot-emulator exited with {status} before it was ready:\n{}",
                    self.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "iot-emulator not ready within 30 s:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        self.child = Some(child);
    }

    /// SIGTERM, and the exit status.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("emulator running");
        child.signal(libc::SIGTERM);
        child
            .wait_timeout(Duration::from_secs(20))
            .unwrap_or_else(|| panic!("emulator ignored SIGTERM:\n{}", self.log()))
    }

    pub fn str(&self, key: &str) -> String {
        self.ready[key]
            .as_str()
            .unwrap_or_else(|| panic!("ready line has no {key}: {}", self.ready))
            .to_owned()
    }

    pub fn dps(&self) -> String {
        self.str("dps_endpoint")
    }

    pub fn id_scope(&self) -> String {
        self.str("id_scope")
    }

    pub fn hubs(&self) -> Vec<String> {
        self.ready["hubs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h.as_str().unwrap().to_owned())
            .collect()
    }

    pub fn ca_pem(&self) -> PathBuf {
        PathBuf::from(self.str("ca_pem"))
    }

    /// An HTTPS client that trusts only the emulator's CA.
    pub fn client(&self) -> cloud_http::Client {
        cloud_http::Client::builder()
            .system_roots(false)
            .trust_ca_file(self.ca_pem())
            .timeout(Duration::from_secs(30))
            .build()
            .expect("client")
    }

    /// A service API token from the printed connection string.
    pub fn service_token(&self) -> String {
        let cs = self.str("service_connection_string");
        let (host, _, key) = parse_connection_string(&cs);
        assert_eq!(key.0, "provisioningserviceowner");
        sas_token(
            &host,
            &from_b64(&key.1).unwrap(),
            expiry_in(600),
            Some("provisioningserviceowner"),
        )
    }

    /// A hub owner token for hub `index`.
    pub fn hub_owner_token(&self, index: usize) -> String {
        let cs = self.ready["hub_connection_strings"][index]
            .as_str()
            .unwrap()
            .to_owned();
        let (host, _, key) = parse_connection_string(&cs);
        sas_token(
            &host,
            &from_b64(&key.1).unwrap(),
            expiry_in(600),
            Some(&key.0),
        )
    }

    /// Calls the DPS service API.
    pub async fn service(&self, method: Method, path: &str, body: Option<Value>) -> Response {
        let url = format!(
            "{}{path}{}{SERVICE_API}",
            self.dps(),
            if path.contains('?') { "&" } else { "?" }
        );
        let token = self.service_token();
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        self.client()
            .request(
                method,
                &url,
                &[
                    ("Authorization", &token),
                    ("Content-Type", "application/json"),
                ],
                body,
            )
            .await
            .expect("service API request")
    }

    /// Creates a TPM individual enrollment with `extra` fields merged in; asserts 200.
    pub async fn enroll(&self, registration_id: &str, ek: &[u8], extra: Value) -> Value {
        let mut body = json!({
            "registrationId": registration_id,
            "attestation": {"type": "tpm", "tpm": {"endorsementKey": b64(ek)}},
            "capabilities": {"iotEdge": true},
        });
        if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
            for (k, v) in e {
                b.insert(k.clone(), v.clone());
            }
        }
        let r = self
            .service(
                Method::PUT,
                &format!("/enrollments/{registration_id}"),
                Some(body),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "enroll: {}", r.text());
        json_of(&r)
    }

    /// Calls the admin API.
    pub async fn admin(&self, method: Method, path: &str, body: Option<Value>) -> Response {
        let url = format!(
            "{}{path}",
            self.ready["admin"]["endpoint"].as_str().unwrap()
        );
        let auth = format!("Bearer {}", self.ready["admin"]["token"].as_str().unwrap());
        self.client()
            .request(
                method,
                &url,
                &[
                    ("Authorization", &auth),
                    ("Content-Type", "application/json"),
                ],
                body.map(|b| b.to_string()).unwrap_or_default(),
            )
            .await
            .expect("admin request")
    }
}

/// `HostName=..;SharedAccessKeyName=..;SharedAccessKey=..` → (host, all pairs, (name, key)).
pub fn parse_connection_string(cs: &str) -> (String, Vec<(String, String)>, (String, String)) {
    let pairs: Vec<(String, String)> = cs
        .split(';')
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap();
            (k.to_owned(), v.to_owned())
        })
        .collect();
    let get = |k: &str| {
        pairs
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .unwrap()
    };
    (
        get("HostName"),
        pairs.clone(),
        (get("SharedAccessKeyName"), get("SharedAccessKey")),
    )
}

pub fn json_of(r: &Response) -> Value {
    serde_json::from_slice(&r.body)
        .unwrap_or_else(|e| panic!("{} body is not JSON ({e}): {}", r.status, r.text()))
}

pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

pub fn expiry_in(secs: i64) -> u64 {
    (unix_now() as i64 + secs) as u64
}

pub fn hmac_sha256(key: &[u8], data: &[u8]) -> Vec<u8> {
    let pkey = PKey::hmac(key).unwrap();
    let mut signer = Signer::new(MessageDigest::sha256(), &pkey).unwrap();
    signer.update(data).unwrap();
    signer.sign_to_vec().unwrap()
}

/// Percent-encodes like identityd: unreserved characters, `/` and `:` stay literal.
pub fn encode(s: &str, keep_slash: bool) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            b'/' | b':' if keep_slash => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The resource URI of a token and the string a signer must sign.
pub fn string_to_sign(audience: &str, expiry: u64) -> (String, String) {
    let sr = encode(&audience.to_ascii_lowercase(), true);
    let s = format!("{sr}\n{expiry}");
    (sr, s)
}

/// Assembles a token from a signature.
pub fn assemble(sr: &str, signature: &[u8], expiry: u64, key_name: Option<&str>) -> String {
    let mut t = format!(
        "SharedAccessSignature sr={sr}&sig={}&se={expiry}",
        encode(&b64(signature), false)
    );
    if let Some(k) = key_name {
        t.push_str(&format!("&skn={k}"));
    }
    t
}

/// A token signed in software.
pub fn sas_token(audience: &str, key: &[u8], expiry: u64, key_name: Option<&str>) -> String {
    let (sr, s) = string_to_sign(audience, expiry);
    assemble(&sr, &hmac_sha256(key, s.as_bytes()), expiry, key_name)
}

/// A device TPM: its own swtpm and keyd-tpm's TPM owner over it.
pub struct TpmDevice {
    pub tpm: Swtpm,
    pub state: tempfile::TempDir,
    pub handle: TpmHandle,
    pub ek: Vec<u8>,
    pub srk: Vec<u8>,
}

impl TpmDevice {
    pub async fn start() -> Self {
        let tpm = Swtpm::start();
        let state = tempfile::Builder::new()
            .prefix("device-tpm-")
            .tempdir()
            .unwrap();
        let settings = TpmSettings {
            tcti: tpm.tcti(),
            auth_key_index: 0x100,
            endorsement_auth: Default::default(),
            owner_auth: Default::default(),
            state_dir: state.path().to_owned(),
            parameter_encryption: Default::default(),
        };
        let handle = TpmHandle::start(settings).expect("open the TPM");
        let keys = handle.get_tpm_keys().await.expect("EK and SRK");
        Self {
            tpm,
            state,
            handle,
            ek: keys.endorsement_key,
            srk: keys.storage_root_key,
        }
    }

    pub fn registration_id(&self) -> String {
        aziot_tpm_common::registration_id(&self.ek)
    }

    pub async fn import(&self, authentication_key_b64: &str) {
        let blob = from_b64(authentication_key_b64).expect("authenticationKey is base64");
        self.handle
            .import_auth_key(blob)
            .await
            .expect("TPM imports the authenticationKey");
    }

    /// A SAS token signed by the TPM's imported key.
    pub async fn token(&self, audience: &str, expiry: u64, key_name: Option<&str>) -> String {
        let (sr, s) = string_to_sign(audience, expiry);
        let sig = self
            .handle
            .sign_with_auth_key(s.into_bytes())
            .await
            .expect("TPM HMAC");
        assemble(&sr, &sig, expiry, key_name)
    }
}

/// DPS device API calls as identityd makes them.
pub struct DpsClient<'a> {
    pub emulator: &'a Emulator,
    pub http: cloud_http::Client,
}

/// What a full registration returned.
pub struct Registered {
    pub state: Value,
    pub hub: String,
    pub device_id: String,
}

impl<'a> DpsClient<'a> {
    pub fn new(emulator: &'a Emulator) -> Self {
        Self {
            emulator,
            http: emulator.client(),
        }
    }

    pub fn register_url(&self, registration_id: &str) -> String {
        format!(
            "{}/{}/registrations/{registration_id}/register?{DPS_API}",
            self.emulator.dps(),
            self.emulator.id_scope()
        )
    }

    pub fn audience(&self, registration_id: &str) -> String {
        format!(
            "{}/registrations/{registration_id}",
            self.emulator.id_scope()
        )
    }

    /// Step 1: PUT with EK and SRK, no Authorization.
    pub async fn challenge(&self, registration_id: &str, ek: &[u8], srk: &[u8]) -> Response {
        let body = json!({"registrationId": registration_id, "tpm": {"endorsementKey": b64(ek), "storageRootKey": b64(srk)}});
        self.put_register(registration_id, None, body).await
    }

    pub async fn put_register(
        &self,
        registration_id: &str,
        token: Option<&str>,
        body: Value,
    ) -> Response {
        let mut headers = vec![
            ("Content-Type", "application/json; charset=utf-8"),
            ("Accept", "application/json"),
        ];
        if let Some(t) = token {
            headers.push(("Authorization", t));
        }
        self.http
            .request(
                Method::PUT,
                &self.register_url(registration_id),
                &headers,
                body.to_string(),
            )
            .await
            .expect("register request")
    }

    pub async fn poll(&self, registration_id: &str, operation_id: &str, token: &str) -> Response {
        let url = format!(
            "{}/{}/registrations/{registration_id}/operations/{operation_id}?{DPS_API}",
            self.emulator.dps(),
            self.emulator.id_scope()
        );
        self.http
            .request(Method::GET, &url, &[("Authorization", token)], Vec::new())
            .await
            .expect("operation request")
    }

    /// The whole flow with the TPM: challenge → import → SAS → 202 → poll → assigned → import the
    /// hub key. Asserts each step's shape.
    pub async fn register(
        &self,
        device: &TpmDevice,
        registration_id: &str,
        payload: Option<Value>,
    ) -> Registered {
        let r = self
            .challenge(registration_id, &device.ek, &device.srk)
            .await;
        assert_eq!(
            r.status,
            StatusCode::UNAUTHORIZED,
            "challenge: {}",
            r.text()
        );
        let challenge = json_of(&r);
        assert_eq!(challenge["keyName"], "registration");
        device
            .import(
                challenge["authenticationKey"]
                    .as_str()
                    .expect("authenticationKey"),
            )
            .await;

        let token = device
            .token(
                &self.audience(registration_id),
                expiry_in(300),
                Some("registration"),
            )
            .await;
        let mut body = json!({"registrationId": registration_id});
        if let Some(p) = payload {
            body["payload"] = p;
        }
        let r = self.put_register(registration_id, Some(&token), body).await;
        assert_eq!(
            r.status,
            StatusCode::ACCEPTED,
            "register with SAS: {}",
            r.text()
        );
        assert!(r.header("retry-after").is_some(), "202 carries Retry-After");
        let accepted = json_of(&r);
        assert_eq!(accepted["status"], "assigning");
        let op = accepted["operationId"].as_str().unwrap().to_owned();

        let deadline = Instant::now() + Duration::from_secs(30);
        let state = loop {
            let r = self.poll(registration_id, &op, &token).await;
            let v = json_of(&r);
            match (r.status, v["status"].as_str()) {
                (StatusCode::ACCEPTED, Some("assigning")) => {
                    assert_eq!(v["registrationState"]["registrationId"], registration_id);
                    let secs: u64 = r
                        .header("retry-after")
                        .expect("Retry-After while assigning")
                        .parse()
                        .unwrap();
                    assert!(Instant::now() < deadline, "still assigning after 30 s");
                    tokio::time::sleep(
                        Duration::from_millis(200)
                            .max(Duration::from_secs(secs).min(Duration::from_millis(500))),
                    )
                    .await;
                }
                (StatusCode::OK, Some("assigned")) => break v["registrationState"].clone(),
                other => panic!("unexpected poll answer {other:?}: {v}"),
            }
        };
        device
            .import(
                state["tpm"]["authenticationKey"]
                    .as_str()
                    .expect("second authenticationKey"),
            )
            .await;
        Registered {
            hub: state["assignedHub"].as_str().unwrap().to_owned(),
            device_id: state["deviceId"].as_str().unwrap().to_owned(),
            state,
        }
    }

    /// Registration that ends in `failed`: returns the final operation body.
    pub async fn register_expecting_failure(
        &self,
        device: &TpmDevice,
        registration_id: &str,
    ) -> Value {
        let r = self
            .challenge(registration_id, &device.ek, &device.srk)
            .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text());
        device
            .import(json_of(&r)["authenticationKey"].as_str().unwrap())
            .await;
        let token = device
            .token(
                &self.audience(registration_id),
                expiry_in(300),
                Some("registration"),
            )
            .await;
        let r = self
            .put_register(
                registration_id,
                Some(&token),
                json!({"registrationId": registration_id}),
            )
            .await;
        assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text());
        let op = json_of(&r)["operationId"].as_str().unwrap().to_owned();
        for _ in 0..100 {
            let r = self.poll(registration_id, &op, &token).await;
            let v = json_of(&r);
            if v["status"] != "assigning" {
                return v;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        panic!("operation never finished")
    }
}

/// Calls a hub with a token.
pub async fn hub_call(
    client: &cloud_http::Client,
    hub: &str,
    method: Method,
    path: &str,
    token: &str,
    headers: &[(&str, &str)],
    body: Option<Value>,
) -> Response {
    let url = format!(
        "https://{hub}{path}{}{HUB_API}",
        if path.contains('?') { "&" } else { "?" }
    );
    let mut all = vec![
        ("Authorization", token),
        ("Content-Type", "application/json"),
    ];
    all.extend_from_slice(headers);
    client
        .request(
            method,
            &url,
            &all,
            body.map(|b| b.to_string()).unwrap_or_default(),
        )
        .await
        .expect("hub request")
}
