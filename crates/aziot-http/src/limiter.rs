//! Per-uid limit on requests in flight, with a bounded wait queue.
//!
//! Upstream caps each uid at 10 simultaneous connections and drops the 11th
//! without a reply, which callers see as a mysterious connection reset. Here a
//! request over the limit waits for a permit (the semaphore is FIFO-fair), and
//! only when the uid's queue is also full does it get a 503 saying so.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::HttpError;

pub(crate) struct UidLimiter {
    max_in_flight: usize,
    max_queue: usize,
    /// One entry per uid ever seen; bounded by the number of local users.
    per_uid: Mutex<HashMap<u32, Arc<UidSlot>>>,
}

struct UidSlot {
    permits: Arc<Semaphore>,
    waiting: AtomicUsize,
}

/// Decrements the waiting count however the wait ends (including the client
/// going away and hyper dropping the request future).
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl UidLimiter {
    /// `max_in_flight` of 0 would block every request forever, so it counts as 1. More than a
    /// semaphore can hold (`usize::MAX >> 3`: about 5e8 on a 32-bit system) means no limit, and
    /// is held as that many: tokio's `Semaphore::new` would panic on the first request.
    pub(crate) fn new(max_in_flight: usize, max_queue: usize) -> Self {
        UidLimiter {
            max_in_flight: max_in_flight.clamp(1, Semaphore::MAX_PERMITS),
            max_queue,
            per_uid: Mutex::new(HashMap::new()),
        }
    }

    /// Waits for a slot for `uid`; 503 when `max_queue` requests already wait.
    pub(crate) async fn acquire(&self, uid: u32) -> Result<OwnedSemaphorePermit, HttpError> {
        let slot = self.slot(uid);
        if let Ok(permit) = Arc::clone(&slot.permits).try_acquire_owned() {
            return Ok(permit);
        }
        let already_waiting = slot.waiting.fetch_add(1, Ordering::AcqRel);
        let _waiting = Waiting(&slot.waiting);
        if already_waiting >= self.max_queue {
            log::info!(
                "uid {uid}: {} requests in flight and {already_waiting} queued; answering 503",
                self.max_in_flight
            );
            return Err(HttpError::unavailable(format!(
                "too many concurrent requests from uid {uid} (limit {}); retry later",
                self.max_in_flight
            )));
        }
        Arc::clone(&slot.permits)
            .acquire_owned()
            .await
            .map_err(|_closed| HttpError::unavailable("server is shutting down; retry later"))
    }

    fn slot(&self, uid: u32) -> Arc<UidSlot> {
        // A poisoned map is still a valid map: entries are inserted whole.
        let mut map = self.per_uid.lock().unwrap_or_else(|p| p.into_inner());
        Arc::clone(map.entry(uid).or_insert_with(|| {
            Arc::new(UidSlot {
                permits: Arc::new(Semaphore::new(self.max_in_flight)),
                waiting: AtomicUsize::new(0),
            })
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::StatusCode;
    use std::time::Duration;

    #[tokio::test]
    async fn a_limit_beyond_what_a_semaphore_holds_admits_requests() {
        // usize::MAX parses as max_requests on any architecture; 536870912 is just over the
        // permits a semaphore holds on a 32-bit one.
        for limit in [usize::MAX, Semaphore::MAX_PERMITS + 1] {
            let l = UidLimiter::new(limit, 1);
            let _permits = (l.acquire(1000).await.unwrap(), l.acquire(1000).await.unwrap());
        }
    }

    #[tokio::test]
    async fn over_the_limit_waits_then_proceeds() {
        let l = Arc::new(UidLimiter::new(1, 1));
        let first = l.acquire(1000).await.unwrap();
        let l2 = Arc::clone(&l);
        let waiter = tokio::spawn(async move { l2.acquire(1000).await.map(drop) });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished());
        drop(first);
        waiter.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn full_queue_is_503_with_message() {
        let l = Arc::new(UidLimiter::new(2, 0));
        let _a = l.acquire(7).await.unwrap();
        let _b = l.acquire(7).await.unwrap();
        let e = l.acquire(7).await.unwrap_err();
        assert_eq!(e.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            e.message,
            "too many concurrent requests from uid 7 (limit 2); retry later"
        );
    }

    #[tokio::test]
    async fn uids_are_limited_separately() {
        let l = UidLimiter::new(1, 0);
        let _a = l.acquire(1).await.unwrap();
        let _b = l.acquire(2).await.unwrap();
        assert!(l.acquire(1).await.is_err());
    }

    #[tokio::test]
    async fn abandoned_wait_frees_its_queue_place() {
        let l = Arc::new(UidLimiter::new(1, 1));
        let _held = l.acquire(1).await.unwrap();
        let timed_out = tokio::time::timeout(Duration::from_millis(10), l.acquire(1)).await;
        assert!(timed_out.is_err());
        // The queue place was released, so a new waiter is queued, not refused.
        let again = tokio::time::timeout(Duration::from_millis(10), l.acquire(1)).await;
        assert!(again.is_err(), "expected to wait (timeout), not a 503");
    }

    #[tokio::test]
    async fn zero_limit_counts_as_one() {
        let l = UidLimiter::new(0, 0);
        let _a = l.acquire(1).await.unwrap();
    }
}
