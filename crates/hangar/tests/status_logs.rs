//! `hangar status` and `hangar logs` through the real binary, against moto (ECS services and
//! tasks, CloudWatch Logs) and the GitHub emulator.

mod support;

use aws_sdk_ecs::types::LaunchType;
use hangar_emulator::{RunnerSpec, Scope as EmuScope};
use support::moto::{Moto, awsvpc};
use support::*;

const CLUSTER: &str = "your-ecs-cluster-name";
const STANDALONE: &str = "github-runner-standalone-your-repository-name";
const ORG_SERVICE: &str = "github-runner-org-org";

fn env(moto: &Moto, emu: &hangar_emulator::Emulator) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = moto
        .env()
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    env.extend([
        ("GITHUB_API_URL".to_string(), emu.api_url()),
        ("GITHUB_URL".to_string(), emu.web_url()),
    ]);
    env.extend(
        SEED_CREDENTIALS
            .iter()
            .map(|(name, value)| (name.to_string(), value.to_string())),
    );
    env
}

/// A cluster with the standalone service (two tasks) and the org service (no task).
async fn deploy(moto: &Moto) -> (String, String) {
    moto.ecs_cluster(CLUSTER, &[STANDALONE, ORG_SERVICE]).await;
    let ecs = aws_sdk_ecs::Client::new(&moto.sdk_config());
    let (subnet, security_group) = moto.default_network().await;
    for service in [STANDALONE, ORG_SERVICE] {
        ecs.create_service()
            .cluster(CLUSTER)
            .service_name(service)
            .task_definition(service)
            .desired_count(if service == STANDALONE { 2 } else { 1 })
            .launch_type(LaunchType::Fargate)
            .send()
            .await
            .unwrap();
    }
    // moto's services start no tasks themselves: start the standalone service's two.
    let mut ids = Vec::new();
    for _ in 0..2 {
        let run = ecs
            .run_task()
            .cluster(CLUSTER)
            .task_definition(STANDALONE)
            .group(format!("service:{STANDALONE}"))
            .launch_type(LaunchType::Fargate)
            .network_configuration(awsvpc(vec![subnet.clone()], vec![security_group.clone()]))
            .send()
            .await
            .unwrap();
        let arn = run.tasks()[0].task_arn().unwrap().to_string();
        ids.push(arn.rsplit('/').next().unwrap().to_string());
    }
    (ids[0].clone(), ids[1].clone())
}

#[tokio::test]
async fn status_joins_github_runners_and_ecs_tasks_and_flags_what_does_not_fit() {
    within(90, async {
        let moto = Moto::start();
        let emu = emulator().await;
        let (with_runner, without_runner) = deploy(&moto).await;
        let repo = EmuScope::repo("your-organization", "your-repository-name");
        emu.add_runner(
            &repo,
            RunnerSpec {
                busy: true,
                ..RunnerSpec::idle(&format!("aws-github-runner-{with_runner}"), &["linux"])
            },
        );
        emu.add_runner(
            &repo,
            RunnerSpec {
                online: false,
                ..RunnerSpec::idle("aws-github-runner-0ld0ld0ld", &[])
            },
        );
        emu.add_runner(
            &EmuScope::org("your-organization"),
            RunnerSpec::idle("laptop-runner-abcdefgh", &[]),
        );

        let out = hangar(&["status", "--output", "json"], &env(&moto, &emu)).await;
        let shown = text(&out.stdout);
        assert!(out.status.success(), "{shown}\n{}", text(&out.stderr));
        let status: serde_json::Value = serde_json::from_str(&shown).unwrap();
        let pools = status["pools"].as_array().unwrap();
        assert_eq!(pools.len(), 2);
        let standalone = &pools[0];
        assert_eq!(standalone["pool"]["service"], STANDALONE);
        assert_eq!(standalone["service"]["desired"], 2);
        let rows = standalone["rows"].as_array().unwrap();
        assert_eq!(rows.len(), 3, "{rows:#?}");
        assert_eq!(rows[0]["task"]["id"], with_runner.as_str());
        assert_eq!(rows[0]["runner"]["busy"], true);
        assert_eq!(rows[0]["flags"], serde_json::json!([]));
        assert_eq!(rows[1]["runner"]["name"], "aws-github-runner-0ld0ld0ld");
        assert_eq!(
            rows[1]["flags"],
            serde_json::json!(["offline_registration"])
        );
        assert_eq!(rows[2]["task"]["id"], without_runner.as_str());
        assert_eq!(rows[2]["flags"], serde_json::json!(["task_without_runner"]));
        let org = &pools[1];
        assert_eq!(org["service"]["running"], 0);
        assert_eq!(
            org["rows"][0]["flags"],
            serde_json::json!(["runner_without_task"])
        );

        let out = hangar(&["status"], &env(&moto, &emu)).await;
        let table = text(&out.stdout);
        assert!(out.status.success());
        for expected in [
            "ECS cluster your-ecs-cluster-name",
            "ECS service github-runner-standalone-your-repository-name: ACTIVE, desired 2",
            "! offline registration",
            "! task with no runner",
            "! runner with no task",
            "3 flagged",
        ] {
            assert!(
                table.contains(expected),
                "missing {expected:?} in:\n{table}"
            );
        }
    })
    .await
}

#[tokio::test]
async fn status_says_clearly_what_is_missing() {
    within(90, async {
        let moto = Moto::start();
        let emu = emulator().await;
        deploy(&moto).await;
        // A cluster that does not exist: one clear error, exit 1.
        let out = hangar(&["status", "--cluster", "nope"], &env(&moto, &emu)).await;
        assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
        let err = text(&out.stderr);
        assert!(err.contains("ECS cluster \"nope\" was not found") && err.contains("--cluster"), "{err}");
        assert!(!err.contains("panicked"));
        // A repository with no service and unknown to GitHub: that pool says both, and the
        // others still report.
        let mut two_repos = env(&moto, &emu);
        two_repos.push(("GITHUB_REPOSITORY_NAMES".into(), "your-repository-name,other-repo".into()));
        let out = hangar(&["status"], &two_repos).await;
        let table = text(&out.stdout);
        assert!(out.status.success(), "{table}\n{}", text(&out.stderr));
        assert!(table.contains("no ECS service github-runner-standalone-other-repo in cluster your-ecs-cluster-name"), "{table}");
        assert!(table.contains("GitHub: repository your-organization/other-repo was not found"), "{table}");
        assert!(table.contains("ECS service github-runner-org-org: ACTIVE"), "{table}");
        // No GitHub credentials at all: every pool says so, and ECS is still shown.
        let mut no_github = env(&moto, &emu);
        no_github.retain(|(k, _)| k != "GITHUB_PAT" && !k.starts_with("GITHUB_APP_"));
        let out = hangar(&["status"], &no_github).await;
        let table = text(&out.stdout);
        assert!(out.status.success(), "{table}\n{}", text(&out.stderr));
        assert_eq!(table.matches("GitHub: no GitHub credentials found").count(), 2, "{table}");
        assert!(table.contains("ECS service github-runner-standalone-your-repository-name: ACTIVE, desired 2"), "{table}");
        assert!(table.contains("! task with no runner"), "{table}");
    })
    .await
}

async fn put_logs(moto: &Moto, group: &str, events: &[(i64, &str)]) {
    let logs = aws_sdk_cloudwatchlogs::Client::new(&moto.sdk_config());
    logs.create_log_group()
        .log_group_name(group)
        .send()
        .await
        .unwrap();
    logs.put_retention_policy()
        .log_group_name(group)
        .retention_in_days(30)
        .send()
        .await
        .unwrap();
    logs.create_log_stream()
        .log_group_name(group)
        .log_stream_name("runner/runner/task1")
        .send()
        .await
        .unwrap();
    append(moto, group, events).await;
}

async fn append(moto: &Moto, group: &str, events: &[(i64, &str)]) {
    let logs = aws_sdk_cloudwatchlogs::Client::new(&moto.sdk_config());
    let now = chrono::Utc::now().timestamp_millis();
    let mut req = logs
        .put_log_events()
        .log_group_name(group)
        .log_stream_name("runner/runner/task1");
    for (ago_s, message) in events {
        req = req.log_events(
            aws_sdk_cloudwatchlogs::types::InputLogEvent::builder()
                .timestamp(now - ago_s * 1000)
                .message(*message)
                .build()
                .unwrap(),
        );
    }
    req.send().await.unwrap();
}

#[tokio::test]
async fn logs_reads_one_pool_or_all_since_a_time_with_a_filter() {
    within(90, async {
        let moto = Moto::start();
        let emu = emulator().await;
        put_logs(
            &moto,
            "awslogs-github-runner-standalone-your-repository-name",
            &[
                (7200, "old line"),
                (300, "runner registered"),
                (60, "job completed"),
            ],
        )
        .await;
        put_logs(
            &moto,
            "awslogs-github-runner-org-org",
            &[(120, "org runner registered")],
        )
        .await;
        let e = env(&moto, &emu);

        let out = hangar(&["logs", "--runner-type", "standalone"], &e).await;
        let shown = text(&out.stdout);
        assert!(out.status.success(), "{shown}\n{}", text(&out.stderr));
        let lines: Vec<&str> = shown.lines().collect();
        assert_eq!(lines.len(), 2, "{shown}");
        assert!(
            lines[0]
                .ends_with("standalone-your-repository-name runner/runner/task1 runner registered"),
            "{shown}"
        );
        assert!(lines[1].ends_with("job completed"));

        let out = hangar(
            &["logs", "--runner-type", "standalone", "--since", "3h"],
            &e,
        )
        .await;
        assert!(text(&out.stdout).contains("old line"));

        let out = hangar(&["logs", "--since", "30m"], &e).await;
        let all: Vec<String> = text(&out.stdout).lines().map(str::to_string).collect();
        assert_eq!(all.len(), 3, "{all:?}");
        assert!(
            all[0].ends_with("runner registered")
                && all[1].contains("org-org")
                && all[2].ends_with("job completed"),
            "time order across groups: {all:?}"
        );

        let out = hangar(&["logs", "--since", "30m", "--filter", "completed"], &e).await;
        let filtered = text(&out.stdout);
        assert_eq!(filtered.lines().count(), 1, "{filtered}");
        assert!(filtered.contains("job completed"));
    })
    .await
}

#[tokio::test]
async fn logs_of_a_missing_group_is_a_clear_error() {
    within(90, async {
        let moto = Moto::start();
        let emu = emulator().await;
        let out = hangar(&["logs"], &env(&moto, &emu)).await;
        assert_eq!(out.status.code(), Some(1));
        assert!(
            text(&out.stderr).contains("no log group starts with awslogs-github-runner-"),
            "{}",
            text(&out.stderr)
        );
        put_logs(&moto, "awslogs-github-runner-org-org", &[(10, "x")]).await;
        let out = hangar(
            &["logs", "--runner-type", "standalone", "--repo", "nope"],
            &env(&moto, &emu),
        )
        .await;
        assert_eq!(out.status.code(), Some(1));
        let err = text(&out.stderr);
        assert!(
            err.contains(
                "log group awslogs-github-runner-standalone-nope does not exist in region us-east-1"
            ),
            "{err}"
        );
        assert!(
            err.contains("deployed groups: awslogs-github-runner-org-org"),
            "{err}"
        );
        assert!(!err.contains("panicked"));
    })
    .await
}

#[tokio::test]
async fn logs_follow_prints_new_events_until_interrupted() {
    use tokio::io::{AsyncBufReadExt, BufReader};
    within(90, async {
        let moto = Moto::start();
        let emu = emulator().await;
        let group = "awslogs-github-runner-org-org";
        put_logs(&moto, group, &[(30, "before")]).await;
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_hangar"));
        cmd.args(["logs", "--runner-type", "org", "--follow"])
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HANGAR_LOGS_POLL_MS", "200")
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true);
        for (k, v) in env(&moto, &emu) {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        assert!(
            lines
                .next_line()
                .await
                .unwrap()
                .unwrap()
                .ends_with("before")
        );
        append(&moto, group, &[(0, "after")]).await;
        assert!(lines.next_line().await.unwrap().unwrap().ends_with("after"));
        // Nothing is printed twice across polls.
        tokio::time::sleep(std::time::Duration::from_millis(600)).await;
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id().unwrap() as i32),
            nix::sys::signal::Signal::SIGINT,
        )
        .unwrap();
        let status = child.wait().await.unwrap();
        assert!(status.success());
        assert_eq!(lines.next_line().await.unwrap(), None);
    })
    .await
}
