//! A burst of jobs through the whole controller on "AWS": the GitHub emulator's scale set, the
//! real controller (`runtime::run`) with one ECS pool, moto behind the AWS realism layer at
//! AWS's rates (with a listing lag), and the ECS data plane stand-in running a real `hangar
//! agent` and stand-in runner for every task. Shared by `tests/controller_ecs_burst.rs`, which
//! asserts on the outcome, and `benches/ecs_burst.rs`, which prints it.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use hangar::controller::listener::ListenerTiming;
use hangar::controller::runtime::{self, RunOptions};
use hangar_emulator::{Emulator, JobSpec, JobStatus};
use tokio_util::sync::CancellationToken;

use super::ecs_dataplane::{DataPlane, agent_env};
use super::moto::Moto;
use super::realism::Realism;

pub const CLUSTER: &str = "hangar-burst";
pub const TASK_DEFINITION: &str = "hangar-burst-runner";
pub const PREFIX: &str = "/hangar/jit";
pub const POOL: &str = "burst";

/// What to run.
#[derive(Clone, Debug)]
pub struct Burst {
    pub jobs: usize,
    /// The pool's `max`.
    pub max: u32,
    /// How long a task RunTask started stays out of ListTasks and DescribeTasks.
    pub visibility_delay: Duration,
    /// `controller.ssm_writes_per_second` (`None`: the default).
    pub ssm_writes_per_second: Option<f64>,
    /// How long each job's one step runs (`sleep`).
    pub job_seconds: u32,
    /// How long the whole burst may take.
    pub deadline: Duration,
}

/// What happened.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub jobs: usize,
    pub succeeded: usize,
    /// Jobs that did not succeed, with where they were.
    pub not_succeeded: Vec<String>,
    /// From the enqueueing of the jobs to the completion of the last.
    pub elapsed: Duration,
    /// From the first task's start to the last's.
    pub launch_span: Duration,
    /// Tasks RunTask started (seen by the data plane).
    pub tasks: usize,
    /// JIT configurations GitHub issued (one per runner registration created).
    pub registrations: usize,
    /// Runners that ran a job, by name (distinct).
    pub runners_with_a_job: usize,
    /// Tasks whose runner ran no job.
    pub tasks_without_a_job: usize,
    /// The most tasks that ran at once.
    pub peak_running: usize,
    /// How long a task ran, on average: from its start to its agent's exit.
    pub mean_task_seconds: f64,
    /// One-shot parameters left under the prefix once every task stopped.
    pub leftovers: Vec<String>,
    /// Calls per AWS operation, as the realism layer saw them (controller and agents).
    pub aws_calls: BTreeMap<String, u64>,
    /// Throttling answers per AWS operation.
    pub throttled: BTreeMap<String, u64>,
    /// Requests GitHub (REST and the Actions service's scale-set API) served during the burst:
    /// all of them the controller's (the runners hold no credential).
    pub github_calls: usize,
    /// Runner-protocol requests (the runners' own sessions, job messages and results).
    pub runner_protocol_calls: usize,
    /// Runner creations GitHub's secondary limit refused (403 with `retry-after`).
    pub secondary_limited: usize,
    /// What the controller said held launches, each distinct reason once.
    pub launch_held: BTreeSet<String>,
    /// `hangar_launch_failures_total` by reason.
    pub launch_failures: BTreeMap<String, u64>,
}

impl Outcome {
    /// Launches a minute between the first and the last (n launches span n - 1 intervals).
    pub fn launches_per_minute(&self) -> f64 {
        if self.launch_span.is_zero() || self.tasks < 2 {
            return 0.0;
        }
        (self.tasks - 1) as f64 / self.launch_span.as_secs_f64() * 60.0
    }

    /// Registrations beyond one per job.
    pub fn over_launches(&self) -> usize {
        self.registrations.saturating_sub(self.jobs)
    }
}

/// The operations the layer counts and throttles, in report order.
pub const OPERATIONS: &[&str] = &[
    "RunTask",
    "ListTasks",
    "DescribeTasks",
    "StopTask",
    "PutParameter",
    "GetParameter",
    "DeleteParameter",
    "DescribeParameters",
];

fn pool_file(emu: &Emulator, burst: &Burst, subnet: &str, security_group: &str) -> String {
    let ssm = burst
        .ssm_writes_per_second
        .map(|r| format!("ssm_writes_per_second = {r}"))
        .unwrap_or_default();
    format!(
        r#"
[controller]
resync_interval = "5s"
listen = "127.0.0.1:0"
github_api_url = "{api}"
github_web_url = "{web}"
owner_name = "burst"
{ssm}

[[pool]]
name = "{POOL}"
repository = "{repo}"
max = {max}
registration_timeout = "2m"
pending_timeout = "5m"
[pool.ecs]
cluster = "{CLUSTER}"
task_definition = "{TASK_DEFINITION}"
subnets = ["{subnet}"]
security_groups = ["{security_group}"]
parameter_prefix = "{PREFIX}"
"#,
        api = emu.api_url(),
        web = emu.web_url(),
        repo = super::REPO,
        max = burst.max,
    )
}

/// The controller's SDK configuration: the realism layer's endpoint, with the SDK's standard
/// retries as `hangar controller` has them (the tests' own clients have none).
fn controller_aws(aws: &Realism) -> aws_config::SdkConfig {
    let base = aws.sdk_config();
    base.into_builder()
        .retry_config(aws_config::retry::RetryConfig::standard())
        .build()
}

async fn parameters_under(moto: &Moto, prefix: &str) -> Vec<String> {
    use aws_sdk_ssm::types::ParameterStringFilter;
    let ssm = aws_sdk_ssm::Client::new(&moto.sdk_config());
    let mut names = Vec::new();
    let mut token = None;
    loop {
        let page = ssm
            .describe_parameters()
            .parameter_filters(
                ParameterStringFilter::builder()
                    .key("Path")
                    .option("Recursive")
                    .values(prefix)
                    .build()
                    .unwrap(),
            )
            .set_next_token(token)
            .send()
            .await
            .expect("DescribeParameters on moto");
        names.extend(
            page.parameters()
                .iter()
                .filter_map(|p| p.name().map(str::to_string)),
        );
        token = page.next_token().map(str::to_string);
        if token.is_none() {
            return names;
        }
    }
}

fn metric_by_label(text: &str, name: &str, label: &str) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for line in text.lines().filter(|l| l.starts_with(&format!("{name}{{"))) {
        let Some(value) = line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) else {
            continue;
        };
        let key = line
            .split(&format!("{label}=\""))
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .unwrap_or("")
            .to_string();
        *out.entry(key).or_default() += value as u64;
    }
    out
}

/// Runs `burst` and reports. Panics only when the rig itself breaks (moto, the controller not
/// starting); what the controller does wrong is in the outcome.
pub async fn run(burst: &Burst) -> Outcome {
    // HANGAR_BURST_LOG=FILE keeps the controller's log, to see why a figure is what it is.
    if let Ok(path) = std::env::var("HANGAR_BURST_LOG") {
        let file = std::fs::File::create(path).expect("HANGAR_BURST_LOG is writable");
        let _ = tracing_subscriber::fmt()
            .with_writer(std::sync::Mutex::new(file))
            .with_ansi(false)
            .with_env_filter("hangar=debug")
            .try_init();
    }
    let moto = Moto::start();
    moto.ecs_cluster(CLUSTER, &[TASK_DEFINITION]).await;
    let (subnet, security_group) = moto.default_network().await;
    let aws = Realism::aws(&moto.url);
    aws.set_visibility_delay(burst.visibility_delay);
    let emu = super::emulator().await;
    // GitHub's documented secondary limit on runner creations (900 points a minute, 5 a POST).
    emu.set_secondary_limit(Some(hangar_emulator::SecondaryLimit::github()));

    let dir = std::env::temp_dir().join(format!(
        "hangar-burst-{}-{}",
        std::process::id(),
        rand::random::<u32>()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let config_path = dir.join("hangar.toml");
    std::fs::write(
        &config_path,
        pool_file(&emu, burst, &subnet, &security_group),
    )
    .unwrap();

    let mut plane = DataPlane::start(&moto.url, CLUSTER, agent_env(&emu, aws.env()));
    let cancel = CancellationToken::new();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let mut options = RunOptions::new(config_path, cancel.clone());
    options.credential_env = super::seed_credential_env();
    options.on_listening = Some(tx);
    options.listener_timing = ListenerTiming::fast();
    options.aws_config = Some(controller_aws(&aws));
    let controller = tokio::spawn(runtime::run(options));
    let addr = super::within(60, rx).await.expect("the controller serves");
    let http = reqwest::Client::new();
    let status = || async {
        http.get(format!("http://{addr}/status"))
            .send()
            .await
            .unwrap()
            .json::<serde_json::Value>()
            .await
            .unwrap()
    };
    // The pool's session is live before the jobs come.
    super::within(60, async {
        loop {
            let s = status().await;
            let live = s["pools"].as_array().into_iter().flatten().any(|p| {
                p["name"] == POOL && p["session"].as_str().is_some_and(|s| s.starts_with("live"))
            });
            if live {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;

    // `calls` holds every REST and scale-set request (the scale-set counts are a view of it).
    let github_before = emu.calls().len();
    let runner_protocol_before = emu.runner_calls().len();
    let started = Instant::now();
    let ids: Vec<u64> = (0..burst.jobs)
        .map(|n| {
            emu.enqueue_job(
                JobSpec::new(super::REPO, &format!("burst-{n}"))
                    .labels([POOL])
                    .step("work", &format!("sleep {}", burst.job_seconds)),
            )
        })
        .collect();

    // Until every job is done (or the deadline), noting why launches were held.
    let mut launch_held = BTreeSet::new();
    let deadline = started + burst.deadline;
    loop {
        let done = ids
            .iter()
            .filter(|id| {
                emu.job(**id)
                    .is_some_and(|j| j.status == JobStatus::Completed)
            })
            .count();
        if done == ids.len() || Instant::now() > deadline {
            break;
        }
        let s = status().await;
        for pool in s["pools"].as_array().into_iter().flatten() {
            if let Some(held) = pool["report"]["status"]["launch_held"].as_str() {
                // Numbers (seconds left, counts) make every reading distinct; keep the words.
                let words: String = held
                    .chars()
                    .filter(|c| !c.is_ascii_digit() && *c != '.')
                    .collect();
                launch_held.insert(words);
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let elapsed = started.elapsed();
    let github_calls = emu.calls().len() - github_before;
    let runner_protocol_calls = emu.runner_calls().len() - runner_protocol_before;

    // Drained: every task stopped and no parameter left (the agents delete their own; the
    // controller's clean-up finds any other), within a minute.
    let drain_until = Instant::now() + Duration::from_secs(60);
    let mut leftovers = parameters_under(&moto, PREFIX).await;
    while Instant::now() < drain_until && (plane.running() > 0 || !leftovers.is_empty()) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        leftovers = parameters_under(&moto, PREFIX).await;
    }
    let metrics = http
        .get(format!("http://{addr}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    cancel.cancel();
    let _ = super::within(60, controller).await;
    plane.stop().await;

    let jobs = emu.jobs();
    let ours: Vec<_> = jobs.iter().filter(|j| ids.contains(&j.id)).collect();
    let succeeded = ours
        .iter()
        .filter(|j| j.conclusion == Some(hangar_emulator::Conclusion::Success))
        .count();
    let not_succeeded = ours
        .iter()
        .filter(|j| j.conclusion != Some(hangar_emulator::Conclusion::Success))
        .map(|j| {
            format!(
                "{} {:?} {:?} on {:?}",
                j.name, j.status, j.conclusion, j.runner_name
            )
        })
        .collect();
    let runner_names: BTreeSet<String> =
        ours.iter().filter_map(|j| j.runner_name.clone()).collect();
    let tasks = plane.tasks();
    let tasks_without_a_job = tasks
        .iter()
        .filter(|t| !runner_names.contains(&t.runner_name))
        .count();
    let first = tasks.iter().map(|t| t.started).min();
    let last = tasks.iter().map(|t| t.started).max();
    let launch_span = match (first, last) {
        (Some(a), Some(b)) => b - a,
        _ => Duration::ZERO,
    };
    let lifetimes: Vec<f64> = tasks
        .iter()
        .filter_map(|t| t.ended.map(|end| (end - t.started).as_secs_f64()))
        .collect();
    let mean_task_seconds = lifetimes.iter().sum::<f64>() / lifetimes.len().max(1) as f64;
    let _ = std::fs::remove_dir_all(&dir);
    Outcome {
        jobs: burst.jobs,
        succeeded,
        not_succeeded,
        elapsed,
        launch_span,
        tasks: tasks.len(),
        registrations: emu.jit_configs_issued(),
        runners_with_a_job: runner_names.len(),
        tasks_without_a_job,
        peak_running: plane.peak(),
        mean_task_seconds,
        leftovers,
        aws_calls: OPERATIONS
            .iter()
            .map(|op| (op.to_string(), aws.calls(op)))
            .collect(),
        throttled: OPERATIONS
            .iter()
            .map(|op| (op.to_string(), aws.throttled(op)))
            .collect(),
        github_calls,
        runner_protocol_calls,
        secondary_limited: emu.secondary_limited(),
        launch_held,
        launch_failures: metric_by_label(&metrics, "hangar_launch_failures_total", "reason"),
    }
}
