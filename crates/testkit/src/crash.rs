//! What crash tests share: how many rounds to run (`CRASH_ROUNDS`, default 30, as CI runs
//! them; scripts/crash-soak.sh asks for more) and random points in time to kill a process at,
//! from a seed that is printed (and can be given back as `CRASH_SEED`) to replay a failure.

use std::time::Duration;

pub fn rounds() -> usize {
    std::env::var("CRASH_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(30)
}

/// Pseudo-random delays (xorshift64).
pub struct Delays(u64);

impl Delays {
    /// Seeded from `CRASH_SEED`, else from the clock; the seed is printed either way.
    pub fn new() -> Self {
        let seed = std::env::var("CRASH_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or_else(crate::random_seed) | 1;
        eprintln!("crash delays: CRASH_SEED={seed}");
        Delays(seed)
    }

    /// A delay in `0..max`.
    pub fn next(&mut self, max: Duration) -> Duration {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        let micros = u64::try_from(max.as_micros()).unwrap_or(u64::MAX).max(1);
        Duration::from_micros(self.0 % micros)
    }
}

impl Default for Delays {
    fn default() -> Self {
        Self::new()
    }
}
