//! The emulator's mutable state: the world's organizations, repositories, tokens, Apps and
//! installations, plus everything created at run time (runners and their protocol sessions,
//! registration tokens, installation tokens, seen JWTs, jobs, webhooks and their deliveries), the
//! clock, the fault and rate-limit state, the call logs, runner groups and the runner scale set
//! service (`scaleset.rs`). One [`State`] lives behind a
//! `std::sync::Mutex` in [`Shared`]; every request handles itself entirely under that lock (no
//! `.await` while it is held). Long polls wait outside the lock on [`State::changed`], which every
//! change a poller might care about signals. The runner and job life-cycle transitions (session
//! start and end, claim, requeue, completion, deletion) live here as `State` methods so that every
//! path into them (protocol, REST, Actions service, `Emulator` knobs) emits the same events,
//! webhooks and scale-set messages.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use rand::Rng;
use tokio::sync::{Notify, broadcast, mpsc};

use crate::bad_days::BadDays;
use crate::faults::{Bucket, Faults, RateLimiter};
use crate::jobs::{
    Conclusion, Job, JobEvent, JobSpec, JobStatus, JobView, LogLine, RunnerMessage, StepView,
};
use crate::scaleset::Service;
use crate::webhooks::{Outgoing, Webhook, WebhookAction};
use crate::world::RunnerSpec;
use crate::world::{Scope, World};
use crate::{CallRecord, RunnerCall, RunnerView, WebhookDelivery};

/// How long a runner session lives without a poll or an event, unless changed.
pub(crate) const DEFAULT_SESSION_TIMEOUT: Duration = Duration::from_secs(90);
/// Events kept for slow subscribers before they see `Lagged`.
const EVENT_CAPACITY: usize = 4096;

/// The read-only labels every runner has, in GitHub's order.
pub(crate) const DEFAULT_LABELS: [&str; 3] = ["self-hosted", "Linux", "X64"];

/// State shared by the server task and every [`crate::Emulator`] handle.
#[derive(Debug)]
pub(crate) struct Shared {
    state: Mutex<State>,
}

impl Shared {
    pub fn new(state: State) -> Self {
        Shared {
            state: Mutex::new(state),
        }
    }

    /// Locks the state. A panic in another holder does not make the state unusable.
    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Org {
    pub id: u64,
    pub login: String,
}

#[derive(Debug, Clone)]
pub(crate) struct Repo {
    pub id: u64,
    /// Display login of the owner organization.
    pub owner: String,
    /// Display name.
    pub name: String,
}

#[derive(Debug, Clone)]
pub(crate) struct Pat {
    pub login: String,
    pub user_id: u64,
    pub scopes: Vec<String>,
    pub fine_grained: bool,
}

impl Pat {
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s == scope)
    }
}

#[derive(Debug, Clone)]
pub(crate) struct App {
    pub id: u64,
    pub client_id: String,
    pub slug: String,
    pub public_key_pem: String,
}

#[derive(Debug, Clone)]
pub(crate) struct Installation {
    pub id: u64,
    pub app_id: u64,
    /// Display login of the account organization.
    pub account: String,
    pub permissions: BTreeMap<String, String>,
    pub suspended_at: Option<DateTime<Utc>>,
}

impl Installation {
    /// Whether the installation grants `name` at `level` (`write` implies `read`).
    pub fn allows(&self, name: &str, level: &str) -> bool {
        permission_allows(&self.permissions, name, level)
    }
}

/// Whether `permissions` grant `name` at `level` (`write` implies `read`).
pub(crate) fn permission_allows(
    permissions: &BTreeMap<String, String>,
    name: &str,
    level: &str,
) -> bool {
    match permissions.get(name).map(String::as_str) {
        Some("write") | Some("admin") => true,
        Some("read") => level == "read",
        _ => false,
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Runner {
    pub id: u64,
    /// Normalized (lower-case) scope.
    pub scope: Scope,
    pub name: String,
    pub online: bool,
    pub busy: bool,
    pub ephemeral: bool,
    /// Custom labels only.
    pub labels: Vec<String>,
    pub runner_group_id: u64,
    /// Registered without the read-only default labels.
    pub no_default_labels: bool,
    /// The secret the runner authenticates with on the runner protocol (registered and JIT
    /// runners; runners made by `add_runner` or the world have none).
    pub credential: Option<String>,
    /// Created through a JIT config.
    pub jit: bool,
    /// The version the runner registered or last opened a session with.
    pub version: Option<String>,
    /// The live (or not yet noticed expired) protocol session.
    pub session: Option<Session>,
    pub sessions_created: usize,
    /// The job it holds (in progress).
    pub job: Option<u64>,
    /// Control messages for its next polls.
    pub messages: VecDeque<RunnerMessage>,
    /// Whether [`JobEvent::RunnerListening`] was sent since the runner last became idle.
    pub listening_announced: bool,
    /// The runner scale set whose JIT config made it: it takes only that scale set's jobs.
    pub scale_set_id: Option<u64>,
    /// When it was created (registered, or its JIT config made).
    pub created_at: Instant,
    /// When it last became busy (took a job, or was set busy); the REST `busy` flag may lag
    /// behind it (`bad_days.rs`).
    pub busy_since: Option<Instant>,
    /// Whether it ever took a job (an idle JIT runner that never did may expire, `bad_days.rs`).
    pub took_a_job: bool,
}

/// A runner's protocol session.
#[derive(Debug, Clone)]
pub(crate) struct Session {
    pub id: String,
    /// The last poll or job event; expiry counts from here.
    pub last_seen: Instant,
    /// Long polls waiting right now: a runner that is polling is never expired.
    pub polls: usize,
    pub disable_update: bool,
}

impl Session {
    /// Records a sign of life: expiry counts from now.
    pub fn touch(&mut self) {
        self.last_seen = Instant::now();
    }
}

impl Runner {
    /// All label names: the read-only defaults (unless registered without them), then the custom
    /// labels.
    pub fn label_names(&self) -> Vec<String> {
        self.default_labels()
            .iter()
            .map(|l| (*l).to_owned())
            .chain(self.labels.iter().cloned())
            .collect()
    }

    /// The read-only labels it carries: [`DEFAULT_LABELS`], or none if registered without them.
    fn default_labels(&self) -> &'static [&'static str] {
        if self.no_default_labels {
            &[]
        } else {
            &DEFAULT_LABELS
        }
    }

    /// How many of [`Runner::label_names`] are read-only.
    pub fn read_only_labels(&self) -> usize {
        self.default_labels().len()
    }

    pub fn view(&self) -> RunnerView {
        RunnerView {
            id: self.id,
            name: self.name.clone(),
            online: self.online,
            busy: self.busy,
            labels: self.label_names(),
            ephemeral: self.ephemeral,
            scale_set_id: self.scale_set_id,
        }
    }
}

/// Which endpoint issued a runner token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RunnerTokenKind {
    Registration,
    Remove,
}

#[derive(Debug, Clone)]
pub(crate) struct RunnerToken {
    pub kind: RunnerTokenKind,
    pub scope: Scope,
    pub expires_at: DateTime<Utc>,
    /// The credential that asked for it (an admin token traded for it spends that
    /// credential's secondary-limit points).
    pub issued_by: Option<Bucket>,
}

#[derive(Debug, Clone)]
pub(crate) struct InstallationToken {
    pub installation_id: u64,
    /// What the token may do (the installation's permissions, or fewer if narrowed at minting).
    pub permissions: BTreeMap<String, String>,
    pub expires_at: DateTime<Utc>,
}

/// A runner group beyond `Default` (id 1, which every organization has).
#[derive(Debug, Clone)]
pub(crate) struct RunnerGroup {
    /// Lower-case organization login.
    pub org: String,
    pub name: String,
}

/// Everything the emulator knows. See the module docs.
#[derive(Debug)]
pub(crate) struct State {
    /// Lower-case login -> org.
    pub orgs: BTreeMap<String, Org>,
    /// (lower-case owner, lower-case name) -> repo.
    pub repos: BTreeMap<(String, String), Repo>,
    pub pats: HashMap<String, Pat>,
    pub apps: BTreeMap<u64, App>,
    pub installations: BTreeMap<u64, Installation>,
    pub runners: BTreeMap<u64, Runner>,
    pub next_runner_id: u64,
    /// Lower-case label name -> label id.
    pub label_ids: HashMap<String, u64>,
    pub runner_tokens: HashMap<String, RunnerToken>,
    pub installation_tokens: HashMap<String, InstallationToken>,
    /// (app id, jti or whole token) -> `exp`, to refuse replays; pruned once expired.
    pub seen_jwts: HashMap<(u64, String), i64>,
    pub faults: Faults,
    pub rate: RateLimiter,
    pub clock_offset_secs: i64,
    pub installation_token_ttl: Duration,
    pub registration_token_ttl: Duration,
    pub calls: Vec<CallRecord>,
    pub jit_configs_issued: usize,
    pub jobs: BTreeMap<u64, Job>,
    /// Ids of the jobs not completed yet: what the queue rules look at, so that their cost
    /// follows the live jobs rather than every job ever enqueued.
    pub open_jobs: BTreeSet<u64>,
    pub next_job_id: u64,
    pub next_run_id: u64,
    pub session_timeout: Duration,
    /// Signalled on every change a long poll may be waiting for.
    pub changed: Arc<Notify>,
    pub events: broadcast::Sender<JobEvent>,
    pub webhooks: Vec<Webhook>,
    pub deliveries: Vec<WebhookDelivery>,
    /// Where webhook deliveries go to be sent, outside the lock; `None` until the server starts.
    pub outbox: Option<mpsc::UnboundedSender<Outgoing>>,
    /// `http://ADDR`, for URLs in webhook payloads.
    pub base_url: String,
    /// Faults for the runner protocol only, so a polling runner never eats REST faults.
    pub runner_faults: Faults,
    pub runner_calls: Vec<RunnerCall>,
    /// Runner groups by id (from 2; 1 is every organization's `Default`).
    pub runner_groups: BTreeMap<u64, RunnerGroup>,
    /// The Actions runner scale set service.
    pub scaleset: Service,
    /// GitHub's bad days: secondary limit, lagging `busy`, idle JIT runner expiry.
    pub bad_days: BadDays,
}

impl State {
    /// Builds the initial state from a world description.
    pub fn from_world(world: World) -> Self {
        let mut state = State {
            orgs: BTreeMap::new(),
            repos: BTreeMap::new(),
            pats: HashMap::new(),
            apps: BTreeMap::new(),
            installations: BTreeMap::new(),
            runners: BTreeMap::new(),
            next_runner_id: 1,
            label_ids: HashMap::new(),
            runner_tokens: HashMap::new(),
            installation_tokens: HashMap::new(),
            seen_jwts: HashMap::new(),
            faults: Faults::default(),
            rate: RateLimiter::default(),
            clock_offset_secs: 0,
            installation_token_ttl: Duration::from_secs(3600),
            registration_token_ttl: Duration::from_secs(3600),
            calls: Vec::new(),
            jit_configs_issued: 0,
            jobs: BTreeMap::new(),
            open_jobs: BTreeSet::new(),
            next_job_id: 1,
            next_run_id: 5001,
            session_timeout: DEFAULT_SESSION_TIMEOUT,
            changed: Arc::new(Notify::new()),
            events: broadcast::channel(EVENT_CAPACITY).0,
            webhooks: Vec::new(),
            deliveries: Vec::new(),
            outbox: None,
            base_url: "http://127.0.0.1".to_owned(),
            runner_faults: Faults::default(),
            runner_calls: Vec::new(),
            runner_groups: BTreeMap::new(),
            scaleset: Service::default(),
            bad_days: BadDays::default(),
        };
        for label in DEFAULT_LABELS {
            state.label_id(label);
        }
        for (i, login) in world.orgs.iter().enumerate() {
            state.orgs.insert(
                login.to_ascii_lowercase(),
                Org {
                    id: 1000 + i as u64,
                    login: login.clone(),
                },
            );
        }
        for (i, (owner, name)) in world.repos.iter().enumerate() {
            let owner_login = state
                .org(owner)
                .map(|o| o.login.clone())
                .unwrap_or_else(|| owner.clone());
            state.repos.insert(
                (owner.to_ascii_lowercase(), name.to_ascii_lowercase()),
                Repo {
                    id: 2000 + i as u64,
                    owner: owner_login,
                    name: name.clone(),
                },
            );
        }
        let mut user_ids: HashMap<String, u64> = HashMap::new();
        for pat in world.pats {
            let next = user_ids.len() as u64 + 1;
            let user_id = *user_ids
                .entry(pat.login.to_ascii_lowercase())
                .or_insert(next);
            state.pats.insert(
                pat.token,
                Pat {
                    login: pat.login,
                    user_id,
                    scopes: pat.scopes,
                    fine_grained: pat.fine_grained,
                },
            );
        }
        for app in world.apps {
            state.apps.insert(
                app.id,
                App {
                    id: app.id,
                    client_id: app.client_id,
                    slug: app.slug,
                    public_key_pem: app.public_key_pem,
                },
            );
        }
        let now = state.now();
        for inst in world.installations {
            let account = state
                .org(&inst.account)
                .map(|o| o.login.clone())
                .unwrap_or(inst.account);
            state.installations.insert(
                inst.id,
                Installation {
                    id: inst.id,
                    app_id: inst.app_id,
                    account,
                    permissions: inst.permissions.into_iter().collect(),
                    suspended_at: inst.suspended.then_some(now),
                },
            );
        }
        for (org, name) in world.runner_groups {
            state.add_runner_group(&org, &name);
        }
        for (scope, spec) in world.runners {
            state.insert_runner(&scope, spec, 1, false);
        }
        state
    }

    /// The emulator clock: real time plus the configured offset.
    pub fn now(&self) -> DateTime<Utc> {
        Utc::now() + TimeDelta::seconds(self.clock_offset_secs)
    }

    pub fn org(&self, login: &str) -> Option<&Org> {
        self.orgs.get(&login.to_ascii_lowercase())
    }

    pub fn repo(&self, owner: &str, name: &str) -> Option<&Repo> {
        self.repos
            .get(&(owner.to_ascii_lowercase(), name.to_ascii_lowercase()))
    }

    /// Whether the scope's org (and repo) exist.
    pub fn scope_exists(&self, scope: &Scope) -> bool {
        match scope {
            Scope::Org(org) => self.org(org).is_some(),
            Scope::Repo { owner, repo } => self.repo(owner, repo).is_some(),
        }
    }

    /// The installation of `app_id` on organization `org`, if any.
    pub fn installation_of(&self, app_id: u64, org: &str) -> Option<&Installation> {
        self.installations
            .values()
            .find(|i| i.app_id == app_id && i.account.eq_ignore_ascii_case(org))
    }

    /// When something issued now with lifetime `ttl` expires (a `ttl` too large for the clock
    /// counts as one hour).
    pub fn expiry(&self, ttl: Duration) -> DateTime<Utc> {
        self.now() + TimeDelta::from_std(ttl).unwrap_or(TimeDelta::hours(1))
    }

    /// How many runner tokens of `kind` were issued (tokens are never forgotten).
    pub fn runner_tokens_issued(&self, kind: RunnerTokenKind) -> usize {
        self.runner_tokens
            .values()
            .filter(|t| t.kind == kind)
            .count()
    }

    /// The scope of a known, unexpired runner token of `kind`.
    pub fn runner_token_scope(&self, token: &str, kind: RunnerTokenKind) -> Option<Scope> {
        let now = self.now();
        self.runner_tokens
            .get(token)
            .filter(|t| t.kind == kind && t.expires_at > now)
            .map(|t| t.scope.clone())
    }

    /// Adds a runner group to an organization and returns its id (the existing id if the
    /// organization has one by that name, case-insensitively; 1 for `Default`).
    pub fn add_runner_group(&mut self, org: &str, name: &str) -> u64 {
        if let Some(id) = self.runner_group_named(org, name) {
            return id;
        }
        let id = self
            .runner_groups
            .keys()
            .next_back()
            .map_or(2, |last| last + 1);
        self.runner_groups.insert(
            id,
            RunnerGroup {
                org: org.to_ascii_lowercase(),
                name: name.to_owned(),
            },
        );
        id
    }

    /// The id of organization `org`'s runner group `name` (case-insensitive).
    pub fn runner_group_named(&self, org: &str, name: &str) -> Option<u64> {
        if name.eq_ignore_ascii_case(DEFAULT_GROUP) {
            return Some(1);
        }
        self.runner_groups
            .iter()
            .find(|(_, g)| g.org.eq_ignore_ascii_case(org) && g.name.eq_ignore_ascii_case(name))
            .map(|(id, _)| *id)
    }

    /// Whether organization `org` has runner group `id` (1 always).
    pub fn runner_group_exists(&self, org: &str, id: u64) -> bool {
        id == 1
            || self
                .runner_groups
                .get(&id)
                .is_some_and(|g| g.org.eq_ignore_ascii_case(org))
    }

    /// Organization `org`'s runner groups, `Default` first: (id, name).
    pub fn runner_groups_of(&self, org: &str) -> Vec<(u64, String)> {
        std::iter::once((1, DEFAULT_GROUP.to_owned()))
            .chain(
                self.runner_groups
                    .iter()
                    .filter(|(_, g)| g.org.eq_ignore_ascii_case(org))
                    .map(|(id, g)| (*id, g.name.clone())),
            )
            .collect()
    }

    /// The name of runner group `id`: [`DEFAULT_GROUP`] for 1, its name, or `Group N` for an id
    /// the emulator never made.
    pub fn runner_group_name(&self, id: u64) -> String {
        match self.runner_groups.get(&id) {
            _ if id == 1 => DEFAULT_GROUP.to_owned(),
            Some(group) => group.name.clone(),
            None => format!("Group {id}"),
        }
    }

    /// The id of a label, allocating one the first time a name (case-insensitive) is seen.
    pub fn label_id(&mut self, name: &str) -> u64 {
        let next = self.label_ids.len() as u64 + 1;
        *self
            .label_ids
            .entry(name.to_ascii_lowercase())
            .or_insert(next)
    }

    /// The runner with this name (case-insensitive) in this scope.
    pub fn runner_named(&self, scope: &Scope, name: &str) -> Option<&Runner> {
        let scope = scope.normalized();
        self.runners
            .values()
            .find(|r| r.scope == scope && r.name.eq_ignore_ascii_case(name))
    }

    /// Creates a runner and returns its id. See [`State::custom_labels`] for label clean-up.
    pub fn insert_runner(
        &mut self,
        scope: &Scope,
        spec: RunnerSpec,
        runner_group_id: u64,
        no_default_labels: bool,
    ) -> u64 {
        let custom = self.custom_labels(spec.labels, no_default_labels);
        let id = self.next_runner_id;
        self.next_runner_id += 1;
        self.runners.insert(
            id,
            Runner {
                id,
                scope: scope.normalized(),
                name: spec.name,
                online: spec.online,
                busy: spec.busy,
                ephemeral: spec.ephemeral,
                labels: custom,
                runner_group_id,
                no_default_labels,
                credential: None,
                jit: false,
                version: None,
                session: None,
                sessions_created: 0,
                job: None,
                messages: VecDeque::new(),
                listening_announced: false,
                scale_set_id: None,
                created_at: Instant::now(),
                busy_since: None,
                took_a_job: false,
            },
        );
        id
    }

    /// Creates an offline, ephemeral runner for a JIT config (counted in `jit_configs_issued`),
    /// with a fresh protocol credential; returns its id and that credential.
    pub fn insert_jit_runner(
        &mut self,
        scope: &Scope,
        name: String,
        labels: Vec<String>,
        runner_group_id: u64,
        no_default_labels: bool,
    ) -> (u64, String) {
        let spec = RunnerSpec {
            name,
            online: false,
            busy: false,
            labels,
            ephemeral: true,
        };
        let id = self.insert_runner(scope, spec, runner_group_id, no_default_labels);
        let credential = runner_credential();
        let runner = self
            .runners
            .get_mut(&id)
            .expect("insert_runner just inserted this id");
        runner.credential = Some(credential.clone());
        runner.jit = true;
        let created_at = runner.created_at;
        self.jit_configs_issued += 1;
        self.watch_jit_runner(id, created_at);
        (id, credential)
    }

    /// The custom labels to keep: labels that repeat a default label (unless there are none) or
    /// an earlier label, case-insensitively, are dropped.
    pub fn custom_labels(&mut self, labels: Vec<String>, no_default_labels: bool) -> Vec<String> {
        let mut custom: Vec<String> = Vec::new();
        for label in labels {
            let dup = (!no_default_labels
                && DEFAULT_LABELS
                    .iter()
                    .any(|d| d.eq_ignore_ascii_case(&label)))
                || custom.iter().any(|c| c.eq_ignore_ascii_case(&label));
            if !dup {
                self.label_id(&label);
                custom.push(label);
            }
        }
        custom
    }

    // ---- runner and job life cycle ----------------------------------------------------

    /// Publishes an event; nobody listening is fine.
    pub fn emit(&self, event: JobEvent) {
        let _ = self.events.send(event);
    }

    /// Wakes every long poll so it looks at the state again.
    pub fn wake_pollers(&self) {
        self.changed.notify_waiters();
    }

    /// The runner holding this protocol credential.
    pub fn runner_by_credential(&self, credential: &str) -> Option<u64> {
        self.runners
            .values()
            .find(|r| r.credential.as_deref() == Some(credential))
            .map(|r| r.id)
    }

    /// The runner whose live session has this id.
    pub fn runner_by_session(&self, session_id: &str) -> Option<u64> {
        self.runners
            .values()
            .find(|r| r.session.as_ref().is_some_and(|s| s.id == session_id))
            .map(|r| r.id)
    }

    /// The live session with this id.
    pub fn session_mut(&mut self, session_id: &str) -> Option<&mut Session> {
        self.runners
            .values_mut()
            .filter_map(|r| r.session.as_mut())
            .find(|s| s.id == session_id)
    }

    /// Timers that run whenever anyone looks at the state: expired runner sessions end (a job
    /// delivered on one but never started goes back to the queue), then the scale-set timers
    /// run (see [`State::scale_set_housekeeping`]), then idle JIT runners past their expiry go
    /// (when switched on, see [`State::expire_idle_jit_runners`]).
    pub fn housekeeping(&mut self) {
        self.expire_sessions();
        self.scale_set_housekeeping();
        self.expire_idle_jit_runners();
    }

    /// Ends the sessions nobody polled or posted an event on for the session timeout.
    fn expire_sessions(&mut self) {
        let timeout = self.session_timeout;
        let expired: Vec<u64> = self
            .runners
            .values()
            .filter(|r| {
                r.session
                    .as_ref()
                    .is_some_and(|s| s.polls == 0 && s.last_seen.elapsed() >= timeout)
            })
            .map(|r| r.id)
            .collect();
        for id in expired {
            self.end_session(id);
            self.requeue_unstarted_job(id);
        }
    }

    /// Sends the job a runner holds back to the queue if the runner never reported it started:
    /// the runner lost its session before it began, so the job never ran and another runner may
    /// take it (a scale-set job stays with its scale set, its reassignment timer restarted).
    pub fn requeue_unstarted_job(&mut self, runner_id: u64) {
        let now = self.now();
        let Some(runner) = self.runners.get_mut(&runner_id) else {
            return;
        };
        let Some(job_id) = runner.job else {
            return;
        };
        if self.jobs.get(&job_id).is_none_or(|j| j.started) {
            return;
        }
        runner.job = None;
        runner.busy = false;
        runner.listening_announced = false;
        if let Some(job) = self.jobs.get_mut(&job_id) {
            job.view.status = JobStatus::Queued;
            job.view.runner_id = None;
            job.view.runner_name = None;
            job.view.started_at = None;
            if let Some(a) = job.assignment.as_mut() {
                a.since = Instant::now();
            }
        }
        self.reindex_job(job_id);
        self.emit(JobEvent::Requeued {
            job_id,
            runner_id,
            at: now,
        });
        self.assign_scale_set_job(job_id);
        self.wake_pollers();
    }

    /// Opens a session for a runner (it is online from now on) and returns its id.
    pub fn start_session(&mut self, runner_id: u64, disable_update: bool) -> Option<String> {
        let now = self.now();
        let session_id = uuid_like();
        let runner = self.runners.get_mut(&runner_id)?;
        runner.session = Some(Session {
            id: session_id.clone(),
            last_seen: Instant::now(),
            polls: 0,
            disable_update,
        });
        runner.sessions_created += 1;
        runner.listening_announced = false;
        runner.online = true;
        let event = JobEvent::RunnerOnline {
            runner_id,
            name: runner.name.clone(),
            at: now,
        };
        self.emit(event);
        Some(session_id)
    }

    /// Ends a runner's session if it has one (it is offline from now on).
    pub fn end_session(&mut self, runner_id: u64) {
        let now = self.now();
        let Some(runner) = self.runners.get_mut(&runner_id) else {
            return;
        };
        if runner.session.take().is_none() {
            return;
        }
        runner.online = false;
        let event = JobEvent::RunnerOffline {
            runner_id,
            name: runner.name.clone(),
            at: now,
        };
        self.emit(event);
        self.wake_pollers();
    }

    /// Emits [`JobEvent::RunnerListening`] for a runner that polled and found nothing, once per
    /// idle period (the flag resets when a session starts or a job completes).
    pub fn announce_listening(&mut self, runner_id: u64) {
        let now = self.now();
        let Some(runner) = self.runners.get_mut(&runner_id) else {
            return;
        };
        if runner.job.is_some() || runner.listening_announced {
            return;
        }
        runner.listening_announced = true;
        let event = JobEvent::RunnerListening {
            runner_id,
            name: runner.name.clone(),
            at: now,
        };
        self.emit(event);
    }

    /// Appends lines to a job's log and publishes each as a [`JobEvent::Log`].
    pub fn append_log(&mut self, job_id: u64, step: i64, lines: Vec<String>) {
        let now = self.now();
        if let Some(job) = self.jobs.get_mut(&job_id) {
            job.view.log.extend(lines.iter().map(|text| LogLine {
                at: now,
                step,
                text: text.clone(),
            }));
        }
        for text in lines {
            self.emit(JobEvent::Log {
                job_id,
                step,
                text,
                at: now,
            });
        }
    }

    /// Fails the job a runner that stays holds, if any, because the process running it is gone
    /// (the runner was replaced, or its listener restarted) and will never report it, as GitHub
    /// does when it loses a runner. `note` goes to the job's completion log first. The runner is
    /// idle afterwards and is not deleted even if ephemeral. ([`State::delete_runner`] fails the
    /// job of a runner that goes.)
    pub fn fail_held_job(&mut self, runner_id: u64, note: Option<&str>) {
        let held = self.runners.get_mut(&runner_id).and_then(|r| {
            r.busy = false;
            r.job.take()
        });
        if let Some(job_id) = held {
            if let Some(note) = note {
                self.append_log(job_id, -2, vec![note.to_owned()]);
            }
            self.complete_job(job_id, Conclusion::Failure);
        }
    }

    /// Deletes a runner: its session ends, a job it held fails, its credential dies.
    pub fn delete_runner(&mut self, runner_id: u64) -> bool {
        self.end_session(runner_id);
        let Some(runner) = self.runners.remove(&runner_id) else {
            return false;
        };
        if let Some(job_id) = runner.job {
            // The runner is gone, so nobody will ever report this job: fail it as GitHub does
            // when it loses the runner.
            self.complete_job(job_id, Conclusion::Failure);
        }
        let now = self.now();
        self.emit(JobEvent::RunnerRemoved {
            runner_id,
            name: runner.name,
            at: now,
        });
        self.wake_pollers();
        true
    }

    /// The jobs not completed yet, oldest first.
    pub fn open_jobs(&self) -> impl Iterator<Item = &Job> {
        self.open_jobs.iter().filter_map(|id| self.jobs.get(id))
    }

    /// Queues a job and returns its id.
    pub fn enqueue_job(&mut self, spec: JobSpec) -> u64 {
        let now = self.now();
        let id = self.next_job_id;
        self.next_job_id += 1;
        let run_id = self.next_run_id;
        self.next_run_id += 1;
        let (owner, repo) = spec
            .repository
            .split_once('/')
            .unwrap_or((spec.repository.as_str(), ""));
        let job = Job {
            owner: owner.to_ascii_lowercase(),
            repo: repo.to_ascii_lowercase(),
            cancel_requested: false,
            head_branch: "main".to_owned(),
            head_sha: random_string(b"0123456789abcdef", 40),
            assignment: None,
            assignments: 0,
            counted_in: None,
            started: false,
            container: spec.container,
            view: JobView {
                id,
                run_id,
                repository: spec.repository,
                workflow: spec.workflow,
                name: spec.name,
                labels: spec.labels,
                status: JobStatus::Queued,
                conclusion: None,
                runner_id: None,
                runner_name: None,
                created_at: now,
                started_at: None,
                completed_at: None,
                steps: spec
                    .steps
                    .into_iter()
                    .map(|(name, run)| StepView {
                        name,
                        run,
                        conclusion: None,
                        exit_code: None,
                        started_at: None,
                        completed_at: None,
                    })
                    .collect(),
                log: Vec::new(),
            },
        };
        self.jobs.insert(id, job);
        self.open_jobs.insert(id);
        self.emit(JobEvent::Queued {
            job_id: id,
            at: now,
        });
        self.queue_webhooks(WebhookAction::Queued, id);
        self.reindex_job(id);
        self.assign_scale_set_job(id);
        self.wake_pollers();
        id
    }

    /// The oldest queued job this runner may take, assigned to it (in progress, runner busy).
    /// None when the runner is busy or nothing fits. A scale-set runner takes only jobs assigned
    /// to its scale set; any other runner only jobs no scale set holds.
    pub fn claim_job(&mut self, runner_id: u64) -> Option<u64> {
        let runner = self.runners.get(&runner_id)?;
        if runner.busy || runner.job.is_some() {
            return None;
        }
        let labels = runner.label_names();
        let job_id = self
            .open_jobs()
            .find(|j| {
                j.view.status == JobStatus::Queued
                    && match (runner.scale_set_id, &j.assignment) {
                        (Some(own), Some(a)) => {
                            a.scale_set_id == own && a.stage == crate::scaleset::Stage::Assigned
                        }
                        (None, None) => j.fits(&runner.scope, &labels),
                        _ => false,
                    }
            })?
            .view
            .id;
        let now = self.now();
        let runner = self.runners.get_mut(&runner_id)?;
        runner.busy = true;
        runner.busy_since = Some(Instant::now());
        runner.took_a_job = true;
        runner.job = Some(job_id);
        let runner_name = runner.name.clone();
        let job = self.jobs.get_mut(&job_id)?;
        job.view.status = JobStatus::InProgress;
        job.view.runner_id = Some(runner_id);
        job.view.runner_name = Some(runner_name.clone());
        job.view.started_at = Some(now);
        self.reindex_job(job_id);
        self.emit(JobEvent::Claimed {
            job_id,
            runner_id,
            runner_name,
            at: now,
        });
        self.queue_webhooks(WebhookAction::InProgress, job_id);
        self.scale_set_job_started(job_id);
        Some(job_id)
    }

    /// Completes a job; its runner (if it still exists) is idle again, and deleted if ephemeral.
    pub fn complete_job(&mut self, job_id: u64, conclusion: Conclusion) {
        let now = self.now();
        let Some(job) = self.jobs.get_mut(&job_id) else {
            return;
        };
        if job.view.status == JobStatus::Completed {
            return;
        }
        job.view.status = JobStatus::Completed;
        job.view.conclusion = Some(conclusion);
        self.open_jobs.remove(&job_id);
        job.view.completed_at = Some(now);
        let runner_id = job.view.runner_id;
        let freed = job.counted_in;
        self.reindex_job(job_id);
        self.emit(JobEvent::Completed {
            job_id,
            conclusion,
            at: now,
        });
        self.queue_webhooks(WebhookAction::Completed, job_id);
        self.scale_set_job_completed(job_id, conclusion);
        if let Some(runner) = runner_id.and_then(|id| self.runners.get_mut(&id))
            && runner.job == Some(job_id)
        {
            runner.job = None;
            runner.busy = false;
            runner.listening_announced = false;
            if runner.ephemeral {
                let id = runner.id;
                self.delete_runner(id);
            }
        }
        // A finished job frees room under its scale set's max capacity.
        if freed.is_some() {
            self.assign_scale_set_jobs();
        }
        self.wake_pollers();
    }
}

/// A random id in UUID layout (session ids, webhook delivery ids).
pub(crate) fn uuid_like() -> String {
    let hex = random_string(b"0123456789abcdef", 32);
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

/// RFC 3339 UTC with whole seconds, as GitHub prints timestamps: `2026-11-28T17:00:00Z`.
pub(crate) fn timestamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// `len` random characters from `charset`.
pub(crate) fn random_string(charset: &[u8], len: usize) -> String {
    let mut rng = rand::rng();
    (0..len)
        .map(|_| charset[rng.random_range(0..charset.len())] as char)
        .collect()
}

/// Length of a runner-protocol credential (registered and JIT runners).
const CREDENTIAL_LEN: usize = 40;

/// A fresh runner-protocol credential.
pub(crate) fn runner_credential() -> String {
    random_string(ALNUM, CREDENTIAL_LEN)
}

/// The runner group every organization has (id 1).
pub(crate) const DEFAULT_GROUP: &str = "Default";

/// Upper-case letters and digits (runner registration tokens).
pub(crate) const UPPER_ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
/// Letters and digits (installation tokens, JIT credentials).
pub(crate) const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
