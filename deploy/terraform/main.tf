################################################################################
# One task definition and one service per runner key (see locals.tf):
# each repository name in standalone mode, "org" in org mode.
################################################################################

resource "aws_ecs_task_definition" "github_runner" {
  #checkov:skip=CKV_AWS_336:The root agent starts the official runner as uid 1001 (RUNNER_USER=runner), which writes its registration, _diag and job workspaces under /home/runner/actions-runner, and jobs write to $HOME and /tmp; Fargate bind-mount volumes are root-owned unless the image declares a VOLUME there and the agent does not re-own them, so the runner and its jobs need a writable root filesystem.
  for_each = local.runners

  family                   = each.value.name
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = var.task_cpu
  memory                   = var.task_memory
  execution_role_arn       = aws_iam_role.execution.arn
  task_role_arn            = aws_iam_role.task[each.key].arn

  runtime_platform {
    operating_system_family = "LINUX"
    cpu_architecture        = var.cpu_architecture
  }

  # The image's entrypoint (`tini -- hangar agent`) is kept: no entryPoint or command here.
  container_definitions = jsonencode([merge(
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

      environment = concat(each.value.scope_environment, local.common_environment)

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
  )])
}

# With enable_controller there are no fixed services: the controller starts each runner with
# RunTask from the task definition above. Not kept at desired_count 0 either: such a service would
# still be one `-replace` or console edit away from starting long-lived runners registered with
# the credentials, beside the controller's ephemeral ones and outside its scale sets and limits.
resource "aws_ecs_service" "github_runner" {
  for_each = { for key, runner in local.runners : key => runner if !var.enable_controller }

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
