//! `hangar dev`: the whole runner loop on one machine with no cloud account. It starts the GitHub
//! emulator with the seed's world, checks both credential paths with `doctor`, then runs the
//! seed's two set-ups for real: a standalone runner for `your-organization/your-repository-name`
//! (PAT) and an organization runner for `your-organization` (GitHub App), each a `hangar agent`
//! process supervising the stand-in runner. It dispatches the sample workflow (checkout, build,
//! test) to each, shows progress and job logs live, prints each job's lifecycle table with
//! measured times, and serves until Ctrl-C, which deregisters both runners.
//!
//! Invariants: everything it talks to is on 127.0.0.1; the only credentials are the emulator's
//! published fixtures; the agents are child processes in their own process groups, so only this
//! command decides when they stop (one SIGTERM each).

mod timeline;

/// `println!` that ignores a closed stdout (`hangar dev | head`): the session must still stop
/// its agents and deregister their runners rather than panic.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock(), $($arg)*);
    }};
}

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::{DateTime, Utc};
use hangar_emulator::{
    Emulator, JobEvent, JobSpec, SEED_CLIENT_ID, SEED_ORG, SEED_PAT, SEED_REPO, World, keys,
};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::mpsc;

use self::timeline::{JobRecord, Pool};
use super::{Connection, CredentialEnv, doctor};
use crate::credentials::{ENV_CLIENT_ID, ENV_PAT, ENV_PRIVATE_KEY_FILE};
use crate::github::{GitHubConfig, Scope};

pub use timeline::percentile;

pub struct DevOptions {
    pub port: u16,
    /// Run this many jobs (alternating between the two runners), then stop; `None` runs the
    /// sample workflow once per runner and serves until Ctrl-C.
    pub exit_after_jobs: Option<usize>,
}

/// A file tree for the session (runner folders, the App key), removed on drop.
struct Workdir(PathBuf);

impl Workdir {
    fn create() -> std::io::Result<Workdir> {
        let dir = std::env::temp_dir().join(format!("hangar-dev-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        Ok(Workdir(dir))
    }

    fn key_file(&self) -> std::io::Result<PathBuf> {
        use std::os::unix::fs::PermissionsExt;
        let path = self.0.join("emulator-app-key.pem");
        std::fs::write(&path, keys::APP_PRIVATE_KEY_PKCS1)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
        Ok(path)
    }

    /// A runner folder whose `bin/Runner.Listener` is this binary (the stand-in runner).
    fn runner_home(&self, pool: Pool, exe: &Path) -> std::io::Result<PathBuf> {
        let home = self.0.join(pool.name());
        std::fs::create_dir_all(home.join("bin"))?;
        std::os::unix::fs::symlink(exe, home.join("bin/Runner.Listener"))?;
        Ok(home)
    }
}

impl Drop for Workdir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// What the event loop hears from an agent process.
enum AgentNews {
    Log(Pool, serde_json::Value),
    Exited(Pool, Option<i32>),
}

struct AgentProcess {
    pool: Pool,
    pid: u32,
    child_done: tokio::sync::oneshot::Receiver<Option<i32>>,
}

fn spawn_agent(
    pool: Pool,
    exe: &Path,
    env: Vec<(String, String)>,
    log_path: PathBuf,
    news: mpsc::UnboundedSender<AgentNews>,
) -> anyhow::Result<AgentProcess> {
    let mut cmd = tokio::process::Command::new(exe);
    cmd.arg("agent")
        .env_clear()
        .envs(env)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = cmd
        .spawn()
        .with_context(|| format!("starting the {} agent", pool.name()))?;
    let pid = child.id().unwrap_or_default();
    let stderr = child.stderr.take().context("agent stderr")?;
    let tx = news.clone();
    tokio::spawn(async move {
        let mut log = tokio::fs::File::create(&log_path).await.ok();
        let mut lines = BufReader::new(stderr).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some(f) = log.as_mut() {
                use tokio::io::AsyncWriteExt;
                let _ = f.write_all(format!("{line}\n").as_bytes()).await;
            }
            match serde_json::from_str::<serde_json::Value>(&line) {
                Ok(v) => {
                    let _ = tx.send(AgentNews::Log(pool, v));
                }
                Err(_) => {
                    let _ = tx.send(AgentNews::Log(
                        pool,
                        serde_json::json!({"level": "ERROR", "message": line}),
                    ));
                }
            }
        }
    });
    let (done_tx, child_done) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let code = child.wait().await.ok().and_then(|s| s.code());
        let _ = news.send(AgentNews::Exited(pool, code));
        let _ = done_tx.send(code);
    });
    Ok(AgentProcess {
        pool,
        pid,
        child_done,
    })
}

fn sample_workflow(pool: Pool, n: usize) -> JobSpec {
    JobSpec::new(&format!("{SEED_ORG}/{SEED_REPO}"), &format!("ci-{}-{n}", pool.name()))
        .workflow("CI")
        .labels(["self-hosted", "linux", pool.name()])
        .step(
            "Checkout",
            "mkdir -p src && printf 'fn main() { out!(\"hello\"); }\\n' > src/main.rs && echo \"checked out $GITHUB_REPOSITORY into $GITHUB_WORKSPACE\"",
        )
        .step("Build", "echo compiling src/main.rs; sleep 0.3; echo 'build ok: target/app'")
        .step("Test", "echo 'running 3 tests'; sleep 0.2; echo 'test result: ok. 3 passed; 0 failed'")
}

fn parse_time(v: &serde_json::Value) -> Option<DateTime<Utc>> {
    v.get("timestamp")?.as_str()?.parse().ok()
}

fn agent_env(base: &[(String, String)], extra: &[(&str, &str)]) -> Vec<(String, String)> {
    base.iter()
        .cloned()
        .chain(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())))
        .collect()
}

/// The live view: what has been seen of each job, and the printing of it. The first
/// [`LIVE_JOBS`] jobs are shown step by step with their logs and lifecycle tables; later ones
/// (scripted runs of many jobs) only as a running count.
struct Show {
    start: DateTime<Utc>,
    started: Instant,
    target: usize,
    records: BTreeMap<u64, JobRecord>,
    per_pool: HashMap<Pool, usize>,
    dispatched: usize,
    done: usize,
    failed_jobs: Vec<String>,
    hint_shown: bool,
}

const LIVE_JOBS: usize = 2;

impl Show {
    fn new(target: usize) -> Show {
        Show {
            start: Utc::now(),
            started: Instant::now(),
            target,
            records: BTreeMap::new(),
            per_pool: HashMap::new(),
            dispatched: 0,
            done: 0,
            failed_jobs: Vec::new(),
            hint_shown: false,
        }
    }

    fn stamp(&self, at: DateTime<Utc>) -> String {
        let s = (at - self.start).num_microseconds().unwrap_or(0) as f64 / 1e6;
        format!("[{s:>8.3}s]")
    }

    /// Enqueues the sample workflow for `pool`, unless the target number of jobs is reached.
    fn dispatch(&mut self, emu: &Emulator, pool: Pool) {
        if self.dispatched >= self.target {
            return;
        }
        let n = self.per_pool.entry(pool).or_default();
        *n += 1;
        let id = emu.enqueue_job(sample_workflow(pool, *n));
        let view = emu.job(id);
        self.dispatched += 1;
        self.records.insert(
            id,
            JobRecord {
                seq: self.dispatched,
                run_id: view.as_ref().map(|v| v.run_id).unwrap_or_default(),
                name: view.map(|v| v.name).unwrap_or_default(),
                pool,
                ..JobRecord::default()
            },
        );
    }

    /// A line of an agent's JSON log: its hooks and problems.
    fn on_agent_log(&mut self, pool: Pool, v: &serde_json::Value) {
        let message = v
            .get("message")
            .and_then(|m| m.as_str())
            .unwrap_or_default();
        let level = v.get("level").and_then(|m| m.as_str()).unwrap_or_default();
        let at = parse_time(v).unwrap_or_else(Utc::now);
        let stamp = self.stamp(at);
        let run_id = v
            .get("run_id")
            .and_then(|r| r.as_str())
            .and_then(|r| r.parse::<u64>().ok());
        let record = run_id.and_then(|r| self.records.values_mut().find(|j| j.run_id == r));
        let live = record.as_ref().is_none_or(|r| r.seq <= LIVE_JOBS);
        let pool = pool.name();
        match message {
            "runner registered" => {
                let name = v
                    .get("runner_name")
                    .and_then(|n| n.as_str())
                    .unwrap_or_default();
                let ms = v
                    .get("elapsed_ms")
                    .and_then(|n| n.as_u64())
                    .unwrap_or_default();
                out!("{stamp} {pool:<10} agent registered runner {name} in {ms} ms");
            }
            "job started" => {
                if let Some(r) = record {
                    r.hook_started = Some(at);
                }
                if live {
                    out!(
                        "{stamp} {pool:<10} agent: job-started hook (task protection would go on in ECS)"
                    );
                }
            }
            "job completed" => {
                let wiped = v
                    .get("workspace_entries_wiped")
                    .and_then(|n| n.as_u64())
                    .unwrap_or_default();
                if let Some(r) = record {
                    r.cleaned = Some((at, wiped));
                }
                if live {
                    out!(
                        "{stamp} {pool:<10} agent: job-completed hook, workspace wiped ({wiped} entries)"
                    );
                }
            }
            _ if level == "WARN" || level == "ERROR" => {
                let error = v.get("error").and_then(|e| e.as_str()).unwrap_or_default();
                out!("{stamp} {pool:<10} agent {level}: {message} {error}");
            }
            _ => {}
        }
    }

    /// An emulator event: recorded, and printed for live jobs.
    fn on_event(&mut self, event: JobEvent) {
        let stamp = self.stamp(event.at());
        let at = event.at();
        let job_id = match &event {
            JobEvent::Queued { job_id, .. }
            | JobEvent::Claimed { job_id, .. }
            | JobEvent::StepStarted { job_id, .. }
            | JobEvent::Log { job_id, .. }
            | JobEvent::StepCompleted { job_id, .. }
            | JobEvent::Completed { job_id, .. } => Some(*job_id),
            _ => None,
        };
        if let JobEvent::RunnerListening { name, .. } = &event
            && let Some(r) = self.records.values_mut().rev().find(|r| {
                r.completed.is_some()
                    && r.listening.is_none()
                    && r.claimed.as_ref().is_some_and(|(_, n)| n == name)
            })
        {
            r.listening = Some(at);
        }
        let Some(r) = job_id.and_then(|id| self.records.get_mut(&id)) else {
            return;
        };
        let live = r.seq <= LIVE_JOBS;
        let pool = r.pool;
        let say = |line: String| {
            if live {
                out!("{stamp} {pool:<10} {line}");
            }
        };
        match event {
            JobEvent::Queued { .. } => {
                r.queued = Some(at);
                say(format!(
                    "job {} queued (runs-on: self-hosted, linux, {pool})",
                    r.name
                ));
            }
            JobEvent::Claimed { runner_name, .. } => {
                say(format!("job {} claimed by {runner_name}", r.name));
                r.claimed = Some((at, runner_name));
            }
            JobEvent::StepStarted { step, name, .. } => {
                say(format!("step {} \"{name}\" started", step + 1));
                if let Ok(step) = usize::try_from(step) {
                    let s = r.step_mut(step);
                    s.name = name;
                    s.started = Some(at);
                }
            }
            JobEvent::Log { text, .. } => say(format!("  | {text}")),
            JobEvent::StepCompleted {
                step, conclusion, ..
            } => {
                say(format!("step {} {}", step + 1, conclusion.as_str()));
                if let Ok(step) = usize::try_from(step) {
                    r.step_mut(step).completed = Some((at, conclusion.as_str().to_string()));
                }
            }
            JobEvent::Completed { conclusion, .. } => {
                let c = conclusion.as_str().to_string();
                say(format!("job {} completed: {c}", r.name));
                if c != "success" {
                    self.failed_jobs.push(format!("{} ({c})", r.name));
                }
                r.completed = Some((at, c));
            }
            _ => {}
        }
    }

    /// Jobs seen through to their runner polling again: counted, their table printed for live
    /// jobs. Returns the pools that are free for another job.
    fn finish_jobs(&mut self) -> Vec<Pool> {
        let mut free = Vec::new();
        for r in self
            .records
            .values_mut()
            .filter(|r| r.finished() && !r.timeline_printed)
        {
            r.timeline_printed = true;
            self.done += 1;
            free.push(r.pool);
            if r.seq <= LIVE_JOBS {
                out!(
                    "\nLifecycle of job {} on the {} runner (measured):\n{}",
                    r.name,
                    r.pool,
                    timeline::render(&timeline::rows(r))
                );
            } else if self.done.is_multiple_of(10) {
                let s = self.started.elapsed().as_secs_f64();
                out!("[{s:>8.3}s] {} of {} jobs done", self.done, self.target);
            }
        }
        free
    }

    /// Percentiles over every job, for scripted runs and benchmarks.
    fn summary(&self) {
        let collect = |f: fn(&JobRecord) -> Option<f64>| -> Vec<f64> {
            self.records.values().filter_map(f).collect()
        };
        let pickups = collect(JobRecord::pickup_ms);
        let first_steps = collect(JobRecord::first_step_ms);
        let totals = collect(JobRecord::total_ms);
        if pickups.is_empty() {
            return;
        }
        let p = |v: &[f64], q: f64| percentile(v, q).unwrap_or_default();
        out!(
            "\n{} jobs done in {:.1} s. Pickup (queued -> claimed): p50 {:.1} ms, p95 {:.1} ms, max {:.1} ms. \
             Queued -> first step running: p50 {:.1} ms, p95 {:.1} ms. Queued -> completed: p50 {:.0} ms, p95 {:.0} ms.",
            self.done,
            self.started.elapsed().as_secs_f64(),
            p(&pickups, 50.0),
            p(&pickups, 95.0),
            p(&pickups, 100.0),
            p(&first_steps, 50.0),
            p(&first_steps, 95.0),
            p(&totals, 50.0),
            p(&totals, 95.0),
        );
    }
}

pub async fn run(options: DevOptions) -> anyhow::Result<()> {
    let emu = Emulator::start_on(
        SocketAddr::from((Ipv4Addr::LOCALHOST, options.port)),
        World::seed(),
    )
    .await?;
    let api = emu.api_url();
    let web = emu.web_url();
    let work = Workdir::create()?;
    let key_path = work.key_file()?;
    let exe = std::env::current_exe().context("finding the hangar executable")?;
    let repo = Scope::repo(&format!("{SEED_ORG}/{SEED_REPO}"))?;
    let org = Scope::org(SEED_ORG)?;

    out!("hangar dev: GitHub emulator on {api} (everything stays on 127.0.0.1)\n");

    // Both credential paths, checked the way an operator would.
    let config = GitHubConfig::new(&api, &web);
    let given = |pairs: &[(&str, &str)]| Connection {
        github: config.clone(),
        ssm_prefix: None,
        auth: None,
        credential_env: CredentialEnv::Given(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<HashMap<_, _>>(),
        ),
    };
    let key_str = key_path.display().to_string();
    for (what, connection, scope) in [
        (
            "standalone: PAT -> registration token",
            given(&[(ENV_PAT, SEED_PAT)]),
            &repo,
        ),
        (
            "organization: client ID + PEM -> JWT -> installation token -> registration token",
            given(&[
                (ENV_CLIENT_ID, SEED_CLIENT_ID),
                (ENV_PRIVATE_KEY_FILE, &key_str),
            ]),
            &org,
        ),
    ] {
        let report = doctor::run(&connection, scope).await;
        let total = report.checks.len();
        out!(
            "hangar doctor, {what}: {} of {total} checks passed",
            total - report.failed()
        );
        if report.failed() > 0 {
            out!("{}", report.render_text());
            anyhow::bail!(
                "doctor found failing checks against the emulator; this is a bug in Hangar"
            );
        }
    }

    // The two agents.
    let mut events = emu.subscribe();
    let (news_tx, mut news) = mpsc::unbounded_channel();
    let root = nix::unistd::geteuid().is_root();
    let mut base: Vec<(String, String)> = ["PATH", "HOME", "LANG", "TERM", "USER"]
        .iter()
        .filter_map(|k| std::env::var(k).ok().map(|v| (k.to_string(), v)))
        .collect();
    base.extend([
        ("GITHUB_API_URL".to_string(), api.clone()),
        ("GITHUB_URL".to_string(), web.clone()),
        ("HANGAR_LOG_FORMAT".to_string(), "json".to_string()),
    ]);
    if root {
        base.push(("RUNNER_ALLOW_RUNASROOT".into(), "1".into()));
    }
    let standalone_home = work.runner_home(Pool::Standalone, &exe)?;
    let org_home = work.runner_home(Pool::Org, &exe)?;
    let mut agents = vec![
        spawn_agent(
            Pool::Standalone,
            &exe,
            agent_env(
                &base,
                &[
                    ("GITHUB_PAT", SEED_PAT),
                    ("GITHUB_REPOSITORY", &format!("{SEED_ORG}/{SEED_REPO}")),
                    ("RUNNER_HOME", &standalone_home.display().to_string()),
                    ("RUNNER_LABELS", "linux,standalone"),
                ],
            ),
            work.0.join("agent-standalone.log"),
            news_tx.clone(),
        )?,
        spawn_agent(
            Pool::Org,
            &exe,
            agent_env(
                &base,
                &[
                    ("RUNNER_SCOPE", "org"),
                    ("GITHUB_ORG", SEED_ORG),
                    ("GITHUB_APP_CLIENT_ID", SEED_CLIENT_ID),
                    ("GITHUB_APP_PRIVATE_KEY_FILE", &key_str),
                    ("RUNNER_HOME", &org_home.display().to_string()),
                    ("RUNNER_LABELS", "linux,org"),
                ],
            ),
            work.0.join("agent-org.log"),
            news_tx.clone(),
        )?,
    ];
    drop(news_tx);
    out!(
        "\nStarting two runners, each under `hangar agent` with the stand-in runner{}:",
        if root {
            " (as root: RUNNER_ALLOW_RUNASROOT=1)"
        } else {
            ""
        }
    );
    out!("  standalone  {repo:<55} PAT         runs-on: self-hosted, linux, standalone");
    out!("  org         {org:<55} GitHub App  runs-on: self-hosted, linux, org");
    out!("  agent logs: {}\n", work.0.display());

    let target_jobs = options.exit_after_jobs.unwrap_or(2).max(1);
    let mut show = Show::new(target_jobs);
    let mut online: BTreeSet<Pool> = BTreeSet::new();
    let mut stop_reason: Option<String> = None;
    let signals = shutdown_signal();
    tokio::pin!(signals);
    let setup_deadline = tokio::time::sleep(Duration::from_secs(60));
    tokio::pin!(setup_deadline);

    loop {
        tokio::select! {
            _ = &mut signals => {
                out!("\nCtrl-C: stopping both agents (each removes its runner from GitHub first)");
                break;
            }
            _ = &mut setup_deadline, if online.len() < 2 => {
                stop_reason = Some("the runners did not come online within 60 s; see the agent logs above".into());
                break;
            }
            news = news.recv() => match news {
                None => break,
                Some(AgentNews::Exited(pool, code)) => {
                    stop_reason = Some(format!(
                        "the {} agent exited unexpectedly (code {code:?}); its log: {}",
                        pool.name(),
                        work.0.join(format!("agent-{}.log", pool.name())).display()
                    ));
                    break;
                }
                Some(AgentNews::Log(pool, v)) => show.on_agent_log(pool, &v),
            },
            event = events.recv() => {
                let event = match event {
                    Ok(e) => e,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(missed = n, "event display fell behind");
                        continue;
                    }
                    Err(_) => break,
                };
                if let JobEvent::RunnerOnline { runner_id, name, .. } = &event {
                    let org_runner = emu.runners(&hangar_emulator::Scope::org(SEED_ORG)).iter().any(|r| r.id == *runner_id);
                    let pool = if org_runner { Pool::Org } else { Pool::Standalone };
                    if online.insert(pool) {
                        out!("{} {:<10} runner {name} (id {runner_id}) is online, polling for jobs", show.stamp(event.at()), pool.name());
                        if online.len() == 2 {
                            out!("\nDispatching the sample workflow \"CI\" (Checkout, Build, Test) to each runner:");
                            for pool in [Pool::Standalone, Pool::Org] {
                                show.dispatch(&emu, pool);
                            }
                        }
                    }
                }
                show.on_event(event);
            }
        }
        for pool in show.finish_jobs() {
            show.dispatch(&emu, pool);
        }
        if options.exit_after_jobs.is_some() && show.done >= target_jobs {
            break;
        }
        if options.exit_after_jobs.is_none() && show.done == 2 && !show.hint_shown {
            show.hint_shown = true;
            out!(
                "Both runners are idle and polling. The emulator serves on {api}; from another shell:"
            );
            out!(
                "  GITHUB_API_URL={api} GITHUB_URL={web} GITHUB_PAT={SEED_PAT} hangar doctor --repo {SEED_ORG}/{SEED_REPO}"
            );
            out!("Ctrl-C stops the agents (deregistering both runners) and the emulator.");
        }
    }
    show.summary();

    // One SIGTERM per agent; each removes its runner's registration before stopping it.
    for agent in &agents {
        if agent.pid != 0 {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(agent.pid as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
    }
    let mut agent_failures = Vec::new();
    for agent in agents.iter_mut() {
        match tokio::time::timeout(Duration::from_secs(15), &mut agent.child_done).await {
            Ok(Ok(Some(0))) => {}
            Ok(Ok(code)) if stop_reason.is_some() => {
                let _ = code;
            }
            Ok(Ok(code)) => agent_failures.push(format!(
                "the {} agent exited with {code:?}",
                agent.pool.name()
            )),
            Ok(Err(_)) => {}
            Err(_) => agent_failures.push(format!(
                "the {} agent did not stop within 15 s",
                agent.pool.name()
            )),
        }
    }
    let left: Vec<String> = emu
        .runners(&hangar_emulator::Scope::repo(SEED_ORG, SEED_REPO))
        .into_iter()
        .chain(emu.runners(&hangar_emulator::Scope::org(SEED_ORG)))
        .map(|r| r.name)
        .collect();
    if left.is_empty() {
        out!("Both runners deregistered from GitHub; agents stopped.");
    }
    emu.shutdown().await;
    if let Some(reason) = stop_reason {
        anyhow::bail!(reason);
    }
    if !left.is_empty() {
        anyhow::bail!(
            "runners still registered after stopping: {}",
            left.join(", ")
        );
    }
    if !agent_failures.is_empty() {
        anyhow::bail!(agent_failures.join("; "));
    }
    if !show.failed_jobs.is_empty() {
        anyhow::bail!("jobs did not succeed: {}", show.failed_jobs.join(", "));
    }
    drop(work);
    Ok(())
}

/// Ctrl-C or SIGTERM; without a SIGTERM handler (it cannot be installed), Ctrl-C alone.
async fn shutdown_signal() {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
