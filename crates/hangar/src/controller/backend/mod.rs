//! Where runners run: the narrow interface the controller needs from a compute backend, defined
//! by its caller. A backend launches one task per runner (handing it the runner's JIT
//! configuration through a one-shot secret that the task reads and deletes), lists its tasks by
//! pool, stops a task, and lists and deletes leftover one-shot secrets. Three implementations:
//! [`ecs`] (RunTask and a one-shot SSM SecureString), [`local`] (a `hangar agent` process with a
//! one-shot file, for `hangar dev` and tests) and [`fake`] (in memory, for unit tests).
//!
//! Invariants:
//! - A JIT configuration reaches the task only through the one-shot secret; the task is given
//!   the secret's name, never its value (no value in RunTask overrides, argv or environment).
//! - Every task carries its pool, runner name and runner id ([`TaskTags`]), so the controller can
//!   rebuild everything it needs after a restart from the backend alone.
//! - Every call is idempotent from the controller's point of view: stopping a stopped or unknown
//!   task and deleting a missing secret succeed.
//! - If a launch fails after its secret was written, the backend deletes the secret before it
//!   returns the error.

pub mod ecs;
pub mod fake;
pub mod local;

use std::future::Future;
use std::time::Duration;

use chrono::{DateTime, Utc};
use secrecy::SecretString;
use serde::Serialize;

/// The tag keys every task carries (ECS tags; the local backend keeps the same names).
pub const TAG_POOL: &str = "hangar:pool";
pub const TAG_RUNNER_NAME: &str = "hangar:runner-name";
pub const TAG_RUNNER_ID: &str = "hangar:runner-id";

/// What identifies a task's runner.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct TaskTags {
    pub pool: String,
    pub runner_name: String,
    pub runner_id: u64,
}

/// One runner to start.
pub struct LaunchRequest {
    pub tags: TaskTags,
    /// The runner's encoded JIT configuration (from the scale set's `generatejitconfig`).
    pub jit_config: SecretString,
}

/// Where a task is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskState {
    /// Accepted but not yet running (ECS PROVISIONING, PENDING, ACTIVATING; a local process that
    /// has not started).
    Pending,
    Running,
    /// Asked to stop, not yet stopped (ECS DEACTIVATING, STOPPING, DEPROVISIONING).
    Stopping,
    Stopped,
}

/// A task as the backend reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Task {
    /// The backend's id for the task (the ECS task ARN; `local-<n>` for a local process).
    pub id: String,
    pub tags: TaskTags,
    pub state: TaskState,
    /// When the backend accepted the task (ECS `createdAt`).
    pub created_at: DateTime<Utc>,
    /// Why a stopped task stopped (ECS `stoppedReason`, or the process's exit status).
    pub stop_reason: Option<String>,
    /// The capacity provider the task runs on (ECS `capacityProviderName`), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub capacity_provider: Option<String>,
    /// On the launch that started it: the capacity refusals of the providers tried before
    /// this one (`provider: what ECS said`). Empty in listings.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub launch_fallbacks: Vec<String>,
    /// The task's life as the backend dates it (what its bill is made from).
    pub times: TaskTimes,
    /// Where the task's runner logs, when the backend knows (ECS: the awslogs group and stream).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log: Option<LogLocation>,
}

/// A task's timestamps (ECS `pullStartedAt`, `pullStoppedAt`, `startedAt`, `stoppedAt`); each
/// is unknown until it happened, and some backends never say (a local process has no pull).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct TaskTimes {
    #[serde(default)]
    pub pull_started_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub pull_stopped_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub started_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub stopped_at: Option<DateTime<Utc>>,
}

impl TaskTimes {
    /// Takes what `newer` says, keeping what it does not (a later answer may say less).
    pub fn merge(&mut self, newer: &TaskTimes) {
        self.pull_started_at = newer.pull_started_at.or(self.pull_started_at);
        self.pull_stopped_at = newer.pull_stopped_at.or(self.pull_stopped_at);
        self.started_at = newer.started_at.or(self.started_at);
        self.stopped_at = newer.stopped_at.or(self.stopped_at);
    }
}

pub use crate::aws::task_logs::LogLocation;

/// How a task stopped, as the backend says (ECS `stopCode` and `stoppedReason`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StopDetails {
    pub code: Option<String>,
    pub reason: Option<String>,
}

/// What cut a running job short from outside its runner.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Interruption {
    /// ECS reclaimed Fargate Spot (or Spot instance) capacity (`SpotInterruption`).
    Spot,
    /// Something else stopped the task (a person or another controller's `StopTask`, a
    /// deployment, a host terminated, the task failing).
    Stopped,
}

impl Interruption {
    pub const ALL: [Interruption; 2] = [Interruption::Spot, Interruption::Stopped];

    pub fn as_str(self) -> &'static str {
        match self {
            Interruption::Spot => "spot",
            Interruption::Stopped => "stopped",
        }
    }
}

impl StopDetails {
    /// Whether the stop came from outside the runner: an ephemeral runner's task ends on its
    /// own when its job is done (`EssentialContainerExited`), which is no interruption;
    /// unknown details are none either.
    pub fn interruption(&self) -> Option<Interruption> {
        let code = self.code.as_deref().unwrap_or_default();
        let reason = self.reason.as_deref().unwrap_or_default();
        if code == "SpotInterruption" || reason.contains("Spot Task was interrupted") {
            return Some(Interruption::Spot);
        }
        match code {
            "" | "EssentialContainerExited" => None,
            _ => Some(Interruption::Stopped),
        }
    }
}

/// A one-shot secret that is still there (the task has not read it yet, or never will).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Handoff {
    /// The secret's name (the SSM parameter name, or the file path).
    pub name: String,
    pub pool: String,
    pub runner_name: String,
    pub created_at: DateTime<Utc>,
}

/// Why a backend call failed, sorted by what the controller should do about it.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum BackendError {
    /// No capacity right now (ECS: RESOURCE:*, capacity provider, Fargate capacity): retry this
    /// pool's launches later, with backoff.
    #[error("no capacity to launch a runner: {0}")]
    Capacity(String),
    /// The backend throttled us (ECS ThrottlingException, SSM TooManyUpdates/throttling): retry
    /// later, with backoff.
    #[error("throttled: {0}")]
    Throttled(String),
    /// The pool's launch settings are wrong (no such cluster, task definition, container, subnet;
    /// access denied). Retrying will not help until the configuration changes; the message names
    /// the fix.
    #[error("{0}")]
    Config(String),
    /// A transient failure (network, 5xx): retry on the next pass.
    #[error("backend unavailable: {0}")]
    Unavailable(String),
}

impl BackendError {
    /// A short, stable label for metrics (`reason` label of launch failures).
    pub fn reason(&self) -> &'static str {
        match self {
            BackendError::Capacity(_) => "capacity",
            BackendError::Throttled(_) => "throttled",
            BackendError::Config(_) => "config",
            BackendError::Unavailable(_) => "unavailable",
        }
    }
}

impl From<&BackendError> for super::metrics::LaunchFailure {
    fn from(error: &BackendError) -> Self {
        use super::metrics::LaunchFailure;
        match error {
            BackendError::Capacity(_) => LaunchFailure::Capacity,
            BackendError::Throttled(_) => LaunchFailure::Throttled,
            BackendError::Config(_) => LaunchFailure::Config,
            BackendError::Unavailable(_) => LaunchFailure::Unavailable,
        }
    }
}

/// Held by a launch from [`Backend::ready_to_launch`] until its [`Backend::launch`] returns.
#[must_use = "the slot is the launch's place in the hand-over queue until dropped"]
#[derive(Debug)]
pub struct LaunchSlot {
    _permit: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl LaunchSlot {
    /// No queue to wait in.
    pub fn free() -> LaunchSlot {
        LaunchSlot { _permit: None }
    }

    pub fn held(permit: tokio::sync::OwnedSemaphorePermit) -> LaunchSlot {
        LaunchSlot {
            _permit: Some(permit),
        }
    }
}

/// A compute backend for one pool's runners. One value serves one pool's launch settings.
pub trait Backend: Send + Sync + 'static {
    /// `ecs`, `local` or `fake`, for logs and status.
    fn kind(&self) -> &'static str;

    /// Waits until a launch could hand its JIT configuration over at once, and reserves that
    /// hand-over: the reconciler mints the configuration only after this returns, so no JIT
    /// configuration is minted faster than the backend can hand it over (and none ages, minted,
    /// in a queue). Backends without a hand-over quota return at once.
    fn ready_to_launch(&self) -> impl Future<Output = LaunchSlot> + Send {
        async { LaunchSlot::free() }
    }

    /// Writes the one-shot secret, then starts one task for the runner, tagged with `tags`.
    /// On failure after the secret was written, the secret is deleted before returning.
    fn launch(
        &self,
        request: LaunchRequest,
    ) -> impl Future<Output = Result<Task, BackendError>> + Send;

    /// Every task of `pool` the backend still knows, including recently stopped ones.
    fn list(&self, pool: &str) -> impl Future<Output = Result<Vec<Task>, BackendError>> + Send;

    /// Stops a task; `reason` is recorded where the backend can (ECS `reason`, max 255 chars).
    /// Stopping an already stopped or unknown task succeeds.
    fn stop(
        &self,
        task_id: &str,
        reason: &str,
    ) -> impl Future<Output = Result<(), BackendError>> + Send;

    /// The one-shot secrets of `pool` that still exist.
    fn list_handoffs(
        &self,
        pool: &str,
    ) -> impl Future<Output = Result<Vec<Handoff>, BackendError>> + Send;

    /// Deletes a one-shot secret; a missing one is not an error.
    fn delete_handoff(&self, name: &str) -> impl Future<Output = Result<(), BackendError>> + Send;

    /// How a task stopped, if the backend can say (for reporting a job its task's stop cut
    /// short). `None`: unknown, or the backend does not tell.
    fn stop_details(&self, _task_id: &str) -> impl Future<Output = Option<StopDetails>> + Send {
        async { None }
    }

    /// The tasks of `task_ids` (gone from [`Backend::list`]) as the backend last knew them,
    /// with their stop time, for their bill; those it no longer knows are absent. Backends whose
    /// listing keeps stopped tasks need not answer.
    fn describe_gone(&self, _task_ids: &[String]) -> impl Future<Output = Vec<Task>> + Send {
        async { Vec::new() }
    }
}

/// How long ECS keeps stopped tasks listable; the controller forgets stopped tasks older than
/// this itself, so backends need not filter them.
pub const STOPPED_TASK_MEMORY: Duration = Duration::from_secs(3600);
