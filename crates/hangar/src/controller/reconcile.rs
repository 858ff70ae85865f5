//! One pool's reconcile loop: observe -> [`plan`] -> act, level-triggered. A pass runs when the
//! scale-set listener or the webhook receiver nudges it, and at least every resync interval
//! whatever happens, so a lost message or webhook delays a job by one interval at most.
//!
//! Observation is all or nothing: if GitHub's runners or the backend's tasks cannot be read, the
//! pass decides nothing (a partial view would make live runners look like ghosts). Actions are
//! idempotent: launching names every runner afresh, retiring tolerates a runner that is already
//! gone, stopping tolerates a stopped task.
//!
//! Invariants:
//! - A runner is retired registration first; when GitHub answers that a job is running on it,
//!   its task is left alone. So a busy runner is never stopped, even when the plan's view was
//!   a moment old.
//! - A launch whose task cannot be started removes the registration it created, so a failed
//!   launch leaves neither a ghost nor a one-shot secret behind.
//! - Only this module and the listener call GitHub for a pool, through [`PoolGitHub`]; only this
//!   module calls the backend.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use secrecy::SecretString;
use serde::Serialize;
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

use super::backend::{Backend, BackendError, Interruption, LaunchRequest, Task, TaskTags};
use super::bills::{Bills, CostTotals, Pricing};
use super::budget::{self, Costs, RateLimitSnapshot};
use super::config::{PoolConfig, RUNNER_SUFFIX_LEN};
use super::creations::{CreationPace, HELD_REASON};
use super::jobs::{JobBook, TaskRecord};
use super::ledger::{Ledger, ListingReason, STREAM_GRACE, StreamItem};
use super::metrics::LaunchFailure as LaunchFailureKind;
use super::plan::{self, Action, InFlight, Memory, Observed, ObservedRunner, PoolStatus, Reason};
use crate::github::scaleset::AgentRemoval;

/// What a pool's reconciler needs from GitHub, defined by its caller: the real adapter wraps the
/// REST client and the scale-set service; tests and the benchmark use a simulation.
pub trait PoolGitHub: Send + Sync + 'static {
    /// This pool's registrations (the caller filters by the pool's runner names).
    fn runners(&self) -> impl Future<Output = Result<Vec<ObservedRunner>, String>> + Send;

    /// Creates a runner registration in the pool's scale set and returns its JIT configuration.
    fn create_runner(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<NewRunner, CreateError>> + Send;

    /// Removes a registration; `StillRunning` when a job runs on it (it is then left alone).
    fn remove_runner(&self, id: u64) -> impl Future<Output = Result<AgentRemoval, String>> + Send;

    /// GitHub calls made so far through this pool's clients (REST and Actions service).
    fn calls_made(&self) -> u64;

    /// The latest rate-limit headers of the pool's credential.
    fn rate_limit(&self) -> Option<RateLimitSnapshot>;
}

/// A registration just created for a launch.
pub struct NewRunner {
    pub id: u64,
    pub name: String,
    pub jit_config: SecretString,
}

/// Why a registration could not be created.
#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    /// The name is taken (a previous attempt got through): try another.
    #[error("the runner name {0} is in use")]
    NameInUse(String),
    /// GitHub's secondary rate limit refused the creation and asked to wait this long.
    #[error("GitHub's secondary rate limit refused a runner creation (retry after {0:?})")]
    Limited(Duration),
    #[error("{0}")]
    Other(String),
}

/// Where the pool's demand comes from (the listener publishes it).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct DemandView {
    /// `statistics.totalAssignedJobs`; `None` until a session is live.
    pub assigned_jobs: Option<u32>,
    /// When those statistics were received (`None`: unknown, taken as old).
    pub statistics_at: Option<DateTime<Utc>>,
    /// Whether the pool's message session is live, and if not, why.
    pub session: String,
}

/// What one pool reports (for `/status`, `hangar status` and metrics). No secrets.
#[derive(Clone, Debug, Default, Serialize)]
pub struct PoolReport {
    pub pool: String,
    pub scope: String,
    pub scale_set: String,
    pub backend: String,
    pub session: String,
    pub status: PoolStatus,
    pub passes: u64,
    pub last_pass_at: Option<DateTime<Utc>>,
    /// Why the last pass could not observe or act, if it could not.
    pub last_error: Option<String>,
    /// Why the last launch failed, with its reason label, until a launch succeeds.
    pub launch_failure: Option<LaunchFailure>,
    pub launched_total: u64,
    pub retired_total: u64,
    /// Jobs a stop of their task cut short (Spot reclaimed, someone stopped it).
    pub interrupted_total: u64,
    /// Launches that started on a later capacity provider after a capacity refusal.
    pub fallbacks_total: u64,
    /// What the pool's tasks cost, when it has prices (see `controller::bills`).
    pub cost: Option<PoolCost>,
    pub github_calls: u64,
    pub budget_left: Option<u64>,
}

/// A pool's cost figures for `/status`, `/jobs` and the page.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct PoolCost {
    #[serde(flatten)]
    pub totals: CostTotals,
    pub region: String,
    pub prices_as_of: String,
    /// What one waiting runner costs an hour (each `min_idle` runner), on the first capacity.
    pub runner_dollars_per_hour: Option<f64>,
    /// `min_idle` runners an hour.
    pub min_idle_dollars_per_hour: Option<f64>,
    pub size: Option<String>,
}

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct LaunchFailure {
    pub reason: String,
    pub message: String,
    pub at: DateTime<Utc>,
}

/// Events the reconciler reports as they happen (metrics and logs hang off them).
#[derive(Clone, Debug, PartialEq)]
pub enum PoolEvent {
    Launched {
        runner_name: String,
    },
    LaunchFailed {
        reason: LaunchFailureKind,
    },
    /// A launch moved on to the pool's next capacity provider (after a `LaunchFailed` of
    /// reason capacity for the one before).
    FellBack,
    /// A runner's task stopped while its job ran, stopped from outside (see
    /// `StopDetails::interruption`).
    JobInterrupted {
        runner_name: String,
        cause: Interruption,
    },
    /// Tasks settled: their jobs' share and the rest (USD).
    Billed {
        job_dollars: f64,
        idle_dollars: f64,
    },
    Removed {
        runner_name: Option<String>,
        reason: Reason,
    },
    Pass {
        status: PoolStatus,
        took: Duration,
        /// GitHub calls made for this pool so far (its listener, launches and listings).
        github_calls: u64,
    },
}

/// Timing knobs of a reconciler.
#[derive(Clone, Debug)]
pub struct LoopSettings {
    pub resync_interval: Duration,
    /// Nudges that arrive within this window share one pass.
    pub debounce: Duration,
    /// Launches in flight at once (each: one GitHub call, then the backend).
    pub launch_concurrency: usize,
    pub budget_share: f64,
    /// With a message stream, GitHub's REST runner list is read at least this often (more
    /// often when the ledger asks: see `controller::ledger`).
    pub runner_list_interval: Duration,
}

impl Default for LoopSettings {
    fn default() -> Self {
        LoopSettings {
            resync_interval: Duration::from_secs(30),
            // Long enough to let a message's siblings land in the same pass, short enough not to
            // show in pickup times.
            debounce: Duration::from_millis(5),
            launch_concurrency: 8,
            budget_share: 1.0,
            runner_list_interval: Duration::from_secs(300),
        }
    }
}

/// How often a pool's leftover one-shot secrets are listed for clean-up: a quarter of the age at
/// which one is deleted anyway, between 1 s and a minute. Listing them is one SSM
/// `DescribeParameters` (a scarce, throttled call) per page; deciding anything else never waits
/// for it.
pub fn cleanup_interval(pool: &PoolConfig) -> Duration {
    (pool.limits.handoff_max_age / 4).clamp(Duration::from_secs(1), Duration::from_secs(60))
}

/// How soon a pool with more runners than desired is looked at again.
const SURPLUS_RECHECK: Duration = Duration::from_secs(1);

/// The first wait after a launch failure, doubled per consecutive failure up to the cap.
const BACKOFF_START: Duration = Duration::from_secs(2);
const BACKOFF_CAP: Duration = Duration::from_secs(300);
/// A configuration problem will not fix itself within seconds.
const CONFIG_BACKOFF: Duration = Duration::from_secs(60);

/// How long to hold launches after `failures` consecutive failures of this kind; `jitter` in
/// [0, 1) spreads pools that failed together.
pub fn launch_backoff(error: &BackendError, failures: u32, jitter: f64) -> Duration {
    let base = match error {
        BackendError::Config(_) => CONFIG_BACKOFF,
        _ => BACKOFF_START,
    };
    let exp = failures.saturating_sub(1).min(16);
    let wait = base.saturating_mul(1u32 << exp).min(BACKOFF_CAP);
    // Up to +50%, so the cap is reached later by some pools than others.
    wait.mul_f64(1.0 + jitter.clamp(0.0, 1.0) * 0.5)
}

/// A fresh runner name for a pool: its prefix and random lowercase letters and digits.
pub fn runner_name(pool: &PoolConfig) -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    let suffix: String = (0..RUNNER_SUFFIX_LEN)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect();
    format!("{}{suffix}", pool.runner_prefix())
}

/// One pool's reconciler.
pub struct Reconciler<G: PoolGitHub, B: Backend> {
    pool: PoolConfig,
    github: Arc<G>,
    backend: Arc<B>,
    settings: LoopSettings,
    memory: Memory,
    /// When leftover one-shot secrets were last listed (see [`cleanup_interval`]).
    handoffs_listed_at: Option<DateTime<Utc>>,
    consecutive_launch_failures: u32,
    report: PoolReport,
    calls_at_start: u64,
    events: Option<tokio::sync::mpsc::UnboundedSender<(String, PoolEvent)>>,
    /// Where to ask the listener for fresh statistics.
    statistics_refresh: Option<Arc<Notify>>,
    /// The runners' starts and completions from the listener; without it every pass reads
    /// the REST runner list.
    stream: Option<tokio::sync::mpsc::UnboundedReceiver<StreamItem>>,
    ledger: Ledger,
    /// The pace of runner creations under GitHub's secondary limit, shared by the pools of one
    /// credential (none: unpaced).
    creations: Option<Arc<CreationPace>>,
    /// Since when launches have waited for fresher statistics (see `run`).
    awaiting_statistics_since: Option<DateTime<Utc>>,
    /// REST runner listings read, by why (for the log and tests).
    listings: u64,
    /// The pool's job records, told which task ran each runner's job.
    jobs: Option<Arc<std::sync::Mutex<JobBook>>>,
    /// Runner id -> its task's id, as the last listing showed (a task gone from the next one
    /// is still named when its stop is looked up).
    task_ids: BTreeMap<u64, String>,
    /// The pool's task bills, when it has prices.
    bills: Option<Bills>,
}

impl<G: PoolGitHub, B: Backend> Reconciler<G, B> {
    pub fn new(pool: PoolConfig, github: Arc<G>, backend: Arc<B>, settings: LoopSettings) -> Self {
        let report = PoolReport {
            pool: pool.name.clone(),
            scope: match &pool.scope {
                crate::github::Scope::Repo { owner, repo } => format!("{owner}/{repo}"),
                crate::github::Scope::Org { org } => org.clone(),
            },
            scale_set: pool.scale_set.clone(),
            backend: backend.kind().to_string(),
            ..PoolReport::default()
        };
        let calls_at_start = github.calls_made();
        Reconciler {
            pool,
            github,
            backend,
            settings,
            memory: Memory::default(),
            handoffs_listed_at: None,
            consecutive_launch_failures: 0,
            report,
            calls_at_start,
            events: None,
            statistics_refresh: None,
            stream: None,
            creations: None,
            ledger: Ledger::default(),
            awaiting_statistics_since: None,
            listings: 0,
            task_ids: BTreeMap::new(),
            jobs: None,
            bills: None,
        }
    }

    /// Takes the runners' state from the scale set's message stream (and this reconciler's own
    /// actions), reading the REST runner list only when the ledger asks for it.
    pub fn with_stream(mut self, stream: tokio::sync::mpsc::UnboundedReceiver<StreamItem>) -> Self {
        self.stream = Some(stream);
        self
    }

    /// Tells `jobs` the task of every runner a listing shows.
    pub fn with_jobs(mut self, jobs: Arc<std::sync::Mutex<JobBook>>) -> Self {
        self.jobs = Some(jobs);
        self
    }

    /// Bills the pool's tasks with `pricing` (and tells `jobs`, if set, what each cost).
    pub fn with_pricing(mut self, pricing: Pricing) -> Self {
        self.bills = Some(Bills::new(pricing));
        self.publish_cost();
        self
    }

    fn publish_cost(&mut self) {
        let Some(bills) = &self.bills else {
            return;
        };
        let pricing = bills.pricing();
        let hour = pricing.task_hour();
        self.report.cost = Some(PoolCost {
            totals: bills.totals().clone(),
            region: pricing.table.region.clone(),
            prices_as_of: pricing.table.as_of.clone(),
            runner_dollars_per_hour: hour,
            min_idle_dollars_per_hour: hour.map(|h| h * f64::from(self.pool.limits.min_idle)),
            size: pricing.size_text(),
        });
    }

    /// Settles the bills of tasks that stopped or left the listing, and brings the jobs' costs
    /// up to date. One DescribeTasks batch per 100 tasks gone, none when none left.
    async fn bill(&mut self, tasks: &[Task], now: DateTime<Utc>) {
        let Some(bills) = &mut self.bills else {
            return;
        };
        let gone = bills.observe(tasks, now);
        let described = if gone.is_empty() {
            Vec::new()
        } else {
            self.backend.describe_gone(&gone).await
        };
        let book = self.jobs.clone();
        let span = |runner_id: u64| {
            book.as_ref()?
                .lock()
                .expect("job book poisoned")
                .span_of_runner(runner_id)
        };
        let settled = bills.settle(&gone, &described, span, now);
        let so_far = bills.so_far(span, now);
        if let Some(book) = &self.jobs {
            let mut book = book.lock().expect("job book poisoned");
            for task in &described {
                book.task_of_runner(task.tags.runner_id, TaskRecord::of(task));
            }
            for s in &settled {
                book.cost_of_runner(s.runner_id, s.cost);
            }
            for (runner_id, cost) in so_far {
                book.cost_of_runner(runner_id, cost);
            }
        }
        if !settled.is_empty() {
            self.emit(PoolEvent::Billed {
                job_dollars: settled.iter().map(|s| s.cost.job_dollars).sum(),
                idle_dollars: settled.iter().map(|s| s.cost.overhead_dollars).sum(),
            });
        }
        self.publish_cost();
    }

    /// Paces runner creations with `pace` (shared by the pools of one credential).
    pub fn with_creation_pace(mut self, pace: Arc<CreationPace>) -> Self {
        self.creations = Some(pace);
        self
    }

    /// REST runner listings this reconciler has read.
    pub fn listings(&self) -> u64 {
        self.listings
    }

    /// Asks `refresh` for fresh statistics when launches wait for them (see
    /// [`plan::PoolStatus::awaiting_statistics`]); the listener nudges the next pass once they
    /// are in.
    pub fn with_statistics_refresh(mut self, refresh: Arc<Notify>) -> Self {
        self.statistics_refresh = Some(refresh);
        self
    }

    /// Sends every [`PoolEvent`] to `events` (tagged with the pool name).
    pub fn with_events(
        mut self,
        events: tokio::sync::mpsc::UnboundedSender<(String, PoolEvent)>,
    ) -> Self {
        self.events = Some(events);
        self
    }

    pub fn report(&self) -> &PoolReport {
        &self.report
    }

    fn emit(&self, event: PoolEvent) {
        if let Some(tx) = &self.events {
            let _ = tx.send((self.pool.name.clone(), event));
        }
    }

    /// Runs passes until `cancel`: on every nudge (after the debounce) and every resync
    /// interval. Publishes the report after each pass. Never stops runners on the way out: they
    /// finish their jobs, and the next controller adopts them by their tags.
    pub async fn run(
        mut self,
        demand: watch::Receiver<DemandView>,
        nudge: Arc<Notify>,
        reports: watch::Sender<PoolReport>,
        cancel: CancellationToken,
    ) {
        let mut surplus_passes = 0u32;
        loop {
            let view = demand.borrow().clone();
            let stretch = self.pass(&view, Utc::now()).await;
            let _ = reports.send(self.report.clone());
            if self.report.status.awaiting_statistics > 0 {
                let now = Utc::now();
                let since = *self.awaiting_statistics_since.get_or_insert(now);
                // With a message stream, the completion that holds launches usually comes with
                // fresh statistics in its own message: ask only when it is late.
                let late = self.stream.is_none()
                    || now
                        .signed_duration_since(since)
                        .to_std()
                        .is_ok_and(|waited| waited >= STREAM_GRACE);
                if late && let Some(refresh) = &self.statistics_refresh {
                    refresh.notify_one();
                }
            } else {
                self.awaiting_statistics_since = None;
            }
            // More runners than desired (a launch raced a shrinking demand, or a runner is
            // still starting): look again soon, so a surplus runner that comes online idle is
            // retired in about a second, not a whole resync interval later.
            // The re-check doubles while the surplus lasts (a task stuck pending is the reaper's,
            // not worth a call a second).
            let surplus = self.report.status.capacity > self.report.status.desired;
            surplus_passes = if surplus { surplus_passes + 1 } else { 0 };
            let resync = if surplus {
                SURPLUS_RECHECK
                    .saturating_mul(1 << (surplus_passes - 1).min(16))
                    .min(self.settings.resync_interval)
            } else {
                self.settings.resync_interval
            };
            let next_wait = stretch.unwrap_or(resync).max(
                // A pass that could not observe tries again sooner than a full interval.
                if self.report.last_error.is_some() {
                    Duration::from_secs(1).min(self.settings.resync_interval)
                } else {
                    Duration::ZERO
                },
            );
            let woke_by_nudge = tokio::select! {
                _ = cancel.cancelled() => return,
                _ = nudge.notified() => true,
                _ = tokio::time::sleep(next_wait) => false,
            };
            if woke_by_nudge && !self.settings.debounce.is_zero() {
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(self.settings.debounce) => {}
                }
            }
        }
    }

    /// One pass: observe, decide, act. Returns a stretched resync interval when the GitHub
    /// budget asks for fewer passes.
    pub async fn pass(&mut self, demand: &DemandView, now: DateTime<Utc>) -> Option<Duration> {
        let started = Instant::now();
        self.report.passes += 1;
        self.report.last_pass_at = Some(now);
        self.report.session = demand.session.clone();
        let observed = match self.observe(demand, now).await {
            Ok(observed) => observed,
            Err(e) => {
                tracing::warn!(pool = %self.pool.name, error = %e, "observation failed; nothing decided this pass");
                self.report.last_error = Some(e);
                return None;
            }
        };
        self.report.last_error = None;
        let calls = self.github.calls_made().saturating_sub(self.calls_at_start);
        let costs = Costs {
            per_launch: if self.report.launched_total == 0 {
                // Until measured: one JIT call plus the registration's share of a listing.
                2.0
            } else {
                (calls as f64 / self.report.launched_total as f64).clamp(1.0, 20.0)
            },
            per_pass: 1.0,
            resync_interval: self.settings.resync_interval,
        };
        let verdict = budget::decide(
            self.settings.budget_share,
            self.github.rate_limit().as_ref(),
            &costs,
            now,
        );
        self.report.budget_left = (verdict.left != u64::MAX).then_some(verdict.left);
        let mut allowance = verdict.allowance.clone();
        if let Some(pace) = &self.creations {
            let (allowed, _) = pace.allowance(now);
            if allowance.launches.is_none_or(|budget| allowed < budget) {
                allowance = plan::Allowance {
                    launches: Some(allowed),
                    reason: Some(format!(
                        "{HELD_REASON} ({:.0} runner creations a minute per credential)",
                        pace.per_minute()
                    )),
                };
            }
        }
        let (mut observed, listed) = observed;
        let mut plan = plan::plan(&self.pool.limits, &observed, &self.memory, &allowance, now);
        // Scale-in needs to know which runners are online and idle, which only the REST list
        // says: read it and decide again.
        let listed_lately = self.ledger.listed_at().is_some_and(|at| {
            now.signed_duration_since(at)
                .to_std()
                .is_ok_and(|age| age < SURPLUS_RECHECK)
        });
        if !listed
            && !listed_lately
            && plan.status.working > plan.status.desired
            && observed.assigned_jobs.is_some()
            && observed.runners.iter().any(|r| !r.busy)
        {
            match self.list_runners(ListingReason::ScaleIn).await {
                Ok(()) => {
                    observed.runners = self.ledger_runners();
                    observed.gone_at = self.ledger_gone_at(&observed.tasks);
                    (observed.dropped, observed.retired) = self.ledger_released(&observed.tasks);
                    plan = plan::plan(&self.pool.limits, &observed, &self.memory, &allowance, now);
                }
                Err(e) => {
                    tracing::warn!(pool = %self.pool.name, error = %e, "listing the pool's runners for scale-in failed; scale-in waits");
                }
            }
        }
        tracing::info!(
            pool = %self.pool.name,
            assigned = ?observed.assigned_jobs,
            registered = plan.status.registered,
            busy = plan.status.busy,
            idle = plan.status.idle,
            pending = plan.status.pending,
            capacity = plan.status.capacity,
            desired = plan.status.desired,
            tasks = observed.tasks.len(),
            actions = plan.actions.len(),
            launch_held = plan.status.launch_held.as_deref().unwrap_or(""),
            "reconcile"
        );
        self.memory = plan.memory;
        self.report.status = plan.status;
        for action in plan.actions {
            self.act(action, now).await;
        }
        self.report.github_calls = self.github.calls_made();
        self.emit(PoolEvent::Pass {
            status: self.report.status.clone(),
            took: started.elapsed(),
            github_calls: self.report.github_calls,
        });
        // Launches the secondary limit's pace held: come back when it allows one.
        let held_by_pace = self
            .report
            .status
            .launch_held
            .as_deref()
            .is_some_and(|why| why.starts_with(HELD_REASON))
            && self.report.status.desired > self.report.status.capacity;
        match &self.creations {
            Some(pace) if held_by_pace && verdict.stretch_pass.is_none() => {
                let (_, next) = pace.allowance(Utc::now());
                Some(next.clamp(Duration::from_millis(100), self.settings.resync_interval))
            }
            _ => verdict.stretch_pass,
        }
    }

    /// Runners and tasks every pass, all or nothing; leftover one-shot secrets only every
    /// [`cleanup_interval`], and a failure there only delays the clean-up (an SSM
    /// `DescribeParameters` that is throttled must not stop a pool from deciding). With a
    /// message stream the runners come from the ledger, and the REST list is read only when it
    /// asks. Returns whether the REST list was read.
    async fn observe(
        &mut self,
        demand: &DemandView,
        now: DateTime<Utc>,
    ) -> Result<(Observed, bool), String> {
        let cleanup_due = self.handoffs_listed_at.is_none_or(|at| {
            now.signed_duration_since(at)
                .to_std()
                .is_ok_and(|age| age >= cleanup_interval(&self.pool))
        });
        let handoffs = async {
            if cleanup_due {
                Some(self.backend.list_handoffs(&self.pool.name).await)
            } else {
                None
            }
        };
        let streamed = self.stream.is_some();
        let rest_runners = async {
            if streamed {
                None
            } else {
                Some(self.github.runners().await)
            }
        };
        let (runners, tasks, handoffs) =
            tokio::join!(rest_runners, self.backend.list(&self.pool.name), handoffs,);
        let tasks = tasks.map_err(|e| format!("listing the pool's tasks: {e}"))?;
        if let Some(jobs) = &self.jobs {
            let mut book = jobs.lock().expect("job book poisoned");
            for task in &tasks {
                book.task_of_runner(task.tags.runner_id, TaskRecord::of(task));
            }
        }
        self.bill(&tasks, now).await;
        let handoffs = match handoffs {
            Some(Ok(handoffs)) => {
                self.handoffs_listed_at = Some(now);
                handoffs
            }
            Some(Err(e)) => {
                tracing::warn!(pool = %self.pool.name, error = %e, "listing leftover one-shot secrets failed; their clean-up waits for the next try");
                Vec::new()
            }
            None => Vec::new(),
        };
        let (runners, gone_at, (dropped, retired), listed) = match runners {
            Some(runners) => {
                let runners =
                    runners.map_err(|e| format!("listing the pool's runners on GitHub: {e}"))?;
                self.listings += 1;
                let runners = runners
                    .into_iter()
                    .filter(|r| self.pool.owns_runner_name(&r.name))
                    .collect();
                (runners, Default::default(), Default::default(), true)
            }
            None => {
                self.drain_stream();
                let left_busy = self.ledger.tasks_seen(&tasks, now);
                for (runner_id, runner_name) in left_busy {
                    let task_id = tasks
                        .iter()
                        .find(|t| t.tags.runner_id == runner_id)
                        .map(|t| t.id.clone())
                        .or_else(|| self.task_ids.get(&runner_id).cloned());
                    if let Some(task_id) = task_id {
                        self.report_interruption(&runner_name, &task_id).await;
                    }
                }
                self.task_ids = tasks
                    .iter()
                    .map(|t| (t.tags.runner_id, t.id.clone()))
                    .collect();
                self.ledger.prune(now);
                let due = self.ledger.listing_due(
                    &tasks,
                    now,
                    self.settings.runner_list_interval,
                    self.settings.resync_interval,
                );
                if let Some(reason) = due {
                    self.list_runners(reason).await?;
                }
                (
                    self.ledger_runners(),
                    self.ledger_gone_at(&tasks),
                    self.ledger_released(&tasks),
                    due.is_some(),
                )
            }
        };
        Ok((
            Observed {
                assigned_jobs: demand.assigned_jobs,
                statistics_at: demand.statistics_at,
                // After the listings: what they show happened before this.
                listed_at: Some(Utc::now()),
                runners,
                gone_at,
                dropped,
                retired,
                tasks,
                handoffs,
            },
            listed,
        ))
    }

    /// Applies the stream's events that came since the last pass.
    /// A runner holding a job lost its task: when the backend says the stop came from outside
    /// (a Spot reclaim, a `StopTask` not ours), the job was cut short. The agent drained it
    /// and, if it still ran, cancelled it through the runner, so GitHub reports it cancelled;
    /// this makes it seen here too, never only in GitHub's run log.
    async fn report_interruption(&mut self, runner_name: &str, task_id: &str) {
        let Some(details) = self.backend.stop_details(task_id).await else {
            return;
        };
        let Some(cause) = details.interruption() else {
            return;
        };
        tracing::warn!(
            pool = %self.pool.name, runner = %runner_name, task = %task_id, cause = cause.as_str(),
            stop_code = details.code.as_deref().unwrap_or(""),
            stopped_reason = details.reason.as_deref().unwrap_or(""),
            "a running job's task was stopped from outside: the agent drained the job and cancelled it if it had not finished, so GitHub reports it cancelled (re-run it, or keep long jobs off Spot)"
        );
        self.report.interrupted_total += 1;
        self.emit(PoolEvent::JobInterrupted {
            runner_name: runner_name.to_string(),
            cause,
        });
    }

    fn drain_stream(&mut self) {
        let Some(stream) = self.stream.as_mut() else {
            return;
        };
        let pool = &self.pool;
        while let Ok(item) = stream.try_recv() {
            self.ledger.apply(&item, |name| pool.owns_runner_name(name));
        }
    }

    /// Reads the REST runner list into the ledger.
    async fn list_runners(&mut self, reason: ListingReason) -> Result<(), String> {
        let asked_at = Utc::now();
        let runners = self
            .github
            .runners()
            .await
            .map_err(|e| format!("listing the pool's runners on GitHub: {e}"))?;
        self.listings += 1;
        let runners: Vec<ObservedRunner> = runners
            .into_iter()
            .filter(|r| self.pool.owns_runner_name(&r.name))
            .collect();
        tracing::debug!(pool = %self.pool.name, reason = reason.as_str(), runners = runners.len(), "runner list read");
        // Events that came while the list was read are older than its answer.
        self.drain_stream();
        self.ledger.listed(&runners, asked_at, Utc::now());
        Ok(())
    }

    /// The dropped and the retired registrations among the pool's tasks, recent tasks and
    /// launches.
    fn ledger_released(&self, tasks: &[Task]) -> (BTreeSet<u64>, BTreeSet<u64>) {
        let ids: BTreeSet<u64> = tasks
            .iter()
            .map(|t| t.tags.runner_id)
            .chain(self.memory.in_flight.values().map(|f| f.runner_id))
            // Tasks the last pass saw live, which may be gone from this listing.
            .chain(self.memory.task_runner.values().copied())
            .collect();
        (
            ids.intersection(self.ledger.dropped()).copied().collect(),
            ids.intersection(self.ledger.retired()).copied().collect(),
        )
    }

    /// The ledger holds only this pool's runners: listings are filtered before it sees them,
    /// the stream's events are checked against the pool's names, and launches are its own.
    fn ledger_runners(&self) -> Vec<ObservedRunner> {
        self.ledger.view()
    }

    /// When the registrations of the pool's tasks and launches were known gone (only those:
    /// the ledger remembers many more).
    fn ledger_gone_at(&self, tasks: &[Task]) -> std::collections::BTreeMap<u64, DateTime<Utc>> {
        let gone = self.ledger.gone_at();
        tasks
            .iter()
            .map(|t| t.tags.runner_id)
            .chain(self.memory.in_flight.values().map(|f| f.runner_id))
            .filter_map(|id| gone.get(&id).map(|at| (id, *at)))
            .collect()
    }

    async fn act(&mut self, action: Action, now: DateTime<Utc>) {
        match action {
            Action::Launch { count } => self.launch(count, now).await,
            Action::Retire {
                runner_id,
                runner_name,
                task_id,
                reason,
            } => match self.github.remove_runner(runner_id).await {
                Ok(AgentRemoval::StillRunning) => tracing::info!(
                    pool = %self.pool.name, runner = %runner_name, reason = reason.as_str(),
                    "left alone: GitHub says a job is running on it"
                ),
                Ok(removal) => {
                    self.ledger.removed(runner_id, now);
                    tracing::info!(
                        pool = %self.pool.name, runner = %runner_name, runner_id,
                        task = task_id.as_deref().unwrap_or("-"), reason = reason.as_str(),
                        registration = ?removal, "runner retired"
                    );
                    if let Some(task) = &task_id
                        && let Err(e) = self.backend.stop(task, reason.as_str()).await
                    {
                        tracing::warn!(pool = %self.pool.name, task = %task, error = %e, "stopping the task failed; the next pass retries");
                    }
                    self.report.retired_total += 1;
                    self.emit(PoolEvent::Removed {
                        runner_name: Some(runner_name),
                        reason,
                    });
                }
                Err(e) => tracing::warn!(
                    pool = %self.pool.name, runner = %runner_name, reason = reason.as_str(), error = %e,
                    "removing the registration failed; the task keeps running and the next pass retries"
                ),
            },
            Action::StopTask { task_id, reason } => {
                match self.backend.stop(&task_id, reason.as_str()).await {
                    Ok(()) => {
                        tracing::info!(pool = %self.pool.name, task = %task_id, reason = reason.as_str(), "task stopped");
                        self.report.retired_total += 1;
                        self.emit(PoolEvent::Removed {
                            runner_name: None,
                            reason,
                        });
                    }
                    Err(e) => {
                        tracing::warn!(pool = %self.pool.name, task = %task_id, error = %e, "stopping the task failed")
                    }
                }
            }
            Action::DeleteHandoff { name, reason } => {
                match self.backend.delete_handoff(&name).await {
                    Ok(()) => {
                        tracing::info!(pool = %self.pool.name, secret = %name, reason = reason.as_str(), "leftover one-shot secret deleted");
                        self.emit(PoolEvent::Removed {
                            runner_name: None,
                            reason,
                        });
                    }
                    Err(e) => {
                        tracing::warn!(pool = %self.pool.name, secret = %name, error = %e, "deleting a one-shot secret failed")
                    }
                }
            }
        }
    }

    async fn launch(&mut self, count: u32, now: DateTime<Utc>) {
        let mut set = tokio::task::JoinSet::new();
        let gate = Arc::new(tokio::sync::Semaphore::new(
            self.settings.launch_concurrency.max(1),
        ));
        let stop = CancellationToken::new();
        for _ in 0..count {
            let (github, backend, gate, stop) = (
                self.github.clone(),
                self.backend.clone(),
                gate.clone(),
                stop.clone(),
            );
            let pool = self.pool.clone();
            let creations = self.creations.clone();
            set.spawn(async move {
                let _permit = gate.acquire_owned().await.ok()?;
                // After the backend or GitHub's secondary limit says no, the launches still
                // waiting do not try.
                if stop.is_cancelled() {
                    return None;
                }
                let outcome = launch_one(&pool, &*github, &*backend, creations.as_deref()).await;
                if matches!(
                    outcome,
                    Err(LaunchError::Backend(_) | LaunchError::Limited(_))
                ) {
                    stop.cancel();
                }
                Some(outcome)
            });
        }
        let mut first_backend_error = None;
        let mut succeeded = false;
        let failure_before = self.report.launch_failure.take();
        while let Some(joined) = set.join_next().await {
            let Ok(Some(outcome)) = joined else { continue };
            match outcome {
                Ok(task) => {
                    self.report.launched_total += 1;
                    succeeded = true;
                    // Refused for capacity on earlier providers, started on a later one: each
                    // refusal counts as a capacity failure, and the move as a fallback.
                    for refusal in &task.launch_fallbacks {
                        tracing::info!(pool = %self.pool.name, runner = %task.tags.runner_name, refused = %refusal, "launched on a fallback capacity provider");
                        self.emit(PoolEvent::LaunchFailed {
                            reason: LaunchFailureKind::Capacity,
                        });
                        self.emit(PoolEvent::FellBack);
                        self.report.fallbacks_total += 1;
                    }
                    self.ledger
                        .launched(task.tags.runner_id, &task.tags.runner_name, now);
                    // Counted as capacity until a listing shows it (see `plan::InFlight`).
                    self.memory.in_flight.insert(
                        task.id.clone(),
                        InFlight {
                            runner_id: task.tags.runner_id,
                            runner_name: task.tags.runner_name.clone(),
                            launched_at: now,
                            registration_seen: false,
                            finished_seen: None,
                        },
                    );
                    self.emit(PoolEvent::Launched {
                        runner_name: task.tags.runner_name,
                    });
                }
                Err(LaunchError::GitHub(message)) => {
                    tracing::warn!(pool = %self.pool.name, error = %message, "creating a runner registration failed; the next pass retries");
                    // GitHub did not answer usefully after its retries: unavailable, for metrics.
                    self.note_launch_failure(
                        "github",
                        LaunchFailureKind::Unavailable,
                        message,
                        now,
                    );
                }
                Err(LaunchError::Limited(wait)) => {
                    tracing::warn!(pool = %self.pool.name, retry_in_ms = wait.as_millis() as u64, "GitHub's secondary rate limit refused a runner creation; holding launches and slowing down");
                    self.note_launch_failure(
                        "secondary_limit",
                        LaunchFailureKind::SecondaryLimit,
                        format!("GitHub's secondary rate limit refused a runner creation; retrying after {wait:?}"),
                        now,
                    );
                    let until = now + chrono::Duration::from_std(wait).unwrap_or_default();
                    let later = self
                        .memory
                        .launch_blocked
                        .as_ref()
                        .is_some_and(|(held, _)| *held >= until);
                    if !later {
                        self.memory.launch_blocked = Some((until, HELD_REASON.to_string()));
                    }
                }
                Err(LaunchError::Backend(error)) => {
                    self.note_launch_failure(
                        error.reason(),
                        LaunchFailureKind::from(&error),
                        error.to_string(),
                        now,
                    );
                    first_backend_error.get_or_insert(error);
                }
            }
        }
        // A pass with any failure reports it; one where every launch worked clears the last.
        if self.report.launch_failure.is_none() && !succeeded {
            self.report.launch_failure = failure_before;
        }
        if succeeded && first_backend_error.is_none() {
            self.consecutive_launch_failures = 0;
        }
        if let Some(error) = first_backend_error {
            self.consecutive_launch_failures += 1;
            let wait = launch_backoff(
                &error,
                self.consecutive_launch_failures,
                rand::random::<f64>(),
            );
            let until = now + chrono::Duration::from_std(wait).unwrap_or_default();
            tracing::warn!(
                pool = %self.pool.name, reason = error.reason(), error = %error,
                retry_in_ms = wait.as_millis() as u64, "the backend cannot launch runners; holding launches"
            );
            self.memory.launch_blocked = Some((until, format!("cannot launch: {error}")));
        }
    }

    fn note_launch_failure(
        &mut self,
        reason: &'static str,
        kind: LaunchFailureKind,
        message: String,
        now: DateTime<Utc>,
    ) {
        self.report.launch_failure = Some(LaunchFailure {
            reason: reason.to_string(),
            message,
            at: now,
        });
        self.emit(PoolEvent::LaunchFailed { reason: kind });
    }
}

enum LaunchError {
    GitHub(String),
    /// GitHub's secondary limit refused the creation; retry after this long.
    Limited(Duration),
    Backend(BackendError),
}

/// One runner: a registration with its JIT configuration, then a task. A task that cannot start
/// takes its registration with it.
async fn launch_one<G: PoolGitHub, B: Backend>(
    pool: &PoolConfig,
    github: &G,
    backend: &B,
    creations: Option<&CreationPace>,
) -> Result<Task, LaunchError> {
    // Minted only once the backend can hand it over soon (SSM's write pace, for ECS); the slot
    // is held until the launch call returns.
    let _slot = backend.ready_to_launch().await;
    let mut attempts = 0;
    let runner = loop {
        attempts += 1;
        if let Some(pace) = creations {
            pace.take().await;
        }
        match github.create_runner(&runner_name(pool)).await {
            Ok(runner) => break runner,
            Err(CreateError::NameInUse(_)) if attempts < 3 => continue,
            Err(CreateError::Limited(wait)) => {
                if let Some(pace) = creations {
                    pace.refused(wait);
                }
                return Err(LaunchError::Limited(wait));
            }
            Err(e) => return Err(LaunchError::GitHub(e.to_string())),
        }
    };
    let tags = TaskTags {
        pool: pool.name.clone(),
        runner_name: runner.name.clone(),
        runner_id: runner.id,
    };
    match backend
        .launch(LaunchRequest {
            tags,
            jit_config: runner.jit_config,
        })
        .await
    {
        Ok(task) => {
            tracing::info!(pool = %pool.name, runner = %runner.name, runner_id = runner.id, task = %task.id, "runner launched");
            Ok(task)
        }
        Err(error) => {
            if let Err(e) = github.remove_runner(runner.id).await {
                // The reaper removes it as a ghost after the grace period.
                tracing::warn!(pool = %pool.name, runner = %runner.name, error = %e, "could not remove the registration of a failed launch");
            }
            Err(LaunchError::Backend(error))
        }
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod sim_tests;

#[cfg(test)]
mod stream_tests;

#[cfg(test)]
mod interruption_tests;

#[cfg(test)]
mod creation_pace_tests;
