//! Running one job the way the official runner's worker does, as far as a supervisor can see:
//! the job-started hook, each step as `bash --noprofile --norc -eo pipefail <script>` in its own
//! process group with the GITHUB_* environment, output streamed to the server as `log` events
//! and echoed to stdout, the job-completed hook (always), then `completed`. Cancellation (a
//! signal, or `cancel: true` in an event answer) walks the step's process group through SIGINT,
//! SIGTERM and SIGKILL with a grace between each, as the real runner does; a further signal
//! skips what remains of the grace.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::Command;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::api::{Api, JobSpec};
use crate::cli::Env;
use crate::config::RunnerSettings;
use crate::stamp;

/// Script run before each job (a failure fails the job).
pub const HOOK_STARTED: &str = "ACTIONS_RUNNER_HOOK_JOB_STARTED";
/// Script run after each job, whatever happened.
pub const HOOK_COMPLETED: &str = "ACTIONS_RUNNER_HOOK_JOB_COMPLETED";

/// Log pseudo-step of the started hook.
const STEP_SETUP: i64 = -1;
/// Log pseudo-step of the completed hook.
const STEP_COMPLETION: i64 = -2;
/// A log batch is sent when it holds this many lines...
const BATCH_LINES: usize = 50;
/// ...or when it is this old.
const BATCH_EVERY: Duration = Duration::from_millis(100);
/// After a step's main process exits, output still in flight is read for this long; beyond it,
/// what holds the pipes open is a leftover background process (cleaned up at job end).
const DRAIN: Duration = Duration::from_secs(2);

/// How a job ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Conclusion {
    Success,
    Failure,
    Cancelled,
}

impl Conclusion {
    /// The protocol's word.
    pub fn wire(self) -> &'static str {
        match self {
            Conclusion::Success => "success",
            Conclusion::Failure => "failure",
            Conclusion::Cancelled => "cancelled",
        }
    }

    /// The real runner's word in "Job X completed with result: ...".
    pub fn display(self) -> &'static str {
        match self {
            Conclusion::Success => "Succeeded",
            Conclusion::Failure => "Failed",
            Conclusion::Cancelled => "Canceled",
        }
    }
}

/// What the listener needs to know after a job.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JobOutcome {
    pub conclusion: Conclusion,
    /// The job was cancelled because the runner got SIGTERM/SIGINT: the runner must stop.
    pub by_signal: bool,
}

/// Cancellation requests for the running job, so a process can tell "cancel" from "cancel,
/// and hurry".
#[derive(Clone, Copy, Debug, Default)]
struct CancelState {
    /// SIGTERM/SIGINT received by the runner so far (any of them, even one that arrived just
    /// before the job started, cancels it: the runner is stopping).
    signals: u32,
    /// The server answered an event with `cancel: true`.
    server: bool,
}

impl CancelState {
    /// How many cancel requests there are: one is "cancel", two is "cancel, and hurry".
    fn level(&self) -> u32 {
        self.signals + u32::from(self.server)
    }
}

/// Everything a job needs from the listener.
pub struct JobRunner<'a> {
    pub api: &'a Api,
    pub credential: &'a str,
    pub root: &'a Path,
    pub settings: &'a RunnerSettings,
    pub env: &'a Env,
    /// Counts SIGTERM/SIGINT received by the runner.
    pub signals: watch::Receiver<u32>,
    /// Wait after SIGINT and again after SIGTERM before escalating.
    pub grace: Duration,
    pub renew_every: Duration,
}

/// Posts job events; an answer with `cancel: true` raises a cancel request.
#[derive(Clone)]
struct Events {
    api: Api,
    credential: String,
    job_id: u64,
    cancel: Arc<watch::Sender<CancelState>>,
}

impl Events {
    async fn post(&self, event: Value) {
        match self
            .api
            .post_event(&self.credential, self.job_id, &event)
            .await
        {
            Ok(true) => {
                self.cancel
                    .send_if_modified(|c| !std::mem::replace(&mut c.server, true));
            }
            Ok(false) => {}
            Err(e) => err_line!(
                "{}: Failed to report '{}' of job {}: {e}",
                stamp(),
                event["event"].as_str().unwrap_or("?"),
                self.job_id
            ),
        }
    }
}

/// How one child process ended.
struct ProcOutcome {
    /// Exit code, 128+signal when killed by a signal, 127 when it could not start.
    code: i32,
    /// We had to signal it.
    cancelled: bool,
    /// Its process group still held the output pipes open when we stopped reading.
    lingering: Option<Pid>,
}

/// The folders of one job.
struct Dirs {
    /// `<work>/<repo>`.
    repo_dir: PathBuf,
    /// `<work>/<repo>/<repo>`.
    workspace: PathBuf,
    /// `<work>/_temp`.
    temp: PathBuf,
}

/// The last path segment of `owner/repo`, made safe as a folder name.
fn repo_folder(repository: &str) -> String {
    let name = repository.rsplit('/').next().unwrap_or_default().trim();
    if name.is_empty() || name == "." || name == ".." {
        "workspace".to_string()
    } else {
        name.to_string()
    }
}

/// Empties a folder without removing it.
fn empty_dir(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
        let _ = if is_dir {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
    }
}

/// Reads lines (lossy UTF-8, without line endings) into `tx` until EOF or until nobody listens.
fn spawn_reader<R: AsyncRead + Unpin + Send + 'static>(r: R, tx: mpsc::UnboundedSender<String>) {
    tokio::spawn(async move {
        let mut r = BufReader::new(r);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match r.read_until(b'\n', &mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    while buf.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                        buf.pop();
                    }
                    if tx.send(String::from_utf8_lossy(&buf).into_owned()).is_err() {
                        break;
                    }
                }
            }
        }
    });
}

impl JobRunner<'_> {
    /// Runs `job` to its end and reports it; never fails (problems fail the job instead).
    pub async fn run(&self, job: &JobSpec) -> JobOutcome {
        // Signals already received count from the start, not from whenever the task below runs.
        let (cancel_tx, mut cancel_rx) = watch::channel(CancelState {
            signals: *self.signals.borrow(),
            server: false,
        });
        let cancel_tx = Arc::new(cancel_tx);
        let events = Events {
            api: self.api.clone(),
            credential: self.credential.to_string(),
            job_id: job.id,
            cancel: cancel_tx.clone(),
        };

        // Each SIGTERM/SIGINT is one more cancel request.
        let forward = {
            let mut sig = self.signals.clone();
            let tx = cancel_tx.clone();
            tokio::spawn(async move {
                loop {
                    let n = *sig.borrow_and_update();
                    tx.send_if_modified(|c| n != std::mem::replace(&mut c.signals, n));
                    if sig.changed().await.is_err() {
                        break;
                    }
                }
            })
        };
        // Renewals keep the session (and the job) alive while we are busy.
        let renew = {
            let events = events.clone();
            let every = self.renew_every.max(Duration::from_millis(100));
            tokio::spawn(async move {
                let mut tick = tokio::time::interval_at(Instant::now() + every, every);
                loop {
                    tick.tick().await;
                    events.post(json!({"event": "renew"})).await;
                }
            })
        };

        out_line!("{}: Running job: {}", stamp(), job.name);
        events.post(json!({"event": "started"})).await;

        let work = self.root.join(&self.settings.work_folder);
        let repo = repo_folder(&job.repository);
        let dirs = Dirs {
            repo_dir: work.join(&repo),
            workspace: work.join(&repo).join(&repo),
            temp: work.join("_temp"),
        };
        let mut failed = false;
        let mut lingering = Vec::new();
        if let Err(e) = std::fs::create_dir_all(&dirs.workspace)
            .and_then(|_| std::fs::create_dir_all(&dirs.temp))
        {
            let line = format!(
                "##[error]Cannot create the job's folders under {}: {e}",
                work.display()
            );
            self.echo(job, STEP_SETUP, &line);
            events
                .post(json!({"event": "log", "step": STEP_SETUP, "lines": [line]}))
                .await;
            failed = true;
        }
        empty_dir(&dirs.temp);
        let github_env = self.github_env(job, &dirs);

        if !failed && let Some(hook) = self.hook(HOOK_STARTED) {
            let cmd = self.command(
                "bash",
                [OsString::from("-e"), hook.into()],
                &dirs,
                &github_env,
            );
            let out = self
                .run_process(cmd, job, STEP_SETUP, 0, &mut cancel_rx, &events)
                .await;
            lingering.extend(out.lingering);
            if out.code != 0 && !out.cancelled {
                failed = true;
            }
        }

        for (i, step) in job.steps.iter().enumerate() {
            let i = i as i64;
            if failed || cancel_rx.borrow().level() > 0 {
                events
                    .post(json!({"event": "step_completed", "step": i, "conclusion": "skipped"}))
                    .await;
                continue;
            }
            events
                .post(json!({"event": "step_started", "step": i}))
                .await;
            let script = dirs.temp.join(format!("step-{}-{i}.sh", job.id));
            let out = match std::fs::write(&script, &step.run) {
                Ok(()) => {
                    let cmd = self.command(
                        "bash",
                        [
                            OsString::from("--noprofile"),
                            "--norc".into(),
                            "-eo".into(),
                            "pipefail".into(),
                            script.into(),
                        ],
                        &dirs,
                        &github_env,
                    );
                    self.run_process(cmd, job, i, 0, &mut cancel_rx, &events)
                        .await
                }
                Err(e) => {
                    let line = format!("##[error]Cannot write the step's script: {e}");
                    self.echo(job, i, &line);
                    events
                        .post(json!({"event": "log", "step": i, "lines": [line]}))
                        .await;
                    ProcOutcome {
                        code: 1,
                        cancelled: false,
                        lingering: None,
                    }
                }
            };
            lingering.extend(out.lingering);
            let conclusion = if out.cancelled || cancel_rx.borrow().level() > 0 {
                "cancelled"
            } else if out.code == 0 {
                "success"
            } else {
                failed = true;
                "failure"
            };
            events
                .post(json!({"event": "step_completed", "step": i, "exit_code": out.code, "conclusion": conclusion}))
                .await;
        }

        // The completed hook runs whatever happened; only a cancel request arriving while it
        // runs stops it.
        if let Some(hook) = self.hook(HOOK_COMPLETED) {
            let base = cancel_rx.borrow().level();
            let cmd = self.command(
                "bash",
                [OsString::from("-e"), hook.into()],
                &dirs,
                &github_env,
            );
            let out = self
                .run_process(cmd, job, STEP_COMPLETION, base, &mut cancel_rx, &events)
                .await;
            lingering.extend(out.lingering);
            if out.code != 0 && !out.cancelled {
                failed = true;
            }
        }

        let state = *cancel_rx.borrow();
        let conclusion = if state.level() > 0 {
            Conclusion::Cancelled
        } else if failed {
            Conclusion::Failure
        } else {
            Conclusion::Success
        };
        // Like the real runner, leftover background processes of the job do not survive it.
        if !lingering.is_empty() {
            out_line!("{}: Cleaning up orphan processes", stamp());
        }
        for pgid in lingering {
            let _ = killpg(pgid, Signal::SIGKILL);
        }
        // _temp is emptied before the job is reported done, so whoever sees it done sees it clean.
        empty_dir(&dirs.temp);
        events
            .post(json!({"event": "completed", "conclusion": conclusion.wire()}))
            .await;
        renew.abort();
        forward.abort();
        out_line!(
            "{}: Job {} completed with result: {}",
            stamp(),
            job.name,
            conclusion.display()
        );
        JobOutcome {
            conclusion,
            by_signal: state.signals > 0,
        }
    }

    /// A hook script named by `var`, if set and non-empty.
    fn hook(&self, var: &str) -> Option<String> {
        self.env.get(var).filter(|v| !v.trim().is_empty())
    }

    /// The variables a step (or hook) gets on top of the runner's environment.
    fn github_env(&self, job: &JobSpec, dirs: &Dirs) -> Vec<(String, String)> {
        let owner = job.repository.split('/').next().unwrap_or_default();
        [
            ("CI", "true".to_string()),
            ("GITHUB_ACTIONS", "true".to_string()),
            ("GITHUB_WORKSPACE", dirs.workspace.display().to_string()),
            ("GITHUB_REPOSITORY", job.repository.clone()),
            ("GITHUB_REPOSITORY_OWNER", owner.to_string()),
            ("GITHUB_RUN_ID", job.run_id.to_string()),
            ("GITHUB_JOB", job.name.clone()),
            ("GITHUB_WORKFLOW", job.workflow.clone()),
            ("RUNNER_NAME", self.settings.agent_name.clone()),
            ("RUNNER_OS", "Linux".to_string()),
            ("RUNNER_ARCH", "X64".to_string()),
            ("RUNNER_TEMP", dirs.temp.display().to_string()),
            ("RUNNER_WORKSPACE", dirs.repo_dir.display().to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    /// A child in its own process group (so cancellation reaches everything it starts), in the
    /// workspace, with the runner's environment minus `ACTIONS_RUNNER_INPUT_*`.
    fn command(
        &self,
        program: &str,
        args: impl IntoIterator<Item = OsString>,
        dirs: &Dirs,
        github_env: &[(String, String)],
    ) -> Command {
        let mut cmd = Command::new(program);
        cmd.args(args)
            .current_dir(&dirs.workspace)
            .env_clear()
            .envs(self.env.for_children())
            .envs(github_env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        cmd
    }

    /// Echoes one output line to stdout, where the supervisor logs it.
    fn echo(&self, job: &JobSpec, step: i64, line: &str) {
        let which = match step {
            STEP_SETUP => "started-hook".to_string(),
            STEP_COMPLETION => "completed-hook".to_string(),
            i => format!("step {i}"),
        };
        out_line!("[{} {which}] {line}", job.name);
    }

    /// Runs a child to its end, streaming its output as `log` events of `step`. It is
    /// cancelled when the cancel level rises above `base`: SIGINT, then SIGTERM, then SIGKILL,
    /// each after the grace; straight to SIGKILL once the level reaches two requests.
    async fn run_process(
        &self,
        mut cmd: Command,
        job: &JobSpec,
        step: i64,
        base: u32,
        cancel: &mut watch::Receiver<CancelState>,
        events: &Events,
    ) -> ProcOutcome {
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                let line = format!("##[error]Cannot start the process: {e}");
                self.echo(job, step, &line);
                events
                    .post(json!({"event": "log", "step": step, "lines": [line]}))
                    .await;
                return ProcOutcome {
                    code: 127,
                    cancelled: false,
                    lingering: None,
                };
            }
        };
        let pgid = child.id().map(|p| Pid::from_raw(p as i32));
        let (tx, mut rx) = mpsc::unbounded_channel();
        if let Some(out) = child.stdout.take() {
            spawn_reader(out, tx.clone());
        }
        if let Some(err) = child.stderr.take() {
            spawn_reader(err, tx.clone());
        }
        drop(tx);

        let signal = |sig: Signal| {
            if let Some(p) = pgid {
                let _ = killpg(p, sig);
            }
        };
        // 0 nothing sent, 1 SIGINT, 2 SIGTERM, 3 SIGKILL.
        let mut stage = 0u8;
        let mut next_at: Option<Instant> = None;
        let escalate_on_request = |stage: &mut u8, next_at: &mut Option<Instant>, level: u32| {
            if level <= base {
                return;
            }
            if level >= 2 && *stage < 3 {
                signal(Signal::SIGKILL);
                *stage = 3;
                *next_at = None;
            } else if *stage == 0 {
                signal(Signal::SIGINT);
                *stage = 1;
                *next_at = Some(Instant::now() + self.grace);
            }
        };
        // A request that came before the process started counts too.
        let level = cancel.borrow_and_update().level();
        escalate_on_request(&mut stage, &mut next_at, level);

        let far = || Instant::now() + Duration::from_secs(86_400);
        let mut tick = tokio::time::interval(BATCH_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut batch: Vec<String> = Vec::new();
        let mut status = None;
        let mut drain_until: Option<Instant> = None;
        let mut open = true;
        let mut cancel_alive = true;
        let mut lingering = None;
        while status.is_none() || open {
            tokio::select! {
                line = rx.recv(), if open => match line {
                    Some(line) => {
                        self.echo(job, step, &line);
                        batch.push(line);
                        if batch.len() >= BATCH_LINES {
                            let lines = std::mem::take(&mut batch);
                            events.post(json!({"event": "log", "step": step, "lines": lines})).await;
                        }
                    }
                    None => open = false,
                },
                st = child.wait(), if status.is_none() => {
                    status = Some(st);
                    drain_until = Some(Instant::now() + DRAIN);
                }
                _ = tick.tick() => {
                    if !batch.is_empty() {
                        let lines = std::mem::take(&mut batch);
                        events.post(json!({"event": "log", "step": step, "lines": lines})).await;
                    }
                }
                changed = cancel.changed(), if status.is_none() && cancel_alive => {
                    if changed.is_err() {
                        cancel_alive = false;
                    } else {
                        let level = cancel.borrow_and_update().level();
                        escalate_on_request(&mut stage, &mut next_at, level);
                    }
                }
                _ = tokio::time::sleep_until(next_at.unwrap_or_else(far)), if next_at.is_some() && status.is_none() => {
                    if stage == 1 {
                        signal(Signal::SIGTERM);
                        stage = 2;
                        next_at = Some(Instant::now() + self.grace);
                    } else {
                        signal(Signal::SIGKILL);
                        stage = 3;
                        next_at = None;
                    }
                }
                _ = tokio::time::sleep_until(drain_until.unwrap_or_else(far)), if drain_until.is_some() && open => {
                    lingering = pgid;
                    break;
                }
            }
        }
        if !batch.is_empty() {
            events
                .post(json!({"event": "log", "step": step, "lines": batch}))
                .await;
        }
        let code = match status {
            Some(Ok(st)) => {
                use std::os::unix::process::ExitStatusExt;
                st.code().unwrap_or_else(|| 128 + st.signal().unwrap_or(0))
            }
            _ => 1,
        };
        ProcOutcome {
            code,
            cancelled: stage > 0,
            lingering,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_folders() {
        assert_eq!(repo_folder("octo/hello"), "hello");
        assert_eq!(repo_folder("hello"), "hello");
        assert_eq!(repo_folder("octo/.."), "workspace");
        assert_eq!(repo_folder(""), "workspace");
    }

    #[test]
    fn conclusions() {
        assert_eq!(Conclusion::Cancelled.wire(), "cancelled");
        assert_eq!(Conclusion::Cancelled.display(), "Canceled");
        assert_eq!(Conclusion::Failure.display(), "Failed");
        assert_eq!(Conclusion::Success.display(), "Succeeded");
    }

    #[test]
    fn emptying_keeps_the_folder() {
        let dir = std::env::temp_dir().join(format!("standin-empty-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("a/b")).unwrap();
        std::fs::write(dir.join("f"), "x").unwrap();
        empty_dir(&dir);
        assert!(dir.is_dir());
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
