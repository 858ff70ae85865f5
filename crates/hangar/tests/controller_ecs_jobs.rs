//! A job on an ECS pool, followed to the end from the operator's side: the real controller
//! (`runtime::run`) with one Fargate pool on moto, the ECS data plane stand-in running a real
//! `hangar agent` and stand-in runner for the task, the GitHub emulator. Once the job is done
//! and its task gone, `/jobs` has its record with the task (ECS's ARN and timestamps, the
//! awslogs stream) and its final cost, `/status` and `/metrics` the pool's totals, `hangar jobs`
//! shows the cost, and `hangar logs --job` prints the stream the controller recorded.

#[path = "support/browser.rs"]
#[allow(dead_code)] // This test needs no event-stream proxy.
mod browser;
mod support;

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_ecs::types::{
    Compatibility, ContainerDefinition, LogConfiguration, LogDriver, NetworkMode,
};
use hangar::controller::cost::dollars;
use hangar::controller::listener::ListenerTiming;
use hangar::controller::runtime::{self, RunOptions};
use hangar_emulator::{JobSpec, JobStatus};
use serde_json::Value;
use support::ecs_dataplane::{DataPlane, agent_env};
use support::moto::Moto;
use tokio_util::sync::CancellationToken;

const CLUSTER: &str = "hangar-jobs";
const TASK_DEFINITION: &str = "hangar-jobs-runner";
const LOG_GROUP: &str = "awslogs-github-runner-ecs-jobs";
const POOL: &str = "fargate";

/// The task definition as the Terraform module registers it: the runner container logs with
/// awslogs under a stream prefix.
async fn register_task_definition(moto: &Moto) {
    let ecs = aws_sdk_ecs::Client::new(&moto.sdk_config());
    let options: HashMap<String, String> = [
        ("awslogs-group", LOG_GROUP),
        ("awslogs-region", "us-east-1"),
        ("awslogs-stream-prefix", "runner"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    ecs.register_task_definition()
        .family(TASK_DEFINITION)
        .network_mode(NetworkMode::Awsvpc)
        .requires_compatibilities(Compatibility::Fargate)
        .cpu("1024")
        .memory("2048")
        .container_definitions(
            ContainerDefinition::builder()
                .name("runner")
                .image("hangar-runner:test")
                .memory(2048)
                .essential(true)
                .log_configuration(
                    LogConfiguration::builder()
                        .log_driver(LogDriver::Awslogs)
                        .set_options(Some(options))
                        .build()
                        .unwrap(),
                )
                .build(),
        )
        .send()
        .await
        .expect("register_task_definition");
}

fn metric(text: &str, family: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(&format!("{family}{{")) && l.contains(&format!("name=\"{POOL}\"")))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

fn close(got: f64, want: f64, what: &str) {
    assert!((got - want).abs() < 1e-9, "{what}: got {got}, want {want}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_finished_ecs_job_has_its_task_its_cost_and_its_log_stream() {
    support::within(240, async {
        let moto = Moto::start();
        moto.ecs_cluster(CLUSTER, &[]).await;
        register_task_definition(&moto).await;
        let (subnet, security_group) = moto.default_network().await;
        let emu = support::emulator().await;
        let dir = support::reachable_temp_dir().join(format!(
            "hangar-ecs-jobs-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join("hangar.toml");
        std::fs::write(
            &config,
            format!(
                r#"
[controller]
resync_interval = "2s"
listen = "127.0.0.1:0"
github_api_url = "{api}"
github_web_url = "{web}"

[[pool]]
name = "{POOL}"
repository = "{repo}"
max = 2
[pool.ecs]
cluster = "{CLUSTER}"
task_definition = "{TASK_DEFINITION}"
subnets = ["{subnet}"]
security_groups = ["{security_group}"]
cpu = 1024
memory = 2048
"#,
                api = emu.api_url(),
                web = emu.web_url(),
                repo = support::REPO,
            ),
        )
        .unwrap();

        let mut plane = DataPlane::start(&moto.url, CLUSTER, agent_env(&emu, moto.env()));
        let cancel = CancellationToken::new();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let mut options = RunOptions::new(config, cancel.clone());
        options.credential_env = support::seed_credential_env();
        options.on_listening = Some(tx);
        options.listener_timing = ListenerTiming::fast();
        options.aws_config = Some(moto.sdk_config());
        let controller = tokio::spawn(runtime::run(options));
        let addr = support::within(60, rx)
            .await
            .expect("the controller serves");
        let base = format!("http://{addr}");
        let get = |path: &str| {
            let url = format!("{base}{path}");
            async move { reqwest::get(url).await.unwrap().text().await.unwrap() }
        };

        let id = emu.enqueue_job(
            JobSpec::new(support::REPO, "costed")
                .labels([POOL])
                .step("work", "sleep 2"),
        );
        let waited = std::time::Instant::now();
        while emu.job(id).is_none_or(|j| j.status != JobStatus::Completed) {
            assert!(
                waited.elapsed() < Duration::from_secs(90),
                "the job did not complete: {:?}\nstatus: {}\ntasks: {:?}\nagent: {}",
                emu.job(id),
                get("/status").await,
                plane.tasks(),
                plane
                    .tasks()
                    .first()
                    .map(|t| plane.agent_log(&t.runner_name))
                    .unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        // The bill is final once the task has left ECS's listing.
        let waited = std::time::Instant::now();
        let (pool, job) = loop {
            let jobs: Value = serde_json::from_str(&get("/jobs").await).unwrap();
            let pool = jobs["pools"][0].clone();
            let job = pool["recent"][0].clone();
            if job["cost"]["final"] == true {
                break (pool, job);
            }
            assert!(
                waited.elapsed() < Duration::from_secs(60),
                "no final cost: {jobs:#}\ntasks: {:?}",
                plane.tasks()
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        };

        assert_eq!(job["job_id"], id.to_string());
        assert_eq!(job["result"], "succeeded");
        let task = &job["task"];
        let arn = task["id"].as_str().unwrap();
        assert!(arn.starts_with("arn:aws:ecs:us-east-1:"), "{job:#}");
        let task_id = arn.rsplit('/').next().unwrap();
        assert_eq!(task["log_group"], LOG_GROUP, "{job:#}");
        assert_eq!(
            task["log_stream"],
            format!("runner/runner/{task_id}"),
            "{job:#}"
        );
        assert!(task["created_at"].is_string(), "{job:#}");
        // moto dates no image pull and no stop (ECS does): the bill runs from the task's
        // creation to the pass that saw it stopped, and says it is an estimate.
        assert_eq!(job["cost"]["estimated"], true, "{job:#}");

        // The job's share and the rest make the task's bill; totals and metrics agree.
        let cost = &job["cost"];
        let (task_dollars, job_dollars, overhead) = (
            cost["task_dollars"].as_f64().unwrap(),
            cost["job_dollars"].as_f64().unwrap(),
            cost["overhead_dollars"].as_f64().unwrap(),
        );
        assert!(cost["billed_seconds"].as_f64().unwrap() >= 60.0, "{cost}");
        assert!(job_dollars > 0.0 && overhead > 0.0, "{cost}");
        close(job_dollars + overhead, task_dollars, "job + overhead");
        // 1 vCPU and 2 GiB on demand in us-east-1 is 0.04937 USD an hour.
        close(
            task_dollars,
            0.04937 * cost["billed_seconds"].as_f64().unwrap() / 3600.0,
            "the task's bill",
        );
        close(
            pool["cost"]["job_dollars_total"].as_f64().unwrap(),
            job_dollars,
            "pool job total",
        );
        assert_eq!(pool["cost"]["region"], "us-east-1");
        assert_eq!(pool["cost"]["size"], "1 vCPU, 2 GiB, X86_64");
        let status: Value = serde_json::from_str(&get("/status").await).unwrap();
        close(
            status["pools"][0]["report"]["cost"]["idle_dollars_total"]
                .as_f64()
                .unwrap(),
            pool["cost"]["idle_dollars_total"].as_f64().unwrap(),
            "status and jobs agree",
        );
        let metrics = get("/metrics").await;
        close(
            metric(&metrics, "hangar_job_cost_dollars_total").unwrap(),
            job_dollars,
            "hangar_job_cost_dollars_total",
        );
        assert!(metric(&metrics, "hangar_idle_cost_dollars_total").unwrap() > 0.0);

        // The operator's side: `hangar jobs` shows the cost, and `hangar logs --job` prints the
        // stream the controller recorded for the job's task.
        let jobs_text =
            support::hangar(&["jobs", "--controller", &base], &[("HANGAR_X", "")]).await;
        let out = support::text(&jobs_text.stdout);
        assert!(
            jobs_text.status.success(),
            "{out}{}",
            support::text(&jobs_text.stderr)
        );
        assert!(out.lines().next().unwrap().contains("COST"), "{out}");
        assert!(out.contains(&dollars(job_dollars)), "{out}");
        let logs = aws_sdk_cloudwatchlogs::Client::new(&moto.sdk_config());
        logs.create_log_group()
            .log_group_name(LOG_GROUP)
            .send()
            .await
            .unwrap();
        let stream = format!("runner/runner/{task_id}");
        logs.create_log_stream()
            .log_group_name(LOG_GROUP)
            .log_stream_name(&stream)
            .send()
            .await
            .unwrap();
        let now = chrono::Utc::now().timestamp_millis();
        for (i, line) in ["runner registered", "job costed finished"]
            .iter()
            .enumerate()
        {
            logs.put_log_events()
                .log_group_name(LOG_GROUP)
                .log_stream_name(&stream)
                .log_events(
                    aws_sdk_cloudwatchlogs::types::InputLogEvent::builder()
                        .timestamp(now + i as i64)
                        .message(*line)
                        .build()
                        .unwrap(),
                )
                .send()
                .await
                .unwrap();
        }
        let job_id = id.to_string();
        let mut env: Vec<(&str, String)> = moto.env();
        env.push(("HANGAR_X", String::new()));
        let printed =
            support::hangar(&["logs", "--job", &job_id, "--controller", &base], &env).await;
        let out = support::text(&printed.stdout);
        assert!(
            printed.status.success(),
            "{out}{}",
            support::text(&printed.stderr)
        );
        let at = |s: &str| {
            out.find(s)
                .unwrap_or_else(|| panic!("{s:?} missing: {out}"))
        };
        assert!(at("runner registered") < at("job costed finished"), "{out}");

        // The web page, as a browser builds it, shows the job's cost and the pool's totals.
        if let Some(chromium) = browser::Chromium::find("the ECS job's page") {
            let page = format!("{base}/");
            let dom = support::within(30, chromium.dump_dom(&page, None)).await;
            let row = dom
                .split("data-job-id=\"")
                .find(|part| part.starts_with(&format!("{job_id}\"")))
                .unwrap_or_else(|| panic!("job {job_id} on the page: {dom}"));
            assert!(
                row.contains(&format!("cost {}", dollars(job_dollars))),
                "{row}"
            );
            assert!(dom.contains("<b>Cost</b>: job time $"), "{dom}");
            assert!(dom.contains("size 1 vCPU, 2 GiB, X86_64"), "{dom}");
            let shots = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("web-page");
            std::fs::create_dir_all(&shots).unwrap();
            let shot = shots.join("phone-ecs-cost.png");
            support::within(30, chromium.screenshot(&page, &shot, 390, 844)).await;
            assert!(std::fs::metadata(&shot).unwrap().len() > 10_000);
            eprintln!("screenshot: {}", shot.display());
        }

        cancel.cancel();
        let _ = support::within(60, controller).await;
        plane.stop().await;
        let _ = std::fs::remove_dir_all(&dir);
    })
    .await
}
