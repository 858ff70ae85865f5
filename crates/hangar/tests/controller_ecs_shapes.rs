//! Pools for every job shape on ECS (moto behind the AWS realism layer): a pool's capacity
//! providers tried in order (a capacity refusal on the first is retried on the next within the
//! same launch, and counted), and a Docker pool's launches (its own task definition with the
//! privileged sidecar, one task per instance, the agent told to wait for the daemon), both at the
//! backend and through the `hangar controller` binary with its metrics.

mod support;

use std::time::Duration;

use aws_sdk_ecs::types::{Compatibility, ContainerDefinition, MountPoint, NetworkMode, Volume};
use hangar::controller::backend::{Backend, BackendError};
use hangar::controller::config::{ControllerConfig as PoolFile, EcsLaunch};
use support::ecs_rig::*;
use support::within;

const CAPACITY: &str = "Capacity is unavailable at this time. Please try again later or in a different availability zone";
const DOCKER_TASK_DEFINITION: &str = "hangar-runner-docker";
const DOCKER_PROVIDER: &str = "hangar-docker-ec2";

fn spot_then_on_demand(deployed: EcsLaunch) -> EcsLaunch {
    EcsLaunch {
        capacity_providers: vec!["FARGATE_SPOT".into(), "FARGATE".into()],
        ..deployed
    }
}

fn strategy(body: &serde_json::Value) -> Vec<String> {
    body["capacityProviderStrategy"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .map(|i| i["capacityProvider"].as_str().unwrap_or("?").to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// The sidecar task definition as `deploy/terraform` registers it for a Docker shape: the
/// runner (not privileged) and a privileged `docker` daemon sharing only the socket volume.
async fn register_docker_task_definition(world: &World) {
    let ecs = aws_sdk_ecs::Client::new(&world.moto.sdk_config());
    let socket = MountPoint::builder()
        .source_volume("docker-socket")
        .container_path("/var/run/hangar-docker")
        .build();
    ecs.register_task_definition()
        .family(DOCKER_TASK_DEFINITION)
        .network_mode(NetworkMode::Awsvpc)
        .requires_compatibilities(Compatibility::Ec2)
        .cpu("2048")
        .memory("4096")
        .volumes(Volume::builder().name("docker-socket").build())
        .volumes(Volume::builder().name("docker-data").build())
        .container_definitions(
            ContainerDefinition::builder()
                .name("runner")
                .image("hangar-runner:test")
                .memory(2048)
                .essential(true)
                .mount_points(socket.clone())
                .build(),
        )
        .container_definitions(
            ContainerDefinition::builder()
                .name("docker")
                .image("docker:dind")
                .memory(1024)
                .essential(true)
                .privileged(true)
                .mount_points(socket)
                .mount_points(
                    MountPoint::builder()
                        .source_volume("docker-data")
                        .container_path("/var/lib/docker")
                        .build(),
                )
                .build(),
        )
        .send()
        .await
        .expect("register the Docker task definition");
}

#[tokio::test]
async fn a_capacity_refusal_on_the_first_provider_is_retried_on_the_next_at_once() {
    within(60, async {
        let (world, deployed) = deploy().await;
        let rig = rig(&world, spot_then_on_demand(deployed.clone()));
        rig.backend.check().await.unwrap();

        // Spot has no capacity: the same launch goes on to FARGATE, with the same parameter.
        world.aws.fail_run_tasks(1, CAPACITY, None);
        let runner = tags("spot", 1);
        let task = rig.backend.launch(request(&runner)).await.unwrap();
        let runs = rig.ecs_calls.bodies("RunTask");
        assert_eq!(runs.len(), 2);
        assert_eq!(strategy(&runs[0]), ["FARGATE_SPOT"]);
        assert_eq!(strategy(&runs[1]), ["FARGATE"]);
        assert_eq!(
            task.launch_fallbacks.len(),
            1,
            "{:?}",
            task.launch_fallbacks
        );
        assert!(
            task.launch_fallbacks[0].starts_with("capacity provider FARGATE_SPOT: ")
                && task.launch_fallbacks[0].contains(CAPACITY),
            "{:?}",
            task.launch_fallbacks
        );
        assert_eq!(
            rig.ssm_calls.names(),
            ["PutParameter"],
            "written once, kept"
        );
        assert!(
            parameter_exists(
                &world.moto,
                &format!("{PREFIX}/spot/{}", runner.runner_name)
            )
            .await
        );
        assert_eq!(rig.backend.list("spot").await.unwrap().len(), 1);

        // The next launch, a moment later, passes over the provider that just refused (for
        // REFUSED_PROVIDER_REST, 30 s) instead of asking it first again: one RunTask.
        rig.ecs_calls.clear();
        rig.ssm_calls.clear();
        let task = rig.backend.launch(request(&tags("spot", 2))).await.unwrap();
        let runs = rig.ecs_calls.bodies("RunTask");
        assert_eq!(runs.iter().map(strategy).collect::<Vec<_>>(), [["FARGATE"]]);
        assert!(task.launch_fallbacks.is_empty());

        // Capacity on neither (a backend with no memory of refusals): a capacity error, after
        // one try on each, and no parameter left.
        let rig = support::ecs_rig::rig(&world, spot_then_on_demand(deployed.clone()));
        // (SSM's write rate is on: four launches in a row would be throttled.)
        world.aws.wait_for_tokens("PutParameter", 1.0).await;
        world.aws.fail_run_tasks(2, "RESOURCE:FARGATE", None);
        let runner = tags("spot", 3);
        let err = rig.backend.launch(request(&runner)).await.unwrap_err();
        assert!(matches!(err, BackendError::Capacity(_)), "{err:?}");
        let runs = rig.ecs_calls.bodies("RunTask");
        assert_eq!(
            runs.iter().map(strategy).collect::<Vec<_>>(),
            [["FARGATE_SPOT"], ["FARGATE"]]
        );
        assert_eq!(rig.ssm_calls.names(), ["PutParameter", "DeleteParameter"]);

        // Anything but capacity is not a reason to move on: one try (on FARGATE_SPOT, with no
        // provider resting), the error as it was.
        let rig = support::ecs_rig::rig(&world, spot_then_on_demand(deployed));
        world.aws.wait_for_tokens("PutParameter", 1.0).await;
        world.aws.fail_run_tasks(1, "MISSING", None);
        let err = rig
            .backend
            .launch(request(&tags("spot", 4)))
            .await
            .unwrap_err();
        assert!(matches!(err, BackendError::Config(_)), "{err:?}");
        let runs = rig.ecs_calls.bodies("RunTask");
        assert_eq!(
            runs.iter().map(strategy).collect::<Vec<_>>(),
            [["FARGATE_SPOT"]]
        );
    })
    .await
}

#[tokio::test]
async fn a_docker_pool_launches_its_sidecar_task_definition_one_task_per_instance() {
    within(60, async {
        let (world, deployed) = deploy().await;
        register_docker_task_definition(&world).await;
        let text = format!(
            r#"
[[pool]]
name = "org"
organization = "your-organization"
[pool.ecs]
cluster = "{CLUSTER}"
task_definition = "{TASK_DEFINITION}"
subnets = {subnets:?}
security_groups = []

[[pool]]
name = "org-docker"
organization = "your-organization"
docker = true
[pool.ecs]
cluster = "{CLUSTER}"
task_definition = "{DOCKER_TASK_DEFINITION}"
subnets = {subnets:?}
security_groups = []
capacity_providers = ["{DOCKER_PROVIDER}"]
cpu = 2048
memory = 4096
cpu_architecture = "x86_64"
"#,
            subnets = deployed.subnets,
        );
        let file = PoolFile::parse(&text, "hangar.toml").unwrap();
        let (plain, docker) = (&file.pools[0], &file.pools[1]);
        assert_eq!(plain.docker_runs_on.as_deref(), Some("org-docker"));
        let hangar::controller::config::BackendConfig::Ecs(launch) = &docker.backend else {
            panic!("an ECS pool");
        };
        let rig = rig(
            &world,
            EcsLaunch {
                security_groups: deployed.security_groups.clone(),
                ..launch.clone()
            },
        );
        let backend = rig
            .backend
            .with_pool_environment(docker.runner_environment(), docker.docker);
        backend.check().await.unwrap();
        // moto places no task on an EC2 capacity provider it has no instances for; what is
        // checked is what Hangar asks ECS for.
        let _ = backend.launch(request(&tags("org-docker", 1))).await;
        let runs = rig.ecs_calls.bodies("RunTask");
        assert_eq!(runs.len(), 1, "{runs:?}");
        let run = &runs[0];
        assert_eq!(run["taskDefinition"], DOCKER_TASK_DEFINITION);
        assert_eq!(strategy(run), [DOCKER_PROVIDER]);
        assert_eq!(run.get("launchType"), None);
        assert_eq!(
            run["placementConstraints"],
            serde_json::json!([{"type": "distinctInstance"}])
        );
        let environment: Vec<(String, String)> =
            run["overrides"]["containerOverrides"][0]["environment"]
                .as_array()
                .unwrap()
                .iter()
                .map(|kv| {
                    (
                        kv["name"].as_str().unwrap().to_string(),
                        kv["value"].as_str().unwrap().to_string(),
                    )
                })
                .collect();
        for (name, value) in [("HANGAR_DOCKER", "1"), ("HANGAR_POOL", "org-docker")] {
            assert!(
                environment.contains(&(name.to_string(), value.to_string())),
                "{name}={value} missing from {environment:?}"
            );
        }
        assert_eq!(
            run["overrides"]["containerOverrides"]
                .as_array()
                .unwrap()
                .len(),
            1,
            "only the runner container is told anything"
        );

        // The pool without Docker: no placement constraint (Fargate takes none), the stub told
        // where Docker jobs go.
        assert_eq!(
            plain.runner_environment(),
            [
                ("HANGAR_POOL", "org".to_string()),
                ("HANGAR_DOCKER", "0".to_string()),
                ("HANGAR_DOCKER_RUNS_ON", "org-docker".to_string())
            ]
        );
        let fargate = rig_for_plain(&world, &deployed, plain);
        fargate
            .backend
            .launch(request(&tags("org", 1)))
            .await
            .unwrap();
        let run = &fargate.ecs_calls.bodies("RunTask")[0];
        assert_eq!(run.get("placementConstraints"), None);
        assert_eq!(run["launchType"], "FARGATE");
    })
    .await
}

fn rig_for_plain(
    world: &World,
    deployed: &EcsLaunch,
    pool: &hangar::controller::config::PoolConfig,
) -> Rig {
    let mut plain = rig(world, deployed.clone());
    plain.backend = plain
        .backend
        .with_pool_environment(pool.runner_environment(), pool.docker);
    plain
}

#[test]
fn a_docker_pool_on_fargate_is_refused_with_the_fix() {
    let text = r#"
[[pool]]
name = "org-docker"
organization = "your-organization"
docker = true
[pool.ecs]
cluster = "c"
task_definition = "t"
subnets = ["s"]
security_groups = []
capacity_providers = ["FARGATE_SPOT", "FARGATE"]
"#;
    let err = PoolFile::parse(text, "hangar.toml")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("pool[0].docker") || err.contains("docker"),
        "{err}"
    );
    assert!(
        err.contains("Fargate runs no privileged container"),
        "{err}"
    );
    assert!(err.contains("EC2"), "{err}");
}

/// The `hangar controller` binary on a pool of `FARGATE_SPOT` then `FARGATE`, with Spot out
/// of capacity: the queued job's runner starts on `FARGATE` in the pass that launched it, and
/// `/metrics` counts the refusal as a capacity failure and the move as a fallback.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_controller_falls_back_in_the_same_pass_and_counts_it() {
    within(120, async {
        let (world, deployed) = deploy().await;
        let emu = support::emulator().await;
        let port = support::unused_loopback_port();
        let dir = std::env::temp_dir().join(format!(
            "hangar-ecs-shapes-{}-{}",
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
github_api_url = "{api}"
github_web_url = "{web}"
listen = "127.0.0.1:{port}"
resync_interval = "30s"

[[pool]]
name = "spot"
repository = "{repo}"
max = 1
[pool.ecs]
cluster = "{CLUSTER}"
task_definition = "{TASK_DEFINITION}"
subnets = {subnets:?}
security_groups = {groups:?}
parameter_prefix = "{PREFIX}"
capacity_providers = ["FARGATE_SPOT", "FARGATE"]
"#,
                api = emu.api_url(),
                web = emu.web_url(),
                repo = support::REPO,
                subnets = deployed.subnets,
                groups = deployed.security_groups,
            ),
        )
        .unwrap();
        world.aws.fail_run_tasks(1, CAPACITY, None);
        let log_path = dir.join("controller.log");
        let mut controller = tokio::process::Command::new(env!("CARGO_BIN_EXE_hangar"))
            .args(["controller", "--config"])
            .arg(&config)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(world.aws.env())
            .env("GITHUB_PAT", hangar_emulator::SEED_PAT)
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log_path).unwrap())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        emu.enqueue_job(
            hangar_emulator::JobSpec::new(support::REPO, "spot-job")
                .labels(["spot"])
                .step("noop", "true"),
        );
        let metrics = format!("http://127.0.0.1:{port}/metrics");
        let counted = |text: &str, family: &str, reason: Option<&str>| -> Option<u64> {
            text.lines()
                .filter(|l| l.starts_with(&format!("{family}{{")) && l.contains("name=\"spot\""))
                .find(|l| reason.is_none_or(|r| l.contains(&format!("reason=\"{r}\""))))
                .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        };
        let text = within(60, async {
            loop {
                if let Ok(answer) = reqwest::get(&metrics).await
                    && let Ok(text) = answer.text().await
                    && counted(&text, "hangar_launches_total", None) == Some(1)
                {
                    return text;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
        .await;
        let log = std::fs::read_to_string(&log_path).unwrap();
        assert_eq!(world.aws.calls("RunTask"), 2, "{log}");
        assert_eq!(
            counted(&text, "hangar_launch_fallbacks_total", None),
            Some(1),
            "{text}"
        );
        assert_eq!(
            counted(&text, "hangar_launch_failures_total", Some("capacity")),
            Some(1),
            "{text}"
        );
        assert!(log.contains("trying the next at once"), "{log}");
        assert!(
            log.contains("launched on a fallback capacity provider"),
            "{log}"
        );
        let _ = controller.start_kill();
        let _ = std::fs::remove_dir_all(&dir);
    })
    .await
}

/// How a task stopped is read back from ECS (DescribeTasks keeps stopped tasks about an hour),
/// so a job a stop cut short is reported with its cause.
#[tokio::test]
async fn stop_details_are_read_back_from_ecs() {
    within(60, async {
        let (world, deployed) = deploy().await;
        let rig = rig(&world, deployed);
        let task = rig.backend.launch(request(&tags("spot", 9))).await.unwrap();
        let ecs = aws_sdk_ecs::Client::new(&world.moto.sdk_config());
        ecs.stop_task()
            .cluster(CLUSTER)
            .task(&task.id)
            .reason("Your Spot Task was interrupted.")
            .send()
            .await
            .unwrap();
        let details = rig.backend.stop_details(&task.id).await.unwrap();
        assert_eq!(
            details.reason.as_deref(),
            Some("Your Spot Task was interrupted.")
        );
        assert_eq!(
            details.interruption(),
            Some(hangar::controller::backend::Interruption::Spot)
        );
        // A task ECS does not know: nothing to tell.
        let unknown = "arn:aws:ecs:us-east-1:123456789012:task/hangar-runners/0000";
        assert_eq!(rig.backend.stop_details(unknown).await, None);
    })
    .await
}
