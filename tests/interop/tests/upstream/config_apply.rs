//! `aziotctl config apply` (upstream's) and `aziot-tpm config apply` on the same super-configs,
//! each in its own private `/etc/aziot`: the same files, owners, modes and service restarts.

use interop::sandbox::{text, Sandbox};
use std::os::unix::fs::MetadataExt;

const SERVICES: [&str; 4] = ["keyd", "certd", "identityd", "tpmd"];

/// What one tool wrote: (service, contents, uid, gid, mode) and its systemctl calls.
pub fn apply(tool: &std::path::Path, super_config: &str) -> (Vec<(String, String, u32, u32, u32)>, Vec<String>) {
    let sandbox = Sandbox::new();
    std::fs::write(sandbox.path("config.toml"), super_config).unwrap();
    // The payload file the rich super-config names (ours refuses to apply a missing one).
    let out = sandbox.run(&format!(
        "cp {cfg} /etc/aziot/config.toml && echo '{{}}' > /etc/aziot/payload.json && {tool} config apply",
        cfg = sandbox.path("config.toml").display(),
        tool = tool.display()
    ));
    assert!(out.status.success(), "{}: {}", tool.display(), text(&out));
    let files = SERVICES
        .iter()
        .map(|s| {
            let path = sandbox.etc(&format!("aziot/{s}/config.d/00-super.toml"));
            let meta = std::fs::metadata(&path).unwrap_or_else(|e| panic!("{}: {e}\n{}", path.display(), text(&out)));
            (s.to_string(), std::fs::read_to_string(&path).unwrap(), meta.uid(), meta.gid(), meta.mode() & 0o7777)
        })
        .collect();
    // The flags each tool passes differ (ours adds --no-ask-password); the units and order count.
    let calls = sandbox
        .systemctl_calls()
        .into_iter()
        .map(|c| c.split_whitespace().filter(|w| !w.starts_with("--")).collect::<Vec<_>>().join(" "))
        .collect();
    (files, calls)
}

fn same_output_for(up: &interop::Upstream, case: &str, super_config: &str) {
    let upstream = apply(&up.bin("aziotctl"), super_config);
    let ours = apply(&testkit::workspace_bin("aziot-tpm"), super_config);
    for ((service, theirs, uid, gid, mode), (_, mine, my_uid, my_gid, my_mode)) in upstream.0.iter().zip(&ours.0) {
        let mine = mine.replacen("`aziot-tpm config apply`", "`aziotctl config apply`", 1);
        assert_eq!(&mine, theirs, "{case}: {service}'s file");
        assert_eq!((my_uid, my_gid, my_mode), (uid, gid, mode), "{case}: {service}'s owner and mode");
    }
    // Ours then starts aziot-keyd.service too (so a keyd that cannot start fails now, with its
    // error) and asks `systemctl show` how each daemon came up; upstream's steps come first, in
    // its order.
    let ours_steps: Vec<&String> = ours.1.iter().filter(|c| c.starts_with("systemctl start ") || c.starts_with("systemctl stop ")).collect();
    let mut expected: Vec<&String> = upstream.1.iter().collect();
    let keyd = "systemctl start aziot-keyd.service".to_owned();
    expected.push(&keyd);
    assert_eq!(ours_steps, expected, "{case}: the service restarts");
}

#[test]
fn config_apply_writes_what_upstreams_writes_for_the_rich_super_config() {
    let Some((up, _t)) = interop::case("config apply: rich super-config (tcti, passwords, limits, payload)", true) else { return };
    same_output_for(&up, "rich", include_str!("../../../fixtures/upstream-config-apply/rich/config.toml"));
}

#[test]
fn config_apply_writes_what_upstreams_writes_for_the_minimal_super_config() {
    let Some((up, _t)) = interop::case("config apply: minimal DPS-TPM super-config", true) else { return };
    same_output_for(&up, "regid", include_str!("../../../fixtures/upstream-config-apply/regid/config.toml"));
}
