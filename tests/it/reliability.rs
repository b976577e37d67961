//! Reliability under faults (docs/reliability.md): `kill -9` of the agent
//! during a backlog, NATS restarts, a three-node cluster losing its stream
//! leader and a frozen server, fencing, hostile input and the decoder's fuzz
//! regressions. Each test runs a bounded size by default; set
//! `INVALOG_SLOW_TESTS=1` for the long versions. Tests print their figures
//! (`cargo test --test it reliability -- --nocapture` shows them).

mod cluster;
mod crash;
mod fencing;
mod fuzz_regressions;
mod hostile;
mod nats_restart;
mod no_consumer;
mod security;

use std::time::{Duration, Instant, SystemTime};

/// True when `INVALOG_SLOW_TESTS=1` asks for the long versions.
pub fn slow() -> bool {
    std::env::var("INVALOG_SLOW_TESTS").is_ok_and(|v| v == "1")
}

/// A tiny deterministic PRNG (xorshift64*), seeded from the clock unless
/// `INVALOG_TEST_SEED` repeats a run; the seed is printed.
pub struct Rng(u64);

impl Rng {
    /// A generator that repeats for the same seed.
    pub fn seeded(seed: u64) -> Rng {
        Rng(seed | 1)
    }

    pub fn from_time(test: &str) -> Rng {
        let seed = std::env::var("INVALOG_TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
            });
        eprintln!("{test}: seed {seed} (repeat with INVALOG_TEST_SEED={seed})");
        Rng(seed | 1)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Polls `condition` every 5 ms; returns how long it took, failing after
/// `limit`.
pub async fn time_until(
    limit: Duration,
    what: &str,
    mut condition: impl FnMut() -> bool,
) -> Duration {
    let start = Instant::now();
    while !condition() {
        assert!(
            start.elapsed() < limit,
            "not reached within {limit:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    start.elapsed()
}

/// Checks a list of applied sequences (in the order applied, repeats
/// allowed) against the promise "in stream order, nothing skipped": every
/// sequence is at most one past the highest applied before it, and every
/// sequence of `expected` was applied. Returns how many were applied again.
pub fn check_in_order_nothing_lost(
    applied: &[u64],
    expected: impl IntoIterator<Item = u64>,
) -> usize {
    let mut highest = 0;
    for (i, seq) in applied.iter().enumerate() {
        assert!(
            *seq <= highest + 1,
            "sequence {seq} applied (position {i}) while the highest applied before was {highest}: skipped ahead"
        );
        highest = highest.max(*seq);
    }
    let seen: std::collections::HashSet<u64> = applied.iter().copied().collect();
    let missing: Vec<u64> = expected.into_iter().filter(|s| !seen.contains(s)).collect();
    assert!(
        missing.is_empty(),
        "never applied: {} sequences, first {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    applied.len() - seen.len()
}
