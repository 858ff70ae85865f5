################################################################################
# One task definition and one service per runner key (see locals.tf):
# each repository name in standalone mode, "org" in org mode.
################################################################################

resource "aws_ecs_task_definition" "github_runner" {
  #checkov:skip=CKV_AWS_336:The root agent starts the official runner as uid 1001 (RUNNER_USER=runner), which writes its registration, _diag and job workspaces under /home/runner/actions-runner, and jobs write to $HOME and /tmp; Fargate bind-mount volumes are root-owned unless the image declares a VOLUME there and the agent does not re-own them, so the runner and its jobs need a writable root filesystem.
  #checkov:skip=CKV_AWS_334:Only the Docker shapes' `docker` sidecar (pool_shapes with docker = true, on docker_capacity's dedicated EC2 instances, one runner task per instance) is privileged: dockerd needs it to create containers; the runner container never is. The trade-off (a Docker job can reach its instance) is documented in README.md, Docker capacity.
  for_each = local.runners

  family = each.value.name
  # A Docker shape runs on the EC2 capacity of docker_capacity (Fargate runs no privileged container).
  requires_compatibilities = each.value.docker ? ["EC2"] : ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = each.value.cpu
  memory                   = each.value.memory
  execution_role_arn       = aws_iam_role.execution.arn
  task_role_arn            = aws_iam_role.task[each.key].arn

  runtime_platform {
    operating_system_family = "LINUX"
    cpu_architecture        = each.value.cpu_architecture
  }

  # A shape's ephemeral_storage_gib (Fargate task storage, 21 to 200 GiB); none otherwise.
  dynamic "ephemeral_storage" {
    for_each = each.value.ephemeral_storage_gib == null ? [] : [each.value.ephemeral_storage_gib]
    content {
      size_in_gib = ephemeral_storage.value
    }
  }

  # A Docker shape's two task-scoped Docker volumes, created empty for each task and removed with
  # it (nothing of one job is left for the next): the daemon's socket directory (runner and
  # sidecar) and its data root /var/lib/docker (sidecar only).
  dynamic "volume" {
    for_each = each.value.docker ? [local.docker_socket_volume, local.docker_data_volume] : []
    content {
      name = volume.value

      docker_volume_configuration {
        scope  = "task"
        driver = "local"
      }
    }
  }

  # The image's entrypoint (`tini -- hangar agent`) is kept: no entryPoint or command here.
  # A Docker shape adds the `docker` sidecar after the runner container.
  container_definitions = jsonencode(concat([merge(
    {
      name      = each.value.name
      image     = var.runner_image
      essential = true

      # No `user`: the container runs as the image's default user, root. Only tini and hangar
      # agent run as root; the agent holds the credentials (ECS secrets, the task role's
      # AWS_CONTAINER_CREDENTIALS_RELATIVE_URI, the one-shot JIT configuration) and starts
      # Runner.Listener, and so every job, as RUNNER_USER=runner (uid 1001, in `environment`).
      # A process of uid 1001 cannot read a root process's /proc/PID/environ or memory. Running
      # the container as 1001 instead would put the credentials in a process of the jobs' uid.
      #
      # Not read-only: the runner (uid 1001) writes its registration (.runner, .credentials),
      # _diag and the job workspace (_work) under /home/runner/actions-runner, and jobs write to
      # $HOME and /tmp. Fargate bind-mount volumes are root-owned (0755) unless the image declares
      # a VOLUME at that path, and the agent does not re-own them, so uid 1001 could not write there.
      readonlyRootFilesystem = false

      # ECS sends SIGTERM, then SIGKILL after this many seconds: 120 is Fargate's maximum.
      # hangar agent drains a running job within it (drain_timeout_seconds, then its cancel grace).
      stopTimeout = 120

      environment = concat(each.value.scope_environment, local.common_environment, each.value.docker ? local.docker_runner_environment : [])

      logConfiguration = {
        logDriver = "awslogs"
        options = merge(local.awslogs_options, {
          awslogs-group         = aws_cloudwatch_log_group.github_runner[each.key].name
          awslogs-stream-prefix = "runner"
        })
      }
    },
    # `secrets`: the credentials for the fixed services; none with the controller (locals.tf).
    local.runner_container_credentials,
    # repositoryCredentials, for a private registry outside ECR (repository_credentials_secret_arn).
    local.image_pull_container_settings,
    # A Docker shape: the socket directory mounted, and started once the daemon has started.
    # (A `for` expression, so that the keys are absent for other pools.)
    { for name, value in local.docker_runner_settings : name => value if each.value.docker },
    )],
    [
      # A Docker shape's daemon: privileged (dockerd creates namespaces, cgroups and mounts), in
      # the same task (its network namespace, its lifetime). It serves the runner (uid 1001) on a
      # socket of group 1001 in the task volume, with no TCP listener and no TLS (the socket
      # never leaves the task). ECS stops the runner before it (dependsOn, in reverse).
      for docker in [each.value.docker] : {
        name       = local.docker_daemon_container_name
        image      = var.docker_daemon_image
        essential  = true
        privileged = true
        command    = local.docker_daemon_command
        # The dind entrypoint makes TLS certificates unless this is empty.
        environment       = [{ name = "DOCKER_TLS_CERTDIR", value = "" }]
        memoryReservation = local.docker_daemon_memory_reservation
        # dockerd writes its pid file, containerd state and configuration on its filesystem.
        readonlyRootFilesystem = false
        stopTimeout            = 120
        mountPoints = [
          { sourceVolume = local.docker_socket_volume, containerPath = local.docker_socket_directory, readOnly = false },
          { sourceVolume = local.docker_data_volume, containerPath = "/var/lib/docker", readOnly = false },
        ]
        logConfiguration = {
          logDriver = "awslogs"
          options = merge(local.awslogs_options, {
            awslogs-group         = aws_cloudwatch_log_group.github_runner[each.key].name
            awslogs-stream-prefix = "docker"
          })
        }
      } if docker
    ],
  ))

  lifecycle {
    precondition {
      condition     = each.value.shape == null || var.enable_controller
      error_message = "pool_shapes: the pool ${each.key} needs enable_controller = true: shapes are pools of hangar controller, which starts each runner on its task definition; without the controller this module runs one fixed service per runner key only."
    }
    precondition {
      condition     = !each.value.docker || var.docker_capacity != null
      error_message = "pool_shapes: the Docker shape of pool ${each.key} needs docker_capacity (EC2 instances for its privileged daemon): Fargate runs no privileged container. Set docker_capacity, or remove docker = true."
    }
    precondition {
      condition     = !(each.value.cpu_architecture == "ARM64" && contains(each.value.capacity_providers, "FARGATE_SPOT"))
      error_message = "pool_shapes: pool ${each.key} is ARM64 and lists FARGATE_SPOT, but Fargate Spot runs X86_64 tasks only: remove FARGATE_SPOT from its capacity_providers, or make the shape X86_64."
    }
    precondition {
      condition     = !each.value.docker ? true : (var.docker_capacity == null ? true : var.docker_capacity.cpu_architecture == each.value.cpu_architecture)
      error_message = "pool_shapes: the Docker shape of pool ${each.key} is ${each.value.cpu_architecture}, but docker_capacity's instances are ${var.docker_capacity == null ? "-" : var.docker_capacity.cpu_architecture}: give the shape the instances' cpu_architecture."
    }
    precondition {
      condition     = each.value.shape == null ? true : each.value.min_idle <= each.value.max
      error_message = "pool_shapes: the pool ${each.key} has min_idle ${each.value.min_idle} above max ${each.value.max}."
    }
  }
}

# With enable_controller there are no fixed services: the controller starts each runner with
# RunTask from the task definition above. Not kept at desired_count 0 either: such a service would
# still be one `-replace` or console edit away from starting long-lived runners registered with
# the credentials, beside the controller's ephemeral ones and outside its scale sets and limits.
resource "aws_ecs_service" "github_runner" {
  # The runner keys' own pools only: shape pools (pool_shapes) are the controller's.
  for_each = { for key, runner in local.runners : key => runner if !var.enable_controller && runner.shape == null }

  name             = each.value.name
  cluster          = data.aws_ecs_cluster.this.arn
  task_definition  = aws_ecs_task_definition.github_runner[each.key].arn
  desired_count    = var.desired_count
  launch_type      = "FARGATE"
  platform_version = "LATEST"

  network_configuration {
    subnets          = var.private_subnet_ids
    security_groups  = var.security_group_ids
    assign_public_ip = false
  }

  # Each task registers its own runner (named after its task id), so a deployment may start the
  # new task before stopping the old one; the old one drains its job on SIGTERM.
  deployment_minimum_healthy_percent = 100
  deployment_maximum_percent         = 200

  deployment_circuit_breaker {
    enable   = true
    rollback = true
  }

  enable_execute_command  = var.enable_execute_command
  enable_ecs_managed_tags = true
  propagate_tags          = "SERVICE"

  # Tasks fetch their secrets and write logs as soon as they start: the permissions first.
  depends_on = [
    aws_iam_role_policy.execution,
    aws_iam_role_policy.execution_credentials,
    aws_iam_role_policy.execution_ecr_pull,
    aws_iam_role_policy.execution_registry_credentials,
    aws_iam_role_policy.task,
    aws_iam_role_policy.task_jit,
    aws_iam_role_policy.task_exec,
  ]
}
