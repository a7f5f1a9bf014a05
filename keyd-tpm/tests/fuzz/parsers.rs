//! keyd-tpm's config readers on generated files: the tpmd and keyd configs, through the same
//! loader the daemon uses (config.toml + config.d), never panic; a value in range is taken and
//! one out of range is refused naming the key.

use keyd_tpm::config::TpmdConfig;
use keyd_tpm::keyd::KeydConfig;
use proptest::prelude::*;
use testkit::fuzz::check;
use testkit::fuzz::gen::{odd_string, text};
use toml::{Table, Value};

/// Any TOML value, a few levels deep.
pub fn toml_value() -> BoxedStrategy<Value> {
    let leaf = prop_oneof![
        odd_string(40).prop_map(Value::String),
        any::<i64>().prop_map(Value::Integer),
        (-1e12f64..1e12).prop_map(Value::Float),
        any::<bool>().prop_map(Value::Boolean),
    ];
    leaf.prop_recursive(2, 12, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map("[a-z_]{1,10}", inner, 0..4)
                .prop_map(|m| Value::Table(m.into_iter().collect())),
        ]
    })
    .boxed()
}

/// `key = well-typed value` most of the time, anything sometimes, absent sometimes.
fn entry(key: &'static str, good: BoxedStrategy<Value>) -> BoxedStrategy<Option<(String, Value)>> {
    prop_oneof![
        3 => good.prop_map(move |v| Some((key.to_owned(), v))),
        1 => toml_value().prop_map(move |v| Some((key.to_owned(), v))),
        2 => Just(None),
    ]
    .boxed()
}

fn table(entries: Vec<BoxedStrategy<Option<(String, Value)>>>) -> BoxedStrategy<Table> {
    let extra = proptest::collection::vec(("[a-z_]{1,12}", toml_value()), 0..2);
    (entries, extra)
        .prop_map(|(entries, extra)| {
            let mut t = Table::new();
            for (k, v) in entries.into_iter().flatten().chain(extra) {
                t.insert(k, v);
            }
            t
        })
        .boxed()
}

fn string() -> BoxedStrategy<Value> {
    odd_string(60).prop_map(Value::String).boxed()
}

fn tpmd_config() -> BoxedStrategy<Table> {
    let index = prop_oneof![
        (0i64..=0x7F_FF_FF).prop_map(Value::Integer),
        any::<i64>().prop_map(Value::Integer),
        (0u32..0x100_0000).prop_map(|i| Value::String(format!("{i:#08x}"))),
        odd_string(12).prop_map(Value::String),
    ]
    .boxed();
    let auth = table(vec![entry("endorsement", string()), entry("owner", string())])
        .prop_map(Value::Table)
        .boxed();
    let endpoints = table(vec![entry("aziot_tpmd", string())]).prop_map(Value::Table).boxed();
    table(vec![
        entry("tcti", string()),
        entry("auth_key_index", index),
        entry("max_requests", any::<i64>().prop_map(Value::Integer).boxed()),
        entry("homedir", string()),
        entry("hierarchy_authorization", auth),
        entry("endpoints", endpoints),
    ])
}

fn keyd_config() -> BoxedStrategy<Table> {
    let map = proptest::collection::btree_map(text(12), string(), 0..3)
        .prop_map(|m| Value::Table(m.into_iter().collect()))
        .boxed();
    let principal = table(vec![
        entry("uid", any::<i64>().prop_map(Value::Integer).boxed()),
        entry(
            "keys",
            proptest::collection::vec(string(), 0..3).prop_map(Value::Array).boxed(),
        ),
    ])
    .prop_map(Value::Table);
    table(vec![
        entry("aziot_keys", map.clone()),
        entry("preloaded_keys", map),
        entry(
            "principal",
            proptest::collection::vec(principal, 0..3).prop_map(Value::Array).boxed(),
        ),
        entry("max_requests", any::<i64>().prop_map(Value::Integer).boxed()),
    ])
}

/// TOML text: the table written out, or that text damaged.
fn toml_text(table: BoxedStrategy<Table>) -> BoxedStrategy<String> {
    let written = table.prop_map(|t| toml::to_string(&t).unwrap_or_default());
    prop_oneof![
        6 => written.clone(),
        1 => (written, any::<proptest::sample::Index>(), text(3)).prop_map(|(t, i, junk)| {
            let mut at = i.index(t.len() + 1);
            while !t.is_char_boundary(at) {
                at -= 1;
            }
            format!("{}{junk}{}", &t[..at], &t[at..])
        }),
        1 => text(200),
    ]
    .boxed()
}

#[test]
fn tpmd_config_takes_indexes_in_range_and_names_the_key_otherwise() {
    check("tpmd-config", 300, toml_text(tpmd_config()), |text| {
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
    check("keyd-config", 300, toml_text(keyd_config()), |text| {
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
    let files = (toml_text(tpmd_config()), proptest::collection::vec(toml_text(tpmd_config()), 0..3));
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
