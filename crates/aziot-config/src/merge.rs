//! Upstream's merge rule, which `[[principal]]` snippets in config.d rely on:
//! tables merge key by key, arrays concatenate, anything else is replaced.

use toml::Value;

pub(crate) fn merge(base: &mut Value, patch: Value) {
    match (base, patch) {
        (Value::Table(base), Value::Table(patch)) => {
            for (key, value) in patch {
                match base.get_mut(&key) {
                    Some(existing) => merge(existing, value),
                    None => {
                        base.insert(key, value);
                    }
                }
            }
        }
        (Value::Array(base), Value::Array(patch)) => base.extend(patch),
        (base, patch) => *base = patch,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Value {
        Value::Table(toml::from_str(s).unwrap())
    }

    #[test]
    fn nested_tables_merge_key_by_key() {
        let mut base = v("[a]\nx = 1\n[a.b]\ny = 2\n");
        merge(&mut base, v("[a]\nz = 3\n[a.b]\nw = 4\n"));
        assert_eq!(base, v("[a]\nx = 1\nz = 3\n[a.b]\ny = 2\nw = 4\n"));
    }

    #[test]
    fn scalars_are_overridden() {
        let mut base = v("hostname = \"a\"\nmax_requests = 10\n");
        merge(&mut base, v("max_requests = 20\n"));
        assert_eq!(base, v("hostname = \"a\"\nmax_requests = 20\n"));
    }

    #[test]
    fn arrays_of_tables_accumulate() {
        let mut base = v("[[principal]]\nuid = 1\n");
        merge(&mut base, v("[[principal]]\nuid = 2\n"));
        assert_eq!(base, v("[[principal]]\nuid = 1\n[[principal]]\nuid = 2\n"));
    }

    #[test]
    fn a_different_type_replaces() {
        let mut base = v("a = [1]\nb = { c = 1 }\n");
        merge(&mut base, v("a = \"s\"\nb = 2\n"));
        assert_eq!(base, v("a = \"s\"\nb = 2\n"));
    }
}
