//! The shape checks (capacity providers, shape, docker) against the fake of `tests`: the green
//! set-up passes them, a Docker pool set up as deploy/terraform's Docker shape passes them, and
//! each verdict is provoked by changing one thing.

use super::checks::*;
use super::names::task_memory_mib;
use super::shape::definition_shape;
use super::tests::{FakeAws, GREEN_FILE, assert_says, check, green_aws, preflight, said, web};
use super::*;

/// The Docker capacity provider deploy/terraform makes for cluster `runners`.
const DOCKER_PROVIDER: &str = "hangar-docker-runners";

/// [`GREEN_FILE`]'s pool as a Docker pool on the Docker capacity provider.
fn docker_file() -> String {
    GREEN_FILE.replace(
        "max = 4\n[pool.ecs]\n",
        &format!(
            "max = 4\ndocker = true\n[pool.ecs]\ncapacity_providers = [\"{DOCKER_PROVIDER}\"]\n"
        ),
    )
}

/// [`green_aws`] with the cluster's capacity providers and the task definition as
/// deploy/terraform registers a Docker shape: the runner (not privileged, `HANGAR_DOCKER` and
/// `DOCKER_HOST`, the socket volume) and a privileged `docker` sidecar with the socket and data
/// volumes, compatible with EC2.
fn docker_aws() -> FakeAws {
    let mut aws = green_aws();
    aws.clusters
        .get_mut("runners")
        .unwrap()
        .capacity_providers
        .push(DOCKER_PROVIDER.into());
    let definition = aws.definition();
    definition.compatibilities = vec!["EC2".into()];
    let runner = &mut definition.containers[0];
    runner.environment = vec!["HANGAR_DOCKER".into(), "DOCKER_HOST".into()];
    runner.volumes = vec!["docker-socket".into()];
    definition.containers.push(ContainerInfo {
        name: "docker".into(),
        image: "docker:27-dind".into(),
        privileged: true,
        volumes: vec!["docker-socket".into(), "docker-data".into()],
        environment: vec!["DOCKER_TLS_CERTDIR".into()],
        ..ContainerInfo::default()
    });
    aws
}

/// The `web` pool's file with `lines` added to its `[pool.ecs]`.
fn with_ecs(lines: &str) -> String {
    GREEN_FILE.replace("[pool.ecs]\n", &format!("[pool.ecs]\n{lines}\n"))
}

#[tokio::test]
async fn a_launch_type_pool_passes_the_capacity_check_naming_its_launch_type() {
    let aws = green_aws();
    let report = preflight(GREEN_FILE, &aws).await;
    assert_says(
        web(&report, CAPACITY_PROVIDERS),
        Status::Pass,
        &["none: tasks start with launch type FARGATE"],
    );
    let report = preflight(&with_ecs("launch_type = \"EC2\""), &aws).await;
    assert_says(
        web(&report, CAPACITY_PROVIDERS),
        Status::Pass,
        &["launch type EC2"],
    );
}

#[tokio::test]
async fn listed_capacity_providers_pass_in_their_order_when_the_cluster_has_them() {
    let aws = green_aws();
    let report = preflight(
        &with_ecs("capacity_providers = [\"FARGATE_SPOT\", \"FARGATE\"]"),
        &aws,
    )
    .await;
    assert_says(
        web(&report, CAPACITY_PROVIDERS),
        Status::Pass,
        &[
            "FARGATE_SPOT, then FARGATE on a capacity refusal",
            "each associated with arn:aws:ecs:us-east-1:123456789012:cluster/runners",
        ],
    );
    let report = preflight(&with_ecs("capacity_provider = \"FARGATE_SPOT\""), &aws).await;
    assert_says(
        web(&report, CAPACITY_PROVIDERS),
        Status::Pass,
        &["FARGATE_SPOT (no fallback)"],
    );
}

#[tokio::test]
async fn a_capacity_provider_the_cluster_lacks_fails_naming_it_and_what_the_cluster_has() {
    let mut aws = green_aws();
    let file = with_ecs("capacity_providers = [\"FARGATE_SPOT\", \"my-ec2\", \"FARGATE\"]");
    let report = preflight(&file, &aws).await;
    let (status, text) = said(web(&report, CAPACITY_PROVIDERS));
    assert_eq!(status, Status::Fail, "{text}");
    for wanted in [
        "has no capacity provider my-ec2 associated (it has FARGATE, FARGATE_SPOT)",
        "refuses a RunTask whose strategy names a provider the cluster lacks",
        "associate my-ec2 with the cluster",
        "aws_ecs_cluster_capacity_providers",
        "put-cluster-capacity-providers",
        "remove it from the pool's `capacity_providers`",
        "(it has FARGATE, FARGATE_SPOT)",
    ] {
        assert!(text.contains(wanted), "{wanted:?} missing: {text}");
    }
    assert!(!text.contains("provider FARGATE_SPOT"), "{text}");

    // A cluster with none associated (an empty list in AWS's answer) names them all.
    aws.clusters
        .get_mut("runners")
        .unwrap()
        .capacity_providers
        .clear();
    let report = preflight(&file, &aws).await;
    assert_says(
        web(&report, CAPACITY_PROVIDERS),
        Status::Fail,
        &["no capacity provider FARGATE_SPOT, my-ec2, FARGATE associated (it has none)"],
    );
}

#[tokio::test]
async fn capacity_providers_are_skipped_when_the_cluster_check_failed() {
    let file = with_ecs("capacity_providers = [\"FARGATE_SPOT\"]");
    let mut aws = green_aws();
    aws.clusters.get_mut("runners").unwrap().status = "INACTIVE".into();
    let report = preflight(&file, &aws).await;
    assert_eq!(web(&report, CLUSTER).status, Status::Fail);
    assert_says(
        web(&report, CAPACITY_PROVIDERS),
        Status::Skip,
        &["needs the cluster"],
    );
    aws.clusters.clear();
    let report = preflight(&file, &aws).await;
    assert_eq!(web(&report, CAPACITY_PROVIDERS).status, Status::Skip);
}

#[tokio::test]
async fn the_task_definitions_shape_passes_when_the_file_states_the_same() {
    let mut aws = green_aws();
    let report = preflight(GREEN_FILE, &aws).await;
    assert_says(
        web(&report, SHAPE),
        Status::Pass,
        &["0.5 vCPU, 1 GiB, X86_64 by default (the pool file states no shape to compare)"],
    );

    let definition = aws.definition();
    definition.cpu_architecture = Some("ARM64".into());
    definition.ephemeral_storage_gib = Some(21);
    let file = with_ecs(
        "cpu = 512\nmemory = 1024\ncpu_architecture = \"arm64\"\nephemeral_storage_gib = 21",
    );
    let report = preflight(&file, &aws).await;
    assert_says(
        web(&report, SHAPE),
        Status::Pass,
        &["0.5 vCPU, 1 GiB, ARM64, 21 GiB disk, as the pool file states"],
    );
    // Only what the file states is compared.
    let report = preflight(&with_ecs("memory = 1024"), &aws).await;
    assert_eq!(web(&report, SHAPE).status, Status::Pass);
}

#[tokio::test]
async fn a_shape_the_task_definition_does_not_have_warns_naming_both_values() {
    let aws = green_aws();
    let file = with_ecs(
        "cpu = 2048\nmemory = 4096\ncpu_architecture = \"ARM64\"\nephemeral_storage_gib = 50",
    );
    let report = preflight(&file, &aws).await;
    let (status, text) = said(web(&report, SHAPE));
    assert_eq!(status, Status::Warn, "{text}");
    for wanted in [
        "differs from task definition arn:aws:ecs:us-east-1:123456789012:task-definition/runner-web:3",
        "cpu: the file says 2048 (2 vCPU), the task definition 512 (0.5 vCPU)",
        "memory: the file says 4096 MiB (4 GiB), the task definition 1024 MiB (1 GiB)",
        "cpu_architecture: the file says ARM64, the task definition sets none (X86_64, ECS's default)",
        "ephemeral_storage_gib: the file says 50 GiB, the task definition sets none (Fargate gives 20 GiB)",
        "ECS runs what the task definition says",
        "what cost figures use",
        "deploy/terraform writes them from pool_shapes",
    ] {
        assert!(text.contains(wanted), "{wanted:?} missing: {text}");
    }
    assert_eq!(report.failed(), 0, "a warning, not a failure");

    // One field off: only it is named.
    let report = preflight(&with_ecs("cpu = 512\nmemory = 2048"), &aws).await;
    let (status, text) = said(web(&report, SHAPE));
    assert_eq!(status, Status::Warn);
    assert!(text.contains("memory: the file says 2048 MiB"), "{text}");
    assert!(!text.contains("cpu:"), "{text}");
}

#[tokio::test]
async fn shape_and_docker_are_skipped_without_the_task_definition() {
    let mut aws = green_aws();
    aws.task_definitions.clear();
    let report = preflight(&docker_file(), &aws).await;
    for name in [SHAPE, DOCKER] {
        assert_says(
            web(&report, name),
            Status::Skip,
            &["needs the task definition"],
        );
    }
}

#[tokio::test]
async fn a_docker_pool_set_up_like_the_terraform_docker_shape_passes_every_check() {
    let aws = docker_aws();
    let report = preflight(&docker_file(), &aws).await;
    let text = report.render_text();
    assert_eq!(report.failed(), 0, "{text}");
    assert!(
        report
            .sections
            .iter()
            .flat_map(|s| &s.checks)
            .all(|c| c.status == Status::Pass),
        "{text}"
    );
    assert_says(
        web(&report, CAPACITY_PROVIDERS),
        Status::Pass,
        &["hangar-docker-runners (no fallback)"],
    );
    assert_says(
        web(&report, DOCKER),
        Status::Pass,
        &[
            "docker is a privileged Docker daemon sharing docker-socket with the runner container \
             runner (not privileged, DOCKER_HOST set)",
            "the pool runs every job, Docker too",
        ],
    );
}

#[tokio::test]
async fn a_privileged_runner_container_fails() {
    let mut aws = docker_aws();
    aws.definition().containers[0].privileged = true;
    let report = preflight(&docker_file(), &aws).await;
    assert_says(
        web(&report, DOCKER),
        Status::Fail,
        &[
            "the runner container runner is privileged: every job would be root on the host",
            "remove `privileged` from runner",
            "belongs in a sidecar",
        ],
    );
}

#[tokio::test]
async fn a_docker_pool_without_a_privileged_sidecar_sharing_a_volume_fails() {
    // No sidecar at all.
    let mut aws = docker_aws();
    aws.definition().containers.truncate(1);
    let report = preflight(&docker_file(), &aws).await;
    assert_says(
        web(&report, DOCKER),
        Status::Fail,
        &[
            "no Docker daemon beside the runner container runner: no other container is privileged",
            "the agent would wait for a daemon that never comes",
            "privileged `docker` sidecar running dockerd",
        ],
    );

    // A sidecar that is not privileged is no daemon either.
    let mut aws = docker_aws();
    aws.definition().containers[1].privileged = false;
    let report = preflight(&docker_file(), &aws).await;
    assert_says(
        web(&report, DOCKER),
        Status::Fail,
        &["no other container is privileged"],
    );

    // A privileged sidecar whose socket the runner does not mount.
    let mut aws = docker_aws();
    aws.definition().containers[0].volumes.clear();
    let report = preflight(&docker_file(), &aws).await;
    assert_says(
        web(&report, DOCKER),
        Status::Fail,
        &["privileged docker shares no volume with it (the runner mounts none)"],
    );
}

#[tokio::test]
async fn a_docker_pool_without_docker_host_or_on_fargate_only_warns() {
    let mut aws = docker_aws();
    aws.definition().containers[0]
        .environment
        .retain(|n| n != "DOCKER_HOST");
    let report = preflight(&docker_file(), &aws).await;
    assert_says(
        web(&report, DOCKER),
        Status::Warn,
        &[
            "sets no DOCKER_HOST",
            "look for /var/run/docker.sock",
            "unix:///var/run/hangar-docker/docker.sock",
        ],
    );
    assert_eq!(report.failed(), 0);

    let mut aws = docker_aws();
    aws.definition().compatibilities = vec!["FARGATE".into()];
    let report = preflight(&docker_file(), &aws).await;
    assert_says(
        web(&report, DOCKER),
        Status::Warn,
        &[
            "compatible with FARGATE only",
            "requiresCompatibilities EC2",
        ],
    );

    // A failure and a warning together: a failure that names both.
    aws.definition().containers.truncate(1);
    let report = preflight(&docker_file(), &aws).await;
    assert_says(
        web(&report, DOCKER),
        Status::Fail,
        &["no Docker daemon", "compatible with FARGATE only"],
    );
}

#[tokio::test]
async fn a_docker_pool_without_its_runner_container_skips_the_docker_check() {
    let aws = docker_aws();
    let file = docker_file().replace("[pool.ecs]\n", "[pool.ecs]\ncontainer_name = \"agent\"\n");
    let report = preflight(&file, &aws).await;
    assert_eq!(web(&report, TASK_DEFINITION).status, Status::Fail);
    assert_says(
        web(&report, DOCKER),
        Status::Skip,
        &["needs the container \"agent\""],
    );
}

#[tokio::test]
async fn a_pool_without_docker_warns_about_any_privileged_container() {
    let aws = green_aws();
    let report = preflight(GREEN_FILE, &aws).await;
    assert_says(
        web(&report, DOCKER),
        Status::Pass,
        &[
            "no privileged container",
            "the pool runs jobs without Docker only",
        ],
    );

    // The Docker shape's task definition on a pool without docker = true.
    let aws = docker_aws();
    let file = GREEN_FILE.replace(
        "[pool.ecs]\n",
        &format!("[pool.ecs]\ncapacity_providers = [\"{DOCKER_PROVIDER}\"]\n"),
    );
    let report = preflight(&file, &aws).await;
    assert_says(
        web(&report, DOCKER),
        Status::Warn,
        &[
            "has privileged container docker but the pool is not a Docker pool",
            "gives every job's host away",
            "Fargate refuses",
            "remove `privileged`",
            "docker = true",
        ],
    );
    assert_eq!(report.failed(), 0, "{}", report.render_text());
    assert_eq!(check(&report, Some("web"), CLUSTER).status, Status::Pass);
}

#[test]
fn task_memory_becomes_mib_and_the_shape_reads_like_the_files() {
    assert_eq!(task_memory_mib("4096"), Some(4096.0));
    assert_eq!(task_memory_mib("2 GB"), Some(2048.0));
    assert_eq!(task_memory_mib("0.5gb"), Some(512.0));
    assert_eq!(task_memory_mib("0"), None);
    assert_eq!(task_memory_mib("lots"), None);

    let definition = TaskDefinitionInfo {
        cpu: Some("2048".into()),
        memory: Some("4096".into()),
        cpu_architecture: Some("ARM64".into()),
        ephemeral_storage_gib: Some(21),
        ..TaskDefinitionInfo::default()
    };
    assert_eq!(
        definition_shape(&definition),
        "2 vCPU, 4 GiB, ARM64, 21 GiB disk"
    );
    let bare = TaskDefinitionInfo {
        memory: Some("1 GB".into()),
        ..TaskDefinitionInfo::default()
    };
    assert_eq!(
        definition_shape(&bare),
        "no task cpu, 1 GiB, X86_64 by default"
    );
}

#[tokio::test]
async fn an_arm64_task_definition_on_fargate_spot_fails() {
    // Fargate Spot runs Linux X86_64 tasks only (ECS developer guide, Fargate capacity
    // providers); the file says nothing of the architecture, the task definition does.
    let mut aws = green_aws();
    aws.definition().cpu_architecture = Some("ARM64".into());
    let report = preflight(
        &with_ecs("capacity_providers = [\"FARGATE_SPOT\", \"FARGATE\"]"),
        &aws,
    )
    .await;
    assert_says(
        web(&report, TASK_DEFINITION),
        Status::Fail,
        &["ARM64", "FARGATE_SPOT, which runs X86_64 tasks only"],
    );
    let report = preflight(&with_ecs("capacity_providers = [\"FARGATE\"]"), &aws).await;
    assert_eq!(said(web(&report, TASK_DEFINITION)).0, Status::Pass);
}
