//! The daemons' log: stderr, filtered by `AZIOT_LOG` (default `info`) as upstream's `logger`
//! crate does. When stderr is the journal (systemd's `JOURNAL_STREAM` names it), every line
//! starts with the syslog priority journald reads (`<3>` error, `<4>` warning, `<6>` info, `<7>`
//! debug and trace), so `journalctl -p err` shows the errors; a message of several lines gets
//! the prefix on each, or its continuation would be filed as info. Elsewhere (a terminal, a
//! test's log file) lines carry a timestamp instead: journald stamps its own. tss-esapi's own
//! error lines are off unless `TSS2_LOG` is set or `AZIOT_LOG` names `tss_esapi`.
//!
//! [`Limiter`] keeps one recurring error (a TPM that is gone, a daemon that is down) from
//! filling the log: the first of a kind is logged, the repeats are counted and summed up later.

use std::collections::HashMap;
use std::io::Write;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The variable upstream's daemons read their filter from.
pub const LOG_ENV: &str = "AZIOT_LOG";

/// tss-esapi logs an ERROR for every failed TSS call, which the daemon reports itself (once,
/// with the cause and the fix). Off unless `TSS2_LOG` is set (the TSS's own switch) or the
/// filter names the target.
const TSS_TARGET: &str = "tss_esapi";

/// Installs the logger for a daemon. Call first in `main`.
pub fn init() {
    init_with(LOG_ENV);
}

/// As [`init`], with the filter in `var` (falling back to `AZIOT_LOG`, then `info`).
pub fn init_with(var: &str) {
    let mut filter = std::env::var(var)
        .or_else(|_| std::env::var(LOG_ENV))
        .unwrap_or_else(|_| "info".into());
    if std::env::var_os("TSS2_LOG").is_none() && !filter.contains(TSS_TARGET) {
        filter.push_str(",tss_esapi=off");
    }
    let journal = stderr_is_journal();
    let _ = env_logger::Builder::new()
        .parse_filters(&filter)
        .target(env_logger::Target::Stderr)
        .format(move |buf, record| {
            let text = format_record(journal, record);
            let stamp = (!journal).then(|| buf.timestamp_millis().to_string());
            match stamp {
                Some(stamp) => writeln!(buf, "[{stamp} {text}"),
                None => writeln!(buf, "{text}"),
            }
        })
        .try_init();
}

/// The record as written, without the trailing newline (and, off the journal, without the
/// timestamp `init` puts first).
fn format_record(journal: bool, record: &log::Record<'_>) -> String {
    let level = record.level();
    let head = if level >= log::Level::Debug {
        format!("{level:<5} {}] ", record.target())
    } else {
        format!("{level:<5}] ")
    };
    let message = record.args().to_string();
    if journal {
        let prefix = format!("<{}>", syslog_priority(level));
        message
            .lines()
            .enumerate()
            .map(|(i, line)| match i {
                0 => format!("{prefix}[{head}{line}"),
                _ => format!("{prefix}    {line}"),
            })
            .collect::<Vec<_>>()
            .join("\n")
    } else {
        format!("{head}{message}")
    }
}

/// The syslog priority of a level, as upstream's logger maps them.
pub fn syslog_priority(level: log::Level) -> u8 {
    match level {
        log::Level::Error => 3,
        log::Level::Warn => 4,
        log::Level::Info => 6,
        log::Level::Debug | log::Level::Trace => 7,
    }
}

/// Whether fd 2 is the stream systemd connected to the journal: `JOURNAL_STREAM` is
/// `DEVICE:INODE` of it (a child that inherited the variable but not the stream is not).
fn stderr_is_journal() -> bool {
    let Ok(value) = std::env::var("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = value.split_once(':') else {
        return false;
    };
    let (Ok(dev), Ok(ino)) = (dev.parse::<u64>(), ino.parse::<u64>()) else {
        return false;
    };
    // SAFETY: fstat writes into the zeroed struct we own; fd 2 may be closed, which it reports.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstat(2, &mut st) } != 0 {
        return false;
    }
    st.st_dev as u64 == dev && st.st_ino as u64 == ino
}

/// Logs the first of each kind of recurring message, then at most one line per `every`
/// saying how many more there were. Kinds are the caller's short names ("tpm", "keyd.sock").
pub struct Limiter {
    every: Duration,
    kinds: Mutex<HashMap<String, Seen>>,
}

struct Seen {
    logged_at: Instant,
    suppressed: u64,
}

impl Limiter {
    pub fn new(every: Duration) -> Self {
        Limiter {
            every,
            kinds: Mutex::new(HashMap::new()),
        }
    }

    /// Logs `message` at `level` unless a message of this `kind` was logged less than `every`
    /// ago; the next one logged afterwards says how many were left out.
    pub fn log(&self, kind: &str, level: log::Level, message: impl std::fmt::Display) {
        let now = Instant::now();
        let suppressed = {
            let mut kinds = self
                .kinds
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            match kinds.get_mut(kind) {
                Some(seen) if now.duration_since(seen.logged_at) < self.every => {
                    seen.suppressed += 1;
                    return;
                }
                Some(seen) => {
                    let n = seen.suppressed;
                    *seen = Seen {
                        logged_at: now,
                        suppressed: 0,
                    };
                    n
                }
                None => {
                    kinds.insert(
                        kind.to_owned(),
                        Seen {
                            logged_at: now,
                            suppressed: 0,
                        },
                    );
                    0
                }
            }
        };
        if suppressed == 0 {
            log::log!(level, "{message}");
        } else {
            log::log!(
                level,
                "{message} ({suppressed} more like it in the last {} s were not logged)",
                self.every.as_secs()
            );
        }
    }

    /// Forgets `kind`, so its next message is logged at once (the trouble is over).
    pub fn clear(&self, kind: &str) {
        self.kinds
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(kind);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(level: log::Level, args: std::fmt::Arguments<'_>, f: impl FnOnce(&log::Record<'_>)) {
        f(&log::Record::builder()
            .level(level)
            .target("keyd_tpm::tpm")
            .args(args)
            .build());
    }

    #[test]
    fn journal_lines_carry_upstreams_priorities_on_every_line() {
        record(log::Level::Error, format_args!("no TPM\nfix: x"), |r| {
            assert_eq!(format_record(true, r), "<3>[ERROR] no TPM\n<3>    fix: x");
        });
        record(log::Level::Warn, format_args!("w"), |r| {
            assert_eq!(format_record(true, r), "<4>[WARN ] w");
        });
        record(log::Level::Info, format_args!("i"), |r| {
            assert_eq!(format_record(true, r), "<6>[INFO ] i");
        });
        record(log::Level::Debug, format_args!("d"), |r| {
            assert_eq!(format_record(true, r), "<7>[DEBUG keyd_tpm::tpm] d");
        });
        record(log::Level::Error, format_args!("plain"), |r| {
            assert_eq!(format_record(false, r), "ERROR] plain");
        });
    }

    #[test]
    fn a_stream_that_is_not_stderr_is_not_the_journal() {
        // Whatever the test runner's environment, a JOURNAL_STREAM naming another file is not
        // taken for stderr.
        let f = tempfile::tempfile().unwrap();
        use std::os::fd::AsRawFd;
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        assert_eq!(unsafe { libc::fstat(f.as_raw_fd(), &mut st) }, 0);
        let other = format!("{}:{}", st.st_dev, st.st_ino);
        std::env::set_var("JOURNAL_STREAM", &other);
        assert!(!stderr_is_journal());
        std::env::set_var("JOURNAL_STREAM", "garbage");
        assert!(!stderr_is_journal());
        std::env::remove_var("JOURNAL_STREAM");
    }

    #[test]
    fn the_limiter_counts_what_it_leaves_out() {
        let limiter = Limiter::new(Duration::from_millis(200));
        let kinds = || limiter.kinds.lock().unwrap().get("tpm").map(|s| s.suppressed);
        limiter.log("tpm", log::Level::Error, "gone");
        limiter.log("tpm", log::Level::Error, "gone");
        limiter.log("tpm", log::Level::Error, "gone");
        assert_eq!(kinds(), Some(2));
        limiter.log("other", log::Level::Error, "x");
        assert_eq!(kinds(), Some(2), "kinds are counted apart");
        std::thread::sleep(Duration::from_millis(250));
        limiter.log("tpm", log::Level::Error, "gone");
        assert_eq!(kinds(), Some(0), "logged again after the interval, count reset");
        limiter.clear("tpm");
        assert_eq!(kinds(), None);
    }
}
