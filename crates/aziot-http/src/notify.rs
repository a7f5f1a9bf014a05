//! Readiness and status for systemd (`Type=notify` units): `READY=1` once a daemon has read its
//! config, opened what it needs and listens, so `systemctl start` (and `config apply`, which
//! waits on it) learns of a failure instead of a start that only looked fine; `STATUS=` with
//! the daemon's state or last error, shown by `systemctl status`. Without `NOTIFY_SOCKET` (not
//! run by systemd) these do nothing.

use sd_notify::NotifyState;

/// Tells systemd the daemon is ready, with a one-line status.
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(&one_line(status))]);
}

/// Updates the status line `systemctl status` shows.
pub fn status(status: &str) {
    send(&[NotifyState::Status(&one_line(status))]);
}

/// Tells systemd the daemon is stopping.
pub fn stopping() {
    send(&[NotifyState::Stopping]);
}

fn send(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        log::debug!("could not notify systemd: {e}");
    }
}

/// systemd shows the status on one line; long errors are cut (the log has them whole).
fn one_line(text: &str) -> String {
    const MAX: usize = 400;
    let line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match line.char_indices().nth(MAX) {
        Some((at, _)) => format!("{}...", &line[..at]),
        None => line,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_is_one_bounded_line() {
        assert_eq!(one_line("a\n  b\tc"), "a b c");
        let long = "x".repeat(1000);
        assert_eq!(one_line(&long).chars().count(), 403);
    }

    #[test]
    fn systemd_receives_ready_and_status() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let sock = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
        std::env::set_var("NOTIFY_SOCKET", &path);
        ready("listening on\nkeyd.sock");
        std::env::remove_var("NOTIFY_SOCKET");
        let mut buf = [0u8; 512];
        let n = sock.recv(&mut buf).unwrap();
        assert_eq!(
            std::str::from_utf8(&buf[..n]).unwrap(),
            "READY=1\nSTATUS=listening on keyd.sock\n"
        );
    }
}
