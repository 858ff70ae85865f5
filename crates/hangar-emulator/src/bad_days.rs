//! "GitHub's bad days": three behaviours of the real service that hurt autoscalers, each off
//! until switched on through the [`crate::Emulator`] handle.
//!
//! - **Secondary rate limit** ([`SecondaryLimit`]): GitHub allows at most 900 points a minute per
//!   REST endpoint, a `POST` costing 5 (about 180 JIT configs a minute), and answers 403 (or
//!   429) with `retry-after` past that. Here it applies to the content-creating runner
//!   endpoints (JIT config, registration token, remove token; repository and organization) and
//!   the scale-set `generatejitconfig`, per credential and per endpoint, over a rolling window.
//!   A refused request does nothing and costs no points.
//! - **A lagging REST `busy` flag**: the REST runner answers say `busy: false` until the lag has
//!   passed since the runner took its job. Everything else (deletion refusals, the scale-set
//!   side, statistics, the job stream, [`crate::RunnerView`]) stays truthful.
//! - **Idle JIT runners dropped**: a runner made from a JIT config that never took a job is
//!   deleted once its registration is older than the expiry, exactly as a deletion through the
//!   API (its session ends, so a waiting long poll answers 404 and a new session 401).
//!
//! The expiry queue lists JIT runners in creation order, so every look at it (on every request
//! and every housekeeping tick) costs only the runners that are due.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use axum::http::StatusCode;

use crate::auth::Credential;
use crate::error::ApiError;
use crate::faults::Bucket;
use crate::state::{Runner, State};

/// Where the body of a secondary-limit refusal points (as GitHub's own refusals do).
const SECONDARY_DOCS: &str = "https://docs.github.com/free-pro-team@latest/rest/overview/rate-limits-for-the-rest-api#about-secondary-rate-limits";

/// The message of a secondary-limit refusal (GitHub appends a request ID).
pub(crate) const SECONDARY_MESSAGE: &str =
    "You have exceeded a secondary rate limit. Please wait a few minutes before you try again.";

/// A secondary rate limit on the runner endpoints that create something (see
/// [`crate::Emulator::set_secondary_limit`]). Build one from [`SecondaryLimit::github`] and
/// change what a test needs, e.g. `SecondaryLimit { points_per_minute: 15, window:
/// Duration::from_secs(1), ..SecondaryLimit::github() }` for three JIT configs a second.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SecondaryLimit {
    /// Points a credential may spend on one endpoint within [`SecondaryLimit::window`]
    /// (GitHub: 900 a minute).
    pub points_per_minute: u32,
    /// Points one `POST` costs (GitHub: 5).
    pub post_cost: u32,
    /// The status of a refusal: 403 (GitHub's usual answer) or 429.
    pub status: u16,
    /// The rolling window the points are counted over (GitHub: 60 s). Shorter windows let tests
    /// see the limit lift without waiting a minute.
    pub window: Duration,
}

impl SecondaryLimit {
    /// GitHub's documented limit: 900 points a minute per endpoint, 5 points a `POST`, refusals
    /// answered 403.
    pub fn github() -> Self {
        SecondaryLimit {
            points_per_minute: 900,
            post_cost: 5,
            status: 403,
            window: Duration::from_secs(60),
        }
    }
}

impl Default for SecondaryLimit {
    fn default() -> Self {
        Self::github()
    }
}

/// One limited endpoint (a route, whatever its path parameters).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Endpoint {
    /// `POST /repos/{o}/{r}/actions/runners/{action}` or `POST /orgs/{org}/actions/runners/{action}`
    /// with `action` one of `generate-jitconfig`, `registration-token`, `remove-token`.
    Runners { org: bool, action: &'static str },
    /// `POST …/runnerscalesets/{id}/generatejitconfig` on the Actions service.
    ScaleSetJitConfig,
}

/// Whose points a request spends.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Caller {
    /// A REST credential (a PAT, an installation); also a scale-set admin token traded for a
    /// registration token this credential made.
    Credential(Bucket),
    /// A scale-set admin token whose credential is unknown: its tenant's.
    Tenant(String),
}

/// The bucket of a verified credential that may spend points (PATs and installations; the
/// others cannot call the limited endpoints).
pub(crate) fn credential_bucket(cred: &Credential) -> Option<Bucket> {
    match cred {
        Credential::Pat { token } => Some(Bucket::Pat(token.clone())),
        Credential::Installation { id, .. } => Some(Bucket::Installation(*id)),
        Credential::Anonymous | Credential::AppJwt { .. } => None,
    }
}

/// The limited REST endpoint a request is for, if any. `path` has no `/api/v3` prefix.
pub(crate) fn rest_endpoint(method: &str, path: &str) -> Option<Endpoint> {
    if method != "POST" {
        return None;
    }
    let segments: Vec<&str> = path.strip_prefix('/')?.split('/').collect();
    let (org, action) = match segments.as_slice() {
        ["orgs", _, "actions", "runners", action] => (true, *action),
        ["repos", _, _, "actions", "runners", action] => (false, *action),
        _ => return None,
    };
    let action = ["generate-jitconfig", "registration-token", "remove-token"]
        .into_iter()
        .find(|a| *a == action)?;
    Some(Endpoint::Runners { org, action })
}

/// A refused request: the status to answer and the whole seconds until it would be accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Refusal {
    pub status: StatusCode,
    pub retry_after_secs: u64,
}

impl Refusal {
    /// The REST answer: GitHub's body, `retry-after`, and the request ID in the message.
    pub fn error(self, request_id: &str) -> ApiError {
        ApiError::new(
            self.status,
            format!(
                "{SECONDARY_MESSAGE} If you reach out to GitHub Support for help, please include the request ID {request_id}."
            ),
        )
        .with_docs(SECONDARY_DOCS)
        .with_header("retry-after", self.retry_after_secs.to_string())
    }
}

/// The switches and what they keep.
#[derive(Debug, Default)]
pub(crate) struct BadDays {
    secondary: Option<SecondaryLimit>,
    /// Per caller and endpoint: (when, in emulator-clock milliseconds; points), oldest first.
    spent: HashMap<(Caller, Endpoint), VecDeque<(i64, u32)>>,
    /// Requests refused by the secondary limit.
    pub secondary_limited: usize,
    /// How long the REST `busy` flag lags behind a runner taking a job (zero: no lag).
    pub busy_flag_lag: Duration,
    /// Age after which an idle JIT runner that never took a job is deleted.
    idle_jit_expiry: Option<Duration>,
    /// JIT runners that may expire, oldest first: (created, runner id). Kept only while the
    /// expiry is on.
    jit_queue: VecDeque<(Instant, u64)>,
    /// Idle JIT runners deleted so far.
    pub idle_jit_expired: usize,
}

impl BadDays {
    /// Sets (or lifts) the secondary limit; the points spent so far are forgotten.
    ///
    /// # Panics
    /// If the limit's `status` is not an HTTP status code.
    pub fn set_secondary(&mut self, limit: Option<SecondaryLimit>) {
        if let Some(l) = &limit {
            assert!(
                StatusCode::from_u16(l.status).is_ok(),
                "set_secondary_limit: {} is not an HTTP status code",
                l.status
            );
        }
        self.secondary = limit;
        self.spent.clear();
    }

    /// Spends one `POST`'s points of `caller` on `endpoint` at `now_ms`, or refuses it (spending
    /// nothing) when the window holds too many already.
    pub fn charge(
        &mut self,
        caller: Caller,
        endpoint: Endpoint,
        now_ms: i64,
    ) -> Result<(), Refusal> {
        let Some(limit) = self.secondary else {
            return Ok(());
        };
        let window_ms = i64::try_from(limit.window.as_millis()).unwrap_or(i64::MAX);
        let spent = self.spent.entry((caller, endpoint)).or_default();
        while spent
            .front()
            .is_some_and(|(at, _)| at.saturating_add(window_ms) <= now_ms)
        {
            spent.pop_front();
        }
        let cost = limit.post_cost;
        let used: u64 = spent.iter().map(|(_, p)| u64::from(*p)).sum();
        let allowed = u64::from(limit.points_per_minute);
        if used + u64::from(cost) <= allowed {
            spent.push_back((now_ms, cost));
            return Ok(());
        }
        // The wait: until enough of the oldest spending has left the window for this request.
        let mut left = used;
        let mut free_at = now_ms.saturating_add(window_ms);
        for (at, points) in spent.iter() {
            left -= u64::from(*points);
            if left + u64::from(cost) <= allowed {
                free_at = at.saturating_add(window_ms);
                break;
            }
        }
        let wait_ms = u64::try_from(free_at.saturating_sub(now_ms)).unwrap_or(0);
        self.secondary_limited += 1;
        Err(Refusal {
            status: StatusCode::from_u16(limit.status).unwrap_or(StatusCode::FORBIDDEN),
            retry_after_secs: wait_ms.div_ceil(1000).max(1),
        })
    }
}

impl State {
    /// Charges a request to a limited endpoint (see [`BadDays::charge`]) on the emulator clock.
    pub fn charge_secondary(&mut self, caller: Caller, endpoint: Endpoint) -> Result<(), Refusal> {
        let now_ms = self.now().timestamp_millis();
        self.bad_days.charge(caller, endpoint, now_ms)
    }

    /// The `busy` flag the REST API shows for a runner: its real one, except during the
    /// configured lag after it took its job.
    pub fn rest_busy(&self, runner: &Runner) -> bool {
        let lag = self.bad_days.busy_flag_lag;
        runner.busy
            && (lag.is_zero() || runner.busy_since.is_none_or(|since| since.elapsed() >= lag))
    }

    /// Turns the idle JIT runner expiry on (with `after`) or off. Turning it on queues every JIT
    /// runner that has not taken a job yet, so runners made before count too.
    pub fn set_idle_jit_expiry(&mut self, after: Option<Duration>) {
        self.bad_days.idle_jit_expiry = after;
        self.bad_days.jit_queue.clear();
        if after.is_some() {
            let mut queue: Vec<(Instant, u64)> = self
                .runners
                .values()
                .filter(|r| r.jit && !r.took_a_job)
                .map(|r| (r.created_at, r.id))
                .collect();
            queue.sort();
            self.bad_days.jit_queue = queue.into();
        }
        self.expire_idle_jit_runners();
    }

    /// Queues a JIT runner just made, while the expiry is on.
    pub fn watch_jit_runner(&mut self, runner_id: u64, created_at: Instant) {
        if self.bad_days.idle_jit_expiry.is_some() {
            self.bad_days.jit_queue.push_back((created_at, runner_id));
        }
    }

    /// Deletes every JIT runner whose registration is older than the expiry and that never took
    /// a job, as a deletion through the API would (see [`State::delete_runner`]).
    pub fn expire_idle_jit_runners(&mut self) {
        let Some(after) = self.bad_days.idle_jit_expiry else {
            return;
        };
        while let Some(&(created_at, id)) = self.bad_days.jit_queue.front() {
            if created_at.elapsed() < after {
                break;
            }
            self.bad_days.jit_queue.pop_front();
            let idle = self
                .runners
                .get(&id)
                .is_some_and(|r| r.jit && !r.took_a_job && !r.busy && r.job.is_none());
            if idle && self.delete_runner(id) {
                self.bad_days.idle_jit_expired += 1;
                tracing::debug!(runner_id = id, "hangar-emulator: idle JIT runner expired");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(points: u32, window_secs: u64) -> SecondaryLimit {
        SecondaryLimit {
            points_per_minute: points,
            window: Duration::from_secs(window_secs),
            ..SecondaryLimit::github()
        }
    }

    #[test]
    fn github_numbers() {
        let g = SecondaryLimit::github();
        assert_eq!((g.points_per_minute, g.post_cost, g.status), (900, 5, 403));
        assert_eq!(g.window, Duration::from_secs(60));
        assert_eq!(g.points_per_minute / g.post_cost, 180);
    }

    #[test]
    fn only_the_content_creating_runner_posts_are_limited() {
        let jit = rest_endpoint("POST", "/orgs/o/actions/runners/generate-jitconfig");
        assert_eq!(
            jit,
            Some(Endpoint::Runners {
                org: true,
                action: "generate-jitconfig"
            })
        );
        assert_eq!(
            rest_endpoint("POST", "/repos/o/r/actions/runners/remove-token"),
            Some(Endpoint::Runners {
                org: false,
                action: "remove-token"
            })
        );
        assert_eq!(rest_endpoint("GET", "/orgs/o/actions/runners"), None);
        assert_eq!(rest_endpoint("DELETE", "/orgs/o/actions/runners/3"), None);
        assert_eq!(
            rest_endpoint("POST", "/orgs/o/actions/runners/generate-jitconfig/"),
            None
        );
        assert_eq!(
            rest_endpoint("POST", "/app/installations/1/access_tokens"),
            None
        );
    }

    #[test]
    fn a_rolling_window_per_caller_and_endpoint() {
        let mut b = BadDays::default();
        let pat = Caller::Credential(Bucket::Pat("t".into()));
        let inst = Caller::Credential(Bucket::Installation(1));
        let jit = Endpoint::ScaleSetJitConfig;
        let token = Endpoint::Runners {
            org: true,
            action: "registration-token",
        };
        // Off: anything goes.
        for t in 0..1000 {
            assert!(b.charge(pat.clone(), jit, t).is_ok());
        }
        b.set_secondary(Some(limit(15, 60)));
        assert!(b.charge(pat.clone(), jit, 0).is_ok());
        assert!(b.charge(pat.clone(), jit, 10_000).is_ok());
        assert!(b.charge(pat.clone(), jit, 20_000).is_ok());
        let refused = b.charge(pat.clone(), jit, 30_000).unwrap_err();
        assert_eq!(refused.status, StatusCode::FORBIDDEN);
        // The oldest spending leaves the window at 60 s: 30 s from now.
        assert_eq!(refused.retry_after_secs, 30);
        assert_eq!(b.secondary_limited, 1);
        // Other callers and other endpoints have their own points.
        assert!(b.charge(inst.clone(), jit, 30_000).is_ok());
        assert!(b.charge(pat.clone(), token, 30_000).is_ok());
        // A refusal cost nothing: at 60 s exactly one slot is free again, then none.
        assert_eq!(
            b.charge(pat.clone(), jit, 59_500)
                .unwrap_err()
                .retry_after_secs,
            1
        );
        assert!(b.charge(pat.clone(), jit, 60_000).is_ok());
        assert_eq!(
            b.charge(pat.clone(), jit, 60_000)
                .unwrap_err()
                .retry_after_secs,
            10
        );
        assert_eq!(b.secondary_limited, 3);
    }

    #[test]
    fn a_post_dearer_than_the_limit_waits_a_window() {
        let mut b = BadDays::default();
        b.set_secondary(Some(SecondaryLimit {
            status: 429,
            ..limit(4, 2)
        }));
        let r = b
            .charge(Caller::Tenant("t".into()), Endpoint::ScaleSetJitConfig, 0)
            .unwrap_err();
        assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(r.retry_after_secs, 2);
    }
}
