//! `hangar controller` put together: for every pool of the configuration, a listener (the
//! scale-set session that yields demand) and a reconciler (observe -> plan -> act), joined by a
//! watch channel and a nudge; one HTTP surface (`/metrics`, `/healthz`, `/status`, optional
//! `/webhook`); a reload loop that applies a changed file pool by pool; and one shutdown path:
//! the caller's token -> every pool's token -> a bounded wait in which listeners delete their
//! sessions.
//!
//! Invariants:
//! - One listener per pool: a pool's worker is stopped (and its session deleted) before a
//!   changed configuration starts its replacement.
//! - Shutting down stops no runner: busy ones finish their jobs, and a restarted controller
//!   adopts every task by its tags.
//! - Job records survive a restart only with `controller.job_store`: loaded once before the
//!   pools start, saved every `jobs_store::SAVE_INTERVAL` when changed and once more after the
//!   pools stop (see `controller::jobs_store`).
//! - Credentials are read once, at start; a pool whose credentials or backend cannot be set up
//!   stops the start with an error that names the pool and the fix (exit 2), so nothing runs
//!   half-configured. On reload the same failure leaves that pool out and says why.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use secrecy::SecretString;
use serde_json::json;
use tokio::sync::{Notify, mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::adapter::LivePoolGitHub;
use super::backend::ecs::EcsBackend;
use super::backend::local::LocalBackend;
use super::backend::{Backend, BackendError};
use super::bills::Pricing;
use super::config::{
    BackendConfig, ConfigChange, ConfigError, ConfigWatcher, ControllerConfig, ControllerSettings,
    EcsLaunch, PoolConfig, Reload,
};
use super::creations::CreationPace;
use super::http::{self, Health, HttpState, WebhookRoute};
use super::jobs::{JobBook, RECENT_JOBS_KEPT};
use super::jobs_store;
use super::listener::{self, Demand, ListenerSpec, ListenerTiming, SessionState};
use super::metrics::{JobResult, Metrics, PoolGauges};
use super::reconcile::{DemandView, LoopSettings, PoolEvent, PoolReport, Reconciler};
use super::webhook::{Matcher, WebhookReceiver, WorkflowJobEvent};
use crate::commands::{Clients, Connection, CredentialEnv};
use crate::credentials::AuthMode;
use crate::github::scaleset::{ActionsService, JobMessage};
use crate::github::{GitHubConfig, Scope};

/// What `run` needs besides the file.
pub struct RunOptions {
    pub config_path: PathBuf,
    /// The pool file's text itself (from `HANGAR_CONFIG_TOML`, e.g. an ECS secret), instead of
    /// reading `config_path`; such a configuration is never reloaded.
    pub config_text: Option<String>,
    /// Where `GITHUB_PAT` / `GITHUB_APP_*` (and the webhook secret) are read from.
    pub credential_env: CredentialEnv,
    /// Cancel to stop the controller.
    pub shutdown: CancellationToken,
    /// Told the address the HTTP surface is bound to (useful with port 0).
    pub on_listening: Option<tokio::sync::oneshot::Sender<SocketAddr>>,
    /// The listener's waits (tests shorten them).
    pub listener_timing: ListenerTiming,
    /// Nudges within this window share one reconcile pass.
    pub debounce: Duration,
    /// Called with every local backend the controller creates, with its pool's name (tests
    /// inject launch failures through it).
    pub on_local_backend: Option<LocalBackendHook>,
    /// The AWS configuration of the ECS pools, instead of the environment's (tests point it at
    /// a local AWS emulator).
    pub aws_config: Option<aws_config::SdkConfig>,
    /// GitHub's API and web bases from the command line or the environment (`GITHUB_API_URL`,
    /// `GITHUB_URL`), for a file that sets none (the file wins).
    pub github_urls: Option<(String, String)>,
}

pub type LocalBackendHook = Arc<dyn Fn(&str, &LocalBackend) + Send + Sync>;

impl RunOptions {
    pub fn new(config_path: PathBuf, shutdown: CancellationToken) -> RunOptions {
        RunOptions {
            config_path,
            config_text: None,
            credential_env: CredentialEnv::Process,
            shutdown,
            on_listening: None,
            listener_timing: ListenerTiming::default(),
            debounce: LoopSettings::default().debounce,
            on_local_backend: None,
            aws_config: None,
            github_urls: None,
        }
    }
}

/// The variable that can carry the whole pool file (an ECS task gets it from SSM).
pub const ENV_CONFIG_TOML: &str = "HANGAR_CONFIG_TOML";

/// The pool file's text from `HANGAR_CONFIG_TOML`, if set (and not blank).
pub fn config_text_from_env() -> Option<String> {
    std::env::var(ENV_CONFIG_TOML)
        .ok()
        .filter(|t| !t.trim().is_empty())
}

/// The configuration from `text` (named `HANGAR_CONFIG_TOML` in errors) if given, else from
/// the file at `path`.
pub fn load_config(path: &Path, text: Option<&str>) -> Result<ControllerConfig, ConfigError> {
    match text {
        Some(text) => ControllerConfig::parse(text, ENV_CONFIG_TOML),
        None => ControllerConfig::load(path),
    }
}

/// Why the controller could not start.
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("pool {pool:?}: {message}")]
    Pool { pool: String, message: String },
    #[error(
        "cannot serve metrics on {addr}: {cause}. Fix: choose a free address in controller.listen"
    )]
    Listen { addr: SocketAddr, cause: String },
    #[error(
        "the webhook secret variable {name} is not set. Fix: export {name} with the secret configured on the GitHub webhook, or remove controller.webhook_secret_env"
    )]
    WebhookSecret { name: String },
    #[error(
        "the HTTP token variable {name} is not set. Fix: export {name} with the bearer token clients must send (hangar status/jobs read it from HANGAR_CONTROLLER_TOKEN), or remove controller.http_token_env"
    )]
    HttpToken { name: String },
}

/// A running pool.
struct PoolWorker {
    config: PoolConfig,
    cancel: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
    nudge: Arc<Notify>,
    /// Asks the listener to re-read the statistics now.
    refresh: Arc<Notify>,
    demand: watch::Receiver<Demand>,
    report: watch::Receiver<PoolReport>,
    /// The pool's jobs (see `controller::jobs`).
    jobs: Arc<Mutex<JobBook>>,
}

struct Shared {
    settings: ControllerSettings,
    clients: tokio::sync::Mutex<Clients>,
    aws: tokio::sync::OnceCell<aws_config::SdkConfig>,
    metrics: Metrics,
    workers: Mutex<BTreeMap<String, PoolWorker>>,
    listener_timing: ListenerTiming,
    debounce: Duration,
    on_local_backend: Option<LocalBackendHook>,
    started_at: DateTime<Utc>,
    reload_error: Mutex<Option<String>>,
    /// One pace for the SSM writes of every pool (see `pace`).
    ssm_writes: Arc<crate::controller::pace::Pacer>,
    /// One pace for the `DescribeParameters` pages of every pool's clean-up listing.
    ssm_describes: Arc<crate::controller::pace::Pacer>,
    /// The pace of runner creations under GitHub's secondary limit, one per credential
    /// (repository pools' and organization pools', as the budget splits them).
    creations: [Arc<CreationPace>; 2],
    /// Job records from the store, by pool, until their pool starts (the start's pools only).
    restored: Mutex<jobs_store::Snapshot>,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, PoolWorker>> {
        self.workers.lock().expect("workers poisoned")
    }
}

/// Runs the controller until `options.shutdown` is cancelled.
pub async fn run(mut options: RunOptions) -> Result<(), ControllerError> {
    let github_urls = options.github_urls.clone();
    let with_urls = move |config: ControllerConfig| match &github_urls {
        Some((api, web)) => config.with_github_urls(api, web),
        None => config,
    };
    let config = with_urls(load_config(
        &options.config_path,
        options.config_text.as_deref(),
    )?);
    let settings = config.settings.clone();
    let connection = Connection {
        github: GitHubConfig::new(&settings.github_api_url, &settings.github_web_url),
        ssm_prefix: settings.credentials_ssm_prefix.clone(),
        auth: None,
        credential_env: options.credential_env.clone(),
    };
    let webhook_secret = secret_env(&options.credential_env, &settings.webhook_secret_env)
        .map_err(|name| ControllerError::WebhookSecret { name })?;
    let http_token = secret_env(&options.credential_env, &settings.http_token_env)
        .map_err(|name| ControllerError::HttpToken { name })?;
    let (store, restored) = match &settings.job_store {
        Some(path) => jobs_store::open(path).await,
        None => (None, jobs_store::Snapshot::new()),
    };
    let shared = Arc::new(Shared {
        settings: settings.clone(),
        clients: tokio::sync::Mutex::new(Clients::load(&connection).await),
        aws: match options.aws_config.take() {
            Some(config) => tokio::sync::OnceCell::new_with(Some(config)),
            None => tokio::sync::OnceCell::new(),
        },
        metrics: Metrics::new(),
        workers: Mutex::new(BTreeMap::new()),
        listener_timing: options.listener_timing.clone(),
        debounce: options.debounce,
        on_local_backend: options.on_local_backend.clone(),
        started_at: Utc::now(),
        reload_error: Mutex::new(None),
        ssm_writes: Arc::new(crate::controller::pace::Pacer::new(
            settings.ssm_writes_per_second,
        )),
        ssm_describes: Arc::new(crate::controller::pace::Pacer::new(
            crate::controller::pace::SSM_DESCRIBES_PER_SECOND,
        )),
        creations: [
            Arc::new(CreationPace::new(settings.github_creations_per_minute)),
            Arc::new(CreationPace::new(settings.github_creations_per_minute)),
        ],
        restored: Mutex::new(restored),
    });
    let root = options.shutdown.child_token();
    for pool in &config.pools {
        match start_pool(&shared, pool.clone(), config.budget_share(pool), &root).await {
            Ok(worker) => {
                shared.lock().insert(pool.name.clone(), worker);
            }
            Err(message) => {
                stop_all(&shared, &root).await;
                return Err(ControllerError::Pool {
                    pool: pool.name.clone(),
                    message,
                });
            }
        }
    }
    let unclaimed = std::mem::take(&mut *shared.restored.lock().expect("poisoned"));
    if !unclaimed.is_empty() {
        tracing::info!(pools = ?unclaimed.keys().collect::<Vec<_>>(), "job records of pools no longer in the file are dropped");
    }
    let store = store.map(Arc::new);
    let saving = store.clone().map(|store| {
        let shared = shared.clone();
        let cancel = root.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(jobs_store::SAVE_INTERVAL) => {}
                }
                let _ = store.save(&job_books(&shared)).await;
            }
        })
    });
    tracing::info!(
        pools = config.pools.len(),
        config = %options.config_text.as_ref().map_or_else(|| options.config_path.display().to_string(), |_| ENV_CONFIG_TOML.to_string()),
        "controller started"
    );

    let mut http_task = None;
    if let Some(addr) = settings.listen {
        let listener = match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => l,
            Err(e) => {
                stop_all(&shared, &root).await;
                return Err(ControllerError::Listen {
                    addr,
                    cause: e.to_string(),
                });
            }
        };
        let bound = listener.local_addr().unwrap_or(addr);
        tracing::info!(addr = %bound, "serving /metrics, /healthz and /status");
        if let Some(tx) = options.on_listening.take() {
            let _ = tx.send(bound);
        }
        let state = http_state(&shared, webhook_secret, http_token);
        let cancel = root.clone();
        http_task = Some(tokio::spawn(async move {
            if let Err(e) = http::serve(listener, state, cancel).await {
                tracing::error!(error = %e, "the HTTP surface stopped");
            }
        }));
    }

    let mut watcher = ConfigWatcher::new(&options.config_path);
    let mut running = config;
    loop {
        tokio::select! {
            _ = root.cancelled() => break,
            _ = tokio::time::sleep(settings.reload_interval) => {}
        }
        if options.config_text.is_some() {
            continue;
        }
        match watcher.check() {
            Reload::Unchanged => {}
            Reload::Rejected(e) => {
                tracing::error!(error = %e, "the changed configuration was not applied; the running one stays");
                shared.metrics.config_reload_failed();
                *shared.reload_error.lock().expect("poisoned") = Some(e.to_string());
            }
            Reload::Changed(new) => {
                let new = Box::new(with_urls(*new));
                *shared.reload_error.lock().expect("poisoned") = None;
                if new.settings != running.settings {
                    tracing::warn!(
                        "controller settings changed; they apply at the next restart (pools apply now)"
                    );
                }
                apply(&shared, &root, &running, &new).await;
                running = *new;
            }
        }
    }
    // The books outlive their workers here, for the last save once the pools have stopped.
    let books = job_books(&shared);
    stop_all(&shared, &root).await;
    if let Some(store) = &store {
        if let Some(task) = saving {
            let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
        }
        if store.save(&books).await {
            tracing::info!(store = %store.path().display(), "job records saved");
        }
    }
    if let Some(task) = http_task {
        let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
    }
    tracing::info!("controller stopped; runners were left to finish their jobs");
    Ok(())
}

/// The secret in the variable the file names, if it names one; `Err(name)` when that variable
/// is unset or empty.
fn secret_env(env: &CredentialEnv, name: &Option<String>) -> Result<Option<SecretString>, String> {
    match name {
        None => Ok(None),
        Some(name) => read_env(env, name)
            .filter(|v| !v.is_empty())
            .map(|v| Some(SecretString::from(v)))
            .ok_or_else(|| name.clone()),
    }
}

fn read_env(env: &CredentialEnv, name: &str) -> Option<String> {
    match env {
        CredentialEnv::Process => std::env::var(name).ok(),
        CredentialEnv::Given(map) => map.get(name).cloned(),
    }
}

/// Applies a changed configuration pool by pool.
async fn apply(
    shared: &Arc<Shared>,
    root: &CancellationToken,
    old: &ControllerConfig,
    new: &ControllerConfig,
) {
    let change = ConfigChange::between(old, new);
    if change.is_empty() {
        return;
    }
    tracing::info!(added = ?change.added, removed = ?change.removed, changed = ?change.changed, "applying the changed configuration");
    for name in change.removed.iter().chain(&change.changed) {
        let worker = shared.lock().remove(name);
        if let Some(worker) = worker {
            let book = worker.jobs.clone();
            stop_worker(worker).await;
            // A changed pool keeps its job records: its new worker starts from them.
            if change.changed.contains(name) {
                let book = book.lock().expect("job book poisoned").clone();
                shared
                    .restored
                    .lock()
                    .expect("poisoned")
                    .extend(jobs_store::snapshot(&[(name.clone(), &book)]));
            }
        }
        if change.removed.contains(name) {
            shared.metrics.remove_pool(name);
        }
    }
    for name in change.added.iter().chain(&change.changed) {
        let pool = new.pool(name).expect("listed").clone();
        // New and changed pools split their credential's budget with the new count; pools left
        // running keep their part until they change.
        let budget_share = new.budget_share(&pool);
        match start_pool(shared, pool, budget_share, root).await {
            Ok(worker) => {
                shared.lock().insert(name.clone(), worker);
            }
            Err(message) => {
                tracing::error!(pool = %name, error = %message, "the pool could not be started; it is left out until the file changes");
                shared.metrics.config_reload_failed();
                *shared.reload_error.lock().expect("poisoned") =
                    Some(format!("pool {name:?}: {message}"));
            }
        }
    }
}

async fn stop_worker(worker: PoolWorker) {
    worker.cancel.cancel();
    for task in worker.tasks {
        // The listener deletes its session within its own bound; this is the outer one.
        let _ = tokio::time::timeout(Duration::from_secs(15), task).await;
    }
}

async fn stop_all(shared: &Arc<Shared>, root: &CancellationToken) {
    root.cancel();
    let workers: Vec<PoolWorker> = std::mem::take(&mut *shared.lock()).into_values().collect();
    let stops: Vec<_> = workers.into_iter().map(stop_worker).collect();
    for stop in stops {
        stop.await;
    }
}

async fn start_pool(
    shared: &Arc<Shared>,
    pool: PoolConfig,
    budget_share: f64,
    root: &CancellationToken,
) -> Result<PoolWorker, String> {
    let github = shared.clients.lock().await.for_scope(&pool.scope)?.clone();
    let service = ActionsService::new(github, pool.scope.clone());
    let cancel = root.child_token();
    match &pool.backend {
        BackendConfig::Ecs(launch) => {
            let sdk = shared.aws.get_or_init(crate::aws::load_config).await;
            let backend = EcsBackend::new(sdk, launch.clone())
                .with_scope(pool.scope.clone())
                .with_pool_environment(pool.runner_environment(), pool.docker)
                .with_ssm_pacer(shared.ssm_writes.clone())
                .with_ssm_describe_pacer(shared.ssm_describes.clone());
            // Wrong settings fail the start with their fix; AWS being unreachable does not
            // (launches will say so, and retry).
            match backend.check().await {
                Ok(()) => {}
                Err(BackendError::Config(message)) => return Err(message),
                Err(e) => {
                    tracing::warn!(pool = %pool.name, error = %e, "could not check the ECS settings; starting anyway")
                }
            }
            let region = sdk
                .region()
                .map(|r| r.to_string())
                .unwrap_or_else(|| crate::credentials::ssm::DEFAULT_REGION.to_string());
            let pricing = pricing_of(&shared.settings, &pool.name, launch, &region);
            Ok(spawn_pool(
                shared,
                pool,
                budget_share,
                service,
                backend,
                pricing,
                cancel,
            ))
        }
        BackendConfig::Local(launch) => {
            // The pool's variables, unless the file's `env` sets them (tests point
            // DOCKER_HOST and the like at stand-ins).
            let mut launch = launch.clone();
            for (name, value) in pool.runner_environment() {
                launch.env.entry(name.to_string()).or_insert(value);
            }
            let backend =
                LocalBackend::new(pool.scope.clone(), &launch).map_err(|e| e.to_string())?;
            if let Some(hook) = &shared.on_local_backend {
                hook(&pool.name, &backend);
            }
            Ok(spawn_pool(
                shared,
                pool,
                budget_share,
                service,
                backend,
                None,
                cancel,
            ))
        }
    }
}

/// The prices of an ECS pool's tasks: its region's table (the file's, else the built-in one)
/// and the size its file states. `None`, said once in the log, when either is missing.
fn pricing_of(
    settings: &ControllerSettings,
    pool: &str,
    launch: &EcsLaunch,
    region: &str,
) -> Option<Pricing> {
    let Some(table) = settings.prices_for(region) else {
        tracing::info!(%pool, %region, "no Fargate prices for this region: job costs are not computed. Add a [[prices]] table for it to the pool file (see README, \"What a job costs\")");
        return None;
    };
    let pricing = Pricing {
        launch: launch.clone(),
        table,
    };
    if pricing.task_hour().is_none() {
        tracing::info!(%pool, "the pool file states no cpu and memory for this pool (or it runs off Fargate): job costs are not computed. Fix: set cpu and memory as the task definition has them");
        return None;
    }
    Some(pricing)
}

fn spawn_pool<B: Backend>(
    shared: &Arc<Shared>,
    pool: PoolConfig,
    budget_share: f64,
    service: ActionsService,
    backend: B,
    pricing: Option<Pricing>,
    cancel: CancellationToken,
) -> PoolWorker {
    let metrics = shared.metrics.clone();
    metrics.add_pool(&pool.name, &pool.scope);
    let (demand_tx, demand_rx) = watch::channel(Demand::default());
    let nudge = Arc::new(Notify::new());
    let refresh = Arc::new(Notify::new());
    let (jobs_tx, jobs_rx) = mpsc::unbounded_channel();
    let (stream_tx, stream_rx) = mpsc::unbounded_channel();
    let mut spec = listener_spec(
        &pool,
        &shared.settings.owner_name,
        ListenerTiming {
            // A lost message then delays a job by one resync interval at most.
            statistics_refresh: shared
                .listener_timing
                .statistics_refresh
                .min(shared.settings.resync_interval),
            ..shared.listener_timing.clone()
        },
        refresh.clone(),
    );
    spec.stream = Some(stream_tx);
    let mut tasks = vec![tokio::spawn(listener::run(
        service.clone(),
        spec,
        demand_tx,
        nudge.clone(),
        jobs_tx,
        cancel.clone(),
    ))];

    // Demand as the reconciler sees it: assigned jobs only while the session is live.
    let (view_tx, view_rx) = watch::channel(DemandView::default());
    tasks.push(tokio::spawn(bridge_demand(
        pool.name.clone(),
        demand_rx.clone(),
        view_tx,
        metrics.clone(),
        cancel.clone(),
    )));
    let restored = shared.restored.lock().expect("poisoned").remove(&pool.name);
    let book = match restored {
        Some(records) => {
            let mut book = records.into_book(RECENT_JOBS_KEPT);
            book.prune(Utc::now());
            book
        }
        None => JobBook::new(RECENT_JOBS_KEPT),
    };
    let jobs = Arc::new(Mutex::new(book));
    tasks.push(tokio::spawn(job_metrics(
        pool.name.clone(),
        jobs_rx,
        metrics.clone(),
        jobs.clone(),
    )));

    let (events_tx, events_rx) = mpsc::unbounded_channel();
    let (report_tx, report_rx) = watch::channel(PoolReport::default());
    let github = Arc::new(LivePoolGitHub::new(service.clone(), demand_rx.clone()));
    let reconciler = Reconciler::new(
        pool.clone(),
        github,
        Arc::new(backend),
        LoopSettings {
            resync_interval: shared.settings.resync_interval,
            debounce: shared.debounce,
            budget_share,
            ..LoopSettings::default()
        },
    )
    .with_events(events_tx)
    .with_statistics_refresh(refresh.clone())
    .with_stream(stream_rx)
    .with_jobs(jobs.clone())
    .with_creation_pace(shared.creations[usize::from(pool.scope.is_org())].clone());
    let reconciler = match pricing {
        Some(pricing) => reconciler.with_pricing(pricing),
        None => reconciler,
    };
    tasks.push(tokio::spawn(reconciler.run(
        view_rx,
        nudge.clone(),
        report_tx,
        cancel.clone(),
    )));
    tasks.push(tokio::spawn(pool_metrics(
        pool.clone(),
        events_rx,
        demand_rx.clone(),
        service,
        metrics,
    )));
    PoolWorker {
        config: pool,
        cancel,
        tasks,
        nudge,
        refresh,
        demand: demand_rx,
        report: report_rx,
        jobs,
    }
}

fn session_text(session: &SessionState) -> String {
    match session {
        SessionState::Connecting => "connecting".into(),
        SessionState::Live => "live".into(),
        SessionState::Waiting { reason } => format!("waiting: {reason}"),
        SessionState::Failed { error } => format!("failed: {error}"),
    }
}

/// What a pool's listener listens for.
pub fn listener_spec(
    pool: &PoolConfig,
    owner_name: &str,
    timing: ListenerTiming,
    refresh: Arc<Notify>,
) -> ListenerSpec {
    ListenerSpec {
        pool: pool.name.clone(),
        scope: pool.scope.clone(),
        scale_set_name: pool.scale_set.clone(),
        runner_group: pool.runner_group.clone(),
        labels: pool.labels.clone(),
        max_runners: pool.limits.max,
        owner_name: owner_name.to_string(),
        timing,
        refresh,
        stream: None,
    }
}

/// The listener's [`Demand`] as the reconciler reads it: assigned jobs only while the session
/// is live (a stale count from a lost session must not drive scaling). Runs until `cancel`.
pub async fn bridge_demand(
    pool: String,
    mut demand: watch::Receiver<Demand>,
    view: watch::Sender<DemandView>,
    metrics: Metrics,
    cancel: CancellationToken,
) {
    loop {
        let current = demand.borrow_and_update().clone();
        let live = current.session == SessionState::Live;
        metrics.session(&pool, live);
        let _ = view.send(DemandView {
            assigned_jobs: current
                .statistics
                .as_ref()
                .filter(|_| live)
                .map(|s| s.total_assigned_jobs.min(u32::MAX as u64) as u32),
            statistics_at: current.statistics_at,
            session: session_text(&current.session),
        });
        tokio::select! {
            _ = cancel.cancelled() => return,
            changed = demand.changed() => if changed.is_err() { return },
        }
    }
}

/// Job messages -> ARC's job metrics. Startup is measured from the scale set's assignment to
/// the runner's, execution from the runner's assignment to the finish, using the service's
/// own timestamps; when a message lacks them, from when this controller saw each message.
async fn job_metrics(
    pool: String,
    mut jobs: mpsc::UnboundedReceiver<JobMessage>,
    metrics: Metrics,
    book: Arc<Mutex<JobBook>>,
) {
    // Bounded: a job whose completion never arrives is forgotten after this many newer ones.
    const REMEMBERED: usize = 10_000;
    let mut assigned_at: HashMap<String, DateTime<Utc>> = HashMap::new();
    let mut started_at: HashMap<String, DateTime<Utc>> = HashMap::new();
    let mut seen_started = std::collections::HashSet::new();
    let mut seen_completed = std::collections::HashSet::new();
    let secs = |from: DateTime<Utc>, to: DateTime<Utc>| {
        to.signed_duration_since(from)
            .to_std()
            .unwrap_or(Duration::ZERO)
    };
    // Pruning walks every job in flight: once a minute is enough for a 36-hour limit.
    let mut pruned_at = Utc::now();
    while let Some(message) = jobs.recv().await {
        let now = Utc::now();
        {
            let mut book = book.lock().expect("job book poisoned");
            book.apply(&message, now);
            if now.signed_duration_since(pruned_at) >= chrono::Duration::minutes(1) {
                book.prune(now);
                pruned_at = now;
            }
        }
        if assigned_at.len() > REMEMBERED {
            assigned_at.clear();
            started_at.clear();
            seen_started.clear();
            seen_completed.clear();
        }
        match message {
            JobMessage::JobAssigned { job } | JobMessage::JobAvailable { job, .. } => {
                assigned_at
                    .entry(job.job_id.clone())
                    .or_insert(job.scale_set_assign_time.unwrap_or(now));
            }
            JobMessage::JobStarted { job, .. } => {
                // Messages arrive at least once: count each job once.
                if !seen_started.insert(job.job_id.clone()) {
                    continue;
                }
                let from = job
                    .scale_set_assign_time
                    .or_else(|| assigned_at.get(&job.job_id).copied())
                    .or(job.queue_time)
                    .unwrap_or(now);
                let to = job.runner_assign_time.unwrap_or(now);
                started_at.insert(job.job_id.clone(), to);
                metrics.job_started(&pool, secs(from, to));
            }
            JobMessage::JobCompleted { job, result, .. } => {
                if !seen_completed.insert(job.job_id.clone()) {
                    continue;
                }
                let from = job
                    .runner_assign_time
                    .or_else(|| started_at.get(&job.job_id).copied())
                    .unwrap_or(now);
                let to = job.finish_time.unwrap_or(now);
                metrics.job_completed(&pool, JobResult::parse(&result), secs(from, to));
                assigned_at.remove(&job.job_id);
                started_at.remove(&job.job_id);
            }
            JobMessage::Other { .. } => {}
        }
    }
}

/// Reconciler events and statistics -> the pool's gauges and counters.
async fn pool_metrics(
    pool: PoolConfig,
    mut events: mpsc::UnboundedReceiver<(String, PoolEvent)>,
    demand: watch::Receiver<Demand>,
    service: ActionsService,
    metrics: Metrics,
) {
    let credential = if pool.scope.is_org() {
        AuthMode::App
    } else {
        AuthMode::Pat
    };
    // The pool's own count: pools sharing a client (one per credential) would count each
    // other's calls if this read the client's.
    let mut last_calls = 0;
    while let Some((name, event)) = events.recv().await {
        match event {
            PoolEvent::Launched { .. } => metrics.launch(&name),
            PoolEvent::LaunchFailed { reason } => metrics.launch_failed(&name, reason),
            PoolEvent::FellBack => metrics.launch_fell_back(&name),
            PoolEvent::Billed {
                job_dollars,
                idle_dollars,
            } => metrics.billed(&name, job_dollars, idle_dollars),
            PoolEvent::JobInterrupted { cause, .. } => metrics.job_interrupted(&name, cause),
            PoolEvent::Removed { reason, .. } => metrics.runner_stopped(&name, reason),
            PoolEvent::Pass {
                status,
                took,
                github_calls,
            } => {
                metrics.reconcile(took);
                let stats = demand.borrow().statistics.unwrap_or_default();
                metrics.set_pool(
                    &name,
                    &PoolGauges {
                        assigned_jobs: stats.total_assigned_jobs,
                        running_jobs: stats.total_running_jobs,
                        registered_runners: stats.total_registered_runners,
                        busy_runners: stats.total_busy_runners,
                        idle_runners: stats.total_idle_runners,
                        min_runners: pool.limits.min_idle as u64,
                        max_runners: pool.limits.max as u64,
                        desired_runners: status.desired as u64,
                        pending_runners: status.pending as u64,
                        running_runners: status.capacity.saturating_sub(status.pending) as u64,
                        held_by_secondary_limit: u64::from(
                            status.launch_held.as_deref().is_some_and(|why| {
                                why.starts_with(crate::controller::creations::HELD_REASON)
                            }),
                        ),
                    },
                );
                metrics.github_calls(github_calls.saturating_sub(last_calls));
                last_calls = github_calls;
                if let Some(rl) = service.github().rate_limit() {
                    metrics.rate_limit(credential, rl.remaining, rl.limit);
                }
            }
        }
    }
}

fn http_state(
    shared: &Arc<Shared>,
    webhook_secret: Option<SecretString>,
    token: Option<SecretString>,
) -> HttpState {
    let status_shared = shared.clone();
    let health_shared = shared.clone();
    let jobs_shared = shared.clone();
    let webhook = webhook_secret.map(|secret| {
        let match_shared = shared.clone();
        let matcher: Matcher = Arc::new(move |event: &WorkflowJobEvent| {
            match_shared
                .lock()
                .values()
                .filter(|w| job_matches_pool(event, &w.config))
                .map(|w| w.config.name.clone())
                .collect()
        });
        let nudge_shared = shared.clone();
        WebhookRoute {
            receiver: Arc::new(WebhookReceiver::new(secret, matcher)),
            nudge: Arc::new(move |pools: Vec<String>| {
                let workers = nudge_shared.lock();
                for pool in pools {
                    if let Some(w) = workers.get(&pool) {
                        // Fresh statistics first (the job may be one whose message was
                        // lost); their change nudges the reconciler again.
                        w.refresh.notify_one();
                        w.nudge.notify_one();
                    }
                }
            }),
        }
    });
    HttpState {
        metrics: shared.metrics.clone(),
        health: Arc::new(move || health(&health_shared)),
        status: Arc::new(move || status_json(&status_shared)),
        jobs: Arc::new(move |cap| jobs_json(&jobs_shared, cap)),
        webhook,
        token,
    }
}

/// Whether a `workflow_job` event concerns a pool: same repository or organization, and every
/// `runs-on` label is the scale set's name or one of its labels (case-insensitively).
pub fn job_matches_pool(event: &WorkflowJobEvent, pool: &PoolConfig) -> bool {
    let in_scope = match &pool.scope {
        Scope::Repo { owner, repo } => event
            .repository
            .eq_ignore_ascii_case(&format!("{owner}/{repo}")),
        Scope::Org { org } => {
            event
                .organization
                .as_deref()
                .is_some_and(|o| o.eq_ignore_ascii_case(org))
                || event
                    .repository
                    .split('/')
                    .next()
                    .is_some_and(|owner| owner.eq_ignore_ascii_case(org))
        }
    };
    in_scope
        && !event.labels.is_empty()
        && event.labels.iter().all(|label| {
            label.eq_ignore_ascii_case(&pool.scale_set)
                || pool.labels.iter().any(|l| l.eq_ignore_ascii_case(label))
        })
}

fn health(shared: &Shared) -> Health {
    let limit = shared.settings.resync_interval * 3 + Duration::from_secs(30);
    let now = Utc::now();
    let mut reasons = Vec::new();
    for (name, worker) in shared.lock().iter() {
        let report = worker.report.borrow();
        let last = report.last_pass_at.unwrap_or(shared.started_at);
        let age = now.signed_duration_since(last).to_std().unwrap_or_default();
        if age > limit {
            reasons.push(format!(
                "pool {name:?} has not reconciled for {} s (limit {} s)",
                age.as_secs(),
                limit.as_secs()
            ));
        }
    }
    if reasons.is_empty() {
        Health::ok()
    } else {
        Health::unhealthy(reasons)
    }
}

/// Every running pool's job book, by pool name.
fn job_books(shared: &Shared) -> Vec<(String, Arc<Mutex<JobBook>>)> {
    shared
        .lock()
        .iter()
        .map(|(name, w)| (name.clone(), w.jobs.clone()))
        .collect()
}

/// `/jobs`: each pool's jobs in flight (oldest queued first) and recent ones (newest first).
fn jobs_json(shared: &Shared, cap: Option<http::JobsCap>) -> serde_json::Value {
    // Copies under the locks, JSON after: the listener waits on a book's lock to record a
    // message, and a whole /jobs at the bound is megabytes of JSON.
    let views: Vec<_> = shared
        .lock()
        .values()
        .map(|w| {
            let cost = json!(w.report.borrow().cost);
            let view = w.jobs.lock().expect("job book poisoned").view(cap);
            (
                w.config.name.clone(),
                w.config.scale_set.clone(),
                cost,
                view,
            )
        })
        .collect();
    let pools: Vec<serde_json::Value> = views
        .into_iter()
        .map(|(name, scale_set, cost, view)| view.json(&name, &scale_set, cost))
        .collect();
    json!({ "pools": pools })
}

/// `/status`: every pool's configuration summary, session, counts and last errors.
fn status_json(shared: &Shared) -> serde_json::Value {
    let pools: Vec<serde_json::Value> = shared
        .lock()
        .values()
        .map(|w| {
            let report = w.report.borrow().clone();
            let demand = w.demand.borrow().clone();
            json!({
                "name": w.config.name,
                "scope": report.scope,
                "scale_set": w.config.scale_set,
                "scale_set_id": demand.scale_set_id,
                "labels": w.config.labels,
                "runner_group": w.config.runner_group,
                "backend": w.config.backend.kind(),
                "min_idle": w.config.limits.min_idle,
                "max": w.config.limits.max,
                "session": session_text(&demand.session),
                "statistics": demand.statistics,
                "last_message_at": demand.last_message_at,
                "listener_error": demand.last_error,
                "report": report,
            })
        })
        .collect();
    let reload_error = shared.reload_error.lock().expect("poisoned").clone();
    json!({
        "controller": {
            "started_at": shared.started_at,
            "resync_interval_secs": shared.settings.resync_interval.as_secs_f64(),
            "owner_name": shared.settings.owner_name,
            "reload_error": reload_error,
        },
        "pools": pools,
    })
}
