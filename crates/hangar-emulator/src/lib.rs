//! `hangar-emulator`: a stateful, strict emulator of the parts of GitHub's REST API that Hangar
//! uses (GitHub App authentication, installation tokens, self-hosted runner management), served
//! by axum on a local port. Integration tests point Hangar's real HTTP client at
//! [`Emulator::api_url`] and drive failures through the fault knobs; `hangar dev` runs it as a
//! fake GitHub. It is strict on purpose: a request GitHub would refuse is refused here too, with
//! GitHub's status, message and headers.
//!
//! It also plays the Actions service for runners: the stand-in runner registers, opens a session,
//! long-polls for jobs and reports them over the small protocol in `RUNNER_PROTOCOL.md`. Tests
//! and `hangar dev` enqueue jobs ([`Emulator::enqueue_job`]), watch them live
//! ([`Emulator::subscribe`]), steer runners ([`Emulator::send_runner_message`]) and receive
//! signed `workflow_job` webhooks ([`Emulator::add_webhook`]).
//!
//! And it plays the Actions "runner scale set" service (`SCALESET_PROTOCOL.md`) that autoscalers
//! speak: `POST /actions/runner-registration` trades a registration token for an admin token and
//! a service URL, under which clients create scale sets, open a message session, long-poll for
//! job messages and acknowledge them, acquire jobs and mint JIT configs. Demand comes from the
//! same job queue: a queued job whose labels match a scale set is assigned to it, only runners
//! started from that scale set's JIT configs take it, and `JobStarted` / `JobCompleted` follow; a
//! job nobody takes in time is reassigned. Knobs inject faults, lost messages, server-side
//! deletions and expired sessions ([`Emulator::fail_scaleset_next`],
//! [`Emulator::drop_scaleset_messages`], [`Emulator::delete_scale_set`],
//! [`Emulator::expire_scale_set_sessions`]); views show scale sets, sessions, statistics and
//! calls by kind ([`Emulator::scale_sets`], [`Emulator::scaleset_call_counts`]).
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use hangar_emulator::{Emulator, World};
//! let emu = Emulator::start(World::seed()).await?;
//! let base = emu.api_url(); // e.g. http://127.0.0.1:41234 (also served under /api/v3)
//! # let _ = base;
//! emu.shutdown().await;
//! # Ok(())
//! # }
//! ```

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::task::JoinHandle;

mod auth;
mod bad_days;
mod error;
mod faults;
mod jit;
mod jobs;
pub mod keys;
mod routes;
mod scaleset;
mod server;
mod state;
mod webhooks;
mod world;

pub use bad_days::SecondaryLimit;
pub use jit::{JitConfig, JitConfigError};
pub use jobs::{
    Conclusion, JobEvent, JobSpec, JobStatus, JobView, LogLine, RunnerMessage, StepView,
};
pub use scaleset::{ScaleSetCallKind, ScaleSetStatistics, ScaleSetView};
pub use webhooks::{WebhookAction, WebhookDelivery, signature as webhook_signature};
pub use world::{
    AppSpec, InstallationSpec, PatSpec, RunnerSpec, SEED_APP_ID, SEED_CLIENT_ID,
    SEED_INSTALLATION_ID, SEED_ORG, SEED_PAT, SEED_REPO, Scope, World,
};

use faults::Fault;
use state::{RunnerTokenKind, Shared, State};

/// How a recorded request was authenticated.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AuthKind {
    /// No `Authorization` header.
    None,
    /// A personal access token (classic or fine-grained).
    Pat,
    /// A GitHub App JWT.
    AppJwt,
    /// An installation access token.
    InstallationToken,
    /// A credential was presented and refused (unknown, revoked, expired, bad JWT, bad header).
    Invalid,
    /// A runner registration token, as `RemoteAuth` (`POST /actions/runner-registration`).
    RunnerToken,
    /// An Actions-service admin token (from `runner-registration`).
    ActionsAdminToken,
    /// A runner scale set message-queue token (from a session).
    MessageQueueToken,
}

/// One request the emulator answered: a REST call, or a runner scale set call (registration and
/// the Actions service, see [`Emulator::scaleset_call_counts`]).
///
/// For requests answered before authentication (no User-Agent, injected fault, exhausted rate
/// limit), `auth` is what the credential looks like without verifying it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallRecord {
    /// HTTP method, e.g. `GET`.
    pub method: String,
    /// Path without query and without any `/api/v3` prefix.
    pub path: String,
    /// Raw query string, if any.
    pub query: Option<String>,
    /// Status code answered.
    pub status: u16,
    /// How the request was authenticated.
    pub auth: AuthKind,
    /// The `User-Agent` header, if any.
    pub user_agent: Option<String>,
    /// The `X-GitHub-Api-Version` header, if any.
    pub api_version: Option<String>,
}

/// One runner-protocol request the emulator answered (kept apart from [`CallRecord`]s, which are
/// REST calls).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunnerCall {
    /// HTTP method, e.g. `POST`.
    pub method: String,
    /// Path without query and without any `/api/v3` prefix, e.g. `/_runner/sessions`.
    pub path: String,
    /// Raw query string, if any.
    pub query: Option<String>,
    /// Status code answered.
    pub status: u16,
}

/// A runner as the emulator holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunnerView {
    /// Runner id (global, increasing from 1).
    pub id: u64,
    /// Runner name.
    pub name: String,
    /// `status: "online"`: while it has a live protocol session (or as set by
    /// [`Emulator::set_runner_online`] / [`RunnerSpec::online`]).
    pub online: bool,
    /// Running a job (holds an uncompleted job, or as set by [`Emulator::set_runner_busy`]).
    pub busy: bool,
    /// All label names as the API lists them: `self-hosted`, `Linux`, `X64`, then custom labels.
    pub labels: Vec<String>,
    /// Ephemeral runner (JIT runners are).
    pub ephemeral: bool,
    /// The runner scale set whose JIT config made it, if any.
    pub scale_set_id: Option<u64>,
}

struct ServerTask {
    stop: oneshot::Sender<()>,
    join: JoinHandle<()>,
}

/// Owns the server task; dropping the last [`Emulator`] handle stops the server.
struct Inner {
    shared: Arc<Shared>,
    addr: SocketAddr,
    server: Mutex<Option<ServerTask>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        let task = self
            .server
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(task) = task {
            let _ = task.stop.send(());
        }
    }
}

/// A running emulator. Cheap to clone; all clones share one server and one state.
#[derive(Clone)]
pub struct Emulator {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Emulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Emulator")
            .field("addr", &self.inner.addr)
            .finish_non_exhaustive()
    }
}

/// Runs the timers promptly (so `RunnerOffline` events, scale-set session expiry and
/// reassignments come on time even when nobody asks) until the emulator's state is gone.
async fn housekeeping(shared: std::sync::Weak<Shared>) {
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        shared.lock().housekeeping();
    }
}

impl Emulator {
    /// Starts an emulator of `world` on `127.0.0.1` with an ephemeral port.
    pub async fn start(world: World) -> std::io::Result<Emulator> {
        Self::start_on(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), world).await
    }

    /// Starts an emulator of `world` on `addr`.
    pub async fn start_on(addr: SocketAddr, world: World) -> std::io::Result<Emulator> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let mut state = State::from_world(world);
        state.base_url = format!("http://{addr}");
        let (outbox, outgoing) = mpsc::unbounded_channel();
        state.outbox = Some(outbox);
        let shared = Arc::new(Shared::new(state));
        tokio::spawn(webhooks::deliver(Arc::downgrade(&shared), outgoing));
        tokio::spawn(housekeeping(Arc::downgrade(&shared)));
        let app =
            server::router(shared.clone()).into_make_service_with_connect_info::<SocketAddr>();
        let (stop, stopped) = oneshot::channel::<()>();
        let join = tokio::spawn(async move {
            let serve = axum::serve(listener, app).with_graceful_shutdown(async move {
                let _ = stopped.await;
            });
            if let Err(e) = serve.await {
                tracing::warn!(error = %e, "hangar-emulator server stopped with an error");
            }
        });
        tracing::debug!(%addr, "hangar-emulator listening");
        Ok(Emulator {
            inner: Arc::new(Inner {
                shared,
                addr,
                server: Mutex::new(Some(ServerTask { stop, join })),
            }),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        let mut state = self.inner.shared.lock();
        state.housekeeping();
        state
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.inner.addr
    }

    /// The REST API base URL, `http://127.0.0.1:PORT` (like `https://api.github.com`). The same
    /// API is also served under `{api_url}/api/v3` (GitHub Enterprise Server layout).
    pub fn api_url(&self) -> String {
        format!("http://{}", self.inner.addr)
    }

    /// The "web" base URL (github.com's stand-in): `http://127.0.0.1:PORT`.
    pub fn web_url(&self) -> String {
        format!("http://{}", self.inner.addr)
    }

    /// Stops the server gracefully (open connections are given 5 s to finish) and waits for it.
    /// Other clones of this handle keep the state readable.
    pub async fn shutdown(self) {
        let task = self
            .inner
            .server
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(ServerTask { stop, mut join }) = task {
            let _ = stop.send(());
            if tokio::time::timeout(Duration::from_secs(5), &mut join)
                .await
                .is_err()
            {
                join.abort();
            }
        }
    }

    // ---- faults -------------------------------------------------------------------------

    /// The next `n` requests (after queued faults) get `status` with a GitHub-style error body.
    ///
    /// # Panics
    /// If `status` is not a valid HTTP status code (100..=999).
    pub fn fail_next(&self, n: usize, status: u16) {
        let fault = Fault::fail("fail_next", status);
        self.state().faults.push(fault, n);
    }

    /// The next `n` requests (after queued faults) get 429 with `retry-after: retry_after_secs`.
    pub fn rate_limit_next(&self, n: usize, retry_after_secs: u64) {
        self.state()
            .faults
            .push(Fault::RateLimited { retry_after_secs }, n);
    }

    /// Until `reset_in` from now (emulator clock), every request gets 403 "API rate limit
    /// exceeded for …" with `x-ratelimit-remaining: 0` and `x-ratelimit-reset` at that time.
    pub fn exhaust_rate_limit(&self, reset_in: Duration) {
        let mut state = self.state();
        let until = state.now().timestamp() + reset_in.as_secs_f64().ceil() as i64;
        state.faults.exhausted_until = Some(until);
    }

    /// Turns GitHub's secondary rate limit on the runner endpoints that create something on
    /// (`Some`) or off (`None`, the default). It applies to `POST …/actions/runners/
    /// generate-jitconfig`, `…/registration-token` and `…/remove-token` (repository and
    /// organization) and to the scale-set `POST …/runnerscalesets/{id}/generatejitconfig`,
    /// each a separate endpoint, per credential (a PAT, an installation; a scale-set admin token
    /// spends the points of the credential whose registration token it was traded for), over a
    /// rolling [`SecondaryLimit::window`]. Each request costs [`SecondaryLimit::post_cost`]
    /// points, whatever its answer; one that would go over [`SecondaryLimit::points_per_minute`]
    /// is answered [`SecondaryLimit::status`] with `retry-after` (whole seconds until enough
    /// points are back) and GitHub's "You have exceeded a secondary rate limit" message, and
    /// does nothing (no runner, no token) and costs nothing. It is recorded in
    /// [`Emulator::calls`] like any refused call. Setting the limit forgets the points spent.
    ///
    /// # Panics
    /// If the limit's `status` is not an HTTP status code (100..=999).
    pub fn set_secondary_limit(&self, limit: Option<SecondaryLimit>) {
        self.state().bad_days.set_secondary(limit);
    }

    /// How many requests the secondary limit ([`Emulator::set_secondary_limit`]) refused.
    pub fn secondary_limited(&self) -> usize {
        self.state().bad_days.secondary_limited
    }

    /// Makes the REST runner answers (list, get) report `busy: false` for a runner until `lag`
    /// has passed since it took its job (or was set busy), as users see GitHub do for 25-60 s;
    /// `Duration::ZERO` (the default) turns the lag off. Nothing else lags: deleting a busy
    /// runner is still refused (REST 422, scale-set `JobStillRunningException`), and the
    /// scale-set statistics, the job stream and [`Emulator::runner`] stay truthful.
    pub fn set_busy_flag_lag(&self, lag: Duration) {
        self.state().bad_days.busy_flag_lag = lag;
    }

    /// Makes the emulator delete a runner made from a JIT config (REST `generate-jitconfig` or
    /// scale-set `generatejitconfig`) that has never taken a job once its registration is older
    /// than `after`, as GitHub has been seen to drop idle JIT runners after a few minutes;
    /// `None` (the default) turns it off. The deletion is the API's: the registration leaves
    /// the REST lists and the scale-set agents, its protocol session ends (a waiting long poll
    /// answers 404, a new session 401, so a runner exits 0) and [`JobEvent::RunnerRemoved`] is
    /// published; no webhook is sent. Checked on every request and every 200 ms. Runners made
    /// before the switch count too.
    pub fn set_idle_jit_runner_expiry(&self, after: Option<Duration>) {
        self.inner.shared.lock().set_idle_jit_expiry(after);
    }

    /// How many idle JIT runners [`Emulator::set_idle_jit_runner_expiry`] deleted.
    pub fn idle_jit_runners_expired(&self) -> usize {
        self.state().bad_days.idle_jit_expired
    }

    /// Drops queued faults and any exhausted rate limit (latency is kept).
    pub fn clear_faults(&self) {
        self.state().faults.clear();
    }

    /// Delay added before every response.
    pub fn set_latency(&self, d: Duration) {
        self.state().faults.latency = d;
    }

    /// Requests per hour for each authenticated credential (default 5000). Unauthenticated
    /// callers always get 60 per IP address.
    pub fn set_rate_limit(&self, limit: u32) {
        self.state().rate.limit = limit;
    }

    /// Lifetime of installation tokens minted from now on (default 1 h).
    pub fn set_installation_token_ttl(&self, d: Duration) {
        self.state().installation_token_ttl = d;
    }

    /// Lifetime of registration / remove tokens issued from now on (default 1 h).
    pub fn set_registration_token_ttl(&self, d: Duration) {
        self.state().registration_token_ttl = d;
    }

    /// The emulator's "now" becomes real now + `secs`. Affects the `Date` header, JWT checks,
    /// token expiries and rate-limit windows.
    pub fn set_clock_offset_secs(&self, secs: i64) {
        self.state().clock_offset_secs = secs;
    }

    /// The emulator's current time.
    pub fn now(&self) -> SystemTime {
        self.state().now().into()
    }

    /// Suspends (or unsuspends) an installation: minting answers 403 "This installation has been
    /// suspended", and so does any use of its tokens.
    ///
    /// # Panics
    /// If there is no installation `id`.
    pub fn suspend_installation(&self, id: u64, suspended: bool) {
        let mut state = self.state();
        let now = state.now();
        let inst = state
            .installations
            .get_mut(&id)
            .unwrap_or_else(|| panic!("suspend_installation: no installation {id}"));
        inst.suspended_at = suspended.then_some(now);
    }

    /// Revokes a personal access token: afterwards it gets 401 Bad credentials. Unknown tokens
    /// are ignored.
    pub fn revoke_pat(&self, token: &str) {
        self.state().pats.remove(token);
    }

    /// Replaces a personal access token's scopes.
    ///
    /// # Panics
    /// If there is no such token.
    pub fn set_pat_scopes(&self, token: &str, scopes: &[&str]) {
        let mut state = self.state();
        let pat = state
            .pats
            .get_mut(token)
            .unwrap_or_else(|| panic!("set_pat_scopes: unknown token"));
        pat.scopes = scopes.iter().map(|s| (*s).to_owned()).collect();
    }

    // ---- state --------------------------------------------------------------------------

    /// Adds a runner and returns its id (ids are global, increasing from 1).
    ///
    /// # Panics
    /// If the scope's organization or repository does not exist.
    pub fn add_runner(&self, scope: &Scope, spec: RunnerSpec) -> u64 {
        let mut state = self.state();
        assert!(
            state.scope_exists(scope),
            "add_runner: {scope:?} is not in the world"
        );
        state.insert_runner(scope, spec, 1, false)
    }

    /// The runners of a scope, ordered by id.
    pub fn runners(&self, scope: &Scope) -> Vec<RunnerView> {
        let scope = scope.normalized();
        self.state()
            .runners
            .values()
            .filter(|r| r.scope == scope)
            .map(state::Runner::view)
            .collect()
    }

    /// A runner by id, in any scope.
    pub fn runner(&self, id: u64) -> Option<RunnerView> {
        self.state().runners.get(&id).map(state::Runner::view)
    }

    /// The JIT-created runner whose JIT config carries this `credential` (see [`JitConfig`]).
    pub fn runner_for_jit_credential(&self, credential: &str) -> Option<RunnerView> {
        let state = self.state();
        let id = state.runner_by_credential(credential)?;
        state
            .runners
            .get(&id)
            .filter(|r| r.jit)
            .map(state::Runner::view)
    }

    /// Sets a runner's online status; false if there is no such runner.
    pub fn set_runner_online(&self, id: u64, online: bool) -> bool {
        self.state()
            .runners
            .get_mut(&id)
            .map(|r| r.online = online)
            .is_some()
    }

    /// Sets whether a runner is running a job; false if there is no such runner. A runner set
    /// busy counts as busy from now on for [`Emulator::set_busy_flag_lag`].
    pub fn set_runner_busy(&self, id: u64, busy: bool) -> bool {
        self.state()
            .runners
            .get_mut(&id)
            .map(|r| {
                if busy && !r.busy {
                    r.busy_since = Some(std::time::Instant::now());
                }
                r.busy = busy;
            })
            .is_some()
    }

    /// Removes a runner (as if it deregistered); false if there is no such runner. Its session
    /// ends and a job it held fails.
    pub fn remove_runner(&self, id: u64) -> bool {
        self.state().delete_runner(id)
    }

    /// The scope of a valid (known, unexpired) registration token.
    pub fn registration_token_scope(&self, token: &str) -> Option<Scope> {
        self.state()
            .runner_token_scope(token, RunnerTokenKind::Registration)
    }

    /// How many registration tokens were issued.
    pub fn registration_tokens_issued(&self) -> usize {
        self.state()
            .runner_tokens_issued(RunnerTokenKind::Registration)
    }

    /// How many remove tokens were issued.
    pub fn remove_tokens_issued(&self) -> usize {
        self.state().runner_tokens_issued(RunnerTokenKind::Remove)
    }

    /// How many JIT configs were issued.
    pub fn jit_configs_issued(&self) -> usize {
        self.state().jit_configs_issued
    }

    /// How many installation tokens were minted.
    pub fn installation_tokens_minted(&self) -> usize {
        self.state().installation_tokens.len()
    }

    /// Every request so far, in arrival order (including refused and faulted ones).
    pub fn calls(&self) -> Vec<CallRecord> {
        self.state().calls.clone()
    }

    /// Forgets the recorded calls.
    pub fn clear_calls(&self) {
        self.state().calls.clear();
    }

    // ---- runner protocol ----------------------------------------------------------------

    /// Every runner-protocol request so far, in arrival order (the long poll is recorded when it
    /// is answered).
    pub fn runner_calls(&self) -> Vec<RunnerCall> {
        self.state().runner_calls.clone()
    }

    /// The next `n` runner-protocol requests get `status` with a GitHub-style error body. REST
    /// faults ([`Emulator::fail_next`]) never touch the runner protocol, and these never touch
    /// REST calls.
    ///
    /// # Panics
    /// If `status` is not a valid HTTP status code (100..=999).
    pub fn fail_runner_protocol_next(&self, n: usize, status: u16) {
        let fault = Fault::fail("fail_runner_protocol_next", status);
        self.state().runner_faults.push(fault, n);
    }

    /// How long a runner session lives without a poll or a job event (default 90 s). A session
    /// with a long poll in progress never expires.
    pub fn set_session_timeout(&self, d: Duration) {
        self.state().session_timeout = d;
    }

    /// Whether the runner has a live protocol session.
    pub fn session_live(&self, runner_id: u64) -> bool {
        self.state()
            .runners
            .get(&runner_id)
            .is_some_and(|r| r.session.is_some())
    }

    /// Whether the runner's live session said `disable_update` (`None` without a live session).
    pub fn session_disables_update(&self, runner_id: u64) -> Option<bool> {
        self.state()
            .runners
            .get(&runner_id)
            .and_then(|r| r.session.as_ref())
            .map(|s| s.disable_update)
    }

    /// How many protocol sessions the runner has opened (0 for an unknown runner).
    pub fn sessions_created(&self, runner_id: u64) -> usize {
        self.state()
            .runners
            .get(&runner_id)
            .map_or(0, |r| r.sessions_created)
    }

    /// The version the runner last registered or opened a session with.
    pub fn runner_version(&self, runner_id: u64) -> Option<String> {
        self.state()
            .runners
            .get(&runner_id)
            .and_then(|r| r.version.clone())
    }

    /// Queues a control message for the runner, delivered on its next poll (before any job);
    /// false if there is no such runner.
    pub fn send_runner_message(&self, runner_id: u64, message: RunnerMessage) -> bool {
        let mut state = self.state();
        let Some(runner) = state.runners.get_mut(&runner_id) else {
            return false;
        };
        runner.messages.push_back(message);
        state.wake_pollers();
        true
    }

    // ---- jobs ---------------------------------------------------------------------------

    /// Queues a job and returns its id. It goes (oldest first) to the first polling runner that
    /// is idle, carries every job label (case-insensitively, defaults included) and whose scope
    /// covers the repository (a repository runner: that repository; an organization runner: any
    /// repository of the organization). A job nobody can take stays queued.
    pub fn enqueue_job(&self, spec: JobSpec) -> u64 {
        self.state().enqueue_job(spec)
    }

    /// A job by id.
    pub fn job(&self, id: u64) -> Option<JobView> {
        self.state().jobs.get(&id).map(|j| j.view.clone())
    }

    /// Every job, by id.
    pub fn jobs(&self) -> Vec<JobView> {
        self.state().jobs.values().map(|j| j.view.clone()).collect()
    }

    /// Waits until the job has completed and returns it; `None` if there is no such job or it
    /// did not complete within `timeout`.
    pub async fn wait_for_job(&self, id: u64, timeout: Duration) -> Option<JobView> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut events = self.subscribe();
        loop {
            let job = self.job(id)?;
            if job.status == JobStatus::Completed {
                return Some(job);
            }
            // Any event (or a lag) is a reason to look again; only the deadline ends the wait.
            match tokio::time::timeout_at(deadline, events.recv()).await {
                Err(_) => return None,
                Ok(Err(broadcast::error::RecvError::Closed)) => {
                    tokio::time::sleep_until(deadline).await;
                    return self.job(id).filter(|j| j.status == JobStatus::Completed);
                }
                Ok(_) => {}
            }
        }
    }

    /// Cancels a job: a queued job completes as cancelled at once; a job in progress is flagged,
    /// and the runner's next job event is answered `{"cancel": true}` (the job completes when the
    /// runner reports it). False if there is no such job or it already completed.
    pub fn cancel_job(&self, id: u64) -> bool {
        let mut state = self.state();
        let Some(job) = state.jobs.get_mut(&id) else {
            return false;
        };
        match job.view.status {
            JobStatus::Queued => {
                state.complete_job(id, Conclusion::Cancelled);
                true
            }
            JobStatus::InProgress => {
                job.cancel_requested = true;
                true
            }
            JobStatus::Completed => false,
        }
    }

    /// Live job and runner events from now on. Receivers that fall more than a few thousand
    /// events behind get [`broadcast::error::RecvError::Lagged`].
    pub fn subscribe(&self) -> broadcast::Receiver<JobEvent> {
        self.inner.shared.lock().events.subscribe()
    }

    // ---- webhooks -----------------------------------------------------------------------

    /// Registers a `workflow_job` webhook and returns its hook id (`X-GitHub-Hook-ID`). Every
    /// job's `queued`, `in_progress` and `completed` are POSTed to `url`, signed with `secret`.
    pub fn add_webhook(&self, url: &str, secret: &str) -> u64 {
        self.state().add_webhook(url, secret)
    }

    /// Every webhook delivery so far, in order; `status` fills in when the receiver answers.
    pub fn webhook_deliveries(&self) -> Vec<WebhookDelivery> {
        self.state().deliveries.clone()
    }

    // ---- runner groups ------------------------------------------------------------------

    /// Adds a runner group to an organization and returns its id (the existing id if the
    /// organization already has a group of that name, case-insensitively; 1 for `Default`).
    ///
    /// # Panics
    /// If there is no organization `org`.
    pub fn add_runner_group(&self, org: &str, name: &str) -> u64 {
        let mut state = self.state();
        assert!(
            state.org(org).is_some(),
            "add_runner_group: organization {org:?} is not in the world"
        );
        state.add_runner_group(org, name)
    }

    /// An organization's runner groups, `Default` (id 1) first: (id, name).
    pub fn runner_groups(&self, org: &str) -> Vec<(u64, String)> {
        self.state().runner_groups_of(org)
    }

    // ---- runner scale sets --------------------------------------------------------------

    /// Every runner scale set, by id.
    pub fn scale_sets(&self) -> Vec<ScaleSetView> {
        let state = self.state();
        state
            .scaleset
            .scale_sets
            .values()
            .map(|s| state.scale_set_view(s))
            .collect()
    }

    /// A runner scale set by id.
    pub fn scale_set(&self, id: u64) -> Option<ScaleSetView> {
        let state = self.state();
        state
            .scaleset
            .scale_sets
            .get(&id)
            .map(|s| state.scale_set_view(s))
    }

    /// Live message sessions of a scale set: 0 or 1 (0 for an unknown scale set).
    pub fn scale_set_sessions(&self, id: u64) -> usize {
        self.scale_set(id).map_or(0, |s| s.live_sessions)
    }

    /// A scale set's `statistics`, as its next message would carry them.
    pub fn scale_set_statistics(&self, id: u64) -> Option<ScaleSetStatistics> {
        let state = self.state();
        state
            .scaleset
            .scale_sets
            .contains_key(&id)
            .then(|| state.scale_set_statistics(id))
    }

    /// The scale set a job is offered or assigned to right now, if any.
    pub fn scale_set_of_job(&self, job_id: u64) -> Option<u64> {
        self.state()
            .jobs
            .get(&job_id)
            .and_then(|j| j.assignment.as_ref())
            .map(|a| a.scale_set_id)
    }

    /// How many times a job was offered or assigned to a scale set (reassignments included).
    pub fn job_assignments(&self, job_id: u64) -> u32 {
        self.state().jobs.get(&job_id).map_or(0, |j| j.assignments)
    }

    /// Deletes a scale set server-side, as an administrator would: its session ends (its polls
    /// and session calls then answer 404), its messages go, jobs waiting on it are free for
    /// other scale sets, its idle runners are removed. False if there is no such scale set.
    pub fn delete_scale_set(&self, id: u64) -> bool {
        self.state().delete_scale_set(id)
    }

    /// Ends every scale set's message session, as if each had idled out (a crashed client's
    /// session); waiting polls answer 404.
    pub fn expire_scale_set_sessions(&self) {
        self.state().expire_scale_set_sessions();
    }

    /// The next `n` runner scale set calls (registration and Actions service) get `status` with
    /// an error body. REST and runner-protocol faults never touch these calls, nor these faults
    /// those.
    ///
    /// # Panics
    /// If `status` is not a valid HTTP status code (100..=999).
    pub fn fail_scaleset_next(&self, n: usize, status: u16) {
        let fault = Fault::fail("fail_scaleset_next", status);
        self.state().scaleset.faults.push(fault, n);
    }

    /// The next `n` runner scale set calls get 429 with `retry-after: retry_after_secs`.
    pub fn rate_limit_scaleset_next(&self, n: usize, retry_after_secs: u64) {
        self.state()
            .scaleset
            .faults
            .push(Fault::RateLimited { retry_after_secs }, n);
    }

    /// The next `n` queue messages are lost: each is made (its id is used, the job messages it
    /// batches are consumed) but never delivered. Statistics still count the jobs.
    pub fn drop_scaleset_messages(&self, n: usize) {
        self.state().scaleset.drop_next += n;
    }

    /// How many queue messages [`Emulator::drop_scaleset_messages`] has dropped so far.
    pub fn scaleset_messages_dropped(&self) -> usize {
        self.state().scaleset.dropped
    }

    /// Runner scale set calls recorded in [`Emulator::calls`], counted by kind (forgotten with
    /// the call log by [`Emulator::clear_calls`]).
    pub fn scaleset_call_counts(&self) -> BTreeMap<ScaleSetCallKind, usize> {
        let mut counts = BTreeMap::new();
        for call in &self.state().calls {
            if let Some(kind) = routes::scaleset::call_kind(&call.method, &call.path) {
                *counts.entry(kind).or_default() += 1;
            }
        }
        counts
    }

    /// Lifetime of admin tokens issued from now on (default 1 h); an expired one gets 401.
    pub fn set_scaleset_admin_token_ttl(&self, d: Duration) {
        self.state().scaleset.admin_token_ttl = d;
    }

    /// Lifetime of message-queue tokens issued (or refreshed) from now on (default 1 h); an
    /// expired one gets 401 until the session is refreshed.
    pub fn set_scaleset_queue_token_ttl(&self, d: Duration) {
        self.state().scaleset.queue_token_ttl = d;
    }

    /// How long a scale-set session lives without a poll or another queue call (default 120 s).
    /// A session with a poll in progress never expires.
    pub fn set_scaleset_session_idle_timeout(&self, d: Duration) {
        self.state().scaleset.session_idle_timeout = d;
    }

    /// How long a message poll waits before answering 202 (default 50 s), for polls started
    /// from now on.
    pub fn set_scaleset_poll_timeout(&self, d: Duration) {
        self.state().scaleset.poll_timeout = d;
    }

    /// How long an assigned job waits for a runner of its scale set before the assignment is
    /// cancelled and made again (default 60 s); also how long an offer waits to be acquired
    /// before it is made again.
    pub fn set_scaleset_reassign_after(&self, d: Duration) {
        self.state().scaleset.reassign_after = d;
    }

    /// When on, jobs are offered with `JobAvailable` and assigned only once the scale set
    /// acquires them (`POST …/acquirejobs`); when off (the default), they are assigned at once
    /// with `JobAssigned`. Affects jobs offered or assigned from now on.
    pub fn set_scaleset_acquire_required(&self, on: bool) {
        self.state().scaleset.acquire_required = on;
    }
}
