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

use std::collections::{BTreeMap, HashMap};
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

use self::timeline::JobRecord;
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

/// The two pools of the seed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Pool {
    Standalone,
    Org,
}

impl Pool {
    fn name(self) -> &'static str {
        match self {
            Pool::Standalone => "standalone",
            Pool::Org => "org",
        }
    }
    fn label(self) -> &'static str {
        self.name()
    }
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
        .labels(["self-hosted", "linux", pool.label()])
        .step(
            "Checkout",
            "mkdir -p src && printf 'fn main() { println!(\"hello\"); }\\n' > src/main.rs && echo \"checked out $GITHUB_REPOSITORY into $GITHUB_WORKSPACE\"",
        )
        .step("Build", "echo compiling src/main.rs; sleep 0.3; echo 'build ok: target/app'")
        .step("Test", "echo 'running 3 tests'; sleep 0.2; echo 'test result: ok. 3 passed; 0 failed'")
}

fn stamp(at: DateTime<Utc>, start: DateTime<Utc>) -> String {
    let s = (at - start).num_microseconds().unwrap_or(0) as f64 / 1e6;
    format!("[{s:>8.3}s]")
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
    let quiet_after = 2; // live logs and tables for the first jobs only

    println!("hangar dev: GitHub emulator on {api} (everything stays on 127.0.0.1)\n");

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
        println!(
            "hangar doctor, {what}: {} of {total} checks passed",
            total - report.failed()
        );
        if report.failed() > 0 {
            print!("{}", report.render_text());
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
    println!(
        "\nStarting two runners, each under `hangar agent` with the stand-in runner{}:",
        if root {
            " (as root: RUNNER_ALLOW_RUNASROOT=1)"
        } else {
            ""
        }
    );
    println!("  standalone  {repo:<55} PAT         runs-on: self-hosted, linux, standalone");
    println!("  org         {org:<55} GitHub App  runs-on: self-hosted, linux, org");
    println!("  agent logs: {}\n", work.0.display());

    let start = Utc::now();
    let started = Instant::now();
    let target_jobs = options.exit_after_jobs.unwrap_or(2).max(1);
    let mut online: BTreeMap<Pool, (u64, String)> = BTreeMap::new();
    let mut records: BTreeMap<u64, JobRecord> = BTreeMap::new();
    let mut runner_pool: HashMap<String, Pool> = HashMap::new();
    let mut dispatched = 0usize;
    let mut per_pool: HashMap<Pool, usize> = HashMap::new();
    let mut done = 0usize;
    let mut failed_jobs = Vec::new();
    let mut stop_reason: Option<String> = None;
    let signals = shutdown_signal();
    tokio::pin!(signals);
    let setup_deadline = tokio::time::sleep(Duration::from_secs(60));
    tokio::pin!(setup_deadline);

    let dispatch = |pool: Pool,
                    records: &mut BTreeMap<u64, JobRecord>,
                    dispatched: &mut usize,
                    per_pool: &mut HashMap<Pool, usize>| {
        let n = per_pool.entry(pool).or_default();
        *n += 1;
        let spec = sample_workflow(pool, *n);
        let id = emu.enqueue_job(spec);
        let view = emu.job(id);
        records.insert(
            id,
            JobRecord {
                job_id: id,
                seq: *dispatched + 1,
                run_id: view.as_ref().map(|v| v.run_id).unwrap_or_default(),
                name: view.map(|v| v.name).unwrap_or_default(),
                pool: pool.name().into(),
                ..JobRecord::default()
            },
        );
        *dispatched += 1;
    };

    loop {
        tokio::select! {
            _ = &mut signals => {
                println!("\nCtrl-C: stopping both agents (each removes its runner from GitHub first)");
                break;
            }
            _ = &mut setup_deadline, if online.len() < 2 => {
                stop_reason = Some("the runners did not come online within 60 s; see the agent logs above".into());
                break;
            }
            news = news.recv() => match news {
                None => break,
                Some(AgentNews::Exited(pool, code)) => {
                    stop_reason = Some(format!("the {} agent exited unexpectedly (code {code:?}); its log: {}", pool.name(), work.0.join(format!("agent-{}.log", pool.name())).display()));
                    break;
                }
                Some(AgentNews::Log(pool, v)) => {
                    let message = v.get("message").and_then(|m| m.as_str()).unwrap_or_default();
                    let level = v.get("level").and_then(|m| m.as_str()).unwrap_or_default();
                    let at = parse_time(&v).unwrap_or_else(Utc::now);
                    let run_id = v.get("run_id").and_then(|r| r.as_str()).and_then(|r| r.parse::<u64>().ok());
                    let record = run_id.and_then(|r| records.values_mut().find(|j| j.run_id == r));
                    let verbose = record.as_ref().is_none_or(|r| r.seq <= quiet_after);
                    match message {
                        "runner registered" => {
                            let name = v.get("runner_name").and_then(|n| n.as_str()).unwrap_or_default();
                            let ms = v.get("elapsed_ms").and_then(|n| n.as_u64()).unwrap_or_default();
                            println!("{} {:<10} agent registered runner {name} in {ms} ms", stamp(at, start), pool.name());
                        }
                        "job started" => {
                            if let Some(r) = record { r.hook_started = Some(at); }
                            if verbose { println!("{} {:<10} agent: job-started hook (task protection would go on in ECS)", stamp(at, start), pool.name()); }
                        }
                        "job completed" => {
                            let wiped = v.get("workspace_entries_wiped").and_then(|n| n.as_u64()).unwrap_or_default();
                            if let Some(r) = record { r.cleaned = Some((at, wiped)); }
                            if verbose { println!("{} {:<10} agent: job-completed hook, workspace wiped ({wiped} entries)", stamp(at, start), pool.name()); }
                        }
                        _ if level == "WARN" || level == "ERROR" => {
                            println!("{} {:<10} agent {level}: {message} {}", stamp(at, start), pool.name(), v.get("error").and_then(|e| e.as_str()).unwrap_or_default());
                        }
                        _ => {}
                    }
                }
            },
            event = events.recv() => {
                let event = match event {
                    Ok(e) => e,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => { tracing::warn!(missed = n, "event display fell behind"); continue; }
                    Err(_) => break,
                };
                let at = event.at();
                match event {
                    JobEvent::RunnerOnline { runner_id, name, .. } => {
                        let pool = if emu.runners(&hangar_emulator::Scope::org(SEED_ORG)).iter().any(|r| r.id == runner_id) { Pool::Org } else { Pool::Standalone };
                        runner_pool.insert(name.clone(), pool);
                        if online.insert(pool, (runner_id, name.clone())).is_none() {
                            println!("{} {:<10} runner {name} (id {runner_id}) is online, polling for jobs", stamp(at, start), pool.name());
                        }
                        if online.len() == 2 && dispatched == 0 {
                            println!("\nDispatching the sample workflow \"CI\" (Checkout, Build, Test) to each runner:");
                            for pool in [Pool::Standalone, Pool::Org] {
                                if dispatched < target_jobs { dispatch(pool, &mut records, &mut dispatched, &mut per_pool); }
                            }
                        }
                    }
                    JobEvent::Queued { job_id, .. } => {
                        if let Some(r) = records.get_mut(&job_id) {
                            r.queued = Some(at);
                            if r.seq <= quiet_after { println!("{} {:<10} job {} queued (runs-on: self-hosted, linux, {})", stamp(at, start), r.pool, r.name, r.pool); }
                        }
                    }
                    JobEvent::Claimed { job_id, runner_name, .. } => {
                        if let Some(r) = records.get_mut(&job_id) {
                            if r.seq <= quiet_after { println!("{} {:<10} job {} claimed by {runner_name}", stamp(at, start), r.pool, r.name); }
                            r.claimed = Some((at, runner_name));
                        }
                    }
                    JobEvent::StepStarted { job_id, step, name, .. } => {
                        if let (Some(r), Ok(step)) = (records.get_mut(&job_id), usize::try_from(step)) {
                            let s = r.step_mut(step);
                            s.name = name.clone();
                            s.started = Some(at);
                            if r.seq <= quiet_after { println!("{} {:<10} step {} \"{name}\" started", stamp(at, start), r.pool, step + 1); }
                        }
                    }
                    JobEvent::Log { job_id, text, .. } => {
                        if let Some(r) = records.get(&job_id) && r.seq <= quiet_after {
                            println!("{} {:<10}   | {text}", stamp(at, start), r.pool);
                        }
                    }
                    JobEvent::StepCompleted { job_id, step, conclusion, .. } => {
                        if let (Some(r), Ok(step)) = (records.get_mut(&job_id), usize::try_from(step)) {
                            let c = conclusion.as_str().to_string();
                            if r.seq <= quiet_after { println!("{} {:<10} step {} {c}", stamp(at, start), r.pool, step + 1); }
                            r.step_mut(step).completed = Some((at, c));
                        }
                    }
                    JobEvent::Completed { job_id, conclusion, .. } => {
                        if let Some(r) = records.get_mut(&job_id) {
                            let c = conclusion.as_str().to_string();
                            if r.seq <= quiet_after { println!("{} {:<10} job {} completed: {c}", stamp(at, start), r.pool, r.name); }
                            if c != "success" { failed_jobs.push(format!("{} ({c})", r.name)); }
                            r.completed = Some((at, c));
                        }
                    }
                    JobEvent::RunnerListening { name, .. } => {
                        if let Some(r) = records.values_mut().rev().find(|r| r.completed.is_some() && r.listening.is_none() && r.claimed.as_ref().is_some_and(|(_, n)| *n == name)) {
                            r.listening = Some(at);
                        }
                    }
                    _ => {}
                }
            }
        }
        // Jobs seen through to the runner polling again: print their table, send the next.
        let finished: Vec<u64> = records
            .values()
            .filter(|r| r.finished() && !r.timeline_printed)
            .map(|r| r.job_id)
            .collect();
        for id in finished {
            let Some(r) = records.get_mut(&id) else {
                continue;
            };
            r.timeline_printed = true;
            done += 1;
            let pool = if r.pool == "org" {
                Pool::Org
            } else {
                Pool::Standalone
            };
            if r.seq <= quiet_after {
                println!(
                    "\nLifecycle of job {} on the {} runner (measured):\n{}",
                    r.name,
                    r.pool,
                    timeline::render(&timeline::rows(r))
                );
            } else if done.is_multiple_of(10) {
                println!(
                    "{} {done} of {target_jobs} jobs done",
                    stamp(Utc::now(), start)
                );
            }
            if dispatched < target_jobs {
                dispatch(pool, &mut records, &mut dispatched, &mut per_pool);
            }
        }
        if options.exit_after_jobs.is_some() && done >= target_jobs {
            break;
        }
        if options.exit_after_jobs.is_none() && done == 2 && dispatched == 2 {
            dispatched += 1; // print the hint once
            println!(
                "Both runners are idle and polling. The emulator serves on {api}; from another shell:"
            );
            println!(
                "  GITHUB_API_URL={api} GITHUB_URL={web} GITHUB_PAT={SEED_PAT} hangar doctor --repo {SEED_ORG}/{SEED_REPO}"
            );
            println!("Ctrl-C stops the agents (deregistering both runners) and the emulator.");
        }
    }

    // Summary for scripted runs.
    let pickups: Vec<f64> = records.values().filter_map(JobRecord::pickup_ms).collect();
    let first_steps: Vec<f64> = records
        .values()
        .filter_map(JobRecord::first_step_ms)
        .collect();
    let totals: Vec<f64> = records.values().filter_map(JobRecord::total_ms).collect();
    if !pickups.is_empty() {
        let p = |v: &[f64], q: f64| percentile(v, q).unwrap_or_default();
        println!(
            "\n{done} jobs done in {:.1} s. Pickup (queued -> claimed): p50 {:.1} ms, p95 {:.1} ms, max {:.1} ms. \
             Queued -> first step running: p50 {:.1} ms, p95 {:.1} ms. Queued -> completed: p50 {:.0} ms, p95 {:.0} ms.",
            started.elapsed().as_secs_f64(),
            p(&pickups, 50.0),
            p(&pickups, 95.0),
            p(&pickups, 100.0),
            p(&first_steps, 50.0),
            p(&first_steps, 95.0),
            p(&totals, 50.0),
            p(&totals, 95.0),
        );
    }

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
        println!("Both runners deregistered from GitHub; agents stopped.");
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
    if !failed_jobs.is_empty() {
        anyhow::bail!("jobs did not succeed: {}", failed_jobs.join(", "));
    }
    drop(work);
    Ok(())
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
