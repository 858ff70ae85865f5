//! The local process backend, for `hangar dev` and the end-to-end tests: each task is one
//! `hangar agent` process, in its own process group, supervising the stand-in runner (the hangar
//! binary linked as `bin/Runner.Listener`). The JIT configuration is handed over through a
//! one-shot file, the local analogue of the ECS backend's one-shot SSM parameter: the agent is
//! told its path (`RUNNER_JIT_CONFIG_FILE`), reads it and deletes it.
//!
//! On disk, under the pool's `work_root`:
//! - `<runner name>/` — the task's folder and the agent's `RUNNER_HOME`;
//! - `<runner name>/task.json` — tags, pid, stop request and exit status: all a later instance
//!   (a restarted controller) needs to list and stop the tasks of an earlier one;
//! - `<runner name>/agent.log` — the agent's output (JSON logs);
//! - `<runner name>.jit` — the one-shot JIT configuration (mode 0600, created exclusively),
//!   until the agent takes it.
//!
//! Invariants:
//! - The JIT configuration is written to the one-shot file only. The agent's environment is
//!   built from nothing (`env_clear`) and holds no credential: an `env` extra that names one is
//!   refused when the backend is built.
//! - A stop sends exactly one SIGTERM to the agent, which stops its runner (draining a busy
//!   one); a second signal would cancel a job, so none is ever sent. SIGKILL comes only from
//!   [`LocalBackend::shutdown_all`] after its grace, or [`LocalBackend::kill_all`].
//! - A signal goes only to the process recorded for the task, recognised by its start time, so
//!   a reused pid is never signalled.
//! - A failed launch leaves neither its one-shot file nor its folder behind.
//! - Only stopped tasks' folders are removed, and only after they were reported stopped and
//!   [`STOPPED_RETENTION`] passed.

use std::collections::{HashMap, HashSet, VecDeque};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::{DateTime, Utc};
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use super::{Backend, BackendError, Handoff, LaunchRequest, Task, TaskState, TaskTags, TaskTimes};
use crate::agent::config::ENV_JIT_CONFIG_FILE;
use crate::controller::config::LocalLaunch;
use crate::github::Scope;

/// How long a stopped task's folder (and log) is kept after it was first reported stopped.
pub const STOPPED_RETENTION: Duration = Duration::from_secs(600);
/// The prefix of task ids: `local-<runner name>`.
const ID_PREFIX: &str = "local-";
const TASK_FILE: &str = "task.json";
const AGENT_LOG: &str = "agent.log";
const HANDOFF_EXTENSION: &str = "jit";
/// Variables the backend sets for each runner; an `env` extra may not override them.
const RESERVED: &[&str] = &[
    "RUNNER_HOME",
    "RUNNER_NAME",
    "RUNNER_SCOPE",
    "GITHUB_REPOSITORY",
    "GITHUB_ORG",
];
/// What an agent started by another instance is reported with once it is gone and that instance
/// did not record its exit status.
const STATUS_UNKNOWN: &str =
    "exited; exit status unknown (the agent was started by an earlier controller)";

/// What the backend remembers of a task (also its `task.json`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct TaskRecord {
    id: String,
    pool: String,
    runner_name: String,
    runner_id: u64,
    created_at: DateTime<Utc>,
    /// The agent's pid (also its process group), once spawned.
    #[serde(default)]
    pid: Option<i32>,
    /// The agent's start time (`/proc/<pid>/stat`, clock ticks after boot): tells it apart from
    /// a later process that got the same pid.
    #[serde(default)]
    pid_started: Option<u64>,
    #[serde(default)]
    stop: Option<StopRequest>,
    #[serde(default)]
    exit: Option<ExitRecord>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct StopRequest {
    at: DateTime<Utc>,
    reason: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct ExitRecord {
    at: DateTime<Utc>,
    status: String,
}

struct Entry {
    record: TaskRecord,
    /// This instance spawned the agent; its waiter records the exit status.
    own_child: bool,
    /// This instance is launching it (folder and handoff being written, no pid yet).
    launching: bool,
    /// Gone, with a status that only this instance knows (not written to `task.json`, so the
    /// instance that spawned it can still write the real one, which is re-read while unknown).
    status_unknown: bool,
    /// `list` has reported it stopped at least once.
    reported_stopped: bool,
}

impl Entry {
    fn adopted(record: TaskRecord) -> Entry {
        Entry {
            record,
            own_child: false,
            launching: false,
            status_unknown: false,
            reported_stopped: false,
        }
    }
}

struct State {
    /// By runner name (the folder's name).
    tasks: HashMap<String, Entry>,
    injected: VecDeque<BackendError>,
    retention: Duration,
}

struct Inner {
    scope: Scope,
    binary: PathBuf,
    work_root: PathBuf,
    extra_env: Vec<(String, String)>,
    state: Mutex<State>,
    /// Woken whenever an agent this instance spawned exits.
    exited: Notify,
}

/// Runs each runner as a local `hangar agent` process. Cheap to clone (one shared state).
#[derive(Clone)]
pub struct LocalBackend {
    inner: Arc<Inner>,
}

/// What [`LocalBackend::shutdown_all`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Task ids whose agents exited within the grace.
    pub stopped: Vec<String>,
    /// Task ids whose process trees were killed after the grace.
    pub killed: Vec<String>,
}

fn config_error(what: impl std::fmt::Display) -> BackendError {
    BackendError::Config(what.to_string())
}

/// Sorts a file-system failure under `work_root` by what the controller should do.
fn fs_error(doing: &str, path: &Path, e: &std::io::Error) -> BackendError {
    use std::io::ErrorKind as K;
    let shown = path.display();
    match e.kind() {
        K::PermissionDenied | K::ReadOnlyFilesystem | K::NotADirectory => {
            config_error(format_args!(
                "cannot {doing} {shown} ({e}); give the controller's user a writable work_root"
            ))
        }
        K::StorageFull | K::QuotaExceeded => BackendError::Capacity(format!(
            "cannot {doing} {shown} ({e}); free disk space under the work_root"
        )),
        _ => BackendError::Unavailable(format!("cannot {doing} {shown} ({e})")),
    }
}

/// Runner names become folder and file names: letters, digits, '-', '_' and '.', not starting
/// with '.', at most 64 (GitHub's limit, and what `hangar agent` accepts as RUNNER_NAME).
fn valid_runner_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

/// ECS caps a stop reason at 255 characters; the same cap keeps `task.json` small.
fn truncate_reason(reason: &str) -> String {
    reason.chars().take(255).collect()
}

/// `exit status 0`, `killed by signal 9 (SIGKILL)`.
fn describe_exit(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(sig)) => match Signal::try_from(sig) {
            Ok(name) => format!("killed by signal {sig} ({name})"),
            Err(_) => format!("killed by signal {sig}"),
        },
        (None, None) => "exited".to_string(),
    }
}

/// A task's stop reason: the exit status, and why it was stopped if someone asked.
fn stop_reason(record: &TaskRecord) -> Option<String> {
    let exit = record.exit.as_ref()?;
    Some(match &record.stop {
        Some(stop) => format!("{} (stopped: {})", exit.status, stop.reason),
        None => exit.status.clone(),
    })
}

/// The fields of `/proc/<pid>/stat` the backend needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct ProcStat {
    state: char,
    ppid: i32,
    pgid: i32,
    start_time: u64,
}

/// Parses `/proc/<pid>/stat`. The command name (field 2) may hold spaces and parentheses, so
/// the fields are counted from its last ')'.
fn parse_stat(text: &str) -> Option<ProcStat> {
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some(ProcStat {
        state: fields.first()?.chars().next()?,
        ppid: fields.get(1)?.parse().ok()?,
        pgid: fields.get(2)?.parse().ok()?,
        // Field 22; the slice starts at field 3.
        start_time: fields.get(19)?.parse().ok()?,
    })
}

fn read_stat(pid: i32) -> Option<ProcStat> {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|t| parse_stat(&t))
}

/// Whether the process recorded as `pid` (started at `started`) still runs. A zombie has
/// exited; a process with the same pid but another start time is someone else.
fn alive(pid: i32, started: Option<u64>) -> bool {
    match read_stat(pid) {
        Some(s) => !matches!(s.state, 'Z' | 'X' | 'x') && started.is_none_or(|t| t == s.start_time),
        None => false,
    }
}

/// Every process descended from `root` (children, their children, ...), from one snapshot of
/// `/proc`. Taken while `root` lives, so the tree is still linked by parent pids.
fn descendants(root: i32) -> Vec<(i32, ProcStat)> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let all: Vec<(i32, ProcStat)> = entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| Some((pid, read_stat(pid)?)))
        .collect();
    let mut found: Vec<(i32, ProcStat)> = Vec::new();
    let mut frontier = vec![root];
    while let Some(parent) = frontier.pop() {
        for (pid, stat) in all.iter().filter(|(_, s)| s.ppid == parent) {
            if !found.iter().any(|(p, _)| p == pid) {
                found.push((*pid, *stat));
                frontier.push(*pid);
            }
        }
    }
    found
}

/// SIGKILLs the process tree of an agent: its process group and the groups of its
/// descendants (the runner and its jobs run in groups of their own). Never the caller's group.
fn kill_tree(pid: i32) {
    let own_group = nix::unistd::getpgrp().as_raw();
    let mut groups: Vec<i32> = vec![pid];
    let tree = descendants(pid);
    for (_, stat) in &tree {
        if !groups.contains(&stat.pgid) {
            groups.push(stat.pgid);
        }
    }
    for group in groups.into_iter().filter(|g| *g > 1 && *g != own_group) {
        let _ = nix::sys::signal::killpg(Pid::from_raw(group), Signal::SIGKILL);
    }
    // Anything left in the caller's own group is killed by pid, never by group.
    for (child, stat) in tree {
        if stat.pgid == own_group {
            let _ = nix::sys::signal::kill(Pid::from_raw(child), Signal::SIGKILL);
        }
    }
}

/// The agent's environment, from nothing: what it needs to find its runner folder, its
/// one-shot file and its scope, plus PATH, HOME and the pool's `env` extras. `inherited` reads
/// the controller's environment (PATH and HOME only).
fn agent_env(
    scope: &Scope,
    folder: &Path,
    handoff: &Path,
    runner_name: &str,
    extras: &[(String, String)],
    inherited: &dyn Fn(&str) -> Option<String>,
    as_root: bool,
) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = Vec::new();
    let mut set = |k: &str, v: String| {
        env.retain(|(name, _)| name != k);
        env.push((k.to_string(), v));
    };
    set(
        "PATH",
        inherited("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".to_string()),
    );
    set(
        "HOME",
        inherited("HOME").unwrap_or_else(|| folder.display().to_string()),
    );
    set("HANGAR_LOG_FORMAT", "json".to_string());
    if as_root {
        // The stand-in, like the official runner, refuses root unless told; a local run has no
        // other user to switch to. An `env` extra (RUNNER_USER, ...) may say otherwise.
        set("RUNNER_ALLOW_RUNASROOT", "1".to_string());
    }
    for (k, v) in extras {
        set(k, v.clone());
    }
    set("RUNNER_HOME", folder.display().to_string());
    set("RUNNER_NAME", runner_name.to_string());
    set(ENV_JIT_CONFIG_FILE, handoff.display().to_string());
    match scope {
        Scope::Repo { owner, repo } => {
            set("RUNNER_SCOPE", "repo".to_string());
            set("GITHUB_REPOSITORY", format!("{owner}/{repo}"));
        }
        Scope::Org { org } => {
            set("RUNNER_SCOPE", "org".to_string());
            set("GITHUB_ORG", org.clone());
        }
    }
    env
}

/// Refuses `env` extras that are credentials (or handles to them), that the backend sets
/// itself, or that are not variable names.
fn check_extras(extras: &[(String, String)]) -> Result<(), BackendError> {
    for (name, value) in extras {
        if name.is_empty() || name.contains(['=', '\0']) || value.contains('\0') {
            return Err(config_error(format_args!(
                "the local backend's env has an invalid variable {name:?}; use NAME = \"value\" with no '=' or NUL in the name"
            )));
        }
        if crate::agent::env::is_forbidden(name) {
            return Err(config_error(format_args!(
                "the local backend's env names {name}, a credential (or a handle to one) that no agent may be given; remove it: a local agent needs no credentials, the controller owns its runner's registration"
            )));
        }
        if RESERVED.contains(&name.as_str()) {
            return Err(config_error(format_args!(
                "the local backend's env sets {name}, which the backend sets for each runner from the pool; remove it"
            )));
        }
    }
    Ok(())
}

/// Writes `record` to `<folder>/task.json` (through a temporary file and a rename, so a reader
/// never sees half of it).
fn persist(folder: &Path, record: &TaskRecord) -> std::io::Result<()> {
    let tmp = folder.join(format!("{TASK_FILE}.tmp"));
    let body = serde_json::to_vec_pretty(record).map_err(std::io::Error::other)?;
    std::fs::write(&tmp, body)?;
    std::fs::rename(&tmp, folder.join(TASK_FILE))
}

fn read_record(folder: &Path) -> Option<TaskRecord> {
    let text = std::fs::read(folder.join(TASK_FILE)).ok()?;
    match serde_json::from_slice(&text) {
        Ok(r) => Some(r),
        Err(e) => {
            tracing::warn!(folder = %folder.display(), error = %e, "ignoring an unreadable task.json");
            None
        }
    }
}

impl LocalBackend {
    /// A backend for one pool of `scope`, with its launch settings. Creates `work_root` (mode
    /// 0700) if needed. Refuses `env` extras that are credentials or that it sets itself.
    pub fn new(scope: Scope, launch: &LocalLaunch) -> Result<LocalBackend, BackendError> {
        let binary = match &launch.hangar_binary {
            Some(path) => path.clone(),
            None => std::env::current_exe().map_err(|e| {
                config_error(format_args!(
                    "cannot find the running hangar executable ({e}); set the local backend's hangar_binary"
                ))
            })?,
        };
        let binary = std::fs::canonicalize(&binary).map_err(|e| {
            config_error(format_args!(
                "the local backend's hangar_binary {} cannot be used ({e}); point it at the hangar executable",
                binary.display()
            ))
        })?;
        if !binary.is_file() {
            return Err(config_error(format_args!(
                "the local backend's hangar_binary {} is not a file; point it at the hangar executable",
                binary.display()
            )));
        }
        let extra_env: Vec<(String, String)> = launch
            .env
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        check_extras(&extra_env)?;
        let work_root = if launch.work_root.is_absolute() {
            launch.work_root.clone()
        } else {
            std::env::current_dir()
                .map_err(|e| fs_error("resolve", &launch.work_root, &e))?
                .join(&launch.work_root)
        };
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&work_root)
            .map_err(|e| fs_error("create", &work_root, &e))?;
        Ok(LocalBackend {
            inner: Arc::new(Inner {
                scope,
                binary,
                work_root,
                extra_env,
                state: Mutex::new(State {
                    tasks: HashMap::new(),
                    injected: VecDeque::new(),
                    retention: STOPPED_RETENTION,
                }),
                exited: Notify::new(),
            }),
        })
    }

    /// Keeps stopped tasks' folders for `retention` after they were first reported stopped
    /// (default [`STOPPED_RETENTION`]).
    pub fn retain_stopped_for(self, retention: Duration) -> LocalBackend {
        self.inner.lock().retention = retention;
        self
    }

    /// Test knob: the next `n` launches fail with `error`, before anything is written.
    pub fn fail_next_launches(&self, n: usize, error: BackendError) {
        let mut state = self.inner.lock();
        state.injected.extend(std::iter::repeat_n(error, n));
    }

    pub fn work_root(&self) -> &Path {
        &self.inner.work_root
    }

    /// The folder of a runner's task (its RUNNER_HOME; holds `agent.log`).
    pub fn task_folder(&self, runner_name: &str) -> PathBuf {
        self.inner.work_root.join(runner_name)
    }

    /// The pid of a task's agent, while this backend knows it and it has been spawned.
    pub fn agent_pid(&self, task_id: &str) -> Option<u32> {
        let name = task_id.strip_prefix(ID_PREFIX)?;
        let state = self.inner.lock();
        let pid = state.tasks.get(name)?.record.pid?;
        u32::try_from(pid).ok()
    }

    /// Teardown for `hangar dev` and tests: one SIGTERM to every live agent under `work_root`
    /// (whichever pool or instance started it), then, for those still running after `grace`,
    /// SIGKILL to their process groups and their descendants' groups.
    pub async fn shutdown_all(&self, grace: Duration) -> ShutdownReport {
        let inner = &self.inner;
        let deadline = tokio::time::Instant::now() + grace;
        let targets: Vec<(String, String)> = {
            let mut state = inner.lock();
            inner.sync_from_disk(&mut state);
            let names: Vec<String> = state.tasks.keys().cloned().collect();
            let mut targets = Vec::new();
            for name in names {
                let Some(entry) = state.tasks.get_mut(&name) else {
                    continue;
                };
                if inner.refresh(entry) == TaskState::Stopped {
                    continue;
                }
                targets.push((name.clone(), entry.record.id.clone()));
                inner.request_stop(entry, "controller shutdown");
            }
            targets
        };
        let mut report = ShutdownReport::default();
        loop {
            let notified = inner.exited.notified();
            let left: Vec<(String, String)> = {
                let mut state = inner.lock();
                targets
                    .iter()
                    .filter(|(name, _)| {
                        state
                            .tasks
                            .get_mut(name)
                            .is_some_and(|e| inner.refresh(e) != TaskState::Stopped)
                    })
                    .cloned()
                    .collect()
            };
            if left.is_empty() || tokio::time::Instant::now() >= deadline {
                report.stopped = targets
                    .iter()
                    .filter(|t| !left.contains(t))
                    .map(|(_, id)| id.clone())
                    .collect();
                for (name, id) in &left {
                    let pid = inner.lock().tasks.get(name).and_then(|e| e.record.pid);
                    if let Some(pid) = pid {
                        tracing::warn!(task_id = %id, pid, grace_s = grace.as_secs_f64(), "the agent did not stop within the grace; killing its process tree");
                        kill_tree(pid);
                    }
                    report.killed.push(id.clone());
                }
                break;
            }
            // Agents of this instance wake us when they exit; others are polled.
            tokio::select! {
                _ = notified => {}
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                _ = tokio::time::sleep_until(deadline) => {}
            }
        }
        if !report.killed.is_empty() {
            // Let this instance's waiters record the kills, so a later list shows them.
            let until = tokio::time::Instant::now() + Duration::from_secs(2);
            while tokio::time::Instant::now() < until {
                let notified = inner.exited.notified();
                let pending = {
                    let state = inner.lock();
                    report.killed.iter().any(|id| {
                        id.strip_prefix(ID_PREFIX)
                            .and_then(|n| state.tasks.get(n))
                            .is_some_and(|e| e.own_child && e.record.exit.is_none())
                    })
                };
                if !pending {
                    break;
                }
                tokio::select! {
                    _ = notified => {}
                    _ = tokio::time::sleep_until(until) => {}
                }
            }
        }
        report
    }

    /// Emergency teardown (a failing test's drop, a second Ctrl-C): SIGKILL to every live
    /// agent's process tree under `work_root`, at once. Returns how many agents it killed.
    pub fn kill_all(&self) -> usize {
        let inner = &self.inner;
        let mut state = inner.lock();
        inner.sync_from_disk(&mut state);
        let mut killed = 0;
        for entry in state.tasks.values_mut() {
            if inner.refresh(entry) == TaskState::Stopped {
                continue;
            }
            if let Some(pid) = entry.record.pid {
                kill_tree(pid);
                killed += 1;
            }
        }
        killed
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain data behind; keep serving it.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn folder(&self, runner_name: &str) -> PathBuf {
        self.work_root.join(runner_name)
    }

    fn handoff_path(&self, runner_name: &str) -> PathBuf {
        self.work_root
            .join(format!("{runner_name}.{HANDOFF_EXTENSION}"))
    }

    /// Writes a task's record, first taking in a stop request or exit status that another
    /// instance wrote and this one does not know of (a successor stopping a task this instance
    /// spawned, and this instance's waiter recording its exit).
    fn save(&self, record: &mut TaskRecord) {
        let folder = self.folder(&record.runner_name);
        if let Some(on_disk) = read_record(&folder).filter(|r| r.id == record.id) {
            if record.stop.is_none() {
                record.stop = on_disk.stop;
            }
            if record.exit.is_none() {
                record.exit = on_disk.exit;
            }
        }
        if let Err(e) = persist(&folder, record) {
            tracing::warn!(task_id = %record.id, error = %e, "could not write task.json; a restarted controller may not see this task's latest state");
        }
    }

    /// Adopts tasks whose folders appeared (started by another instance) and forgets those
    /// whose folders were removed (by another instance's clean-up).
    fn sync_from_disk(&self, state: &mut State) {
        let Ok(dir) = std::fs::read_dir(&self.work_root) else {
            return;
        };
        let mut seen: HashSet<String> = HashSet::new();
        for entry in dir.flatten() {
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            if !entry.file_type().is_ok_and(|t| t.is_dir()) || !valid_runner_name(&name) {
                continue;
            }
            if !state.tasks.contains_key(&name)
                && let Some(record) = read_record(&entry.path())
                && record.runner_name == name
            {
                state.tasks.insert(name.clone(), Entry::adopted(record));
            }
            seen.insert(name);
        }
        state
            .tasks
            .retain(|name, e| e.launching || seen.contains(name));
    }

    /// Adopts one task from disk if it is not known yet.
    fn adopt_one<'s>(&self, state: &'s mut State, runner_name: &str) -> Option<&'s mut Entry> {
        if !state.tasks.contains_key(runner_name) {
            let record = read_record(&self.folder(runner_name))?;
            if record.runner_name != runner_name {
                return None;
            }
            state
                .tasks
                .insert(runner_name.to_string(), Entry::adopted(record));
        }
        state.tasks.get_mut(runner_name)
    }

    /// The task's state now; notices (and records) an adopted agent that is gone.
    fn refresh(&self, entry: &mut Entry) -> TaskState {
        if entry.record.exit.is_some() && !entry.status_unknown {
            return TaskState::Stopped;
        }
        let running = if entry.record.stop.is_some() {
            TaskState::Stopping
        } else {
            TaskState::Running
        };
        if entry.record.pid.is_none()
            && !entry.launching
            && let Some(on_disk) = read_record(&self.folder(&entry.record.runner_name))
                .filter(|r| r.id == entry.record.id && r.pid.is_some())
        {
            // Another instance was launching it when this one first saw it; it has spawned since.
            entry.record = on_disk;
            return self.refresh(entry);
        }
        let Some(pid) = entry.record.pid else {
            return TaskState::Pending;
        };
        if entry.own_child {
            // Its waiter records the exit; until then it has not been reaped.
            return running;
        }
        if entry.record.exit.is_none() && alive(pid, entry.record.pid_started) {
            return running;
        }
        // Gone. The instance that spawned it may have written its exit status.
        if let Some(exit) =
            read_record(&self.folder(&entry.record.runner_name)).and_then(|r| r.exit)
        {
            entry.record.exit = Some(exit);
            entry.status_unknown = false;
        } else if entry.record.exit.is_none() {
            entry.record.exit = Some(ExitRecord {
                at: Utc::now(),
                status: STATUS_UNKNOWN.to_string(),
            });
            entry.status_unknown = true;
        }
        TaskState::Stopped
    }

    /// Records a stop request and sends the agent its one SIGTERM (none if one was sent
    /// already). A task not spawned yet is stopped before it starts.
    fn request_stop(&self, entry: &mut Entry, reason: &str) {
        if entry.record.stop.is_some() {
            return;
        }
        entry.record.stop = Some(StopRequest {
            at: Utc::now(),
            reason: truncate_reason(reason),
        });
        match entry.record.pid {
            // Being launched here: the launch sees the request and does not spawn.
            None if entry.launching => {}
            None => {
                // Left pending by an instance that stopped mid-launch: it will never start.
                entry.record.exit = Some(ExitRecord {
                    at: Utc::now(),
                    status: "never started (its launch was interrupted)".to_string(),
                });
                let _ = std::fs::remove_file(self.handoff_path(&entry.record.runner_name));
            }
            Some(pid) => {
                tracing::info!(task_id = %entry.record.id, pid, reason, "stopping the agent (SIGTERM)");
                if let Err(e) = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGTERM) {
                    tracing::debug!(task_id = %entry.record.id, error = %e, "could not signal the agent (already gone?)");
                }
            }
        }
        self.save(&mut entry.record);
    }

    /// Removes what a launch wrote, and forgets the task.
    fn undo_launch(&self, runner_name: &str) {
        let _ = std::fs::remove_file(self.handoff_path(runner_name));
        let _ = std::fs::remove_dir_all(self.folder(runner_name));
        self.lock().tasks.remove(runner_name);
    }

    /// Writes the folder, `task.json` and the one-shot file for a task.
    fn prepare(&self, record: &TaskRecord, jit: &str) -> Result<(), BackendError> {
        let folder = self.folder(&record.runner_name);
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.work_root)
            .map_err(|e| fs_error("create", &self.work_root, &e))?;
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&folder)
            .map_err(|e| fs_error("create", &folder, &e))?;
        let bin = folder.join("bin");
        std::fs::create_dir(&bin).map_err(|e| fs_error("create", &bin, &e))?;
        let listener = bin.join("Runner.Listener");
        std::os::unix::fs::symlink(&self.binary, &listener)
            .map_err(|e| fs_error("link", &listener, &e))?;
        persist(&folder, record).map_err(|e| fs_error("write", &folder.join(TASK_FILE), &e))?;
        let handoff = self.handoff_path(&record.runner_name);
        // A file left by an earlier launch of this name that never ran is stale.
        let _ = std::fs::remove_file(&handoff);
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&handoff)
            .map_err(|e| fs_error("create", &handoff, &e))?;
        file.write_all(jit.as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(|e| fs_error("write", &handoff, &e))?;
        Ok(())
    }

    fn spawn_agent(&self, record: &TaskRecord) -> Result<tokio::process::Child, BackendError> {
        let name = &record.runner_name;
        let folder = self.folder(name);
        let log_path = folder.join(AGENT_LOG);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&log_path)
            .map_err(|e| fs_error("create", &log_path, &e))?;
        let log_out = log
            .try_clone()
            .map_err(|e| fs_error("open", &log_path, &e))?;
        let env = agent_env(
            &self.scope,
            &folder,
            &self.handoff_path(name),
            name,
            &self.extra_env,
            &|k| std::env::var(k).ok(),
            nix::unistd::geteuid().is_root(),
        );
        let mut cmd = tokio::process::Command::new(&self.binary);
        cmd.arg("agent")
            .current_dir(&folder)
            .env_clear()
            .envs(env)
            .stdin(Stdio::null())
            .stdout(log_out)
            .stderr(log)
            // Its own group: a terminal's Ctrl-C reaches the controller only, which decides
            // when agents stop; the agent outlives a controller restart.
            .process_group(0)
            .kill_on_drop(false);
        cmd.spawn().map_err(|e| {
            use std::io::ErrorKind as K;
            match e.kind() {
                K::NotFound | K::PermissionDenied | K::InvalidInput => config_error(format_args!(
                    "cannot start {} agent ({e}); set the local backend's hangar_binary to an executable hangar",
                    self.binary.display()
                )),
                _ => BackendError::Unavailable(format!(
                    "cannot start the agent for runner {name} ({e}): the machine is short of processes, memory or file handles"
                )),
            }
        })
    }

    fn launch(self: &Arc<Self>, request: LaunchRequest) -> Result<Task, BackendError> {
        let LaunchRequest { tags, jit_config } = request;
        let name = tags.runner_name.clone();
        {
            let mut state = self.lock();
            if let Some(error) = state.injected.pop_front() {
                tracing::info!(runner_name = %name, error = %error, "launch failure injected");
                return Err(error);
            }
            if !valid_runner_name(&name) {
                return Err(config_error(format_args!(
                    "runner name {name:?} cannot name a local folder: use 1 to 64 letters, digits, '-', '_' or '.', not starting with '.'"
                )));
            }
            if let Some(entry) = self.adopt_one(&mut state, &name) {
                if self.refresh(entry) != TaskState::Stopped {
                    return Err(config_error(format_args!(
                        "runner {name} already has a task ({}) that is not stopped; runner names must be unique",
                        entry.record.id
                    )));
                }
                // A stopped task of the same name: its folder makes way for the new one.
                state.tasks.remove(&name);
            }
            let _ = std::fs::remove_dir_all(self.folder(&name));
            state.tasks.insert(
                name.clone(),
                Entry {
                    record: TaskRecord {
                        id: format!("{ID_PREFIX}{name}"),
                        pool: tags.pool.clone(),
                        runner_name: name.clone(),
                        runner_id: tags.runner_id,
                        created_at: Utc::now(),
                        pid: None,
                        pid_started: None,
                        stop: None,
                        exit: None,
                    },
                    own_child: false,
                    launching: true,
                    status_unknown: false,
                    reported_stopped: false,
                },
            );
        }
        let record = self.lock().tasks[&name].record.clone();
        if let Err(e) = self.prepare(&record, jit_config.expose_secret()) {
            self.undo_launch(&name);
            return Err(e);
        }

        let mut state = self.lock();
        let Some(entry) = state.tasks.get_mut(&name) else {
            drop(state);
            self.undo_launch(&name);
            return Err(BackendError::Unavailable(format!(
                "runner {name}'s task was removed while it was being launched"
            )));
        };
        if entry.record.stop.is_some() {
            // Stopped while being written: it never starts.
            let _ = std::fs::remove_file(self.handoff_path(&name));
            entry.launching = false;
            entry.record.exit = Some(ExitRecord {
                at: Utc::now(),
                status: "never started (stopped while being launched)".to_string(),
            });
            self.save(&mut entry.record);
            return Ok(self.task_of(entry, TaskState::Stopped));
        }
        let mut child = match self.spawn_agent(&entry.record) {
            Ok(child) => child,
            Err(e) => {
                drop(state);
                self.undo_launch(&name);
                return Err(e);
            }
        };
        let pid = child.id().and_then(|p| i32::try_from(p).ok());
        entry.record.pid = pid;
        entry.record.pid_started = pid.and_then(read_stat).map(|s| s.start_time);
        entry.launching = false;
        entry.own_child = true;
        self.save(&mut entry.record);
        let task = self.task_of(entry, TaskState::Running);
        drop(state);
        tracing::info!(task_id = %task.id, pool = %tags.pool, runner_name = %name, runner_id = tags.runner_id, pid, "agent started");

        let inner = Arc::clone(self);
        tokio::spawn(async move {
            let status = match child.wait().await {
                Ok(status) => describe_exit(status),
                Err(e) => format!("exited; waiting for it failed ({e})"),
            };
            {
                let mut state = inner.lock();
                if let Some(entry) = state.tasks.get_mut(&name) {
                    tracing::info!(task_id = %entry.record.id, runner_name = %name, status = %status, "agent exited");
                    entry.record.exit = Some(ExitRecord {
                        at: Utc::now(),
                        status,
                    });
                    entry.status_unknown = false;
                    inner.save(&mut entry.record);
                }
            }
            inner.exited.notify_waiters();
        });
        Ok(task)
    }

    fn task_of(&self, entry: &Entry, state: TaskState) -> Task {
        let r = &entry.record;
        Task {
            id: r.id.clone(),
            tags: TaskTags {
                pool: r.pool.clone(),
                runner_name: r.runner_name.clone(),
                runner_id: r.runner_id,
            },
            state,
            created_at: r.created_at,
            stop_reason: if state == TaskState::Stopped {
                stop_reason(r)
            } else {
                None
            },
            capacity_provider: None,
            launch_fallbacks: Vec::new(),
            // A process pulls no image: its bill, were it a task, would start when it did.
            times: TaskTimes {
                pull_started_at: Some(r.created_at),
                pull_stopped_at: Some(r.created_at),
                started_at: Some(r.created_at),
                stopped_at: r.exit.as_ref().map(|e| e.at),
            },
            log: None,
        }
    }

    fn list(&self, pool: &str) -> Vec<Task> {
        let mut state = self.lock();
        self.sync_from_disk(&mut state);
        let retention = state.retention;
        let now = Utc::now();
        let mut tasks = Vec::new();
        let mut expired = Vec::new();
        for (name, entry) in state.tasks.iter_mut() {
            if entry.record.pool != pool {
                continue;
            }
            let task_state = self.refresh(entry);
            if task_state == TaskState::Stopped {
                let since = entry.record.exit.as_ref().map_or(now, |e| e.at);
                let age = (now - since).to_std().unwrap_or_default();
                if entry.reported_stopped && age >= retention {
                    expired.push(name.clone());
                    continue;
                }
                entry.reported_stopped = true;
            }
            tasks.push(self.task_of(entry, task_state));
        }
        for name in expired {
            tracing::info!(runner_name = %name, "removing a stopped task's folder");
            let _ = std::fs::remove_dir_all(self.folder(&name));
            let _ = std::fs::remove_file(self.handoff_path(&name));
            state.tasks.remove(&name);
        }
        tasks.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        tasks
    }

    fn stop(&self, task_id: &str, reason: &str) {
        let Some(name) = task_id
            .strip_prefix(ID_PREFIX)
            .filter(|n| valid_runner_name(n))
        else {
            return;
        };
        let mut state = self.lock();
        let Some(entry) = self.adopt_one(&mut state, name) else {
            return;
        };
        if self.refresh(entry) == TaskState::Stopped {
            return;
        }
        self.request_stop(entry, reason);
    }

    fn list_handoffs(&self, pool: &str) -> Vec<Handoff> {
        let Ok(dir) = std::fs::read_dir(&self.work_root) else {
            return Vec::new();
        };
        let mut state = self.lock();
        let mut found = Vec::new();
        for file in dir.flatten() {
            let path = file.path();
            if path.extension().and_then(|e| e.to_str()) != Some(HANDOFF_EXTENSION)
                || !file.file_type().is_ok_and(|t| t.is_file())
            {
                continue;
            }
            let Some(runner_name) = path
                .file_stem()
                .and_then(|s| s.to_str())
                .filter(|n| valid_runner_name(n))
                .map(str::to_string)
            else {
                continue;
            };
            // A file whose task is unknown belongs to no live launch (a task's record is
            // written before its file): every pool's clean-up may take it.
            let owner = self
                .adopt_one(&mut state, &runner_name)
                .map(|e| e.record.pool.clone());
            if owner.as_deref().is_some_and(|p| p != pool) {
                continue;
            }
            let created_at = file
                .metadata()
                .and_then(|m| m.modified())
                .map(DateTime::<Utc>::from)
                .unwrap_or_else(|_| Utc::now());
            found.push(Handoff {
                name: path.display().to_string(),
                pool: pool.to_string(),
                runner_name,
                created_at,
            });
        }
        found.sort_by(|a, b| a.name.cmp(&b.name));
        found
    }

    fn delete_handoff(&self, name: &str) -> Result<(), BackendError> {
        let path = Path::new(name);
        let ours = path.parent() == Some(self.work_root.as_path())
            && path.extension().and_then(|e| e.to_str()) == Some(HANDOFF_EXTENSION)
            && path
                .file_stem()
                .and_then(|s| s.to_str())
                .is_some_and(valid_runner_name);
        if !ours {
            return Err(config_error(format_args!(
                "{name} is not a one-shot file of this backend (<work_root>/<runner name>.jit under {}); refusing to delete it",
                self.work_root.display()
            )));
        }
        match std::fs::remove_file(path) {
            Ok(()) => {
                tracing::info!(handoff = %name, "deleted a one-shot JIT file");
                Ok(())
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(fs_error("delete", path, &e)),
        }
    }
}

impl Backend for LocalBackend {
    fn kind(&self) -> &'static str {
        "local"
    }

    async fn launch(&self, request: LaunchRequest) -> Result<Task, BackendError> {
        self.inner.launch(request)
    }

    async fn list(&self, pool: &str) -> Result<Vec<Task>, BackendError> {
        Ok(self.inner.list(pool))
    }

    async fn stop(&self, task_id: &str, reason: &str) -> Result<(), BackendError> {
        self.inner.stop(task_id, reason);
        Ok(())
    }

    async fn list_handoffs(&self, pool: &str) -> Result<Vec<Handoff>, BackendError> {
        Ok(self.inner.list_handoffs(pool))
    }

    async fn delete_handoff(&self, name: &str) -> Result<(), BackendError> {
        self.inner.delete_handoff(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_stat_is_read_past_odd_command_names() {
        let line =
            "4242 (a) b (c)) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10";
        assert_eq!(
            parse_stat(line),
            Some(ProcStat {
                state: 'S',
                ppid: 1,
                pgid: 4242,
                start_time: 987654
            })
        );
        assert_eq!(parse_stat("4242 (cut"), None);
        let me = read_stat(std::process::id() as i32).unwrap();
        assert!(alive(std::process::id() as i32, Some(me.start_time)));
        assert!(
            !alive(std::process::id() as i32, Some(me.start_time + 1)),
            "another start time is another process"
        );
    }

    #[test]
    fn runner_names_must_be_safe_file_names() {
        for good in ["hangar-pool-1", "r.1_x", &"a".repeat(64)] {
            assert!(valid_runner_name(good), "{good}");
        }
        for bad in [
            "",
            ".",
            "..",
            ".hidden",
            "a/b",
            "../x",
            "a b",
            &"a".repeat(65),
        ] {
            assert!(!valid_runner_name(bad), "{bad}");
        }
    }

    #[test]
    fn exits_are_described_with_their_code_or_signal() {
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(describe_exit(ExitStatus::from_raw(0)), "exit status 0");
        assert_eq!(describe_exit(ExitStatus::from_raw(3 << 8)), "exit status 3");
        assert_eq!(
            describe_exit(ExitStatus::from_raw(9)),
            "killed by signal 9 (SIGKILL)"
        );
        let mut record = TaskRecord {
            id: "local-r".into(),
            pool: "p".into(),
            runner_name: "r".into(),
            runner_id: 1,
            created_at: Utc::now(),
            pid: Some(1),
            pid_started: None,
            stop: None,
            exit: None,
        };
        assert_eq!(stop_reason(&record), None);
        record.exit = Some(ExitRecord {
            at: Utc::now(),
            status: "exit status 0".into(),
        });
        assert_eq!(stop_reason(&record).as_deref(), Some("exit status 0"));
        record.stop = Some(StopRequest {
            at: Utc::now(),
            reason: truncate_reason(&format!("idle{}", "!".repeat(300))),
        });
        let reason = stop_reason(&record).unwrap();
        assert!(reason.starts_with("exit status 0 (stopped: idle!"));
        assert_eq!(record.stop.as_ref().unwrap().reason.chars().count(), 255);
    }

    #[test]
    fn the_agent_environment_is_built_from_nothing_and_the_backend_has_the_last_word() {
        let folder = Path::new("/w/r1");
        let handoff = Path::new("/w/r1.jit");
        let extras = vec![
            ("HANGAR_STANDIN_POLL_SECS".to_string(), "1".to_string()),
            (
                "GITHUB_API_URL".to_string(),
                "http://127.0.0.1:1".to_string(),
            ),
        ];
        let inherited = |k: &str| match k {
            "PATH" => Some("/usr/bin".to_string()),
            "GITHUB_PAT" => Some("ghp_secret".to_string()),
            _ => None,
        };
        let env = agent_env(
            &Scope::org("o").unwrap(),
            folder,
            handoff,
            "r1",
            &extras,
            &inherited,
            false,
        );
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("PATH"), Some("/usr/bin"));
        assert_eq!(get("HOME"), Some("/w/r1"), "no HOME: the runner folder");
        assert_eq!(get("RUNNER_HOME"), Some("/w/r1"));
        assert_eq!(get("RUNNER_NAME"), Some("r1"));
        assert_eq!(get(ENV_JIT_CONFIG_FILE), Some("/w/r1.jit"));
        assert_eq!(get("RUNNER_SCOPE"), Some("org"));
        assert_eq!(get("GITHUB_ORG"), Some("o"));
        assert_eq!(get("HANGAR_LOG_FORMAT"), Some("json"));
        assert_eq!(get("HANGAR_STANDIN_POLL_SECS"), Some("1"));
        assert_eq!(
            get("GITHUB_PAT"),
            None,
            "nothing is inherited but PATH and HOME"
        );
        assert_eq!(get("RUNNER_ALLOW_RUNASROOT"), None);
        assert!(
            env.iter()
                .all(|(k, _)| !crate::agent::env::is_forbidden(k) || k == ENV_JIT_CONFIG_FILE),
            "{env:?}"
        );
        let repo = agent_env(
            &Scope::repo("o/r").unwrap(),
            folder,
            handoff,
            "r1",
            &[],
            &|_| None,
            true,
        );
        assert!(repo.contains(&("GITHUB_REPOSITORY".to_string(), "o/r".to_string())));
        assert!(repo.contains(&("RUNNER_ALLOW_RUNASROOT".to_string(), "1".to_string())));
    }

    #[test]
    fn extras_that_are_credentials_or_the_backends_own_are_refused() {
        let one = |k: &str| check_extras(&[(k.to_string(), "x".to_string())]);
        assert!(one("HANGAR_STANDIN_POLL_SECS").is_ok());
        for credential in [
            "GITHUB_PAT",
            "GITHUB_APP_PRIVATE_KEY",
            "AWS_SECRET_ACCESS_KEY",
            "RUNNER_JIT_CONFIG",
            "RUNNER_JIT_CONFIG_FILE",
            "HANGAR_SSM_PREFIX",
        ] {
            let err = one(credential).unwrap_err();
            assert!(
                matches!(&err, BackendError::Config(m) if m.contains("credential") && m.contains("remove it")),
                "{credential}: {err}"
            );
        }
        for reserved in RESERVED {
            assert!(
                one(reserved)
                    .unwrap_err()
                    .to_string()
                    .contains("sets for each runner")
            );
        }
        assert!(one("A=B").is_err());
    }

    #[test]
    fn a_launch_writes_its_one_shot_file_for_the_owner_only_and_once() {
        use std::os::unix::fs::PermissionsExt;
        let work_root = std::env::temp_dir().join(format!(
            "hangar-local-prepare-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        let backend = LocalBackend::new(
            Scope::repo("o/r").unwrap(),
            &LocalLaunch {
                hangar_binary: None,
                work_root: work_root.clone(),
                env: Default::default(),
            },
        )
        .unwrap();
        let record = TaskRecord {
            id: "local-r1".into(),
            pool: "p".into(),
            runner_name: "r1".into(),
            runner_id: 1,
            created_at: Utc::now(),
            pid: None,
            pid_started: None,
            stop: None,
            exit: None,
        };
        backend.inner.prepare(&record, "the-blob").unwrap();
        let handoff = work_root.join("r1.jit");
        assert_eq!(std::fs::read_to_string(&handoff).unwrap(), "the-blob");
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&handoff), 0o600);
        assert_eq!(mode(&work_root), 0o700);
        assert_eq!(
            std::fs::read_link(work_root.join("r1/bin/Runner.Listener")).unwrap(),
            backend.inner.binary
        );
        assert_eq!(read_record(&work_root.join("r1")), Some(record.clone()));
        assert!(
            !std::fs::read_to_string(work_root.join("r1/task.json"))
                .unwrap()
                .contains("the-blob")
        );
        assert!(
            backend.inner.prepare(&record, "again").is_err(),
            "a folder is never written twice"
        );
        let _ = std::fs::remove_dir_all(&work_root);
    }

    #[test]
    fn task_records_survive_a_round_trip_and_old_files_lacking_fields() {
        let dir = std::env::temp_dir().join(format!(
            "hangar-local-record-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let record = TaskRecord {
            id: "local-r".into(),
            pool: "p".into(),
            runner_name: "r".into(),
            runner_id: 7,
            created_at: Utc::now(),
            pid: Some(12),
            pid_started: Some(34),
            stop: None,
            exit: Some(ExitRecord {
                at: Utc::now(),
                status: "exit status 0".into(),
            }),
        };
        persist(&dir, &record).unwrap();
        assert_eq!(read_record(&dir), Some(record));
        std::fs::write(
            dir.join(TASK_FILE),
            r#"{"id":"local-r","pool":"p","runner_name":"r","runner_id":7,"created_at":"2026-01-01T00:00:00Z"}"#,
        )
        .unwrap();
        assert_eq!(read_record(&dir).unwrap().pid, None);
        std::fs::write(dir.join(TASK_FILE), "{").unwrap();
        assert_eq!(read_record(&dir), None);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
