//! How many connections may be open: per uid on each socket, and in all for the process, which
//! is bounded by its open-file limit. A connection over either budget is accepted, answered
//! 503 with a message and closed at once, so a flood from one uid costs that uid its own
//! answers and nobody else theirs, and the process never runs out of descriptors (which would
//! stop every socket from accepting). Upstream caps a uid at 10 connections and drops the
//! 11th without a word.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

/// Descriptors kept for everything but admitted connections: the TPM (a TCTI connection or
/// two), key files, the log, systemd's notify socket, the listening sockets, and refused
/// connections while they are answered.
const RESERVED_FDS: usize = 64 + crate::server::MAX_LINGERING;

/// Connections open in this process, across all sockets it serves.
static OPEN: AtomicUsize = AtomicUsize::new(0);
static PROCESS_LIMIT: OnceLock<usize> = OnceLock::new();

/// Connections the whole process may hold: its open-file limit less [`RESERVED_FDS`].
fn process_limit() -> usize {
    *PROCESS_LIMIT.get_or_init(|| {
        let mut limit = libc::rlimit { rlim_cur: 1024, rlim_max: 1024 };
        // SAFETY: getrlimit writes one rlimit struct we own.
        unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
        let fds = usize::try_from(limit.rlim_cur).unwrap_or(usize::MAX);
        fds.saturating_sub(RESERVED_FDS).max(16)
    })
}

/// One socket's per-uid accounting.
pub(crate) struct Budget {
    per_uid_limit: usize,
    per_uid: Mutex<HashMap<u32, usize>>,
}

/// Why a connection was refused, as the caller reads it.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    Uid { uid: u32, limit: usize },
    Process { limit: usize },
    /// `accept` itself failed for want of a descriptor.
    Descriptors,
}

impl Refusal {
    pub(crate) fn message(&self) -> String {
        match self {
            Refusal::Uid { uid, limit } => format!(
                "too many open connections from uid {uid} (limit {limit}); close idle connections or retry later"
            ),
            Refusal::Process { limit } => format!(
                "the daemon has {limit} connections open, its limit (raise LimitNOFILE= in its unit to allow more); retry later"
            ),
            Refusal::Descriptors => "the daemon has run out of file descriptors (raise LimitNOFILE= in its unit); retry later".to_owned(),
        }
    }
}

/// Held for as long as a connection is open; returns its place on drop.
pub(crate) struct Admission {
    budget: Arc<Budget>,
    uid: u32,
}

impl Budget {
    pub(crate) fn new(per_uid_limit: usize) -> Arc<Self> {
        Arc::new(Budget { per_uid_limit: per_uid_limit.max(1), per_uid: Mutex::new(HashMap::new()) })
    }

    pub(crate) fn admit(self: &Arc<Self>, uid: u32) -> Result<Admission, Refusal> {
        let limit = process_limit();
        if OPEN.fetch_add(1, Ordering::AcqRel) >= limit {
            OPEN.fetch_sub(1, Ordering::AcqRel);
            return Err(Refusal::Process { limit });
        }
        let mut map = self.per_uid.lock().unwrap_or_else(|p| p.into_inner());
        let open = map.entry(uid).or_insert(0);
        if *open >= self.per_uid_limit {
            drop(map);
            OPEN.fetch_sub(1, Ordering::AcqRel);
            return Err(Refusal::Uid { uid, limit: self.per_uid_limit });
        }
        *open += 1;
        Ok(Admission { budget: Arc::clone(self), uid })
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        let mut map = self.budget.per_uid.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(open) = map.get_mut(&self.uid) {
            *open -= 1;
            if *open == 0 {
                map.remove(&self.uid);
            }
        }
        drop(map);
        OPEN.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_uid_has_its_own_budget_and_places_come_back() {
        let b = Budget::new(2);
        let a1 = b.admit(1).unwrap();
        let _a2 = b.admit(1).unwrap();
        assert_eq!(b.admit(1).err(), Some(Refusal::Uid { uid: 1, limit: 2 }));
        let _other = b.admit(2).unwrap();
        drop(a1);
        let _again = b.admit(1).unwrap();
        assert!(Refusal::Uid { uid: 1, limit: 2 }.message().contains("uid 1 (limit 2)"));
    }
}
