//! Config key paths (`principal[1].uid`) and which files set them, so an error
//! about the merged config can point at the file to edit.

use std::fmt;
use std::path::{Path, PathBuf};

use toml::Value;

use crate::read::Source;

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Segment {
    Key(String),
    Index(usize),
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct KeyPath(pub Vec<Segment>);

impl KeyPath {
    pub(crate) fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    pub(crate) fn from_error_path(path: &serde_path_to_error::Path) -> Self {
        let mut segments = Vec::new();
        for segment in path {
            match segment {
                serde_path_to_error::Segment::Seq { index } => {
                    segments.push(Segment::Index(*index))
                }
                serde_path_to_error::Segment::Map { key } => {
                    segments.push(Segment::Key(key.clone()))
                }
                serde_path_to_error::Segment::Enum { .. }
                | serde_path_to_error::Segment::Unknown => {}
            }
        }
        KeyPath(segments)
    }

    pub(crate) fn from_ignored_path(path: &serde_ignored::Path<'_>) -> Self {
        let mut segments = Vec::new();
        let mut current = path;
        loop {
            match current {
                serde_ignored::Path::Root => break,
                serde_ignored::Path::Seq { parent, index } => {
                    segments.push(Segment::Index(*index));
                    current = parent;
                }
                serde_ignored::Path::Map { parent, key } => {
                    segments.push(Segment::Key(key.clone()));
                    current = parent;
                }
                serde_ignored::Path::Some { parent }
                | serde_ignored::Path::NewtypeStruct { parent }
                | serde_ignored::Path::NewtypeVariant { parent } => current = parent,
            }
        }
        segments.reverse();
        KeyPath(segments)
    }

    /// The files whose contents produced the merged value at this path: for a
    /// scalar the last file that set it (later files override), for a table or
    /// array every file that contributed. Array indices refer to the
    /// concatenation, so each index belongs to exactly one file.
    pub(crate) fn files<'a>(&self, sources: &'a [Source]) -> Vec<&'a Path> {
        let mut found: Vec<(&Path, &Value)> = sources
            .iter()
            .map(|s| (s.path.as_path(), &s.value))
            .collect();
        for segment in &self.0 {
            found = match segment {
                Segment::Key(key) => found
                    .into_iter()
                    .filter_map(|(path, value)| Some((path, value.get(key.as_str())?)))
                    .collect(),
                Segment::Index(index) => {
                    let mut remaining = *index;
                    let mut owner = None;
                    for (path, value) in found {
                        let Some(items) = value.as_array() else {
                            continue;
                        };
                        if let Some(item) = items.get(remaining) {
                            owner = Some((path, item));
                            break;
                        }
                        remaining -= items.len();
                    }
                    owner.into_iter().collect()
                }
            };
        }
        let containers = found
            .iter()
            .all(|(_, v)| matches!(v, Value::Table(_) | Value::Array(_)));
        if !containers {
            found.drain(..found.len().saturating_sub(1));
        }
        found.into_iter().map(|(path, _)| path).collect()
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, segment) in self.0.iter().enumerate() {
            match segment {
                Segment::Key(key) if i == 0 => write!(f, "{key}")?,
                Segment::Key(key) => write!(f, ".{key}")?,
                Segment::Index(index) => write!(f, "[{index}]")?,
            }
        }
        Ok(())
    }
}

/// `a, b` for messages.
pub(crate) fn list(files: &[&Path]) -> String {
    files
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

pub(crate) fn owned(files: &[&Path]) -> Vec<PathBuf> {
    files.iter().map(|p| p.to_path_buf()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(path: &str, text: &str) -> Source {
        Source {
            path: PathBuf::from(path),
            value: Value::Table(toml::from_str(text).unwrap()),
        }
    }

    fn key(path: &[Segment]) -> KeyPath {
        KeyPath(path.to_vec())
    }

    #[test]
    fn displays_like_toml_keys() {
        let p = key(&[
            Segment::Key("principal".into()),
            Segment::Index(1),
            Segment::Key("uid".into()),
        ]);
        assert_eq!(p.to_string(), "principal[1].uid");
    }

    #[test]
    fn scalar_belongs_to_the_last_file_setting_it() {
        let s = [
            source("a", "x = 1"),
            source("b", "y = 2"),
            source("c", "x = 3"),
        ];
        assert_eq!(key(&[Segment::Key("x".into())]).files(&s), [Path::new("c")]);
    }

    #[test]
    fn table_belongs_to_every_contributor() {
        let s = [
            source("a", "[t]\nx = 1"),
            source("b", "[t]\ny = 2"),
            source("c", "z = 1"),
        ];
        assert_eq!(
            key(&[Segment::Key("t".into())]).files(&s),
            [Path::new("a"), Path::new("b")]
        );
    }

    #[test]
    fn array_index_maps_to_the_file_that_contributed_it() {
        let s = [
            source("a", "[[principal]]\nuid = 1\n[[principal]]\nuid = 2"),
            source("b", "[[principal]]\nuid = \"x\""),
        ];
        let p = key(&[
            Segment::Key("principal".into()),
            Segment::Index(2),
            Segment::Key("uid".into()),
        ]);
        assert_eq!(p.files(&s), [Path::new("b")]);
        let p = key(&[Segment::Key("principal".into()), Segment::Index(1)]);
        assert_eq!(p.files(&s), [Path::new("a")]);
    }
}
