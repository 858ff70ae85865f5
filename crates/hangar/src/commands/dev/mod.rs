//! `hangar dev`: the whole autoscaling loop on one machine with no cloud account. It starts the
//! GitHub emulator with the seed's world, checks both credential paths with `doctor`, then runs
//! `hangar controller` in this process with the seed's two set-ups as pools: `standalone`
//! (`your-organization/your-repository-name`, PAT) and `org` (`your-organization`, GitHub App),
//! both on the local backend (each runner an ephemeral `hangar agent` process supervising the
//! stand-in runner), starting at zero runners. It queues the sample workflow (Checkout, Build,
//! Test) to each pool and shows live how the controller scales up for it (job queued, runner
//! launched, online, job claimed, steps with logs, completed, runner gone), prints each job's
//! lifecycle table with measured times, and waits until both pools are back at zero.
//! `--exit-after-jobs N` then runs the rest of N jobs in bursts the pools can absorb and prints a
//! one-line summary (the benchmark's); otherwise it serves until Ctrl-C or SIGTERM.
//!
//! Invariants:
//! - Everything it talks to is on 127.0.0.1; the only credentials are the emulator's published
//!   fixtures, handed to the controller in memory (the App key in a 0600 file, as an operator
//!   would keep it), never through argv or a child's environment.
//! - Every way out stops the controller, then every runner agent (one SIGTERM each, a kill only
//!   after the grace or on a second Ctrl-C), removes the registrations no one else will remove,
//!   and fails unless the emulator then lists no runner of either pool.
//! - Agents run in their own process groups, so a terminal's Ctrl-C reaches only `dev`, which
//!   decides when they stop.
//! - The session's folder is removed at the end, unless the session failed (then it is kept,
//!   and named, for its agent logs).

mod timeline;

/// `println!` that ignores a closed stdout (`hangar dev | head`): the session must still stop
/// its runners and deregister them rather than panic.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock(), $($arg)*);
    }};
}

use std::collections::{BTreeMap, HashMap};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use hangar_emulator::{
    Emulator, JobEvent, JobSpec, JobStatus, JobView, SEED_CLIENT_ID, SEED_ORG, SEED_PAT, SEED_REPO,
    World, keys,
};
use serde_json::Value;
use tokio::sync::broadcast::error::RecvError;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use self::timeline::{AgentMilestones, JobRecord, Pool, StepRecord};
use super::{Connection, CredentialEnv, doctor, pools};
use crate::controller::backend::local::LocalBackend;
use crate::controller::backend::{Backend, Task, TaskState};
use crate::controller::config::ControllerConfig;
use crate::controller::listener::ListenerTiming;
use crate::controller::runtime::{self, ControllerError, LocalBackendHook, RunOptions};
use crate::credentials::{ENV_CLIENT_ID, ENV_PAT, ENV_PRIVATE_KEY_FILE};
use crate::github::{GitHubConfig, RunnerRemoval, Scope};

pub struct DevOptions {
    pub port: u16,
    /// Run this many jobs (alternating between the two pools), then stop; `None` runs the
    /// sample workflow once per pool and serves until Ctrl-C.
    pub exit_after_jobs: Option<usize>,
}

/// Each pool's most runners; a burst of jobs is at most this many per pool.
const POOL_MAX: u32 = 4;
/// The controller's resync: how stale `/status` can be, and the longest a lost message delays.
const RESYNC: Duration = Duration::from_secs(5);
/// How often the controller's local backends are looked at for launched and exited runners.
const TICK: Duration = Duration::from_millis(100);
const SESSIONS_WITHIN: Duration = Duration::from_secs(30);
/// For one burst of jobs (or the sample jobs) to be done, runners gone included.
const JOBS_WITHIN: Duration = Duration::from_secs(120);
/// For both pools to be back at zero once the jobs are done (a resync or two, and some slack).
const ZERO_WITHIN: Duration = Duration::from_secs(60);
/// What an agent gets to stop its runner before its process tree is killed.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// Jobs shown step by step: the sample workflow, once per pool.
const SAMPLE_JOBS: usize = 2;

/// Why `hangar dev` failed. None of these carries a credential.
#[derive(Debug, thiserror::Error)]
pub enum DevError {
    #[error(
        "cannot start the GitHub emulator on 127.0.0.1:{port}: {cause}. Fix: pick a free port with --port, or --port 0 for any"
    )]
    Emulator { port: u16, cause: String },
    #[error(
        "cannot prepare the session folder {path}: {cause}. Fix: make the temporary directory writable (or point TMPDIR at one that is)"
    )]
    Workdir { path: String, cause: String },
    #[error(
        "doctor found failing checks against the emulator ({what}); this is a bug in Hangar: please report it with the output above"
    )]
    Doctor { what: &'static str },
    #[error(
        "the controller could not start: {0}. This is a bug in hangar dev's generated configuration; please report it"
    )]
    ControllerStart(ControllerError),
    #[error("the controller stopped on its own{0}; run with -v to see its log")]
    ControllerStopped(String),
    #[error(
        "cannot find the running hangar executable ({0}), which the local backend runs as `hangar agent`. Fix: run hangar from a path that still exists"
    )]
    Executable(String),
    #[error("the session did not stop cleanly: {0}")]
    Teardown(String),
    #[error("{what} within {secs} s: {detail}. Fix: run with -v to see the controller's log")]
    TimedOut {
        what: String,
        secs: u64,
        detail: String,
    },
    #[error("jobs did not succeed: {0}; each runner's agent.log is in the session folder")]
    JobsFailed(String),
    #[error("interrupted after {done} of {target} jobs")]
    Interrupted { done: usize, target: usize },
    #[error("runners still registered after stopping everything: {0}")]
    RunnersLeft(String),
    #[error("the emulator stopped sending events")]
    EmulatorGone,
}

/// The session's files (controller configuration, App key, runner folders), removed on drop
/// unless kept.
struct Workdir {
    path: PathBuf,
    keep: bool,
}

impl Workdir {
    fn create() -> Result<Workdir, DevError> {
        use std::os::unix::fs::DirBuilderExt;
        let path = std::env::temp_dir().join(format!("hangar-dev-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&path)
            .map_err(|e| DevError::Workdir {
                path: path.display().to_string(),
                cause: e.to_string(),
            })?;
        Ok(Workdir { path, keep: false })
    }

    fn error(&self, e: std::io::Error) -> DevError {
        DevError::Workdir {
            path: self.path.display().to_string(),
            cause: e.to_string(),
        }
    }

    /// The emulator's App key, in a file only this user can read (as an operator keeps one).
    fn key_file(&self) -> Result<PathBuf, DevError> {
        use std::os::unix::fs::OpenOptionsExt;
        let path = self.path.join("emulator-app-key.pem");
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| self.error(e))?;
        std::io::Write::write_all(&mut file, keys::APP_PRIVATE_KEY_PKCS1.as_bytes())
            .map_err(|e| self.error(e))?;
        Ok(path)
    }

    fn runners_root(&self) -> PathBuf {
        self.path.join("runners")
    }
}

impl Drop for Workdir {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// A TOML basic string.
fn toml_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The controller's pool file for the session: the seed's two set-ups as pools that start at
/// zero, on the local backend, with the emulator as GitHub.
fn controller_config(api: &str, web: &str, binary: &Path, runners_root: &Path) -> String {
    let mut text = format!(
        "# Written by `hangar dev` for this session.\n\
         [controller]\n\
         resync_interval = \"{}s\"\n\
         listen = \"127.0.0.1:0\"\n\
         github_api_url = {}\n\
         github_web_url = {}\n\
         owner_name = \"hangar-dev\"\n\
         \n\
         [defaults]\n\
         min_idle = 0\n\
         max = {POOL_MAX}\n",
        RESYNC.as_secs(),
        toml_string(api),
        toml_string(web),
    );
    for pool in Pool::ALL {
        let scope = match pool {
            Pool::Standalone => format!("repository = \"{SEED_ORG}/{SEED_REPO}\""),
            Pool::Org => format!("organization = \"{SEED_ORG}\""),
        };
        text.push_str(&format!(
            "\n[[pool]]\nname = \"{name}\"\n{scope}\n[pool.local]\nhangar_binary = {binary}\nwork_root = {root}\n",
            name = pool.name(),
            binary = toml_string(&binary.display().to_string()),
            root = toml_string(&runners_root.join(pool.name()).display().to_string()),
        ));
    }
    text
}

/// The pool whose controller would have given a runner this name.
fn pool_of_runner(config: &ControllerConfig, name: &str) -> Option<Pool> {
    Pool::ALL.into_iter().find(|p| {
        config
            .pool(p.name())
            .is_some_and(|pool| pool.owns_runner_name(name))
    })
}

/// The seed's credentials, as the controller reads them (never from the process environment).
fn seed_credentials(key_file: &Path) -> CredentialEnv {
    CredentialEnv::Given(HashMap::from([
        (ENV_PAT.to_string(), SEED_PAT.to_string()),
        (ENV_CLIENT_ID.to_string(), SEED_CLIENT_ID.to_string()),
        (
            ENV_PRIVATE_KEY_FILE.to_string(),
            key_file.display().to_string(),
        ),
    ]))
}

/// A connection to the emulator with `credentials` (no SSM: everything is given in memory).
fn emulator_connection(api: &str, web: &str, credentials: CredentialEnv) -> Connection {
    Connection {
        github: GitHubConfig::new(api, web),
        ssm_prefix: None,
        auth: None,
        credential_env: credentials,
    }
}

fn pool_scope(pool: Pool) -> Scope {
    match pool {
        Pool::Standalone => Scope::Repo {
            owner: SEED_ORG.to_string(),
            repo: SEED_REPO.to_string(),
        },
        Pool::Org => Scope::Org {
            org: SEED_ORG.to_string(),
        },
    }
}

fn emulator_scope(pool: Pool) -> hangar_emulator::Scope {
    match pool {
        Pool::Standalone => hangar_emulator::Scope::repo(SEED_ORG, SEED_REPO),
        Pool::Org => hangar_emulator::Scope::org(SEED_ORG),
    }
}

/// The sample workflow's job for `pool` (`runs-on: <pool>`, the pool's scale set).
fn sample_job(pool: Pool, n: usize) -> JobSpec {
    JobSpec::new(&format!("{SEED_ORG}/{SEED_REPO}"), &format!("ci-{}-{n}", pool.name()))
        .workflow("CI")
        .labels([pool.name()])
        .step(
            "Checkout",
            "mkdir -p src && printf 'fn main() { println!(\"hello\"); }\\n' > src/main.rs && echo \"checked out $GITHUB_REPOSITORY into $GITHUB_WORKSPACE\"",
        )
        .step("Build", "echo compiling src/main.rs; sleep 0.3; echo 'build ok: target/app'")
        .step("Test", "echo 'running 3 tests'; sleep 0.2; echo 'test result: ok. 3 passed; 0 failed'")
}

/// Every registration the emulator holds for the two pools' scopes, by name.
fn registrations(emu: &Emulator) -> Vec<String> {
    Pool::ALL
        .into_iter()
        .flat_map(|p| emu.runners(&emulator_scope(p)))
        .map(|r| r.name)
        .collect()
}

/// Whether a controller's `/status` shows every pool live, reconciled at least once, and at zero
/// runners with none wanted.
fn status_at_zero(status: &Value) -> bool {
    let Some(pools) = status["pools"].as_array() else {
        return false;
    };
    !pools.is_empty()
        && pools.iter().all(|p| {
            let st = &p["report"]["status"];
            p["session"] == "live"
                && p["report"]["passes"].as_u64().unwrap_or(0) > 0
                && st["assigned_jobs"] == 0
                && [&st["desired"], &st["capacity"], &st["pending"]]
                    .iter()
                    .all(|v| v.as_u64() == Some(0))
        })
}

/// The controller running in this process, and the local backends it made (one per pool).
struct Controller {
    cancel: CancellationToken,
    /// Cancelled when the controller's `run` returns, whyever it does.
    stopped: CancellationToken,
    task: Option<JoinHandle<Result<(), ControllerError>>>,
    addr: SocketAddr,
    backends: Arc<Mutex<BTreeMap<String, LocalBackend>>>,
}

impl Controller {
    async fn start(
        config_path: PathBuf,
        credentials: CredentialEnv,
    ) -> Result<Controller, DevError> {
        let cancel = CancellationToken::new();
        let stopped = CancellationToken::new();
        let backends: Arc<Mutex<BTreeMap<String, LocalBackend>>> = Arc::default();
        let seen = backends.clone();
        let hook: LocalBackendHook = Arc::new(move |pool: &str, backend: &LocalBackend| {
            seen.lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(pool.to_string(), backend.clone());
        });
        let (tx, rx) = tokio::sync::oneshot::channel();
        let mut options = RunOptions::new(config_path, cancel.clone());
        options.credential_env = credentials;
        options.on_listening = Some(tx);
        options.on_local_backend = Some(hook);
        options.listener_timing = ListenerTiming {
            statistics_refresh: RESYNC,
            // A newcomer watches jobs one by one: pickup time matters more here than the
            // GitHub calls that batching messages saves at scale.
            batch_window: Duration::from_millis(20),
            quiet_pause: Duration::from_millis(100),
            ..ListenerTiming::default()
        };
        let done = stopped.clone();
        let mut task = tokio::spawn(async move {
            let result = runtime::run(options).await;
            done.cancel();
            result
        });
        let addr = match tokio::time::timeout(SESSIONS_WITHIN, rx).await {
            Ok(Ok(addr)) => addr,
            // It returned before serving: its error says why.
            Ok(Err(_)) => {
                return Err(match (&mut task).await {
                    Ok(Err(e)) => DevError::ControllerStart(e),
                    Ok(Ok(())) => DevError::ControllerStopped(" before serving".into()),
                    Err(e) => DevError::ControllerStopped(format!(" ({e})")),
                });
            }
            Err(_) => {
                cancel.cancel();
                return Err(DevError::TimedOut {
                    what: "the controller did not serve its HTTP surface".into(),
                    secs: SESSIONS_WITHIN.as_secs(),
                    detail: "no address was bound".into(),
                });
            }
        };
        Ok(Controller {
            cancel,
            stopped,
            task: Some(task),
            addr,
            backends,
        })
    }

    fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn backend(&self, pool: Pool) -> Option<LocalBackend> {
        self.backends
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(pool.name())
            .cloned()
    }

    fn all_backends(&self) -> Vec<LocalBackend> {
        self.backends
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }

    async fn tasks(&self, pool: Pool) -> Vec<Task> {
        match self.backend(pool) {
            Some(b) => b.list(pool.name()).await.unwrap_or_default(),
            None => Vec::new(),
        }
    }

    /// Agents of either pool that have not exited.
    async fn live_tasks(&self) -> Vec<String> {
        let mut live = Vec::new();
        for pool in Pool::ALL {
            live.extend(
                self.tasks(pool)
                    .await
                    .into_iter()
                    .filter(|t| t.state != TaskState::Stopped)
                    .map(|t| t.tags.runner_name),
            );
        }
        live
    }

    async fn status(&self) -> Option<Value> {
        pools::fetch(&self.base_url(), None).await.ok()
    }
}

/// What the session is told from outside: the first signal stops it, a second one hurries the
/// teardown (kills the agents instead of waiting for them).
#[derive(Clone, Default)]
struct Signals {
    stop: CancellationToken,
    force: CancellationToken,
}

impl Signals {
    fn watch() -> (Signals, JoinHandle<()>) {
        let signals = Signals::default();
        let s = signals.clone();
        let task = tokio::spawn(async move {
            super::stop_signal().await;
            s.stop.cancel();
            super::stop_signal().await;
            s.force.cancel();
        });
        (signals, task)
    }
}

/// `[   1.234s]`: seconds since `t0`.
fn stamp(t0: DateTime<Utc>, at: DateTime<Utc>) -> String {
    let s = (at - t0).num_microseconds().unwrap_or(0) as f64 / 1e6;
    format!("[{s:>8.3}s]")
}

/// One line of the live view.
fn say(t0: DateTime<Utc>, at: DateTime<Utc>, pool: Pool, line: &str) {
    out!("{} {pool:<10} {line}", stamp(t0, at));
}

/// A runner as the live view saw it.
struct RunnerSeen {
    pool: Pool,
    launched: DateTime<Utc>,
    online: Option<DateTime<Utc>>,
    removed: Option<DateTime<Utc>>,
    /// The agent's exit: when (its last log line, or when it was seen gone) and its status.
    exited: Option<(DateTime<Utc>, String)>,
    milestones: AgentMilestones,
    took_job: bool,
}

/// The live view of the sample jobs: what has been seen of each job and runner, and the
/// printing of it.
struct Show {
    t0: DateTime<Utc>,
    jobs: BTreeMap<u64, JobRecord>,
    runners: BTreeMap<String, RunnerSeen>,
    tables_printed: Vec<u64>,
}

impl Show {
    fn new(t0: DateTime<Utc>) -> Show {
        Show {
            t0,
            jobs: BTreeMap::new(),
            runners: BTreeMap::new(),
            tables_printed: Vec::new(),
        }
    }

    fn stamp(&self, at: DateTime<Utc>) -> String {
        stamp(self.t0, at)
    }

    fn track(&mut self, job_id: u64, pool: Pool, name: String) {
        self.jobs.insert(
            job_id,
            JobRecord {
                name,
                pool,
                ..JobRecord::default()
            },
        );
    }

    /// A pool's task as its backend lists it: a launch, an exit.
    fn on_task(&mut self, pool: Pool, backend: &LocalBackend, task: Task) {
        let name = task.tags.runner_name.clone();
        if !self.runners.contains_key(&name) {
            let pid = backend
                .agent_pid(&task.id)
                .map(|p| format!(", agent pid {p}"))
                .unwrap_or_default();
            say(
                self.t0,
                task.created_at,
                pool,
                &format!("controller launched runner {name} (task {}{pid})", task.id),
            );
            self.runners.insert(
                name.clone(),
                RunnerSeen {
                    pool,
                    launched: task.created_at,
                    online: None,
                    removed: None,
                    exited: None,
                    milestones: AgentMilestones::default(),
                    took_job: false,
                },
            );
        }
        let Some(seen) = self.runners.get_mut(&name) else {
            return;
        };
        if task.state == TaskState::Stopped && seen.exited.is_none() {
            // `hangar agent` logs JSON lines to agent.log in the runner's folder.
            let log = std::fs::read_to_string(backend.task_folder(&name).join("agent.log"))
                .unwrap_or_default();
            seen.milestones = timeline::agent_milestones(&log);
            let at = seen.milestones.done.unwrap_or_else(Utc::now);
            let status = task.stop_reason.unwrap_or_else(|| "exited".into());
            seen.exited = Some((at, status.clone()));
            say(
                self.t0,
                at,
                pool,
                &format!("hangar agent of {name} exited ({status})"),
            );
        }
    }

    fn on_event(&mut self, event: JobEvent) {
        let at = event.at();
        if let Some((pool, line)) = self.record(event, at) {
            say(self.t0, at, pool, &line);
        }
    }

    /// Records what `event` says of a tracked job or runner; returns the live view's line for
    /// it, if it is one the view shows.
    fn record(&mut self, event: JobEvent, at: DateTime<Utc>) -> Option<(Pool, String)> {
        match event {
            JobEvent::RunnerOnline {
                runner_id, name, ..
            } => {
                let seen = self.runners.get_mut(&name)?;
                seen.online.get_or_insert(at);
                let line = format!("runner {name} (id {runner_id}) online, polling for jobs");
                Some((seen.pool, line))
            }
            JobEvent::RunnerRemoved { name, .. } => {
                let seen = self.runners.get_mut(&name)?;
                seen.removed.get_or_insert(at);
                let why = if seen.took_job {
                    "GitHub deletes an ephemeral runner after its job"
                } else {
                    "it never took a job"
                };
                let line = format!("runner {name} removed from GitHub ({why})");
                Some((seen.pool, line))
            }
            JobEvent::Queued { job_id, .. } => {
                let r = self.jobs.get_mut(&job_id)?;
                r.queued = Some(at);
                Some((
                    r.pool,
                    format!("job {} queued (runs-on: {})", r.name, r.pool),
                ))
            }
            JobEvent::Claimed {
                job_id,
                runner_name,
                ..
            } => {
                if let Some(seen) = self.runners.get_mut(&runner_name) {
                    seen.took_job = true;
                }
                let r = self.jobs.get_mut(&job_id)?;
                let line = format!("job {} claimed by {runner_name}", r.name);
                r.claimed = Some((at, runner_name));
                Some((r.pool, line))
            }
            JobEvent::StepStarted {
                job_id, step, name, ..
            } => {
                let r = self.jobs.get_mut(&job_id)?;
                let line = format!("step {} \"{name}\" started", step + 1);
                if let Ok(i) = usize::try_from(step) {
                    let s = r.step_mut(i);
                    s.name = name;
                    s.started = Some(at);
                }
                Some((r.pool, line))
            }
            JobEvent::Log { job_id, text, .. } => {
                let r = self.jobs.get(&job_id)?;
                Some((r.pool, format!("  | {text}")))
            }
            JobEvent::StepCompleted {
                job_id,
                step,
                conclusion,
                ..
            } => {
                let r = self.jobs.get_mut(&job_id)?;
                if let Ok(i) = usize::try_from(step) {
                    r.step_mut(i).completed = Some((at, conclusion.as_str().to_string()));
                }
                Some((r.pool, format!("step {} {}", step + 1, conclusion.as_str())))
            }
            JobEvent::Completed {
                job_id, conclusion, ..
            } => {
                let r = self.jobs.get_mut(&job_id)?;
                let c = conclusion.as_str().to_string();
                let line = format!("job {} completed: {c}", r.name);
                r.completed = Some((at, c));
                Some((r.pool, line))
            }
            JobEvent::Requeued {
                job_id, runner_id, ..
            } => {
                let r = self.jobs.get(&job_id)?;
                let line = format!(
                    "job {} back in the queue: runner {runner_id} lost its session before starting it",
                    r.name
                );
                Some((r.pool, line))
            }
            JobEvent::RunnerOffline { .. } | JobEvent::RunnerListening { .. } => None,
        }
    }

    /// Joins each job to the runner that claimed it and prints the table of every job whose
    /// runner is gone. True once every tracked job's table is printed.
    fn finish_jobs(&mut self) -> bool {
        for (id, record) in self.jobs.iter_mut() {
            if self.tables_printed.contains(id) {
                continue;
            }
            let Some(seen) = record
                .claimed
                .as_ref()
                .and_then(|(_, name)| self.runners.get(name))
            else {
                continue;
            };
            record.launched = Some(seen.launched);
            record.online = seen.online;
            record.registered = seen.milestones.registered;
            record.hook_started = seen.milestones.hook_started;
            record.hook_completed = seen.milestones.hook_completed;
            record.runner_removed = seen.removed;
            record.agent_exited = seen.exited.clone();
            if record.finished() {
                out!(
                    "\nLifecycle of job {} in pool {} (measured):\n{}",
                    record.name,
                    record.pool,
                    timeline::render(&timeline::rows(record))
                );
                self.tables_printed.push(*id);
            }
        }
        self.tables_printed.len() == self.jobs.len()
    }
}

/// The job record of a finished job, from the emulator's view of it (for the summary).
fn record_of(view: &JobView, pool: Pool) -> JobRecord {
    JobRecord {
        name: view.name.clone(),
        pool,
        queued: Some(view.created_at),
        claimed: view.started_at.zip(view.runner_name.clone()),
        steps: view
            .steps
            .iter()
            .map(|s| StepRecord {
                name: s.name.clone(),
                started: s.started_at,
                completed: s
                    .completed_at
                    .zip(s.conclusion.map(|c| c.as_str().to_string())),
            })
            .collect(),
        completed: view
            .completed_at
            .zip(view.conclusion.map(|c| c.as_str().to_string())),
        ..JobRecord::default()
    }
}

/// The jobs of the session, in the order they were queued, alternating between the pools.
struct Jobs {
    queued: Vec<(u64, Pool)>,
    per_pool: HashMap<Pool, usize>,
}

impl Jobs {
    fn queue(&mut self, emu: &Emulator) -> (u64, Pool, String) {
        let pool = Pool::ALL[self.queued.len() % Pool::ALL.len()];
        let n = self.per_pool.entry(pool).or_default();
        *n += 1;
        let spec = sample_job(pool, *n);
        let name = format!("ci-{}-{n}", pool.name());
        let id = emu.enqueue_job(spec);
        self.queued.push((id, pool));
        (id, pool, name)
    }

    /// Names and conclusions of completed jobs that did not succeed.
    fn failures(&self, emu: &Emulator) -> Vec<String> {
        self.queued
            .iter()
            .filter_map(|(id, _)| emu.job(*id))
            .filter(|v| v.status == JobStatus::Completed)
            .filter(|v| v.conclusion.map(|c| c.as_str()) != Some("success"))
            .map(|v| {
                format!(
                    "{} ({})",
                    v.name,
                    v.conclusion.map(|c| c.as_str()).unwrap_or("no conclusion")
                )
            })
            .collect()
    }
}

/// Why a phase of the session ended early.
enum Halt {
    Signal,
    Failed(DevError),
}

impl From<DevError> for Halt {
    fn from(e: DevError) -> Halt {
        Halt::Failed(e)
    }
}

/// The session's moving parts, for its phases.
struct Session<'a> {
    emu: &'a Emulator,
    controller: &'a Controller,
    signals: &'a Signals,
    jobs: Jobs,
}

impl Session<'_> {
    /// Why the session must stop early, once it must: a signal, or the controller stopping on
    /// its own.
    async fn interrupted(&self) -> Halt {
        tokio::select! {
            _ = self.signals.stop.cancelled() => Halt::Signal,
            _ = self.controller.stopped.cancelled() => DevError::ControllerStopped(String::new()).into(),
        }
    }

    /// What the controller's `/status` adds to a failure: its pool table.
    async fn status_detail(&self) -> String {
        match self.controller.status().await {
            Some(s) => format!("the controller reports:\n{}", pools::render_text(&s)),
            None => "the controller's /status does not answer".into(),
        }
    }

    async fn timed_out(&self, what: impl Into<String>, within: Duration, extra: String) -> Halt {
        Halt::Failed(DevError::TimedOut {
            what: what.into(),
            secs: within.as_secs(),
            detail: format!("{extra}; {}", self.status_detail().await),
        })
    }

    /// Both scale-set sessions live and reconciled once, with no runner.
    async fn wait_for_sessions(&self) -> Result<Value, Halt> {
        let deadline = Instant::now() + SESSIONS_WITHIN;
        loop {
            if let Some(status) = self.controller.status().await
                && status_at_zero(&status)
            {
                return Ok(status);
            }
            tokio::select! {
                halt = self.interrupted() => return Err(halt),
                _ = tokio::time::sleep_until(deadline) => {
                    return Err(self.timed_out("the pools' scale-set sessions were not live", SESSIONS_WITHIN, "still connecting".into()).await);
                }
                _ = tokio::time::sleep(TICK) => {}
            }
        }
    }

    /// Queues the sample workflow to each pool (as far as `target` allows) and shows it live
    /// until every sample job's runner is gone.
    async fn sample(&mut self, show: &mut Show, target: usize) -> Result<(), Halt> {
        let mut events = self.emu.subscribe();
        for _ in 0..target.min(SAMPLE_JOBS) {
            let (id, pool, name) = self.jobs.queue(self.emu);
            show.track(id, pool, name);
        }
        let deadline = Instant::now() + JOBS_WITHIN;
        let mut tick = tokio::time::interval(TICK);
        loop {
            if show.finish_jobs() {
                return Ok(());
            }
            tokio::select! {
                halt = self.interrupted() => return Err(halt),
                _ = tokio::time::sleep_until(deadline) => {
                    let waiting: Vec<&str> = show.jobs.iter().filter(|(id, _)| !show.tables_printed.contains(id)).map(|(_, r)| r.name.as_str()).collect();
                    return Err(self.timed_out("the sample jobs did not finish (runner gone included)", JOBS_WITHIN, format!("waiting for {}", waiting.join(", "))).await);
                }
                event = events.recv() => match event {
                    Ok(event) => {
                        // Show the launch before the runner's first event, whatever the tick.
                        if matches!(event, JobEvent::RunnerOnline { .. } | JobEvent::Claimed { .. }) {
                            self.look_at_backends(show).await;
                        }
                        show.on_event(event);
                    }
                    Err(RecvError::Lagged(n)) => tracing::warn!(missed = n, "the live view fell behind the emulator's events"),
                    Err(RecvError::Closed) => return Err(DevError::EmulatorGone.into()),
                },
                _ = tick.tick() => self.look_at_backends(show).await,
            }
        }
    }

    /// Both pools' tasks, oldest first, so launches print in the order they happened.
    async fn look_at_backends(&self, show: &mut Show) {
        let mut seen = Vec::new();
        for pool in Pool::ALL {
            if let Some(backend) = self.controller.backend(pool) {
                for task in backend.list(pool.name()).await.unwrap_or_default() {
                    seen.push((pool, backend.clone(), task));
                }
            }
        }
        seen.sort_by_key(|(_, _, task)| task.created_at);
        for (pool, backend, task) in seen {
            show.on_task(pool, &backend, task);
        }
    }

    /// The rest of `target` jobs, in bursts of at most `POOL_MAX` per pool, each waited for.
    async fn bulk(&mut self, target: usize, t0: Instant) -> Result<(), Halt> {
        let burst = POOL_MAX as usize * Pool::ALL.len();
        out!(
            "\nQueueing {} more jobs, alternating between the pools, in bursts of up to {burst}:",
            target - self.jobs.queued.len()
        );
        let mut done = self.jobs.queued.len();
        while self.jobs.queued.len() < target {
            let n = burst.min(target - self.jobs.queued.len());
            let mut waiting: Vec<u64> = (0..n).map(|_| self.jobs.queue(self.emu).0).collect();
            let mut events = self.emu.subscribe();
            let deadline = Instant::now() + JOBS_WITHIN;
            while !waiting.is_empty() {
                tokio::select! {
                    halt = self.interrupted() => return Err(halt),
                    _ = tokio::time::sleep_until(deadline) => {
                        return Err(self.timed_out(format!("{} of a burst of {n} jobs did not complete", waiting.len()), JOBS_WITHIN, format!("{done} of {target} jobs done")).await);
                    }
                    event = events.recv() => match event {
                        Err(RecvError::Closed) => return Err(DevError::EmulatorGone.into()),
                        // Only a completion (or missed events) can change what is waited for.
                        Ok(JobEvent::Completed { .. }) | Err(RecvError::Lagged(_)) => {}
                        Ok(_) => continue,
                    },
                    _ = tokio::time::sleep(Duration::from_millis(250)) => {}
                }
                let before = waiting.len();
                waiting.retain(|id| {
                    self.emu
                        .job(*id)
                        .is_none_or(|v| v.status != JobStatus::Completed)
                });
                for _ in 0..before - waiting.len() {
                    done += 1;
                    if done.is_multiple_of(10) || done == target {
                        out!(
                            "[{:>8.3}s] {done} of {target} jobs done",
                            t0.elapsed().as_secs_f64()
                        );
                    }
                }
            }
            let failed = self.jobs.failures(self.emu);
            if !failed.is_empty() {
                return Err(DevError::JobsFailed(failed.join(", ")).into());
            }
        }
        Ok(())
    }

    /// Both pools back at zero: no registration on GitHub, no agent running, and the
    /// controller's own view agreeing. Returns that view.
    async fn wait_for_zero(&self) -> Result<Value, Halt> {
        let deadline = Instant::now() + ZERO_WITHIN;
        loop {
            let registered = registrations(self.emu);
            let live = self.controller.live_tasks().await;
            if registered.is_empty()
                && live.is_empty()
                && let Some(status) = self.controller.status().await
                && status_at_zero(&status)
            {
                return Ok(status);
            }
            tokio::select! {
                halt = self.interrupted() => return Err(halt),
                _ = tokio::time::sleep_until(deadline) => {
                    return Err(self.timed_out(
                        "the pools did not scale back to zero",
                        ZERO_WITHIN,
                        format!("still registered on GitHub: [{}]; agents still running: [{}]", registered.join(", "), live.join(", ")),
                    ).await);
                }
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            }
        }
    }
}

pub async fn run(options: DevOptions) -> Result<(), DevError> {
    let emu = Emulator::start_on(
        SocketAddr::from((Ipv4Addr::LOCALHOST, options.port)),
        World::seed(),
    )
    .await
    .map_err(|e| DevError::Emulator {
        port: options.port,
        cause: e.to_string(),
    })?;
    let result = match Workdir::create() {
        Ok(mut work) => {
            let result = run_session(&emu, &work, &options).await;
            if result.is_err() {
                work.keep = true;
                out!(
                    "\nThe session's files (controller configuration, runner folders with agent.log) are kept in {}",
                    work.path.display()
                );
            }
            result
        }
        Err(e) => Err(e),
    };
    emu.shutdown().await;
    result
}

async fn run_session(emu: &Emulator, work: &Workdir, options: &DevOptions) -> Result<(), DevError> {
    let api = emu.api_url();
    let web = emu.web_url();
    let key_path = work.key_file()?;
    let credentials = seed_credentials(&key_path);
    out!("hangar dev: GitHub emulator on {api} (everything stays on 127.0.0.1)\n");

    // Both credential paths, checked the way an operator would.
    let given = |pairs: &[(&str, &str)]| {
        let pairs = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        emulator_connection(&api, &web, CredentialEnv::Given(pairs.collect()))
    };
    let key_str = key_path.display().to_string();
    for (what, connection, pool) in [
        (
            "standalone: PAT -> registration token",
            given(&[(ENV_PAT, SEED_PAT)]),
            Pool::Standalone,
        ),
        (
            "organization: client ID + PEM -> JWT -> installation token -> registration token",
            given(&[
                (ENV_CLIENT_ID, SEED_CLIENT_ID),
                (ENV_PRIVATE_KEY_FILE, &key_str),
            ]),
            Pool::Org,
        ),
    ] {
        let report = doctor::run(&connection, &pool_scope(pool)).await;
        let total = report.checks.len();
        out!(
            "hangar doctor, {what}: {} of {total} checks passed",
            total - report.failed()
        );
        if report.failed() > 0 {
            out!("{}", report.render_text());
            return Err(DevError::Doctor { what });
        }
    }

    let exe = std::env::current_exe().map_err(|e| DevError::Executable(e.to_string()))?;
    let config_path = work.path.join("hangar-controller.toml");
    let config_text = controller_config(&api, &web, &exe, &work.runners_root());
    // The pools as the controller reads them, so the teardown removes only runners they own.
    let config = ControllerConfig::parse(&config_text, &config_path.display().to_string())
        .map_err(|e| DevError::ControllerStart(e.into()))?;
    std::fs::write(&config_path, config_text).map_err(|e| work.error(e))?;

    let (signals, signal_task) = Signals::watch();
    let t0 = Utc::now();
    let started = Instant::now();
    let mut controller = Controller::start(config_path.clone(), credentials.clone()).await?;
    let base = controller.base_url();
    out!(
        "\nhangar controller, in this process ({}):",
        config_path.display()
    );
    for (pool, auth) in [(Pool::Standalone, "PAT"), (Pool::Org, "GitHub App")] {
        out!(
            "  {:<11} {:<55} {auth:<11} runs-on: {:<11} 0..{POOL_MAX} ephemeral runners",
            pool.name(),
            pool_scope(pool).to_string(),
            pool.name()
        );
    }
    out!("  web page: {base}/ (pools, jobs live as a timeline, launch failures, GitHub budget)");
    out!(
        "  serving {base}/metrics, {base}/status and {base}/jobs (`hangar status --controller {base}`, `hangar jobs --controller {base}`)"
    );
    out!(
        "  runners are `hangar agent` processes with the stand-in runner; folders and agent logs under {}",
        work.runners_root().display()
    );

    let target = options.exit_after_jobs.unwrap_or(SAMPLE_JOBS).max(1);
    let mut session = Session {
        emu,
        controller: &controller,
        signals: &signals,
        jobs: Jobs {
            queued: Vec::new(),
            per_pool: HashMap::new(),
        },
    };
    let outcome = drive(&mut session, options, target, t0, started).await;
    let done = session
        .jobs
        .queued
        .iter()
        .filter(|(id, _)| {
            emu.job(*id)
                .is_some_and(|v| v.status == JobStatus::Completed)
        })
        .count();

    if matches!(outcome, Err(Halt::Signal)) {
        out!(
            "\nStopping: the controller first, then every runner agent (a second Ctrl-C kills them)."
        );
    }
    let teardown = teardown(
        emu,
        &mut controller,
        &config,
        &signals,
        &credentials,
        &api,
        &web,
    )
    .await;
    signal_task.abort();
    match outcome {
        // The teardown has the controller's own error, if it returned one.
        Err(Halt::Failed(e @ DevError::ControllerStopped(_))) => teardown.and(Err(e)),
        Err(Halt::Failed(e)) => Err(e),
        Err(Halt::Signal) if options.exit_after_jobs.is_some() && done < target => {
            teardown?;
            Err(DevError::Interrupted { done, target })
        }
        _ => teardown,
    }
}

/// Everything between the controller serving and the teardown.
async fn drive(
    session: &mut Session<'_>,
    options: &DevOptions,
    target: usize,
    t0: DateTime<Utc>,
    started: Instant,
) -> Result<(), Halt> {
    let status = session.wait_for_sessions().await?;
    let mut show = Show::new(t0);
    out!(
        "\n{} Both scale-set sessions are live; the pools are at zero runners:\n{}",
        show.stamp(Utc::now()),
        pools::render_text(&status)
    );
    out!(
        "Queueing the sample workflow \"CI\" (Checkout, Build, Test) to each pool, runs-on: <pool>:"
    );
    session.sample(&mut show, target).await?;
    let failed = session.jobs.failures(session.emu);
    if !failed.is_empty() {
        return Err(DevError::JobsFailed(failed.join(", ")).into());
    }
    if session.jobs.queued.len() < target {
        session.bulk(target, started).await?;
    }
    let status = session.wait_for_zero().await?;
    out!(
        "{} Both pools scaled back to zero: no runner registered on GitHub, no agent running.\n{}",
        show.stamp(Utc::now()),
        pools::render_text(&status)
    );
    if options.exit_after_jobs.is_some() {
        let records: Vec<JobRecord> = session
            .jobs
            .queued
            .iter()
            .filter_map(|(id, pool)| session.emu.job(*id).map(|v| record_of(&v, *pool)))
            .collect();
        if let Some(line) = timeline::summary_line(&records) {
            out!("{line}");
        }
        return Ok(());
    }
    let base = session.controller.base_url();
    let api = session.emu.api_url();
    out!(
        "Serving until Ctrl-C. Nothing outside this session can queue jobs, so the pools stay at zero; the emulator serves on {api}, and from another shell:"
    );
    out!("  open {base}/ in a browser (the page updates itself)");
    out!("  hangar status --controller {base}");
    out!("  hangar jobs --controller {base}");
    out!("  curl -s {base}/metrics | grep -E '^(gha|hangar)_'");
    out!(
        "  GITHUB_API_URL={api} GITHUB_PAT={SEED_PAT} hangar doctor --repo {SEED_ORG}/{SEED_REPO}"
    );
    out!("Ctrl-C stops the controller and every runner (no registration is left on GitHub).");
    Err(session.interrupted().await)
}

/// Stops the controller, then every agent, removes the registrations no one else will (an
/// ephemeral runner stopped before it took a job: its agent holds no credentials, and its
/// launcher, the controller, is gone), and checks that none is left.
async fn teardown(
    emu: &Emulator,
    controller: &mut Controller,
    config: &ControllerConfig,
    signals: &Signals,
    credentials: &CredentialEnv,
    api: &str,
    web: &str,
) -> Result<(), DevError> {
    controller.cancel.cancel();
    let mut problems = Vec::new();
    if let Some(task) = controller.task.take() {
        match tokio::time::timeout(Duration::from_secs(30), task).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => problems.push(format!("the controller failed: {e}")),
            Ok(Err(e)) => problems.push(format!("the controller's task failed: {e}")),
            Err(_) => problems.push("the controller did not stop within 30 s".into()),
        }
    }
    let (mut stopped, mut killed) = (0, 0);
    for backend in controller.all_backends() {
        tokio::select! {
            report = backend.shutdown_all(STOP_GRACE) => {
                stopped += report.stopped.len();
                killed += report.killed.len();
            }
            _ = signals.force.cancelled() => killed += backend.kill_all(),
        }
    }
    let mut deregistered = 0;
    for pool in Pool::ALL {
        if emu.runners(&emulator_scope(pool)).is_empty() {
            continue;
        }
        let connection = emulator_connection(api, web, credentials.clone());
        let scope = pool_scope(pool);
        let Ok((github, _)) = connection.connect(&scope).await else {
            continue;
        };
        for runner in github.list_runners(&scope).await.unwrap_or_default() {
            if pool_of_runner(config, &runner.name) == Some(pool)
                && matches!(
                    github.delete_runner(&scope, runner.id).await,
                    Ok(RunnerRemoval::Removed | RunnerRemoval::AlreadyGone)
                )
            {
                deregistered += 1;
            }
        }
    }
    let left = registrations(emu);
    let mut line = match stopped + killed {
        0 => "Stopped the controller (no runner agent was running)".to_string(),
        n => format!("Stopped the controller and {n} runner agent(s)"),
    };
    if killed > 0 {
        line.push_str(&format!(
            " ({killed} killed: still running after {} s or a second Ctrl-C)",
            STOP_GRACE.as_secs()
        ));
    }
    if deregistered > 0 {
        line.push_str(&format!(
            "; removed {deregistered} registration(s) of runners stopped before they took a job"
        ));
    }
    if left.is_empty() {
        out!("{line}; no runner is registered on GitHub.");
    } else {
        out!("{line}.");
        problems.push(format!("still registered: {}", left.join(", ")));
    }
    if !left.is_empty() {
        Err(DevError::RunnersLeft(problems.join("; ")))
    } else if !problems.is_empty() {
        Err(DevError::Teardown(problems.join("; ")))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::config::BackendConfig;
    use serde_json::json;

    /// The session's configuration for an emulator on port 9, and what the controller reads of it.
    fn generated_config() -> (String, ControllerConfig) {
        let text = controller_config(
            "http://127.0.0.1:9/api/v3",
            "http://127.0.0.1:9",
            Path::new("/opt/han\"gar/hangar"),
            Path::new("/tmp/hangar-dev-1/runners"),
        );
        let config = ControllerConfig::parse(&text, "dev").unwrap();
        (text, config)
    }

    #[test]
    fn the_generated_configuration_is_the_seed_at_zero_on_the_local_backend() {
        let (text, config) = generated_config();
        assert_eq!(config.settings.github_api_url, "http://127.0.0.1:9/api/v3");
        assert_eq!(config.settings.resync_interval, RESYNC);
        assert_eq!(
            config.settings.listen,
            Some(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
        );
        let names: Vec<&str> = config.pools.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["standalone", "org"]);
        for (pool, expected) in config.pools.iter().zip(Pool::ALL) {
            assert_eq!(pool.scope, pool_scope(expected));
            assert_eq!(pool.scale_set, expected.name(), "runs-on: <pool>");
            assert_eq!(pool.limits.min_idle, 0);
            assert_eq!(pool.limits.max, POOL_MAX);
            let BackendConfig::Local(local) = &pool.backend else {
                panic!("local backend expected");
            };
            assert_eq!(
                local.hangar_binary.as_deref(),
                Some(Path::new("/opt/han\"gar/hangar"))
            );
            assert_eq!(
                local.work_root,
                Path::new("/tmp/hangar-dev-1/runners").join(expected.name())
            );
            assert!(local.env.is_empty());
        }
        assert!(!text.contains(SEED_PAT), "no credential in the file");
    }

    #[test]
    fn runner_names_map_to_their_pool() {
        let (_, config) = generated_config();
        let pool_of = |name| pool_of_runner(&config, name);
        assert_eq!(pool_of("standalone-ab12cd34"), Some(Pool::Standalone));
        assert_eq!(pool_of("org-ab12cd34"), Some(Pool::Org));
        assert_eq!(pool_of("org"), None);
        assert_eq!(pool_of("org-"), None);
        assert_eq!(pool_of("organization-ab12"), None);
        assert_eq!(pool_of("org-x-ab12cd34"), None);
        assert_eq!(pool_of("aws-github-runner-1"), None);
    }

    #[test]
    fn the_credentials_go_to_the_controller_in_memory_with_the_key_as_a_file() {
        let CredentialEnv::Given(map) = seed_credentials(Path::new("/tmp/k.pem")) else {
            panic!("given credentials expected");
        };
        assert_eq!(map.get(ENV_PAT).map(String::as_str), Some(SEED_PAT));
        assert_eq!(
            map.get(ENV_PRIVATE_KEY_FILE).map(String::as_str),
            Some("/tmp/k.pem")
        );
        assert!(
            !map.values().any(|v| v.contains("PRIVATE KEY")),
            "the key is passed by file, not by value"
        );
    }

    #[tokio::test]
    async fn the_sample_job_asks_for_its_pool_by_scale_set_name() {
        let view = tokio::time::timeout(Duration::from_secs(30), async {
            let emu = Emulator::start(World::seed()).await.unwrap();
            let id = emu.enqueue_job(sample_job(Pool::Org, 3));
            let view = emu.job(id).unwrap();
            emu.shutdown().await;
            view
        })
        .await
        .expect("the emulator answers");
        assert_eq!(view.labels, ["org"]);
        assert_eq!(view.name, "ci-org-3");
        assert_eq!(view.repository, format!("{SEED_ORG}/{SEED_REPO}"));
        let steps: Vec<&str> = view.steps.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(steps, ["Checkout", "Build", "Test"]);
    }

    #[test]
    fn zero_means_every_pool_live_reconciled_and_empty() {
        let pool = |session: &str, passes: u64, desired: u64, capacity: u64, pending: u64| {
            json!({"name": "p", "session": session, "report": {"passes": passes,
                "status": {"assigned_jobs": 0, "desired": desired, "capacity": capacity, "pending": pending}}})
        };
        let status = |pools: Vec<Value>| json!({"controller": {}, "pools": pools});
        let unknown_demand = json!({"name": "p", "session": "live", "report": {"passes": 1,
            "status": {"assigned_jobs": null, "desired": 0, "capacity": 0, "pending": 0}}});
        assert!(
            !status_at_zero(&status(vec![unknown_demand])),
            "no statistics yet"
        );
        assert!(status_at_zero(&status(vec![
            pool("live", 1, 0, 0, 0),
            pool("live", 3, 0, 0, 0)
        ])));
        assert!(!status_at_zero(&status(vec![
            pool("live", 1, 0, 0, 0),
            pool("connecting", 1, 0, 0, 0)
        ])));
        assert!(
            !status_at_zero(&status(vec![pool("live", 0, 0, 0, 0)])),
            "not reconciled yet"
        );
        assert!(
            !status_at_zero(&status(vec![pool("live", 1, 1, 0, 0)])),
            "a runner wanted"
        );
        assert!(
            !status_at_zero(&status(vec![pool("live", 1, 0, 1, 0)])),
            "a runner up"
        );
        assert!(
            !status_at_zero(&status(vec![pool("live", 1, 0, 0, 1)])),
            "a runner pending"
        );
        assert!(!status_at_zero(&status(vec![])));
        assert!(!status_at_zero(&json!({})));
    }

    #[test]
    fn toml_strings_are_escaped() {
        assert_eq!(toml_string("a\"b\\c"), r#""a\"b\\c""#);
        assert_eq!(toml_string("x\ny"), r#""x\u000Ay""#);
        let parsed: toml::Value =
            toml::from_str(&format!("v = {}", toml_string("a\"b\\c\ny"))).unwrap();
        assert_eq!(parsed["v"].as_str(), Some("a\"b\\c\ny"));
    }

    #[test]
    fn a_job_record_comes_from_the_emulators_view() {
        use hangar_emulator::{Conclusion, StepView};
        let at = |ms: i64| DateTime::<Utc>::from_timestamp_millis(1_800_000_000_000 + ms).unwrap();
        let step = |name: &str, started: Option<i64>, done: Option<i64>| StepView {
            name: name.into(),
            run: "true".into(),
            conclusion: done.map(|_| Conclusion::Success),
            exit_code: done.map(|_| 0),
            started_at: started.map(at),
            completed_at: done.map(at),
        };
        let view = JobView {
            id: 1,
            run_id: 2,
            repository: format!("{SEED_ORG}/{SEED_REPO}"),
            workflow: "CI".into(),
            name: "ci-org-1".into(),
            labels: vec!["org".into()],
            status: JobStatus::Completed,
            conclusion: Some(Conclusion::Success),
            runner_id: Some(9),
            runner_name: Some("org-abcd1234".into()),
            created_at: at(0),
            started_at: Some(at(800)),
            completed_at: Some(at(2000)),
            steps: vec![
                step("Checkout", Some(900), Some(950)),
                step("Build", Some(960), None),
            ],
            log: Vec::new(),
        };
        let record = record_of(&view, Pool::Org);
        assert_eq!(record.claimed, Some((at(800), "org-abcd1234".to_string())));
        assert_eq!(record.pickup_ms(), Some(800.0));
        assert_eq!(record.first_step_ms(), Some(900.0));
        assert_eq!(record.total_ms(), Some(2000.0));
        assert_eq!(record.steps[1].completed, None);
        assert_eq!(record.completed, Some((at(2000), "success".to_string())));
        let queued_only = JobView {
            status: JobStatus::Queued,
            conclusion: None,
            runner_name: None,
            started_at: None,
            completed_at: None,
            steps: Vec::new(),
            ..view
        };
        assert_eq!(record_of(&queued_only, Pool::Org).pickup_ms(), None);
    }
}
