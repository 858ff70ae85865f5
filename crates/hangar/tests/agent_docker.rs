//! `hangar agent` on Docker-capable pools and on pools without Docker (issue 13): the real binary
//! supervising the stand-in runner against the GitHub emulator, with a stand-in Docker daemon on
//! a Unix socket, on loopback. Each test owns its emulator, runner folder, socket and agent.

mod support;

use std::time::{Duration, Instant};

use hangar_emulator::{Conclusion, JobSpec, JobView, Scope as EmuScope};
use nix::sys::signal::Signal;
use support::agent::{
    Agent, RunnerDir, base_env, jit_blob_for, one_shot_file, pat_env, wait_until,
};
use support::docker::{FakeDockerd, SocketDir};
use support::{REPO, emulator, within};

fn emu_repo() -> EmuScope {
    EmuScope::repo("your-organization", "your-repository-name")
}

fn with(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Waits until one runner is registered in the repository and online; returns its id.
async fn online_runner(emu: &hangar_emulator::Emulator, agent: &Agent, secs: u64) -> u64 {
    let until = Instant::now() + Duration::from_secs(secs);
    loop {
        if let [r] = emu.runners(&emu_repo()).as_slice()
            && r.online
        {
            return r.id;
        }
        if Instant::now() > until {
            panic!("no online runner; agent logs:\n{}", agent.logs());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn run_job(emu: &hangar_emulator::Emulator, spec: JobSpec, agent: &Agent) -> JobView {
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

fn log_text(job: &JobView) -> String {
    job.log
        .iter()
        .map(|l| format!("[{}] {}", l.step, l.text))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Whether the agent asked GitHub for anything that registers a runner.
fn registration_calls(emu: &hangar_emulator::Emulator) -> Vec<String> {
    emu.calls()
        .into_iter()
        .filter(|c| c.path.contains("registration-token") || c.path.contains("jitconfig"))
        .map(|c| format!("{} {}", c.method, c.path))
        .collect()
}

#[tokio::test]
async fn a_docker_pool_waits_for_its_daemon_then_registers_and_jobs_see_docker_host() {
    within(60, async {
        let emu = emulator().await;
        let dir = RunnerDir::new("docker");
        let sock = SocketDir::new("dk");
        let dockerd = FakeDockerd::start_after(sock.socket(), Duration::from_millis(1500));
        let started = Instant::now();
        let mut agent = Agent::start(
            &[
                base_env(&emu, &dir),
                pat_env(),
                with(&[
                    ("HANGAR_DOCKER", "1"),
                    ("DOCKER_HOST", &sock.docker_host()),
                    ("HANGAR_DOCKER_WAIT", "20s"),
                ]),
            ]
            .concat(),
        );
        // Nothing is registered while the daemon is not there.
        wait_until(10, "the agent to wait for the daemon", || {
            !agent.events("waiting for the Docker daemon").is_empty()
        })
        .await;
        assert!(emu.runners(&emu_repo()).is_empty());
        assert!(registration_calls(&emu).is_empty());

        let id = online_runner(&emu, &agent, 20).await;
        assert!(
            started.elapsed() >= Duration::from_millis(1500),
            "registered before the daemon listened ({:?})",
            started.elapsed()
        );
        assert!(dockerd.pings() >= 1);
        let ready = agent.events("the Docker daemon is ready");
        assert_eq!(ready.len(), 1, "{}", agent.logs());
        assert!(ready[0]["waited_ms"].as_u64().unwrap() >= 1000, "{ready:?}");
        assert_eq!(
            agent.events("waiting for the Docker daemon").len(),
            1,
            "the wait is logged once"
        );

        let job = run_job(
            &emu,
            JobSpec::new(REPO, "docker-host").step("env", "echo \"docker host: $DOCKER_HOST\""),
            &agent,
        )
        .await;
        assert_eq!(job.conclusion, Some(Conclusion::Success), "{job:?}");
        assert_eq!(job.runner_id, Some(id));
        let want = format!("docker host: {}", sock.docker_host());
        assert!(
            job.log.iter().any(|l| l.text == want),
            "{want:?} in\n{}",
            log_text(&job)
        );

        agent.signal(Signal::SIGTERM);
        assert_eq!(agent.exit_code(10).await, 0, "{}", agent.logs());
        assert!(emu.runners(&emu_repo()).is_empty());
    })
    .await
}

#[tokio::test]
async fn no_daemon_within_the_wait_fails_the_start_with_nothing_registered() {
    within(60, async {
        let emu = emulator().await;
        let dir = RunnerDir::new("nodocker");
        let sock = SocketDir::new("dk");
        let started = Instant::now();
        let mut agent = Agent::start(
            &[
                base_env(&emu, &dir),
                pat_env(),
                with(&[
                    ("HANGAR_DOCKER", "true"),
                    ("DOCKER_HOST", &sock.docker_host()),
                    ("HANGAR_DOCKER_WAIT", "2s"),
                ]),
            ]
            .concat(),
        );
        let code = agent.exit_code(15).await;
        let took = started.elapsed();
        let logs = agent.logs();
        assert_eq!(code, 3, "replace the task; logs:\n{logs}");
        assert!(
            took >= Duration::from_secs(2) && took < Duration::from_secs(8),
            "gave up after {took:?}"
        );
        let error = logs
            .lines()
            .find(|l| l.starts_with("error: "))
            .unwrap_or_else(|| panic!("no error line on stderr:\n{logs}"));
        for part in [
            sock.socket().display().to_string().as_str(),
            "no such file",
            "HANGAR_DOCKER_WAIT=2s",
            "sidecar container's logs",
            "raise HANGAR_DOCKER_WAIT",
        ] {
            assert!(error.contains(part), "{part:?} in {error}");
        }
        assert!(emu.runners(&emu_repo()).is_empty(), "nothing registered");
        assert_eq!(registration_calls(&emu), Vec::<String>::new());
        assert!(!dir.configured());
        assert!(!logs.contains(hangar_emulator::SEED_PAT));
    })
    .await
}

#[tokio::test]
async fn a_stop_signal_during_the_wait_ends_it_promptly_with_nothing_registered() {
    within(60, async {
        let emu = emulator().await;
        let dir = RunnerDir::new("dockerstop");
        let sock = SocketDir::new("dk");
        // A socket nobody answers on: "connection refused".
        let listener = std::os::unix::net::UnixListener::bind(sock.socket()).unwrap();
        drop(listener);
        let mut agent = Agent::start(
            &[
                base_env(&emu, &dir),
                pat_env(),
                with(&[("HANGAR_DOCKER", "1"), ("DOCKER_HOST", &sock.docker_host())]),
            ]
            .concat(),
        );
        wait_until(10, "the agent to wait for the daemon", || {
            !agent.events("waiting for the Docker daemon").is_empty()
        })
        .await;
        let waiting = agent.events("waiting for the Docker daemon");
        assert!(
            waiting[0]["seen"]
                .as_str()
                .is_some_and(|s| s.contains("connection refused")),
            "{waiting:?}"
        );
        let stop = Instant::now();
        agent.signal(Signal::SIGTERM);
        assert_eq!(agent.exit_code(10).await, 0, "{}", agent.logs());
        assert!(
            stop.elapsed() < Duration::from_secs(3),
            "{:?}",
            stop.elapsed()
        );
        assert!(emu.runners(&emu_repo()).is_empty());
        assert_eq!(registration_calls(&emu), Vec::<String>::new());
    })
    .await
}

#[tokio::test]
async fn a_bad_hangar_docker_value_is_a_configuration_error() {
    within(30, async {
        let emu = emulator().await;
        let dir = RunnerDir::new("dockerbad");
        let mut agent = Agent::start(
            &[
                base_env(&emu, &dir),
                pat_env(),
                with(&[("HANGAR_DOCKER", "yes")]),
            ]
            .concat(),
        );
        assert_eq!(agent.exit_code(10).await, 2);
        let logs = agent.logs();
        assert!(
            logs.contains("HANGAR_DOCKER") && logs.contains("1 or true"),
            "{logs}"
        );
        let mut agent = Agent::start(
            &[
                base_env(&emu, &dir),
                pat_env(),
                with(&[
                    ("HANGAR_DOCKER", "1"),
                    ("DOCKER_HOST", "tcp://127.0.0.1:2375"),
                ]),
            ]
            .concat(),
        );
        assert_eq!(agent.exit_code(10).await, 2);
        assert!(
            agent.logs().contains("Unix socket only"),
            "{}",
            agent.logs()
        );
        assert!(emu.runners(&emu_repo()).is_empty());
    })
    .await
}

#[tokio::test]
async fn without_docker_a_docker_step_and_a_container_job_fail_with_the_pools_fix() {
    within(90, async {
        let emu = emulator().await;
        let dir = RunnerDir::new("stub");
        let mut agent = Agent::start(
            &[
                base_env(&emu, &dir),
                pat_env(),
                with(&[("HANGAR_POOL", "org"), ("HANGAR_DOCKER_RUNS_ON", "org-docker")]),
            ]
            .concat(),
        );
        online_runner(&emu, &agent, 20).await;
        let message = "hangar: this runner's pool \"org\" has no Docker daemon (Fargate runs no privileged container), so \"docker build .\" cannot run here. Fix: run the job on a Docker pool: runs-on: org-docker (see \"Running Docker jobs\" in Hangar's README).";

        let job = run_job(
            &emu,
            JobSpec::new(REPO, "build-image")
                .step("build", "docker build .")
                .step("after", "echo not reached"),
            &agent,
        )
        .await;
        let log = log_text(&job);
        assert_eq!(job.conclusion, Some(Conclusion::Failure), "{log}");
        assert_eq!(job.steps[0].exit_code, Some(127), "{job:?}");
        assert_eq!(job.steps[1].conclusion, Some(Conclusion::Skipped));
        assert!(job.log.iter().any(|l| l.step == 0 && l.text == message), "{log}");
        assert!(!log.contains("command not found"), "{log}");

        let job = run_job(
            &emu,
            JobSpec::new(REPO, "in-container")
                .container("node:20")
                .step("test", "echo not reached"),
            &agent,
        )
        .await;
        let log = log_text(&job);
        assert_eq!(job.conclusion, Some(Conclusion::Failure), "{log}");
        assert_eq!(job.steps[0].conclusion, Some(Conclusion::Skipped), "{log}");
        let setup: Vec<&str> = job
            .log
            .iter()
            .filter(|l| l.step == -1)
            .map(|l| l.text.as_str())
            .collect();
        assert!(
            setup.iter().any(|l| l.starts_with("##[command]")
                && l.ends_with("/docker-stub/docker version --format '{{.Server.APIVersion}}'")),
            "{log}"
        );
        assert!(
            setup.iter().any(|l| l.contains("this runner's pool \"org\" has no Docker daemon")
                && l.contains("\"docker version --format {{.Server.APIVersion}}\"")
                && l.contains("runs-on: org-docker")),
            "{log}"
        );
        assert!(
            setup.iter().any(|l| l.starts_with("##[error]Exit code 127")),
            "{log}"
        );
        assert!(!log.contains("command not found"), "{log}");

        agent.signal(Signal::SIGTERM);
        assert_eq!(agent.exit_code(10).await, 0, "{}", agent.logs());
    })
    .await
}

/// `nobody`, with the runner folder handed to it (switching users needs root).
fn nobody_owns(dir: &RunnerDir) -> Option<nix::unistd::User> {
    if !nix::unistd::geteuid().is_root() {
        return None; // switching users needs root; CI runs these tests as root
    }
    let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();
    nix::unistd::chown(&dir.root, Some(nobody.uid), Some(nobody.gid)).unwrap();
    Some(nobody)
}

#[tokio::test]
async fn the_daemon_is_checked_as_the_runners_user() {
    within(60, async {
        let emu = emulator().await;
        let dir = RunnerDir::new("dockeruser");
        let Some(nobody) = nobody_owns(&dir) else {
            return;
        };
        let sock = SocketDir::new("dk");
        let _dockerd = FakeDockerd::start_after(sock.socket(), Duration::ZERO);
        wait_until(5, "the daemon's socket", || sock.socket().exists()).await;
        let mode = |m: u32| {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(sock.socket(), std::fs::Permissions::from_mode(m)).unwrap();
        };
        let env = [
            base_env(&emu, &dir),
            pat_env(),
            with(&[
                ("RUNNER_ALLOW_RUNASROOT", "0"),
                ("RUNNER_USER", "nobody"),
                ("HANGAR_DOCKER", "1"),
                ("DOCKER_HOST", &sock.docker_host()),
                ("HANGAR_DOCKER_WAIT", "1s"),
            ]),
        ]
        .concat();
        // root answers, but the runner's jobs could not use it.
        mode(0o600);
        let mut refused = Agent::start(&env);
        assert_eq!(refused.exit_code(10).await, 3, "{}", refused.logs());
        let want = format!(
            "permission denied for the runner's user (uid {})",
            nobody.uid
        );
        assert!(
            refused.logs().contains(&want),
            "{want:?} in {}",
            refused.logs()
        );
        assert!(emu.runners(&emu_repo()).is_empty());

        mode(0o666);
        let mut agent = Agent::start(&env);
        online_runner(&emu, &agent, 20).await;
        agent.signal(Signal::SIGTERM);
        assert_eq!(agent.exit_code(10).await, 0, "{}", agent.logs());
    })
    .await
}

#[tokio::test]
async fn the_stub_is_the_runners_to_run_but_not_to_change() {
    within(60, async {
        let emu = emulator().await;
        let dir = RunnerDir::new("stubuser");
        if nobody_owns(&dir).is_none() {
            return;
        }
        let mut agent = Agent::start(
            &[
                base_env(&emu, &dir),
                pat_env(),
                with(&[("RUNNER_ALLOW_RUNASROOT", "0"), ("RUNNER_USER", "nobody")]),
            ]
            .concat(),
        );
        online_runner(&emu, &agent, 20).await;
        let job = run_job(
            &emu,
            JobSpec::new(REPO, "stub-as-runner")
                .step(
                    "inspect",
                    "stub=$(command -v docker)\n\
                     echo \"stub at $stub\"\n\
                     if [ -w \"$stub\" ] || [ -w \"$(dirname \"$stub\")\" ]; then echo writable; else echo read-only; fi",
                )
                .step("use", "docker ps"),
            &agent,
        )
        .await;
        let log = log_text(&job);
        assert_eq!(job.conclusion, Some(Conclusion::Failure), "{log}");
        assert_eq!(job.steps[0].conclusion, Some(Conclusion::Success), "{log}");
        assert!(log.contains("/docker-stub/docker"), "{log}");
        assert!(log.contains("[0] read-only"), "{log}");
        assert!(
            log.contains("[1] hangar: this runner's pool has no Docker daemon")
                && log.contains("\"docker ps\"")
                && log.contains("runs-on: <a pool with docker = true>"),
            "{log}"
        );
        agent.signal(Signal::SIGTERM);
        assert_eq!(agent.exit_code(10).await, 0, "{}", agent.logs());
    })
    .await
}

#[tokio::test]
async fn a_jit_runner_takes_its_one_shot_configuration_then_waits_for_the_daemon() {
    within(60, async {
        let emu = emulator().await;
        let sock = SocketDir::new("dk");
        let start = |tag: &str, name: &str| {
            let dir = RunnerDir::new(tag);
            let emu = &emu;
            let host = sock.docker_host();
            let name = name.to_string();
            async move {
                let blob = jit_blob_for(emu, &support::repo(), &name, &["self-hosted"]).await;
                let handoff = one_shot_file(&dir.root.with_extension("jit"), &blob);
                let agent = Agent::start(
                    &[
                        base_env(emu, &dir),
                        with(&[
                            ("GITHUB_REPOSITORY", REPO),
                            ("RUNNER_JIT_CONFIG_FILE", &handoff.display().to_string()),
                            ("HANGAR_DOCKER", "1"),
                            ("DOCKER_HOST", &host),
                            ("HANGAR_DOCKER_WAIT", "1s"),
                        ]),
                    ]
                    .concat(),
                );
                (dir, handoff, agent)
            }
        };

        // No daemon: the one-shot file is taken at once all the same, the runner never starts.
        let (_dir, handoff, mut agent) = start("jitdocker", "jit-docker-1").await;
        assert_eq!(agent.exit_code(10).await, 3, "{}", agent.logs());
        assert!(!handoff.exists(), "the one-shot file is deleted even so");
        let runners = emu.runners(&emu_repo());
        assert_eq!(
            runners.len(),
            1,
            "the launcher's registration, never online"
        );
        assert!(!runners[0].online);
        assert!(
            agent
                .logs()
                .contains("the registration is left to the runner's launcher"),
            "{}",
            agent.logs()
        );

        // The daemon answers: the runner starts and takes a job.
        let _dockerd = FakeDockerd::start_after(sock.socket(), Duration::ZERO);
        let (_dir, _, mut agent) = start("jitdocker2", "jit-docker-2").await;
        let job = run_job(
            &emu,
            JobSpec::new(REPO, "jit-docker").step("env", "echo \"host=$DOCKER_HOST\""),
            &agent,
        )
        .await;
        assert_eq!(
            job.conclusion,
            Some(Conclusion::Success),
            "{}",
            log_text(&job)
        );
        let want = format!("host={}", sock.docker_host());
        assert!(job.log.iter().any(|l| l.text == want), "{}", log_text(&job));
        assert_eq!(agent.exit_code(15).await, 0, "{}", agent.logs());
    })
    .await
}
