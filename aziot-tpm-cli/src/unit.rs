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
    /// The socket units that start it.
    pub sockets: Vec<String>,
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
            ("failed", _, result) => format!(
                "failed and systemd stopped restarting it ({result}{exit}, after {} restarts; the start limit is 5 \
                 starts in 2 minutes)",
                self.restarts
            ),
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
            "LoadState,ActiveState,SubState,Result,NRestarts,ExecMainStatus,StatusText,TriggeredBy",
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
            "TriggeredBy" => state.sockets = value.split_whitespace().map(str::to_owned).collect(),
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

/// How to start a unit again once it is fixed (`socket`: the one the caller used, when systemd
/// did not say which sockets start it).
pub fn restart_hint(state: &UnitState, socket: &str) -> String {
    if state.active == "failed" {
        let sockets = if state.sockets.is_empty() { socket.to_owned() } else { state.sockets.join(" ") };
        format!(
            "once the cause is fixed: `systemctl reset-failed {unit} {sockets}` and `systemctl restart {sockets}`",
            unit = state.unit
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
        let s = parse_show("u", "LoadState=loaded\nActiveState=failed\nSubState=failed\nResult=exit-code\nNRestarts=2\nExecMainStatus=1\nTriggeredBy=a.socket b.socket\n").unwrap();
        assert!(s.describe().contains("systemd stopped restarting it (exit-code, exit status 1, after 2 restarts"), "{}", s.describe());
        assert!(restart_hint(&s, "x.socket").contains("reset-failed u a.socket b.socket` and `systemctl restart a.socket b.socket`"));
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
