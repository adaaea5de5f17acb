//! Retrying while ferry (or the database) fails: exponential backoff with jitter, and an outage
//! logged once when it starts and once when it ends rather than at every attempt.

use std::fmt::Display;
use std::time::{Duration, Instant};

/// First wait after a failure.
const INITIAL: Duration = Duration::from_millis(100);
/// Longest wait between two attempts: a restarted ferry is noticed within this.
const MAX: Duration = Duration::from_secs(2);

/// Waits growing from 100 ms, doubled after each failure, at most 2 s; each wait is drawn uniformly
/// between half of that and all of it, so that clients that failed together do not retry together.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self { next: INITIAL }
    }
}

impl Backoff {
    /// The wait before the next attempt.
    pub fn wait(&mut self) -> Duration {
        let ceiling = self.next;
        self.next = (self.next * 2).min(MAX);
        let half = ceiling / 2;
        half + half.mul_f64(rand::random::<f64>())
    }

    /// After a success: the next failure waits 100 ms again.
    pub fn reset(&mut self) {
        self.next = INITIAL;
    }
}

/// The state of one loop's outage: logs its first failure, counts the others, and logs the end.
#[derive(Debug)]
pub struct Outage {
    what: &'static str,
    since: Option<(Instant, u64)>,
}

impl Outage {
    /// For the loop `what` (`relay`, `consumer`).
    pub fn new(what: &'static str) -> Self {
        Self { what, since: None }
    }

    /// A failed attempt: logged if it is the first of an outage.
    pub fn failed(&mut self, error: &dyn Display) {
        match &mut self.since {
            Some((_, attempts)) => *attempts += 1,
            None => {
                tracing::warn!(loop_ = self.what, %error,
                    "failing; retrying with backoff (logged once, until it works again)");
                self.since = Some((Instant::now(), 1));
            }
        }
    }

    /// A successful attempt: ends an outage, if any, saying how long it lasted.
    pub fn over(&mut self) {
        if let Some((since, attempts)) = self.since.take() {
            tracing::info!(loop_ = self.what, after = ?since.elapsed(), failed_attempts = attempts,
                "works again");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_up_to_the_ceiling_with_jitter() {
        let mut b = Backoff::default();
        let first = b.wait();
        assert!(first >= INITIAL / 2 && first <= INITIAL, "{first:?}");
        for _ in 0..20 {
            let w = b.wait();
            assert!(w <= MAX, "{w:?}");
        }
        let w = b.wait();
        assert!(w >= MAX / 2, "{w:?}");
        b.reset();
        assert!(b.wait() <= INITIAL);
    }
}
