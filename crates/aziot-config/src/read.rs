//! Reading config.toml and config.d/*.toml into TOML values, in merge order.

use std::io;
use std::path::{Path, PathBuf};

use crate::error::ConfigError;

/// One parsed file.
#[derive(Debug)]
pub(crate) struct Source {
    pub path: PathBuf,
    pub value: toml::Value,
}

/// `file` (if it exists) then every `*.toml` regular file directly in `dir`, in
/// sorted filename order. `user` is the service user named in permission errors.
pub(crate) fn read_sources(
    file: &Path,
    dir: &Path,
    user: Option<&str>,
) -> Result<Vec<Source>, ConfigError> {
    let mut sources = Vec::new();
    if let Some(source) = read_optional(file, user)? {
        sources.push(source);
    }
    for path in list_snippets(dir, user)? {
        if let Some(source) = read_optional(&path, user)? {
            sources.push(source);
        }
    }
    Ok(sources)
}

/// The `*.toml` files in `dir`, sorted; none if `dir` does not exist.
///
/// Symlinks to regular files count (upstream skips them, which silently drops a
/// snippet an admin linked in on purpose).
fn list_snippets(dir: &Path, user: Option<&str>) -> Result<Vec<PathBuf>, ConfigError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) if e.kind() == io::ErrorKind::NotADirectory => {
            return Err(ConfigError::NotADirectory {
                path: dir.to_owned(),
            })
        }
        Err(e) => return Err(io_error(dir, e, user)),
    };
    let mut paths = Vec::new();
    for entry in entries {
        let path = entry.map_err(|e| io_error(dir, e, user))?.path();
        if path.extension().and_then(|e| e.to_str()) != Some("toml") {
            continue;
        }
        match std::fs::metadata(&path) {
            Ok(meta) if meta.is_file() => paths.push(path),
            Ok(_) => log::debug!("ignoring {}: not a regular file", path.display()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                log::warn!("ignoring {}: dangling symbolic link", path.display());
            }
            Err(e) => return Err(io_error(&path, e, user)),
        }
    }
    paths.sort();
    Ok(paths)
}

fn read_optional(path: &Path, user: Option<&str>) -> Result<Option<Source>, ConfigError> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_error(path, e, user)),
    };
    let text = String::from_utf8(bytes).map_err(|e| ConfigError::NotUtf8 {
        path: path.to_owned(),
        valid_up_to: e.utf8_error().valid_up_to(),
    })?;
    let table: toml::Table = toml::from_str(&text).map_err(|e| {
        let (line, column) = e
            .span()
            .map_or((1, 1), |span| line_column(&text, span.start));
        ConfigError::Syntax {
            path: path.to_owned(),
            line,
            column,
            // toml puts "expected ..." on a second line; keep the error on one.
            message: e.message().trim_end().replace('\n', "; "),
        }
    })?;
    Ok(Some(Source {
        path: path.to_owned(),
        value: toml::Value::Table(table),
    }))
}

fn io_error(path: &Path, source: io::Error, user: Option<&str>) -> ConfigError {
    if source.kind() == io::ErrorKind::PermissionDenied {
        let who = match user {
            Some(user) => format!("the service user ({user})"),
            None => "the service's user".to_owned(),
        };
        return ConfigError::PermissionDenied {
            path: path.to_owned(),
            who,
        };
    }
    ConfigError::Read {
        path: path.to_owned(),
        source,
    }
}

#[cfg(test)]
pub(crate) fn io_error_for_tests(
    path: &Path,
    source: io::Error,
    user: Option<&str>,
) -> ConfigError {
    io_error(path, source, user)
}

/// 1-based line and column (in characters) of byte `offset`.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_column_is_one_based() {
        assert_eq!(line_column("abc", 0), (1, 1));
        assert_eq!(line_column("a\nbc", 3), (2, 2));
        assert_eq!(line_column("é\nx", 3), (2, 1));
    }

    #[test]
    fn syntax_error_is_one_line() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("c.toml");
        std::fs::write(&f, "a = \n").unwrap();
        let e = read_optional(&f, None).unwrap_err().to_string();
        assert!(!e.contains('\n'), "{e}");
        assert!(e.contains("c.toml:1:5: invalid TOML"), "{e}");
    }

    #[test]
    fn missing_file_and_dir_give_nothing() {
        let d = tempfile::tempdir().unwrap();
        let s = read_sources(&d.path().join("none.toml"), &d.path().join("none.d"), None).unwrap();
        assert!(s.is_empty());
    }

    #[test]
    fn snippets_are_sorted_and_filtered() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("config.d");
        std::fs::create_dir(&dir).unwrap();
        for name in [
            "20-b.toml",
            "10-a.toml",
            "notes.txt",
            "30.toml.bak",
            "x.toml~",
        ] {
            std::fs::write(dir.join(name), "").unwrap();
        }
        std::fs::create_dir(dir.join("40-dir.toml")).unwrap();
        std::os::unix::fs::symlink(dir.join("10-a.toml"), dir.join("15-link.toml")).unwrap();
        std::os::unix::fs::symlink(dir.join("missing"), dir.join("16-dangling.toml")).unwrap();
        let names: Vec<_> = list_snippets(&dir, None)
            .unwrap()
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["10-a.toml", "15-link.toml", "20-b.toml"]);
    }

    #[test]
    fn dir_that_is_a_file_is_an_error() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("config.d");
        std::fs::write(&f, "").unwrap();
        let e = list_snippets(&f, None).unwrap_err();
        assert!(e.to_string().contains("is not a directory"), "{e}");
    }
}
