//! `aziot-tpm check` against real parts: a swtpm, keyd-tpm, the iot-emulator and identityd-dps,
//! configured through the `AZIOT_<SVC>_CONFIG` overrides in a temp dir.

mod common;

#[path = "check/support.rs"]
mod support;

use common::Device;
use serde_json::Value;
use support::{check, provisioned_device, result_of};

#[test]
fn a_provisioned_device_passes_every_check_in_text_json_and_json_stream() {
    let device = provisioned_device();
    let hub = device.cli(&["status", "-o", "json"]).json()["hub"]
        .as_str()
        .unwrap()
        .to_owned();

    let text = check(&device, &[]);
    let out = text.expect(0).stdout();
    for line in [
        "Configuration checks\n--------------------\n",
        "\u{221a} tpmd is running - OK\n",
        "TPM checks\n----------\n",
        "\u{221a} TPM answers through the configured TCTI - OK\n",
        "\u{221a} TPM accepts the configured owner and endorsement passwords - OK\n",
        "\u{221a} EK certificate verifies against the TPM makers' CAs and names the EK in use - OK\n",
        "\u{221a} DPS auth key is in the TPM of the provisioned device - OK\n",
        "\u{221a} assigned IoT Hub is reachable and accepts the device's credentials - OK\n",
        "\u{221a} host clock agrees with DPS and IoT Hub closely enough for SAS tokens - OK\n",
        "15 check(s) succeeded.\n",
    ] {
        assert!(out.contains(line), "{line:?} missing:\n{out}");
    }
    assert!(!out.contains('\u{00d7}') && !out.contains('\u{203c}'), "{out}");

    // -o json: aziotctl's document, every check ok (or ignored where it does not apply).
    let json = check(&device, &["-o", "json"]).expect(0).json();
    let checks = json["checks"].as_object().unwrap();
    assert_eq!(checks.len(), 18, "{json}");
    for (id, c) in checks {
        let result = c["result"]["result"].as_str().unwrap();
        let expected = match id.as_str() {
            // swtpm is reached over TCP; the super-config is not used in this setup; no proxy.
            "tpm-device-node" | "configs-up-to-date" | "https-proxy" => "ignored",
            _ => "ok",
        };
        assert_eq!(result, expected, "{id}: {c}");
        assert!(c["additional_info"].is_object(), "{id}: {c}");
    }
    assert_eq!(checks["tpm-tcti-opens"]["additional_info"]["via"], "keyd-tpm");
    assert_eq!(checks["iothub-reachable"]["additional_info"]["authenticated"], true);
    assert_eq!(checks["tpm-hierarchy-auth"]["additional_info"]["owner"], "accepted");
    let ek = &checks["tpm-ek-srk"]["additional_info"];
    assert_eq!(ek["registration_id"], ek["registered_registration_id"], "{ek}");
    let info = &json["additional_info"];
    assert_eq!(
        info["iothub_hostname"],
        hub.as_str(),
        "the assigned hub, from device_info"
    );
    for key in ["now", "os", "dmi", "system_info"] {
        assert!(info.get(key).is_some(), "{key} missing: {info}");
    }

    // -o json-stream: section / check values as they come, additional_info last.
    let stream = check(&device, &["-o", "json-stream"]);
    let values: Vec<Value> = stream
        .expect(0)
        .stdout()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let sections: Vec<&str> = values
        .iter()
        .filter(|v| v["kind"] == "section")
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert_eq!(sections, ["Configuration checks", "TPM checks", "Connectivity checks"]);
    assert_eq!(values.iter().filter(|v| v["kind"] == "check").count(), 18);
    let tcti = values.iter().find(|v| v["id"] == "tpm-tcti-opens").unwrap();
    assert_eq!(tcti["description"], "TPM answers through the configured TCTI");
    assert_eq!(tcti["result"], serde_json::json!({"result": "ok"}));
    let last = values.last().unwrap();
    assert_eq!(
        (last["kind"].as_str(), last["iothub_hostname"].as_str()),
        (Some("additional_info"), Some(hub.as_str()))
    );

    // --dont-run: named checks are reported as ignored.
    let json = check(&device, &["-o", "json", "--dont-run", "tpm-hierarchy-auth clock-skew"])
        .expect(0)
        .json();
    assert_eq!(result_of(&json, "tpm-hierarchy-auth"), "ignored");
    assert_eq!(result_of(&json, "clock-skew"), "ignored");
    assert_eq!(result_of(&json, "tpm-ek-srk"), "ok");

    // A super-config newer than what was generated from it: a warning, which
    // --warnings-as-errors turns into a failing error.
    std::fs::write(device.path("config.toml"), "[provisioning]\nsource = \"dps\"\n").unwrap();
    let warned = check(&device, &[]);
    let out = warned.expect(0).stdout();
    assert!(
        out.contains("\u{203c} daemon configurations up-to-date with config.toml - Warning\n"),
        "{out}"
    );
    assert!(
        out.contains("00-super.toml does not exist.\n    Did you run 'aziot-tpm config apply'?"),
        "{out}"
    );
    assert!(
        out.contains("1 check(s) raised warnings. Re-run with --verbose for more details."),
        "{out}"
    );
    let strict = check(&device, &["-o", "json", "--warnings-as-errors"]);
    assert_eq!(result_of(&strict.expect(1).json(), "configs-up-to-date"), "error");
}

#[test]
fn check_judges_what_identityd_does_now_not_what_an_earlier_registration_left() {
    let mut device = provisioned_device();
    let config = std::fs::read_to_string(device.path("identityd.toml")).unwrap();
    let scope = device.ready("id_scope");
    std::fs::write(device.path("identityd.toml"), config.replace(&scope, "0ne0000BAD0")).unwrap();

    // Written but not applied: identityd-dps still runs with the old ID scope.
    let run = check(&device, &["-o", "json"]);
    let json = run.expect(1).json();
    assert_eq!(result_of(&json, "identityd-provisioned"), "error", "{run:?}");
    let details = json["checks"]["identityd-provisioned"]["result"]["details"][0].as_str().unwrap();
    assert!(
        details.contains(&format!("id_scope \"{scope}\" (the config says \"0ne0000BAD0\")"))
            && details.contains("has not taken effect"),
        "{details}"
    );

    // Applied: DPS does not know the scope. device_info still names the old hub; check must
    // not pass on it.
    device.stop_identityd();
    device.start_identityd_keeping_config();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let json = loop {
        let json = check(&device, &["-o", "json"]).json();
        if json["checks"]["identityd-provisioned"]["additional_info"]["last_error"].is_object() {
            break json;
        }
        assert!(std::time::Instant::now() < deadline, "{json}");
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    assert_eq!(result_of(&json, "identityd-provisioned"), "error", "{json}");
    let details = json["checks"]["identityd-provisioned"]["result"]["details"][0].as_str().unwrap();
    assert!(details.contains("the device is not provisioned: DPS answered 404") && details.contains("(dps_not_found, https://"), "{details}");
    assert!(details.contains("identityd-dps tries again at "), "{details}");
    assert_eq!(result_of(&json, "iothub-reachable"), "warning", "{json}");
    let text = check(&device, &[]);
    let out = text.expect(1).stdout();
    assert!(out.contains("\u{00d7} device is provisioned now, with the DPS settings of the config - Error"), "{out}");
}

#[test]
fn a_clock_hours_off_is_named_as_the_cause_before_the_trust_bundle() {
    let device = provisioned_device();
    // libfaketime (scripts/setup.sh installs it): this check's clock two days behind, so the
    // emulator's certificates are not yet valid to it.
    let lib = std::fs::read_dir("/usr/lib")
        .unwrap()
        .flatten()
        .map(|d| d.path().join("faketime/libfaketime.so.1"))
        .find(|p| p.exists())
        .expect("libfaketime (apt-get install faketime; scripts/setup.sh installs it)");
    let env = support::config_env(&device);
    let mut env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let lib = lib.display().to_string();
    env.extend([("LD_PRELOAD", lib.as_str()), ("FAKETIME", "-2d"), ("DONT_FAKE_MONOTONIC", "1")]);
    let super_config = device.path("config.toml").display().to_string();
    let run = device.cli_with(&["check", "--super-config", &super_config, "-o", "json"], &env);
    let json = run.expect(1).json();
    let details = |id: &str| json["checks"][id]["result"]["details"].to_string();
    assert_eq!(result_of(&json, "dps-endpoint-tls"), "error", "{run:?}");
    let dps = details("dps-endpoint-tls");
    let (clock, bundle) = (dps.find("synchronize the clock first"), dps.find("trust_bundle"));
    assert!(clock.is_some() && clock < bundle, "the clock first: {dps}");
    assert_eq!(result_of(&json, "clock-skew"), "error", "not skipped: {run:?}");
    let skew = details("clock-skew");
    assert!(skew.contains("clock (") && skew.contains("is probably far off"), "{skew}");
    // Times as dates, not raw Unix seconds.
    let longest_number = skew.split(|c: char| !c.is_ascii_digit()).map(str::len).max().unwrap_or(0);
    assert!(longest_number < 9, "{skew}");
}

#[test]
fn check_fails_when_the_provisioned_device_lost_its_auth_key() {
    let device = provisioned_device();
    // The key DPS delivered disappears from the TPM (cleared, or evicted by hand).
    device
        .tpm()
        .tpm2_ok("tpm2_evictcontrol", &["-C", "o", "-c", "0x81000100"], device.dir.path());

    let run = check(&device, &["-o", "json"]);
    let json = run.expect(1).json();
    assert_eq!(result_of(&json, "tpm-auth-key"), "error", "{run:?}");
    let details = json["checks"]["tpm-auth-key"]["result"]["details"][0].as_str().unwrap();
    assert!(
        details.contains("no DPS auth key at 0x81000100") && details.contains("aziot-tpm reprovision"),
        "{details}"
    );
    assert_eq!(json["checks"]["tpm-auth-key"]["additional_info"]["present"], false);
    // Everything else about the TPM is still fine.
    assert_eq!(result_of(&json, "tpm-tcti-opens"), "ok");
    assert_eq!(result_of(&json, "tpm-ek-srk"), "ok");

    let text = check(&device, &[]);
    let out = text.expect(1).stdout();
    assert!(
        out.contains(
            "\u{00d7} DPS auth key is in the TPM of the provisioned device - Error\n    the device is provisioned"
        ),
        "{out}"
    );
    assert!(text.stderr().contains("check(s) failed"), "{text:?}");
}

#[test]
fn check_fails_when_the_tpm_is_unreachable_and_reads_it_directly_without_keyd_tpm() {
    let mut device = Device::with_tpm();
    device.start_keyd();
    let json = check(&device, &["-o", "json"]).json();
    assert_eq!(result_of(&json, "tpmd-running"), "ok");
    assert_eq!(result_of(&json, "tpm-tcti-opens"), "ok");
    assert_eq!(json["checks"]["tpm-tcti-opens"]["additional_info"]["via"], "keyd-tpm");
    assert_eq!(result_of(&json, "tpm-ek-srk"), "ok");

    // The TPM goes away under a running keyd-tpm.
    device.tpm.as_mut().unwrap().stop();
    let run = check(&device, &["-o", "json"]);
    let json = run.expect(1).json();
    assert_eq!(result_of(&json, "tpmd-running"), "ok", "keyd-tpm itself still answers");
    assert_eq!(result_of(&json, "tpm-tcti-opens"), "error", "{run:?}");
    let details = json["checks"]["tpm-tcti-opens"]["result"]["details"].to_string();
    assert!(
        details.contains("cannot open the TPM through TCTI") && details.contains("simulator running"),
        "{details}"
    );
    assert!(details.contains("keyd-tpm reports"), "{details}");
    for dependent in ["tpm-ek-srk", "tpm-ek-certificate", "tpm-auth-key", "tpm-hierarchy-auth"] {
        assert_eq!(result_of(&json, dependent), "skipped", "{dependent}");
    }

    // keyd-tpm stopped, TPM back: the TPM is read directly, read-only.
    device.tpm.as_mut().unwrap().restart();
    device.stop_keyd();
    let json = check(&device, &["-o", "json"]).json();
    assert_eq!(result_of(&json, "tpmd-running"), "error");
    assert_eq!(result_of(&json, "tpm-tcti-opens"), "ok", "{json}");
    assert_eq!(json["checks"]["tpm-tcti-opens"]["additional_info"]["via"], "direct");
    assert_eq!(
        json["checks"]["tpm-tcti-opens"]["additional_info"]["manufacturer"],
        "IBM"
    );
    assert_eq!(
        result_of(&json, "tpm-ek-srk"),
        "ok",
        "keyd-tpm persisted them before it stopped"
    );
    // A plain swtpm has no EK certificate: a warning that says so.
    let ek_cert = &json["checks"]["tpm-ek-certificate"];
    assert_eq!(result_of(&json, "tpm-ek-certificate"), "warning", "{ek_cert}");
    assert!(ek_cert["result"]["details"][0].as_str().unwrap().contains("no EK certificate in NV"), "{ek_cert}");
    assert_eq!(result_of(&json, "tpm-hierarchy-auth"), "ok");
}

#[test]
fn a_wrong_hierarchy_password_is_detected_without_changing_the_tpm() {
    let mut device = Device::with_tpm();
    device.start_keyd();
    // The admin sets an owner password on the TPM after keyd-tpm persisted the EK and SRK.
    device
        .tpm()
        .tpm2_ok("tpm2_changeauth", &["-c", "owner", "s3cret"], device.dir.path());

    let hierarchy = |owner: Option<&str>| {
        let mut config = std::fs::read_to_string(device.path("tpmd.toml")).unwrap();
        if let Some(i) = config.find("[hierarchy_authorization]") {
            config.truncate(i);
        }
        if let Some(owner) = owner {
            config.push_str(&format!("[hierarchy_authorization]\nowner = \"{owner}\"\n"));
        }
        std::fs::write(device.path("tpmd.toml"), config).unwrap();
        let run = check(&device, &["-o", "json"]);
        let json = run.json();
        (
            result_of(&json, "tpm-hierarchy-auth"),
            json["checks"]["tpm-hierarchy-auth"].clone(),
            run,
        )
    };

    let (result, c, _) = hierarchy(None);
    assert_eq!(result, "error", "{c}");
    let details = c["result"]["details"][0].as_str().unwrap();
    assert!(
        details.contains("owner hierarchy has a password, but tpmd's config sets none"),
        "{details}"
    );
    assert_eq!(c["additional_info"]["owner"], "rejected");
    assert_eq!(c["additional_info"]["endorsement"], "accepted");

    let (result, c, run) = hierarchy(Some("Not-The-Password-42"));
    assert_eq!(result, "error", "{c}");
    assert!(
        c["result"]["details"][0]
            .as_str()
            .unwrap()
            .contains("rejected the owner password"),
        "{c}"
    );
    assert!(
        !format!("{run:?}").contains("Not-The-Password-42"),
        "the password is never printed: {run:?}"
    );

    let (result, c, _) = hierarchy(Some("s3cret"));
    assert_eq!(result, "ok", "{c}");
    assert_eq!(c["additional_info"]["password_set"]["owner"], true);

    // The TPM is as the admin left it: the old password still changes it.
    device
        .tpm()
        .tpm2_ok("tpm2_changeauth", &["-c", "owner", "-p", "s3cret"], device.dir.path());
    let json = check(&device, &["-o", "json", "--dont-run", "tpm-hierarchy-auth"]).json();
    assert_eq!(result_of(&json, "tpm-hierarchy-auth"), "ignored");
}

#[test]
fn the_tpm_device_node_is_checked_for_existence_type_and_access() {
    let device = Device::nothing();
    let only_node = [
        "-o",
        "json",
        "--dont-run",
        "tpm-tcti-opens tpm-ek-srk tpm-auth-key tpm-hierarchy-auth",
    ];
    let node = |tcti: &str, user: &str| {
        device.write_tpmd_config(tcti);
        let mut args = only_node.to_vec();
        args.extend(["--tpm-user", user]);
        check(&device, &args).json()["checks"]["tpm-device-node"].clone()
    };
    let me = support::current_user();

    let missing = node(&format!("device:{}", device.path("tpmrm0").display()), &me);
    assert_eq!(missing["result"]["result"], "error");
    assert!(
        missing["result"]["details"][0]
            .as_str()
            .unwrap()
            .contains("tpmrm0 does not exist"),
        "{missing}"
    );

    std::fs::write(device.path("tpm0"), "").unwrap();
    let regular = node(&format!("device:{}", device.path("tpm0").display()), &me);
    assert!(
        regular["result"]["details"][0]
            .as_str()
            .unwrap()
            .contains("is not a character device"),
        "{regular}"
    );

    let usable = node("device:/dev/null", &me);
    assert_eq!(usable["result"]["result"], "ok", "{usable}");
    assert_eq!(usable["additional_info"]["mode"], "0666");

    let nobody = node("device:/dev/null", "no-such-user-here");
    assert_eq!(nobody["result"]["result"], "warning", "{nobody}");
    assert!(
        nobody["result"]["details"][0].as_str().unwrap().contains("--tpm-user"),
        "{nobody}"
    );

    let swtpm = node("swtpm:host=127.0.0.1,port=9", &me);
    assert_eq!(swtpm["result"]["result"], "ignored");
}

#[test]
fn the_check_list_names_every_check() {
    let device = Device::nothing();
    let list = check(&device, &["--list", "-o", "json"]).expect(0).json();
    let tpm: Vec<&str> = list["TPM checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        tpm,
        [
            "tpm-device-node",
            "tpm-tcti-opens",
            "tpm-ek-srk",
            "tpm-ek-certificate",
            "tpm-auth-key",
            "tpm-hierarchy-auth"
        ]
    );
    let text = check(&device, &["--list"]).expect(0).stdout();
    assert!(text.starts_with("CATEGORY"), "{text}");
    assert!(text.contains("Connectivity checks  clock-skew"), "{text}");
}

/// Behind a proxy (a real tinyproxy): `https-proxy` names it and says whether it opens a tunnel
/// to DPS, and the connectivity checks go through it, as identityd-dps does.
#[test]
fn the_https_proxy_is_shown_and_tested_and_the_cloud_checks_go_through_it() {
    let device = provisioned_device();
    let proxy = testkit::Tinyproxy::with_credentials("gw", "pa-ss_1");
    let with_proxy = |url: &str, args: &[&str]| {
        let super_config = device.path("config.toml").display().to_string();
        let mut all = vec!["check", "--super-config", &super_config, "-o", "json"];
        all.extend_from_slice(args);
        let mut env = support::config_env(&device);
        env.push(("https_proxy", url.to_owned()));
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        device.cli_with(&all, &env)
    };

    let run = with_proxy(&proxy.url(), &[]);
    let json = run.expect(0).json();
    let info = &json["checks"]["https-proxy"]["additional_info"];
    assert_eq!(result_of(&json, "https-proxy"), "ok", "{json}");
    assert_eq!(info["proxy"], format!("http://gw:***@127.0.0.1:{}", proxy.port()));
    assert_eq!((info["from"].as_str(), info["credentials"].as_bool()), (Some("https_proxy"), Some(true)));
    for id in ["dps-endpoint-tls", "iothub-reachable"] {
        assert_eq!(result_of(&json, id), "ok", "{id}: {json}");
    }
    let hub = json["additional_info"]["iothub_hostname"].as_str().unwrap().to_owned();
    assert!(proxy.tunnels_to(&hub) >= 1, "the hub check did not go through the proxy:\n{}", proxy.log());
    assert!(!run.stdout().contains("pa-ss_1"));

    // Other credentials: the proxy is named with its answer, in this check and in the DPS one.
    let wrong = format!("http://gw:nope@127.0.0.1:{}", proxy.port());
    let run = with_proxy(&wrong, &[]);
    assert_eq!(run.code(), 1);
    let json = run.json();
    let details = json["checks"]["https-proxy"]["result"]["details"].to_string();
    assert!(details.contains(&format!("the HTTPS proxy http://gw:***@127.0.0.1:{} refused", proxy.port())), "{details}");
    assert!(details.contains("does not accept the user name and password"), "{details}");
    assert_eq!(result_of(&json, "dps-endpoint-tls"), "error");

    // --proxy-uri (what iotedge check passes) wins over the environment.
    let json = with_proxy(&wrong, &["--proxy-uri", &proxy.url()]).expect(0).json();
    assert_eq!(json["checks"]["https-proxy"]["additional_info"]["from"], "--proxy-uri", "{json}");
}
