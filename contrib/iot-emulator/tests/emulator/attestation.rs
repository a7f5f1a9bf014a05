//! The emulator's `authenticationKey` opens only in the enrolled TPM, and a SAS token signed by
//! the imported key is accepted: once with keyd-tpm's TPM owner, once with tpm2-tools doing the
//! SDK's ActivateCredential + Import + Load + HMAC by hand, so the blob is not just compatible
//! with our own device code.

use std::fs;
use std::path::Path;

use aziot_tpm_common::{b64, from_b64};
use cloud_http::StatusCode;
use serde_json::json;
use testkit::Swtpm;

use crate::fixture::{
    assemble, expiry_in, json_of, string_to_sign, DpsClient, Emulator, TpmDevice,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyd_tpm_imports_the_challenge_and_the_emulator_accepts_its_sas() {
    let emulator = Emulator::start(&["--assigning-ms", "200"]);
    let device = TpmDevice::start().await;
    let id = device.registration_id();
    emulator.enroll(&id, &device.ek, json!({})).await;
    let dps = DpsClient::new(&emulator);

    let r = dps.challenge(&id, &device.ek, &device.srk).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text());
    let body = json_of(&r);
    assert_eq!(body["keyName"], "registration");
    assert!(body["message"].is_string());
    let blob = from_b64(body["authenticationKey"].as_str().unwrap()).unwrap();
    assert_eq!(
        blob.len(),
        766,
        "RSA-2048 EK/SRK and a 32-byte key give a 766-byte blob"
    );
    device
        .import(body["authenticationKey"].as_str().unwrap())
        .await;

    let token = device
        .token(&dps.audience(&id), expiry_in(60), Some("registration"))
        .await;
    let r = dps
        .put_register(&id, Some(&token), json!({"registrationId": id}))
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text());
    assert_eq!(json_of(&r)["status"], "assigning");
}

/// A TPM provisioned with tpm2-tools: TCG EK at 0x81010001, aziot SRK at 0x81000001.
struct ToolsDevice {
    tpm: Swtpm,
    dir: tempfile::TempDir,
}

impl ToolsDevice {
    fn provision() -> Self {
        let tpm = Swtpm::start();
        let dir = tempfile::tempdir().unwrap();
        let cwd = dir.path();
        tpm.tpm2_provision_ek_srk(cwd);
        Self { tpm, dir }
    }

    fn cwd(&self) -> &Path {
        self.dir.path()
    }

    fn read(&self, name: &str) -> Vec<u8> {
        fs::read(self.cwd().join(name)).unwrap()
    }

    /// ActivateCredential, Import, Load and persist at 0x81000100, as the device SDKs do.
    fn import(&self, blob: &[u8]) {
        let cwd = self.cwd();
        let mut fields = Vec::new();
        let mut rest = blob;
        while rest.len() >= 2 {
            let len = 2 + usize::from(u16::from_be_bytes([rest[0], rest[1]]));
            fields.push(rest[..len].to_vec());
            rest = &rest[len..];
        }
        assert_eq!(fields.len(), 6, "six TPM2B fields");
        let mut cred = vec![0xba, 0xdc, 0xc0, 0xde, 0, 0, 0, 1];
        cred.extend_from_slice(&fields[0]);
        cred.extend_from_slice(&fields[1]);
        fs::write(cwd.join("cred.in"), cred).unwrap();
        fs::write(cwd.join("dup.priv"), &fields[2]).unwrap();
        fs::write(cwd.join("dup.seed"), &fields[3]).unwrap();
        fs::write(cwd.join("key.pub"), &fields[4]).unwrap();
        let t = &self.tpm;
        t.tpm2_ok(
            "tpm2_startauthsession",
            &["--policy-session", "-S", "session.ctx"],
            cwd,
        );
        t.tpm2_ok("tpm2_policysecret", &["-S", "session.ctx", "-c", "e"], cwd);
        t.tpm2_ok(
            "tpm2_activatecredential",
            &[
                "-c",
                "0x81000001",
                "-C",
                "0x81010001",
                "-i",
                "cred.in",
                "-o",
                "inner.key",
                "-P",
                "session:session.ctx",
            ],
            cwd,
        );
        t.tpm2_ok("tpm2_flushcontext", &["session.ctx"], cwd);
        t.tpm2_ok(
            "tpm2_import",
            &[
                "-C",
                "0x81000001",
                "-u",
                "key.pub",
                "-i",
                "dup.priv",
                "-s",
                "dup.seed",
                "-k",
                "inner.key",
                "-r",
                "key.priv",
            ],
            cwd,
        );
        t.tpm2_ok(
            "tpm2_load",
            &[
                "-C",
                "0x81000001",
                "-u",
                "key.pub",
                "-r",
                "key.priv",
                "-c",
                "key.ctx",
            ],
            cwd,
        );
        let _ = t.tpm2("tpm2_evictcontrol", &["-C", "o", "-c", "0x81000100"], cwd);
        t.tpm2_ok(
            "tpm2_evictcontrol",
            &["-C", "o", "-c", "key.ctx", "0x81000100"],
            cwd,
        );
        t.tpm2_ok("tpm2_flushcontext", &["-t"], cwd);
    }

    fn hmac(&self, data: &[u8]) -> Vec<u8> {
        fs::write(self.cwd().join("msg.bin"), data).unwrap();
        self.tpm.tpm2_ok(
            "tpm2_hmac",
            &[
                "-c",
                "0x81000100",
                "-g",
                "sha256",
                "-o",
                "hmac.bin",
                "msg.bin",
            ],
            self.cwd(),
        );
        self.read("hmac.bin")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tpm2_tools_imports_the_challenge_and_the_emulator_accepts_its_sas() {
    let emulator = Emulator::start(&["--assigning-ms", "200"]);
    let device = ToolsDevice::provision();
    let (ek, srk) = (device.read("ek.pub"), device.read("srk.pub"));
    let id = aziot_tpm_common::registration_id(&ek);
    emulator.enroll(&id, &ek, json!({})).await;
    let dps = DpsClient::new(&emulator);

    let r = dps.challenge(&id, &ek, &srk).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text());
    let blob = from_b64(json_of(&r)["authenticationKey"].as_str().unwrap()).unwrap();
    device.import(&blob);

    let expiry = expiry_in(60);
    let (sr, to_sign) = string_to_sign(&dps.audience(&id), expiry);
    let token = assemble(
        &sr,
        &device.hmac(to_sign.as_bytes()),
        expiry,
        Some("registration"),
    );
    // The request as the C SDK sends it: identical body, tpm object included.
    let body = json!({"registrationId": id, "tpm": {"endorsementKey": b64(&ek), "storageRootKey": b64(&srk)}});
    let r = dps.put_register(&id, Some(&token), body).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text());

    // And the final blob (the hub key) imports too; its HMAC is accepted by the assigned hub.
    let op = json_of(&r)["operationId"].as_str().unwrap().to_owned();
    let state = loop {
        let v = json_of(&dps.poll(&id, &op, &token).await);
        if v["status"] == "assigned" {
            break v["registrationState"].clone();
        }
        assert_eq!(v["status"], "assigning", "{v}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    device.import(&from_b64(state["tpm"]["authenticationKey"].as_str().unwrap()).unwrap());
    let hub = state["assignedHub"].as_str().unwrap();
    let device_id = state["deviceId"].as_str().unwrap();
    let (sr, to_sign) = string_to_sign(&format!("{hub}/devices/{device_id}"), expiry);
    let token = assemble(&sr, &device.hmac(to_sign.as_bytes()), expiry, None);
    let r = crate::fixture::hub_call(
        &emulator.client(),
        hub,
        cloud_http::Method::GET,
        &format!("/devices/{device_id}"),
        &token,
        &[],
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
}
