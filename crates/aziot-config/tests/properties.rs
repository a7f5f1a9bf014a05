//! The config loader on generated config.toml + config.d files: the merge is upstream's rule
//! (tables key by key, arrays concatenated, anything else replaced, snippets in name order),
//! and every refusal names the file to fix; nothing panics, whatever the files hold.

use proptest::collection::{btree_map, vec};
use proptest::prelude::*;
use serde::Deserialize;
use testkit::fuzz::check;
use toml::{Table, Value};

/// Values over few key names, so that files collide and merge.
fn value() -> BoxedStrategy<Value> {
    let leaf = prop_oneof![
        (0i64..5).prop_map(Value::Integer),
        "[xy]{0,2}".prop_map(Value::String),
        any::<bool>().prop_map(Value::Boolean),
    ];
    leaf.prop_recursive(3, 16, 3, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..3).prop_map(Value::Array),
            btree_map("[abc]", inner, 0..3).prop_map(|m| Value::Table(m.into_iter().collect())),
        ]
    })
    .boxed()
}

fn table() -> BoxedStrategy<Table> {
    btree_map("[abc]", value(), 0..4)
        .prop_map(|m| m.into_iter().collect())
        .boxed()
}

/// Upstream's rule, written out independently of the crate's.
fn merged(mut base: Value, patch: Value) -> Value {
    match (&mut base, patch) {
        (Value::Table(b), Value::Table(p)) => {
            for (k, v) in p {
                let next = match b.remove(&k) {
                    Some(old) => merged(old, v),
                    None => v,
                };
                b.insert(k, next);
            }
            base
        }
        (Value::Array(b), Value::Array(p)) => {
            b.extend(p);
            base
        }
        (_, p) => p,
    }
}

fn write(dir: &std::path::Path, main: Option<&str>, snippets: &[String]) -> (std::path::PathBuf, std::path::PathBuf) {
    let file = dir.join("config.toml");
    let snippet_dir = dir.join("config.d");
    if let Some(m) = main {
        std::fs::write(&file, m).unwrap();
    }
    std::fs::create_dir(&snippet_dir).unwrap();
    for (i, s) in snippets.iter().enumerate() {
        std::fs::write(snippet_dir.join(format!("{:02}-s.toml", 10 - i)), s).unwrap();
    }
    (file, snippet_dir)
}

#[test]
fn files_merge_by_upstreams_rule_in_name_order() {
    check("config-merge", 300, (prop::option::of(table()), vec(table(), 0..4)), |(main, snippets)| {
        let dir = tempfile::tempdir().unwrap();
        let texts: Vec<String> = snippets.iter().map(|t| toml::to_string(t).unwrap()).collect();
        let main_text = main.as_ref().map(|t| toml::to_string(t).unwrap());
        let (file, snippet_dir) = write(dir.path(), main_text.as_deref(), &texts);
        let loaded: Value = aziot_config::load_from(&file, &snippet_dir)
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        // Snippet i is named (10 - i): they merge in reverse generation order.
        let mut expected = Value::Table(main.unwrap_or_default());
        for t in snippets.into_iter().rev() {
            expected = merged(expected, Value::Table(t));
        }
        prop_assert_eq!(loaded, expected);
        Ok(())
    });
}

#[derive(Debug, Deserialize)]
#[allow(dead_code)]
struct Settings {
    a: Option<u32>,
    b: Option<Vec<String>>,
    c: Option<Inner>,
}

#[derive(Debug, Deserialize)]
#[allow(dead_code)]
struct Inner {
    a: Option<bool>,
    b: Option<i64>,
}

#[test]
fn a_refusal_names_a_file_whatever_the_files_hold() {
    let text = prop_oneof![
        4 => table().prop_map(|t| toml::to_string(&t).unwrap()),
        1 => testkit::fuzz::gen::text(60),
        1 => vec(any::<u8>(), 0..60).prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
    ];
    let raw = prop_oneof![4 => Just(None), 1 => vec(any::<u8>(), 1..40).prop_map(Some)];
    check("config-errors", 300, (text.clone(), vec(text, 0..3), raw), |(main, snippets, raw)| {
        let dir = tempfile::tempdir().unwrap();
        let (file, snippet_dir) = write(dir.path(), Some(&main), &snippets);
        if let Some(bytes) = raw {
            std::fs::write(snippet_dir.join("50-raw.toml"), bytes).unwrap();
        }
        if let Err(e) = aziot_config::load_from::<Settings>(&file, &snippet_dir) {
            let e = e.to_string();
            prop_assert!(e.contains(&*dir.path().to_string_lossy()), "names no file: {e}");
        }
        Ok(())
    });
}
