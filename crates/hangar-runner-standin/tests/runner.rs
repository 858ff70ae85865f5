//! The stand-in runner binary against the emulator: configure, run, jobs, hooks, signals, JIT,
//! removal and every exit code a supervisor has to handle.

mod support;

use std::time::Duration;

use hangar_emulator::{Conclusion, Emulator, JobSpec, JobStatus, JobView, RunnerMessage};
use nix::sys::signal::Signal;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configure_run_and_a_successful_job() {
    within(async {
        let emu = seed().await;
        let root = Root::new("success");
        let out = root.configure(&emu, "r-ok", &["--disableupdate"]).await;
        for line in [
            "√ Connected to GitHub",
            "√ Runner successfully added",
            "√ Settings Saved.",
        ] {
            assert!(out.stdout.contains(line), "{line} missing: {}", out.stdout);
        }
        for f in [".runner", ".credentials", ".credentials_rsaparams"] {
            assert!(root.path(f).is_file(), "{f}");
        }
        let settings: serde_json::Value =
            serde_json::from_slice(&std::fs::read(root.path(".runner")).unwrap()).unwrap();
        let id = runner_id(&emu, "r-ok");
        assert_eq!(settings["agentId"], id);
        assert_eq!(settings["serverUrl"], format!("{}/api/v3", emu.api_url()));
        assert_eq!(settings["disableUpdate"], true);

        let mut run = root.listen(&[]).await;
        assert!(emu.session_live(id));
        assert_eq!(emu.session_disables_update(id), Some(true));
        let view = run_job(
            &emu,
            JobSpec::new(&repo_full(), "build")
                .labels(["self-hosted", "hangar"])
                .step("hello", "echo hello; pwd")
                .step(
                    "env",
                    "echo \"$CI $GITHUB_ACTIONS $GITHUB_REPOSITORY $RUNNER_OS $RUNNER_NAME $GITHUB_JOB\"; echo to-stderr >&2",
                )
                .step("temp", "echo \"$RUNNER_TEMP\"; touch \"$RUNNER_TEMP/scratch\"; touch kept"),
        )
        .await;
        assert_eq!(view.conclusion, Some(Conclusion::Success), "{view:?}");
        for s in &view.steps {
            assert_eq!(s.conclusion, Some(Conclusion::Success));
            assert_eq!(s.exit_code, Some(0));
        }
        let workspace = root.workspace();
        assert_eq!(
            log_of(&view, 0),
            vec!["hello".to_string(), workspace.display().to_string()]
        );
        let env_log = log_of(&view, 1);
        assert!(
            env_log.contains(&format!("true true {} Linux r-ok build", repo_full())),
            "{env_log:?}"
        );
        assert!(env_log.contains(&"to-stderr".to_string()), "{env_log:?}");
        assert_eq!(
            log_of(&view, 2),
            vec![root.path("_work/_temp").display().to_string()]
        );
        // _temp is emptied after the job; the workspace is kept.
        assert_eq!(std::fs::read_dir(root.path("_work/_temp")).unwrap().count(), 0);
        assert!(workspace.join("kept").exists());

        run.wait_for("Job build completed with result: Succeeded").await;
        assert!(run.stdout().contains("Running job: build"));
        assert!(run.stdout().contains("hello"));
        // Non-ephemeral: still listening; SIGTERM while idle takes it offline with 0.
        assert!(emu.session_live(id));
        run.stop().await;
        assert!(!emu.session_live(id));
        assert!(!emu.runner(id).unwrap().online);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_step_fails_the_job_and_skips_the_rest() {
    within(async {
        let emu = seed().await;
        let root = Root::new("fail");
        let mut run = root.configure_and_listen(&emu, "r-fail", &[], &[]).await;
        let view = run_job(
            &emu,
            JobSpec::new(&repo_full(), "test")
                .step("ok", "echo one")
                .step("boom", "echo two; exit 3")
                .step("never", "echo never"),
        )
        .await;
        assert_eq!(view.conclusion, Some(Conclusion::Failure));
        assert_eq!(view.steps[0].conclusion, Some(Conclusion::Success));
        assert_eq!(view.steps[1].conclusion, Some(Conclusion::Failure));
        assert_eq!(view.steps[1].exit_code, Some(3));
        assert_eq!(view.steps[2].conclusion, Some(Conclusion::Skipped));
        assert!(!view.log.iter().any(|l| l.text == "never"));
        // pipefail: a failure inside a pipeline fails the step.
        let view = run_job(
            &emu,
            JobSpec::new(&repo_full(), "pipe").step("p", "false | cat"),
        )
        .await;
        assert_eq!(view.conclusion, Some(Conclusion::Failure));
        run.wait_for("Job test completed with result: Failed").await;
        run.signal(Signal::SIGINT);
        assert_eq!(run.exit_code().await, 0);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_with_labels_the_runner_lacks_never_runs() {
    within(async {
        let emu = seed().await;
        let root = Root::new("labels");
        let mut run = root.configure_and_listen(&emu, "r-labels", &[], &[]).await;
        let job = emu.enqueue_job(
            JobSpec::new(&repo_full(), "gpu-job")
                .labels(["self-hosted", "gpu"])
                .step("s", "echo hi"),
        );
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(emu.job(job).unwrap().status, JobStatus::Queued);
        assert!(!run.stdout().contains("Running job"));
        run.stop().await;
    })
    .await;
}

/// Writes a hook script `name` into the runner root; returns its path.
fn write_hook(root: &Root, name: &str, body: &str) -> String {
    let path = root.path(name);
    std::fs::write(&path, body).unwrap();
    path.display().to_string()
}

/// Starts the runner, runs the one-step job `name` (`script`) to its end and stops the runner.
async fn run_one_job(root: &Root, emu: &Emulator, name: &str, script: &str) -> JobView {
    let mut run = root.listen(&[]).await;
    let view = run_job(emu, one_step(name, script)).await;
    run.stop().await;
    view
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hooks_run_with_the_job_environment_and_a_failing_hook_fails_the_job() {
    within(async {
        let emu = seed().await;
        let mut root = Root::new("hooks");
        root.configure(&emu, "r-hooks", &[]).await;
        let started = write_hook(
            &root,
            "started.sh",
            "echo \"started $GITHUB_REPOSITORY $RUNNER_NAME $(pwd)\"\n",
        );
        let completed = write_hook(&root, "completed.sh", "echo \"completed $GITHUB_JOB\"\n");
        root.set("ACTIONS_RUNNER_HOOK_JOB_STARTED", &started);
        root.set("ACTIONS_RUNNER_HOOK_JOB_COMPLETED", &completed);
        let view = run_one_job(&root, &emu, "hooked", "echo step").await;
        assert_eq!(view.conclusion, Some(Conclusion::Success), "{view:?}");
        let workspace = root.workspace();
        assert_eq!(
            log_of(&view, -1),
            vec![format!(
                "started {} r-hooks {}",
                repo_full(),
                workspace.display()
            )]
        );
        assert_eq!(log_of(&view, -2), vec!["completed hooked".to_string()]);

        // `bash -e`: the first failing command fails the hook, and the job with it.
        write_hook(&root, "started.sh", "false\necho not-reached\n");
        let view = run_one_job(&root, &emu, "hook-fails", "echo step").await;
        assert_eq!(view.conclusion, Some(Conclusion::Failure));
        assert_eq!(view.steps[0].conclusion, Some(Conclusion::Skipped));
        assert!(
            !view
                .log
                .iter()
                .any(|l| l.text == "not-reached" || l.text == "step")
        );
        assert_eq!(log_of(&view, -2), vec!["completed hook-fails".to_string()]);

        // A failing completed hook fails a job whose steps succeeded.
        write_hook(&root, "started.sh", "true\n");
        write_hook(&root, "completed.sh", "exit 4\n");
        let view = run_one_job(&root, &emu, "post-fails", "true").await;
        assert_eq!(view.conclusion, Some(Conclusion::Failure));
        assert_eq!(view.steps[0].conclusion, Some(Conclusion::Success));
    })
    .await;
}

/// Writes an executable `docker` into `<root>/<folder>/` running `body`; returns the folder.
fn fake_docker(root: &Root, folder: &str, body: &str) -> String {
    use std::os::unix::fs::PermissionsExt;
    let dir = root.path(folder);
    std::fs::create_dir_all(&dir).unwrap();
    let docker = dir.join("docker");
    std::fs::write(&docker, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&docker, std::fs::Permissions::from_mode(0o755)).unwrap();
    dir.display().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_job_asks_docker_on_the_path_first_as_the_real_runner_does() {
    within(async {
        let emu = seed().await;
        let mut root = Root::new("container");
        root.configure(&emu, "r-container", &[]).await;
        let system_path = std::env::var("PATH").unwrap_or_default();
        let container_job =
            |name: &str| JobSpec::new(&repo_full(), name).container("node:20").step("s", "echo step ran");

        // Docker answers: the steps run (on the runner: the stand-in runs no container).
        let ok = fake_docker(&root, "ok", "echo \"args: $*\" >&2; echo 1.45");
        root.set("PATH", format!("{ok}:{system_path}"));
        let mut run = root.listen(&[]).await;
        let view = run_job(&emu, container_job("in-container")).await;
        run.stop().await;
        assert_eq!(view.conclusion, Some(Conclusion::Success), "{view:?}");
        let setup = log_of(&view, -1);
        assert!(setup.contains(&format!("##[command]{ok}/docker version --format '{{{{.Server.APIVersion}}}}'")), "{setup:?}");
        assert!(setup.contains(&"args: version --format {{.Server.APIVersion}}".to_string()), "{setup:?}");
        assert!(setup.contains(&"1.45".to_string()), "{setup:?}");
        assert_eq!(log_of(&view, 0), vec!["step ran".to_string()]);

        // Docker fails: its output and the exit code in the set-up log, the steps skipped.
        let down = fake_docker(
            &root,
            "down",
            "echo 'Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker daemon running?' >&2; exit 1",
        );
        root.set("PATH", format!("{down}:{system_path}"));
        let mut run = root.listen(&[]).await;
        let view = run_job(&emu, container_job("daemon-down")).await;
        run.stop().await;
        assert_eq!(view.conclusion, Some(Conclusion::Failure), "{view:?}");
        assert_eq!(view.steps[0].conclusion, Some(Conclusion::Skipped));
        let setup = log_of(&view, -1);
        assert!(setup.iter().any(|l| l.starts_with("Cannot connect to the Docker daemon")), "{setup:?}");
        assert!(setup.iter().any(|l| l.starts_with("##[error]Exit code 1 returned from process")), "{setup:?}");

        // No docker at all.
        let empty = root.path("empty");
        std::fs::create_dir_all(&empty).unwrap();
        root.set("PATH", empty.display().to_string());
        let mut run = root.listen(&[]).await;
        let view = run_job(&emu, container_job("no-docker")).await;
        run.stop().await;
        assert_eq!(view.conclusion, Some(Conclusion::Failure), "{view:?}");
        assert!(log_of(&view, -1).contains(&"##[error]File not found: 'docker'".to_string()), "{view:?}");

        // A job without a container never asks for Docker.
        root.set("PATH", format!("{down}:{system_path}"));
        let view = run_one_job(&root, &emu, "plain", "echo plain").await;
        assert_eq!(view.conclusion, Some(Conclusion::Success), "{view:?}");
        assert!(log_of(&view, -1).is_empty(), "{view:?}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_while_busy_cancels_the_job_and_exits_0() {
    within(async {
        let emu = seed().await;
        let mut root = Root::new("busy");
        root.configure(&emu, "r-busy", &[]).await;
        let completed = write_hook(&root, "completed.sh", "echo cleanup\n");
        root.set("ACTIONS_RUNNER_HOOK_JOB_COMPLETED", &completed);
        let mut run = root.listen(&[]).await;
        let id = runner_id(&emu, "r-busy");
        // The step ignores SIGINT, so cancellation has to escalate to SIGTERM.
        let job = emu.enqueue_job(
            JobSpec::new(&repo_full(), "long")
                .step(
                    "sleep",
                    "trap 'echo got-int' INT; echo begin; sleep 60 & wait; sleep 60 & wait",
                )
                .step("after", "echo after"),
        );
        run.wait_for("begin").await;
        assert!(emu.runner(id).unwrap().busy);
        let started = std::time::Instant::now();
        run.stop().await;
        // Grace is 500 ms per signal here.
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{:?}",
            started.elapsed()
        );
        let view = emu.job(job).unwrap();
        assert_eq!(view.status, JobStatus::Completed);
        assert_eq!(view.conclusion, Some(Conclusion::Cancelled), "{view:?}");
        assert_eq!(view.steps[0].conclusion, Some(Conclusion::Cancelled));
        assert_eq!(view.steps[1].conclusion, Some(Conclusion::Skipped));
        assert_eq!(log_of(&view, -2), vec!["cleanup".to_string()]);
        assert!(
            run.stdout()
                .contains("Job long completed with result: Canceled")
        );
        assert!(!emu.session_live(id));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_skips_the_grace() {
    within(async {
        let emu = seed().await;
        let mut root = Root::new("hurry");
        root.set("HANGAR_STANDIN_CANCEL_GRACE_MS", "20000");
        let mut run = root.configure_and_listen(&emu, "r-hurry", &[], &[]).await;
        let job = emu.enqueue_job(one_step(
            "stubborn",
            "trap '' INT TERM; echo begin; while true; do sleep 0.1; done",
        ));
        run.wait_for("begin").await;
        let started = std::time::Instant::now();
        run.signal(Signal::SIGTERM);
        tokio::time::sleep(Duration::from_millis(500)).await;
        run.stop().await;
        assert!(
            started.elapsed() < Duration::from_secs(8),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(
            emu.job(job).unwrap().conclusion,
            Some(Conclusion::Cancelled)
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_side_cancel_cancels_the_job_and_the_runner_keeps_listening() {
    within(async {
        let emu = seed().await;
        let mut root = Root::new("srvcancel");
        root.set("HANGAR_STANDIN_RENEW_SECS", "1");
        let mut run = root.configure_and_listen(&emu, "r-cancel", &[], &[]).await;
        let job = emu.enqueue_job(one_step("to-cancel", "echo begin; sleep 60"));
        run.wait_for("begin").await;
        assert!(emu.cancel_job(job));
        let view = finished(&emu, job).await;
        assert_eq!(view.conclusion, Some(Conclusion::Cancelled));
        assert_succeeds(&emu, one_step("next", "echo ok")).await;
        run.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ephemeral_runner_exits_0_after_one_job() {
    within(async {
        let emu = seed().await;
        let root = Root::new("ephemeral");
        let mut run = root
            .configure_and_listen(&emu, "r-eph", &["--ephemeral"], &[])
            .await;
        let id = runner_id(&emu, "r-eph");
        let job = emu.enqueue_job(one_step("once", "echo hi"));
        assert_eq!(run.exit_code().await, 0, "{}", run.stderr());
        assert_eq!(emu.job(job).unwrap().conclusion, Some(Conclusion::Success));
        // GitHub deletes an ephemeral runner after its job; the local files go too.
        assert!(emu.runner(id).is_none());
        assert!(!root.path(".runner").exists());
        assert!(!root.path(".credentials").exists());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_exits_0_after_one_job_and_stays_registered() {
    within(async {
        let emu = seed().await;
        let root = Root::new("once");
        let mut run = root
            .configure_and_listen(&emu, "r-once", &[], &["--once"])
            .await;
        let id = runner_id(&emu, "r-once");
        emu.enqueue_job(one_step("one", "true"));
        assert_eq!(run.exit_code().await, 0);
        assert!(emu.runner(id).is_some());
        assert!(!emu.session_live(id));
        assert!(root.path(".runner").exists());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jit_runner_runs_one_job() {
    within(async {
        let emu = seed().await;
        let root = Root::new("jit");
        let (id, blob) = jit_config(&emu, "r-jit", &["hangar"]).await;
        let mut run = root.listen(&["--jitconfig", &blob]).await;
        assert!(emu.session_live(id));
        let job = emu.enqueue_job(
            JobSpec::new(&repo_full(), "jit-job")
                .labels(["hangar"])
                .step("s", "echo jit"),
        );
        assert_eq!(run.exit_code().await, 0, "{}", run.stderr());
        let view = emu.job(job).unwrap();
        assert_eq!(view.conclusion, Some(Conclusion::Success));
        assert_eq!(view.runner_id, Some(id));
        assert!(emu.runner(id).is_none());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jit_config_from_the_environment_never_reaches_a_step() {
    within(async {
        let emu = seed().await;
        let mut root = Root::new("jitenv");
        let (_, blob) = jit_config(&emu, "r-jitenv", &["hangar"]).await;
        root.set("ACTIONS_RUNNER_INPUT_JITCONFIG", &blob);
        root.set("ACTIONS_RUNNER_INPUT_TOKEN", "marker-token-value");
        let mut run = root.listen(&[]).await;
        let job = emu.enqueue_job(
            JobSpec::new(&repo_full(), "printenv")
                .labels(["hangar"])
                .step("env", "env"),
        );
        assert_eq!(run.exit_code().await, 0);
        let view = emu.job(job).unwrap();
        let log = log_of(&view, 0);
        assert!(
            log.iter().any(|l| l.starts_with("GITHUB_WORKSPACE=")),
            "{log:?}"
        );
        assert!(
            !log.iter().any(|l| l.contains("ACTIONS_RUNNER_INPUT")
                || l.contains("marker-token-value")
                || l.contains(&blob)),
            "{log:?}"
        );
        assert!(!run.stdout().contains("marker-token-value"));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configure_from_environment_inputs_hides_the_token_from_steps() {
    within(async {
        let emu = seed().await;
        let mut root = Root::new("envtoken");
        let token = registration_token(&emu).await;
        root.set("ACTIONS_RUNNER_INPUT_URL", repo_url(&emu));
        root.set("ACTIONS_RUNNER_INPUT_TOKEN", &token);
        root.set("ACTIONS_RUNNER_INPUT_NAME", "r-envtoken");
        root.set("ACTIONS_RUNNER_INPUT_LABELS", "hangar,extra");
        let out = root.output(&["configure", "--unattended"]).await;
        assert_eq!(out.code, 0, "{out:?}");
        assert!(!out.stdout.contains(&token) && !out.stderr.contains(&token));
        let id = runner_id(&emu, "r-envtoken");
        assert!(
            emu.runner(id)
                .unwrap()
                .labels
                .contains(&"extra".to_string())
        );

        let mut run = root.listen(&[]).await;
        let view = run_job(
            &emu,
            JobSpec::new(&repo_full(), "printenv").step("env", "env; echo \"ci=$CI\""),
        )
        .await;
        let log = log_of(&view, 0);
        assert!(log.contains(&"ci=true".to_string()), "{log:?}");
        assert!(
            !log.iter()
                .any(|l| l.contains("ACTIONS_RUNNER_INPUT") || l.contains(&token)),
            "{log:?}"
        );
        run.stop().await;
        assert!(!run.stdout().contains(&token));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_5_when_another_listener_holds_the_session() {
    within(async {
        let emu = seed().await;
        let root = Root::new("conflict");
        let mut first = root
            .configure_and_listen(&emu, "r-conflict", &[], &[])
            .await;
        let mut second = root.spawn(&[]);
        assert_eq!(second.exit_code().await, 5, "{}", second.stderr());
        first.stop().await;
    })
    .await;
}

/// The exit code of a listening runner (configured with `configure`, run with `run_args`, and
/// `env` set) that is sent `message`; asserts that its session ends.
async fn exit_code_for(
    message: RunnerMessage,
    configure: &[&str],
    run_args: &[&str],
    env: &[(&str, &str)],
) -> i32 {
    let emu = seed().await;
    let mut root = Root::new("message");
    for (k, v) in env {
        root.set(k, *v);
    }
    let mut run = root
        .configure_and_listen(&emu, "r-msg", configure, run_args)
        .await;
    let id = runner_id(&emu, "r-msg");
    assert!(emu.send_runner_message(id, message));
    let code = run.exit_code().await;
    assert!(!emu.session_live(id));
    code
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_codes_for_server_messages() {
    within(async {
        let update = || RunnerMessage::Update {
            target_version: "2.400.0".into(),
        };
        assert_eq!(
            exit_code_for(RunnerMessage::RefreshConfig, &[], &[], &[]).await,
            6
        );
        assert_eq!(exit_code_for(update(), &[], &[], &[]).await, 3);
        assert_eq!(exit_code_for(update(), &[], &["--once"], &[]).await, 4);
        assert_eq!(
            exit_code_for(
                RunnerMessage::VersionDeprecated,
                &[],
                &[],
                &[("ACTIONS_RUNNER_RETURN_VERSION_DEPRECATED_EXIT_CODE", "1")]
            )
            .await,
            7
        );
        assert_eq!(
            exit_code_for(RunnerMessage::VersionDeprecated, &[], &[], &[]).await,
            1
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_is_ignored_when_updates_are_disabled() {
    within(async {
        let emu = seed().await;
        let root = Root::new("noupdate");
        let mut run = root
            .configure_and_listen(&emu, "r-noupd", &["--disableupdate"], &[])
            .await;
        let id = runner_id(&emu, "r-noupd");
        // The update is delivered; the runner says it ignores it and keeps running jobs.
        assert!(emu.send_runner_message(
            id,
            RunnerMessage::Update {
                target_version: "2.400.0".into(),
            },
        ));
        run.wait_for("Ignoring an update to 2.400.0").await;
        assert_succeeds(&emu, one_step("after-update", "true")).await;
        assert!(run.child.try_wait().unwrap().is_none());
        run.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_2_when_the_server_goes_away() {
    within(async {
        let emu = seed().await;
        let root = Root::new("gone");
        let mut run = root.configure_and_listen(&emu, "r-gone", &[], &[]).await;
        emu.shutdown().await;
        assert_eq!(run.exit_code().await, 2, "{}", run.stderr());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_0_when_the_runner_is_deleted_server_side() {
    within(async {
        let emu = seed().await;
        let root = Root::new("deleted");
        root.configure(&emu, "r-del", &[]).await;
        let id = runner_id(&emu, "r-del");
        let mut run = root.listen(&[]).await;
        assert!(emu.remove_runner(id));
        assert_eq!(run.exit_code().await, 0, "{}", run.stderr());
        assert!(run.stderr().contains("deleted"), "{}", run.stderr());
        // A fresh start is refused the same way.
        let mut again = root.spawn(&[]);
        assert_eq!(again.exit_code().await, 0);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_configured_and_already_configured_exit_1() {
    within(async {
        let emu = seed().await;
        let root = Root::new("states");
        root.output(&["run"])
            .await
            .assert_refused("Runner is not configured.");
        root.configure(&emu, "r-states", &[]).await;
        let token = registration_token(&emu).await;
        let url = repo_url(&emu);
        root.output(&configure_args(&url, &token, "r-states", &["--replace"]))
            .await
            .assert_refused("already configured");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configure_refusals_and_replace() {
    within(async {
        let emu = seed().await;
        let url = repo_url(&emu);
        let first = Root::new("replace-a");
        first.configure(&emu, "r-same", &[]).await;
        let id = runner_id(&emu, "r-same");

        // Same name without --replace: refused, nothing written.
        let second = Root::new("replace-b");
        let token = registration_token(&emu).await;
        let args = configure_args(&url, &token, "r-same", &[]);
        second
            .output(&args)
            .await
            .assert_refused("A runner exists with the same name");
        assert!(!second.path(".runner").exists());

        // With --replace: same id, the old credentials stop working.
        let out = second.output(&[&args[..], &["--replace"]].concat()).await;
        assert_eq!(out.code, 0, "{out:?}");
        assert!(
            out.stdout.contains("√ Runner successfully replaced"),
            "{out:?}"
        );
        assert_eq!(runner_id(&emu, "r-same"), id);
        let mut old = first.spawn(&[]);
        assert_eq!(old.exit_code().await, 0);
        assert!(old.stderr().contains("deleted"), "{}", old.stderr());

        // A bad token and an unknown runner group.
        let out = Root::new("badtoken")
            .output(&configure_args(&url, "NOPE", "x", &[]))
            .await;
        assert_eq!(out.code, 1);
        assert!(!out.stdout.contains("Connected to GitHub"), "{out:?}");
        let token = registration_token(&emu).await;
        Root::new("badgroup")
            .output(&configure_args(
                &url,
                &token,
                "y",
                &["--runnergroup", "nope"],
            ))
            .await
            .assert_refused("nope");
        // Missing url.
        Root::new("nourl")
            .output(&["configure", "--unattended", "--token", "T"])
            .await
            .assert_refused("url");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remove_deregisters_and_deletes_local_files() {
    within(async {
        let emu = seed().await;
        let root = Root::new("remove");
        root.configure(&emu, "r-rm", &[]).await;
        let id = runner_id(&emu, "r-rm");
        let token = remove_token(&emu).await;
        let out = root.output(&["remove", "--token", &token]).await;
        assert_eq!(out.code, 0, "{out:?}");
        assert!(
            out.stdout.contains("√ Runner removed successfully"),
            "{out:?}"
        );
        assert!(emu.runner(id).is_none());
        for f in [".runner", ".credentials", ".credentials_rsaparams"] {
            assert!(!root.path(f).exists(), "{f}");
        }

        // --local touches only the local files.
        root.configure(&emu, "r-rm2", &[]).await;
        let id = runner_id(&emu, "r-rm2");
        let out = root.output(&["remove", "--local"]).await;
        assert_eq!(out.code, 0, "{out:?}");
        assert!(emu.runner(id).is_some());
        assert!(!root.path(".runner").exists());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn root_is_refused_without_the_override() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("not root: nothing to test");
        return;
    }
    within(async {
        let mut root = Root::new("sudo");
        root.unset("RUNNER_ALLOW_RUNASROOT");
        for args in [&["run"][..], &["configure", "--unattended"][..]] {
            root.output(args)
                .await
                .assert_refused("Must not run with sudo");
        }
        let out = root.output(&["--version"]).await;
        assert_eq!((out.code, out.stdout.trim()), (0, "2.336.0"));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_server_errors_are_retried_within_the_budget() {
    within(async {
        let emu = seed().await;
        let mut root = Root::new("blips");
        root.set("HANGAR_STANDIN_RETRY_SECS", "5");
        let mut run = root.configure_and_listen(&emu, "r-blips", &[], &[]).await;
        // A few 502s (polls and job events alike) cost nothing.
        emu.fail_runner_protocol_next(3, 502);
        assert_succeeds(&emu, one_step("blip", "echo ok")).await;
        // Failures past the budget: exit 2.
        emu.fail_runner_protocol_next(10_000, 500);
        assert_eq!(run.exit_code().await, 2, "{}", run.stderr());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_session_is_reopened() {
    within(async {
        let emu = seed().await;
        let mut root = Root::new("expiry");
        root.set("HANGAR_STANDIN_POLL_SECS", "1");
        root.configure(&emu, "r-expiry", &[]).await;
        let id = runner_id(&emu, "r-expiry");
        emu.set_session_timeout(Duration::from_secs(1));
        let mut run = root.listen(&[]).await;
        // Frozen for longer than the session timeout (as a suspended machine would be).
        run.signal(Signal::SIGSTOP);
        tokio::time::sleep(Duration::from_secs(4)).await;
        assert!(!emu.session_live(id));
        run.signal(Signal::SIGCONT);
        assert_succeeds(&emu, one_step("after-expiry", "true")).await;
        assert_eq!(emu.sessions_created(id), 2);
        run.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewals_keep_a_long_job_alive_and_dotenv_is_loaded() {
    within(async {
        let emu = seed().await;
        let mut root = Root::new("renew");
        root.set("HANGAR_STANDIN_RENEW_SECS", "1");
        root.configure(&emu, "r-renew", &[]).await;
        std::fs::write(root.path(".env"), "FROM_DOTENV=yes\nLANG=C.UTF-8\n").unwrap();
        let id = runner_id(&emu, "r-renew");
        emu.set_session_timeout(Duration::from_secs(2));
        let mut run = root.listen(&[]).await;
        let view = run_job(
            &emu,
            one_step("slow", "sleep 5; echo \"dotenv=$FROM_DOTENV\""),
        )
        .await;
        assert_eq!(view.conclusion, Some(Conclusion::Success), "{view:?}");
        assert_eq!(log_of(&view, 0), vec!["dotenv=yes".to_string()]);
        assert!(emu.session_live(id));
        assert_eq!(emu.sessions_created(id), 1);
        let renewals = emu
            .runner_calls()
            .iter()
            .filter(|c| c.path.ends_with("/events"))
            .count();
        // started, step_started, log, step_completed, completed, and renewals besides.
        assert!(renewals >= 8, "{renewals} events");
        run.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_root_is_the_folder_above_a_symlinked_bin() {
    within(async {
        let emu = seed().await;
        let mut root = Root::new("symlink");
        root.unset("HANGAR_STANDIN_ROOT");
        std::fs::create_dir_all(root.path("bin")).unwrap();
        std::os::unix::fs::symlink(BIN, root.path("bin/Runner.Listener")).unwrap();
        let token = registration_token(&emu).await;
        let url = repo_url(&emu);
        let mut cmd = root.command_at(
            &root.path("bin/Runner.Listener"),
            &configure_args(&url, &token, "r-link", &[]),
        );
        // A relative argv0 is resolved against the working directory, the symlink kept.
        cmd.arg0("./bin/Runner.Listener");
        let out = cmd.current_dir(&root.dir).output().await.unwrap();
        assert_eq!(out.status.code(), Some(0), "{out:?}");
        assert!(root.path(".runner").is_file());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_processes_do_not_outlive_their_job() {
    within(async {
        let emu = seed().await;
        let root = Root::new("orphans");
        let mut run = root.configure_and_listen(&emu, "r-orphans", &[], &[]).await;
        let marker = root.path("orphan-alive");
        let view = run_job(
            &emu,
            one_step(
                "bg",
                &format!("(sleep 3; touch '{}') & echo started-bg", marker.display()),
            ),
        )
        .await;
        assert_eq!(view.conclusion, Some(Conclusion::Success));
        run.wait_for("Cleaning up orphan processes").await;
        tokio::time::sleep(Duration::from_secs(4)).await;
        assert!(!marker.exists(), "the background process survived the job");
        run.stop().await;
    })
    .await;
}
