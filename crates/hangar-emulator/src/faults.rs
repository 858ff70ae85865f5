//! Fault injection and rate limiting. [`Faults`] holds the knobs tests turn (queued failures,
//! queued 429s, an exhausted rate limit until a given time, added latency); [`RateLimiter`] keeps
//! GitHub's primary rate limit per credential (one hour windows, `x-ratelimit-*` headers) so
//! clients see realistic, decreasing counters and a real 403 when they run out.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::time::Duration;

use axum::http::StatusCode;

use crate::error::ApiError;

/// Requests per hour for an authenticated credential (GitHub's PAT limit).
pub(crate) const AUTHENTICATED_LIMIT: u32 = 5000;
/// Requests per hour for unauthenticated callers, per IP address.
pub(crate) const ANONYMOUS_LIMIT: u32 = 60;
/// Length of a rate-limit window.
const WINDOW_SECS: i64 = 3600;

const RATE_LIMIT_DOCS: &str = "https://docs.github.com/rest/overview/rate-limits-for-the-rest-api";

/// One queued fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fault {
    /// Answer with this status and a GitHub-style error body.
    Fail(StatusCode),
    /// Answer 429 with `retry-after: secs`.
    RateLimited { retry_after_secs: u64 },
}

impl Fault {
    /// [`Fault::Fail`] with `status`, for the knob named `knob`.
    ///
    /// # Panics
    /// If `status` is not a valid HTTP status code (100..=999).
    pub fn fail(knob: &str, status: u16) -> Self {
        let status = StatusCode::from_u16(status)
            .unwrap_or_else(|_| panic!("{knob}: {status} is not an HTTP status code"));
        Fault::Fail(status)
    }

    /// The error response for this fault.
    pub fn error(self) -> ApiError {
        match self {
            Fault::Fail(status) => ApiError::new(
                status,
                status.canonical_reason().unwrap_or("Injected failure"),
            ),
            Fault::RateLimited { retry_after_secs } => ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "You have exceeded a secondary rate limit. Please wait a few minutes before you try again.",
            )
            .with_docs(RATE_LIMIT_DOCS)
            .with_header("retry-after", retry_after_secs.to_string()),
        }
    }
}

/// The fault knobs.
#[derive(Debug, Default)]
pub(crate) struct Faults {
    /// Queued faults, consumed one per request in arrival order: (fault, requests left).
    queue: VecDeque<(Fault, usize)>,
    /// Until this epoch second (emulator clock), every request is answered with a primary
    /// rate-limit 403.
    pub exhausted_until: Option<i64>,
    /// Added before every response.
    pub latency: Duration,
}

impl Faults {
    /// Queues `n` requests' worth of `fault` after those already queued.
    pub fn push(&mut self, fault: Fault, n: usize) {
        if n > 0 {
            self.queue.push_back((fault, n));
        }
    }

    /// Takes the fault for the current request, if any.
    pub fn take(&mut self) -> Option<Fault> {
        let (fault, left) = self.queue.front_mut()?;
        let fault = *fault;
        *left -= 1;
        if *left == 0 {
            self.queue.pop_front();
        }
        Some(fault)
    }

    /// Drops every queued fault and the exhausted rate limit (latency stays).
    pub fn clear(&mut self) {
        self.queue.clear();
        self.exhausted_until = None;
    }
}

/// Whose rate limit a request counts against.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Bucket {
    Anonymous(IpAddr),
    Pat(String),
    Installation(u64),
    App(u64),
}

/// The values of the `x-ratelimit-*` headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Snapshot {
    pub limit: u32,
    pub remaining: u32,
    pub used: u32,
    pub reset: i64,
}

impl Snapshot {
    /// The headers GitHub sends (`x-ratelimit-resource` is always `core` here).
    pub fn headers(&self) -> [(&'static str, String); 5] {
        [
            ("x-ratelimit-limit", self.limit.to_string()),
            ("x-ratelimit-remaining", self.remaining.to_string()),
            ("x-ratelimit-used", self.used.to_string()),
            ("x-ratelimit-reset", self.reset.to_string()),
            ("x-ratelimit-resource", "core".to_owned()),
        ]
    }

    /// What an exhausted limit looks like until `reset`.
    pub fn exhausted(limit: u32, reset: i64) -> Self {
        Snapshot {
            limit,
            remaining: 0,
            used: limit,
            reset,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Window {
    reset: i64,
    used: u32,
}

/// Primary rate limits, one hour window per [`Bucket`] starting at its first request.
#[derive(Debug)]
pub(crate) struct RateLimiter {
    /// Limit for authenticated buckets.
    pub limit: u32,
    windows: HashMap<Bucket, Window>,
}

impl Default for RateLimiter {
    fn default() -> Self {
        RateLimiter {
            limit: AUTHENTICATED_LIMIT,
            windows: HashMap::new(),
        }
    }
}

impl RateLimiter {
    fn limit_of(&self, bucket: &Bucket) -> u32 {
        match bucket {
            Bucket::Anonymous(_) => ANONYMOUS_LIMIT,
            _ => self.limit,
        }
    }

    /// The current window of a bucket (a fresh one if the old one has ended).
    fn window(&self, bucket: &Bucket, now: i64) -> Window {
        match self.windows.get(bucket) {
            Some(w) if w.reset > now => *w,
            _ => Window {
                reset: now + WINDOW_SECS,
                used: 0,
            },
        }
    }

    /// The headers' values without counting a request.
    pub fn peek(&self, bucket: &Bucket, now: i64) -> Snapshot {
        let limit = self.limit_of(bucket);
        let w = self.window(bucket, now);
        Snapshot {
            limit,
            remaining: limit.saturating_sub(w.used),
            used: w.used,
            reset: w.reset,
        }
    }

    /// Counts one request. `Err` (with the headers to send) when the bucket is already empty.
    pub fn consume(&mut self, bucket: &Bucket, now: i64) -> Result<Snapshot, Snapshot> {
        let limit = self.limit_of(bucket);
        let mut w = self.window(bucket, now);
        if w.used >= limit {
            self.windows.insert(bucket.clone(), w);
            return Err(Snapshot::exhausted(limit, w.reset));
        }
        w.used += 1;
        self.windows.insert(bucket.clone(), w);
        Ok(Snapshot {
            limit,
            remaining: limit - w.used,
            used: w.used,
            reset: w.reset,
        })
    }
}

/// The 403 GitHub sends when a primary rate limit is used up. `who` is e.g. `user ID 1`,
/// `installation ID 100` or an IP address.
pub(crate) fn rate_limit_exceeded(who: &str, anonymous: bool) -> ApiError {
    let message = if anonymous {
        format!(
            "API rate limit exceeded for {who}. (But here's the good news: Authenticated requests get a higher rate limit. Check out the documentation for more details.)"
        )
    } else {
        format!("API rate limit exceeded for {who}.")
    };
    ApiError::new(StatusCode::FORBIDDEN, message).with_docs(RATE_LIMIT_DOCS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_are_taken_in_order() {
        let mut f = Faults::default();
        f.push(Fault::Fail(StatusCode::BAD_GATEWAY), 2);
        f.push(
            Fault::RateLimited {
                retry_after_secs: 3,
            },
            1,
        );
        assert_eq!(f.take(), Some(Fault::Fail(StatusCode::BAD_GATEWAY)));
        assert_eq!(f.take(), Some(Fault::Fail(StatusCode::BAD_GATEWAY)));
        assert_eq!(
            f.take(),
            Some(Fault::RateLimited {
                retry_after_secs: 3
            })
        );
        assert_eq!(f.take(), None);
    }

    #[test]
    fn windows_count_down_and_reset() {
        let mut r = RateLimiter {
            limit: 2,
            ..RateLimiter::default()
        };
        let b = Bucket::Installation(1);
        assert_eq!(r.consume(&b, 100).unwrap().remaining, 1);
        assert_eq!(r.consume(&b, 101).unwrap().remaining, 0);
        let err = r.consume(&b, 102).unwrap_err();
        assert_eq!((err.remaining, err.reset), (0, 100 + WINDOW_SECS));
        assert_eq!(r.consume(&b, 100 + WINDOW_SECS).unwrap().used, 1);
    }
}
