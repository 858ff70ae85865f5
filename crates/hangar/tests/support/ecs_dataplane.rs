//! A stand-in for ECS's data plane, so that tasks started on moto (which runs no container) do
//! what a runner task does on Fargate: for every task RunTask starts in the cluster, a real
//! `hangar agent` process starts with the task's environment overrides (the name of its
//! one-shot parameter, its runner name and scope), the AWS endpoint the test gives (the realism
//! layer: the agent's GetParameter and DeleteParameter meet AWS's rates) and the stand-in runner
//! in a runner folder of its own. The agent takes its JIT configuration, runs one job and
//! exits; the task is then stopped on moto with ECS's reason for an essential container that
//! exited. A task the controller stops gets SIGTERM, and SIGKILL after ECS's default stop
//! timeout of 30 s, as the ECS agent does.
//!
//! The data plane reads and writes moto directly (never through the realism layer): it is AWS's
//! inside, not a client. It records every task it ran, the most it ran at once, and how each
//! agent ended.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_sdk_ecs::types::{DesiredStatus, TaskField};
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use tokio_util::sync::CancellationToken;

use super::agent::RunnerDir;

/// How often the data plane looks for new and stopped tasks.
const POLL: Duration = Duration::from_millis(200);
/// ECS's default `stopTimeout`: SIGTERM, then SIGKILL after this.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// ECS's `stoppedReason` for a task whose essential container exited.
pub const EXITED_REASON: &str = "Essential container in task exited";

/// One task the data plane ran.
#[derive(Clone, Debug)]
pub struct RanTask {
    pub arn: String,
    /// The task's `RUNNER_NAME` override.
    pub runner_name: String,
    pub started: Instant,
    pub ended: Option<Instant>,
    /// The agent's exit code (`None` while it runs, or when a signal ended it).
    pub exit_code: Option<i32>,
    /// Whether the controller asked for the stop before the agent exited.
    pub stopped_by_controller: bool,
}

struct Live {
    child: tokio::process::Child,
    // Removed when the task ends.
    _dir: RunnerDir,
    term_sent: Option<Instant>,
}

#[derive(Default)]
struct State {
    tasks: Vec<RanTask>,
    index: HashMap<String, usize>,
    peak: usize,
}

/// The environment of every agent the data plane starts: the AWS endpoint `aws` names (moto,
/// or the realism layer in front of it, so the agents' SSM calls meet AWS's rates), the
/// emulator as GitHub, the stand-in runner's fast polls. No GitHub credential.
pub fn agent_env(
    emu: &hangar_emulator::Emulator,
    aws: Vec<(&'static str, String)>,
) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = vec![
        ("PATH".into(), std::env::var("PATH").unwrap_or_default()),
        (
            "HOME".into(),
            std::env::var("HOME").unwrap_or_else(|_| "/root".into()),
        ),
        ("GITHUB_API_URL".into(), emu.api_url()),
        ("GITHUB_URL".into(), emu.web_url()),
        ("HANGAR_LOG_FORMAT".into(), "json".into()),
        ("HANGAR_STANDIN_POLL_SECS".into(), "1".into()),
        ("HANGAR_STANDIN_RETRY_SECS".into(), "1".into()),
        (
            "RUNNER_PASS_ENV".into(),
            "HANGAR_STANDIN_POLL_SECS,HANGAR_STANDIN_RETRY_SECS".into(),
        ),
    ];
    if nix::unistd::geteuid().is_root() {
        env.push(("RUNNER_ALLOW_RUNASROOT".into(), "1".into()));
    }
    env.extend(aws.into_iter().map(|(k, v)| (k.to_string(), v)));
    env
}

pub struct DataPlane {
    state: Arc<Mutex<State>>,
    /// Each agent's output, `<runner name>.log`; removed on drop.
    log_dir: PathBuf,
    cancel: CancellationToken,
    handle: Option<tokio::task::JoinHandle<()>>,
}

impl DataPlane {
    /// Runs the tasks of `cluster` on the moto server at `moto_url`. Each agent gets `env`
    /// (PATH, the AWS endpoint it should use, the stand-in's settings, ...) plus its task's
    /// overrides and a runner folder of its own.
    pub fn start(moto_url: &str, cluster: &str, env: Vec<(String, String)>) -> DataPlane {
        let ecs = aws_sdk_ecs::Client::new(&super::moto::sdk_config_at(moto_url));
        let state = Arc::new(Mutex::new(State::default()));
        let cancel = CancellationToken::new();
        let log_dir = std::env::temp_dir().join(format!(
            "hangar-ecs-dataplane-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&log_dir).unwrap();
        let handle = tokio::spawn(run(
            ecs,
            cluster.to_string(),
            env,
            log_dir.clone(),
            state.clone(),
            cancel.clone(),
        ));
        DataPlane {
            state,
            log_dir,
            cancel,
            handle: Some(handle),
        }
    }

    /// Every task run so far.
    pub fn tasks(&self) -> Vec<RanTask> {
        self.state.lock().unwrap().tasks.clone()
    }

    /// The most agents that ran at once.
    pub fn peak(&self) -> usize {
        self.state.lock().unwrap().peak
    }

    /// Agents running now.
    pub fn running(&self) -> usize {
        let state = self.state.lock().unwrap();
        state.tasks.iter().filter(|t| t.ended.is_none()).count()
    }

    /// The output of the agent of runner `name`, or an empty string.
    pub fn agent_log(&self, runner_name: &str) -> String {
        std::fs::read_to_string(self.log_dir.join(format!("{runner_name}.log"))).unwrap_or_default()
    }

    /// Stops looking for tasks; agents still running are killed (kill on drop).
    pub async fn stop(&mut self) {
        self.cancel.cancel();
        if let Some(handle) = self.handle.take() {
            let _ = handle.await;
        }
    }
}

impl Drop for DataPlane {
    fn drop(&mut self) {
        self.cancel.cancel();
        let _ = std::fs::remove_dir_all(&self.log_dir);
    }
}

async fn run(
    ecs: aws_sdk_ecs::Client,
    cluster: String,
    env: Vec<(String, String)>,
    log_dir: PathBuf,
    state: Arc<Mutex<State>>,
    cancel: CancellationToken,
) {
    let mut live: HashMap<String, Live> = HashMap::new();
    loop {
        if cancel.is_cancelled() {
            return;
        }
        if let Err(e) = pass(&ecs, &cluster, &env, &log_dir, &state, &mut live).await {
            eprintln!("ecs data plane: {e}");
        }
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(POLL) => {}
        }
    }
}

async fn pass(
    ecs: &aws_sdk_ecs::Client,
    cluster: &str,
    env: &[(String, String)],
    log_dir: &std::path::Path,
    state: &Arc<Mutex<State>>,
    live: &mut HashMap<String, Live>,
) -> Result<(), String> {
    // New tasks: listed as wanted running, not seen before.
    let mut listed = Vec::new();
    let mut token = None;
    loop {
        let page = ecs
            .list_tasks()
            .cluster(cluster)
            .desired_status(DesiredStatus::Running)
            .set_next_token(token)
            .send()
            .await
            .map_err(|e| format!("ListTasks: {e:?}"))?;
        listed.extend(page.task_arns().iter().cloned());
        token = page.next_token().map(str::to_string);
        if token.is_none() {
            break;
        }
    }
    let new: Vec<String> = {
        let state = state.lock().unwrap();
        listed
            .into_iter()
            .filter(|arn| !state.index.contains_key(arn))
            .collect()
    };
    // Described with the running ones, to see which of those the controller stopped.
    let mut wanted: Vec<String> = new.clone();
    wanted.extend(live.keys().cloned());
    let mut described = Vec::new();
    for chunk in wanted.chunks(100) {
        let answer = ecs
            .describe_tasks()
            .cluster(cluster)
            .set_tasks(Some(chunk.to_vec()))
            .include(TaskField::Tags)
            .send()
            .await
            .map_err(|e| format!("DescribeTasks: {e:?}"))?;
        described.extend(answer.tasks().iter().cloned());
    }
    for task in &described {
        let arn = task.task_arn().unwrap_or_default().to_string();
        if new.contains(&arn) && task.desired_status() == Some("RUNNING") {
            let overrides: Vec<(String, String)> = task
                .overrides()
                .map(|o| o.container_overrides())
                .unwrap_or_default()
                .iter()
                .flat_map(|c| c.environment())
                .map(|kv| {
                    (
                        kv.name().unwrap_or_default().to_string(),
                        kv.value().unwrap_or_default().to_string(),
                    )
                })
                .collect();
            let runner_name = overrides
                .iter()
                .find(|(k, _)| k == "RUNNER_NAME")
                .map(|(_, v)| v.clone())
                .unwrap_or_default();
            let dir = RunnerDir::new("ecs-task");
            let mut command = tokio::process::Command::new(super::reachable_hangar());
            command
                .arg("agent")
                .current_dir(&dir.root)
                .env_clear()
                .envs(env.iter().cloned())
                .envs(overrides)
                .env("RUNNER_HOME", &dir.root)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(
                    std::fs::File::create(log_dir.join(format!("{runner_name}.log")))
                        .map(Stdio::from)
                        .unwrap_or_else(|_| Stdio::null()),
                )
                .kill_on_drop(true);
            let child = command
                .spawn()
                .map_err(|e| format!("cannot start hangar agent: {e}"))?;
            live.insert(
                arn.clone(),
                Live {
                    child,
                    _dir: dir,
                    term_sent: None,
                },
            );
            let mut state = state.lock().unwrap();
            let at = state.tasks.len();
            state.index.insert(arn.clone(), at);
            state.tasks.push(RanTask {
                arn,
                runner_name,
                started: Instant::now(),
                ended: None,
                exit_code: None,
                stopped_by_controller: false,
            });
            // Agents alive now (one that exited is not, though this pass has not reaped it).
            let running = live
                .values_mut()
                .map(|a| a.child.try_wait())
                .filter(|exited| matches!(exited, Ok(None)))
                .count();
            state.peak = state.peak.max(running);
        } else if let Some(agent) = live.get_mut(&arn)
            && task.desired_status() == Some("STOPPED")
            && agent.term_sent.is_none()
        {
            if let Some(pid) = agent.child.id() {
                let _ = nix::sys::signal::kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
            }
            agent.term_sent = Some(Instant::now());
            let mut state = state.lock().unwrap();
            let i = state.index[&arn];
            state.tasks[i].stopped_by_controller = true;
        }
    }
    // Agents that ended, or outlived their stop timeout.
    let mut ended = Vec::new();
    for (arn, agent) in live.iter_mut() {
        if agent
            .term_sent
            .is_some_and(|at| at.elapsed() > STOP_TIMEOUT)
        {
            let _ = agent.child.start_kill();
        }
        if let Ok(Some(status)) = agent.child.try_wait() {
            ended.push((arn.clone(), status.code()));
        }
    }
    for (arn, code) in ended {
        live.remove(&arn);
        {
            let mut state = state.lock().unwrap();
            let i = state.index[&arn];
            state.tasks[i].ended = Some(Instant::now());
            state.tasks[i].exit_code = code;
        }
        // The essential container exited: the task stops (a no-op when the controller
        // already stopped it).
        let _ = ecs
            .stop_task()
            .cluster(cluster)
            .task(&arn)
            .reason(EXITED_REASON)
            .send()
            .await;
    }
    Ok(())
}
