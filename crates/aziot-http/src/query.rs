//! Query-string parsing, `application/x-www-form-urlencoded` style as upstream
//! (`+` is a space, invalid UTF-8 is replaced rather than rejected).

use std::collections::BTreeMap;

/// A parsed query: `api-version` separated from the route's own parameters.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Query {
    pub api_version: Option<String>,
    pub params: BTreeMap<String, String>,
}

/// Parses `query` (the part after `?`). A repeated name keeps its last value.
pub(crate) fn parse(query: Option<&str>) -> Query {
    let mut parsed = Query::default();
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let (name, value) = (decode(name), decode(value));
        if name == "api-version" {
            parsed.api_version = Some(value);
        } else {
            parsed.params.insert(name, value);
        }
    }
    parsed
}

pub(crate) fn decode(s: &str) -> String {
    let plus_as_space = s.replace('+', " ");
    percent_encoding::percent_decode_str(&plus_as_space)
        .decode_utf8_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn separates_api_version() {
        let q = parse(Some("api-version=2020-09-01&type=sas&x"));
        assert_eq!(q.api_version.as_deref(), Some("2020-09-01"));
        assert_eq!(q.params.get("type").map(String::as_str), Some("sas"));
        assert_eq!(q.params.get("x").map(String::as_str), Some(""));
        assert_eq!(q.params.len(), 2);
    }

    #[test]
    fn decodes_percent_and_plus() {
        let q = parse(Some("name=a%2Fb+c&api-version=2021%2D05%2D01"));
        assert_eq!(q.params["name"], "a/b c");
        assert_eq!(q.api_version.as_deref(), Some("2021-05-01"));
    }

    #[test]
    fn empty_or_missing_query() {
        assert_eq!(parse(None), Query::default());
        assert_eq!(parse(Some("")), Query::default());
        assert_eq!(parse(Some("&&")), Query::default());
    }

    #[test]
    fn last_value_wins() {
        let q = parse(Some("api-version=1&api-version=2&a=1&a=2"));
        assert_eq!(q.api_version.as_deref(), Some("2"));
        assert_eq!(q.params["a"], "2");
    }
}
