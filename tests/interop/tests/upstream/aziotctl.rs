//! The aziotctl commands our messages and docs name (`config apply`, `system reprovision`,
//! `system restart`, `system set-log-level`, ...) work in both layouts of our package: passed to
//! upstream's aziotctl beside its package, done by aziot-tpm without it.

use interop::sandbox::text;

use crate::check::{device, installed};

#[test]
fn the_aziotctl_commands_admins_are_told_to_run_work_with_and_without_upstream() {
    let Some((up, _t)) = interop::case("aziotctl config apply / system * in both layouts", true) else { return };
    let world = device(&up, true);
    let super_config = format!(
        "hostname = \"interop-gw\"\n[provisioning]\nsource = \"dps\"\nglobal_endpoint = \"{}\"\nid_scope = \"{}\"\n\
         [provisioning.attestation]\nmethod = \"tpm\"\nregistration_id = \"{}\"\n",
        world.ready["dps_endpoint"].as_str().unwrap(),
        world.ready["id_scope"].as_str().unwrap(),
        world.registration_id
    );
    for with_upstream in [true, false] {
        let layout = if with_upstream { "with upstream" } else { "without upstream" };
        let (sandbox, setup) = installed(&world, with_upstream);
        std::fs::write(sandbox.path("super.toml"), &super_config).unwrap();
        let run = |script: &str| {
            let out = sandbox.run(&format!("{setup}cp '{}' /etc/aziot/config.toml\n{script}", sandbox.path("super.toml").display()));
            (out.status.code(), text(&out))
        };

        let (code, out) = run("aziotctl config apply");
        assert_eq!(code, Some(0), "{layout}: config apply: {out}");
        let identityd = std::fs::read_to_string(sandbox.etc("aziot/identityd/config.d/00-super.toml")).unwrap_or_default();
        assert!(identityd.contains(&format!("registration_id = \"{}\"", world.registration_id)), "{layout}: {identityd}\n{out}");
        let calls = sandbox.systemctl_calls();
        assert!(calls.iter().any(|c| c.ends_with("start aziot-identityd.service")), "{layout}: {calls:?}");

        let (code, out) = run("aziotctl system reprovision");
        assert_eq!(code, Some(0), "{layout}: reprovision: {out}\n{}", world.logs());

        let (code, out) = run("aziotctl system set-log-level debug && cat /etc/systemd/system/aziot-keyd.service.d/log-level.conf");
        assert_eq!(code, Some(0), "{layout}: set-log-level: {out}");
        // Upstream writes the level in upper case; so does aziot-tpm in its place.
        assert!(out.contains("[Service]\nEnvironment=AZIOT_LOG=DEBUG\n"), "{layout}: {out}");

        let before = sandbox.systemctl_calls().len();
        let (code, out) = run("aziotctl system restart");
        assert_eq!(code, Some(0), "{layout}: restart: {out}");
        let restarted = sandbox.systemctl_calls()[before..].join("\n");
        assert!(restarted.contains("start aziot-keyd.socket") && restarted.contains("aziot-identityd.service"), "{layout}: {restarted}");
    }
    // What only upstream's aziotctl does says so, without upstream.
    let (sandbox, setup) = installed(&world, false);
    let out = sandbox.run(&format!("{setup}aziotctl config mp -c 'HostName=x;DeviceId=y;SharedAccessKey=z'\n"));
    assert_eq!(out.status.code(), Some(127), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is a command of upstream's aziotctl"), "{}", text(&out));
}
