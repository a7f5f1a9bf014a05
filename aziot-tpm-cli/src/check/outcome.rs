//! What a check produces, in `aziotctl check`'s JSON schema (upstream aziotctl-common's
//! `CheckResultSerializable`, `CheckOutputSerializable`, `CheckOutputSerializableStreaming`), so
//! `iotedge check` and scripts read our results exactly like upstream's, and so the aziotctl
//! wrapper can read upstream's stream with the same types.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// How a check resolved. `details` holds the message first, then its causes (shown with `-v`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum CheckResult {
    Ok,
    Warning {
        details: Vec<String>,
    },
    /// Not applicable here (or named in `--dont-run`); counts as success and is not printed.
    Ignored,
    /// Not run because a check it depends on failed.
    Skipped,
    /// Failed, and no further check is run.
    Fatal {
        details: Vec<String>,
    },
    Error {
        details: Vec<String>,
    },
}

impl CheckResult {
    pub fn warning(message: impl Into<String>) -> Self {
        CheckResult::Warning {
            details: vec![message.into()],
        }
    }

    pub fn error(message: impl Into<String>) -> Self {
        CheckResult::Error {
            details: vec![message.into()],
        }
    }

    pub fn fatal(message: impl Into<String>) -> Self {
        CheckResult::Fatal {
            details: vec![message.into()],
        }
    }

    /// Adds a cause after the message (shown as "caused by:" with `-v`).
    pub fn caused_by(mut self, cause: impl Into<String>) -> Self {
        if let CheckResult::Warning { details } | CheckResult::Error { details } | CheckResult::Fatal { details } =
            &mut self
        {
            details.push(cause.into());
        }
        self
    }
}

/// One check's result and its check-specific data (`additional_info`, never secrets).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckOutput {
    pub result: CheckResult,
    pub additional_info: Value,
}

impl CheckOutput {
    pub fn new(result: CheckResult, additional_info: Value) -> Self {
        CheckOutput {
            result,
            additional_info,
        }
    }
}

/// A check's identity: `id` for `--dont-run` and JSON keys, `description` for people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckMeta {
    pub id: String,
    pub description: String,
}

/// One value of `-o json-stream`, tagged by `kind`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum StreamEntry {
    AdditionalInfo(Value),
    Section {
        name: String,
    },
    Check {
        #[serde(flatten)]
        meta: CheckMeta,
        #[serde(flatten)]
        output: CheckOutput,
    },
}

/// The whole `-o json` document.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckResults {
    pub additional_info: Value,
    pub checks: BTreeMap<String, CheckOutput>,
}

/// `check-list -o json`: section name → its checks.
pub type CheckList = BTreeMap<String, Vec<CheckMeta>>;

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn results_serialize_as_aziotctl_does() {
        let cases = [
            (CheckResult::Ok, json!({"result": "ok"})),
            (CheckResult::Ignored, json!({"result": "ignored"})),
            (CheckResult::Skipped, json!({"result": "skipped"})),
            (
                CheckResult::warning("w").caused_by("c"),
                json!({"result": "warning", "details": ["w", "c"]}),
            ),
            (CheckResult::error("e"), json!({"result": "error", "details": ["e"]})),
            (CheckResult::fatal("f"), json!({"result": "fatal", "details": ["f"]})),
        ];
        for (result, expected) in cases {
            assert_eq!(serde_json::to_value(&result).unwrap(), expected);
            assert_eq!(serde_json::from_value::<CheckResult>(expected).unwrap(), result);
        }
    }

    #[test]
    fn stream_entries_are_tagged_by_kind_with_flat_checks() {
        let check = StreamEntry::Check {
            meta: CheckMeta {
                id: "tpmd-running".into(),
                description: "tpmd is running".into(),
            },
            output: CheckOutput::new(CheckResult::Ok, json!({})),
        };
        assert_eq!(
            serde_json::to_value(&check).unwrap(),
            json!({"kind": "check", "id": "tpmd-running", "description": "tpmd is running",
                   "result": {"result": "ok"}, "additional_info": {}})
        );
        let section = StreamEntry::Section {
            name: "Configuration checks".into(),
        };
        assert_eq!(
            serde_json::to_value(&section).unwrap(),
            json!({"kind": "section", "name": "Configuration checks"})
        );
        let info = StreamEntry::AdditionalInfo(json!({"now": "x"}));
        assert_eq!(
            serde_json::to_value(&info).unwrap(),
            json!({"kind": "additional_info", "now": "x"})
        );
        let back: StreamEntry = serde_json::from_value(json!({"kind": "additional_info", "now": "x"})).unwrap();
        assert_eq!(back, info);
    }
}
