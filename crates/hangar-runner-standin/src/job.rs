//! Running one job the way the official runner's worker does, as far as a supervisor can see:
//! the job-started hook, each step as `bash --noprofile --norc -eo pipefail <script>` in its own
//! process group with the GITHUB_* environment, output streamed to the server as `log` events
//! and echoed to stdout, the job-completed hook (always), then `completed`. Cancellation (a
//! signal, or `cancel: true` in an event answer) walks the step's process group through SIGINT,
//! SIGTERM and SIGKILL with a grace between each, as the real runner does; a further signal
//! skips what remains of the grace.
//!
//! A job with a job container (`container:`) needs Docker, as on the real runner: after the
//! started hook, the stand-in finds `docker` on the `PATH` it was given and runs `docker version
//! --format '{{.Server.APIVersion}}'` (the real runner's first Docker call), its output in the
//! job's set-up log. `docker` missing or failing fails the job (its steps skipped, the completed
//! hook still run); otherwise the steps run as for any job. **The stand-in never runs a
//! container**: the image is not pulled and the steps run on the runner itself.

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

    /// A `log` event of `step`.
    async fn log(&self, step: i64, lines: Vec<String>) {
        self.post(json!({"event": "log", "step": step, "lines": lines}))
            .await;
    }
}

/// How one child process ended.
struct ProcOutcome {
    /// Exit code, 128+signal when killed by a signal, 127 when it could not start.
    code: i32,
    /// We had to signal it.
    cancelled: bool,
}

impl ProcOutcome {
    /// It exited non-zero on its own.
    fn failed(&self) -> bool {
        self.code != 0 && !self.cancelled
    }
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

/// Sleeps until `at`; never wakes for `None`.
async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Where the cancellation of one process group stands: SIGINT, then SIGTERM, then SIGKILL,
/// each after the grace.
struct Escalation {
    pgid: Option<Pid>,
    grace: Duration,
    /// The last signal sent, if any.
    sent: Option<Signal>,
    /// When the next signal is due.
    next_at: Option<Instant>,
}

impl Escalation {
    fn send(&mut self, sig: Signal) {
        if let Some(p) = self.pgid {
            let _ = killpg(p, sig);
        }
        self.sent = Some(sig);
        self.next_at = (sig != Signal::SIGKILL).then(|| Instant::now() + self.grace);
    }

    /// The grace ran out: the next signal.
    fn escalate(&mut self) {
        if self.sent == Some(Signal::SIGINT) {
            self.send(Signal::SIGTERM);
        } else {
            self.send(Signal::SIGKILL);
        }
    }

    /// The cancel level is now `level`; only requests above `base` count. The first starts the
    /// walk; two or more requests go straight to SIGKILL.
    fn request(&mut self, level: u32, base: u32) {
        if level <= base {
            return;
        }
        if level >= 2 && self.sent != Some(Signal::SIGKILL) {
            self.send(Signal::SIGKILL);
        } else if self.sent.is_none() {
            self.send(Signal::SIGINT);
        }
    }
}

impl JobRunner<'_> {
    /// Runs `job` to its end and reports it; never fails (problems fail the job instead).
    pub async fn run(&self, job: &JobSpec) -> Conclusion {
        // Signals already received count from the start, not from whenever the task below runs.
        let (cancel_tx, cancel_rx) = watch::channel(CancelState {
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
        let repo_dir = work.join(&repo);
        let dirs = Dirs {
            workspace: repo_dir.join(&repo),
            repo_dir,
            temp: work.join("_temp"),
        };
        let mut run = JobRun {
            runner: self,
            job,
            github_env: self.github_env(job, &dirs),
            dirs,
            events,
            cancel: cancel_rx,
            lingering: Vec::new(),
        };
        let conclusion = run.execute(&work).await;

        // Like the real runner, leftover background processes of the job do not survive it.
        if !run.lingering.is_empty() {
            out_line!("{}: Cleaning up orphan processes", stamp());
        }
        for pgid in &run.lingering {
            let _ = killpg(*pgid, Signal::SIGKILL);
        }
        // _temp is emptied before the job is reported done, so whoever sees it done sees it clean.
        empty_dir(&run.dirs.temp);
        run.events
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
        conclusion
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
}

/// One job while it runs.
struct JobRun<'a> {
    runner: &'a JobRunner<'a>,
    job: &'a JobSpec,
    dirs: Dirs,
    github_env: Vec<(String, String)>,
    events: Events,
    cancel: watch::Receiver<CancelState>,
    /// Process groups that still held output pipes open when their process was done.
    lingering: Vec<Pid>,
}

impl JobRun<'_> {
    /// The started hook, the steps and the completed hook; the job's conclusion.
    async fn execute(&mut self, work: &Path) -> Conclusion {
        let mut failed = false;
        if let Err(e) = std::fs::create_dir_all(&self.dirs.workspace)
            .and_then(|_| std::fs::create_dir_all(&self.dirs.temp))
        {
            self.report(
                STEP_SETUP,
                format!(
                    "##[error]Cannot create the job's folders under {}: {e}",
                    work.display()
                ),
            )
            .await;
            failed = true;
        }
        empty_dir(&self.dirs.temp);

        if !failed && self.run_hook(HOOK_STARTED, STEP_SETUP, 0).await {
            failed = true;
        }
        if !failed
            && let Some(container) = &self.job.container
            && !self.initialize_container(&container.image).await
        {
            failed = true;
        }

        for (i, step) in self.job.steps.iter().enumerate() {
            let i = i as i64;
            if failed || self.cancel.borrow().level() > 0 {
                self.events
                    .post(json!({"event": "step_completed", "step": i, "conclusion": "skipped"}))
                    .await;
                continue;
            }
            self.events
                .post(json!({"event": "step_started", "step": i}))
                .await;
            let script = self.dirs.temp.join(format!("step-{}-{i}.sh", self.job.id));
            let out = match std::fs::write(&script, &step.run) {
                Ok(()) => {
                    let cmd = self.bash([
                        OsString::from("--noprofile"),
                        "--norc".into(),
                        "-eo".into(),
                        "pipefail".into(),
                        script.into(),
                    ]);
                    self.run_process(cmd, i, 0).await
                }
                Err(e) => {
                    self.report(i, format!("##[error]Cannot write the step's script: {e}"))
                        .await;
                    ProcOutcome {
                        code: 1,
                        cancelled: false,
                    }
                }
            };
            let conclusion = if out.cancelled || self.cancel.borrow().level() > 0 {
                "cancelled"
            } else if out.code == 0 {
                "success"
            } else {
                failed = true;
                "failure"
            };
            self.events
                .post(json!({"event": "step_completed", "step": i, "exit_code": out.code, "conclusion": conclusion}))
                .await;
        }

        // The completed hook runs whatever happened; only a cancel request arriving while it
        // runs stops it.
        let base = self.cancel.borrow().level();
        if self.run_hook(HOOK_COMPLETED, STEP_COMPLETION, base).await {
            failed = true;
        }

        if self.cancel.borrow().level() > 0 {
            Conclusion::Cancelled
        } else if failed {
            Conclusion::Failure
        } else {
            Conclusion::Success
        }
    }

    /// Runs the hook script named by `var` (if any) as log pseudo-step `step`, cancelled by
    /// requests above `base`; whether it failed.
    async fn run_hook(&mut self, var: &str, step: i64, base: u32) -> bool {
        let Some(hook) = self.runner.hook(var) else {
            return false;
        };
        let cmd = self.bash([OsString::from("-e"), hook.into()]);
        self.run_process(cmd, step, base).await.failed()
    }

    /// What the real runner does first for a job container: `docker version` with the `docker`
    /// found on the runner's `PATH`. Whether Docker answered (the stand-in runs no container).
    async fn initialize_container(&mut self, image: &str) -> bool {
        self.report(STEP_SETUP, format!("Initialize containers (image {image})"))
            .await;
        let path = self.runner.env.get("PATH").unwrap_or_default();
        let Some(docker) = which("docker", &path) else {
            self.report(STEP_SETUP, "##[error]File not found: 'docker'".to_string())
                .await;
            return false;
        };
        let args = ["version", "--format", "{{.Server.APIVersion}}"];
        self.report(
            STEP_SETUP,
            format!(
                "##[command]{} version --format '{}'",
                docker.display(),
                args[2]
            ),
        )
        .await;
        let cmd = self.child(docker.as_os_str(), args.iter().map(OsString::from));
        let out = self.run_process(cmd, STEP_SETUP, 0).await;
        if out.code != 0 {
            self.report(
                STEP_SETUP,
                format!(
                    "##[error]Exit code {} returned from process: file name '{}', arguments 'version --format '{}''.",
                    out.code,
                    docker.display(),
                    args[2]
                ),
            )
            .await;
            return false;
        }
        self.report(
            STEP_SETUP,
            "The stand-in runner does not run containers: the steps run on the runner".to_string(),
        )
        .await;
        true
    }

    /// `bash args...` (see [`Self::child`]).
    fn bash(&self, args: impl IntoIterator<Item = OsString>) -> Command {
        self.child(std::ffi::OsStr::new("bash"), args)
    }

    /// `program args...` in its own process group (so cancellation reaches everything it
    /// starts), in the workspace, with the runner's environment minus `ACTIONS_RUNNER_INPUT_*`.
    fn child(
        &self,
        program: &std::ffi::OsStr,
        args: impl IntoIterator<Item = OsString>,
    ) -> Command {
        let mut cmd = Command::new(program);
        cmd.args(args)
            .current_dir(&self.dirs.workspace)
            .env_clear()
            .envs(self.runner.env.for_children())
            .envs(self.github_env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        cmd
    }

    /// Echoes one output line to stdout, where the supervisor logs it.
    fn echo(&self, step: i64, line: &str) {
        let which = match step {
            STEP_SETUP => "started-hook".to_string(),
            STEP_COMPLETION => "completed-hook".to_string(),
            i => format!("step {i}"),
        };
        out_line!("[{} {which}] {line}", self.job.name);
    }

    /// A line of the runner's own (an error) as output of `step`: echoed and logged.
    async fn report(&self, step: i64, line: String) {
        self.echo(step, &line);
        self.events.log(step, vec![line]).await;
    }

    /// Runs a child to its end, streaming its output as `log` events of `step`. It is
    /// cancelled when the cancel level rises above `base` (see [`Escalation`]).
    async fn run_process(&mut self, mut cmd: Command, step: i64, base: u32) -> ProcOutcome {
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                self.report(step, format!("##[error]Cannot start the process: {e}"))
                    .await;
                return ProcOutcome {
                    code: 127,
                    cancelled: false,
                };
            }
        };
        let pgid = child.id().map(|p| Pid::from_raw(p as i32));
        let (tx, mut rx) = mpsc::unbounded_channel();
        if let Some(out) = child.stdout.take() {
            spawn_reader(out, tx.clone());
        }
        if let Some(err) = child.stderr.take() {
            spawn_reader(err, tx);
        }

        let mut esc = Escalation {
            pgid,
            grace: self.runner.grace,
            sent: None,
            next_at: None,
        };
        // A request that came before the process started counts too.
        esc.request(self.cancel.borrow_and_update().level(), base);

        let mut batch: Vec<String> = Vec::new();
        // When the oldest line of the batch is due to be sent.
        let mut flush_at: Option<Instant> = None;
        let mut status = None;
        let mut drain_until: Option<Instant> = None;
        let mut open = true;
        let mut cancel_alive = true;
        while status.is_none() || open {
            tokio::select! {
                line = rx.recv(), if open => match line {
                    Some(line) => {
                        self.echo(step, &line);
                        batch.push(line);
                        flush_at.get_or_insert_with(|| Instant::now() + BATCH_EVERY);
                        if batch.len() >= BATCH_LINES {
                            flush_at = None;
                            self.events.log(step, std::mem::take(&mut batch)).await;
                        }
                    }
                    None => open = false,
                },
                st = child.wait(), if status.is_none() => {
                    status = Some(st);
                    drain_until = Some(Instant::now() + DRAIN);
                }
                _ = sleep_until_some(flush_at) => {
                    flush_at = None;
                    self.events.log(step, std::mem::take(&mut batch)).await;
                }
                changed = self.cancel.changed(), if status.is_none() && cancel_alive => {
                    if changed.is_err() {
                        cancel_alive = false;
                    } else {
                        esc.request(self.cancel.borrow_and_update().level(), base);
                    }
                }
                _ = sleep_until_some(esc.next_at), if status.is_none() => esc.escalate(),
                _ = sleep_until_some(drain_until), if open => {
                    self.lingering.extend(pgid);
                    break;
                }
            }
        }
        if !batch.is_empty() {
            self.events.log(step, batch).await;
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
            cancelled: esc.sent.is_some(),
        }
    }
}

/// The first executable file named `name` in the folders of `path` (a `PATH` value), as the
/// real runner resolves the tools it runs.
fn which(name: &str, path: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    path.split(':')
        .filter(|d| !d.is_empty())
        .map(|d| Path::new(d).join(name))
        .find(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn which_finds_the_first_executable_on_the_path() {
        use std::os::unix::fs::PermissionsExt;
        let base = std::env::temp_dir().join(format!("standin-which-{}", std::process::id()));
        let (a, b) = (base.join("a"), base.join("b"));
        std::fs::create_dir_all(&a).unwrap();
        std::fs::create_dir_all(&b).unwrap();
        std::fs::write(a.join("docker"), "not executable").unwrap();
        std::fs::write(b.join("docker"), "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(b.join("docker"), std::fs::Permissions::from_mode(0o755)).unwrap();
        let path = format!("{}::{}", a.display(), b.display());
        assert_eq!(which("docker", &path), Some(b.join("docker")));
        assert_eq!(which("docker", &a.display().to_string()), None);
        assert_eq!(which("docker", ""), None);
        std::fs::remove_dir_all(&base).unwrap();
    }

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
