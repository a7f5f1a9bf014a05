//! End-to-end loading from a temp dir: merge order, errors, unknown keys.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use crate::error::ConfigError;
use crate::{load, load_from, read, typed};

#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(default)]
struct Settings {
    hostname: Option<String>,
    max_requests: usize,
    #[serde(rename = "principal")]
    principals: Vec<Principal>,
    endpoints: BTreeMap<String, String>,
    aziot_keys: Keys,
}

#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(default)]
struct Keys {
    pkcs11: Pkcs11,
    homedir_path: Option<String>,
}

#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(default)]
struct Pkcs11 {
    lib_path: Option<String>,
    base_slot: Option<String>,
}

#[derive(Debug, Deserialize, PartialEq)]
struct Principal {
    uid: u32,
    keys: Vec<String>,
}

struct Layout {
    _tmp: tempfile::TempDir,
    file: PathBuf,
    dir: PathBuf,
}

impl Layout {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("config.toml");
        let dir = tmp.path().join("config.d");
        std::fs::create_dir(&dir).unwrap();
        Layout {
            _tmp: tmp,
            file,
            dir,
        }
    }

    fn main(&self, text: &str) -> &Self {
        std::fs::write(&self.file, text).unwrap();
        self
    }

    fn snippet(&self, name: &str, text: &str) -> &Self {
        std::fs::write(self.dir.join(name), text).unwrap();
        self
    }

    fn load<T: serde::de::DeserializeOwned>(&self) -> Result<T, ConfigError> {
        load_from(&self.file, &self.dir)
    }

    fn unknown_keys(&self) -> Vec<String> {
        let sources = read::read_sources(&self.file, &self.dir, None).unwrap();
        let loaded = typed::deserialize::<Settings>(&sources).unwrap();
        loaded
            .unknown_keys
            .iter()
            .map(ToString::to_string)
            .collect()
    }
}

fn p(l: &Layout, name: &str) -> String {
    l.dir.join(name).display().to_string()
}

#[test]
fn no_files_at_all_is_an_empty_config() {
    let l = Layout::new();
    std::fs::remove_dir(&l.dir).unwrap();
    assert_eq!(l.load::<Settings>().unwrap(), Settings::default());
}

#[test]
fn nested_tables_merge_across_files() {
    let l = Layout::new();
    l.main("[aziot_keys]\nhomedir_path = \"/var/lib/aziot/keyd\"\n[aziot_keys.pkcs11]\nlib_path = \"/usr/lib/p11.so\"\n")
        .snippet("50-slot.toml", "[aziot_keys.pkcs11]\nbase_slot = \"pkcs11:slot-id=0\"\n");
    let s: Settings = l.load().unwrap();
    assert_eq!(
        s.aziot_keys.homedir_path.as_deref(),
        Some("/var/lib/aziot/keyd")
    );
    assert_eq!(
        s.aziot_keys.pkcs11.lib_path.as_deref(),
        Some("/usr/lib/p11.so")
    );
    assert_eq!(
        s.aziot_keys.pkcs11.base_slot.as_deref(),
        Some("pkcs11:slot-id=0")
    );
}

#[test]
fn principals_from_two_files_accumulate() {
    let l = Layout::new();
    l.main("[[principal]]\nuid = 1\nkeys = [\"a\"]\n").snippet(
        "edge.toml",
        "[[principal]]\nuid = 2\nkeys = [\"b\", \"c\"]\n",
    );
    let s: Settings = l.load().unwrap();
    assert_eq!(
        s.principals,
        [
            Principal {
                uid: 1,
                keys: vec!["a".into()]
            },
            Principal {
                uid: 2,
                keys: vec!["b".into(), "c".into()]
            },
        ]
    );
}

#[test]
fn later_files_override_scalars_in_sorted_order() {
    let l = Layout::new();
    // Written in reverse so directory order is unlikely to match sorted order.
    l.main("max_requests = 10\nhostname = \"main\"\n")
        .snippet("90-last.toml", "hostname = \"ninety\"\n")
        .snippet("10-first.toml", "hostname = \"ten\"\nmax_requests = 20\n");
    let s: Settings = l.load().unwrap();
    assert_eq!(s.hostname.as_deref(), Some("ninety"));
    assert_eq!(s.max_requests, 20);
}

#[test]
fn non_toml_files_are_ignored() {
    let l = Layout::new();
    l.main("max_requests = 3\n")
        .snippet("README", "this is [not toml")
        .snippet("old.toml.bak", "max_requests = 99\n")
        .snippet("edit.toml.swp", "garbage [");
    let s: Settings = l.load().unwrap();
    assert_eq!(s.max_requests, 3);
}

#[test]
fn syntax_error_names_file_line_and_column() {
    let l = Layout::new();
    l.main("max_requests = 3\n")
        .snippet("bad.toml", "hostname = \"ok\"\nmax_requests = = 4\n");
    let err = l.load::<Settings>().unwrap_err().to_string();
    let expected_prefix = format!("{}:2:", p(&l, "bad.toml"));
    assert!(err.starts_with(&expected_prefix), "{err}");
    assert!(
        err.contains("invalid TOML") && err.contains("fix the syntax"),
        "{err}"
    );
}

#[test]
fn type_error_names_key_path_and_the_file_that_set_it() {
    let l = Layout::new();
    l.main("[[principal]]\nuid = 1\nkeys = []\nmax_requests = 1\n")
        .snippet("20.toml", "[[principal]]\nuid = \"root\"\nkeys = []\n");
    let err = l.load::<Settings>().unwrap_err();
    let ConfigError::Invalid {
        key,
        files,
        message,
    } = &err
    else {
        panic!("{err:?}");
    };
    assert_eq!(key, "principal[1].uid");
    assert_eq!(files, &[l.dir.join("20.toml")]);
    assert!(
        message.contains("invalid type: string \"root\""),
        "{message}"
    );
    let text = err.to_string();
    assert!(
        text.contains("`principal[1].uid`") && text.contains("20.toml"),
        "{text}"
    );
}

#[test]
fn overridden_scalar_error_points_at_the_overriding_file() {
    let l = Layout::new();
    l.main("max_requests = 10\n")
        .snippet("50.toml", "max_requests = \"lots\"\n");
    let err = l.load::<Settings>().unwrap_err().to_string();
    assert!(
        err.contains("`max_requests` (set in ") && err.contains("50.toml"),
        "{err}"
    );
    assert!(!err.contains("config.toml"), "{err}");
}

#[test]
fn missing_required_key_is_reported() {
    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Needs {
        homedir: String,
    }
    let l = Layout::new();
    l.main("hostname = \"h\"\n");
    let err = l.load::<Needs>().unwrap_err().to_string();
    assert!(err.contains("missing field `homedir`"), "{err}");
    assert!(err.contains(&l.file.display().to_string()), "{err}");

    let empty = Layout::new();
    let err = empty.load::<Needs>().unwrap_err().to_string();
    assert!(err.contains("no config file was found"), "{err}");
}

#[test]
fn unknown_keys_are_reported_with_their_file() {
    let l = Layout::new();
    l.main("max_requests = 1\nmax_request = 2\n").snippet(
        "edge.toml",
        "[[principal]]\nuid = 1\nkeys = []\nname = \"edge\"\n",
    );
    let unknown = l.unknown_keys();
    assert_eq!(unknown.len(), 2, "{unknown:?}");
    assert!(unknown[0].contains("`max_request`") && unknown[0].contains("config.toml"));
    assert!(unknown[1].contains("`principal[0].name`") && unknown[1].contains("edge.toml"));
    // And loading still succeeds.
    assert_eq!(l.load::<Settings>().unwrap().max_requests, 1);
}

#[test]
fn not_utf8_names_the_file() {
    let l = Layout::new();
    std::fs::write(&l.file, b"hostname = \"\xff\"\n").unwrap();
    let err = l.load::<Settings>().unwrap_err().to_string();
    assert!(
        err.contains("config.toml") && err.contains("UTF-8"),
        "{err}"
    );
}

#[test]
fn permission_denied_names_the_file_and_the_user() {
    let l = Layout::new();
    l.main("max_requests = 1\n");
    std::fs::set_permissions(&l.file, std::os::unix::fs::PermissionsExt::from_mode(0o000)).unwrap();
    // Root reads the file anyway; the message is still checked through load().
    if std::fs::read(&l.file).is_ok() {
        let e = std::io::Error::from(std::io::ErrorKind::PermissionDenied);
        let err = read::io_error_for_tests(&l.file, e, Some("aziottpm")).to_string();
        assert!(
            err.contains("run as root or as the service user (aziottpm)"),
            "{err}"
        );
        return;
    }
    std::env::set_var("AZIOT_TPMD_CONFIG", &l.file);
    std::env::set_var("AZIOT_TPMD_CONFIG_DIR", &l.dir);
    let err = load::<Settings>("tpmd").unwrap_err().to_string();
    assert!(err.contains(&l.file.display().to_string()), "{err}");
    assert!(
        err.contains("run as root or as the service user (aziottpm)"),
        "{err}"
    );
}

#[test]
fn load_reads_the_env_overrides() {
    let l = Layout::new();
    l.main("max_requests = 7\n")
        .snippet("a.toml", "[[principal]]\nuid = 5\nkeys = []\n");
    std::env::set_var("AZIOT_IDENTITYD_CONFIG", &l.file);
    std::env::set_var("AZIOT_IDENTITYD_CONFIG_DIR", &l.dir);
    let s: Settings = load("identityd").unwrap();
    assert_eq!(s.max_requests, 7);
    assert_eq!(s.principals.len(), 1);
}

#[test]
fn unknown_service_is_refused() {
    let err = load::<Settings>("edged").unwrap_err();
    assert!(matches!(err, ConfigError::UnknownService(_)));
}
