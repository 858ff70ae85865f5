//! The controller's local process backend end to end: real `hangar agent` processes on the
//! stand-in runner, given JIT configurations minted by the GitHub emulator (REST
//! `generate-jitconfig`) through one-shot files. Each test owns its emulator and work root.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use hangar::controller::backend::local::{LocalBackend, ShutdownReport};
use hangar::controller::backend::{
    Backend, BackendError, LaunchRequest, Task, TaskState, TaskTags,
};
use hangar::controller::config::LocalLaunch;
use hangar::github::{JitRequest, RunnerRemoval};
use hangar_emulator::{Conclusion, Emulator, JobSpec, JobStatus, Scope as EmuScope};
use secrecy::{ExposeSecret, SecretString};
use support::agent::{runner_pids, wait_until};
use support::{REPO, emulator, within};

const POOL: &str = "local-pool";

fn emu_repo() -> EmuScope {
    EmuScope::repo("your-organization", "your-repository-name")
}

/// A work root that is removed, and whose agents are killed, when the test ends (even by a
/// failed assertion).
struct WorkRoot {
    path: PathBuf,
    backends: Vec<LocalBackend>,
}

impl WorkRoot {
    fn new(tag: &str) -> WorkRoot {
        WorkRoot {
            path: std::env::temp_dir().join(format!(
                "hangar-local-{tag}-{}-{}",
                std::process::id(),
                rand::random::<u32>()
            )),
            backends: Vec::new(),
        }
    }

    fn launch_settings(&self, binary: &Path) -> LocalLaunch {
        let knobs = [
            ("HANGAR_STANDIN_POLL_SECS", "1"),
            ("HANGAR_STANDIN_RETRY_SECS", "1"),
            ("HANGAR_STANDIN_CANCEL_GRACE_MS", "1000"),
            (
                "RUNNER_PASS_ENV",
                "HANGAR_STANDIN_POLL_SECS,HANGAR_STANDIN_RETRY_SECS,HANGAR_STANDIN_CANCEL_GRACE_MS",
            ),
        ];
        LocalLaunch {
            hangar_binary: Some(binary.to_path_buf()),
            work_root: self.path.clone(),
            env: knobs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    /// A backend for the seed repository on this work root, running the hangar binary.
    fn backend(&mut self) -> LocalBackend {
        let backend = LocalBackend::new(
            support::repo(),
            &self.launch_settings(Path::new(env!("CARGO_BIN_EXE_hangar"))),
        )
        .expect("the local backend starts");
        self.backends.push(backend.clone());
        backend
    }
}

impl Drop for WorkRoot {
    fn drop(&mut self) {
        for backend in &self.backends {
            backend.kill_all();
        }
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// A JIT configuration for a repository runner with our pool's label, as the controller gets it.
async fn jit_launch(emu: &Emulator, name: &str) -> LaunchRequest {
    let gh = support::pat_client(emu, hangar_emulator::SEED_PAT);
    let jit = gh
        .jit_config(
            &support::repo(),
            &JitRequest {
                name: name.into(),
                runner_group_id: 1,
                labels: vec!["self-hosted".into(), POOL.into()],
                work_folder: "_work".into(),
            },
        )
        .await
        .unwrap();
    LaunchRequest {
        tags: TaskTags {
            pool: POOL.into(),
            runner_name: name.into(),
            runner_id: jit.runner.id,
        },
        jit_config: jit.encoded_jit_config,
    }
}

fn request(name: &str, runner_id: u64, blob: &str) -> LaunchRequest {
    LaunchRequest {
        tags: TaskTags {
            pool: POOL.into(),
            runner_name: name.into(),
            runner_id,
        },
        jit_config: SecretString::from(blob.to_string()),
    }
}

async fn task(backend: &LocalBackend, id: &str) -> Option<Task> {
    backend
        .list(POOL)
        .await
        .unwrap()
        .into_iter()
        .find(|t| t.id == id)
}

/// Polls the backend until task `id` is in `state`; panics with the agent's log after `secs`.
async fn wait_for_state(backend: &LocalBackend, id: &str, state: TaskState, secs: u64) -> Task {
    let until = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        let seen = task(backend, id).await;
        if let Some(t) = seen.as_ref().filter(|t| t.state == state) {
            return t.clone();
        }
        if tokio::time::Instant::now() > until {
            let name = id.trim_start_matches("local-");
            panic!(
                "task {id} not {state:?} within {secs} s: {seen:?}\nagent log:\n{}",
                agent_log(backend, name)
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn agent_log(backend: &LocalBackend, runner_name: &str) -> String {
    std::fs::read_to_string(backend.task_folder(runner_name).join("agent.log")).unwrap_or_default()
}

fn environ(pid: i32) -> String {
    let raw = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
    String::from_utf8_lossy(&raw).replace('\0', "\n")
}

fn handoff_path(backend: &LocalBackend, runner_name: &str) -> PathBuf {
    backend.work_root().join(format!("{runner_name}.jit"))
}

#[tokio::test]
async fn two_runners_come_online_run_a_job_and_a_restarted_backend_still_sees_and_stops_them() {
    within(120, async {
        let emu = emulator().await;
        let mut root = WorkRoot::new("e2e");
        let backend = root.backend();
        let a = jit_launch(&emu, "local-a").await;
        let b = jit_launch(&emu, "local-b").await;
        let blobs: Vec<String> = [&a, &b]
            .iter()
            .map(|r| r.jit_config.expose_secret().to_string())
            .collect();
        let ids: Vec<u64> = [&a, &b].iter().map(|r| r.tags.runner_id).collect();
        let task_a = backend.launch(a).await.unwrap();
        let task_b = backend.launch(b).await.unwrap();
        assert_eq!(
            (task_a.state, task_b.state),
            (TaskState::Running, TaskState::Running)
        );
        assert_eq!(task_a.tags.runner_name, "local-a");
        assert_ne!(task_a.id, task_b.id);

        wait_until(30, "both runners online", || {
            let runners = emu.runners(&emu_repo());
            runners.len() == 2 && runners.iter().all(|r| r.online)
        })
        .await;
        for name in ["local-a", "local-b"] {
            assert!(
                !handoff_path(&backend, name).exists(),
                "{name}'s one-shot file is gone once the agent started"
            );
        }
        assert!(backend.list_handoffs(POOL).await.unwrap().is_empty());
        assert!(backend.list("another-pool").await.unwrap().is_empty());

        // Neither the runners nor the agents hold the file's path in a place a job could
        // read it; the blob reaches a runner only as its input variable, and no agent holds it.
        for (task, name) in [(&task_a, "local-a"), (&task_b, "local-b")] {
            let folder = backend.task_folder(name);
            let path = handoff_path(&backend, name).display().to_string();
            let pids = runner_pids(&folder);
            assert_eq!(pids.len(), 1, "one runner process in {}", folder.display());
            let runner_env = environ(pids[0]);
            assert!(
                !runner_env.contains(&path),
                "runner env holds the file path"
            );
            assert!(!runner_env.contains("RUNNER_JIT_CONFIG"));
            for blob in &blobs {
                assert!(
                    runner_env
                        .lines()
                        .filter(|l| l.contains(blob.as_str()))
                        .all(|l| l.starts_with("ACTIONS_RUNNER_INPUT_JITCONFIG=")),
                    "the blob reaches the runner only as its input variable"
                );
            }
            let agent_pid = backend.agent_pid(&task.id).unwrap() as i32;
            let agent_env = environ(agent_pid);
            assert!(agent_env.contains(&format!("RUNNER_JIT_CONFIG_FILE={path}")));
            for blob in &blobs {
                assert!(
                    !agent_env.contains(blob.as_str()),
                    "the agent's env holds a blob"
                );
            }
            for line in agent_env.lines() {
                let var = line.split('=').next().unwrap_or_default();
                assert!(
                    var == "RUNNER_JIT_CONFIG_FILE" || !hangar::agent::env::is_forbidden(var),
                    "the agent was given {var}"
                );
            }
            assert!(!agent_env.contains(hangar_emulator::SEED_PAT));
        }

        // A job for the pool's labels runs on one of them; that ephemeral runner's agent exits.
        let dump = root.path.join("step-env.txt");
        let job_id = emu.enqueue_job(
            JobSpec::new(REPO, "local-job")
                .labels(["self-hosted", POOL])
                .step("dump", &format!("env > {}", dump.display())),
        );
        let job = emu
            .wait_for_job(job_id, Duration::from_secs(30))
            .await
            .expect("the job completes");
        assert_eq!(job.conclusion, Some(Conclusion::Success), "{job:?}");
        let step_env = std::fs::read_to_string(&dump).unwrap();
        for blob in &blobs {
            assert!(!step_env.contains(blob.as_str()), "a job sees a JIT config");
        }
        assert!(!step_env.contains("RUNNER_JIT_CONFIG"));
        let runner_id = job.runner_id.expect("a runner took the job");
        let (done, idle) = if runner_id == ids[0] {
            (&task_a, &task_b)
        } else {
            assert_eq!(runner_id, ids[1]);
            (&task_b, &task_a)
        };
        let stopped = wait_for_state(&backend, &done.id, TaskState::Stopped, 20).await;
        assert_eq!(stopped.stop_reason.as_deref(), Some("exit status 0"));
        assert_eq!(
            task(&backend, &idle.id).await.map(|t| t.state),
            Some(TaskState::Running)
        );

        // A restarted controller: a new backend on the same work root knows both tasks.
        let restarted = root.backend();
        let listed = restarted.list(POOL).await.unwrap();
        assert_eq!(listed.len(), 2, "{listed:?}");
        let seen = |id: &str| listed.iter().find(|t| t.id == id).unwrap().clone();
        assert_eq!(seen(&done.id).state, TaskState::Stopped);
        assert_eq!(seen(&done.id).stop_reason.as_deref(), Some("exit status 0"));
        assert_eq!(seen(&done.id).tags, done.tags);
        assert_eq!(seen(&idle.id).state, TaskState::Running);
        assert_eq!(seen(&idle.id).tags, idle.tags);
        assert_eq!(seen(&idle.id).created_at, idle.created_at);

        // It stops the idle runner its predecessor started: one SIGTERM, and the agent ends
        // its runner cleanly (exit 0, not a kill).
        let idle_name = idle.tags.runner_name.clone();
        restarted.stop(&idle.id, "idle").await.unwrap();
        let now = task(&restarted, &idle.id).await.unwrap().state;
        assert!(
            matches!(now, TaskState::Stopping | TaskState::Stopped),
            "{now:?}"
        );
        restarted.stop(&idle.id, "idle again").await.unwrap();
        let stopped = wait_for_state(&restarted, &idle.id, TaskState::Stopped, 20).await;
        // The instance that spawned it records the exit status; the new one picks it up.
        wait_until(5, "the exit status from the spawning instance", || {
            std::fs::read_to_string(restarted.task_folder(&idle_name).join("task.json"))
                .is_ok_and(|t| t.contains("exit status 0"))
        })
        .await;
        let stopped_again = task(&restarted, &idle.id).await.unwrap();
        assert_eq!(
            stopped_again.stop_reason.as_deref(),
            Some("exit status 0 (stopped: idle)"),
            "first seen as {:?}",
            stopped.stop_reason
        );
        assert_eq!(
            task(&backend, &idle.id)
                .await
                .unwrap()
                .stop_reason
                .as_deref(),
            Some("exit status 0 (stopped: idle)"),
            "the spawning instance keeps the stop request its successor recorded"
        );
        assert!(runner_pids(&restarted.task_folder(&idle_name)).is_empty());
        let log = agent_log(&restarted, &idle_name);
        assert!(log.contains("stop requested"), "{log}");
        assert_eq!(
            log.matches("\"stop requested\"").count(),
            1,
            "one signal only:\n{log}"
        );

        // The agent holds no credentials, so its runner stays registered, offline and idle,
        // for the controller to remove, which it can (not busy).
        let left = emu.runners(&emu_repo());
        assert_eq!(left.len(), 1, "{left:?}");
        assert!(!left[0].online && !left[0].busy, "{left:?}");
        let gh = support::pat_client(&emu, hangar_emulator::SEED_PAT);
        assert_eq!(
            gh.delete_runner(&support::repo(), left[0].id)
                .await
                .unwrap(),
            RunnerRemoval::Removed
        );
        assert!(emu.runners(&emu_repo()).is_empty());
        for blob in &blobs {
            for name in ["local-a", "local-b"] {
                assert!(!agent_log(&backend, name).contains(blob.as_str()));
            }
        }
        assert_eq!(
            restarted.shutdown_all(Duration::from_secs(5)).await,
            ShutdownReport::default(),
            "nothing left to stop"
        );
    })
    .await
}

#[tokio::test]
async fn shutdown_terminates_idle_agents_and_kills_a_busy_one_after_the_grace() {
    within(90, async {
        let emu = emulator().await;
        let mut root = WorkRoot::new("shutdown");
        let backend = root.backend();
        let idle = backend
            .launch(jit_launch(&emu, "idle-1").await)
            .await
            .unwrap();
        let busy_request = jit_launch(&emu, "busy-1").await;
        let busy_runner = busy_request.tags.runner_id;
        let busy = backend.launch(busy_request).await.unwrap();
        wait_until(30, "both runners online", || {
            let runners = emu.runners(&emu_repo());
            runners.len() == 2 && runners.iter().all(|r| r.online)
        })
        .await;
        // Both runners match; the job lands on whichever polls first. A marker names the step.
        let marker = format!("37.{}", rand::random::<u16>());
        let job_id = emu.enqueue_job(
            JobSpec::new(REPO, "long")
                .labels([POOL])
                .step("long", &format!("sleep {marker}")),
        );
        wait_until(20, "the long step to run", || {
            emu.job(job_id).is_some_and(|j| {
                j.status == JobStatus::InProgress
                    && j.steps.first().is_some_and(|s| s.started_at.is_some())
            })
        })
        .await;
        let holder = emu.job(job_id).unwrap().runner_id.unwrap();
        let (busy, idle) = if holder == busy_runner {
            (busy, idle)
        } else {
            (idle, busy)
        };
        let step_running = || {
            std::fs::read_dir("/proc")
                .unwrap()
                .flatten()
                .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
                .any(|c| String::from_utf8_lossy(&c).contains(&marker))
        };
        assert!(step_running());

        // Stopping the busy one lets its job run on: the agent drains, the task is Stopping.
        backend.stop(&busy.id, "scale-in").await.unwrap();
        let busy_log = || agent_log(&backend, &busy.tags.runner_name);
        wait_until(10, "the busy agent to start draining", || {
            busy_log().contains("a job is running: letting it finish")
        })
        .await;
        assert_eq!(
            task(&backend, &busy.id).await.unwrap().state,
            TaskState::Stopping
        );
        assert!(step_running(), "the job runs on while draining");

        let report = backend.shutdown_all(Duration::from_secs(2)).await;
        assert_eq!(report.stopped, vec![idle.id.clone()], "{report:?}");
        assert_eq!(report.killed, vec![busy.id.clone()], "{report:?}");
        let killed = task(&backend, &busy.id).await.unwrap();
        assert_eq!(killed.state, TaskState::Stopped);
        assert_eq!(
            killed.stop_reason.as_deref(),
            Some("killed by signal 9 (SIGKILL) (stopped: scale-in)")
        );
        // The shutdown sent it no second SIGTERM (which would have cancelled the job).
        assert_eq!(
            busy_log().matches("\"stop requested\"").count(),
            1,
            "{}",
            busy_log()
        );
        assert!(!busy_log().contains("cancelling the running job"));
        let ended = task(&backend, &idle.id).await.unwrap();
        assert_eq!(
            ended.stop_reason.as_deref(),
            Some("exit status 0 (stopped: controller shutdown)")
        );
        for t in [&busy, &idle] {
            assert!(
                runner_pids(&backend.task_folder(&t.tags.runner_name)).is_empty(),
                "no runner left behind"
            );
        }
        wait_until(5, "the job's step to be gone", || !step_running()).await;
    })
    .await
}

#[tokio::test]
async fn failed_launches_leave_nothing_behind_and_stopped_tasks_are_cleaned_up() {
    within(60, async {
        let mut root = WorkRoot::new("faults");
        let backend = root.backend().retain_stopped_for(Duration::ZERO);

        // Injected capacity errors, as RunTask gives them, then a launch that gets through.
        backend.fail_next_launches(2, BackendError::Capacity("no room".into()));
        for _ in 0..2 {
            let err = backend.launch(request("r1", 1, "blob")).await.unwrap_err();
            assert_eq!(err, BackendError::Capacity("no room".into()));
        }
        assert!(!backend.task_folder("r1").exists());
        assert!(!handoff_path(&backend, "r1").exists());
        assert!(backend.list(POOL).await.unwrap().is_empty());

        // A name that is no file name is a configuration error, and writes nothing.
        let err = backend
            .launch(request("../r1", 1, "blob"))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, BackendError::Config(m) if m.contains("runner name")),
            "{err}"
        );
        assert!(!root.path.parent().unwrap().join("r1.jit").exists());

        // An agent that refuses its configuration is a task that stopped with its exit code;
        // it still consumed (deleted) its one-shot file.
        let refused = backend
            .launch(request("r1", 1, "not-a-jit-config"))
            .await
            .unwrap();
        assert_eq!(refused.state, TaskState::Running);
        let stopped = wait_for_state(&backend, &refused.id, TaskState::Stopped, 20).await;
        assert_eq!(stopped.stop_reason.as_deref(), Some("exit status 2"));
        assert!(
            agent_log(&backend, "r1").contains("JIT runner configuration is not valid"),
            "{}",
            agent_log(&backend, "r1")
        );
        assert!(!agent_log(&backend, "r1").contains("not-a-jit-config"));
        assert!(!handoff_path(&backend, "r1").exists());
        // Reported stopped once, then (retention zero) its folder goes.
        assert!(backend.list(POOL).await.unwrap().is_empty());
        assert!(!backend.task_folder("r1").exists());

        // A binary that cannot be run: a configuration error naming the fix, nothing left.
        let not_executable = root.path.join("not-hangar");
        std::fs::write(&not_executable, "not a program").unwrap();
        let broken =
            LocalBackend::new(support::repo(), &root.launch_settings(&not_executable)).unwrap();
        let err = broken.launch(request("r2", 2, "blob")).await.unwrap_err();
        assert!(
            matches!(&err, BackendError::Config(m) if m.contains("hangar_binary")),
            "{err}"
        );
        assert!(!broken.task_folder("r2").exists());
        assert!(!handoff_path(&broken, "r2").exists());

        // Credentials in the pool's env are refused before anything runs.
        let mut leaky = root.launch_settings(Path::new(env!("CARGO_BIN_EXE_hangar")));
        leaky
            .env
            .insert("GITHUB_PAT".into(), hangar_emulator::SEED_PAT.into());
        let err = LocalBackend::new(support::repo(), &leaky).err().unwrap();
        assert!(
            matches!(&err, BackendError::Config(m) if m.contains("GITHUB_PAT")),
            "{err}"
        );
        assert!(!err.to_string().contains(hangar_emulator::SEED_PAT));

        // A task left pending by a controller that died mid-launch: listed Pending; a stop
        // ends it before it ever starts and removes its one-shot file.
        let half = backend.task_folder("half-launched");
        std::fs::create_dir_all(&half).unwrap();
        std::fs::write(
            half.join("task.json"),
            r#"{"id":"local-half-launched","pool":"local-pool","runner_name":"half-launched","runner_id":9,"created_at":"2026-01-01T00:00:00Z"}"#,
        )
        .unwrap();
        let stale = handoff_path(&backend, "half-launched");
        support::agent::one_shot_file(&stale, "blob");
        let pending = task(&backend, "local-half-launched").await.unwrap();
        assert_eq!((pending.state, pending.tags.runner_id), (TaskState::Pending, 9));
        backend
            .stop("local-half-launched", "stuck pending")
            .await
            .unwrap();
        let ended = task(&backend, "local-half-launched").await.unwrap();
        assert_eq!(ended.state, TaskState::Stopped);
        assert!(
            ended
                .stop_reason
                .as_deref()
                .is_some_and(|r| r.starts_with("never started")),
            "{ended:?}"
        );
        assert!(!stale.exists());
        assert!(backend.list(POOL).await.unwrap().is_empty());
        assert!(!half.exists(), "cleaned up once reported stopped");

        // Leftover one-shot files are listed and deleted; nothing else can be.
        let leftover = handoff_path(&backend, "never-started");
        support::agent::one_shot_file(&leftover, "blob");
        let handoffs = backend.list_handoffs(POOL).await.unwrap();
        assert_eq!(handoffs.len(), 1, "{handoffs:?}");
        assert_eq!(handoffs[0].runner_name, "never-started");
        let name = handoffs[0].name.clone();
        backend.delete_handoff(&name).await.unwrap();
        assert!(!leftover.exists());
        backend.delete_handoff(&name).await.unwrap();
        let outside = root.path.join("r1").with_extension("txt");
        assert!(matches!(
            backend.delete_handoff(&outside.display().to_string()).await,
            Err(BackendError::Config(_))
        ));

        // Stopping an unknown task is fine.
        backend.stop("local-nobody", "gone").await.unwrap();
        backend.stop("arn:aws:ecs:whatever", "gone").await.unwrap();
    })
    .await
}
