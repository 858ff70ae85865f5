//! GitHub's runner scale-set service (the Actions service behind `actions/scaleset`): the
//! outbound-only protocol that tells an autoscaler how many jobs wait for its runners. An
//! [`ActionsService`] is bound to one [`GitHub`] client and one [`Scope`]; it trades a
//! registration token for an admin token and the service's URL (`POST
//! {api}/actions/runner-registration`), then manages scale sets, message sessions, the long-poll
//! queue, job acquisition, JIT runner configurations and runner registrations.
//!
//! Invariants:
//! - The admin token and the session's queue token are [`SecretString`]s: they travel only in
//!   the `Authorization` header (admin token to the service URL GitHub returned, queue token to
//!   the session's queue URL) and never appear in logs, `Debug` output or errors. The PAT or
//!   installation token never goes to the Actions service: it only mints the registration token.
//! - One admin token per service (shared by clones), refreshed under a lock when it has less than
//!   a minute left, or once after a 401.
//! - Every request goes through one retry loop governed by [`RetryPolicy`]: connection errors,
//!   429 and 5xx other than 501 are retried within a bounded total time; other answers are final
//!   and become a typed [`ScaleSetError`] that names the cause and the fix.
//! - Every request sent is counted (here and in [`GitHub::calls_made`]).
//! - Parsing a message never fails on an unknown job message type or a missing field: unknown
//!   types are kept as [`JobMessage::Other`]; only a body that is not a JSON array is refused, as
//!   [`ScaleSetError::BadMessage`] carrying the message id so the caller can acknowledge it.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use base64::Engine;
use chrono::{DateTime, Utc};
use reqwest::header::HeaderValue;
use reqwest::{Method, StatusCode, Url};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Deserializer, Serialize};

use super::retry::{GiveUp, Observed, RetryPolicy};
use super::{
    Answer, Ending, GitHub, GitHubError, Scope, authorization, describe_transport_error, observe,
    wait_to_retry,
};

/// The `api-version` every Actions-service call carries.
pub const API_VERSION: &str = "6.0-preview";
/// The id of the Default runner group, in every organization and repository.
pub const DEFAULT_RUNNER_GROUP_ID: u64 = 1;
/// The long-poll header that tells the service how many runners the scale set may have.
pub const MAX_CAPACITY_HEADER: &str = "X-ScaleSetMaxCapacity";
/// The only outer message type that carries job messages.
pub const JOB_MESSAGES_TYPE: &str = "RunnerScaleSetJobMessages";

const SCALE_SETS: &str = "_apis/runtime/runnerscalesets";
const AGENTS: &str = "_apis/distributedtask/pools/0/agents";
const NIL_SESSION_ID: &str = "00000000-0000-0000-0000-000000000000";

// ----- configuration ---------------------------------------------------------------------

/// How patiently to talk to the Actions service.
#[derive(Clone, Debug)]
pub struct ServiceConfig {
    /// Retries of one request. The default waits between 1 s and 30 s, honours `Retry-After`,
    /// and gives up after two minutes in all.
    pub retry: RetryPolicy,
    /// Limit on one long poll; the service answers 202 after about 50 s.
    pub poll_timeout: Duration,
    /// The admin token is renewed once it has less than this left.
    pub admin_refresh_margin: Duration,
    /// How long an admin token whose expiry cannot be read is used before it is renewed.
    pub admin_fallback_lifetime: Duration,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        ServiceConfig {
            retry: RetryPolicy {
                max_attempts: 8,
                // Equal jitter: the first wait is 1..2 s, every wait stays under 30 s.
                base_delay: Duration::from_secs(2),
                max_delay: Duration::from_secs(30),
                budget: Duration::from_secs(120),
                secondary_limit_wait: Duration::from_secs(60),
            },
            poll_timeout: Duration::from_secs(90),
            admin_refresh_margin: Duration::from_secs(60),
            admin_fallback_lifetime: Duration::from_secs(10 * 60),
        }
    }
}

impl ServiceConfig {
    /// For tests: tiny retry delays.
    pub fn fast() -> Self {
        ServiceConfig {
            retry: RetryPolicy::fast(),
            poll_timeout: Duration::from_secs(30),
            ..ServiceConfig::default()
        }
    }
}

// ----- errors ------------------------------------------------------------------------------

/// Which token the Actions service refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServiceToken {
    /// The registration token exchanged at `actions/runner-registration`.
    Registration,
    /// The admin token for scale sets, sessions, JIT configs and runners.
    Admin,
    /// A message session's queue token (long poll, acknowledge, acquire).
    Queue,
}

impl fmt::Display for ServiceToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ServiceToken::Registration => "registration token",
            ServiceToken::Admin => "admin token",
            ServiceToken::Queue => "message queue token",
        })
    }
}

fn unauthorized_fix(token: ServiceToken) -> &'static str {
    match token {
        ServiceToken::Registration | ServiceToken::Admin => {
            "Fix: Hangar already fetched a fresh token once; check that the credential may administer \
             self-hosted runners of this scope (`hangar doctor`) and that this machine's clock is right"
        }
        ServiceToken::Queue => {
            "Fix: none needed: the session was refreshed once and is still refused, so it has ended \
             (deleted, expired, or its scale set removed); open a new session"
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ScaleSetError {
    /// Minting the registration token or listing runner groups failed (REST API).
    #[error(transparent)]
    GitHub(#[from] GitHubError),

    #[error("the Actions service rejected the {token} while {action} (401: {message}). {}", unauthorized_fix(*token))]
    Unauthorized {
        token: ServiceToken,
        action: String,
        message: String,
    },

    #[error(
        "the Actions service refused {action} (403: {message}). Fix: the PAT needs `repo` (repository pools) or \
         `admin:org` (organization pools); the App needs Administration (repository) or Self-hosted runners \
         (organization) read and write; check with `hangar doctor`"
    )]
    Forbidden { action: String, message: String },

    #[error(
        "runner scale set {id} no longer exists on GitHub (deleted server-side or in the settings page) while {action}. \
         Fix: create it again by name (the controller's listener does this on its own)"
    )]
    ScaleSetNotFound { id: u64, action: String },

    #[error(
        "another message session is live for runner scale set {scale_set_id} ({message}): another controller, or a \
         previous run of this one that did not shut down, is listening. Fix: stop the other controller; an abandoned \
         session expires on its own, and Hangar keeps retrying until then"
    )]
    SessionConflict { scale_set_id: u64, message: String },

    #[error(
        "a runner named {name:?} already exists in runner scale set {scale_set_id}. Fix: use a new runner name, or \
         delete the old registration first"
    )]
    AgentExists { scale_set_id: u64, name: String },

    #[error("runner {agent} is not registered (it was removed already) while {action}")]
    AgentNotFound { agent: String, action: String },

    #[error(
        "runner {agent_id} is running a job, so GitHub refused to remove its registration. Fix: none: leave the \
         runner alone and remove it after its job completes"
    )]
    JobStillRunning { agent_id: u64 },

    #[error(
        "the Actions service's rate limit stopped {action}: it asked to wait {wait:?}, more than the retry budget \
         allows. Fix: lower the number of pools or max runners, or try again later"
    )]
    RateLimited { action: String, wait: Duration },

    #[error(
        "the Actions service kept failing while {action}: status {status} after {attempts} attempts. GitHub may \
         be degraded (https://www.githubstatus.com); Hangar tries again later"
    )]
    ServerError {
        action: String,
        status: u16,
        attempts: u32,
    },

    #[error(
        "could not reach {host} while {action} ({attempts} attempts): {cause}. Fix: allow outbound HTTPS to \
         GitHub's Actions service hosts (*.actions.githubusercontent.com) through proxies, security groups and NAT"
    )]
    Unreachable {
        action: String,
        host: String,
        attempts: u32,
        cause: String,
    },

    #[error("nothing was found while {action} (404 {type_name}: {message})")]
    NotFound {
        action: String,
        type_name: String,
        message: String,
    },

    #[error("the Actions service rejected {action} ({status} {type_name}: {message})")]
    Rejected {
        action: String,
        status: u16,
        type_name: String,
        message: String,
    },

    #[error(
        "the Actions service's answer to {action} could not be read ({cause}); is GITHUB_API_URL a GitHub API?"
    )]
    BadResponse { action: String, cause: String },

    #[error(
        "message {message_id} from the scale-set queue could not be read ({cause}). Fix: none needed: acknowledge \
         it and keep polling; the statistics of the next message still drive scaling"
    )]
    BadMessage { message_id: u64, cause: String },

    #[error(
        "runner group {name:?} does not exist in {scope} (known: {}). Fix: correct the pool's runner_group, or \
         create the group in the organization's settings (Actions -> Runner groups)",
        if known.is_empty() { "none".to_string() } else { known.join(", ") }
    )]
    RunnerGroupNotFound {
        name: String,
        scope: Scope,
        known: Vec<String>,
    },

    #[error(
        "runner group {name:?} was asked for in {scope}, but repositories only have the Default group. Fix: remove \
         runner_group from the pool, or make it an organization pool"
    )]
    RunnerGroupNeedsOrg { name: String, scope: Scope },
}

impl ScaleSetError {
    /// Worth trying again later without changing anything (network, GitHub trouble, limits).
    pub fn is_transient(&self) -> bool {
        match self {
            ScaleSetError::RateLimited { .. }
            | ScaleSetError::ServerError { .. }
            | ScaleSetError::Unreachable { .. } => true,
            ScaleSetError::GitHub(e) => matches!(
                e,
                GitHubError::RateLimited { .. }
                    | GitHubError::ServerError { .. }
                    | GitHubError::Unreachable { .. }
            ),
            _ => false,
        }
    }
}

// ----- wire shapes -------------------------------------------------------------------------

/// The seven counters the service reports with sessions and messages.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Statistics {
    pub total_available_jobs: u64,
    pub total_acquired_jobs: u64,
    pub total_assigned_jobs: u64,
    pub total_running_jobs: u64,
    pub total_registered_runners: u64,
    pub total_busy_runners: u64,
    pub total_idle_runners: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScaleSetLabel {
    pub name: String,
    #[serde(rename = "type", default, deserialize_with = "null_default")]
    pub kind: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct RunnerSetting {
    pub ephemeral: bool,
    pub is_elastic: bool,
    pub disable_update: bool,
}

/// A runner scale set as the service describes it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScaleSet {
    pub id: u64,
    pub name: String,
    #[serde(default)]
    pub runner_group_id: u64,
    #[serde(default)]
    pub runner_group_name: Option<String>,
    #[serde(default, deserialize_with = "null_default")]
    pub labels: Vec<ScaleSetLabel>,
    #[serde(
        rename = "RunnerSetting",
        alias = "runnerSetting",
        default,
        deserialize_with = "null_default"
    )]
    pub runner_setting: RunnerSetting,
    #[serde(default)]
    pub statistics: Option<Statistics>,
}

/// What a pool wants its scale set to be.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScaleSetSpec {
    pub name: String,
    pub runner_group_id: u64,
    pub labels: Vec<String>,
    pub disable_update: bool,
}

impl ScaleSetSpec {
    fn body(&self) -> serde_json::Value {
        serde_json::json!({
            "name": self.name,
            "runnerGroupId": self.runner_group_id,
            "labels": self.labels.iter()
                .map(|l| serde_json::json!({"name": l, "type": "System"}))
                .collect::<Vec<_>>(),
            "RunnerSetting": {"disableUpdate": self.disable_update},
        })
    }

    /// Whether `existing` already has this spec's labels (as a set, case-insensitively, as
    /// GitHub matches them) and settings. No labels means the scale set's name is its label, as
    /// the service makes it.
    pub fn matches(&self, existing: &ScaleSet) -> bool {
        let normalise = |labels: &mut Vec<String>| {
            labels.iter_mut().for_each(|l| *l = l.trim().to_lowercase());
            labels.sort();
            labels.dedup();
        };
        let mut wanted = if self.labels.is_empty() {
            vec![self.name.clone()]
        } else {
            self.labels.clone()
        };
        let mut have: Vec<String> = existing.labels.iter().map(|l| l.name.clone()).collect();
        normalise(&mut wanted);
        normalise(&mut have);
        wanted == have && existing.runner_setting.disable_update == self.disable_update
    }
}

/// What [`ActionsService::ensure_scale_set`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EnsureOutcome {
    Created,
    /// Found by name and already as wanted.
    Adopted,
    /// Found by name; labels or settings were changed.
    Updated,
}

/// A live message session. Holds the queue token, which no `Debug` output shows.
#[derive(Debug)]
pub struct Session {
    pub id: String,
    pub owner_name: String,
    pub scale_set_id: u64,
    pub queue_url: Url,
    queue_token: SecretString,
    /// As of the session's creation or latest refresh.
    pub statistics: Option<Statistics>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SessionWire {
    session_id: String,
    #[serde(default)]
    owner_name: Option<String>,
    message_queue_url: String,
    message_queue_access_token: SecretString,
    #[serde(default)]
    statistics: Option<Statistics>,
}

/// One message from the queue: the latest statistics and the job messages in its body.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Message {
    pub id: u64,
    pub message_type: String,
    pub statistics: Option<Statistics>,
    pub jobs: Vec<JobMessage>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct MessageWire {
    message_id: u64,
    #[serde(default, deserialize_with = "null_default")]
    message_type: String,
    #[serde(default, deserialize_with = "null_default")]
    body: String,
    #[serde(default)]
    statistics: Option<Statistics>,
}

/// What every job message says about its job. Times are the service's own; a Go zero time
/// (`0001-01-01T00:00:00Z`) or an absent one is `None`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct JobInfo {
    #[serde(deserialize_with = "null_default")]
    pub runner_request_id: u64,
    #[serde(deserialize_with = "null_default")]
    pub repository_name: String,
    #[serde(deserialize_with = "null_default")]
    pub owner_name: String,
    #[serde(deserialize_with = "string_or_number")]
    pub job_id: String,
    #[serde(deserialize_with = "null_default")]
    pub job_workflow_ref: String,
    #[serde(deserialize_with = "null_default")]
    pub job_display_name: String,
    #[serde(deserialize_with = "null_default")]
    pub workflow_run_id: u64,
    #[serde(deserialize_with = "null_default")]
    pub event_name: String,
    #[serde(deserialize_with = "null_default")]
    pub request_labels: Vec<String>,
    #[serde(deserialize_with = "service_time")]
    pub queue_time: Option<DateTime<Utc>>,
    #[serde(deserialize_with = "service_time")]
    pub scale_set_assign_time: Option<DateTime<Utc>>,
    #[serde(deserialize_with = "service_time")]
    pub runner_assign_time: Option<DateTime<Utc>>,
    #[serde(deserialize_with = "service_time")]
    pub finish_time: Option<DateTime<Utc>>,
}

/// One element of a message's body.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "messageType")]
pub enum JobMessage {
    JobAvailable {
        #[serde(flatten)]
        job: JobInfo,
        acquire_job_url: Option<String>,
    },
    JobAssigned {
        #[serde(flatten)]
        job: JobInfo,
    },
    JobStarted {
        #[serde(flatten)]
        job: JobInfo,
        runner_id: u64,
        runner_name: String,
    },
    JobCompleted {
        #[serde(flatten)]
        job: JobInfo,
        /// `succeeded`, `failed`, `canceled` (also when the job was reassigned), ...
        result: String,
        runner_id: Option<u64>,
        runner_name: Option<String>,
    },
    /// A type this version does not know, or a known one whose fields could not be read.
    Other { message_type: String },
}

impl JobMessage {
    pub fn job(&self) -> Option<&JobInfo> {
        match self {
            JobMessage::JobAvailable { job, .. }
            | JobMessage::JobAssigned { job }
            | JobMessage::JobStarted { job, .. }
            | JobMessage::JobCompleted { job, .. } => Some(job),
            JobMessage::Other { .. } => None,
        }
    }

    pub fn message_type(&self) -> &str {
        match self {
            JobMessage::JobAvailable { .. } => "JobAvailable",
            JobMessage::JobAssigned { .. } => "JobAssigned",
            JobMessage::JobStarted { .. } => "JobStarted",
            JobMessage::JobCompleted { .. } => "JobCompleted",
            JobMessage::Other { message_type } => message_type,
        }
    }
}

#[derive(Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct JobExtras {
    #[serde(deserialize_with = "null_default")]
    acquire_job_url: Option<String>,
    #[serde(deserialize_with = "null_default")]
    runner_id: Option<u64>,
    #[serde(deserialize_with = "null_default")]
    runner_name: Option<String>,
    #[serde(deserialize_with = "null_default")]
    result: Option<String>,
}

/// A runner created from the scale set: its id, name and one-shot configuration.
#[derive(Debug)]
pub struct JitRunner {
    pub id: u64,
    pub name: String,
    pub scale_set_id: Option<u64>,
    pub encoded: SecretString,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct JitWire {
    runner: AgentWire,
    #[serde(rename = "encodedJITConfig", alias = "encodedJitConfig")]
    encoded_jit_config: SecretString,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AgentWire {
    id: u64,
    name: String,
    #[serde(default)]
    runner_scale_set_id: Option<u64>,
}

/// A runner registration as the Actions service lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Agent {
    pub id: u64,
    pub name: String,
    #[serde(default)]
    pub runner_scale_set_id: Option<u64>,
    #[serde(default)]
    pub status: Option<String>,
}

/// The outcome of removing a runner's registration.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentRemoval {
    Removed,
    /// The service no longer knows the runner.
    NotFound,
    /// The runner is running a job (`JobStillRunningException`); it was left alone.
    StillRunning,
}

#[derive(Deserialize)]
struct List<T> {
    #[serde(default = "Option::default")]
    value: Option<Vec<T>>,
}

impl<T> List<T> {
    fn items(self) -> Vec<T> {
        self.value.unwrap_or_default()
    }
}

#[derive(Deserialize)]
struct RegistrationWire {
    url: String,
    token: SecretString,
}

fn null_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

fn string_or_number<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(match serde_json::Value::deserialize(d)? {
        serde_json::Value::String(s) => s,
        serde_json::Value::Null => String::new(),
        other => other.to_string(),
    })
}

/// A timestamp as the service writes it; unreadable, absent and Go zero times are `None`.
fn service_time<'de, D: Deserializer<'de>>(d: D) -> Result<Option<DateTime<Utc>>, D::Error> {
    let Some(text) = Option::<String>::deserialize(d)? else {
        return Ok(None);
    };
    Ok(DateTime::parse_from_rfc3339(&text)
        .ok()
        .map(|t| t.with_timezone(&Utc))
        .filter(|t| t.timestamp() > 0))
}

// ----- pure parsing ------------------------------------------------------------------------

fn trim_bom(body: &[u8]) -> &[u8] {
    body.strip_prefix(b"\xef\xbb\xbf").unwrap_or(body)
}

/// Nothing but a byte-order mark and white space.
fn is_blank(body: &[u8]) -> bool {
    trim_bom(body).iter().all(u8::is_ascii_whitespace)
}

/// Parses a 200 answer of the long poll. `Err(None)` when not even the message id can be read.
pub fn parse_message(body: &[u8]) -> Result<Message, (Option<u64>, String)> {
    let wire: MessageWire =
        serde_json::from_slice(trim_bom(body)).map_err(|e| (None, e.to_string()))?;
    let jobs = if wire.message_type == JOB_MESSAGES_TYPE {
        parse_job_messages(&wire.body).map_err(|cause| (Some(wire.message_id), cause))?
    } else {
        Vec::new()
    };
    Ok(Message {
        id: wire.message_id,
        message_type: wire.message_type,
        statistics: wire.statistics,
        jobs,
    })
}

/// Parses a message body: a JSON string holding an array of job messages.
pub fn parse_job_messages(body: &str) -> Result<Vec<JobMessage>, String> {
    if body.trim().is_empty() {
        return Ok(Vec::new());
    }
    let elements: Vec<serde_json::Value> = serde_json::from_str(body)
        .map_err(|e| format!("the body is not a JSON array of job messages: {e}"))?;
    Ok(elements.into_iter().map(parse_job_message).collect())
}

fn parse_job_message(value: serde_json::Value) -> JobMessage {
    let message_type = value
        .get("messageType")
        .and_then(|t| t.as_str())
        .unwrap_or("")
        .to_string();
    let parsed = serde_json::from_value::<JobInfo>(value.clone())
        .and_then(|job| Ok((job, serde_json::from_value::<JobExtras>(value)?)));
    let Ok((job, extras)) = parsed else {
        return JobMessage::Other { message_type };
    };
    match message_type.as_str() {
        "JobAvailable" => JobMessage::JobAvailable {
            job,
            acquire_job_url: extras.acquire_job_url,
        },
        "JobAssigned" => JobMessage::JobAssigned { job },
        "JobStarted" => JobMessage::JobStarted {
            job,
            runner_id: extras.runner_id.unwrap_or_default(),
            runner_name: extras.runner_name.unwrap_or_default(),
        },
        // A job no runner held says so with 0 and "" (or nulls).
        "JobCompleted" => JobMessage::JobCompleted {
            job,
            result: extras.result.unwrap_or_default(),
            runner_id: extras.runner_id.filter(|id| *id != 0),
            runner_name: extras.runner_name.filter(|name| !name.is_empty()),
        },
        _ => JobMessage::Other { message_type },
    }
}

/// The service's error body: `{"typeName": "...Exception, Assembly", "message": "..."}`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServiceException {
    /// The exception's short name, e.g. `TaskAgentSessionConflictException`.
    pub type_name: String,
    pub message: String,
}

impl ServiceException {
    pub fn parse(body: &[u8]) -> ServiceException {
        #[derive(Deserialize, Default)]
        #[serde(rename_all = "camelCase", default)]
        struct Wire {
            #[serde(deserialize_with = "null_default")]
            type_name: String,
            #[serde(deserialize_with = "null_default")]
            type_key: String,
            #[serde(deserialize_with = "null_default")]
            message: String,
        }
        let body = trim_bom(body);
        match serde_json::from_slice::<Wire>(body) {
            Ok(w) => {
                // Names come as "Namespace.SomeException, Assembly"; callers match the class.
                let full = if w.type_name.is_empty() {
                    w.type_key
                } else {
                    w.type_name
                };
                let class = full.split(',').next().unwrap_or("").trim();
                ServiceException {
                    type_name: class.rsplit('.').next().unwrap_or(class).to_string(),
                    message: bounded(&w.message),
                }
            }
            Err(_) => ServiceException {
                type_name: String::new(),
                message: bounded(&String::from_utf8_lossy(body)),
            },
        }
    }

    fn is(&self, name: &str) -> bool {
        self.type_name.contains(name)
    }
}

fn bounded(text: &str) -> String {
    let text = text.trim();
    if text.chars().count() > 300 {
        format!("{}...", text.chars().take(300).collect::<String>())
    } else {
        text.to_string()
    }
}

/// What a request was about, so a refusal can name it.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Subject {
    Registration,
    ScaleSets,
    ScaleSet(u64),
    Session(u64),
    Queue(u64),
    Jit { scale_set_id: u64, name: String },
    Agent(u64),
    AgentName(String),
}

impl Subject {
    fn token(&self) -> ServiceToken {
        match self {
            Subject::Registration => ServiceToken::Registration,
            Subject::Queue(_) => ServiceToken::Queue,
            _ => ServiceToken::Admin,
        }
    }

    fn scale_set_id(&self) -> Option<u64> {
        match self {
            Subject::ScaleSet(id) | Subject::Session(id) | Subject::Queue(id) => Some(*id),
            Subject::Jit { scale_set_id, .. } => Some(*scale_set_id),
            _ => None,
        }
    }
}

/// Turns a final non-success answer into the error the caller matches on. Pure.
fn classify(status: u16, body: &[u8], subject: &Subject, action: &str) -> ScaleSetError {
    let e = ServiceException::parse(body);
    let action = action.to_string();
    if e.is("JobStillRunning") {
        let agent_id = match subject {
            Subject::Agent(id) => *id,
            _ => 0,
        };
        return ScaleSetError::JobStillRunning { agent_id };
    }
    if e.is("AgentExists")
        && let Subject::Jit { scale_set_id, name } = subject
    {
        return ScaleSetError::AgentExists {
            scale_set_id: *scale_set_id,
            name: name.clone(),
        };
    }
    if e.is("SessionConflict") || (status == 409 && matches!(subject, Subject::Session(_))) {
        return ScaleSetError::SessionConflict {
            scale_set_id: subject.scale_set_id().unwrap_or_default(),
            message: e.message,
        };
    }
    if let Some(id) = subject.scale_set_id()
        && (e.is("RunnerScaleSetNotFound") || (status == 404 && *subject == Subject::ScaleSet(id)))
    {
        return ScaleSetError::ScaleSetNotFound { id, action };
    }
    if e.is("AgentNotFound")
        || (status == 404 && matches!(subject, Subject::Agent(_) | Subject::AgentName(_)))
    {
        let agent = match subject {
            Subject::Agent(id) => id.to_string(),
            Subject::AgentName(name) => format!("{name:?}"),
            _ => "?".to_string(),
        };
        return ScaleSetError::AgentNotFound { agent, action };
    }
    match status {
        401 => ScaleSetError::Unauthorized {
            token: subject.token(),
            action,
            message: e.message,
        },
        403 => ScaleSetError::Forbidden {
            action,
            message: e.message,
        },
        404 => ScaleSetError::NotFound {
            action,
            type_name: e.type_name,
            message: e.message,
        },
        _ => ScaleSetError::Rejected {
            action,
            status,
            type_name: e.type_name,
            message: e.message,
        },
    }
}

// ----- pure URL and token rules ----------------------------------------------------------

/// `{base}/{path}?api-version=...&{query}`, keeping the base's own path prefix.
fn service_url(base: &Url, path: &str, query: &[(&str, String)]) -> Url {
    let mut url = base.clone();
    let joined = format!(
        "{}/{}",
        base.path().trim_end_matches('/'),
        path.trim_start_matches('/')
    );
    url.set_path(&joined);
    {
        let mut pairs = url.query_pairs_mut();
        pairs.append_pair("api-version", API_VERSION);
        for (key, value) in query {
            pairs.append_pair(key, value);
        }
    }
    url
}

/// The queue URL with `lastMessageId` set (replacing any the service put there); 0 = none yet.
fn poll_url(queue: &Url, last_message_id: u64) -> Url {
    let mut url = queue.clone();
    let kept: Vec<(String, String)> = queue
        .query_pairs()
        .filter(|(k, _)| k != "lastMessageId")
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    url.set_query(None);
    if !kept.is_empty() || last_message_id > 0 {
        let mut pairs = url.query_pairs_mut();
        for (k, v) in &kept {
            pairs.append_pair(k, v);
        }
        if last_message_id > 0 {
            pairs.append_pair("lastMessageId", &last_message_id.to_string());
        }
    }
    url
}

/// The queue URL with `/{message_id}` added to its path; the query is kept.
fn ack_url(queue: &Url, message_id: u64) -> Url {
    let mut url = queue.clone();
    let path = format!("{}/{message_id}", queue.path().trim_end_matches('/'));
    url.set_path(&path);
    url
}

/// The `exp` claim of a JWT, read without verifying it (the service verifies; we only plan).
pub fn jwt_expiry(token: &str) -> Option<DateTime<Utc>> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    let exp = claims.get("exp")?;
    let secs = exp.as_i64().or_else(|| exp.as_f64().map(|f| f as i64))?;
    DateTime::<Utc>::from_timestamp(secs, 0)
}

/// Whether a cached admin token may still be used at `now`.
pub fn admin_token_usable(
    expires_at: Option<DateTime<Utc>>,
    obtained_at: DateTime<Utc>,
    now: DateTime<Utc>,
    margin: Duration,
    fallback_lifetime: Duration,
) -> bool {
    let span = |d: Duration| chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX);
    match expires_at {
        Some(exp) => exp - span(margin) > now,
        None => obtained_at + span(fallback_lifetime) > now,
    }
}

// ----- the client --------------------------------------------------------------------------

struct AdminConnection {
    base: Url,
    token: SecretString,
    expires_at: Option<DateTime<Utc>>,
    obtained_at: DateTime<Utc>,
}

struct ServiceInner {
    github: GitHub,
    scope: Scope,
    config: ServiceConfig,
    // Held across a renewal, so concurrent callers wait for one instead of making their own.
    admin: tokio::sync::Mutex<Option<AdminConnection>>,
    calls: AtomicU64,
}

/// The Actions service for one scope. Clones share the admin token and the call counter.
#[derive(Clone)]
pub struct ActionsService {
    inner: Arc<ServiceInner>,
}

impl fmt::Debug for ActionsService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ActionsService")
            .field("scope", &self.inner.scope)
            .field("calls_made", &self.calls_made())
            .finish_non_exhaustive()
    }
}

enum Endpoint {
    /// A path under the service URL (known only once the admin connection is).
    Service {
        path: String,
        query: Vec<(&'static str, String)>,
    },
    Url(Url),
}

enum Credential<'a> {
    Admin,
    Queue(&'a SecretString),
    RemoteAuth(&'a SecretString),
}

struct Request<'a> {
    method: Method,
    endpoint: Endpoint,
    credential: Credential<'a>,
    body: Option<serde_json::Value>,
    subject: Subject,
    action: String,
    /// Long polls only.
    poll: Option<(u32, Duration)>,
    /// A rate-limit answer ends the request at once (`RateLimited` with the wait asked for)
    /// instead of being waited out: the caller paces these calls itself and must learn of it.
    rate_limit_is_final: bool,
}

impl Request<'static> {
    /// A request to `path` under the service URL, made with the admin token.
    fn admin(method: Method, path: String, subject: Subject, action: String) -> Self {
        Request {
            method,
            endpoint: Endpoint::Service {
                path,
                query: Vec::new(),
            },
            credential: Credential::Admin,
            body: None,
            subject,
            action,
            poll: None,
            rate_limit_is_final: false,
        }
    }

    /// An admin request on the session itself; `doing` starts the action ("deleting").
    fn on_session(method: Method, session: &Session, doing: &str) -> Self {
        let scale_set_id = session.scale_set_id;
        Request::admin(
            method,
            format!("{SCALE_SETS}/{scale_set_id}/sessions/{}", session.id),
            Subject::Session(scale_set_id),
            format!("{doing} the message session of runner scale set {scale_set_id}"),
        )
    }
}

impl<'a> Request<'a> {
    /// A request made with the session's queue token; `doing` starts the action.
    fn on_queue(method: Method, endpoint: Endpoint, session: &'a Session, doing: &str) -> Self {
        Request {
            method,
            endpoint,
            credential: Credential::Queue(&session.queue_token),
            body: None,
            subject: Subject::Queue(session.scale_set_id),
            action: format!("{doing} of runner scale set {}", session.scale_set_id),
            poll: None,
            rate_limit_is_final: false,
        }
    }

    fn with_body(mut self, body: serde_json::Value) -> Self {
        self.body = Some(body);
        self
    }

    /// Query parameters after `api-version` (service endpoints only).
    fn with_query(mut self, query: Vec<(&'static str, String)>) -> Self {
        if let Endpoint::Service { query: params, .. } = &mut self.endpoint {
            *params = query;
        }
        self
    }
}

impl ActionsService {
    pub fn new(github: GitHub, scope: Scope) -> ActionsService {
        ActionsService::with_config(github, scope, ServiceConfig::default())
    }

    pub fn with_config(github: GitHub, scope: Scope, config: ServiceConfig) -> ActionsService {
        ActionsService {
            inner: Arc::new(ServiceInner {
                github,
                scope,
                config,
                admin: tokio::sync::Mutex::new(None),
                calls: AtomicU64::new(0),
            }),
        }
    }

    pub fn scope(&self) -> &Scope {
        &self.inner.scope
    }

    pub fn github(&self) -> &GitHub {
        &self.inner.github
    }

    /// Requests this service (and its clones) sent to the Actions service and to
    /// `actions/runner-registration`, retries included. REST calls (registration tokens, runner
    /// groups) are counted by [`GitHub::calls_made`], which counts these too.
    pub fn calls_made(&self) -> u64 {
        self.inner.calls.load(Ordering::Relaxed)
    }

    // ----- runner groups and scale sets ------------------------------------------------------

    /// The id of a runner group by name: Default (or no name) is 1; other groups exist only in
    /// organizations and are looked up through the REST API.
    pub async fn runner_group_id(&self, name: &str) -> Result<u64, ScaleSetError> {
        let name = name.trim();
        if name.is_empty() || name.eq_ignore_ascii_case("default") {
            return Ok(DEFAULT_RUNNER_GROUP_ID);
        }
        let scope = &self.inner.scope;
        if !scope.is_org() {
            return Err(ScaleSetError::RunnerGroupNeedsOrg {
                name: name.to_string(),
                scope: scope.clone(),
            });
        }
        let groups = self.inner.github.runner_groups(scope).await?;
        groups
            .iter()
            .find(|g| g.name == name)
            .or_else(|| groups.iter().find(|g| g.name.eq_ignore_ascii_case(name)))
            .map(|g| g.id)
            .ok_or_else(|| ScaleSetError::RunnerGroupNotFound {
                name: name.to_string(),
                scope: scope.clone(),
                known: groups.iter().map(|g| g.name.clone()).collect(),
            })
    }

    pub async fn scale_set_by_name(
        &self,
        runner_group_id: u64,
        name: &str,
    ) -> Result<Option<ScaleSet>, ScaleSetError> {
        let request = Request::admin(
            Method::GET,
            SCALE_SETS.to_string(),
            Subject::ScaleSets,
            format!(
                "looking up runner scale set {name:?} in runner group {runner_group_id} of {}",
                self.inner.scope
            ),
        )
        .with_query(vec![
            ("runnerGroupId", runner_group_id.to_string()),
            ("name", name.to_string()),
        ]);
        let list: List<ScaleSet> = self.json(&request).await?;
        Ok(list
            .items()
            .into_iter()
            .find(|s| s.name.eq_ignore_ascii_case(name)))
    }

    /// A scale set by id; [`ScaleSetError::ScaleSetNotFound`] once it was deleted.
    pub async fn scale_set(&self, id: u64) -> Result<ScaleSet, ScaleSetError> {
        let request = Request::admin(
            Method::GET,
            format!("{SCALE_SETS}/{id}"),
            Subject::ScaleSet(id),
            format!("reading runner scale set {id}"),
        );
        let answer = self.send(&request).await?;
        // The service has answered a missing id with 200 and `null`.
        if is_blank(&answer.body) || trim_bom(&answer.body) == b"null" {
            return Err(ScaleSetError::ScaleSetNotFound {
                id,
                action: request.action,
            });
        }
        parse(&request.action, &answer)
    }

    pub async fn create_scale_set(&self, spec: &ScaleSetSpec) -> Result<ScaleSet, ScaleSetError> {
        let request = Request::admin(
            Method::POST,
            SCALE_SETS.to_string(),
            Subject::ScaleSets,
            format!(
                "creating runner scale set {:?} for {}",
                spec.name, self.inner.scope
            ),
        )
        .with_body(spec.body());
        self.json(&request).await
    }

    pub async fn update_scale_set(
        &self,
        id: u64,
        spec: &ScaleSetSpec,
    ) -> Result<ScaleSet, ScaleSetError> {
        let request = Request::admin(
            Method::PATCH,
            format!("{SCALE_SETS}/{id}"),
            Subject::ScaleSet(id),
            format!("updating runner scale set {id} ({:?})", spec.name),
        )
        .with_body(spec.body());
        self.json(&request).await
    }

    /// Deletes a scale set; one that is already gone counts as deleted.
    pub async fn delete_scale_set(&self, id: u64) -> Result<(), ScaleSetError> {
        let request = Request::admin(
            Method::DELETE,
            format!("{SCALE_SETS}/{id}"),
            Subject::ScaleSet(id),
            format!("deleting runner scale set {id}"),
        );
        match self.send(&request).await {
            Ok(_) | Err(ScaleSetError::ScaleSetNotFound { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Finds the scale set by name in its runner group, creating it if absent and updating its
    /// labels and settings if they differ from `spec`.
    pub async fn ensure_scale_set(
        &self,
        spec: &ScaleSetSpec,
    ) -> Result<(ScaleSet, EnsureOutcome), ScaleSetError> {
        if let Some(existing) = self
            .scale_set_by_name(spec.runner_group_id, &spec.name)
            .await?
        {
            return self.adopt(existing, spec).await;
        }
        match self.create_scale_set(spec).await {
            Ok(created) => Ok((created, EnsureOutcome::Created)),
            // Another controller may have created it between our look-up and our create.
            Err(
                e @ ScaleSetError::Rejected {
                    status: 400 | 409, ..
                },
            ) => {
                match self
                    .scale_set_by_name(spec.runner_group_id, &spec.name)
                    .await?
                {
                    Some(existing) => self.adopt(existing, spec).await,
                    None => Err(e),
                }
            }
            Err(e) => Err(e),
        }
    }

    async fn adopt(
        &self,
        existing: ScaleSet,
        spec: &ScaleSetSpec,
    ) -> Result<(ScaleSet, EnsureOutcome), ScaleSetError> {
        if spec.matches(&existing) {
            return Ok((existing, EnsureOutcome::Adopted));
        }
        let updated = self.update_scale_set(existing.id, spec).await?;
        Ok((updated, EnsureOutcome::Updated))
    }

    // ----- sessions and the message queue ----------------------------------------------------

    /// Opens the scale set's message session; [`ScaleSetError::SessionConflict`] while another
    /// one is live.
    pub async fn create_session(
        &self,
        scale_set_id: u64,
        owner_name: &str,
    ) -> Result<Session, ScaleSetError> {
        let request = Request::admin(
            Method::POST,
            format!("{SCALE_SETS}/{scale_set_id}/sessions"),
            Subject::Session(scale_set_id),
            format!("opening a message session on runner scale set {scale_set_id}"),
        )
        .with_body(serde_json::json!({"sessionId": NIL_SESSION_ID, "ownerName": owner_name}));
        let wire: SessionWire = self.json(&request).await?;
        session_from_wire(wire, scale_set_id, owner_name, &request.action)
    }

    /// Renews the session's queue token (and its statistics).
    pub async fn refresh_session(&self, session: &mut Session) -> Result<(), ScaleSetError> {
        let request = Request::on_session(Method::PATCH, session, "refreshing");
        let wire: SessionWire = self.json(&request).await?;
        *session = session_from_wire(
            wire,
            session.scale_set_id,
            &session.owner_name,
            &request.action,
        )?;
        Ok(())
    }

    /// Ends the session; one that is already gone counts as ended.
    pub async fn delete_session(&self, session: &Session) -> Result<(), ScaleSetError> {
        let request = Request::on_session(Method::DELETE, session, "deleting");
        match self.send(&request).await {
            Ok(_)
            | Err(ScaleSetError::ScaleSetNotFound { .. } | ScaleSetError::NotFound { .. }) => {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Long-polls the queue: `None` when the service had nothing (202). A refused queue token
    /// refreshes the session and polls once more.
    pub async fn get_message(
        &self,
        session: &mut Session,
        last_message_id: u64,
        max_capacity: u32,
    ) -> Result<Option<Message>, ScaleSetError> {
        let poll_timeout = self.inner.config.poll_timeout;
        let (answer, action) = self
            .send_on_queue(session, |session| Request {
                poll: Some((max_capacity, poll_timeout)),
                ..Request::on_queue(
                    Method::GET,
                    Endpoint::Url(poll_url(&session.queue_url, last_message_id)),
                    session,
                    "polling the message queue",
                )
            })
            .await?;
        if answer.status != StatusCode::OK || is_blank(&answer.body) {
            return Ok(None);
        }
        match parse_message(&answer.body) {
            Ok(message) => Ok(Some(message)),
            Err((Some(message_id), cause)) => Err(ScaleSetError::BadMessage { message_id, cause }),
            Err((None, cause)) => Err(ScaleSetError::BadResponse { action, cause }),
        }
    }

    /// Acknowledges (deletes) a message so it is not delivered again.
    pub async fn ack(&self, session: &mut Session, message_id: u64) -> Result<(), ScaleSetError> {
        let acked = self
            .send_on_queue(session, |session| {
                Request::on_queue(
                    Method::DELETE,
                    Endpoint::Url(ack_url(&session.queue_url, message_id)),
                    session,
                    &format!("acknowledging message {message_id}"),
                )
            })
            .await;
        match acked {
            // Already acknowledged (a retried DELETE whose first answer was lost).
            Ok(_) | Err(ScaleSetError::NotFound { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Acquires offered jobs (`JobAvailable`) for the scale set; returns the ids it got.
    pub async fn acquire_jobs(
        &self,
        session: &mut Session,
        runner_request_ids: &[u64],
    ) -> Result<Vec<u64>, ScaleSetError> {
        if runner_request_ids.is_empty() {
            return Ok(Vec::new());
        }
        let (answer, action) = self
            .send_on_queue(session, |session| {
                Request::on_queue(
                    Method::POST,
                    Endpoint::Service {
                        path: format!("{SCALE_SETS}/{}/acquirejobs", session.scale_set_id),
                        query: Vec::new(),
                    },
                    session,
                    &format!("acquiring {} job(s)", runner_request_ids.len()),
                )
                .with_body(serde_json::json!(runner_request_ids))
            })
            .await?;
        let list: List<u64> = parse(&action, &answer)?;
        Ok(list.items())
    }

    /// Sends a request made with the session's queue token. The token lives shorter than the
    /// session, so a refusal of it refreshes the session and sends (a request made anew) once
    /// more. Returns the answer and the action, for reading it.
    async fn send_on_queue(
        &self,
        session: &mut Session,
        request: impl Fn(&Session) -> Request<'_>,
    ) -> Result<(Answer, String), ScaleSetError> {
        let first = request(session);
        match self.send(&first).await {
            Ok(answer) => Ok((answer, first.action)),
            Err(ScaleSetError::Unauthorized {
                token: ServiceToken::Queue,
                ..
            }) => {
                self.refresh_session(session).await?;
                let again = request(session);
                let answer = self.send(&again).await?;
                Ok((answer, again.action))
            }
            Err(e) => Err(e),
        }
    }

    // ----- runners ---------------------------------------------------------------------------

    /// Creates a runner in the scale set and returns its one-shot configuration.
    pub async fn generate_jit_config(
        &self,
        scale_set_id: u64,
        name: &str,
        work_folder: &str,
    ) -> Result<JitRunner, ScaleSetError> {
        let mut request = Request::admin(
            Method::POST,
            format!("{SCALE_SETS}/{scale_set_id}/generatejitconfig"),
            Subject::Jit {
                scale_set_id,
                name: name.to_string(),
            },
            format!("creating JIT runner {name:?} in runner scale set {scale_set_id}"),
        )
        .with_body(serde_json::json!({"name": name, "workFolder": work_folder}));
        // The controller paces creations under GitHub's secondary limit and slows down when
        // told: a refusal must reach it, not be slept through here.
        request.rate_limit_is_final = true;
        let wire: JitWire = self.json(&request).await?;
        Ok(JitRunner {
            id: wire.runner.id,
            name: wire.runner.name,
            scale_set_id: wire.runner.runner_scale_set_id,
            encoded: wire.encoded_jit_config,
        })
    }

    pub async fn agent(&self, id: u64) -> Result<Option<Agent>, ScaleSetError> {
        let request = Request::admin(
            Method::GET,
            format!("{AGENTS}/{id}"),
            Subject::Agent(id),
            format!("reading runner {id}"),
        );
        match self.json(&request).await {
            Ok(agent) => Ok(agent),
            Err(ScaleSetError::AgentNotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub async fn agent_by_name(&self, name: &str) -> Result<Option<Agent>, ScaleSetError> {
        let request = Request::admin(
            Method::GET,
            AGENTS.to_string(),
            Subject::AgentName(name.to_string()),
            format!("looking up runner {name:?}"),
        )
        .with_query(vec![("agentName", name.to_string())]);
        match self.json::<List<Agent>>(&request).await {
            Ok(list) => Ok(list.items().into_iter().find(|a| a.name == name)),
            Err(ScaleSetError::AgentNotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Removes a runner's registration, unless it is running a job.
    pub async fn delete_agent(&self, id: u64) -> Result<AgentRemoval, ScaleSetError> {
        let request = Request::admin(
            Method::DELETE,
            format!("{AGENTS}/{id}"),
            Subject::Agent(id),
            format!("removing runner {id}"),
        );
        match self.send(&request).await {
            Ok(_) => Ok(AgentRemoval::Removed),
            Err(ScaleSetError::AgentNotFound { .. }) => Ok(AgentRemoval::NotFound),
            Err(ScaleSetError::JobStillRunning { .. }) => Ok(AgentRemoval::StillRunning),
            Err(e) => Err(e),
        }
    }

    // ----- admin connection ------------------------------------------------------------------

    /// The service URL and a usable admin token, renewed when close to expiry.
    async fn admin(&self) -> Result<(Url, SecretString), ScaleSetError> {
        let mut cached = self.inner.admin.lock().await;
        let config = &self.inner.config;
        if let Some(c) = cached.as_ref()
            && admin_token_usable(
                c.expires_at,
                c.obtained_at,
                Utc::now(),
                config.admin_refresh_margin,
                config.admin_fallback_lifetime,
            )
        {
            return Ok((c.base.clone(), c.token.clone()));
        }
        // Boxed: registering is itself a request through `send`.
        let fresh = Box::pin(self.register()).await?;
        let view = (fresh.base.clone(), fresh.token.clone());
        *cached = Some(fresh);
        Ok(view)
    }

    async fn forget_admin(&self) {
        *self.inner.admin.lock().await = None;
    }

    async fn register(&self) -> Result<AdminConnection, ScaleSetError> {
        let scope = &self.inner.scope;
        let github_config = self.inner.github.config();
        let registration = self.inner.github.registration_token(scope).await?;
        let action = format!(
            "exchanging a registration token of {scope} for an Actions service admin token"
        );
        let url = Url::parse(&format!(
            "{}/actions/runner-registration",
            github_config.api_url
        ))
        .map_err(|e| ScaleSetError::BadResponse {
            action: action.clone(),
            cause: format!("the API URL {} is not a URL: {e}", github_config.api_url),
        })?;
        let request = Request {
            method: Method::POST,
            endpoint: Endpoint::Url(url),
            credential: Credential::RemoteAuth(&registration.token),
            body: Some(serde_json::json!({
                "url": scope.runner_url(&github_config.web_url),
                "runner_event": "register",
            })),
            subject: Subject::Registration,
            action,
            poll: None,
            rate_limit_is_final: false,
        };
        let wire: RegistrationWire = self.json(&request).await?;
        let base = Url::parse(&wire.url)
            .ok()
            .filter(|u| matches!(u.scheme(), "https" | "http") && u.host().is_some())
            .ok_or_else(|| ScaleSetError::BadResponse {
                action: request.action.clone(),
                cause: "the service URL in the answer is not an http(s) URL".into(),
            })?;
        let expires_at = jwt_expiry(wire.token.expose_secret());
        tracing::debug!(%scope, service_host = base.host_str().unwrap_or(""), ?expires_at, "obtained an Actions service admin token");
        Ok(AdminConnection {
            base,
            token: wire.token,
            expires_at,
            obtained_at: Utc::now(),
        })
    }

    // ----- transport -------------------------------------------------------------------------

    async fn json<T: serde::de::DeserializeOwned>(
        &self,
        request: &Request<'_>,
    ) -> Result<T, ScaleSetError> {
        let answer = self.send(request).await?;
        parse(&request.action, &answer)
    }

    /// Sends one logical request, retrying per the policy; `Ok` only for a 2xx answer.
    async fn send(&self, request: &Request<'_>) -> Result<Answer, ScaleSetError> {
        let policy = &self.inner.config.retry;
        let started = Instant::now();
        let mut attempt = 0u32;
        let mut renewed_admin = false;
        loop {
            attempt += 1;
            let (url, authorization) = self.resolve(request).await?;
            let mut builder = self
                .inner
                .github
                .inner
                .http
                .request(request.method.clone(), url.clone())
                .header("authorization", authorization);
            // The queue URL is the service's own and carries no api-version, so the long poll
            // names it in Accept; one Accept header only, as reqwest appends, not replaces.
            builder = match request.poll {
                Some((max_capacity, timeout)) => builder
                    .header(
                        "accept",
                        format!("application/json; api-version={API_VERSION}"),
                    )
                    .header(MAX_CAPACITY_HEADER, max_capacity.to_string())
                    .timeout(timeout),
                None => builder.header("accept", "application/json"),
            };
            if let Some(body) = &request.body {
                builder = builder.json(body);
            }
            self.inner.calls.fetch_add(1, Ordering::Relaxed);
            self.inner.github.count_request();
            let sent_at = Instant::now();
            let outcome = Answer::receive(builder).await;
            match &outcome {
                Ok(answer) => tracing::debug!(
                    method = %request.method, host = url.host_str().unwrap_or(""), path = url.path(),
                    status = answer.status.as_u16(), attempt, ms = sent_at.elapsed().as_millis() as u64,
                    "actions service request"
                ),
                Err(e) => tracing::debug!(
                    method = %request.method, host = url.host_str().unwrap_or(""), path = url.path(),
                    attempt, error = %describe_transport_error(e), "actions service request failed"
                ),
            }
            let mut observed = observe(&outcome);
            if let Ok(answer) = &outcome {
                if answer.status.is_success() {
                    return Ok(outcome.expect("checked"));
                }
                // An admin token the service stopped accepting: fetch a new one, once.
                if answer.status == StatusCode::UNAUTHORIZED
                    && matches!(request.credential, Credential::Admin)
                    && !renewed_admin
                {
                    renewed_admin = true;
                    self.forget_admin().await;
                    continue;
                }
                // A registration token just minted can take a moment to be honoured here.
                if matches!(request.credential, Credential::RemoteAuth(_))
                    && matches!(answer.status.as_u16(), 401 | 403)
                    && !observed.is_rate_limited()
                {
                    observed = Observed::Response {
                        status: 503,
                        retry_after: None,
                        remaining: None,
                        reset: None,
                        rate_limit_message: false,
                    };
                }
            }
            if request.rate_limit_is_final && observed.is_rate_limited() {
                let wait = match &observed {
                    Observed::Response {
                        retry_after: Some(secs),
                        ..
                    } => Duration::from_secs(*secs),
                    _ => policy.secondary_limit_wait,
                };
                return Err(ScaleSetError::RateLimited {
                    action: request.action.clone(),
                    wait,
                });
            }
            if let Err(reason) = wait_to_retry(
                policy,
                &observed,
                attempt,
                started,
                &request.action,
                &outcome,
                "Actions service",
            )
            .await
            {
                return Err(failure(request, &url, attempt, reason, outcome));
            }
        }
    }

    async fn resolve(&self, request: &Request<'_>) -> Result<(Url, HeaderValue), ScaleSetError> {
        let (url, scheme, token) = match (&request.endpoint, &request.credential) {
            (Endpoint::Service { path, query }, credential) => {
                let (base, admin_token) = self.admin().await?;
                let url = service_url(&base, path, query);
                match credential {
                    Credential::Admin => (url, "Bearer", admin_token),
                    Credential::Queue(token) | Credential::RemoteAuth(token) => {
                        (url, "Bearer", (*token).clone())
                    }
                }
            }
            (Endpoint::Url(url), Credential::Queue(token)) => {
                (url.clone(), "Bearer", (*token).clone())
            }
            (Endpoint::Url(url), Credential::RemoteAuth(token)) => {
                (url.clone(), "RemoteAuth", (*token).clone())
            }
            (Endpoint::Url(url), Credential::Admin) => {
                let (_, admin_token) = self.admin().await?;
                (url.clone(), "Bearer", admin_token)
            }
        };
        Ok((url, authorization(scheme, &token)))
    }
}

fn session_from_wire(
    wire: SessionWire,
    scale_set_id: u64,
    owner_name: &str,
    action: &str,
) -> Result<Session, ScaleSetError> {
    let queue_url = Url::parse(&wire.message_queue_url)
        .ok()
        .filter(|u| matches!(u.scheme(), "https" | "http"))
        .ok_or_else(|| ScaleSetError::BadResponse {
            action: action.to_string(),
            cause: "the session's messageQueueUrl is not an http(s) URL".into(),
        })?;
    Ok(Session {
        id: wire.session_id,
        owner_name: wire.owner_name.unwrap_or_else(|| owner_name.to_string()),
        scale_set_id,
        queue_url,
        queue_token: wire.message_queue_access_token,
        statistics: wire.statistics,
    })
}

fn parse<T: serde::de::DeserializeOwned>(
    action: &str,
    answer: &Answer,
) -> Result<T, ScaleSetError> {
    serde_json::from_slice(trim_bom(&answer.body)).map_err(|e| ScaleSetError::BadResponse {
        action: action.to_string(),
        cause: format!("HTTP {}: {e}", answer.status.as_u16()),
    })
}

fn failure(
    request: &Request<'_>,
    url: &Url,
    attempts: u32,
    reason: GiveUp,
    outcome: Result<Answer, reqwest::Error>,
) -> ScaleSetError {
    let action = request.action.clone();
    match Ending::of(reason, outcome) {
        Ending::Unreachable { cause } => ScaleSetError::Unreachable {
            action,
            host: url.host_str().unwrap_or("the Actions service").to_string(),
            attempts,
            cause,
        },
        Ending::RateLimited { wait } => ScaleSetError::RateLimited { action, wait },
        Ending::ServerError { status } => ScaleSetError::ServerError {
            action,
            status,
            attempts,
        },
        Ending::Refused(answer) => classify(
            answer.status.as_u16(),
            &answer.body,
            &request.subject,
            &action,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_message_with_every_job_type_and_the_statistics() {
        let body = serde_json::json!([
            {"messageType": "JobAvailable", "runnerRequestId": 11, "repositoryName": "r", "ownerName": "o",
             "jobId": "b2c1", "jobWorkflowRef": "o/r/.github/workflows/ci.yml@refs/heads/main",
             "jobDisplayName": "build", "workflowRunId": 7, "eventName": "push",
             "requestLabels": ["self-hosted", "linux"], "acquireJobUrl": "https://x/acquire",
             "queueTime": "2026-03-01T10:00:00.5Z", "scaleSetAssignTime": "0001-01-01T00:00:00Z"},
            {"messageType": "JobAssigned", "runnerRequestId": 11, "jobId": "b2c1"},
            {"messageType": "JobStarted", "runnerRequestId": 11, "jobId": "b2c1", "runnerId": 42,
             "runnerName": "hangar-1", "runnerAssignTime": "2026-03-01T10:00:03Z"},
            {"messageType": "JobCompleted", "runnerRequestId": 11, "jobId": "b2c1", "runnerId": 42,
             "runnerName": "hangar-1", "result": "succeeded", "finishTime": "2026-03-01T10:01:00Z"},
            {"messageType": "JobCompleted", "runnerRequestId": 12, "jobId": "c3", "result": "canceled",
             "runnerId": 0, "runnerName": ""},
            {"messageType": "JobCompleted", "runnerRequestId": 13, "jobId": "c4", "result": "canceled",
             "runnerId": null, "runnerName": null},
            {"messageType": "SomethingNew", "whatever": true},
        ])
        .to_string();
        let answer = serde_json::json!({
            "messageId": 5, "messageType": JOB_MESSAGES_TYPE, "body": body,
            "statistics": {"totalAvailableJobs": 1, "totalAcquiredJobs": 2, "totalAssignedJobs": 3,
                "totalRunningJobs": 4, "totalRegisteredRunners": 5, "totalBusyRunners": 6, "totalIdleRunners": 7}
        })
        .to_string();
        let message = parse_message(answer.as_bytes()).unwrap();
        assert_eq!(message.id, 5);
        assert_eq!(
            message.statistics.unwrap(),
            Statistics {
                total_available_jobs: 1,
                total_acquired_jobs: 2,
                total_assigned_jobs: 3,
                total_running_jobs: 4,
                total_registered_runners: 5,
                total_busy_runners: 6,
                total_idle_runners: 7,
            }
        );
        let types: Vec<&str> = message.jobs.iter().map(JobMessage::message_type).collect();
        assert_eq!(
            types,
            [
                "JobAvailable",
                "JobAssigned",
                "JobStarted",
                "JobCompleted",
                "JobCompleted",
                "JobCompleted",
                "SomethingNew"
            ]
        );
        let JobMessage::JobAvailable {
            job,
            acquire_job_url,
        } = &message.jobs[0]
        else {
            panic!("not available: {:?}", message.jobs[0]);
        };
        assert_eq!(job.runner_request_id, 11);
        assert_eq!(job.job_id, "b2c1");
        assert_eq!(job.workflow_run_id, 7);
        assert_eq!(job.request_labels, ["self-hosted", "linux"]);
        assert_eq!(acquire_job_url.as_deref(), Some("https://x/acquire"));
        assert_eq!(
            job.queue_time.unwrap().to_rfc3339(),
            "2026-03-01T10:00:00.500+00:00"
        );
        assert_eq!(job.scale_set_assign_time, None, "Go zero time is no time");
        assert!(matches!(
            &message.jobs[2],
            JobMessage::JobStarted { runner_id: 42, runner_name, job } if runner_name == "hangar-1"
                && job.runner_assign_time.is_some()
        ));
        assert!(matches!(
            &message.jobs[3],
            JobMessage::JobCompleted { result, runner_id: Some(42), job, .. } if result == "succeeded"
                && job.finish_time.is_some()
        ));
        for unheld in &message.jobs[4..6] {
            assert!(
                matches!(
                    unheld,
                    JobMessage::JobCompleted { result, runner_id: None, runner_name: None, .. } if result == "canceled"
                ),
                "{unheld:?}"
            );
        }
    }

    #[test]
    fn tolerates_bom_empty_body_numeric_job_ids_and_other_outer_types() {
        let mut answer = b"\xef\xbb\xbf".to_vec();
        answer.extend_from_slice(
            br#"{"messageId": 9, "messageType": "RunnerScaleSetJobMessages", "body": "", "statistics": null}"#,
        );
        let message = parse_message(&answer).unwrap();
        assert_eq!((message.id, message.jobs.len()), (9, 0));
        assert_eq!(message.statistics, None);

        let jobs = parse_job_messages(r#"[{"messageType":"JobAssigned","jobId":123}]"#).unwrap();
        assert_eq!(jobs[0].job().unwrap().job_id, "123");

        // A known type with a field of the wrong shape is kept, not fatal.
        let jobs = parse_job_messages(r#"[{"messageType":"JobStarted","runnerId":"x"}]"#).unwrap();
        assert_eq!(
            jobs,
            [JobMessage::Other {
                message_type: "JobStarted".into()
            }]
        );

        let other =
            parse_message(br#"{"messageId": 3, "messageType": "Ping", "body": "not json"}"#)
                .unwrap();
        assert!(other.jobs.is_empty());
    }

    #[test]
    fn a_body_that_is_not_an_array_names_the_message() {
        let err = parse_message(
            br#"{"messageId": 4, "messageType": "RunnerScaleSetJobMessages", "body": "{oops"}"#,
        )
        .unwrap_err();
        assert_eq!(err.0, Some(4));
        assert!(parse_message(b"<html>").unwrap_err().0.is_none());
    }

    #[test]
    fn classifies_type_names_into_the_variants_callers_match() {
        let body = |t: &str| {
            serde_json::json!({"typeName": format!("GitHub.DistributedTask.WebApi.{t}, GitHub.DistributedTask.WebApi"),
                "message": "details"})
            .to_string()
        };
        let c = |status, t: &str, subject: Subject| {
            classify(status, body(t).as_bytes(), &subject, "doing")
        };
        assert!(matches!(
            c(409, "TaskAgentSessionConflictException", Subject::Session(3)),
            ScaleSetError::SessionConflict { scale_set_id: 3, message } if message == "details"
        ));
        assert!(matches!(
            c(404, "RunnerScaleSetNotFoundException", Subject::Queue(8)),
            ScaleSetError::ScaleSetNotFound { id: 8, .. }
        ));
        assert!(matches!(
            classify(404, b"", &Subject::ScaleSet(9), "reading"),
            ScaleSetError::ScaleSetNotFound { id: 9, .. }
        ));
        assert!(matches!(
            c(409, "AgentExistsException", Subject::Jit { scale_set_id: 2, name: "n".into() }),
            ScaleSetError::AgentExists { scale_set_id: 2, name } if name == "n"
        ));
        for status in [400, 409, 422, 500] {
            assert!(matches!(
                c(status, "JobStillRunningException", Subject::Agent(77)),
                ScaleSetError::JobStillRunning { agent_id: 77 }
            ));
        }
        assert!(matches!(
            c(404, "AgentNotFoundException", Subject::Agent(5)),
            ScaleSetError::AgentNotFound { .. }
        ));
        assert!(matches!(
            classify(401, b"", &Subject::Queue(1), "polling"),
            ScaleSetError::Unauthorized {
                token: ServiceToken::Queue,
                ..
            }
        ));
        assert!(matches!(
            classify(401, b"", &Subject::ScaleSets, "listing"),
            ScaleSetError::Unauthorized {
                token: ServiceToken::Admin,
                ..
            }
        ));
        assert!(matches!(
            classify(403, b"{}", &Subject::ScaleSets, "x"),
            ScaleSetError::Forbidden { .. }
        ));
        // A typeKey instead of a typeName, as some answers carry.
        assert!(matches!(
            classify(
                404,
                br#"{"typeKey":"RunnerScaleSetNotFoundException"}"#,
                &Subject::Session(4),
                "x"
            ),
            ScaleSetError::ScaleSetNotFound { id: 4, .. }
        ));
        match c(400, "InvalidRunnerScaleSetException", Subject::ScaleSets) {
            ScaleSetError::Rejected {
                status: 400,
                type_name,
                ..
            } => assert_eq!(type_name, "InvalidRunnerScaleSetException"),
            other => panic!("{other:?}"),
        }
        // A proxy's page: bounded, not parsed.
        let page = "<html>".repeat(200);
        match classify(418, page.as_bytes(), &Subject::ScaleSets, "x") {
            ScaleSetError::Rejected { message, .. } => assert!(message.len() < 320),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn builds_service_queue_and_ack_urls() {
        let base = Url::parse("https://pipelines.example/abc123/").unwrap();
        let url = service_url(
            &base,
            SCALE_SETS,
            &[("runnerGroupId", "1".into()), ("name", "my set&x".into())],
        );
        assert_eq!(
            url.as_str(),
            "https://pipelines.example/abc123/_apis/runtime/runnerscalesets?api-version=6.0-preview&runnerGroupId=1&name=my+set%26x"
        );
        let no_slash = Url::parse("https://pipelines.example/abc123").unwrap();
        assert_eq!(
            service_url(&no_slash, "_apis/x/1", &[]).as_str(),
            "https://pipelines.example/abc123/_apis/x/1?api-version=6.0-preview"
        );

        let queue =
            Url::parse("https://broker.example/message?sessionId=s1&lastMessageId=3").unwrap();
        assert_eq!(
            poll_url(&queue, 8).as_str(),
            "https://broker.example/message?sessionId=s1&lastMessageId=8"
        );
        assert_eq!(
            poll_url(&queue, 0).as_str(),
            "https://broker.example/message?sessionId=s1"
        );
        let bare = Url::parse("https://broker.example/q/1").unwrap();
        assert_eq!(poll_url(&bare, 0).as_str(), "https://broker.example/q/1");
        assert_eq!(
            ack_url(
                &Url::parse("https://broker.example/q/1?sessionId=s1").unwrap(),
                42
            )
            .as_str(),
            "https://broker.example/q/1/42?sessionId=s1"
        );
    }

    fn jwt_with(payload: &str) -> String {
        let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        format!("{}.{}.sig", b64(r#"{"alg":"RS256"}"#), b64(payload))
    }

    #[test]
    fn reads_the_admin_tokens_expiry_and_renews_a_minute_early() {
        let exp = jwt_expiry(&jwt_with(r#"{"exp": 1800000000, "iss": "x"}"#)).unwrap();
        assert_eq!(exp.timestamp(), 1_800_000_000);
        assert_eq!(jwt_expiry("opaque-token"), None);
        assert_eq!(jwt_expiry(&jwt_with(r#"{"nbf": 1}"#)), None);

        let minute = Duration::from_secs(60);
        let fallback = Duration::from_secs(600);
        let t = |s: i64| DateTime::<Utc>::from_timestamp(s, 0).unwrap();
        let now = t(1_000_000);
        assert!(admin_token_usable(
            Some(t(1_000_061)),
            now,
            now,
            minute,
            fallback
        ));
        assert!(!admin_token_usable(
            Some(t(1_000_060)),
            now,
            now,
            minute,
            fallback
        ));
        assert!(!admin_token_usable(
            Some(t(999_000)),
            now,
            now,
            minute,
            fallback
        ));
        // Unknown expiry: used for the fallback lifetime, then renewed.
        assert!(admin_token_usable(None, t(999_500), now, minute, fallback));
        assert!(!admin_token_usable(None, t(999_400), now, minute, fallback));
    }

    #[test]
    fn spec_matching_ignores_order_case_and_duplicates() {
        let spec = ScaleSetSpec {
            name: "pool".into(),
            runner_group_id: 1,
            labels: vec!["Linux".into(), "gpu".into(), "gpu".into()],
            disable_update: true,
        };
        let label = |n: &str| ScaleSetLabel {
            name: n.into(),
            kind: "System".into(),
        };
        let mut existing = ScaleSet {
            id: 1,
            name: "pool".into(),
            runner_group_id: 1,
            runner_group_name: None,
            labels: vec![label("GPU"), label("linux")],
            runner_setting: RunnerSetting {
                disable_update: true,
                ..RunnerSetting::default()
            },
            statistics: None,
        };
        assert!(spec.matches(&existing));
        let unlabelled = ScaleSetSpec {
            labels: vec![],
            ..spec.clone()
        };
        assert!(!unlabelled.matches(&existing));
        let named = ScaleSet {
            labels: vec![label("POOL")],
            ..existing.clone()
        };
        assert!(unlabelled.matches(&named), "the name is the default label");
        existing.runner_setting.disable_update = false;
        assert!(!spec.matches(&existing));
        existing.runner_setting.disable_update = true;
        existing.labels.push(label("extra"));
        assert!(!spec.matches(&existing));
        let body = spec.body();
        assert_eq!(
            body["labels"][0],
            serde_json::json!({"name": "Linux", "type": "System"})
        );
        assert_eq!(body["RunnerSetting"]["disableUpdate"], true);
    }

    #[test]
    fn scale_sets_accept_either_spelling_of_runner_setting() {
        for key in ["RunnerSetting", "runnerSetting"] {
            let json = format!(
                r#"{{"id": 3, "name": "n", "runnerGroupId": 1, "labels": null, "{key}": {{"disableUpdate": true}}}}"#
            );
            let set: ScaleSet = serde_json::from_str(&json).unwrap();
            assert!(set.runner_setting.disable_update, "{key}");
            assert!(set.labels.is_empty());
        }
    }

    #[test]
    fn tokens_stay_out_of_debug_and_errors() {
        let secret = "queue-token-abcdef123456";
        let wire: SessionWire = serde_json::from_value(serde_json::json!({
            "sessionId": "s-1", "ownerName": "me", "messageQueueUrl": "https://broker.example/q",
            "messageQueueAccessToken": secret, "statistics": null
        }))
        .unwrap();
        let session = session_from_wire(wire, 3, "me", "opening").unwrap();
        assert!(!format!("{session:?}").contains(secret));
        let jit: JitWire = serde_json::from_value(serde_json::json!({
            "runner": {"id": 1, "name": "r", "runnerScaleSetId": 3}, "encodedJITConfig": secret
        }))
        .unwrap();
        let runner = JitRunner {
            id: jit.runner.id,
            name: jit.runner.name,
            scale_set_id: jit.runner.runner_scale_set_id,
            encoded: jit.encoded_jit_config,
        };
        assert!(!format!("{runner:?}").contains(secret));
        assert_eq!(runner.encoded.expose_secret(), secret);
        let registration: RegistrationWire =
            serde_json::from_value(serde_json::json!({"url": "https://x/", "token": secret, "token_schema": "OAuthAccessToken"}))
                .unwrap();
        assert!(!format!("{:?}", registration.token).contains(secret));
        // Errors are built from the answer's body and the action, never from a header.
        for status in [400, 401, 403, 404, 409] {
            let e = classify(
                status,
                br#"{"message": "nope"}"#,
                &Subject::Queue(1),
                "polling",
            );
            assert!(!e.to_string().contains(secret));
        }
    }

    #[test]
    fn every_error_message_says_what_to_do() {
        let scope = Scope::org("o").unwrap();
        let errors = [
            ScaleSetError::SessionConflict {
                scale_set_id: 1,
                message: "m".into(),
            },
            ScaleSetError::ScaleSetNotFound {
                id: 1,
                action: "a".into(),
            },
            ScaleSetError::AgentExists {
                scale_set_id: 1,
                name: "n".into(),
            },
            ScaleSetError::JobStillRunning { agent_id: 1 },
            ScaleSetError::Unauthorized {
                token: ServiceToken::Admin,
                action: "a".into(),
                message: "m".into(),
            },
            ScaleSetError::Forbidden {
                action: "a".into(),
                message: "m".into(),
            },
            ScaleSetError::RateLimited {
                action: "a".into(),
                wait: Duration::from_secs(9),
            },
            ScaleSetError::Unreachable {
                action: "a".into(),
                host: "h".into(),
                attempts: 2,
                cause: "c".into(),
            },
            ScaleSetError::RunnerGroupNotFound {
                name: "g".into(),
                scope: scope.clone(),
                known: vec!["Default".into()],
            },
            ScaleSetError::RunnerGroupNeedsOrg {
                name: "g".into(),
                scope,
            },
        ];
        for e in errors {
            let text = e.to_string();
            assert!(
                text.contains("Fix") || text.contains("tries again"),
                "{text}"
            );
        }
    }
}
