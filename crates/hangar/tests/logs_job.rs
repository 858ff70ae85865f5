//! `hangar logs --job` through the real binary: the job's record served by a stand-in for the
//! controller's `/jobs` (an axum server on 127.0.0.1, with or without a bearer token), its log
//! stream in moto's CloudWatch Logs, and for a task with no recorded location, moto's ECS task
//! and task definition with awslogs options.

mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use aws_sdk_ecs::types::{
    Compatibility, ContainerDefinition, LaunchType, LogConfiguration, LogDriver, NetworkMode,
};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use serde_json::{Value, json};
use support::moto::{Moto, awsvpc};
use support::*;

const GROUP: &str = "awslogs-github-runner-org-org";
const ACCOUNT_ARN: &str = "arn:aws:ecs:us-east-1:123456789012:task/hangar-runners";
const TOKEN: &str = "s3cret-controller-token";

/// The stand-in controller: `/jobs` answers what `jobs` holds (changeable while it runs).
struct Controller {
    url: String,
    jobs: Arc<Mutex<Value>>,
}

async fn controller(jobs: Value, token: Option<&'static str>) -> Controller {
    let shared = Arc::new(Mutex::new(jobs));
    let state = (shared.clone(), token);
    async fn answer(
        State((jobs, token)): State<(Arc<Mutex<Value>>, Option<&'static str>)>,
        headers: HeaderMap,
    ) -> Result<axum::Json<Value>, StatusCode> {
        if let Some(token) = token {
            let sent = headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            if sent != format!("Bearer {token}") {
                return Err(StatusCode::UNAUTHORIZED);
            }
        }
        Ok(axum::Json(jobs.lock().unwrap().clone()))
    }
    let app = axum::Router::new()
        .route("/jobs", axum::routing::get(answer))
        .with_state(state);
    let socket = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", socket.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(socket, app).await });
    Controller { url, jobs: shared }
}

/// One pool, `org`, with these records.
fn pools(in_flight: Vec<Value>, recent: Vec<Value>) -> Value {
    json!({"pools": [{"name": "org", "scale_set": "hangar-org", "in_flight": in_flight, "recent": recent, "let_go": 0}]})
}

fn record(job_id: &str, task: Value) -> Value {
    json!({
        "job_id": job_id, "runner_request_id": 1, "repository": "acme/app",
        "workflow_ref": "acme/app/.github/workflows/ci.yml@refs/heads/main", "job_name": "build",
        "run_id": 55, "event": "push", "labels": ["hangar-org"],
        "queued_at": "2026-12-07T10:00:00Z", "assigned_at": null, "started_at": null,
        "completed_at": null, "result": null, "runner_id": null, "runner_name": null,
        "task": task,
    })
}

fn ecs_task(id: &str, location: Option<(&str, &str)>) -> Value {
    let mut task = json!({
        "id": id, "created_at": "2026-12-07T10:00:01Z", "pull_started_at": null,
        "pull_stopped_at": null, "started_at": null, "stopped_at": null, "capacity_provider": "FARGATE",
    });
    if let Some((group, stream)) = location {
        task["log_group"] = group.into();
        task["log_stream"] = stream.into();
    }
    task
}

fn logs_client(moto: &Moto) -> aws_sdk_cloudwatchlogs::Client {
    aws_sdk_cloudwatchlogs::Client::new(&moto.sdk_config())
}

async fn create_group(moto: &Moto, group: &str) {
    logs_client(moto)
        .create_log_group()
        .log_group_name(group)
        .send()
        .await
        .unwrap();
}

/// Appends `messages` to `stream` (created if new), one millisecond apart, `ago_s` before now.
async fn put(moto: &Moto, group: &str, stream: &str, ago_s: i64, messages: &[&str]) {
    let logs = logs_client(moto);
    let _ = logs
        .create_log_stream()
        .log_group_name(group)
        .log_stream_name(stream)
        .send()
        .await;
    let at = chrono::Utc::now().timestamp_millis() - ago_s * 1000;
    let mut request = logs
        .put_log_events()
        .log_group_name(group)
        .log_stream_name(stream);
    for (i, message) in messages.iter().enumerate() {
        request = request.log_events(
            aws_sdk_cloudwatchlogs::types::InputLogEvent::builder()
                .timestamp(at + i as i64)
                .message(*message)
                .build()
                .unwrap(),
        );
    }
    request.send().await.unwrap();
}

fn env(moto: &Moto, token: Option<&str>) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = moto
        .env()
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    env.push(("HANGAR_LOGS_POLL_MS".into(), "200".into()));
    if let Some(token) = token {
        env.push(("HANGAR_CONTROLLER_TOKEN".into(), token.into()));
    }
    env
}

/// `hangar logs --job JOB --controller URL`: exit code, stdout lines, stderr.
async fn logs_job(
    job: &str,
    controller: &str,
    env: &[(String, String)],
) -> (Option<i32>, Vec<String>, String) {
    let out = hangar(&["logs", "--job", job, "--controller", controller], env).await;
    let stdout = text(&out.stdout).lines().map(str::to_string).collect();
    (out.status.code(), stdout, text(&out.stderr))
}

/// The messages of printed lines (`TIME GROUP STREAM MESSAGE`), and that every line is of
/// `stream`.
fn messages(lines: &[String], stream: &str) -> Vec<String> {
    lines
        .iter()
        .map(|line| {
            let parts: Vec<&str> = line.splitn(4, ' ').collect();
            assert_eq!(parts.len(), 4, "{line}");
            assert_eq!(parts[1], "org-org", "{line}");
            assert_eq!(parts[2], stream, "{line}");
            parts[3].to_string()
        })
        .collect()
}

#[tokio::test]
async fn a_recorded_stream_prints_whole_and_alone_by_job_id_or_url() {
    within(90, async {
        let moto = Moto::start();
        create_group(&moto, GROUP).await;
        let stream = "runner/runner/task1";
        put(
            &moto,
            GROUP,
            stream,
            300,
            &["runner registered", "job started"],
        )
        .await;
        put(
            &moto,
            GROUP,
            "runner/runner/task2",
            200,
            &["another runner's line"],
        )
        .await;
        put(
            &moto,
            GROUP,
            stream,
            100,
            &["step 1", "job completed: succeeded"],
        )
        .await;
        let task = ecs_task(&format!("{ACCOUNT_ARN}/task1"), Some((GROUP, stream)));
        let server = controller(pools(vec![], vec![record("101", task)]), None).await;
        let env = env(&moto, None);

        let (code, lines, err) = logs_job("101", &server.url, &env).await;
        assert_eq!(code, Some(0), "{err}");
        assert_eq!(
            messages(&lines, stream),
            [
                "runner registered",
                "job started",
                "step 1",
                "job completed: succeeded"
            ]
        );

        for url in [
            "https://github.com/acme/app/actions/runs/55/job/101",
            "https://github.com/ACME/App/actions/runs/55/attempts/2/job/101?pr=3#step:2:1",
            "https://ghe.example.com/acme/app/actions/runs/55/job/101/",
        ] {
            let (code, by_url, err) = logs_job(url, &server.url, &env).await;
            assert_eq!(code, Some(0), "{url}: {err}");
            assert_eq!(by_url, lines, "{url}");
        }

        // A URL of another repository's job with the same id: said, not printed.
        let (code, lines, err) = logs_job(
            "https://github.com/acme/other/actions/runs/55/job/101",
            &server.url,
            &env,
        )
        .await;
        assert_eq!(code, Some(1), "{err}");
        assert!(lines.is_empty());
        assert!(
            err.contains("job 101 is a job of acme/app") && err.contains("URL names acme/other"),
            "{err}"
        );
        // A run's URL is no job's: a usage error.
        let (code, _, err) = logs_job(
            "https://github.com/acme/app/actions/runs/55",
            &server.url,
            &env,
        )
        .await;
        assert_eq!(code, Some(2), "{err}");
        assert!(
            err.contains("is not a GitHub job URL") && err.contains("a run's URL"),
            "{err}"
        );
    })
    .await
}

#[tokio::test]
async fn an_ecs_task_with_no_recorded_stream_is_found_from_its_task_definition() {
    within(90, async {
        let moto = Moto::start();
        moto.hold_task_states().await;
        let ecs = aws_sdk_ecs::Client::new(&moto.sdk_config());
        ecs.create_cluster()
            .cluster_name("hangar-runners")
            .send()
            .await
            .unwrap();
        let awslogs = |group: &str, prefix: &str| {
            LogConfiguration::builder()
                .log_driver(LogDriver::Awslogs)
                .set_options(Some(HashMap::from([
                    ("awslogs-group".to_string(), group.to_string()),
                    ("awslogs-stream-prefix".to_string(), prefix.to_string()),
                    ("awslogs-region".to_string(), "us-east-1".to_string()),
                ])))
                .build()
                .unwrap()
        };
        // A sidecar listed first, logging elsewhere: the runner container is the one read.
        ecs.register_task_definition()
            .family("hangar-runner")
            .network_mode(NetworkMode::Awsvpc)
            .requires_compatibilities(Compatibility::Fargate)
            .cpu("256")
            .memory("512")
            .container_definitions(
                ContainerDefinition::builder()
                    .name("sidecar")
                    .image("busybox")
                    .memory(128)
                    .essential(true)
                    .log_configuration(awslogs("sidecar-logs", "side"))
                    .build(),
            )
            .container_definitions(
                ContainerDefinition::builder()
                    .name("runner")
                    .image("hangar-runner:test")
                    .memory(384)
                    .essential(true)
                    .log_configuration(awslogs(GROUP, "runner"))
                    .build(),
            )
            .send()
            .await
            .unwrap();
        let (subnet, security_group) = moto.default_network().await;
        let run = ecs
            .run_task()
            .cluster("hangar-runners")
            .task_definition("hangar-runner")
            .launch_type(LaunchType::Fargate)
            .network_configuration(awsvpc(vec![subnet], vec![security_group]))
            .send()
            .await
            .unwrap();
        let arn = run.tasks()[0].task_arn().unwrap().to_string();
        let task_id = arn.rsplit('/').next().unwrap().to_string();
        // As the awslogs driver names it: prefix / container / task id.
        let stream = format!("runner/runner/{task_id}");
        create_group(&moto, GROUP).await;
        put(
            &moto,
            GROUP,
            &stream,
            60,
            &["from the task definition", "job done"],
        )
        .await;
        put(
            &moto,
            GROUP,
            "runner/runner/someone-else",
            30,
            &["not this one"],
        )
        .await;

        let mut running = record("202", ecs_task(&arn, None));
        running["runner_name"] = "org-abcd1234".into();
        let server = controller(pools(vec![running], vec![]), Some(TOKEN)).await;
        let (code, lines, err) = logs_job("202", &server.url, &env(&moto, Some(TOKEN))).await;
        assert_eq!(code, Some(0), "{err}");
        assert_eq!(
            messages(&lines, &stream),
            ["from the task definition", "job done"]
        );

        // A task ECS no longer knows, with no recorded stream: said, with where else to look.
        let gone = record(
            "203",
            ecs_task(
                &format!("{ACCOUNT_ARN}/0000000000000000000000000000dead"),
                None,
            ),
        );
        *server.jobs.lock().unwrap() = pools(vec![], vec![gone]);
        let (code, lines, err) = logs_job("203", &server.url, &env(&moto, Some(TOKEN))).await;
        assert_eq!(code, Some(1), "{err}");
        assert!(lines.is_empty());
        assert!(
            err.contains("ECS no longer knows task")
                && err.contains("forgets stopped tasks")
                && err.contains("recorded no log location")
                && err.contains("--filter '\"0000000000000000000000000000dead\"'"),
            "{err}"
        );
    })
    .await
}

#[tokio::test]
async fn what_cannot_be_shown_is_said_with_its_cause_and_fix() {
    within(120, async {
        let moto = Moto::start();
        create_group(&moto, GROUP).await;
        put(&moto, GROUP, "runner/runner/present", 10, &["x"]).await;
        let queued = record("301", Value::Null);
        let mut local = record("302", json!({"id": "local-org-1a2b3c4d", "stopped_at": null}));
        local["runner_name"] = "org-1a2b3c4d".into();
        let missing_stream = record(
            "303",
            ecs_task(&format!("{ACCOUNT_ARN}/nostream"), Some((GROUP, "runner/runner/nostream"))),
        );
        let missing_group = record(
            "304",
            ecs_task(&format!("{ACCOUNT_ARN}/nogroup"), Some(("awslogs-nope", "runner/runner/nogroup"))),
        );
        let mut canceled = record("305", Value::Null);
        canceled["result"] = "canceled".into();
        let server = controller(
            pools(vec![queued, local], vec![missing_stream, missing_group, canceled]),
            Some(TOKEN),
        )
        .await;
        let with_token = env(&moto, Some(TOKEN));

        let cases: [(&str, &[&str]); 6] = [
            ("999", &[
                "job 999 is not in the records of the controller",
                "pools org; 5 jobs in them",
                "last 200 finished per pool",
                "hangar logs --runner-type TYPE --repo NAME --since 2d",
            ]),
            ("301", &["job 301 of acme/app has no task yet: it is still queued"]),
            ("302", &[
                "ran on the local backend (task local-org-1a2b3c4d of pool org)",
                "<work_root>/org-1a2b3c4d/agent.log",
                "Fix: read that file there",
            ]),
            ("303", &[
                "log stream runner/runner/nostream of job 303 does not exist in log group awslogs-github-runner-org-org (region us-east-1)",
            ]),
            ("304", &["log group awslogs-nope of job 304 does not exist in region us-east-1"]),
            ("305", &["job 305 of acme/app finished (canceled) with no task recorded"]),
        ];
        for (job, expected) in cases {
            let (code, lines, err) = logs_job(job, &server.url, &with_token).await;
            assert_eq!(code, Some(1), "{job}: {err}");
            assert!(lines.is_empty(), "{job}: {lines:?}");eprintln!("MSG {err}");
            for part in expected {
                assert!(err.contains(part), "{job}: missing {part:?} in {err}");
            }
            assert!(!err.contains("panicked"), "{err}");
        }
        // A URL whose job is not recorded, but others of its run are: they are named.
        let (code, _, err) = logs_job(
            "https://github.com/acme/app/actions/runs/55/job/998",
            &server.url,
            &with_token,
        )
        .await;
        assert_eq!(code, Some(1));
        assert!(err.contains("jobs of run 55 in them: 301 (build)"), "{err}");

        // Without the token: the 401 and its fix; the token never shows.
        let (code, _, err) = logs_job("301", &server.url, &env(&moto, None)).await;
        assert_eq!(code, Some(1), "{err}");
        assert!(err.contains("(401)") && err.contains("HANGAR_CONTROLLER_TOKEN"), "{err}");
        let (code, _, err) = logs_job("301", &server.url, &env(&moto, Some("wrong"))).await;
        assert_eq!(code, Some(1));
        assert!(err.contains("(401)") && !err.contains("wrong"), "{err}");
        // No controller there.
        let nobody = format!("http://127.0.0.1:{}", unused_loopback_port());
        let (code, _, err) = logs_job("301", &nobody, &with_token).await;
        assert_eq!(code, Some(1));
        assert!(err.contains("cannot reach the controller at"), "{err}");
        // No controller given at all.
        let out = hangar(&["logs", "--job", "301"], &with_token).await;
        assert_eq!(out.status.code(), Some(2));
        assert!(text(&out.stderr).contains("HANGAR_CONTROLLER_URL"), "{}", text(&out.stderr));
        // ... or through the variable.
        let mut by_variable = with_token.clone();
        by_variable.push(("HANGAR_CONTROLLER_URL".into(), server.url.clone()));
        let out = hangar(&["logs", "--job", "301"], &by_variable).await;
        let err = text(&out.stderr);
        assert!(err.contains("still queued") && !err.contains(TOKEN), "{err}");
    })
    .await
}

#[tokio::test]
async fn follow_prints_new_lines_until_the_task_stops() {
    use tokio::io::{AsyncBufReadExt, BufReader};
    within(90, async {
        let moto = Moto::start();
        create_group(&moto, GROUP).await;
        let stream = "runner/runner/task9";
        put(&moto, GROUP, stream, 30, &["before"]).await;
        let task = ecs_task(&format!("{ACCOUNT_ARN}/task9"), Some((GROUP, stream)));
        let server = controller(pools(vec![record("401", task)], vec![]), None).await;
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_hangar"));
        cmd.args([
            "logs",
            "--job",
            "401",
            "--controller",
            &server.url,
            "--follow",
        ])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true);
        for (k, v) in env(&moto, None) {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let first = lines.next_line().await.unwrap().unwrap_or_default();
        assert!(first.ends_with(" before"), "{first}");
        put(&moto, GROUP, stream, 20, &["during"]).await;
        let second = lines.next_line().await.unwrap().unwrap_or_default();
        assert!(second.ends_with(" during"), "{second}");
        // The task stops: its last line is still printed, then the command ends by itself.
        put(&moto, GROUP, stream, 10, &["last words"]).await;
        server.jobs.lock().unwrap()["pools"][0]["in_flight"][0]["task"]["stopped_at"] =
            "2026-12-07T10:05:00Z".into();
        let mut rest = Vec::new();
        while let Some(line) = lines.next_line().await.unwrap() {
            rest.push(line);
        }
        assert_eq!(rest.len(), 1, "{rest:?}");
        assert!(rest[0].ends_with(" last words"), "{rest:?}");
        assert!(child.wait().await.unwrap().success());
    })
    .await
}
