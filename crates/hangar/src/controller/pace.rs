//! Pacing of the AWS calls with the smallest quotas: SSM's `PutParameter` and `DeleteParameter`,
//! one of each per runner. AWS gives them a few transactions a second per account and region by
//! default (users of terraform-aws-github-runner report about 3 for `PutParameter`, 10 with
//! higher throughput turned on); a burst of launches from several pools would otherwise be
//! answered with throttling, and each throttled launch wastes its JIT configuration and a
//! retry. One [`Pacer`] serves every pool of the process, so together they stay under
//! `controller.ssm_writes_per_second`.
//!
//! The bucket is pure ([`TokenBucket::take`] is given the time and says how long to wait); the
//! pacer only sleeps what it says.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// `DescribeParameters` calls a second for the clean-up listings of all pools together. AWS
/// publishes no figure; a few a second is what users report, so this stays under it.
pub const SSM_DESCRIBES_PER_SECOND: f64 = 1.5;

/// `rate` tokens a second, at most `burst` saved up; starts full.
#[derive(Clone, Debug)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    at: Instant,
}

impl TokenBucket {
    pub fn new(rate: f64, burst: f64, now: Instant) -> TokenBucket {
        let burst = burst.max(1.0);
        TokenBucket {
            rate: rate.max(f64::MIN_POSITIVE),
            burst,
            tokens: burst,
            at: now,
        }
    }

    /// Takes one token at `now`, or says how long until one is there (nothing is taken then).
    pub fn take(&mut self, now: Instant) -> Result<(), Duration> {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.at = now.max(self.at);
        // A token a nanosecond short counts as there: float sums of waits land a hair below 1.
        if self.tokens >= 1.0 - 1e-9 {
            self.tokens = (self.tokens - 1.0).max(0.0);
            Ok(())
        } else {
            let nanos = ((1.0 - self.tokens) / self.rate * 1e9).ceil();
            Err(Duration::from_nanos(nanos.max(1.0) as u64))
        }
    }
}

/// A process-wide pace for one kind of call. Clone the `Arc` it lives in to share it.
///
/// It has no burst of its own: calls are spaced `1 / per_second` apart from the first. AWS's
/// own bucket has a burst (3 `PutParameter` at once), and that burst is what absorbs the jitter
/// between this clock and AWS's (a call that waited on a busy runtime, then one on time): a
/// client that spent AWS's burst itself and then sent at exactly the rate would be throttled by
/// any jitter (measured: 37 throttled writes in a 200-launch burst before this rule).
#[derive(Debug)]
pub struct Pacer {
    bucket: Mutex<TokenBucket>,
    waited_ms: AtomicU64,
    /// Work that will make a paced call soon (a JIT configuration minted for a write), at most
    /// about a second's worth: see [`Pacer::reserve`].
    queue: Arc<Semaphore>,
}

impl Pacer {
    /// `per_second` calls a second, spaced evenly (no burst).
    pub fn new(per_second: f64) -> Pacer {
        Pacer {
            bucket: Mutex::new(TokenBucket::new(per_second, 1.0, Instant::now())),
            waited_ms: AtomicU64::new(0),
            queue: Arc::new(Semaphore::new(
                (per_second.ceil() as usize).clamp(1, Semaphore::MAX_PERMITS),
            )),
        }
    }

    /// Waits for a place among the callers that will make a paced call within about a second
    /// (`ceil(per_second)` places), and holds it until the permit is dropped. A launch reserves
    /// before it mints its JIT configuration, so configurations are minted no faster than they
    /// can be written.
    pub async fn reserve(&self) -> OwnedSemaphorePermit {
        self.queue
            .clone()
            .acquire_owned()
            .await
            .expect("the pacer's queue is never closed")
    }

    /// Waits until the next call may be made.
    pub async fn acquire(&self) {
        loop {
            let wait = self
                .bucket
                .lock()
                .expect("pacer poisoned")
                .take(Instant::now());
            match wait {
                Ok(()) => return,
                Err(wait) => {
                    self.waited_ms
                        .fetch_add(wait.as_millis() as u64, Ordering::Relaxed);
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    /// How long callers have waited in all, for the log and tests.
    pub fn waited(&self) -> Duration {
        Duration::from_millis(self.waited_ms.load(Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_gives_its_burst_then_its_rate() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut bucket = TokenBucket::new(3.0, 3.0, t0);
        for _ in 0..3 {
            bucket.take(t0).unwrap();
        }
        let wait = bucket.take(t0).unwrap_err();
        assert!(
            (wait.as_secs_f64() - 1.0 / 3.0).abs() < 1e-6,
            "one token takes a third of a second: {wait:?}"
        );
        assert!(bucket.take(at(300)).is_err());
        bucket.take(at(334)).unwrap();
        // Idle time saves up to the burst, no more.
        let later = at(60_000);
        for _ in 0..3 {
            bucket.take(later).unwrap();
        }
        assert!(bucket.take(later).is_err());
    }

    #[test]
    fn over_a_minute_a_bucket_never_exceeds_its_rate() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(3.0, 3.0, t0);
        let mut now = t0;
        let mut taken = 0;
        while now < t0 + Duration::from_secs(60) {
            match bucket.take(now) {
                Ok(()) => taken += 1,
                Err(wait) => now += wait,
            }
        }
        assert!((180..=183).contains(&taken), "{taken}");
    }

    #[tokio::test]
    async fn the_pacer_spaces_calls_out() {
        tokio::time::timeout(Duration::from_secs(10), async {
            let pacer = std::sync::Arc::new(Pacer::new(20.0));
            let started = Instant::now();
            let mut calls = tokio::task::JoinSet::new();
            for _ in 0..30 {
                let pacer = pacer.clone();
                calls.spawn(async move { pacer.acquire().await });
            }
            while calls.join_next().await.is_some() {}
            // No burst: one at once, then 29 more at 20 a second.
            let took = started.elapsed();
            assert!(took >= Duration::from_millis(1400), "{took:?}");
            assert!(pacer.waited() > Duration::ZERO);
        })
        .await
        .unwrap();
    }

    #[tokio::test]
    async fn reservations_are_about_a_seconds_worth() {
        tokio::time::timeout(Duration::from_secs(10), async {
            let pacer = Pacer::new(3.0);
            let held: Vec<_> = futures_reserve(&pacer, 3).await;
            let fourth = tokio::time::timeout(Duration::from_millis(100), pacer.reserve()).await;
            assert!(fourth.is_err(), "a fourth waits while three are held");
            drop(held);
            let _fourth = pacer.reserve().await;
        })
        .await
        .unwrap();
    }

    async fn futures_reserve(pacer: &Pacer, n: usize) -> Vec<OwnedSemaphorePermit> {
        let mut out = Vec::new();
        for _ in 0..n {
            out.push(pacer.reserve().await);
        }
        out
    }
}
