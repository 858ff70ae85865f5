//! When to try a GitHub request again, as a pure decision: given what the last attempt saw, how
//! many attempts were made and how long they took, [`RetryPolicy::decide`] returns a verdict. The
//! transport sleeps; this module never does, so every rule here is tested without a clock.
//!
//! Rules (from GitHub's documented behaviour): connection errors, 429 and 5xx other than 501 are
//! retried with jittered exponential backoff; a rate-limit answer (429, or 403 with
//! `x-ratelimit-remaining: 0` or `retry-after`) waits `retry-after`, else until `x-ratelimit-reset`,
//! else at least a minute; nothing waits past the policy's total budget; other 4xx are final.

use std::time::Duration;

/// Bounds on retrying one logical request.
#[derive(Clone, Debug, PartialEq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    /// Backoff before the second attempt; doubles each time.
    pub base_delay: Duration,
    /// Cap on one backoff delay (rate-limit waits are capped by `budget` instead).
    pub max_delay: Duration,
    /// Total time one request may spend, waits included, before it gives up.
    pub budget: Duration,
    /// Wait for a secondary rate limit that gives no `retry-after` (GitHub: at least a minute).
    pub secondary_limit_wait: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 6,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(30),
            budget: Duration::from_secs(90),
            secondary_limit_wait: Duration::from_secs(60),
        }
    }
}

/// What one attempt produced, reduced to what the decision needs.
#[derive(Clone, Debug, PartialEq)]
pub enum Observed {
    /// No HTTP response: connection refused, reset, DNS, timeout.
    Transport,
    Response {
        status: u16,
        /// `retry-after`, in seconds.
        retry_after: Option<u64>,
        /// `x-ratelimit-remaining`.
        remaining: Option<u64>,
        /// `x-ratelimit-reset`, epoch seconds.
        reset: Option<i64>,
        /// The body says a (secondary) rate limit was hit.
        rate_limit_message: bool,
    },
}

/// Why a request stopped being retried.
#[derive(Clone, Debug, PartialEq)]
pub enum GiveUp {
    /// The answer is final (success, or a 4xx that cannot succeed on retry).
    Final,
    /// Attempts or time ran out on a retryable failure.
    Exhausted,
    /// Rate limited, and the wait does not fit the remaining budget.
    RateLimited { wait: Duration },
}

#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    RetryAfter(Duration),
    Stop(GiveUp),
}

impl Observed {
    /// A rate-limit answer: 429, or 403 that carries GitHub's rate-limit signals.
    pub fn is_rate_limited(&self) -> bool {
        match self {
            Observed::Transport => false,
            Observed::Response {
                status,
                retry_after,
                remaining,
                rate_limit_message,
                ..
            } => {
                *status == 429
                    || (*status == 403
                        && (*remaining == Some(0) || retry_after.is_some() || *rate_limit_message))
            }
        }
    }

    fn is_retryable_failure(&self) -> bool {
        match self {
            Observed::Transport => true,
            Observed::Response { status, .. } => (500..600).contains(status) && *status != 501,
        }
    }
}

impl RetryPolicy {
    /// A policy for tests: tiny delays, short budget.
    pub fn fast() -> Self {
        RetryPolicy {
            max_attempts: 4,
            base_delay: Duration::from_millis(5),
            max_delay: Duration::from_millis(50),
            budget: Duration::from_secs(5),
            secondary_limit_wait: Duration::from_millis(200),
        }
    }

    /// Decides what follows attempt number `attempt` (1-based), `elapsed` after the first one
    /// started. `now_epoch` reads `x-ratelimit-reset`; `jitter` in `[0, 1)` spreads retries of
    /// many clients apart.
    pub fn decide(
        &self,
        observed: &Observed,
        attempt: u32,
        elapsed: Duration,
        now_epoch: i64,
        jitter: f64,
    ) -> Verdict {
        let left = self.budget.saturating_sub(elapsed);
        if observed.is_rate_limited() {
            let wait = self.rate_limit_wait(observed, attempt, now_epoch);
            if attempt >= self.max_attempts || wait > left {
                return Verdict::Stop(GiveUp::RateLimited { wait });
            }
            return Verdict::RetryAfter(wait);
        }
        if !observed.is_retryable_failure() {
            return Verdict::Stop(GiveUp::Final);
        }
        if attempt >= self.max_attempts {
            return Verdict::Stop(GiveUp::Exhausted);
        }
        let wait = match observed {
            Observed::Response {
                retry_after: Some(secs),
                ..
            } => Duration::from_secs(*secs),
            _ => self.backoff(attempt, jitter),
        };
        if wait > left {
            return Verdict::Stop(GiveUp::Exhausted);
        }
        Verdict::RetryAfter(wait)
    }

    /// Exponential backoff with "equal jitter": half the step is fixed, half random.
    fn backoff(&self, attempt: u32, jitter: f64) -> Duration {
        let step = self
            .base_delay
            .saturating_mul(1u32 << (attempt.saturating_sub(1)).min(20))
            .min(self.max_delay);
        let jitter = jitter.clamp(0.0, 1.0);
        step.mul_f64(0.5 + 0.5 * jitter)
    }

    fn rate_limit_wait(&self, observed: &Observed, attempt: u32, now_epoch: i64) -> Duration {
        let Observed::Response {
            retry_after,
            remaining,
            reset,
            ..
        } = observed
        else {
            return self.secondary_limit_wait;
        };
        if let Some(secs) = retry_after {
            return Duration::from_secs(*secs);
        }
        if *remaining == Some(0)
            && let Some(reset) = reset
        {
            // One extra second: the reset instant is truncated to whole seconds.
            return Duration::from_secs((reset - now_epoch).max(0) as u64 + 1);
        }
        self.secondary_limit_wait
            .saturating_mul(1u32 << (attempt.saturating_sub(1)).min(10))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(status: u16) -> Observed {
        Observed::Response {
            status,
            retry_after: None,
            remaining: Some(4000),
            reset: None,
            rate_limit_message: false,
        }
    }

    const NOW: i64 = 1_800_000_000;

    #[test]
    fn table_of_verdicts() {
        let p = RetryPolicy::default();
        let s = Duration::from_secs;
        let cases: Vec<(&str, Observed, u32, Duration, Verdict)> = vec![
            (
                "200 is final",
                status(200),
                1,
                s(0),
                Verdict::Stop(GiveUp::Final),
            ),
            (
                "201 is final",
                status(201),
                1,
                s(0),
                Verdict::Stop(GiveUp::Final),
            ),
            (
                "401 never retried",
                status(401),
                1,
                s(0),
                Verdict::Stop(GiveUp::Final),
            ),
            (
                "403 permission never retried",
                status(403),
                1,
                s(0),
                Verdict::Stop(GiveUp::Final),
            ),
            (
                "404 never retried",
                status(404),
                1,
                s(0),
                Verdict::Stop(GiveUp::Final),
            ),
            (
                "409 never retried",
                status(409),
                1,
                s(0),
                Verdict::Stop(GiveUp::Final),
            ),
            (
                "422 never retried",
                status(422),
                1,
                s(0),
                Verdict::Stop(GiveUp::Final),
            ),
            (
                "501 never retried",
                status(501),
                1,
                s(0),
                Verdict::Stop(GiveUp::Final),
            ),
            (
                "500 retried",
                status(500),
                1,
                s(0),
                Verdict::RetryAfter(Duration::from_millis(250)),
            ),
            (
                "502 retried",
                status(502),
                2,
                s(1),
                Verdict::RetryAfter(Duration::from_millis(500)),
            ),
            (
                "503 retried",
                status(503),
                3,
                s(2),
                Verdict::RetryAfter(s(1)),
            ),
            (
                "transport retried",
                Observed::Transport,
                1,
                s(0),
                Verdict::RetryAfter(Duration::from_millis(250)),
            ),
            (
                "attempts run out",
                status(503),
                6,
                s(10),
                Verdict::Stop(GiveUp::Exhausted),
            ),
            (
                "budget runs out",
                status(503),
                2,
                s(90),
                Verdict::Stop(GiveUp::Exhausted),
            ),
            (
                "429 honours retry-after",
                Observed::Response {
                    status: 429,
                    retry_after: Some(7),
                    remaining: None,
                    reset: None,
                    rate_limit_message: false,
                },
                1,
                s(0),
                Verdict::RetryAfter(s(7)),
            ),
            (
                "403 with remaining 0 waits for reset",
                Observed::Response {
                    status: 403,
                    retry_after: None,
                    remaining: Some(0),
                    reset: Some(NOW + 20),
                    rate_limit_message: true,
                },
                1,
                s(0),
                Verdict::RetryAfter(s(21)),
            ),
            (
                "reset too far for the budget",
                Observed::Response {
                    status: 403,
                    retry_after: None,
                    remaining: Some(0),
                    reset: Some(NOW + 3000),
                    rate_limit_message: true,
                },
                1,
                s(0),
                Verdict::Stop(GiveUp::RateLimited { wait: s(3001) }),
            ),
            (
                "secondary limit without headers waits a minute",
                Observed::Response {
                    status: 403,
                    retry_after: None,
                    remaining: Some(10),
                    reset: None,
                    rate_limit_message: true,
                },
                1,
                s(0),
                Verdict::RetryAfter(s(60)),
            ),
            (
                "secondary limit backs off exponentially",
                Observed::Response {
                    status: 429,
                    retry_after: None,
                    remaining: None,
                    reset: None,
                    rate_limit_message: false,
                },
                2,
                s(0),
                Verdict::Stop(GiveUp::RateLimited { wait: s(120) }),
            ),
        ];
        for (name, observed, attempt, elapsed, want) in cases {
            // jitter 0 makes the backoff the fixed half of the step.
            assert_eq!(
                p.decide(&observed, attempt, elapsed, NOW, 0.0),
                want,
                "{name}"
            );
        }
    }

    #[test]
    fn backoff_grows_is_capped_and_jittered() {
        let p = RetryPolicy::default();
        let d = |a, j| p.backoff(a, j);
        assert!(d(2, 0.0) > d(1, 0.0));
        assert_eq!(d(30, 0.999).as_secs(), 29); // capped at max_delay (30 s) before jitter
        assert!(d(30, 0.0) >= Duration::from_secs(15));
        assert!(d(1, 0.99) > d(1, 0.0));
        assert!(d(1, 0.99) <= p.base_delay);
    }
}
