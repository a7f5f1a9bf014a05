//! keyd-tpm's config readers on generated files: the tpmd and keyd configs, alone and through
//! the loader the daemon uses (config.toml + config.d), never panic; an auth key index in range
//! is taken and one out of range is refused naming the key.

use keyd_tpm::config::TpmdConfig;
use keyd_tpm::keyd::KeydConfig;
use proptest::collection::{btree_map, vec};
use proptest::prelude::*;
use testkit::fuzz::check;
use testkit::fuzz::gen::{odd_string, text};
use testkit::fuzz::toml_gen::{self, int, maybe, string, typed};
use toml::{Table, Value};

fn tpmd_config() -> BoxedStrategy<Table> {
    let index = prop_oneof![
        (0i64..=0x7F_FF_FF).prop_map(Value::Integer),
        int(),
        (0u32..0x100_0000).prop_map(|i| Value::String(format!("{i:#08x}"))),
        odd_string(12).prop_map(Value::String),
    ]
    .boxed();
    let bytes = vec((0i64..256).prop_map(Value::Integer), 0..8).prop_map(Value::Array).boxed();
    let password = prop_oneof![string(), bytes.clone()].boxed();
    toml_gen::table(
        "",
        vec![
            (&["tcti"], maybe(typed(prop_oneof![string(), bytes].boxed()))),
            (&["auth_key_index"], maybe(typed(index))),
            (&["max_requests"], maybe(typed(int()))),
            (&["homedir"], maybe(typed(string()))),
            (&["hierarchy_authorization", "endorsement"], maybe(typed(password.clone()))),
            (&["hierarchy_authorization", "owner"], maybe(typed(password))),
            (&["endpoints", "aziot_tpmd"], maybe(typed(string()))),
            (&["x_unknown"], maybe(toml_gen::value())),
        ],
    )
}

fn keyd_config() -> BoxedStrategy<Table> {
    let map = btree_map(text(12), string(), 0..3)
        .prop_map(|m| Value::Table(m.into_iter().collect()))
        .boxed();
    let principal = toml_gen::table(
        "",
        vec![
            (&["uid"], maybe(typed(int()))),
            (&["keys"], maybe(typed(vec(string(), 0..3).prop_map(Value::Array).boxed()))),
        ],
    )
    .prop_map(Value::Table);
    toml_gen::table(
        "",
        vec![
            (&["aziot_keys"], maybe(typed(map.clone()))),
            (&["aziot_keys", "homedir_path"], maybe(typed(string()))),
            (&["preloaded_keys"], maybe(typed(map))),
            (&["principal"], maybe(vec(principal, 0..3).prop_map(Value::Array).boxed())),
            (&["max_requests"], maybe(typed(int()))),
            (&["endpoints", "aziot_keyd"], maybe(typed(string()))),
        ],
    )
}

#[test]
fn tpmd_config_takes_indexes_in_range_and_names_the_key_otherwise() {
    check("tpmd-config", 300, toml_gen::text(tpmd_config()), |text| {
        let parsed = toml::from_str::<TpmdConfig>(&text);
        let Ok(table) = toml::from_str::<Table>(&text) else {
            prop_assert!(parsed.is_err());
            return Ok(());
        };
        if let (Ok(config), Some(Value::Integer(i))) = (&parsed, table.get("auth_key_index")) {
            prop_assert_eq!(i64::from(config.shared.auth_key_index), *i);
        }
        if let Some(Value::Integer(i)) = table.get("auth_key_index") {
            if !(0..=0x7F_FF_FF).contains(i) {
                prop_assert!(parsed.is_err(), "{i:#x} taken");
                // Alone, the index is what the error names.
                let alone = toml::from_str::<TpmdConfig>(&format!("auth_key_index = {i}"));
                let e = alone.err().map(|e| e.to_string()).unwrap_or_default();
                prop_assert!(e.contains("auth_key_index"), "{i:#x}: {e}");
            }
        }
        Ok(())
    });
}

#[test]
fn keyd_config_never_panics_and_keeps_its_homedir() {
    check("keyd-config", 300, toml_gen::text(keyd_config()), |text| {
        if let Ok(config) = toml::from_str::<KeydConfig>(&text) {
            let table: Table = toml::from_str(&text).unwrap();
            let configured = table
                .get("aziot_keys")
                .and_then(|t| t.get("homedir_path"))
                .and_then(Value::as_str);
            if let Some(home) = configured {
                prop_assert_eq!(config.homedir(), std::path::PathBuf::from(home));
            }
            let _ = config.ignored_aziot_keys();
        }
        Ok(())
    });
}

#[test]
fn config_files_and_snippets_load_or_say_which_file_is_wrong() {
    let files = (toml_gen::text(tpmd_config()), vec(toml_gen::text(tpmd_config()), 0..3));
    check("tpmd-config-files", 100, files, |(main, snippets)| {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("config.toml");
        let snippet_dir = dir.path().join("config.d");
        std::fs::write(&file, &main).unwrap();
        std::fs::create_dir(&snippet_dir).unwrap();
        for (i, s) in snippets.iter().enumerate() {
            std::fs::write(snippet_dir.join(format!("{i:02}.toml")), s).unwrap();
        }
        if let Err(e) = aziot_config::load_from::<TpmdConfig>(&file, &snippet_dir) {
            let e = e.to_string();
            prop_assert!(e.contains(&*dir.path().to_string_lossy()), "error names no file: {e}");
        }
        Ok(())
    });
}
