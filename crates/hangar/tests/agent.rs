//! `hangar agent` end to end: the real binary supervising the stand-in runner against the GitHub
//! emulator, on loopback. Each test owns its emulator, runner folder and agent process.

mod support;

use std::time::{Duration, Instant};

use hangar_emulator::{Conclusion, JobSpec, JobStatus, RunnerMessage, Scope as EmuScope};
use nix::sys::signal::Signal;
use support::agent::{
    Agent, RunnerDir, app_env, base_env, jit_blob_for, pat_env, protection_endpoint,
    protection_states, runner_pids, wait_until,
};
use support::{ORG, REPO, emulator, within};

fn emu_repo() -> EmuScope {
    EmuScope::repo("your-organization", "your-repository-name")
}

fn emu_org() -> EmuScope {
    EmuScope::org(ORG)
}

fn env(parts: &[Vec<(String, String)>]) -> Vec<(String, String)> {
    parts.concat()
}

fn with(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Waits until exactly one runner is registered in `scope` and online; returns its id.
async fn online_runner(emu: &hangar_emulator::Emulator, scope: &EmuScope, agent: &Agent) -> u64 {
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        let runners = emu.runners(scope);
        if let [r] = runners.as_slice()
            && r.online
        {
            return r.id;
        }
        if Instant::now() > until {
            panic!(
                "no online runner; runners {runners:?}; agent logs:\n{}",
                agent.logs()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn run_job(
    emu: &hangar_emulator::Emulator,
    spec: JobSpec,
    agent: &Agent,
) -> hangar_emulator::JobView {
    let id = emu.enqueue_job(spec);
    match emu.wait_for_job(id, Duration::from_secs(30)).await {
        Some(job) => job,
        None => panic!(
            "job {id} did not complete: {:?}\nagent logs:\n{}",
            emu.job(id),
            agent.logs()
        ),
    }
}

/// Moto's endpoint and test credentials, as an agent's environment.
fn moto_env(moto: &support::moto::Moto) -> Vec<(String, String)> {
    moto.env()
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
}

/// Enqueues a job and waits until its first step runs.
async fn start_job(emu: &hangar_emulator::Emulator, spec: JobSpec) -> u64 {
    let id = emu.enqueue_job(spec);
    wait_until(20, "the job's first step to run", || {
        emu.job(id).is_some_and(|j| {
            j.status == JobStatus::InProgress
                && j.steps.first().is_some_and(|s| s.started_at.is_some())
        })
    })
    .await;
    id
}

#[tokio::test]
async fn repo_runner_with_a_pat_runs_a_job_and_leaves_github_on_sigterm() {
    within(60, async {
        let emu = emulator().await;
        let dir = RunnerDir::new("repo");
        let mut agent = Agent::start(&env(&[
            base_env(&emu, &dir),
            pat_env(),
            with(&[("RUNNER_LABELS", "linux,hangar")]),
        ]));
        let id = online_runner(&emu, &emu_repo(), &agent).await;
        let runner = emu.runner(id).unwrap();
        assert!(
            runner.name.starts_with("aws-github-runner-"),
            "{}",
            runner.name
        );
        assert!(runner.labels.iter().any(|l| l == "hangar"));

        let job = run_job(
            &emu,
            JobSpec::new(REPO, "build")
                .labels(["self-hosted", "hangar"])
                .step("hello", "echo hello from $GITHUB_REPOSITORY"),
            &agent,
        )
        .await;
        assert_eq!(job.conclusion, Some(Conclusion::Success), "{job:?}");
        assert_eq!(job.runner_id, Some(id));
        assert!(job.log.iter().any(|l| {
            l.text
                .contains("hello from your-organization/your-repository-name")
        }));

        // The runner prints its result line just after it reports the job.
        wait_until(5, "the runner's result line", || {
            agent.events("runner finished a job").len() == 1
        })
        .await;
        let finished = agent.events("runner finished a job");
        assert_eq!(
            (finished[0]["job"].as_str(), finished[0]["result"].as_str()),
            (Some("build"), Some("Succeeded"))
        );
        let stop = Instant::now();
        agent.signal(Signal::SIGTERM);
        assert_eq!(agent.exit_code(10).await, 0, "{}", agent.logs());
        assert!(
            stop.elapsed() < Duration::from_secs(5),
            "idle stop took {:?}",
            stop.elapsed()
        );
        assert!(
            emu.runners(&emu_repo()).is_empty(),
            "the registration is removed"
        );
        assert!(!dir.configured(), "local config is cleaned");
        assert!(runner_pids(&dir.root).is_empty(), "no runner left behind");
        let logs = agent.logs();
        assert!(
            !logs.contains(hangar_emulator::SEED_PAT),
            "the PAT never reaches the logs"
        );
    })
    .await
}

#[tokio::test]
async fn a_runner_home_of_200_characters_works() {
    within(60, async {
        let emu = emulator().await;
        // Install folders such as /var/lib/github-runners/<org>/<repo>/<name>/actions-runner
        // are common; nothing of the agent's may depend on their length.
        let probe = RunnerDir::new("len");
        // The random part of the name varies in length: ten more characters cover it.
        let room = 200 + 10 - probe.root.as_os_str().len();
        drop(probe);
        let dir = RunnerDir::new(&format!("len{}", "h".repeat(room - 3)));
        let len = dir.root.as_os_str().len();
        assert!((200..=210).contains(&len), "{len}: {}", dir.root.display());
        let mut agent = Agent::start(&env(&[base_env(&emu, &dir), pat_env()]));
        online_runner(&emu, &emu_repo(), &agent).await;
        let job = run_job(
            &emu,
            JobSpec::new(REPO, "long-home").step("ok", "true"),
            &agent,
        )
        .await;
        assert_eq!(job.conclusion, Some(Conclusion::Success), "{job:?}");
        wait_until(5, "the job's hooks reached the agent", || {
            agent.events("job completed").len() == 1
        })
        .await;
        agent.signal(Signal::SIGTERM);
        assert_eq!(agent.exit_code(10).await, 0);
    })
    .await
}

#[tokio::test]
async fn org_runner_with_the_app_takes_jobs_from_any_repository_of_the_org() {
    within(60, async {
        let emu = emulator().await;
        let dir = RunnerDir::new("org");
        let mut agent = Agent::start(&env(&[base_env(&emu, &dir), app_env()]));
        let id = online_runner(&emu, &emu_org(), &agent).await;
        let job = run_job(
            &emu,
            JobSpec::new(REPO, "test")
                .labels(["self-hosted", "linux"])
                .step("t", "true"),
            &agent,
        )
        .await;
        assert_eq!(job.conclusion, Some(Conclusion::Success));
        assert_eq!(job.runner_id, Some(id));
        agent.signal(Signal::SIGTERM);
        assert_eq!(agent.exit_code(10).await, 0, "{}", agent.logs());
        assert!(emu.runners(&emu_org()).is_empty());
    })
    .await
}

#[tokio::test]
async fn a_jit_runner_given_directly_runs_one_job_and_exits_0() {
    within(60, async {
        let emu = emulator().await;
        let dir = RunnerDir::new("jit");
        let blob = jit_blob_for(
            &emu,
            &support::repo(),
            "jit-runner-1",
            &["self-hosted", "jit"],
        )
        .await;
        // No GitHub credentials at all: the launcher owns the registration.
        let mut agent = Agent::start(&env(&[
            base_env(&emu, &dir),
            with(&[("GITHUB_REPOSITORY", REPO), ("RUNNER_JIT_CONFIG", &blob)]),
        ]));
        online_runner(&emu, &emu_repo(), &agent).await;
        let job = run_job(
            &emu,
            JobSpec::new(REPO, "jit-job")
                .labels(["jit"])
                .step("s", "echo jit"),
            &agent,
        )
        .await;
        assert_eq!(job.conclusion, Some(Conclusion::Success));
        assert_eq!(agent.exit_code(15).await, 0, "{}", agent.logs());
        assert!(
            emu.runners(&emu_repo()).is_empty(),
            "GitHub removed the ephemeral runner"
        );
        assert!(
            !agent.logs().contains(&blob),
            "the JIT config never reaches the logs"
        );
    })
    .await
}

#[tokio::test]
async fn a_jit_config_from_a_one_shot_ssm_parameter_is_read_then_deleted() {
    within(90, async {
        let moto = support::moto::Moto::start();
        let emu = emulator().await;
        let dir = RunnerDir::new("jit-ssm");
        let blob = jit_blob_for(&emu, &support::org(), "jit-ssm-1", &["self-hosted"]).await;
        let name = "/hangar/jit/jit-ssm-1";
        moto.put(name, &blob, true).await;
        let mut agent = Agent::start(&env(&[
            base_env(&emu, &dir),
            moto_env(&moto),
            with(&[
                ("RUNNER_SCOPE", "org"),
                ("GITHUB_ORG", ORG),
                ("RUNNER_JIT_CONFIG_PARAMETER", name),
            ]),
        ]));
        online_runner(&emu, &emu_org(), &agent).await;
        let ssm = aws_sdk_ssm::Client::new(&moto.sdk_config());
        let gone = ssm.get_parameter().name(name).send().await;
        assert!(gone.is_err(), "the one-shot parameter is deleted once read");
        let job = run_job(&emu, JobSpec::new(REPO, "j").step("s", "true"), &agent).await;
        assert_eq!(job.conclusion, Some(Conclusion::Success));
        assert_eq!(agent.exit_code(15).await, 0, "{}", agent.logs());

        // A second task given the same (now deleted) name fails clearly, registering nothing.
        let dir2 = RunnerDir::new("jit-ssm-2");
        let mut again = Agent::start(&env(&[
            base_env(&emu, &dir2),
            moto_env(&moto),
            with(&[
                ("RUNNER_SCOPE", "org"),
                ("GITHUB_ORG", ORG),
                ("RUNNER_JIT_CONFIG_PARAMETER", name),
            ]),
        ]));
        assert_eq!(again.exit_code(15).await, 1);
        assert!(again.logs().contains("does not exist"), "{}", again.logs());
    })
    .await
}

#[tokio::test]
async fn a_jit_config_from_a_one_shot_file_is_read_then_deleted() {
    within(60, async {
        let emu = emulator().await;
        let dir = RunnerDir::new("jit-file");
        let blob = jit_blob_for(
            &emu,
            &support::repo(),
            "jit-file-1",
            &["self-hosted", "jit-file"],
        )
        .await;
        let handoff = support::agent::one_shot_file(&dir.root.with_extension("jit"), &blob);
        let handoff_text = handoff.display().to_string();
        let file_env = with(&[
            ("GITHUB_REPOSITORY", REPO),
            ("RUNNER_JIT_CONFIG_FILE", &handoff_text),
        ]);
        let mut agent = Agent::start(&env(&[base_env(&emu, &dir), file_env.clone()]));
        online_runner(&emu, &emu_repo(), &agent).await;
        assert!(!handoff.exists(), "the one-shot file is deleted once read");
        assert_eq!(agent.events("runner registered").len(), 1);
        let pids = runner_pids(&dir.root);
        assert_eq!(pids.len(), 1);
        let environ = std::fs::read(format!("/proc/{}/environ", pids[0])).unwrap();
        let environ = String::from_utf8_lossy(&environ).replace('\0', "\n");
        for leak in [handoff_text.as_str(), "RUNNER_JIT_CONFIG"] {
            assert!(
                !environ.contains(leak),
                "the runner's environment holds {leak}"
            );
        }
        assert!(
            environ
                .lines()
                .filter(|l| l.contains(&blob))
                .all(|l| l.starts_with("ACTIONS_RUNNER_INPUT_JITCONFIG=")),
            "the blob reaches the runner only as its input variable"
        );
        let dump = dir.root.join("step-env.txt");
        let job = run_job(
            &emu,
            JobSpec::new(REPO, "file-job")
                .labels(["jit-file"])
                .step("dump", &format!("env > {}", dump.display())),
            &agent,
        )
        .await;
        let step_env = std::fs::read_to_string(&dump).unwrap();
        for leak in [blob.as_str(), handoff_text.as_str(), "RUNNER_JIT_CONFIG"] {
            assert!(
                !step_env.contains(leak),
                "the job's environment holds {leak}"
            );
        }
        assert_eq!(job.conclusion, Some(Conclusion::Success));
        assert_eq!(agent.exit_code(15).await, 0, "{}", agent.logs());
        assert!(
            !agent.logs().contains(&blob),
            "the JIT config never reaches the logs"
        );

        // A second agent given the same, now missing, file refuses with the fix.
        let dir2 = RunnerDir::new("jit-file-2");
        let mut again = Agent::start(&env(&[base_env(&emu, &dir2), file_env]));
        assert_eq!(again.exit_code(15).await, 2, "{}", again.logs());
        assert!(
            again.logs().contains("does not exist") && again.logs().contains("launch a new task"),
            "{}",
            again.logs()
        );
        assert!(again.events("runner registered").is_empty());
        assert!(runner_pids(&dir2.root).is_empty(), "no runner was started");
        assert!(emu.runners(&emu_repo()).is_empty(), "nothing is registered");
    })
    .await
}

#[tokio::test]
async fn sigterm_while_busy_lets_the_job_finish_then_deregisters() {
    within(60, async {
        let emu = emulator().await;
        let dir = RunnerDir::new("busy");
        let mut agent = Agent::start(&env(&[base_env(&emu, &dir), pat_env()]));
        online_runner(&emu, &emu_repo(), &agent).await;
        let id = start_job(
            &emu,
            JobSpec::new(REPO, "long").step("work", "sleep 2; echo finished"),
        )
        .await;
        agent.signal(Signal::SIGTERM);
        assert_eq!(agent.exit_code(30).await, 0, "{}", agent.logs());
        let job = emu.job(id).unwrap();
        assert_eq!(
            job.conclusion,
            Some(Conclusion::Success),
            "the job was not cancelled: {job:?}"
        );
        assert!(job.log.iter().any(|l| l.text.contains("finished")));
        assert!(
            emu.runners(&emu_repo()).is_empty(),
            "deregistered after the job"
        );
        assert!(agent.logs().contains("letting it finish"));
    })
    .await
}

#[tokio::test]
async fn sigterm_while_busy_past_the_drain_budget_cancels_the_job_and_reports_it() {
    within(60, async {
        let emu = emulator().await;
        let dir = RunnerDir::new("drain");
        let mut agent = Agent::start(&env(&[
            base_env(&emu, &dir),
            pat_env(),
            with(&[("HANGAR_DRAIN_TIMEOUT", "1s")]),
        ]));
        online_runner(&emu, &emu_repo(), &agent).await;
        let id = start_job(
            &emu,
            JobSpec::new(REPO, "endless").step("work", "sleep 120"),
        )
        .await;
        let t = Instant::now();
        agent.signal(Signal::SIGTERM);
        assert_eq!(agent.exit_code(30).await, 0, "{}", agent.logs());
        assert!(t.elapsed() < Duration::from_secs(15), "{:?}", t.elapsed());
        let job = emu.job(id).unwrap();
        assert_eq!(job.status, JobStatus::Completed);
        assert_eq!(
            job.conclusion,
            Some(Conclusion::Cancelled),
            "ended as Cancelled, not killed silently"
        );
        assert!(emu.runners(&emu_repo()).is_empty());
        assert!(agent.logs().contains("drain budget ran out"));
    })
    .await
}

#[tokio::test]
async fn a_second_signal_cancels_at_once() {
    within(60, async {
        let emu = emulator().await;
        let dir = RunnerDir::new("twice");
        let mut agent = Agent::start(&env(&[base_env(&emu, &dir), pat_env()]));
        online_runner(&emu, &emu_repo(), &agent).await;
        let id = start_job(
            &emu,
            JobSpec::new(REPO, "endless").step("work", "sleep 120"),
        )
        .await;
        agent.signal(Signal::SIGTERM);
        tokio::time::sleep(Duration::from_millis(300)).await;
        let t = Instant::now();
        agent.signal(Signal::SIGINT);
        assert_eq!(agent.exit_code(20).await, 0, "{}", agent.logs());
        assert!(t.elapsed() < Duration::from_secs(10));
        assert_eq!(emu.job(id).unwrap().conclusion, Some(Conclusion::Cancelled));
        assert!(emu.runners(&emu_repo()).is_empty());
    })
    .await
}

#[tokio::test]
async fn a_crashed_runner_restarts_without_a_ghost_registration() {
    within(60, async {
        let emu = emulator().await;
        emu.set_session_timeout(Duration::from_secs(1));
        let dir = RunnerDir::new("crash");
        let mut agent = Agent::start(&env(&[base_env(&emu, &dir), pat_env()]));
        let id = online_runner(&emu, &emu_repo(), &agent).await;
        let sessions = emu.sessions_created(id);
        for pid in runner_pids(&dir.root) {
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGKILL).unwrap();
        }
        // The stale session makes the next start fail with a session conflict (exit 5) until it
        // expires; the agent backs off and tries again.
        wait_until(20, "a new session", || {
            emu.sessions_created(id) > sessions && emu.session_live(id)
        })
        .await;
        let runners = emu.runners(&emu_repo());
        assert_eq!(runners.len(), 1, "{runners:?}");
        assert_eq!(runners[0].id, id, "the same registration");
        let job = run_job(
            &emu,
            JobSpec::new(REPO, "after-crash").step("s", "true"),
            &agent,
        )
        .await;
        assert_eq!(job.conclusion, Some(Conclusion::Success));
        let logs = agent.logs();
        assert!(logs.contains("killed by signal 9"), "{logs}");
        assert!(
            logs.contains("exit code 5, session conflict"),
            "the stale session was met: {logs}"
        );
        agent.signal(Signal::SIGTERM);
        assert_eq!(agent.exit_code(10).await, 0);
    })
    .await
}

#[tokio::test]
async fn a_crashed_agent_is_replaced_by_the_next_start_not_left_as_a_ghost() {
    within(60, async {
        let emu = emulator().await;
        let dir = RunnerDir::new("agent-crash");
        let env_ = env(&[base_env(&emu, &dir), pat_env()]);
        let mut first = Agent::start(&env_);
        let old = online_runner(&emu, &emu_repo(), &first).await;
        let old_name = emu.runner(old).unwrap().name;
        first.signal(Signal::SIGKILL);
        first.exit_code(5).await;
        let mut second = Agent::start(&env_);
        wait_until(20, "the new runner online", || {
            let rs = emu.runners(&emu_repo());
            rs.len() == 1 && rs[0].online && rs[0].id != old
        })
        .await;
        let rs = emu.runners(&emu_repo());
        assert_eq!(rs[0].name, old_name, "the name is kept");
        // The orphaned runner of the killed agent notices its registration is gone and exits.
        wait_until(10, "the orphaned runner to exit", || {
            runner_pids(&dir.root).len() == 1
        })
        .await;
        second.signal(Signal::SIGTERM);
        assert_eq!(second.exit_code(10).await, 0);
        assert!(emu.runners(&emu_repo()).is_empty());
    })
    .await
}

#[tokio::test]
async fn exit_codes_restart_refresh_and_stop_on_deprecation() {
    within(60, async {
        let emu = emulator().await;
        let dir = RunnerDir::new("codes");
        let mut agent = Agent::start(&env(&[
            base_env(&emu, &dir),
            pat_env(),
            with(&[
                ("RUNNER_PASS_ENV", "HANGAR_STANDIN_POLL_SECS,HANGAR_STANDIN_RETRY_SECS,ACTIONS_RUNNER_RETURN_VERSION_DEPRECATED_EXIT_CODE"),
                ("ACTIONS_RUNNER_RETURN_VERSION_DEPRECATED_EXIT_CODE", "1"),
            ]),
        ]));
        let id = online_runner(&emu, &emu_repo(), &agent).await;
        // 6: configuration refreshed -> restarted at once, not counted as a failure.
        let sessions = emu.sessions_created(id);
        emu.send_runner_message(id, RunnerMessage::RefreshConfig);
        wait_until(15, "a restart after refresh", || emu.sessions_created(id) > sessions && emu.session_live(id)).await;
        // An update request is ignored: we run with --disableupdate.
        let sessions = emu.sessions_created(id);
        emu.send_runner_message(id, RunnerMessage::Update { target_version: "9.9.9".into() });
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert_eq!(emu.sessions_created(id), sessions);
        // 7: version deprecated -> terminal: exit 1 with the fix, registration removed.
        emu.send_runner_message(id, RunnerMessage::VersionDeprecated);
        assert_eq!(agent.exit_code(20).await, 1, "{}", agent.logs());
        let logs = agent.logs();
        assert!(logs.contains("exit code 6, configuration refreshed"), "{logs}");
        assert!(logs.contains("supported actions/runner release"), "{logs}");
        assert!(emu.runners(&emu_repo()).is_empty(), "no ghost after a terminal failure");
    })
    .await
}

#[tokio::test]
async fn retryable_failures_back_off_and_give_up_after_the_limit() {
    within(60, async {
        let emu = emulator().await;
        let dir = RunnerDir::new("giveup");
        let mut agent = Agent::start(&env(&[
            base_env(&emu, &dir),
            pat_env(),
            with(&[("HANGAR_MAX_RESTARTS", "2")]),
        ]));
        online_runner(&emu, &emu_repo(), &agent).await;
        // The runner's own endpoints fail from now on: exit 2 (retryable) each time.
        emu.fail_runner_protocol_next(10_000, 503);
        let code = agent.exit_code(40).await;
        assert_eq!(code, 1, "{}", agent.logs());
        let logs = agent.logs();
        assert!(logs.contains("exit code 2, retryable error"), "{logs}");
        assert!(logs.contains("failed 3 times in a row"), "{logs}");
    })
    .await
}

#[tokio::test]
async fn the_watchdog_replaces_a_task_whose_runner_github_deleted() {
    within(60, async {
        let emu = emulator().await;
        let dir = RunnerDir::new("watchdog");
        let mut agent = Agent::start(&env(&[
            base_env(&emu, &dir),
            pat_env(),
            with(&[("HANGAR_WATCHDOG_INTERVAL", "1s")]),
        ]));
        let id = online_runner(&emu, &emu_repo(), &agent).await;
        assert!(emu.remove_runner(id));
        assert_eq!(agent.exit_code(20).await, 3, "{}", agent.logs());
        // The runner notices first here (its session is gone), and the agent asks GitHub.
        assert!(
            agent
                .logs()
                .contains("the runner stopped because GitHub deleted its registration"),
            "{}",
            agent.logs()
        );
        assert!(!dir.configured());
    })
    .await
}

/// Replaces the stand-in with a script: `configure` writes a `.runner` for runner `id`, and
/// `run` does `run_body`.
fn scripted_runner(dir: &RunnerDir, id: u64, run_body: &str) {
    let listener = dir.root.join("bin/Runner.Listener");
    std::fs::remove_file(&listener).unwrap();
    std::fs::write(
        &listener,
        format!(
            "#!/bin/sh\ncase \"$1\" in\n  configure) printf '{{\"agentId\": {id}, \"agentName\": \"fake-runner\"}}' > .runner ;;\n  run) {run_body} ;;\nesac\nexit 0\n"
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&listener, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[tokio::test]
async fn the_watchdog_notices_a_deletion_the_runner_does_not() {
    within(60, async {
        let emu = emulator().await;
        let id = emu.add_runner(
            &emu_repo(),
            hangar_emulator::RunnerSpec::idle("fake-runner", &[]),
        );
        let dir = RunnerDir::new("watchdog-tick");
        // A runner that never notices anything: only the agent's periodic check can.
        scripted_runner(&dir, id, "echo listening; exec sleep 600");
        let mut agent = Agent::start(&env(&[
            base_env(&emu, &dir),
            pat_env(),
            with(&[("HANGAR_WATCHDOG_INTERVAL", "1s")]),
        ]));
        wait_until(10, "the runner to start", || {
            !agent.events("listening").is_empty()
        })
        .await;
        assert!(emu.remove_runner(id));
        assert_eq!(agent.exit_code(20).await, 3, "{}", agent.logs());
        let logs = agent.logs();
        assert!(
            logs.contains("GitHub no longer lists this runner"),
            "{logs}"
        );
        assert!(
            logs.contains("runner exited"),
            "the runner was stopped, not left behind: {logs}"
        );
    })
    .await
}

#[tokio::test]
async fn an_ephemeral_runner_with_no_job_gives_up_after_the_idle_timeout() {
    within(60, async {
        let emu = emulator().await;
        let dir = RunnerDir::new("idle");
        let mut agent = Agent::start(&env(&[
            base_env(&emu, &dir),
            pat_env(),
            with(&[("RUNNER_EPHEMERAL", "true"), ("RUNNER_IDLE_TIMEOUT", "2s")]),
        ]));
        online_runner(&emu, &emu_repo(), &agent).await;
        assert_eq!(agent.exit_code(20).await, 3, "{}", agent.logs());
        assert!(
            emu.runners(&emu_repo()).is_empty(),
            "deregistered, not left as a ghost"
        );
    })
    .await
}

/// Runs two one-step jobs on the agent's runner and waits for both completed hooks.
async fn two_jobs(emu: &hangar_emulator::Emulator, agent: &Agent) {
    for name in ["first", "second"] {
        let job = run_job(emu, JobSpec::new(REPO, name).step("ok", "true"), agent).await;
        assert_eq!(job.conclusion, Some(Conclusion::Success), "{job:?}");
    }
    wait_until(5, "both jobs' hooks", || {
        agent.events("job completed").len() == 2
    })
    .await;
}

#[tokio::test]
async fn a_task_outside_a_service_is_asked_about_protection_once_and_never_with_protection_off() {
    within(60, async {
        let emu = emulator().await;
        // The ECS agent answers 409 (not in a service): asked once, then never again.
        let (ecs_uri, calls) = support::agent::protection_endpoint_answering(409).await;
        let dir = RunnerDir::new("no-service");
        let mut agent = Agent::start(&env(&[
            base_env(&emu, &dir),
            pat_env(),
            with(&[("ECS_AGENT_URI", &ecs_uri)]),
        ]));
        online_runner(&emu, &emu_repo(), &agent).await;
        two_jobs(&emu, &agent).await;
        assert_eq!(protection_states(&calls), vec![true], "{}", agent.logs());
        assert!(agent.logs().contains("not part of an ECS service"));
        assert!(
            !agent.logs().contains("could not turn"),
            "no warning per job"
        );
        agent.signal(Signal::SIGTERM);
        assert_eq!(agent.exit_code(10).await, 0);

        // Started by the controller (HANGAR_TASK_PROTECTION=off): never asked.
        let (ecs_uri, calls) = protection_endpoint().await;
        let dir = RunnerDir::new("protection-off");
        let mut agent = Agent::start(&env(&[
            base_env(&emu, &dir),
            pat_env(),
            with(&[
                ("ECS_AGENT_URI", &ecs_uri),
                ("HANGAR_TASK_PROTECTION", "off"),
            ]),
        ]));
        online_runner(&emu, &emu_repo(), &agent).await;
        two_jobs(&emu, &agent).await;
        assert!(protection_states(&calls).is_empty());
        agent.signal(Signal::SIGTERM);
        assert_eq!(agent.exit_code(10).await, 0);
    })
    .await
}

#[tokio::test]
async fn a_forged_completed_hook_mid_job_leaves_the_task_protected_and_follows_no_link() {
    within(60, async {
        let (ecs_uri, calls) = protection_endpoint().await;
        let outside = std::env::temp_dir().join(format!(
            "hangar-outside-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("canary"), "not the job's").unwrap();
        let emu = emulator().await;
        let dir = RunnerDir::new("forged");
        let mut agent = Agent::start(&env(&[
            base_env(&emu, &dir),
            pat_env(),
            with(&[("ECS_AGENT_URI", &ecs_uri)]),
        ]));
        online_runner(&emu, &emu_repo(), &agent).await;
        // The step plants a link to a folder outside the work folder, then calls the completed
        // hook itself, as any workflow step can, and goes on working.
        let step = format!(
            "ln -s '{}' ../../planted && bash \"$ACTIONS_RUNNER_HOOK_JOB_COMPLETED\" && sleep 3",
            outside.display()
        );
        let id = start_job(&emu, JobSpec::new(REPO, "forges").step("forge", &step)).await;
        wait_until(20, "the forged completed hook", || {
            !agent.events("job completed").is_empty()
        })
        .await;
        tokio::time::sleep(Duration::from_millis(1000)).await;
        assert_eq!(
            emu.job(id).unwrap().status,
            JobStatus::InProgress,
            "the job is still running"
        );
        assert_eq!(
            protection_states(&calls),
            vec![true],
            "a forged completed hook must not unprotect a running job"
        );
        // The forged call wiped the job's own workspace (nothing the job could not delete
        // itself), so its completed hook may fail to start there: the job's own business.
        let job = emu.wait_for_job(id, Duration::from_secs(30)).await.unwrap();
        assert_eq!(
            job.steps[0].conclusion,
            Some(Conclusion::Success),
            "{job:?}"
        );
        wait_until(10, "protection off once the job is really over", || {
            protection_states(&calls) == vec![true, false]
        })
        .await;
        assert!(
            outside.join("canary").exists(),
            "the wipe followed a link the job planted"
        );
        agent.signal(Signal::SIGTERM);
        assert_eq!(agent.exit_code(10).await, 0);
        std::fs::remove_dir_all(&outside).ok();
    })
    .await
}

#[tokio::test]
async fn hooks_protect_the_task_during_a_job_and_wipe_the_workspace_after() {
    within(60, async {
        let (ecs_uri, calls) = protection_endpoint().await;
        let emu = emulator().await;
        let dir = RunnerDir::new("hooks");
        let mut agent = Agent::start(&env(&[
            base_env(&emu, &dir),
            pat_env(),
            with(&[("ECS_AGENT_URI", &ecs_uri)]),
        ]));
        online_runner(&emu, &emu_repo(), &agent).await;
        let first = run_job(
            &emu,
            JobSpec::new(REPO, "leaves-a-file").step(
                "write",
                "echo secret > left-behind.txt && mkdir -p ../../_tool/x && ls",
            ),
            &agent,
        )
        .await;
        assert_eq!(first.conclusion, Some(Conclusion::Success), "{first:?}");
        // Protection goes once the runner has no job process left, a moment after the hook.
        wait_until(10, "protection off after the first job", || {
            protection_states(&calls).last() == Some(&false)
        })
        .await;
        let second = run_job(
            &emu,
            JobSpec::new(REPO, "looks-for-it").step(
                "look",
                "test ! -e left-behind.txt && test ! -e ../../_tool/x",
            ),
            &agent,
        )
        .await;
        assert_eq!(
            second.conclusion,
            Some(Conclusion::Success),
            "nothing of one job is visible to the next: {second:?}"
        );
        wait_until(10, "protection off after the second job", || {
            protection_states(&calls).last() == Some(&false)
        })
        .await;

        assert_eq!(protection_states(&calls), vec![true, false, true, false]);
        let calls = calls.lock().unwrap().clone();
        assert_eq!(calls[0]["ExpiresInMinutes"], 360);
        let started = agent.events("job started");
        let completed = agent.events("job completed");
        assert_eq!((started.len(), completed.len()), (2, 2), "{}", agent.logs());
        assert_eq!(started[0]["job"], "leaves-a-file");
        assert!(completed[0]["duration_ms"].as_u64().is_some());
        assert!(completed[0]["workspace_entries_wiped"].as_u64().unwrap() >= 1);
        agent.signal(Signal::SIGTERM);
        assert_eq!(agent.exit_code(10).await, 0);
    })
    .await
}

#[tokio::test]
async fn the_runner_and_its_jobs_never_see_the_agents_credentials() {
    within(60, async {
        let emu = emulator().await;
        let dir = RunnerDir::new("hygiene");
        let dump = dir.root.join("step-env.txt");
        let mut agent = Agent::start(&env(&[
            base_env(&emu, &dir),
            pat_env(),
            with(&[
                ("AWS_ACCESS_KEY_ID", "AKIAHANGARTEST000001"),
                ("AWS_SECRET_ACCESS_KEY", "hangar-test-secret-access-key"),
                (
                    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
                    "/v2/credentials/hangar-test",
                ),
                ("HANGAR_SSM_PREFIX", ""),
            ]),
        ]));
        online_runner(&emu, &emu_repo(), &agent).await;
        let pids = runner_pids(&dir.root);
        assert_eq!(pids.len(), 1);
        let environ = std::fs::read(format!("/proc/{}/environ", pids[0])).unwrap();
        let environ = String::from_utf8_lossy(&environ).replace('\0', "\n");
        let job = run_job(
            &emu,
            JobSpec::new(REPO, "env").step("dump", &format!("env > {}", dump.display())),
            &agent,
        )
        .await;
        assert_eq!(job.conclusion, Some(Conclusion::Success));
        let step_env = std::fs::read_to_string(&dump).unwrap();
        for (what, text) in [("runner", &environ), ("step", &step_env)] {
            for secret in [
                hangar_emulator::SEED_PAT,
                "AKIAHANGARTEST000001",
                "hangar-test-secret-access-key",
                "/v2/credentials/hangar-test",
                "GITHUB_PAT",
                "AWS_",
                "ACTIONS_RUNNER_INPUT",
            ] {
                assert!(
                    !text.contains(secret),
                    "{what} environment holds {secret}:\n{text}"
                );
            }
        }
        assert!(environ.contains("ACTIONS_RUNNER_HOOK_JOB_STARTED="));
        agent.signal(Signal::SIGTERM);
        assert_eq!(agent.exit_code(10).await, 0);
    })
    .await
}

#[tokio::test]
async fn as_root_the_runner_runs_as_the_configured_user_or_not_at_all() {
    if !nix::unistd::geteuid().is_root() {
        return; // switching users needs root; CI runs these tests as root
    }
    within(60, async {
        let emu = emulator().await;
        let dir = RunnerDir::new("user");
        // Without RUNNER_USER or RUNNER_ALLOW_RUNASROOT a root agent refuses, registering nothing.
        let mut refused = Agent::start(&env(&[
            base_env(&emu, &dir),
            pat_env(),
            with(&[("RUNNER_ALLOW_RUNASROOT", "0")]),
        ]));
        assert_eq!(refused.exit_code(10).await, 2);
        assert!(
            refused.logs().contains("RUNNER_USER=runner"),
            "{}",
            refused.logs()
        );
        assert!(emu.runners(&emu_repo()).is_empty());

        let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();
        nix::unistd::chown(&dir.root, Some(nobody.uid), Some(nobody.gid)).unwrap();
        let mut agent = Agent::start(&env(&[
            base_env(&emu, &dir),
            pat_env(),
            with(&[("RUNNER_ALLOW_RUNASROOT", "0"), ("RUNNER_USER", "nobody")]),
        ]));
        online_runner(&emu, &emu_repo(), &agent).await;
        let pid = runner_pids(&dir.root)[0];
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
        assert!(
            uid_line
                .split_whitespace()
                .skip(1)
                .all(|u| u == nobody.uid.to_string()),
            "{uid_line}"
        );
        let job = run_job(
            &emu,
            JobSpec::new(REPO, "whoami").step("id", "test \"$(id -u)\" = \"$(stat -c %u .)\""),
            &agent,
        )
        .await;
        assert_eq!(job.conclusion, Some(Conclusion::Success), "{job:?}");
        // The hooks, run as that user, still reach the root agent's socket.
        wait_until(5, "the job's hooks", || {
            agent.events("job completed").len() == 1
        })
        .await;
        assert!(
            job.log
                .iter()
                .all(|l| !l.text.contains("cannot reach the agent")),
            "{job:?}"
        );
        agent.signal(Signal::SIGTERM);
        assert_eq!(agent.exit_code(10).await, 0);
    })
    .await
}

#[tokio::test]
async fn bad_configuration_fails_fast_with_the_fix_and_registers_nothing() {
    within(30, async {
        let emu = emulator().await;
        let dir = RunnerDir::new("bad");
        let cases: Vec<(Vec<(String, String)>, &str)> = vec![
            (
                with(&[("GITHUB_REPOSITORY", REPO)]),
                "no GitHub credentials found",
            ),
            (
                with(&[("GITHUB_PAT", hangar_emulator::SEED_PAT)]),
                "GITHUB_REPOSITORY=OWNER/REPO",
            ),
            (
                env(&[pat_env(), with(&[("RUNNER_HOME", "/nonexistent/runner")])]),
                "bin/Runner.Listener",
            ),
            (
                env(&[
                    pat_env(),
                    with(&[("RUNNER_JIT_CONFIG", "not-a-jit-config")]),
                ]),
                "JIT runner configuration is not valid",
            ),
        ];
        for (extra, expected) in cases {
            let mut agent = Agent::start(&env(&[base_env(&emu, &dir), extra]));
            assert_eq!(agent.exit_code(10).await, 2, "{expected}: {}", agent.logs());
            assert!(
                agent.logs().contains(expected),
                "want {expected:?} in:\n{}",
                agent.logs()
            );
        }
        let mut revoked = Agent::start(&env(&[
            base_env(&emu, &dir),
            pat_env(),
            with(&[("GITHUB_PAT", "ghp_revokedrevokedrevokedrevokedrevoked0")]),
        ]));
        assert_eq!(revoked.exit_code(10).await, 1, "{}", revoked.logs());
        assert!(emu.runners(&emu_repo()).is_empty());
    })
    .await
}

#[tokio::test]
async fn a_runner_that_keeps_exiting_0_while_registered_is_given_up_on() {
    within(60, async {
        let emu = emulator().await;
        let id = emu.add_runner(
            &emu_repo(),
            hangar_emulator::RunnerSpec::idle("fake-runner", &[]),
        );
        let dir = RunnerDir::new("exits0");
        // A runner whose `run` ends at once with 0: not ephemeral, and GitHub still lists it.
        scripted_runner(&dir, id, "exit 0");
        let mut agent = Agent::start(&env(&[
            base_env(&emu, &dir),
            pat_env(),
            with(&[("HANGAR_MAX_RESTARTS", "2")]),
        ]));
        assert_eq!(agent.exit_code(30).await, 1, "{}", agent.logs());
        assert!(
            agent
                .logs()
                .contains("exited 0 3 times in a row while still registered"),
            "{}",
            agent.logs()
        );
        assert!(emu.runner(id).is_none(), "deregistered on giving up");
        assert!(!dir.configured());
    })
    .await
}

#[tokio::test]
async fn a_job_landing_at_the_idle_timeout_keeps_the_runner() {
    within(60, async {
        let emu = emulator().await;
        let dir = RunnerDir::new("idle-race");
        let mut agent = Agent::start(&env(&[
            base_env(&emu, &dir),
            pat_env(),
            with(&[
                ("RUNNER_EPHEMERAL", "true"),
                ("RUNNER_IDLE_TIMEOUT", "1s"),
                ("HANGAR_DRAIN_TIMEOUT", "1s"),
            ]),
        ]));
        let id = online_runner(&emu, &emu_repo(), &agent).await;
        // GitHub now says busy (a job was just assigned): the idle timeout must not stop it.
        emu.set_runner_busy(id, true);
        wait_until(10, "the idle timeout to pass", || {
            agent.logs().contains("landed just in time")
        })
        .await;
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        assert!(
            emu.runner(id).is_some_and(|r| r.online),
            "the runner was kept"
        );
        assert!(
            agent.child.try_wait().unwrap().is_none(),
            "the agent is still running"
        );
        emu.set_runner_busy(id, false);
        agent.signal(Signal::SIGTERM);
        assert_eq!(agent.exit_code(20).await, 0, "{}", agent.logs());
        assert!(emu.runners(&emu_repo()).is_empty());
    })
    .await
}
