//! One pool's shape against AWS: its capacity providers are the cluster's, the task definition's
//! size is the one the pool file states, and the Docker set-up is the one the pool needs (a
//! privileged daemon in a sidecar sharing a volume with the runner for `docker = true`, no
//! privileged container otherwise). Pure verdicts on answers already read: no AWS call here.

use super::checks::{CAPACITY_PROVIDERS, DOCKER, SHAPE};
use super::names::{FargateClass, task_memory_mib, task_vcpus, vcpus};
use super::{ClusterInfo, ContainerInfo, TaskDefinitionInfo};
use crate::controller::config::{EcsLaunch, PoolConfig};
use crate::report::Checks;

/// The address the agent and jobs reach the pool's Docker daemon at (deploy/terraform sets it
/// to the socket in the shared task volume); without it Docker's default socket is used.
const DOCKER_HOST: &str = "DOCKER_HOST";

/// What ECS runs when the task definition names no CPU architecture.
const DEFAULT_ARCHITECTURE: &str = "X86_64";

/// The pool's capacity providers are associated with its cluster (`cluster`: the ACTIVE cluster,
/// `None` when the cluster check failed).
pub(super) fn capacity_providers(
    launch: &EcsLaunch,
    cluster: Option<&ClusterInfo>,
    checks: &mut Checks,
) {
    let providers = launch.providers();
    if providers.is_empty() {
        checks.pass(
            CAPACITY_PROVIDERS,
            format!(
                "none: tasks start with launch type {}",
                launch.launch_type.as_deref().unwrap_or("FARGATE")
            ),
        );
        return;
    }
    let Some(cluster) = cluster else {
        checks.skip(&[CAPACITY_PROVIDERS], "needs the cluster");
        return;
    };
    let missing: Vec<&str> = providers
        .iter()
        .map(String::as_str)
        .filter(|p| !cluster.capacity_providers.iter().any(|c| c == p))
        .collect();
    if missing.is_empty() {
        let order = match providers.as_slice() {
            [only] => format!("{only} (no fallback)"),
            [first, rest @ ..] => format!(
                "{first}, then {} on a capacity refusal",
                rest.join(", then ")
            ),
            [] => unreachable!("providers is not empty"),
        };
        checks.pass(
            CAPACITY_PROVIDERS,
            format!("{order}; each associated with {}", cluster.arn),
        );
        return;
    }
    let it = if missing.len() == 1 { "it" } else { "them" };
    let has = if cluster.capacity_providers.is_empty() {
        "none".to_string()
    } else {
        cluster.capacity_providers.join(", ")
    };
    checks.fail(
        CAPACITY_PROVIDERS,
        format!(
            "cluster {} has no capacity provider {} associated (it has {has}): ECS refuses a \
             RunTask whose strategy names a provider the cluster lacks",
            cluster.arn,
            missing.join(", ")
        ),
        format!(
            "associate {} with the cluster (Terraform: aws_ecs_cluster_capacity_providers, as \
             deploy/terraform/docker.tf does for docker_capacity; CLI: aws ecs \
             put-cluster-capacity-providers, which replaces the whole list, so name the ones it \
             has too), or remove {it} from the pool's `capacity_providers`",
            missing.join(", ")
        ),
    );
}

/// `cpu` units (1024 a vCPU) as "N vCPU".
fn cpu_text(units: f64) -> String {
    format!("{} vCPU", vcpus(units / 1024.0))
}

/// MiB as "N GiB".
fn memory_text(mib: f64) -> String {
    format!("{} GiB", vcpus(mib / 1024.0))
}

/// The task definition's shape, e.g. `2 vCPU, 4 GiB, ARM64, 21 GiB disk`.
pub(super) fn definition_shape(definition: &TaskDefinitionInfo) -> String {
    let mut parts = Vec::new();
    match definition.cpu.as_deref().and_then(task_vcpus) {
        Some(v) => parts.push(format!("{} vCPU", vcpus(v))),
        None => parts.push("no task cpu".to_string()),
    }
    match definition.memory.as_deref().and_then(task_memory_mib) {
        Some(mib) => parts.push(memory_text(mib)),
        None => parts.push("no task memory".to_string()),
    }
    parts.push(match &definition.cpu_architecture {
        Some(arch) => arch.clone(),
        None => format!("{DEFAULT_ARCHITECTURE} by default"),
    });
    if let Some(disk) = definition.ephemeral_storage_gib {
        parts.push(format!("{disk} GiB disk"));
    }
    parts.join(", ")
}

/// Where the pool file's shape (each field only when the file states it) differs from the
/// task definition's, one finding each.
pub(super) fn shape_mismatches(definition: &TaskDefinitionInfo, launch: &EcsLaunch) -> Vec<String> {
    let mut found = Vec::new();
    let set = |value: Option<&str>| value.unwrap_or("not set").to_string();
    if let Some(cpu) = launch.cpu {
        let wanted = f64::from(cpu) / 1024.0;
        let actual = definition.cpu.as_deref().and_then(task_vcpus);
        if actual.is_none_or(|v| (v - wanted).abs() > 1e-9) {
            let theirs = match actual {
                Some(v) => format!("{} ({} vCPU)", set(definition.cpu.as_deref()), vcpus(v)),
                None => set(definition.cpu.as_deref()),
            };
            found.push(format!(
                "cpu: the file says {cpu} ({}), the task definition {theirs}",
                cpu_text(f64::from(cpu))
            ));
        }
    }
    if let Some(memory) = launch.memory {
        let actual = definition.memory.as_deref().and_then(task_memory_mib);
        if actual.is_none_or(|m| (m - f64::from(memory)).abs() > 1e-9) {
            let theirs = match actual {
                Some(m) => format!("{} MiB ({})", vcpus(m), memory_text(m)),
                None => set(definition.memory.as_deref()),
            };
            found.push(format!(
                "memory: the file says {memory} MiB ({}), the task definition {theirs}",
                memory_text(f64::from(memory))
            ));
        }
    }
    if let Some(arch) = &launch.cpu_architecture {
        let actual = definition
            .cpu_architecture
            .as_deref()
            .unwrap_or(DEFAULT_ARCHITECTURE);
        if !actual.eq_ignore_ascii_case(arch) {
            let theirs = match &definition.cpu_architecture {
                Some(a) => a.clone(),
                None => format!("sets none ({DEFAULT_ARCHITECTURE}, ECS's default)"),
            };
            found.push(format!(
                "cpu_architecture: the file says {arch}, the task definition {theirs}"
            ));
        }
    }
    if let Some(disk) = launch.ephemeral_storage_gib
        && definition.ephemeral_storage_gib != Some(disk)
    {
        let theirs = match definition.ephemeral_storage_gib {
            Some(d) => format!("{d} GiB"),
            None => "sets none (Fargate gives 20 GiB)".to_string(),
        };
        found.push(format!(
            "ephemeral_storage_gib: the file says {disk} GiB, the task definition {theirs}"
        ));
    }
    found
}

/// The pool file's shape against the task definition's (`None`: it could not be read).
pub(super) fn shape(
    launch: &EcsLaunch,
    definition: Option<&TaskDefinitionInfo>,
    checks: &mut Checks,
) {
    let Some(definition) = definition else {
        checks.skip(&[SHAPE], "needs the task definition");
        return;
    };
    let theirs = definition_shape(definition);
    let mismatches = shape_mismatches(definition, launch);
    if mismatches.is_empty() {
        let stated = if launch.shape().is_some() {
            ", as the pool file states"
        } else {
            " (the pool file states no shape to compare)"
        };
        checks.pass(SHAPE, format!("{theirs}{stated}"));
        return;
    }
    checks.warn(
        SHAPE,
        format!(
            "the pool file's shape differs from task definition {} ({theirs}): {}. ECS runs what \
             the task definition says; the file's shape is what check-config and status show and \
             what cost figures use",
            definition.arn,
            mismatches.join("; ")
        ),
        "update cpu, memory, cpu_architecture and ephemeral_storage_gib in the pool's \
         [pool.ecs] to the task definition's (deploy/terraform writes them from pool_shapes: \
         apply it again), or register the task definition with the shape the file states",
    );
}

/// The containers other than the runner that could serve it a Docker daemon: privileged, and
/// sharing a task volume with it (the daemon's socket).
fn daemons<'a>(
    definition: &'a TaskDefinitionInfo,
    runner: &ContainerInfo,
) -> Vec<(&'a ContainerInfo, Vec<&'a str>)> {
    definition
        .containers
        .iter()
        .filter(|c| c.name != runner.name && c.privileged)
        .filter_map(|c| {
            let shared: Vec<&str> = c
                .volumes
                .iter()
                .map(String::as_str)
                .filter(|v| runner.volumes.iter().any(|r| r == v))
                .collect();
            (!shared.is_empty()).then_some((c, shared))
        })
        .collect()
}

/// The task definition's Docker set-up against the pool's `docker` (`None`: it could not be
/// read).
pub(super) fn docker(
    pool: &PoolConfig,
    launch: &EcsLaunch,
    definition: Option<&TaskDefinitionInfo>,
    checks: &mut Checks,
) {
    let Some(definition) = definition else {
        checks.skip(&[DOCKER], "needs the task definition");
        return;
    };
    if !pool.docker {
        let privileged: Vec<&str> = definition
            .containers
            .iter()
            .filter(|c| c.privileged)
            .map(|c| c.name.as_str())
            .collect();
        if privileged.is_empty() {
            checks.pass(
                DOCKER,
                format!("no privileged container; the pool runs {}", pool.can_run()),
            );
        } else {
            checks.warn(
                DOCKER,
                format!(
                    "task definition {} has privileged container {} but the pool is not a Docker \
                     pool: a privileged container the pool does not use for Docker gives every \
                     job's host away (and Fargate refuses to run it)",
                    definition.arn,
                    privileged.join(", ")
                ),
                "remove `privileged` from the task definition's containers, or make the pool a \
                 Docker pool (docker = true on EC2 capacity, with deploy/terraform's Docker shape)",
            );
        }
        return;
    }
    let Some(runner) = definition
        .containers
        .iter()
        .find(|c| c.name == launch.container_name)
    else {
        checks.skip(
            &[DOCKER],
            &format!(
                "needs the container {:?} in the task definition",
                launch.container_name
            ),
        );
        return;
    };
    let terraform = "deploy/terraform's Docker shape (pool_shapes with docker = true): a \
                     privileged `docker` sidecar running dockerd, sharing the task volume \
                     docker-socket with the runner container, DOCKER_HOST pointing at its socket";
    let mut failures: Vec<(String, String)> = Vec::new();
    let mut warnings: Vec<(String, String)> = Vec::new();
    if runner.privileged {
        failures.push((
            format!(
                "the runner container {} is privileged: every job would be root on the host \
                 through it",
                runner.name
            ),
            format!(
                "remove `privileged` from {}: the Docker daemon belongs in a sidecar ({terraform})",
                runner.name
            ),
        ));
    }
    let found = daemons(definition, runner);
    if found.is_empty() {
        let privileged: Vec<&str> = definition
            .containers
            .iter()
            .filter(|c| c.name != runner.name && c.privileged)
            .map(|c| c.name.as_str())
            .collect();
        let mounts = if runner.volumes.is_empty() {
            "none".to_string()
        } else {
            runner.volumes.join(", ")
        };
        let why = if privileged.is_empty() {
            "no other container is privileged".to_string()
        } else {
            format!(
                "privileged {} shares no volume with it (the runner mounts {mounts})",
                privileged.join(", ")
            )
        };
        failures.push((
            format!(
                "no Docker daemon beside the runner container {}: {why}; the agent would wait \
                 for a daemon that never comes",
                runner.name
            ),
            format!("register the task definition as {terraform}"),
        ));
    }
    if !runner.environment.iter().any(|n| n == DOCKER_HOST) {
        warnings.push((
            format!(
                "the runner container {} sets no {DOCKER_HOST} (in `environment`; environmentFiles \
                 are not read): the agent and jobs then look for /var/run/docker.sock",
                runner.name
            ),
            format!(
                "set {DOCKER_HOST} to the daemon's socket in the shared volume \
                 (deploy/terraform: unix:///var/run/hangar-docker/docker.sock)"
            ),
        ));
    }
    if !definition.compatibilities.is_empty()
        && definition
            .compatibilities
            .iter()
            .all(|c| c == FargateClass::COMPATIBILITY)
    {
        warnings.push((
            "it is compatible with FARGATE only, and Fargate runs no privileged container"
                .to_string(),
            "register the task definition with requiresCompatibilities EC2 (deploy/terraform \
             does for a Docker shape) and launch the pool on EC2 capacity"
                .to_string(),
        ));
    }
    let (found_text, fixes): (Vec<String>, Vec<String>) =
        failures.iter().chain(warnings.iter()).cloned().unzip();
    let detail = format!(
        "task definition {}: {}",
        definition.arn,
        found_text.join("; ")
    );
    if !failures.is_empty() {
        checks.fail(DOCKER, detail, fixes.join("; "));
    } else if !warnings.is_empty() {
        checks.warn(DOCKER, detail, fixes.join("; "));
    } else {
        let (daemon, shared) = &found[0];
        checks.pass(
            DOCKER,
            format!(
                "{} is a privileged Docker daemon sharing {} with the runner container {} (not \
                 privileged, {DOCKER_HOST} set); the pool runs {}",
                daemon.name,
                shared.join(", "),
                runner.name,
                pool.can_run()
            ),
        );
    }
}
