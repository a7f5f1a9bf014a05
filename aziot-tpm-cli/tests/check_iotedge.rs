//! `iotedge check` on a gateway with our package: a stand-in for iotedge spawns the `aziotctl`
//! wrapper (aziot-tpm under that name) and parses its stream the way iotedge does.
//!
//! Upstream's real aziotctl (package aziot-identity-service) cannot be installed on the test
//! machine, so a shell script stands in for it at the diverted path: it records its arguments and
//! answers with a canned stream in upstream's exact format (values back to back, as aziotctl
//! writes them), including a `tpmd-running` failure on the default socket that ours supersede.

mod common;

#[path = "check/iotedge.rs"]
mod iotedge;
#[path = "check/support.rs"]
mod support;

use std::process::Command;

use common::Device;
use iotedge::{iotedge_check, Options};
use support::{device_env, install_wrapper, provisioned_device, write_script};

/// Upstream's stream for a DPS device: no `iothub_hostname` in its `additional_info`.
const FAKE_UPSTREAM: &str = r#"here=$(dirname "$0")
printf '%s\n' "$@" > "$here/aziotctl.distrib.args"
case "$1" in
check)
  printf '%s' '{"kind":"section","name":"Configuration checks"}'
  printf '%s' '{"kind":"check","id":"keyd-config-well-formed","description":"keyd configuration is well-formed","result":{"result":"ok"},"additional_info":{}}'
  printf '%s' '{"kind":"check","id":"certd-config-well-formed","description":"certd configuration is well-formed","result":{"result":"ok"},"additional_info":{}}'
  printf '%s' '{"kind":"check","id":"tpmd-config-well-formed","description":"tpmd configuration is well-formed","result":{"result":"ok"},"additional_info":{}}'
  printf '%s' '{"kind":"check","id":"identityd-config-well-formed","description":"identityd configuration is well-formed","result":{"result":"ok"},"additional_info":{}}'
  printf '%s' '{"kind":"check","id":"configs-up-to-date","description":"daemon configurations up-to-date with config.toml","result":{"result":"ok"},"additional_info":{}}'
  printf '%s' '{"kind":"check","id":"hostname","description":"identityd config toml file specifies a valid hostname","result":{"result":"ok"},"additional_info":{}}'
  printf '%s' '{"kind":"check","id":"keyd-running","description":"keyd is running","result":{"result":"ok"},"additional_info":{}}'
  printf '%s' '{"kind":"check","id":"certd-running","description":"certd is running","result":{"result":"ignored"},"additional_info":{}}'
  printf '%s' '{"kind":"check","id":"tpmd-running","description":"tpmd is running","result":{"result":"error","details":["Could not connect to tpmd on unix:///run/aziot/tpmd.sock","No such file or directory (os error 2)"]},"additional_info":{}}'
  printf '%s' '{"kind":"check","id":"identityd-running","description":"identityd is running","result":{"result":"ok"},"additional_info":{}}'
  printf '%s' '{"kind":"section","name":"Connectivity checks"}'
  printf '%s' '{"kind":"check","id":"host-connect-iothub-https","description":"host can connect to and perform TLS handshake with iothub HTTPS port","result":{"result":"ok"},"additional_info":{}}'
  printf '%s' '{"kind":"additional_info","now":"2026-01-01T00:00:00Z","os":{"id":"debian","arch":"x86_64","bitness":64},"dmi":{"product":null,"vendor":null},"system_info":{"used_ram":"1 GiB","total_ram":"2 GiB","used_swap":"0 B","total_swap":"0 B","disks":[]}}'
  echo
  ;;
check-list)
  echo '{"Configuration checks":[{"id":"certd-config-well-formed","description":"certd configuration is well-formed"},{"id":"tpmd-running","description":"tpmd is running"}]}'
  ;;
*)
  echo "upstream aziotctl: $*" >&2
  exit 7
  ;;
esac
"#;

#[test]
fn iotedge_sees_our_tpm_checks_and_the_assigned_hub_through_the_aziotctl_wrapper() {
    let device = provisioned_device();
    let hub = device.cli(&["status", "-o", "json"]).json()["hub"]
        .as_str()
        .unwrap()
        .to_owned();
    let aziotctl = install_wrapper(&device);
    let upstream = device.path("bin/aziotctl.distrib");
    write_script(&upstream, FAKE_UPSTREAM);
    let mut env = device_env(&device);
    env.push(("AZIOT_TPM_REAL_AZIOTCTL".into(), upstream.display().to_string()));

    let options = Options {
        dont_run: &["tpm-hierarchy-auth", "certd-running"],
        expected_aziot_version: Some("1.5.0"),
        ..Options::default()
    };
    let seen = iotedge_check(&aziotctl, &env, &options).unwrap();
    assert_eq!(
        seen.sections,
        [
            "Configuration checks (aziot-identity-service)",
            "TPM checks (aziot-identity-service)",
            "Connectivity checks (aziot-identity-service)"
        ]
    );
    // The assigned hub reaches iotedge's own connectivity checks.
    assert_eq!(seen.iothub_hostname.as_deref(), Some(hub.as_str()));
    assert_eq!(seen.parent_hostname, None);
    // Ours, in their section, passing.
    for id in ["tpm-tcti-opens", "tpm-ek-srk", "tpm-auth-key"] {
        let c = seen.check(id);
        assert_eq!(
            (c.section.as_str(), c.result),
            ("TPM checks (aziot-identity-service)", "ok"),
            "{c:?}"
        );
    }
    assert_eq!(
        seen.check("tpm-hierarchy-auth").result,
        "ignored",
        "named in --dont-run"
    );
    assert_eq!(seen.check("iothub-reachable").result, "ok");
    // Upstream's pass through; the one we supersede is ours, shown once, in upstream's place.
    assert_eq!(seen.check("certd-config-well-formed").result, "ok");
    assert_eq!(seen.check("hostname").result, "ok");
    assert_eq!(
        seen.check("host-connect-iothub-https").section,
        "Connectivity checks (aziot-identity-service)"
    );
    assert_eq!(seen.count("tpmd-running"), 1);
    let tpmd = seen.check("tpmd-running");
    assert_eq!(
        (tpmd.section.as_str(), tpmd.result),
        ("Configuration checks (aziot-identity-service)", "ok"),
        "{tpmd:?}"
    );
    assert_eq!(seen.count("keyd-config-well-formed"), 1);
    // In upstream's order: ours took the places of upstream's.
    let order: Vec<&str> = seen.checks.iter().take(10).map(|c| c.id.as_str()).collect();
    assert_eq!(
        order,
        [
            "keyd-config-well-formed",
            "certd-config-well-formed",
            "tpmd-config-well-formed",
            "identityd-config-well-formed",
            "configs-up-to-date",
            "hostname",
            "keyd-running",
            "certd-running",
            "tpmd-running",
            "identityd-running"
        ]
    );
    assert!(
        seen.checks.iter().all(|c| c.result != "error" && c.result != "fatal"),
        "{}",
        seen.text
    );
    assert!(
        seen.text
            .contains("\u{221a} TPM answers through the configured TCTI - OK\n"),
        "{}",
        seen.text
    );

    // Upstream ran with json-stream, iotedge's options and the hub from the provisioning state.
    let args = std::fs::read_to_string(device.path("bin/aziotctl.distrib.args")).unwrap();
    let args: Vec<&str> = args.lines().collect();
    assert_eq!(args[..3], ["check", "-o", "json-stream"]);
    for pair in [
        ["--dont-run", "tpm-hierarchy-auth certd-running"],
        ["--iothub-hostname", hub.as_str()],
        ["--expected-aziot-version", "1.5.0"],
    ] {
        assert!(args.windows(2).any(|w| w == pair), "{pair:?} not in {args:?}");
    }

    // An admin running the wrapper directly gets the merged result as text or one JSON document.
    let run = |a: &[&str]| {
        Command::new(&aziotctl)
            .args(a)
            .envs(env.iter().cloned())
            .output()
            .unwrap()
    };
    let text = run(&["check"]);
    let out = String::from_utf8_lossy(&text.stdout);
    assert_eq!(text.status.code(), Some(0), "{out}");
    assert!(
        out.contains("\u{221a} certd configuration is well-formed - OK\n"),
        "{out}"
    );
    assert!(out.contains("TPM checks\n----------\n"), "{out}");
    let json: serde_json::Value = serde_json::from_slice(&run(&["check", "-o", "json"]).stdout).unwrap();
    assert_eq!(json["checks"]["certd-config-well-formed"]["result"]["result"], "ok");
    assert_eq!(json["checks"]["tpm-auth-key"]["result"]["result"], "ok");
    assert_eq!(
        json["additional_info"]["now"], "2026-01-01T00:00:00Z",
        "upstream's additional_info is kept"
    );
    assert_eq!(json["additional_info"]["iothub_hostname"], hub.as_str());
    let list: serde_json::Value = serde_json::from_slice(&run(&["check-list", "-o", "json"]).stdout).unwrap();
    assert!(list["TPM checks"].as_array().is_some_and(|a| a.len() == 6), "{list}");
    assert_eq!(list["Configuration checks"][0]["id"], "certd-config-well-formed");

    // Every other command goes to upstream unchanged, exit code included.
    let config = run(&["config", "apply", "-c", "/etc/aziot/config.toml"]);
    assert_eq!(config.status.code(), Some(7));
    assert!(
        String::from_utf8_lossy(&config.stderr).contains("upstream aziotctl: config apply -c /etc/aziot/config.toml")
    );
    let args = std::fs::read_to_string(device.path("bin/aziotctl.distrib.args")).unwrap();
    assert_eq!(args, "config\napply\n-c\n/etc/aziot/config.toml\n");
}

#[test]
fn the_wrapper_keeps_working_when_the_real_aziotctl_is_missing_or_fails() {
    let device = Device::nothing();
    let aziotctl = install_wrapper(&device);
    let with_real = |real: &std::path::Path| {
        let mut env = device_env(&device);
        env.push(("AZIOT_TPM_REAL_AZIOTCTL".into(), real.display().to_string()));
        env
    };

    // Missing: our checks alone, with a note; other commands say what is missing.
    let missing = with_real(&device.path("bin/aziotctl.distrib"));
    let seen = iotedge_check(&aziotctl, &missing, &Options::default()).unwrap();
    assert_eq!(seen.sections.len(), 3, "{seen:#?}");
    assert_eq!(seen.check("aziot-identity-service-checks").result, "ignored");
    assert_eq!(
        seen.check("tpm-device-node").section,
        "TPM checks (aziot-identity-service)"
    );
    let version = Command::new(&aziotctl)
        .arg("version")
        .envs(missing.iter().cloned())
        .output()
        .unwrap();
    assert_eq!(version.status.code(), Some(127));
    assert!(
        String::from_utf8_lossy(&version.stderr).contains("install aziot-identity-service"),
        "{version:?}"
    );

    // Crashing half-way: what it said passes through, then a warning with its last words.
    let crashing = device.path("bin/crashing-aziotctl");
    write_script(
        &crashing,
        "printf '%s' '{\"kind\":\"section\",\"name\":\"Configuration checks\"}{\"kind\":\"check\",\"id\":\"hostname\",\
         \"description\":\"hostname is valid\",\"result\":{\"result\":\"ok\"},\"additional_info\":{}}{\"kind\":'\n\
         echo \"thread 'main' panicked at src/check.rs\" >&2\nexit 101\n",
    );
    let seen = iotedge_check(&aziotctl, &with_real(&crashing), &Options::default()).unwrap();
    assert_eq!(seen.check("hostname").result, "ok");
    let note = seen.check("aziot-identity-service-checks");
    assert_eq!(note.result, "warning");
    assert!(note.details[0].contains("panicked"), "{note:?}");
    assert!(seen.checks.iter().any(|c| c.id == "tpm-tcti-opens"), "{seen:#?}");

    // A real path that is the wrapper itself would loop: refused.
    let looping = Command::new(&aziotctl)
        .arg("version")
        .envs(with_real(&aziotctl))
        .output()
        .unwrap();
    assert_eq!(looping.status.code(), Some(127));
    assert!(
        String::from_utf8_lossy(&looping.stderr).contains("this wrapper itself"),
        "{looping:?}"
    );
}
