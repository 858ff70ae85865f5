//! Helpers for running the stand-in binary against a `hangar_emulator::Emulator`: a temporary
//! runner root, registration/remove/JIT tokens from the emulator's REST API, a runner process
//! whose stdout lines are collected so tests can wait for "Listening for Jobs" and the like, and
//! a timeout wrapper so a hang fails the test instead of stalling the suite.

#![allow(dead_code)]

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use hangar_emulator::{
    Conclusion, Emulator, JobSpec, JobView, SEED_ORG, SEED_PAT, SEED_REPO, Scope, World,
};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub const BIN: &str = env!("CARGO_BIN_EXE_hangar-runner-standin");

/// Fails the test if `fut` takes longer than 90 s.
pub async fn within<F: Future>(fut: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(90), fut)
        .await
        .expect("test timed out")
}

pub async fn seed() -> Emulator {
    Emulator::start(World::seed()).await.expect("emulator")
}

pub fn repo_scope() -> Scope {
    Scope::repo(SEED_ORG, SEED_REPO)
}

pub fn repo_full() -> String {
    format!("{SEED_ORG}/{SEED_REPO}")
}

/// `--url` for the seed repository.
pub fn repo_url(emu: &Emulator) -> String {
    format!("{}/{SEED_ORG}/{SEED_REPO}", emu.web_url())
}

async fn rest(emu: &Emulator, path: &str, body: Value) -> Value {
    let resp = reqwest::Client::builder()
        .user_agent("hangar-runner-standin-tests")
        .build()
        .unwrap()
        .post(format!("{}{path}", emu.api_url()))
        .header("Authorization", format!("token {SEED_PAT}"))
        .json(&body)
        .send()
        .await
        .expect("REST call");
    assert!(resp.status().is_success(), "{path}: {}", resp.status());
    resp.json().await.expect("JSON")
}

/// A `kind` token (`registration-token` or `remove-token`) for the seed repository.
async fn runner_token(emu: &Emulator, kind: &str) -> String {
    let v = rest(
        emu,
        &format!("/repos/{SEED_ORG}/{SEED_REPO}/actions/runners/{kind}"),
        json!({}),
    )
    .await;
    v["token"].as_str().expect("token").to_string()
}

/// A registration token for the seed repository.
pub async fn registration_token(emu: &Emulator) -> String {
    runner_token(emu, "registration-token").await
}

/// A remove token for the seed repository.
pub async fn remove_token(emu: &Emulator) -> String {
    runner_token(emu, "remove-token").await
}

/// The arguments of `configure --unattended --url <url> --token <token> --name <name>`, then `extra`.
pub fn configure_args<'a>(
    url: &'a str,
    token: &'a str,
    name: &'a str,
    extra: &[&'a str],
) -> Vec<&'a str> {
    let mut args = vec![
        "configure",
        "--unattended",
        "--url",
        url,
        "--token",
        token,
        "--name",
        name,
    ];
    args.extend_from_slice(extra);
    args
}

/// A JIT config for a new runner `name` of the seed repository: (runner id, encoded config).
pub async fn jit_config(emu: &Emulator, name: &str, labels: &[&str]) -> (u64, String) {
    let v = rest(
        emu,
        &format!("/repos/{SEED_ORG}/{SEED_REPO}/actions/runners/generate-jitconfig"),
        json!({"name": name, "runner_group_id": 1, "labels": labels}),
    )
    .await;
    (
        v["runner"]["id"].as_u64().expect("runner id"),
        v["encoded_jit_config"]
            .as_str()
            .expect("config")
            .to_string(),
    )
}

/// The id of the seed repository's runner `name`.
pub fn runner_id(emu: &Emulator, name: &str) -> u64 {
    emu.runners(&repo_scope())
        .into_iter()
        .find(|r| r.name == name)
        .map(|r| r.id)
        .unwrap_or_else(|| panic!("no runner named {name}"))
}

/// Waits for a job to complete.
pub async fn finished(emu: &Emulator, id: u64) -> JobView {
    emu.wait_for_job(id, Duration::from_secs(60))
        .await
        .unwrap_or_else(|| panic!("job {id} did not complete: {:?}", emu.job(id)))
}

/// A job of the seed repository named `name` with one step `s` that runs `script`.
pub fn one_step(name: &str, script: &str) -> JobSpec {
    JobSpec::new(&repo_full(), name).step("s", script)
}

/// Enqueues `spec` and waits for the job to complete.
pub async fn run_job(emu: &Emulator, spec: JobSpec) -> JobView {
    let id = emu.enqueue_job(spec);
    finished(emu, id).await
}

/// Runs `spec` (see [`run_job`]) and asserts that the job succeeded.
pub async fn assert_succeeds(emu: &Emulator, spec: JobSpec) {
    let view = run_job(emu, spec).await;
    assert_eq!(view.conclusion, Some(Conclusion::Success), "{view:?}");
}

/// The log lines of `step` of a job.
pub fn log_of(job: &JobView, step: i64) -> Vec<String> {
    job.log
        .iter()
        .filter(|l| l.step == step)
        .map(|l| l.text.clone())
        .collect()
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A runner root in the temp folder, removed on drop; `env` is what every process of this
/// runner gets on top of a cleaned-up copy of the test's environment.
pub struct Root {
    pub dir: PathBuf,
    pub env: Vec<(String, String)>,
}

impl Drop for Root {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The output of a finished command.
#[derive(Debug)]
pub struct Output {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    /// Asserts that the command was refused: exit code 1 and `needle` on stderr.
    pub fn assert_refused(&self, needle: &str) {
        assert_eq!(self.code, 1, "{self:?}");
        assert!(self.stderr.contains(needle), "{self:?}");
    }
}

impl Root {
    pub fn new(tag: &str) -> Root {
        let dir = std::env::temp_dir().join(format!(
            "standin-it-{}-{}-{tag}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Root {
            env: vec![
                ("HANGAR_STANDIN_ROOT".into(), dir.display().to_string()),
                ("RUNNER_ALLOW_RUNASROOT".into(), "1".into()),
                ("HANGAR_STANDIN_POLL_SECS".into(), "2".into()),
                ("HANGAR_STANDIN_RETRY_SECS".into(), "2".into()),
                ("HANGAR_STANDIN_CANCEL_GRACE_MS".into(), "500".into()),
            ],
            dir,
        }
    }

    pub fn path(&self, p: &str) -> PathBuf {
        self.dir.join(p)
    }

    /// The workspace of a job of the seed repository.
    pub fn workspace(&self) -> PathBuf {
        self.path(&format!("_work/{0}/{0}", hangar_emulator::SEED_REPO))
    }

    /// Sets (or replaces) a variable for every later process.
    pub fn set(&mut self, k: &str, v: impl Into<String>) {
        self.env.retain(|(key, _)| key != k);
        self.env.push((k.into(), v.into()));
    }

    /// Removes a variable for every later process.
    pub fn unset(&mut self, k: &str) {
        self.env.retain(|(key, _)| key != k);
    }

    pub fn command(&self, args: &[&str]) -> Command {
        self.command_at(Path::new(BIN), args)
    }

    /// A command of this runner through `program` (e.g. a `bin/Runner.Listener` symlink).
    pub fn command_at(&self, program: &Path, args: &[&str]) -> Command {
        let mut cmd = Command::new(program);
        cmd.args(args);
        // The test's own environment must not leak runner inputs or the root override in.
        for (k, _) in std::env::vars_os() {
            let k = k.to_string_lossy();
            if k.starts_with("ACTIONS_RUNNER_")
                || k.starts_with("HANGAR_STANDIN_")
                || k == "RUNNER_ALLOW_RUNASROOT"
            {
                cmd.env_remove(k.as_ref());
            }
        }
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .kill_on_drop(true);
        cmd
    }

    /// Runs the stand-in to its end.
    pub async fn output(&self, args: &[&str]) -> Output {
        let out = self.command(args).output().await.expect("spawn");
        Output {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// `configure --unattended` for the seed repository; panics unless it succeeds.
    pub async fn configure(&self, emu: &Emulator, name: &str, extra: &[&str]) -> Output {
        let token = registration_token(emu).await;
        let url = repo_url(emu);
        let extra = [&["--labels", "hangar"][..], extra].concat();
        let out = self
            .output(&configure_args(&url, &token, name, &extra))
            .await;
        assert_eq!(out.code, 0, "configure failed: {out:?}");
        out
    }

    /// Starts `run` (plus `args`) and waits until it is listening for jobs.
    pub async fn listen(&self, args: &[&str]) -> Running {
        let run = self.spawn(args);
        run.wait_for("Listening for Jobs").await;
        run
    }

    /// [`Root::configure`] as `name` (plus `extra`), then [`Root::listen`] with `run_args`.
    pub async fn configure_and_listen(
        &self,
        emu: &Emulator,
        name: &str,
        extra: &[&str],
        run_args: &[&str],
    ) -> Running {
        self.configure(emu, name, extra).await;
        self.listen(run_args).await
    }

    /// Starts `run` (plus `args`) in the background.
    pub fn spawn(&self, args: &[&str]) -> Running {
        let mut full = vec!["run"];
        full.extend_from_slice(args);
        let mut child = self
            .command(&full)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn");
        let (lines, out_reader) = collect_lines(child.stdout.take().unwrap());
        let (stderr, err_reader) = collect_lines(child.stderr.take().unwrap());
        Running {
            child,
            lines,
            stderr,
            readers: vec![out_reader, err_reader],
        }
    }
}

/// Collects the lines of `pipe` until EOF.
fn collect_lines(
    pipe: impl AsyncRead + Unpin + Send + 'static,
) -> (watch::Receiver<Vec<String>>, JoinHandle<()>) {
    let (tx, rx) = watch::channel(Vec::new());
    let reader = tokio::spawn(async move {
        let mut r = BufReader::new(pipe).lines();
        while let Ok(Some(line)) = r.next_line().await {
            tx.send_modify(|lines| lines.push(line));
        }
    });
    (rx, reader)
}

/// A `run` process.
pub struct Running {
    pub child: Child,
    pub lines: watch::Receiver<Vec<String>>,
    pub stderr: watch::Receiver<Vec<String>>,
    /// The tasks that collect stdout and stderr.
    readers: Vec<JoinHandle<()>>,
}

impl Running {
    /// Waits (up to 30 s, and no longer than stdout is open) for a stdout line containing
    /// `needle`.
    pub async fn wait_for(&self, needle: &str) {
        let mut lines = self.lines.clone();
        let found = tokio::time::timeout(
            Duration::from_secs(30),
            lines.wait_for(|ls| ls.iter().any(|l| l.contains(needle))),
        )
        .await
        .is_ok_and(|seen| seen.is_ok());
        assert!(
            found,
            "no line with {needle:?}; stdout: {:?}; stderr: {:?}",
            self.lines.borrow(),
            self.stderr.borrow()
        );
    }

    pub fn stdout(&self) -> String {
        self.lines.borrow().join("\n")
    }

    pub fn stderr(&self) -> String {
        self.stderr.borrow().join("\n")
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        let pid = nix::unistd::Pid::from_raw(self.child.id().expect("running") as i32);
        nix::sys::signal::kill(pid, sig).expect("kill");
    }

    /// Sends SIGTERM and asserts that the runner exits with 0.
    pub async fn stop(&mut self) {
        self.signal(nix::sys::signal::Signal::SIGTERM);
        assert_eq!(self.exit_code().await, 0, "{}", self.stderr());
    }

    /// Waits (up to 40 s) for the exit code.
    pub async fn exit_code(&mut self) -> i32 {
        let status = tokio::time::timeout(Duration::from_secs(40), self.child.wait())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "runner did not exit; stdout: {}; stderr: {}",
                    self.stdout(),
                    self.stderr()
                )
            })
            .expect("wait");
        // The pipe readers catch the last lines (the pipes close with the process).
        for reader in self.readers.drain(..) {
            let _ = tokio::time::timeout(Duration::from_secs(5), reader).await;
        }
        status.code().unwrap_or(-1)
    }
}
