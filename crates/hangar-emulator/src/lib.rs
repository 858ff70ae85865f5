//! `hangar-emulator`: a stateful, strict emulator of the parts of GitHub's REST API that Hangar
//! uses (GitHub App authentication, installation tokens, self-hosted runner management), served
//! by axum on a local port. Integration tests point Hangar's real HTTP client at
//! [`Emulator::api_url`] and drive failures through the fault knobs; `hangar dev` runs it as a
//! fake GitHub. It is strict on purpose: a request GitHub would refuse is refused here too, with
//! GitHub's status, message and headers.
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

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::http::StatusCode;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

mod auth;
mod error;
mod faults;
mod jit;
pub mod keys;
mod routes;
mod server;
mod state;
mod world;

pub use jit::{JitConfig, JitConfigError};
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
}

/// One request the emulator answered.
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

/// A runner as the emulator holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunnerView {
    /// Runner id (global, increasing from 1).
    pub id: u64,
    /// Runner name.
    pub name: String,
    /// `status: "online"`.
    pub online: bool,
    /// Running a job.
    pub busy: bool,
    /// All label names as the API lists them: `self-hosted`, `Linux`, `X64`, then custom labels.
    pub labels: Vec<String>,
    /// Ephemeral runner (JIT runners are).
    pub ephemeral: bool,
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

impl Emulator {
    /// Starts an emulator of `world` on `127.0.0.1` with an ephemeral port.
    pub async fn start(world: World) -> std::io::Result<Emulator> {
        Self::start_on(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), world).await
    }

    /// Starts an emulator of `world` on `addr`.
    pub async fn start_on(addr: SocketAddr, world: World) -> std::io::Result<Emulator> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::new(State::from_world(world)));
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
        self.inner.shared.lock()
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
        let status = StatusCode::from_u16(status)
            .unwrap_or_else(|_| panic!("fail_next: {status} is not an HTTP status code"));
        self.state().faults.push(Fault::Fail(status), n);
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
        state.insert_runner(scope, spec, 1, None)
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
        self.state()
            .runners
            .values()
            .find(|r| r.jit_credential.as_deref() == Some(credential))
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

    /// Sets whether a runner is running a job; false if there is no such runner.
    pub fn set_runner_busy(&self, id: u64, busy: bool) -> bool {
        self.state()
            .runners
            .get_mut(&id)
            .map(|r| r.busy = busy)
            .is_some()
    }

    /// Removes a runner (as if it deregistered); false if there is no such runner.
    pub fn remove_runner(&self, id: u64) -> bool {
        self.state().runners.remove(&id).is_some()
    }

    /// The scope of a valid (known, unexpired) registration token.
    pub fn registration_token_scope(&self, token: &str) -> Option<Scope> {
        let state = self.state();
        let now = state.now();
        state
            .runner_tokens
            .get(token)
            .filter(|t| t.kind == RunnerTokenKind::Registration && t.expires_at > now)
            .map(|t| t.scope.clone())
    }

    /// How many registration tokens were issued.
    pub fn registration_tokens_issued(&self) -> usize {
        self.state().registration_tokens_issued
    }

    /// How many remove tokens were issued.
    pub fn remove_tokens_issued(&self) -> usize {
        self.state().remove_tokens_issued
    }

    /// How many JIT configs were issued.
    pub fn jit_configs_issued(&self) -> usize {
        self.state().jit_configs_issued
    }

    /// How many installation tokens were minted.
    pub fn installation_tokens_minted(&self) -> usize {
        self.state().installation_tokens_minted
    }

    /// Every request so far, in arrival order (including refused and faulted ones).
    pub fn calls(&self) -> Vec<CallRecord> {
        self.state().calls.clone()
    }

    /// Forgets the recorded calls.
    pub fn clear_calls(&self) {
        self.state().calls.clear();
    }
}
