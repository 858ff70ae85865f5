//! The controller's Prometheus metrics, rendered in the text exposition format (version 0.0.4)
//! that `GET /metrics` serves. Where actions-runner-controller (ARC) has a metric for the same
//! thing, Hangar uses ARC's name, type, help text, label names and histogram buckets, so ARC's
//! dashboards and alerts work unchanged; Hangar's own series start with `hangar_`.
//!
//! Labels: every per-pool series carries `name` (the pool's name, as ARC's listener uses the scale
//! set's name) plus, as ARC does, `organization` (the scope's owner) and `repository` (the
//! repository's name, for repository pools only). ARC's `namespace` (Kubernetes) and
//! `enterprise` (Hangar has no enterprise scope) do not apply and are left out. ARC labels its
//! job counters and histograms with per-job values (`job_name`, `job_workflow_ref`, `runner_id`
//! ...); Hangar does not, because every such value would be a new series forever.
//!
//! Invariants:
//! - Memory is bounded: label values come only from pool names the controller registered with
//!   [`Metrics::add_pool`] and from fixed enums; calls for a pool that was never added (or was
//!   removed) change nothing, so a late event cannot bring a dropped pool back.
//! - No series ever holds a credential: the credential label is the auth mode (`pat`, `app`).
//! - Rendering never fails and never blocks on anything but the one mutex, which is never held
//!   across an `.await` or while calling out.

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use serde::Serialize;

use super::backend::Interruption;
use crate::credentials::AuthMode;
use crate::github::Scope;

/// ARC's buckets for `gha_job_startup_duration_seconds` and `gha_job_execution_duration_seconds`
/// (the listener's defaults, 10 ms to one hour).
pub const JOB_DURATION_BUCKETS: [f64; 45] = [
    0.01, 0.05, 0.1, 0.5, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 12.0, 15.0, 18.0,
    20.0, 25.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 90.0, 100.0, 110.0, 120.0, 150.0, 180.0, 210.0,
    240.0, 300.0, 360.0, 420.0, 480.0, 540.0, 600.0, 900.0, 1200.0, 1800.0, 2400.0, 3000.0, 3600.0,
];

/// Buckets for `hangar_reconcile_duration_seconds`: Prometheus' default buckets, which span a
/// pass from an in-memory backend (milliseconds) to a slow AWS (seconds).
pub const RECONCILE_DURATION_BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// What one reconcile pass observed and decided for a pool: the scale set's statistics, the
/// pool's limits, the desired count, and the backend's tasks by state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PoolGauges {
    /// `statistics.totalAssignedJobs` -> `gha_assigned_jobs`.
    pub assigned_jobs: u64,
    /// `statistics.totalRunningJobs` -> `gha_running_jobs`.
    pub running_jobs: u64,
    /// `statistics.totalRegisteredRunners` -> `gha_registered_runners`.
    pub registered_runners: u64,
    /// `statistics.totalBusyRunners` -> `gha_busy_runners`.
    pub busy_runners: u64,
    /// `statistics.totalIdleRunners` -> `gha_idle_runners`.
    pub idle_runners: u64,
    /// The pool's `min_idle` -> `gha_min_runners`.
    pub min_runners: u64,
    /// The pool's `max` -> `gha_max_runners`.
    pub max_runners: u64,
    /// `min(max, min_idle + assigned)` -> `gha_desired_runners`.
    pub desired_runners: u64,
    /// Backend tasks not yet running -> `gha_controller_pending_ephemeral_runners`.
    pub pending_runners: u64,
    /// Backend tasks running -> `gha_controller_running_ephemeral_runners`.
    pub running_runners: u64,
    /// 1 while launches wait for GitHub's secondary rate limit (the pace of runner creations,
    /// or a refusal's `retry-after`) -> `hangar_launches_held_by_secondary_limit`.
    pub held_by_secondary_limit: u64,
}

/// Why a launch failed (`hangar_launch_failures_total{reason}`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LaunchFailure {
    /// The backend has no capacity (ECS capacity errors, Fargate Spot unavailable).
    Capacity,
    /// The backend or GitHub throttled the call.
    Throttled,
    /// The pool's settings are wrong (task definition, subnets, permissions).
    Config,
    /// GitHub or the backend could not be reached or failed.
    Unavailable,
    /// The GitHub rate-limit budget is spent; the launch waits.
    Budget,
    /// GitHub's secondary rate limit refused the runner's creation.
    SecondaryLimit,
}

impl LaunchFailure {
    pub const ALL: [LaunchFailure; 6] = [
        LaunchFailure::Capacity,
        LaunchFailure::Throttled,
        LaunchFailure::Config,
        LaunchFailure::Unavailable,
        LaunchFailure::Budget,
        LaunchFailure::SecondaryLimit,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            LaunchFailure::Capacity => "capacity",
            LaunchFailure::Throttled => "throttled",
            LaunchFailure::Config => "config",
            LaunchFailure::Unavailable => "unavailable",
            LaunchFailure::Budget => "budget",
            LaunchFailure::SecondaryLimit => "secondary_limit",
        }
    }
}

/// Why the controller stopped a runner or deleted a secret
/// (`hangar_runners_stopped_total{reason}`): the plan's own reasons.
pub use super::plan::Reason as StopReason;

/// A completed job's result (ARC's `job_result` label), folded into a fixed set.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum JobResult {
    Succeeded,
    Failed,
    /// Also what the service reports for a job it reassigns.
    Canceled,
    Skipped,
    Abandoned,
    /// Any spelling not above, so an unexpected value cannot add series.
    Other,
}

impl JobResult {
    const ALL: [JobResult; 6] = [
        JobResult::Succeeded,
        JobResult::Failed,
        JobResult::Canceled,
        JobResult::Skipped,
        JobResult::Abandoned,
        JobResult::Other,
    ];

    /// Reads the scale set's `result` (`succeeded`, `failed`, `canceled`, ...) or a REST
    /// conclusion (`success`, `failure`, `cancelled`, ...), case-insensitively.
    pub fn parse(result: &str) -> JobResult {
        match result.to_ascii_lowercase().as_str() {
            "succeeded" | "success" | "succeededwithissues" => JobResult::Succeeded,
            "failed" | "failure" => JobResult::Failed,
            "canceled" | "cancelled" => JobResult::Canceled,
            "skipped" => JobResult::Skipped,
            "abandoned" => JobResult::Abandoned,
            _ => JobResult::Other,
        }
    }

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            JobResult::Succeeded => "succeeded",
            JobResult::Failed => "failed",
            JobResult::Canceled => "canceled",
            JobResult::Skipped => "skipped",
            JobResult::Abandoned => "abandoned",
            JobResult::Other => "other",
        }
    }
}

/// What became of a webhook delivery (`hangar_webhook_deliveries_total{outcome}`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WebhookOutcome {
    /// A `workflow_job` delivery that nudged at least one pool.
    Nudged,
    /// A `workflow_job` delivery no pool matched.
    Unmatched,
    /// A delivery id seen before.
    Duplicate,
    Ping,
    /// An event type the controller does not act on.
    Ignored,
    /// Missing or wrong signature.
    Unauthorized,
    /// Body over the limit.
    TooLarge,
    /// Missing headers, an unreadable body or payload.
    Invalid,
}

impl WebhookOutcome {
    pub const ALL: [WebhookOutcome; 8] = [
        WebhookOutcome::Nudged,
        WebhookOutcome::Unmatched,
        WebhookOutcome::Duplicate,
        WebhookOutcome::Ping,
        WebhookOutcome::Ignored,
        WebhookOutcome::Unauthorized,
        WebhookOutcome::TooLarge,
        WebhookOutcome::Invalid,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            WebhookOutcome::Nudged => "nudged",
            WebhookOutcome::Unmatched => "unmatched",
            WebhookOutcome::Duplicate => "duplicate",
            WebhookOutcome::Ping => "ping",
            WebhookOutcome::Ignored => "ignored",
            WebhookOutcome::Unauthorized => "unauthorized",
            WebhookOutcome::TooLarge => "too_large",
            WebhookOutcome::Invalid => "invalid",
        }
    }
}

/// The auth modes, in label order.
const CREDENTIALS: [AuthMode; 2] = [AuthMode::Pat, AuthMode::App];

fn credential_label(mode: AuthMode) -> &'static str {
    match mode {
        AuthMode::Pat => "pat",
        AuthMode::App => "app",
    }
}

fn credential_index(mode: AuthMode) -> usize {
    match mode {
        AuthMode::Pat => 0,
        AuthMode::App => 1,
    }
}

/// A histogram with fixed buckets; `counts[i]` holds observations in `(buckets[i-1],
/// buckets[i]]`, made cumulative when rendered.
#[derive(Clone, Debug)]
struct Histogram {
    buckets: &'static [f64],
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn new(buckets: &'static [f64]) -> Self {
        Histogram {
            buckets,
            counts: vec![0; buckets.len()],
            sum: 0.0,
            count: 0,
        }
    }

    fn observe(&mut self, seconds: f64) {
        let slot = self.buckets.partition_point(|upper| *upper < seconds);
        if let Some(n) = self.counts.get_mut(slot) {
            *n += 1;
        }
        self.sum += seconds;
        self.count += 1;
    }
}

/// Everything kept for one pool.
#[derive(Clone, Debug)]
struct PoolSeries {
    organization: String,
    /// The repository's name, for a repository pool.
    repository: Option<String>,
    gauges: PoolGauges,
    session_live: bool,
    started_jobs: u64,
    startup: Histogram,
    /// Per result, once one was seen (as ARC, which creates a series on first use).
    completed: [Option<(u64, Histogram)>; JobResult::ALL.len()],
    launches: u64,
    launch_failures: [u64; LaunchFailure::ALL.len()],
    /// Launches that moved on to the pool's next capacity provider after a capacity refusal.
    launch_fallbacks: u64,
    /// Jobs whose task was stopped from outside while they ran, by cause.
    interrupted: [u64; Interruption::ALL.len()],
    stopped: [u64; StopReason::ALL.len()],
    /// USD of settled task bills: the jobs' shares, and the rest.
    job_dollars: f64,
    idle_dollars: f64,
}

impl PoolSeries {
    fn new(scope: &Scope) -> Self {
        let (organization, repository) = scope_labels(scope);
        PoolSeries {
            organization,
            repository,
            gauges: PoolGauges::default(),
            session_live: false,
            started_jobs: 0,
            startup: Histogram::new(&JOB_DURATION_BUCKETS),
            completed: Default::default(),
            launches: 0,
            launch_failures: [0; LaunchFailure::ALL.len()],
            launch_fallbacks: 0,
            interrupted: [0; Interruption::ALL.len()],
            stopped: [0; StopReason::ALL.len()],
            job_dollars: 0.0,
            idle_dollars: 0.0,
        }
    }
}

fn scope_labels(scope: &Scope) -> (String, Option<String>) {
    match scope {
        Scope::Repo { owner, repo } => (owner.clone(), Some(repo.clone())),
        Scope::Org { org } => (org.clone(), None),
    }
}

#[derive(Clone, Debug)]
struct Registry {
    pools: BTreeMap<String, PoolSeries>,
    github_calls: u64,
    /// Per auth mode (index by [`credential_index`]): (remaining, limit), once known.
    rate_limits: [Option<(u64, u64)>; CREDENTIALS.len()],
    reconcile_passes: u64,
    reconcile_duration: Histogram,
    config_reload_failures: u64,
    webhook_deliveries: [u64; WebhookOutcome::ALL.len()],
}

/// The controller's metrics. Cheap to clone (one `Arc`); every clone updates the same series.
#[derive(Clone, Debug)]
pub struct Metrics {
    registry: Arc<Mutex<Registry>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        Metrics {
            registry: Arc::new(Mutex::new(Registry {
                pools: BTreeMap::new(),
                github_calls: 0,
                rate_limits: [None; CREDENTIALS.len()],
                reconcile_passes: 0,
                reconcile_duration: Histogram::new(&RECONCILE_DURATION_BUCKETS),
                config_reload_failures: 0,
                webhook_deliveries: [0; WebhookOutcome::ALL.len()],
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Registry> {
        // A panic elsewhere while holding the lock leaves plain numbers behind, still valid.
        self.registry.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `update` on `pool`'s series if the pool was added; ignores unknown pools.
    fn with_pool(&self, pool: &str, update: impl FnOnce(&mut PoolSeries)) {
        match self.lock().pools.get_mut(pool) {
            Some(series) => update(series),
            None => tracing::debug!(pool, "metrics for a pool that is not configured; ignored"),
        }
    }

    /// Starts series for `pool` (at zero), or updates its scope labels if it exists (a config
    /// reload may move a pool); counters keep their values.
    pub fn add_pool(&self, pool: &str, scope: &Scope) {
        let mut registry = self.lock();
        match registry.pools.get_mut(pool) {
            Some(series) => (series.organization, series.repository) = scope_labels(scope),
            None => {
                registry
                    .pools
                    .insert(pool.to_string(), PoolSeries::new(scope));
            }
        }
    }

    /// Drops every series of a pool (a config reload removed it).
    pub fn remove_pool(&self, pool: &str) {
        self.lock().pools.remove(pool);
    }

    /// The pool's gauges as of the latest reconcile pass.
    pub fn set_pool(&self, pool: &str, gauges: &PoolGauges) {
        self.with_pool(pool, |series| series.gauges = *gauges);
    }

    /// A job started on one of the pool's runners, `startup` after the scale set was assigned it.
    pub fn job_started(&self, pool: &str, startup: Duration) {
        self.with_pool(pool, |series| {
            series.started_jobs += 1;
            series.startup.observe(startup.as_secs_f64());
        });
    }

    /// A job on one of the pool's runners completed with `result`, after running `execution`.
    pub fn job_completed(&self, pool: &str, result: JobResult, execution: Duration) {
        self.with_pool(pool, |series| {
            let (count, histogram) = series.completed[result as usize]
                .get_or_insert_with(|| (0, Histogram::new(&JOB_DURATION_BUCKETS)));
            *count += 1;
            histogram.observe(execution.as_secs_f64());
        });
    }

    /// The backend accepted a launch for the pool.
    pub fn launch(&self, pool: &str) {
        self.with_pool(pool, |series| series.launches += 1);
    }

    /// A launch for the pool failed.
    pub fn launch_failed(&self, pool: &str, reason: LaunchFailure) {
        self.with_pool(pool, |series| series.launch_failures[reason as usize] += 1);
    }

    /// A launch moved on to the pool's next capacity provider (its refusal is counted apart,
    /// as a capacity failure).
    pub fn launch_fell_back(&self, pool: &str) {
        self.with_pool(pool, |series| series.launch_fallbacks += 1);
    }

    /// A running job's task was stopped from outside (Spot, a `StopTask` not the controller's).
    pub fn job_interrupted(&self, pool: &str, cause: Interruption) {
        self.with_pool(pool, |series| series.interrupted[cause as usize] += 1);
    }

    /// The controller stopped one of the pool's runners (or removed its leftovers).
    /// Settled task bills: the jobs' share and the rest (USD).
    pub fn billed(&self, pool: &str, job_dollars: f64, idle_dollars: f64) {
        self.with_pool(pool, |series| {
            series.job_dollars += job_dollars;
            series.idle_dollars += idle_dollars;
        });
    }

    pub fn runner_stopped(&self, pool: &str, reason: StopReason) {
        self.with_pool(pool, |series| series.stopped[reason as usize] += 1);
    }

    /// Whether the pool's message session is live.
    pub fn session(&self, pool: &str, live: bool) {
        self.with_pool(pool, |series| series.session_live = live);
    }

    /// `n` more calls to GitHub.
    pub fn github_calls(&self, n: u64) {
        self.lock().github_calls += n;
    }

    /// The latest `x-ratelimit-remaining` and `x-ratelimit-limit` seen with a credential.
    pub fn rate_limit(&self, credential: AuthMode, remaining: u64, limit: u64) {
        self.lock().rate_limits[credential_index(credential)] = Some((remaining, limit));
    }

    /// One reconcile pass finished after `duration`.
    pub fn reconcile(&self, duration: Duration) {
        let mut registry = self.lock();
        registry.reconcile_passes += 1;
        registry.reconcile_duration.observe(duration.as_secs_f64());
    }

    /// A changed config file could not be loaded (the old one stays in force).
    pub fn config_reload_failed(&self) {
        self.lock().config_reload_failures += 1;
    }

    /// A webhook delivery was handled with `outcome`.
    pub fn webhook_delivery(&self, outcome: WebhookOutcome) {
        self.lock().webhook_deliveries[outcome as usize] += 1;
    }

    /// Every series in the Prometheus text exposition format (version 0.0.4), with `# HELP`
    /// and `# TYPE` for every metric, pools in name order.
    pub fn render(&self) -> String {
        // Copy out under the lock, format outside it: a scrape never holds up the controller.
        let snapshot = self.lock().clone();
        snapshot.render()
    }
}

/// The pool gauges in render order: name, help (ARC's wording where ARC has it), value.
type GaugeColumn = (&'static str, &'static str, fn(&PoolGauges) -> u64);
const POOL_GAUGES: [GaugeColumn; 10] = [
    (
        "gha_assigned_jobs",
        "Number of jobs assigned to this scale set.",
        |g| g.assigned_jobs,
    ),
    (
        "gha_running_jobs",
        "Number of jobs running (or about to be run).",
        |g| g.running_jobs,
    ),
    (
        "gha_registered_runners",
        "Number of runners registered by the scale set.",
        |g| g.registered_runners,
    ),
    (
        "gha_busy_runners",
        "Number of registered runners running a job.",
        |g| g.busy_runners,
    ),
    (
        "gha_idle_runners",
        "Number of registered runners not running a job.",
        |g| g.idle_runners,
    ),
    ("gha_min_runners", "Minimum number of runners.", |g| {
        g.min_runners
    }),
    ("gha_max_runners", "Maximum number of runners.", |g| {
        g.max_runners
    }),
    (
        "gha_desired_runners",
        "Number of runners desired by the scale set.",
        |g| g.desired_runners,
    ),
    (
        "gha_controller_pending_ephemeral_runners",
        "Number of ephemeral runners in a pending state.",
        |g| g.pending_runners,
    ),
    (
        "gha_controller_running_ephemeral_runners",
        "Number of ephemeral runners in a running state.",
        |g| g.running_runners,
    ),
];

impl Registry {
    /// A family with one sample per pool, pools in name order.
    fn per_pool(
        &self,
        out: &mut Text,
        (name, kind, help): (&str, &str, &str),
        value: impl Fn(&PoolSeries) -> u64,
    ) {
        out.header(name, kind, help);
        for (pool, series) in &self.pools {
            out.sample(name, &pool_labels(pool, series, None), value(series));
        }
    }

    /// A counter family with, per pool, one sample for each `(label value, count)` that
    /// `counts` gives.
    fn per_pool_by(
        &self,
        out: &mut Text,
        (name, help): (&str, &str),
        label: &'static str,
        counts: impl Fn(&PoolSeries) -> Vec<(&'static str, u64)>,
    ) {
        out.header(name, "counter", help);
        for (pool, series) in &self.pools {
            for (label_value, count) in counts(series) {
                let labels = pool_labels(pool, series, Some((label, label_value)));
                out.sample(name, &labels, count);
            }
        }
    }

    fn render(&self) -> String {
        let mut out = Text(String::with_capacity(4096 + self.pools.len() * 8192));
        for (name, help, value) in POOL_GAUGES {
            self.per_pool(&mut out, (name, "gauge", help), |series| {
                value(&series.gauges)
            });
        }

        self.per_pool(
            &mut out,
            (
                "gha_started_jobs_total",
                "counter",
                "Total number of jobs started.",
            ),
            |series| series.started_jobs,
        );
        self.per_pool_by(
            &mut out,
            (
                "gha_completed_jobs_total",
                "Total number of jobs completed.",
            ),
            "job_result",
            |series| {
                JobResult::ALL
                    .into_iter()
                    .filter_map(|result| {
                        let (count, _) = series.completed[result as usize].as_ref()?;
                        Some((result.as_str(), *count))
                    })
                    .collect()
            },
        );
        out.header(
            "gha_job_startup_duration_seconds",
            "histogram",
            "Time spent waiting for workflow job to get started on the runner owned by the scale set (in seconds).",
        );
        for (pool, series) in &self.pools {
            out.histogram(
                "gha_job_startup_duration_seconds",
                &pool_labels(pool, series, None),
                &series.startup,
            );
        }
        out.header(
            "gha_job_execution_duration_seconds",
            "histogram",
            "Time spent executing workflow jobs by the scale set (in seconds).",
        );
        for (pool, series) in &self.pools {
            for result in JobResult::ALL {
                if let Some((_, histogram)) = &series.completed[result as usize] {
                    let labels = pool_labels(pool, series, Some(("job_result", result.as_str())));
                    out.histogram("gha_job_execution_duration_seconds", &labels, histogram);
                }
            }
        }

        self.per_pool(
            &mut out,
            (
                "hangar_launches_total",
                "counter",
                "Runner launches the backend accepted.",
            ),
            |series| series.launches,
        );
        self.per_pool_by(
            &mut out,
            (
                "hangar_launch_failures_total",
                "Runner launches that failed, by reason (capacity, throttled, config, unavailable, budget, secondary_limit).",
            ),
            "reason",
            |series| {
                LaunchFailure::ALL
                    .into_iter()
                    .map(|reason| (reason.as_str(), series.launch_failures[reason as usize]))
                    .collect()
            },
        );
        self.per_pool(
            &mut out,
            (
                "hangar_launch_fallbacks_total",
                "counter",
                "Launches retried at once on the pool's next capacity provider after ECS refused the previous one for capacity (e.g. FARGATE_SPOT, then FARGATE).",
            ),
            |series| series.launch_fallbacks,
        );
        self.per_pool_by(
            &mut out,
            (
                "hangar_jobs_interrupted_total",
                "Running jobs whose task was stopped from outside (cause: spot = Spot capacity reclaimed, stopped = anything else); the agent drained them and cancelled what had not finished.",
            ),
            "cause",
            |series| {
                Interruption::ALL
                    .into_iter()
                    .map(|cause| (cause.as_str(), series.interrupted[cause as usize]))
                    .collect()
            },
        );
        for (name, help, value) in [
            (
                "hangar_job_cost_dollars_total",
                "USD of Fargate time the pool's jobs ran, their share of their tasks' bills (settled when a task stops; public prices, see hangar's README on cost).",
                (|series: &PoolSeries| series.job_dollars) as fn(&PoolSeries) -> f64,
            ),
            (
                "hangar_idle_cost_dollars_total",
                "USD of the pool's Fargate time with no job: image pull, start-up, waiting (min_idle), shutdown, the one-minute minimum.",
                |series: &PoolSeries| series.idle_dollars,
            ),
        ] {
            out.header(name, "counter", help);
            for (pool, series) in &self.pools {
                out.sample(name, &pool_labels(pool, series, None), value(series));
            }
        }
        self.per_pool_by(
            &mut out,
            (
                "hangar_runners_stopped_total",
                "Runners the controller stopped or cleaned up, by reason.",
            ),
            "reason",
            |series| {
                StopReason::ALL
                    .into_iter()
                    .map(|reason| (reason.as_str(), series.stopped[reason as usize]))
                    .collect()
            },
        );
        self.per_pool(
            &mut out,
            (
                "hangar_launches_held_by_secondary_limit",
                "gauge",
                "1 while the pool's launches wait for GitHub's secondary rate limit (\"limited by GitHub's secondary limit\" in status), else 0.",
            ),
            |series| series.gauges.held_by_secondary_limit,
        );
        self.per_pool(
            &mut out,
            (
                "hangar_session_live",
                "gauge",
                "1 while the pool's scale-set message session is live, else 0.",
            ),
            |series| u64::from(series.session_live),
        );

        out.header(
            "hangar_github_calls_total",
            "counter",
            "Requests the controller made to GitHub.",
        );
        out.sample("hangar_github_calls_total", &[], self.github_calls);
        for (name, help, pick) in [
            (
                "hangar_github_rate_limit_remaining",
                "GitHub's x-ratelimit-remaining as last seen, per credential (pat, app).",
                (|(remaining, _)| remaining) as fn((u64, u64)) -> u64,
            ),
            (
                "hangar_github_rate_limit_limit",
                "GitHub's x-ratelimit-limit as last seen, per credential (pat, app).",
                |(_, limit)| limit,
            ),
        ] {
            out.header(name, "gauge", help);
            for mode in CREDENTIALS {
                if let Some(seen) = self.rate_limits[credential_index(mode)] {
                    out.sample(name, &[("credential", credential_label(mode))], pick(seen));
                }
            }
        }
        out.header(
            "hangar_reconcile_passes_total",
            "counter",
            "Reconcile passes completed.",
        );
        out.sample("hangar_reconcile_passes_total", &[], self.reconcile_passes);
        out.header(
            "hangar_reconcile_duration_seconds",
            "histogram",
            "How long a reconcile pass took (in seconds).",
        );
        out.histogram(
            "hangar_reconcile_duration_seconds",
            &[],
            &self.reconcile_duration,
        );
        out.header(
            "hangar_config_reload_failures_total",
            "counter",
            "Config file changes that could not be loaded (the previous config stayed in force).",
        );
        out.sample(
            "hangar_config_reload_failures_total",
            &[],
            self.config_reload_failures,
        );
        out.header(
            "hangar_webhook_deliveries_total",
            "counter",
            "workflow_job webhook deliveries received, by outcome.",
        );
        for outcome in WebhookOutcome::ALL {
            out.sample(
                "hangar_webhook_deliveries_total",
                &[("outcome", outcome.as_str())],
                self.webhook_deliveries[outcome as usize],
            );
        }
        out.0
    }
}

/// `name`, `organization`, `repository` (when the pool has one), then `extra`.
fn pool_labels<'a>(
    pool: &'a str,
    series: &'a PoolSeries,
    extra: Option<(&'static str, &'a str)>,
) -> Vec<(&'static str, &'a str)> {
    let mut labels = vec![
        ("name", pool),
        ("organization", series.organization.as_str()),
    ];
    if let Some(repository) = &series.repository {
        labels.push(("repository", repository));
    }
    labels.extend(extra);
    labels
}

/// The exposition text being built. Writing to a `String` cannot fail, so results are dropped.
struct Text(String);

impl Text {
    fn header(&mut self, name: &str, kind: &str, help: &str) {
        let help = help.replace('\\', r"\\").replace('\n', r"\n");
        let _ = writeln!(self.0, "# HELP {name} {help}");
        let _ = writeln!(self.0, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl Into<Value>) {
        self.0.push_str(name);
        if !labels.is_empty() {
            self.0.push('{');
            for (i, (key, value)) in labels.iter().enumerate() {
                if i > 0 {
                    self.0.push(',');
                }
                let _ = write!(self.0, "{key}=\"{}\"", escape_label(value));
            }
            self.0.push('}');
        }
        let _ = writeln!(self.0, " {}", value.into());
    }

    fn histogram(&mut self, name: &str, labels: &[(&str, &str)], histogram: &Histogram) {
        let bucket_name = format!("{name}_bucket");
        let mut cumulative = 0;
        for (upper, count) in histogram.buckets.iter().zip(&histogram.counts) {
            cumulative += count;
            let le = Value::Float(*upper).to_string();
            let mut with_le = labels.to_vec();
            with_le.push(("le", &le));
            self.sample(&bucket_name, &with_le, cumulative);
        }
        let mut with_le = labels.to_vec();
        with_le.push(("le", "+Inf"));
        self.sample(&bucket_name, &with_le, histogram.count);
        self.sample(&format!("{name}_sum"), labels, histogram.sum);
        self.sample(&format!("{name}_count"), labels, histogram.count);
    }
}

fn escape_label(value: &str) -> String {
    value
        .replace('\\', r"\\")
        .replace('"', "\\\"")
        .replace('\n', r"\n")
}

/// A sample value: counts print as integers, seconds as floats (`+Inf` for infinity).
enum Value {
    Count(u64),
    Float(f64),
}

impl From<u64> for Value {
    fn from(n: u64) -> Self {
        Value::Count(n)
    }
}

impl From<&u64> for Value {
    fn from(n: &u64) -> Self {
        Value::Count(*n)
    }
}

impl From<f64> for Value {
    fn from(x: f64) -> Self {
        Value::Float(x)
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Count(n) => write!(f, "{n}"),
            Value::Float(x) if x.is_nan() => f.write_str("NaN"),
            Value::Float(x) if x.is_infinite() => {
                f.write_str(if *x > 0.0 { "+Inf" } else { "-Inf" })
            }
            // Rust prints floats without an exponent and integers without `.0`: `0.01`, `3600`.
            Value::Float(x) => write!(f, "{x}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo_scope() -> Scope {
        Scope::repo("acme/widgets").unwrap()
    }

    fn org_scope() -> Scope {
        Scope::org("acme").unwrap()
    }

    /// Every line is a `# HELP`/`# TYPE` comment or `name{labels} value`, every sample belongs
    /// to the metric family whose `# TYPE` came last, and no series appears twice.
    fn assert_parses(text: &str) {
        let mut family: Option<(String, String)> = None;
        let mut seen = std::collections::HashSet::new();
        assert!(text.ends_with('\n'), "the exposition ends with a newline");
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let (name, help) = rest.split_once(' ').expect("HELP has a name and text");
                assert!(valid_metric_name(name), "{line}");
                assert!(!help.is_empty(), "{line}");
                continue;
            }
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("TYPE has a name and kind");
                assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
                family = Some((name.to_string(), kind.to_string()));
                continue;
            }
            assert!(!line.starts_with('#'), "unexpected comment {line}");
            let (series, value) = line.rsplit_once(' ').expect("a sample has a value");
            assert!(
                value == "+Inf" || value.parse::<f64>().is_ok(),
                "value of {line}"
            );
            let name = match series.split_once('{') {
                Some((name, labels)) => {
                    let labels = labels.strip_suffix('}').expect("labels close");
                    for pair in split_labels(labels) {
                        let (key, quoted) = pair.split_once('=').expect("label is key=value");
                        assert!(valid_label_name(key), "label {key} in {line}");
                        assert!(
                            quoted.len() >= 2 && quoted.starts_with('"') && quoted.ends_with('"'),
                            "quoted label value in {line}"
                        );
                    }
                    name
                }
                None => series,
            };
            let (family_name, kind) = family.as_ref().expect("a sample follows a TYPE");
            let belongs = match kind.as_str() {
                "histogram" => [
                    format!("{family_name}_bucket"),
                    format!("{family_name}_sum"),
                    format!("{family_name}_count"),
                ]
                .contains(&name.to_string()),
                _ => name == family_name,
            };
            assert!(belongs, "{line} does not belong to {family_name}");
            assert!(seen.insert(series.to_string()), "duplicate series {series}");
        }
    }

    fn valid_metric_name(name: &str) -> bool {
        let mut chars = name.chars();
        chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    }

    fn valid_label_name(name: &str) -> bool {
        valid_metric_name(name) && !name.contains(':')
    }

    /// Splits `a="x",b="y,z"` at the commas outside quotes.
    fn split_labels(labels: &str) -> Vec<&str> {
        let mut parts = Vec::new();
        let (mut start, mut quoted, mut escaped) = (0, false, false);
        for (i, c) in labels.char_indices() {
            match c {
                _ if escaped => escaped = false,
                '\\' if quoted => escaped = true,
                '"' => quoted = !quoted,
                ',' if !quoted => {
                    parts.push(&labels[start..i]);
                    start = i + 1;
                }
                _ => {}
            }
        }
        parts.push(&labels[start..]);
        parts
    }

    fn lines_starting(text: &str, prefix: &str) -> Vec<String> {
        text.lines()
            .filter(|l| l.starts_with(prefix))
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn an_empty_registry_renders_every_family_and_the_global_series() {
        let text = Metrics::new().render();
        assert_parses(&text);
        for family in [
            "gha_assigned_jobs",
            "gha_running_jobs",
            "gha_registered_runners",
            "gha_busy_runners",
            "gha_idle_runners",
            "gha_desired_runners",
            "gha_controller_pending_ephemeral_runners",
            "gha_started_jobs_total",
            "gha_completed_jobs_total",
            "gha_job_startup_duration_seconds",
            "gha_job_execution_duration_seconds",
            "hangar_launch_failures_total",
            "hangar_launch_fallbacks_total",
            "hangar_jobs_interrupted_total",
            "hangar_job_cost_dollars_total",
            "hangar_idle_cost_dollars_total",
            "hangar_runners_stopped_total",
            "hangar_github_rate_limit_remaining",
            "hangar_reconcile_duration_seconds",
        ] {
            assert!(
                text.contains(&format!("# TYPE {family} ")),
                "{family} missing"
            );
        }
        assert!(text.contains("\nhangar_github_calls_total 0\n"));
        assert!(text.contains("\nhangar_reconcile_duration_seconds_bucket{le=\"+Inf\"} 0\n"));
        // No credential seen yet: no rate-limit sample.
        assert!(lines_starting(&text, "hangar_github_rate_limit_").is_empty());
    }

    #[test]
    fn settled_bills_add_up_per_pool_apart_from_idle_time() {
        let metrics = Metrics::new();
        metrics.add_pool("org", &org_scope());
        metrics.billed("org", 0.0025, 0.0005);
        metrics.billed("org", 0.0010, 0.0);
        let text = metrics.render();
        assert_parses(&text);
        let job = lines_starting(&text, "hangar_job_cost_dollars_total{");
        let idle = lines_starting(&text, "hangar_idle_cost_dollars_total{");
        assert_eq!(job.len(), 1, "{text}");
        assert!(job[0].contains("name=\"org\""), "{}", job[0]);
        let value = |line: &str| line.rsplit(' ').next().unwrap().parse::<f64>().unwrap();
        assert!((value(&job[0]) - 0.0035).abs() < 1e-12, "{}", job[0]);
        assert!((value(&idle[0]) - 0.0005).abs() < 1e-12, "{}", idle[0]);
    }

    #[test]
    fn pool_gauges_render_exact_lines_with_arcs_labels() {
        let metrics = Metrics::new();
        metrics.add_pool("standalone", &repo_scope());
        metrics.add_pool("org", &org_scope());
        metrics.set_pool(
            "standalone",
            &PoolGauges {
                assigned_jobs: 3,
                running_jobs: 2,
                registered_runners: 4,
                busy_runners: 2,
                idle_runners: 2,
                min_runners: 1,
                max_runners: 10,
                desired_runners: 4,
                pending_runners: 1,
                running_runners: 4,
                held_by_secondary_limit: 1,
            },
        );
        metrics.session("org", true);
        let text = metrics.render();
        assert_parses(&text);
        let assigned = "# HELP gha_assigned_jobs Number of jobs assigned to this scale set.\n\
                        # TYPE gha_assigned_jobs gauge\n\
                        gha_assigned_jobs{name=\"org\",organization=\"acme\"} 0\n\
                        gha_assigned_jobs{name=\"standalone\",organization=\"acme\",repository=\"widgets\"} 3\n";
        assert!(text.contains(assigned), "{text}");
        for line in [
            "gha_desired_runners{name=\"standalone\",organization=\"acme\",repository=\"widgets\"} 4",
            "gha_max_runners{name=\"standalone\",organization=\"acme\",repository=\"widgets\"} 10",
            "gha_controller_pending_ephemeral_runners{name=\"standalone\",organization=\"acme\",repository=\"widgets\"} 1",
            "hangar_session_live{name=\"org\",organization=\"acme\"} 1",
            "hangar_session_live{name=\"standalone\",organization=\"acme\",repository=\"widgets\"} 0",
            "hangar_launches_held_by_secondary_limit{name=\"standalone\",organization=\"acme\",repository=\"widgets\"} 1",
            "hangar_launches_held_by_secondary_limit{name=\"org\",organization=\"acme\"} 0",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line}\n{text}");
        }
    }

    #[test]
    fn job_histograms_use_arcs_buckets_cumulatively() {
        let metrics = Metrics::new();
        metrics.add_pool("org", &org_scope());
        metrics.job_started("org", Duration::from_millis(2500));
        metrics.job_started("org", Duration::from_secs(4000));
        metrics.job_completed(
            "org",
            JobResult::parse("succeeded"),
            Duration::from_secs(61),
        );
        metrics.job_completed("org", JobResult::parse("cancelled"), Duration::from_secs(1));
        let text = metrics.render();
        assert_parses(&text);
        let startup = lines_starting(&text, "gha_job_startup_duration_seconds");
        // 45 buckets, +Inf, sum, count.
        assert_eq!(startup.len(), 48, "{startup:#?}");
        let labels = "name=\"org\",organization=\"acme\"";
        for line in [
            format!("gha_job_startup_duration_seconds_bucket{{{labels},le=\"2\"}} 0"),
            format!("gha_job_startup_duration_seconds_bucket{{{labels},le=\"3\"}} 1"),
            format!("gha_job_startup_duration_seconds_bucket{{{labels},le=\"3600\"}} 1"),
            format!("gha_job_startup_duration_seconds_bucket{{{labels},le=\"+Inf\"}} 2"),
            format!("gha_job_startup_duration_seconds_sum{{{labels}}} 4002.5"),
            format!("gha_job_startup_duration_seconds_count{{{labels}}} 2"),
            format!("gha_job_startup_duration_seconds_bucket{{{labels},le=\"0.01\"}} 0"),
            format!("gha_started_jobs_total{{{labels}}} 2"),
            format!("gha_completed_jobs_total{{{labels},job_result=\"succeeded\"}} 1"),
            format!("gha_completed_jobs_total{{{labels},job_result=\"canceled\"}} 1"),
            format!(
                "gha_job_execution_duration_seconds_bucket{{{labels},job_result=\"succeeded\",le=\"60\"}} 0"
            ),
            format!(
                "gha_job_execution_duration_seconds_bucket{{{labels},job_result=\"succeeded\",le=\"70\"}} 1"
            ),
            format!(
                "gha_job_execution_duration_seconds_bucket{{{labels},job_result=\"canceled\",le=\"1\"}} 1"
            ),
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line}\n{text}");
        }
        // Only results that happened have series.
        assert!(!text.contains("job_result=\"failed\""));
    }

    #[test]
    fn a_value_on_a_bucket_boundary_counts_in_that_bucket() {
        let mut histogram = Histogram::new(&JOB_DURATION_BUCKETS);
        histogram.observe(5.0);
        histogram.observe(0.0);
        histogram.observe(1e9);
        assert_eq!(histogram.counts[0], 1); // 0 <= 0.01
        assert_eq!(histogram.counts[8], 1); // le="5"
        assert_eq!(histogram.counts.iter().sum::<u64>(), 2); // 1e9 only in +Inf
        assert_eq!(histogram.count, 3);
    }

    #[test]
    fn hangars_counters_by_reason_start_at_zero_for_every_reason() {
        let metrics = Metrics::new();
        metrics.add_pool("org", &org_scope());
        metrics.launch("org");
        metrics.launch("org");
        metrics.launch_failed("org", LaunchFailure::Capacity);
        metrics.runner_stopped("org", StopReason::Ghost);
        metrics.runner_stopped("org", StopReason::Ghost);
        metrics.github_calls(7);
        metrics.github_calls(3);
        metrics.rate_limit(AuthMode::App, 4990, 5000);
        metrics.reconcile(Duration::from_millis(30));
        metrics.config_reload_failed();
        metrics.webhook_delivery(WebhookOutcome::Duplicate);
        let text = metrics.render();
        assert_parses(&text);
        let labels = "name=\"org\",organization=\"acme\"";
        assert_eq!(
            lines_starting(&text, "hangar_launch_failures_total"),
            LaunchFailure::ALL
                .iter()
                .map(|r| format!(
                    "hangar_launch_failures_total{{{labels},reason=\"{}\"}} {}",
                    r.as_str(),
                    u64::from(*r == LaunchFailure::Capacity)
                ))
                .collect::<Vec<_>>()
        );
        assert_eq!(
            lines_starting(&text, "hangar_runners_stopped_total").len(),
            StopReason::ALL.len()
        );
        for line in [
            format!("hangar_launches_total{{{labels}}} 2"),
            format!("hangar_runners_stopped_total{{{labels},reason=\"ghost\"}} 2"),
            format!("hangar_runners_stopped_total{{{labels},reason=\"scale_in\"}} 0"),
            "hangar_github_calls_total 10".to_string(),
            "hangar_github_rate_limit_remaining{credential=\"app\"} 4990".to_string(),
            "hangar_github_rate_limit_limit{credential=\"app\"} 5000".to_string(),
            "hangar_reconcile_passes_total 1".to_string(),
            "hangar_reconcile_duration_seconds_bucket{le=\"0.025\"} 0".to_string(),
            "hangar_reconcile_duration_seconds_bucket{le=\"0.05\"} 1".to_string(),
            "hangar_config_reload_failures_total 1".to_string(),
            "hangar_webhook_deliveries_total{outcome=\"duplicate\"} 1".to_string(),
            "hangar_webhook_deliveries_total{outcome=\"nudged\"} 0".to_string(),
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line}\n{text}");
        }
        assert!(!text.contains("credential=\"pat\""));
    }

    #[test]
    fn a_removed_pool_leaves_no_series_and_late_events_do_not_bring_it_back() {
        let metrics = Metrics::new();
        metrics.add_pool("gone", &org_scope());
        metrics.add_pool("kept", &repo_scope());
        metrics.launch("gone");
        metrics.remove_pool("gone");
        metrics.launch("gone");
        metrics.job_started("gone", Duration::from_secs(1));
        metrics.set_pool("gone", &PoolGauges::default());
        metrics.session("never-added", true);
        let text = metrics.render();
        assert_parses(&text);
        assert!(!text.contains("\"gone\""), "{text}");
        assert!(!text.contains("never-added"), "{text}");
        assert!(text.contains("hangar_launches_total{name=\"kept\""));
    }

    #[test]
    fn re_adding_a_pool_moves_its_labels_and_keeps_its_counters() {
        let metrics = Metrics::new();
        metrics.add_pool("p", &repo_scope());
        metrics.launch("p");
        metrics.add_pool("p", &org_scope());
        let text = metrics.render();
        assert!(
            text.lines()
                .any(|l| l == "hangar_launches_total{name=\"p\",organization=\"acme\"} 1"),
            "{text}"
        );
        assert!(!text.contains("widgets"));
    }

    #[test]
    fn label_values_are_escaped() {
        let metrics = Metrics::new();
        // Config validation keeps pool names tame; the format must hold regardless.
        metrics.add_pool("a\"b\\c\nd", &org_scope());
        let text = metrics.render();
        assert_parses(&text);
        assert!(text.contains(r#"gha_assigned_jobs{name="a\"b\\c\nd",organization="acme"} 0"#));
    }

    #[test]
    fn job_results_fold_into_a_fixed_set() {
        assert_eq!(JobResult::parse("Succeeded"), JobResult::Succeeded);
        assert_eq!(JobResult::parse("success"), JobResult::Succeeded);
        assert_eq!(JobResult::parse("failure"), JobResult::Failed);
        assert_eq!(JobResult::parse("canceled"), JobResult::Canceled);
        assert_eq!(JobResult::parse("cancelled"), JobResult::Canceled);
        assert_eq!(JobResult::parse("skipped"), JobResult::Skipped);
        assert_eq!(JobResult::parse("something-new"), JobResult::Other);
    }

    /// Series are kept in arrays indexed by `variant as usize`: every `ALL` must list each
    /// variant once, in declaration order, or a count would land in another label's series.
    #[test]
    fn every_label_set_lists_its_variants_in_index_order() {
        let indexes = [
            JobResult::ALL.map(|r| r as usize).to_vec(),
            LaunchFailure::ALL.map(|r| r as usize).to_vec(),
            WebhookOutcome::ALL.map(|o| o as usize).to_vec(),
            StopReason::ALL.map(|r| r as usize).to_vec(),
        ];
        for listed in indexes {
            assert_eq!(listed, (0..listed.len()).collect::<Vec<_>>());
        }
    }

    #[test]
    fn clones_share_the_same_series_across_threads() {
        let metrics = Metrics::new();
        metrics.add_pool("p", &org_scope());
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let m = metrics.clone();
                std::thread::spawn(move || {
                    for _ in 0..250 {
                        m.launch("p");
                        m.github_calls(1);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let text = metrics.render();
        assert!(text.contains("hangar_launches_total{name=\"p\",organization=\"acme\"} 1000"));
        assert!(text.contains("\nhangar_github_calls_total 1000\n"));
    }
}
