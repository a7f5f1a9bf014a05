//! `config apply` on generated super-configs: what it accepts, it renders into files each daemon
//! reads back and validates (identityd-dps, keyd-tpm's keyd and tpmd configs) with the same
//! values; what it refuses gets a message naming the file; nothing panics.

use std::path::Path;

use proptest::collection::{btree_map, vec};
use proptest::prelude::*;
use testkit::fuzz::check;
use testkit::fuzz::gen::odd_string;
use testkit::fuzz::toml_gen::{self, int, maybe, one_of, string, typed};
use toml::{Table, Value};

use super::{render, super_config, validate};

const BASE: &str = r#"
hostname = "gw"
[provisioning]
source = "dps"
global_endpoint = "https://global.azure-devices-provisioning.net/"
id_scope = "0ne00000001"
[provisioning.attestation]
method = "tpm"
"#;

/// Super-configs: `hostile` ones have values of any type and range in every key; the others
/// only values of the right type, mostly in range, so that many pass and get rendered.
fn super_config(hostile: bool) -> BoxedStrategy<Table> {
    let t = |good: BoxedStrategy<Value>| if hostile { typed(good) } else { good };
    let m = |v: BoxedStrategy<Value>| maybe(t(v));
    let num = |valid: std::ops::Range<i64>| {
        if hostile {
            int()
        } else {
            prop_oneof![8 => valid.prop_map(Value::Integer), 1 => int()].boxed()
        }
    };
    let str_or = |valid: BoxedStrategy<Value>| {
        if hostile {
            prop_oneof![valid, string()].boxed()
        } else {
            valid
        }
    };
    let hostname = str_or("[a-z][a-z0-9-]{0,20}".prop_map(Value::String).boxed());
    let endpoint = if hostile {
        one_of(&["https://global.azure-devices-provisioning.net/", "HTTPS://Dps.Example.NET:443/a?b", "https://127.0.0.1:8443", "http://x/", "https://", "ftp://x"])
    } else {
        one_of(&["https://global.azure-devices-provisioning.net/", "HTTPS://Dps.Example.NET:443/a?b", "https://127.0.0.1:8443"])
    };
    let registration_id = str_or("[a-z0-9._:-]{1,40}".prop_map(Value::String).boxed());
    let index = if hostile {
        prop_oneof![
            (0i64..=0x7F_FF_FF).prop_map(Value::Integer),
            int(),
            (0u32..0x100_0000).prop_map(|i| Value::String(format!("{i:#08x}"))),
        ]
        .boxed()
    } else {
        prop_oneof![
            (0i64..=0x7F_FF_FF).prop_map(Value::Integer),
            (0u32..0x80_0000).prop_map(|i| Value::String(format!("{i:#08x}"))),
        ]
        .boxed()
    };
    let keys = btree_map("[a-z_]{1,16}", "[a-z0-9/:._-]{0,30}".prop_map(Value::String), 0..3)
        .prop_map(|m| Value::Table(m.into_iter().collect()))
        .boxed();
    let bool_ = any::<bool>().prop_map(Value::Boolean).boxed();
    let rare = |v: BoxedStrategy<Value>| prop_oneof![3 => Just(None), 1 => v.prop_map(Some)].boxed();
    let mut entries: Vec<(&'static [&'static str], BoxedStrategy<Option<Value>>)> = vec![
        (&["hostname"], m(hostname)),
        (&["cloud_timeout_sec"], m(num(70..100_000))),
        (&["cloud_retries"], m(num(0..10))),
        (&["prefer_module_identity_cache"], m(bool_.clone())),
        (&["aziot_max_requests", "keyd"], m(num(1..100))),
        (&["aziot_max_requests", "identityd"], m(num(1..100))),
        (&["aziot_max_requests", "tpmd"], m(num(1..100))),
        (&["provisioning", "global_endpoint"], m(endpoint)),
        (&["provisioning", "id_scope"], m(str_or("0ne[0-9A-F]{8}".prop_map(Value::String).boxed()))),
        (&["provisioning", "attestation", "registration_id"], m(registration_id)),
        (&["provisioning", "payload", "uri"], rare(t(one_of(&["file:///etc/p.json", "file:///etc/my%20p.json"])))),
        (&["tpm", "tcti"], m(one_of(&["device", "swtpm:port=2321", "tabrmd", "device:/dev/tpmrm0"]))),
        (&["tpm", "auth_key_index"], m(index)),
        (&["tpm", "hierarchy_authorization", "owner"], m(str_or("[ -~]{0,20}".prop_map(Value::String).boxed()))),
        (&["tpm", "hierarchy_authorization", "endorsement"], m(str_or("[ -~]{0,20}".prop_map(Value::String).boxed()))),
        (&["preloaded_keys"], rare(keys)),
        (&["cloud", "trust_bundle"], rare(t(one_of(&["/etc/ca.pem", "file:///etc/ca.pem"])))),
        (&["cloud", "sas_token_lifetime_sec"], m(num(1..100_000))),
        (&["cloud", "provisioning_timeout_sec"], m(num(1..100_000))),
        (&["cloud", "max_backoff_sec"], m(num(1..100_000))),
        (&["agent", "name"], rare(string())),
    ];
    if hostile {
        entries.extend([
            (&["local_gateway_hostname"][..], rare(string())),
            (&["provisioning", "source"][..], m(one_of(&["dps", "manual", "none"]))),
            (&["provisioning", "attestation", "method"][..], m(one_of(&["tpm", "x509", "symmetric_key"]))),
            (&["cloud", "system_roots"][..], m(bool_)),
            (&["aziot_keys", "homedir_path"][..], rare(string())),
        ]);
    }
    toml_gen::table(BASE, entries)
}

#[test]
fn what_config_apply_accepts_every_daemon_reads_back() {
    let inputs = prop_oneof![
        4 => super_config(false).prop_map(|t| toml::to_string(&t).unwrap_or_default()),
        4 => super_config(true).prop_map(|t| toml::to_string(&t).unwrap_or_default()),
        1 => toml_gen::text(super_config(true)),
        1 => vec(odd_string(20), 0..4).prop_map(|lines| lines.join("\n")),
    ];
    check("config-apply", 800, inputs, |text| {
        let path = Path::new("/etc/aziot/config.toml");
        let validated = super_config::parse(path, &text)
            .and_then(|parsed| validate::validate(path, parsed, || Ok("machine".to_owned())));
        let v = match validated {
            Ok(v) => v,
            Err(e) => {
                let e = e.to_string();
                prop_assert!(e.contains("/etc/aziot/config.toml"), "refusal names no file: {e}");
                return Ok(());
            }
        };
        let s = &v.settings;

        let identityd = render::identityd(s);
        let settings: identityd_dps::config::Settings = toml::from_str(&identityd)
            .map_err(|e| TestCaseError::fail(format!("identityd cannot read what was written: {e}\n{identityd}")))?;
        let config = settings
            .validate()
            .map_err(|e| TestCaseError::fail(format!("identityd refuses what was written: {e}\n{identityd}")))?;
        prop_assert_eq!(&config.hostname, &s.hostname);
        prop_assert_eq!(config.cloud_timeout.as_secs(), s.cloud_timeout_sec);
        prop_assert_eq!(&config.dps.registration_id, &s.registration_id);

        let tpmd = render::tpmd(s, false);
        let tpmd_config: keyd_tpm::config::TpmdConfig = toml::from_str(&tpmd)
            .map_err(|e| TestCaseError::fail(format!("keyd-tpm cannot read the tpmd file: {e}\n{tpmd}")))?;
        prop_assert_eq!(tpmd_config.shared.auth_key_index, s.tpm.auth_key_index);

        let keyd = render::keyd(s, 993);
        let keyd_config: keyd_tpm::keyd::KeydConfig = toml::from_str(&keyd)
            .map_err(|e| TestCaseError::fail(format!("keyd-tpm cannot read the keyd file: {e}\n{keyd}")))?;
        prop_assert_eq!(keyd_config.principal.len(), 1);
        Ok(())
    });
}
