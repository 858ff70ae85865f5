//! GitHub's secondary rate limit on the calls that create runners (a JIT configuration per
//! launch). GitHub documents 900 points a minute per REST endpoint with a POST costing 5, so
//! about 180 creations a minute per credential, and answers 403 or 429 with `retry-after` past
//! it; it also says limits "may change without notice" and that content creation is limited
//! further (about 80 a minute), and publishes nothing for the Actions service's
//! `generatejitconfig`. So the pace is a setting (`github_creations_per_minute`, default 150)
//! and it adapts: a refusal halves the pace (down to a tenth of the setting, at least 6 a
//! minute) and holds creations for the `retry-after`; every quiet minute gives a tenth of the
//! setting back.
//!
//! One [`CreationPace`] per credential serves every pool that uses it, as GitHub counts per
//! credential. A pass asks [`CreationPace::allowance`] how many launches it may start now (the
//! rest wait for a later pass: no pass blocks on the limit), and each launch takes its place
//! with [`CreationPace::take`] just before the call.
//!
//! [`CreationLimit`] is pure: it is given the time.

use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};

/// The default pace: under the ~180 a minute GitHub's documented points allow, leaving room for
/// other tools on the same credential.
pub const DEFAULT_PER_MINUTE: f64 = 150.0;

/// The reason shown in status when the pace holds launches.
pub const HELD_REASON: &str = "limited by GitHub's secondary limit";

/// A token bucket of creations whose rate backs off on refusals and recovers slowly.
#[derive(Clone, Debug)]
pub struct CreationLimit {
    configured: f64,
    /// Creations a minute now (lowered after a refusal).
    rate: f64,
    tokens: f64,
    at: DateTime<Utc>,
    held_until: Option<DateTime<Utc>>,
    /// When the rate was last lowered or raised.
    changed_at: DateTime<Utc>,
    refusals: u64,
}

impl CreationLimit {
    pub fn new(per_minute: f64, now: DateTime<Utc>) -> CreationLimit {
        let configured = per_minute.max(1.0);
        CreationLimit {
            configured,
            rate: configured,
            tokens: burst(configured),
            at: now,
            held_until: None,
            changed_at: now,
            refusals: 0,
        }
    }

    fn refill(&mut self, now: DateTime<Utc>) {
        // Recovery: a tenth of the setting back per minute without a refusal.
        let quiet = secs(self.changed_at, now) / 60.0;
        if self.rate < self.configured && quiet >= 1.0 {
            let steps = quiet.floor();
            self.rate = (self.rate + steps * self.configured / 10.0).min(self.configured);
            self.changed_at += chrono::Duration::seconds((steps * 60.0) as i64);
        }
        let elapsed = secs(self.at, now);
        self.tokens = (self.tokens + elapsed * self.rate / 60.0).min(burst(self.rate));
        if now > self.at {
            self.at = now;
        }
        if self.held_until.is_some_and(|until| until <= now) {
            self.held_until = None;
        }
    }

    /// How many creations may start now.
    pub fn allowance(&mut self, now: DateTime<Utc>) -> u32 {
        self.refill(now);
        if self.held_until.is_some() {
            return 0;
        }
        (self.tokens + 1e-9).floor().max(0.0) as u32
    }

    /// Takes one creation's place, or says how long until there is one.
    pub fn take(&mut self, now: DateTime<Utc>) -> Result<(), Duration> {
        self.refill(now);
        if let Some(until) = self.held_until {
            return Err(until
                .signed_duration_since(now)
                .to_std()
                .unwrap_or(Duration::from_millis(1)));
        }
        if self.tokens >= 1.0 - 1e-9 {
            self.tokens = (self.tokens - 1.0).max(0.0);
            Ok(())
        } else {
            let wait = (1.0 - self.tokens) * 60.0 / self.rate;
            Err(Duration::from_secs_f64(wait.max(0.001)))
        }
    }

    /// How long until one creation may start.
    pub fn next_in(&mut self, now: DateTime<Utc>) -> Duration {
        let mut probe = self.clone();
        match probe.take(now) {
            Ok(()) => Duration::ZERO,
            Err(wait) => wait,
        }
    }

    /// GitHub refused a creation for its secondary limit and asked to wait `retry_after`.
    /// Refusals of creations already under way when the first came (launches run several at
    /// a time) halve the pace once, not once each.
    pub fn refused(&mut self, now: DateTime<Utc>, retry_after: Duration) {
        self.refill(now);
        self.refusals += 1;
        let floor = (self.configured / 10.0).max(6.0).min(self.configured);
        if self.held_until.is_none() {
            self.rate = (self.rate / 2.0).max(floor);
        }
        self.tokens = 0.0;
        self.changed_at = now;
        let until = now + chrono::Duration::from_std(retry_after).unwrap_or_default();
        self.held_until = Some(self.held_until.map_or(until, |held| held.max(until)));
    }

    /// Creations a minute now.
    pub fn per_minute(&self) -> f64 {
        self.rate
    }

    pub fn refusals(&self) -> u64 {
        self.refusals
    }
}

/// At most 10 s worth saved up, so a quiet pool does not save a whole minute's worth and then
/// spend it at once.
fn burst(per_minute: f64) -> f64 {
    (per_minute / 6.0).max(1.0)
}

fn secs(from: DateTime<Utc>, to: DateTime<Utc>) -> f64 {
    to.signed_duration_since(from)
        .to_std()
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// A [`CreationLimit`] shared by the pools of one credential.
#[derive(Debug)]
pub struct CreationPace {
    limit: Mutex<CreationLimit>,
}

impl CreationPace {
    pub fn new(per_minute: f64) -> CreationPace {
        CreationPace {
            limit: Mutex::new(CreationLimit::new(per_minute, Utc::now())),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, CreationLimit> {
        self.limit.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How many launches may start now, and when the next could if none may.
    pub fn allowance(&self, now: DateTime<Utc>) -> (u32, Duration) {
        let mut limit = self.lock();
        let allowed = limit.allowance(now);
        (allowed, limit.next_in(now))
    }

    /// Waits for a creation's place (shared with other pools, so a place counted in the
    /// allowance may be gone).
    pub async fn take(&self) {
        loop {
            let wait = match self.lock().take(Utc::now()) {
                Ok(()) => return,
                Err(wait) => wait,
            };
            tokio::time::sleep(wait).await;
        }
    }

    pub fn refused(&self, retry_after: Duration) {
        self.lock().refused(Utc::now(), retry_after);
    }

    pub fn per_minute(&self) -> f64 {
        self.lock().per_minute()
    }

    pub fn refusals(&self) -> u64 {
        self.lock().refusals()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t(millis: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 7, 12, 0, 0).unwrap()
            + chrono::Duration::milliseconds(millis)
    }

    #[test]
    fn a_pass_may_start_ten_seconds_worth_then_the_pace() {
        let mut limit = CreationLimit::new(150.0, t(0));
        assert_eq!(limit.allowance(t(0)), 25);
        for _ in 0..25 {
            limit.take(t(0)).unwrap();
        }
        assert_eq!(limit.allowance(t(0)), 0);
        let wait = limit.take(t(0)).unwrap_err();
        assert_eq!(
            wait,
            Duration::from_millis(400),
            "150 a minute is one per 0.4 s"
        );
        assert_eq!(limit.allowance(t(4_000)), 10);
        // A minute at the pace never goes past it.
        let mut started = 0;
        let mut now = 4_000;
        while now < 64_000 {
            if limit.take(t(now)).is_ok() {
                started += 1;
            }
            now += 10;
        }
        assert!((150..=151 + 10).contains(&started), "{started}");
    }

    #[test]
    fn a_refusal_holds_for_retry_after_halves_the_pace_and_quiet_minutes_give_it_back() {
        let mut limit = CreationLimit::new(150.0, t(0));
        limit.refused(t(0), Duration::from_secs(30));
        assert_eq!(limit.per_minute(), 75.0);
        assert_eq!(limit.allowance(t(29_000)), 0);
        assert_eq!(limit.take(t(29_000)), Err(Duration::from_secs(1)));
        assert!(limit.allowance(t(30_000)) > 0);
        // Refusals of launches already under way halve it once.
        limit.refused(t(31_000), Duration::from_secs(1));
        limit.refused(t(31_000), Duration::from_secs(1));
        assert_eq!(limit.per_minute(), 37.5);
        for n in 0..4 {
            limit.refused(t(33_000 + n * 2_000), Duration::from_secs(1));
        }
        assert_eq!(
            limit.per_minute(),
            15.0,
            "never under a tenth of the setting"
        );
        assert_eq!(limit.refusals(), 7);
        limit.allowance(t(39_000 + 60_000));
        assert_eq!(limit.per_minute(), 30.0);
        limit.allowance(t(39_000 + 20 * 60_000));
        assert_eq!(limit.per_minute(), 150.0, "back to the setting, not beyond");
    }

    #[test]
    fn a_small_setting_still_paces() {
        let mut limit = CreationLimit::new(3.0, t(0));
        assert_eq!(limit.allowance(t(0)), 1);
        limit.take(t(0)).unwrap();
        assert_eq!(limit.take(t(0)), Err(Duration::from_secs(20)));
        limit.refused(t(0), Duration::from_secs(1));
        assert_eq!(limit.per_minute(), 3.0, "the floor is the setting itself");
    }
}
