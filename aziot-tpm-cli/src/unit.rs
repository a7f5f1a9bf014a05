//! What systemd knows about a daemon that does not answer: whether its unit is running, failing
//! to start (restarting, or given up after the start limit) or stopped, and the daemon's own last
//! error from the journal. This is how the CLI tells "not running / failing to start" from
//! "answering with an error" and names the cause instead of a socket error. Without systemd
//! (a container, a test) every query says nothing and the callers keep their socket message.

use std::process::{Command, Stdio};

/// A service unit's state, from `systemctl show`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnitState {
    pub unit: String,
    /// `active`, `activating`, `failed`, `inactive`, ...
    pub active: String,
    /// `running`, `auto-restart`, `start`, `dead`, `failed`, ...
    pub sub: String,
    /// `success`, `exit-code`, `start-limit-hit`, `timeout`, ...
    pub result: String,
    pub restarts: u32,
    pub exit_status: i32,
    /// The daemon's last `STATUS=` line.
    pub status_text: String,
}

impl UnitState {
    /// Failing to start: waiting to be restarted, or failed (at the start limit or otherwise).
    pub fn failing(&self) -> bool {
        self.active == "failed" || self.sub == "auto-restart"
    }

    /// What systemd is doing with it, in words.
    pub fn describe(&self) -> String {
        let exit = match self.exit_status {
            0 => String::new(),
            n => format!(", exit status {n}"),
        };
        match (self.active.as_str(), self.sub.as_str(), self.result.as_str()) {
            ("failed", _, "start-limit-hit") => format!(
                "failed to start {} times in a row and systemd stopped trying (start limit){exit}",
                self.restarts.max(1)
            ),
            ("failed", _, result) => format!("failed ({result}{exit})"),
            (_, "auto-restart", _) => format!(
                "failing to start: it exited{exit} and systemd restarts it (restart {} so far)",
                self.restarts
            ),
            (active, sub, _) => format!("{active} ({sub})"),
        }
    }
}

/// The unit's state, if systemd manages it (None without systemctl, or a unit not loaded).
pub fn state(unit: &str) -> Option<UnitState> {
    let out = Command::new("systemctl")
        .args([
            "show",
            "--no-pager",
            "-p",
            "LoadState,ActiveState,SubState,Result,NRestarts,ExecMainStatus,StatusText",
            unit,
        ])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    parse_show(unit, &String::from_utf8_lossy(&out.stdout))
}

fn parse_show(unit: &str, text: &str) -> Option<UnitState> {
    let mut state = UnitState {
        unit: unit.to_owned(),
        ..UnitState::default()
    };
    let mut loaded = false;
    for line in text.lines() {
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        match key {
            "LoadState" => loaded = value == "loaded",
            "ActiveState" => state.active = value.to_owned(),
            "SubState" => state.sub = value.to_owned(),
            "Result" => state.result = value.to_owned(),
            "NRestarts" => state.restarts = value.parse().unwrap_or(0),
            "ExecMainStatus" => state.exit_status = value.parse().unwrap_or(0),
            "StatusText" => state.status_text = value.to_owned(),
            _ => {}
        }
    }
    loaded.then_some(state)
}

/// The daemon's own last error in the journal (its stderr at priority err), whole even when it
/// spans lines; None when there is none or the journal cannot be read (not root, no journald).
pub fn last_error(unit: &str) -> Option<String> {
    let out = Command::new("journalctl")
        .args(["--no-pager", "-q", "-o", "cat", "-p", "err", "-n", "20"])
        .arg(format!("_SYSTEMD_UNIT={unit}"))
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    last_record(&String::from_utf8_lossy(&out.stdout))
}

/// The last record of a log in our format: a line starting `[ERROR]` and the indented lines
/// that continue it.
fn last_record(text: &str) -> Option<String> {
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.iter().rposition(|l| !l.starts_with("    "))?;
    let head = lines[start];
    let head = head.strip_prefix("[ERROR] ").unwrap_or(head).trim_start_matches("] ");
    let mut record = vec![head.trim().to_owned()];
    record.extend(lines[start + 1..].iter().map(|l| l.trim().to_owned()));
    Some(record.join(" ")).filter(|r| !r.is_empty())
}

/// The command that shows the unit's log.
pub fn journal_hint(unit: &str) -> String {
    format!("journalctl -u {unit} -e")
}

/// How to start a unit again once it is fixed.
pub fn restart_hint(state: &UnitState, sockets: &[&str]) -> String {
    if state.result == "start-limit-hit" {
        format!(
            "once it is fixed: `systemctl reset-failed {unit} {sockets}` and `systemctl start {sockets}`",
            unit = state.unit,
            sockets = sockets.join(" ")
        )
    } else {
        "systemd starts it again by itself once the cause is gone".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn show_output_is_read_and_failing_units_described() {
        let s = parse_show(
            "aziot-keyd.service",
            "LoadState=loaded\nActiveState=activating\nSubState=auto-restart\nResult=exit-code\nNRestarts=2\nExecMainStatus=1\nStatusText=failed: no TPM\n",
        )
        .unwrap();
        assert!(s.failing());
        assert_eq!(s.status_text, "failed: no TPM");
        assert!(s.describe().contains("restart 2 so far"), "{}", s.describe());
        let s = parse_show("u", "LoadState=loaded\nActiveState=failed\nSubState=failed\nResult=start-limit-hit\nNRestarts=5\nExecMainStatus=1\n").unwrap();
        assert!(s.describe().contains("stopped trying"), "{}", s.describe());
        assert!(restart_hint(&s, &["a.socket"]).contains("reset-failed u a.socket"));
        let s = parse_show("u", "LoadState=loaded\nActiveState=active\nSubState=running\n").unwrap();
        assert!(!s.failing());
        assert_eq!(parse_show("u", "LoadState=not-found\n"), None);
    }

    #[test]
    fn the_last_record_keeps_its_continuation_lines() {
        let log = "[ERROR] old one\n[ERROR] keyd-tpm cannot start: no TPM\n    fix: enable it\n";
        assert_eq!(last_record(log).unwrap(), "keyd-tpm cannot start: no TPM fix: enable it");
        assert_eq!(last_record(""), None);
    }
}
