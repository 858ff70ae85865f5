//! The agent's I/O: register the runner, start `bin/Runner.Listener run`, and react to what
//! happens (runner exits, stop signals, job hooks, watchdog ticks, deadlines) by asking
//! `policy` and doing what it says. One task owns all of the state, so events are handled one at
//! a time in the order they arrive.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use tokio::io::BufReader;
use tokio::process::{Child, Command};
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep, sleep_until};

use super::config::{AgentConfig, AgentConfigError, JitSource, Registration};
use super::docker::{self, DockerConfig, DockerWaitError};
use super::files::{self, FilesError, RunnerHome, RunnerIdentity};
use super::hooks::{HookEvent, HookKind, PendingHook};
use super::isolation::{self, RunAs, RuntimeDir, RuntimeDirError};
use super::jit_file::take_jit_file;
use super::naming::runner_name;
use super::output::{forward, redact};
use super::policy::{self, Activity, AfterExit, RunnerEnd, StopPhase, StopStep};
use super::protection::TaskProtection;
use crate::commands::{ConnectError, Connection};
use crate::credentials::{CredentialError, SsmError, SsmParameterStore};
use crate::github::{GitHub, GitHubError, RunnerRemoval};

/// How long an idle runner gets to exit after SIGTERM before it is killed.
const IDLE_STOP_GRACE: Duration = Duration::from_secs(4);
/// How long `configure` may take.
const CONFIGURE_TIMEOUT: Duration = Duration::from_secs(120);
/// After a stop, how long to keep asking GitHub to delete a runner that still says busy
/// (its cancelled or finished job is being reported).
const DEREGISTER_PATIENCE: Duration = Duration::from_secs(10);

/// How the agent ended when it did not fail.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AgentExit {
    /// Stopped by a signal, cleanly.
    Stopped,
    /// An ephemeral runner ran its job and GitHub removed it.
    JobDone,
    /// The task should be replaced (exit 3): the reason.
    Replace(String),
}

impl AgentExit {
    pub fn code(&self) -> u8 {
        match self {
            AgentExit::Stopped | AgentExit::JobDone => 0,
            AgentExit::Replace(_) => 3,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Config(#[from] AgentConfigError),
    #[error(transparent)]
    Files(#[from] FilesError),
    #[error(transparent)]
    Credentials(#[from] CredentialError),
    #[error(transparent)]
    GitHub(#[from] GitHubError),
    #[error(transparent)]
    Ssm(#[from] SsmError),
    #[error(transparent)]
    RuntimeDir(#[from] RuntimeDirError),
    #[error("cannot start {what}: {cause}")]
    Spawn { what: String, cause: std::io::Error },
    #[error("`Runner.Listener configure` failed ({status}). Its output:\n{output}")]
    Configure { status: String, output: String },
    #[error("{0}")]
    Runner(String),
    #[error(transparent)]
    Docker(#[from] DockerWaitError),
}

impl AgentError {
    /// 2 for what the operator fixes in configuration, 3 for a Docker daemon that never
    /// answered (replace the task: its sidecar is broken), 1 for everything else.
    pub fn exit_code(&self) -> u8 {
        match self {
            AgentError::Docker(_) => 3,
            AgentError::Config(_) | AgentError::RuntimeDir(_) => 2,
            AgentError::Files(FilesError::NoRunner { .. } | FilesError::BadJitConfig(_)) => 2,
            AgentError::Credentials(CredentialError::Ssm(_)) => 1,
            AgentError::Credentials(_) => 2,
            _ => 1,
        }
    }
}

/// Registers the runner and supervises it until it is done; see the module docs for the rules.
pub async fn run(config: AgentConfig, connection: &Connection) -> Result<AgentExit, AgentError> {
    let started = Instant::now();
    let home = RunnerHome::open(&config.runner_home)?;
    let run_as = run_as(&config)?;
    isolation::harden_self();
    // Listen for stop signals before anything slow, so one that arrives during registration
    // is handled (as a stop of an idle runner) rather than lost.
    let signals = Signals::new().map_err(|e| AgentError::Spawn {
        what: "signal handlers".into(),
        cause: e,
    })?;
    let github = connect(&config, connection).await?;

    let runtime = RuntimeDir::create(config.runtime_dir.as_deref(), run_as.as_ref())?;
    let socket = runtime.socket();
    let runner_uid = run_as
        .as_ref()
        .map_or(nix::unistd::geteuid().as_raw(), |u| u.uid);
    let hook_rx = super::hooks::listen(&socket, runner_uid, run_as.is_some()).map_err(|e| {
        AgentError::Spawn {
            what: format!("the job hook socket {}", socket.display()),
            cause: e,
        }
    })?;
    let exe = std::env::current_exe().map_err(|e| AgentError::Spawn {
        what: "hooks (cannot find the hangar executable)".into(),
        cause: e,
    })?;
    let hook_scripts = files::install_hooks(runtime.path(), &exe, &socket)?;
    let docker_stub = match &config.docker {
        DockerConfig::Stub { pool, runs_on } => Some(
            docker::install_stub(runtime.path(), pool.as_deref(), runs_on.as_deref()).map_err(
                |e| AgentError::Spawn {
                    what: "the docker stub (this pool has no Docker daemon)".into(),
                    cause: e,
                },
            )?,
        ),
        DockerConfig::Daemon { .. } => None,
    };

    // A configuration left by an earlier agent in this folder (a crash, a restart): remove
    // that registration rather than leave it behind as an offline ghost.
    let previous = home.configured()?;
    if let Some(old) = &previous {
        tracing::warn!(runner_id = old.id, runner_name = %old.name, "found a runner configuration left by an earlier start; replacing it");
        if let Some(gh) = &github {
            match gh.delete_runner(&config.scope, old.id).await {
                Ok(r) => {
                    tracing::info!(runner_id = old.id, outcome = ?r, "removed the earlier registration")
                }
                Err(e) => {
                    tracing::warn!(runner_id = old.id, error = %e, "could not remove the earlier registration")
                }
            }
        }
        remove_local_config(&home, run_as.as_ref()).await?;
    }

    let mut sup = Supervisor {
        _runtime: runtime,
        release_protection: false,
        run_as,
        github,
        home,
        hook_scripts,
        docker_stub,
        hook_rx,
        signals,
        protection: std::env::var("ECS_AGENT_URI")
            .ok()
            .filter(|u| !u.is_empty() && config.task_protection)
            .map(|u| TaskProtection::new(&u, config.protection_minutes)),
        identity: RunnerIdentity {
            id: 0,
            name: String::new(),
            ephemeral: config.ephemeral(),
        },
        jit: None,
        activity: Activity::Idle,
        job: None,
        jobs_done: 0,
        phase: StopPhase::Running,
        deadline: None,
        outcome: None,
        registration_removed: false,
        failures: 0,
        config,
    };
    // The pool's Docker daemon is waited for before the runner can take a job. With a
    // registration token: before registering, so a failure or a stop leaves nothing on GitHub.
    // With a JIT configuration (GitHub already holds the runner): after taking the one-shot
    // configuration, so it is off the disk or SSM at once, and before the runner starts.
    let jit = matches!(sup.config.registration, Registration::Jit(_));
    if !jit && sup.wait_for_docker().await? {
        return Ok(AgentExit::Stopped);
    }
    sup.register(previous.map(|p| p.name)).await?;
    if jit && sup.wait_for_docker().await? {
        return Ok(AgentExit::Stopped);
    }
    tracing::info!(
        runner_id = sup.identity.id,
        runner_name = %sup.identity.name,
        scope = %sup.config.scope,
        ephemeral = sup.identity.ephemeral,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "runner registered"
    );
    sup.supervise().await
}

/// Deletes the runner's local configuration with the runner's identity (`RUNNER_HOME` is
/// writable by jobs).
async fn remove_local_config(home: &RunnerHome, run_as: Option<&RunAs>) -> Result<(), AgentError> {
    let home = home.clone();
    isolation::as_user(run_as, move || home.remove_local_config())
        .await
        .map_err(|e| AgentError::Spawn {
            what: "the runner user's file worker".into(),
            cause: e,
        })?
        .map_err(AgentError::from)
}

fn run_as(config: &AgentConfig) -> Result<Option<RunAs>, AgentError> {
    let root = nix::unistd::geteuid().is_root();
    let Some(name) = &config.runner_user else {
        if root && !config.allow_root {
            return Err(AgentConfigError(
                "the agent runs as root and the runner must not: set RUNNER_USER=runner (the image's user) so the agent switches to it, or RUNNER_ALLOW_RUNASROOT=1 to run jobs as root"
                    .into(),
            )
            .into());
        }
        return Ok(None);
    };
    let user = nix::unistd::User::from_name(name)
        .ok()
        .flatten()
        .ok_or_else(|| {
            AgentConfigError(format!(
                "RUNNER_USER {name:?} does not exist in /etc/passwd"
            ))
        })?;
    if !root {
        if user.uid == nix::unistd::geteuid() {
            return Ok(None);
        }
        return Err(AgentConfigError(format!(
            "RUNNER_USER={name} needs the agent to run as root to switch users; unset it to run the runner as the agent's own user"
        ))
        .into());
    }
    if user.uid.is_root() && !config.allow_root {
        return Err(AgentConfigError(format!(
            "RUNNER_USER={name} is root; set RUNNER_ALLOW_RUNASROOT=1 to allow it"
        ))
        .into());
    }
    Ok(Some(RunAs {
        uid: user.uid.as_raw(),
        gid: user.gid.as_raw(),
        name: user.name,
        home: user.dir,
    }))
}

/// The GitHub client, if there are credentials. Registration with a token needs them; a JIT
/// runner can run without (its launcher then owns the registration), so "no credentials at
/// all" is not an error there.
async fn connect(
    config: &AgentConfig,
    connection: &Connection,
) -> Result<Option<GitHub>, AgentError> {
    match connection.connect(&config.scope).await {
        Ok((gh, summary)) => {
            tracing::info!(mode = %summary.mode, sources = %summary.sources, "GitHub credentials loaded");
            Ok(Some(gh))
        }
        Err(ConnectError::Credentials(CredentialError::Nothing { .. }))
            if matches!(config.registration, Registration::Jit(_)) =>
        {
            tracing::info!(
                "no GitHub credentials: the JIT runner's launcher owns its registration; the watchdog is off"
            );
            Ok(None)
        }
        Err(ConnectError::Credentials(c)) => Err(c.into()),
        Err(ConnectError::GitHub(g)) => Err(g.into()),
    }
}

struct Signals {
    term: Signal,
    int: Signal,
}

impl Signals {
    fn new() -> std::io::Result<Signals> {
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        }
    }
}

fn end_of(status: std::process::ExitStatus) -> RunnerEnd {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(c), _) => RunnerEnd::Code(c),
        (None, Some(s)) => RunnerEnd::Signal(s),
        (None, None) => RunnerEnd::Code(-1),
    }
}

fn send_signal(child: &Child, sig: nix::sys::signal::Signal) {
    if let Some(pid) = child.id() {
        let pid = nix::unistd::Pid::from_raw(pid as i32);
        if let Err(e) = nix::sys::signal::kill(pid, sig) {
            tracing::debug!(error = %e, signal = ?sig, "could not signal the runner (already gone?)");
        }
    }
}

struct Supervisor {
    /// The hook socket and scripts' folder; removed when the supervisor is dropped.
    _runtime: RuntimeDir,
    /// A completed hook asked for task protection to go; it goes once the runner has no job
    /// process left (a step can forge the hook, not the process table).
    release_protection: bool,
    config: AgentConfig,
    run_as: Option<RunAs>,
    github: Option<GitHub>,
    home: RunnerHome,
    hook_scripts: (PathBuf, PathBuf),
    /// The `docker` stub's folder, first on the runner's `PATH` (a pool without Docker).
    docker_stub: Option<PathBuf>,
    hook_rx: mpsc::Receiver<PendingHook>,
    signals: Signals,
    protection: Option<TaskProtection>,
    identity: RunnerIdentity,
    jit: Option<SecretString>,
    activity: Activity,
    job: Option<(Instant, HookEvent)>,
    jobs_done: u32,
    phase: StopPhase,
    /// The drain deadline while draining, the kill deadline while cancelling.
    deadline: Option<Instant>,
    outcome: Option<AgentExit>,
    registration_removed: bool,
    failures: u32,
}

impl Supervisor {
    /// The environment every runner process gets (see `env`).
    fn base_env(&self) -> Vec<(String, String)> {
        let mut extra: Vec<(String, String)> = vec![
            (
                "ACTIONS_RUNNER_HOOK_JOB_STARTED".into(),
                self.hook_scripts.0.display().to_string(),
            ),
            (
                "ACTIONS_RUNNER_HOOK_JOB_COMPLETED".into(),
                self.hook_scripts.1.display().to_string(),
            ),
        ];
        match &self.run_as {
            Some(u) => {
                extra.push(("HOME".into(), u.home.display().to_string()));
                extra.push(("USER".into(), u.name.clone()));
            }
            None => {
                for name in ["HOME", "USER"] {
                    if let Ok(v) = std::env::var(name) {
                        extra.push((name.into(), v));
                    }
                }
            }
        }
        if self.config.allow_root && nix::unistd::geteuid().is_root() && self.run_as.is_none() {
            extra.push(("RUNNER_ALLOW_RUNASROOT".into(), "1".into()));
        }
        match (&self.config.docker, &self.docker_stub) {
            (DockerConfig::Daemon { host, .. }, _) => {
                extra.push((docker::ENV_DOCKER_HOST.into(), host.clone()));
            }
            (DockerConfig::Stub { .. }, Some(stub)) => extra.push((
                "PATH".into(),
                docker::path_with_stub(stub, std::env::var("PATH").ok().as_deref()),
            )),
            (DockerConfig::Stub { .. }, None) => {}
        }
        super::env::runner_env(&|n| std::env::var(n).ok(), &self.config.pass_env, &extra)
    }

    /// With a Docker daemon declared, waits until it answers (see `agent::docker`). Returns
    /// whether a stop signal came meanwhile (the agent then ends, the runner never started). A
    /// JIT runner's registration (the launcher's) is then removed if the agent has credentials,
    /// as after any stop.
    async fn wait_for_docker(&mut self) -> Result<bool, AgentError> {
        let DockerConfig::Daemon { socket, wait, .. } = &self.config.docker else {
            return Ok(false);
        };
        let result = tokio::select! {
            waited = docker::wait_for_daemon(socket, *wait, self.run_as.as_ref()) => waited.map(|_| false),
            sig = self.signals.recv() => {
                tracing::info!(signal = sig, "stop requested while waiting for the Docker daemon; the runner was not started");
                self.outcome = Some(AgentExit::Stopped);
                Ok(true)
            }
        };
        if !matches!(result, Ok(false)) && self.identity.id != 0 {
            self.deregister_patiently().await;
        }
        Ok(result?)
    }

    /// Starts `bin/Runner.Listener` with `args`, and `secret_env` as its one secret variable.
    fn spawn_listener(
        &self,
        args: &[String],
        secret_env: Option<(&str, &SecretString)>,
    ) -> Result<Child, AgentError> {
        let mut cmd = Command::new(self.home.listener());
        cmd.args(args)
            .current_dir(self.home.root())
            .env_clear()
            .envs(self.base_env())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group: a Ctrl-C in a terminal reaches the agent only, which
            // decides whether the runner's job may be cancelled.
            .process_group(0)
            .kill_on_drop(true);
        if let Some((name, value)) = secret_env {
            cmd.env(name, value.expose_secret());
        }
        if let Some(u) = &self.run_as {
            cmd.uid(u.uid).gid(u.gid);
            // No setuid program can give a job more than the runner's user: a root job would
            // reach the agent's credentials.
            #[cfg(target_os = "linux")]
            // SAFETY: prctl is async-signal-safe and touches only the child's own flags.
            unsafe {
                cmd.pre_exec(|| nix::sys::prctl::set_no_new_privs().map_err(std::io::Error::from));
            }
        }
        cmd.spawn().map_err(|e| AgentError::Spawn {
            what: self.home.listener().display().to_string(),
            cause: e,
        })
    }

    async fn register(&mut self, previous_name: Option<String>) -> Result<(), AgentError> {
        match self.config.registration.clone() {
            Registration::Jit(source) => {
                let blob = match source {
                    JitSource::Given(b) => b,
                    JitSource::SsmParameter(name) => {
                        SsmParameterStore::from_environment()
                            .await
                            .take_parameter(&name)
                            .await?
                    }
                    JitSource::File(path) => take_jit_file(&path)?,
                };
                self.identity = files::jit_identity(&blob)?;
                self.jit = Some(blob);
                Ok(())
            }
            Registration::Configure {
                name,
                name_prefix,
                labels,
                runner_group,
                ephemeral,
            } => {
                let gh = self.github.clone().ok_or_else(|| {
                    AgentError::Runner("registering a runner needs GitHub credentials".into())
                })?;
                let name = match (name, previous_name) {
                    (Some(n), _) => n,
                    (None, Some(previous)) => previous,
                    (None, None) => runner_name(&name_prefix).await,
                };
                let token = gh.registration_token(&self.config.scope).await?;
                let mut args: Vec<String> = vec![
                    "configure".into(),
                    "--unattended".into(),
                    "--replace".into(),
                    "--disableupdate".into(),
                    "--url".into(),
                    self.config.scope.runner_url(&gh.config().web_url),
                    "--name".into(),
                    name.clone(),
                    "--work".into(),
                    self.config.work_dir.clone(),
                ];
                if !labels.is_empty() {
                    args.extend(["--labels".into(), labels.join(",")]);
                }
                if let Some(group) = runner_group {
                    args.extend(["--runnergroup".into(), group]);
                }
                if ephemeral {
                    args.push("--ephemeral".into());
                }
                let child =
                    self.spawn_listener(&args, Some(("ACTIONS_RUNNER_INPUT_TOKEN", &token.token)))?;
                let output = tokio::time::timeout(CONFIGURE_TIMEOUT, child.wait_with_output())
                    .await
                    .map_err(|_| AgentError::Configure {
                        status: format!("no answer within {CONFIGURE_TIMEOUT:?}"),
                        output: String::new(),
                    })?
                    .map_err(|e| AgentError::Spawn {
                        what: "configure".into(),
                        cause: e,
                    })?;
                let secret = token.token.expose_secret();
                let text: String = String::from_utf8_lossy(&output.stdout)
                    .lines()
                    .chain(String::from_utf8_lossy(&output.stderr).lines())
                    .map(|l| redact(l, &[secret]))
                    .collect::<Vec<_>>()
                    .join("\n");
                for line in text.lines() {
                    tracing::debug!(target: "hangar::runner", "{line}");
                }
                if !output.status.success() {
                    return Err(AgentError::Configure {
                        status: policy::describe(end_of(output.status)),
                        output: text,
                    });
                }
                self.identity = self.home.configured()?.ok_or_else(|| {
                    AgentError::Runner("configure succeeded but wrote no .runner file".into())
                })?;
                self.identity.ephemeral = ephemeral;
                Ok(())
            }
        }
    }

    fn spawn_run(&self) -> Result<Child, AgentError> {
        let secret = self
            .jit
            .as_ref()
            .map(|b| ("ACTIONS_RUNNER_INPUT_JITCONFIG", b));
        let mut child = self.spawn_listener(&["run".to_string()], secret)?;
        let secrets: Vec<String> = self
            .jit
            .iter()
            .map(|b| b.expose_secret().to_string())
            .collect();
        if let Some(out) = child.stdout.take() {
            tokio::spawn(forward(BufReader::new(out), "stdout", secrets.clone()));
        }
        if let Some(err) = child.stderr.take() {
            tokio::spawn(forward(BufReader::new(err), "stderr", secrets));
        }
        tracing::debug!(pid = child.id(), "runner started");
        Ok(child)
    }

    async fn supervise(mut self) -> Result<AgentExit, AgentError> {
        let idle_deadline = self.config.idle_timeout.map(|d| Instant::now() + d);
        loop {
            let mut child = self.spawn_run()?;
            let ran_from = Instant::now();
            let end = self.watch(&mut child, idle_deadline).await?;
            if self.phase != StopPhase::Running || self.outcome.is_some() {
                return self.finish(end).await;
            }
            // Only a refreshed configuration, or an ephemeral runner's normal end, is not a
            // failure; a persistent runner that exits 0 by itself counts too, so a runner that
            // keeps doing it is given up on like any other.
            let failure = match end {
                RunnerEnd::Code(6) => false,
                RunnerEnd::Code(0) => !self.identity.ephemeral,
                _ => true,
            };
            self.failures =
                self.config
                    .restart
                    .next_failures(self.failures, ran_from.elapsed(), failure);
            match policy::after_exit(
                end,
                self.identity.ephemeral,
                self.failures,
                &self.config.restart,
            ) {
                AfterExit::Done => {
                    tracing::info!(
                        jobs = self.jobs_done,
                        "the ephemeral runner finished; GitHub removes its registration"
                    );
                    self.registration_removed = true;
                    self.outcome = Some(AgentExit::JobDone);
                    return self.finish(end).await;
                }
                AfterExit::CheckRegistration => match self.registration_exists().await {
                    Some(false) => {
                        self.registration_removed = true;
                        self.outcome = Some(AgentExit::Replace(
                            "GitHub no longer knows this runner (deleted server-side)".into(),
                        ));
                        tracing::error!(
                            "the runner stopped because GitHub deleted its registration; exiting so the task is replaced"
                        );
                        return self.finish(end).await;
                    }
                    _ => {
                        if self.failures > self.config.restart.max_failures {
                            let reason = format!(
                                "the runner exited 0 {} times in a row while still registered; giving up so the task is replaced",
                                self.failures
                            );
                            tracing::error!("{reason}");
                            self.deregister_patiently().await;
                            let _ = remove_local_config(&self.home, self.run_as.as_ref()).await;
                            return Err(AgentError::Runner(reason));
                        }
                        let delay = self.config.restart.backoff(self.failures);
                        tracing::warn!(
                            ?delay,
                            "the runner exited 0 but is still registered; restarting it"
                        );
                        if self.wait_or_stop(delay).await {
                            return self.finish(end).await;
                        }
                    }
                },
                AfterExit::Restart { delay, failure } => {
                    tracing::warn!(
                        runner_end = %policy::describe(end),
                        consecutive_failures = self.failures,
                        failure,
                        delay_ms = delay.as_millis() as u64,
                        "the runner stopped; restarting it"
                    );
                    if self.wait_or_stop(delay).await {
                        return self.finish(end).await;
                    }
                }
                AfterExit::Fail(reason) => {
                    tracing::error!(runner_end = %policy::describe(end), "{reason}");
                    self.deregister_patiently().await;
                    let _ = remove_local_config(&self.home, self.run_as.as_ref()).await;
                    return Err(AgentError::Runner(reason));
                }
            }
        }
    }

    /// Sleeps `delay` between runs; a stop signal meanwhile ends the agent. Returns whether to
    /// stop.
    async fn wait_or_stop(&mut self, delay: Duration) -> bool {
        tokio::select! {
            _ = sleep(delay) => false,
            sig = self.signals.recv() => {
                tracing::info!(signal = sig, "stop requested between runner restarts");
                self.outcome = Some(AgentExit::Stopped);
                true
            }
        }
    }

    /// Handles events until the runner exits.
    async fn watch(
        &mut self,
        child: &mut Child,
        idle_deadline: Option<Instant>,
    ) -> Result<RunnerEnd, AgentError> {
        let far = Instant::now() + Duration::from_secs(86400 * 365);
        let mut watchdog = self
            .config
            .watchdog_interval
            .map(|p| tokio::time::interval_at(Instant::now() + p, p));
        let mut retry = tokio::time::interval(Duration::from_millis(500));
        let mut job_check = tokio::time::interval(Duration::from_millis(250));
        loop {
            let deadline = self.deadline;
            let watchdog_on =
                watchdog.is_some() && self.github.is_some() && self.phase == StopPhase::Running;
            let idle_on = idle_deadline.is_some()
                && self.jobs_done == 0
                && self.activity == Activity::Idle
                && self.phase == StopPhase::Running
                && self.outcome.is_none();
            let drained = self.phase == StopPhase::Draining
                && self.activity == Activity::Idle
                && !self.identity.ephemeral
                && self.github.is_some();
            tokio::select! {
                status = child.wait() => {
                    let status = status.map_err(|e| AgentError::Spawn { what: "waiting for the runner".into(), cause: e })?;
                    let end = end_of(status);
                    tracing::info!(runner_end = %policy::describe(end), "runner exited");
                    return Ok(end);
                }
                sig = self.signals.recv() => self.on_signal(sig, child).await,
                Some(hook) = self.hook_rx.recv() => self.on_hook(hook).await,
                _ = sleep_until(deadline.unwrap_or(far)), if deadline.is_some() => self.on_deadline(child),
                _ = async { watchdog.as_mut().map(|w| w.tick()).unwrap_or_else(|| unreachable!()).await }, if watchdog_on => self.on_watchdog(child).await,
                _ = sleep_until(idle_deadline.unwrap_or(far)), if idle_on => self.on_idle_timeout(child).await,
                _ = retry.tick(), if drained => self.deregister_then_stop(child).await,
                _ = job_check.tick(), if self.release_protection => self.release_protection_if_done(child).await,
            }
        }
    }

    async fn on_signal(&mut self, sig: &str, child: &Child) {
        // A forged `completed` hook must not make a running job look idle.
        if Self::job_process_running(child) == Some(true) {
            self.activity = Activity::Busy;
        }
        let step = policy::on_stop_signal(self.phase, self.activity);
        tracing::info!(signal = sig, activity = ?self.activity, phase = ?self.phase, step = ?step, "stop requested");
        self.outcome.get_or_insert(AgentExit::Stopped);
        match step {
            StopStep::DeregisterThenStop => self.deregister_then_stop(child).await,
            StopStep::Drain => self.begin_drain(),
            StopStep::Cancel => self.cancel(child),
            StopStep::Kill => {
                tracing::warn!("killing the runner");
                self.kill(child);
            }
        }
    }

    fn begin_drain(&mut self) {
        let budget = self.config.drain_timeout;
        tracing::info!(
            drain_timeout_s = budget.as_secs_f64(),
            job = self.job.as_ref().and_then(|(_, j)| j.job.clone()),
            "a job is running: letting it finish before stopping (a second signal cancels it)"
        );
        self.phase = StopPhase::Draining;
        self.deadline = Some(Instant::now() + budget);
    }

    fn cancel(&mut self, child: &Child) {
        tracing::warn!(
            cancel_grace_s = self.config.cancel_grace.as_secs_f64(),
            "cancelling the running job (SIGINT to the runner): it ends as Cancelled and is reported"
        );
        send_signal(child, nix::sys::signal::Signal::SIGINT);
        self.phase = StopPhase::Cancelling;
        self.deadline = Some(Instant::now() + self.config.cancel_grace);
    }

    /// SIGTERM to a runner with no job to lose, killed if it is still there after
    /// `IDLE_STOP_GRACE`.
    fn terminate_idle(&mut self, child: &Child) {
        send_signal(child, nix::sys::signal::Signal::SIGTERM);
        self.phase = StopPhase::Cancelling;
        self.deadline = Some(Instant::now() + IDLE_STOP_GRACE);
    }

    fn kill(&mut self, child: &Child) {
        send_signal(child, nix::sys::signal::Signal::SIGKILL);
        self.phase = StopPhase::Killing;
        self.deadline = None;
    }

    fn on_deadline(&mut self, child: &Child) {
        match self.phase {
            StopPhase::Draining => {
                tracing::warn!("the drain budget ran out");
                self.cancel(child);
            }
            StopPhase::Cancelling => {
                tracing::warn!("the runner did not stop in time; killing it");
                self.kill(child);
            }
            _ => self.deadline = None,
        }
    }

    /// Asks GitHub to delete the registration; `None` without GitHub credentials.
    async fn delete_registration(&self) -> Result<Option<RunnerRemoval>, GitHubError> {
        match &self.github {
            Some(gh) => gh
                .delete_runner(&self.config.scope, self.identity.id)
                .await
                .map(Some),
            None => Ok(None),
        }
    }

    /// Notes that GitHub no longer holds the registration (removed, or already gone).
    fn removed(&mut self, removal: RunnerRemoval) {
        tracing::info!(runner_id = self.identity.id, outcome = ?removal, "registration removed");
        self.registration_removed = true;
    }

    /// Removes the registration, then stops the runner; if GitHub says the runner is busy, a
    /// job has just landed and the runner drains instead.
    async fn deregister_then_stop(&mut self, child: &Child) {
        let removal = self.delete_registration().await;
        match removal {
            Ok(Some(RunnerRemoval::Busy)) => {
                // While running, a busy answer means a job has just landed (its started hook
                // is on its way). While draining, the finished job is still being reported:
                // the next retry tick asks again.
                if self.phase == StopPhase::Running {
                    tracing::info!("GitHub says the runner is busy: a job has just landed");
                    self.activity = Activity::Busy;
                    self.begin_drain();
                }
                return;
            }
            Ok(Some(r)) => self.removed(r),
            Ok(None) => tracing::info!(
                "no GitHub credentials: the runner's launcher removes its registration"
            ),
            Err(e) => {
                tracing::warn!(error = %e, "could not remove the registration; stopping the runner anyway")
            }
        }
        self.terminate_idle(child);
    }

    /// A job hook's call. Any workflow step can make the same call (it runs as the runner's
    /// user), so what a call may do is chosen to be harmless when forged:
    /// - `started`: a log line, task protection on (it keeps the job's own task from scale-in,
    ///   for at most `HANGAR_PROTECTION_MINUTES`) and "busy" (a stop drains instead of
    ///   deregistering; GitHub is asked before anything is removed anyway);
    /// - `completed`: a log line; protection goes only once the runner has no job process
    ///   left ([`Self::release_protection_if_done`]); the work folder wipe runs with the
    ///   runner's identity and follows no link, so a forged one deletes nothing the job could
    ///   not delete itself.
    async fn on_hook(&mut self, hook: PendingHook) {
        let PendingHook { event, done } = hook;
        match event.kind {
            HookKind::Started => {
                self.activity = Activity::Busy;
                self.release_protection = false;
                self.set_protection(true).await;
                tracing::info!(
                    job = event.job.as_deref().unwrap_or(""),
                    run_id = event.run_id.as_deref().unwrap_or(""),
                    repository = event.repository.as_deref().unwrap_or(""),
                    runner_name = %self.identity.name,
                    "job started"
                );
                self.job = Some((Instant::now(), event));
            }
            HookKind::Completed => {
                self.release_protection = self.protection.is_some();
                let wiped = if self.identity.ephemeral {
                    None
                } else {
                    let work = self.home.work_folder(&self.config.work_dir);
                    let wiped = isolation::as_user(self.run_as.as_ref(), move || {
                        files::wipe_work_folder(&work).map_err(|e| e.to_string())
                    })
                    .await
                    .unwrap_or_else(|e| Err(format!("as the runner's user: {e}")));
                    match wiped {
                        Ok(n) => Some(n),
                        Err(e) => {
                            tracing::error!(error = %e, "could not wipe the work folder; the next job could see this one's files");
                            None
                        }
                    }
                };
                let duration_ms = self
                    .job
                    .as_ref()
                    .map(|(t, _)| t.elapsed().as_millis() as u64);
                tracing::info!(
                    job = event.job.as_deref().unwrap_or(""),
                    run_id = event.run_id.as_deref().unwrap_or(""),
                    repository = event.repository.as_deref().unwrap_or(""),
                    duration_ms,
                    workspace_entries_wiped = wiped,
                    "job completed"
                );
                self.job = None;
                self.jobs_done += 1;
                self.activity = Activity::Idle;
            }
        }
        let _ = done.send(());
    }

    /// Whether the runner is running a job, by the process table: the listener has a child
    /// (`Runner.Worker`, or the stand-in's steps) only during a job. A job cannot fake the
    /// absence of its own process; `None` if the table cannot be read.
    fn job_process_running(child: &Child) -> Option<bool> {
        isolation::has_children(child.id()?)
    }

    /// Turns task protection off once a completed hook asked for it and no job process is
    /// left, so a forged `completed` in the middle of a job leaves the job protected.
    async fn release_protection_if_done(&mut self, child: &Child) {
        if Self::job_process_running(child) == Some(true) {
            return;
        }
        self.release_protection = false;
        self.set_protection(false).await;
    }

    /// Turns ECS task scale-in protection on or off, if the task has it; a failure is logged.
    /// When ECS answers that the task cannot have it (not part of a service), it is not asked
    /// again.
    async fn set_protection(&mut self, on: bool) {
        let Some(p) = &self.protection else {
            return;
        };
        let state = if on { "on" } else { "off" };
        match p.set(on).await {
            Ok(()) => tracing::info!("ECS task scale-in protection {state}"),
            Err(e) if e.not_applicable() => {
                tracing::info!(answer = %e, "this task is not part of an ECS service, so it has no scale-in protection; not asking again");
                self.protection = None;
                self.release_protection = false;
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not turn {state} ECS task scale-in protection")
            }
        }
    }

    async fn registration_exists(&self) -> Option<bool> {
        let gh = self.github.as_ref()?;
        match gh.get_runner(&self.config.scope, self.identity.id).await {
            Ok(_) => Some(true),
            Err(GitHubError::NotFound { .. }) => Some(false),
            Err(e) => {
                tracing::warn!(error = %e, "could not check the runner's registration");
                None
            }
        }
    }

    async fn on_watchdog(&mut self, child: &Child) {
        if self.registration_exists().await == Some(false) {
            tracing::error!(
                runner_id = self.identity.id,
                "GitHub no longer lists this runner (deleted server-side); exiting so the task is replaced"
            );
            self.registration_removed = true;
            self.outcome = Some(AgentExit::Replace(
                "GitHub no longer lists the runner".into(),
            ));
            self.terminate_idle(child);
        }
    }

    async fn on_idle_timeout(&mut self, child: &Child) {
        let timeout = self.config.idle_timeout.unwrap_or_default();
        tracing::warn!(
            idle_timeout_s = timeout.as_secs_f64(),
            "the ephemeral runner got no job in time; removing it"
        );
        let removal = self.delete_registration().await;
        match removal {
            // A job landed just in time: this is no longer an idle runner, and there is nothing
            // to stop. Its started hook is on the way; after the job the runner exits by itself.
            Ok(Some(RunnerRemoval::Busy)) => {
                tracing::info!(
                    "GitHub says the runner is busy: a job landed just in time; keeping it"
                );
                self.activity = Activity::Busy;
                return;
            }
            Ok(Some(r)) => self.removed(r),
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(error = %e, "could not remove the registration; stopping the runner anyway")
            }
        }
        self.outcome = Some(AgentExit::Replace(format!(
            "no job within the idle timeout ({timeout:?})"
        )));
        self.terminate_idle(child);
    }

    /// Deletes the registration, waiting out a "busy" answer for a while (a cancelled or
    /// finished job is still being reported).
    async fn deregister_patiently(&mut self) {
        if self.registration_removed {
            return;
        }
        let Some(gh) = self.github.clone() else {
            tracing::info!(
                runner_id = self.identity.id,
                "no GitHub credentials: the registration is left to the runner's launcher"
            );
            return;
        };
        let until = Instant::now() + DEREGISTER_PATIENCE;
        loop {
            match gh.delete_runner(&self.config.scope, self.identity.id).await {
                Ok(RunnerRemoval::Busy) if Instant::now() < until => {
                    sleep(Duration::from_millis(250)).await
                }
                Ok(RunnerRemoval::Busy) => {
                    tracing::error!(
                        runner_id = self.identity.id,
                        "GitHub still says the runner is busy; its registration is left behind"
                    );
                    return;
                }
                Ok(r) => {
                    self.removed(r);
                    return;
                }
                Err(e) => {
                    tracing::error!(error = %e, runner_id = self.identity.id, "could not remove the registration; it is left behind");
                    return;
                }
            }
        }
    }

    async fn finish(mut self, end: RunnerEnd) -> Result<AgentExit, AgentError> {
        let outcome = self.outcome.clone().unwrap_or(AgentExit::Stopped);
        if !matches!(outcome, AgentExit::JobDone) {
            self.deregister_patiently().await;
        }
        if self.activity == Activity::Busy || self.release_protection {
            self.set_protection(false).await;
        }
        if let Err(e) = remove_local_config(&self.home, self.run_as.as_ref()).await {
            tracing::warn!(error = %e, "could not remove the runner's local configuration");
        }
        tracing::info!(runner_end = %policy::describe(end), outcome = ?outcome, jobs = self.jobs_done, "agent done");
        Ok(outcome)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes() {
        assert_eq!(AgentExit::Stopped.code(), 0);
        assert_eq!(AgentExit::JobDone.code(), 0);
        assert_eq!(AgentExit::Replace("x".into()).code(), 3);
        assert_eq!(
            AgentError::Config(AgentConfigError("x".into())).exit_code(),
            2
        );
        assert_eq!(AgentError::Runner("x".into()).exit_code(), 1);
        let docker = AgentError::Docker(DockerWaitError {
            socket: "/var/run/hangar-docker/docker.sock".into(),
            seen: docker::Seen::NoSocket,
            limit: Duration::from_secs(2),
        });
        assert_eq!(
            docker.exit_code(),
            3,
            "replace the task: its sidecar is broken"
        );
    }
}
