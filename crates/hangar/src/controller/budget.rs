//! The GitHub rate-limit budget, as a pure decision. A credential's hourly limit is shared with
//! everything else that uses it (other tools, humans, the runners' own registrations), so the
//! controller gives itself a configured share of it and, when that share runs low, launches
//! fewer runners and observes less often, rather than running into 403/429 answers that would
//! stall every pool at once.
//!
//! The usage it counts is the window's (`limit - remaining`, from GitHub's `x-ratelimit-*`
//! headers), not only its own: if others spend the budget, the controller backs off too.
//! A reserve is kept for the observation passes left until the window resets (at most half of
//! what is left; when that is not enough the passes are stretched), so a starved controller
//! still sees its runners and can still retire them, and a fast resync never starves launches.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::plan::Allowance;

/// GitHub's latest rate-limit headers for one credential.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct RateLimitSnapshot {
    pub limit: u64,
    pub remaining: u64,
    pub reset_at: DateTime<Utc>,
}

/// What the controller costs, measured by its own counters.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Costs {
    /// GitHub calls one launch makes (JIT configuration, look-ups), averaged.
    pub per_launch: f64,
    /// GitHub calls one observation pass makes for all pools on this credential.
    pub per_pass: f64,
    /// The time between passes.
    pub resync_interval: Duration,
}

/// The budget's verdict for this pass.
#[derive(Clone, Debug, PartialEq)]
pub struct Verdict {
    pub allowance: Allowance,
    /// Wait at least this long before the next pass (the resync interval stretched), if the
    /// budget is too thin for passes at the configured rate.
    pub stretch_pass: Option<Duration>,
    /// Calls the controller may still make in this window (for the budget metric).
    pub left: u64,
}

/// Decides how much may be spent now. `share` is in (0, 1].
pub fn decide(
    share: f64,
    snapshot: Option<&RateLimitSnapshot>,
    costs: &Costs,
    now: DateTime<Utc>,
) -> Verdict {
    let Some(rl) = snapshot else {
        return Verdict {
            allowance: Allowance::unlimited(),
            stretch_pass: None,
            left: u64::MAX,
        };
    };
    let allowed = (rl.limit as f64 * share).floor() as u64;
    let used = rl.limit.saturating_sub(rl.remaining);
    let left = allowed.saturating_sub(used);
    let until_reset = rl
        .reset_at
        .signed_duration_since(now)
        .to_std()
        .unwrap_or(Duration::ZERO);
    let interval = costs.resync_interval.max(Duration::from_millis(1));
    let passes_left = (until_reset.as_secs_f64() / interval.as_secs_f64()).ceil();
    // Observation may take at most half of what is left: a fast resync must slow down (the
    // passes are stretched), never starve launches altogether.
    let wanted_reserve = (passes_left * costs.per_pass).ceil() as u64;
    let reserve = wanted_reserve.min(left / 2);
    let spendable = left.saturating_sub(reserve);
    let launches = if costs.per_launch <= 0.0 {
        None
    } else {
        Some(
            (spendable as f64 / costs.per_launch)
                .floor()
                .min(u32::MAX as f64) as u32,
        )
    };
    let stretch_pass = (wanted_reserve > reserve && costs.per_pass > 0.0).then(|| {
        let affordable_passes = (reserve as f64 / costs.per_pass).floor().max(1.0);
        Duration::from_secs_f64(until_reset.as_secs_f64() / affordable_passes).max(interval)
    });
    // Always said; the plan shows it only when it limits launches.
    let reason = Some(format!(
        "GitHub budget: {used} of {} calls used this hour; the controller keeps to {:.0}% ({allowed}) and {reserve} are reserved for observing until the reset at {}",
        rl.limit,
        share * 100.0,
        rl.reset_at.format("%H:%M:%S UTC"),
    ));
    Verdict {
        allowance: Allowance { launches, reason },
        stretch_pass,
        left,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 28, 12, 0, 0).unwrap()
    }

    fn snapshot(limit: u64, remaining: u64, reset_in: i64) -> RateLimitSnapshot {
        RateLimitSnapshot {
            limit,
            remaining,
            reset_at: now() + chrono::Duration::seconds(reset_in),
        }
    }

    fn costs(per_launch: f64, per_pass: f64, resync: u64) -> Costs {
        Costs {
            per_launch,
            per_pass,
            resync_interval: Duration::from_secs(resync),
        }
    }

    #[test]
    fn without_headers_nothing_is_limited() {
        let v = decide(0.5, None, &costs(3.0, 2.0, 30), now());
        assert_eq!(v.allowance, Allowance::unlimited());
        assert_eq!(v.stretch_pass, None);
    }

    #[test]
    fn a_fresh_window_allows_many_launches() {
        // 5000/h PAT, half for us, 60 passes of 2 calls reserved: (2500 - 120) / 3 = 793.
        let v = decide(
            0.5,
            Some(&snapshot(5000, 5000, 1800)),
            &costs(3.0, 2.0, 30),
            now(),
        );
        assert_eq!(v.allowance.launches, Some(793));
        assert!(v.allowance.reason.unwrap().contains("0 of 5000 calls used"));
        assert_eq!(v.left, 2500);
    }

    #[test]
    fn others_spending_the_budget_count_against_the_share() {
        // 2400 used by someone else: 100 left of our 2500. Observing every 30 s would take 120;
        // it gets half (50) and its passes are stretched to what 50 calls afford over the 30
        // minutes left (25 passes, one every 72 s); the other 50 give 16 launches.
        let v = decide(
            0.5,
            Some(&snapshot(5000, 2600, 1800)),
            &costs(3.0, 2.0, 30),
            now(),
        );
        assert_eq!(v.allowance.launches, Some(16));
        let reason = v.allowance.reason.unwrap();
        assert!(reason.contains("2400 of 5000"), "{reason}");
        assert!(reason.contains("50%"), "{reason}");
        assert_eq!(v.stretch_pass, Some(Duration::from_secs(72)));
    }

    #[test]
    fn launches_shrink_as_the_reset_nears_less_reserve_is_needed() {
        let early = decide(
            0.5,
            Some(&snapshot(5000, 2800, 3000)),
            &costs(3.0, 2.0, 30),
            now(),
        );
        let late = decide(
            0.5,
            Some(&snapshot(5000, 2800, 60)),
            &costs(3.0, 2.0, 30),
            now(),
        );
        assert_eq!(early.allowance.launches, Some(50)); // (300 - min(200, 150)) / 3
        assert_eq!(late.allowance.launches, Some(98)); // (300 - 4) / 3
    }

    #[test]
    fn an_exhausted_share_stops_launches_but_never_stops_observing() {
        let v = decide(
            0.5,
            Some(&snapshot(5000, 0, 600)),
            &costs(3.0, 2.0, 30),
            now(),
        );
        assert_eq!(v.allowance.launches, Some(0));
        assert_eq!(v.left, 0);
        assert_eq!(
            v.stretch_pass,
            Some(Duration::from_secs(600)),
            "one pass per window"
        );
    }

    #[test]
    fn a_resync_faster_than_the_budget_slows_down_but_launches_still_happen() {
        // A 1 s resync would take 3,600 calls this hour, more than the whole share.
        let v = decide(
            0.5,
            Some(&snapshot(5000, 4990, 3600)),
            &costs(2.0, 1.0, 1),
            now(),
        );
        assert_eq!(v.left, 2490);
        assert_eq!(v.allowance.launches, Some(622)); // (2490 - 1245) / 2
        assert_eq!(
            v.stretch_pass,
            Some(Duration::from_secs_f64(3600.0 / 1245.0))
        );
    }

    #[test]
    fn a_full_share_may_use_the_whole_limit() {
        let v = decide(
            1.0,
            Some(&snapshot(100, 100, 0)),
            &costs(1.0, 0.0, 30),
            now(),
        );
        assert_eq!(v.allowance.launches, Some(100));
    }
}
