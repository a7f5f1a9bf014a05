//! `aziotctl` on a gateway without upstream's aziot-identity-service: the commands our messages,
//! identityd's errors and the docs tell an admin to run still work, done by aziot-tpm (what
//! upstream's aziotctl would do, on our daemons and upstream's unit names):
//!
//! | command | done as |
//! |---|---|
//! | `config apply [-c FILE] ...` | `aziot-tpm config apply ...` |
//! | `system reprovision` | `aziot-tpm reprovision` |
//! | `system restart` | stop the services, start the sockets and identityd (config apply's sequence) |
//! | `system stop` | `systemctl stop` of the services |
//! | `system status` | `systemctl status` of the sockets and services |
//! | `system logs [-- ARGS]` | `journalctl -u` of the services, with ARGS |
//! | `system set-log-level LEVEL` | a `log-level.conf` drop-in per service (`AZIOT_LOG=LEVEL`), then daemon-reload |
//!
//! Anything else (`config mp`, `config import`, ...) is upstream's alone: it says so and exits 127.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, ExitCode};

const SERVICES: [&str; 3] = ["aziot-identityd.service", "aziot-keyd.service", "aziot-tpmd.service"];
const SOCKETS: [&str; 3] = ["aziot-identityd.socket", "aziot-keyd.socket", "aziot-tpmd.socket"];
const LEVELS: [&str; 5] = ["error", "warn", "info", "debug", "trace"];
/// Where upstream's `set-log-level` writes its drop-ins.
const UNIT_DIR: &str = "/etc/systemd/system";
const NOT_FOUND: u8 = 127;

/// Runs `args` (what followed `aziotctl`); `missing` says why upstream's aziotctl is not used.
pub fn run(args: &[OsString], missing: &str) -> ExitCode {
    let words: Vec<String> = args.iter().map(|a| a.to_string_lossy().into_owned()).collect();
    let words: Vec<&str> = words.iter().map(String::as_str).collect();
    match words.as_slice() {
        ["config", "apply", rest @ ..] => as_aziot_tpm(&["config", "apply"], rest),
        ["system", "reprovision", rest @ ..] => as_aziot_tpm(&["reprovision"], rest),
        ["system", "restart", ..] => restart(),
        ["system", "stop", ..] => exec(Command::new("systemctl").arg("stop").args(SERVICES)),
        ["system", "status", ..] => {
            exec(Command::new("systemctl").args(["--no-pager", "status"]).args(SOCKETS).args(SERVICES))
        }
        ["system", "logs", rest @ ..] => {
            let mut command = Command::new("journalctl");
            for unit in SERVICES {
                command.args(["-u", unit]);
            }
            exec(command.args(rest.iter().skip_while(|a| **a == "--")))
        }
        ["system", "set-log-level", level] => set_log_level(level, Path::new(UNIT_DIR)),
        [] | ["help" | "--help" | "-h", ..] => {
            println!(
                "aziotctl (aziot-tpm; {missing})\n\nWithout upstream's aziot-identity-service these commands work:\n  \
                 check, check-list, config apply, system reprovision, system restart, system stop,\n  \
                 system status, system logs, system set-log-level LEVEL\nSee aziot-tpm --help for the rest."
            );
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!(
                "aziotctl: `aziotctl {}` is a command of upstream's aziotctl, which is not here ({missing}); \
                 without it aziotctl does check, config apply and system reprovision|restart|stop|status|logs|set-log-level",
                words.join(" ")
            );
            ExitCode::from(NOT_FOUND)
        }
    }
}

/// Replaces this process with `aziot-tpm <command> <rest>`.
fn as_aziot_tpm(command: &[&str], rest: &[&str]) -> ExitCode {
    let me = std::env::current_exe().unwrap_or_else(|_| "aziot-tpm".into());
    exec(Command::new(me).arg0("aziot-tpm").args(command).args(rest))
}

fn exec(command: &mut Command) -> ExitCode {
    let e = command.exec();
    eprintln!("aziotctl: cannot run {:?}: {e}", command.get_program());
    ExitCode::from(NOT_FOUND)
}

fn restart() -> ExitCode {
    match crate::config::restart::restart("systemctl".as_ref()) {
        Ok(steps) => {
            let mut failed = false;
            for s in &steps {
                failed |= s.result == "failed";
                let msg = s.message.as_deref().map(|m| format!(": {m}")).unwrap_or_default();
                println!("{:5}  {:26}  {}{msg}", s.action, s.unit, s.result);
            }
            if failed {
                eprintln!("aziotctl: some units did not restart; see `systemctl status` and `journalctl -u` for them");
                return ExitCode::from(1);
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("aziotctl: {e}");
            ExitCode::from(1)
        }
    }
}

/// As upstream: `<unit>.d/log-level.conf` with `Environment=AZIOT_LOG=<LEVEL>` (upper case, as
/// upstream writes it), then reload.
fn set_log_level(level: &str, unit_dir: &Path) -> ExitCode {
    let lower = level.to_ascii_lowercase();
    if !LEVELS.contains(&lower.as_str()) {
        eprintln!("aziotctl: log level {level:?} is not one of {}", LEVELS.join(", "));
        return ExitCode::from(2);
    }
    let level = lower.to_ascii_uppercase();
    for unit in SERVICES {
        let dir = unit_dir.join(format!("{unit}.d"));
        let written = std::fs::create_dir_all(&dir)
            .and_then(|()| std::fs::write(dir.join("log-level.conf"), format!("[Service]\nEnvironment=AZIOT_LOG={level}\n")));
        if let Err(e) = written {
            eprintln!("aziotctl: cannot write {}: {e}; run as root", dir.join("log-level.conf").display());
            return ExitCode::from(1);
        }
    }
    match Command::new("systemctl").arg("daemon-reload").status() {
        Ok(s) if s.success() => {
            println!("Set log level to {level} for all services. Run the `aziotctl system restart` command for the changes to take effect.");
            ExitCode::SUCCESS
        }
        Ok(s) => {
            eprintln!("aziotctl: systemctl daemon-reload failed ({s}); run it yourself");
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("aziotctl: cannot run systemctl: {e}");
            ExitCode::from(1)
        }
    }
}
