//! When to try a cloud request again: the server's `Retry-After` when it gives one, else
//! exponential backoff with jitter (so a fleet that lost its network at once does not come back in
//! lockstep), and never past an overall deadline, so a caller always gets an answer.

use std::time::{Duration, Instant};

/// Exponential backoff: `initial`, doubling up to `max`, each delay drawn from `[d/2, d]`.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Self {
        Backoff {
            initial,
            max: max.max(initial),
            attempt: 0,
        }
    }

    /// The next delay (and counts the attempt).
    pub fn next_delay(&mut self) -> Duration {
        let factor = 2u32.saturating_pow(self.attempt.min(30));
        self.attempt = self.attempt.saturating_add(1);
        let ceiling = self.initial.saturating_mul(factor).min(self.max);
        let half = ceiling / 2;
        half + half.mul_f64(random_fraction())
    }

    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    pub fn attempts(&self) -> u32 {
        self.attempt
    }
}

/// The wait the server asked for, else the next backoff delay.
pub fn delay(backoff: &mut Backoff, retry_after: Option<Duration>) -> Duration {
    match retry_after {
        Some(d) => {
            // Keep counting, so backoff after a throttled phase does not restart from the bottom.
            backoff.attempt = backoff.attempt.saturating_add(1);
            d
        }
        None => backoff.next_delay(),
    }
}

/// Sleeps `delay` if that ends before `deadline`; false (without sleeping) if it would not.
pub async fn sleep_within(delay: Duration, deadline: Instant) -> bool {
    if Instant::now() + delay > deadline {
        return false;
    }
    tokio::time::sleep(delay).await;
    true
}

/// Longest `Retry-After` taken as given (a day); a larger one counts as this, so a deadline
/// computed from it stays representable and the device tries again within a day.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 60 * 60);

/// `Retry-After` in seconds (the form DPS and IoT Hub use), at most [`MAX_RETRY_AFTER`].
/// HTTP-dates are not used by either service and count as absent.
pub fn parse_retry_after(value: Option<&str>) -> Option<Duration> {
    let secs = value?.trim().parse::<u64>().ok()?;
    Some(Duration::from_secs(secs).min(MAX_RETRY_AFTER))
}

/// A uniform number in [0, 1) from the OpenSSL RNG (falls back to the clock's nanoseconds).
fn random_fraction() -> f64 {
    let mut bytes = [0u8; 8];
    if openssl::rand::rand_bytes(&mut bytes).is_err() {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .subsec_nanos();
        return f64::from(nanos % 1_000_000) / 1_000_000.0;
    }
    (u64::from_le_bytes(bytes) >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_within_jitter_bounds_up_to_max() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(8));
        let ceilings = [1, 2, 4, 8, 8, 8];
        for ceiling in ceilings {
            let d = b.next_delay();
            let ceiling = Duration::from_secs(ceiling);
            assert!(
                d >= ceiling / 2 && d <= ceiling,
                "{d:?} not in [{:?}, {ceiling:?}]",
                ceiling / 2
            );
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_secs(1));
    }

    #[test]
    fn jitter_spreads_delays() {
        let delays: std::collections::HashSet<Duration> = (0..20)
            .map(|_| Backoff::new(Duration::from_secs(10), Duration::from_secs(10)).next_delay())
            .collect();
        assert!(delays.len() > 10, "{delays:?}");
    }

    #[test]
    fn retry_after_wins_over_backoff() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
        assert_eq!(
            delay(&mut b, Some(Duration::from_secs(7))),
            Duration::from_secs(7)
        );
        assert_eq!(b.attempts(), 1);
        assert!(delay(&mut b, None) <= Duration::from_secs(2));
    }

    #[test]
    fn retry_after_parses_seconds_only() {
        assert_eq!(parse_retry_after(Some(" 5 ")), Some(Duration::from_secs(5)));
        assert_eq!(
            parse_retry_after(Some("Wed, 21 Oct 2015 07:28:00 GMT")),
            None
        );
        assert_eq!(parse_retry_after(None), None);
        // A huge value (a broken proxy, a hostile DPS) must not overflow a deadline.
        let huge = parse_retry_after(Some("18446744073709551615")).unwrap();
        assert_eq!(huge, MAX_RETRY_AFTER);
        let _ = Instant::now() + huge;
    }

    #[tokio::test]
    async fn sleep_within_refuses_to_pass_the_deadline() {
        let deadline = Instant::now() + Duration::from_millis(50);
        assert!(!sleep_within(Duration::from_secs(1), deadline).await);
        assert!(sleep_within(Duration::from_millis(1), deadline).await);
    }
}
