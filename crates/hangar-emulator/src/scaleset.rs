//! The Actions "runner scale set" service as the emulator keeps it (the HTTP side is
//! `routes/scaleset.rs`, the wire protocol `SCALESET_PROTOCOL.md`): tenants (one Actions-service
//! base URL per organization or repository that registered), admin tokens, scale sets with their
//! message session and message queue, and the rules that turn the job queue into scale-set
//! demand. A queued job whose labels match a scale set is offered (`JobAvailable`, when acquiring
//! is required) or assigned (`JobAssigned`) to it; only that scale set's runners (made from its JIT
//! configs) take it; taking it, finishing it and timing out become `JobStarted`, `JobCompleted`
//! and reassignment messages. Everything here runs under the state lock, as `impl State` blocks.
//!
//! Invariants: a scale set has at most one live session; a job is offered or assigned to at most
//! one scale set at a time and is never taken by a runner from outside it; a message is delivered
//! until it is acknowledged or its scale set is deleted; tokens never appear in `Debug` output.

use std::borrow::Borrow;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use jsonwebtoken::{EncodingKey, Header, encode};
use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::faults::{Bucket, Faults};
use crate::jobs::{Conclusion, Job, JobStatus};
use crate::state::{ALNUM, State, random_string, timestamp, uuid_like};
use crate::world::Scope;

/// Lifetime of admin tokens from `runner-registration`, unless changed.
pub(crate) const DEFAULT_ADMIN_TOKEN_TTL: Duration = Duration::from_secs(3600);
/// Lifetime of message-queue tokens, unless changed.
pub(crate) const DEFAULT_QUEUE_TOKEN_TTL: Duration = Duration::from_secs(3600);
/// How long a session lives without a poll or another session call, unless changed.
pub(crate) const DEFAULT_SESSION_IDLE_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a message long poll waits before answering 202, unless changed.
pub(crate) const DEFAULT_POLL_TIMEOUT: Duration = Duration::from_secs(50);
/// How long an assigned job may wait for a runner of its scale set before it is reassigned.
pub(crate) const DEFAULT_REASSIGN_AFTER: Duration = Duration::from_secs(60);
/// How many times an assignment that no runner took is cancelled and made again; when the last
/// one runs out too, the job fails.
pub(crate) const MAX_REASSIGNMENTS: u32 = 3;
/// Most job messages batched into one queue message.
const MAX_BATCH: usize = 50;
/// What GitHub writes on a job that no runner acquired in time, however often it was offered.
pub(crate) const NOT_ACQUIRED: &str =
    "The job was not acquired by Runner of type self-hosted even after multiple attempts";
/// The `messageType` of every queue message.
pub(crate) const QUEUE_MESSAGE_TYPE: &str = "RunnerScaleSetJobMessages";
/// Length of message-queue tokens.
const QUEUE_TOKEN_LEN: usize = 48;
/// The reassignment timers are looked at no more often than this (they are checked on every
/// request and every 200 ms; a scan costs one look at each open job).
const TIMER_SCAN_EVERY: Duration = Duration::from_millis(50);
/// Below this many open jobs, debug builds check the incremental indexes against a recount
/// after every assignment pass.
#[cfg(debug_assertions)]
const CHECKED_UP_TO: usize = 512;

/// A token the emulator issued: compared and hashed like a string, never printed.
#[derive(Clone, PartialEq, Eq, Hash)]
pub(crate) struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

impl Borrow<str> for Secret {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl Secret {
    pub fn is(&self, token: &str) -> bool {
        self.0 == token
    }
}

/// One Actions-service base URL, made for a scope on its first registration.
#[derive(Debug, Clone)]
pub(crate) struct Tenant {
    /// Normalized scope.
    pub scope: Scope,
    /// `http://HOST/_services/pipelines/<key>`: what `runner-registration` answers as `url`.
    pub base_url: String,
}

/// An admin token from `runner-registration`.
#[derive(Debug, Clone)]
pub(crate) struct AdminToken {
    /// The tenant key it works for.
    pub tenant: String,
    pub expires_at: DateTime<Utc>,
    /// The REST credential that made the registration token it was traded for, if known.
    pub credential: Option<Bucket>,
}

/// Where a job is in a scale set's hands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stage {
    /// Sent as `JobAvailable`; becomes `Assigned` when the scale set acquires it.
    Offered,
    /// Sent as `JobAssigned`; the scale set's runners may take it.
    Assigned,
}

/// A job's offer to or assignment with one scale set.
#[derive(Debug, Clone)]
pub(crate) struct Assignment {
    pub scale_set_id: u64,
    /// The `runnerRequestId`: new for every offer or assignment (reassignments included).
    pub request_id: u64,
    pub stage: Stage,
    /// Assigned through `acquirejobs` (rather than directly).
    pub acquired: bool,
    /// `scaleSetAssignTime`, on the emulator clock.
    pub assigned_at: DateTime<Utc>,
    /// When the wait for a runner (or for an acquire) started; the reassignment timer counts
    /// from here.
    pub since: Instant,
}

/// A scale set's message session.
#[derive(Debug, Clone)]
pub(crate) struct Session {
    pub id: String,
    pub owner: String,
    pub queue_token: Secret,
    pub token_expires_at: DateTime<Utc>,
    /// The last poll or session call; the idle timeout counts from here.
    pub last_seen: Instant,
    /// Long polls waiting right now: a session being polled never expires.
    pub polls: usize,
}

impl Session {
    pub fn touch(&mut self) {
        self.last_seen = Instant::now();
    }
}

/// A runner scale set.
#[derive(Debug, Clone)]
pub(crate) struct ScaleSet {
    pub id: u64,
    pub name: String,
    /// Normalized scope (the admin token's).
    pub scope: Scope,
    /// The tenant key it was created through.
    pub tenant: String,
    pub runner_group_id: u64,
    /// Label names, as given (the name alone when none were).
    pub labels: Vec<String>,
    pub disable_update: bool,
    pub created_on: DateTime<Utc>,
    pub session: Option<Session>,
    pub sessions_created: usize,
    /// Delivered, unacknowledged messages: id -> body (the JSON text of an array).
    pub messages: BTreeMap<u64, String>,
    /// Job messages not yet put into a queue message.
    pub pending: Vec<Value>,
    pub next_message_id: u64,
    /// The last `X-ScaleSetMaxCapacity` a poll sent: at most this many jobs are offered or
    /// assigned to the scale set at once. `None` until a poll says.
    pub max_capacity: Option<u64>,
}

impl ScaleSet {
    /// The live session with this id.
    pub fn session_mut(&mut self, session_id: &str) -> Option<&mut Session> {
        self.session.as_mut().filter(|s| s.id == session_id)
    }
}

/// The service's state and knobs.
#[derive(Debug)]
pub(crate) struct Service {
    /// Tenant key -> tenant.
    pub tenants: BTreeMap<String, Tenant>,
    pub admin_tokens: HashMap<Secret, AdminToken>,
    pub scale_sets: BTreeMap<u64, ScaleSet>,
    pub next_scale_set_id: u64,
    pub next_request_id: u64,
    /// Signs admin tokens (HS256); random per emulator.
    signing_key: Secret,
    /// Faults for registration and Actions-service calls only.
    pub faults: Faults,
    pub admin_token_ttl: Duration,
    pub queue_token_ttl: Duration,
    pub session_idle_timeout: Duration,
    pub poll_timeout: Duration,
    pub reassign_after: Duration,
    /// Offer jobs with `JobAvailable` and assign them only when acquired.
    pub acquire_required: bool,
    /// Queue messages still to be dropped when they are made.
    pub drop_next: usize,
    /// Queue messages dropped so far.
    pub dropped: usize,
    /// Open, queued jobs no scale set holds: what an assignment pass looks at.
    pub unassigned: BTreeSet<u64>,
    /// Scale set id -> open jobs offered or assigned to it (its load under max capacity).
    pub load: HashMap<u64, u64>,
    /// When the reassignment timers were last scanned.
    last_timer_scan: Option<Instant>,
}

impl Default for Service {
    fn default() -> Self {
        Service {
            tenants: BTreeMap::new(),
            admin_tokens: HashMap::new(),
            scale_sets: BTreeMap::new(),
            next_scale_set_id: 1,
            next_request_id: 1,
            signing_key: Secret(random_string(ALNUM, 48)),
            faults: Faults::default(),
            admin_token_ttl: DEFAULT_ADMIN_TOKEN_TTL,
            queue_token_ttl: DEFAULT_QUEUE_TOKEN_TTL,
            session_idle_timeout: DEFAULT_SESSION_IDLE_TIMEOUT,
            poll_timeout: DEFAULT_POLL_TIMEOUT,
            reassign_after: DEFAULT_REASSIGN_AFTER,
            acquire_required: false,
            drop_next: 0,
            dropped: 0,
            unassigned: BTreeSet::new(),
            load: HashMap::new(),
            last_timer_scan: None,
        }
    }
}

/// A runner scale set as the emulator holds it (see [`crate::Emulator::scale_sets`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScaleSetView {
    /// Scale set id (global, increasing from 1).
    pub id: u64,
    /// Its name (also a label jobs may ask for).
    pub name: String,
    /// Its labels, as created or last updated (the name alone when none were given).
    pub labels: Vec<String>,
    /// Its runner group's id (1 = `Default`).
    pub runner_group_id: u64,
    /// The scope of the admin token that created it (lower-cased).
    pub scope: Scope,
    /// Live message sessions: 0 or 1.
    pub live_sessions: usize,
    /// Sessions ever opened on it.
    pub sessions_created: usize,
    /// The last `X-ScaleSetMaxCapacity` a poll sent (`None` before any).
    pub max_capacity: Option<u64>,
    /// `RunnerSetting.disableUpdate`.
    pub disable_update: bool,
    /// Delivered messages not acknowledged yet.
    pub unacknowledged_messages: usize,
}

/// A scale set's `statistics`, computed from the live state (see
/// [`crate::Emulator::scale_set_statistics`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ScaleSetStatistics {
    /// Jobs offered (`JobAvailable`) and not acquired yet.
    pub total_available_jobs: u64,
    /// Jobs the scale set acquired that no runner has taken yet.
    pub total_acquired_jobs: u64,
    /// Jobs assigned to the scale set and not completed (running ones included).
    pub total_assigned_jobs: u64,
    /// Assigned jobs a runner of the scale set is running.
    pub total_running_jobs: u64,
    /// Runners registered from the scale set's JIT configs.
    pub total_registered_runners: u64,
    /// Those holding a job.
    pub total_busy_runners: u64,
    /// Those holding none.
    pub total_idle_runners: u64,
}

/// What an Actions-service (or registration) call was, for
/// [`crate::Emulator::scaleset_call_counts`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ScaleSetCallKind {
    /// `POST /actions/runner-registration`.
    Registration,
    /// `POST …/runnerscalesets`.
    CreateScaleSet,
    /// `GET …/runnerscalesets?runnerGroupId=&name=`.
    FindScaleSets,
    /// `GET …/runnerscalesets/{id}`.
    GetScaleSet,
    /// `PATCH …/runnerscalesets/{id}`.
    UpdateScaleSet,
    /// `DELETE …/runnerscalesets/{id}`.
    DeleteScaleSet,
    /// `POST …/runnerscalesets/{id}/sessions`.
    CreateSession,
    /// `PATCH …/sessions/{sid}`.
    RefreshSession,
    /// `DELETE …/sessions/{sid}`.
    DeleteSession,
    /// `GET` on the message queue (the long poll).
    GetMessage,
    /// `DELETE` on the message queue (the acknowledgement).
    DeleteMessage,
    /// `POST …/runnerscalesets/{id}/acquirejobs`.
    AcquireJobs,
    /// `POST …/runnerscalesets/{id}/generatejitconfig`.
    GenerateJitConfig,
    /// `GET …/_apis/runtime/runnergroups`.
    ListRunnerGroups,
    /// `GET …/agents?agentName=`.
    FindRunners,
    /// `GET …/agents/{id}`.
    GetRunner,
    /// `DELETE …/agents/{id}`.
    DeleteRunner,
    /// Anything else under the Actions service (answered 404).
    Other,
}

/// Claims of an admin token (a JWT, so clients can read `exp`).
#[derive(Serialize)]
struct AdminClaims<'a> {
    iss: &'static str,
    aud: &'a str,
    sub: String,
    scp: &'static str,
    iat: i64,
    nbf: i64,
    exp: i64,
    jti: String,
}

/// A file-name-like form of a workflow's name, for `jobWorkflowRef`.
fn slug(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect()
}

/// `0001-01-01T00:00:00Z` (a time that has not happened) or the time.
fn time_or_zero(t: Option<DateTime<Utc>>) -> String {
    t.map_or_else(|| "0001-01-01T00:00:00Z".to_owned(), timestamp)
}

/// The fields every job message has (facts §3 item 5).
fn job_message(job: &Job, kind: &str, assignment: &Assignment) -> Map<String, Value> {
    let repository = &job.view.repository;
    let (owner, repo) = repository
        .split_once('/')
        .unwrap_or((repository.as_str(), ""));
    let workflow_ref = format!(
        "{repository}/.github/workflows/{}.yml@refs/heads/{}",
        slug(&job.view.workflow),
        job.head_branch
    );
    let value = json!({
        "messageType": kind,
        "runnerRequestId": assignment.request_id,
        "repositoryName": repo,
        "ownerName": owner,
        "jobId": job.view.id.to_string(),
        "jobWorkflowRef": workflow_ref,
        "jobDisplayName": job.view.name,
        "workflowRunId": job.view.run_id,
        "eventName": "push",
        "requestLabels": job.view.labels,
        "queueTime": timestamp(job.view.created_at),
        "scaleSetAssignTime": timestamp(assignment.assigned_at),
        "runnerAssignTime": time_or_zero(job.view.started_at),
        "finishTime": time_or_zero(job.view.completed_at),
    });
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

/// `JobCompleted` with `result` and the job's runner (0 and "" when it had none).
fn completed_message(job: &Job, assignment: &Assignment, result: &str) -> Map<String, Value> {
    let mut message = job_message(job, "JobCompleted", assignment);
    message.insert("result".into(), json!(result));
    message.insert("runnerId".into(), json!(job.view.runner_id.unwrap_or(0)));
    message.insert(
        "runnerName".into(),
        json!(job.view.runner_name.clone().unwrap_or_default()),
    );
    message
}

/// The scale-set spelling of a job conclusion.
pub(crate) fn result_of(conclusion: Conclusion) -> &'static str {
    match conclusion {
        Conclusion::Success => "succeeded",
        Conclusion::Failure => "failed",
        Conclusion::Cancelled => "canceled",
        Conclusion::Skipped => "skipped",
    }
}

/// The labels a scale set keeps: those given (duplicates dropped, case-insensitively), or its
/// name when none were.
pub(crate) fn scale_set_labels(name: &str, given: Vec<String>) -> Vec<String> {
    let mut labels: Vec<String> = Vec::new();
    for label in given {
        if !labels.iter().any(|l| l.eq_ignore_ascii_case(&label)) {
            labels.push(label);
        }
    }
    if labels.is_empty() {
        labels.push(name.to_owned());
    }
    labels
}

impl State {
    // ---- tenants and tokens ---------------------------------------------------------------

    /// The tenant key of `scope`, made on first use; its base URL follows `host_url` (the host
    /// the latest registration came through).
    pub fn tenant_for(&mut self, scope: &Scope, host_url: &str) -> String {
        let scope = scope.normalized();
        let existing = self
            .scaleset
            .tenants
            .iter()
            .find(|(_, t)| t.scope == scope)
            .map(|(key, _)| key.clone());
        let key = existing.unwrap_or_else(|| random_string(ALNUM, 30));
        self.scaleset.tenants.insert(
            key.clone(),
            Tenant {
                scope,
                base_url: format!("{host_url}/_services/pipelines/{key}"),
            },
        );
        key
    }

    /// A new admin token for `tenant`, on behalf of `credential` (the REST credential behind
    /// the registration token): a signed JWT whose `exp` says when it stops working.
    pub fn mint_admin_token(&mut self, tenant: &str, credential: Option<Bucket>) -> String {
        let now = self.now();
        let expires_at = self.expiry(self.scaleset.admin_token_ttl);
        let sub = self
            .scaleset
            .tenants
            .get(tenant)
            .map(|t| t.scope.path())
            .unwrap_or_default();
        let claims = AdminClaims {
            iss: "hangar-emulator",
            aud: tenant,
            sub,
            scp: "Actions.RunnerScaleSetAdmin",
            iat: now.timestamp(),
            nbf: now.timestamp(),
            exp: expires_at.timestamp(),
            jti: uuid_like(),
        };
        let key = EncodingKey::from_secret(self.scaleset.signing_key.0.as_bytes());
        // Signing with an in-memory HMAC key cannot fail; a random opaque token would still be
        // accepted by the emulator, only without a readable `exp`.
        let token =
            encode(&Header::default(), &claims, &key).unwrap_or_else(|_| random_string(ALNUM, 64));
        self.scaleset.admin_tokens.insert(
            Secret(token.clone()),
            AdminToken {
                tenant: tenant.to_owned(),
                expires_at,
                credential,
            },
        );
        token
    }

    /// `{tenant base}/_apis/runtime/runnerscalesets/{id}`, if the scale set exists.
    pub fn scale_set_url(&self, id: u64) -> Option<String> {
        let set = self.scaleset.scale_sets.get(&id)?;
        let tenant = self.scaleset.tenants.get(&set.tenant)?;
        Some(format!(
            "{}/_apis/runtime/runnerscalesets/{id}",
            tenant.base_url
        ))
    }

    /// Opens a session on a scale set that has none and returns its id.
    pub fn open_scale_set_session(&mut self, id: u64, owner: String) -> Option<String> {
        let token_expires_at = self.expiry(self.scaleset.queue_token_ttl);
        let set = self.scaleset.scale_sets.get_mut(&id)?;
        let session_id = uuid_like();
        set.session = Some(Session {
            id: session_id.clone(),
            owner,
            queue_token: Secret(random_string(ALNUM, QUEUE_TOKEN_LEN)),
            token_expires_at,
            last_seen: Instant::now(),
            polls: 0,
        });
        set.sessions_created += 1;
        Some(session_id)
    }

    /// Gives a live session a new queue token (the old one stops working at once).
    pub fn refresh_scale_set_session(&mut self, id: u64, session_id: &str) -> bool {
        let token_expires_at = self.expiry(self.scaleset.queue_token_ttl);
        let Some(session) = self
            .scaleset
            .scale_sets
            .get_mut(&id)
            .and_then(|s| s.session_mut(session_id))
        else {
            return false;
        };
        session.queue_token = Secret(random_string(ALNUM, QUEUE_TOKEN_LEN));
        session.token_expires_at = token_expires_at;
        session.touch();
        true
    }

    /// Ends every scale-set session (their polls then answer 404).
    pub fn expire_scale_set_sessions(&mut self) {
        for set in self.scaleset.scale_sets.values_mut() {
            set.session = None;
        }
        self.wake_pollers();
    }

    // ---- views ----------------------------------------------------------------------------

    pub fn scale_set_view(&self, set: &ScaleSet) -> ScaleSetView {
        ScaleSetView {
            id: set.id,
            name: set.name.clone(),
            labels: set.labels.clone(),
            runner_group_id: set.runner_group_id,
            scope: set.scope.clone(),
            live_sessions: usize::from(set.session.is_some()),
            sessions_created: set.sessions_created,
            max_capacity: set.max_capacity,
            disable_update: set.disable_update,
            unacknowledged_messages: set.messages.len(),
        }
    }

    /// The scale set's statistics from the live jobs and runners.
    pub fn scale_set_statistics(&self, id: u64) -> ScaleSetStatistics {
        let mut stats = ScaleSetStatistics::default();
        for job in self.open_jobs() {
            let Some(a) = job.assignment.as_ref().filter(|a| a.scale_set_id == id) else {
                continue;
            };
            match (job.view.status, a.stage) {
                (JobStatus::Completed, _) => {}
                (_, Stage::Offered) => stats.total_available_jobs += 1,
                (JobStatus::InProgress, Stage::Assigned) => {
                    stats.total_assigned_jobs += 1;
                    stats.total_running_jobs += 1;
                }
                (JobStatus::Queued, Stage::Assigned) => {
                    stats.total_assigned_jobs += 1;
                    if a.acquired {
                        stats.total_acquired_jobs += 1;
                    }
                }
            }
        }
        for runner in self.runners.values() {
            if runner.scale_set_id == Some(id) {
                stats.total_registered_runners += 1;
                if runner.busy || runner.job.is_some() {
                    stats.total_busy_runners += 1;
                }
            }
        }
        stats.total_idle_runners = stats.total_registered_runners - stats.total_busy_runners;
        stats
    }

    // ---- demand ---------------------------------------------------------------------------

    /// Queues a job message for a scale set's next queue message and wakes its poll.
    fn push_job_message(&mut self, scale_set_id: u64, message: Map<String, Value>) {
        if let Some(set) = self.scaleset.scale_sets.get_mut(&scale_set_id) {
            set.pending.push(Value::Object(message));
            self.wake_pollers();
        }
    }

    /// Brings a job's place in the indexes ([`Service::unassigned`], [`Service::load`]) up to
    /// date with its status and assignment. Called after every change of either; idempotent.
    pub fn reindex_job(&mut self, job_id: u64) {
        let Some(job) = self.jobs.get_mut(&job_id) else {
            return;
        };
        let open = job.view.status != JobStatus::Completed;
        let holder = job
            .assignment
            .as_ref()
            .filter(|_| open)
            .map(|a| a.scale_set_id);
        if job.counted_in != holder {
            if let Some(old) = job.counted_in
                && let Some(load) = self.scaleset.load.get_mut(&old)
            {
                *load = load.saturating_sub(1);
            }
            if let Some(new) = holder {
                *self.scaleset.load.entry(new).or_default() += 1;
            }
            job.counted_in = holder;
        }
        if job.view.status == JobStatus::Queued && job.assignment.is_none() {
            self.scaleset.unassigned.insert(job_id);
        } else {
            self.scaleset.unassigned.remove(&job_id);
        }
    }

    /// Whether scale set `set` may be given one more job.
    fn has_room(&self, set: &ScaleSet) -> bool {
        let load = self.scaleset.load.get(&set.id).copied().unwrap_or(0);
        set.max_capacity.is_none_or(|max| load < max)
    }

    /// The first scale set (by id) with room that job `job_id` fits.
    fn scale_set_for(&self, job_id: u64) -> Option<u64> {
        let job = self.jobs.get(&job_id)?;
        self.scaleset
            .scale_sets
            .values()
            .find(|s| self.has_room(s) && job.fits_scale_set(&s.scope, &s.name, &s.labels))
            .map(|s| s.id)
    }

    /// Offers or assigns one queued, unassigned job to the first scale set (by id) it fits that
    /// has room under its reported max capacity.
    pub fn assign_scale_set_job(&mut self, job_id: u64) {
        if !self.scaleset.unassigned.contains(&job_id) {
            return;
        }
        if let Some(scale_set_id) = self.scale_set_for(job_id) {
            self.assign_job(job_id, scale_set_id);
        }
    }

    /// [`State::assign_scale_set_job`] for every queued, unassigned job, oldest first, until no
    /// scale set has room.
    pub fn assign_scale_set_jobs(&mut self) {
        let mut after = 0;
        loop {
            let any_room = self.scaleset.scale_sets.values().any(|s| self.has_room(s));
            if !any_room {
                break;
            }
            let Some(job_id) = self.scaleset.unassigned.range(after..).next().copied() else {
                break;
            };
            after = job_id + 1;
            self.assign_scale_set_job(job_id);
        }
        #[cfg(debug_assertions)]
        if self.open_jobs.len() <= CHECKED_UP_TO {
            self.check_indexes();
        }
    }

    /// Panics unless the incremental indexes match a recount from the jobs themselves.
    #[cfg(debug_assertions)]
    fn check_indexes(&self) {
        let mut load: HashMap<u64, u64> = HashMap::new();
        let mut unassigned = BTreeSet::new();
        for job in self.jobs.values() {
            if job.view.status == JobStatus::Completed {
                continue;
            }
            match &job.assignment {
                Some(a) => *load.entry(a.scale_set_id).or_default() += 1,
                None if job.view.status == JobStatus::Queued => {
                    unassigned.insert(job.view.id);
                }
                None => {}
            }
        }
        assert_eq!(unassigned, self.scaleset.unassigned, "unassigned index");
        for set in self.scaleset.scale_sets.values() {
            assert_eq!(
                load.get(&set.id).copied().unwrap_or(0),
                self.scaleset.load.get(&set.id).copied().unwrap_or(0),
                "load of scale set {}",
                set.id
            );
        }
    }

    /// Offers (acquire mode) or assigns a job to a scale set and queues the message saying so.
    fn assign_job(&mut self, job_id: u64, scale_set_id: u64) {
        let now = self.now();
        let request_id = self.scaleset.next_request_id;
        self.scaleset.next_request_id += 1;
        let offered = self.scaleset.acquire_required;
        let acquire_url = self
            .scale_set_url(scale_set_id)
            .map(|u| format!("{u}/acquirejobs"));
        let Some(job) = self.jobs.get_mut(&job_id) else {
            return;
        };
        let assignment = Assignment {
            scale_set_id,
            request_id,
            stage: if offered {
                Stage::Offered
            } else {
                Stage::Assigned
            },
            acquired: false,
            assigned_at: now,
            since: Instant::now(),
        };
        job.assignments += 1;
        let message = if offered {
            let mut m = job_message(job, "JobAvailable", &assignment);
            m.insert("acquireJobUrl".into(), json!(acquire_url));
            m
        } else {
            job_message(job, "JobAssigned", &assignment)
        };
        job.assignment = Some(assignment);
        self.reindex_job(job_id);
        self.push_job_message(scale_set_id, message);
    }

    /// Acquires the offered jobs among `request_ids` for scale set `id` (they become assigned)
    /// and returns the ids acquired, in request order.
    pub fn acquire_scale_set_jobs(&mut self, id: u64, request_ids: &[u64]) -> Vec<u64> {
        let mut acquired = Vec::new();
        for &request_id in request_ids {
            let offered = self.open_jobs().find(|j| {
                j.view.status == JobStatus::Queued
                    && j.assignment.as_ref().is_some_and(|a| {
                        a.scale_set_id == id
                            && a.request_id == request_id
                            && a.stage == Stage::Offered
                    })
            });
            let Some(job) = offered
                .map(|j| j.view.id)
                .and_then(|job_id| self.jobs.get_mut(&job_id))
            else {
                continue;
            };
            let Some(a) = job.assignment.as_mut() else {
                continue;
            };
            a.stage = Stage::Assigned;
            a.acquired = true;
            a.since = Instant::now();
            let a = a.clone();
            let message = job_message(job, "JobAssigned", &a);
            acquired.push(request_id);
            self.push_job_message(id, message);
        }
        acquired
    }

    /// `JobStarted` for a scale-set job a runner just took.
    pub fn scale_set_job_started(&mut self, job_id: u64) {
        let Some(job) = self.jobs.get(&job_id) else {
            return;
        };
        let Some(a) = &job.assignment else {
            return;
        };
        let mut message = job_message(job, "JobStarted", a);
        message.insert("runnerId".into(), json!(job.view.runner_id.unwrap_or(0)));
        message.insert(
            "runnerName".into(),
            json!(job.view.runner_name.clone().unwrap_or_default()),
        );
        let scale_set_id = a.scale_set_id;
        self.push_job_message(scale_set_id, message);
    }

    /// `JobCompleted` for a scale-set job that just completed.
    pub fn scale_set_job_completed(&mut self, job_id: u64, conclusion: Conclusion) {
        let Some(job) = self.jobs.get(&job_id) else {
            return;
        };
        let Some(a) = &job.assignment else {
            return;
        };
        let message = completed_message(job, a, result_of(conclusion));
        let scale_set_id = a.scale_set_id;
        self.push_job_message(scale_set_id, message);
    }

    /// Scale-set timers: idle sessions end; offers nobody acquired in time are made again;
    /// assignments no runner took in time are cancelled (`JobCompleted` `canceled`) and made
    /// again, up to [`MAX_REASSIGNMENTS`] times, after which the job fails; then free jobs are
    /// assigned.
    pub fn scale_set_housekeeping(&mut self) {
        if self.scaleset.scale_sets.is_empty() {
            return;
        }
        let idle_timeout = self.scaleset.session_idle_timeout;
        let mut ended = false;
        for set in self.scaleset.scale_sets.values_mut() {
            if set
                .session
                .as_ref()
                .is_some_and(|s| s.polls == 0 && s.last_seen.elapsed() >= idle_timeout)
            {
                set.session = None;
                ended = true;
            }
        }
        let scanned_lately = self
            .scaleset
            .last_timer_scan
            .is_some_and(|t| t.elapsed() < TIMER_SCAN_EVERY);
        if scanned_lately {
            if ended {
                self.wake_pollers();
            }
            return;
        }
        self.scaleset.last_timer_scan = Some(Instant::now());
        let wait = self.scaleset.reassign_after;
        let due: Vec<u64> = self
            .open_jobs()
            .filter(|j| {
                j.view.status == JobStatus::Queued
                    && j.assignment
                        .as_ref()
                        .is_some_and(|a| a.since.elapsed() >= wait)
            })
            .map(|j| j.view.id)
            .collect();
        let any_due = !due.is_empty();
        for job_id in due {
            self.assignment_ran_out(job_id);
        }
        if any_due {
            self.assign_scale_set_jobs();
        }
        if ended {
            self.wake_pollers();
        }
    }

    /// An offer or assignment of a queued job waited `reassign_after` for nothing.
    fn assignment_ran_out(&mut self, job_id: u64) {
        let acquire_url = self
            .jobs
            .get(&job_id)
            .and_then(|j| j.assignment.as_ref())
            .and_then(|a| self.scale_set_url(a.scale_set_id))
            .map(|u| format!("{u}/acquirejobs"));
        let Some(job) = self.jobs.get_mut(&job_id) else {
            return;
        };
        let Some(a) = job.assignment.as_mut() else {
            return;
        };
        match a.stage {
            Stage::Offered => {
                // The offer may have been lost with its message: make it again, same request.
                a.since = Instant::now();
                let a = a.clone();
                let mut message = job_message(job, "JobAvailable", &a);
                message.insert("acquireJobUrl".into(), json!(acquire_url));
                self.push_job_message(a.scale_set_id, message);
            }
            Stage::Assigned if job.assignments > MAX_REASSIGNMENTS => {
                self.append_log(job_id, -2, vec![NOT_ACQUIRED.to_owned()]);
                self.complete_job(job_id, Conclusion::Failure);
            }
            Stage::Assigned => {
                let Some(a) = job.assignment.take() else {
                    return;
                };
                let message = completed_message(job, &a, "canceled");
                self.reindex_job(job_id);
                self.push_job_message(a.scale_set_id, message);
            }
        }
    }

    // ---- the message queue ----------------------------------------------------------------

    /// The message a poll with `last_message_id` gets: the oldest unacknowledged one after it,
    /// else a new one batching the pending job messages (one the drop knob swallows is made and
    /// lost). `None`: nothing to say.
    pub fn next_scale_set_message(
        &mut self,
        id: u64,
        last_message_id: u64,
    ) -> Option<(u64, String)> {
        let service = &mut self.scaleset;
        let set = service.scale_sets.get_mut(&id)?;
        if let Some((message_id, body)) = set.messages.range(last_message_id + 1..).next() {
            return Some((*message_id, body.clone()));
        }
        while !set.pending.is_empty() {
            let batch: Vec<Value> = set
                .pending
                .drain(..set.pending.len().min(MAX_BATCH))
                .collect();
            // Above whatever the client has seen, so a stale lastMessageId never hides it.
            let message_id = set.next_message_id.max(last_message_id + 1);
            set.next_message_id = message_id + 1;
            if service.drop_next > 0 {
                service.drop_next -= 1;
                service.dropped += 1;
                continue;
            }
            let body = Value::Array(batch).to_string();
            set.messages.insert(message_id, body.clone());
            return Some((message_id, body));
        }
        None
    }

    /// Acknowledges a message: `Some(true)` removed (or acknowledged before), `None` when the
    /// scale set never issued that id.
    pub fn ack_scale_set_message(&mut self, id: u64, message_id: u64) -> Option<bool> {
        let set = self.scaleset.scale_sets.get_mut(&id)?;
        if set.messages.remove(&message_id).is_some() || message_id < set.next_message_id {
            Some(true)
        } else {
            None
        }
    }

    // ---- life cycle -----------------------------------------------------------------------

    /// Deletes a scale set: its session and messages go, jobs offered or assigned to it (not
    /// running) are free again, its runners that hold no job are removed; runners running a job
    /// finish it (and, being ephemeral, go then).
    pub fn delete_scale_set(&mut self, id: u64) -> bool {
        if self.scaleset.scale_sets.remove(&id).is_none() {
            return false;
        }
        let held: Vec<u64> = self
            .open_jobs()
            .filter(|j| {
                j.view.status == JobStatus::Queued
                    && j.assignment.as_ref().is_some_and(|a| a.scale_set_id == id)
            })
            .map(|j| j.view.id)
            .collect();
        self.scaleset.load.remove(&id);
        for job_id in held {
            if let Some(job) = self.jobs.get_mut(&job_id) {
                job.assignment = None;
            }
            self.reindex_job(job_id);
        }
        let idle: Vec<u64> = self
            .runners
            .values()
            .filter(|r| r.scale_set_id == Some(id) && r.job.is_none() && !r.busy)
            .map(|r| r.id)
            .collect();
        for runner_id in idle {
            self.delete_runner(runner_id);
        }
        self.assign_scale_set_jobs();
        self.wake_pollers();
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_stay_out_of_debug_output() {
        let mut service = Service::default();
        service.admin_tokens.insert(
            Secret("admin-token-value".into()),
            AdminToken {
                tenant: "t".into(),
                expires_at: Utc::now(),
                credential: None,
            },
        );
        let printed = format!("{service:?}");
        assert!(!printed.contains("admin-token-value"));
        assert!(!printed.contains(&service.signing_key.0));
        let session = Session {
            id: "s".into(),
            owner: "o".into(),
            queue_token: Secret("queue-token-value".into()),
            token_expires_at: Utc::now(),
            last_seen: Instant::now(),
            polls: 0,
        };
        assert!(!format!("{session:?}").contains("queue-token-value"));
    }

    #[test]
    fn labels_default_to_the_name_and_drop_duplicates() {
        assert_eq!(scale_set_labels("hangar", vec![]), vec!["hangar"]);
        assert_eq!(
            scale_set_labels("hangar", vec!["a".into(), "A".into(), "b".into()]),
            vec!["a", "b"]
        );
    }

    #[test]
    fn results_are_spelled_as_the_service_does() {
        assert_eq!(result_of(Conclusion::Success), "succeeded");
        assert_eq!(result_of(Conclusion::Failure), "failed");
        assert_eq!(result_of(Conclusion::Cancelled), "canceled");
    }

    #[test]
    fn workflow_slugs() {
        assert_eq!(slug("CI Build"), "ci-build");
    }
}
