//! Generators of TOML config files: any value, values of the expected type most of the time,
//! and setting a dotted key in a table, for the config readers' property tests.

use proptest::collection::{btree_map, vec};
use proptest::prelude::*;
use toml::{Table, Value};

use super::gen::odd_string;

/// Any TOML value, a few levels deep.
pub fn value() -> BoxedStrategy<Value> {
    let leaf = prop_oneof![
        odd_string(40).prop_map(Value::String),
        int(),
        (-1e12f64..1e12).prop_map(Value::Float),
        any::<bool>().prop_map(Value::Boolean),
    ];
    leaf.prop_recursive(2, 12, 4, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..4).prop_map(Value::Array),
            btree_map("[a-z_]{1,10}", inner, 0..4).prop_map(|m| Value::Table(m.into_iter().collect())),
        ]
    })
    .boxed()
}

/// Integers config readers get wrong: small ones, 0, -1, the extremes.
pub fn int() -> BoxedStrategy<Value> {
    prop_oneof![
        4 => (0i64..100_000).prop_map(Value::Integer),
        1 => any::<i64>().prop_map(Value::Integer),
        1 => Just(Value::Integer(i64::MAX)),
        1 => Just(Value::Integer(i64::MIN)),
        1 => Just(Value::Integer(0)),
        1 => Just(Value::Integer(-1)),
    ]
    .boxed()
}

/// A string of [`odd_string`]s.
pub fn string() -> BoxedStrategy<Value> {
    odd_string(60).prop_map(Value::String).boxed()
}

/// One of `choices` as a string.
pub fn one_of(choices: &'static [&'static str]) -> BoxedStrategy<Value> {
    proptest::sample::select(choices)
        .prop_map(|s| Value::String(s.to_owned()))
        .boxed()
}

/// `good` most of the time; a value of another type sometimes.
pub fn typed(good: BoxedStrategy<Value>) -> BoxedStrategy<Value> {
    prop_oneof![
        8 => good,
        1 => string(),
        1 => any::<bool>().prop_map(Value::Boolean),
        1 => int(),
        1 => value(),
    ]
    .boxed()
}

/// Present (2 in 3) or absent.
pub fn maybe(v: BoxedStrategy<Value>) -> BoxedStrategy<Option<Value>> {
    prop_oneof![2 => v.prop_map(Some), 1 => Just(None)].boxed()
}

/// Sets `path` (e.g. `["cloud", "trust_bundle"]`) in `table` to `value` if there is one,
/// making the tables on the way; a non-table on the way is left as it is.
pub fn set(table: &mut Table, path: &[&str], value: Option<Value>) {
    let Some(value) = value else { return };
    let Some((last, parents)) = path.split_last() else { return };
    let mut t = table;
    for p in parents {
        let entry = t
            .entry((*p).to_owned())
            .or_insert_with(|| Value::Table(Table::new()));
        let Value::Table(inner) = entry else { return };
        t = inner;
    }
    t.insert((*last).to_owned(), value);
}

/// `base` with each `(path, value)` set.
pub fn table(base: &str, entries: Vec<(&'static [&'static str], BoxedStrategy<Option<Value>>)>) -> BoxedStrategy<Table> {
    let base: Table = toml::from_str(base).expect("base TOML");
    let (paths, values): (Vec<_>, Vec<_>) = entries.into_iter().unzip();
    values
        .prop_map(move |values| {
            let mut t = base.clone();
            for (path, value) in paths.iter().zip(values) {
                set(&mut t, path, value);
            }
            t
        })
        .boxed()
}

/// The table written out, or that text damaged, or any text.
pub fn text(table: BoxedStrategy<Table>) -> BoxedStrategy<String> {
    let written = table.prop_map(|t| toml::to_string(&t).unwrap_or_default());
    prop_oneof![
        8 => written.clone(),
        1 => (written, any::<proptest::sample::Index>(), super::gen::text(3)).prop_map(|(t, i, junk)| {
            let mut at = i.index(t.len() + 1);
            while !t.is_char_boundary(at) {
                at -= 1;
            }
            format!("{}{junk}{}", &t[..at], &t[at..])
        }),
        1 => super::gen::text(200),
    ]
    .boxed()
}
